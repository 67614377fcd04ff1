//! Local observation: turns `/proc`, `/sys` and the Nix profile links of this machine into the
//! sections of a [`macha_core::snapshot::Snapshot`].
//!
//! Architecture invariant: observation never sleeps to sample. Rates come from the difference
//! between two calls of a [`local::LocalObserver`], which keeps the previous counters.
//!
//! Architecture invariant: a section that cannot be read is `Unavailable` with a reason naming the
//! path and the OS error; it is never reported as zero or empty.
//!
//! The parsers live in `macha-parse` (text in, data out), shared with the remote probe of
//! `macha-ssh`; the modules here read the files and hand their text over.

pub mod error;
pub mod fs;
pub mod journal;
pub mod local;
pub mod nixinfo;
pub mod nvidia;
pub mod procfs;
pub mod sysfs;
pub mod systemd;

pub use error::ObserveError;
pub use local::{CpuSample, LocalObserver, ObserveConfig};
