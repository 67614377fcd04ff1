//! The knowledge crate's integration tests, in one binary, on a real SQLite database: the seed
//! loaded twice, learnings merged and dropped, confidence after outcomes, import and export,
//! hostile search words, the memory of incidents, runbooks read from a directory, and the
//! configuration index over the sample fleet flake (`configs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod configs;
mod embed;
mod kb;
mod memory;
mod runbooks;

/// A fresh store in a temporary directory.
pub fn store() -> (tempfile::TempDir, macha_store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = macha_store::Store::open(dir.path().join("macha.db")).unwrap();
    (dir, store)
}
