//! The audit trail as notification events: a pure, stateful mapping from [`AuditRecord`]s to
//! [`Event`]s for the router, and to the router's inhibitions (a host unreachable, a deployment
//! in progress). Every notable thing Macha does is already an audit record, so following the
//! trail misses nothing and needs no hook in the engine (decision 0022).
//!
//! The state it keeps is small, and stored with the notification task's cursor
//! ([`Mapper::export_state`], [`Mapper::restore_state`]) so a restart keeps it: the kind of each
//! running action (so an outcome knows whether it was a remediation, a diagnostic or a deployment,
//! and a deployment's outcome lifts its host's inhibition), and whether the model is known to be
//! down (so "analysis unavailable" is told once, not per issue, until an analysis succeeds again).

use macha_notify::{Event, EventKind, Severity};
use macha_store::{AuditKind, AuditRecord, Severity as AuditSeverity};
use std::collections::HashMap;

/// What one audit record means to the notification task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// An event for the router.
    Event(Event),
    /// A message a person asked for (`macha notify`): sent as it is, past the router.
    Manual(ManualMessage),
    /// Hold back the host's messages (it is unreachable, or being deployed) until lifted.
    Inhibit { host: String, reason: String },
    /// The host is reachable again, or its deployment's verification ended.
    Lift { host: String },
}

/// A message a person sent with `macha notify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualMessage {
    /// The audit record it comes from (part of its message id).
    pub audit_id: i64,
    pub title: String,
    pub message: String,
    pub severity: Severity,
    /// Only this channel, when given.
    pub channel: Option<String>,
    pub by: String,
    pub at: macha_core::Timestamp,
}

/// The payload key of an audit record that asks for a notification (`macha notify`, the model's
/// `send_notification`).
pub const NOTIFICATION_PAYLOAD: &str = "notification";

/// The severity of a message from a 0-10 priority as `macha notify --priority` takes it (Gotify's
/// scale): 8 and above critical, 4 to 7 a warning, below that information.
pub fn severity_of_priority(priority: u8) -> Severity {
    match priority {
        8.. => Severity::Critical,
        4..=7 => Severity::Warning,
        _ => Severity::Info,
    }
}

/// The mapping, with the little it remembers between records.
#[derive(Debug, Default)]
pub struct Mapper {
    link_base: Option<String>,
    /// Running actions by id: (kind, host).
    actions: HashMap<i64, (String, String)>,
    /// The model was reported down and no analysis has succeeded since.
    model_down: bool,
}

fn severity(s: AuditSeverity) -> Severity {
    match s {
        AuditSeverity::Critical => Severity::Critical,
        AuditSeverity::Error | AuditSeverity::Warning => Severity::Warning,
        AuditSeverity::Notice | AuditSeverity::Info => Severity::Info,
    }
}

/// The payload's string at `key`, if it is one.
fn text<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.as_object().and_then(|o| o.get(key)).and_then(serde_json::Value::as_str)
}

fn field<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    v.as_object().and_then(|o| o.get(key))
}

/// What a [`Mapper`] remembers, as the notification task stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapperState {
    /// Running actions: (id, kind, host).
    #[serde(default)]
    pub actions: Vec<(i64, String, String)>,
    #[serde(default)]
    pub model_down: bool,
}

/// Running actions kept at most in the stored state (the most recent ids).
pub const MAX_STORED_ACTIONS: usize = 10_000;

impl Mapper {
    /// `link_base`: the web console's address (`notifications.link_base`), without a trailing `/`.
    pub fn new(link_base: Option<String>) -> Mapper {
        Mapper { link_base, ..Mapper::default() }
    }

    /// What the mapping remembers, bounded (the [`MAX_STORED_ACTIONS`] most recent actions).
    pub fn export_state(&self) -> MapperState {
        let mut actions: Vec<(i64, String, String)> =
            self.actions.iter().map(|(id, (kind, host))| (*id, kind.clone(), host.clone())).collect();
        actions.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
        actions.truncate(MAX_STORED_ACTIONS);
        actions.reverse();
        MapperState { actions, model_down: self.model_down }
    }

    /// Takes back what [`Mapper::export_state`] gave.
    pub fn restore_state(&mut self, state: MapperState) {
        let skip = state.actions.len().saturating_sub(MAX_STORED_ACTIONS);
        self.actions = state.actions.into_iter().skip(skip).map(|(id, kind, host)| (id, (kind, host))).collect();
        self.model_down = state.model_down;
    }

    fn link(&self, what: &str, id: i64) -> Option<String> {
        self.link_base.as_ref().map(|b| format!("{b}/{what}/{id}"))
    }

    fn event(&self, r: &AuditRecord, kind: EventKind, severity: Severity, group_key: String, title: String) -> Event {
        Event {
            kind,
            severity,
            host: r.host.clone(),
            group_key,
            title,
            body: r.summary.clone(),
            link: None,
            at: r.ts,
            source: Some(format!("audit:{}", r.id)),
        }
    }

    /// What `r` means; most records mean nothing to people and give an empty list.
    pub fn map(&mut self, r: &AuditRecord) -> Vec<Mapped> {
        match r.kind {
            AuditKind::Finding | AuditKind::Issue => self.issue(r),
            AuditKind::Approval => self.approval(r),
            AuditKind::Action => {
                if let (Some(id), Some(kind)) = (r.action_id, field(&r.payload, "action").and_then(|a| text(a, "kind")))
                {
                    self.actions.insert(id, (kind.to_owned(), r.host.clone()));
                    if kind == "nixos_switch" {
                        return vec![Mapped::Inhibit {
                            host: r.host.clone(),
                            reason: "a deployment is in progress".to_owned(),
                        }];
                    }
                }
                Vec::new()
            }
            AuditKind::Outcome => self.outcome(r),
            AuditKind::AuthDenied => {
                let title = format!("Denied request on {}", r.host);
                let mut e = self.event(r, EventKind::Security, Severity::Warning, "security:auth_denied".into(), title);
                e.body = format!("{}\n\nSee `macha logs audit --kind auth_denied`.", r.summary);
                vec![Mapped::Event(e)]
            }
            AuditKind::Alert => self.alert(r),
            AuditKind::Decision => {
                let rule = field(&r.payload, "decision").and_then(|d| text(d, "rule"));
                if rule != Some("protected") {
                    return Vec::new();
                }
                let subject = r.subject.clone().unwrap_or_default();
                let title = format!("Protected unit touched on {}: {subject}", r.host);
                let key = format!("security:protected:{}/{subject}", r.host);
                vec![Mapped::Event(self.event(r, EventKind::Security, Severity::Warning, key, title))]
            }
            AuditKind::Config => {
                let discovered = r.subject.as_deref() == Some("host")
                    && text(&r.payload, "source") == Some("journal")
                    && r.summary.starts_with("discovered ");
                if !discovered {
                    return Vec::new();
                }
                let title = format!("New host discovered: {}", r.host);
                let mut e = self.event(r, EventKind::HostDiscovered, Severity::Info, format!("host:{}", r.host), title);
                e.body = format!("{}\n\nSee `macha-systems list`.", r.summary);
                vec![Mapped::Event(e)]
            }
            AuditKind::Daemon => self.requested(r),
            AuditKind::Snapshot => Vec::new(),
        }
    }

    fn issue(&mut self, r: &AuditRecord) -> Vec<Mapped> {
        if r.kind == AuditKind::Issue && r.summary.starts_with("analysis: ") {
            // An analysis went through: the model works (again).
            self.model_down = false;
            return Vec::new();
        }
        let Some(id) = r.issue_id else { return Vec::new() };
        let key = format!("issue:{id}");
        let what = r.summary.strip_prefix("new issue: ").unwrap_or(&r.summary);
        let (kind, sev, title) = match (r.kind, r.new_state.as_deref()) {
            (AuditKind::Finding, Some("open")) => (EventKind::IssueOpened, severity(r.severity), what.to_owned()),
            (AuditKind::Issue, Some("open")) if r.summary.contains("came back") => {
                (EventKind::IssueOpened, severity(r.severity), format!("Back: {what}"))
            }
            (AuditKind::Issue, Some("resolved")) => {
                (EventKind::IssueResolved, Severity::Info, format!("Resolved: issue {id} on {}", r.host))
            }
            _ => return Vec::new(),
        };
        let mut e = self.event(r, kind, sev, key, format!("{}: {title}", r.host));
        e.body = format!("{}\n\nDetails: `macha issues show {id}`", r.summary);
        e.link = self.link("issues", id);
        vec![Mapped::Event(e)]
    }

    fn approval(&mut self, r: &AuditRecord) -> Vec<Mapped> {
        if let (Some(deploy), Some(fin)) = (text(&r.payload, "deploy"), field(&r.payload, "final"))
            && !fin.is_null()
        {
            // A deployment settled by reconciliation after a restart or a lost connection.
            let sev = if r.severity >= AuditSeverity::Warning { Severity::Warning } else { Severity::Info };
            let title = format!("Deployment {deploy} on {}", r.host);
            return vec![Mapped::Event(self.event(r, EventKind::Deployment, sev, format!("deploy:{}", r.host), title))];
        }
        let (Some(id), Some("pending")) = (r.approval_id, r.new_state.as_deref()) else { return Vec::new() };
        let what = r.summary.strip_prefix("approval requested: ").unwrap_or(&r.summary);
        let title = format!("Approval {id} waits on {}: {what}", r.host);
        let mut e = self.event(r, EventKind::ApprovalPending, Severity::Warning, format!("approval:{id}"), title);
        e.body = format!(
            "{}\n\nApprove with `macha approve {id}`, reject with `macha reject {id}`; details: `macha approvals show {id}`.",
            r.summary
        );
        e.link = self.link("approvals", id);
        vec![Mapped::Event(e)]
    }

    fn outcome(&mut self, r: &AuditRecord) -> Vec<Mapped> {
        let Some(id) = r.action_id else { return Vec::new() };
        let (kind, host) = self.actions.remove(&id).unwrap_or_else(|| (String::new(), r.host.clone()));
        let failed = r.new_state.as_deref() == Some("failed") || r.severity >= AuditSeverity::Error;
        match kind.as_str() {
            "diagnostic" => Vec::new(),
            "nixos_switch" => {
                let (sev, word) = if failed { (Severity::Critical, "failed") } else { (Severity::Info, "succeeded") };
                let title = format!("Deployment on {host} {word}");
                let e = self.event(r, EventKind::Deployment, sev, format!("deploy:{host}"), title);
                vec![Mapped::Lift { host }, Mapped::Event(e)]
            }
            _ => {
                let (kind, sev, word) = if failed {
                    (EventKind::RemediationFailed, Severity::Warning, "failed")
                } else {
                    (EventKind::RemediationDone, Severity::Info, "done")
                };
                let subject = r.subject.clone().unwrap_or_default();
                let title = format!("Remediation {word} on {}: {subject}", r.host);
                vec![Mapped::Event(self.event(r, kind, sev, format!("action:{id}"), title))]
            }
        }
    }

    fn alert(&mut self, r: &AuditRecord) -> Vec<Mapped> {
        let subject = r.subject.as_deref().unwrap_or_default();
        if subject.starts_with("notify:") {
            // A message that could not be delivered: told in the journal and `macha notify log`,
            // not sent again through the channels (that could loop).
            return Vec::new();
        }
        if subject == "host" {
            return match text(&r.payload, "kind") {
                Some("ok") => vec![Mapped::Lift { host: r.host.clone() }],
                Some("host_key_changed") => {
                    let title = format!("Host key of {} changed", r.host);
                    let e =
                        self.event(r, EventKind::Security, Severity::Critical, format!("hostkey:{}", r.host), title);
                    vec![Mapped::Inhibit { host: r.host.clone(), reason: r.summary.clone() }, Mapped::Event(e)]
                }
                // Observed, but only in part: its own issue tells that.
                Some("degraded" | "unknown" | "partial" | "blind" | "complete") | None => Vec::new(),
                Some(_) => vec![Mapped::Inhibit { host: r.host.clone(), reason: r.summary.clone() }],
            };
        }
        let s = r.summary.as_str();
        if s.starts_with("analysis unavailable")
            || s.starts_with("model unavailable")
            || s.contains("model is unavailable")
        {
            if self.model_down {
                return Vec::new();
            }
            self.model_down = true;
            let title = "Analysis unavailable: the model does not answer".to_owned();
            let mut e = self.event(r, EventKind::AnalysisUnavailable, Severity::Warning, "analysis".into(), title);
            e.body = format!(
                "{s}\n\nIssues are still detected and remediated by rules; this is told once until an analysis works again."
            );
            return vec![Mapped::Event(e)];
        }
        let key = format!("self:{}", s.split(':').next().unwrap_or(s));
        let title = format!("Macha on {}: {}", r.host, s.split(':').next().unwrap_or(s));
        vec![Mapped::Event(self.event(
            r,
            EventKind::SelfHealth,
            severity(r.severity).max(Severity::Warning),
            key,
            title,
        ))]
    }

    /// A message someone asked for: `macha notify` (a person) or `send_notification` (the model).
    fn requested(&mut self, r: &AuditRecord) -> Vec<Mapped> {
        let Some(n) = field(&r.payload, NOTIFICATION_PAYLOAD) else { return Vec::new() };
        let title = text(n, "title").unwrap_or_default().to_owned();
        let message = text(n, "message").unwrap_or_default().to_owned();
        let priority = field(n, "priority").and_then(serde_json::Value::as_u64).unwrap_or(5);
        let sev = severity_of_priority(u8::try_from(priority).unwrap_or(u8::MAX));
        match text(n, "kind") {
            Some("manual") => vec![Mapped::Manual(ManualMessage {
                audit_id: r.id,
                title,
                message,
                severity: sev,
                channel: text(n, "channel").map(str::to_owned),
                by: text(n, "by").unwrap_or("someone").to_owned(),
                at: r.ts,
            })],
            Some("model") => {
                let why = text(n, "why").unwrap_or_default();
                // Marked as the model's in the title, whatever it wrote there.
                let title = format!("[model] {title}");
                let mut e = self.event(r, EventKind::Model, sev, format!("model:{}", r.id), title);
                e.body = if why.is_empty() {
                    format!("{message}\n\n(Written by the model.)")
                } else {
                    format!("{message}\n\n(Written by the model: {why})")
                };
                vec![Mapped::Event(e)]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
