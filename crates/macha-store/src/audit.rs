//! The audit trail: an append-only log of everything Macha saw, decided and did.
//!
//! Rows are never updated, and never deleted except by the sanctioned prune of exported records
//! ([`Store::prune_audit`]); the schema's triggers abort everything else. Every record carries its
//! place in a hash chain ([`crate::chain`]), so an edit, insertion or deletion behind the store's
//! back shows in [`Store::verify_audit`]. Records written by the
//! store's guarded operations (approvals, issues, actions) also carry a link to the row they are
//! about and the state that row entered, in the same transaction as the change itself.

use crate::chain;
use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::row::{enum_col, json_col, non_empty, placeholders, to_json, ts_col};
use macha_core::Timestamp;
use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Snapshot,
    Finding,
    Decision,
    Action,
    Outcome,
    Approval,
    Issue,
    AuthDenied,
    Alert,
    Config,
    Daemon,
}

impl AuditKind {
    pub const ALL: [AuditKind; 11] = [
        AuditKind::Snapshot,
        AuditKind::Finding,
        AuditKind::Decision,
        AuditKind::Action,
        AuditKind::Outcome,
        AuditKind::Approval,
        AuditKind::Issue,
        AuditKind::AuthDenied,
        AuditKind::Alert,
        AuditKind::Config,
        AuditKind::Daemon,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Snapshot => "snapshot",
            AuditKind::Finding => "finding",
            AuditKind::Decision => "decision",
            AuditKind::Action => "action",
            AuditKind::Outcome => "outcome",
            AuditKind::Approval => "approval",
            AuditKind::Issue => "issue",
            AuditKind::AuthDenied => "auth_denied",
            AuditKind::Alert => "alert",
            AuditKind::Config => "config",
            AuditKind::Daemon => "daemon",
        }
    }

    pub fn parse(s: &str) -> Option<AuditKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much an audit record (or an issue) matters, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Notice,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Notice, Severity::Warning, Severity::Error, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An audit record to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAudit {
    pub ts: Timestamp,
    /// Ties together everything that happened because of one trigger (a finding, a request).
    pub correlation_id: Option<String>,
    pub kind: AuditKind,
    pub severity: Severity,
    /// The host the record is about (`local` or a registered name). Must not be empty.
    pub host: String,
    /// What on the host it is about, such as a unit name.
    pub subject: Option<String>,
    /// One line for people. Must not be empty.
    pub summary: String,
    /// Structured detail for machines.
    pub payload: serde_json::Value,
}

impl NewAudit {
    /// A record without correlation id, subject or payload; add them with the `with_*` methods.
    pub fn new(
        ts: Timestamp,
        kind: AuditKind,
        severity: Severity,
        host: impl Into<String>,
        summary: impl Into<String>,
    ) -> NewAudit {
        NewAudit {
            ts,
            correlation_id: None,
            kind,
            severity,
            host: host.into(),
            subject: None,
            summary: summary.into(),
            payload: serde_json::Value::Null,
        }
    }

    pub fn with_correlation_id(self, correlation_id: impl Into<String>) -> NewAudit {
        NewAudit { correlation_id: Some(correlation_id.into()), ..self }
    }

    pub fn with_subject(self, subject: impl Into<String>) -> NewAudit {
        NewAudit { subject: Some(subject.into()), ..self }
    }

    pub fn with_payload(self, payload: serde_json::Value) -> NewAudit {
        NewAudit { payload, ..self }
    }
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increases with every append and is never reused: `after_id` polling sees every record once.
    pub id: i64,
    pub ts: Timestamp,
    pub correlation_id: Option<String>,
    pub kind: AuditKind,
    pub severity: Severity,
    pub host: String,
    pub subject: Option<String>,
    pub summary: String,
    pub payload: serde_json::Value,
    /// Set by the store when the record belongs to a change of that approval.
    pub approval_id: Option<i64>,
    /// Set by the store when the record belongs to a change of that issue.
    pub issue_id: Option<i64>,
    /// Set by the store when the record belongs to a change of that action.
    pub action_id: Option<i64>,
    /// The state the linked row entered with this record.
    pub new_state: Option<String>,
}

/// The order of query results: by `ts`, records with equal `ts` by id; by id alone (commit order)
/// when [`AuditQuery::after_id`] is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    OldestFirst,
    NewestFirst,
}

/// Filters for [`Store::query_audit`]. Every `None` or empty field matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Records with `ts >= since`.
    pub since: Option<Timestamp>,
    /// Records with `ts < until`.
    pub until: Option<Timestamp>,
    pub host: Option<String>,
    /// Any of these kinds.
    pub kinds: Vec<AuditKind>,
    /// This severity or a higher one.
    pub min_severity: Option<Severity>,
    pub correlation_id: Option<String>,
    pub subject: Option<String>,
    pub approval_id: Option<i64>,
    pub issue_id: Option<i64>,
    pub action_id: Option<i64>,
    /// Records with `id > after_id`, returned in id (commit) order: to follow the trail, poll
    /// with the last id of the previous answer. Ids grow in commit order, while `ts` comes from
    /// the caller's clock and may step back.
    pub after_id: Option<i64>,
    pub limit: Option<u32>,
    pub order: Order,
}

/// The link between an audit record and the row whose change it records.
#[derive(Debug, Default)]
pub(crate) struct Link {
    pub(crate) approval_id: Option<i64>,
    pub(crate) issue_id: Option<i64>,
    pub(crate) action_id: Option<i64>,
    pub(crate) new_state: Option<&'static str>,
}

const AUDIT_COLUMNS: &str = "id, ts, correlation_id, kind, severity, host, subject, summary, payload, \
     approval_id, issue_id, action_id, new_state";

/// [`AUDIT_COLUMNS`] of the table aliased `a`, in the same order.
pub(crate) const AUDIT_COLUMNS_A: &str = "a.id, a.ts, a.correlation_id, a.kind, a.severity, a.host, a.subject, \
     a.summary, a.payload, a.approval_id, a.issue_id, a.action_id, a.new_state";

pub(crate) fn audit_from_row(row: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.get(0)?,
        ts: ts_col(row, 1)?,
        correlation_id: row.get(2)?,
        kind: enum_col(row, 3, AuditKind::parse)?,
        severity: enum_col(row, 4, Severity::parse)?,
        host: row.get(5)?,
        subject: row.get(6)?,
        summary: row.get(7)?,
        payload: json_col(row, 8)?,
        approval_id: row.get(9)?,
        issue_id: row.get(10)?,
        action_id: row.get(11)?,
        new_state: row.get(12)?,
    })
}

/// Appends one record inside the caller's write transaction, with its place in the hash chain:
/// the next id, the previous record's hash, and its own hash over both and every field
/// ([`crate::chain`]).
pub(crate) fn insert_audit(conn: &Connection, audit: &NewAudit, link: &Link) -> Result<i64> {
    non_empty("audit host", &audit.host)?;
    non_empty("audit summary", &audit.summary)?;
    let payload = to_json("audit payload", &audit.payload)?;
    let (id, prev) = chain::next_link(conn)?;
    let hash = chain::record_hash(
        &prev,
        &chain::Fields {
            id,
            ts: audit.ts.millis(),
            correlation_id: audit.correlation_id.as_deref(),
            kind: audit.kind.as_str(),
            severity: audit.severity.as_str(),
            host: &audit.host,
            subject: audit.subject.as_deref(),
            summary: &audit.summary,
            payload: &payload,
            approval_id: link.approval_id,
            issue_id: link.issue_id,
            action_id: link.action_id,
            new_state: link.new_state,
        },
    );
    let mut stmt = conn.prepare_cached(
        "INSERT INTO audit (id, ts, correlation_id, kind, severity, host, subject, summary, payload, \
         approval_id, issue_id, action_id, new_state, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    stmt.execute(params![
        id,
        audit.ts.millis(),
        audit.correlation_id,
        audit.kind.as_str(),
        audit.severity.as_str(),
        audit.host,
        audit.subject,
        audit.summary,
        payload,
        link.approval_id,
        link.issue_id,
        link.action_id,
        link.new_state,
        prev.as_slice(),
        hash.as_slice(),
    ])?;
    Ok(id)
}

impl Store {
    /// Appends one record in its own durable transaction and returns its id.
    pub fn append_audit(&mut self, audit: &NewAudit) -> Result<i64> {
        let tx = self.write_txn()?;
        let id = insert_audit(&tx, audit, &Link::default())?;
        tx.commit()?;
        Ok(id)
    }

    /// Appends all records in one transaction (one disk sync): all of them or none. Returns their
    /// ids in order.
    pub fn append_audit_batch(&mut self, audits: &[NewAudit]) -> Result<Vec<i64>> {
        let tx = self.write_txn()?;
        let ids = audits.iter().map(|a| insert_audit(&tx, a, &Link::default())).collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(ids)
    }

    /// The records matching `query`.
    pub fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        use rusqlite::types::Value;
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE 1");
        let mut args: Vec<Value> = Vec::new();
        let mut filter = |clause: &str, value: Value| {
            sql.push_str(clause);
            args.push(value);
        };
        if let Some(since) = query.since {
            filter(" AND ts >= ?", since.millis().into());
        }
        if let Some(until) = query.until {
            filter(" AND ts < ?", until.millis().into());
        }
        if let Some(host) = &query.host {
            filter(" AND host = ?", host.clone().into());
        }
        if let Some(correlation_id) = &query.correlation_id {
            filter(" AND correlation_id = ?", correlation_id.clone().into());
        }
        if let Some(subject) = &query.subject {
            filter(" AND subject = ?", subject.clone().into());
        }
        if let Some(id) = query.approval_id {
            filter(" AND approval_id = ?", id.into());
        }
        if let Some(id) = query.issue_id {
            filter(" AND issue_id = ?", id.into());
        }
        if let Some(id) = query.action_id {
            filter(" AND action_id = ?", id.into());
        }
        if let Some(after_id) = query.after_id {
            filter(" AND id > ?", after_id.into());
        }
        if !query.kinds.is_empty() {
            sql.push_str(&format!(" AND kind IN ({})", placeholders(query.kinds.len())));
            args.extend(query.kinds.iter().map(|k| Value::from(k.as_str().to_owned())));
        }
        if let Some(min) = query.min_severity {
            let wanted: Vec<Severity> = Severity::ALL.into_iter().filter(|s| *s >= min).collect();
            sql.push_str(&format!(" AND severity IN ({})", placeholders(wanted.len())));
            args.extend(wanted.iter().map(|s| Value::from(s.as_str().to_owned())));
        }
        // By time, ties by id: the `ts`, `(host, ts)` and `(kind, ts)` indexes then deliver rows in
        // order and a `LIMIT` stops early. Polling with `after_id` goes by id instead: it walks the
        // primary key, and the last id of a page is a safe `after_id` for the next one.
        sql.push_str(match (query.order, query.after_id.is_some()) {
            (Order::OldestFirst, false) => " ORDER BY ts ASC, id ASC",
            (Order::NewestFirst, false) => " ORDER BY ts DESC, id DESC",
            (Order::OldestFirst, true) => " ORDER BY id ASC",
            (Order::NewestFirst, true) => " ORDER BY id DESC",
        });
        if let Some(limit) = query.limit {
            sql.push_str(" LIMIT ?");
            args.push(i64::from(limit).into());
        }
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), audit_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The highest audit id, or 0 when the trail is empty: the starting point for following it.
    pub fn last_audit_id(&self) -> Result<i64> {
        let id: Option<i64> = self.conn.query_row("SELECT max(id) FROM audit", [], |row| row.get(0))?;
        Ok(id.unwrap_or(0))
    }
}

/// Rejects an empty `by` for state changes.
pub(crate) fn check_actor(by: &str) -> Result<()> {
    if by.trim().is_empty() {
        return Err(StoreError::Invalid { what: "actor", reason: "who made the change must be named".to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{audit, temp_store};

    #[test]
    fn append_and_query_filters() {
        let (_dir, mut store) = temp_store();
        let a = audit(1_000, AuditKind::Finding, Severity::Warning).with_subject("nginx.service");
        let b = audit(2_000, AuditKind::Action, Severity::Info).with_correlation_id("c-1");
        let c = NewAudit { host: "web1".to_owned(), ..audit(3_000, AuditKind::Alert, Severity::Critical) };
        let id_a = store.append_audit(&a).unwrap();
        let ids = store.append_audit_batch(&[b.clone(), c.clone()]).unwrap();
        assert_eq!(ids, vec![id_a + 1, id_a + 2]);

        let all = store.query_audit(&AuditQuery::default()).unwrap();
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id_a, id_a + 1, id_a + 2]);
        assert_eq!(all[0].subject.as_deref(), Some("nginx.service"));
        assert_eq!(all[0].payload, a.payload);
        assert_eq!(all[1].correlation_id.as_deref(), Some("c-1"));

        let q = |query: AuditQuery| store.query_audit(&query).unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(q(AuditQuery { since: Some(Timestamp(2_000)), ..Default::default() }), vec![id_a + 1, id_a + 2]);
        assert_eq!(q(AuditQuery { until: Some(Timestamp(2_000)), ..Default::default() }), vec![id_a]);
        assert_eq!(q(AuditQuery { host: Some("web1".into()), ..Default::default() }), vec![id_a + 2]);
        assert_eq!(
            q(AuditQuery { kinds: vec![AuditKind::Finding, AuditKind::Alert], ..Default::default() }),
            vec![id_a, id_a + 2]
        );
        assert_eq!(q(AuditQuery { min_severity: Some(Severity::Warning), ..Default::default() }), vec![id_a, id_a + 2]);
        assert_eq!(q(AuditQuery { correlation_id: Some("c-1".into()), ..Default::default() }), vec![id_a + 1]);
        assert_eq!(q(AuditQuery { subject: Some("nginx.service".into()), ..Default::default() }), vec![id_a]);
        assert_eq!(q(AuditQuery { after_id: Some(id_a), ..Default::default() }), vec![id_a + 1, id_a + 2]);
        assert_eq!(
            q(AuditQuery { order: Order::NewestFirst, limit: Some(2), ..Default::default() }),
            vec![id_a + 2, id_a + 1]
        );
        assert_eq!(store.last_audit_id().unwrap(), id_a + 2);
    }

    #[test]
    fn order_is_by_time_but_following_is_by_commit() {
        let (_dir, mut store) = temp_store();
        // The clock stepped back between the second and the third record.
        let ids = store
            .append_audit_batch(&[
                audit(1_000, AuditKind::Daemon, Severity::Info),
                audit(3_000, AuditKind::Daemon, Severity::Info),
                audit(2_000, AuditKind::Daemon, Severity::Info),
            ])
            .unwrap();
        let q = |query: AuditQuery| store.query_audit(&query).unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(q(AuditQuery::default()), vec![ids[0], ids[2], ids[1]]);
        assert_eq!(q(AuditQuery { order: Order::NewestFirst, ..Default::default() }), vec![ids[1], ids[2], ids[0]]);
        assert_eq!(q(AuditQuery { after_id: Some(0), ..Default::default() }), ids);
        assert_eq!(q(AuditQuery { after_id: Some(ids[0]), limit: Some(1), ..Default::default() }), vec![ids[1]]);
        assert_eq!(
            q(AuditQuery { after_id: Some(0), order: Order::NewestFirst, ..Default::default() }),
            vec![ids[2], ids[1], ids[0]]
        );
    }

    #[test]
    fn append_only_triggers_reject_update_and_delete() {
        let (_dir, mut store) = temp_store();
        let id = store.append_audit(&audit(1, AuditKind::Daemon, Severity::Info)).unwrap();
        let update = store.conn.execute("UPDATE audit SET summary = 'rewritten' WHERE id = ?1", [id]);
        assert!(update.is_err_and(|e| e.to_string().contains("append-only")));
        let delete = store.conn.execute("DELETE FROM audit WHERE id = ?1", [id]);
        assert!(delete.is_err_and(|e| e.to_string().contains("append-only")));
        let records = store.query_audit(&AuditQuery::default()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].summary, "test record");
    }

    #[test]
    fn batch_is_all_or_nothing() {
        let (_dir, mut store) = temp_store();
        let good = audit(1, AuditKind::Daemon, Severity::Info);
        let bad = NewAudit { host: String::new(), ..good.clone() };
        let res = store.append_audit_batch(&[good.clone(), good.clone(), bad]);
        assert!(matches!(res, Err(StoreError::Invalid { what: "audit host", .. })));
        assert!(store.query_audit(&AuditQuery::default()).unwrap().is_empty());
        assert_eq!(store.append_audit_batch(&[]).unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn every_enum_value_passes_the_schema_checks() {
        let (_dir, mut store) = temp_store();
        for kind in AuditKind::ALL {
            for severity in Severity::ALL {
                store.append_audit(&audit(1, kind, severity)).unwrap();
            }
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::json!(kind.as_str()));
        }
        for severity in Severity::ALL {
            assert_eq!(Severity::parse(severity.as_str()), Some(severity));
            assert_eq!(serde_json::to_value(severity).unwrap(), serde_json::json!(severity.as_str()));
        }
        let n = store.query_audit(&AuditQuery::default()).unwrap().len();
        assert_eq!(n, AuditKind::ALL.len() * Severity::ALL.len());
        // And the schema rejects what the enum does not know.
        let raw = store.conn.execute(
            "INSERT INTO audit (ts, kind, severity, host, summary) VALUES (1, 'bogus', 'info', 'local', 'x')",
            [],
        );
        assert!(raw.is_err());
    }

    #[test]
    fn record_serializes_with_snake_case_fields() {
        let (_dir, mut store) = temp_store();
        let a = audit(5, AuditKind::AuthDenied, Severity::Error).with_payload(serde_json::json!({"uid": 1000}));
        store.append_audit(&a).unwrap();
        let rec = store.query_audit(&AuditQuery::default()).unwrap().remove(0);
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["kind"], "auth_denied");
        assert_eq!(json["severity"], "error");
        assert_eq!(json["ts"], 5);
        assert_eq!(json["payload"]["uid"], 1000);
        assert!(json.get("correlation_id").is_some());
        let back: AuditRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, rec);
    }
}
