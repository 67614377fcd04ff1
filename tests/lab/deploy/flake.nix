{
  # The lab's fleet as a flake: each container's "NixOS configuration" is a stand-in system
  # (systems.nix), so `macha deploy --flake` builds them the way it builds real ones
  # (`nixosConfigurations.HOST.config.system.build.toplevel`). The variant of each host comes from
  # variants.json next to this file (hosts c1 to c10) (written by the test), "good" when it is not listed.
  description = "Macha deployment lab fleet (stand-in systems)";
  outputs =
    { self }:
    let
      variants = if builtins.pathExists ./variants.json then builtins.fromJSON (builtins.readFile ./variants.json) else { };
      system =
        host:
        import ./systems.nix {
          inherit host;
          generation = variants.generation or 7;
          variant = variants.${host} or "good";
        };
    in
    {
      nixosConfigurations = builtins.listToAttrs (
        map (host: {
          name = host;
          value.config.system.build.toplevel = system host;
        }) (builtins.genList (i: "c${toString (i + 1)}") 10)
      );
    };
}
