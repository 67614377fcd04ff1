//! Macha: the daemon (orchestration, local API) and the multicall CLI.
//!
//! This crate is the only one that knows about the configuration file and process-level concerns
//! (signals, sd_notify, logging); the socket's wire format is `macha-api`, and [`wire`] is where
//! store rows and engine types become its types. Decisions are made in `macha-core`; this crate
//! carries them out and records them.

pub mod agent;
pub mod api;
pub mod batch;
pub mod beneath;
pub mod changes;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deployments;
pub mod embedder;
pub mod engine;
pub mod fleet;
pub mod fleet_map;
pub mod hybrid;
pub mod knowledge;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod policy_inputs;
pub mod prom;
pub mod wire;

/// A new correlation id: ties together everything that happened because of one trigger.
pub fn correlation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The wall clock, as the core's time type. The only place the daemon reads the clock for records.
pub fn now() -> macha_core::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    macha_core::Timestamp::from_millis(ms)
}

/// The monotonic clock, as the core's time type: milliseconds since this process first asked. The
/// only place the daemon reads `Instant`; the flap guard measures its window with it.
pub fn mono_now() -> macha_core::Mono {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    macha_core::Mono::from_millis(i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX))
}

/// Both clocks, read together: `now` at the wall-clock time `wall` the caller already holds.
pub fn now_at(wall: macha_core::Timestamp) -> macha_core::Now {
    macha_core::Now::new(wall, mono_now())
}
