# Macha without flakes: the package, the NixOS module and the overlay (docs/nixos.md).
#
#   nix-build -A macha                        # the package, built with <nixpkgs>
#   imports = [ (import ./macha { inherit pkgs; }).module ];   # in a NixOS configuration
#   nixpkgs.overlays = [ (import ./macha { }).overlay ];       # pkgs.macha
#
# `pkgs` defaults to `import <nixpkgs> { }`; pass your own package set instead. crane, the Rust
# build library the package uses, is fetched at the revision and hash that flake.lock pins, so this
# file and the flake build the same thing from the same nixpkgs.
{
  pkgs ? import <nixpkgs> { },
}:
let
  craneLock = (builtins.fromJSON (builtins.readFile ./flake.lock)).nodes.crane.locked;
  crane = builtins.fetchTarball {
    url = "https://github.com/${craneLock.owner}/${craneLock.repo}/archive/${craneLock.rev}.tar.gz";
    sha256 = craneLock.narHash;
  };
  # Macha built with a given package set (crane's default.nix takes `pkgs` and returns its lib).
  machaFor = p: p.callPackage ./nix/package.nix { craneLib = import crane { pkgs = p; }; };
  macha = machaFor pkgs;
in
{
  inherit macha;

  # `pkgs.macha`, for modules/macha.nix imported on its own (its package option defaults to it).
  overlay = final: _prev: { macha = machaFor final; };

  # `services.macha` and `services.macha.managed`, with the package built from the system's own
  # package set (at mkDefault priority: services.macha.package still overrides it).
  module =
    { lib, pkgs, ... }:
    {
      imports = [ ./modules/macha.nix ];
      services.macha.package = lib.mkDefault (machaFor pkgs);
    };
}
