//! The pure parsers both observers share: the local observer (`macha-observe`, reading this
//! machine's files) and the remote probe (`macha-ssh`, reading command output from another host).
//!
//! Architecture invariant: text in, data out. This crate performs no IO, spawns nothing, reads no
//! clock and depends on nothing that does (no tokio, no D-Bus); `tests/boundaries.rs` checks its
//! manifest. A parser never panics on hostile input: what cannot be used is an `Err` that says why.
//!
//! os-release is parsed by [`macha_core::fleet::parse_os_release`], next to the operating-system
//! detection that uses it.

pub mod cpuinfo;
pub mod journal;
pub mod mounts;
pub mod nix;
pub mod procfs;
pub mod tcp;
