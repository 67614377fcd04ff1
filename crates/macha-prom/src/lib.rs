//! Macha's Prometheus metrics (docs/metrics.md, decision 0024).
//!
//! - `metrics.rs`: [`Metrics`], the shared registry with every family (`macha_` prefix, base
//!   units, HELP on each), which the daemon publishes into; the per-host series bounded.
//! - `label.rs`: [`SafeLabel`], label values from hosts escaped and cut.
//! - `text.rs`: OpenMetrics into the Prometheus text format 0.0.4.
//! - `server.rs`: the `/metrics` HTTP server.
//! - `textfile.rs`: `<dir>/macha.prom`, written atomically for node_exporter.
//!
//! The daemon installs one registry for the process ([`install`]); the places where events
//! already happen publish into it with [`publish`], a no-op when metrics are off. This crate
//! depends on `macha-core` for the names of what it counts, never on the daemon.

pub mod label;
mod metrics;
pub mod server;
pub mod text;
pub mod textfile;

pub use label::SafeLabel;
pub use metrics::{ActionOutcomeClass, HostSample, Limits, Metrics, SEVERITIES};

use std::sync::{Arc, OnceLock};

static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();

/// Makes `metrics` the process's registry; false when one was installed already (it stays).
pub fn install(metrics: Arc<Metrics>) -> bool {
    GLOBAL.set(metrics).is_ok()
}

/// The process's registry, when metrics are on.
pub fn installed() -> Option<&'static Arc<Metrics>> {
    GLOBAL.get()
}

/// Runs `f` on the process's registry; nothing when metrics are off.
pub fn publish(f: impl FnOnce(&Metrics)) {
    if let Some(m) = GLOBAL.get() {
        f(m);
    }
}
