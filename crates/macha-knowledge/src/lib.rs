//! What Macha knows beyond its checks, on the one SQLite database of `macha-store`; depends on
//! `macha-store` (and so `macha-core`) at most, never on `macha`.
//!
//! Configuration intelligence (docs/knowledge.md): the fleet's flake parsed with a real Nix
//! parser, chunked by attribute path and searched offline. Sans-IO where it decides: [`chunk`]
//! (parsing and chunking), [`layout`] (categories, secret paths, which hosts use which file),
//! [`redact`] and [`query`] (user text into a safe FTS5 query, reciprocal-rank fusion) are pure
//! functions over text; the IO is at the edges: [`index`] walks the flake and writes the store,
//! [`search`] reads it, [`read`] opens one file inside the flake. Hybrid search ([`embed`]):
//! an [`embed::Embedder`] turns texts into vectors (the local all-MiniLM-L6-v2 model with the
//! `embed-local` feature, `local`; a remote server in `macha`), stored incrementally and
//! fused with keyword results by reciprocal rank.
//!
//! What changed ([`changes`]): the flake's recent commits that touch a host's files and its last
//! deployment, parsed from `git log` by a pure parser.
//!
//! The knowledge base (docs/knowledge.md): entries that learn from verified remediations and
//! forget what stopped helping ([`kb`]), runbooks people write and the model follows
//! ([`runbooks`]), and the memory of past incidents ([`memory`]); the rules are pure functions.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod changes;
pub mod chunk;
pub mod embed;
pub mod evidence;
pub mod index;
pub mod kb;
pub mod layout;
#[cfg(feature = "embed-local")]
pub mod local;
pub mod memory;
pub mod query;
pub mod read;
pub mod redact;
pub mod runbooks;
pub mod search;

use std::path::PathBuf;

/// What can go wrong in indexing, searching and reading.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error(transparent)]
    Store(#[from] macha_store::StoreError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A read outside the flake, of a secret, or of something that is not a regular file.
    #[error("refused: {0}")]
    Refused(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, KnowledgeError>;
