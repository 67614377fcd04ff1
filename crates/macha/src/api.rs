//! The local API's types and client, from `macha-api` (the one definition of the wire format).
//!
//! Authorisation is by the peer's kernel-reported credentials (`SO_PEERCRED`), never by anything
//! the client sends: root and members of the configured admin group may change state (approve,
//! reject, resolve, close); everyone else may read. Every denial is audited. What the daemon
//! answers is converted from store rows and engine types in [`crate::wire`].

pub use macha_api::*;
