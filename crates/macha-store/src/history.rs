//! Per-host snapshot history: one small row per host and cycle (status, finding count, what was
//! unavailable, and the key numbers of the snapshot), downsampled and then deleted by
//! [`Store::maintain`](crate::Store::maintain).
//!
//! History is not the audit trail: it records what was observed, not what Macha decided or did,
//! and it is bounded. Raw rows are kept for [`Limits::raw_retention`](crate::Limits); older ones
//! are folded into one row per host and [`Limits::downsample`](crate::Limits) bucket: the **last**
//! row of the bucket (its numbers, unavailable sections and unknown checks), with the **worst**
//! status and the **largest** finding count of the bucket and the number of rows folded into it.
//! Rows older than [`Limits::history_retention`](crate::Limits) are deleted.

use crate::db::Store;
use crate::error::Result;
use crate::error::StoreError;
use crate::row::{enum_col, json_col, non_empty, ts_col};
use macha_core::Timestamp;
use macha_core::checks::{Evaluation, Verdict};
use macha_core::snapshot::Snapshot;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest unavailable reason or unknown-check reason kept in a history row, in bytes.
pub const REASON_MAX: usize = 160;

/// The most filesystems kept in a history row (the fullest first).
pub const FILESYSTEMS_MAX: usize = 16;

/// The state of a host at one cycle, as `macha check` reports it; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostStatus {
    /// No finding and every source observed.
    Healthy,
    /// No finding, but some source could not be observed.
    Unknown,
    /// At least one finding, none critical.
    Warning,
    Critical,
}

impl HostStatus {
    pub const ALL: [HostStatus; 4] =
        [HostStatus::Healthy, HostStatus::Unknown, HostStatus::Warning, HostStatus::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            HostStatus::Healthy => "healthy",
            HostStatus::Unknown => "unknown",
            HostStatus::Warning => "warning",
            HostStatus::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<HostStatus> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One filesystem's numbers; stored as the array `[mount, used, avail, inodes_used, inodes_free]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FsTuple", into = "FsTuple")]
pub struct FsMetrics {
    /// Mount point.
    pub mount: String,
    pub used_bytes: u64,
    pub avail_bytes: u64,
    pub inodes_used: u64,
    pub inodes_free: u64,
}

type FsTuple = (String, u64, u64, u64, u64);

impl From<FsTuple> for FsMetrics {
    fn from((mount, used_bytes, avail_bytes, inodes_used, inodes_free): FsTuple) -> FsMetrics {
        FsMetrics { mount, used_bytes, avail_bytes, inodes_used, inodes_free }
    }
}

impl From<FsMetrics> for FsTuple {
    fn from(f: FsMetrics) -> FsTuple {
        (f.mount, f.used_bytes, f.avail_bytes, f.inodes_used, f.inodes_free)
    }
}

/// The key numbers of a snapshot, for trends and metrics. Absent sections are absent here. The
/// stored JSON uses short keys (`cpu`, `mem_used`, `mem_total`, `load`, `fs`, `units`,
/// `units_failed`, `nix_store`) to keep a row small.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Busy share of all CPUs, 0-100.
    #[serde(rename = "cpu", default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    #[serde(rename = "mem_used", default, skip_serializing_if = "Option::is_none")]
    pub mem_used_bytes: Option<u64>,
    #[serde(rename = "mem_total", default, skip_serializing_if = "Option::is_none")]
    pub mem_total_bytes: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    #[serde(rename = "fs", default, skip_serializing_if = "Vec::is_empty")]
    pub filesystems: Vec<FsMetrics>,
    #[serde(rename = "units", default, skip_serializing_if = "Option::is_none")]
    pub units_total: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_failed: Option<u32>,
    /// Bytes used on the filesystem of `/nix/store`.
    #[serde(rename = "nix_store", default, skip_serializing_if = "Option::is_none")]
    pub nix_store_bytes: Option<u64>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

impl Metrics {
    /// The numbers of `snap`: at most [`FILESYSTEMS_MAX`] filesystems (the fullest first),
    /// fractions rounded to two decimals.
    pub fn from_snapshot(snap: &Snapshot) -> Metrics {
        let mut filesystems: Vec<FsMetrics> = snap
            .filesystems
            .data()
            .map(|fs| {
                fs.iter()
                    .map(|f| FsMetrics {
                        mount: f.mount_point.clone(),
                        used_bytes: f.total_bytes.saturating_sub(f.available_bytes),
                        avail_bytes: f.available_bytes,
                        inodes_used: f.total_inodes.saturating_sub(f.free_inodes),
                        inodes_free: f.free_inodes,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fullness = |f: &FsMetrics| f.used_bytes as f64 / (f.used_bytes + f.avail_bytes).max(1) as f64;
        filesystems.sort_by(|a, b| fullness(b).total_cmp(&fullness(a)).then_with(|| a.mount.cmp(&b.mount)));
        filesystems.truncate(FILESYSTEMS_MAX);
        Metrics {
            cpu_percent: snap.cpu.data().and_then(|c| c.usage_percent).map(round2),
            mem_used_bytes: snap.memory.data().map(|m| m.total_bytes.saturating_sub(m.available_bytes)),
            mem_total_bytes: snap.memory.data().map(|m| m.total_bytes),
            load: snap.load.data().map(|l| [round2(l.one), round2(l.five), round2(l.fifteen)]),
            filesystems,
            units_total: snap.units.data().map(|u| u.total),
            units_failed: snap.units.data().map(|u| u32::try_from(u.failed.len()).unwrap_or(u32::MAX)),
            nix_store_bytes: snap.nix.data().map(|n| n.store_used_bytes()),
        }
    }
}

/// Name → reason: the unavailable sections, or the checks that could not run.
pub type Reasons = BTreeMap<String, String>;

/// A reason of at most [`REASON_MAX`] bytes that keeps its start and its end (where the verdict
/// usually is: "`<long command>` did not finish within 5000 ms"), the middle replaced by `…`.
fn cut_reason(s: &str) -> String {
    if s.len() <= REASON_MAX {
        return s.to_owned();
    }
    let head = crate::retention::cut_str(s, REASON_MAX / 3).0;
    let mut tail_start = s.len() - (REASON_MAX - head.len() - '…'.len_utf8());
    while !s.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!("{head}…{}", &s[tail_start..])
}

/// A history row to write: one host at one cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewHistory {
    pub host: String,
    pub ts: Timestamp,
    pub status: HostStatus,
    pub findings: u32,
    /// Section → why it could not be observed.
    pub unavailable: Reasons,
    /// Check → why it could not run.
    pub unknown_checks: Reasons,
    pub collect_micros: u64,
    pub metrics: Metrics,
}

impl NewHistory {
    /// The summary of one cycle: the status `macha check` would report
    /// ([`macha_core::checks::Verdict`]), the counts, the reasons (each cut to [`REASON_MAX`] bytes) and the numbers.
    pub fn from_snapshot(snap: &Snapshot, ev: &Evaluation) -> NewHistory {
        let unavailable: Reasons = snap
            .unavailable_sections()
            .into_iter()
            .map(|(name, reason)| (name.to_owned(), cut_reason(reason)))
            .collect();
        let status = match Verdict::of(snap, ev.findings()) {
            Verdict::Critical => HostStatus::Critical,
            Verdict::Warning => HostStatus::Warning,
            Verdict::Unknown => HostStatus::Unknown,
            Verdict::Healthy => HostStatus::Healthy,
        };
        NewHistory {
            host: snap.host.as_str().to_owned(),
            ts: snap.taken_at,
            status,
            findings: u32::try_from(ev.findings().count()).unwrap_or(u32::MAX),
            unavailable,
            unknown_checks: ev.unknown().map(|(c, r)| (c.as_str().to_owned(), cut_reason(r))).collect(),
            collect_micros: snap.collect_micros,
            metrics: Metrics::from_snapshot(snap),
        }
    }
}

/// A stored history row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub id: i64,
    /// 0 for a raw row; the bucket width in milliseconds for a downsampled one.
    pub span_ms: i64,
    /// How many raw rows this row stands for.
    pub samples: u32,
    #[serde(flatten)]
    pub entry: NewHistory,
}

/// Filters for [`Store::query_history`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub host: Option<String>,
    /// Rows with `ts >= since`.
    pub since: Option<Timestamp>,
    /// Rows with `ts < until`.
    pub until: Option<Timestamp>,
    /// The newest `limit` rows (returned oldest first).
    pub limit: Option<u32>,
}

const HISTORY_COLUMNS: &str =
    "id, host, ts, span_ms, samples, status, findings, unavailable, unknown_checks, collect_micros, metrics";

fn history_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<HistoryRecord> {
    let list =
        |idx| -> rusqlite::Result<Reasons> { Ok(serde_json::from_value(json_col(row, idx)?).unwrap_or_default()) };
    Ok(HistoryRecord {
        id: row.get(0)?,
        span_ms: row.get(3)?,
        samples: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(u32::MAX),
        entry: NewHistory {
            host: row.get(1)?,
            ts: ts_col(row, 2)?,
            status: enum_col(row, 5, HostStatus::parse)?,
            findings: u32::try_from(row.get::<_, i64>(6)?).unwrap_or(u32::MAX),
            unavailable: list(7)?,
            unknown_checks: list(8)?,
            collect_micros: u64::try_from(row.get::<_, i64>(9)?).unwrap_or(0),
            metrics: serde_json::from_value(json_col(row, 10)?).unwrap_or_default(),
        },
    })
}

fn as_json<T: Serialize>(what: &'static str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|source| StoreError::Json { what, source })
}

pub(crate) fn insert_history(conn: &rusqlite::Connection, h: &NewHistory) -> Result<i64> {
    non_empty("history host", &h.host)?;
    conn.prepare_cached(
        "INSERT INTO history (host, ts, status, findings, unavailable, unknown_checks, collect_micros, metrics) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        h.host,
        h.ts.millis(),
        h.status.as_str(),
        i64::from(h.findings),
        as_json("history unavailable", &h.unavailable)?,
        as_json("history unknown checks", &h.unknown_checks)?,
        i64::try_from(h.collect_micros).unwrap_or(i64::MAX),
        as_json("history metrics", &h.metrics)?,
    ])?;
    Ok(conn.last_insert_rowid())
}

impl Store {
    /// Writes one history row in its own transaction.
    pub fn record_history(&mut self, h: &NewHistory) -> Result<i64> {
        let tx = self.write_txn()?;
        let id = insert_history(&tx, h)?;
        tx.commit()?;
        Ok(id)
    }

    /// Writes many history rows in one transaction (one disk sync).
    pub fn record_history_batch(&mut self, rows: &[NewHistory]) -> Result<()> {
        let tx = self.write_txn()?;
        for h in rows {
            insert_history(&tx, h)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// History rows matching `query`, oldest first.
    pub fn query_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryRecord>> {
        let sql = format!(
            "SELECT {HISTORY_COLUMNS} FROM history WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR ts >= ?2) \
             AND (?3 IS NULL OR ts < ?3) ORDER BY ts DESC, id DESC LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                query.host,
                query.since.map(Timestamp::millis),
                query.until.map(Timestamp::millis),
                query.limit.map_or(-1, i64::from)
            ],
            history_from_row,
        )?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// The number of history rows: `(raw, downsampled)`.
    pub fn history_counts(&self) -> Result<(u64, u64)> {
        let (raw, folded): (i64, i64) = self.conn.query_row(
            "SELECT count(*) FILTER (WHERE span_ms = 0), count(*) FILTER (WHERE span_ms > 0) FROM history",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((u64::try_from(raw).unwrap_or(0), u64::try_from(folded).unwrap_or(0)))
    }
}

/// Folds the raw rows of `[start, end)` into one row per host (inside the caller's transaction).
/// Returns the number of raw rows folded.
pub(crate) fn fold_bucket(conn: &rusqlite::Connection, start: i64, end: i64) -> Result<u64> {
    let span = end - start;
    conn.prepare_cached(
        "INSERT INTO history (host, ts, span_ms, samples, status, findings, unavailable, unknown_checks, \
         collect_micros, metrics) \
         SELECT host, ts, ?3, n, CASE worst WHEN 3 THEN 'critical' WHEN 2 THEN 'warning' WHEN 1 THEN 'unknown' \
         ELSE 'healthy' END, max_findings, unavailable, unknown_checks, collect_micros, metrics FROM ( \
           SELECT host, ts, unavailable, unknown_checks, collect_micros, metrics, \
             row_number() OVER w_last AS rn, count(*) OVER w AS n, max(findings) OVER w AS max_findings, \
             max(CASE status WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 WHEN 'unknown' THEN 1 ELSE 0 END) \
               OVER w AS worst \
           FROM history WHERE span_ms = 0 AND ts >= ?1 AND ts < ?2 \
           WINDOW w AS (PARTITION BY host), w_last AS (PARTITION BY host ORDER BY ts DESC, id DESC)) \
         WHERE rn = 1",
    )?
    .execute(params![start, end, span])?;
    let n = conn
        .prepare_cached("DELETE FROM history WHERE span_ms = 0 AND ts >= ?1 AND ts < ?2")?
        .execute(params![start, end])?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_keeps_its_start_and_its_verdict() {
        let long = format!("h3: `/usr/bin/timeout -k 2s 5s {}` did not finish within 5000 ms", "x".repeat(400));
        let cut = cut_reason(&long);
        assert!(cut.len() <= REASON_MAX, "{} bytes", cut.len());
        assert!(cut.starts_with("h3: `/usr/bin/timeout") && cut.ends_with("did not finish within 5000 ms"), "{cut}");
        assert!(cut.contains('…'));
        let multibyte = "ü".repeat(200);
        let cut = cut_reason(&multibyte);
        assert!(cut.len() <= REASON_MAX && cut.chars().all(|c| c == 'ü' || c == '…'));
        assert_eq!(cut_reason("short"), "short");
    }
}
