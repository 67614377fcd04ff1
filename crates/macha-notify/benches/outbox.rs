//! Notification throughput and memory: outbox enqueue (one message per commit and batches), the
//! deliverer draining the outbox to the fake webhook receiver over HTTP (two durable commits per
//! message: claimed, then sent), the router's speed, and the resident memory of the process with
//! 10,000 messages queued.
//!
//! `cargo bench -p macha-notify` prints a table. Run without `--bench` (as a test) it only does a
//! quick smoke pass. The database lives under Cargo's target tmp directory, or under
//! `MACHA_BENCH_DIR` when set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_core::Timestamp;
use macha_notify::testing::FakeServer;
use macha_notify::{
    ChannelConfig, ChannelKind, Deliverer, Event, EventKind, Outgoing, Priority, RateLimit, Route, Router,
    RouterConfig, Severity, enqueue,
};
use macha_store::Store;
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn message(i: usize, channel: &str) -> Outgoing {
    Outgoing {
        message_id: format!("m-{i:08}"),
        channel: channel.to_owned(),
        title: format!("nginx.service failed on web{}", i % 50),
        body: "**nginx.service** entered `failed` (exit-code, status 1). The last journal lines:\n\n    bind() to \
               0.0.0.0:80 failed (98: Address already in use)"
            .to_owned(),
        priority: Priority::High,
        link: Some(format!("https://macha.example/issues/{i}")),
        tags: vec!["rotating_light".to_owned(), "issue_opened".to_owned()],
        why: "critical issue opened; sent at once (critical group_wait 0)".to_owned(),
        host: format!("web{}", i % 50),
        group_key: format!("web{}/unit/nginx.service", i % 50),
        kind: EventKind::IssueOpened,
        severity: Severity::Critical,
        at: Timestamp(1_700_000_000_000 + i as i64),
    }
}

fn row(name: &str, n: usize, elapsed: Duration) {
    let per_s = n as f64 / elapsed.as_secs_f64();
    let per = elapsed / u32::try_from(n.max(1)).unwrap_or(1);
    println!("| {name:<52} | {n:>6} | {per_s:>10.0} | {:>9.3} ms |", per.as_secs_f64() * 1e3);
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 20 };
    let base = std::env::var_os("MACHA_BENCH_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")), std::path::PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let mut store = Store::open(dir.path().join("bench.db")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Memory first, in a fresh process: 10,000 messages queued in the outbox (on disk; the process
    // keeps none of them), generated and enqueued 500 at a time.
    let rss_start = rss_kib();
    let (rss_queued, due_rows, pending, db_kib) = {
        let mut store = Store::open(dir.path().join("memory.db")).unwrap();
        for chunk in 0..20 {
            let msgs: Vec<Outgoing> = (0..500).map(|i| message(1_000_000 + chunk * 500 + i, "later")).collect();
            enqueue(&mut store, &msgs, &[]).unwrap();
        }
        let due = store.outbox_due(Timestamp(1_800_000_000_000), 200).unwrap();
        let rss = rss_kib();
        let db = std::fs::metadata(dir.path().join("memory.db")).map(|m| m.len() / 1024).unwrap_or(0);
        (rss, due.len(), store.outbox_pending_count().unwrap(), db)
    };

    println!("| operation                                            |      n |  per second |  mean each   |");
    println!("|------------------------------------------------------|--------|-------------|--------------|");
    let n = 500 / scale;
    let t = Instant::now();
    for i in 0..n {
        enqueue(&mut store, &[message(i, "hook")], &[]).unwrap();
    }
    row("enqueue, 1 message per commit", n, t.elapsed());

    let batches = 100 / scale;
    let t = Instant::now();
    for b in 0..batches {
        let msgs: Vec<Outgoing> = (0..100).map(|i| message(100_000 + b * 100 + i, "hook")).collect();
        enqueue(&mut store, &msgs, &[]).unwrap();
    }
    row("enqueue, batch of 100 per commit (per message)", batches * 100, t.elapsed());

    let queued = store.outbox_pending_count().unwrap() as usize;
    let server = rt.block_on(FakeServer::webhook(Some(b"bench-key"))).unwrap();
    let key = dir.path().join("hook.key");
    std::fs::write(&key, "bench-key").unwrap();
    let mut cfg = ChannelConfig::new("hook", ChannelKind::Webhook { url: server.url() })
        .with_secret(macha_notify::SecretFile::new(&key));
    cfg.rate = RateLimit::UNLIMITED;
    let now = Timestamp(1_800_000_000_000);
    let mut d = Deliverer::new(vec![cfg], now).unwrap();
    let t = Instant::now();
    let mut sent = 0;
    while sent < queued {
        let r = rt.block_on(d.deliver_once(&mut store, now)).unwrap();
        assert_eq!((r.retried, r.dead), (0, 0), "{r:?}");
        sent += r.sent as usize;
        if r.sent == 0 {
            break;
        }
    }
    row("deliver to the fake webhook (HTTP + 2 commits)", sent, t.elapsed());
    assert_eq!(server.accepted().len(), sent);

    let mut router = Router::new(RouterConfig {
        routes: vec![Route { channel: "hook".into(), filter: Default::default() }],
        ..RouterConfig::default()
    });
    let n = 20_000 / scale;
    let t = Instant::now();
    let mut produced = 0;
    for i in 0..n {
        let at = Timestamp(1_700_000_000_000 + i as i64 * 10);
        let ev = Event {
            kind: if i % 3 == 2 { EventKind::IssueResolved } else { EventKind::IssueOpened },
            severity: if i % 5 == 0 { Severity::Critical } else { Severity::Warning },
            host: format!("web{}", i % 200),
            group_key: format!("web{}/unit/u{}", i % 200, i % 1_000),
            title: "unit failed".into(),
            body: "body".into(),
            link: None,
            at,
            source: None,
        };
        produced += router.on_event(at, ev).len();
        if i % 100 == 0 {
            produced += router.tick(at).len();
        }
    }
    row(&format!("router on_event (1,000 incidents; {produced} messages)"), n, t.elapsed());

    println!();
    println!(
        "RSS: {rss_start} KiB before queueing 10,000 messages, {rss_queued} KiB after (and one due() page of {due_rows} \
         rows; {pending} pending; database {db_kib} KiB); {} KiB at the end",
        rss_kib()
    );
}
