//! The one SQLite database of Macha: the audit trail (hash-chained, [`chain`]), approvals,
//! issues, the action log, small key/value state, the host registry, per-host snapshot history
//! ([`history`]) and metric history ([`metrics`]), the agent's records, with bounded retention ([`Store::maintain`]), and the
//! configuration index with its keyword search (`configs.rs`).
//!
//! Architecture invariant: every state change is one transaction that carries a guard on the
//! previous state (`UPDATE … WHERE id = ? AND state = ?`) and appends its audit record. Nothing is
//! ever half-done: after a crash at any instant, a change is either fully there, audit record
//! included, or not there at all. Commits are durable when they return (`synchronous=FULL` in WAL
//! mode).
//!
//! One writer: the daemon owns the database through a [`Store`] opened with [`Store::open`]. CLIs
//! that only look use [`Store::open_read_only`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod actions;
mod agent;
mod approvals;
mod audit;
pub mod chain;
mod configs;
mod db;
mod embeddings;
mod error;
pub mod fts;
pub mod history;
mod hosts;
mod issues;
mod knowledge;
mod kv;
pub mod metrics;
pub mod questlog;
mod recall;
mod registry;
mod retention;
mod row;
mod schema;

pub use actions::{ActionRecord, ActionState, INTERRUPTED, NewAction};
pub use agent::{
    AgentRequestRecord, CACHE_KEEP, ConversationTurn, KnowledgeRecord, NewAgentRequest, NewKnowledge, NewPrompt,
    PromptRecord,
};
pub use approvals::{ApprovalRecord, EXPIRY_ACTOR, NewApproval, RECONCILIATION_ACTOR};
pub use audit::{AuditKind, AuditQuery, AuditRecord, NewAudit, Order, Severity};
pub use chain::{AuditAnchor, ChainProblem, ChainReport, ExportReport, ExportSummary, PruneSummary, verify_export};
pub use configs::{ConfigFile, ConfigHit, ConfigIndexChanges, ConfigIndexSummary, ConfigSearch, NewConfigChunk};
pub use db::{BUSY_TIMEOUT, Store};
pub use embeddings::{EmbedItem, EmbedKind, StoredVector};
pub use error::{Result, StoreError};
pub use history::{FsMetrics, HistoryQuery, HistoryRecord, HostStatus, Metrics, NewHistory, Reasons};
pub use hosts::{HostRecord, HostState};
pub use issues::{ACTIVE_STATES, IssueChanges, IssueQuery, IssueRecord, NewIssue, issue_transition_allowed};
pub use knowledge::{IssueCandidate, KbEntry, KbFields, KbHit};
pub use macha_core::approval::ApprovalState;
pub use macha_core::issue::{IssueState, Lifecycle};
pub use metrics::{MetricPoint, MetricsSize};
pub use questlog::{ActionCount, CommandRun, Flapping, IssueCount, LogSearch, LogStats};
pub use recall::{CachedAnalysis, DeploymentRecord};
pub use registry::{DiscoveryChanges, FleetHost, HostSource};
pub use retention::{Limits, MAINTAIN_MAX_TRANSACTIONS, Maintenance};
pub use schema::{MIGRATIONS, SCHEMA_VERSION};

/// The version of the SQLite library the store runs on (bundled with the binary).
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

#[cfg(test)]
mod test_support;
