# services.macha.managed: a host that a Macha elsewhere (the controller) manages over SSH.
#
# What it grants, and nothing more:
#   * the `macha` user (same UID as on the controller, `services.macha.uid`), with a login shell
#     and only the controller's key, restricted (no forwarding, no PTY);
#   * membership of `systemd-journal` (read the journal);
#   * unit control through the polkit rule in ./polkit-rule.nix (start, stop, restart,
#     reset-failed of units Macha's policy could act on; never protected ones) — `systemctl`
#     without sudo;
#   * sudo without password for exactly the clean-up commands Macha's action schema has, with
#     their arguments pinned by regular expression: `journalctl --vacuum-time=<N>d`,
#     `nix-collect-garbage --delete-older-than <N>d`, `nix-store --verify --check-contents`
#     (`--repair`). No wildcards, no shell, no `systemctl`, no `nixos-rebuild`;
#   * with `deploy.enable` only: sudo for exactly the privileged steps of a deployment
#     (./deploy-sudo.nix: `systemd-run` of the deployment's transient units, their `systemctl`
#     reads and stops, the GC roots, the system profile, `switch-to-configuration`), and Nix's
#     trust for `nix copy` of unsigned paths. That is root on this host, which deploying means.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkEnableOption mkIf mkOption types;

  cfg = config.services.macha;
  mcfg = cfg.managed;

  journalctl = "${config.systemd.package}/bin/journalctl";
  nixBin = "${config.nix.package}/bin";

  # Keys without options of their own get `restrict`: no port/agent/X11 forwarding, no PTY.
  restricted = key: if builtins.match "(ssh-|ecdsa-|sk-).*" key != null then "restrict ${key}" else key;
in
{
  options.services.macha.managed = {
    enable = mkEnableOption ''
      this host as one that Macha manages over SSH from another host (the user `macha`, its
      authorised key, and the narrow polkit and sudo rules the SSH path needs)'';

    authorizedKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... macha@controller" ];
      description = ''
        Public keys allowed to log in as `macha`: the controller's key, which its first start
        creates in /var/lib/macha/.ssh/id_ed25519.pub and prints to its journal. Keys without
        options get `restrict` (no forwarding, no PTY).
      '';
    };

    deploy.enable = mkEnableOption ''
      deployments to this host by the controller (`macha deploy`, docs/deploy.md). This lets the
      controller's key activate any NixOS system it copied here, which is root on this host: that
      is what deploying means. It adds sudo rules for exactly the deployment's privileged steps
      (transient `macha-deploy-<id>` units running `switch-to-configuration`, the GC roots, the
      system profile) and makes `macha` a Nix trusted user (`nix.settings.trusted-users`), which
      `nix copy` of the controller's unsigned store paths needs. Off: a deployment to this host is
      refused at preflight (`sudo -n -l` of each step), before anything is copied'';

    protectedServices = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "postgresql" ];
      description = ''
        Units on this host that Macha must never touch, in addition to the built-in list. The
        polkit rule on this host enforces them even if the controller's configuration differs;
        list them on the controller too (`services.macha.protectedServices`) so that its policy
        does not propose what this host refuses.
      '';
    };
  };

  config = mkIf mcfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = mcfg.authorizedKeys != [ ];
            message = "services.macha.managed.authorizedKeys is empty: add the controller's public key (on the controller: cat /var/lib/macha/.ssh/id_ed25519.pub, also printed in `journalctl -u macha`).";
          }
          {
            assertion = config.services.openssh.enable;
            message = "services.macha.managed: Macha reaches this host over SSH; set services.openssh.enable = true.";
          }
        ];

        warnings = lib.optional (!config.security.sudo.enable) ''
          services.macha.managed: security.sudo is disabled, so Macha's clean-up actions on this host
          (journal vacuum, garbage collection, store verification) will fail; observing and unit
          control (polkit) still work.'';

        users.users.macha = {
          # Commands arrive over SSH and are run by the login shell (quoted by Macha's SSH module).
          useDefaultShell = true;
          createHome = true;
          homeMode = "700";
          openssh.authorizedKeys.keys = map restricted mcfg.authorizedKeys;
        };

        security.sudo.extraRules = [
          {
            users = [ "macha" ];
            runAs = "root";
            commands =
              map
                (command: {
                  inherit command;
                  options = [ "NOPASSWD" ];
                })
                [
                  # A whole-argument regular expression (sudo >= 1.9.10): exactly one argument.
                  "${journalctl} ^--vacuum-time=[1-9][0-9]*d$"
                  "${nixBin}/nix-collect-garbage ^--delete-older-than [1-9][0-9]*d$"
                  "${nixBin}/nix-store --verify --check-contents"
                  "${nixBin}/nix-store --verify --check-contents --repair"
                ];
          }
        ];
      }

      (mkIf mcfg.deploy.enable {
        warnings = lib.optional (!config.security.sudo.enable) ''
          services.macha.managed.deploy.enable: security.sudo is disabled, so deployments to this host
          are refused at preflight, before anything is copied.'';

        # `nix copy` from the controller adds store paths that nobody signed. A definition replaces
        # the option's default (`[ "root" ]`) instead of adding to it, so root is named again.
        nix.settings.trusted-users = [
          "root"
          "macha"
        ];

        security.sudo.extraRules = [
          {
            users = [ "macha" ];
            runAs = "root";
            commands =
              map
                (command: {
                  inherit command;
                  options = [ "NOPASSWD" ];
                })
                (
                  import ./deploy-sudo.nix {
                    systemdRun = "${config.systemd.package}/bin/systemd-run";
                    systemctl = "${config.systemd.package}/bin/systemctl";
                    nixStore = "${nixBin}/nix-store";
                    nixEnv = "${nixBin}/nix-env";
                  }
                );
          }
        ];
      })
    ]
  );
}
