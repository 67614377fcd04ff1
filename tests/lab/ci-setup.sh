#!/usr/bin/env bash
# ci-setup.sh — prepare a FRESH machine of this kind (Debian 12, root, only the
# package registries reachable) for the Macha test lab, idempotently.
#
# Usage:  ci-setup.sh            # local tiers + containers + netns hosts (the default lab)
#         ci-setup.sh --local    # only the local tiers: systemd-user.sh (a real
#                                # systemd user manager) and the journal tests
#                                # (real journalctl on journal files written by
#                                # systemd-journal-remote); no rootfs, no network lab
#         ci-setup.sh --nix      # also Debian's nix-bin (Nix 2.8, eval/parse only)
#
# Packages, by tier (the lists below are the single source of truth):
#   local:      systemd (the manager + journalctl), dbus-user-session (the user
#               bus as dbus.socket), dbus-bin (busctl's peers), systemd-journal-remote
#               (writes .journal files from export-format input for the journal tests)
#               prometheus (the server and promtool for the Prometheus tests; Debian's
#               policy-rc.d keeps its service from starting)
#   containers: openssh-server openssh-client debootstrap systemd-container iproute2 nftables
#
# Measured on this kind (2 cores), fresh cache, other work running beside it:
#   apt-get update + install                ~15 s
#   + nix-bin                               ~8 s
#   debootstrap + lab layer (build-rootfs)  ~50-100 s   (cached afterwards: ~0 s)
# Then: nspawn.sh up 3 ≈ 2 s; netns-sshd.sh up 3 ≈ 1 s; systemd-user.sh up ≈ 0.2-0.5 s.
#
# Notes:
#  * Debian's /usr/sbin/policy-rc.d on this image exits 101, so installing
#    openssh-server does NOT start an sshd on the machine.
#  * systemd-container and systemd-journal-remote pull a systemd point upgrade
#    (252.38 -> 252.39) of the machine's own (unused: PID 1 is not systemd)
#    systemd packages: both depend on exactly their own libsystemd-shared.
#  * The qemu VM tier of the original lab (debian-vm.sh) is not part of this copy.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
local_only=0 nix=0
for a in "$@"; do
  case $a in
    --local) local_only=1 ;;
    --nix) nix=1 ;;
    *) sed -n '2,30p' "$0"; exit 2 ;;
  esac
done
t() { date +%s%N; }
ms() { echo $(( ($(t) - $1) / 1000000 )); }

T0=$(t)
pkgs=(systemd dbus-user-session dbus-bin systemd-journal-remote prometheus)
[ $local_only = 0 ] && pkgs+=(openssh-server openssh-client debootstrap systemd-container iproute2 nftables)
[ $nix = 1 ] && pkgs+=(nix-bin)
# The web console's browser test (headless Chromium over WebDriver).
[ $local_only = 0 ] && pkgs+=(chromium chromium-driver)
missing=0
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "${p%%/*}" 2>/dev/null | grep -q 'install ok installed' || missing=1
done
if [ $missing = 1 ]; then
  t1=$(t)
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${pkgs[@]}" >/dev/null
  echo "[ci-setup] packages installed in $(ms "$t1") ms"
fi
# systemd-journal-remote lives outside $PATH on Debian; check that it runs.
/lib/systemd/systemd-journal-remote --version >/dev/null
if [ $local_only = 0 ]; then
  t1=$(t); "$HERE/build-rootfs.sh" >/dev/null; echo "[ci-setup] rootfs ready in $(ms "$t1") ms"
fi
echo "[ci-setup] total $(ms "$T0") ms"
