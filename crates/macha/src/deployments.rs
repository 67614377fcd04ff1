//! Deployments after the fact: where their records are kept, and how a reconciliation (a
//! deployment that ended `unknown`, or that a restart of Macha cut off, settled later from its
//! host) is recorded — the approval's result says the final state and how it was reached
//! (`reconciled at …`), and the approval's trail has an entry for it. The judgement itself is
//! `macha_deploy::judge`; the reads on the host are `macha_exec::deploy`.

use crate::config::Config;
use crate::engine::Engine;
use macha_core::Timestamp;
use macha_exec::deploy::Reconciliation;
use macha_store::{AuditKind, NewAudit, Severity, StoreError};
use std::path::PathBuf;

/// The directory of the deployments' records (`macha_exec::journal`), private to the daemon.
pub fn journal_dir(config: &Config) -> PathBuf {
    config.state_dir.join("deployments")
}

/// Records a reconciliation against the deployment's approval: a final state reached becomes the
/// approval's result and an entry of its trail; a deployment still unknown gets a trail entry only
/// when what is known changed (`changed`), so a host that stays unreadable does not fill the trail.
pub fn record(engine: &mut Engine, r: &Reconciliation, changed: bool, now: Timestamp) -> anyhow::Result<()> {
    let Some(approval_id) = r.record.approval_id else { return Ok(()) };
    if r.final_state.is_none() && !changed {
        return Ok(());
    }
    let (severity, summary) = match &r.final_state {
        Some(f) => (
            if f.is_success() { Severity::Notice } else { Severity::Warning },
            format!("deployment {} on {} reconciled at {}: {f}: {}", r.record.deploy, r.record.host, r.at, r.how),
        ),
        None => (
            Severity::Warning,
            format!("deployment {} on {} still unknown at {}: {}", r.record.deploy, r.record.host, r.at, r.how),
        ),
    };
    let correlation = engine.store().get_approval(approval_id)?.map(|a| a.correlation_id);
    let mut audit = NewAudit::new(now, AuditKind::Approval, severity, r.record.host.as_str(), summary)
        .with_subject(format!("approval/{approval_id}"))
        .with_payload(serde_json::json!({
            "deploy": r.record.deploy, "final": r.final_state, "how": r.how, "reconciled_at": r.at,
        }));
    if let Some(c) = correlation {
        audit = audit.with_correlation_id(c);
    }
    let detail = r.final_state.as_ref().map(|_| r.detail());
    match engine.store_mut().record_reconciliation(approval_id, detail.as_deref(), now, &audit) {
        // The approval is not finished (a resumed deployment records its outcome itself).
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
