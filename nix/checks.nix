# `nix flake check`: the cargo checks (sharing the package's dependency build), evaluations of the
# NixOS module, and every nix/tests/*.nix as a NixOS VM test (Linux only).
{
  pkgs,
  self,
  nixpkgs,
}:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  macha = self.packages.${system}.macha;
  inherit (macha.passthru)
    craneLib
    commonArgs
    cargoArtifacts
    testSrc
    ;

  # A NixOS system with the module, as a container (no boot loader, no file systems): enough to
  # evaluate it and to build the configuration file, which runs `macha check-config`.
  evalSystem =
    module:
    nixpkgs.lib.nixosSystem {
      modules = [
        self.nixosModules.default
        {
          nixpkgs.hostPlatform = system;
          boot.isContainer = true;
          system.stateVersion = lib.trivial.release;
        }
        module
      ];
    };

  everyOption = evalSystem (import ./tests/common/every-option.nix);

  # Every option, deployments to the managed side too: the whole system must evaluate.
  everyOptionDeploy = evalSystem {
    imports = [ ./tests/common/every-option.nix ];
    services.macha.managed.deploy.enable = true;
  };
  failedAssertions = lib.filter (a: !a.assertion) everyOption.config.assertions;

  # The build-time check: a value the option types accept but the daemon rejects.
  rejected = evalSystem {
    services.macha.enable = true;
    services.macha.checkInterval = "1s";
  };

  vmTests = lib.mapAttrs' (
    name: _: lib.nameValuePair "vm-${lib.removeSuffix ".nix" name}" (import (./tests + "/${name}") { inherit pkgs self; })
  ) (lib.filterAttrs (name: type: type == "regular" && lib.hasSuffix ".nix" name) (builtins.readDir ./tests));
in
{
  inherit macha;

  clippy = craneLib.cargoClippy (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--workspace --all-targets -- --deny warnings";
    }
  );

  fmt = craneLib.cargoFmt { inherit (commonArgs) src; };

  doc = craneLib.cargoDoc (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoDocExtraArgs = "--workspace --no-deps";
      env.RUSTDOCFLAGS = "--deny warnings";
    }
  );

  # Lab tests (#[ignore]) need root and a real systemd; they run in tests/run.sh, not here.
  # nix-instantiate is for crates/macha/tests/integration/nix_module.rs.
  nextest = craneLib.cargoNextest (
    commonArgs
    // {
      inherit cargoArtifacts;
      src = testSrc;
      nativeBuildInputs = [ pkgs.nix ];
      cargoNextestExtraArgs = "--workspace";
    }
  );

  # Every option set: the module's assertions hold, and the rendered configuration and the polkit
  # rule's configuration pass `macha check-config` (building them runs the check).
  module-every-option =
    if failedAssertions != [ ] then
      throw (lib.concatMapStringsSep "\n" (a: a.message) failedAssertions)
    else
      pkgs.linkFarm "macha-module-every-option" {
        "macha.toml" = everyOption.config.environment.etc."macha/macha.toml".source;
        "polkit.rules" = pkgs.writeText "macha-polkit.rules" everyOption.config.security.polkit.extraConfig;
      };

  # Evaluation only, cheap (no KVM, nothing of the system is built): the system with every option
  # and deployments enabled instantiates, assertions included. The file holds the system's .drv
  # path, without its context, so building this check builds nothing else.
  module-eval-toplevel = pkgs.writeText "macha-module-eval-toplevel" (
    builtins.unsafeDiscardStringContext everyOptionDeploy.config.system.build.toplevel.drvPath
  );

  # A configuration the daemon rejects fails the system build, with the daemon's message.
  module-rejects-bad-config =
    let
      failure = pkgs.testers.testBuildFailure rejected.config.environment.etc."macha/macha.toml".source;
    in
    pkgs.runCommand "macha-module-rejects-bad-config" { } ''
      grep -F 'check_interval = "1s" is shorter than the minimum' ${failure}/testBuildFailure.log
      touch $out
    '';
}
// lib.optionalAttrs pkgs.stdenv.isLinux vmTests
