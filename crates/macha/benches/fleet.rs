//! Fleet benchmark, printed as a table (not timed tests), against the netns sshd hosts of
//! `tests/lab/netns-sshd.sh up N` (h1..hN, each a real sshd in its own network namespace):
//!
//! 1. The SSH layer alone: `macha_ssh::probe::observe` of every healthy host at once
//!    (parallelism as the daemon's default, 16), cycle after cycle: the first cycle (connects and
//!    first contacts), then the steady cycles, and the SSH connections opened per cycle after the
//!    first.
//! 2. The real `macha daemon` with the N hosts configured, a share of them black-holed (nft drop
//!    on port 22, `netns-sshd.sh block`) before it starts. Cycles are the daemon's ticks (its local
//!    snapshot records): a remote result belongs to the last tick before its probe started, and
//!    its lateness is its arrival minus that tick. Reported: the first cycle (from the first tick
//!    to the last healthy host's first result: connects and first contacts), the steady cycles'
//!    spans and the healthy hosts' lateness, how long healthy hosts waited for a slot, the
//!    attempts on black-holed hosts, the controller's CPU per host per cycle (the daemon and its
//!    `ssh` masters, from `/proc/<pid>/stat`), its memory (`VmHWM`, `VmRSS`) and its masters'.
//!
//! `MACHA_LAB_NETNS` (default `/run/macha-lab/netns`) and `MACHA_LAB` (default
//! `/var/cache/macha-lab`) find the lab; `MACHA_BENCH_HOSTS` (default 50), `MACHA_BENCH_CYCLES`
//! (default 6), `MACHA_BENCH_INTERVAL` (seconds between ticks, default 10) and
//! `MACHA_BENCH_BLACKHOLED` (percent of hosts black-holed, spread through the names, default 0)
//! size the run; `MACHA_BENCH_PARALLELISM` (default 16, the daemon's default) sets how many hosts
//! the SSH layer part observes at once. Memory is in MiB (`/proc` reports kB = KiB: ÷ 1024).

#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use macha_core::HostName;
use macha_ssh::probe::{self, HostMemory, ProbeSpec};
use macha_ssh::{HostKey, KnownHosts, SshPool, SshSettings, Target};
use macha_store::{HistoryQuery, Store};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::daemon::TestDaemon;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_macha") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default().join("macha")
}

struct Host {
    name: String,
    address: String,
    key: String,
}

fn lab(want: usize) -> Option<(Vec<Host>, PathBuf)> {
    let run = PathBuf::from(std::env::var("MACHA_LAB_NETNS").unwrap_or_else(|_| "/run/macha-lab/netns".into()));
    let key = PathBuf::from(std::env::var("MACHA_LAB").unwrap_or_else(|_| "/var/cache/macha-lab".into()))
        .join("keys/id_ed25519");
    let text = std::fs::read_to_string(run.join("inventory")).ok()?;
    let hosts: Vec<Host> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            Some(Host { name: it.next()?.to_owned(), address: it.next()?.to_owned(), key: it.next()?.to_owned() })
        })
        .take(want)
        .collect();
    (hosts.len() == want).then_some((hosts, key))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The number, summed resident memory and summed proportional memory (PSS: shared pages split
/// among their users) of the `ssh` processes whose command line contains `needle` (the daemon's
/// masters: their control sockets live under its directory).
fn ssh_memory_kib(needle: &str) -> (usize, u64, u64) {
    let (mut n, mut rss, mut pss) = (0, 0, 0);
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !(cmd.starts_with("ssh ") || cmd.starts_with("/usr/bin/ssh ")) || !cmd.contains(needle) {
            continue;
        }
        n += 1;
        rss += field(&std::fs::read_to_string(e.path().join("status")).unwrap_or_default(), "VmRSS:");
        pss += field(&std::fs::read_to_string(e.path().join("smaps_rollup")).unwrap_or_default(), "Pss:");
    }
    (n, rss, pss)
}

fn library(hosts: &[Host], key: &Path, cycles: usize) -> Vec<(String, String)> {
    let dir = tempfile::Builder::new().prefix("mb").tempdir_in("/tmp").unwrap_or_else(|e| panic!("{e}"));
    let kh_path = dir.path().join("known_hosts");
    let mut kh = KnownHosts::load(&kh_path).unwrap_or_else(|e| panic!("{e}"));
    let targets: Vec<Target> = hosts
        .iter()
        .map(|h| {
            let name = HostName::parse(&h.name).unwrap_or_else(|e| panic!("{e}"));
            kh.pin(&name, &[HostKey::parse(&h.key).unwrap_or_else(|e| panic!("{e}"))]);
            Target { name, address: h.address.clone(), port: 22, user: Some("root".into()) }
        })
        .collect();
    kh.save().unwrap_or_else(|e| panic!("{e}"));
    let mut s =
        SshSettings::new(PathBuf::from("/usr/bin/ssh"), "root", key.to_path_buf(), kh_path, dir.path().join("s"));
    s.connect_timeout = Duration::from_secs(10);
    let pool = Arc::new(SshPool::new(s).unwrap_or_else(|e| panic!("{e}")));
    let spec =
        ProbeSpec { timeout: Duration::from_secs(10), journal_window: Duration::from_secs(600), prefer_macha: true };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut memories: Vec<HostMemory> = targets.iter().map(|_| HostMemory::default()).collect();
    let mut times = Vec::new();
    let mut connects = Vec::new();
    let mut failures = 0usize;
    for _ in 0..cycles {
        let started = Instant::now();
        let parallel = Arc::new(tokio::sync::Semaphore::new(env_num("MACHA_BENCH_PARALLELISM", 16)));
        let results = runtime.block_on(async {
            let runs = targets.iter().zip(memories.iter_mut()).map(|(t, m)| {
                let (pool, spec, parallel) = (Arc::clone(&pool), spec.clone(), Arc::clone(&parallel));
                async move {
                    let _p = parallel.acquire().await;
                    probe::observe(&pool, t, &spec, m, macha_core::Timestamp(0)).await.is_ok()
                }
            });
            futures_util::future::join_all(runs).await
        });
        failures += results.iter().filter(|ok| !**ok).count();
        times.push(started.elapsed());
        connects.push(pool.stats().connects);
        std::thread::sleep(Duration::from_millis(500));
    }
    runtime.block_on(pool.shutdown());
    let first = times[0];
    let mut steady: Vec<Duration> = times[1..].to_vec();
    let max = steady.iter().max().copied().unwrap_or_default();
    let after_first = connects.last().copied().unwrap_or(0) - connects[0];
    vec![
        ("SSH layer: first cycle (connect + observe)".into(), ms(first)),
        ("SSH layer: steady cycle, median / max".into(), format!("{} / {}", ms(median(&mut steady)), ms(max))),
        (
            "SSH layer: connections opened per cycle after the first".into(),
            format!("{}", after_first as f64 / (cycles - 1) as f64),
        ),
        ("SSH layer: failed observations".into(), failures.to_string()),
    ]
}

/// `utime + stime` of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// The CPU ticks of the `ssh` processes whose command line contains `needle`.
fn ssh_cpu_ticks(needle: &str) -> u64 {
    let mut sum = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if (cmd.starts_with("ssh ") || cmd.starts_with("/usr/bin/ssh ")) && cmd.contains(needle) {
            sum += e.file_name().to_str().and_then(|p| p.parse().ok()).map_or(0, cpu_ticks);
        }
    }
    sum
}

/// A `/proc/<pid>/status` value in kB (KiB).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One snapshot record: arrival (ms), probe start (ms), host.
struct Result_ {
    end: i64,
    start: i64,
    host: String,
}

fn percentile(v: &mut [i64], p: f64) -> i64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Blocked<'a>(&'a [String]);
impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        for h in self.0 {
            netns(&["unblock", h]);
        }
    }
}

fn netns(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/lab/netns-sshd.sh");
    let mut cmd = Command::new(script);
    cmd.args(args);
    if let Ok(run) = std::env::var("MACHA_LAB_NETNS") {
        cmd.env("MACHA_LAB_RUN", run);
    }
    let ok = cmd.status().is_ok_and(|s| s.success());
    assert!(ok, "netns-sshd.sh {args:?} failed");
}

fn daemon(hosts: &[Host], blocked: &[String], key: &Path, cycles: usize, interval: u64) -> Vec<(String, String)> {
    let mut tables = String::new();
    for h in hosts {
        tables.push_str(&format!("[hosts.{}]\naddress = \"{}\"\nhost_key = \"{}\"\n", h.name, h.address, h.key));
    }
    let key = key.to_path_buf();
    for h in blocked {
        netns(&["block", h]);
    }
    let _unblock = Blocked(blocked);
    // The one test daemon, with this bench's configuration and the build under test.
    let running = TestDaemon::builder()
        .binary(binary())
        .config(move |dir| {
            format!(
                "autonomy = \"observe\"\ncheck_interval = \"{interval}s\"\n[paths]\nstate_dir = \"{}\"\nsocket = \"{}\"\n[systemd]\nenable = false\n[journal]\nenable = false\n[ssh]\nuser = \"root\"\nkey = \"{}\"\n{tables}",
                dir.join("state").display(),
                dir.join("macha.sock").display(),
                key.display()
            )
        })
        .no_wait()
        .start();
    let pid = running.pid();
    let (state, socket) = (running.path("state"), running.socket());
    let db = state.join("macha.db");
    let needle = running.dir.path().display().to_string();
    // (ticks, remote results) from the snapshot history: a local row per tick, a row per remote
    // result stamped when its data was complete, with its collection time.
    let records = || -> (Vec<i64>, Vec<Result_>) {
        let Ok(store) = Store::open_read_only(&db) else { return (Vec::new(), Vec::new()) };
        let q = HistoryQuery { limit: Some(1_000_000), ..HistoryQuery::default() };
        let mut ticks = Vec::new();
        let mut results = Vec::new();
        for r in store.query_history(&q).unwrap_or_default() {
            let e = r.entry;
            if e.host == "local" {
                ticks.push(e.ts.millis());
                continue;
            }
            let micros = i64::try_from(e.collect_micros).unwrap_or(0);
            results.push(Result_ { end: e.ts.millis(), start: e.ts.millis() - micros / 1000, host: e.host });
        }
        ticks.sort_unstable();
        (ticks, results)
    };
    let status = || -> serde_json::Value {
        let mut c = macha::api::Client::connect(&socket, Duration::from_secs(10)).ok();
        c.as_mut()
            .and_then(|c| c.call(macha::api::ops::Status).ok())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_default()
    };
    let healthy: Vec<&str> =
        hosts.iter().map(|h| h.name.as_str()).filter(|n| !blocked.iter().any(|b| b == n)).collect();
    // The tick index of a result: the last tick at or before its probe started.
    let tick_of = |ticks: &[i64], r: &Result_| ticks.iter().rposition(|t| *t <= r.start);
    let complete = |ticks: &[i64], results: &[Result_], k: usize| {
        let done: std::collections::BTreeSet<&str> = results
            .iter()
            .filter(|r| tick_of(ticks, r) == Some(k) && healthy.contains(&r.host.as_str()))
            .map(|r| r.host.as_str())
            .collect();
        done.len() == healthy.len()
    };
    // Every healthy host answered once: the end of the first cycle (however many ticks it took).
    let first_done = |results: &[Result_]| -> Option<i64> {
        let mut firsts: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for r in results.iter().filter(|r| healthy.contains(&r.host.as_str())) {
            let e = firsts.entry(r.host.as_str()).or_insert(r.end);
            *e = (*e).min(r.end);
        }
        (firsts.len() == healthy.len()).then(|| firsts.values().copied().max().unwrap_or(0))
    };
    let deadline = Instant::now() + Duration::from_secs(180 + (interval + 2) * (cycles as u64 + 2));
    let mut after_first: Option<(u64, u64, Option<u64>, i64)> = None;
    let mut queued_max = 0u64;
    let mut queued: Vec<i64> = Vec::new();
    let mut seen_status = std::collections::BTreeSet::new();
    loop {
        let (ticks, results) = records();
        if after_first.is_none()
            && let Some(done) = first_done(&results)
        {
            after_first = Some((cpu_ticks(pid), ssh_cpu_ticks(&needle), status()["ssh"]["connects"].as_u64(), done));
        }
        // How long healthy hosts waited for a slot (their last status; sampled every poll).
        if let Some((_, _, _, t1)) = after_first
            && let Ok(store) = Store::open_read_only(&db)
        {
            for h in store.list_fleet_hosts().unwrap_or_default() {
                if let (Some(at), Some(q)) = (h.status["at"].as_i64(), h.status["queued_ms"].as_u64())
                    && at > t1 + i64::try_from(interval * 1000).unwrap_or(0)
                    && healthy.contains(&h.record.name.as_str())
                    && seen_status.insert((h.record.name.clone(), at))
                {
                    queued_max = queued_max.max(q);
                    queued.push(i64::try_from(q).unwrap_or(i64::MAX));
                }
            }
        }
        // Enough: `cycles - 1` ticks after the first cycle, the last of them complete.
        let steady: Vec<usize> = match after_first {
            Some((_, _, _, t1)) => (0..ticks.len()).filter(|k| ticks[*k] >= t1).collect(),
            None => Vec::new(),
        };
        let enough = steady.len() > cycles - 1 && complete(&ticks, &results, steady[cycles - 2]);
        if enough || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let hwm = status_kib(pid, "VmHWM:");
    let rss = status_kib(pid, "VmRSS:");
    let (cpu_end, ssh_cpu_end) = (cpu_ticks(pid), ssh_cpu_ticks(&needle));
    let connects_end = status()["ssh"]["connects"].as_u64();
    let (masters, masters_rss, masters_pss) = ssh_memory_kib(&needle);
    drop(running);
    let (ticks, results) = records();
    let first_tick = ticks.first().copied().unwrap_or(0);
    let t1 = after_first.map_or(i64::MAX, |a| a.3);
    let first = first_done(&results).map_or(-1, |done| done - first_tick);
    let mut spans = Vec::new();
    let mut lateness = Vec::new();
    // The ticks waited for, after the first cycle (the one after them may have just begun).
    let waited: Vec<usize> = (0..ticks.len()).filter(|k| ticks[*k] >= t1).take(cycles - 1).collect();
    let steady_ticks: Vec<usize> = waited.iter().copied().filter(|k| complete(&ticks, &results, *k)).collect();
    for &k in &steady_ticks {
        let mine: Vec<&Result_> =
            results.iter().filter(|r| tick_of(&ticks, r) == Some(k) && healthy.contains(&r.host.as_str())).collect();
        spans.push(mine.iter().map(|r| r.end - ticks[k]).max().unwrap_or(0));
        lateness.extend(mine.iter().map(|r| r.end - ticks[k]));
    }
    let incomplete = waited.len() - steady_ticks.len();
    let attempts_blocked = results.iter().filter(|r| blocked.contains(&r.host)).count();
    let (cpu1, ssh1, connects1, _) = after_first.unwrap_or((0, 0, None, 0));
    let ticks_after = ticks.iter().filter(|t| **t >= t1).count().max(1);
    let per_host_cycle = |d: u64| {
        let ms = d as f64 * 10.0 / (ticks_after as f64 * hosts.len() as f64);
        format!("{ms:.2} ms")
    };
    let opened = match (connects1, connects_end) {
        (Some(a), Some(b)) => format!("{} (over {ticks_after} ticks)", (b - a) as f64 / ticks_after as f64),
        _ => "unknown".into(),
    };
    let (p50, pmax) = (percentile(&mut spans.clone(), 0.5), percentile(&mut spans, 1.0));
    let (l50, l95, lmax) = (
        percentile(&mut lateness.clone(), 0.5),
        percentile(&mut lateness.clone(), 0.95),
        percentile(&mut lateness, 1.0),
    );
    vec![
        (
            "daemon: hosts (healthy / black-holed), tick".into(),
            format!("{} / {}, every {interval} s", healthy.len(), blocked.len()),
        ),
        (
            "daemon: ticks after the first cycle: every healthy host answered / not".into(),
            format!("{} / {incomplete}", steady_ticks.len()),
        ),
        ("daemon: first cycle (first tick to every healthy host's first result)".into(), format!("{first} ms")),
        ("daemon: steady cycle span (tick to last healthy result), median / max".into(), format!("{p50} / {pmax} ms")),
        ("daemon: healthy result after its tick, median / p95 / max".into(), format!("{l50} / {l95} / {lmax} ms")),
        (
            "daemon: healthy hosts' wait for a slot (a tick after the first cycle), median / max".into(),
            format!("{} / {queued_max} ms", percentile(&mut queued, 0.5)),
        ),
        ("daemon: attempts on black-holed hosts (all ticks)".into(), attempts_blocked.to_string()),
        ("daemon: SSH connections opened per tick after the first cycle".into(), opened),
        ("daemon: CPU per host per cycle (steady)".into(), per_host_cycle(cpu_end.saturating_sub(cpu1))),
        ("daemon's ssh masters: CPU per host per cycle".into(), per_host_cycle(ssh_cpu_end.saturating_sub(ssh1))),
        ("daemon: peak memory (VmHWM) / at the end (VmRSS)".into(), format!("{} / {}", mib(hwm), mib(rss))),
        (
            "daemon's ssh masters: count / total RSS / total PSS".into(),
            format!("{masters} / {} / {}", mib(masters_rss), mib(masters_pss)),
        ),
    ]
}

fn main() {
    let n = env_num("MACHA_BENCH_HOSTS", 50);
    let cycles = env_num("MACHA_BENCH_CYCLES", 6).max(2);
    let interval = env_num("MACHA_BENCH_INTERVAL", 10).max(1) as u64;
    let percent = env_num("MACHA_BENCH_BLACKHOLED", 0).min(100);
    let Some((hosts, key)) = lab(n) else {
        eprintln!(
            "fleet bench: needs {n} netns sshd hosts: `tests/lab/netns-sshd.sh up {n}` (as root), then \
             `cargo bench -p macha --bench fleet` (MACHA_LAB_NETNS to point elsewhere)"
        );
        std::process::exit(1);
    };
    // Every k-th host black-holed (h10, h20, … for 10 %).
    let every = 100usize.checked_div(percent).map_or(usize::MAX, |e| e.max(1));
    let blocked: Vec<String> =
        hosts.iter().enumerate().filter(|(i, _)| (i + 1) % every == 0).map(|(_, h)| h.name.clone()).collect();
    let healthy: Vec<Host> = hosts
        .iter()
        .filter(|h| !blocked.contains(&h.name))
        .map(|h| Host { name: h.name.clone(), address: h.address.clone(), key: h.key.clone() })
        .collect();
    let mut rows = Vec::new();
    rows.extend(library(&healthy, &key, cycles));
    rows.extend(daemon(&hosts, &blocked, &key, cycles, interval));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nfleet of {n} netns sshd hosts, {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| measure | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
