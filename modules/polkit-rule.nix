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
#   * two exceptions, both `start` only: `reboot.target`, how Macha reboots this host once a
#     person has approved it (Macha's policy never lets a reboot run without an approval;
#     logind's inhibitor locks are read first); and, with `cleanupUnits` (where the daemon runs),
#     the fixed clean-up units of ./macha.nix: `macha-journal-vacuum@N.service`,
#     `macha-collect-garbage@N.service` (N matching ^[1-9][0-9]{0,3}$, nothing else),
#     `macha-store-verify.service`, `macha-store-repair.service`. They are Macha's own units, which
#     the helper refuses (protected), so this allowance comes before it; stop, restart and every
#     other instance of them are still refused.
# Every other action of `user` falls through to the default (administrator authentication, which
# a daemon cannot give). Plain Nix: `macha` and `policyConfig` are store paths given by the module.
{
  user,
  macha,
  policyConfig,
  cleanupUnits ? false,
}:
let
  # The fixed clean-up units (./macha.nix): `start` only, the instance a number of days.
  cleanupAllowance =
    if cleanupUnits then
      builtins.concatStringsSep "\n" [
        "// The fixed clean-up units of modules/macha.nix: start only, the instance a number of days."
        "  if (verb === \"start\" && typeof unit === \"string\" &&"
        "      (/^macha-(journal-vacuum|collect-garbage)@[1-9][0-9]{0,3}\\.service$/.test(unit) ||"
        "       unit === \"macha-store-verify.service\" || unit === \"macha-store-repair.service\")) {"
        "    return polkit.Result.YES;"
        "  }"
        "  "
      ]
    else
      "";
in
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
    ${cleanupAllowance}if (typeof unit !== "string" || unit === "") {
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
