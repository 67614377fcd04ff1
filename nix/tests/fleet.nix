# A fleet: Macha on `controller`, two managed hosts (`target1`, `target2`) reached over SSH with
# pinned keys, and `ollama`, a scripted Ollama API. A unit made to fail on a target is restarted at
# auto-safe; at suggest the restart waits for a person: a non-admin's approval is refused, an
# admin's executes it. A protected unit (sshd) is never touched, and a switch that changes Macha
# restarts it.
#
# The snakeoil key pair from nixpkgs' tests serves as Macha's login key and as the targets' host
# key (test keys only).
{ pkgs, self }:
let
  inherit (pkgs) lib;
  snakeoil = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
  targets = [
    "target1"
    "target2"
  ];

  stubScript = pkgs.writeText "ollama-script.json" (
    builtins.toJSON [
      {
        match = "flaky";
        message.content = "flaky.service was killed; restarting it is the usual remedy.";
      }
    ]
  );

  target = {
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
      authorizedKeys = [ snakeoil.snakeOilPublicKey ];
    };
    # The unit the test breaks: no Restart=, so a kill leaves it failed until someone acts.
    systemd.services.flaky = {
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
        Restart = "no";
      };
    };
  };
in
pkgs.testers.runNixOSTest {
  name = "macha-fleet";
  globalTimeout = 30 * 60;

  nodes = {
    controller =
      { lib, pkgs, ... }:
      {
        imports = [ self.nixosModules.default ];
        virtualisation.memorySize = 1536;
        environment.systemPackages = [ pkgs.curl ];
        # sshd runs here too: the protected unit of the last subtest.
        services.openssh.enable = true;
        users.groups.macha-admins = { };
        users.users.alice = {
          isNormalUser = true;
          extraGroups = [ "macha-admins" ];
        };
        users.users.bob.isNormalUser = true;
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
          autonomyLevel = "auto-safe";
          checkInterval = "5s";
          adminGroup = "macha-admins";
          ollama.url = "http://ollama:11434";
          hosts = lib.genAttrs targets (_: {
            hostKey = snakeoil.snakeOilPublicKey;
            tags = [ "vm-test" ];
          });
          settings = {
            ssh.key = "/etc/macha-test/id_ecdsa";
            executor.verify_delay = "1s";
          };
        };
        specialisation.suggest.configuration.services.macha.autonomyLevel = lib.mkForce "suggest";
      };

    target1 = target;
    target2 = target;

    ollama = {
      networking.firewall.allowedTCPPorts = [ 11434 ];
      systemd.services.ollama-stub = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          ExecStart = lib.escapeShellArgs [
            "${pkgs.python3}/bin/python3"
            "${./common/ollama-stub.py}"
            "--script"
            "${stubScript}"
            "--model"
            "qwen2.5:3b"
            "--model"
            "qwen2.5:14b"
            "--model"
            "nomic-embed-text"
            "--log"
            "/var/lib/ollama-stub/requests.jsonl"
          ];
          DynamicUser = true;
          StateDirectory = "ollama-stub";
        };
      };
    };
  };

  testScript = ''
    import json
    import shlex

    ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/macha-test/known_hosts -i /etc/macha-test/id_ecdsa"


    def as_user(user, command):
        return f"runuser -u {user} -- {command}"


    def remote(host, command):
        """Runs `command` on `host` as the macha user, the way Macha's SSH path does."""
        return controller.execute(as_user("macha", f"{ssh} macha@{host} {shlex.quote(command)}"))


    start_all()
    ollama.wait_for_unit("ollama-stub.service")
    ollama.wait_for_open_port(11434)
    for t in (target1, target2):
        t.wait_for_unit("sshd.service")
        t.wait_for_unit("flaky.service")
    controller.wait_for_unit("macha.service")

    with subtest("a managed host grants the macha user exactly the SSH path's rights"):
        status, out = remote("target1", "systemctl is-active flaky.service")
        assert status == 0 and out.strip() == "active", out
        status, groups = remote("target1", "id -nG")
        assert status == 0 and "systemd-journal" in groups.split(), groups
        assert remote("target2", "systemctl --no-ask-password restart flaky.service")[0] == 0
        assert remote("target2", "sudo -n /run/current-system/sw/bin/journalctl --vacuum-time=30d")[0] == 0
        for command in ["systemctl --no-ask-password restart sshd.service",
                        "systemctl --no-ask-password try-restart flaky.service",
                        "sudo -n /run/current-system/sw/bin/journalctl --vacuum-time=30d --rotate",
                        "sudo -n /run/current-system/sw/bin/systemctl restart sshd.service",
                        "sudo -n /run/current-system/sw/bin/nix-collect-garbage -d",
                        "sudo -n /run/current-system/sw/bin/true"]:
            assert remote("target2", command)[0] != 0, f"target2 allowed macha: {command}"

    with subtest("the model server is reachable (Macha does not depend on it)"):
        controller.succeed("curl -sf http://ollama:11434/api/tags | grep -q qwen2.5:3b")

    with subtest("auto-safe: a failed unit on a target is detected and restarted"):
        before = target1.succeed("systemctl show -p InvocationID --value flaky.service").strip()
        target1.succeed("systemctl kill --signal=KILL flaky.service")
        target1.wait_until_succeeds(
            f"systemctl is-active flaky.service && test \"$(systemctl show -p InvocationID --value flaky.service)\" != {before}",
            timeout=180,
        )
        controller.wait_until_succeeds("macha-logs actions --host target1 --json | grep -q flaky", timeout=60)

    with subtest("a protected unit (sshd) is never touched"):
        # Without its own Restart=, a killed sshd stays failed unless someone restarts it.
        controller.succeed(
            "mkdir -p /run/systemd/system/sshd.service.d"
            " && printf '[Service]\\nRestart=no\\n' > /run/systemd/system/sshd.service.d/no-restart.conf"
            " && systemctl daemon-reload"
        )
        controller.succeed("systemctl kill --signal=KILL sshd.service")
        controller.wait_until_succeeds("systemctl is-failed sshd.service")
        controller.sleep(30)  # six check intervals
        controller.succeed("systemctl is-failed sshd.service")
        controller.succeed("macha-logs actions --json > /tmp/actions.json && ! grep -q sshd /tmp/actions.json")
        controller.succeed("macha-approve list --all --json > /tmp/approvals.json && ! grep -q sshd /tmp/approvals.json")
        # Nor could Macha's user, whatever its policy said: polkit refuses.
        controller.fail(as_user("macha", "systemctl --no-ask-password restart sshd.service"))
        controller.succeed("rm -r /run/systemd/system/sshd.service.d && systemctl daemon-reload && systemctl restart sshd.service")

    with subtest("a switch that changes Macha restarts it with the new configuration"):
        pid = controller.succeed("systemctl show -p MainPID --value macha.service").strip()
        controller.succeed("/run/current-system/specialisation/suggest/bin/switch-to-configuration test")
        controller.succeed("grep -qx 'autonomy = \"suggest\"' /etc/macha/macha.toml")
        controller.wait_for_unit("macha.service")
        assert controller.succeed("systemctl show -p MainPID --value macha.service").strip() != pid, \
            "switch-to-configuration left the old macha.service running"
        controller.succeed("macha status --json | grep -q suggest")

    with subtest("suggest: the restart waits for a person; only an admin can approve it"):
        target1.succeed("systemctl kill --signal=KILL flaky.service")
        target1.wait_until_succeeds("systemctl is-failed flaky.service")
        controller.wait_until_succeeds(as_user("alice", "macha-approve list --json") + " | grep -q flaky", timeout=120)
        pending = [a for a in json.loads(controller.succeed(as_user("alice", "macha-approve list --json")))
                   if "flaky" in json.dumps(a["action"]) and "target1" in json.dumps(a)]
        assert pending, "no pending approval for flaky.service on target1"
        request = pending[0]["id"]
        target1.succeed("systemctl is-failed flaky.service")

        status, out = controller.execute(as_user("bob", f"macha-approve approve {request}"))
        assert status == 77, f"a non-admin's approval was not refused (exit {status}): {out}"
        target1.succeed("systemctl is-failed flaky.service")

        controller.succeed(as_user("alice", f"macha-approve approve {request} --note 'vm test'"))
        target1.wait_until_succeeds("systemctl is-active flaky.service", timeout=120)

    with subtest("what Macha asked the model server"):
        print(ollama.succeed("cat /var/lib/ollama-stub/requests.jsonl 2>/dev/null || true"))
  '';
}
