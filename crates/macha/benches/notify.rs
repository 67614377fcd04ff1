//! Notification latency, printed as a table (not a timed test): from a unit entering `failed` on
//! the lab's real systemd (`tests/lab/systemd-user.sh up`) to a fake ntfy server
//! (`macha_notify::testing`) accepting the critical message, through the real daemon (critical
//! group wait 0), and to the audit record the message comes from. Each failure is a unit of its
//! own, so each is a new incident.
//!
//! `MACHA_BENCH_FAILURES` sets the number of failures (default 25).

#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use macha_notify::testing::FakeServer;
use macha_store::{AuditKind, AuditQuery, Store};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::daemon::TestDaemon;

fn manager(address: &str, method: &str, sig: &str, args: &[&str]) -> bool {
    let mut a = vec![
        format!("--address={address}"),
        "call".into(),
        "org.freedesktop.systemd1".into(),
        "/org/freedesktop/systemd1".into(),
        "org.freedesktop.systemd1.Manager".into(),
        method.into(),
        sig.into(),
    ];
    a.extend(args.iter().map(|s| (*s).to_owned()));
    Command::new("busctl").args(&a).output().map(|o| o.status.success()).unwrap_or(false)
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

fn main() {
    let dir =
        std::path::PathBuf::from(std::env::var("MACHA_LAB_SDUSER").unwrap_or_else(|_| "/run/macha-lab/sduser".into()));
    let bus = dir.join("xdg/bus");
    if !bus.exists() {
        println!("notifications: the lab systemd is not up (tests/lab/systemd-user.sh up); nothing measured");
        return;
    }
    let address = format!("unix:path={}", bus.display());
    let n: usize = std::env::var("MACHA_BENCH_FAILURES").ok().and_then(|v| v.parse().ok()).unwrap_or(25);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let ntfy = rt.block_on(FakeServer::ntfy(None)).unwrap_or_else(|e| panic!("fake ntfy: {e}"));
    let units: Vec<String> = (0..n).map(|i| format!("nbench-{}-{i}.service", std::process::id())).collect();
    for u in &units {
        let file = dir.join(format!("home/.config/systemd/user/{u}"));
        std::fs::write(&file, "[Service]\nExecStart=/bin/sleep infinity\n")
            .unwrap_or_else(|e| panic!("unit file: {e}"));
    }
    manager(&address, "Reload", "", &[]);
    let daemon = TestDaemon::builder()
        .autonomy("observe")
        .interval("1h")
        .bus(Some(&address))
        .tables(&format!(
            "[notifications.ntfy]\nurl = \"{}\"\ntopic = \"bench\"\nmin_severity = \"critical\"\n",
            ntfy.url()
        ))
        .wait_for_first_cycle()
        .start();
    let mut to_channel = Vec::new();
    let mut to_audit = Vec::new();
    for u in &units {
        manager(&address, "StartUnit", "ss", &[u, "replace"]);
        std::thread::sleep(Duration::from_millis(300));
        let before = ntfy.accepted().len();
        let t0 = now_ms();
        let started = Instant::now();
        manager(&address, "KillUnit", "ssi", &[u, "main", "9"]);
        while started.elapsed() < Duration::from_secs(10) {
            if ntfy.accepted().len() > before {
                to_channel.push((now_ms() - t0) as f64);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Ok(store) = Store::open_read_only(daemon.db()) {
            let q = AuditQuery { kinds: vec![AuditKind::Finding], subject: Some(u.clone()), ..AuditQuery::default() };
            if let Some(r) = store.query_audit(&q).ok().and_then(|v| v.into_iter().next()) {
                to_audit.push((r.ts.millis() - t0) as f64);
            }
        }
    }
    for u in &units {
        manager(&address, "StopUnit", "ss", &[u, "replace"]);
        manager(&address, "ResetFailedUnit", "s", &[u]);
        let _ = std::fs::remove_file(dir.join(format!("home/.config/systemd/user/{u}")));
    }
    manager(&address, "Reload", "", &[]);
    drop(daemon);
    to_channel.sort_by(f64::total_cmp);
    to_audit.sort_by(f64::total_cmp);
    println!("| notification latency (critical, group wait 0) | n | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (what, s) in
        [("unit failed → finding's audit record", &to_audit), ("unit failed → ntfy accepted the message", &to_channel)]
    {
        println!(
            "| {what} | {} | {:.0} | {:.0} | {:.0} |",
            s.len(),
            pct(s, 0.5),
            pct(s, 0.99),
            s.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!("({} of {n} failures reached the channel within 10 s)", to_channel.len());
}
