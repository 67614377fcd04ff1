//! Assembles a full [`Snapshot`] of this host from the observation adapters: the local observer
//! (procfs, sysfs, Nix; on a blocking thread), systemd over D-Bus, and the journal error window.
//!
//! A source that is not there makes its section `Unavailable` with the reason; the snapshot itself
//! never fails.

use crate::config::{BusChoice, Config};
use macha_core::journal::ErrorWindow;
use macha_core::snapshot::{JournalSummary, Section, Snapshot};
use macha_core::{HostName, Timestamp};
use macha_observe::LocalObserver;
use macha_observe::systemd::{Bus, Systemd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The journal's state as the snapshot sees it.
#[derive(Debug)]
pub enum JournalState {
    /// Following: the window holds recent error entries.
    Following(ErrorWindow),
    /// A one-shot read (standalone check).
    Summary(JournalSummary),
    /// Not (yet) readable, with the reason.
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Sources {
    pub observer: Arc<Mutex<LocalObserver>>,
    pub systemd: Arc<SystemdLink>,
    pub journal: Arc<Mutex<JournalState>>,
}

pub use macha_observe::systemd::SystemdLink;

pub fn bus(choice: &BusChoice) -> Bus {
    match choice {
        BusChoice::System => Bus::System,
        BusChoice::Session => Bus::Session,
        BusChoice::Address(a) => Bus::Address(a.clone()),
    }
}

/// Connects to systemd as configured; the error is the reason the units section will give.
pub async fn connect_systemd(config: &Config) -> Result<Arc<Systemd>, String> {
    if !config.systemd_enable {
        return Err("disabled in the configuration (systemd.enable = false)".into());
    }
    match tokio::time::timeout(Duration::from_secs(10), Systemd::connect(bus(&config.bus))).await {
        Ok(Ok(s)) => Ok(Arc::new(s)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connecting to systemd timed out after 10 s".into()),
    }
}

/// The absolute path of journalctl: the configured one, else found on `PATH`.
pub fn journalctl_path(config: &Config) -> Result<PathBuf, String> {
    if let Some(p) = &config.journalctl {
        return Ok(p.clone());
    }
    if let Some(p) = config.tools.get("journalctl") {
        return Ok(PathBuf::from(p));
    }
    which::which("journalctl").map_err(|e| format!("journalctl not found: {e}"))
}

impl Sources {
    /// One snapshot now. The local sections are read on a blocking thread; systemd is asked over
    /// D-Bus with a deadline.
    pub async fn collect(&self, host: &HostName, now: Timestamp) -> Snapshot {
        let started = std::time::Instant::now();
        let observer = Arc::clone(&self.observer);
        let host_for_local = host.clone();
        let local = tokio::task::spawn_blocking(move || match observer.lock() {
            Ok(mut o) => o.collect(host_for_local, now),
            Err(_) => Snapshot::all_unavailable(host_for_local, now, "the local observer failed earlier (poisoned)"),
        })
        .await;
        let mut snap = match local {
            Ok(s) => s,
            Err(e) => Snapshot::all_unavailable(host.clone(), now, &format!("local observation failed: {e}")),
        };
        snap.units = match &self.systemd.get() {
            Err(reason) => Section::unavailable(format!("systemd unavailable: {reason}")),
            Ok(sd) => match tokio::time::timeout(Duration::from_secs(10), sd.list_units()).await {
                Ok(Ok(units)) => Section::ok(units),
                Ok(Err(e)) => Section::unavailable(format!("systemd: {e}")),
                Err(_) => {
                    snap.timed_out = snap.timed_out.saturating_add(1);
                    Section::unavailable("systemd did not answer ListUnits within 10 s")
                }
            },
        };
        snap.journal = match self.journal.lock() {
            Ok(mut j) => match &mut *j {
                JournalState::Following(w) => {
                    w.prune(now);
                    Section::ok(w.summary(now))
                }
                JournalState::Summary(s) => Section::ok(s.clone()),
                JournalState::Unavailable(r) => Section::unavailable(format!("journal unavailable: {r}")),
            },
            Err(_) => Section::unavailable("journal window poisoned"),
        };
        snap.collect_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        snap
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), what proves that a reboot happened;
/// `None` if it cannot be read.
pub fn boot_id() -> Option<String> {
    macha_parse::procfs::parse_boot_id(&std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?)
}

/// The shortest window over which a one-shot observation measures CPU % ([`one_shot`]).
pub const ONE_SHOT_WINDOW: Duration = Duration::from_millis(250);

/// One observation of this host without a daemon (standalone `macha check`, `macha probe`): the
/// CPU and process counters are sampled first and the snapshot taken at least
/// [`ONE_SHOT_WINDOW`] later (the journal and systemd are read in between), so CPU % and the
/// per-process CPU % are measured, never empty.
pub async fn one_shot(config: &Config, previous_cpu: Option<macha_observe::CpuSample>) -> Snapshot {
    let started = std::time::Instant::now();
    let mut observer =
        LocalObserver::new(macha_observe::ObserveConfig { previous_cpu, ..macha_observe::ObserveConfig::system() });
    observer.prime(crate::now());
    let journal = if config.journal_enable {
        match journal_once(config, crate::now()).await {
            Ok(summary) => JournalState::Summary(summary),
            Err(reason) => JournalState::Unavailable(reason),
        }
    } else {
        JournalState::Unavailable("disabled in the configuration (journal.enable = false)".into())
    };
    let systemd = SystemdLink::new(connect_systemd(config).await);
    if let Some(rest) = ONE_SHOT_WINDOW.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let sources = Sources { observer: Arc::new(Mutex::new(observer)), systemd, journal: Arc::new(Mutex::new(journal)) };
    sources.collect(&HostName::local(), crate::now()).await
}

/// A one-shot read of the recent error entries (for a standalone `macha check`): runs
/// `journalctl --output=json --priority=err --since=-<window>` without following.
pub async fn journal_once(config: &Config, now: Timestamp) -> Result<JournalSummary, String> {
    let journalctl = journalctl_path(config)?;
    let probe_config = macha_observe::journal::JournalConfig {
        journalctl: journalctl.clone(),
        directory: config.journal_directory.clone(),
        ..macha_observe::journal::JournalConfig::default()
    };
    macha_observe::journal::probe(&probe_config).await?;
    let mut cmd = tokio::process::Command::new(&journalctl);
    cmd.args(["--output=json", "--priority=err", "--no-pager"])
        .arg(format!("--since=-{}s", config.journal_window.as_secs()))
        .env_clear()
        .envs(macha_core::command::SPAWN_ENV)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(d) = &config.journal_directory {
        cmd.arg(format!("--directory={}", d.display()));
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .map_err(|_| "journalctl did not finish within 20 s".to_owned())?
        .map_err(|e| format!("cannot run {}: {e}", journalctl.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("journalctl failed ({}): {}", out.status, stderr.trim()));
    }
    let mut window = ErrorWindow::new(config.journal_window);
    let mut tally = macha_parse::journal::ReadTally::default();
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let parsed = macha_parse::journal::parse_entry(line, 3);
        tally.add(&parsed);
        if let Ok(entry) = parsed {
            let at = Timestamp::from_millis(i64::try_from(entry.realtime_usec / 1000).unwrap_or(0));
            window.record(entry.unit.as_deref(), at, &entry.message);
        }
    }
    tally.verdict()?;
    Ok(window.summary(now))
}
