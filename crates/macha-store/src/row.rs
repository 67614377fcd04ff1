//! Small helpers for turning columns into domain values and back.
//!
//! Enumerations are stored as their `snake_case` names, timestamps as integer milliseconds and JSON
//! as text checked by `json_valid` in the schema.

use crate::error::{Result, StoreError};
use macha_core::Timestamp;
use rusqlite::Row;
use rusqlite::types::Type;

/// A column held a value the current code cannot interpret.
#[derive(Debug)]
struct BadValue(String);

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadValue {}

fn bad(idx: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(BadValue(msg)))
}

/// Reads a text column naming an enumeration value.
pub(crate) fn enum_col<T>(row: &Row<'_>, idx: usize, parse: impl Fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let raw: String = row.get(idx)?;
    parse(&raw).ok_or_else(|| bad(idx, format!("unknown value {raw:?}")))
}

/// Reads a JSON text column.
pub(crate) fn json_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<serde_json::Value> {
    let raw: String = row.get(idx)?;
    serde_json::from_str(&raw).map_err(|e| bad(idx, format!("invalid JSON: {e}")))
}

/// Reads an integer millisecond column.
pub(crate) fn ts_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    row.get(idx).map(Timestamp)
}

/// Reads a nullable integer millisecond column.
pub(crate) fn opt_ts_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    row.get::<_, Option<i64>>(idx).map(|v| v.map(Timestamp))
}

/// Encodes a JSON value for a text column.
pub(crate) fn to_json(what: &'static str, value: &serde_json::Value) -> Result<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Json { what, source })
}

/// Rejects an empty string where the schema needs a name.
pub(crate) fn non_empty(what: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(StoreError::Invalid { what, reason: "must not be empty".to_owned() });
    }
    Ok(())
}

/// `?, ?, ?` with `n` placeholders.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}
