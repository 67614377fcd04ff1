# The module on one machine with every option set (./common/every-option.nix): every option
# reaches the daemon, secrets stay out of the store, the unit runs hardened as the macha user, and
# the polkit and sudo rules grant exactly what Macha's policy could use.
{ pkgs, self }:
let
  snakeoil = import "${pkgs.path}/nixos/tests/ssh-keys.nix" pkgs;
  expected = pkgs.writeText "macha-every-option-expected.json" (
    builtins.toJSON (import ./common/every-option-expected.nix { inherit (snakeoil) snakeOilPublicKey; })
  );
  # The highest `systemd-analyze security` exposure accepted (0 = fully sandboxed, 10 = not at
  # all). The unit scores about 1.6; the exceptions are commented in modules/macha.nix.
  maxExposure = "2.5";
  sleeper = {
    wantedBy = [ "multi-user.target" ];
    serviceConfig.ExecStart = "${pkgs.coreutils}/bin/sleep infinity";
  };
in
pkgs.testers.runNixOSTest {
  name = "macha-module";
  globalTimeout = 15 * 60;

  nodes.machine = {
    imports = [
      self.nixosModules.default
      ./common/every-option.nix
    ];
    virtualisation.memorySize = 2048;
    users.users.alice = {
      isNormalUser = true;
      extraGroups = [ "macha-admins" ];
    };
    users.users.bob.isNormalUser = true;
    # The secrets: outside the store, root only, present before the unit starts.
    systemd.tmpfiles.rules = [
      "d /run/macha-secrets 0700 root root -"
      "f /run/macha-secrets/llm-api-key 0400 root root - secret-llm-api-key-4711"
      "f /run/macha-secrets/macha.env 0400 root root - MACHA_LOG=macha=debug"
    ];
    # Units for the polkit rule: one Macha may control, two protected by configuration
    # (services.macha.protectedServices and services.macha.managed.protectedServices).
    systemd.services.demo = sleeper;
    systemd.services.precious = sleeper;
    systemd.services.precious-too = sleeper;
    # The sandbox has no network: nothing to download.
    systemd.services.ollama-model-loader.enable = false;
  };

  testScript =
    { nodes, ... }:
    ''
      import json
      import re

      expected = json.loads(open("${expected}").read())

      machine.wait_for_unit("macha.service")

      with subtest("every option reaches the daemon"):
          resolved = json.loads(machine.succeed("macha check-config --json /etc/macha/macha.toml"))
          for key, want in expected.items():
              got = resolved[key]
              if isinstance(want, dict):
                  got = {k: got.get(k) for k in want}
              assert got == want, f"{key}: the module gave {want!r}, the daemon resolved {got!r}"
          # The unit runs the checked file that /etc/macha/macha.toml points to.
          machine.succeed("systemctl show -p ExecStart macha.service | grep -F \"$(readlink -f /etc/macha/macha.toml)\"")
          machine.succeed("grep -qx 'autonomy = \"auto-safe\"' /etc/macha/macha.toml")

      with subtest("secrets stay out of the store and the configuration"):
          for f in ["/etc/macha/macha.toml", "/etc/systemd/system/macha.service"]:
              machine.succeed(f"test -r {f} && ! grep -q secret-llm-api-key {f}")
          machine.succeed("systemctl show -p LoadCredential macha.service | grep -F llm-api-key:/run/macha-secrets/llm-api-key")
          machine.succeed("grep -qx secret-llm-api-key-4711 /run/credentials/macha.service/llm-api-key")
          machine.succeed("systemctl show -p EnvironmentFiles macha.service | grep -F /run/macha-secrets/macha.env")
          pid = machine.succeed("systemctl show -p MainPID --value macha.service").strip()
          machine.succeed(f"tr '\\0' '\\n' < /proc/{pid}/environ | grep -qx MACHA_LOG=macha=debug")

      with subtest("the unit: its own user, notify with watchdog, restarted (not stopped) by a switch"):
          props = machine.succeed(
              "systemctl show macha.service -p User -p Type -p WatchdogUSec -p NoNewPrivileges"
              " -p ProtectSystem -p PrivateTmp -p SupplementaryGroups -p StatusText"
          ).splitlines()
          print("\n".join(props))
          for want in ["User=macha", "Type=notify", "WatchdogUSec=1min", "NoNewPrivileges=yes",
                       "ProtectSystem=strict", "PrivateTmp=yes", "SupplementaryGroups=systemd-journal"]:
              assert want in props, f"{want} not in {props}"
          machine.succeed("test \"$(id -u macha)\" = 2600 && test \"$(id -g macha)\" = 2600")
          machine.succeed(f"test \"$(ps -o user= -p {pid})\" = macha")
          machine.fail("grep -q X-RestartIfChanged=false /etc/systemd/system/macha.service")
          machine.succeed("grep -qx X-StopIfChanged=false /etc/systemd/system/macha.service")

      with subtest("the unit's hardening: systemd-analyze security"):
          report = machine.succeed("systemd-analyze security macha.service --no-pager 2>&1")
          print(report)
          exposure = float(re.search(r"Overall exposure level for macha\.service: (\d+\.\d+)", report).group(1))
          assert exposure <= ${maxExposure}, f"exposure {exposure} is above ${maxExposure}"

      with subtest("state and socket"):
          machine.succeed("test \"$(stat -c %a /var/lib/macha)\" = 700")
          machine.succeed("test \"$(stat -c %U /var/lib/macha)\" = macha")
          machine.succeed("test \"$(stat -c %a /run/macha/macha.sock)\" = 666")
          # Its SSH key, created on first start, with the public half in the journal.
          machine.succeed("test \"$(stat -c '%U %a' /var/lib/macha/.ssh/id_ed25519)\" = 'macha 600'")
          machine.succeed("journalctl -u macha.service | grep -q \"Macha's SSH public key\"")
          # Reads work for everyone; the admin group is in the configuration.
          machine.succeed("runuser -u bob -- macha-approve list")
          machine.succeed("runuser -u alice -- macha-issues list")

      with subtest("the multicall names are installed"):
          for name in machine.succeed("macha applets").split():
              machine.succeed(f"command -v {name}")

      with subtest("polkit: the macha user controls exactly what the policy could act on"):
          machine.wait_for_unit("demo.service")

          def as_macha(args):
              return machine.execute(f"runuser -u macha -- systemctl --no-ask-password {args}")[0]

          for args in ["restart demo.service", "stop demo.service", "start demo.service",
                       "reset-failed demo.service"]:
              assert as_macha(args) == 0, f"macha could not: systemctl {args}"
          for args in ["restart sshd.service", "restart precious.service", "restart precious-too.service",
                       "restart macha.service", "restart polkit.service", "start multi-user.target",
                       "try-restart demo.service", "kill demo.service",
                       "set-property demo.service CPUWeight=10", "daemon-reload"]:
              assert as_macha(args) != 0, f"macha was allowed: systemctl {args}"
          machine.succeed("systemctl is-active demo.service precious.service precious-too.service")
          machine.succeed("journalctl -u polkit.service | grep -q 'macha: refused'")

      with subtest("clean-up units: macha starts exactly the fixed ones, as root, and nothing else"):
          def start_as_macha(unit):
              return machine.execute(f"runuser -u macha -- systemctl --no-ask-password start {unit}")[0]

          assert start_as_macha("macha-journal-vacuum@3650.service") == 0
          props = machine.succeed(
              "systemctl show macha-journal-vacuum@3650.service -p Result -p ExecMainStatus -p User"
          ).split()
          assert "Result=success" in props and "ExecMainStatus=0" in props, props
          machine.succeed("journalctl -u macha-journal-vacuum@3650.service | grep -q 'Vacuuming done'")
          assert start_as_macha("macha-store-verify.service") == 0
          machine.succeed("systemctl show macha-store-verify.service -p Result | grep -qx Result=success")
          for unit in ["macha-journal-vacuum@0.service", "macha-journal-vacuum@01.service",
                       "macha-journal-vacuum@12345.service", "macha-journal-vacuum@1d.service",
                       "macha-collect-garbage@-1.service", "macha-other@3.service"]:
              assert start_as_macha(unit) != 0, f"macha could start {unit}"
          for args in ["stop macha-store-verify.service", "restart macha-store-verify.service",
                       "restart macha-journal-vacuum@30.service"]:
              assert machine.execute(f"runuser -u macha -- systemctl --no-ask-password {args}")[0] != 0, \
                  f"macha was allowed: systemctl {args}"

      with subtest("sudo: exactly the clean-up commands of a managed host"):
          def sudo_as_macha(args):
              return machine.execute(f"runuser -u macha -- sudo -n {args}")[0]

          assert sudo_as_macha("/run/current-system/sw/bin/journalctl --vacuum-time=30d") == 0
          for args in ["/run/current-system/sw/bin/journalctl --vacuum-time=30d --rotate",
                       "/run/current-system/sw/bin/journalctl --vacuum-size=1K",
                       "/run/current-system/sw/bin/nix-collect-garbage -d",
                       "/run/current-system/sw/bin/systemctl restart sshd.service",
                       "/run/current-system/sw/bin/true"]:
              assert sudo_as_macha(args) != 0, f"sudo allowed macha: {args}"

      with subtest("ollama.enable runs Ollama with the configured models to preload"):
          machine.wait_for_unit("ollama.service")
          machine.wait_for_open_port(11434)
          loaded = json.loads('${builtins.toJSON nodes.machine.services.ollama.loadModels}')
          assert loaded == ["qwen2.5:1.5b", "qwen2.5:7b", "all-minilm"], loaded
    '';
}
