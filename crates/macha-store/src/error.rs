//! The one error type of the store.
//!
//! Messages name the database file or the row they are about and end without a period, so that the
//! CLI can print them as they are.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory that should hold the database file is missing. The store never creates
    /// directories: that is the job of the NixOS module (`StateDirectory=`).
    #[error("cannot create database {path}: directory {dir} does not exist")]
    MissingDirectory { path: PathBuf, dir: PathBuf },

    /// The database file could not be created or opened.
    #[error("cannot open database {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// The file exists but is not an SQLite database (garbage, encrypted, or cut off inside its header).
    #[error("{path} is not an SQLite database: {reason}")]
    NotADatabase { path: PathBuf, reason: String },

    /// The file is shorter than its own header says: it was truncated (a partial copy, a full disk).
    #[error("database {path} is truncated: its header claims {expected} bytes but the file has {actual}")]
    Truncated { path: PathBuf, expected: u64, actual: u64 },

    /// SQLite found the file damaged.
    #[error("database {path} is corrupt: {source}")]
    Corrupt { path: PathBuf, source: rusqlite::Error },

    /// The database was written by a newer Macha; opening it with this build could damage it.
    #[error(
        "database {path} has schema version {found}, newer than the {supported} this build knows; refusing to open it with an older Macha"
    )]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },

    /// A read-only open found a schema older than this build needs.
    #[error(
        "database {path} has schema version {found}, this build needs {supported}; let the daemon open it once to migrate it"
    )]
    OutdatedSchema { path: PathBuf, found: i64, supported: i64 },

    /// A migration failed; its transaction was rolled back and the schema is still at `version - 1`.
    #[error("migration to schema version {version} of {path} failed: {source}")]
    Migration { path: PathBuf, version: i64, source: rusqlite::Error },

    /// A guarded transition found the row in another state than the caller expected; nothing changed.
    #[error("{entity} {id} is {actual}, not {expected} as expected; nothing changed")]
    Conflict { entity: &'static str, id: i64, expected: String, actual: String },

    /// No row with that id.
    #[error("{entity} {id} does not exist")]
    NotFound { entity: &'static str, id: i64 },

    /// The transition is not allowed by the lifecycle, whatever the current state is.
    #[error("{entity} {id} cannot go from {from} to {to}")]
    IllegalTransition { entity: &'static str, id: i64, from: String, to: String },

    /// A pending approval past its expiry cannot be approved any more.
    #[error("approval {id} expired at {expires_at} and can no longer be approved")]
    ApprovalExpired { id: i64, expires_at: macha_core::Timestamp },

    /// At most one issue per fingerprint may be open, acting or resolved.
    #[error("issue {id} is already active for fingerprint {fingerprint}")]
    ActiveIssueExists { fingerprint: String, id: i64 },

    /// The caller passed a value the store refuses to write.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },

    /// A JSON value could not be encoded.
    #[error("cannot encode JSON for {what}: {source}")]
    Json { what: &'static str, source: serde_json::Error },

    /// Any other SQLite error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The result type of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
