//! The notification task's one transaction: the messages of a pass into the outbox together with
//! the task's own state (its place in the audit trail) in `kv`, so a kill between the two cannot
//! lose a message whose record the state says was told, nor tell one twice (decision 0022).

use crate::db::Store;
use crate::error::Result;
use crate::outbox::NewOutboxMessage;
use crate::row::{non_empty, to_json};
use rusqlite::params;

impl Store {
    /// Enqueues `msgs` (each idempotently on channel and message id, as
    /// [`Store::outbox_enqueue`]) and sets `key` to `value`, in one durable transaction. Returns
    /// how many rows were new.
    pub fn outbox_enqueue_with_state(&mut self, msgs: &[NewOutboxMessage], key: &str, value: &str) -> Result<usize> {
        non_empty("kv key", key)?;
        let tx = self.write_txn()?;
        let mut new = 0;
        for msg in msgs {
            non_empty("outbox message id", &msg.message_id)?;
            non_empty("outbox channel", &msg.channel)?;
            let payload = to_json("outbox payload", &msg.payload)?;
            new += tx
                .prepare_cached(
                    "INSERT INTO outbox (message_id, channel, created, payload, next_attempt) \
                     VALUES (?1, ?2, ?3, ?4, ?3) ON CONFLICT (channel, message_id) DO NOTHING",
                )?
                .execute(params![msg.message_id, msg.channel, msg.created.millis(), payload])?;
        }
        tx.prepare_cached(
            "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute([key, value])?;
        tx.commit()?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::outbox::OutboxFilter;
    use crate::test_support::temp_store;
    use macha_core::Timestamp;

    fn msg(id: &str) -> NewOutboxMessage {
        NewOutboxMessage {
            message_id: id.into(),
            channel: "ntfy".into(),
            created: Timestamp(5),
            payload: serde_json::json!({"title": id}),
        }
    }

    #[test]
    fn messages_and_state_commit_together_and_idempotently() {
        let (_dir, mut store) = temp_store();
        assert_eq!(store.outbox_enqueue_with_state(&[msg("a"), msg("b")], "notify.state", "1").unwrap(), 2);
        assert_eq!(store.outbox_enqueue_with_state(&[msg("b"), msg("c")], "notify.state", "2").unwrap(), 1);
        assert_eq!(store.get_kv("notify.state").unwrap().as_deref(), Some("2"));
        assert_eq!(store.outbox_log(&OutboxFilter::default()).unwrap().len(), 3);
        // A bad message rolls back the state with it.
        let bad = NewOutboxMessage { channel: String::new(), ..msg("d") };
        assert!(store.outbox_enqueue_with_state(&[msg("e"), bad], "notify.state", "3").is_err());
        assert_eq!(store.get_kv("notify.state").unwrap().as_deref(), Some("2"));
        assert_eq!(store.outbox_log(&OutboxFilter::default()).unwrap().len(), 3);
        // State alone.
        assert_eq!(store.outbox_enqueue_with_state(&[], "notify.state", "4").unwrap(), 0);
        assert_eq!(store.get_kv("notify.state").unwrap().as_deref(), Some("4"));
    }
}
