//! The local API's authorisation, with a real daemon, a real socket and real other uids: anyone
//! gets the status summary; a viewer (the viewer group) reads and gets the last report but
//! neither approves nor starts a cycle; everyone else is refused reads too; every denial is
//! audited. Needs root (to start a process as another uid); CI runs as root.

use crate::support::daemon::TestDaemon;
use macha_core::Timestamp;
use macha_store::{AuditKind, AuditQuery, NewApproval, NewAudit, Severity, Store};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `nobody` in the group `nogroup`, which the daemon below makes its viewer group.
const NOBODY: u32 = 65534;
/// A uid and gid in no group the daemon knows: anyone.
const STRANGER: u32 = 65533;

/// A daemon at autonomy observe whose database already holds a pending approval for a read-only
/// diagnostic, as the daemon would have queued it; its socket reachable by other uids.
fn start_daemon() -> TestDaemon {
    let daemon = TestDaemon::builder()
        .autonomy("observe")
        .top("viewer_group = \"nogroup\"\n")
        .wait_for_first_cycle()
        .prepare(|dir| {
            std::fs::create_dir_all(dir.join("state")).unwrap_or_else(|e| panic!("{e}"));
            let mut store = Store::open(dir.join("state/macha.db")).unwrap_or_else(|e| panic!("{e}"));
            let now = Timestamp::from_millis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            );
            let action =
                serde_json::json!({"kind": "diagnostic", "host": "local", "name": "disk_usage", "reason": "test"});
            let new = NewApproval {
                host: "local".into(),
                action,
                decision: serde_json::json!({"verdict": "approval", "risk": "low", "reason": "test"}),
                reason: "test".into(),
                requested_by: "test".into(),
                requested_at: now,
                expires_at: now.plus(Duration::from_secs(3600)),
                correlation_id: "c0ffee".into(),
                issue_id: None,
            };
            let audit = NewAudit::new(now, AuditKind::Approval, Severity::Notice, "local", "approval requested");
            store.create_approval(&new, &audit).unwrap_or_else(|e| panic!("{e}"));
        })
        .start();
    // The socket's directory must be reachable by the other uid.
    let _ = std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755));
    daemon
}

fn client(socket: &Path, uid: Option<u32>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_macha"));
    c.args(args).arg("--socket").arg(socket).env("MACHA_LOG", "error").env("HOME", "/nonexistent");
    if let Some(uid) = uid {
        c.uid(uid).gid(uid);
    }
    c.output().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn viewers_read_strangers_get_status_only_and_denials_are_audited() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test starts clients as uids {NOBODY} and {STRANGER} and must run as root");
    }
    let mut daemon = start_daemon();

    // Anyone: the status summary, nothing else (not even the list of approvals or the report).
    let out = client(&daemon.socket(), Some(STRANGER), &["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for args in [&["approve", "list"][..], &["issues", "list"], &["logs", "audit"], &["check"], &["metrics", "local"]] {
        let out = client(&daemon.socket(), Some(STRANGER), args);
        assert_eq!(out.status.code(), Some(77), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("viewer group"), "{args:?}");
    }

    // A viewer reads.
    let out = client(&daemon.socket(), Some(NOBODY), &["approve", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let id = list[0]["id"].as_i64().unwrap_or(-1);
    // A viewer reads the metric history.
    let out = client(&daemon.socket(), Some(NOBODY), &["metrics", "local", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(metrics["names"].as_array().is_some_and(|n| !n.is_empty()), "{metrics}");
    // A viewer's check is the last report: no cycle runs because of it.
    let cycles = daemon.history().len();
    let out = client(&daemon.socket(), Some(NOBODY), &["check", "--json"]);
    assert!(matches!(out.status.code(), Some(0..=3)), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(report["mode"], "daemon", "{report}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.history().len(), cycles, "a viewer's check started a cycle");

    // Writes: denied, with exit code 77 and a clear message.
    let out = client(&daemon.socket(), Some(NOBODY), &["approve", "approve", &id.to_string()]);
    assert_eq!(out.status.code(), Some(77), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    let out = client(&daemon.socket(), Some(NOBODY), &["issues", "close", "1"]);
    assert_eq!(out.status.code(), Some(77));
    // A viewer may ask the model (here it is not enabled: unavailable, not denied); a stranger may not.
    let out = client(&daemon.socket(), Some(NOBODY), &["ask", "what is wrong?"]);
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    let out = client(&daemon.socket(), Some(STRANGER), &["ask", "what is wrong?"]);
    assert_eq!(out.status.code(), Some(77), "{}", String::from_utf8_lossy(&out.stderr));

    // The request is still pending, and the denials are in the audit trail with the uids.
    let out = client(&daemon.socket(), None, &["approve", "show", &id.to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(shown["approval"]["state"], "pending");

    // Root may approve; at autonomy observe the re-decided policy refuses, and that is recorded.
    let out = client(&daemon.socket(), None, &["approve", "approve", &id.to_string(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(v["decision"]["verdict"], "deny", "{v}");
    let out = client(&daemon.socket(), None, &["approve", "show", &id.to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(shown["approval"]["state"], "failed", "{shown}");

    assert!(daemon.stop().success());
    let store = daemon.store();
    let denied = store
        .query_audit(&AuditQuery { kinds: vec![AuditKind::AuthDenied], ..AuditQuery::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let by = |uid: u32| denied.iter().filter(|d| d.payload["uid"] == uid).count();
    assert_eq!((by(STRANGER), by(NOBODY)), (6, 2), "{denied:?}");
}

#[test]
fn notification_reads_need_a_viewer_and_sending_testing_and_silencing_an_admin() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!("this test starts clients as uids {NOBODY} and {STRANGER} and must run as root");
    }
    let mut daemon = start_daemon();
    let sock = daemon.socket();
    // A stranger reads nothing.
    for args in [&["notify", "log"][..], &["silence", "list"]] {
        let out = client(&sock, Some(STRANGER), args);
        assert_eq!(out.status.code(), Some(77), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A viewer reads the log and the silences, and changes nothing.
    for args in [&["notify", "log", "--json"][..], &["silence", "list", "--json"]] {
        let out = client(&sock, Some(NOBODY), args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for args in [
        &["notify", "hello", "from a viewer"][..],
        &["notify", "test", "journal"],
        &["silence", "add", "--host", "web1", "--for", "1h", "--reason", "x"],
        &["silence", "remove", "1"],
    ] {
        let out = client(&sock, Some(NOBODY), args);
        assert_eq!(out.status.code(), Some(77), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "{args:?}");
    }
    // Root (an admin) may.
    let out = client(&sock, None, &["notify", "hello", "from root"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = client(&sock, None, &["notify", "test", "journal"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = client(&sock, None, &["silence", "add", "--host", "web1", "--for", "1h", "--reason", "x", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert!(daemon.stop().success());
    let denied = daemon
        .store()
        .query_audit(&AuditQuery { kinds: vec![AuditKind::AuthDenied], ..AuditQuery::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let ops = |uid: u32| -> Vec<String> {
        denied.iter().filter(|d| d.payload["uid"] == uid).map(|d| d.payload["request"]["op"].to_string()).collect()
    };
    assert_eq!(ops(STRANGER), vec!["\"notify_read\"", "\"notify_read\""], "{denied:?}");
    assert_eq!(ops(NOBODY).len(), 4, "{denied:?}");
    assert!(ops(NOBODY).iter().all(|op| op == "\"notify_write\""), "{denied:?}");
}

#[test]
fn malformed_requests_get_clear_errors_and_the_daemon_survives() {
    use std::io::{BufRead, BufReader, Write};
    let daemon = start_daemon();
    let mut s = std::os::unix::net::UnixStream::connect(daemon.socket()).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("{e}"));
    let mut r = BufReader::new(s.try_clone().unwrap_or_else(|e| panic!("{e}")));
    for (line, want) in [
        ("{\"v\":1,\"req\":{\"op\":\"rm_rf\"}}\n", "bad_request"),
        ("not json\n", "bad_request"),
        ("{\"v\":1,\"req\":{\"op\":\"show_issue\",\"id\":424242}}\n", "not_found"),
        ("{\"v\":1,\"req\":{\"op\":\"status\"}}\n", "\"ok\":true"),
    ] {
        s.write_all(line.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut answer = String::new();
        r.read_line(&mut answer).unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.contains(want), "{line} -> {answer}");
    }
    // An oversized request is refused and the connection closed, nothing else happens.
    let big = vec![b'x'; 70 * 1024];
    let _ = s.write_all(&big);
    let mut answer = String::new();
    let _ = r.read_line(&mut answer);
    assert!(answer.contains("exceeds"), "{answer}");
    let out = client(&daemon.socket(), None, &["approve", "list", "--json"]);
    assert!(out.status.success());
}
