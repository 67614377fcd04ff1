//! Macha: the daemon (orchestration, local API) and the multicall CLI.
//!
//! This crate is the only one that knows about the configuration file and process-level concerns
//! (signals, sd_notify, logging); the socket's wire format is `macha-api`, and [`wire`] is where
//! store rows and engine types become its types. Decisions are made in `macha-core`; this crate
//! carries them out and records them.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fleet;
pub mod logging;
pub mod observe;
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
