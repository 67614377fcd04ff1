# The sudo rules that let Macha deploy NixOS systems to a managed host
# (services.macha.managed.deploy.enable), and nothing else: one rule per privileged step of the
# deployment protocol (docs/deploy.md), each a program with a whole-argument regular expression
# (sudo >= 1.9.10 matches the arguments, joined by single spaces, against `^…$`).
#
# The argv these rules admit are exactly the ones `macha_core::command::deploy_command` builds: no
# argument contains a space, so a joined line splits back into one argv only. The variable parts
# are a deployment id (hexadecimal), a store path (hash and name, no `/` and no space) and a
# number of seconds. What runs as root is always `<store path>/bin/switch-to-configuration`
# (`test`, or `boot`) inside a transient unit, or a fixed systemctl / nix-store / nix-env call.
#
# Deploying a system is root on the host by nature: whoever may activate a store path may run any
# program as root. These rules keep it to that one door — no shell, no wildcard, no other verb.
#
# A pure function of the programs' absolute paths, so that it evaluates without nixpkgs
# (`nix-instantiate --eval --strict --json modules/deploy-sudo.nix --argstr systemdRun …`), which
# is how the lab installs the same rules on its hosts and checks them against real sudo.
{
  systemdRun,
  systemctl,
  nixStore,
  nixEnv,
}:
let
  id = "[0-9a-f]{1,32}";
  # A store path: /nix/store/<32 base-32 characters>-<name>; base 32 leaves out e, o, u and t.
  path = "/nix/store/[0-9a-df-np-sv-z]{32}-[-a-zA-Z0-9+._?=]{1,211}";
  seconds = "[1-9][0-9]{0,4}";
  switch = "${path}/bin/switch-to-configuration";
  rule = program: regex: "${program} ^${regex}$";
in
[
  # GC roots for the old and the new system, so that neither can be collected mid-deployment.
  (rule nixStore "--realise --add-root /nix/var/nix/gcroots/macha/${id}-(old|new) ${path}")
  # The dead-man switch: re-activates the recorded old system unless disarmed in time.
  (rule systemdRun "--unit=macha-deploy-${id}-deadman --on-active=${seconds}s --timer-property=AccuracySec=1s --property=Type=oneshot --quiet -- ${switch} test")
  # The activation, in a transient unit that outlives the SSH session.
  (rule systemdRun "--unit=macha-deploy-${id} --wait --quiet --property=Type=oneshot --property=TimeoutStartSec=${seconds} -- ${switch} test")
  # The rollback to the recorded old system.
  (rule systemdRun "--unit=macha-deploy-${id}-rollback --wait --quiet --collect --property=Type=oneshot --property=TimeoutStartSec=${seconds} -- ${switch} test")
  # The boot entry, once verified (or put back by a rollback).
  (rule systemdRun "--unit=macha-deploy-${id}-boot --wait --quiet --collect --property=Type=oneshot -- ${switch} boot")
  # Disarming the dead-man switch; stopping and forgetting the activation unit.
  (rule systemctl "stop -- macha-deploy-${id}-deadman[.]timer")
  (rule systemctl "stop -- macha-deploy-${id}[.]service")
  (rule systemctl "reset-failed -- macha-deploy-${id}[.]service macha-deploy-${id}-deadman[.]service")
  # The system profile's new generation (or the old one back).
  (rule nixEnv "--profile /nix/var/nix/profiles/system --set ${path}")
]
