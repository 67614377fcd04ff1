# The polkit rule that lets Macha's user control units over D-Bus without root and without sudo.
#
# systemd asks polkit for org.freedesktop.systemd1.manage-units with the details `unit` (the
# unit's own name) and `verb` (start, stop, restart, reset-failed, reload, …). The rule answers
# only for `user`:
#   * verbs: exactly the four Macha's executor uses (start, stop, restart, reset-failed); any
#     other verb is refused;
#   * units: the decision is Macha's own policy code, run as a helper (`macha unit-allowed`): a
#     managed unit type (service, socket, timer, path) that no protected pattern covers — the
#     built-in list (ssh, dbus, polkit, network managers, systemd-*, nix-daemon, macha itself, …)
#     plus the configured additions in `policyConfig`. A helper that fails or times out refuses;
#   * one exception: `start` of `reboot.target`, how Macha reboots this host once a person has
#     approved it (Macha's policy never lets a reboot run without an approval; logind's
#     inhibitor locks are read first).
# Every other action of `user` falls through to the default (administrator authentication, which
# a daemon cannot give). Plain Nix: `macha` and `policyConfig` are store paths given by the module.
{
  user,
  macha,
  policyConfig,
}:
''
  // Macha (services.macha): which units the "${user}" user may control. See modules/polkit-rule.nix.
  polkit.addRule(function (action, subject) {
    if (action.id !== "org.freedesktop.systemd1.manage-units" || subject.user !== "${user}") {
      return polkit.Result.NOT_HANDLED;
    }
    var verb = action.lookup("verb");
    var unit = action.lookup("unit");
    if (["start", "stop", "restart", "reset-failed"].indexOf(verb) < 0) {
      polkit.log("macha: refused " + verb + " " + unit + ": not a verb Macha uses");
      return polkit.Result.NO;
    }
    if (verb === "start" && unit === "reboot.target") {
      return polkit.Result.YES;
    }
    if (typeof unit !== "string" || unit === "") {
      polkit.log("macha: refused " + verb + ": no unit named");
      return polkit.Result.NO;
    }
    try {
      // Exit status 0: Macha's policy may act on this unit; anything else throws.
      polkit.spawn(["${macha}/bin/macha", "unit-allowed", "--config", "${policyConfig}", "--", unit]);
      return polkit.Result.YES;
    } catch (error) {
      polkit.log("macha: refused " + verb + " " + unit + ": " + error);
      return polkit.Result.NO;
    }
  });
''
