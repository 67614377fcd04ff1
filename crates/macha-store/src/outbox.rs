//! The notification outbox and the silences (decision 0021).
//!
//! Every notification is a row here before it leaves the daemon, so none is lost to a crash or a
//! restart: delivery is at least once. A row is unique per channel by its `message_id`, derived by
//! the router from the incident and a sequence number, so enqueueing the same message twice keeps
//! one row and a receiver can recognise a resend by that id.
//!
//! States: `queued` (waiting for its first attempt), `sending` (claimed by the delivering
//! process; only ever seen while that process runs, [`Store::outbox_recover`] puts such rows back
//! at start), `failed` (an attempt failed, another is due at `next_attempt`), `sent`, and `dead`
//! (given up: a permanent refusal or too many attempts; a message going dead appends an `alert`
//! audit record in the same transaction). The outbox is its own log otherwise: other state changes
//! write no audit record.
//!
//! Order: [`Store::outbox_due`] returns, per channel, the pending rows in creation order up to the
//! first one that is not due yet, so a later message never overtakes an earlier one that waits
//! for its retry.

use crate::audit::{AuditKind, Link, NewAudit, Severity, insert_audit};
use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::row::{enum_col, json_col, non_empty, opt_ts_col, to_json, ts_col};
use macha_core::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// Where an outbox row is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Queued,
    Sending,
    Sent,
    Failed,
    Dead,
}

impl OutboxState {
    pub const ALL: [OutboxState; 5] =
        [OutboxState::Queued, OutboxState::Sending, OutboxState::Sent, OutboxState::Failed, OutboxState::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Sending => "sending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
            OutboxState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether a row in this state still waits for delivery.
    pub fn is_pending(self) -> bool {
        matches!(self, OutboxState::Queued | OutboxState::Sending | OutboxState::Failed)
    }
}

impl std::fmt::Display for OutboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message to put in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOutboxMessage {
    /// The idempotent id of the message (unique per channel).
    pub message_id: String,
    /// The channel's configured name.
    pub channel: String,
    pub created: Timestamp,
    /// The message itself (`macha_notify::Outgoing` as JSON). Its `host` field, if any, names the
    /// host of the audit record written when the message goes dead.
    pub payload: serde_json::Value,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub id: i64,
    pub message_id: String,
    pub channel: String,
    pub created: Timestamp,
    pub payload: serde_json::Value,
    pub state: OutboxState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (for a pending row).
    pub next_attempt: Timestamp,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
}

/// What [`Store::outbox_enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The row's id (the existing row's when the message was already there).
    pub id: i64,
    /// False when the same message id was already in the outbox for that channel.
    pub new: bool,
}

/// Which rows [`Store::outbox_log`] returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxFilter {
    /// Only rows that failed at least once or are dead (`macha notify log --failed`).
    pub failed_only: bool,
    pub channel: Option<String>,
    /// At most this many rows; 0 means 100.
    pub limit: usize,
}

/// A silence to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSilence {
    /// What it silences, in the notification crate's matcher syntax (opaque to the store).
    pub matcher: String,
    /// It ends here; must be after `created`.
    pub until: Timestamp,
    pub reason: String,
    pub created_by: String,
    pub created: Timestamp,
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceRecord {
    pub id: i64,
    pub matcher: String,
    pub until: Timestamp,
    pub reason: String,
    pub created_by: String,
    pub created: Timestamp,
}

/// Longest `last_error` kept; a longer one is cut at a character boundary.
const ERROR_MAX: usize = 1_000;

const OUTBOX_COLUMNS: &str =
    "id, message_id, channel, created, payload, state, attempts, next_attempt, last_error, sent_at";

fn outbox_from_row(row: &Row<'_>) -> rusqlite::Result<OutboxRecord> {
    Ok(OutboxRecord {
        id: row.get(0)?,
        message_id: row.get(1)?,
        channel: row.get(2)?,
        created: ts_col(row, 3)?,
        payload: json_col(row, 4)?,
        state: enum_col(row, 5, OutboxState::parse)?,
        attempts: row.get(6)?,
        next_attempt: ts_col(row, 7)?,
        last_error: row.get(8)?,
        sent_at: opt_ts_col(row, 9)?,
    })
}

fn silence_from_row(row: &Row<'_>) -> rusqlite::Result<SilenceRecord> {
    Ok(SilenceRecord {
        id: row.get(0)?,
        matcher: row.get(1)?,
        until: ts_col(row, 2)?,
        reason: row.get(3)?,
        created_by: row.get(4)?,
        created: ts_col(row, 5)?,
    })
}

fn cut_error(error: &str) -> &str {
    crate::retention::cut_str(error, ERROR_MAX).0
}

impl Store {
    /// Puts a message in the outbox, durably, due at once. Idempotent on (channel, message id): a
    /// second enqueue of the same message changes nothing and says so.
    pub fn outbox_enqueue(&mut self, msg: &NewOutboxMessage) -> Result<Enqueued> {
        let tx = self.write_txn()?;
        let enqueued = enqueue_in(&tx, msg)?;
        tx.commit()?;
        Ok(enqueued)
    }

    /// Enqueues all messages in one transaction (one disk sync), each idempotently.
    pub fn outbox_enqueue_batch(&mut self, msgs: &[NewOutboxMessage]) -> Result<Vec<Enqueued>> {
        let tx = self.write_txn()?;
        let out = msgs.iter().map(|m| enqueue_in(&tx, m)).collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(out)
    }

    /// The rows to attempt now, at most `limit`, in creation order per channel: for each channel
    /// its pending rows from the oldest up to (not including) the first one whose next attempt is
    /// later than `now`. A message never overtakes an earlier one of its channel that waits for a
    /// retry. Rows in `sending` are included (they were claimed by this process and not finished).
    pub fn outbox_due(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o \
             WHERE state IN ('queued', 'sending', 'failed') AND next_attempt <= ?1 \
               AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.channel = o.channel AND e.id < o.id \
                               AND e.state IN ('queued', 'sending', 'failed') AND e.next_attempt > ?1) \
             ORDER BY id LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![now.millis(), limit], outbox_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// One row by id.
    pub fn outbox_get(&self, id: i64) -> Result<Option<OutboxRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"))?;
        Ok(stmt.query_row([id], outbox_from_row).optional()?)
    }

    /// Claims a pending row for an attempt: `sending`, attempts + 1.
    pub fn outbox_mark_sending(&mut self, id: i64) -> Result<()> {
        let tx = self.write_txn()?;
        let n = tx.execute(
            "UPDATE outbox SET state = 'sending', attempts = attempts + 1 \
             WHERE id = ?1 AND state IN ('queued', 'sending', 'failed')",
            [id],
        )?;
        if n == 0 {
            return Err(not_pending(&tx, id, "pending"));
        }
        tx.commit()?;
        Ok(())
    }

    /// The row was delivered.
    pub fn outbox_mark_sent(&mut self, id: i64, at: Timestamp) -> Result<()> {
        let tx = self.write_txn()?;
        let n = tx.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?2, last_error = NULL \
             WHERE id = ?1 AND state IN ('queued', 'sending', 'failed')",
            params![id, at.millis()],
        )?;
        if n == 0 {
            return Err(not_pending(&tx, id, "pending"));
        }
        tx.commit()?;
        Ok(())
    }

    /// The attempt failed and another is due at `next`.
    pub fn outbox_mark_retry(&mut self, id: i64, next: Timestamp, error: &str) -> Result<()> {
        let tx = self.write_txn()?;
        let n = tx.execute(
            "UPDATE outbox SET state = 'failed', next_attempt = ?2, last_error = ?3 \
             WHERE id = ?1 AND state IN ('queued', 'sending', 'failed')",
            params![id, next.millis(), cut_error(error)],
        )?;
        if n == 0 {
            return Err(not_pending(&tx, id, "pending"));
        }
        tx.commit()?;
        Ok(())
    }

    /// Gives up on the row, and appends an `alert` audit record saying which message was not
    /// delivered and why, in the same transaction.
    pub fn outbox_mark_dead(&mut self, id: i64, at: Timestamp, error: &str) -> Result<()> {
        let tx = self.write_txn()?;
        let row = {
            let mut stmt = tx.prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"))?;
            stmt.query_row([id], outbox_from_row).optional()?
        };
        let Some(row) = row else {
            return Err(StoreError::NotFound { entity: "outbox message", id });
        };
        if !row.state.is_pending() {
            return Err(StoreError::Conflict {
                entity: "outbox message",
                id,
                expected: "pending".to_owned(),
                actual: row.state.as_str().to_owned(),
            });
        }
        let error = cut_error(error);
        tx.execute("UPDATE outbox SET state = 'dead', last_error = ?2 WHERE id = ?1", params![id, error])?;
        let host = row
            .payload
            .get("host")
            .and_then(|h| h.as_str())
            .filter(|h| !h.trim().is_empty())
            .unwrap_or("local")
            .to_owned();
        let audit = NewAudit::new(
            at,
            AuditKind::Alert,
            Severity::Warning,
            host,
            format!(
                "notification {} on channel {} was not delivered after {} attempt(s): {error}",
                row.message_id, row.channel, row.attempts
            ),
        )
        .with_subject(format!("notify:{}", row.channel))
        .with_payload(serde_json::json!({
            "outbox_id": row.id,
            "message_id": row.message_id,
            "channel": row.channel,
            "attempts": row.attempts,
            "error": error,
            "title": row.payload.get("title"),
        }));
        insert_audit(&tx, &audit, &Link::default())?;
        tx.commit()?;
        Ok(())
    }

    /// Puts rows left in `sending` by a previous process back to `queued`; call once at start,
    /// before delivering. A row that was sent but not marked is sent again, with the same message
    /// id. Returns how many rows it put back.
    pub fn outbox_recover(&mut self) -> Result<u64> {
        let tx = self.write_txn()?;
        let n = tx.execute("UPDATE outbox SET state = 'queued' WHERE state = 'sending'", [])?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Rows for people, newest first.
    pub fn outbox_log(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRecord>> {
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        let mut sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE 1");
        if filter.failed_only {
            sql.push_str(" AND (state IN ('failed', 'dead') OR last_error IS NOT NULL)");
        }
        if filter.channel.is_some() {
            sql.push_str(" AND channel = ?2");
        } else {
            sql.push_str(" AND ?2 IS NULL");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX), filter.channel.as_deref()], outbox_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many rows still wait for delivery (queued, sending or failed).
    pub fn outbox_pending_count(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE state IN ('queued', 'sending', 'failed')",
            [],
            |row| row.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes at most `max` sent or dead rows created before `before`; returns how many.
    pub fn outbox_prune(&mut self, before: Timestamp, max: u64) -> Result<u64> {
        let tx = self.write_txn()?;
        let n = tx.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state IN ('sent', 'dead') \
             AND created < ?1 ORDER BY id LIMIT ?2)",
            params![before.millis(), i64::try_from(max).unwrap_or(i64::MAX)],
        )?;
        tx.commit()?;
        Ok(n as u64)
    }

    /// Adds a silence and returns its id.
    pub fn silence_add(&mut self, s: &NewSilence) -> Result<i64> {
        non_empty("silence matcher", &s.matcher)?;
        crate::audit::check_actor(&s.created_by)?;
        if s.until <= s.created {
            return Err(StoreError::Invalid {
                what: "silence",
                reason: "it must end after it was made (give it an end in the future)".to_owned(),
            });
        }
        let tx = self.write_txn()?;
        tx.execute(
            "INSERT INTO silences (matcher, until, reason, created_by, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.matcher, s.until.millis(), s.reason, s.created_by, s.created.millis()],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Every stored silence, ended ones included, oldest first.
    pub fn silences(&self) -> Result<Vec<SilenceRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, matcher, until, reason, created_by, created FROM silences ORDER BY id")?;
        let rows = stmt.query_map([], silence_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The silences that have not ended at `now`.
    pub fn silences_active(&self, now: Timestamp) -> Result<Vec<SilenceRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, matcher, until, reason, created_by, created FROM silences WHERE until > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([now.millis()], silence_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Removes a silence; false if there was none with that id.
    pub fn silence_remove(&mut self, id: i64) -> Result<bool> {
        let tx = self.write_txn()?;
        let n = tx.execute("DELETE FROM silences WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }
}

fn enqueue_in(conn: &rusqlite::Connection, msg: &NewOutboxMessage) -> Result<Enqueued> {
    non_empty("outbox message id", &msg.message_id)?;
    non_empty("outbox channel", &msg.channel)?;
    let payload = to_json("outbox payload", &msg.payload)?;
    let n = conn
        .prepare_cached(
            "INSERT INTO outbox (message_id, channel, created, payload, next_attempt) VALUES (?1, ?2, ?3, ?4, ?3) \
             ON CONFLICT (channel, message_id) DO NOTHING",
        )?
        .execute(params![msg.message_id, msg.channel, msg.created.millis(), payload])?;
    let id: i64 = conn
        .prepare_cached("SELECT id FROM outbox WHERE channel = ?1 AND message_id = ?2")?
        .query_row(params![msg.channel, msg.message_id], |row| row.get(0))?;
    Ok(Enqueued { id, new: n > 0 })
}

fn not_pending(conn: &rusqlite::Connection, id: i64, expected: &str) -> StoreError {
    let actual: Option<String> =
        conn.query_row("SELECT state FROM outbox WHERE id = ?1", [id], |row| row.get(0)).optional().ok().flatten();
    match actual {
        None => StoreError::NotFound { entity: "outbox message", id },
        Some(actual) => StoreError::Conflict { entity: "outbox message", id, expected: expected.to_owned(), actual },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditQuery;
    use crate::test_support::temp_store;

    fn msg(channel: &str, id: &str, at: i64) -> NewOutboxMessage {
        NewOutboxMessage {
            message_id: id.to_owned(),
            channel: channel.to_owned(),
            created: Timestamp(at),
            payload: serde_json::json!({"title": format!("t {id}"), "host": "web1"}),
        }
    }

    #[test]
    fn enqueue_is_idempotent_per_channel() {
        let (_dir, mut store) = temp_store();
        let a = store.outbox_enqueue(&msg("gotify", "m-1", 10)).unwrap();
        let b = store.outbox_enqueue(&msg("gotify", "m-1", 20)).unwrap();
        let c = store.outbox_enqueue(&msg("ntfy", "m-1", 20)).unwrap();
        assert!(a.new && !b.new && c.new);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(store.outbox_pending_count().unwrap(), 2);
        assert_eq!(store.outbox_get(a.id).unwrap().unwrap().created, Timestamp(10));
    }

    #[test]
    fn due_keeps_order_per_channel_behind_a_retry() {
        let (_dir, mut store) = temp_store();
        let first = store.outbox_enqueue(&msg("gotify", "m-1", 10)).unwrap().id;
        let second = store.outbox_enqueue(&msg("gotify", "m-2", 11)).unwrap().id;
        let other = store.outbox_enqueue(&msg("ntfy", "n-1", 12)).unwrap().id;
        let due: Vec<i64> = store.outbox_due(Timestamp(100), 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(due, vec![first, second, other]);
        store.outbox_mark_sending(first).unwrap();
        store.outbox_mark_retry(first, Timestamp(5_000), "503 Service Unavailable").unwrap();
        // The second gotify message waits behind the first; the ntfy one does not.
        let due: Vec<i64> = store.outbox_due(Timestamp(100), 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(due, vec![other]);
        let due: Vec<i64> = store.outbox_due(Timestamp(5_000), 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(due, vec![first, second, other]);
        let row = store.outbox_get(first).unwrap().unwrap();
        assert_eq!(row.state, OutboxState::Failed);
        assert_eq!(row.attempts, 1);
        assert_eq!(row.last_error.as_deref(), Some("503 Service Unavailable"));
    }

    #[test]
    fn sent_and_dead_leave_the_queue_and_dead_is_audited() {
        let (_dir, mut store) = temp_store();
        let a = store.outbox_enqueue(&msg("webhook", "m-1", 10)).unwrap().id;
        let b = store.outbox_enqueue(&msg("webhook", "m-2", 11)).unwrap().id;
        store.outbox_mark_sending(a).unwrap();
        store.outbox_mark_sent(a, Timestamp(50)).unwrap();
        store.outbox_mark_sending(b).unwrap();
        store.outbox_mark_dead(b, Timestamp(60), "401 Unauthorized").unwrap();
        assert_eq!(store.outbox_pending_count().unwrap(), 0);
        assert!(store.outbox_mark_sent(a, Timestamp(70)).is_err(), "a sent row is not sent again");
        assert!(matches!(store.outbox_mark_dead(b, Timestamp(70), "x"), Err(StoreError::Conflict { .. })));
        let alerts = store.query_audit(&AuditQuery { kinds: vec![AuditKind::Alert], ..AuditQuery::default() }).unwrap();
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].summary.contains("m-2") && alerts[0].summary.contains("401"), "{}", alerts[0].summary);
        assert_eq!(alerts[0].host, "web1");
        let failed = store.outbox_log(&OutboxFilter { failed_only: true, ..OutboxFilter::default() }).unwrap();
        assert_eq!(failed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
        let all =
            store.outbox_log(&OutboxFilter { channel: Some("webhook".into()), ..OutboxFilter::default() }).unwrap();
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(store.outbox_prune(Timestamp(11), 10).unwrap(), 1);
        assert!(store.outbox_get(a).unwrap().is_none());
    }

    #[test]
    fn recover_puts_sending_back_to_queued() {
        let (dir, mut store) = temp_store();
        let a = store.outbox_enqueue(&msg("gotify", "m-1", 10)).unwrap().id;
        store.outbox_mark_sending(a).unwrap();
        drop(store);
        let mut store = Store::open(dir.path().join("macha.db")).unwrap();
        assert_eq!(store.outbox_recover().unwrap(), 1);
        let row = store.outbox_get(a).unwrap().unwrap();
        assert_eq!((row.state, row.attempts), (OutboxState::Queued, 1));
        assert_eq!(store.outbox_recover().unwrap(), 0);
    }

    #[test]
    fn silences_have_an_end() {
        let (_dir, mut store) = temp_store();
        let s = |until| NewSilence {
            matcher: "host=web1".into(),
            until: Timestamp(until),
            reason: "maintenance".into(),
            created_by: "alice".into(),
            created: Timestamp(100),
        };
        assert!(store.silence_add(&s(100)).is_err(), "a silence must end after it starts");
        assert!(store.silence_add(&NewSilence { created_by: " ".into(), ..s(200) }).is_err());
        let a = store.silence_add(&s(1_000)).unwrap();
        let b = store.silence_add(&s(2_000)).unwrap();
        assert_eq!(store.silences_active(Timestamp(999)).unwrap().len(), 2);
        assert_eq!(store.silences_active(Timestamp(1_000)).unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), vec![b]);
        assert!(store.silence_remove(a).unwrap());
        assert!(!store.silence_remove(a).unwrap());
        assert_eq!(store.silences().unwrap().len(), 1);
    }
}
