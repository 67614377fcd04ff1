//! Tests of the audit-trail mapping: one per record kind that means something to people, and
//! the records that must stay quiet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use macha_core::Timestamp;
use serde_json::json;

fn rec(id: i64, kind: AuditKind, severity: AuditSeverity, host: &str, summary: &str) -> AuditRecord {
    AuditRecord {
        id,
        ts: Timestamp(1_000 + id),
        correlation_id: None,
        kind,
        severity,
        host: host.to_owned(),
        subject: None,
        summary: summary.to_owned(),
        payload: serde_json::Value::Null,
        approval_id: None,
        issue_id: None,
        action_id: None,
        new_state: None,
    }
}

fn events(m: &mut Mapper, r: &AuditRecord) -> Vec<Event> {
    m.map(r)
        .into_iter()
        .filter_map(|x| match x {
            Mapped::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn one(m: &mut Mapper, r: &AuditRecord) -> Event {
    let mut e = events(m, r);
    assert_eq!(e.len(), 1, "{r:?} gave {e:?}");
    e.remove(0)
}

#[test]
fn a_new_critical_issue_opens_an_incident_with_its_link() {
    let mut m = Mapper::new(Some("https://macha.example".into()));
    let r = AuditRecord {
        issue_id: Some(7),
        new_state: Some("open".into()),
        subject: Some("nginx.service".into()),
        ..rec(1, AuditKind::Finding, AuditSeverity::Critical, "web1", "new issue: unit nginx.service failed")
    };
    let e = one(&mut m, &r);
    assert_eq!(e.kind, EventKind::IssueOpened);
    assert_eq!(e.severity, Severity::Critical);
    assert_eq!(e.group_key, "issue:7");
    assert_eq!(e.title, "web1: unit nginx.service failed");
    assert_eq!(e.link.as_deref(), Some("https://macha.example/issues/7"));
    assert!(e.body.contains("macha issues show 7"), "{}", e.body);
    assert_eq!(e.source.as_deref(), Some("audit:1"));
    assert_eq!(e.at, Timestamp(1_001));
}

#[test]
fn a_reopening_and_a_resolution_belong_to_the_same_incident() {
    let mut m = Mapper::new(None);
    let back = AuditRecord {
        issue_id: Some(7),
        new_state: Some("open".into()),
        ..rec(2, AuditKind::Issue, AuditSeverity::Critical, "web1", "issue 7 came back: unit nginx.service failed")
    };
    let e = one(&mut m, &back);
    assert_eq!((e.kind, e.group_key.as_str(), e.link.clone()), (EventKind::IssueOpened, "issue:7", None));
    let resolved = AuditRecord {
        issue_id: Some(7),
        new_state: Some("resolved".into()),
        ..rec(
            3,
            AuditKind::Issue,
            AuditSeverity::Notice,
            "web1",
            "issue 7 resolved: the check observed the condition gone",
        )
    };
    let e = one(&mut m, &resolved);
    assert_eq!((e.kind, e.severity, e.group_key.as_str()), (EventKind::IssueResolved, Severity::Info, "issue:7"));
    // Moves to acting, closing and archiving are no news.
    for state in ["acting", "closed", "archived"] {
        let r = AuditRecord {
            issue_id: Some(7),
            new_state: Some(state.into()),
            ..rec(4, AuditKind::Issue, AuditSeverity::Info, "web1", "issue 7: open → acting (an action started)")
        };
        assert!(m.map(&r).is_empty(), "{state}");
    }
}

#[test]
fn a_pending_approval_says_how_to_approve_it() {
    let mut m = Mapper::new(Some("https://m".into()));
    let r = AuditRecord {
        approval_id: Some(42),
        new_state: Some("pending".into()),
        ..rec(5, AuditKind::Approval, AuditSeverity::Notice, "web1", "approval requested: restart nginx.service (risk)")
    };
    let e = one(&mut m, &r);
    assert_eq!(e.kind, EventKind::ApprovalPending);
    assert_eq!(e.group_key, "approval:42");
    assert!(e.body.contains("macha approve 42"), "{}", e.body);
    assert_eq!(e.link.as_deref(), Some("https://m/approvals/42"));
    // Its later states are not sent again.
    let approved = AuditRecord { new_state: Some("approved".into()), ..r };
    assert!(m.map(&approved).is_empty());
}

#[test]
fn outcomes_are_remediations_unless_diagnostics_or_deployments() {
    let mut m = Mapper::new(None);
    let start = |id: i64, action_id: i64, kind: &str| AuditRecord {
        action_id: Some(action_id),
        payload: json!({"action": {"kind": kind}}),
        ..rec(id, AuditKind::Action, AuditSeverity::Notice, "web1", "executing x")
    };
    let done = |id: i64, action_id: i64, state: &str, sev: AuditSeverity| AuditRecord {
        action_id: Some(action_id),
        new_state: Some(state.into()),
        subject: Some("nginx.service".into()),
        ..rec(id, AuditKind::Outcome, sev, "web1", "restart nginx.service succeeded and verified: active")
    };
    assert!(m.map(&start(10, 1, "restart_unit")).is_empty());
    let e = one(&mut m, &done(11, 1, "succeeded", AuditSeverity::Notice));
    assert_eq!((e.kind, e.severity), (EventKind::RemediationDone, Severity::Info));
    assert!(m.map(&start(12, 2, "restart_unit")).is_empty());
    let e = one(&mut m, &done(13, 2, "failed", AuditSeverity::Error));
    assert_eq!((e.kind, e.severity), (EventKind::RemediationFailed, Severity::Warning));
    assert!(m.map(&start(14, 3, "diagnostic")).is_empty());
    assert!(m.map(&done(15, 3, "succeeded", AuditSeverity::Notice)).is_empty());
    // A deployment inhibits its host until its verification ended, then tells the result.
    assert_eq!(
        m.map(&start(16, 4, "nixos_switch")),
        vec![Mapped::Inhibit { host: "web1".into(), reason: "a deployment is in progress".into() }]
    );
    // A restart between the start and the outcome: the stored state keeps the action's kind.
    let stored = serde_json::to_string(&m.export_state()).unwrap();
    let mut m = Mapper::new(None);
    m.restore_state(serde_json::from_str(&stored).unwrap());
    let out = m.map(&done(17, 4, "failed", AuditSeverity::Error));
    assert_eq!(out[0], Mapped::Lift { host: "web1".into() });
    let Mapped::Event(e) = &out[1] else { panic!("{out:?}") };
    assert_eq!((e.kind, e.severity, e.group_key.as_str()), (EventKind::Deployment, Severity::Critical, "deploy:web1"));
}

#[test]
fn a_reconciled_deployment_is_a_deployment_result() {
    let mut m = Mapper::new(None);
    let r = AuditRecord {
        approval_id: Some(9),
        payload: json!({"deploy": "d-1", "final": "committed", "how": "x"}),
        ..rec(20, AuditKind::Approval, AuditSeverity::Notice, "web2", "deployment d-1 on web2 reconciled")
    };
    let e = one(&mut m, &r);
    assert_eq!((e.kind, e.severity, e.host.as_str()), (EventKind::Deployment, Severity::Info, "web2"));
    let unknown = AuditRecord { payload: json!({"deploy": "d-1", "final": null}), ..r };
    assert!(m.map(&unknown).is_empty());
}

#[test]
fn security_events_denials_protected_units_and_changed_host_keys() {
    let mut m = Mapper::new(None);
    let denied = rec(30, AuditKind::AuthDenied, AuditSeverity::Warning, "local", "denied approve for uid 1000");
    let e = one(&mut m, &denied);
    assert_eq!((e.kind, e.severity), (EventKind::Security, Severity::Warning));
    let protected = AuditRecord {
        subject: Some("sshd.service".into()),
        payload: json!({"decision": {"rule": "protected", "verdict": "deny"}}),
        ..rec(31, AuditKind::Decision, AuditSeverity::Warning, "local", "deny: stop sshd.service (protected)")
    };
    let e = one(&mut m, &protected);
    assert_eq!(e.kind, EventKind::Security);
    assert!(e.title.contains("sshd.service"), "{}", e.title);
    let other_deny = AuditRecord { payload: json!({"decision": {"rule": "autonomy"}}), ..protected };
    assert!(m.map(&other_deny).is_empty());
    let key = AuditRecord {
        subject: Some("host".into()),
        payload: json!({"kind": "host_key_changed"}),
        ..rec(32, AuditKind::Alert, AuditSeverity::Critical, "web1", "the host key of web1 changed")
    };
    let out = m.map(&key);
    assert!(matches!(&out[0], Mapped::Inhibit { host, .. } if host == "web1"), "{out:?}");
    assert!(matches!(&out[1], Mapped::Event(e) if e.kind == EventKind::Security && e.severity == Severity::Critical));
}

#[test]
fn an_unreachable_host_is_inhibited_until_it_is_back() {
    let mut m = Mapper::new(None);
    let down = AuditRecord {
        subject: Some("host".into()),
        payload: json!({"kind": "unreachable", "reason": "no route"}),
        ..rec(40, AuditKind::Alert, AuditSeverity::Warning, "web1", "web1 could not be observed: no route")
    };
    assert_eq!(m.map(&down), vec![Mapped::Inhibit { host: "web1".into(), reason: down.summary.clone() }]);
    let back = AuditRecord { payload: json!({"kind": "ok"}), ..down.clone() };
    assert_eq!(m.map(&back), vec![Mapped::Lift { host: "web1".into() }]);
    let degraded = AuditRecord { payload: json!({"kind": "degraded"}), ..down };
    assert!(m.map(&degraded).is_empty());
}

#[test]
fn analysis_unavailable_is_told_once_until_an_analysis_works() {
    let mut m = Mapper::new(None);
    let down = rec(50, AuditKind::Alert, AuditSeverity::Warning, "local", "analysis unavailable: connection refused");
    let e = one(&mut m, &down);
    assert_eq!((e.kind, e.group_key.as_str()), (EventKind::AnalysisUnavailable, "analysis"));
    assert!(m.map(&down).is_empty());
    assert!(m.map(&rec(51, AuditKind::Alert, AuditSeverity::Warning, "local", "model unavailable: x")).is_empty());
    // The per-issue records of the same failure are not messages of their own.
    let per_issue = AuditRecord {
        issue_id: Some(3),
        ..rec(52, AuditKind::Issue, AuditSeverity::Warning, "local", "analysis unavailable: connection refused")
    };
    assert!(m.map(&per_issue).is_empty());
    let works =
        AuditRecord { issue_id: Some(3), ..rec(53, AuditKind::Issue, AuditSeverity::Info, "local", "analysis: ok") };
    assert!(m.map(&works).is_empty());
    assert_eq!(one(&mut m, &down).kind, EventKind::AnalysisUnavailable);
}

#[test]
fn own_health_and_discovered_hosts() {
    let mut m = Mapper::new(None);
    let e = one(&mut m, &rec(60, AuditKind::Alert, AuditSeverity::Warning, "local", "systemd unavailable: no bus"));
    assert_eq!((e.kind, e.group_key.as_str()), (EventKind::SelfHealth, "self:systemd unavailable"));
    let dead = AuditRecord {
        subject: Some("notify:gotify".into()),
        ..rec(
            61,
            AuditKind::Alert,
            AuditSeverity::Warning,
            "local",
            "notification m-1 on channel gotify was not delivered",
        )
    };
    assert!(m.map(&dead).is_empty(), "an undelivered message is not sent through the channels again");
    let found = AuditRecord {
        subject: Some("host".into()),
        payload: json!({"source": "journal", "state": "discovered"}),
        ..rec(62, AuditKind::Config, AuditSeverity::Warning, "nas.lab", "discovered nas.lab in the journal: registered")
    };
    let e = one(&mut m, &found);
    assert_eq!((e.kind, e.group_key.as_str()), (EventKind::HostDiscovered, "host:nas.lab"));
    let configured = AuditRecord { payload: json!({"host": {}}), ..found };
    assert!(m.map(&configured).is_empty());
}

#[test]
fn requested_messages_manual_past_the_router_and_the_models_marked() {
    let mut m = Mapper::new(None);
    let manual = AuditRecord {
        payload: json!({"notification": {"kind": "manual", "title": "Backup", "message": "done", "priority": 8, "channel": "ntfy", "by": "uid:1000"}}),
        ..rec(70, AuditKind::Daemon, AuditSeverity::Notice, "local", "notification requested by uid:1000: Backup")
    };
    let out = m.map(&manual);
    let [Mapped::Manual(msg)] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!((msg.audit_id, msg.severity, msg.channel.as_deref()), (70, Severity::Critical, Some("ntfy")));
    assert_eq!((msg.title.as_str(), msg.message.as_str(), msg.by.as_str()), ("Backup", "done", "uid:1000"));
    let model = AuditRecord {
        payload: json!({"notification": {"kind": "model", "title": "Disk", "message": "filling", "priority": 2, "why": "trend"}}),
        ..rec(71, AuditKind::Daemon, AuditSeverity::Notice, "local", "notification by the model: Disk")
    };
    let e = one(&mut m, &model);
    assert_eq!((e.kind, e.severity, e.title.as_str()), (EventKind::Model, Severity::Info, "[model] Disk"));
    assert!(e.body.contains("Written by the model: trend"), "{}", e.body);
    assert!(m.map(&rec(72, AuditKind::Daemon, AuditSeverity::Info, "local", "daemon started")).is_empty());
    assert_eq!(severity_of_priority(0), Severity::Info);
    assert_eq!(severity_of_priority(5), Severity::Warning);
    assert_eq!(severity_of_priority(10), Severity::Critical);
}
