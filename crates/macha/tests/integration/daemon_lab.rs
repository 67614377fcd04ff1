//! The daemon against a real systemd: the user manager of `tests/lab/systemd-user.sh up` (systemd
//! in a private mount+PID namespace, reached over its own bus). These tests start the real `macha
//! daemon` binary pointed at that bus, break units by killing their processes, and watch what Macha
//! does through its own CLI and database.
//!
//! The lab is found through `MACHA_LAB_SDUSER` (default `/run/macha-lab/sduser`). Without it these
//! tests fail with instructions; they never pass silently. They are `#[ignore]`d so that a plain
//! `cargo test` does not need the lab; `tests/run.sh` (CI) runs them with the lab up. They run one
//! at a time (a daemon sees every unit of the manager, including other tests' units).

use crate::support;

use macha_store::{AuditKind, Store};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::daemon::TestDaemon;
use support::lab::{Lab, lab};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(40);

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    support::daemon::wait_for(what, WAIT, cond);
}

/// The daemon on the lab's systemd at `autonomy`, with cycles every `interval` and `tables`
/// appended to its configuration; ready once its first cycle is recorded.
fn start(lab: &Lab, autonomy: &str, interval: &str, top: &str, tables: &str) -> TestDaemon {
    TestDaemon::builder()
        .lab(lab)
        .autonomy(autonomy)
        .interval(interval)
        .top(top)
        .tables(tables)
        .log("info")
        .wait_for_first_cycle()
        .start()
}

/// The audit records of `kind` about `unit` (by subject or summary).
fn about(d: &TestDaemon, kind: AuditKind, unit: &str) -> Vec<macha_store::AuditRecord> {
    d.audit(kind)
        .into_iter()
        .filter(|r| r.subject.as_deref().is_some_and(|s| s.contains(unit)) || r.summary.contains(unit))
        .collect()
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() % 100_000)
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_auto_safe_restarts_a_failed_unit_detected_by_signal() {
    let _g = serial();
    let lab = lab();
    let unit = lab.unit(&unique("mt-autosafe"));
    unit.start();
    let daemon = start(&lab, "auto-safe", "1h", "", "");
    unit.kill();
    // The cycle interval is one hour: only the signal path can see this failure now.
    wait_for("a finding for the failed unit", || !about(&daemon, AuditKind::Finding, &unit.name).is_empty());
    wait_for("a verified outcome", || {
        about(&daemon, AuditKind::Outcome, &unit.name).iter().any(|r| r.summary.contains("succeeded and verified"))
    });
    assert_eq!(unit.active_state(), "active");
    let decisions = about(&daemon, AuditKind::Decision, &unit.name);
    assert!(decisions.iter().any(|d| d.summary.starts_with("execute:")), "{decisions:?}");
    // Resolved by observation: systemd's signal that the unit is active again, not the outcome.
    wait_for("the issue resolved by observation", || {
        let issues = daemon.json(&["issues", "list", "--all", "--json"]);
        issues
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["subject"] == unit.name.as_str() && i["state"] == "resolved"))
    });
    // Everything about this failure carries one correlation id.
    let finding = &about(&daemon, AuditKind::Finding, &unit.name)[0];
    let outcome = &about(&daemon, AuditKind::Outcome, &unit.name)[0];
    assert_eq!(finding.correlation_id, outcome.correlation_id);
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_suggest_queues_and_approve_executes() {
    let _g = serial();
    let lab = lab();
    let unit = lab.unit(&unique("mt-suggest"));
    unit.start();
    let daemon = start(&lab, "suggest", "1h", "", "");
    unit.kill();
    let mut id = 0;
    wait_for("a pending approval", || {
        let list = daemon.json(&["approve", "list", "--json"]);
        match list.as_array().and_then(|a| a.iter().find(|r| r["action"]["unit"] == unit.name.as_str())) {
            Some(r) => {
                id = r["id"].as_i64().unwrap_or(0);
                true
            }
            None => false,
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(unit.active_state(), "failed", "at suggest nothing may execute before approval");
    assert!(about(&daemon, AuditKind::Action, &unit.name).is_empty());
    let out = daemon.json(&["approve", "approve", &id.to_string(), "--json"]);
    assert_eq!(out["decision"]["verdict"], "execute", "{out}");
    wait_for("the unit active again", || unit.active_state() == "active");
    wait_for("the approval executed", || {
        daemon.json(&["approve", "show", &id.to_string(), "--json"])["approval"]["state"] == "executed"
    });
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_protected_unit_is_never_touched() {
    let _g = serial();
    let lab = lab();
    let name = unique("mt-protected");
    let unit = lab.unit(&name);
    unit.start();
    let daemon = start(&lab, "auto-full", "1h", &format!("protected_units = [\"{name}\"]"), "");
    unit.kill();
    wait_for("a deny decision", || {
        about(&daemon, AuditKind::Decision, &unit.name).iter().any(|d| d.summary.starts_with("deny:"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(unit.active_state(), "failed");
    assert!(about(&daemon, AuditKind::Action, &unit.name).is_empty());
    assert!(daemon.json(&["approve", "list", "--json"]).as_array().is_some_and(Vec::is_empty));
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_a_restart_that_fails_is_recorded_failed_and_the_flap_guard_escalates() {
    let _g = serial();
    let lab = lab();
    let unit = lab.unit(&unique("mt-flap"));
    unit.start();
    // Cycles every 5 s re-detect the still-failed unit; after 2 restarts the flap guard escalates.
    let daemon = start(&lab, "auto-safe", "5s", "", "[flap]\nlimit = 2\nwindow = \"10m\"");
    unit.break_start();
    unit.kill();
    wait_for("a failed outcome", || {
        about(&daemon, AuditKind::Outcome, &unit.name).iter().any(|r| r.summary.contains("failed"))
    });
    // The second restart the flap limit allows may be under way at this moment: the unit ends
    // failed again (it cannot start), whatever Macha does.
    wait_for("the unit failed", || unit.active_state() == "failed");
    wait_for("an escalation to a person", || {
        about(&daemon, AuditKind::Decision, &unit.name)
            .iter()
            .any(|d| d.summary.starts_with("approval:") && d.summary.contains("flap limit"))
    });
    let executed = about(&daemon, AuditKind::Action, &unit.name).len();
    assert_eq!(executed, 2, "exactly the flap limit of restarts ran");
    let issues = daemon.json(&["issues", "list", "--json"]);
    let issue = issues
        .as_array()
        .and_then(|a| a.iter().find(|i| i["subject"] == unit.name.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_ne!(issue["state"], "resolved", "a failed restart never resolves the issue: {issue}");
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_a_daemon_killed_mid_action_loses_nothing() {
    let _g = serial();
    let lab = lab();
    // Starting takes 3 s, so the restart is still running when the daemon is killed.
    let unit = lab.unit_with(&unique("mt-killed"), "ExecStartPre=/bin/sleep 3");
    unit.start();
    let mut daemon = start(&lab, "auto-safe", "10s", "", "");
    unit.kill();
    wait_for("the restart to start", || !about(&daemon, AuditKind::Action, &unit.name).is_empty());
    daemon.kill_and_restart();
    // Everything committed before the kill is there, and the half-done action is closed as
    // interrupted on the next start, with an audit record.
    let store = Store::open_read_only(daemon.db()).unwrap_or_else(|e| panic!("{e}"));
    assert!(store.integrity_check().unwrap_or_else(|e| panic!("{e}")).is_empty());
    drop(store);
    wait_for("the interrupted action closed", || {
        Store::open_read_only(daemon.db())
            .ok()
            .and_then(|s| s.actions_since(macha_core::Timestamp(0)).ok())
            .is_some_and(|a| {
                a.iter().any(|a| {
                    a.target.contains(&unit.name)
                        && a.state == macha_store::ActionState::Failed
                        && a.detail.as_deref().is_some_and(|d| d.contains("interrupted"))
                })
            })
    });
    // systemd finished the restart on its own; the next cycle observes the unit active and resolves the issue.
    wait_for("the unit active", || unit.active_state() == "active");
    wait_for("the issue resolved by observation", || {
        let issues = daemon.json(&["issues", "list", "--all", "--json"]);
        issues
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["subject"] == unit.name.as_str() && i["state"] == "resolved"))
    });
}

/// A job's whole reach is judged: restarting a unit also restarts what is `PartOf=` it, so a
/// protected unit reachable that way makes the restart refused (nothing sent), and an unprotected
/// one is named in the outcome.
#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_a_job_that_would_reach_a_protected_unit_is_refused_and_what_it_reaches_is_named() {
    let _g = serial();
    let lab = lab();
    let target = lab.unit(&unique("mt-reach"));
    let guarded_name = unique("mt-guarded");
    let guarded = lab.unit_with(&guarded_name, &format!("[Unit]\nPartOf={}\n[Service]", target.name));
    let follower = lab.unit_with(&unique("mt-follower"), &format!("[Unit]\nPartOf={}\n[Service]", target.name));
    target.start();
    guarded.start();
    follower.start();
    let daemon = start(&lab, "auto-safe", "1h", &format!("protected_units = [\"{guarded_name}\"]"), "");
    target.kill();
    wait_for("the restart refused because of its reach", || {
        about(&daemon, AuditKind::Outcome, &target.name)
            .iter()
            .any(|r| r.summary.contains(&guarded.name) && r.summary.contains("protected"))
    });
    let outcome = about(&daemon, AuditKind::Outcome, &target.name).remove(0);
    assert!(outcome.summary.contains("nothing was sent"), "{}", outcome.summary);
    assert_ne!(target.active_state(), "active", "the target was restarted anyway");
    drop(daemon);

    // Without the protection the same restart runs, and names every unit it reached.
    target.start();
    follower.start();
    let daemon = start(&lab, "auto-safe", "1h", "", "");
    target.kill();
    wait_for("a restart that names what it reached", || {
        about(&daemon, AuditKind::Outcome, &target.name)
            .iter()
            .any(|r| r.summary.contains("also reached") && r.summary.contains(&follower.name))
    });
}
