//! The quest log: `macha logs search`, `stats`, `timeline` and `commands`, on a database file
//! (`--db`) with known contents, and through a running daemon's socket.

use crate::support::daemon::TestDaemon;
use macha_core::Timestamp;
use macha_core::issue::{IssueState, Lifecycle};
use macha_store::{AuditKind, IssueChanges, NewAction, NewAudit, NewIssue, Severity, Store};
use std::path::Path;
use std::process::{Command, Output};

fn macha(args: &[&str], db: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_macha"))
        .env_remove("MACHA_CONFIG")
        .env_remove("MACHA_SOCKET")
        .env("MACHA_LOG", "error")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn json(args: &[&str], db: &Path) -> serde_json::Value {
    let out = macha(args, db);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// JSON lines (the audit listings) as values.
fn lines(args: &[&str], db: &Path) -> Vec<serde_json::Value> {
    let out = macha(args, db);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

const MIN: i64 = 60_000;

/// A store with two hosts' issues (one resolved after 10 minutes, one after 30, one still open
/// and back twice), two commands (one exited 0, one 3) and their outcomes.
fn seeded(db: &Path, t0: i64) {
    let mut store = Store::open(db).unwrap_or_else(|e| panic!("{e}"));
    let ts = Timestamp::from_millis;
    let issue = |store: &mut Store, host: &str, check: &str, subject: &str, at: i64| {
        let new = NewIssue {
            host: host.into(),
            check_name: check.into(),
            subject: subject.into(),
            severity: Severity::Error,
            summary: format!("{subject} on {host}"),
            details: serde_json::Value::Null,
            seen_at: ts(at),
        };
        let audit = NewAudit::new(ts(at), AuditKind::Issue, Severity::Error, host, format!("issue opened: {subject}"))
            .with_subject(subject);
        store.insert_issue(&new, &audit).unwrap_or_else(|e| panic!("{e}"))
    };
    let resolve = |store: &mut Store, id: i64, host: &str, at: i64, recurrences: u32| {
        let life = Lifecycle { state: IssueState::Resolved, since: ts(at), last_seen: ts(at), recurrences };
        let audit = NewAudit::new(ts(at), AuditKind::Issue, Severity::Notice, host, "issue resolved");
        store
            .update_issue(id, IssueState::Open, &life, &IssueChanges::default(), &audit)
            .unwrap_or_else(|e| panic!("{e}"));
    };
    let nginx = issue(&mut store, "web1", "unit", "nginx.service", t0);
    let disk = issue(&mut store, "db1", "disk", "/var", t0 + MIN);
    issue(&mut store, "web1", "unit", "php-fpm.service", t0 + 2 * MIN);
    resolve(&mut store, nginx.id, "web1", t0 + 10 * MIN, 2);
    resolve(&mut store, disk.id, "db1", t0 + 31 * MIN, 0);
    for (host, target, at, ok, detail, output) in [
        (
            "web1",
            "nginx.service",
            t0 + 3 * MIN,
            true,
            "/run/current-system/sw/bin/systemctl restart nginx.service exited with status 0",
            "restarted; bind() to 0.0.0.0:80 succeeded",
        ),
        (
            "db1",
            "nix-store-gc",
            t0 + 5 * MIN,
            false,
            "/run/current-system/sw/bin/nix-collect-garbage exited with status 3",
            "error: cannot delete path: Permission denied",
        ),
    ] {
        let action = NewAction {
            correlation_id: format!("c-{target}"),
            ts_started: ts(at),
            host: host.into(),
            kind: "run_command".into(),
            target: format!("{host}/run_command/{target}"),
            approval_id: None,
            issue_id: None,
        };
        let started = NewAudit::new(ts(at), AuditKind::Action, Severity::Info, host, format!("running {target}"));
        let id = store.record_action_started(&action, &started).unwrap_or_else(|e| panic!("{e}"));
        let outcome = NewAudit::new(ts(at + 2_500), AuditKind::Outcome, Severity::Notice, host, detail)
            .with_subject(target)
            .with_payload(serde_json::json!({"succeeded": ok, "verified": ok, "detail": detail, "output": output}));
        store.record_action_finished(id, ok, Some(detail), ts(at + 2_500), &outcome).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn search_stats_timeline_and_commands_read_a_database_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("macha.db");
    let t0 = macha::now().millis() - 3_600_000;
    seeded(&db, t0);

    // Search: words from the command output (a payload), from summaries, with filters.
    let hits = lines(&["logs", "search", "permission denied", "--json"], &db);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!((hits[0]["host"].as_str(), hits[0]["kind"].as_str()), (Some("db1"), Some("outcome")));
    let hits = lines(&["logs", "search", "nginx", "--host", "web1", "--kind", "issue", "--json"], &db);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(lines(&["logs", "search", "nginx", "--host", "db1", "--json"], &db).is_empty());
    assert!(lines(&["logs", "search", "nginx", "--since", "1m", "--json"], &db).is_empty());
    // Query syntax typed by a person is searched as words, never an error.
    for hostile in ["\"nginx", "NEAR(a b", "kind:outcome", "*", "AND"] {
        let out = macha(&["logs", "search", hostile], &db);
        assert!(out.status.success(), "{hostile:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = macha(&["logs", "search", "nginx", "--kind", "bogus"], &db);
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    // The refusal names every kind there is.
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth_denied, alert, config, daemon"));

    // Stats: actions by kind and outcome, issues per check and host, time to resolve, flapping.
    let s = json(&["logs", "stats", "--since", "2h", "--json"], &db);
    let actions = s["actions"].as_array().unwrap_or_else(|| panic!("{s}"));
    assert!(actions.contains(&serde_json::json!({"kind": "run_command", "outcome": "succeeded", "count": 1})), "{s}");
    assert!(actions.contains(&serde_json::json!({"kind": "run_command", "outcome": "failed", "count": 1})), "{s}");
    assert_eq!(s["issues"][0], serde_json::json!({"check_name": "unit", "host": "web1", "count": 2}), "{s}");
    assert_eq!(s["resolved"], 2, "{s}");
    // Resolved after 10 and 30 minutes: nearest-rank median 10 min, p90 30 min.
    assert_eq!((s["resolve_median_ms"].as_i64(), s["resolve_p90_ms"].as_i64()), (Some(10 * MIN), Some(30 * MIN)));
    assert_eq!(s["flapping"][0], serde_json::json!({"host": "web1", "subject": "nginx.service", "recurrences": 2}));
    assert_eq!(s["model_requests"], 0);
    let text = macha(&["logs", "stats", "--since", "2h"], &db);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("time to resolve: 2 resolved, median 10m, p90 30m"), "{text}");

    // Commands: exit status, duration and output of each.
    let runs = json(&["logs", "commands", "--json"], &db);
    let runs = runs.as_array().unwrap_or_else(|| panic!("{runs}"));
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["host"], "db1", "newest first: {runs:?}");
    assert_eq!((runs[0]["exit_status"].as_i64(), runs[0]["duration_ms"].as_i64()), (Some(3), Some(2_500)));
    assert_eq!(runs[0]["output"], "error: cannot delete path: Permission denied");
    assert_eq!(runs[1]["exit_status"].as_i64(), Some(0));
    let web1 = json(&["logs", "commands", "--host", "web1", "--json"], &db);
    assert_eq!(web1.as_array().map(Vec::len), Some(1), "{web1}");

    // Timeline: one host's records in order, nothing of the other host.
    let t = lines(&["logs", "timeline", "web1", "--since", "2h", "--json"], &db);
    assert!(t.len() >= 5, "{t:?}");
    assert!(t.iter().all(|r| r["host"] == "web1"), "{t:?}");
    let times: Vec<i64> = t.iter().filter_map(|r| r["ts"].as_i64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let kinds: Vec<&str> = t.iter().filter_map(|r| r["kind"].as_str()).collect();
    for k in ["issue", "action", "outcome"] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
}

#[test]
fn the_daemon_answers_the_quest_log_over_its_socket() {
    let d = TestDaemon::builder().wait_for_first_cycle().start();
    let out = d.cli(&["logs", "search", "daemon started", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(hits.iter().any(|h| h["kind"] == "daemon"), "{hits:?}");
    let stats = d.json(&["logs", "stats", "--json"]);
    assert!(stats["actions"].is_array() && stats["resolved"].is_u64(), "{stats}");
    let runs = d.json(&["logs", "commands", "--json"]);
    assert!(runs.is_array(), "{runs}");
    let out = d.cli(&["logs", "timeline", "local", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
