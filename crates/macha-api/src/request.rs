//! The request enum: every operation of the socket, tagged by `op`.

use crate::ops;
use serde::{Deserialize, Serialize};

/// One request, as it goes inside the frame's `req`. Each variant holds its operation's type from
/// [`ops`]; unknown operations and unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Daemon status: autonomy, uptime, sources.
    Status,
    /// Run one cycle now and return its report.
    RunCheck,
    /// The last report of each remote host (`macha check --host`, `--all`).
    HostReports(ops::HostReports),
    ListIssues(ops::ListIssues),
    ShowIssue(ops::ShowIssue),
    ResolveIssue(ops::ResolveIssue),
    CloseIssue(ops::CloseIssue),
    ListApprovals(ops::ListApprovals),
    ShowApproval(ops::ShowApproval),
    Approve(ops::Approve),
    Reject(ops::Reject),
    /// Audit records; `after_id` lets `--follow` poll.
    QueryAudit(ops::QueryAudit),
    /// One question to the model (streamed; `macha-ask`).
    Ask(ops::Ask),
    /// One turn of a chat (streamed; `macha-chat`). The conversation id comes back in the first
    /// event; sending it again continues the conversation with its history.
    Chat(ops::Chat),
    /// One turn of a discussion of a pending approval (streamed; `macha-approve discuss`).
    Discuss(ops::Discuss),
    /// The prompt log: exactly what was sent to the model, redacted (`macha-logs prompts`).
    ListPrompts(ops::ListPrompts),
    /// The host registry (`macha-systems list`).
    ListHosts,
    /// The fleet map (`macha systems graph`).
    FleetGraph,
    /// One registered host with its profile and recent records (`macha-systems show`).
    ShowHost(ops::ShowHost),
    /// The keys a host presents, with fingerprints (`macha-systems trust`, before confirming).
    ScanHost(ops::ScanHost),
    /// Pins the presented keys with these fingerprints and makes the host trusted.
    TrustHost(ops::TrustHost),
    /// Lets Macha contact a discovered (or new) host, for observation.
    AdmitHost(ops::AdmitHost),
    /// Stops contacting a host and removes its pinned keys; its history stays.
    ForgetHost(ops::ForgetHost),
    /// Deletes exported audit records (admin only).
    PruneAudit(ops::PruneAudit),
    /// Prepares a NixOS deployment: preflight, closure diff, approvals (`macha deploy`).
    PrepareDeploy(ops::PrepareDeploy),
    /// The deployments under way and where each is (`macha deploy --wait`).
    DeployProgress,
    /// Lists, searches or shows knowledge entries (`macha knowledge list|search|show|export`).
    KnowledgeRead(crate::knowledge::KnowledgeRead),
    /// Adds, edits, forgets, seeds or imports knowledge entries (admin only).
    KnowledgeWrite(crate::knowledge::KnowledgeWrite),
    /// A one-time login link for the web console on TCP (`macha web login`, admin only).
    WebLogin,
    /// Full-text search of the audit trail (`macha logs search`).
    SearchAudit(crate::questlog::SearchAudit),
    /// The quest log's statistics (`macha logs stats`).
    LogStats(crate::questlog::LogStats),
    /// The commands Macha ran, with exit status, duration and output (`macha logs commands`).
    CommandRuns(crate::questlog::CommandRuns),
    /// A host's metric names, or one metric's points (`macha metrics`).
    MetricsRead(crate::metrics::MetricsRead),
    /// The notification log and silences (`macha notify log`, `macha silence list`).
    NotifyRead(crate::notify::NotifyRead),
    /// Sends or tests a notification, adds or removes a silence (admin only; audited).
    NotifyWrite(crate::notify::NotifyWrite),
}

/// The access tiers, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Anyone,
    Viewer,
    Admin,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Anyone => "anyone",
            Tier::Viewer => "viewer",
            Tier::Admin => "admin",
        }
    }
}

impl Request {
    /// Who may make the request (the daemon checks the caller's kernel credentials):
    /// - anyone: the status summary;
    /// - viewers (the viewer group, root and admins): issues, approvals, the audit trail, the
    ///   hosts, the last check report, and questions to the model — whose proposals, for a viewer,
    ///   are queued for an admin and never executed; reading the knowledge base and the metric
    ///   history;
    /// - admins (root and the admin group): everything that changes state, a new check cycle,
    ///   discussing an approval with the model, the prompt log, contacting hosts, and writing the
    ///   knowledge base.
    pub fn tier(&self) -> Tier {
        match self {
            Request::Status => Tier::Anyone,
            Request::RunCheck
            | Request::HostReports(_)
            | Request::ListIssues(_)
            | Request::ShowIssue(_)
            | Request::ListApprovals(_)
            | Request::ShowApproval(_)
            | Request::QueryAudit(_)
            | Request::ListHosts
            | Request::FleetGraph
            | Request::ShowHost(_)
            | Request::DeployProgress
            | Request::Ask(_)
            | Request::Chat(_)
            | Request::KnowledgeRead(_)
            | Request::SearchAudit(_)
            | Request::LogStats(_)
            | Request::CommandRuns(_)
            | Request::MetricsRead(_)
            | Request::NotifyRead(_) => Tier::Viewer,
            Request::ResolveIssue(_)
            | Request::CloseIssue(_)
            | Request::Approve(_)
            | Request::Reject(_)
            | Request::Discuss(_)
            | Request::ListPrompts(_)
            | Request::ScanHost(_)
            | Request::TrustHost(_)
            | Request::AdmitHost(_)
            | Request::ForgetHost(_)
            | Request::PruneAudit(_)
            | Request::PrepareDeploy(_)
            | Request::KnowledgeWrite(_)
            | Request::WebLogin
            | Request::NotifyWrite(_) => Tier::Admin,
        }
    }

    /// Whether the request needs an admin (see [`Request::tier`]).
    pub fn is_write(&self) -> bool {
        self.tier() == Tier::Admin
    }

    /// Whether the answer is streamed: event lines, then one final answer line.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Request::Ask(_) | Request::Chat(_) | Request::Discuss(_))
    }

    /// The operation's name on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::RunCheck => "run_check",
            Request::HostReports(_) => "host_reports",
            Request::ListIssues(_) => "list_issues",
            Request::ShowIssue(_) => "show_issue",
            Request::ResolveIssue(_) => "resolve_issue",
            Request::CloseIssue(_) => "close_issue",
            Request::ListApprovals(_) => "list_approvals",
            Request::ShowApproval(_) => "show_approval",
            Request::Approve(_) => "approve",
            Request::Reject(_) => "reject",
            Request::QueryAudit(_) => "query_audit",
            Request::Ask(_) => "ask",
            Request::Chat(_) => "chat",
            Request::Discuss(_) => "discuss",
            Request::ListPrompts(_) => "list_prompts",
            Request::ListHosts => "list_hosts",
            Request::FleetGraph => "fleet_graph",
            Request::ShowHost(_) => "show_host",
            Request::ScanHost(_) => "scan_host",
            Request::TrustHost(_) => "trust_host",
            Request::AdmitHost(_) => "admit_host",
            Request::ForgetHost(_) => "forget_host",
            Request::PruneAudit(_) => "prune_audit",
            Request::PrepareDeploy(_) => "prepare_deploy",
            Request::DeployProgress => "deploy_progress",
            Request::KnowledgeRead(_) => "knowledge_read",
            Request::KnowledgeWrite(_) => "knowledge_write",
            Request::WebLogin => "web_login",
            Request::SearchAudit(_) => "search_audit",
            Request::LogStats(_) => "log_stats",
            Request::CommandRuns(_) => "command_runs",
            Request::MetricsRead(_) => "metrics_read",
            Request::NotifyRead(_) => "notify_read",
            Request::NotifyWrite(_) => "notify_write",
        }
    }
}
