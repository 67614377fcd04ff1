//! Bounded growth: 30 simulated days of a 50-host fleet observed every 60 s, written through the
//! real write path (`NewHistory::from_snapshot`, `record_history_batch`, `append_audit_batch`,
//! `record_prompt`) with `Store::maintain` called once per simulated cycle, as the daemon does,
//! with the default retention (`Limits::default()`). Prints the database size and row counts at
//! the end, the cost of maintenance, and the audit chain's verify and export rates.
//!
//! To keep the run short, one simulated hour of history rows (50 hosts × 60 cycles) is written in
//! one transaction, where the daemon commits each row on its own; the rows, their sizes and the
//! maintenance work are the same. Each host's row is built once from a realistic snapshot with
//! the real function and then varied (time, CPU, load, memory, filesystem use) per cycle.
//!
//! `cargo bench -p macha-store --bench retention` prints the table; run as a test (without
//! `--bench`) it simulates 3 days only. The database lives under Cargo's target tmp directory, or
//! under `MACHA_BENCH_DIR` when set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_core::checks::{CheckHistory, Thresholds, evaluate};
use macha_core::snapshot::{Cpu, CpuTicks, Filesystem, Load, Memory, NixInfo, Section, Snapshot, Units};
use macha_core::{HostName, Timestamp};
use macha_store::{AuditKind, Limits, NewAgentRequest, NewAudit, NewHistory, NewPrompt, Severity, Store};
use std::time::{Duration, Instant};

const HOSTS: usize = 50;
const INTERVAL_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A host as the fleet observes it: every section the history keeps, five filesystems.
fn snapshot(host: &str, ts: i64) -> Snapshot {
    let mut s = Snapshot::all_unavailable(HostName::parse(host).unwrap(), Timestamp(ts), "unused");
    s.collect_micros = 150_000;
    s.cpu = Section::ok(Cpu {
        logical_cpus: 8,
        usage_percent: Some(7.5),
        window_ms: Some(60_000),
        ticks: CpuTicks { busy: 1, idle: 2 },
    });
    s.memory = Section::ok(Memory {
        total_bytes: 16 << 30,
        available_bytes: 9 << 30,
        swap_total_bytes: 0,
        swap_free_bytes: 0,
    });
    s.load = Section::ok(Load { one: 0.5, five: 0.4, fifteen: 0.3, runnable: 1, processes: 300 });
    s.pressure = Section::unavailable("no PSI on this kernel");
    s.filesystems = Section::ok(
        ["/", "/boot", "/home", "/nix/store", "/var/lib/postgresql"]
            .iter()
            .enumerate()
            .map(|(i, m)| Filesystem {
                mount_point: (*m).to_owned(),
                device: format!("/dev/sda{i}"),
                fs_type: "ext4".to_owned(),
                total_bytes: 100 << 30,
                available_bytes: (40 + i as u64) << 30,
                used_bytes: None,
                total_inodes: 6_000_000,
                free_inodes: 5_000_000,
                read_only: false,
            })
            .collect(),
    );
    s.units = Section::ok(Units { system_state: "running".to_owned(), total: 250, notable: vec![], failed: vec![] });
    s.nix = Section::ok(NixInfo {
        current_system: "/nix/store/abc-nixos-system".to_owned(),
        generations: vec![],
        store_total_bytes: 500 << 30,
        store_available_bytes: 320 << 30,
    });
    s
}

fn file_size(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let days: i64 = if full { 30 } else { 3 };
    let base = std::env::var_os("MACHA_BENCH_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")), std::path::PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let path = dir.path().join("bench.db");
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.limits(), Limits::default());

    let start = 1_700_000_000_000 / DAY_MS * DAY_MS;
    let templates: Vec<NewHistory> = (0..HOSTS)
        .map(|i| {
            let snap = snapshot(&format!("host{i:02}.example.org"), start);
            let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
            NewHistory::from_snapshot(&snap, &ev)
        })
        .collect();
    let request = store
        .create_agent_request(&NewAgentRequest {
            kind: "analysis".into(),
            priority: "autonomous".into(),
            requested_by: "macha".into(),
            correlation_id: None,
            issue_ids: vec![],
            approval_id: None,
            conversation: None,
            created_at: Timestamp(start),
        })
        .unwrap();

    let began = Instant::now();
    let mut write_time = Duration::ZERO;
    let mut maintain_times: Vec<Duration> = Vec::new();
    let mut idle_times: Vec<Duration> = Vec::new();
    let mut rows_written = 0u64;
    let mut audit_written = 0u64;
    let mut prompts_written = 0u64;
    let mut cycle: i64 = 0;
    let cycles = days * DAY_MS / INTERVAL_MS;
    let per_hour = HOUR_MS / INTERVAL_MS;
    while cycle < cycles {
        // One simulated hour of history, in one transaction.
        let t = Instant::now();
        let mut batch = Vec::with_capacity(HOSTS * per_hour as usize);
        for c in cycle..cycle + per_hour {
            let ts = start + c * INTERVAL_MS;
            for (i, tpl) in templates.iter().enumerate() {
                let mut h = tpl.clone();
                h.ts = Timestamp(ts + i as i64 * 100);
                let wobble = ((c * 7 + i as i64 * 13) % 100) as f64;
                h.metrics.cpu_percent = Some(wobble / 2.0);
                h.metrics.load = Some([wobble / 50.0, wobble / 60.0, wobble / 70.0]);
                h.metrics.mem_used_bytes = h.metrics.mem_used_bytes.map(|m| m + (c as u64 % 1000) * 4096);
                for f in &mut h.metrics.filesystems {
                    f.used_bytes += c as u64 * 4096;
                    f.avail_bytes -= c as u64 * 4096;
                }
                batch.push(h);
            }
        }
        store.record_history_batch(&batch).unwrap();
        rows_written += batch.len() as u64;
        // What the trail keeps: some decisions and actions every hour across the fleet.
        let hour_ts = start + cycle * INTERVAL_MS;
        let audits: Vec<NewAudit> = (0..8)
            .map(|k| {
                NewAudit::new(
                    Timestamp(hour_ts + k),
                    AuditKind::Decision,
                    Severity::Notice,
                    format!("host{k:02}.example.org"),
                    "restart_unit nginx.service: execute (auto-safe)",
                )
                .with_correlation_id(format!("corr-{cycle}-{k}"))
                .with_subject("nginx.service")
                .with_payload(serde_json::json!({"verdict": "execute", "risk": "low", "unit": "nginx.service"}))
            })
            .collect();
        store.append_audit_batch(&audits).unwrap();
        audit_written += audits.len() as u64;
        // The model: a few analyses a day with a 12 KB prompt, and once a day a runaway 1 MiB answer.
        if cycle % (6 * per_hour) == 0 {
            let runaway = cycle % (24 * per_hour) == 0;
            let answer = if runaway { "x".repeat(1 << 20) } else { "a diagnosis ".repeat(150) };
            store
                .record_prompt(&NewPrompt {
                    request_id: request,
                    seq: 1,
                    ts: Timestamp(hour_ts),
                    purpose: "analysis".into(),
                    model: "qwen2.5:14b".into(),
                    backend: "ollama".into(),
                    request: serde_json::json!({"messages": [{"role": "user", "content": "journal line\n".repeat(1000)}]}),
                    estimated_tokens: 4000,
                    prompt_tokens: Some(4100),
                    completion_tokens: Some(500),
                    response: Some(serde_json::json!({"content": answer})),
                    error: None,
                })
                .unwrap();
            prompts_written += 1;
        }
        write_time += t.elapsed();
        // The daemon maintains once per cycle.
        for c in cycle..cycle + per_hour {
            let now = Timestamp(start + (c + 1) * INTERVAL_MS);
            let t = Instant::now();
            let m = store.maintain(now).unwrap();
            let d = t.elapsed();
            if m.is_idle() { idle_times.push(d) } else { maintain_times.push(d) }
        }
        cycle += per_hour;
        if full && cycle % (5 * 24 * per_hour) == 0 {
            eprintln!("day {}: {} on disk, {:.0?}", cycle / (24 * per_hour), mib(file_size(&path)), began.elapsed());
        }
    }
    let simulated = began.elapsed();
    let (raw, folded) = store.history_counts().unwrap();
    let audit_rows = store.verify_audit().unwrap().records;
    let prompts = store.prompts(None, 10_000).unwrap();
    let cut = prompts.iter().filter(|p| p.cut).count();
    drop(store);
    let size = file_size(&path);
    let row_bytes = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(
            "SELECT avg(length(host) + length(status) + length(unavailable) + length(unknown_checks) + length(metrics) + 48) FROM history",
            [],
            |r| r.get::<_, f64>(0),
        )
        .unwrap()
    };
    idle_times.sort();
    maintain_times.sort();
    let pct = |v: &[Duration], p: f64| v.get(((v.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or_default();

    // The audit chain over a larger trail: append, verify, export.
    let mut store = Store::open(&path).unwrap();
    let n_chain = if full { 200_000 } else { 20_000 };
    let t = Instant::now();
    for chunk in 0..n_chain / 1000 {
        let batch: Vec<NewAudit> = (0..1000)
            .map(|k| {
                NewAudit::new(
                    Timestamp(start + chunk * 1000 + k),
                    AuditKind::Finding,
                    Severity::Warning,
                    "local",
                    "nginx.service failed",
                )
                .with_payload(serde_json::json!({"check": "unit_failed", "unit": "nginx.service", "seq": k}))
            })
            .collect();
        store.append_audit_batch(&batch).unwrap();
    }
    let append = t.elapsed();
    let t = Instant::now();
    let report = store.verify_audit().unwrap();
    let verify = t.elapsed();
    assert!(report.is_ok(), "{:?}", report.problems);
    let t = Instant::now();
    let mut sink = CountingSink(0);
    let summary = store.export_audit(None, &mut sink).unwrap();
    let export = t.elapsed();

    println!();
    println!(
        "macha-store retention: {HOSTS} hosts, one snapshot each per {} s, {days} simulated days, default limits",
        INTERVAL_MS / 1000
    );
    println!("database under {}", base.display());
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| database file at the end (db + WAL) | {} |", mib(size));
    println!("| history rows written | {rows_written} |");
    println!("| history rows kept: raw / downsampled (1 h) | {raw} / {folded} |");
    println!("| average history row (columns' bytes) | {row_bytes:.0} B |");
    println!("| audit records | {audit_rows} ({audit_written} written by the simulation) |");
    println!("| prompts kept / written, cut | {} / {prompts_written}, {cut} cut |", prompts.len());
    println!(
        "| simulation wall time (writes + maintenance) | {:.1} s (writes {:.1} s) |",
        simulated.as_secs_f64(),
        write_time.as_secs_f64()
    );
    println!(
        "| maintenance call with work: n, median, p99, max | {}, {:.1} ms, {:.1} ms, {:.1} ms |",
        maintain_times.len(),
        pct(&maintain_times, 0.5).as_secs_f64() * 1e3,
        pct(&maintain_times, 0.99).as_secs_f64() * 1e3,
        maintain_times.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "| maintenance call with nothing due: n, median, p99 | {}, {:.0} µs, {:.0} µs |",
        idle_times.len(),
        pct(&idle_times, 0.5).as_secs_f64() * 1e6,
        pct(&idle_times, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| audit append with the hash chain, batches of 1000 | {:.0} records/s |",
        n_chain as f64 / append.as_secs_f64()
    );
    println!(
        "| verify_audit over {} records | {:.2} s ({:.0} records/s) |",
        report.records,
        verify.as_secs_f64(),
        report.records as f64 / verify.as_secs_f64()
    );
    println!(
        "| export_audit (gzip) of {} records | {:.2} s ({:.0} records/s), {} compressed |",
        summary.count,
        export.as_secs_f64(),
        summary.count as f64 / export.as_secs_f64(),
        mib(sink.0)
    );
    if full {
        assert!(size < 200 * 1024 * 1024, "the database grew to {}", mib(size));
    }
}

/// Counts what an export writes.
struct CountingSink(u64);

impl std::io::Write for &mut CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
