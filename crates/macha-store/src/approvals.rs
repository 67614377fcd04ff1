//! Approval requests: stable ids, guarded state transitions, expiry.
//!
//! An approval is addressed by its id, which `AUTOINCREMENT` never reuses, never by a position in a
//! list. Every change runs `UPDATE … WHERE id = ? AND state = ?` and appends its audit record in the
//! same transaction, so two racing deciders cannot both win and no decision goes unrecorded.

use crate::audit::{AuditKind, Link, NewAudit, Severity, check_actor, insert_audit};
use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::row::{enum_col, json_col, non_empty, opt_ts_col, placeholders, to_json, ts_col};
use macha_core::Timestamp;
use macha_core::approval::ApprovalState;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// Who `decided_by` names when an approval expired unanswered.
pub const EXPIRY_ACTOR: &str = "expiry";
/// Who `finished_by` names when a reconciliation settled an approval's deployment later.
pub const RECONCILIATION_ACTOR: &str = "reconciliation";

/// A request for approval, as the policy produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewApproval {
    /// The host the action would run on.
    pub host: String,
    /// The proposed action (the typed action schema, as JSON).
    pub action: serde_json::Value,
    /// The policy's decision: verdict, risk and reason, as JSON.
    pub decision: serde_json::Value,
    /// Why the action is proposed, for the person deciding.
    pub reason: String,
    pub requested_by: String,
    pub requested_at: Timestamp,
    /// Must be later than `requested_at`.
    pub expires_at: Timestamp,
    pub correlation_id: String,
    pub issue_id: Option<i64>,
}

/// A stored approval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub id: i64,
    pub host: String,
    pub action: serde_json::Value,
    pub decision: serde_json::Value,
    pub reason: String,
    pub state: ApprovalState,
    pub requested_by: String,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    /// Who approved or rejected it ([`EXPIRY_ACTOR`] when it expired).
    pub decided_by: Option<String>,
    pub decided_at: Option<Timestamp>,
    pub decision_note: Option<String>,
    /// Who recorded it executed or failed.
    pub finished_by: Option<String>,
    pub finished_at: Option<Timestamp>,
    /// What execution produced.
    pub result: Option<String>,
    pub correlation_id: String,
    pub issue_id: Option<i64>,
}

impl ApprovalRecord {
    /// The policy's evidence that a person approved exactly this stored action: its id and the
    /// digest of the action as stored. `None` unless the approval is in state `approved`. This is
    /// the only place such evidence is made (a tidy test checks).
    pub fn evidence(&self) -> Option<macha_core::policy::ApprovalEvidence> {
        macha_core::policy::ApprovalEvidence::from_stored_approval(self.id, self.state, &self.action)
    }
}

const APPROVAL_COLUMNS: &str = "id, host, action, decision, reason, state, requested_by, requested_at, \
     expires_at, decided_by, decided_at, decision_note, finished_by, finished_at, result, correlation_id, issue_id";

fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    Ok(ApprovalRecord {
        id: row.get(0)?,
        host: row.get(1)?,
        action: json_col(row, 2)?,
        decision: json_col(row, 3)?,
        reason: row.get(4)?,
        state: enum_col(row, 5, ApprovalState::parse)?,
        requested_by: row.get(6)?,
        requested_at: ts_col(row, 7)?,
        expires_at: ts_col(row, 8)?,
        decided_by: row.get(9)?,
        decided_at: opt_ts_col(row, 10)?,
        decision_note: row.get(11)?,
        finished_by: row.get(12)?,
        finished_at: opt_ts_col(row, 13)?,
        result: row.get(14)?,
        correlation_id: row.get(15)?,
        issue_id: row.get(16)?,
    })
}

fn load(conn: &Connection, id: i64) -> Result<Option<ApprovalRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"))?;
    Ok(stmt.query_row([id], approval_from_row).optional()?)
}

fn load_existing(conn: &Connection, id: i64) -> Result<ApprovalRecord> {
    load(conn, id)?.ok_or(StoreError::NotFound { entity: "approval", id })
}

impl Store {
    /// Stores a new pending approval and its audit record in one transaction.
    pub fn create_approval(&mut self, new: &NewApproval, audit: &NewAudit) -> Result<ApprovalRecord> {
        non_empty("approval host", &new.host)?;
        check_actor(&new.requested_by)?;
        if new.expires_at <= new.requested_at {
            return Err(StoreError::Invalid {
                what: "approval expiry",
                reason: format!("expires_at {} is not after requested_at {}", new.expires_at, new.requested_at),
            });
        }
        let action = to_json("approval action", &new.action)?;
        let decision = to_json("approval decision", &new.decision)?;
        let tx = self.write_txn()?;
        tx.prepare_cached(
            "INSERT INTO approvals (host, action, decision, reason, state, requested_by, requested_at, \
             expires_at, correlation_id, issue_id) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            new.host,
            action,
            decision,
            new.reason,
            new.requested_by,
            new.requested_at.millis(),
            new.expires_at.millis(),
            new.correlation_id,
            new.issue_id,
        ])?;
        let id = tx.last_insert_rowid();
        let link = Link { approval_id: Some(id), new_state: Some(ApprovalState::Pending.as_str()), ..Link::default() };
        insert_audit(&tx, audit, &link)?;
        let record = load_existing(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// The approval with this id.
    pub fn get_approval(&self, id: i64) -> Result<Option<ApprovalRecord>> {
        load(&self.conn, id)
    }

    /// Approvals in any of `states` (all when empty), oldest first, at most `limit`.
    pub fn list_approvals(&self, states: &[ApprovalState], limit: Option<u32>) -> Result<Vec<ApprovalRecord>> {
        let mut sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if !states.is_empty() {
            sql.push_str(&format!(" WHERE state IN ({})", placeholders(states.len())));
            args.extend(states.iter().map(|s| s.as_str().to_owned().into()));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = limit {
            sql.push_str(" LIMIT ?");
            args.push(i64::from(limit).into());
        }
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), approval_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The approvals of `issue_id` that a person rejected with a reason, newest first, at most
    /// `limit`: what the model is told before it proposes for the issue again.
    pub fn rejections_with_reason(&self, issue_id: i64, limit: u32) -> Result<Vec<ApprovalRecord>> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE issue_id = ?1 AND state = 'rejected' \
             AND trim(coalesce(decision_note, '')) != '' ORDER BY id DESC LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params![issue_id, i64::from(limit)], approval_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Moves approval `id` from `from` to `to`, recording `by`, `note` and `audit` in the same
    /// transaction.
    ///
    /// Leaving `pending` sets `decided_by/at` and `decision_note`; entering `executed` or `failed`
    /// sets `finished_by/at` and `result` (from `note`). A pending approval cannot be approved at or
    /// after its `expires_at`. Errors: [`StoreError::IllegalTransition`] when `from` cannot become
    /// `to`, [`StoreError::Conflict`] when the approval is no longer in `from`,
    /// [`StoreError::ApprovalExpired`], [`StoreError::NotFound`]. Nothing changes on error.
    #[expect(clippy::too_many_arguments, reason = "every argument is a distinct fact of the transition")]
    pub fn transition_approval(
        &mut self,
        id: i64,
        from: ApprovalState,
        to: ApprovalState,
        by: &str,
        note: Option<&str>,
        now: Timestamp,
        audit: &NewAudit,
    ) -> Result<ApprovalRecord> {
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition {
                entity: "approval",
                id,
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        check_actor(by)?;
        let tx = self.write_txn()?;
        let changed = if from == ApprovalState::Pending {
            tx.prepare_cached(
                "UPDATE approvals SET state = ?1, decided_by = ?2, decided_at = ?3, decision_note = ?4 \
                 WHERE id = ?5 AND state = ?6 AND (?1 <> 'approved' OR expires_at > ?3)",
            )?
            .execute(params![to.as_str(), by, now.millis(), note, id, from.as_str()])?
        } else {
            tx.prepare_cached(
                "UPDATE approvals SET state = ?1, finished_by = ?2, finished_at = ?3, result = ?4 \
                 WHERE id = ?5 AND state = ?6",
            )?
            .execute(params![to.as_str(), by, now.millis(), note, id, from.as_str()])?
        };
        if changed == 0 {
            let current = load_existing(&tx, id)?;
            if current.state == from {
                return Err(StoreError::ApprovalExpired { id, expires_at: current.expires_at });
            }
            return Err(StoreError::Conflict {
                entity: "approval",
                id,
                expected: from.to_string(),
                actual: current.state.to_string(),
            });
        }
        let link = Link { approval_id: Some(id), new_state: Some(to.as_str()), ..Link::default() };
        insert_audit(&tx, audit, &link)?;
        let record = load_existing(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Records a reconciliation of a finished approval (a deployment that ended `unknown`, settled
    /// later from its host), with `audit` linked to it, in one transaction. With `result`, that
    /// becomes the approval's result, finished by [`RECONCILIATION_ACTOR`] at `now`; its state stays
    /// what the execution reported (a finished approval never changes state again). Without, only
    /// the audit record is added (still unknown, a new note). Only an approval that is `executed`
    /// or `failed` is reconciled: [`StoreError::Conflict`] otherwise, and nothing changes.
    pub fn record_reconciliation(
        &mut self,
        id: i64,
        result: Option<&str>,
        now: Timestamp,
        audit: &NewAudit,
    ) -> Result<ApprovalRecord> {
        let tx = self.write_txn()?;
        let current = load_existing(&tx, id)?;
        if !matches!(current.state, ApprovalState::Executed | ApprovalState::Failed) {
            return Err(StoreError::Conflict {
                entity: "approval",
                id,
                expected: "executed or failed".to_owned(),
                actual: current.state.to_string(),
            });
        }
        if let Some(result) = result {
            tx.prepare_cached(
                "UPDATE approvals SET finished_by = ?1, finished_at = ?2, result = ?3 \
                 WHERE id = ?4 AND state IN ('executed', 'failed')",
            )?
            .execute(params![RECONCILIATION_ACTOR, now.millis(), result, id])?;
        }
        let link = Link { approval_id: Some(id), ..Link::default() };
        insert_audit(&tx, audit, &link)?;
        let record = load_existing(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Expires every pending approval whose `expires_at` is at or before `now`, each with its own
    /// audit record, all in one transaction. Returns the expired approvals.
    pub fn expire_approvals(&mut self, now: Timestamp) -> Result<Vec<ApprovalRecord>> {
        let tx = self.write_txn()?;
        let due: Vec<i64> = {
            let mut stmt =
                tx.prepare_cached("SELECT id FROM approvals WHERE state = 'pending' AND expires_at <= ?1 ORDER BY id")?;
            let rows = stmt.query_map([now.millis()], |row| row.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut expired = Vec::with_capacity(due.len());
        for id in due {
            tx.prepare_cached(
                "UPDATE approvals SET state = 'expired', decided_by = ?1, decided_at = ?2 \
                 WHERE id = ?3 AND state = 'pending'",
            )?
            .execute(params![EXPIRY_ACTOR, now.millis(), id])?;
            let record = load_existing(&tx, id)?;
            let audit = NewAudit::new(
                now,
                AuditKind::Approval,
                Severity::Notice,
                record.host.clone(),
                format!("approval {id} expired without a decision"),
            )
            .with_correlation_id(record.correlation_id.clone())
            .with_subject(format!("approval/{id}"))
            .with_payload(serde_json::json!({
                "approval_id": id,
                "from": ApprovalState::Pending,
                "to": ApprovalState::Expired,
                "expires_at": record.expires_at,
            }));
            let link =
                Link { approval_id: Some(id), new_state: Some(ApprovalState::Expired.as_str()), ..Link::default() };
            insert_audit(&tx, &audit, &link)?;
            expired.push(record);
        }
        tx.commit()?;
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditQuery;
    use crate::test_support::{audit, new_approval, temp_store};
    use ApprovalState::*;

    fn history(store: &Store, id: i64) -> Vec<String> {
        let q = AuditQuery { approval_id: Some(id), after_id: Some(0), ..Default::default() };
        store.query_audit(&q).unwrap().into_iter().filter_map(|r| r.new_state).collect()
    }

    fn note(ts: i64) -> NewAudit {
        audit(ts, AuditKind::Approval, Severity::Notice)
    }

    #[test]
    fn a_finished_approval_is_reconciled_with_its_audit_record() {
        let (_dir, mut store) = temp_store();
        let a = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        let err = store.record_reconciliation(a.id, Some("x"), Timestamp(1_500), &note(1_500)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "a pending approval is not reconciled: {err:?}");
        store.transition_approval(a.id, Pending, Approved, "alice", None, Timestamp(2_000), &note(2_000)).unwrap();
        store
            .transition_approval(
                a.id,
                Approved,
                Failed,
                "executor",
                Some("d on h: unknown"),
                Timestamp(3_000),
                &note(3_000),
            )
            .unwrap();
        // A note only: the result stays.
        let r = store.record_reconciliation(a.id, None, Timestamp(4_000), &note(4_000)).unwrap();
        assert_eq!((r.state, r.result.as_deref()), (Failed, Some("d on h: unknown")));
        let r = store
            .record_reconciliation(a.id, Some("d on h: succeeded (reconciled)"), Timestamp(5_000), &note(5_000))
            .unwrap();
        assert_eq!((r.state, r.result.as_deref()), (Failed, Some("d on h: succeeded (reconciled)")));
        assert_eq!(r.finished_by.as_deref(), Some(RECONCILIATION_ACTOR));
        assert_eq!(r.finished_at, Some(Timestamp(5_000)));
        assert_eq!(history(&store, a.id), vec!["pending", "approved", "failed"]);
        let q = AuditQuery { approval_id: Some(a.id), after_id: Some(0), ..Default::default() };
        assert_eq!(store.query_audit(&q).unwrap().len(), 5, "both reconciliations are in the trail");
    }

    #[test]
    fn create_get_list() {
        let (_dir, mut store) = temp_store();
        let a = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        let b = store.create_approval(&new_approval(1_001, 60_000), &note(1_001)).unwrap();
        assert!(b.id > a.id);
        assert_eq!(a.state, Pending);
        assert_eq!(a.action["kind"], "restart_unit");
        assert_eq!(store.get_approval(a.id).unwrap(), Some(a.clone()));
        assert_eq!(store.get_approval(9_999).unwrap(), None);
        assert_eq!(store.list_approvals(&[], None).unwrap().len(), 2);
        assert_eq!(store.list_approvals(&[Pending], Some(1)).unwrap(), vec![a.clone()]);
        assert!(store.list_approvals(&[Approved], None).unwrap().is_empty());
        assert_eq!(history(&store, a.id), vec!["pending"]);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["state"], "pending");
        assert_eq!(json["expires_at"], 61_000);
    }

    #[test]
    fn guarded_transitions_and_conflicts() {
        let (_dir, mut store) = temp_store();
        let a = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        let approved = store
            .transition_approval(a.id, Pending, Approved, "alice", Some("go"), Timestamp(2_000), &note(2_000))
            .unwrap();
        assert_eq!(approved.state, Approved);
        assert_eq!(approved.decided_by.as_deref(), Some("alice"));
        assert_eq!(approved.decided_at, Some(Timestamp(2_000)));
        assert_eq!(approved.decision_note.as_deref(), Some("go"));

        // A second decider loses and learns the actual state; nothing is written.
        let lost = store.transition_approval(a.id, Pending, Rejected, "bob", None, Timestamp(2_001), &note(2_001));
        match lost {
            Err(StoreError::Conflict { entity: "approval", id, expected, actual }) => {
                assert_eq!((id, expected.as_str(), actual.as_str()), (a.id, "pending", "approved"));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(history(&store, a.id), vec!["pending", "approved"]);

        let done = store
            .transition_approval(a.id, Approved, Executed, "macha", Some("restarted"), Timestamp(3_000), &note(3_000))
            .unwrap();
        assert_eq!(done.state, Executed);
        assert_eq!(done.finished_by.as_deref(), Some("macha"));
        assert_eq!(done.finished_at, Some(Timestamp(3_000)));
        assert_eq!(done.result.as_deref(), Some("restarted"));
        assert_eq!(done.decided_by.as_deref(), Some("alice"));
        assert_eq!(history(&store, a.id), vec!["pending", "approved", "executed"]);

        let missing = store.transition_approval(777, Pending, Approved, "alice", None, Timestamp(1), &note(1));
        assert!(matches!(missing, Err(StoreError::NotFound { entity: "approval", id: 777 })));
    }

    #[test]
    fn illegal_transitions_are_rejected_before_touching_the_database() {
        let (_dir, mut store) = temp_store();
        let a = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        for from in ApprovalState::ALL {
            for to in ApprovalState::ALL {
                if from.can_become(to) {
                    continue;
                }
                let res = store.transition_approval(a.id, from, to, "alice", None, Timestamp(1_500), &note(1_500));
                assert!(matches!(res, Err(StoreError::IllegalTransition { .. })), "{from} -> {to}: {res:?}");
            }
        }
        assert_eq!(store.get_approval(a.id).unwrap().map(|r| r.state), Some(Pending));
        assert_eq!(history(&store, a.id), vec!["pending"]);
        // The schema refuses the same transitions and edits of what was asked for.
        let raw = store.conn.execute("UPDATE approvals SET state = 'executed' WHERE id = ?1", [a.id]);
        assert!(raw.is_err_and(|e| e.to_string().contains("illegal approval state transition")));
        let raw = store.conn.execute("UPDATE approvals SET action = '{}' WHERE id = ?1", [a.id]);
        assert!(raw.is_err());
        let raw = store.conn.execute("DELETE FROM approvals WHERE id = ?1", [a.id]);
        assert!(raw.is_err());
    }

    #[test]
    fn rejection_and_failure_paths() {
        let (_dir, mut store) = temp_store();
        let a = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        let r = store
            .transition_approval(a.id, Pending, Rejected, "bob", Some("not now"), Timestamp(1_100), &note(1_100))
            .unwrap();
        assert_eq!((r.state, r.decision_note.as_deref()), (Rejected, Some("not now")));
        let b = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        store.transition_approval(b.id, Pending, Approved, "bob", None, Timestamp(1_100), &note(1_100)).unwrap();
        let f = store
            .transition_approval(b.id, Approved, Failed, "macha", Some("exit 1"), Timestamp(1_200), &note(1_200))
            .unwrap();
        assert_eq!((f.state, f.result.as_deref()), (Failed, Some("exit 1")));
        assert_eq!(history(&store, b.id), vec!["pending", "approved", "failed"]);
    }

    #[test]
    fn expiry() {
        let (_dir, mut store) = temp_store();
        let short = store.create_approval(&new_approval(1_000, 1_000), &note(1_000)).unwrap();
        let long = store.create_approval(&new_approval(1_000, 10_000), &note(1_000)).unwrap();
        let decided = store.create_approval(&new_approval(1_000, 1_000), &note(1_000)).unwrap();
        store.transition_approval(decided.id, Pending, Rejected, "bob", None, Timestamp(1_500), &note(1_500)).unwrap();

        assert!(store.expire_approvals(Timestamp(1_999)).unwrap().is_empty());
        // Approving at the expiry instant is too late, even before the expiry pass ran.
        let late =
            store.transition_approval(short.id, Pending, Approved, "alice", None, Timestamp(2_000), &note(2_000));
        assert!(
            matches!(late, Err(StoreError::ApprovalExpired { id, expires_at: Timestamp(2_000) }) if id == short.id)
        );

        let expired = store.expire_approvals(Timestamp(2_000)).unwrap();
        assert_eq!(expired.iter().map(|r| (r.id, r.state)).collect::<Vec<_>>(), vec![(short.id, Expired)]);
        assert_eq!(expired[0].decided_by.as_deref(), Some(EXPIRY_ACTOR));
        assert_eq!(history(&store, short.id), vec!["pending", "expired"]);
        let rec = store.query_audit(&AuditQuery { approval_id: Some(short.id), ..Default::default() }).unwrap();
        assert_eq!(rec[1].correlation_id.as_deref(), Some("corr-1000"));
        assert_eq!(rec[1].payload["to"], "expired");
        assert!(store.expire_approvals(Timestamp(5_000)).unwrap().is_empty());
        assert_eq!(store.get_approval(long.id).unwrap().map(|r| r.state), Some(Pending));
        assert_eq!(store.get_approval(decided.id).unwrap().map(|r| r.state), Some(Rejected));
    }

    #[test]
    fn invalid_requests_are_refused() {
        let (_dir, mut store) = temp_store();
        let bad = NewApproval { expires_at: Timestamp(1_000), ..new_approval(1_000, 0) };
        assert!(matches!(store.create_approval(&bad, &note(1)), Err(StoreError::Invalid { .. })));
        let bad = NewApproval { requested_by: " ".into(), ..new_approval(1_000, 5) };
        assert!(matches!(store.create_approval(&bad, &note(1)), Err(StoreError::Invalid { .. })));
        // A bad audit record rolls back the approval too.
        let bad_audit = NewAudit { summary: String::new(), ..note(1) };
        assert!(store.create_approval(&new_approval(1_000, 5), &bad_audit).is_err());
        assert!(store.list_approvals(&[], None).unwrap().is_empty());
        // An unknown issue id violates the foreign key.
        let orphan = NewApproval { issue_id: Some(42), ..new_approval(1_000, 5) };
        assert!(store.create_approval(&orphan, &note(1)).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any sequence of transition attempts leaves the row and its audit trail exactly where the
        /// lifecycle says, and every refusal names the right reason.
        #[test]
        fn random_transition_attempts_follow_the_lifecycle(
            attempts in proptest::collection::vec((0usize..6, 0usize..6, 0i64..2_000), 1..24)
        ) {
            let (_dir, mut store) = temp_store();
            let a = store.create_approval(&new_approval(1_000, 1_000), &note(1_000)).unwrap();
            let mut state = Pending;
            let mut path = vec!["pending".to_owned()];
            for (f, t, dt) in attempts {
                let (from, to, now) = (ApprovalState::ALL[f], ApprovalState::ALL[t], Timestamp(1_000 + dt));
                let res = store.transition_approval(a.id, from, to, "person", None, now, &note(now.millis()));
                let too_late = to == Approved && now >= a.expires_at;
                match res {
                    Ok(rec) => {
                        proptest::prop_assert!(from == state && from.can_become(to) && !too_late);
                        proptest::prop_assert_eq!(rec.state, to);
                        state = to;
                        path.push(to.to_string());
                    }
                    Err(StoreError::IllegalTransition { .. }) => proptest::prop_assert!(!from.can_become(to)),
                    Err(StoreError::Conflict { actual, .. }) => {
                        proptest::prop_assert!(from.can_become(to) && from != state);
                        proptest::prop_assert_eq!(actual, state.to_string());
                    }
                    Err(StoreError::ApprovalExpired { .. }) => proptest::prop_assert!(from == state && too_late),
                    Err(e) => proptest::prop_assert!(false, "unexpected error {e}"),
                }
            }
            proptest::prop_assert_eq!(store.get_approval(a.id).unwrap().map(|r| r.state), Some(state));
            proptest::prop_assert_eq!(history(&store, a.id), path);
        }
    }

    #[test]
    fn ids_are_never_reused() {
        let (dir, mut store) = temp_store();
        let a = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        drop(store);
        let mut store = Store::open(dir.path().join("macha.db")).unwrap();
        let b = store.create_approval(&new_approval(1_000, 60_000), &note(1_000)).unwrap();
        assert_eq!(b.id, a.id + 1);
    }
}
