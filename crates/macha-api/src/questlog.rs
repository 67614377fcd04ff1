//! The quest log's operations (`macha logs search`, `stats`, `commands`; viewers): a full-text
//! search of the audit trail, its statistics, and the commands Macha ran with how they ended.
//! `macha logs timeline` is [`crate::ops::QueryAudit`] for one host.

use crate::ops::Call;
use crate::reply::{AuditEntry, AuditKind};
use crate::request::Request;
use macha_core::Timestamp;
use serde::{Deserialize, Serialize};

/// Audit records whose subject, summary or payload text match `text` (any word; best first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchAudit {
    pub text: String,
    pub host: Option<String>,
    pub kinds: Vec<AuditKind>,
    pub since: Option<Timestamp>,
    pub limit: Option<u32>,
}

impl Call for SearchAudit {
    type Reply = Vec<AuditEntry>;
    fn into_request(self) -> Request {
        Request::SearchAudit(self)
    }
}

/// The statistics of the quest log since a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogStats {
    pub since: Timestamp,
}

impl Call for LogStats {
    type Reply = LogStatsView;
    fn into_request(self) -> Request {
        Request::LogStats(self)
    }
}

/// The commands and unit jobs Macha ran, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandRuns {
    pub host: Option<String>,
    pub since: Option<Timestamp>,
    pub limit: Option<u32>,
}

impl Call for CommandRuns {
    type Reply = Vec<CommandRunView>;
    fn into_request(self) -> Request {
        Request::CommandRuns(self)
    }
}

/// Executed actions of one kind that ended in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCountView {
    pub kind: String,
    pub outcome: String,
    pub count: u64,
}

/// Issues of one check on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueCountView {
    pub check_name: String,
    pub host: String,
    pub count: u64,
}

/// A subject whose issue came back often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlappingView {
    pub host: String,
    pub subject: String,
    pub recurrences: u64,
}

/// `macha logs stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogStatsView {
    pub since: Timestamp,
    pub actions: Vec<ActionCountView>,
    pub issues: Vec<IssueCountView>,
    pub resolved: u64,
    pub resolve_median_ms: Option<i64>,
    pub resolve_p90_ms: Option<i64>,
    pub flapping: Vec<FlappingView>,
    pub model_requests: u64,
    pub model_failed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One command or unit job Macha ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRunView {
    pub action_id: i64,
    pub host: String,
    pub kind: String,
    pub target: String,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub state: String,
    pub exit_status: Option<i32>,
    pub detail: Option<String>,
    /// Redacted before it was stored.
    pub output: Option<String>,
}
