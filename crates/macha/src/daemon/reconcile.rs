//! The daemon's part of settling deployments it could not finish: at start, the deployments the
//! engine resumed (approved ones a restart cut off) are carried out; on every tick, each recorded
//! deployment still `unknown` (or cut off and not resumed) is reconciled from its host, at most one
//! at a time per deployment and once per [`RETRY`], until [`GIVE_UP`] after its timer's deadline,
//! and what was found is recorded by the engine
//! thread (`crate::deployments::record`).

use super::Shared;
use super::engine_thread::EngineHandle;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often one unsettled deployment is read again.
pub const RETRY: Duration = Duration::from_secs(30);
/// How long after its timer's deadline an unsettled deployment is still read.
pub const GIVE_UP: Duration = Duration::from_secs(86_400);

/// When each unsettled deployment was last tried (its reconciliation may still be running).
static TRIED: Mutex<BTreeMap<String, Instant>> = Mutex::new(BTreeMap::new());

/// At start: the deployments the engine resumed run now.
pub(super) fn start(shared: &Arc<Shared>, engine: &EngineHandle) {
    let s = Arc::clone(shared);
    engine.post("resume deployments", move |e| {
        let work = e.take_resumed();
        if !work.is_empty() {
            tracing::info!(count = work.len(), "resuming deployments a restart cut off");
        }
        s.spawn_work(work);
    });
}

/// On a tick: reconcile each unsettled deployment that is due.
pub(super) fn tick(shared: &Arc<Shared>, engine: &EngineHandle) {
    let Some(dir) = shared.executor.deploy_journal().map(std::path::Path::to_path_buf) else { return };
    let s = Arc::clone(shared);
    let engine = engine.clone();
    shared.tracker.spawn(async move {
        let records = tokio::task::spawn_blocking(move || macha_exec::journal::all(&dir)).await.unwrap_or_default();
        let run = macha_exec::journal::run_id();
        for record in records {
            // A deployment of this run without a final state is still being carried out here.
            let cut_off = record.final_state.is_none() && record.run != run;
            if !(cut_off || record.final_state == Some(macha_deploy::Final::Unknown)) {
                continue;
            }
            // A deployment still unknown a day after its timer's deadline is not read again.
            if crate::now() > record.timer_due().plus(GIVE_UP) {
                continue;
            }
            let id = record.deploy.to_string();
            {
                let mut tried = super::lock(&TRIED);
                if tried.get(&id).is_some_and(|t| t.elapsed() < RETRY) {
                    continue;
                }
                tried.insert(id.clone(), Instant::now());
            }
            let s = Arc::clone(&s);
            let engine = engine.clone();
            s.tracker.clone().spawn(async move {
                let before = record.notes.last().cloned();
                let r = s.executor.reconcile(record).await;
                let changed = r.final_state.is_some() || before.as_deref() != Some(r.how.as_str());
                tracing::info!(deploy = %r.record.deploy, host = %r.record.host,
                    settled = r.final_state.is_some(), "deployment reconciliation: {}", r.how);
                engine.post("deployment reconciled", move |e| {
                    if let Err(err) = crate::deployments::record(e, &r, changed, crate::now()) {
                        tracing::error!("recording a reconciliation failed: {err:#}");
                    }
                });
            });
        }
    });
}
