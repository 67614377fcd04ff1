//! Remote observation: a fixed set of read-only commands, sent at once over one host's master
//! connection (one round trip), whose output becomes the same [`Snapshot`] local observation
//! produces — or, when Macha is installed on the host, its own `macha probe --json`.
//!
//! The command set (all wrapped in `timeout -k`, none under `sudo`):
//!
//! | section | command |
//! |---|---|
//! | cpu, memory, load, pressure, network, mount flags | `grep -H -a '' /proc/stat /proc/meminfo …` (one line per line, prefixed with its file) |
//! | units | `systemctl show --property=Id,… -- '*'` and `systemctl is-system-running` |
//! | filesystems | `df -l -B1 --output=size,avail,itotal,iavail,fstype,source,target -x …` |
//! | processes | `ps -e -o pid=,rss=,times=,comm=` |
//! | journal | `journalctl --output=json --priority=err --since=-<window>` |
//! | nix (NixOS only) | `ls -l --time-style=+%s /nix/var/nix/profiles` |
//!
//! Everything is parsed by pure functions (tested with output captured from real hosts); a part
//! that failed makes its sections `Unavailable` with the reason, never empty.

use crate::error::SshError;
use crate::pool::{RemoteOutput, SshPool};
use crate::remote::{RemoteCommand, RemoteTools, Target, describe_status};
use macha_core::fleet::{OsFamily, OsInfo, detect_os};
use macha_core::journal::ErrorWindow;
use macha_core::snapshot::{
    Cpu, CpuTicks, Filesystem, Generation, Hardware, JournalSummary, NixInfo, Pressure, ProcessInfo, Processes,
    Section, Snapshot, UnitState, Units,
};
use macha_core::{HostName, Timestamp};
use macha_parse::mounts::{DEFAULT_EXCLUDED_MOUNT_PREFIXES, DEFAULT_NETWORK_FS_TYPES, DEFAULT_PSEUDO_FS_TYPES};
use macha_parse::procfs;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The `/proc` files read in one `grep`.
pub const PROC_FILES: [&str; 10] = [
    "/proc/stat",
    "/proc/meminfo",
    "/proc/loadavg",
    "/proc/pressure/cpu",
    "/proc/pressure/memory",
    "/proc/pressure/io",
    "/proc/net/dev",
    "/proc/self/mountinfo",
    "/proc/net/tcp",
    "/proc/net/tcp6",
];

/// The TCP tables, parsed line by line as they arrive (never kept as text).
pub const TCP_FILES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// What the parsed TCP tables hold at most: the groups and listening ports
/// ([`macha_parse::tcp::PEERS_MAX`], [`macha_parse::tcp::LISTENING_MAX`]) with their map nodes.
pub const TCP_TABLE_BYTES: usize = macha_parse::tcp::PEERS_MAX * 64 + macha_parse::tcp::LISTENING_MAX * 8;

/// The unit properties asked for.
pub const UNIT_PROPERTIES: &str = "Id,Description,LoadState,ActiveState,SubState,Result,NRestarts";

/// The most journal entries read per probe.
pub const JOURNAL_LINES: u32 = 2000;
/// Processes listed per ranking (as the local observer).
pub const TOP_N: usize = 5;

/// The most bytes of each `/proc` file kept from the `grep` (what its parser needs; a file
/// beyond its cap makes its sections unavailable, except the mount table, which only adds
/// read-only flags and is cut).
pub const PROC_FILE_MAX: [(&str, usize); 8] = [
    ("/proc/stat", 256 * 1024),
    ("/proc/meminfo", 16 * 1024),
    ("/proc/loadavg", 1024),
    ("/proc/pressure/cpu", 1024),
    ("/proc/pressure/memory", 1024),
    ("/proc/pressure/io", 1024),
    ("/proc/net/dev", 128 * 1024),
    ("/proc/self/mountinfo", 256 * 1024),
];
/// Standard output kept of `ps` (about 25,000 processes).
pub const PS_MAX: usize = 1024 * 1024;
/// Standard output kept of `df`.
pub const DF_MAX: usize = 256 * 1024;
/// Standard output kept of `systemctl is-system-running`.
pub const STATE_MAX: usize = 1024;
/// Standard output kept of `ls /nix/var/nix/profiles`.
pub const NIX_MAX: usize = 256 * 1024;
/// Standard output kept of `macha probe --json` (a snapshot document is tens of KiB).
pub const MACHA_PROBE_MAX: usize = 1024 * 1024;
/// The longest line the streaming parsers (units, journal, `/proc`) keep; the rest of a longer
/// line is dropped.
pub const LINE_MAX: usize = 64 * 1024;
/// The most units listed by name (failed, notable) in one snapshot; the counts stay exact.
pub const UNITS_LISTED_MAX: usize = 256;
/// The most bytes the journal's error window holds (256 units × 62 buckets, five samples).
pub const JOURNAL_WINDOW_BYTES: usize = 512 * 1024;

const fn proc_files_max() -> usize {
    let mut sum = 0;
    let mut i = 0;
    while i < PROC_FILE_MAX.len() {
        sum += PROC_FILE_MAX[i].1;
        i += 1;
    }
    sum
}

/// What one probe of the command set holds at most, per host, whatever the host prints (the
/// caps of the kept outputs, one line buffer per streamed command, the units listed with seven
/// properties of at most 256 characters, the journal's window, and standard error and a 16 KiB
/// read buffer per command): about 3.5 MiB. Allocation can round each buffer up to twice its
/// content. Realistic hosts print far less (tens of KiB).
pub const PROBE_BYTES_MAX: usize = proc_files_max()
    + PS_MAX
    + DF_MAX
    + STATE_MAX
    + NIX_MAX
    + 3 * LINE_MAX
    + UNITS_LISTED_MAX * 7 * 256
    + JOURNAL_WINDOW_BYTES
    + TCP_TABLE_BYTES
    + 7 * (crate::pool::STDERR_MAX + 16 * 1024);

// docs/fleet.md states the bound as "about 3.5 MiB": the build fails if the caps grow past it.
const _: () = assert!(PROBE_BYTES_MAX > 3 * 1024 * 1024 && PROBE_BYTES_MAX <= 3600 * 1024);

/// What one probe needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The limit of each remote command (the remote `timeout`).
    pub timeout: Duration,
    /// The journal error window.
    pub journal_window: Duration,
    /// Use `macha probe --json` when the host has Macha.
    pub prefer_macha: bool,
}

/// What Macha remembers about a host between probes: the previous counters (for rates), and the
/// identity and hardware found on first contact.
#[derive(Debug, Clone, Default)]
pub struct HostMemory {
    pub cpu: Option<(CpuTicks, Timestamp)>,
    /// CPU seconds per pid at the previous probe.
    pub process_times: Option<(HashMap<i32, u64>, Timestamp)>,
    pub os: Option<OsFamily>,
    pub hardware: Option<Hardware>,
    /// Commands of the last probe that hit their time limit (a hung host: the fleet schedules
    /// it apart from the healthy ones).
    pub timed_out: usize,
}

/// What `macha probe --json` prints: the host's own snapshot, versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeDocument {
    pub version: u32,
    pub snapshot: Snapshot,
}

pub const PROBE_DOCUMENT_VERSION: u32 = 1;

/// Who the host is: found on first contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    pub os: OsInfo,
    pub hardware: Hardware,
    /// Running services (unit names), or why they could not be listed.
    pub running_services: Result<Vec<String>, String>,
    pub tools: RemoteTools,
}

fn cmd(tools: &RemoteTools, name: &str, args: &[&str], timeout: Duration) -> Result<RemoteCommand, SshError> {
    Ok(RemoteCommand::new(tools.command(name)?.args(args.iter().copied()), timeout))
}

/// The first contact: os-release and `/proc/cpuinfo` over sftp, `uname -s -r -m`, and the
/// running services.
pub async fn identify(pool: &SshPool, target: &Target, timeout: Duration) -> Result<Identity, SshError> {
    let tools = pool.tools(target).await?;
    let os_release = async {
        match pool.read_file(target, "/etc/os-release", 64 * 1024).await {
            Ok(b) => Some(b),
            Err(_) => pool.read_file(target, "/usr/lib/os-release", 64 * 1024).await.ok(),
        }
    };
    let cpuinfo = pool.read_file(target, "/proc/cpuinfo", 1024 * 1024);
    let uname = async {
        match cmd(&tools, "uname", &["-s", "-r", "-m"], timeout) {
            Ok(c) => {
                pool.run(target, &c.output_max(4096)).await.ok().filter(RemoteOutput::success).map(|o| o.stdout_text())
            }
            Err(_) => None,
        }
    };
    let services = async {
        let c = cmd(
            &tools,
            "systemctl",
            &["list-units", "--type=service", "--state=running", "--plain", "--no-legend", "--no-pager", "--full"],
            timeout,
        )
        .map_err(|e| e.to_string())?
        .output_max(256 * 1024);
        let out = pool.run(target, &c).await.map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!("systemctl list-units failed: {}", out.stderr_line()));
        }
        Ok(parse_running_services(&out.stdout_text()))
    };
    let (os_release, cpuinfo, uname, running_services) = tokio::join!(os_release, cpuinfo, uname, services);
    let os_text = os_release.map(|b| String::from_utf8_lossy(&b).into_owned());
    let os = detect_os(os_text.as_deref(), uname.as_deref());
    let info = cpuinfo.ok().map(|b| macha_parse::cpuinfo::parse_cpuinfo(&String::from_utf8_lossy(&b)));
    let hardware = Hardware {
        cpu_model: info.as_ref().and_then(|i| i.model.clone()).unwrap_or_else(|| "unknown".into()),
        physical_cores: info.as_ref().map_or(0, |i| if i.cores > 0 { i.cores } else { i.processors }),
        logical_cpus: info.as_ref().map_or(0, |i| i.processors),
        gpus: Vec::new(),
        gpu_notes: vec!["GPUs, USB and block devices are not observed over SSH".into()],
        usb: Vec::new(),
        block_devices: Vec::new(),
    };
    Ok(Identity { os, hardware, running_services, tools })
}

/// `systemctl list-units --plain --no-legend` lines → unit names.
pub fn parse_running_services(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| u.ends_with(".service") && macha_core::UnitName::parse(u).is_ok())
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What each part of the command set gave (or why it failed). The units and the journal are
/// parsed as their output streams in; the other parts are kept up to their caps.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    pub files: Option<Result<GrepFiles, String>>,
    pub units: Option<Result<UnitsParser, String>>,
    pub state: Option<Result<String, String>>,
    pub df: Option<Result<String, String>>,
    pub ps: Option<Result<String, String>>,
    pub journal: Option<Result<JournalParser, String>>,
    pub nix: Option<Result<String, String>>,
}

/// Observes `target` once. `Err` only when the host could not be reached at all (connection,
/// host key, authentication); every other failure is an `Unavailable` section of the snapshot.
/// `now` is when the probe starts; the snapshot is stamped when its last output arrived, so that
/// whatever it causes comes after it in time.
pub async fn observe(
    pool: &SshPool,
    target: &Target,
    spec: &ProbeSpec,
    memory: &mut HostMemory,
    now: Timestamp,
) -> Result<Snapshot, SshError> {
    let started = Instant::now();
    let tools = pool.tools(target).await?;
    let timeouts = AtomicUsize::new(0);
    if spec.prefer_macha && tools.has("macha") {
        match probe_with_macha(pool, target, &tools, spec, &timeouts).await {
            Ok(mut snap) => {
                snap.host = target.name.clone();
                snap.taken_at = now.plus(started.elapsed());
                apply_cpu_rate(&mut snap, memory);
                snap.collect_micros = micros(started);
                // The host's own count stays in the snapshot; none of our commands hung.
                memory.timed_out = 0;
                return Ok(snap);
            }
            Err(e) => tracing::info!(host = %target.name, "macha probe failed, using the command set: {e}"),
        }
    }
    let parts = run_parts(pool, target, &tools, spec, memory.os == Some(OsFamily::Nixos), &timeouts).await?;
    let mut snap = assemble(&target.name, now.plus(started.elapsed()), &parts, memory);
    snap.collect_micros = micros(started);
    snap.timed_out = count(&timeouts);
    memory.timed_out = snap.timed_out as usize;
    Ok(snap)
}

fn count(timeouts: &AtomicUsize) -> u32 {
    u32::try_from(timeouts.load(Ordering::Relaxed)).unwrap_or(u32::MAX)
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn probe_with_macha(
    pool: &SshPool,
    target: &Target,
    tools: &RemoteTools,
    spec: &ProbeSpec,
    timeouts: &AtomicUsize,
) -> Result<Snapshot, String> {
    let c = cmd(tools, "macha", &["probe", "--json"], spec.timeout).map_err(|e| e.to_string())?;
    let out = match pool.run(target, &c.output_max(MACHA_PROBE_MAX)).await {
        Ok(out) => out,
        Err(e) => {
            if matches!(e, SshError::CommandTimeout { .. }) {
                timeouts.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e.to_string());
        }
    };
    if !out.success() || out.truncated {
        let why = if out.truncated { "larger than the limit".to_owned() } else { describe_status(out.status) };
        return Err(format!("{why}: {}", out.stderr_line()));
    }
    let doc: ProbeDocument =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable probe output: {e}"))?;
    if doc.version != PROBE_DOCUMENT_VERSION {
        return Err(format!("probe document version {} (this Macha reads {PROBE_DOCUMENT_VERSION})", doc.version));
    }
    Ok(doc.snapshot)
}

/// One part's outcome: `Err` only when the connection failed (the probe fails); `Ok(Err(reason))`
/// when the command did (its sections are unavailable). Timeouts are counted.
type PartResult<T> = Result<Result<T, String>, SshError>;

fn part_error(e: SshError, timeouts: &AtomicUsize) -> PartResult<()> {
    match e {
        SshError::Disconnected { .. } => Err(e),
        SshError::CommandTimeout { .. } => {
            timeouts.fetch_add(1, Ordering::Relaxed);
            Ok(Err(e.to_string()))
        }
        other => Ok(Err(other.to_string())),
    }
}

/// Runs a part whose output is kept (up to its cap).
async fn capped(
    pool: &SshPool,
    target: &Target,
    name: &'static str,
    c: Result<RemoteCommand, SshError>,
    max: usize,
    timeouts: &AtomicUsize,
) -> PartResult<String> {
    let c = match c {
        Ok(c) => c.output_max(max),
        Err(e) => return Ok(Err(e.to_string())),
    };
    match pool.run(target, &c).await {
        Ok(out) => Ok(classify_output(name, &out)),
        Err(e) => part_error(e, timeouts).map(|r| r.map(|()| String::new())),
    }
}

/// Runs a part whose output is handed line by line to `on_line` as it arrives.
async fn streamed(
    pool: &SshPool,
    target: &Target,
    name: &'static str,
    c: Result<RemoteCommand, SshError>,
    on_line: &mut (dyn FnMut(&str) + Send),
    timeouts: &AtomicUsize,
) -> PartResult<()> {
    let c = match c {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut lines = LineSplitter::new(LINE_MAX);
    let result = {
        let mut sink = |chunk: &[u8]| lines.feed(chunk, &mut *on_line);
        pool.run_streaming(target, &c, &mut sink).await
    };
    match result {
        Ok(out) => {
            lines.finish(&mut *on_line);
            Ok(classify_output(name, &out).map(|_| ()))
        }
        Err(e) => part_error(e, timeouts),
    }
}

/// Runs the command set, all parts at once. Fails only if the connection itself fails.
async fn run_parts(
    pool: &SshPool,
    target: &Target,
    tools: &RemoteTools,
    spec: &ProbeSpec,
    nixos: bool,
    timeouts: &AtomicUsize,
) -> Result<Parts, SshError> {
    let t = spec.timeout;
    let mut files_args = vec!["-H", "-a", "-s", "--", ""];
    files_args.extend(PROC_FILES);
    let since = format!("--since=-{}s", spec.journal_window.as_secs().max(1));
    let lines = format!("--lines={JOURNAL_LINES}");
    let df_excludes: Vec<String> = DEFAULT_PSEUDO_FS_TYPES
        .iter()
        .chain(DEFAULT_NETWORK_FS_TYPES)
        .flat_map(|t| ["-x".to_owned(), (*t).to_owned()])
        .collect();
    let mut df_args: Vec<&str> = vec!["-l", "-B1", "--output=size,used,avail,itotal,iavail,fstype,source,target"];
    df_args.extend(df_excludes.iter().map(String::as_str));
    let property = format!("--property={UNIT_PROPERTIES}");
    let journal_args = [
        "--output=json",
        "--priority=err",
        "--no-pager",
        "--output-fields=MESSAGE,PRIORITY,_SYSTEMD_UNIT,UNIT,SYSLOG_IDENTIFIER",
        &since,
        &lines,
    ];

    let mut grep = GrepFiles::default();
    let mut units = UnitsParser::default();
    let mut journal = JournalParser::new(spec.journal_window);
    let (mut on_grep, mut on_unit, mut on_journal) =
        (|l: &str| grep.line(l), |l: &str| units.line(l), |l: &str| journal.line(l));
    let files = streamed(pool, target, "files", cmd(tools, "grep", &files_args, t), &mut on_grep, timeouts);
    let units_run = streamed(
        pool,
        target,
        "units",
        cmd(tools, "systemctl", &["show", "--no-pager", &property, "--", "*"], t),
        &mut on_unit,
        timeouts,
    );
    let journal_run =
        streamed(pool, target, "journal", cmd(tools, "journalctl", &journal_args, t), &mut on_journal, timeouts);
    let state = capped(pool, target, "state", cmd(tools, "systemctl", &["is-system-running"], t), STATE_MAX, timeouts);
    let df = capped(pool, target, "df", cmd(tools, "df", &df_args, t), DF_MAX, timeouts);
    let ps = capped(pool, target, "ps", cmd(tools, "ps", &["-e", "-o", "pid=,rss=,times=,comm="], t), PS_MAX, timeouts);
    let nix = async {
        if nixos {
            let c = cmd(tools, "ls", &["-l", "--time-style=+%s", "/nix/var/nix/profiles/"], t);
            Some(capped(pool, target, "nix", c, NIX_MAX, timeouts).await)
        } else {
            None
        }
    };
    let (files, units_r, journal_r, state, df, ps, nix) =
        tokio::join!(files, units_run, journal_run, state, df, ps, nix);
    Ok(Parts {
        files: Some(files?.map(|()| grep)),
        units: Some(units_r?.map(|()| units)),
        state: Some(state?),
        df: Some(df?),
        ps: Some(ps?),
        journal: Some(journal_r?.map(|()| journal)),
        nix: nix.transpose()?,
    })
}

/// Which exit codes still carry usable output: `grep` exits 2 when one of the files is missing
/// (the others are still printed), `systemctl is-system-running` exits non-zero unless running.
/// Streamed parts have no `stdout` here: their parsers judge what arrived.
fn classify_output(name: &str, out: &RemoteOutput) -> Result<String, String> {
    let usable = match name {
        "files" => matches!(out.status, Some(0 | 2)),
        "state" => !out.stdout.is_empty(),
        "df" => matches!(out.status, Some(0 | 1)) && !out.stdout.is_empty(),
        _ => out.success(),
    };
    if out.truncated {
        return Err(format!("{name}: output larger than the limit"));
    }
    if name == "journal" {
        // journalctl succeeds with nothing to show both when there is no journal and when the
        // login user may only read its own: neither is "no errors" (fail closed).
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No journal files were found") {
            return Err("no journal files were found".into());
        }
        if err.contains("not seeing messages from other users") || err.contains("insufficient permissions") {
            return Err("the login user cannot read the system journal (add it to the systemd-journal group)".into());
        }
    }
    if usable {
        Ok(out.stdout_text())
    } else {
        let err = out.stderr_line();
        Err(if err.is_empty() { describe_status(out.status) } else { err })
    }
}

/// Splits a byte stream into lines for the streaming parsers, holding at most one partial line
/// of `max` bytes; a longer line is cut to its first `max` bytes.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    cut: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter { buf: Vec::new(), max, cut: false }
    }

    /// Feeds a chunk; every line it completes goes to `on_line` (without its newline).
    pub fn feed(&mut self, chunk: &[u8], on_line: &mut (dyn FnMut(&str) + Send)) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.push(&rest[..i]);
            on_line(&String::from_utf8_lossy(&self.buf));
            self.buf.clear();
            self.cut = false;
            rest = &rest[i + 1..];
        }
        self.push(rest);
    }

    /// The last line, if the stream did not end with a newline.
    pub fn finish(&mut self, on_line: &mut (dyn FnMut(&str) + Send)) {
        if !self.buf.is_empty() {
            on_line(&String::from_utf8_lossy(&self.buf));
        }
        self.buf = Vec::new();
    }

    fn push(&mut self, part: &[u8]) {
        let room = self.max.saturating_sub(self.buf.len());
        self.cut |= part.len() > room;
        self.buf.extend_from_slice(&part[..part.len().min(room)]);
    }
}

/// Turns the parts into a snapshot. Pure, apart from updating `memory`.
pub fn assemble(host: &HostName, now: Timestamp, parts: &Parts, memory: &mut HostMemory) -> Snapshot {
    let mut snap = Snapshot::all_unavailable(host.clone(), now, "not observed");
    let missing = |what: &str| format!("{what}: not run");
    // /proc files.
    match &parts.files {
        Some(Ok(files)) => {
            let get = |f: &str| files.get(f);
            let need = |f: &str| files.need(f);
            snap.cpu = Section::from_result(need("/proc/stat").and_then(procfs::parse_stat).map(|s| Cpu {
                logical_cpus: s.logical_cpus,
                usage_percent: None,
                window_ms: None,
                ticks: s.ticks,
            }));
            apply_cpu_rate(&mut snap, memory);
            snap.memory = Section::from_result(need("/proc/meminfo").and_then(procfs::parse_meminfo));
            snap.load = Section::from_result(need("/proc/loadavg").and_then(procfs::parse_loadavg));
            snap.network = Section::from_result(need("/proc/net/dev").and_then(procfs::parse_net_dev));
            snap.pressure = Section::from_result(pressure(&get));
            snap.connections = Section::from_result(files.connections());
            let mountinfo = get("/proc/self/mountinfo").map(str::to_owned);
            snap.filesystems = match &parts.df {
                Some(Ok(df)) => Section::from_result(parse_df(df, mountinfo.as_deref())),
                Some(Err(e)) => Section::unavailable(format!("df: {e}")),
                None => Section::unavailable(missing("df")),
            };
        }
        Some(Err(e)) => {
            let reason = format!("reading /proc: {e}");
            snap.cpu = Section::unavailable(&reason);
            snap.memory = Section::unavailable(&reason);
            snap.load = Section::unavailable(&reason);
            snap.network = Section::unavailable(&reason);
            snap.pressure = Section::unavailable(&reason);
            snap.connections = Section::unavailable(&reason);
            snap.filesystems = match &parts.df {
                Some(Ok(df)) => Section::from_result(parse_df(df, None)),
                Some(Err(e)) => Section::unavailable(format!("df: {e}")),
                None => Section::unavailable(missing("df")),
            };
        }
        None => {}
    }
    snap.units = match (&parts.units, &parts.state) {
        (Some(Ok(units)), state) => {
            let system_state = match state {
                Some(Ok(s)) => s.trim().to_owned(),
                _ => "unknown".to_owned(),
            };
            Section::from_result(units.clone().finish(&system_state))
        }
        (Some(Err(e)), _) => Section::unavailable(format!("systemctl: {e}")),
        (None, _) => Section::unavailable(missing("systemctl")),
    };
    snap.processes = match &parts.ps {
        Some(Ok(ps)) => Section::from_result(parse_ps(ps, now, memory)),
        Some(Err(e)) => Section::unavailable(format!("ps: {e}")),
        None => Section::unavailable(missing("ps")),
    };
    snap.journal = match &parts.journal {
        Some(Ok(journal)) => match journal.summary(now) {
            Ok(summary) => Section::ok(summary),
            Err(e) => Section::unavailable(format!("journalctl: {e}")),
        },
        Some(Err(e)) => Section::unavailable(format!("journalctl: {e}")),
        None => Section::unavailable(missing("journalctl")),
    };
    snap.nix = match (&parts.nix, memory.os) {
        (Some(Ok(ls)), _) => Section::from_result(parse_profiles(ls, snap.filesystems.data().map(Vec::as_slice))),
        (Some(Err(e)), _) => Section::unavailable(format!("nix profiles: {e}")),
        (None, Some(OsFamily::Nixos)) => Section::unavailable(missing("ls /nix/var/nix/profiles")),
        (None, os) => Section::unavailable(format!(
            "not a NixOS host ({})",
            os.map_or("operating system not identified yet", OsFamily::as_str)
        )),
    };
    snap.hardware = match &memory.hardware {
        Some(h) => Section::ok(h.clone()),
        None => Section::unavailable("hardware is read on first contact, which did not complete"),
    };
    snap
}

/// Fills in the CPU rate from the previous counters of the same host, and remembers these.
fn apply_cpu_rate(snap: &mut Snapshot, memory: &mut HostMemory) {
    let Section::Ok { data: cpu } = &mut snap.cpu else { return };
    if let Some((prev, at)) = memory.cpu {
        let total = |t: CpuTicks| t.busy.saturating_add(t.idle);
        if let (Some(busy), Some(all)) =
            (cpu.ticks.busy.checked_sub(prev.busy), total(cpu.ticks).checked_sub(total(prev)))
            && all > 0
        {
            cpu.usage_percent = Some((100.0 * busy as f64 / all as f64).clamp(0.0, 100.0));
            cpu.window_ms =
                (snap.taken_at >= at).then(|| u64::try_from(snap.taken_at.since(at).as_millis()).unwrap_or(0));
        }
    }
    memory.cpu = Some((cpu.ticks, snap.taken_at));
}

fn pressure<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Pressure, String> {
    let read = |f: &str| {
        get(f).ok_or_else(|| format!("{f} could not be read (kernel without PSI?)")).and_then(procfs::parse_pressure)
    };
    let cpu = read("/proc/pressure/cpu")?;
    let mem = read("/proc/pressure/memory")?;
    let io = read("/proc/pressure/io")?;
    let full = |p: &procfs::PressureFile, f: &str| p.full.clone().ok_or_else(|| format!("{f} has no full line"));
    Ok(Pressure {
        cpu_some: cpu.some,
        memory_full: full(&mem, "/proc/pressure/memory")?,
        memory_some: mem.some,
        io_full: full(&io, "/proc/pressure/io")?,
        io_some: io.some,
    })
}

/// The `/proc` files of one `grep -H`, split back apart as its lines arrive: every line is
/// `<file>:<line>`; only the files asked for are recognised (a line of one file never passes for
/// another), and each file is kept up to its cap in [`PROC_FILE_MAX`].
#[derive(Debug, Clone, Default)]
pub struct GrepFiles {
    files: BTreeMap<&'static str, String>,
    /// The TCP tables, parsed as they arrive; `None` until a line of one arrived.
    tcp: Option<macha_parse::tcp::TcpTable>,
    /// Files that went beyond their cap.
    overflow: BTreeSet<&'static str>,
}

impl GrepFiles {
    /// Takes one line of the `grep` output.
    pub fn line(&mut self, line: &str) {
        if let Some(f) = TCP_FILES
            .iter()
            .filter(|f| line.len() > f.len() && line.starts_with(**f) && line.as_bytes()[f.len()] == b':')
            .max_by_key(|f| f.len())
        {
            self.tcp.get_or_insert_with(Default::default).line(&line[f.len() + 1..]);
            return;
        }
        // Longest name first, so "/proc/stat" never claims a line of "/proc/stat_x".
        let hit = PROC_FILE_MAX
            .iter()
            .filter(|(f, _)| line.len() > f.len() && line.starts_with(*f) && line.as_bytes()[f.len()] == b':')
            .max_by_key(|(f, _)| f.len());
        let Some((f, max)) = hit else { return };
        let body = &line[f.len() + 1..];
        let kept = self.files.entry(*f).or_default();
        if kept.len() + body.len() + 1 > *max {
            self.overflow.insert(*f);
            return;
        }
        kept.push_str(body);
        kept.push('\n');
    }

    /// The text of `file`, if it was read (possibly cut at its cap).
    pub fn get(&self, file: &str) -> Option<&str> {
        self.files.get(file).map(String::as_str)
    }

    /// The whole text of `file`, or why there is none.
    pub fn need(&self, file: &str) -> Result<&str, String> {
        if self.overflow.contains(file) {
            let max = PROC_FILE_MAX.iter().find(|(f, _)| *f == file).map_or(0, |(_, m)| *m);
            return Err(format!("{file} is larger than the {max} bytes read of it"));
        }
        self.get(file).ok_or_else(|| format!("{file} could not be read"))
    }

    /// The TCP picture, or why there is none.
    pub fn connections(&self) -> Result<macha_core::snapshot::Connections, String> {
        match &self.tcp {
            Some(t) => Ok(t.clone().finish()),
            None => Err("/proc/net/tcp could not be read".to_owned()),
        }
    }

    /// From a whole `grep -H` output.
    pub fn from_text(text: &str) -> GrepFiles {
        let mut g = GrepFiles::default();
        text.lines().for_each(|l| g.line(l));
        g
    }
}

/// Splits `grep -H` output back into files (see [`GrepFiles`]).
pub fn split_grep(text: &str) -> BTreeMap<&'static str, String> {
    GrepFiles::from_text(text).files
}

/// Parses `systemctl show --property=… -- '*'` as it streams in: blocks of `Key=value` lines
/// separated by blank lines, one per loaded unit. Holds one block and the units worth listing
/// (failed or restarted), at most [`UNITS_LISTED_MAX`] of them by name; the counts stay exact.
#[derive(Debug, Clone, Default)]
pub struct UnitsParser {
    block: BTreeMap<String, String>,
    total: u32,
    notable: Vec<UnitState>,
    failed: Vec<String>,
    failed_total: usize,
}

impl UnitsParser {
    /// Takes one line of the output.
    pub fn line(&mut self, line: &str) {
        if line.trim().is_empty() {
            self.flush();
            return;
        }
        if let Some((k, v)) = line.split_once('=')
            && UNIT_PROPERTIES.split(',').any(|p| p == k)
        {
            self.block.insert(k.to_owned(), v.chars().take(256).collect());
        }
    }

    fn flush(&mut self) {
        let block = std::mem::take(&mut self.block);
        let Some(id) = block.get("Id").filter(|s| !s.is_empty()) else { return };
        let get = |k: &str| block.get(k).cloned().unwrap_or_default();
        let is_service = id.ends_with(".service");
        let unit = UnitState {
            name: id.clone(),
            description: get("Description"),
            load_state: get("LoadState"),
            active_state: get("ActiveState"),
            sub_state: get("SubState"),
            result: block.get("Result").filter(|_| is_service).cloned(),
            n_restarts: if is_service { block.get("NRestarts").and_then(|s| s.parse().ok()) } else { None },
        };
        self.total = self.total.saturating_add(1);
        let failed = unit.active_state == "failed";
        if failed {
            self.failed_total += 1;
            if self.failed.len() < UNITS_LISTED_MAX {
                self.failed.push(unit.name.clone());
            }
        }
        if (failed || unit.n_restarts.is_some_and(|n| n > 0)) && self.notable.len() < UNITS_LISTED_MAX {
            self.notable.push(unit);
        }
    }

    /// The units section, with the system state from `systemctl is-system-running`.
    pub fn finish(mut self, system_state: &str) -> Result<Units, String> {
        self.flush();
        if self.total == 0 {
            return Err("systemctl listed no units".into());
        }
        if self.failed_total > self.failed.len() {
            tracing::debug!(failed = self.failed_total, "more failed units than listed");
        }
        let system_state = if system_state.is_empty() { "unknown".to_owned() } else { system_state.to_owned() };
        Ok(Units { system_state, total: self.total, notable: self.notable, failed: self.failed })
    }
}

/// Parses a whole `systemctl show` output (see [`UnitsParser`]).
pub fn parse_units(text: &str, system_state: &str) -> Result<Units, String> {
    let mut p = UnitsParser::default();
    text.lines().for_each(|l| p.line(l));
    p.finish(system_state)
}

/// Parses `df -B1 --output=size,avail,itotal,iavail,fstype,source,target` (the mount point last,
/// so that one with spaces stays whole). Read-only flags come from the mount table when given.
pub fn parse_df(text: &str, mountinfo: Option<&str>) -> Result<Vec<Filesystem>, String> {
    let mounts = mountinfo.and_then(|m| macha_parse::mounts::parse_mountinfo(m.as_bytes()).ok()).unwrap_or_default();
    let mut out: Vec<Filesystem> = Vec::new();
    for line in text.lines().skip(1) {
        let (fields, rest) = fields_and_rest(line, 7);
        if fields.len() < 7 {
            continue;
        }
        let nums: Vec<Option<u64>> = fields[..5].iter().map(|v| v.parse().ok()).collect();
        let (fs_type, source) = (fields[5], fields[6]);
        // The rest of the line, as printed (spaces inside the mount point kept).
        let target = rest.trim();
        let (Some(size), Some(avail)) = (nums[0], nums[2]) else { continue };
        if target.is_empty() || !target.starts_with('/') {
            continue;
        }
        if DEFAULT_EXCLUDED_MOUNT_PREFIXES.iter().any(|p| target.starts_with(p))
            || out.iter().any(|f| f.mount_point == target)
        {
            continue;
        }
        let read_only = mounts.iter().rev().find(|m| m.mount_point_lossy() == target).is_some_and(|m| m.read_only());
        out.push(Filesystem {
            mount_point: target.to_owned(),
            device: source.to_owned(),
            fs_type: fs_type.to_owned(),
            total_bytes: size,
            available_bytes: avail,
            // df's Used, so that "% full" is df's: used / (used + available).
            used_bytes: nums[1],
            total_inodes: nums[3].unwrap_or(0),
            free_inodes: nums[4].unwrap_or(0),
            read_only,
        });
    }
    if out.is_empty() {
        return Err("df listed no filesystems".into());
    }
    Ok(out)
}

/// The first `n` whitespace-separated fields of `line` and what follows them.
fn fields_and_rest(line: &str, n: usize) -> (Vec<&str>, &str) {
    let mut fields = Vec::with_capacity(n);
    let mut rest = line;
    while fields.len() < n {
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            break;
        }
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        fields.push(&trimmed[..end]);
        rest = &trimmed[end..];
    }
    (fields, rest)
}

/// `[[dd-]hh:]mm:ss` or plain seconds (`times`) → seconds.
fn cpu_seconds(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, s),
    };
    let parts: Vec<u64> = rest.split(':').map(|p| p.parse::<u64>().ok()).collect::<Option<Vec<_>>>()?;
    let secs = parts.iter().fold(0u64, |acc, p| acc.saturating_mul(60).saturating_add(*p));
    Some(days.saturating_mul(86_400).saturating_add(secs))
}

/// Parses `ps -e -o pid=,rss=,times=,comm=`. CPU rates come from the previous probe's times.
pub fn parse_ps(text: &str, now: Timestamp, memory: &mut HostMemory) -> Result<Processes, String> {
    struct P {
        pid: i32,
        rss: u64,
        secs: u64,
        name: String,
    }
    let mut procs = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(pid), Some(rss), Some(times)) = (it.next(), it.next(), it.next()) else { continue };
        let (Ok(pid), Ok(rss), Some(secs)) = (pid.parse::<i32>(), rss.parse::<u64>(), cpu_seconds(times)) else {
            continue;
        };
        let name: String = it.collect::<Vec<_>>().join(" ").chars().filter(|c| !c.is_control()).take(64).collect();
        procs.push(P { pid, rss: rss.saturating_mul(1024), secs, name });
    }
    if procs.is_empty() {
        return Err("ps listed no processes".into());
    }
    let window =
        memory.process_times.as_ref().filter(|(_, at)| now > *at).map(|(m, at)| (m, now.since(*at).as_secs_f64()));
    let rate = |p: &P| -> Option<f64> {
        let (prev, secs) = window?;
        let before = prev.get(&p.pid).copied().unwrap_or(0);
        Some(p.secs.saturating_sub(before) as f64 / secs * 100.0)
    };
    let info = |p: &P| ProcessInfo {
        pid: p.pid,
        name: p.name.clone(),
        rss_bytes: p.rss,
        cpu_percent: rate(p),
        cpu_time_ms: p.secs.saturating_mul(1000),
    };
    let mut by_cpu: Vec<&P> = procs.iter().collect();
    by_cpu.sort_by(|a, b| rate(b).unwrap_or(0.0).total_cmp(&rate(a).unwrap_or(0.0)).then(b.secs.cmp(&a.secs)));
    let top_cpu = by_cpu.iter().take(TOP_N).map(|p| info(p)).collect();
    let mut by_rss: Vec<&P> = procs.iter().collect();
    by_rss.sort_by_key(|p| std::cmp::Reverse(p.rss));
    let top_rss = by_rss.iter().take(TOP_N).map(|p| info(p)).collect();
    let total = u32::try_from(procs.len()).unwrap_or(u32::MAX);
    memory.process_times = Some((procs.iter().map(|p| (p.pid, p.secs)).collect(), now));
    Ok(Processes { total, top_cpu, top_rss })
}

/// journalctl JSON lines, as they stream in, into the error window (bounded whatever the number
/// of entries: `macha_core::journal::ErrorWindow`).
#[derive(Debug, Clone)]
pub struct JournalParser {
    window: ErrorWindow,
    tally: macha_parse::journal::ReadTally,
}

impl JournalParser {
    pub fn new(window: Duration) -> JournalParser {
        JournalParser { window: ErrorWindow::new(window), tally: Default::default() }
    }

    /// Takes one JSON line; unreadable lines are skipped and counted.
    pub fn line(&mut self, line: &str) {
        if line.is_empty() {
            return;
        }
        let parsed = macha_parse::journal::parse_entry(line.as_bytes(), 3);
        self.tally.add(&parsed);
        if let Ok(entry) = parsed {
            self.window.record(entry.unit.as_deref(), Timestamp::from_millis(entry.realtime_millis()), &entry.message);
        }
    }

    /// The summary at `now`, or why the output cannot stand for the journal (it was mostly not
    /// journal JSON: [`macha_parse::journal::ReadTally::verdict`]).
    pub fn summary(&self, now: Timestamp) -> Result<JournalSummary, String> {
        self.tally.verdict()?;
        let mut w = self.window.clone();
        w.prune(now);
        Ok(w.summary(now))
    }

    /// From a whole output.
    pub fn from_text(text: &str, window: Duration) -> JournalParser {
        let mut p = JournalParser::new(window);
        text.lines().for_each(|l| p.line(l));
        p
    }
}

/// Parses `ls -l --time-style=+%s /nix/var/nix/profiles/`: the `system-N-link` generations (with
/// their link times and targets) and which one `system` points at. Store space is that of the
/// filesystem holding `/nix/store` (from `df`).
pub fn parse_profiles(text: &str, filesystems: Option<&[Filesystem]>) -> Result<NixInfo, String> {
    let mut current: Option<u32> = None;
    let mut generations: Vec<Generation> = Vec::new();
    for line in text.lines() {
        let Some((left, target)) = line.split_once(" -> ") else { continue };
        let mut fields: Vec<&str> = left.split_whitespace().collect();
        let Some(name) = fields.pop() else { continue };
        let mtime = fields.pop().and_then(|t| t.parse::<i64>().ok());
        if name == "system" {
            current = macha_parse::nix::generation_number(target.trim());
        } else if let Some(n) = macha_parse::nix::generation_number(name) {
            generations.push(Generation {
                number: n,
                path: target.trim().to_owned(),
                created_at: mtime.map(|s| Timestamp::from_millis(s.saturating_mul(1000))),
                current: false,
            });
        }
    }
    if generations.is_empty() {
        return Err("no system generations under /nix/var/nix/profiles".into());
    }
    generations.sort_by_key(|g| g.number);
    for g in &mut generations {
        g.current = Some(g.number) == current;
    }
    let current_system = generations.iter().find(|g| g.current).map(|g| g.path.clone()).unwrap_or_default();
    let store = filesystems.and_then(|fs| {
        fs.iter()
            .filter(|f| {
                "/nix/store".starts_with(f.mount_point.as_str())
                    && (f.mount_point == "/"
                        || "/nix/store"
                            .strip_prefix(f.mount_point.as_str())
                            .is_some_and(|r| r.is_empty() || r.starts_with('/')))
            })
            .max_by_key(|f| f.mount_point.len())
    });
    let (total, available) = store.map_or((0, 0), |f| (f.total_bytes, f.available_bytes));
    if store.is_none() {
        return Err("the filesystem holding /nix/store was not observed".into());
    }
    Ok(NixInfo { current_system, generations, store_total_bytes: total, store_available_bytes: available })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostName {
        HostName::parse("c1").unwrap_or_else(|e| panic!("{e}"))
    }

    const GREP: &str = "/proc/stat:cpu  100 0 50 800 50 0 0 0 0 0\n/proc/stat:cpu0 50 0 25 400 25 0 0 0 0 0\n/proc/stat:cpu1 50 0 25 400 25 0 0 0 0 0\n/proc/meminfo:MemTotal:        8000000 kB\n/proc/meminfo:MemAvailable:    4000000 kB\n/proc/meminfo:SwapTotal:             0 kB\n/proc/meminfo:SwapFree:              0 kB\n/proc/loadavg:0.50 0.40 0.30 2/170 99\n/proc/pressure/cpu:some avg10=1.00 avg60=0.50 avg300=0.10 total=1\n/proc/pressure/cpu:full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n/proc/pressure/memory:some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n/proc/pressure/memory:full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n/proc/pressure/io:some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n/proc/pressure/io:full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n/proc/net/dev:Inter-|   Receive                                                |  Transmit\n/proc/net/dev: face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n/proc/net/dev:  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n/proc/self/mountinfo:25 1 0:30 / / rw,relatime - overlay overlay rw,lowerdir=/x\n/proc/self/mountinfo:30 25 0:31 / /srv ro,relatime - ext4 /dev/vdb ro\n";

    const SHOW: &str = "Id=lab-demo.service\nDescription=Lab demo service (breakable)\nLoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nNRestarts=0\n\nResult=success\nNRestarts=3\nId=flappy.service\nDescription=Flappy\nLoadState=loaded\nActiveState=active\nSubState=running\n\nId=ssh.socket\nDescription=OpenBSD Secure Shell server socket\nLoadState=loaded\nActiveState=active\nSubState=listening\nResult=success\n\nId=ssh.service\nDescription=OpenBSD Secure Shell server\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\nNRestarts=0\n";

    const DF: &str = "   1B-blocks         Used       Avail   Inodes    IFree Type     Filesystem     Mounted on\n270553174016 179201052672 77587779584 16777216 16348131 overlay  overlay        /\n10000 4000 5000 100 50 ext4 /dev/vdb /srv\n2000 1000 1000 10 5 ext4 /dev/vdc /mnt/with space\n10000 4000 5000 100 50 ext4 /dev/vdb /srv\n1 1 1 1 1 ext4 /dev/x /run/netns/foo\n";

    #[test]
    fn grep_output_splits_by_file() {
        let files = split_grep(GREP);
        assert_eq!(files.get("/proc/loadavg").map(String::as_str), Some("0.50 0.40 0.30 2/170 99\n"));
        assert!(files.get("/proc/meminfo").is_some_and(|m| m.starts_with("MemTotal:")));
        let tricky = split_grep("/proc/stat_x:1\n/proc/stat:cpu 1\nnoise\n/proc/pressure/cpu:x\n");
        assert_eq!(tricky.get("/proc/stat").map(String::as_str), Some("cpu 1\n"));
        assert_eq!(tricky.get("/proc/pressure/cpu").map(String::as_str), Some("x\n"));
        assert_eq!(tricky.len(), 2, "{tricky:?}");
    }

    #[test]
    fn each_proc_file_is_kept_up_to_its_cap() {
        // A mount table larger than its cap is cut (it only adds flags); a /proc/stat larger than
        // its cap makes its sections unavailable instead of parsing half of it.
        let mut g = GrepFiles::default();
        let line = format!("/proc/self/mountinfo:{}", "m".repeat(1000));
        for _ in 0..1000 {
            g.line(&line);
        }
        g.line("/proc/loadavg:0.50 0.40 0.30 2/170 99");
        let kept = g.get("/proc/self/mountinfo").map_or(0, str::len);
        assert!(kept > 200 * 1024 && kept <= 256 * 1024, "{kept}");
        assert!(g.need("/proc/self/mountinfo").is_err());
        assert_eq!(g.need("/proc/loadavg"), Ok("0.50 0.40 0.30 2/170 99\n"));
        let stat = format!("/proc/stat:intr {}", "1 ".repeat(200 * 1024));
        g.line(&stat);
        g.line(&stat);
        assert!(g.need("/proc/stat").is_err_and(|e| e.contains("larger than")));
    }

    #[test]
    fn lines_are_split_across_chunks_and_cut_at_the_limit() {
        let mut lines: Vec<String> = Vec::new();
        let mut split = LineSplitter::new(8);
        let mut push = |l: &str| lines.push(l.to_owned());
        for chunk in [&b"ab"[..], b"c\nde", b"f\n0123456789abcdef\nlast"] {
            split.feed(chunk, &mut push);
        }
        split.finish(&mut push);
        assert_eq!(lines, ["abc", "def", "01234567", "last"]);
    }

    #[test]
    fn units_stream_keeps_counts_exact_and_lists_bounded() {
        let mut p = UnitsParser::default();
        for i in 0..(UNITS_LISTED_MAX + 500) {
            for l in [
                format!("Id=u{i}.service"),
                "ActiveState=failed".to_owned(),
                format!("Description={}", "d".repeat(10_000)),
                "Unasked=ignored".to_owned(),
                String::new(),
            ] {
                p.line(&l);
            }
        }
        let u = p.finish("degraded").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.total as usize, UNITS_LISTED_MAX + 500);
        assert_eq!((u.failed.len(), u.notable.len()), (UNITS_LISTED_MAX, UNITS_LISTED_MAX));
        assert_eq!(u.notable[0].description.len(), 256);
    }

    #[test]
    fn units_from_systemctl_show() {
        let u = parse_units(SHOW, "degraded").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((u.total, u.system_state.as_str()), (4, "degraded"));
        assert_eq!(u.failed, ["lab-demo.service"]);
        let names: Vec<&str> = u.notable.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["lab-demo.service", "flappy.service"]);
        assert_eq!(u.notable[0].result.as_deref(), Some("exit-code"));
        assert_eq!(u.notable[1].n_restarts, Some(3));
        assert!(parse_units("", "running").is_err());
    }

    #[test]
    fn df_rows_with_spaces_duplicates_and_flags() {
        let mountinfo = split_grep(GREP).remove("/proc/self/mountinfo");
        let fs = parse_df(DF, mountinfo.as_deref()).unwrap_or_else(|e| panic!("{e}"));
        let mounts: Vec<&str> = fs.iter().map(|f| f.mount_point.as_str()).collect();
        assert_eq!(mounts, ["/", "/srv", "/mnt/with space"]);
        assert_eq!(fs[0].total_bytes, 270_553_174_016);
        assert_eq!((fs[1].read_only, fs[0].read_only), (true, false));
        // "% full" is df's: used / (used + available), the root reserve counted as neither
        // (179,201,052,672 / 256,788,832,256 = 69.8 %, where 1 - avail/size would say 71.3 %).
        assert_eq!(fs[0].used_bytes, Some(179_201_052_672));
        let pct = fs[0].used_percent().unwrap_or_default();
        assert!((pct - 69.79).abs() < 0.01, "{pct}");
        assert!(parse_df("header only\n", None).is_err());
    }

    #[test]
    fn ps_rates_from_the_previous_probe() {
        let mut mem = HostMemory::default();
        let t0 = Timestamp::from_millis(1_000_000);
        let first = parse_ps("  1 11736 3 systemd\n 42 2048 100 busy worker\nbad line\n", t0, &mut mem);
        let first = first.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.total, 2);
        assert_eq!(first.top_cpu[0].name, "busy worker");
        assert_eq!(first.top_cpu[0].cpu_percent, None);
        assert_eq!(first.top_rss[0].rss_bytes, 11736 * 1024);
        let second =
            parse_ps("  1 11736 3 systemd\n 42 2048 110 busy worker\n", t0.plus(Duration::from_secs(20)), &mut mem);
        let second = second.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.top_cpu[0].cpu_percent, Some(50.0));
        assert_eq!(cpu_seconds("1-02:03:04"), Some(86_400 + 7384));
        assert_eq!(cpu_seconds("03:04"), Some(184));
    }

    #[test]
    fn assemble_all_sections_and_cpu_rate() {
        let parts = Parts {
            files: Some(Ok(GrepFiles::from_text(GREP))),
            units: Some(Ok({
                let mut p = UnitsParser::default();
                SHOW.lines().for_each(|l| p.line(l));
                p
            })),
            state: Some(Ok("degraded\n".into())),
            df: Some(Ok(DF.into())),
            ps: Some(Ok("1 100 1 init\n".into())),
            journal: Some(Ok(JournalParser::from_text(
                r#"{"__CURSOR":"s=1;i=1","__REALTIME_TIMESTAMP":"1000000000","PRIORITY":"3","MESSAGE":"boom","_SYSTEMD_UNIT":"lab-demo.service"}"#,
                Duration::from_secs(600),
            ))),
            nix: None,
        };
        let mut mem = HostMemory::default();
        let now = Timestamp::from_millis(1_000_000);
        let s = assemble(&host(), now, &parts, &mut mem);
        let unavailable: Vec<&str> = s.unavailable_sections().iter().map(|(n, _)| *n).collect();
        assert_eq!(unavailable, ["nix", "hardware"], "{:?}", s.unavailable_sections());
        assert_eq!(s.cpu.data().map(|c| (c.logical_cpus, c.usage_percent)), Some((2, None)));
        assert_eq!(s.memory.data().map(|m| m.total_bytes), Some(8_000_000 * 1024));
        assert_eq!(s.journal.data().map(|j| j.errors_total), Some(1));
        // A journalctl that prints something else with exit 0 is not "0 errors".
        let garbage = Parts {
            journal: Some(Ok(JournalParser::from_text("Segmentation fault\nhello\n", Duration::from_secs(600)))),
            ..parts.clone()
        };
        let g = assemble(&host(), now, &garbage, &mut HostMemory::default());
        let why = g.journal.unavailable_reason().unwrap_or_default();
        assert!(why.starts_with("journalctl: 2 of 2 lines") && why.contains("not journal entries"), "{why}");
        // Second probe: 100 more busy ticks of 200 → 50 %.
        let grep2 = GREP.replace("cpu  100 0 50 800 50", "cpu  200 0 50 850 100");
        let parts2 = Parts { files: Some(Ok(GrepFiles::from_text(&grep2))), ..parts.clone() };
        let s2 = assemble(&host(), now.plus(Duration::from_secs(60)), &parts2, &mut mem);
        assert_eq!(s2.cpu.data().and_then(|c| c.usage_percent), Some(50.0));
        assert_eq!(s2.cpu.data().and_then(|c| c.window_ms), Some(60_000));
        // A part that failed is its sections' reason.
        let failed = Parts {
            units: Some(Err("System has not been booted with systemd".into())),
            files: Some(Err("grep: not found".into())),
            ..parts
        };
        let s3 = assemble(&host(), now, &failed, &mut HostMemory::default());
        assert!(s3.units.unavailable_reason().is_some_and(|r| r.contains("not been booted")));
        assert!(s3.cpu.unavailable_reason().is_some_and(|r| r.contains("grep: not found")));
    }

    #[test]
    fn nix_profiles() {
        let ls = "total 0\nlrwxrwxrwx 1 root root 15 1700000300 system -> system-3-link\nlrwxrwxrwx 1 root root 90 1700000000 system-2-link -> /nix/store/aaa-nixos-system-2\nlrwxrwxrwx 1 root root 90 1700000300 system-3-link -> /nix/store/bbb-nixos-system-3\nlrwxrwxrwx 1 root root 60 1700000300 default -> /nix/var/nix/profiles/default-1-link\n";
        let fs = parse_df(
            "h\n100 60 40 1 1 ext4 /dev/a /\n50 40 10 1 1 ext4 /dev/b /nix\n60 50 10 1 1 ext4 /dev/c /nixos\n",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let n = parse_profiles(ls, Some(&fs)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.generations.iter().map(|g| (g.number, g.current)).collect::<Vec<_>>(), [(2, false), (3, true)]);
        assert_eq!(n.current_system, "/nix/store/bbb-nixos-system-3");
        assert_eq!((n.store_total_bytes, n.store_available_bytes), (50, 10));
        assert_eq!(n.generations[0].created_at, Some(Timestamp::from_millis(1_700_000_000_000)));
        assert!(parse_profiles("total 0\n", Some(&fs)).is_err());
    }

    #[test]
    fn an_empty_or_partial_journal_is_not_zero_errors() {
        let out = |stderr: &str| RemoteOutput {
            status: Some(0),
            stdout: vec![],
            stderr: stderr.as_bytes().to_vec(),
            truncated: false,
            elapsed: Duration::ZERO,
        };
        assert_eq!(classify_output("journal", &out("")), Ok(String::new()));
        assert!(classify_output("journal", &out("No journal files were found.\n")).is_err());
        let hint = "Hint: You are currently not seeing messages from other users and the system.\n";
        assert!(classify_output("journal", &out(hint)).is_err_and(|e| e.contains("systemd-journal")));
        let grep_partial =
            RemoteOutput { status: Some(2), stdout: b"/proc/stat:cpu 1\n".to_vec(), ..out("no such file") };
        assert!(classify_output("files", &grep_partial).is_ok());
        assert!(classify_output("ps", &RemoteOutput { status: Some(1), ..out("boom") }).is_err_and(|e| e == "boom"));
    }

    #[test]
    fn running_services_list() {
        let text = "ssh.service   loaded active running OpenBSD Secure Shell server\nlab-demo.service loaded active running Lab demo\nbad;name.service x\n";
        assert_eq!(parse_running_services(text), ["lab-demo.service", "ssh.service"]);
    }

    #[test]
    fn tcp_tables_stream_into_connections_not_text() {
        let mut g = GrepFiles::default();
        assert!(g.connections().is_err(), "no table read yet");
        g.line("/proc/net/tcp:  sl  local_address rem_address   st tx_queue");
        g.line("/proc/net/tcp:   0: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1");
        g.line("/proc/net/tcp:   1: 0B00000A:1538 0C00000A:D431 01 00000000:00000000 00:00000000 00000000 0 0 2");
        g.line(
            "/proc/net/tcp6:   0: 0000000000000000FFFF00000B00000A:A000 0000000000000000FFFF00000D00000A:0050 01 0 0",
        );
        let c = g.connections().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listening, [5432]);
        assert_eq!(c.established, 2);
        let peers: Vec<(String, u16)> = c.peers.iter().map(|p| (p.peer.to_string(), p.port)).collect();
        assert_eq!(peers, [("10.0.0.12".to_owned(), 5432), ("10.0.0.13".to_owned(), 80)]);
        assert!(g.get("/proc/net/tcp").is_none(), "the table is never kept as text");
    }
}
