//! `macha knowledge` against a running daemon: the seed loaded once, search with hostile words,
//! add, edit, show, forget, export and import (bad lines reported, good ones kept), viewers read
//! but may not write, the runbook catalog extended by a directory, the `macha-knowledge` name, and
//! the similar past issues of `macha issues show`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::daemon::TestDaemon;
use macha_core::Timestamp;
use macha_store::{AuditKind, NewAudit, NewIssue, Severity, Store};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

/// `nobody`, in the group `nogroup`, which the daemon below makes its viewer group.
const NOBODY: u32 = 65534;

const RUNBOOK: &str = "---\nid: local-backup-failed\ntitle: The nightly backup failed\nuse_when: backup.service failed\nupdated: 2026-12-03\n---\n1. Read the journal of backup.service.\n";

fn issue(store: &mut Store, subject: &str, summary: &str, ts: i64) -> i64 {
    let new = NewIssue {
        host: "local".into(),
        check_name: "unit_failed".into(),
        subject: subject.into(),
        severity: Severity::Warning,
        summary: summary.into(),
        details: serde_json::json!({}),
        seen_at: Timestamp(ts),
    };
    let audit = NewAudit::new(Timestamp(ts), AuditKind::Issue, Severity::Warning, "local", "opened");
    store.insert_issue(&new, &audit).unwrap().id
}

fn start() -> TestDaemon {
    let d = TestDaemon::builder()
        .top("viewer_group = \"nogroup\"\n")
        .config(|dir| {
            format!(
                "check_interval = \"1h\"\nviewer_group = \"nogroup\"\n[paths]\nstate_dir = \"{0}/state\"\nsocket = \"{0}/macha.sock\"\n\
                 [systemd]\nenable = false\n[journal]\nenable = false\n[knowledge]\nrunbooks = \"{0}/runbooks\"\n",
                dir.display()
            )
        })
        .prepare(|dir| {
            std::fs::create_dir_all(dir.join("runbooks")).unwrap();
            std::fs::write(dir.join("runbooks/local-backup-failed.md"), RUNBOOK).unwrap();
            std::fs::create_dir_all(dir.join("state")).unwrap();
            let mut store = Store::open(dir.join("state/macha.db")).unwrap();
            let old = issue(&mut store, "backup.service", "backup.service failed: exit code 2", 1_000);
            store
                .update_issue(
                    old,
                    macha_store::IssueState::Open,
                    &macha_store::Lifecycle {
                        state: macha_store::IssueState::Closed,
                        since: Timestamp(2_000),
                        last_seen: Timestamp(1_000),
                        recurrences: 0,
                    },
                    &macha_store::IssueChanges { resolution: Some("disk remounted by hand".into()), ..Default::default() },
                    &NewAudit::new(Timestamp(2_000), AuditKind::Issue, Severity::Info, "local", "closed"),
                )
                .unwrap();
            issue(&mut store, "nginx.service", "nginx.service failed: address in use", 3_000);
            issue(&mut store, "backup.service", "backup.service failed: exit code 2 again", 4_000);
        })
        .start();
    let _ = std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755));
    d
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn seed_search_edit_export_import_and_tiers() {
    let d = start();
    let seeded = ok(&d.cli(&["knowledge", "seed", "--json"]));
    let added = seeded["added"].as_u64().unwrap();
    assert!(added >= 40, "{seeded}");
    let again = ok(&d.cli(&["knowledge", "seed", "--json"]));
    assert_eq!((again["added"].as_u64(), again["unchanged"].as_u64()), (Some(0), Some(added)));

    let hits = ok(&d.cli(&["knowledge", "search", "--json", "start-limit-hit"]));
    assert_eq!(hits[0]["topic"], "Unit in a restart loop", "{hits}");
    for nasty in ["\"NEAR(", "-", "*", "topic:nix AND (", "'; DROP TABLE knowledge; --"] {
        let out = d.cli(&["knowledge", "search", "--json", nasty]);
        assert!(out.status.success(), "{nasty:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let added = ok(&d.cli(&[
        "knowledge",
        "add",
        "--json",
        "--topic",
        "Backups on this fleet",
        "--category",
        "troubleshooting",
        "--use-when",
        "backup.service failed",
        "--content",
        "The backup target is mounted by backup-disk.mount; check it first.",
    ]));
    let id = added["id"].as_i64().unwrap().to_string();
    let shown = ok(&d.cli(&["knowledge", "show", &id, "--json"]));
    assert_eq!((shown["provenance"].as_str(), shown["added_by"].as_str()), (Some("person"), Some("root (uid 0)")));
    ok(&d.cli(&["knowledge", "edit", &id, "--json", "--confidence", "0.9"]));
    assert_eq!(ok(&d.cli(&["knowledge", "show", &id, "--json"]))["confidence"], 0.9);
    let bad = d.cli(&["knowledge", "add", "--topic", "t", "--category", "gossip", "--content", "c"]);
    assert_eq!(bad.status.code(), Some(65), "an unknown category is invalid input");

    // A viewer reads, and may not write.
    let viewer = |args: &[&str]| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_macha"));
        c.args(args).arg("--socket").arg(d.socket()).env("MACHA_LOG", "error").env("HOME", "/nonexistent");
        c.uid(NOBODY).gid(NOBODY);
        c.output().unwrap()
    };
    let list = ok(&viewer(&["knowledge", "list", "--json"]));
    assert!(list.as_array().unwrap().len() > 40);
    assert_eq!(viewer(&["knowledge", "forget", &id]).status.code(), Some(77));
    assert_eq!(viewer(&["knowledge", "seed"]).status.code(), Some(77));

    // Export, then import the export with one bad line: reported, the good lines skipped as known.
    let export = d.cli(&["knowledge", "export"]);
    assert!(export.status.success());
    let lines = String::from_utf8_lossy(&export.stdout).lines().count();
    assert_eq!(lines, list.as_array().unwrap().len());
    let file = d.path("import.jsonl");
    let mut text = String::from_utf8_lossy(&export.stdout).into_owned();
    text.push_str("{\"topic\": \"broken\"}\n");
    text.push_str(
        "{\"topic\":\"New from import\",\"content\":\"c\",\"category\":\"general\",\"confidence\":0.5,\"provenance\":{\"kind\":\"seeded\"}}\n",
    );
    std::fs::write(&file, text).unwrap();
    let imported = d.cli(&["knowledge", "import", file.to_str().unwrap(), "--json"]);
    assert_eq!(imported.status.code(), Some(65), "a bad line is reported in the exit code");
    let report: serde_json::Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(report["added"], 1, "{report}");
    assert_eq!(report["skipped"].as_u64(), Some(lines as u64));
    assert_eq!(report["bad_lines"][0]["line"].as_u64(), Some(lines as u64 + 1));

    ok(&d.cli(&["knowledge", "forget", &id, "--json"]));
    assert_eq!(d.cli(&["knowledge", "show", &id]).status.code(), Some(65));

    // The applet name.
    let out = d.cli_as("macha-knowledge", &["search", "--json", "journal", "vacuum"], "");
    assert!(!ok(&out).as_array().unwrap().is_empty());
}

#[test]
fn runbooks_and_similar_past_issues() {
    let d = start();
    let config = d.path("macha.toml");
    let config = config.to_str().unwrap();
    let list = ok(&d.cli(&["knowledge", "runbooks", "list", "--json", "--config", config]));
    let ids: Vec<&str> = list["runbooks"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    assert!(ids.contains(&"local-backup-failed") && ids.contains(&"nix-store-disk-full"), "{ids:?}");
    let shown = ok(&d.cli(&["knowledge", "runbooks", "show", "local-backup-failed", "--json", "--config", config]));
    assert_eq!(shown["body"], "1. Read the journal of backup.service.");
    let refused = d.cli(&["knowledge", "runbooks", "show", "../runbooks/local-backup-failed", "--config", config]);
    assert_eq!(refused.status.code(), Some(65));

    // Issue 3 (backup.service again): issue 1 of the same check and subject comes first, with
    // the resolution a person wrote.
    let detail = ok(&d.cli(&["issues", "show", "3", "--json"]));
    let similar = detail["similar"].as_array().unwrap();
    assert_eq!(similar[0]["id"], 1, "{detail}");
    assert_eq!(similar[0]["why"], "same check and subject, similar text");
    assert_eq!(similar[0]["resolutions"][0], "disk remounted by hand");
    assert_eq!(similar[0]["verified"], false);
    let text = d.cli(&["issues", "show", "3"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("similar past issues:"));
}
