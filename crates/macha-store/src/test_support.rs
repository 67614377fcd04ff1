//! Fixtures shared by the unit tests: a store in a fresh temporary directory and sample rows.

use crate::{AuditKind, NewAction, NewApproval, NewAudit, NewIssue, Severity, Store};
use macha_core::Timestamp;

/// A store in a new temporary directory, as `macha.db`. Keep the directory alive while using it.
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("macha.db")).unwrap();
    (dir, store)
}

pub(crate) fn audit(ts: i64, kind: AuditKind, severity: Severity) -> NewAudit {
    NewAudit::new(Timestamp(ts), kind, severity, "local", "test record")
}

/// A pending restart of nginx requested at `at`, expiring `ttl` ms later.
pub(crate) fn new_approval(at: i64, ttl: i64) -> NewApproval {
    NewApproval {
        host: "local".to_owned(),
        action: serde_json::json!({"kind": "restart_unit", "host": "local", "unit": "nginx.service"}),
        decision: serde_json::json!({"verdict": "approval", "risk": "medium", "reason": "autonomy level suggest"}),
        reason: "nginx.service failed".to_owned(),
        requested_by: "macha".to_owned(),
        requested_at: Timestamp(at),
        expires_at: Timestamp(at + ttl),
        correlation_id: format!("corr-{at}"),
        issue_id: None,
    }
}

/// A failed-unit issue on the local host.
pub(crate) fn new_issue(unit: &str, at: i64) -> NewIssue {
    NewIssue {
        host: "local".to_owned(),
        check_name: "unit_failed".to_owned(),
        subject: unit.to_owned(),
        severity: Severity::Error,
        summary: format!("{unit} failed"),
        details: serde_json::json!({"result": "exit-code"}),
        seen_at: Timestamp(at),
    }
}

pub(crate) fn new_action(target: &str, at: i64) -> NewAction {
    NewAction {
        correlation_id: format!("corr-{at}"),
        ts_started: Timestamp(at),
        host: "local".to_owned(),
        kind: "restart_unit".to_owned(),
        target: target.to_owned(),
        approval_id: None,
        issue_id: None,
    }
}
