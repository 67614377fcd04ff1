//! Prometheus at the daemon's edge (docs/metrics.md, decision 0024): starts the `/metrics` server
//! and the textfile writer when `prometheus.enable` is set, and turns what the daemon already
//! has (a cycle's snapshot, the store's open issues, an outcome, a model request) into values of
//! `macha-prom`'s registry. Each hook in the daemon is one call here; every one is a no-op when
//! metrics are off.

use crate::config::Config;
use macha_core::Action;
use macha_core::snapshot::Snapshot;
use macha_prom::{ActionOutcomeClass, HostSample, Limits, Metrics};
use macha_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Woken after each cycle: the textfile writer renders then.
static CYCLE_DONE: Notify = Notify::const_new();

/// The textfile is written at most this often (cycles of a fleet come in bursts).
const TEXTFILE_MIN_GAP: Duration = Duration::from_secs(1);

fn now_unix_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Installs the registry and starts the server and the textfile writer, as configured. An
/// address that cannot be bound is an error (the daemon alerts and runs on without it).
pub fn start(config: &Config, tracker: &TaskTracker, stop: &CancellationToken) -> anyhow::Result<()> {
    if !config.prometheus.enable {
        return Ok(());
    }
    let limits = Limits {
        max_hosts: config.prometheus.max_hosts,
        max_mounts: config.prometheus.max_mounts,
        ..Limits::default()
    };
    let metrics = Arc::new(Metrics::new(limits, config.check_interval, now_unix_secs()));
    if !macha_prom::install(Arc::clone(&metrics)) {
        anyhow::bail!("the metrics registry was installed already");
    }
    if let Some(addr) = config.prometheus.listen {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| anyhow::format_err!("prometheus.listen = {addr}: {e}"))?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        tracker.spawn(macha_prom::server::serve(listener, Arc::clone(&metrics), stop.clone()));
    }
    if let Some(dir) = &config.prometheus.textfile {
        tracker.spawn(textfile(dir.clone(), metrics, stop.clone()));
    }
    Ok(())
}

/// Writes `<dir>/macha.prom` after each cycle (at most once a second), off the engine thread.
async fn textfile(dir: PathBuf, metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = CYCLE_DONE.notified() => {}
        }
        let m = Arc::clone(&metrics);
        let d = dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            macha_prom::textfile::write_atomic(&d, &m.render_text(now_unix_secs()))
        })
        .await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("prometheus.textfile: writing {}: {e}", dir.display()),
            Err(e) => tracing::warn!("prometheus.textfile: the writer failed: {e}"),
        }
        tokio::time::sleep(TEXTFILE_MIN_GAP).await;
    }
}

/// A host's cycle was evaluated (`started` when its evaluation began): its sample, its open
/// issues by severity, and a wake-up for the textfile.
pub fn after_cycle(store: &Store, snapshot: &Snapshot, started: Instant) {
    macha_prom::publish(|m| {
        let took = Duration::from_micros(snapshot.collect_micros) + started.elapsed();
        let host = snapshot.host.as_str();
        m.host(host, &HostSample::of(snapshot, took));
        match store.open_issue_counts(host) {
            Ok(counts) => {
                let counts: Vec<(&str, u64)> = counts.iter().map(|(s, n)| (s.as_str(), *n)).collect();
                m.open_issues(host, &counts);
            }
            Err(e) => tracing::debug!("open issues of {host} for the metrics: {e}"),
        }
        CYCLE_DONE.notify_one();
    });
}

/// An executed action ended; a deployment also counts by its final state.
pub fn action_finished(action: &Action, succeeded: bool, verified: bool, detail: &str) {
    macha_prom::publish(|m| {
        m.action(action.kind(), ActionOutcomeClass::of(succeeded, verified));
        if matches!(action, Action::NixosSwitch { .. }) {
            m.deployment(deployment_state(detail));
        }
    });
}

/// A deployment's final state from its outcome's detail (`<host>: <final state>…`).
fn deployment_state(detail: &str) -> &'static str {
    let after = detail.split_once(": ").map_or(detail, |(_, r)| r);
    use macha_deploy::Final;
    for (f, label) in [
        (Final::Succeeded, "succeeded"),
        (Final::RollbackFailed, "rollback_failed"),
        (Final::RolledBack, "rolled_back"),
        (Final::Unknown, "unknown"),
    ] {
        if after.starts_with(f.as_str()) {
            return label;
        }
    }
    "refused"
}

/// A request to the model ended after `took`.
pub fn model_request(took: Duration, answered: bool, prompt_tokens: u64, completion_tokens: u64) {
    macha_prom::publish(|m| m.model_request(took, answered, prompt_tokens, completion_tokens));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_states_are_read_from_the_detail() {
        assert_eq!(deployment_state("c1: succeeded (generation 43)"), "succeeded");
        assert_eq!(deployment_state("c1: rolled back: the health check failed"), "rolled_back");
        assert_eq!(deployment_state("c1: rollback failed"), "rollback_failed");
        assert_eq!(deployment_state("not permitted"), "refused");
    }
}
