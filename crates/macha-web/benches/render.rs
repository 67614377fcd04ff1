//! Page render times of the web console: the fleet page with 50 and 500 hosts, the issue list
//! with 10,000 issues, the host page with 30 days of charts. Rendering only (the pages are pure functions of `macha-api` types); the
//! daemon's answers are measured by the socket benchmarks. Prints a table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use macha_api::Tier;
use macha_api::metrics::MetricPointView;
use macha_api::reply::{IssueView, Severity};
use macha_core::Timestamp;
use macha_core::issue::IssueState;
use macha_web::User;
use macha_web::pages::{self, FleetRow, HostMetrics, IssueFilter, Range};
use std::time::{Duration, Instant};

fn rows(n: usize) -> Vec<FleetRow> {
    (0..n)
        .map(|i| FleetRow {
            name: format!("host{i:04}.example.org"),
            standing: "trusted".into(),
            status: if i % 7 == 0 { "degraded".into() } else { "ok".into() },
            last_contact: Some(Timestamp::from_secs(1_790_000_000 + i as i64)),
            open_issues: i % 3,
            last_deployment: Some("executed (2026-11-30 10:00:00 UTC)".into()),
            anomaly_rate: (i % 4 != 0).then_some((i % 50) as f64 * 0.7),
        })
        .collect()
}

fn issues(n: usize) -> Vec<IssueView> {
    (0..n)
        .map(|i| IssueView {
            id: i as i64 + 1,
            host: format!("host{:04}", i % 500),
            check_name: "unit_failed".into(),
            subject: format!("app{i}.service"),
            severity: Severity::ALL[i % 5],
            summary: format!("app{i}.service entered failed <after> a restart & \"more\""),
            state: IssueState::Open,
            since: Timestamp::from_secs(1_790_000_000),
            first_seen: Timestamp::from_secs(1_790_000_000),
            last_seen: Timestamp::from_secs(1_790_000_100),
            recurrences: 0,
            resolution: None,
        })
        .collect()
}

/// The host page's charts over 30 days: every planned line with a 5-minute bucket each (8,640
/// points, as `metrics_read` answers for that range), four filesystems.
fn host_metrics() -> HostMetrics {
    let until = Timestamp::from_secs(1_790_000_000);
    let since = until.minus(Duration::from_secs(Range::D30.secs()));
    let names: Vec<String> = (0..4).map(|i| format!("fs.used_percent:/srv{i}")).collect();
    let mut charts = pages::chart_plan(&names);
    for (k, s) in charts.iter_mut().flat_map(|c| c.series.iter_mut()).enumerate() {
        s.points = (0..8_640)
            .map(|i| {
                let v = 40.0 + 20.0 * ((i as f64 / 288.0 + k as f64) * std::f64::consts::TAU).sin();
                MetricPointView {
                    ts: since.plus(Duration::from_secs(i * 300)),
                    span_secs: 300,
                    min: v - 1.0,
                    max: v + 1.0,
                    mean: v,
                    count: 5,
                }
            })
            .collect();
    }
    HostMetrics { range: Range::D30, since, until, charts }
}

fn measure(rounds: usize, mut f: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        bytes = std::hint::black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[rounds / 2], times[(rounds * 99 / 100).min(rounds - 1)], bytes)
}

fn main() {
    let user = User { name: "alice (uid 1000) via web".into(), tier: Tier::Admin };
    println!("{:<34} {:>7} {:>10} {:>10} {:>10}", "page", "rounds", "p50", "p99", "bytes");
    for n in [50, 500] {
        let r = rows(n);
        let (p50, p99, bytes) = measure(200, || pages::fleet(Some(&user), None, &r, 3).into_string().len());
        println!("{:<34} {:>7} {:>10.2?} {:>10.2?} {:>10}", format!("fleet, {n} hosts"), 200, p50, p99, bytes);
    }
    let m = host_metrics();
    let lines: usize = m.charts.iter().map(|c| c.series.len()).sum();
    let (p50, p99, bytes) =
        measure(200, || pages::host(Some(&user), "host0001", None, None, Some(&m), &[]).into_string().len());
    println!("{:<34} {:>7} {:>10.2?} {:>10.2?} {:>10}", format!("host, 30 d, {lines} lines"), 200, p50, p99, bytes);
    let list = issues(10_000);
    let filter = IssueFilter::default();
    let (p50, p99, bytes) = measure(30, || pages::issues(Some(&user), &filter, &list).into_string().len());
    println!("{:<34} {:>7} {:>10.2?} {:>10.2?} {:>10}", "issue list, 10,000 issues", 30, p50, p99, bytes);
}
