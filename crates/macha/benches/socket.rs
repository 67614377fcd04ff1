//! Socket latency benchmark, printed as a table (not timed tests): how long the daemon takes to
//! answer `status` (answered by the event loop) and `list_issues` (a read that needs the engine),
//! p50 / p99 / max, each over at least 2,000 requests where the scenario allows, in these
//! scenarios:
//!
//! 1. the daemon idle;
//! 2. the store under about 1,000 durable writes per second through the daemon: a load generator
//!    running as uid 65534 sends `approve` requests at a fixed rate; each is denied, and each
//!    denial appends an audit record (one transaction, one `fsync`). The achieved write rate is
//!    counted from the audit trail;
//! 3. a slow disk: the state directory (the database) on a loop device whose writes take about
//!    500 ms each — a device-mapper `delay` target if the kernel has device-mapper, else the
//!    cgroup v1 `blkio` throttle at 2 write operations per second for the daemon's cgroup — while
//!    one writer keeps a denied `approve` (a durable write) waiting at all times;
//! 4. a fleet cycle of the netns lab hosts listed in `MACHA_BENCH_FLEET_HOSTS` (lines of `name
//!    address host-key`, as the lab's inventory), skipped without it.
//!
//! Every request is a new connection, as the CLI makes; the two samplers run at once, each
//! pausing 2 ms between requests. The bench needs root for scenarios 2 (to drop to uid 65534) and
//! 3 (loop devices, mounts, cgroups); without it they are skipped.
//!
//! `MACHA_BENCH_BIN` runs this daemon binary instead of the one cargo builds;
//! `MACHA_BENCH_BASELINE` runs another one first (an older build, for a before/after table). Both
//! must be named `macha` (the binary is multicall: it acts by its own name). The protocol is the
//! same newline-delimited JSON in every version measured so far;
//! `MACHA_BENCH_RATE` sets the write rate of scenario 2 (default 1,000/s);
//! `MACHA_BENCH_SLOW_SECS` bounds scenario 3 (default 30 s).

#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use macha_store::{AuditQuery, Order, Store};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::daemon::TestDaemon;

/// Requests each sampler sends in a scenario (fewer if the scenario's time runs out first).
const SAMPLES: usize = 2000;
/// The pause between two requests of one sampler.
const PAUSE: Duration = Duration::from_millis(2);
const STATUS: &str = "{\"op\":\"status\"}\n";
const LIST_ISSUES: &str = "{\"op\":\"list_issues\",\"limit\":50}\n";
const APPROVE: &str = "{\"op\":\"approve\",\"id\":1}\n";
/// The unprivileged user the load generator runs as.
const NOBODY: u32 = 65534;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// p50 / p99 / max of samples in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if v.is_empty() { f64::NAN } else { v[(((v.len() - 1) as f64) * p).round() as usize] }
        };
        Stats { n: v.len(), p50: pct(0.5), p99: pct(0.99), max: v.last().copied().unwrap_or(f64::NAN) }
    }

    fn parse(s: &str) -> Option<Stats> {
        let f: Vec<&str> = s.split_whitespace().collect();
        Some(Stats {
            n: f.first()?.parse().ok()?,
            p50: f.get(1)?.parse().ok()?,
            p99: f.get(2)?.parse().ok()?,
            max: f.get(3)?.parse().ok()?,
        })
    }

    fn line(&self) -> String {
        format!("{} {} {} {}", self.n, self.p50, self.p99, self.max)
    }
}

/// One request on a new connection; its round trip in milliseconds, and the response.
fn call(socket: &Path, line: &str) -> Result<(f64, serde_json::Value), String> {
    let t = Instant::now();
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    s.write_all(line.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(|e| format!("read: {e}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let v: serde_json::Value = serde_json::from_str(&answer).map_err(|e| format!("answer {answer:?}: {e}"))?;
    Ok((ms, v))
}

/// Sends `line` until `want` answers came back or `deadline` passed; every answer must be `ok`.
fn sample(socket: &Path, line: &str, want: usize, deadline: Instant) -> (Vec<f64>, usize) {
    let mut v = Vec::with_capacity(want);
    let mut errors = 0;
    while v.len() < want && Instant::now() < deadline {
        match call(socket, line) {
            Ok((ms, answer)) if answer["ok"] == serde_json::Value::Bool(true) => v.push(ms),
            Ok((_, answer)) => {
                errors += 1;
                eprintln!("unexpected answer to {}: {answer}", line.trim());
            }
            Err(e) => {
                errors += 1;
                eprintln!("{}: {e}", line.trim());
            }
        }
        std::thread::sleep(PAUSE);
    }
    (v, errors)
}

/// The newest audit record's id (ids grow by one per record: the trail is append-only).
fn last_audit_id(db: &Path) -> i64 {
    Store::open_read_only(db)
        .and_then(|s| s.query_audit(&AuditQuery { order: Order::NewestFirst, limit: Some(1), ..AuditQuery::default() }))
        .ok()
        .and_then(|r| r.first().map(|r| r.id))
        .unwrap_or(0)
}

/// CPU time, time waiting for a CPU (run queue) and timeslices of the daemon's threads, summed
/// per thread name, from `/proc/<pid>/task/*/schedstat` (nanoseconds).
fn thread_times(pid: u32) -> BTreeMap<String, [u64; 3]> {
    let mut out: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_owned();
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let f: Vec<u64> = stat.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if f.len() == 3 {
            let e = out.entry(comm).or_default();
            for i in 0..3 {
                e[i] += f[i];
            }
        }
    }
    out
}

/// The difference of two [`thread_times`] as text: per thread name, CPU ms, run-queue wait ms and
/// the mean wait per timeslice in µs.
fn thread_report(before: &BTreeMap<String, [u64; 3]>, after: &BTreeMap<String, [u64; 3]>) -> String {
    let mut parts = Vec::new();
    for (name, a) in after {
        let b = before.get(name).copied().unwrap_or_default();
        let (run, wait, slices) = (a[0].saturating_sub(b[0]), a[1].saturating_sub(b[1]), a[2].saturating_sub(b[2]));
        if slices == 0 {
            continue;
        }
        parts.push(format!(
            "{name}: cpu {:.0} ms, waited for a cpu {:.0} ms ({:.0} µs per slice)",
            run as f64 / 1e6,
            wait as f64 / 1e6,
            wait as f64 / 1e3 / slices as f64
        ));
    }
    parts.join("; ")
}

// ---------------------------------------------------------------------------------------------
// The load generator: this same program, started again as uid 65534.

/// How the load generator sends denied `approve` requests.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// At `rate` per second in total over `conns` connections (open loop: the schedule does not
    /// wait for slow answers, up to one request in flight per connection).
    Rate { rate: u64, conns: u64 },
    /// One request at a time, the next as soon as the previous is answered.
    OneAtATime,
}

/// What the load generator saw: its requests' round trips, and how many were not denials.
struct LoadReport {
    stats: Stats,
    not_denied: u64,
}

struct LoadGenerator {
    child: Child,
}

impl LoadGenerator {
    fn start(socket: &Path, load: Load) -> Result<LoadGenerator, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let (rate, conns) = match load {
            Load::Rate { rate, conns } => (rate, conns),
            Load::OneAtATime => (0, 1),
        };
        let child = Command::new(exe)
            .arg("--load-generator")
            .arg(socket)
            .arg(rate.to_string())
            .arg(conns.to_string())
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the load generator as uid {NOBODY}: {e}"))?;
        Ok(LoadGenerator { child })
    }

    /// Stops the generator (its standard input closes) and reads its report.
    fn finish(mut self) -> Option<LoadReport> {
        drop(self.child.stdin.take());
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let _ = self.child.wait();
        let mut lines = out.lines();
        let stats = Stats::parse(lines.next()?)?;
        let not_denied = lines.next()?.trim().parse().ok()?;
        Some(LoadReport { stats, not_denied })
    }
}

/// The load generator's body: runs until its standard input closes, then prints its figures.
fn load_generator(args: &[String]) {
    let socket = PathBuf::from(args.first().cloned().unwrap_or_default());
    let rate: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let conns: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Release);
        });
    }
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let (socket, stop) = (socket.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut not_denied = 0u64;
                let Ok(s) = UnixStream::connect(&socket) else { return (lat, 1) };
                let Ok(mut w) = s.try_clone() else { return (lat, 1) };
                let mut r = BufReader::new(s);
                let period = (rate > 0).then(|| Duration::from_secs_f64(conns as f64 / rate as f64));
                // The connections' schedules are spread over one period.
                let start = Instant::now() + period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / conns as f64));
                let mut k = 0u32;
                let mut answer = String::new();
                while !stop.load(Ordering::Acquire) {
                    if let Some(p) = period {
                        let at = start + p * k;
                        k += 1;
                        let now = Instant::now();
                        if at > now {
                            std::thread::sleep(at - now);
                        }
                    }
                    let t = Instant::now();
                    if w.write_all(APPROVE.as_bytes()).is_err() {
                        break;
                    }
                    answer.clear();
                    if r.read_line(&mut answer).unwrap_or(0) == 0 {
                        break;
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    if !answer.contains("\"denied\"") {
                        not_denied += 1;
                    }
                }
                (lat, not_denied)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut not_denied = 0;
    for t in threads {
        if let Ok((lat, n)) = t.join() {
            all.extend(lat);
            not_denied += n;
        }
    }
    println!("{}", Stats::of(all).line());
    println!("{not_denied}");
}

// ---------------------------------------------------------------------------------------------
// The slow disk.

/// How the slow device is made slow.
enum Slowness {
    /// A device-mapper `delay` target over the loop device (writes delayed 500 ms).
    DmDelay { name: String },
    /// The cgroup v1 `blkio` throttle: 2 write operations per second on the loop device for the
    /// processes in `cgroup` (the daemon, moved there once it has started).
    Throttle { cgroup: PathBuf, device: String },
}

/// An ext4 file system on a loop device whose writes take about 500 ms, mounted at `mount`;
/// unmounted and removed when dropped.
struct SlowDisk {
    mount: PathBuf,
    loop_dev: String,
    how: Slowness,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl SlowDisk {
    fn create(dir: &Path) -> Result<SlowDisk, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (loop device, mount)".into());
        }
        let image = dir.join("slow.img");
        let size: u64 = 256 << 20;
        std::fs::File::create(&image).and_then(|f| f.set_len(size)).map_err(|e| e.to_string())?;
        let loop_dev = run("losetup", &["-f", "--show", &image.display().to_string()])?;
        let mount = dir.join("mnt");
        let mut disk = SlowDisk {
            mount: mount.clone(),
            loop_dev: loop_dev.clone(),
            how: Slowness::Throttle { cgroup: PathBuf::new(), device: String::new() },
        };
        let name = format!("macha-bench-slow-{}", std::process::id());
        let dm = Path::new("/dev/mapper/control").exists()
            && run(
                "dmsetup",
                &["create", &name, "--table", &format!("0 {} delay {loop_dev} 0 0 {loop_dev} 0 500", size / 512)],
            )
            .is_ok();
        let device = if dm {
            disk.how = Slowness::DmDelay { name: name.clone() };
            format!("/dev/mapper/{name}")
        } else {
            let blkio = Path::new("/sys/fs/cgroup/blkio");
            if !blkio.join("blkio.throttle.write_iops_device").exists() {
                return Err("neither device-mapper nor the cgroup v1 blkio throttle is available".into());
            }
            // The device's `major:minor`, as the throttle wants it.
            let base = loop_dev.rsplit('/').next().unwrap_or_default();
            let device = std::fs::read_to_string(format!("/sys/block/{base}/dev")).map_err(|e| e.to_string())?;
            let cgroup = blkio.join(&name);
            std::fs::create_dir_all(&cgroup).map_err(|e| format!("{}: {e}", cgroup.display()))?;
            disk.how = Slowness::Throttle { cgroup, device: device.trim().to_owned() };
            loop_dev.clone()
        };
        run("mkfs.ext4", &["-q", "-F", &device])?;
        std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        run("mount", &[&device, &mount.display().to_string()])?;
        Ok(disk)
    }

    fn describe(&self) -> &'static str {
        match self.how {
            Slowness::DmDelay { .. } => "dm-delay, writes +500 ms",
            Slowness::Throttle { .. } => "blkio throttle, 2 writes/s",
        }
    }

    /// Makes the daemon's writes slow from now on (the throttle applies to its cgroup).
    fn attach(&self, pid: u32) -> Result<(), String> {
        match &self.how {
            Slowness::DmDelay { .. } => Ok(()),
            Slowness::Throttle { cgroup, device } => {
                std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).map_err(|e| e.to_string())?;
                std::fs::write(cgroup.join("blkio.throttle.write_iops_device"), format!("{device} 2"))
                    .map_err(|e| e.to_string())
            }
        }
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let _ = run("umount", &[&self.mount.display().to_string()]);
        match &self.how {
            Slowness::DmDelay { name } => {
                let _ = run("dmsetup", &["remove", name]);
            }
            Slowness::Throttle { cgroup, device } => {
                if !device.is_empty() {
                    let _ = std::fs::write(cgroup.join("blkio.throttle.write_iops_device"), format!("{device} 0"));
                    // Empty once the daemon has exited.
                    let _ = std::fs::remove_dir(cgroup);
                }
            }
        }
        let _ = run("losetup", &["-d", &self.loop_dev]);
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// One scenario's figures.
struct Figures {
    status: Stats,
    engine: Stats,
    errors: usize,
    /// Audit records appended per second during the measurement.
    write_rate: f64,
    load: Option<LoadReport>,
    /// The daemon's threads over the measurement ([`thread_report`]).
    threads: String,
    /// The machine's load average (1 min) at the end.
    loadavg: String,
}

/// Measures both requests at once for at most `cap`, with `load` running from a second before.
fn measure(d: &TestDaemon, load: Option<Load>, cap: Duration) -> Result<Figures, String> {
    let socket = d.socket();
    let generator = match load {
        Some(l) => {
            let g = LoadGenerator::start(&socket, l)?;
            std::thread::sleep(Duration::from_secs(1));
            Some(g)
        }
        None => None,
    };
    let db = d.db();
    let id0 = last_audit_id(&db);
    let times0 = thread_times(d.pid());
    let t0 = Instant::now();
    let deadline = t0 + cap;
    let engine = {
        let socket = socket.clone();
        std::thread::spawn(move || sample(&socket, LIST_ISSUES, SAMPLES, deadline))
    };
    let (status, e1) = sample(&socket, STATUS, SAMPLES, deadline);
    let (engine, e2) = engine.join().map_err(|_| "the sampler panicked".to_owned())?;
    let elapsed = t0.elapsed().as_secs_f64();
    let id1 = last_audit_id(&db);
    let threads = thread_report(&times0, &thread_times(d.pid()));
    let loadavg =
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or_default().to_owned();
    let load = generator.and_then(LoadGenerator::finish);
    Ok(Figures {
        status: Stats::of(status),
        engine: Stats::of(engine),
        errors: e1 + e2,
        write_rate: (id1 - id0) as f64 / elapsed,
        load,
        threads,
        loadavg,
    })
}

fn print_row(daemon: &str, scenario: &str, request: &str, s: &Stats) {
    println!("{daemon:<8} {scenario:<44} {request:<30} {:>6} {:>9.2} {:>9.2} {:>9.2}", s.n, s.p50, s.p99, s.max);
}

fn print_figures(daemon: &str, scenario: &str, f: &Figures) {
    print_row(daemon, scenario, "status (loop)", &f.status);
    print_row(daemon, scenario, "list_issues (engine)", &f.engine);
    if let Some(l) = &f.load {
        print_row(daemon, scenario, "approve, denied (1 fsync)", &l.stats);
        if l.not_denied > 0 {
            println!("{daemon:<8} {scenario:<44} {} approve answers were not denials", l.not_denied);
        }
    }
    println!("{daemon:<8} {scenario:<44} {:<30} {:>6.0}/s", "durable writes (audit records)", f.write_rate);
    if f.errors > 0 {
        println!("{daemon:<8} {scenario:<44} {} requests failed", f.errors);
    }
    println!("{daemon:<8} {scenario:<44} load average {}; {}", f.loadavg, f.threads);
}

fn skipped(daemon: &str, scenario: &str, why: &str) {
    println!("{daemon:<8} {scenario:<44} skipped: {why}");
}

/// A daemon of `binary` whose directory the load generator (uid 65534) may reach.
fn builder(binary: &Path) -> support::daemon::Builder {
    TestDaemon::builder().binary(binary).prepare(|dir| {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    })
}

fn fleet_hosts() -> Result<String, String> {
    let file = std::env::var("MACHA_BENCH_FLEET_HOSTS").map_err(|_| "MACHA_BENCH_FLEET_HOSTS is not set".to_owned())?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let key = PathBuf::from(std::env::var("MACHA_LAB").unwrap_or_else(|_| "/var/cache/macha-lab".into()))
        .join("keys/id_ed25519");
    let mut toml = format!("[ssh]\nuser = \"root\"\nkey = \"{}\"\n", key.display());
    let mut n = 0;
    for l in text.lines() {
        let mut it = l.splitn(3, ' ');
        if let (Some(name), Some(address), Some(host_key)) = (it.next(), it.next(), it.next()) {
            toml.push_str(&format!("[hosts.{name}]\naddress = \"{address}\"\nhost_key = \"{host_key}\"\n"));
            n += 1;
        }
    }
    if n == 0 {
        return Err(format!("{file} lists no hosts"));
    }
    Ok(toml)
}

fn scenarios(label: &str, binary: &Path) {
    let root = nix::unistd::geteuid().is_root();
    let rate = env_num("MACHA_BENCH_RATE", 1000);
    let slow_cap = Duration::from_secs(env_num("MACHA_BENCH_SLOW_SECS", 30));
    let cap = Duration::from_secs(120);

    // 1 and 2: one daemon on the ordinary disk.
    {
        let d = builder(binary).start();
        std::thread::sleep(Duration::from_secs(1));
        match measure(&d, None, cap) {
            Ok(f) => print_figures(label, "1 idle", &f),
            Err(e) => skipped(label, "1 idle", &e),
        }
        let scenario = format!("2 {rate} denied writes/s (8 connections)");
        if root {
            match measure(&d, Some(Load::Rate { rate, conns: 8 }), cap) {
                Ok(f) => print_figures(label, &scenario, &f),
                Err(e) => skipped(label, &scenario, &e),
            }
        } else {
            skipped(label, &scenario, "needs root to run the load generator as uid 65534");
        }
    }

    // 3: the state directory on the slow disk.
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return skipped(label, "3 slow disk", &e.to_string()),
    };
    match SlowDisk::create(dir.path()) {
        Err(e) => skipped(label, "3 slow disk", &e),
        Ok(disk) => {
            let scenario = format!("3 slow disk ({}), 1 write waiting", disk.describe());
            let state = disk.mount.join("state");
            let d = builder(binary)
                .prepare(move |dir| {
                    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
                    let _ = std::fs::create_dir_all(&state);
                    let _ = std::os::unix::fs::symlink(&state, dir.join("state"));
                })
                .start();
            std::thread::sleep(Duration::from_secs(1));
            match disk.attach(d.pid()).and_then(|()| measure(&d, Some(Load::OneAtATime), slow_cap)) {
                Ok(f) => print_figures(label, &scenario, &f),
                Err(e) => skipped(label, &scenario, &e),
            }
            drop(d);
            drop(disk);
        }
    }

    // 4: during fleet cycles.
    match fleet_hosts() {
        Err(e) => skipped(label, "4 fleet cycles", &e),
        Ok(hosts) => {
            let d = builder(binary).autonomy("observe").interval("2s").top(&hosts).start();
            std::thread::sleep(Duration::from_secs(10));
            match measure(&d, None, cap) {
                Ok(f) => print_figures(label, "4 fleet cycles every 2 s", &f),
                Err(e) => skipped(label, "4 fleet cycles", &e),
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.get(1).map(String::as_str) == Some("--load-generator") {
        return load_generator(&args[2..]);
    }
    let this =
        std::env::var_os("MACHA_BENCH_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_macha")), PathBuf::from);
    let baseline = std::env::var_os("MACHA_BENCH_BASELINE").map(PathBuf::from);
    if let Some(b) = &baseline {
        println!("before = {}", b.display());
    }
    println!("after  = {}", this.display());
    println!(
        "{:<8} {:<44} {:<30} {:>6} {:>9} {:>9} {:>9}",
        "daemon", "scenario", "request", "n", "p50 ms", "p99 ms", "max ms"
    );
    if let Some(b) = &baseline {
        scenarios("before", b);
    }
    scenarios(if baseline.is_some() { "after" } else { "daemon" }, &this);
}
