//! The `/metrics` exposition for a large fleet: how long publishing one host's cycle takes and
//! how long rendering the whole registry takes (OpenMetrics, and the Prometheus text format that
//! the textfile and most scrapers get), for 500 hosts with 5 filesystems each, their open issues,
//! and Macha's own families filled. Printed as a table.
//!
//! `cargo bench -p macha-prom --bench render`; run as a test (without `--bench`) it renders a few
//! times only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_prom::{HostSample, Limits, Metrics};
use std::time::{Duration, Instant};

const HOSTS: usize = 500;

fn sample(i: usize) -> HostSample {
    HostSample {
        up: !i.is_multiple_of(50),
        contact_unix_secs: 1_700_000_000.0 + i as f64,
        cycle_secs: 0.2 + (i % 7) as f64 / 10.0,
        cpu_ratio: Some((i % 100) as f64 / 100.0),
        memory_total_bytes: Some(16 << 30),
        memory_available_bytes: Some((4 << 30) + (i as u64) * 1_000_000),
        load: Some([0.5, 0.75, 1.0]),
        pressure: vec![
            ("cpu", "some", 0.01),
            ("memory", "some", 0.0),
            ("memory", "full", 0.0),
            ("io", "some", 0.02),
            ("io", "full", 0.01),
        ],
        filesystems: ["/", "/nix", "/var", "/home", "/boot"]
            .iter()
            .map(|m| ((*m).to_owned(), 0.4 + (i % 50) as f64 / 100.0))
            .collect(),
        failed_units: Some((i % 3) as u64),
        unavailable_sections: 0,
    }
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (ms(at(0.5)), ms(at(0.99)), ms(*v.last().unwrap()))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench { 200 } else { 3 };
    let m = Metrics::new(Limits::default(), Duration::from_secs(60), 1_700_000_000.0);
    let mut publish = Vec::with_capacity(HOSTS);
    for i in 0..HOSTS {
        let host = format!("host{i:03}.example.org");
        let s = sample(i);
        let t = Instant::now();
        m.host(&host, &s);
        m.open_issues(&host, &[("warning", (i % 4) as u64), ("critical", u64::from(i.is_multiple_of(9)))]);
        publish.push(t.elapsed());
    }
    for i in 0..1000 {
        m.loop_turn(Duration::from_micros(200 + i));
    }
    let now = 1_700_000_600.0;
    let (mut om, mut text) = (Vec::new(), Vec::new());
    let (mut om_bytes, mut text_bytes) = (0, 0);
    for _ in 0..rounds {
        let t = Instant::now();
        om_bytes = m.render_openmetrics(now).len();
        om.push(t.elapsed());
        let t = Instant::now();
        text_bytes = m.render_text(now).len();
        text.push(t.elapsed());
    }
    let series = m.render_text(now).lines().filter(|l| !l.starts_with('#')).count();
    println!("/metrics for {HOSTS} hosts (5 filesystems each): {series} samples");
    println!();
    println!("| what | p50 | p99 | max | size |");
    println!("|---|---|---|---|---|");
    let (a, b, c) = stats(publish);
    println!(
        "| publish one host's cycle (sample + open issues) | {:.1} µs | {:.1} µs | {:.1} µs | — |",
        a * 1000.0,
        b * 1000.0,
        c * 1000.0
    );
    let (a, b, c) = stats(om);
    println!("| render OpenMetrics | {a:.2} ms | {b:.2} ms | {c:.2} ms | {:.0} KiB |", om_bytes as f64 / 1024.0);
    let (a, b, c) = stats(text);
    println!(
        "| render Prometheus text 0.0.4 (textfile, default scrape) | {a:.2} ms | {b:.2} ms | {c:.2} ms | {:.0} KiB |",
        text_bytes as f64 / 1024.0
    );
}
