//! Snapshot history: the row a snapshot becomes, downsampling and retention with a simulated
//! clock, bounded maintenance batches.

use crate::{snapshot, temp_db};
use macha_core::Timestamp;
use macha_core::checks::{CheckHistory, Thresholds, evaluate};
use macha_store::{HistoryQuery, HostStatus, Limits, MAINTAIN_MAX_TRANSACTIONS, NewHistory, Store};
use std::time::Duration;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn row(host: &str, ts: i64, status: HostStatus, findings: u32) -> NewHistory {
    let snap = snapshot(host, ts);
    let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
    NewHistory { status, findings, ..NewHistory::from_snapshot(&snap, &ev) }
}

#[test]
fn a_snapshot_becomes_a_small_complete_history_row() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let snap = snapshot("web1", 1_000);
    let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
    let h = NewHistory::from_snapshot(&snap, &ev);
    // Pressure, network, processes, journal and hardware are unavailable in the fixture.
    assert_eq!(h.status, HostStatus::Unknown);
    assert_eq!(h.unavailable.len(), 5, "{:?}", h.unavailable);
    assert_eq!(h.metrics.cpu_percent, Some(12.35));
    assert_eq!(h.metrics.mem_used_bytes, Some(7 << 30));
    assert_eq!(h.metrics.mem_total_bytes, Some(16 << 30));
    assert_eq!(h.metrics.load, Some([0.51, 0.4, 0.3]));
    assert_eq!(h.metrics.units_total, Some(250));
    assert_eq!(h.metrics.units_failed, Some(0));
    assert_eq!(h.metrics.nix_store_bytes, Some(180 << 30));
    assert_eq!(h.metrics.filesystems.len(), 5);
    // The fullest filesystem first.
    assert_eq!(h.metrics.filesystems[0].mount, "/");
    assert_eq!(h.metrics.filesystems[0].used_bytes, 60 << 30);
    assert_eq!(h.metrics.filesystems[0].inodes_used, 1_000_000);
    store.record_history(&h).unwrap();
    let back = store.query_history(&HistoryQuery::default()).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].entry, h);
    assert_eq!((back[0].span_ms, back[0].samples), (0, 1));
    // The whole row, columns included, stays under a kilobyte.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let bytes: i64 = conn
        .query_row(
            "SELECT length(host) + 8 * 6 + length(status) + length(unavailable) + length(unknown_checks) + \
             length(metrics) FROM history",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let text: String =
        conn.query_row("SELECT unavailable || unknown_checks || metrics FROM history", [], |r| r.get(0)).unwrap();
    assert!(bytes < 1024, "a history row takes {bytes} bytes: {text}");
}

#[test]
fn downsampling_and_retention_follow_a_simulated_clock() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    let limits = Limits {
        raw_retention: Duration::from_secs(6 * 3600),
        downsample: Duration::from_secs(3600),
        history_retention: Duration::from_secs(2 * 86_400),
        ..Limits::default()
    };
    store.set_limits(limits);
    let hosts = ["a", "b", "c"];
    let start = 100 * DAY;
    let step = 5 * MIN;
    // One critical sample of host b in the bucket [start + 30 h, start + 31 h), with 3 findings.
    let critical_at = start + 30 * HOUR + 20 * MIN;
    let mut now = start;
    let end = start + 3 * DAY;
    while now < end {
        let rows: Vec<NewHistory> = hosts
            .iter()
            .map(|h| {
                if *h == "b" && now == critical_at {
                    row(h, now, HostStatus::Critical, 3)
                } else {
                    row(h, now, HostStatus::Healthy, 0)
                }
            })
            .collect();
        store.record_history_batch(&rows).unwrap();
        now += step;
        // The daemon maintains once per cycle; here once per simulated hour.
        if now % HOUR == 0 {
            let m = store.maintain(Timestamp(now)).unwrap();
            assert!(!m.more, "{m:?}");
        }
    }
    let all = store.query_history(&HistoryQuery::default()).unwrap();
    let raw_horizon = now - 6 * HOUR;
    let horizon = now - 2 * DAY;
    assert!(all.iter().all(|r| r.entry.ts.millis() >= horizon), "rows older than the retention remain");
    for r in &all {
        if r.span_ms == 0 {
            // Raw rows only within the raw retention (plus the current, incomplete bucket).
            assert!(r.entry.ts.millis() >= raw_horizon - HOUR, "raw row at {}", r.entry.ts.millis());
        } else {
            assert_eq!(r.span_ms, HOUR);
            assert!(r.entry.ts.millis() < raw_horizon);
        }
    }
    // One row per host per hour for the downsampled part; each stands for 12 samples and is the
    // bucket's last row.
    for host in hosts {
        let folded: Vec<_> = all.iter().filter(|r| r.entry.host == host && r.span_ms > 0).collect();
        let buckets: std::collections::BTreeSet<i64> =
            folded.iter().map(|r| r.entry.ts.millis().div_euclid(HOUR)).collect();
        assert_eq!(buckets.len(), folded.len(), "{host}: more than one row in a bucket");
        assert!(folded.len() >= 40, "{host}: {} downsampled rows", folded.len());
        for r in &folded {
            assert_eq!(r.samples, 12, "{host} at {}", r.entry.ts.millis());
            assert_eq!(r.entry.ts.millis() % HOUR, HOUR - step, "the last row of the bucket is kept");
        }
    }
    // The bucket with the critical sample keeps the worst status and the most findings.
    let bucket = all
        .iter()
        .find(|r| r.entry.host == "b" && r.span_ms > 0 && r.entry.ts.millis().div_euclid(HOUR) == critical_at / HOUR)
        .expect("the critical bucket is still within the retention");
    assert_eq!((bucket.entry.status, bucket.entry.findings), (HostStatus::Critical, 3));
    let others = all.iter().filter(|r| r.span_ms > 0 && r.entry.status != HostStatus::Healthy).count();
    assert_eq!(others, 1);
    let (raw, folded) = store.history_counts().unwrap();
    assert_eq!(raw + folded, all.len() as u64);
}

#[test]
fn maintenance_is_idle_when_nothing_is_due() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    for i in 0..10 {
        store.record_history(&row("a", 10 * DAY + i * MIN, HostStatus::Healthy, 0)).unwrap();
    }
    let now = Timestamp(10 * DAY + 20 * MIN);
    let m = store.maintain(now).unwrap();
    assert!(m.is_idle(), "{m:?}");
    let wal = path.with_extension("db-wal");
    let before = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    for _ in 0..100 {
        assert!(store.maintain(now).unwrap().is_idle());
    }
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), before, "an idle maintenance wrote");
}

#[test]
fn maintenance_works_in_bounded_batches() {
    let (_dir, path) = temp_db();
    let mut store = Store::open(&path).unwrap();
    // 60 hours of one host at one row per 10 minutes, all older than the raw retention.
    let rows: Vec<NewHistory> = (0..360).map(|i| row("a", 5 * DAY + i * 10 * MIN, HostStatus::Healthy, 0)).collect();
    store.record_history_batch(&rows).unwrap();
    let now = Timestamp(10 * DAY);
    let first = store.maintain(now).unwrap();
    assert!(first.more, "{first:?}");
    assert_eq!(first.transactions, MAINTAIN_MAX_TRANSACTIONS);
    assert_eq!(first.history_buckets, u64::from(MAINTAIN_MAX_TRANSACTIONS));
    let mut calls = 1;
    loop {
        let m = store.maintain(now).unwrap();
        calls += 1;
        assert!(m.transactions <= MAINTAIN_MAX_TRANSACTIONS);
        if !m.more {
            break;
        }
    }
    assert_eq!(calls, 3);
    let (raw, folded) = store.history_counts().unwrap();
    assert_eq!((raw, folded), (0, 60));
    assert!(store.maintain(now).unwrap().is_idle());
}
