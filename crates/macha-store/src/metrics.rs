//! Metric history (`macha-metrics`, decision 0023): every host's metric samples, compact and
//! bounded.
//!
//! One row per host and timestamp holds all of that moment's samples in a packed blob (metric ids
//! interned in `metric_names`, hosts in `metric_hosts`): a row per sample would cost several times
//! the space (docs/performance.md, "Metrics over time"). Three tiers, by the row's `tier` (the
//! bucket width in seconds, 0 for raw samples):
//! - raw samples, kept [`RAW_KEEP`] (a day);
//! - 5-minute buckets (min, max, mean, count per metric), kept [`FIVE_MINUTE_KEEP`] (30 days);
//! - 1-hour buckets, kept [`HOUR_KEEP`] (a year).
//!
//! [`crate::Store::maintain`] folds each tier into the next and deletes the oldest in bounded
//! batches. Names and hosts are capped ([`NAMES_MAX`], [`HOSTS_MAX`]): a sample with a name beyond
//! the cap is not stored.
//!
//! Blob formats (little-endian): raw `0x01` then per metric a LEB128 id and an `f32`; buckets
//! `0x02` then per metric a LEB128 id, `f32` min, max and mean, and a LEB128 count.

use crate::db::Store;
use crate::error::Result;
use macha_core::Timestamp;
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;
use std::time::Duration;

/// Raw samples are kept this long.
pub const RAW_KEEP: Duration = Duration::from_secs(86_400);
/// 5-minute buckets are kept this long.
pub const FIVE_MINUTE_KEEP: Duration = Duration::from_secs(30 * 86_400);
/// 1-hour buckets are kept this long.
pub const HOUR_KEEP: Duration = Duration::from_secs(365 * 86_400);
/// Distinct metric names stored at most.
pub const NAMES_MAX: i64 = 100_000;
/// Distinct hosts stored at most.
pub const HOSTS_MAX: i64 = 10_000;
/// Metrics in one row at most.
pub const PER_ROW_MAX: usize = 4096;
/// Rows read per fold transaction.
const FOLD_BATCH: i64 = 2_000;
/// Rows deleted per transaction.
const DELETE_BATCH: i64 = 5_000;

const RAW: u8 = 1;
const AGG: u8 = 2;

/// One point of a metric: a raw sample (`span_secs = 0`, min = max = mean, count 1) or a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPoint {
    pub ts: Timestamp,
    pub span_secs: u32,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub count: u32,
}

/// Raw rows [`Store::metric_latest`] reads at most.
pub const LATEST_ROWS: usize = 16;

/// One host's samples of one moment, as [`Store::record_metrics_batch`] takes them.
pub type MetricsRow<'a> = (&'a str, Timestamp, &'a [(&'a str, f64)]);

/// One stored moment of a host: its time and every `(name, value)`.
pub type StoredRow = (Timestamp, Vec<(String, f64)>);

/// How many rows each tier holds and the bytes of their blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSize {
    pub raw_rows: u64,
    pub five_minute_rows: u64,
    pub hour_rows: u64,
    pub blob_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Agg {
    min: f64,
    max: f64,
    sum: f64,
    count: u64,
}

impl Agg {
    fn one(v: f64) -> Agg {
        Agg { min: v, max: v, sum: v, count: 1 }
    }
    fn merge(&mut self, o: Agg) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_f32(b: &[u8], pos: &mut usize) -> Option<f64> {
    let bytes: [u8; 4] = b.get(*pos..*pos + 4)?.try_into().ok()?;
    *pos += 4;
    Some(f64::from(f32::from_le_bytes(bytes)))
}

fn encode_raw(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + samples.len() * 6);
    out.push(RAW);
    for (id, v) in samples {
        put_varint(&mut out, u64::try_from(*id).unwrap_or(0));
        out.extend_from_slice(&(*v as f32).to_le_bytes());
    }
    out
}

fn encode_agg(aggs: &BTreeMap<i64, Agg>) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aggs.len() * 16);
    out.push(AGG);
    for (id, a) in aggs {
        put_varint(&mut out, u64::try_from(*id).unwrap_or(0));
        let mean = if a.count == 0 { 0.0 } else { a.sum / a.count as f64 };
        for v in [a.min, a.max, mean] {
            out.extend_from_slice(&(v as f32).to_le_bytes());
        }
        put_varint(&mut out, a.count);
    }
    out
}

/// Every entry of a blob as `(metric id, aggregate)`; a damaged blob yields what precedes the
/// damage.
fn decode(b: &[u8]) -> Vec<(i64, Agg)> {
    let mut out = Vec::new();
    let Some(&kind) = b.first() else { return out };
    let mut pos = 1;
    while pos < b.len() && out.len() < PER_ROW_MAX {
        let Some(id) = get_varint(b, &mut pos).and_then(|v| i64::try_from(v).ok()) else { break };
        let agg = if kind == RAW {
            let Some(v) = get_f32(b, &mut pos) else { break };
            Agg::one(v)
        } else {
            let (Some(min), Some(max), Some(mean)) = (get_f32(b, &mut pos), get_f32(b, &mut pos), get_f32(b, &mut pos))
            else {
                break;
            };
            let Some(count) = get_varint(b, &mut pos) else { break };
            Agg { min, max, sum: mean * count as f64, count }
        };
        out.push((id, agg));
    }
    out
}

/// The id of `name` in `table`, inserted if new and the table is below `max`.
fn intern(conn: &rusqlite::Connection, table: &str, column: &str, name: &str, max: i64) -> Result<Option<i64>> {
    let found: Option<i64> = conn
        .prepare_cached(&format!("SELECT id FROM {table} WHERE {column} = ?1"))?
        .query_row([name], |r| r.get(0))
        .optional()?;
    if found.is_some() {
        return Ok(found);
    }
    let top: i64 =
        conn.prepare_cached(&format!("SELECT coalesce(max(id), 0) FROM {table}"))?.query_row([], |r| r.get(0))?;
    if top >= max {
        return Ok(None);
    }
    conn.prepare_cached(&format!("INSERT INTO {table} ({column}) VALUES (?1)"))?.execute([name])?;
    Ok(Some(conn.last_insert_rowid()))
}

fn secs(t: Timestamp) -> i64 {
    t.millis().div_euclid(1000)
}

fn keep_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Store {
    /// Stores one host's samples of one moment in its own transaction (a second row for the same
    /// host and second replaces the first). Returns how many samples were stored: names beyond
    /// [`NAMES_MAX`], values that are not finite or beyond `f32`'s range and samples beyond
    /// [`PER_ROW_MAX`] are left out.
    pub fn record_metrics(&mut self, host: &str, at: Timestamp, samples: &[(&str, f64)]) -> Result<usize> {
        self.record_metrics_batch(&[(host, at, samples)])
    }

    /// Stores many rows as [`Store::record_metrics`] does, in one transaction (one disk sync).
    pub fn record_metrics_batch(&mut self, rows: &[MetricsRow<'_>]) -> Result<usize> {
        for (host, _, _) in rows {
            crate::row::non_empty("metrics host", host)?;
        }
        let tx = self.write_txn()?;
        let mut ids: std::collections::HashMap<&str, Option<i64>> = std::collections::HashMap::new();
        let mut hosts: std::collections::HashMap<&str, Option<i64>> = std::collections::HashMap::new();
        let mut stored = 0;
        for (host, at, samples) in rows {
            let host_id = match hosts.get(host) {
                Some(id) => *id,
                None => {
                    let id = intern(&tx, "metric_hosts", "host", host, HOSTS_MAX)?;
                    hosts.insert(host, id);
                    id
                }
            };
            let Some(host_id) = host_id else { continue };
            let mut packed: Vec<(i64, f64)> = Vec::with_capacity(samples.len());
            for (name, v) in samples.iter().take(PER_ROW_MAX) {
                if !v.is_finite() || v.abs() > f64::from(f32::MAX) || name.is_empty() || name.len() > 128 {
                    continue;
                }
                let id = match ids.get(name) {
                    Some(id) => *id,
                    None => {
                        let id = intern(&tx, "metric_names", "name", name, NAMES_MAX)?;
                        ids.insert(name, id);
                        id
                    }
                };
                if let Some(id) = id {
                    packed.push((id, *v));
                }
            }
            if packed.is_empty() {
                continue;
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO metric_samples (host_id, tier, ts, data) VALUES (?1, 0, ?2, ?3)",
            )?
            .execute(params![host_id, secs(*at), encode_raw(&packed)])?;
            stored += packed.len();
        }
        tx.commit()?;
        Ok(stored)
    }

    fn metric_host_id(&self, host: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM metric_hosts WHERE host = ?1")?
            .query_row([host], |r| r.get(0))
            .optional()?)
    }

    /// The hosts with metric history.
    pub fn metric_hosts(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT host FROM metric_hosts h WHERE EXISTS (SELECT 1 FROM metric_samples s WHERE s.host_id = h.id) \
             ORDER BY host",
        )?;
        Ok(stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?)
    }

    /// The metrics of `host` in its newest row of each tier, sorted by name.
    pub fn metric_names(&self, host: &str) -> Result<Vec<String>> {
        let Some(host_id) = self.metric_host_id(host)? else { return Ok(Vec::new()) };
        let mut ids = std::collections::BTreeSet::new();
        for tier in [0i64, 300, 3600] {
            let blob: Option<Vec<u8>> = self
                .conn
                .prepare_cached(
                    "SELECT data FROM metric_samples WHERE host_id = ?1 AND tier = ?2 ORDER BY ts DESC LIMIT 1",
                )?
                .query_row(params![host_id, tier], |r| r.get(0))
                .optional()?;
            ids.extend(blob.iter().flat_map(|b| decode(b)).map(|(id, _)| id));
        }
        let mut stmt = self.conn.prepare_cached("SELECT name FROM metric_names WHERE id = ?1")?;
        let mut names = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(n) = stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? {
                names.push(n);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The points of one metric of `host` in `[since, until)`, oldest first, from whichever tiers
    /// hold that time.
    pub fn metric_series(
        &self,
        host: &str,
        metric: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<MetricPoint>> {
        let Some(host_id) = self.metric_host_id(host)? else { return Ok(Vec::new()) };
        let Some(metric_id) = self
            .conn
            .prepare_cached("SELECT id FROM metric_names WHERE name = ?1")?
            .query_row([metric], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT tier, ts, data FROM metric_samples WHERE host_id = ?1 AND tier IN (0, 300, 3600) \
             AND ts >= ?2 AND ts < ?3",
        )?;
        let mut rows = stmt.query(params![host_id, secs(since), secs(until)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let tier: i64 = r.get(0)?;
            let ts: i64 = r.get(1)?;
            let data: Vec<u8> = r.get(2)?;
            if let Some((_, a)) = decode(&data).into_iter().find(|(id, _)| *id == metric_id) {
                out.push(MetricPoint {
                    ts: Timestamp(ts.saturating_mul(1000)),
                    span_secs: u32::try_from(tier).unwrap_or(0),
                    min: a.min,
                    max: a.max,
                    mean: if a.count == 0 { 0.0 } else { a.sum / a.count as f64 },
                    count: u32::try_from(a.count).unwrap_or(u32::MAX),
                });
            }
        }
        out.sort_by_key(|p| p.ts);
        Ok(out)
    }

    /// The newest raw sample of one metric of `host` taken at or after `since`. Bounded: only the
    /// newest [`LATEST_ROWS`] raw rows are read, so a host that stopped reporting the metric
    /// costs no more than one that reports it.
    pub fn metric_latest(&self, host: &str, metric: &str, since: Timestamp) -> Result<Option<MetricPoint>> {
        let Some(host_id) = self.metric_host_id(host)? else { return Ok(None) };
        let Some(metric_id) = self
            .conn
            .prepare_cached("SELECT id FROM metric_names WHERE name = ?1")?
            .query_row([metric], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts, data FROM metric_samples WHERE host_id = ?1 AND tier = 0 AND ts >= ?2 \
             ORDER BY ts DESC LIMIT ?3",
        )?;
        let limit = i64::try_from(LATEST_ROWS).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![host_id, secs(since), limit])?;
        while let Some(r) = rows.next()? {
            let ts: i64 = r.get(0)?;
            let data: Vec<u8> = r.get(1)?;
            if let Some((_, a)) = decode(&data).into_iter().find(|(id, _)| *id == metric_id) {
                return Ok(Some(MetricPoint {
                    ts: Timestamp(ts.saturating_mul(1000)),
                    span_secs: 0,
                    min: a.min,
                    max: a.max,
                    mean: if a.count == 0 { 0.0 } else { a.sum / a.count as f64 },
                    count: u32::try_from(a.count).unwrap_or(u32::MAX),
                }));
            }
        }
        Ok(None)
    }

    /// The raw rows of `host` since `since`, oldest first, as `(time, [(name, value)])`: what a
    /// detector is warmed with after a restart.
    pub fn metric_rows(&self, host: &str, since: Timestamp) -> Result<Vec<StoredRow>> {
        let Some(host_id) = self.metric_host_id(host)? else { return Ok(Vec::new()) };
        let mut names: BTreeMap<i64, String> = BTreeMap::new();
        let mut name_stmt = self.conn.prepare_cached("SELECT name FROM metric_names WHERE id = ?1")?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT ts, data FROM metric_samples WHERE host_id = ?1 AND tier = 0 AND ts >= ?2 ORDER BY ts",
        )?;
        let mut rows = stmt.query(params![host_id, secs(since)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let ts: i64 = r.get(0)?;
            let data: Vec<u8> = r.get(1)?;
            let mut samples = Vec::new();
            for (id, a) in decode(&data) {
                let name = match names.entry(id) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let Some(n) = name_stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? else {
                            continue;
                        };
                        e.insert(n)
                    }
                };
                samples.push((name.clone(), a.min));
            }
            out.push((Timestamp(ts.saturating_mul(1000)), samples));
        }
        Ok(out)
    }

    /// Rows per tier and the bytes their blobs hold.
    pub fn metrics_size(&self) -> Result<MetricsSize> {
        let (raw, five, hour, bytes): (i64, i64, i64, i64) = self.conn.query_row(
            "SELECT count(*) FILTER (WHERE tier = 0), count(*) FILTER (WHERE tier = 300), \
             count(*) FILTER (WHERE tier = 3600), coalesce(sum(length(data)), 0) FROM metric_samples",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(MetricsSize { raw_rows: u(raw), five_minute_rows: u(five), hour_rows: u(hour), blob_bytes: u(bytes) })
    }

    /// Folds, in transactions of at most [`FOLD_BATCH`] rows, the rows of tier `from` older than
    /// the cutoff into buckets of tier `to`, then deletes the oldest tier's rows past
    /// [`HOUR_KEEP`]. Returns `(rows folded, rows deleted)`; spends at most `budget` transactions.
    pub(crate) fn maintain_metrics(
        &mut self,
        now: Timestamp,
        budget: &mut u32,
        transactions: &mut u32,
    ) -> Result<(u64, u64)> {
        let now = secs(now);
        let mut folded = 0u64;
        for (from, to, keep) in [(0i64, 300i64, RAW_KEEP), (300, 3600, FIVE_MINUTE_KEEP)] {
            let cutoff = (now - keep_secs(keep)).div_euclid(to) * to;
            while *budget > 0 {
                // A read of the age index first: when nothing is due, no write lock is taken.
                let due: bool = self
                    .conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM metric_samples WHERE tier = ?1 AND ts < ?2)")?
                    .query_row(params![from, cutoff], |r| r.get(0))?;
                if !due {
                    break;
                }
                let tx = self.write_txn()?;
                let n = fold_batch(&tx, from, to, cutoff)?;
                if n == 0 {
                    drop(tx);
                    break;
                }
                tx.commit()?;
                folded += n;
                *budget -= 1;
                *transactions += 1;
            }
        }
        let horizon = now - keep_secs(HOUR_KEEP);
        let mut deleted = 0u64;
        while *budget > 0 {
            let due: bool = self
                .conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM metric_samples WHERE tier = 3600 AND ts < ?1)")?
                .query_row([horizon], |r| r.get(0))?;
            if !due {
                break;
            }
            let tx = self.write_txn()?;
            let n = tx
                .prepare_cached(
                    "DELETE FROM metric_samples WHERE id IN \
                     (SELECT id FROM metric_samples WHERE tier = 3600 AND ts < ?1 LIMIT ?2)",
                )?
                .execute(params![horizon, DELETE_BATCH])?;
            tx.commit()?;
            deleted += u64::try_from(n).unwrap_or(0);
            *budget -= 1;
            *transactions += 1;
        }
        Ok((folded, deleted))
    }
}

/// One fold transaction's work: up to [`FOLD_BATCH`] rows of tier `from` before `cutoff` merged
/// into their buckets of tier `to` (existing buckets merged with, so a bucket split over batches
/// comes out whole) and deleted.
fn fold_batch(conn: &rusqlite::Connection, from: i64, to: i64, cutoff: i64) -> Result<u64> {
    let mut buckets: BTreeMap<(i64, i64), BTreeMap<i64, Agg>> = BTreeMap::new();
    let mut ids = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT id, host_id, ts, data FROM metric_samples WHERE tier = ?1 AND ts < ?2 ORDER BY tier, ts LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![from, cutoff, FOLD_BATCH])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let host: i64 = r.get(1)?;
            let ts: i64 = r.get(2)?;
            let data: Vec<u8> = r.get(3)?;
            let bucket = buckets.entry((host, ts.div_euclid(to) * to)).or_default();
            for (metric, a) in decode(&data) {
                bucket.entry(metric).and_modify(|b| b.merge(a)).or_insert(a);
            }
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Ok(0);
    }
    for ((host, start), mut aggs) in buckets {
        let existing: Option<Vec<u8>> = conn
            .prepare_cached("SELECT data FROM metric_samples WHERE host_id = ?1 AND tier = ?2 AND ts = ?3")?
            .query_row(params![host, to, start], |r| r.get(0))
            .optional()?;
        for (metric, a) in existing.iter().flat_map(|b| decode(b)) {
            aggs.entry(metric).and_modify(|b| b.merge(a)).or_insert(a);
        }
        conn.prepare_cached("INSERT OR REPLACE INTO metric_samples (host_id, tier, ts, data) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![host, to, start, encode_agg(&aggs)])?;
    }
    let mut del = conn.prepare_cached("DELETE FROM metric_samples WHERE id = ?1")?;
    for id in &ids {
        del.execute([id])?;
    }
    Ok(ids.len() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_damage_is_contained() {
        let raw = encode_raw(&[(1, 1.5), (300, -2.0), (70_000, 1e9)]);
        assert_eq!(raw.len(), 1 + (1 + 4) + (2 + 4) + (3 + 4));
        let d = decode(&raw);
        assert_eq!(
            d.iter().map(|(id, a)| (*id, a.min)).collect::<Vec<_>>(),
            vec![(1, 1.5), (300, -2.0), (70_000, 1e9)]
        );
        let mut aggs = BTreeMap::new();
        aggs.insert(5, Agg { min: 1.0, max: 3.0, sum: 8.0, count: 4 });
        let d = decode(&encode_agg(&aggs));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].1.min, d[0].1.max, d[0].1.sum, d[0].1.count), (1.0, 3.0, 8.0, 4));
        // A cut blob yields what precedes the cut; garbage never panics.
        assert_eq!(decode(&raw[..raw.len() - 2]).len(), 2);
        for junk in
            [&[][..], &[1], &[2, 0xff, 0xff], &[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80]]
        {
            let _ = decode(junk);
        }
    }

    #[test]
    fn the_latest_sample_is_the_newest_row_that_has_the_metric() {
        let mut store = Store::open_in_memory().unwrap();
        let t = |s: i64| Timestamp::from_secs(1_790_000_000 + s);
        store.record_metrics("web1", t(0), &[("anomaly.rate_percent", 2.0), ("load.1", 0.5)]).unwrap();
        store.record_metrics("web1", t(60), &[("anomaly.rate_percent", 4.5)]).unwrap();
        store.record_metrics("web1", t(120), &[("load.1", 0.7)]).unwrap();
        let p = store.metric_latest("web1", "anomaly.rate_percent", t(0)).unwrap().unwrap();
        assert_eq!((p.ts, p.mean), (t(60), 4.5));
        assert_eq!(store.metric_latest("web1", "load.1", t(0)).unwrap().map(|p| p.mean), Some(f64::from(0.7f32)));
        // Too old, an unknown metric, an unknown host: nothing.
        assert_eq!(store.metric_latest("web1", "anomaly.rate_percent", t(61)).unwrap(), None);
        assert_eq!(store.metric_latest("web1", "cpu.usage_percent", t(0)).unwrap(), None);
        assert_eq!(store.metric_latest("db1", "load.1", t(0)).unwrap(), None);
        // Only the newest rows are read: a metric last seen further back is not found.
        for i in 0..LATEST_ROWS as i64 {
            store.record_metrics("web1", t(180 + i * 60), &[("load.1", 1.0)]).unwrap();
        }
        assert_eq!(store.metric_latest("web1", "anomaly.rate_percent", t(0)).unwrap(), None);
    }
}
