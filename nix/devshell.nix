# `nix develop`: the toolchain and inputs of the cargo checks, plus the tools the tests and CI use.
{ pkgs, self }:
let
  system = pkgs.stdenv.hostPlatform.system;
  inherit (self.packages.${system}.macha.passthru) craneLib;
in
craneLib.devShell {
  # Only the cargo checks: the VM tests' inputs (qemu, whole systems) do not belong in a shell.
  checks = {
    inherit (self.checks.${system}) clippy nextest;
  };
  packages = [
    pkgs.cargo-nextest
    pkgs.nix
    pkgs.nixfmt
    pkgs.python3
  ];
}
