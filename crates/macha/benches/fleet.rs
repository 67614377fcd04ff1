//! Fleet benchmark, printed as a table (not timed tests), against the netns sshd hosts of
//! `tests/lab/netns-sshd.sh up 50` (h1..h50, each a real sshd in its own network namespace):
//!
//! 1. The SSH layer alone: `macha_ssh::probe::observe` of every host at once (parallelism as the
//!    daemon's default, 16), cycle after cycle: the first cycle (connects and first contacts), then
//!    the steady cycles, and the SSH connections opened per cycle after the first.
//! 2. The real `macha daemon` with the 50 hosts configured: the span of each cycle (first probe
//!    start to last result, from its audit records), the connections it opened after its first
//!    cycle, and its peak memory (`VmHWM`), beside the memory of its 50 `ssh` masters.
//!
//! `MACHA_LAB_NETNS` (default `/run/macha-lab/netns`) and `MACHA_LAB` (default
//! `/var/cache/macha-lab`) find the lab; `MACHA_BENCH_HOSTS` (default 50) and
//! `MACHA_BENCH_CYCLES` (default 6) size the run; `MACHA_BENCH_PARALLELISM` (default 16, the
//! daemon's default) sets how many hosts the SSH layer part observes at once.

use macha_core::HostName;
use macha_ssh::probe::{self, HostMemory, ProbeSpec};
use macha_ssh::{HostKey, KnownHosts, SshPool, SshSettings, Target};
use macha_store::{HistoryQuery, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn daemon(hosts: &[Host], key: &Path, cycles: usize) -> Vec<(String, String)> {
    let dir = tempfile::Builder::new().prefix("md").tempdir_in("/tmp").unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().join("state");
    let socket = dir.path().join("m.sock");
    let mut text = format!(
        "autonomy = \"observe\"\ncheck_interval = \"10s\"\n[paths]\nstate_dir = \"{}\"\nsocket = \"{}\"\n[systemd]\nenable = false\n[journal]\nenable = false\n[ssh]\nuser = \"root\"\nkey = \"{}\"\n",
        state.display(),
        socket.display(),
        key.display()
    );
    for h in hosts {
        text.push_str(&format!("[hosts.{}]\naddress = \"{}\"\nhost_key = \"{}\"\n", h.name, h.address, h.key));
    }
    let config = dir.path().join("macha.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(binary())
        .args(["daemon", "--config"])
        .arg(&config)
        .env("MACHA_LOG", "warn")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id();
    let running = Running(child);
    let db = state.join("macha.db");
    let snapshots = || -> Vec<(i64, u64, String)> {
        let Ok(store) = Store::open_read_only(&db) else { return Vec::new() };
        let q = HistoryQuery { limit: Some(100_000), ..HistoryQuery::default() };
        store
            .query_history(&q)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.entry.host != "local")
            .map(|r| (r.entry.ts.millis(), r.entry.collect_micros, r.entry.host))
            .collect()
    };
    let status = || -> Option<u64> {
        let mut c = macha::api::Client::connect(&socket, Duration::from_secs(10)).ok()?;
        c.call(macha::api::ops::Status).ok()?.ssh.map(|s| s.connects)
    };
    let deadline = Instant::now() + Duration::from_secs(60 + 11 * cycles as u64);
    let n = hosts.len();
    let mut connects_after_first = None;
    loop {
        let s = snapshots();
        let done = s.len();
        if connects_after_first.is_none() && done >= n {
            connects_after_first = status();
        }
        if done >= n * cycles || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let connects_end = status();
    let (masters, masters_rss, masters_pss) = ssh_memory_kib(&dir.path().display().to_string());
    drop(running);
    // Cycles: the snapshots of one tick form a cluster in time (ticks are 10 s apart, a cycle
    // takes far less); a cycle is complete when every host is in its cluster.
    let mut s: Vec<(i64, u64, String)> = snapshots();
    s.sort_by_key(|(ts, _, _)| *ts);
    let mut clusters: Vec<Vec<(i64, u64, String)>> = Vec::new();
    for row in s {
        match clusters.last_mut() {
            Some(c) if c.last().is_some_and(|last| row.0 - last.0 < 3000) => c.push(row),
            _ => clusters.push(vec![row]),
        }
    }
    let spans: Vec<Duration> = clusters
        .iter()
        .filter(|c| c.len() == n)
        .map(|c| {
            let start = c.iter().map(|r| r.0).min().unwrap_or(0);
            let end = c.iter().map(|r| r.0 + i64::try_from(r.1 / 1000).unwrap_or(0)).max().unwrap_or(0);
            Duration::from_millis(u64::try_from(end - start).unwrap_or(0))
        })
        .collect();
    let complete = spans.len();
    let first = spans.first().copied().unwrap_or_default();
    let mut steady: Vec<Duration> = spans.iter().skip(1).copied().collect();
    let max = steady.iter().max().copied().unwrap_or_default();
    let steady_cycles = complete.saturating_sub(1).max(1) as f64;
    let opened = match (connects_after_first, connects_end) {
        (Some(a), Some(b)) => {
            format!("{} (over {} cycles)", (b - a) as f64 / steady_cycles, complete.saturating_sub(1))
        }
        _ => "unknown".into(),
    };
    vec![
        ("daemon: cycles completed by every host".into(), complete.to_string()),
        ("daemon: first cycle span (connect, first contact, observe)".into(), ms(first)),
        ("daemon: steady cycle span, median / max".into(), format!("{} / {}", ms(median(&mut steady)), ms(max))),
        ("daemon: SSH connections opened per cycle after the first".into(), opened),
        ("daemon: peak memory (VmHWM)".into(), hwm),
        (
            "daemon's ssh masters: count / total RSS / total PSS".into(),
            format!("{masters} / {} MiB / {} MiB", masters_rss / 1024, masters_pss / 1024),
        ),
    ]
}

fn main() {
    let n = env_num("MACHA_BENCH_HOSTS", 50);
    let cycles = env_num("MACHA_BENCH_CYCLES", 6).max(2);
    let Some((hosts, key)) = lab(n) else {
        eprintln!(
            "fleet bench: needs {n} netns sshd hosts: `tests/lab/netns-sshd.sh up {n}` (as root), then \
             `cargo bench -p macha --bench fleet` (MACHA_LAB_NETNS to point elsewhere)"
        );
        std::process::exit(1);
    };
    let mut rows = Vec::new();
    rows.extend(library(&hosts, &key, cycles));
    rows.extend(daemon(&hosts, &key, cycles));
    println!("\nfleet of {n} netns sshd hosts, {} cores", std::thread::available_parallelism().map_or(0, |c| c.get()));
    println!("| measure | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
