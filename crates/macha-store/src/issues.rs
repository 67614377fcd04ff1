//! Issues: deduplicated findings with a lifecycle, at most one active per fingerprint.
//!
//! The lifecycle rules live in `macha_core::issue`; the store persists the result with a guard on
//! the previous state. As a second line of defence it refuses (here and in the schema) to move a
//! closed or archived issue back into an active state: a recurrence after closing is a new issue.

use crate::audit::{Link, NewAudit, Severity, insert_audit};
use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::row::{enum_col, json_col, non_empty, placeholders, to_json, ts_col};
use macha_core::Timestamp;
use macha_core::issue::{IssueState, Lifecycle, fingerprint};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// The states in which an issue occupies its fingerprint.
pub const ACTIVE_STATES: [IssueState; 3] = [IssueState::Open, IssueState::Acting, IssueState::Resolved];

/// A newly observed issue; it starts `open`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIssue {
    pub host: String,
    pub check_name: String,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub details: serde_json::Value,
    /// When the condition was first observed.
    pub seen_at: Timestamp,
}

/// A stored issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueRecord {
    pub id: i64,
    /// `host/check_name/subject`, see `macha_core::issue::fingerprint`.
    pub fingerprint: String,
    pub host: String,
    pub check_name: String,
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub state: IssueState,
    /// When the issue entered `state`.
    pub since: Timestamp,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub recurrences: u32,
    pub resolution: Option<String>,
    pub details: serde_json::Value,
}

impl IssueRecord {
    /// The lifecycle fields, to feed `Lifecycle::apply`.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle { state: self.state, since: self.since, last_seen: self.last_seen, recurrences: self.recurrences }
    }
}

/// Optional changes made together with a lifecycle update; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssueChanges {
    pub summary: Option<String>,
    pub severity: Option<Severity>,
    pub details: Option<serde_json::Value>,
    pub resolution: Option<String>,
}

/// Filters for [`Store::list_issues`]; `None` or empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IssueQuery {
    pub states: Vec<IssueState>,
    pub host: Option<String>,
    pub limit: Option<u32>,
}

/// Whether the store lets an issue go from `from` to `to`: anything among the active states and
/// closed, but a closed issue only stays closed or is archived, and an archived one stays archived.
pub fn issue_transition_allowed(from: IssueState, to: IssueState) -> bool {
    match from {
        IssueState::Open | IssueState::Acting | IssueState::Resolved => to != IssueState::Archived,
        IssueState::Closed => matches!(to, IssueState::Closed | IssueState::Archived),
        IssueState::Archived => to == IssueState::Archived,
    }
}

pub(crate) const ISSUE_COLUMNS: &str = "id, fingerprint, host, check_name, subject, severity, summary, state, since, \
     first_seen, last_seen, recurrences, resolution, details";

pub(crate) fn issue_from_row(row: &Row<'_>) -> rusqlite::Result<IssueRecord> {
    Ok(IssueRecord {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        host: row.get(2)?,
        check_name: row.get(3)?,
        subject: row.get(4)?,
        severity: enum_col(row, 5, Severity::parse)?,
        summary: row.get(6)?,
        state: enum_col(row, 7, IssueState::parse)?,
        since: ts_col(row, 8)?,
        first_seen: ts_col(row, 9)?,
        last_seen: ts_col(row, 10)?,
        recurrences: row.get(11)?,
        resolution: row.get(12)?,
        details: json_col(row, 13)?,
    })
}

fn load(conn: &Connection, id: i64) -> Result<Option<IssueRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE id = ?1"))?;
    Ok(stmt.query_row([id], issue_from_row).optional()?)
}

fn load_existing(conn: &Connection, id: i64) -> Result<IssueRecord> {
    load(conn, id)?.ok_or(StoreError::NotFound { entity: "issue", id })
}

fn active_by_fingerprint(conn: &Connection, fp: &str) -> Result<Option<IssueRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ISSUE_COLUMNS} FROM issues WHERE fingerprint = ?1 AND state IN ('open', 'acting', 'resolved')"
    ))?;
    Ok(stmt.query_row([fp], issue_from_row).optional()?)
}

/// Why a guarded update of issue `id` changed no row: it does not exist, or it is no longer in
/// `expected`.
fn conflict(conn: &Connection, id: i64, expected: IssueState) -> StoreError {
    match load(conn, id) {
        Ok(Some(current)) => StoreError::Conflict {
            entity: "issue",
            id,
            expected: expected.to_string(),
            actual: current.state.to_string(),
        },
        Ok(None) => StoreError::NotFound { entity: "issue", id },
        Err(e) => e,
    }
}

impl Store {
    /// The open, acting or resolved issue with this fingerprint, if any.
    pub fn active_issue_by_fingerprint(&self, fingerprint: &str) -> Result<Option<IssueRecord>> {
        active_by_fingerprint(&self.conn, fingerprint)
    }

    /// Stores a new open issue and its audit record in one transaction. Fails with
    /// [`StoreError::ActiveIssueExists`] when its fingerprint is already active.
    pub fn insert_issue(&mut self, new: &NewIssue, audit: &NewAudit) -> Result<IssueRecord> {
        non_empty("issue host", &new.host)?;
        non_empty("issue check name", &new.check_name)?;
        let fp = fingerprint(&new.host, &new.check_name, &new.subject);
        let details = to_json("issue details", &new.details)?;
        let tx = self.write_txn()?;
        if let Some(existing) = active_by_fingerprint(&tx, &fp)? {
            return Err(StoreError::ActiveIssueExists { fingerprint: fp, id: existing.id });
        }
        let opened = Lifecycle::opened(new.seen_at);
        tx.prepare_cached(
            "INSERT INTO issues (fingerprint, host, check_name, subject, severity, summary, state, since, \
             first_seen, last_seen, recurrences, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            fp,
            new.host,
            new.check_name,
            new.subject,
            new.severity.as_str(),
            new.summary,
            opened.state.as_str(),
            opened.since.millis(),
            opened.last_seen.millis(),
            opened.recurrences,
            details,
        ])?;
        let id = tx.last_insert_rowid();
        let link = Link { issue_id: Some(id), new_state: Some(opened.state.as_str()), ..Link::default() };
        insert_audit(&tx, audit, &link)?;
        let record = load_existing(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Writes the lifecycle `new` (and `changes`) to issue `id` if it is still in `expected`,
    /// together with `audit`, in one transaction. Errors: [`StoreError::IllegalTransition`] for a
    /// closed or archived issue going back, [`StoreError::Conflict`], [`StoreError::NotFound`].
    pub fn update_issue(
        &mut self,
        id: i64,
        expected: IssueState,
        new: &Lifecycle,
        changes: &IssueChanges,
        audit: &NewAudit,
    ) -> Result<IssueRecord> {
        if !issue_transition_allowed(expected, new.state) {
            return Err(StoreError::IllegalTransition {
                entity: "issue",
                id,
                from: expected.to_string(),
                to: new.state.to_string(),
            });
        }
        let details = changes.details.as_ref().map(|d| to_json("issue details", d)).transpose()?;
        let tx = self.write_txn()?;
        let changed = tx
            .prepare_cached(
                "UPDATE issues SET state = ?1, since = ?2, last_seen = ?3, recurrences = ?4, \
                 summary = coalesce(?5, summary), severity = coalesce(?6, severity), \
                 details = coalesce(?7, details), resolution = coalesce(?8, resolution) \
                 WHERE id = ?9 AND state = ?10",
            )?
            .execute(params![
                new.state.as_str(),
                new.since.millis(),
                new.last_seen.millis(),
                new.recurrences,
                changes.summary,
                changes.severity.map(Severity::as_str),
                details,
                changes.resolution,
                id,
                expected.as_str(),
            ])?;
        if changed == 0 {
            return Err(conflict(&tx, id, expected));
        }
        let link = Link { issue_id: Some(id), new_state: Some(new.state.as_str()), ..Link::default() };
        insert_audit(&tx, audit, &link)?;
        let record = load_existing(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Records that issue `id`, still in `expected`, was observed again at `seen_at`: only
    /// `last_seen` moves (never backwards) and no audit record is written, so that a condition
    /// present for days does not flood the trail.
    pub fn touch_issue(&mut self, id: i64, expected: IssueState, seen_at: Timestamp) -> Result<IssueRecord> {
        let tx = self.write_txn()?;
        let changed = tx
            .prepare_cached("UPDATE issues SET last_seen = max(last_seen, ?1) WHERE id = ?2 AND state = ?3")?
            .execute(params![seen_at.millis(), id, expected.as_str()])?;
        if changed == 0 {
            return Err(conflict(&tx, id, expected));
        }
        let record = load_existing(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// The issue with this id.
    pub fn get_issue(&self, id: i64) -> Result<Option<IssueRecord>> {
        load(&self.conn, id)
    }

    /// Issues matching `query`, most recently seen first.
    pub fn list_issues(&self, query: &IssueQuery) -> Result<Vec<IssueRecord>> {
        let mut sql = format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if !query.states.is_empty() {
            sql.push_str(&format!(" AND state IN ({})", placeholders(query.states.len())));
            args.extend(query.states.iter().map(|s| s.as_str().to_owned().into()));
        }
        if let Some(host) = &query.host {
            sql.push_str(" AND host = ?");
            args.push(host.clone().into());
        }
        sql.push_str(" ORDER BY last_seen DESC, id DESC");
        if let Some(limit) = query.limit {
            sql.push_str(" LIMIT ?");
            args.push(i64::from(limit).into());
        }
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), issue_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// All issues in any of `states` (all issues when empty), oldest first.
    pub fn issues_in_states(&self, states: &[IssueState]) -> Result<Vec<IssueRecord>> {
        let mut sql = format!("SELECT {ISSUE_COLUMNS} FROM issues");
        if !states.is_empty() {
            sql.push_str(&format!(" WHERE state IN ({})", placeholders(states.len())));
        }
        sql.push_str(" ORDER BY id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(states.iter().map(|s| s.as_str())), issue_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditKind, AuditQuery};
    use crate::test_support::{audit, new_issue, temp_store};
    use macha_core::issue::{IssueEvent, Observation};

    fn note(ts: i64) -> NewAudit {
        audit(ts, AuditKind::Issue, Severity::Warning)
    }

    fn history(store: &Store, id: i64) -> Vec<String> {
        let q = AuditQuery { issue_id: Some(id), ..Default::default() };
        store.query_audit(&q).unwrap().into_iter().filter_map(|r| r.new_state).collect()
    }

    #[test]
    fn insert_and_lookup() {
        let (_dir, mut store) = temp_store();
        let issue = store.insert_issue(&new_issue("nginx.service", 1_000), &note(1_000)).unwrap();
        assert_eq!(issue.fingerprint, "local/unit_failed/nginx.service");
        assert_eq!(issue.state, IssueState::Open);
        assert_eq!(
            (issue.since, issue.first_seen, issue.last_seen),
            (Timestamp(1_000), Timestamp(1_000), Timestamp(1_000))
        );
        assert_eq!(issue.lifecycle(), Lifecycle::opened(Timestamp(1_000)));
        assert_eq!(store.get_issue(issue.id).unwrap(), Some(issue.clone()));
        assert_eq!(store.active_issue_by_fingerprint(&issue.fingerprint).unwrap(), Some(issue.clone()));
        assert_eq!(store.active_issue_by_fingerprint("local/unit_failed/other").unwrap(), None);
        assert_eq!(history(&store, issue.id), vec!["open"]);
        let json = serde_json::to_value(&issue).unwrap();
        assert_eq!(json["state"], "open");
        assert_eq!(json["check_name"], "unit_failed");
    }

    #[test]
    fn one_active_issue_per_fingerprint() {
        let (_dir, mut store) = temp_store();
        let first = store.insert_issue(&new_issue("sshd.service", 1_000), &note(1_000)).unwrap();
        let dup = store.insert_issue(&new_issue("sshd.service", 2_000), &note(2_000));
        assert!(matches!(dup, Err(StoreError::ActiveIssueExists { id, .. }) if id == first.id));
        // The partial unique index holds even against raw SQL.
        let raw = store.conn.execute(
            "INSERT INTO issues (fingerprint, host, check_name, subject, severity, summary, state, since, first_seen, last_seen) \
             VALUES (?1, 'local', 'unit_failed', 'sshd.service', 'error', 'x', 'resolved', 1, 1, 1)",
            [&first.fingerprint],
        );
        assert!(raw.is_err());

        // Once closed, the fingerprint is free for a new issue; the old one stays as history.
        let closed = Lifecycle { state: IssueState::Closed, since: Timestamp(3_000), ..first.lifecycle() };
        store.update_issue(first.id, IssueState::Open, &closed, &IssueChanges::default(), &note(3_000)).unwrap();
        assert_eq!(store.active_issue_by_fingerprint(&first.fingerprint).unwrap(), None);
        let second = store.insert_issue(&new_issue("sshd.service", 4_000), &note(4_000)).unwrap();
        assert!(second.id > first.id);
        assert_eq!(store.active_issue_by_fingerprint(&first.fingerprint).unwrap().map(|i| i.id), Some(second.id));
    }

    #[test]
    fn lifecycle_updates_are_guarded_and_audited() {
        let (_dir, mut store) = temp_store();
        let issue = store.insert_issue(&new_issue("nginx.service", 1_000), &note(1_000)).unwrap();
        let acting = issue.lifecycle().apply(Timestamp(2_000), &IssueEvent::ActionStarted).unwrap();
        let changes = IssueChanges { summary: Some("restarting".into()), ..Default::default() };
        let rec = store.update_issue(issue.id, IssueState::Open, &acting, &changes, &note(2_000)).unwrap();
        assert_eq!((rec.state, rec.since, rec.summary.as_str()), (IssueState::Acting, Timestamp(2_000), "restarting"));
        assert_eq!(rec.severity, Severity::Error);

        // A stale caller still believing the issue open gets a conflict and changes nothing.
        let stale = issue.lifecycle().apply(Timestamp(2_500), &IssueEvent::Observed(Observation::Clear)).unwrap();
        let res = store.update_issue(issue.id, IssueState::Open, &stale, &IssueChanges::default(), &note(2_500));
        match res {
            Err(StoreError::Conflict { expected, actual, .. }) => {
                assert_eq!((expected.as_str(), actual.as_str()), ("open", "acting"))
            }
            other => panic!("expected a conflict, got {other:?}"),
        }

        let resolved = rec
            .lifecycle()
            .apply(Timestamp(3_000), &IssueEvent::Observed(macha_core::issue::Observation::Clear))
            .unwrap();
        let changes = IssueChanges {
            resolution: Some("restarted".into()),
            details: Some(serde_json::json!({"attempts": 1})),
            severity: Some(Severity::Notice),
            ..Default::default()
        };
        let rec = store.update_issue(issue.id, IssueState::Acting, &resolved, &changes, &note(3_000)).unwrap();
        assert_eq!(rec.state, IssueState::Resolved);
        assert_eq!(rec.resolution.as_deref(), Some("restarted"));
        assert_eq!(rec.details["attempts"], 1);
        assert_eq!(rec.severity, Severity::Notice);

        let reopened = rec.lifecycle().apply(Timestamp(4_000), &IssueEvent::Observed(Observation::Present)).unwrap();
        let rec = store
            .update_issue(issue.id, IssueState::Resolved, &reopened, &IssueChanges::default(), &note(4_000))
            .unwrap();
        assert_eq!((rec.state, rec.recurrences), (IssueState::Open, 1));
        assert_eq!(history(&store, issue.id), vec!["open", "acting", "resolved", "open"]);

        let missing = store.update_issue(999, IssueState::Open, &reopened, &IssueChanges::default(), &note(1));
        assert!(matches!(missing, Err(StoreError::NotFound { entity: "issue", id: 999 })));
    }

    #[test]
    fn closed_issues_never_reopen() {
        let (_dir, mut store) = temp_store();
        let issue = store.insert_issue(&new_issue("nginx.service", 1_000), &note(1_000)).unwrap();
        let closed = Lifecycle { state: IssueState::Closed, since: Timestamp(2_000), ..issue.lifecycle() };
        store.update_issue(issue.id, IssueState::Open, &closed, &IssueChanges::default(), &note(2_000)).unwrap();
        let reopen = Lifecycle { state: IssueState::Open, ..closed.clone() };
        let res = store.update_issue(issue.id, IssueState::Closed, &reopen, &IssueChanges::default(), &note(3_000));
        assert!(matches!(res, Err(StoreError::IllegalTransition { .. })));
        let raw = store.conn.execute("UPDATE issues SET state = 'open' WHERE id = ?1", [issue.id]);
        assert!(raw.is_err_and(|e| e.to_string().contains("never reopened")));
        let archived = Lifecycle { state: IssueState::Archived, since: Timestamp(5_000), ..closed };
        store.update_issue(issue.id, IssueState::Closed, &archived, &IssueChanges::default(), &note(5_000)).unwrap();
        assert_eq!(history(&store, issue.id), vec!["open", "closed", "archived"]);
        for to in IssueState::ALL {
            assert_eq!(issue_transition_allowed(IssueState::Archived, to), to == IssueState::Archived);
        }
        assert!(store.conn.execute("DELETE FROM issues WHERE id = ?1", [issue.id]).is_err());
    }

    #[test]
    fn touch_moves_last_seen_forward_only() {
        let (_dir, mut store) = temp_store();
        let issue = store.insert_issue(&new_issue("nginx.service", 1_000), &note(1_000)).unwrap();
        let rec = store.touch_issue(issue.id, IssueState::Open, Timestamp(5_000)).unwrap();
        assert_eq!(rec.last_seen, Timestamp(5_000));
        let rec = store.touch_issue(issue.id, IssueState::Open, Timestamp(4_000)).unwrap();
        assert_eq!(rec.last_seen, Timestamp(5_000));
        assert!(matches!(
            store.touch_issue(issue.id, IssueState::Acting, Timestamp(6_000)),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(history(&store, issue.id), vec!["open"]);
    }

    #[test]
    fn listing() {
        let (_dir, mut store) = temp_store();
        let a = store.insert_issue(&new_issue("a.service", 1_000), &note(1_000)).unwrap();
        let b = store.insert_issue(&new_issue("b.service", 2_000), &note(2_000)).unwrap();
        let c = store
            .insert_issue(&NewIssue { host: "web1".into(), ..new_issue("c.service", 3_000) }, &note(3_000))
            .unwrap();
        let closed = Lifecycle { state: IssueState::Closed, since: Timestamp(4_000), ..b.lifecycle() };
        store.update_issue(b.id, IssueState::Open, &closed, &IssueChanges::default(), &note(4_000)).unwrap();
        let ids = |v: Vec<IssueRecord>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(store.list_issues(&IssueQuery::default()).unwrap()), vec![c.id, b.id, a.id]);
        assert_eq!(
            ids(store.list_issues(&IssueQuery { states: vec![IssueState::Open], ..Default::default() }).unwrap()),
            vec![c.id, a.id]
        );
        assert_eq!(
            ids(store.list_issues(&IssueQuery { host: Some("web1".into()), ..Default::default() }).unwrap()),
            vec![c.id]
        );
        assert_eq!(ids(store.list_issues(&IssueQuery { limit: Some(1), ..Default::default() }).unwrap()), vec![c.id]);
        assert_eq!(ids(store.issues_in_states(&ACTIVE_STATES).unwrap()), vec![a.id, c.id]);
        assert_eq!(ids(store.issues_in_states(&[IssueState::Closed]).unwrap()), vec![b.id]);
        assert_eq!(ids(store.issues_in_states(&[]).unwrap()), vec![a.id, b.id, c.id]);
        for state in IssueState::ALL {
            assert!(store.issues_in_states(&[state]).is_ok());
        }
    }
}
