//! Cost of one local snapshot on this machine: `LocalObserver::collect` end to end, then each
//! section on its own so a slow one stands out.
//!
//! Budget: median and p99 of `collect` at most 10 ms. Run with `cargo bench -p macha-observe
//! --bench snapshot`; set `MACHA_BENCH_ITERATIONS` to change the number of rounds (default 500).
//!
//! On a busy machine the wall-clock tail is mostly time spent waiting for a CPU, not time spent
//! observing. The `collect, on CPU` row subtracts the thread's run-queue wait (from
//! `/proc/thread-self/schedstat`) to tell the two apart.

use macha_core::{HostName, Timestamp};
use macha_observe::{LocalObserver, ObserveConfig};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WARM_UP: usize = 20;
const BUDGET_MS: f64 = 10.0;

fn now() -> Timestamp {
    let ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(ms)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Stats {
    median: f64,
    p99: f64,
    max: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().map_or(f64::NAN, ms)
    };
    Stats { median: at(0.5), p99: at(0.99), max: at(1.0) }
}

/// Nanoseconds this thread has spent runnable but waiting for a CPU, if the kernel reports it.
fn run_queue_wait() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok().map(Duration::from_nanos)
}

fn time<T>(samples: &mut Vec<Duration>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    samples.push(started.elapsed());
    std::hint::black_box(out)
}

fn main() {
    let iterations: usize = std::env::var("MACHA_BENCH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let mut observer = LocalObserver::new(ObserveConfig::system());
    let host = HostName::local();

    for _ in 0..WARM_UP {
        std::hint::black_box(observer.collect(host.clone(), now()));
    }

    let mut collect = Vec::with_capacity(iterations);
    let mut on_cpu = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let waited_before = run_queue_wait();
        time(&mut collect, || observer.collect(host.clone(), now()));
        if let (Some(before), Some(after), Some(wall)) = (waited_before, run_queue_wait(), collect.last()) {
            on_cpu.push(wall.saturating_sub(after.saturating_sub(before)));
        }
    }

    const SECTIONS: [&str; 9] =
        ["cpu", "memory", "load", "pressure", "filesystems", "network", "processes", "nix", "hardware"];
    let mut per_section: Vec<Vec<Duration>> = (0..SECTIONS.len()).map(|_| Vec::with_capacity(iterations)).collect();
    for _ in 0..iterations {
        let t = now();
        time(&mut per_section[0], || observer.cpu(t));
        time(&mut per_section[1], || observer.memory());
        time(&mut per_section[2], || observer.load());
        time(&mut per_section[3], || observer.pressure());
        time(&mut per_section[4], || observer.filesystems());
        time(&mut per_section[5], || observer.network());
        time(&mut per_section[6], || observer.processes(t));
        time(&mut per_section[7], || observer.nix());
        time(&mut per_section[8], || observer.hardware());
    }

    let snapshot = observer.collect(host, now());
    let processes = snapshot.processes.data().map_or(0, |p| p.total);
    let filesystems = snapshot.filesystems.data().map_or(0, Vec::len);
    println!(
        "local snapshot: {iterations} rounds after {WARM_UP} warm-up; {processes} processes, {filesystems} filesystems"
    );
    for (section, reason) in snapshot.unavailable_sections() {
        println!("  unavailable here: {section}: {reason}");
    }
    println!();
    println!("{:<16} {:>10} {:>10} {:>10}", "what", "median ms", "p99 ms", "max ms");
    let c = stats(collect);
    println!("{:<16} {:>10.3} {:>10.3} {:>10.3}", "collect", c.median, c.p99, c.max);
    if on_cpu.len() == iterations {
        let o = stats(on_cpu);
        println!("{:<16} {:>10.3} {:>10.3} {:>10.3}", "collect, on CPU", o.median, o.p99, o.max);
    }
    for (name, samples) in SECTIONS.iter().zip(per_section) {
        let s = stats(samples);
        println!("{:<16} {:>10.3} {:>10.3} {:>10.3}", format!("  {name}"), s.median, s.p99, s.max);
    }
    let verdict = if c.median <= BUDGET_MS && c.p99 <= BUDGET_MS { "within" } else { "OVER" };
    println!("\ncollect median and p99 {verdict} the {BUDGET_MS} ms budget");
}
