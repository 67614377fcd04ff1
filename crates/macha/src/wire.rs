//! The daemon's edge: store rows and engine types become `macha-api` types here, and only here.
//!
//! Architecture invariant: store rows never go on the wire; only `macha-api` types cross the
//! socket. The daemon's answers and the CLI's direct reads of a database file (`--db`) both go
//! through these functions, so both render the same types.

use crate::engine::CycleReport;
use macha_api::ops::{AuditFilter, Order};
use macha_api::reply::{
    Analysis, ApprovalView, AuditEntry, AuditKind, CheckMode, CheckReport, CheckStatus, ContactStatus, DecisionView,
    HostDetail, HostSource, HostView, IssueView, KeyView, PromptView, Proposal, SectionState, Sections, Severity,
    SshStats, StreamEvent, UnknownCheck,
};
use macha_core::policy::Autonomy;
use macha_core::snapshot::{Section, Snapshot};

/// An audit severity of the store as the API's.
pub fn severity(s: macha_store::Severity) -> Severity {
    match s {
        macha_store::Severity::Info => Severity::Info,
        macha_store::Severity::Notice => Severity::Notice,
        macha_store::Severity::Warning => Severity::Warning,
        macha_store::Severity::Error => Severity::Error,
        macha_store::Severity::Critical => Severity::Critical,
    }
}

fn store_severity(s: Severity) -> macha_store::Severity {
    match s {
        Severity::Info => macha_store::Severity::Info,
        Severity::Notice => macha_store::Severity::Notice,
        Severity::Warning => macha_store::Severity::Warning,
        Severity::Error => macha_store::Severity::Error,
        Severity::Critical => macha_store::Severity::Critical,
    }
}

/// An audit kind of the store as the API's.
pub fn audit_kind(k: macha_store::AuditKind) -> AuditKind {
    use macha_store::AuditKind as K;
    match k {
        K::Snapshot => AuditKind::Snapshot,
        K::Finding => AuditKind::Finding,
        K::Decision => AuditKind::Decision,
        K::Action => AuditKind::Action,
        K::Outcome => AuditKind::Outcome,
        K::Approval => AuditKind::Approval,
        K::Issue => AuditKind::Issue,
        K::AuthDenied => AuditKind::AuthDenied,
        K::Alert => AuditKind::Alert,
        K::Config => AuditKind::Config,
        K::Daemon => AuditKind::Daemon,
    }
}

fn store_audit_kind(k: AuditKind) -> macha_store::AuditKind {
    use macha_store::AuditKind as K;
    match k {
        AuditKind::Snapshot => K::Snapshot,
        AuditKind::Finding => K::Finding,
        AuditKind::Decision => K::Decision,
        AuditKind::Action => K::Action,
        AuditKind::Outcome => K::Outcome,
        AuditKind::Approval => K::Approval,
        AuditKind::Issue => K::Issue,
        AuditKind::AuthDenied => K::AuthDenied,
        AuditKind::Alert => K::Alert,
        AuditKind::Config => K::Config,
        AuditKind::Daemon => K::Daemon,
    }
}

/// The store query for an API audit filter.
pub fn audit_query(f: &AuditFilter) -> macha_store::AuditQuery {
    macha_store::AuditQuery {
        since: f.since,
        host: f.host.clone(),
        kinds: f.kinds.iter().copied().map(store_audit_kind).collect(),
        min_severity: f.min_severity.map(store_severity),
        after_id: f.after_id,
        limit: f.limit,
        order: match f.order {
            Order::OldestFirst => macha_store::Order::OldestFirst,
            Order::NewestFirst => macha_store::Order::NewestFirst,
        },
        ..macha_store::AuditQuery::default()
    }
}

pub fn audit_entry(r: &macha_store::AuditRecord) -> AuditEntry {
    AuditEntry {
        id: r.id,
        ts: r.ts,
        correlation_id: r.correlation_id.clone(),
        kind: audit_kind(r.kind),
        severity: severity(r.severity),
        host: r.host.clone(),
        summary: r.summary.clone(),
        payload: r.payload.clone(),
    }
}

pub fn audit_entries(records: &[macha_store::AuditRecord]) -> Vec<AuditEntry> {
    records.iter().map(audit_entry).collect()
}

pub fn issue(r: &macha_store::IssueRecord) -> IssueView {
    IssueView {
        id: r.id,
        host: r.host.clone(),
        check_name: r.check_name.clone(),
        subject: r.subject.clone(),
        severity: severity(r.severity),
        summary: r.summary.clone(),
        state: r.state,
        since: r.since,
        first_seen: r.first_seen,
        last_seen: r.last_seen,
        recurrences: r.recurrences,
        resolution: r.resolution.clone(),
    }
}

pub fn approval(r: &macha_store::ApprovalRecord) -> ApprovalView {
    ApprovalView {
        id: r.id,
        host: r.host.clone(),
        action: r.action.clone(),
        // The recorded decision as far as it can be read; what is missing stays empty.
        decision: serde_json::from_value::<DecisionView>(r.decision.clone()).unwrap_or_default(),
        reason: r.reason.clone(),
        state: r.state,
        requested_by: r.requested_by.clone(),
        requested_at: r.requested_at,
        expires_at: r.expires_at,
        decided_by: r.decided_by.clone(),
        decided_at: r.decided_at,
        decision_note: r.decision_note.clone(),
        result: r.result.clone(),
        issue_id: r.issue_id,
    }
}

pub fn prompt(r: &macha_store::PromptRecord) -> PromptView {
    let p = &r.prompt;
    PromptView {
        request_id: p.request_id,
        seq: p.seq,
        ts: p.ts,
        purpose: p.purpose.clone(),
        model: p.model.clone(),
        backend: p.backend.clone(),
        request: p.request.clone(),
        estimated_tokens: p.estimated_tokens,
        prompt_tokens: p.prompt_tokens,
        response: p.response.clone(),
        error: p.error.clone(),
    }
}

/// A registry host as the API shows it. `pinned` are the fingerprints of its pinned keys,
/// `default_user` the configured SSH user, `connects` the SSH masters opened to it.
pub fn host(
    h: &macha_store::FleetHost,
    pinned: Vec<String>,
    tags: Vec<String>,
    default_user: &str,
    connects: u64,
) -> HostView {
    let standing = crate::fleet::standing(h.record.state);
    let is_pinned = !pinned.is_empty();
    HostView {
        name: h.record.name.clone(),
        state: standing,
        source: match h.source {
            macha_store::HostSource::Config => HostSource::Config,
            macha_store::HostSource::Journal => HostSource::Journal,
            macha_store::HostSource::Admin => HostSource::Admin,
        },
        // Contacted only with a pinned key (strict host keys); actions only where the host can be
        // acted on: trusted, key pinned, key not changed.
        contacted: standing.may_connect() && is_pinned,
        actions: crate::fleet::actionable(h, is_pinned),
        address: h.record.address.clone().unwrap_or_else(|| h.record.name.clone()),
        port: h.record.port.unwrap_or(22),
        user: h.record.user.clone().unwrap_or_else(|| default_user.to_owned()),
        os: h.record.os.clone(),
        role: h.record.profile.get("role").and_then(|r| serde_json::from_value(r.clone()).ok()),
        pinned,
        tags,
        // `{}` before the first contact.
        status: serde_json::from_value::<ContactStatus>(h.status.clone()).ok(),
        connects,
        first_seen: h.record.first_seen,
        last_seen: h.record.last_seen,
    }
}

/// A registry host with its profile (`None` before the first contact) and recent records.
pub fn host_detail(view: HostView, h: &macha_store::FleetHost, audit: &[macha_store::AuditRecord]) -> HostDetail {
    HostDetail {
        host: view,
        profile: serde_json::from_value(h.record.profile.clone()).ok(),
        audit: audit_entries(audit),
    }
}

pub fn key(k: &macha_ssh::HostKey) -> KeyView {
    KeyView { algorithm: k.algorithm.clone(), fingerprint: k.fingerprint(), key: k.line() }
}

pub fn ssh_stats(s: &macha_ssh::PoolStats) -> SshStats {
    SshStats { connects: s.connects, connected: s.connected, per_host: s.per_host.clone() }
}

/// A model event as a stream line's event.
pub fn agent_event(e: &macha_agent::runner::AgentEvent) -> StreamEvent {
    use macha_agent::runner::AgentEvent as E;
    match e.clone() {
        E::Token { text } => StreamEvent::Token { text },
        E::ToolCall { name, arguments } => StreamEvent::ToolCall { name, arguments },
        E::ToolResult { name, bytes, note } => StreamEvent::ToolResult { name, bytes, note },
        E::ToolRefused { name, error } => StreamEvent::ToolRefused { name, error },
        E::Progress { what, done, total } => StreamEvent::Progress { what, done, total },
        E::Queued { position } => StreamEvent::Queued { position },
    }
}

/// The result of `macha check` (the same from the daemon and standalone): overall status, every
/// section's status, findings, unknown checks, and what the policy decided or would decide.
///
/// The status is `critical`/`warning` by the worst finding; otherwise `unknown` when any section
/// could not be observed (never `healthy`), and `healthy` only when everything was observed.
pub fn check_report(
    snapshot: &Snapshot,
    report: &CycleReport,
    autonomy: Autonomy,
    mode: CheckMode,
    database: &std::path::Path,
    analysis: Option<Analysis>,
) -> CheckReport {
    let status = CheckStatus::of(snapshot, &report.findings);
    fn state<T>(s: &Section<T>) -> SectionState {
        match s.unavailable_reason() {
            Some(reason) => SectionState::Unavailable { reason: reason.to_owned() },
            None => SectionState::Ok,
        }
    }
    let s = snapshot;
    let sections = Sections {
        cpu: state(&s.cpu),
        memory: state(&s.memory),
        load: state(&s.load),
        pressure: state(&s.pressure),
        filesystems: state(&s.filesystems),
        network: state(&s.network),
        processes: state(&s.processes),
        units: state(&s.units),
        journal: state(&s.journal),
        nix: state(&s.nix),
        hardware: state(&s.hardware),
    };
    CheckReport {
        status,
        mode,
        autonomy,
        database: database.display().to_string(),
        host: snapshot.host.clone(),
        taken_at: snapshot.taken_at,
        taken_at_text: snapshot.taken_at.to_string(),
        collect_micros: snapshot.collect_micros,
        sections,
        findings: report.findings.clone(),
        unknown_checks: report
            .unknown_checks
            .iter()
            .map(|(check, reason)| UnknownCheck { check: *check, reason: reason.clone() })
            .collect(),
        proposals: report
            .proposals
            .iter()
            .map(|p| Proposal {
                action: p.action.clone(),
                decision: p.decision.clone(),
                approval_id: p.approval_id,
                action_id: p.action_id,
            })
            .collect(),
        resolved_issues: report.resolved_issues.clone(),
        correlation_id: report.correlation_id.clone(),
        snapshot: snapshot.clone(),
        analysis,
        stale: None,
    }
}

/// The result of a sanctioned audit prune.
pub fn prune_result(s: &macha_store::PruneSummary) -> macha_api::reply::PruneResult {
    macha_api::reply::PruneResult {
        upto_id: s.upto_id,
        hash: s.hash.clone(),
        records: s.records,
        deleted: s.deleted,
        audit_id: s.audit_id,
    }
}

/// The deployments under way, as the wire shows them.
pub fn deploy_progress(list: &[macha_exec::deploy::Progress]) -> Vec<crate::api::reply::DeployProgressView> {
    list.iter()
        .map(|p| crate::api::reply::DeployProgressView {
            deploy: p.deploy.clone(),
            host: p.host.to_string(),
            phase: p.phase.clone(),
            step: p.step.clone(),
            started: p.started,
            step_started: p.step_started,
            done: p
                .done
                .iter()
                .map(|(name, d)| (name.clone(), u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
                .collect(),
        })
        .collect()
}

/// A quest-log search as the store takes it.
pub fn log_search(q: &crate::api::questlog::SearchAudit, limit: u32) -> macha_store::LogSearch {
    macha_store::LogSearch {
        text: q.text.clone(),
        host: q.host.clone(),
        kinds: q.kinds.iter().copied().map(store_audit_kind).collect(),
        since: q.since,
        limit,
    }
}

/// `macha logs stats`' answer.
pub fn log_stats(s: &macha_store::LogStats) -> crate::api::questlog::LogStatsView {
    use crate::api::questlog::{ActionCountView, FlappingView, IssueCountView, LogStatsView};
    LogStatsView {
        since: s.since,
        actions: s
            .actions
            .iter()
            .map(|a| ActionCountView { kind: a.kind.clone(), outcome: a.outcome.clone(), count: a.count })
            .collect(),
        issues: s
            .issues
            .iter()
            .map(|i| IssueCountView { check_name: i.check_name.clone(), host: i.host.clone(), count: i.count })
            .collect(),
        resolved: s.resolved,
        resolve_median_ms: s.resolve_median_ms,
        resolve_p90_ms: s.resolve_p90_ms,
        flapping: s
            .flapping
            .iter()
            .map(|f| FlappingView { host: f.host.clone(), subject: f.subject.clone(), recurrences: f.recurrences })
            .collect(),
        model_requests: s.model_requests,
        model_failed: s.model_failed,
        prompt_tokens: s.prompt_tokens,
        completion_tokens: s.completion_tokens,
    }
}

/// The commands Macha ran, as `macha logs commands` shows them.
pub fn command_runs(runs: &[macha_store::CommandRun]) -> Vec<crate::api::questlog::CommandRunView> {
    runs.iter()
        .map(|r| crate::api::questlog::CommandRunView {
            action_id: r.action_id,
            host: r.host.clone(),
            kind: r.kind.clone(),
            target: r.target.clone(),
            started: r.started,
            finished: r.finished,
            duration_ms: r.duration_ms,
            state: r.state.clone(),
            exit_status: r.exit_status,
            detail: r.detail.clone(),
            output: r.output.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_store_kind_and_severity_maps_both_ways() {
        for k in macha_store::AuditKind::ALL {
            assert_eq!(store_audit_kind(audit_kind(k)), k);
            assert_eq!(audit_kind(k).as_str(), k.as_str());
        }
        for s in macha_store::Severity::ALL {
            assert_eq!(store_severity(severity(s)), s);
            assert_eq!(severity(s).as_str(), s.as_str());
        }
    }

    #[test]
    fn a_partial_recorded_decision_and_an_uncontacted_host_still_convert() {
        let now = macha_core::Timestamp(5);
        let a = macha_store::ApprovalRecord {
            id: 1,
            host: "local".into(),
            action: serde_json::json!({"kind": "reboot", "host": "local", "reason": "x"}),
            decision: serde_json::json!({"verdict": "approval", "reason": "test"}),
            reason: "x".into(),
            state: macha_core::approval::ApprovalState::Pending,
            requested_by: "test".into(),
            requested_at: now,
            expires_at: now,
            decided_by: None,
            decided_at: None,
            decision_note: None,
            finished_by: None,
            finished_at: None,
            result: None,
            correlation_id: "c".into(),
            issue_id: None,
        };
        let v = approval(&a);
        assert_eq!(v.decision.verdict, Some(macha_core::policy::Verdict::Approval));
        assert_eq!((v.decision.risk, v.decision.reason.as_deref()), (None, Some("test")));
        let h = macha_store::FleetHost {
            record: macha_store::HostRecord {
                name: "c1".into(),
                address: None,
                port: None,
                user: None,
                state: macha_store::HostState::Admitted,
                host_key: None,
                os: None,
                profile: serde_json::json!({}),
                first_seen: now,
                last_seen: now,
            },
            source: macha_store::HostSource::Admin,
            status: serde_json::json!({}),
        };
        let view = host(&h, vec![], vec![], "macha", 0);
        assert_eq!((&view.status, view.role, view.address.as_str(), view.port), (&None, None, "c1", 22));
        // Admitted but no key pinned: never contacted (strict host keys), never acted on.
        assert!(!view.contacted && !view.actions);
        assert_eq!(host_detail(view, &h, &[]).profile, None);
    }
}
