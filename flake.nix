{
  description = "Macha: an AI system administrator for NixOS fleets";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    crane.url = "github:ipetkov/crane";
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      eachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      machaFor = pkgs: pkgs.callPackage ./nix/package.nix { craneLib = crane.mkLib pkgs; };
    in
    {
      packages = eachSystem (
        pkgs:
        let
          macha = machaFor pkgs;
        in
        {
          inherit macha;
          default = macha;
        }
      );

      overlays.default = final: _prev: { macha = machaFor final; };

      # `services.macha` (the daemon) and `services.macha.managed` (a host it manages), with the
      # package defaulting to this flake's build.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./modules/macha.nix ];
          services.macha.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.macha;
        };
      nixosModules.macha = self.nixosModules.default;

      checks = eachSystem (pkgs: import ./nix/checks.nix { inherit pkgs self nixpkgs; });

      devShells = eachSystem (pkgs: {
        default = import ./nix/devshell.nix { inherit pkgs self; };
      });

      formatter = eachSystem (pkgs: pkgs.nixfmt);
    };
}
