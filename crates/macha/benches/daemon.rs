//! Daemon benchmarks, printed as a table (not timed tests):
//!
//! - unit enters `failed` → finding recorded (needs the lab systemd: `tests/lab/systemd-user.sh up`);
//! - daemon idle RSS and CPU at a 30 s interval (with the lab systemd if it is up, else without).
//!
//! `MACHA_BENCH_IDLE_SECS` sets the idle measurement window (default 120 s).

#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use macha_store::{AuditKind, AuditQuery, Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::daemon::TestDaemon;

fn lab_bus() -> Option<(PathBuf, String)> {
    let dir = PathBuf::from(std::env::var("MACHA_LAB_SDUSER").unwrap_or_else(|_| "/run/macha-lab/sduser".into()));
    let sock = dir.join("xdg/bus");
    sock.exists().then(|| (dir, format!("unix:path={}", sock.display())))
}

fn busctl(address: &str, args: &[&str]) -> bool {
    Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn manager(address: &str, method: &str, sig: &str, args: &[&str]) -> bool {
    let mut a = vec![
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        method,
        sig,
    ];
    a.extend_from_slice(args);
    busctl(address, &a)
}

/// The daemon at `autonomy`, cycling every `interval`, on the systemd at `bus` (or without
/// systemd); stopped (SIGTERM, then wait) when dropped, on every path.
fn start_daemon(autonomy: &str, interval: &str, bus: Option<&str>) -> TestDaemon {
    TestDaemon::builder().autonomy(autonomy).interval(interval).bus(bus).start()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn failed_to_finding(lab_dir: &Path, address: &str) -> Option<(usize, f64, f64, f64)> {
    let name = format!("mbench-{}", std::process::id());
    let unit = format!("{name}.service");
    let file = lab_dir.join(format!("home/.config/systemd/user/{unit}"));
    // No start rate limit: the bench starts the unit 50 times in a few seconds.
    std::fs::write(&file, "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sleep infinity\n").ok()?;
    manager(address, "Reload", "", &[]);
    let daemon = start_daemon("observe", "1h", Some(address));
    let db = daemon.db();
    std::thread::sleep(Duration::from_secs(1));
    let mut samples = Vec::new();
    let mut last_id = 0i64;
    for _ in 0..50 {
        manager(address, "StartUnit", "ss", &[&unit, "replace"]);
        std::thread::sleep(Duration::from_millis(300));
        // The unit is active again: let the daemon resolve the issue before the next failure.
        let t0 = now_ms();
        manager(address, "KillUnit", "ssi", &[&unit, "main", "9"]);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let store = Store::open_read_only(&db).ok()?;
            let recs = store
                .query_audit(&AuditQuery {
                    kinds: vec![AuditKind::Finding, AuditKind::Issue],
                    after_id: Some(last_id),
                    ..AuditQuery::default()
                })
                .ok()?;
            if let Some(r) = recs.iter().find(|r| {
                r.subject.as_deref() == Some(unit.as_str())
                    && (r.kind == AuditKind::Finding || r.summary.contains("came back"))
            }) {
                samples.push((r.ts.millis() - t0) as f64);
                last_id = recs.last().map_or(last_id, |x| x.id);
                break;
            }
            if let Some(x) = recs.last() {
                last_id = x.id;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    manager(address, "StopUnit", "ss", &[&unit, "replace"]);
    manager(address, "ResetFailedUnit", "s", &[&unit]);
    let _ = std::fs::remove_file(&file);
    manager(address, "Reload", "", &[]);
    drop(daemon);
    samples.sort_by(f64::total_cmp);
    Some((samples.len(), pct(&samples, 0.5), pct(&samples, 0.99), samples.last().copied().unwrap_or(f64::NAN)))
}

fn idle(bus: Option<&str>, secs: u64) -> (f64, f64, f64) {
    let daemon = start_daemon("suggest", "30s", bus);
    let pid = daemon.pid();
    std::thread::sleep(Duration::from_secs(5));
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
    };
    let rss_kib = || -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let t0 = Instant::now();
    let c0 = ticks();
    let mut max_rss = rss_kib();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        max_rss = max_rss.max(rss_kib());
    }
    let c1 = ticks();
    let tps = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let cpu = 100.0 * ((c1 - c0) as f64 / tps) / t0.elapsed().as_secs_f64();
    let end_rss = rss_kib();
    drop(daemon);
    (end_rss / 1024.0, max_rss / 1024.0, cpu)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = std::env::var("MACHA_BENCH_IDLE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    println!("{:<44} {:>12} {:>12} {:>12}", "figure", "median/end", "p99/max", "budget");
    match lab_bus() {
        Some((dir, address)) => match failed_to_finding(&dir, &address) {
            Some((n, p50, p99, max)) => println!(
                "{:<44} {:>9.1} ms {:>9.1} ms {:>12}",
                format!("unit failed → finding recorded (n={n}, max {max:.0} ms)"),
                p50,
                p99,
                "p99 < 100 ms"
            ),
            None => println!("{:<44} {:>12}", "unit failed → finding recorded", "error"),
        },
        None => println!("{:<44} {:>12}", "unit failed → finding recorded", "no lab systemd"),
    }
    let bus = lab_bus().map(|(_, a)| a);
    let (rss, max_rss, cpu) = idle(bus.as_deref(), secs);
    let with = if bus.is_some() { "with lab systemd" } else { "without systemd" };
    println!(
        "{:<44} {:>8.1} MiB {:>8.1} MiB {:>12}",
        format!("daemon idle RSS, 30 s interval ({with})"),
        rss,
        max_rss,
        "≤ 15 MiB"
    );
    println!("{:<44} {:>10.3} % {:>12} {:>12}", format!("daemon idle CPU over {secs} s"), cpu, "", "≤ 0.2 %");
}
