//! Bounds on what the store keeps: size caps applied when records are written, and
//! [`Store::maintain`], which downsamples and deletes what has aged out in bounded batches.
//!
//! What is bounded, by default (docs/decisions/0005-bounded-history-and-audit-retention.md):
//! - `history`: raw rows for a day, then one row per host and hour (see [`crate::history`]) until
//!   30 days, then deleted;
//! - metric history: raw samples for a day, 5-minute buckets for 30 days, 1-hour buckets for a
//!   year (see [`crate::metrics`]);
//! - `prompts`: 30 days, each request, response and error cut to 256 KiB (`cut = 1`, with the
//!   original sizes recorded); the deletion goes through the retention horizon the schema's
//!   trigger checks, which only moves forward;
//! - `output_cache`: a week, each entry cut to 16 MiB (the model pages through large tool
//!   outputs; a 10 MB log must stay whole);
//! - `conversations`: a conversation goes 30 days after its last turn; each turn is cut to
//!   256 KiB;
//! - `audit`: never by age; only the sanctioned prune of exported records
//!   ([`Store::prune_audit`]), whose deletions an interrupted prune left over are finished here.

use crate::db::Store;
use crate::error::Result;
use macha_core::Timestamp;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Write transactions one [`Store::maintain`] call may use at most; what is left waits for the
/// next call.
pub const MAINTAIN_MAX_TRANSACTIONS: u32 = 24;

/// Transactions (of 10,000 records each) one call spends on an unfinished prune.
const AUDIT_PRUNE_BATCHES: u32 = 8;

/// Rows deleted per transaction from tables with small rows.
const SMALL_BATCH: i64 = 5_000;

/// Rows deleted per transaction from tables whose rows may be large (prompts, cached outputs).
const LARGE_BATCH: i64 = 200;

/// Conversations deleted per transaction.
const CONVERSATION_BATCH: i64 = 100;

/// Retention periods and size caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Raw history rows are kept this long (`history.raw_retention`, default 1 day).
    pub raw_retention: Duration,
    /// Older history rows are folded into one row per host and bucket of this width
    /// (`history.downsample`, default 1 hour).
    pub downsample: Duration,
    /// History rows older than this are deleted (`history.retention`, default 30 days).
    pub history_retention: Duration,
    /// Prompts older than this are deleted; conversations go this long after their last turn
    /// (`history.prompts_retention`, default 30 days).
    pub prompts_retention: Duration,
    /// Cached tool outputs are kept this long (default a week).
    pub output_cache_retention: Duration,
    /// The largest prompt request, model answer, error, conversation turn or request result
    /// stored; longer texts are cut (`llm.answer_max_bytes`, default 256 KiB).
    pub answer_max_bytes: usize,
    /// The largest cached tool output stored (default 16 MiB).
    pub output_max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            raw_retention: Duration::from_secs(86_400),
            downsample: Duration::from_secs(3_600),
            history_retention: Duration::from_secs(30 * 86_400),
            prompts_retention: Duration::from_secs(30 * 86_400),
            output_cache_retention: crate::agent::CACHE_KEEP,
            answer_max_bytes: 256 * 1024,
            output_max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What one [`Store::maintain`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Raw history rows folded into downsampled rows.
    pub history_folded: u64,
    /// Buckets (of all hosts) folded.
    pub history_buckets: u64,
    pub history_deleted: u64,
    pub prompts_deleted: u64,
    pub output_cache_deleted: u64,
    pub conversation_turns_deleted: u64,
    /// Metric rows folded into the next tier, and hourly metric rows deleted past a year.
    pub metrics_folded: u64,
    pub metrics_deleted: u64,
    /// Audit records at or below the prune anchor deleted (an interrupted prune's rest).
    pub audit_pruned: u64,
    /// Write transactions used.
    pub transactions: u32,
    /// The transaction budget ran out with work left: call again.
    pub more: bool,
}

impl Maintenance {
    /// True when nothing was changed.
    pub fn is_idle(&self) -> bool {
        self.transactions == 0
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary, and
/// whether anything was cut.
pub(crate) fn cut_str(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// A JSON text of at most `max` bytes: `json` itself if it fits, else a JSON string holding the
/// longest prefix of `json` whose encoding fits. Returns the text and whether it was cut.
pub(crate) fn cut_json(json: String, max: usize) -> (String, bool) {
    if json.len() <= max {
        return (json, false);
    }
    let mut limit = max;
    loop {
        let (prefix, _) = cut_str(&json, limit);
        let encoded = serde_json::Value::String(prefix.to_owned()).to_string();
        if encoded.len() <= max || limit == 0 {
            return (encoded, true);
        }
        limit = limit.saturating_sub((encoded.len() - max).max(1));
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// The caps and retention periods in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets the caps and retention periods (the daemon's configuration).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Downsamples and deletes what has aged out at `now`, in transactions of bounded size (one
    /// history bucket of all hosts, or a few thousand rows, each), at most
    /// [`MAINTAIN_MAX_TRANSACTIONS`] of them per call. When nothing is due it only reads a few
    /// index entries and writes nothing.
    pub fn maintain(&mut self, now: Timestamp) -> Result<Maintenance> {
        let mut m = Maintenance::default();
        let limits = self.limits;
        let mut budget = MAINTAIN_MAX_TRANSACTIONS;

        // An interrupted prune's remaining records.
        if self.exists("SELECT 1 FROM audit WHERE id <= (SELECT max(upto_id) FROM audit_anchors) LIMIT 1", [])? {
            m.audit_pruned = self.delete_pruned(u64::from(AUDIT_PRUNE_BATCHES))?;
            m.transactions += AUDIT_PRUNE_BATCHES;
            budget -= AUDIT_PRUNE_BATCHES;
        }

        // Fold complete buckets older than the raw retention.
        let width = ms(limits.downsample).max(1_000);
        let cutoff = now.minus(limits.raw_retention).millis().div_euclid(width) * width;
        while budget > 0 {
            let oldest: Option<i64> =
                self.conn
                    .query_row("SELECT min(ts) FROM history WHERE span_ms = 0 AND ts < ?1", [cutoff], |r| r.get(0))?;
            let Some(oldest) = oldest else { break };
            let start = oldest.div_euclid(width) * width;
            let tx = self.write_txn()?;
            m.history_folded += crate::history::fold_bucket(&tx, start, start + width)?;
            tx.commit()?;
            m.history_buckets += 1;
            m.transactions += 1;
            budget -= 1;
        }

        let history_horizon = now.minus(limits.history_retention).millis();
        m.history_deleted = self.delete_batches(
            &mut budget,
            &mut m.transactions,
            "SELECT 1 FROM history WHERE ts < ?1 LIMIT 1",
            "DELETE FROM history WHERE id IN (SELECT id FROM history WHERE ts < ?1 LIMIT ?2)",
            history_horizon,
            SMALL_BATCH,
            None,
        )?;

        // Metric history: raw samples into 5-minute buckets after a day, those into hours after
        // 30 days, hours deleted after a year (crate::metrics).
        (m.metrics_folded, m.metrics_deleted) = self.maintain_metrics(now, &mut budget, &mut m.transactions)?;

        // The prompt log: move the horizon the delete trigger checks, then delete below it.
        let prompts_horizon = now.minus(limits.prompts_retention).millis();
        m.prompts_deleted = self.delete_batches(
            &mut budget,
            &mut m.transactions,
            "SELECT 1 FROM prompts WHERE ts < ?1 LIMIT 1",
            "DELETE FROM prompts WHERE id IN (SELECT id FROM prompts WHERE ts < ?1 LIMIT ?2)",
            prompts_horizon,
            LARGE_BATCH,
            Some("UPDATE retention SET horizon = max(horizon, ?1) WHERE name = 'prompts'"),
        )?;

        let cache_horizon = now.minus(limits.output_cache_retention).millis();
        m.output_cache_deleted = self.delete_batches(
            &mut budget,
            &mut m.transactions,
            "SELECT 1 FROM output_cache WHERE ts < ?1 LIMIT 1",
            "DELETE FROM output_cache WHERE id IN (SELECT id FROM output_cache WHERE ts < ?1 LIMIT ?2)",
            cache_horizon,
            LARGE_BATCH,
            None,
        )?;

        // A conversation goes as a whole, once its newest turn is past the retention.
        m.conversation_turns_deleted = self.delete_batches(
            &mut budget,
            &mut m.transactions,
            "SELECT 1 FROM conversations GROUP BY conversation HAVING max(ts) < ?1 LIMIT 1",
            "DELETE FROM conversations WHERE conversation IN (SELECT conversation FROM conversations \
             GROUP BY conversation HAVING max(ts) < ?1 LIMIT ?2)",
            prompts_horizon,
            CONVERSATION_BATCH,
            None,
        )?;

        m.more = budget == 0;
        Ok(m)
    }

    fn exists<P: rusqlite::Params>(&self, sql: &str, params: P) -> Result<bool> {
        Ok(self.conn.prepare_cached(sql)?.query_row(params, |_| Ok(())).optional()?.is_some())
    }

    /// Runs `delete` (with the horizon and the batch size) in its own transactions while `probe`
    /// finds rows and the budget lasts; `before` runs first in each transaction. Returns the rows
    /// deleted.
    #[allow(clippy::too_many_arguments)]
    fn delete_batches(
        &mut self,
        budget: &mut u32,
        transactions: &mut u32,
        probe: &str,
        delete: &str,
        horizon: i64,
        batch: i64,
        before: Option<&str>,
    ) -> Result<u64> {
        let mut deleted = 0u64;
        while *budget > 0 && self.exists(probe, [horizon])? {
            let tx = self.write_txn()?;
            if let Some(sql) = before {
                tx.prepare_cached(sql)?.execute([horizon])?;
            }
            let n = tx.prepare_cached(delete)?.execute([horizon, batch])?;
            tx.commit()?;
            deleted += u64::try_from(n).unwrap_or(0);
            *budget -= 1;
            *transactions += 1;
            if n == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}
