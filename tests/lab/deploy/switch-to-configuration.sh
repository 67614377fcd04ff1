#!/bin/sh
# A stand-in for NixOS's switch-to-configuration, for the deployment lab (no NixOS can be built
# here): the same verbs, the same exit codes (0; 4 = activated but some units failed; anything
# else = failed) and the same effect on /run/current-system. The system's variant, written in at
# build time, decides how it breaks.
set -u
self=$(cd "$(dirname "$0")/.." && pwd -P)
variant=@variant@
verb=${1:-}
case "$verb" in
  switch | boot | test | dry-activate) ;;
  *) echo "usage: switch-to-configuration switch|boot|test|dry-activate" >&2; exit 100 ;;
esac
if [ "$verb" = dry-activate ]; then
  echo "would activate $self ($variant)"
  exit 0
fi
if [ "$verb" = switch ] || [ "$verb" = boot ]; then
  # The boot loader's default entry, as far as this stand-in has one.
  ln -sfn "$self" /run/macha-lab-boot-entry
fi
[ "$verb" = boot ] && exit 0
if [ -e /run/macha-lab-activation-broken ]; then
  # Left by the `breaks-activation` variant: no system activates any more, the old one included.
  echo "error: activation is broken on this host (/run/macha-lab-activation-broken)" >&2
  exit 1
fi
echo "activating $self ($variant)"
case "$variant" in
  good)
    # What a good configuration does: the services it declares run (sshd and the lab's demo
    # service among them), and the units of another configuration (the broken one of
    # `units-fail`) are gone.
    systemctl start ssh.service 2>/dev/null || true
    systemctl start lab-demo.service 2>/dev/null || true
    systemctl reset-failed 'lab-deploy-broken-*' 2>/dev/null || true
    ln -sfn "$self" /run/current-system
    exit 0 ;;
  units-fail)
    ln -sfn "$self" /run/current-system
    systemd-run --unit="lab-deploy-broken-$$" --quiet /bin/false 2>/dev/null || true
    echo "warning: the following units failed: lab-deploy-broken-$$.service" >&2
    exit 4 ;;
  fails-halfway)
    ln -sfn "$self" /run/current-system
    echo "error: activation script failed" >&2
    exit 1 ;;
  breaks-activation)
    # Fails halfway and leaves the host unable to activate anything: the rollback fails too.
    ln -sfn "$self" /run/current-system
    touch /run/macha-lab-activation-broken
    echo "error: activation script failed and broke activation" >&2
    exit 1 ;;
  stops-ssh)
    # A configuration that locks the controller out: activation "succeeds", SSH is gone.
    # Connections already open survive (sshd's KillMode=process); new ones are refused.
    ln -sfn "$self" /run/current-system
    systemctl stop ssh.socket ssh.service >/dev/null 2>&1 || true
    exit 0 ;;
  stops-demo)
    # A configuration without the lab's demo service: everything else is fine.
    ln -sfn "$self" /run/current-system
    systemctl stop lab-demo.service 2>/dev/null || true
    exit 0 ;;
  slow)
    sleep 15
    systemctl start ssh.service 2>/dev/null || true
    ln -sfn "$self" /run/current-system
    exit 0 ;;
  *)
    echo "unknown variant $variant" >&2
    exit 100 ;;
esac
