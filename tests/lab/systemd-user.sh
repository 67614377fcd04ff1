#!/usr/bin/env bash
# systemd-user.sh — a REAL systemd service manager (the `systemd --user`
# instance, Debian's systemd 252) on this machine, with no VM or container
# image: it runs in a private mount + PID namespace, with its own user D-Bus
# (dbus-daemon started by its dbus.socket unit). Its D-Bus API is the same
# org.freedesktop.systemd1 Manager/Unit/Service interfaces as the system
# instance (ListUnits, GetUnit, StartUnit, RestartUnit, properties such as
# ActiveState/SubState/Result, JobRemoved/PropertiesChanged signals), only on
# the user bus instead of the system bus, and it starts ~1 s.
#
# Why a namespace: systemd --user refuses to start unless the host "has been
# booted with systemd" (the marker /run/systemd/system). This machine's PID 1
# is not systemd, so we mount a private tmpfs on /run/systemd inside our own
# mount namespace and create the marker there; the host is untouched.
# Cgroups: it runs inside our own /sys/fs/cgroup/{systemd,unified}/macha-lab/sduser*
# (named after the lab directory, `sduser` by default), removed on `down`; labs
# in different directories can run side by side.
#
# Usage:  systemd-user.sh up | down | status | selftest | env | run CMD...
#   eval "$(systemd-user.sh env)"   # then: systemctl --user ..., busctl --user ...
#   Units go in $HOME/.config/systemd/user of the manager (printed by `env`).
# Env:    MACHA_LAB_SDUSER=DIR   where the lab lives (default /run/macha-lab/sduser);
#         the Rust lab tests read the same variable and find the bus at
#         unix:path=$MACHA_LAB_SDUSER/xdg/bus and the unit directory at
#         $MACHA_LAB_SDUSER/home/.config/systemd/user (they never change HOME).
# Limits: it is the user manager (runs as root here, but no system units, no
# logind sessions, no PolicyKit, no `sudo systemctl`); for the system instance
# and SSH use nspawn.sh.
set -euo pipefail
RUN=${MACHA_LAB_SDUSER:-${MACHA_LAB_RUN_SDUSER:-/run/macha-lab/sduser}}
CG_HIER="systemd unified"
# Always sduser*, so it can never be the cgroup of another lab script (nspawn.sh uses c1..).
CG=macha-lab/$(basename "$RUN")
case $CG in macha-lab/sduser*) ;; *) CG=macha-lab/sduser-${CG#macha-lab/} ;; esac

envvars() {
  echo "export XDG_RUNTIME_DIR=$RUN/xdg HOME=$RUN/home DBUS_SESSION_BUS_ADDRESS=unix:path=$RUN/xdg/bus MACHA_LAB_SDUSER=$RUN"
}

up() {
  down >/dev/null 2>&1 || true
  mkdir -p "$RUN/xdg" "$RUN/home/.config/systemd/user"; chmod 700 "$RUN/xdg"
  # A breakable demo unit, as in the lab rootfs.
  cat > "$RUN/home/lab-demo" <<'EOF'
#!/bin/sh
if [ -e "$HOME/lab-demo.fail" ]; then echo "lab-demo: broken" >&2; exit 3; fi
echo "lab-demo: running"; exec sleep infinity
EOF
  chmod 755 "$RUN/home/lab-demo"
  cat > "$RUN/home/.config/systemd/user/lab-demo.service" <<EOF
[Unit]
Description=Lab demo service (breakable)
[Service]
ExecStart=$RUN/home/lab-demo
EOF
  for h in $CG_HIER; do mkdir -p "/sys/fs/cgroup/$h/$CG"; done
  eval "$(envvars)"
  # PID 1 of the new PID namespace is a shell that starts systemd --user and
  # waits; killing the unshare process tears the whole namespace down.
  setsid sh -c '
    for h in '"$CG_HIER"'; do echo $$ > /sys/fs/cgroup/$h/'"$CG"'/cgroup.procs; done
    exec unshare --mount --propagation private --pid --fork --kill-child --mount-proc sh -c "
      mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system &&
      /lib/systemd/systemd --user --log-target=console & wait"' \
    > "$RUN/manager.log" 2>&1 < /dev/null &
  echo $! > "$RUN/unshare.pid"; disown
  # Readiness: ask the manager over the user bus. IMPORTANT: from OUTSIDE the
  # PID namespace only the bus works (busctl --user, zbus/sd-bus clients on
  # DBUS_SESSION_BUS_ADDRESS). systemctl --user talks to the manager's private
  # socket $XDG_RUNTIME_DIR/systemd/private, which drops clients from another
  # PID namespace during auth ("Transport endpoint is not connected"), and its
  # is-system-running prints "offline" outside (it checks THIS host for
  # /run/systemd/system). Use `systemd-user.sh run systemctl --user ...`.
  local st=
  for _ in $(seq 150); do
    st=$(busctl --user get-property org.freedesktop.systemd1 /org/freedesktop/systemd1 \
         org.freedesktop.systemd1.Manager SystemState 2>/dev/null | cut -d'"' -f2) || true
    case $st in running|degraded) break ;; esac
    sleep 0.1
  done
  case $st in
    running|degraded) echo "up: SystemState=$st; MACHA_LAB_SDUSER=$RUN; eval \"\$($0 env)\"" ;;
    *) echo "up: the manager did not answer on unix:path=$RUN/xdg/bus; log:" >&2
       tail -20 "$RUN/manager.log" >&2; exit 1 ;;
  esac
}

down() {
  local pid h
  if [ -f "$RUN/unshare.pid" ]; then
    pid=$(cat "$RUN/unshare.pid")
    # unshare --fork ignores SIGTERM; stop the manager itself (clean exit), the
    # namespace's PID 1 (sh) then returns, and unshare exits with it.
    local mgr
    mgr=$(pgrep -P "$(pgrep -P "$pid" | head -1)" -x systemd 2>/dev/null | head -1) || true
    [ -n "$mgr" ] && kill "$mgr" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true         # --kill-child takes the namespace with it
  fi
  for h in $CG_HIER; do   # anything left in our cgroup is ours; then remove it
    for pid in $(find "/sys/fs/cgroup/$h/$CG" -name cgroup.procs -exec cat {} + 2>/dev/null); do
      kill -9 "$pid" 2>/dev/null || true
    done
    for _ in $(seq 10); do
      [ -d "/sys/fs/cgroup/$h/$CG" ] || break
      find "/sys/fs/cgroup/$h/$CG" -depth -type d -exec rmdir {} \; 2>/dev/null || sleep 0.3
    done
    rmdir "/sys/fs/cgroup/$h/macha-lab" 2>/dev/null || true
  done
  rm -rf "$RUN"
  # The shared parent, if no other lab uses it.
  [ "$(dirname "$RUN")" = /run/macha-lab ] && rmdir /run/macha-lab 2>/dev/null || true
  echo down
}

run() {  # run a command inside the manager's mount+PID namespace
  local pid
  pid=$(pgrep -P "$(pgrep -P "$(cat "$RUN/unshare.pid")")" -x systemd | head -1)
  eval "$(envvars)"
  exec nsenter -t "$pid" -m -p "$@"
}

selftest() {
  local t0; t0=$(date +%s%N)
  trap down EXIT
  up
  echo "started in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  eval "$(envvars)"
  local B="busctl --user" M="org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager"
  local U=/org/freedesktop/systemd1/unit/lab_2ddemo_2eservice
  "$0" run systemctl --user --no-pager list-units --type=socket --no-legend | head -3
  $B get-property $M Version
  # Everything below goes over D-Bus from outside the namespace, as Macha would.
  $B call $M StartUnit ss lab-demo.service replace; sleep 0.3
  echo "started: $($B get-property org.freedesktop.systemd1 $U org.freedesktop.systemd1.Unit ActiveState)"
  touch "$HOME/lab-demo.fail"; $B call $M RestartUnit ss lab-demo.service replace >/dev/null; sleep 0.5
  echo "after breaking: $($B get-property org.freedesktop.systemd1 $U org.freedesktop.systemd1.Unit ActiveState) / $($B get-property org.freedesktop.systemd1 $U org.freedesktop.systemd1.Service Result)"
  rm "$HOME/lab-demo.fail"; $B call $M ResetFailedUnit s lab-demo.service; $B call $M RestartUnit ss lab-demo.service replace >/dev/null; sleep 0.3
  echo "after repair: $($B get-property org.freedesktop.systemd1 $U org.freedesktop.systemd1.Unit ActiveState)"
  "$0" run systemd-run --user --unit=probe --quiet sleep 30 && "$0" run systemctl --user is-active probe
}

case ${1:-} in
  up) up ;; down) down ;; env) envvars ;; selftest) selftest ;; run) shift; run "$@" ;;
  status) if [ -f "$RUN/unshare.pid" ]; then eval "$(envvars)"; busctl --user get-property org.freedesktop.systemd1 \
            /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager SystemState; else echo "not running"; fi ;;
  *) sed -n '2,28p' "$0"; exit 2 ;;
esac
