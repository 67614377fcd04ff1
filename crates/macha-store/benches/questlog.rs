//! The quest log's search over a year of a 50-host fleet: `Store::search_audit` (FTS5 over the
//! audit trail) latency, p50 / p99 / max over repeated queries, printed as a table.
//!
//! What a year keeps: the audit trail is never deleted by age (decision 0005: only an exported,
//! proven prune removes records), while history rows, prompts and cached outputs are. A healthy
//! cycle writes no audit record; the trail grows by what happens. The fleet simulated here has,
//! per host and day, two incidents of seven records each (finding, issue opened, decision,
//! action, outcome with command output, issue resolved, and an approval or alert), and two
//! records of other kinds (a daemon or configuration record, a denial): 16 records per host and
//! day, 292,000 for 50 hosts and 365 days, written through the real append path (hash chain and
//! FTS triggers) in batches of 2,000.
//!
//! `cargo bench -p macha-store --bench questlog` prints the table; run as a test (without
//! `--bench`) it simulates 10 days only. The database lives under Cargo's target tmp directory,
//! or under `MACHA_BENCH_DIR` when set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_core::Timestamp;
use macha_store::{AuditKind, LogSearch, NewAudit, Severity, Store};
use std::time::{Duration, Instant};

const HOSTS: usize = 50;
const DAY_MS: i64 = 86_400_000;
const UNITS: [&str; 12] = [
    "nginx.service",
    "postgresql.service",
    "php-fpm.service",
    "redis.service",
    "sshd.service",
    "prometheus-node-exporter.service",
    "backup.timer",
    "nix-gc.service",
    "systemd-resolved.service",
    "docker.service",
    "grafana.service",
    "cron.service",
];
const OUTPUTS: [&str; 6] = [
    "bind() to 0.0.0.0:80 failed (98: Address already in use)",
    "FATAL: could not open file \"pg_wal/000000010000000A00000042\": No space left on device",
    "error: cannot delete path '/nix/store/abc-foo': Permission denied",
    "Job for redis.service failed because the control process exited with error code.",
    "OOM killer terminated process 4242 (php-fpm) total-vm:2048000kB",
    "certificate verify failed: certificate has expired",
];

fn records(day: i64, start: i64) -> Vec<NewAudit> {
    let mut out = Vec::with_capacity(HOSTS * 16);
    for h in 0..HOSTS {
        let host = format!("host{h:02}.example.org");
        for incident in 0..2_i64 {
            let k = (day as usize * 7 + h * 3 + incident as usize) % UNITS.len();
            let unit = UNITS[k];
            let output = OUTPUTS[(k + h) % OUTPUTS.len()];
            let t = start + day * DAY_MS + (h as i64) * 60_000 + incident * 6 * 3_600_000;
            let corr = format!("corr-{day}-{h}-{incident}");
            let rec = |dt: i64, kind: AuditKind, sev: Severity, summary: String, payload: serde_json::Value| {
                NewAudit::new(Timestamp(t + dt), kind, sev, host.clone(), summary)
                    .with_correlation_id(corr.clone())
                    .with_subject(unit)
                    .with_payload(payload)
            };
            out.push(rec(
                0,
                AuditKind::Finding,
                Severity::Error,
                format!("new issue: unit {unit} failed (result: exit-code)"),
                serde_json::json!({"check": "unit"}),
            ));
            out.push(rec(
                1,
                AuditKind::Issue,
                Severity::Error,
                format!("issue opened: unit {unit} failed"),
                serde_json::Value::Null,
            ));
            out.push(rec(
                2,
                AuditKind::Decision,
                Severity::Info,
                format!("execute: restart_unit {unit} (auto-safe)"),
                serde_json::json!({"verdict": "execute", "risk": "low"}),
            ));
            out.push(rec(
                3,
                AuditKind::Action,
                Severity::Info,
                format!("restart_unit {unit} started"),
                serde_json::Value::Null,
            ));
            out.push(rec(
                4_000,
                AuditKind::Outcome,
                Severity::Notice,
                format!("restart_unit {unit} succeeded and verified: systemctl exited with status 0"),
                serde_json::json!({"succeeded": true, "verified": true, "output": output}),
            ));
            out.push(rec(
                60_000,
                AuditKind::Issue,
                Severity::Notice,
                format!("issue resolved: unit {unit} is active again"),
                serde_json::Value::Null,
            ));
            out.push(rec(
                60_001,
                AuditKind::Alert,
                Severity::Warning,
                format!("{unit} restarted on {host}"),
                serde_json::Value::Null,
            ));
        }
        let t = start + day * DAY_MS + 20 * 3_600_000;
        out.push(NewAudit::new(
            Timestamp(t),
            AuditKind::Config,
            Severity::Info,
            host.clone(),
            "configuration reloaded (autonomy auto-safe)",
        ));
        out.push(
            NewAudit::new(
                Timestamp(t + 1),
                AuditKind::AuthDenied,
                Severity::Warning,
                host.clone(),
                "denied approve for uid 1000 (viewer)",
            )
            .with_payload(serde_json::json!({"uid": 1000})),
        );
    }
    out
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (ms(at(0.5)), ms(at(0.99)), ms(*v.last().unwrap()))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let days: i64 = if bench { 365 } else { 10 };
    let base = std::env::var_os("MACHA_BENCH_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")), Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().join("questlog.db");
    let mut store = Store::open(&path).unwrap();
    let start = 1_700_000_000_000_i64;
    let written = Instant::now();
    let mut n = 0usize;
    let mut batch = Vec::new();
    for day in 0..days {
        batch.extend(records(day, start));
        if batch.len() >= 2_000 || day == days - 1 {
            n += batch.len();
            store.append_audit_batch(&batch).unwrap();
            batch.clear();
        }
    }
    let write_secs = written.elapsed().as_secs_f64();
    drop(store);
    let size = std::fs::metadata(&path).unwrap().len();
    let store = Store::open_read_only(&path).unwrap();
    let end = start + days * DAY_MS;
    let week = Some(Timestamp(end - 7 * DAY_MS));
    let queries: Vec<(&str, LogSearch)> = vec![
        ("common word: \"nginx\"", LogSearch { text: "nginx".into(), limit: 50, ..LogSearch::default() }),
        (
            "phrase in output: \"no space left\"",
            LogSearch { text: "no space left".into(), limit: 50, ..LogSearch::default() },
        ),
        (
            "rare word: \"expired\" on one host",
            LogSearch {
                text: "expired".into(),
                host: Some("host07.example.org".into()),
                limit: 50,
                ..LogSearch::default()
            },
        ),
        (
            "\"postgresql\" in the last 7 days",
            LogSearch { text: "postgresql".into(), since: week, limit: 50, ..LogSearch::default() },
        ),
        (
            "\"restart\" outcomes only",
            LogSearch { text: "restart".into(), kinds: vec![AuditKind::Outcome], limit: 50, ..LogSearch::default() },
        ),
        ("no match: \"kubernetes\"", LogSearch { text: "kubernetes".into(), limit: 50, ..LogSearch::default() }),
        ("hostile: \"NEAR(\\\"a* OR\"", LogSearch { text: "NEAR(\"a* OR".into(), limit: 50, ..LogSearch::default() }),
    ];
    let rounds = if bench { 30 } else { 3 };
    println!(
        "quest log search: {n} audit records ({days} days, {HOSTS} hosts), written in {write_secs:.1} s ({:.0} records/s); database {:.1} MiB",
        n as f64 / write_secs,
        size as f64 / 1048576.0
    );
    println!();
    println!("| query | hits | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, q) in &queries {
        let mut times = Vec::new();
        let mut hits = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            hits = store.search_audit(q).unwrap().len();
            times.push(t.elapsed());
        }
        let (p50, p99, max) = stats(times);
        println!("| {name} | {hits} | {p50:.1} ms | {p99:.1} ms | {max:.1} ms |");
    }
}
