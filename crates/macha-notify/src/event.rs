//! What the rest of Macha tells the notification router: an [`Event`], with its kind, severity,
//! host and the incident it belongs to (`group_key`).

use macha_core::Timestamp;
use serde::{Deserialize, Serialize};

/// How much an event matters to people, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An issue opened (or reopened): starts an incident, identified by `group_key`.
    IssueOpened,
    /// The issue of `group_key` resolved: ends the incident.
    IssueResolved,
    ApprovalPending,
    RemediationDone,
    RemediationFailed,
    Deployment,
    HostDiscovered,
    Security,
    AnalysisUnavailable,
    SelfHealth,
    Manual,
    Model,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::IssueOpened,
        EventKind::IssueResolved,
        EventKind::ApprovalPending,
        EventKind::RemediationDone,
        EventKind::RemediationFailed,
        EventKind::Deployment,
        EventKind::HostDiscovered,
        EventKind::Security,
        EventKind::AnalysisUnavailable,
        EventKind::SelfHealth,
        EventKind::Manual,
        EventKind::Model,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::IssueOpened => "issue_opened",
            EventKind::IssueResolved => "issue_resolved",
            EventKind::ApprovalPending => "approval_pending",
            EventKind::RemediationDone => "remediation_done",
            EventKind::RemediationFailed => "remediation_failed",
            EventKind::Deployment => "deployment",
            EventKind::HostDiscovered => "host_discovered",
            EventKind::Security => "security",
            EventKind::AnalysisUnavailable => "analysis_unavailable",
            EventKind::SelfHealth => "self_health",
            EventKind::Manual => "manual",
            EventKind::Model => "model",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether an inhibition of the event's host holds it back. Events a person must see or act
    /// on whatever the host's state (a pending approval, security, Macha's own health, a manual
    /// message, the deployment itself) pass through.
    pub fn inhibitable(self) -> bool {
        match self {
            EventKind::IssueOpened
            | EventKind::IssueResolved
            | EventKind::RemediationDone
            | EventKind::RemediationFailed
            | EventKind::AnalysisUnavailable
            | EventKind::Model
            | EventKind::HostDiscovered => true,
            EventKind::ApprovalPending
            | EventKind::Deployment
            | EventKind::Security
            | EventKind::SelfHealth
            | EventKind::Manual => false,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to tell people about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub severity: Severity,
    /// The host it is about (`local` for Macha's own host).
    pub host: String,
    /// The incident it belongs to: for issues their fingerprint; for other events a stable key
    /// (such as `approval:42` or `deploy:web1`). Events of one group are told together.
    pub group_key: String,
    /// One line.
    pub title: String,
    /// Markdown text.
    pub body: String,
    /// Where to look (a click URL).
    pub link: Option<String>,
    pub at: Timestamp,
    /// What it comes from, such as `audit:1234`.
    pub source: Option<String>,
}
