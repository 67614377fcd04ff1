//! Benchmarks of metrics over time, printed as tables (docs/performance.md, "Metrics over
//! time"):
//! 1. detection cost per sample, and a fleet of 500 hosts × about 100 metrics every 60 s through
//!    the tracker (share of one core, memory of the detectors);
//! 2. history size per host: a day of raw samples and a year of all tiers (bytes in SQLite),
//!    against a row per sample;
//! 3. `macha metrics` queries over a year of data for 50 hosts.
//!
//! `cargo bench -p macha-metrics --bench metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_core::snapshot::{
    Cpu, CpuTicks, Filesystem, Load, Memory, NetInterface, Pressure, PressureLine, Section, Snapshot,
};
use macha_core::{HostName, Timestamp};
use macha_metrics::detect::{DetectConfig, Series};
use macha_metrics::key::Unit;
use macha_metrics::synth::{self, Rng};
use macha_metrics::track::{TrackConfig, Tracker};
use macha_store::Store;
use std::time::{Duration, Instant};

const T0: i64 = 1_796_083_200_000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A host with 20 filesystems, 3 interfaces and the usual sections: about 100 metrics.
fn snapshot(host: &HostName, at: Timestamp, rng: &mut Rng) -> Snapshot {
    let mut s = Snapshot::all_unavailable(host.clone(), at, "bench");
    let n = |rng: &mut Rng, v: f64| v * (1.0 + 0.02 * rng.normal());
    s.cpu = Section::ok(Cpu {
        logical_cpus: 8,
        usage_percent: Some(n(rng, 30.0)),
        window_ms: Some(60_000),
        ticks: CpuTicks { busy: 0, idle: 0 },
    });
    s.memory = Section::ok(Memory {
        total_bytes: 32 << 30,
        available_bytes: n(rng, 12e9) as u64,
        swap_total_bytes: 0,
        swap_free_bytes: 0,
    });
    s.load =
        Section::ok(Load { one: n(rng, 1.0), five: n(rng, 1.0), fifteen: n(rng, 1.0), runnable: 2, processes: 400 });
    let line = |rng: &mut Rng| PressureLine { avg10: n(rng, 2.0), avg60: n(rng, 2.0), avg300: 2.0 };
    s.pressure = Section::ok(Pressure {
        cpu_some: line(rng),
        memory_some: line(rng),
        memory_full: line(rng),
        io_some: line(rng),
        io_full: line(rng),
    });
    s.filesystems = Section::ok(
        (0..20)
            .map(|i| {
                let total = 100u64 << 30;
                let free = n(rng, 40e9) as u64;
                Filesystem {
                    mount_point: format!("/srv/data{i}"),
                    device: format!("/dev/vd{i}"),
                    fs_type: "ext4".into(),
                    total_bytes: total,
                    available_bytes: free,
                    used_bytes: Some(total - free),
                    total_inodes: 1_000_000,
                    free_inodes: 900_000,
                    read_only: false,
                }
            })
            .collect(),
    );
    let secs = (at.0 - T0) as f64 / 1000.0;
    s.network = Section::ok(
        (0..3)
            .map(|i| NetInterface {
                name: format!("eth{i}"),
                rx_bytes: (secs * 1e6) as u64,
                tx_bytes: (secs * 5e5) as u64,
                rx_errors: 0,
                tx_errors: 0,
                rx_dropped: 0,
                tx_dropped: 0,
            })
            .collect(),
    );
    s
}

fn detection() {
    let cfg = DetectConfig::default();
    let ts = synth::times(100_000, 60);
    let v = synth::daily_cycle(&ts, 50.0, 20.0, 2.0, &mut Rng::new(1));
    let mut s = Series::new(Unit::Plain);
    let start = Instant::now();
    let mut flagged = 0;
    for (t, x) in ts.iter().zip(&v) {
        flagged += usize::from(s.observe(*t, *x, &cfg).flagged);
    }
    let per = start.elapsed().as_nanos() as f64 / ts.len() as f64;
    println!("## Detection\n");
    println!("| what | figure |\n|---|---|");
    println!("| one sample through one series detector | {per:.0} ns ({flagged} of {} flagged) |", ts.len());
    println!("| detector state per series | {} bytes |", std::mem::size_of::<Series>() + Series::heap_bytes());

    // The fleet: 500 hosts, every 60 s, through the tracker (extraction, rates, detection,
    // fill-up fits, findings).
    let hosts: Vec<HostName> = (0..500).map(|i| HostName::parse(&format!("h{i}")).unwrap()).collect();
    let mut rng = Rng::new(2);
    let before = rss_kib();
    let mut tracker = Tracker::new(TrackConfig::default());
    let cycles = 90;
    let mut per_cycle = Vec::new();
    let mut metrics = 0;
    for c in 0..cycles {
        let at = Timestamp(T0 + c * 60_000);
        let snaps: Vec<Snapshot> = hosts.iter().map(|h| snapshot(h, at, &mut rng)).collect();
        let start = Instant::now();
        for s in &snaps {
            metrics = tracker.observe(s).samples.len();
        }
        per_cycle.push(start.elapsed());
    }
    let after = rss_kib();
    // Cycles after the warm-up (every detector judging).
    let judged: Vec<Duration> = per_cycle[70..].to_vec();
    let mean = judged.iter().sum::<Duration>() / judged.len() as u32;
    let worst = judged.iter().max().copied().unwrap_or_default();
    println!(
        "| 500 hosts × {metrics} metrics, one 60 s cycle (tracker) | mean {:.1} ms, worst {:.1} ms: {:.2} % of one core |",
        mean.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3,
        100.0 * mean.as_secs_f64() / 60.0
    );
    println!(
        "| tracker memory for {} series (RSS growth) | {:.1} MiB |",
        tracker.series_count(),
        (after.saturating_sub(before)) as f64 / 1024.0
    );
}

fn samples(i: i64, n: usize) -> Vec<(String, f64)> {
    (0..n).map(|k| (format!("fs.avail_bytes:/srv/data{k}"), 4e10 + (i % 97) as f64 * 1e6 + k as f64)).collect()
}

/// One host's year, written as the tiers hold it after maintenance: a raw row per minute of the
/// last day, a row per 5 minutes of the 29 days before, a row per hour of the rest (counts do
/// not change the size of a bucket's blob).
fn year(store: &mut Store, hosts: &[String], now: i64, metrics: usize) -> Duration {
    let mut spent = Duration::ZERO;
    let mut ts = Vec::new();
    let day = 86_400i64;
    let mut t = now - 365 * day;
    while t < now {
        ts.push(t);
        let age = now - t;
        t += if age > 30 * day {
            3600
        } else if age > day {
            300
        } else {
            60
        };
    }
    for host in hosts {
        let rows: Vec<(i64, Vec<(String, f64)>)> = ts.iter().map(|t| (*t, samples(*t, metrics))).collect();
        for chunk in rows.chunks(2000) {
            let refs: Vec<Vec<(&str, f64)>> =
                chunk.iter().map(|(_, s)| s.iter().map(|(n, v)| (n.as_str(), *v)).collect()).collect();
            let batch: Vec<macha_store::metrics::MetricsRow<'_>> =
                chunk.iter().zip(&refs).map(|((t, _), s)| (host.as_str(), Timestamp(t * 1000), s.as_slice())).collect();
            let start = Instant::now();
            store.record_metrics_batch(&batch).unwrap();
            spent += start.elapsed();
        }
    }
    // Fold into the tiers.
    while store.maintain(Timestamp(now * 1000)).unwrap().more {}
    spent
}

fn file_bytes(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// The file's size once the WAL is folded back and free pages are gone.
fn vacuumed(path: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;").unwrap();
    drop(conn);
    file_bytes(path)
}

/// The size of a database with the schema and nothing else.
fn empty_size(dir: &std::path::Path) -> u64 {
    let path = dir.join("empty.db");
    drop(Store::open(&path).unwrap());
    vacuumed(&path)
}

fn storage() {
    let dir =
        tempfile::tempdir_in(if std::path::Path::new("/dev/shm").exists() { "/dev/shm" } else { "/tmp" }).unwrap();
    let now = (T0 / 1000) + 400 * 86_400;
    println!("\n## History size (100 metrics per host)\n");
    println!("| what | bytes |\n|---|---|");

    // A day of raw samples, packed.
    let empty = empty_size(dir.path());
    let path = dir.path().join("day.db");
    let mut store = Store::open(&path).unwrap();
    let mut batch_rows = Vec::new();
    for i in 0..1440i64 {
        batch_rows.push((i, samples(i, 100)));
    }
    let refs: Vec<Vec<(&str, f64)>> =
        batch_rows.iter().map(|(_, s)| s.iter().map(|(n, v)| (n.as_str(), *v)).collect()).collect();
    let batch: Vec<macha_store::metrics::MetricsRow<'_>> = batch_rows
        .iter()
        .zip(&refs)
        .map(|((i, _), s)| ("web1", Timestamp((now - 86_400 + i * 60) * 1000), s.as_slice()))
        .collect();
    let start = Instant::now();
    store.record_metrics_batch(&batch).unwrap();
    let write = start.elapsed();
    let size = store.metrics_size().unwrap();
    drop(store);
    let day = vacuumed(&path).saturating_sub(empty);
    println!(
        "| a day of raw samples, one packed row per minute (file growth) | {day} ({} in blobs) |",
        size.blob_bytes
    );
    println!("| writing it: 1,440 rows in one transaction | {:.1} ms |", write.as_secs_f64() * 1e3);

    // The same day as a row per sample, for comparison.
    let path = dir.path().join("rows.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE s (host_id INTEGER, metric_id INTEGER, ts INTEGER, value REAL, \
         PRIMARY KEY (host_id, metric_id, ts)) WITHOUT ROWID;",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..1440i64 {
        for (k, (_, v)) in samples(i, 100).iter().enumerate() {
            tx.execute("INSERT INTO s VALUES (1, ?1, ?2, ?3)", rusqlite::params![k as i64, now - 86_400 + i * 60, v])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(conn);
    let rows = vacuumed(&path);
    println!(
        "| the same day, one row per sample (WITHOUT ROWID, REAL) | {rows} ({:.1}× the packed rows) |",
        rows as f64 / day.max(1) as f64
    );

    // A year of one host, in its tiers.
    let path = dir.path().join("year.db");
    let mut store = Store::open(&path).unwrap();
    year(&mut store, &["web1".to_owned()], now, 100);
    let size = store.metrics_size().unwrap();
    drop(store);
    let y = vacuumed(&path).saturating_sub(empty);
    println!(
        "| a year of one host: {} raw + {} 5-minute + {} hourly rows | {y} ({} in blobs) |",
        size.raw_rows, size.five_minute_rows, size.hour_rows, size.blob_bytes
    );
}

fn queries() {
    let dir =
        tempfile::tempdir_in(if std::path::Path::new("/dev/shm").exists() { "/dev/shm" } else { "/tmp" }).unwrap();
    let now = (T0 / 1000) + 400 * 86_400;
    let path = dir.path().join("fleet.db");
    let mut store = Store::open(&path).unwrap();
    let hosts: Vec<String> = (0..50).map(|i| format!("h{i}")).collect();
    let write = year(&mut store, &hosts, now, 100);
    let size = store.metrics_size().unwrap();
    println!("\n## Queries over a year of 50 hosts × 100 metrics\n");
    println!(
        "({} rows, {:.0} MiB of blobs, written in {:.1} s)\n",
        size.raw_rows + size.five_minute_rows + size.hour_rows,
        size.blob_bytes as f64 / 1048576.0,
        write.as_secs_f64()
    );
    println!("| query | mean | worst |\n|---|---|---|");
    let end = Timestamp(now * 1000);
    for (label, since) in [("6 h", 6 * 3600), ("7 days", 7 * 86_400), ("a year", 365 * 86_400)] {
        let mut times = Vec::new();
        let mut n = 0;
        for h in hosts.iter().take(20) {
            let start = Instant::now();
            n = store
                .metric_series(h, "fs.avail_bytes:/srv/data42", Timestamp((now - since) * 1000), end)
                .unwrap()
                .len();
            times.push(start.elapsed());
        }
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let worst = times.iter().max().copied().unwrap_or_default();
        println!(
            "| one metric of one host, {label} ({n} points) | {:.2} ms | {:.2} ms |",
            mean.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
    let start = Instant::now();
    let names = store.metric_names("h7").unwrap().len();
    println!("| the metric list of one host ({names} names) | {:.2} ms | |", start.elapsed().as_secs_f64() * 1e3);

    // What the daemon does for each host after a restart: read its raw day and replay it.
    let mut times = Vec::new();
    let mut rows = 0;
    for h in hosts.iter().take(10) {
        let start = Instant::now();
        let day = store.metric_rows(h, Timestamp((now - 86_400) * 1000)).unwrap();
        rows = day.len();
        let day: Vec<_> = day
            .into_iter()
            .map(|(t, s)| {
                (
                    t,
                    s.into_iter()
                        .filter_map(|(n, v)| macha_metrics::MetricKey::parse(&n).ok().map(|k| (k, v)))
                        .collect(),
                )
            })
            .collect();
        let mut tracker = Tracker::new(TrackConfig::default());
        tracker.warm(&HostName::parse(h).unwrap(), &day);
        times.push(start.elapsed());
    }
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let worst = times.iter().max().copied().unwrap_or_default();
    println!(
        "| warming one host after a restart ({rows} raw rows read and replayed) | {:.1} ms | {:.1} ms |",
        mean.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
}

fn main() {
    detection();
    storage();
    queries();
}
