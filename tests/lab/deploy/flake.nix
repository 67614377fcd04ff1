{
  # The lab's fleet as a flake: each container's "NixOS configuration" is a stand-in system
  # (systems.nix), so `macha deploy --flake` builds them the way it builds real ones
  # (`nixosConfigurations.HOST.config.system.build.toplevel`). The variant of each host comes from
  # variants.json next to this file (hosts c1 to c10; written by the test), "good" when it is not listed.
  #
  # `checks.x86_64-linux.passes` is a stand-in pre-deploy check that passes; `"failing_check": true`
  # in variants.json adds `checks.x86_64-linux.fails`, which prints a few lines and fails (so
  # `nix flake check` fails too).
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
      check =
        name: script:
        derivation {
          inherit name;
          system = "x86_64-linux";
          builder = "/bin/sh";
          args = [
            "-c"
            script
          ];
        };
    in
    {
      checks.x86_64-linux = {
        passes = check "macha-check-passes" "echo 'stand-in check: 3 tests passed' && echo ok > $out";
      }
      // (
        if variants.failing_check or false then
          {
            fails = check "macha-check-fails" ''
              echo 'stand-in check: test 1 passed'
              echo 'stand-in check: test 2 FAILED: expected 200, got 503'
              exit 1
            '';
          }
        else
          { }
      );
      nixosConfigurations = builtins.listToAttrs (
        map (host: {
          name = host;
          value.config.system.build.toplevel = system host;
        }) (builtins.genList (i: "c${toString (i + 1)}") 10)
      );
    };
}
