//! The audit hash chain: tampering through a raw connection on the file (triggers dropped first,
//! as someone with write access to the file would) is named precisely; export, prune and verify
//! work together; the schema refuses every unsanctioned delete.

use crate::temp_db;
use macha_core::Timestamp;
use macha_store::{AuditKind, ChainProblem, NewAudit, Severity, Store, StoreError, verify_export};
use rusqlite::Connection;
use std::io::{Read, Write};

fn record(i: i64) -> NewAudit {
    NewAudit::new(Timestamp(1_000 + i), AuditKind::Decision, Severity::Info, "local", format!("decision {i}"))
        .with_correlation_id(format!("c-{i}"))
        .with_payload(serde_json::json!({"n": i, "text": "ünïcode", "nested": {"b": 1, "a": [1.5, null]}}))
}

/// A store with `n` records (ids 1..=n), written in single appends and batches.
fn store_with(n: i64) -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let (dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let half = n / 2;
    for i in 1..=half {
        store.append_audit(&record(i)).unwrap();
    }
    let batch: Vec<NewAudit> = (half + 1..=n).map(record).collect();
    store.append_audit_batch(&batch).unwrap();
    (dir, path, store)
}

/// A raw connection on the file with the audit trail's protective triggers dropped.
fn attacker(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DROP TRIGGER audit_chained;")
        .unwrap();
    conn
}

fn hash_of(path: &std::path::Path, id: i64) -> Vec<u8> {
    Connection::open(path).unwrap().query_row("SELECT hash FROM audit WHERE id = ?1", [id], |r| r.get(0)).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_intact_chain_verifies() {
    let (_dir, _path, mut store) = store_with(10);
    // Records written by guarded operations (with links to their rows) chain too.
    let issue = macha_store::NewIssue {
        host: "local".into(),
        check_name: "unit_failed".into(),
        subject: "nginx.service".into(),
        severity: Severity::Error,
        summary: "nginx.service failed".into(),
        details: serde_json::json!({}),
        seen_at: Timestamp(5_000),
    };
    store.insert_issue(&issue, &record(11)).unwrap();
    let report = store.verify_audit().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.records, report.first_id, report.last_id), (11, Some(1), Some(11)));
    assert_eq!(report.last_hash.as_deref(), Some(hex(&hash_of(store.path(), 11)).as_str()));
}

#[test]
fn an_edited_record_is_named() {
    let (_dir, path, store) = store_with(10);
    let conn = attacker(&path);
    conn.execute("UPDATE audit SET summary = 'nothing happened' WHERE id = 4", []).unwrap();
    let report = store.verify_audit().unwrap();
    assert_eq!(report.problems, vec![ChainProblem::Edited { id: 4 }]);
    assert_eq!(report.problems[0].to_string(), "record 4 was edited: its fields do not match its hash");
    // A change of the payload alone, or of a link column, shows too.
    conn.execute("UPDATE audit SET summary = 'decision 4' WHERE id = 4", []).unwrap();
    conn.execute("UPDATE audit SET payload = '{\"n\":7}' WHERE id = 7", []).unwrap();
    conn.execute("UPDATE audit SET new_state = 'open' WHERE id = 9", []).unwrap();
    let report = store.verify_audit().unwrap();
    assert_eq!(report.problems, vec![ChainProblem::Edited { id: 7 }, ChainProblem::Edited { id: 9 }]);
}

#[test]
fn an_inserted_record_is_named() {
    let (_dir, path, mut store) = store_with(10);
    let conn = attacker(&path);
    // A forged record at the end that does not link to the last one.
    conn.execute(
        "INSERT INTO audit (id, ts, kind, severity, host, summary, prev_hash, hash) \
         SELECT 11, 2000, 'action', 'info', 'local', 'forged', hash, hash FROM audit WHERE id = 3",
        [],
    )
    .unwrap();
    let report = store.verify_audit().unwrap();
    assert!(
        report.problems.contains(&ChainProblem::Relinked { id: 11, previous_id: Some(10) }),
        "{:?}",
        report.problems
    );
    // The store's next record links to whatever is last: the forgery stays visible.
    store.append_audit(&record(12)).unwrap();
    let report = store.verify_audit().unwrap();
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, ChainProblem::Relinked { id: 11, .. } | ChainProblem::Edited { id: 11 }))
    );
    assert!(!report.problems.is_empty());
}

#[test]
fn a_replaced_record_is_named_with_its_successor() {
    let (_dir, path, store) = store_with(10);
    let conn = attacker(&path);
    // Record 5 replaced by a forgery that links correctly to record 4: its own hash cannot match
    // its fields without the chain's encoding, and record 6 no longer follows it.
    conn.execute("DELETE FROM audit WHERE id = 5", []).unwrap();
    conn.execute(
        "INSERT INTO audit (id, ts, kind, severity, host, summary, prev_hash, hash) \
         SELECT 5, 1005, 'decision', 'info', 'local', 'forged', hash, randomblob(32) FROM audit WHERE id = 4",
        [],
    )
    .unwrap();
    let report = store.verify_audit().unwrap();
    assert_eq!(
        report.problems,
        vec![ChainProblem::Edited { id: 5 }, ChainProblem::Relinked { id: 6, previous_id: Some(5) }]
    );
}

#[test]
fn deleted_records_are_named_by_their_neighbours() {
    let (_dir, path, store) = store_with(10);
    let conn = attacker(&path);
    conn.execute("DELETE FROM audit WHERE id IN (4, 5)", []).unwrap();
    let report = store.verify_audit().unwrap();
    assert_eq!(
        report.problems,
        vec![ChainProblem::Missing { from_id: 4, to_id: 5, after_id: Some(3), before_id: Some(6) }]
    );
    assert_eq!(report.problems[0].to_string(), "records 4 to 5 are missing: deleted between records 3 and 6");

    conn.execute("DELETE FROM audit WHERE id IN (1, 10)", []).unwrap();
    let report = store.verify_audit().unwrap();
    assert_eq!(
        report.problems,
        vec![
            ChainProblem::Missing { from_id: 1, to_id: 1, after_id: None, before_id: Some(2) },
            ChainProblem::Missing { from_id: 4, to_id: 5, after_id: Some(3), before_id: Some(6) },
            ChainProblem::Missing { from_id: 10, to_id: 10, after_id: Some(9), before_id: None },
        ]
    );
}

#[test]
fn stray_deletes_and_updates_are_refused() {
    let (_dir, path, mut store) = store_with(10);
    let raw = Connection::open(&path).unwrap();
    assert!(raw.execute("DELETE FROM audit", []).is_err_and(|e| e.to_string().contains("append-only")));
    assert!(raw.execute("DELETE FROM audit WHERE id = 1", []).is_err());
    assert!(raw.execute("UPDATE audit SET summary = 'x' WHERE id = 1", []).is_err());
    // An insert that bypasses the store has no chain hash and is refused.
    let insert = raw
        .execute("INSERT INTO audit (ts, kind, severity, host, summary) VALUES (1, 'alert', 'info', 'local', 'x')", []);
    assert!(insert.is_err_and(|e| e.to_string().contains("chain hash")));
    // An anchor must name a record by its stored hash, and never moves back.
    let bogus =
        raw.execute("INSERT INTO audit_anchors (upto_id, hash, ts, by) VALUES (5, randomblob(32), 1, 'me')", []);
    assert!(bogus.is_err());
    let hash = hex(&hash_of(&path, 5));
    let hash3 = hash_of(&path, 3);
    store.prune_audit(5, &hash, "root", Timestamp(9_000)).unwrap();
    assert!(raw.execute("DELETE FROM audit WHERE id = 6", []).is_err(), "a record after the anchor");
    assert!(raw.execute("DELETE FROM audit_anchors", []).is_err());
    assert!(raw.execute("UPDATE audit_anchors SET upto_id = 9", []).is_err());
    let back = raw.execute("INSERT INTO audit_anchors (upto_id, hash, ts, by) VALUES (3, ?1, 1, 'me')", [hash3]);
    assert!(back.is_err(), "an anchor behind the last one");
    assert_eq!(store.verify_audit().unwrap().records, 6);
}

#[test]
fn prune_with_a_wrong_hash_is_refused() {
    let (_dir, path, mut store) = store_with(10);
    let wrong = hex(&hash_of(&path, 4));
    let err = store.prune_audit(5, &wrong, "root", Timestamp(9_000)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { what: "audit hash", .. }), "{err:?}");
    assert!(err.to_string().contains("nothing was pruned"), "{err}");
    assert!(store.prune_audit(5, "not hex", "root", Timestamp(9_000)).is_err());
    assert!(matches!(
        store.prune_audit(99, &wrong, "root", Timestamp(9_000)),
        Err(StoreError::NotFound { id: 99, .. })
    ));
    let report = store.verify_audit().unwrap();
    assert!(report.is_ok());
    assert_eq!((report.records, report.anchor), (10, None));
    assert_eq!(store.audit_anchor().unwrap(), None);
}

#[test]
fn export_prune_verify() {
    let (dir, path, mut store) = store_with(20);
    let file = dir.path().join("audit-1.jsonl.gz");
    let summary = store.export_audit(Some(15), std::fs::File::create(&file).unwrap()).unwrap();
    assert_eq!((summary.first_id, summary.last_id, summary.count), (Some(1), Some(15), 15));
    assert_eq!(summary.prev_hash, "0".repeat(64));
    let last_hash = summary.last_hash.unwrap();
    assert_eq!(last_hash, hex(&hash_of(&path, 15)));

    // The export verifies against itself and against the database.
    let report = verify_export(std::fs::File::open(&file).unwrap(), Some(&store)).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.records, report.matched_in_database), (15, 15));
    assert_eq!(report.last_hash.as_deref(), Some(last_hash.as_str()));

    let pruned = store.prune_audit(15, &last_hash, "root", Timestamp(50_000)).unwrap();
    assert_eq!((pruned.records, pruned.deleted), (15, 15));
    let after = store.verify_audit().unwrap();
    assert!(after.is_ok(), "{:?}", after.problems);
    // Records 16..=20 plus the prune's own record.
    assert_eq!((after.records, after.first_id, after.last_id), (6, Some(16), Some(21)));
    let anchor = after.anchor.unwrap();
    assert_eq!((anchor.upto_id, anchor.hash.as_str(), anchor.by.as_str()), (15, last_hash.as_str(), "root"));
    let prune_record =
        store.query_audit(&macha_store::AuditQuery { after_id: Some(20), ..Default::default() }).unwrap();
    assert_eq!(prune_record.len(), 1);
    assert!(prune_record[0].summary.contains("pruned by root"), "{}", prune_record[0].summary);

    // The old export still verifies against the pruned database (through the anchor).
    let report = verify_export(std::fs::File::open(&file).unwrap(), Some(&store)).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.matched_in_database, report.pruned_in_database), (0, 15));

    // The chain goes on; the next export starts after the anchor with its hash.
    store.append_audit(&record(22)).unwrap();
    let file2 = dir.path().join("audit-2.jsonl.gz");
    let s2 = store.export_audit(None, std::fs::File::create(&file2).unwrap()).unwrap();
    assert_eq!((s2.first_id, s2.last_id, s2.count), (Some(16), Some(22), 7));
    assert_eq!(s2.prev_hash, last_hash);
    assert!(verify_export(std::fs::File::open(&file2).unwrap(), Some(&store)).unwrap().is_ok());
    assert!(store.verify_audit().unwrap().is_ok());
    // Pruning the same range again is refused.
    assert!(store.prune_audit(15, &last_hash, "root", Timestamp(60_000)).is_err());
}

#[test]
fn a_tampered_export_is_named() {
    let (dir, path, store) = store_with(6);
    let file = dir.path().join("audit.jsonl.gz");
    store.export_audit(None, std::fs::File::create(&file).unwrap()).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap()).read_to_string(&mut text).unwrap();
    assert!(text.lines().next().unwrap().contains("\"format\":\"macha-audit-export\""));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7);
    // The payload is exported exactly as stored.
    let stored: String =
        Connection::open(&path).unwrap().query_row("SELECT payload FROM audit WHERE id = 3", [], |r| r.get(0)).unwrap();
    assert!(lines[3].contains(&format!("\"payload\":{stored}")), "{}", lines[3]);
    let write = |lines: &[String]| {
        let path = dir.path().join("tampered.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        gz.write_all(lines.join("\n").as_bytes()).unwrap();
        gz.finish().unwrap();
        path
    };
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[3] = edited[3].replace("decision 3", "decision 33");
    let report = verify_export(std::fs::File::open(write(&edited)).unwrap(), None).unwrap();
    assert_eq!(report.problems, vec![ChainProblem::Edited { id: 3 }]);
    // Against the database too: the edited record kept its hash, and the chain check names it.
    let report = verify_export(std::fs::File::open(write(&edited)).unwrap(), Some(&store)).unwrap();
    assert_eq!(report.problems, vec![ChainProblem::Edited { id: 3 }]);

    let mut dropped: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    dropped.remove(2);
    let report = verify_export(std::fs::File::open(write(&dropped)).unwrap(), None).unwrap();
    assert!(report.problems.contains(&ChainProblem::Missing {
        from_id: 2,
        to_id: 2,
        after_id: Some(1),
        before_id: Some(3)
    }));
    assert!(report.problems.iter().any(|p| matches!(p, ChainProblem::Header { .. })), "{:?}", report.problems);
}

#[test]
fn a_database_from_before_the_chain_is_chained_by_the_migration() {
    let (_dir, path) = temp_db();
    {
        // Schema version 3, as the previous release left it, with records written without hashes.
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &macha_store::MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        for i in 1..=50 {
            tx.execute(
                "INSERT INTO audit (ts, kind, severity, host, summary, payload) VALUES (?1, 'snapshot', 'info', 'web1', ?2, '{\"i\": 1}')",
                rusqlite::params![i, format!("snapshot {i}")],
            )
            .unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        tx.commit().unwrap();
    }
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), macha_store::SCHEMA_VERSION);
    let report = store.verify_audit().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.records, report.first_id, report.last_id), (50, Some(1), Some(50)));
    store.append_audit(&record(51)).unwrap();
    assert!(store.verify_audit().unwrap().is_ok());
    attacker(&path).execute("UPDATE audit SET host = 'web2' WHERE id = 17", []).unwrap();
    assert_eq!(store.verify_audit().unwrap().problems, vec![ChainProblem::Edited { id: 17 }]);
}
