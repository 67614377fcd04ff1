//! The answers: one type per operation (see [`crate::ops`]), holding what the CLI shows and what
//! `--json` prints. Domain types that are API boundaries of their own (`Snapshot`, `Finding`,
//! `Action`, `Decision`, names, `Timestamp`) come from `macha-core`; everything else the daemon
//! knows is converted into these types before it is written to the socket.

use macha_core::approval::ApprovalState;
use macha_core::checks::{CheckName, Finding};
use macha_core::fleet::{Profile, Role, Standing};
use macha_core::issue::IssueState;
use macha_core::policy::{Autonomy, Decision, Risk, Verdict};
use macha_core::snapshot::Snapshot;
use macha_core::{Action, HostName, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `status`: what the daemon runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub autonomy: Autonomy,
    pub uptime_secs: u64,
    pub database: String,
    /// `connected`, or `unavailable: <reason>`.
    pub systemd: String,
    /// The daemon's package version.
    pub version: String,
    /// SSH connection counts; `None` when SSH is not available.
    pub ssh: Option<SshStats>,
    /// The BATCH jobs (work done only while the host is idle) and how they fare.
    #[serde(default)]
    pub jobs: Vec<JobView>,
}

/// One BATCH job of the daemon (`macha status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    /// `idle` (nothing to do), `pending` (work waits), `running`, or `failed`.
    pub state: String,
    /// When the last run ended, and what it did or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// When the job looks again (or may run next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<Timestamp>,
    /// Why pending work did not run at the last look (pressure, load, budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<String>,
    /// Runs since the daemon started.
    pub runs: u64,
    /// How far the running job is (`embedding 48/301 with MODEL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// SSH connection counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshStats {
    /// Master connections opened since the daemon started.
    pub connects: u64,
    /// Hosts with a master right now.
    pub connected: usize,
    pub per_host: BTreeMap<String, u64>,
}

/// The overall result of a check: one word for a host, the same everywhere (its rules and exit
/// codes are [`macha_core::checks::Verdict`]'s).
pub use macha_core::checks::Verdict as CheckStatus;

/// Who ran a check: the daemon (which records and acts), or a standalone CLI (which never acts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    Daemon,
    Standalone,
    /// A remote host's last observation by the daemon.
    Fleet,
}

impl CheckMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckMode::Daemon => "daemon",
            CheckMode::Standalone => "standalone",
            CheckMode::Fleet => "fleet",
        }
    }
}

/// Whether one snapshot section was observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SectionState {
    Ok,
    Unavailable { reason: String },
}

/// Whether each snapshot section was observed, in the order of
/// `macha_core::snapshot::SECTION_NAMES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sections {
    pub cpu: SectionState,
    pub memory: SectionState,
    pub load: SectionState,
    pub pressure: SectionState,
    pub filesystems: SectionState,
    pub network: SectionState,
    pub processes: SectionState,
    pub units: SectionState,
    pub journal: SectionState,
    pub nix: SectionState,
    pub hardware: SectionState,
}

/// A check that could not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownCheck {
    pub check: CheckName,
    pub reason: String,
}

/// What the policy did (or, standalone, would do) with one proposed action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub action: Action,
    pub decision: Decision,
    pub approval_id: Option<i64>,
    pub action_id: Option<i64>,
}

/// What a cycle did about the model's analysis of new issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum Analysis {
    /// The language model is not enabled.
    #[serde(rename = "disabled")]
    Disabled,
    /// No new issues: no model call. `last_error` says when the previous analysis failed (a
    /// report never reads as if all was well after a failure).
    #[serde(rename = "not needed")]
    NotNeeded {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    /// An analysis was queued; it runs later, the cycle does not wait.
    #[serde(rename = "queued")]
    Queued {
        request_id: i64,
        /// The last failure of the model, if the previous request failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
    },
    #[serde(rename = "unavailable")]
    Unavailable { reason: String },
}

/// `run_check` (and `macha check` standalone): one cycle's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub status: CheckStatus,
    pub mode: CheckMode,
    pub autonomy: Autonomy,
    pub database: String,
    pub host: HostName,
    pub taken_at: Timestamp,
    pub taken_at_text: String,
    pub collect_micros: u64,
    pub sections: Sections,
    pub findings: Vec<Finding>,
    pub unknown_checks: Vec<UnknownCheck>,
    pub proposals: Vec<Proposal>,
    pub resolved_issues: Vec<i64>,
    pub correlation_id: String,
    pub snapshot: Snapshot,
    /// The daemon's analysis of new issues (absent from a standalone check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Set when the report is older than the host's observation interval allows (the host has not
    /// been observed since; the status is then `unknown`), saying since when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

/// The severity of an audit record or an issue.
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

    pub fn parse(s: &str) -> Option<AuditKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

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
}

/// One record of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Grows with every record and is never reused (`after_id` polling sees each record once).
    pub id: i64,
    pub ts: Timestamp,
    pub correlation_id: Option<String>,
    pub kind: AuditKind,
    pub severity: Severity,
    pub host: String,
    pub summary: String,
    /// Details as recorded (their shape depends on the kind of record).
    pub payload: serde_json::Value,
}

/// One issue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueView {
    pub id: i64,
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
}

/// `show_issue`: an issue with its trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueDetail {
    pub issue: IssueView,
    pub audit: Vec<AuditEntry>,
    /// Earlier issues most like this one, with their resolutions (the memory of incidents).
    #[serde(default)]
    pub similar: Vec<crate::knowledge::SimilarIssueView>,
    /// What changed for the issue's host within `knowledge.change_window` before it opened: one
    /// line per commit of the flake touching the host's files, and its last deployment; notes
    /// say when the history could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_changes: Vec<String>,
    /// The ids the model's analyses of this issue cited (`kb:N`, `runbook:ID`,
    /// `config:FILE:A-B`, `issue:N`), newest analysis first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<String>,
}

/// The policy's decision as an approval request recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionView {
    pub verdict: Option<Verdict>,
    pub risk: Option<Risk>,
    pub reason: Option<String>,
}

/// One approval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: i64,
    pub host: String,
    /// The proposed action as recorded (the action schema of `macha schema action`).
    pub action: serde_json::Value,
    pub decision: DecisionView,
    pub reason: String,
    pub state: ApprovalState,
    pub requested_by: String,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    pub decided_by: Option<String>,
    pub decided_at: Option<Timestamp>,
    pub decision_note: Option<String>,
    /// What execution produced.
    pub result: Option<String>,
    /// The issue the request came from, if any (`macha issues show ID`).
    pub issue_id: Option<i64>,
}

/// `show_approval`: a request with its trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDetail {
    pub approval: ApprovalView,
    pub audit: Vec<AuditEntry>,
}

/// `approve`: the policy's decision at approval time and the action it started, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApproveResult {
    pub approval_id: i64,
    pub decision: Decision,
    pub action_id: Option<i64>,
}

/// `reject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectResult {
    pub approval_id: i64,
    pub state: ApprovalState,
}

/// One line of a streamed answer before the final one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The request was recorded; its id and the conversation it belongs to.
    Started { request_id: i64, conversation: String },
    /// A piece of the streamed answer.
    Token { text: String },
    /// The model called a tool (arguments as it wrote them, redacted).
    ToolCall { name: String, arguments: serde_json::Value },
    /// A tool's result went back to the model.
    ToolResult { name: String, bytes: usize, note: Option<String> },
    /// A call was refused (unknown tool, invalid arguments).
    ToolRefused { name: String, error: String },
    /// Progress of a long step.
    Progress { what: String, done: usize, total: usize },
    /// Waiting for the model: this many requests ahead.
    Queued { position: usize },
}

/// The final answer of `ask`, `chat` and `discuss`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatAnswer {
    /// The agent request (none when the daemon answered without the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<i64>,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Tools called, in order.
    pub tools: Vec<String>,
    pub model_calls: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_prompt_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<u64>,
}

/// One prompt exactly as it was sent to the model (already redacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptView {
    pub request_id: i64,
    pub seq: u32,
    pub ts: Timestamp,
    pub purpose: String,
    pub model: String,
    pub backend: String,
    /// The request body as it went to the model server; its shape is the server's API.
    pub request: serde_json::Value,
    pub estimated_tokens: u64,
    pub prompt_tokens: Option<u64>,
    /// The answer as the server gave it, if there was one.
    pub response: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// `list_prompts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptLog {
    pub prompts: Vec<PromptView>,
}

/// Where a host entered the registry from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostSource {
    /// `[hosts.<name>]` in the configuration.
    Config,
    /// A `_HOSTNAME` in the remote journal (discovery).
    Journal,
    /// A person (`macha-systems admit`).
    Admin,
}

impl HostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            HostSource::Config => "config",
            HostSource::Journal => "journal",
            HostSource::Admin => "admin",
        }
    }
}

/// One host's part of `macha deploy`, before anything changed on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPlan {
    pub host: String,
    /// What the host runs now (`/run/current-system`); the rollback target.
    pub previous: Option<String>,
    pub system: String,
    /// The closure diff, as a person reads it (`None` when it could not be computed).
    pub diff: Option<String>,
    /// Packages added, removed, up- or downgraded or changed in size.
    pub changes: usize,
    /// The changes called out (kernel, systemd, boot loader, …), one line each.
    pub notable: Vec<String>,
    /// The approval bound to (host, previous, system); `None` with `diff_only` or when refused.
    pub approval_id: Option<i64>,
    /// Why this host will not be deployed (unreachable, not trusted, already runs `system`, …).
    pub refused: Option<String>,
}

/// One deployment under way (`deploy_progress`): where it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployProgressView {
    /// The deployment id (the transient units on the host are named after it).
    pub deploy: String,
    pub host: String,
    /// The protocol's phase: `preflight`, `copy`, `pin`, `arm`, `activate`, `verify`, `commit`,
    /// `rollback`, …
    pub phase: String,
    /// The step being run, in words.
    pub step: String,
    pub started: Timestamp,
    pub step_started: Timestamp,
    /// The phases done so far and their times in milliseconds.
    pub done: Vec<(String, u64)>,
}

/// The outcome of the last contact with a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactStatus {
    pub ok: bool,
    /// `ok`, or the kind of failure (`unreachable`, `host_key_changed`, …).
    pub kind: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// The last successful observation.
    #[serde(default)]
    pub last_ok: Option<Timestamp>,
    /// How long the observation took, and how long it waited for a slot first.
    #[serde(default)]
    pub elapsed_ms: Option<u64>,
    #[serde(default)]
    pub queued_ms: Option<u64>,
    /// Sections of the last snapshot that could not be observed.
    #[serde(default)]
    pub unavailable_sections: Option<usize>,
    /// Set while the host is suspect: its failures in a row and when it is tried again (it is
    /// observed apart from the healthy hosts until it answers).
    #[serde(default)]
    pub backoff: Option<Backoff>,
}

/// A suspect host's backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub failures: u32,
    pub retry_at: Timestamp,
}

/// One registered host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub name: String,
    pub state: Standing,
    pub source: HostSource,
    /// Whether Macha contacts it (observation).
    pub contacted: bool,
    /// Whether actions may run on it.
    pub actions: bool,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub os: Option<String>,
    pub role: Option<Role>,
    /// SHA256 fingerprints of the pinned host keys.
    pub pinned: Vec<String>,
    /// The configured tags (`hosts.<name>.tags`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The last contact; `None` before the first.
    pub status: Option<ContactStatus>,
    /// SSH master connections opened to it since the daemon started.
    pub connects: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

impl HostView {
    pub fn state_str(&self) -> &'static str {
        standing_str(self.state)
    }
}

/// The registry's name of a standing.
pub fn standing_str(s: Standing) -> &'static str {
    match s {
        Standing::Configured => "configured",
        Standing::Discovered => "discovered",
        Standing::Admitted => "admitted",
        Standing::Trusted => "trusted",
        Standing::Forgotten => "forgotten",
    }
}

/// `show_host`: a host with its profile and recent records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostDetail {
    #[serde(flatten)]
    pub host: HostView,
    /// What the first contact found; `None` before it.
    pub profile: Option<Profile>,
    pub audit: Vec<AuditEntry>,
}

/// One host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub algorithm: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The known_hosts line.
    pub key: String,
}

/// `scan_host`: the keys a host presents and the ones pinned now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyScan {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub keys: Vec<KeyView>,
    pub pinned: Vec<KeyView>,
    pub matches_pinned: bool,
}

/// `trust_host`: the keys pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustResult {
    pub name: String,
    pub state: Standing,
    pub pinned: Vec<KeyView>,
}

/// `admit_host` and `forget_host`: the host's standing now, and whether the request changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChange {
    pub name: String,
    pub state: Standing,
    pub changed: bool,
}

/// `prune_audit`: what was pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneResult {
    pub upto_id: i64,
    pub hash: String,
    /// Records at or below `upto_id` when the prune was recorded.
    pub records: u64,
    /// Records deleted now; the rest go with the next maintenance passes.
    pub deleted: u64,
    /// The audit record of the prune itself.
    pub audit_id: i64,
}

/// `web_login`: the link that logs its opener in once, within five minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebLoginLink {
    pub url: String,
    /// Seconds the link stays good for.
    pub expires_in_secs: u64,
}
