{
  description = "Macha: an AI system administrator for NixOS fleets";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    crane.url = "github:ipetkov/crane";
  };

  outputs = { self, nixpkgs, crane }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        macha = pkgs.callPackage ./nix/package.nix { craneLib = crane.mkLib pkgs; };
        default = macha;
      });

      overlays.default = final: _prev: {
        macha = self.packages.${final.stdenv.hostPlatform.system}.macha;
      };

      nixosModules.default = { pkgs, lib, ... }: {
        imports = [ ./modules/macha.nix ];
        services.macha.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.macha;
      };

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
