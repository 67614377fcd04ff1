//! Store throughput and latency with durable commits (`synchronous=FULL`, WAL) on a real file.
//!
//! `cargo bench -p macha-store` prints a table. Run without `--bench` (as a test) it only does a
//! quick smoke pass. The database lives under Cargo's target tmp directory, or under
//! `MACHA_BENCH_DIR` when set: point that at the file system the daemon will use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_core::Timestamp;
use macha_store::{ApprovalState, AuditKind, AuditQuery, NewApproval, NewAudit, Order, Severity, Store};
use std::time::{Duration, Instant};

fn record(seq: u64) -> NewAudit {
    NewAudit::new(
        Timestamp(1_700_000_000_000 + seq as i64),
        AuditKind::Finding,
        Severity::Warning,
        "local",
        "nginx.service failed",
    )
    .with_correlation_id(format!("corr-{}", seq / 10))
    .with_subject("nginx.service")
    .with_payload(serde_json::json!({
        "check": "unit_failed",
        "unit": "nginx.service",
        "result": "exit-code",
        "exit_status": 1,
        "seq": seq,
    }))
}

fn approval(i: usize) -> NewApproval {
    let at = 1_000 + i as i64;
    NewApproval {
        host: "local".to_owned(),
        action: serde_json::json!({"kind": "restart_unit", "host": "local", "unit": "nginx.service"}),
        decision: serde_json::json!({"verdict": "approval", "risk": "medium", "reason": "autonomy level suggest"}),
        reason: "nginx.service failed".to_owned(),
        requested_by: "macha".to_owned(),
        requested_at: Timestamp(at),
        expires_at: Timestamp(at + 3_600_000),
        correlation_id: format!("corr-{i}"),
        issue_id: None,
    }
}

struct Measured {
    name: String,
    /// Calls (commits) measured.
    calls: usize,
    /// Records written per call.
    per_call: usize,
    elapsed: Duration,
    sorted: Vec<Duration>,
}

impl Measured {
    fn percentile(&self, p: f64) -> Duration {
        let idx = ((self.sorted.len() - 1) as f64 * p).round() as usize;
        self.sorted[idx]
    }
}

/// Runs `op` `warmup` times untimed, then `calls` times timed.
fn measure(name: &str, warmup: usize, calls: usize, per_call: usize, mut op: impl FnMut()) -> Measured {
    for _ in 0..warmup {
        op();
    }
    let mut sorted = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        op();
        sorted.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    sorted.sort();
    Measured { name: name.to_owned(), calls, per_call, elapsed, sorted }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 { format!("{:.1} ms", us / 1000.0) } else { format!("{us:.0} µs") }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 50 };
    let base = std::env::var_os("MACHA_BENCH_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")), std::path::PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let mut store = Store::open(dir.path().join("bench.db")).unwrap();
    let mut results = Vec::new();
    let mut seq = 0u64;
    let mut next_record = || {
        seq += 1;
        record(seq)
    };

    let n = 3_000 / scale;
    results.push(measure("audit append, 1 record per commit", n / 10, n, 1, || {
        store.append_audit(&next_record()).unwrap();
    }));
    for (batch, n) in [(10usize, 1_000 / scale), (100, 200 / scale)] {
        results.push(measure(&format!("audit append, batch of {batch} per commit"), n / 10, n, batch, || {
            let records: Vec<NewAudit> = (0..batch).map(|_| next_record()).collect();
            store.append_audit_batch(&records).unwrap();
        }));
    }

    let n = 1_000 / scale;
    let note = NewAudit::new(Timestamp(2_000), AuditKind::Approval, Severity::Notice, "local", "approval");
    let mut created = Vec::new();
    let mut i = 0;
    results.push(measure("approval create (+ its audit record)", n / 10, n, 1, || {
        i += 1;
        created.push(store.create_approval(&approval(i), &note).unwrap().id);
    }));
    let mut pending = created.clone();
    results.push(measure("approval pending -> approved (+ audit)", n / 10, n, 1, || {
        let id = pending.pop().unwrap();
        let (from, to) = (ApprovalState::Pending, ApprovalState::Approved);
        store.transition_approval(id, from, to, "alice", None, Timestamp(3_000), &note).unwrap();
    }));
    let mut approved = created[created.len() - n - n / 10..].to_vec();
    results.push(measure("approval approved -> executed (+ audit)", n / 10, n, 1, || {
        let id = approved.pop().unwrap();
        let (from, to) = (ApprovalState::Approved, ApprovalState::Executed);
        store.transition_approval(id, from, to, "macha", Some("ok"), Timestamp(4_000), &note).unwrap();
    }));

    let total = store.last_audit_id().unwrap();
    let n = 200 / scale.min(10);
    results.push(measure("audit query: newest 100 of a host (rows read)", n / 10, n, 100, || {
        let query = AuditQuery {
            host: Some("local".into()),
            order: Order::NewestFirst,
            limit: Some(100),
            ..Default::default()
        };
        assert_eq!(store.query_audit(&query).unwrap().len(), 100);
    }));

    println!();
    println!(
        "macha-store: SQLite {}, journal_mode=WAL, synchronous=FULL, {total} audit records at the end",
        macha_store::sqlite_version()
    );
    println!("database under {}", base.display());
    println!();
    println!(
        "| {:<46} | {:>7} | {:>9} | {:>9} | {:>9} | {:>10} |",
        "operation", "commits", "records/s", "p50", "p99", "p99/record"
    );
    println!("|{:-<48}|{:-<9}|{:-<11}|{:-<11}|{:-<11}|{:-<12}|", "", "", "", "", "", "");
    for m in &results {
        let rate = (m.calls * m.per_call) as f64 / m.elapsed.as_secs_f64();
        let p99 = m.percentile(0.99);
        let per_record = p99 / u32::try_from(m.per_call).unwrap();
        println!(
            "| {:<46} | {:>7} | {:>9.0} | {:>9} | {:>9} | {:>10} |",
            m.name,
            m.calls,
            rate,
            fmt(m.percentile(0.5)),
            fmt(p99),
            fmt(per_record)
        );
    }
    println!();
    if !full {
        println!("(smoke run; `cargo bench -p macha-store` gives the real figures)");
    }
}
