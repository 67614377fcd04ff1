//! The executed-action log, which the flap guard reads.
//!
//! An action is recorded `running` before it starts and `succeeded` or `failed` when it ends. A
//! `running` row found at start-up was cut off by a crash; [`Store::mark_interrupted_actions`]
//! closes it as failed, so that the flap guard still counts it.

use crate::audit::{AuditKind, Link, NewAudit, Severity, insert_audit};
use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::row::{enum_col, non_empty, opt_ts_col, ts_col};
use macha_core::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// The `detail` of an action closed by [`Store::mark_interrupted_actions`].
pub const INTERRUPTED: &str = "interrupted";

/// Where a logged action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    Running,
    Succeeded,
    Failed,
}

impl ActionState {
    pub const ALL: [ActionState; 3] = [ActionState::Running, ActionState::Succeeded, ActionState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Running => "running",
            ActionState::Succeeded => "succeeded",
            ActionState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ActionState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ActionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action about to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAction {
    pub correlation_id: String,
    pub ts_started: Timestamp,
    pub host: String,
    /// The action kind, such as `restart_unit`.
    pub kind: String,
    /// What the flap guard counts by, such as `local/restart_unit/nginx.service`.
    pub target: String,
    pub approval_id: Option<i64>,
    pub issue_id: Option<i64>,
}

/// A logged action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: i64,
    pub correlation_id: String,
    pub ts_started: Timestamp,
    pub ts_finished: Option<Timestamp>,
    pub host: String,
    pub kind: String,
    pub target: String,
    pub approval_id: Option<i64>,
    pub issue_id: Option<i64>,
    pub state: ActionState,
    pub detail: Option<String>,
}

const ACTION_COLUMNS: &str =
    "id, correlation_id, ts_started, ts_finished, host, kind, target, approval_id, issue_id, state, detail";

fn action_from_row(row: &Row<'_>) -> rusqlite::Result<ActionRecord> {
    Ok(ActionRecord {
        id: row.get(0)?,
        correlation_id: row.get(1)?,
        ts_started: ts_col(row, 2)?,
        ts_finished: opt_ts_col(row, 3)?,
        host: row.get(4)?,
        kind: row.get(5)?,
        target: row.get(6)?,
        approval_id: row.get(7)?,
        issue_id: row.get(8)?,
        state: enum_col(row, 9, ActionState::parse)?,
        detail: row.get(10)?,
    })
}

fn load(conn: &Connection, id: i64) -> Result<Option<ActionRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id = ?1"))?;
    Ok(stmt.query_row([id], action_from_row).optional()?)
}

fn load_existing(conn: &Connection, id: i64) -> Result<ActionRecord> {
    load(conn, id)?.ok_or(StoreError::NotFound { entity: "action", id })
}

fn running(conn: &Connection) -> Result<Vec<ActionRecord>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ACTION_COLUMNS} FROM actions WHERE state = 'running' ORDER BY id"))?;
    let rows = stmt.query_map([], action_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Closes a running action inside the caller's transaction; `Conflict` if it is not running.
fn finish(conn: &Connection, id: i64, to: ActionState, detail: Option<&str>, now: Timestamp) -> Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE actions SET state = ?1, detail = ?2, ts_finished = ?3 WHERE id = ?4 AND state = 'running'",
        )?
        .execute(params![to.as_str(), detail, now.millis(), id])?;
    if changed == 0 {
        let current = load_existing(conn, id)?;
        return Err(StoreError::Conflict {
            entity: "action",
            id,
            expected: ActionState::Running.to_string(),
            actual: current.state.to_string(),
        });
    }
    Ok(())
}

impl Store {
    /// Logs an action as running, with its audit record, in one transaction. Returns its id.
    pub fn record_action_started(&mut self, new: &NewAction, audit: &NewAudit) -> Result<i64> {
        non_empty("action host", &new.host)?;
        non_empty("action kind", &new.kind)?;
        non_empty("action target", &new.target)?;
        let tx = self.write_txn()?;
        tx.prepare_cached(
            "INSERT INTO actions (correlation_id, ts_started, host, kind, target, approval_id, issue_id, state) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running')",
        )?
        .execute(params![
            new.correlation_id,
            new.ts_started.millis(),
            new.host,
            new.kind,
            new.target,
            new.approval_id,
            new.issue_id,
        ])?;
        let id = tx.last_insert_rowid();
        let link = Link { action_id: Some(id), new_state: Some(ActionState::Running.as_str()), ..Link::default() };
        insert_audit(&tx, audit, &link)?;
        tx.commit()?;
        Ok(id)
    }

    /// Closes running action `id` as succeeded or failed, with its audit record, in one
    /// transaction. [`StoreError::Conflict`] if it is no longer running.
    pub fn record_action_finished(
        &mut self,
        id: i64,
        succeeded: bool,
        detail: Option<&str>,
        now: Timestamp,
        audit: &NewAudit,
    ) -> Result<ActionRecord> {
        let to = if succeeded { ActionState::Succeeded } else { ActionState::Failed };
        let tx = self.write_txn()?;
        finish(&tx, id, to, detail, now)?;
        let link = Link { action_id: Some(id), new_state: Some(to.as_str()), ..Link::default() };
        insert_audit(&tx, audit, &link)?;
        let record = load_existing(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// The action with this id.
    pub fn get_action(&self, id: i64) -> Result<Option<ActionRecord>> {
        load(&self.conn, id)
    }

    /// Actions on `target` started at or after `since`, oldest first: the flap guard's history.
    pub fn recent_actions(&self, target: &str, since: Timestamp) -> Result<Vec<ActionRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE target = ?1 AND ts_started >= ?2 ORDER BY ts_started, id"
        ))?;
        let rows = stmt.query_map(params![target, since.millis()], action_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// All actions started at or after `since`, oldest first.
    pub fn actions_since(&self, since: Timestamp) -> Result<Vec<ActionRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions WHERE ts_started >= ?1 ORDER BY ts_started, id"
        ))?;
        let rows = stmt.query_map([since.millis()], action_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Actions still marked running. While the daemon is down there should be none; any found at
    /// start-up were interrupted by a crash.
    pub fn running_actions(&self) -> Result<Vec<ActionRecord>> {
        running(&self.conn)
    }

    /// Marks every running action failed with detail [`INTERRUPTED`], each with an audit record
    /// (kind `action`, severity `warning`, the action's host and correlation id), all in one
    /// transaction. Call it once at daemon start, before executing anything. Returns the actions
    /// it closed. `keep` is an action that outlives the daemon on purpose (a reboot waiting to be
    /// confirmed by a new boot id); it stays running.
    pub fn mark_interrupted_actions(&mut self, now: Timestamp, keep: Option<i64>) -> Result<Vec<ActionRecord>> {
        let tx = self.write_txn()?;
        let interrupted: Vec<ActionRecord> = running(&tx)?.into_iter().filter(|a| Some(a.id) != keep).collect();
        let mut closed = Vec::with_capacity(interrupted.len());
        for action in interrupted {
            let id = action.id;
            finish(&tx, id, ActionState::Failed, Some(INTERRUPTED), now)?;
            let audit = NewAudit::new(
                now,
                AuditKind::Action,
                Severity::Warning,
                action.host.clone(),
                format!("action {id} ({}) was interrupted and is marked failed", action.target),
            )
            .with_correlation_id(action.correlation_id.clone())
            .with_subject(action.target.clone())
            .with_payload(serde_json::json!({
                "action_id": id,
                "kind": action.kind,
                "target": action.target,
                "ts_started": action.ts_started,
                "detail": INTERRUPTED,
            }));
            let link = Link { action_id: Some(id), new_state: Some(ActionState::Failed.as_str()), ..Link::default() };
            insert_audit(&tx, &audit, &link)?;
            closed.push(load_existing(&tx, id)?);
        }
        tx.commit()?;
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditQuery;
    use crate::test_support::{audit, new_action, temp_store};

    fn note(ts: i64) -> NewAudit {
        audit(ts, AuditKind::Action, Severity::Info)
    }

    fn history(store: &Store, id: i64) -> Vec<String> {
        let q = AuditQuery { action_id: Some(id), ..Default::default() };
        store.query_audit(&q).unwrap().into_iter().filter_map(|r| r.new_state).collect()
    }

    #[test]
    fn start_finish_and_history() {
        let (_dir, mut store) = temp_store();
        let nginx = "local/restart_unit/nginx.service";
        let a = store.record_action_started(&new_action(nginx, 1_000), &note(1_000)).unwrap();
        let b = store.record_action_started(&new_action(nginx, 2_000), &note(2_000)).unwrap();
        let c =
            store.record_action_started(&new_action("local/restart_unit/sshd.service", 3_000), &note(3_000)).unwrap();
        assert_eq!(store.running_actions().unwrap().len(), 3);

        let done = store.record_action_finished(a, true, Some("active"), Timestamp(1_500), &note(1_500)).unwrap();
        assert_eq!(
            (done.state, done.ts_finished, done.detail.as_deref()),
            (ActionState::Succeeded, Some(Timestamp(1_500)), Some("active"))
        );
        let failed = store.record_action_finished(b, false, None, Timestamp(2_500), &note(2_500)).unwrap();
        assert_eq!(failed.state, ActionState::Failed);
        let again = store.record_action_finished(a, false, None, Timestamp(4_000), &note(4_000));
        assert!(
            matches!(again, Err(StoreError::Conflict { entity: "action", expected, actual, .. }) if expected == "running" && actual == "succeeded")
        );
        assert!(matches!(
            store.record_action_finished(99, true, None, Timestamp(1), &note(1)),
            Err(StoreError::NotFound { .. })
        ));

        let ids = |v: Vec<ActionRecord>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(store.recent_actions(nginx, Timestamp(0)).unwrap()), vec![a, b]);
        assert_eq!(ids(store.recent_actions(nginx, Timestamp(1_001)).unwrap()), vec![b]);
        assert_eq!(ids(store.actions_since(Timestamp(2_000)).unwrap()), vec![b, c]);
        assert_eq!(ids(store.running_actions().unwrap()), vec![c]);
        assert_eq!(history(&store, a), vec!["running", "succeeded"]);
        assert_eq!(store.get_action(c).unwrap().map(|r| r.state), Some(ActionState::Running));
        let json = serde_json::to_value(store.get_action(a).unwrap().unwrap()).unwrap();
        assert_eq!(json["state"], "succeeded");
        assert_eq!(json["ts_started"], 1_000);
    }

    #[test]
    fn interrupted_actions_are_closed_on_restart() {
        let (dir, mut store) = temp_store();
        let target = "local/restart_unit/nginx.service";
        let a = store.record_action_started(&new_action(target, 1_000), &note(1_000)).unwrap();
        drop(store); // The daemon dies here.
        let mut store = Store::open(dir.path().join("macha.db")).unwrap();
        assert_eq!(store.running_actions().unwrap().len(), 1);
        let closed = store.mark_interrupted_actions(Timestamp(9_000), None).unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].id, closed[0].state, closed[0].detail.as_deref()),
            (a, ActionState::Failed, Some(INTERRUPTED))
        );
        assert!(store.running_actions().unwrap().is_empty());
        assert!(store.mark_interrupted_actions(Timestamp(9_001), None).unwrap().is_empty());
        let records = store.query_audit(&AuditQuery { action_id: Some(a), ..Default::default() }).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[1].severity, records[1].correlation_id.as_deref()), (Severity::Warning, Some("corr-1000")));
        // The flap guard still counts the interrupted attempt.
        assert_eq!(store.recent_actions(target, Timestamp(0)).unwrap().len(), 1);
    }

    #[test]
    fn schema_guards_the_log() {
        let (_dir, mut store) = temp_store();
        let a = store.record_action_started(&new_action("t", 1_000), &note(1_000)).unwrap();
        store.record_action_finished(a, true, None, Timestamp(1_001), &note(1_001)).unwrap();
        let raw = store.conn.execute("UPDATE actions SET state = 'running', ts_finished = NULL WHERE id = ?1", [a]);
        assert!(raw.is_err_and(|e| e.to_string().contains("illegal action state transition")));
        assert!(store.conn.execute("UPDATE actions SET target = 'other' WHERE id = ?1", [a]).is_err());
        assert!(store.conn.execute("DELETE FROM actions WHERE id = ?1", [a]).is_err());
        for state in ActionState::ALL {
            assert_eq!(ActionState::parse(state.as_str()), Some(state));
        }
    }
}
