//! Notifications over the socket: one read operation (viewers: the delivery log, the silences)
//! and one write operation (admins: send a message, test a channel, add or remove a silence),
//! each carrying what to do (`macha notify …`, `macha silence …`, docs/notifications.md).

use crate::ops::Call;
use crate::request::Request;
use macha_core::Timestamp;
use serde::{Deserialize, Serialize};

/// What to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case", deny_unknown_fields)]
pub enum NotifyQuery {
    /// The outbox, newest first (`macha notify log`).
    Log {
        /// Only messages that failed at least once or were given up.
        #[serde(default)]
        failed: bool,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The silences (`macha silence list`); ended ones only with `all`.
    Silences {
        #[serde(default)]
        all: bool,
    },
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case", deny_unknown_fields)]
pub enum NotifyChange {
    /// A message from a person, queued like any event (kind `manual`); audited.
    Send {
        title: String,
        message: String,
        /// 0-10 as Gotify counts: 8 and above critical, 4-7 a warning, below that information.
        #[serde(default)]
        priority: Option<u8>,
        /// Only this channel (default: every configured channel).
        #[serde(default)]
        channel: Option<String>,
    },
    /// Sends a test message on one channel now, past the outbox, and answers what the channel
    /// said.
    Test {
        channel: String,
    },
    /// Silences what matches until `until`.
    SilenceAdd {
        /// `host=GLOB`, `group=GLOB`, `kind=GLOB`, comma-separated.
        matcher: String,
        until: Timestamp,
        reason: String,
    },
    SilenceRemove {
        id: i64,
    },
}

/// One outbox row as people see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyLogEntry {
    pub id: i64,
    pub message_id: String,
    pub channel: String,
    pub created: Timestamp,
    /// `queued`, `sending`, `sent`, `failed` (waiting for a retry) or `dead` (given up).
    pub state: String,
    pub attempts: u32,
    pub next_attempt: Timestamp,
    pub last_error: Option<String>,
    pub sent_at: Option<Timestamp>,
    pub title: String,
    pub kind: String,
    pub severity: String,
    pub host: String,
    /// Why it was sent.
    pub why: String,
}

/// One silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceView {
    pub id: i64,
    pub matcher: String,
    pub until: Timestamp,
    pub reason: String,
    pub created_by: String,
    pub created: Timestamp,
    /// Whether it is still in force.
    pub active: bool,
}

/// The answer to a notification operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifyAnswer {
    Log {
        entries: Vec<NotifyLogEntry>,
        /// Messages still waiting for delivery, in all.
        pending: u64,
    },
    Silences {
        silences: Vec<SilenceView>,
    },
    /// The message was queued (its audit record's id, and the channels it goes to).
    Queued {
        audit_id: i64,
        channels: Vec<String>,
    },
    /// What the channel answered to the test message.
    Tested {
        channel: String,
        delivered: bool,
        answer: String,
    },
    SilenceAdded {
        id: i64,
    },
    SilenceRemoved {
        id: i64,
        existed: bool,
    },
}

/// Reads the notification log and silences (viewers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRead {
    pub query: NotifyQuery,
}

impl Call for NotifyRead {
    type Reply = NotifyAnswer;
    fn into_request(self) -> Request {
        Request::NotifyRead(self)
    }
}

/// Sends, tests, silences (admins; audited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyWrite {
    pub change: NotifyChange,
}

impl Call for NotifyWrite {
    type Reply = NotifyAnswer;
    fn into_request(self) -> Request {
        Request::NotifyWrite(self)
    }
}
