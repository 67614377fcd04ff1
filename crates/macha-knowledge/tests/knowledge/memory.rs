//! The memory of incidents on a real database.

use crate::store;
use macha_core::Timestamp;
use macha_core::issue::IssueState;
use macha_knowledge::memory;
use macha_store::{AuditKind, IssueChanges, Lifecycle, NewAction, NewAudit, NewIssue, Severity, Store};

fn audit(ts: i64) -> NewAudit {
    NewAudit::new(Timestamp(ts), AuditKind::Issue, Severity::Info, "h", "test")
}

fn issue(s: &mut Store, host: &str, check: &str, subject: &str, summary: &str, ts: i64) -> i64 {
    let new = NewIssue {
        host: host.into(),
        check_name: check.into(),
        subject: subject.into(),
        severity: Severity::Warning,
        summary: summary.into(),
        details: serde_json::json!({}),
        seen_at: Timestamp(ts),
    };
    s.insert_issue(&new, &audit(ts)).unwrap().id
}

fn resolve_with(s: &mut Store, id: i64, kind: &str, target: &str, ok: bool, ts: i64) {
    let a = s
        .record_action_started(
            &NewAction {
                correlation_id: format!("c{id}"),
                ts_started: Timestamp(ts),
                host: "h".into(),
                kind: kind.into(),
                target: target.into(),
                approval_id: None,
                issue_id: Some(id),
            },
            &audit(ts),
        )
        .unwrap();
    s.record_action_finished(a, ok, None, Timestamp(ts + 1), &audit(ts + 1)).unwrap();
    if ok {
        let r = s.get_issue(id).unwrap().unwrap();
        let l = Lifecycle { state: IssueState::Resolved, since: Timestamp(ts + 2), ..r.lifecycle() };
        s.update_issue(id, r.state, &l, &IssueChanges::default(), &audit(ts + 2)).unwrap();
    }
}

#[test]
fn same_check_and_subject_then_similar_text_with_verified_resolutions() {
    let (_dir, mut s) = store();
    let same = issue(&mut s, "web2", "unit_failed", "nginx.service", "nginx.service failed: exit code 1", 1_000);
    resolve_with(&mut s, same, "restart_unit", "web2/restart_unit/nginx.service", true, 2_000);
    let text =
        issue(&mut s, "web1", "unit_failed", "caddy.service", "caddy.service failed: address already in use", 3_000);
    resolve_with(&mut s, text, "restart_unit", "web1/restart_unit/caddy.service", false, 4_000);
    let _unrelated = issue(&mut s, "db1", "disk_usage", "/var", "/var is 95 % full", 5_000);
    let current =
        issue(&mut s, "web1", "unit_failed", "nginx.service", "nginx.service failed: address already in use", 6_000);
    let similar = memory::similar_issues(&s, current, Timestamp(7_000), 5).unwrap();
    let ids: Vec<i64> = similar.iter().map(|x| x.id).collect();
    assert_eq!(ids.first(), Some(&same), "{similar:#?}");
    assert!(ids.contains(&text));
    assert!(!ids.contains(&current));
    assert!(similar[0].verified);
    assert_eq!(similar[0].resolutions, vec!["restart_unit web2/restart_unit/nginx.service".to_owned()]);
    let t = similar.iter().find(|x| x.id == text).unwrap();
    assert!(!t.verified, "its remediation failed");
    assert_eq!(t.why, "similar text");
    assert!(memory::render(&similar).contains("(verified)"));
    assert!(memory::similar_issues(&s, 999, Timestamp(0), 5).unwrap().is_empty());
}
