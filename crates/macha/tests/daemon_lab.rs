//! The daemon against a real systemd: the user manager of `tests/lab/systemd-user.sh up` (systemd
//! in a private mount+PID namespace, reached over its own bus). These tests start the real `macha
//! daemon` binary pointed at that bus, break units by killing their processes, and watch what Macha
//! does through its own CLI and database.
//!
//! The lab is found through `MACHA_LAB_SDUSER` (default `/run/macha-lab/sduser`). Without it these
//! tests fail with instructions; they never pass silently. They are `#[ignore]`d so that a plain
//! `cargo test` does not need the lab; `tests/run.sh` (CI) runs them with the lab up. They run one
//! at a time (a daemon sees every unit of the manager, including other tests' units).

mod support;

use macha_store::{AuditKind, AuditQuery, Store};
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::lab::{Lab, lab};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(40);

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    support::daemon::wait_for(what, WAIT, cond);
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

fn spawn(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(["daemon", "--config"])
        .arg(config)
        .env("MACHA_LOG", "info")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

impl Daemon {
    /// Kills the daemon with SIGKILL (no chance to clean up) and starts it again on the same state.
    fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.dir.path().join("macha.toml"));
    }

    fn start(lab: &Lab, autonomy: &str, interval: &str, top: &str, tables: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("macha.toml");
        std::fs::write(
            &config,
            format!(
                "autonomy = \"{autonomy}\"\ncheck_interval = \"{interval}\"\n{top}\n[paths]\nstate_dir = \"{}\"\nsocket = \"{}\"\n[systemd]\nbus = \"{}\"\n[journal]\nenable = false\n[executor]\nverify_delay = \"1s\"\ntimeout = \"20s\"\n{tables}\n",
                dir.path().join("state").display(),
                dir.path().join("macha.sock").display(),
                lab.address
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let child = spawn(&config);
        let d = Daemon { child, dir };
        // Ready once the first cycle is recorded.
        wait_for("the daemon's first cycle", || !d.history().is_empty());
        d
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("state/macha.db")
    }

    /// The snapshot history rows (one per cycle).
    fn history(&self) -> Vec<macha_store::HistoryRecord> {
        match Store::open_read_only(self.db()) {
            Ok(s) if self.db().exists() => s.query_history(&macha_store::HistoryQuery::default()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn audit(&self, kind: AuditKind) -> Vec<macha_store::AuditRecord> {
        if !self.db().exists() {
            return Vec::new();
        }
        match Store::open_read_only(self.db()) {
            Ok(s) => s.query_audit(&AuditQuery { kinds: vec![kind], ..AuditQuery::default() }).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn about(&self, kind: AuditKind, unit: &str) -> Vec<macha_store::AuditRecord> {
        self.audit(kind)
            .into_iter()
            .filter(|r| r.subject.as_deref().is_some_and(|s| s.contains(unit)) || r.summary.contains(unit))
            .collect()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_macha"))
            .args(args)
            .arg("--socket")
            .arg(self.dir.path().join("macha.sock"))
            .env("MACHA_LOG", "error")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
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
    let daemon = Daemon::start(&lab, "auto-safe", "1h", "", "");
    unit.kill();
    // The cycle interval is one hour: only the signal path can see this failure now.
    wait_for("a finding for the failed unit", || !daemon.about(AuditKind::Finding, &unit.name).is_empty());
    wait_for("a verified outcome", || {
        daemon.about(AuditKind::Outcome, &unit.name).iter().any(|r| r.summary.contains("succeeded and verified"))
    });
    assert_eq!(unit.active_state(), "active");
    let decisions = daemon.about(AuditKind::Decision, &unit.name);
    assert!(decisions.iter().any(|d| d.summary.starts_with("execute:")), "{decisions:?}");
    let issues = daemon.json(&["issues", "list", "--all", "--json"]);
    let issue = issues
        .as_array()
        .and_then(|a| a.iter().find(|i| i["subject"] == unit.name.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(issue["state"], "resolved", "{issues}");
    // Everything about this failure carries one correlation id.
    let finding = &daemon.about(AuditKind::Finding, &unit.name)[0];
    let outcome = &daemon.about(AuditKind::Outcome, &unit.name)[0];
    assert_eq!(finding.correlation_id, outcome.correlation_id);
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_suggest_queues_and_approve_executes() {
    let _g = serial();
    let lab = lab();
    let unit = lab.unit(&unique("mt-suggest"));
    unit.start();
    let daemon = Daemon::start(&lab, "suggest", "1h", "", "");
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
    assert!(daemon.about(AuditKind::Action, &unit.name).is_empty());
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
    let daemon = Daemon::start(&lab, "auto-full", "1h", &format!("protected_units = [\"{name}\"]"), "");
    unit.kill();
    wait_for("a deny decision", || {
        daemon.about(AuditKind::Decision, &unit.name).iter().any(|d| d.summary.starts_with("deny:"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(unit.active_state(), "failed");
    assert!(daemon.about(AuditKind::Action, &unit.name).is_empty());
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
    let daemon = Daemon::start(&lab, "auto-safe", "5s", "", "[flap]\nlimit = 2\nwindow = \"10m\"");
    unit.break_start();
    unit.kill();
    wait_for("a failed outcome", || {
        daemon.about(AuditKind::Outcome, &unit.name).iter().any(|r| r.summary.contains("failed"))
    });
    assert_eq!(unit.active_state(), "failed");
    wait_for("an escalation to a person", || {
        daemon
            .about(AuditKind::Decision, &unit.name)
            .iter()
            .any(|d| d.summary.starts_with("approval:") && d.summary.contains("flap limit"))
    });
    let executed = daemon.about(AuditKind::Action, &unit.name).len();
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
    let mut daemon = Daemon::start(&lab, "auto-safe", "10s", "", "");
    unit.kill();
    wait_for("the restart to start", || !daemon.about(AuditKind::Action, &unit.name).is_empty());
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
