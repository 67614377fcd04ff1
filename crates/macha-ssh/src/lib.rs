//! The one SSH module of Macha: every remote command and every remote file read goes through it.
//!
//! - [`pool::SshPool`]: one multiplexed master per host (OpenSSH ControlMaster, spoken to with the
//!   native mux protocol), reused across cycles; strict host keys against Macha's own
//!   known_hosts; at most 8 channels per host; local deadlines behind remote `timeout -k`.
//! - [`remote`]: targets, the programs found on a host, and [`remote::RemoteCommand`]: an absolute
//!   program plus argv (from `macha_core::command`), optionally under `sudo -n`, always wrapped in
//!   `timeout -k`.
//! - [`quote`]: the quoting of that argv for the remote shell (the only text that reaches it).
//! - [`known_hosts`] and [`keyscan`]: pinned host keys, fingerprints, and scanning a host's keys
//!   for a person to pin.
//! - [`probe`]: remote observation into the same `Snapshot` as local observation, and the first
//!   contact (operating system, hardware, running services).
//!
//! Architecture invariant: one SSH command builder. Nothing else in Macha spawns `ssh` or builds
//! a remote command line; text from logs, the model or configuration never becomes one.

pub mod error;
pub mod keyscan;
pub mod known_hosts;
pub mod pool;
pub mod probe;
pub mod quote;
pub mod remote;

pub use error::SshError;
pub use known_hosts::{HostKey, KnownHosts};
pub use pool::{NixTransport, PoolStats, RemoteOutput, SshPool, SshSettings};
pub use probe::{HostMemory, Identity, ProbeDocument, ProbeSpec};
pub use remote::{RemoteCommand, RemoteTools, Target};
