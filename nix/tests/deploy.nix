# Deployments: Macha on `controller` deploys built NixOS systems to two managed hosts (`target1`,
# `target2`, with `managed.deploy.enable`). A changed configuration is shown with `--diff-only`
# (nothing changes), then deployed with an approval, verified and committed; on target2 a
# configuration whose new unit fails is rolled back, and one that stops sshd cuts Macha off until
# the host's dead-man timer brings the old system back by itself; target1 reset in the middle of an
# activation boots the system committed before, and the deployment is never reported succeeded.
#
# The deployed systems are each target's own configuration plus one change (`extendModules`, so
# they carry the same test-driver modules and can be activated inside the VM); they are built with
# the test and registered in the controller's store, which `nix copy` sends them from. The
# snakeoil key pair from nixpkgs' tests serves as Macha's login key and the targets' host key
# (test keys only).
{ pkgs, self }:
let
  inherit (pkgs) lib;
  snakeoil = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
  targets = [
    "target1"
    "target2"
  ];

  # What each deployed system changes, on top of the target's configuration.
  changes = {
    # Visible in the closure diff (a new package) and on the host (a file).
    good =
      { pkgs, ... }:
      {
        environment.systemPackages = [ pkgs.hello ];
        environment.etc."macha-test/deployed".text = "deployed by macha\n";
      };
    # A new unit that fails at once: verification sees a failed unit that had not failed before.
    failing =
      { pkgs, ... }:
      {
        systemd.services.macha-test-broken = {
          wantedBy = [ "multi-user.target" ];
          serviceConfig = {
            Type = "oneshot";
            ExecStart = "${pkgs.coreutils}/bin/false";
          };
        };
      };
    # An activation that takes long enough for the host to be reset in the middle of it.
    slow =
      { pkgs, ... }:
      {
        system.activationScripts.machaTestSlow = "${pkgs.coreutils}/bin/sleep 45";
        environment.etc."macha-test/slow".text = "slow\n";
      };
    # sshd is restarted by the switch and its start condition never holds: no new SSH connection.
    no-ssh =
      { lib, ... }:
      {
        systemd.services.sshd.unitConfig.ConditionPathExists = lib.mkForce "/macha-test-never";
      };
  };

  target =
    { extendModules, ... }:
    {
      imports = [ self.nixosModules.default ];
      services.openssh = {
        enable = true;
        hostKeys = [
          {
            path = "/etc/ssh/ssh_host_ecdsa_key";
            type = "ecdsa";
          }
        ];
      };
      environment.etc."ssh/ssh_host_ecdsa_key" = {
        source = snakeoil.snakeOilPrivateKey;
        mode = "0600";
      };
      services.macha.managed = {
        enable = true;
        deploy.enable = true;
        authorizedKeys = [ snakeoil.snakeOilPublicKey ];
      };
      # This host's configuration plus each change, as complete systems.
      system.build.machaTestSystems = lib.mapAttrs (
        _: change: (extendModules { modules = [ change ]; }).config.system.build.toplevel
      ) changes;
    };
in
pkgs.testers.runNixOSTest {
  name = "macha-deploy";
  globalTimeout = 30 * 60;

  nodes = {
    controller =
      { lib, nodes, ... }:
      {
        imports = [ self.nixosModules.default ];
        virtualisation.memorySize = 1536;
        # The systems to deploy, valid in this host's store (what `nix copy` sends from).
        virtualisation.additionalPaths = lib.concatMap (
          t: lib.attrValues nodes.${t}.system.build.machaTestSystems
        ) targets;
        environment.etc."macha-test/id_ecdsa" = {
          source = snakeoil.snakeOilPrivateKey;
          mode = "0400";
          user = "macha";
        };
        # For the test's own SSH checks (Macha pins the keys from services.macha.hosts itself).
        environment.etc."macha-test/known_hosts".text = lib.concatMapStrings (
          t: "${t} ${snakeoil.snakeOilPublicKey}\n"
        ) targets;
        services.macha = {
          enable = true;
          checkInterval = "5s";
          hosts = lib.genAttrs targets (_: {
            hostKey = snakeoil.snakeOilPublicKey;
          });
          settings = {
            ssh.key = "/etc/macha-test/id_ecdsa";
            # Short enough for a test; the dead-man timer still outlasts everything Macha waits for
            # (60 + 15 + 20 + 2 < 120 seconds).
            deploy = {
              activate_timeout = "60s";
              reconnect_timeout = "15s";
              verify_timeout = "20s";
              retry = "2s";
              dead_man = "2m";
              # The VMs' /nix is small; the test's systems are mostly there already.
              min_free_mib = 16;
            };
          };
        };
      };

    target1 = target;
    target2 = target;
  };

  testScript =
    { nodes, ... }:
    let
      systems = t: nodes.${t}.system.build.machaTestSystems;
    in
    ''
      import json
      import shlex

      good = "${(systems "target1").good}"
      slow = "${(systems "target1").slow}"
      failing = "${(systems "target2").failing}"
      no_ssh = "${(systems "target2").no-ssh}"
      ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/macha-test/known_hosts -i /etc/macha-test/id_ecdsa"


      def remote(host, command):
          """Runs `command` on `host` as the macha user over SSH, the way Macha logs in."""
          return controller.execute(f"runuser -u macha -- {ssh} macha@{host} {shlex.quote(command)}")


      def current(machine):
          return machine.succeed("readlink -e /run/current-system").strip()


      def deploy(args):
          """`macha deploy ARGS --approve --json` as root (an admin): its exit status and final states."""
          status, out = controller.execute(f"macha deploy {args} --approve --json")
          print(out)
          return status, json.loads(out)


      start_all()
      for t in (target1, target2):
          t.wait_for_unit("sshd.service")
          t.wait_for_unit("multi-user.target")
      controller.wait_for_unit("macha.service")

      with subtest("deploy.enable: macha may run the deployment's steps, and nothing more"):
          assert remote("target1", "true")[0] == 0
          for command in ["sudo -n /run/current-system/sw/bin/systemctl restart sshd.service",
                          "sudo -n /run/current-system/sw/bin/systemd-run --unit=other -- /run/current-system/sw/bin/true",
                          "sudo -n /run/current-system/sw/bin/true"]:
              assert remote("target1", command)[0] != 0, f"target1 allowed macha: {command}"

      with subtest("--diff-only shows the change and changes nothing"):
          old1 = current(target1)
          status, out = controller.execute(f"macha deploy target1 --system {good} --diff-only 2>&1")
          print(out)
          assert status == 0, f"exit {status}: {out}"
          assert "hello" in out, f"the diff does not show the new package: {out}"
          assert current(target1) == old1, "--diff-only changed target1"
          target1.fail("test -e /etc/macha-test/deployed")

      with subtest("an approved deployment is verified and committed"):
          status, states = deploy(f"target1 --system {good}")
          assert status == 0, f"exit {status}: {states}"
          assert states[0]["final_state"]["state"] == "succeeded", states
          assert current(target1) == good, f"target1 runs {current(target1)}, not {good}"
          target1.succeed("grep -qx 'deployed by macha' /etc/macha-test/deployed")
          target1.succeed("/run/current-system/sw/bin/hello")
          # Committed: the system profile's newest generation is the new system.
          assert target1.succeed("readlink -e /nix/var/nix/profiles/system").strip() == good
          # The dead-man timer was disarmed: nothing of the deployment is left running.
          target1.fail("systemctl list-units --no-legend 'macha-deploy-*' | grep -q .")

      with subtest("a host reset during activation boots its committed system, never reported succeeded"):
          import threading
          before = current(target1)
          result = {}
          worker = threading.Thread(target=lambda: result.update(out=deploy(f"target1 --system {slow}")))
          worker.start()
          target1.wait_until_succeeds(
              "systemctl list-units --no-legend --state=activating,active 'macha-deploy-*.service' | grep -q .",
              timeout=120,
          )
          target1.crash()
          target1.start()
          target1.wait_for_unit("sshd.service")
          worker.join(timeout=600)
          status, states = result["out"]
          # `test` never touched the boot entry: the host boots the system committed before.
          assert current(target1) == before, f"target1 runs {current(target1)}, not {before}"
          assert status != 0, f"a reset deployment reported success: {states}"
          assert states[0]["final_state"]["state"] in ("rolled_back", "unknown"), states
          target1.fail("test -e /etc/macha-test/slow")

      with subtest("a configuration whose new unit fails is rolled back"):
          old2 = current(target2)
          status, states = deploy(f"target2 --system {failing}")
          assert status == 4, f"exit {status}: {states}"
          assert states[0]["final_state"]["state"] == "rolled_back", states
          assert current(target2) == old2, f"target2 runs {current(target2)}, not its old {old2}"
          assert remote("target2", "true")[0] == 0, "target2 is not reachable after the rollback"

      with subtest("a configuration that stops sshd: the host comes back on its old system"):
          status, states = deploy(f"target2 --system {no_ssh}")
          # Macha cannot verify a host it cannot reach again: `unknown` (exit 5) when the new sshd
          # refuses every new connection; `rolled back` (exit 4) if the rollback still got through.
          assert status in (4, 5), f"exit {status}: {states}"
          assert states[0]["final_state"]["state"] in ("unknown", "rolled_back"), states
          # The dead-man timer (2 minutes after arming) brings the old system back by itself.
          target2.wait_until_succeeds(f"test \"$(readlink -e /run/current-system)\" = {old2}", timeout=300)
          target2.wait_for_unit("sshd.service")
          controller.wait_until_succeeds(
              f"runuser -u macha -- {ssh} macha@target2 true", timeout=120
          )

      with subtest("the deployments are listed"):
          listed = json.loads(controller.succeed("macha deploy list --json"))
          print(json.dumps(listed, indent=2))
          assert len(listed) >= 3, listed
    '';
}
