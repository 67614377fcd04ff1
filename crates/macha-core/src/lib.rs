//! The sans-IO core of Macha.
//!
//! Everything that decides anything lives here: the domain types, the deterministic checks that turn a
//! [`snapshot::Snapshot`] into [`checks::Finding`]s, the issue lifecycle, the typed action schema, the
//! one policy gate ([`policy::decide`]) and the flap guard.
//!
//! Architecture invariant: this crate performs no IO, spawns nothing, and never reads the clock. Time
//! is always a parameter ([`time::Timestamp`] for the wall clock, [`time::Mono`] for intervals). That is what lets every safety rule be tested
//! exhaustively without sockets, processes or a runtime.

pub mod action;
pub mod approval;
pub mod checks;
pub mod command;
pub mod flap;
pub mod fleet;
pub mod fleet_map;
pub mod idle;
pub mod issue;
pub mod journal;
pub mod names;
pub mod policy;
pub mod snapshot;
pub mod time;

pub use action::{Action, ActionKind, ProposedAction};
pub use names::{HostName, StorePath, UnitName};
pub use time::{Mono, Now, Timestamp};
