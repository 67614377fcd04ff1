//! Deterministic checks: a [`Snapshot`] (plus thresholds and a little history) becomes
//! [`Finding`]s, and for every check an explicit statement of what it covered.
//!
//! Architecture invariant: a check whose input section is unavailable reports
//! [`CheckResult::Unknown`]; it never reports "no findings". [`Evaluation::observe`] turns that
//! into [`Observation::Unknown`], which can never resolve an issue.

use crate::action::{Action, DiagnosticArgs, DiagnosticName, Hosts};
use crate::issue::{Observation, fingerprint};
use crate::snapshot::{Section, Snapshot};
use crate::{HostName, Timestamp, UnitName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    FailedUnit,
    RestartLoop,
    DiskSpace,
    InodeSpace,
    MemoryPressure,
    SustainedLoad,
    JournalErrors,
    NixStoreGrowth,
    NixGenerations,
    GpuTemperature,
    /// The host itself could not be observed, wholly or mostly, or its commands timed out: a
    /// finding of its own, so that a blind spot is an issue and never silence.
    Observation,
    /// A metric (or the host as a whole) far from its usual level for a while: judged over time
    /// by `macha-metrics`, never from one snapshot; a warning, never remediated automatically.
    Anomaly,
    /// A filesystem (space or inodes), the Nix store or /boot predicted to fill up soon: level
    /// and trend, judged over time by `macha-metrics`.
    FillUp,
}

impl CheckName {
    pub const ALL: [CheckName; 13] = [
        CheckName::FailedUnit,
        CheckName::RestartLoop,
        CheckName::DiskSpace,
        CheckName::InodeSpace,
        CheckName::MemoryPressure,
        CheckName::SustainedLoad,
        CheckName::JournalErrors,
        CheckName::NixStoreGrowth,
        CheckName::NixGenerations,
        CheckName::GpuTemperature,
        CheckName::Observation,
        CheckName::Anomaly,
        CheckName::FillUp,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::FailedUnit => "failed_unit",
            CheckName::RestartLoop => "restart_loop",
            CheckName::DiskSpace => "disk_space",
            CheckName::InodeSpace => "inode_space",
            CheckName::MemoryPressure => "memory_pressure",
            CheckName::SustainedLoad => "sustained_load",
            CheckName::JournalErrors => "journal_errors",
            CheckName::NixStoreGrowth => "nix_store_growth",
            CheckName::NixGenerations => "nix_generations",
            CheckName::GpuTemperature => "gpu_temperature",
            CheckName::Observation => "observation",
            CheckName::Anomaly => "anomaly",
            CheckName::FillUp => "fill_up",
        }
    }
    pub fn parse(s: &str) -> Option<CheckName> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
    /// Checks judged over time from the metric history (`macha-metrics`), not by [`evaluate`]
    /// from one snapshot: the caller that keeps the history adds their outcomes
    /// ([`Evaluation::set`]); without it they have none, which observes as unknown.
    pub fn over_time(self) -> bool {
        matches!(self, CheckName::Anomaly | CheckName::FillUp)
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Thresholds of every check. Each has a documented default; the config file may override any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Used space (as `df` counts it) that raises a warning / critical finding, percent.
    pub disk_warn_percent: f64,
    pub disk_critical_percent: f64,
    pub inode_warn_percent: f64,
    pub inode_critical_percent: f64,
    /// PSI memory "some" avg60 (percent of time stalled) that is a warning.
    pub memory_some_avg60_warn: f64,
    /// PSI memory "full" avg60 that is critical.
    pub memory_full_avg60_critical: f64,
    /// 15-minute load average per logical CPU that counts as sustained load.
    pub load_per_cpu_warn: f64,
    /// `NRestarts` of a service at which it counts as a restart loop.
    pub restart_loop_restarts: u32,
    /// Error-priority journal entries of one unit within the journal window that make a burst.
    pub journal_unit_errors: u32,
    /// Error-priority journal entries overall within the window that make a burst.
    pub journal_total_errors: u32,
    /// System generations above which old ones should be collected.
    pub nix_generations_max: u32,
    /// Growth of the store filesystem's used space per day that is a warning, GiB.
    pub nix_store_growth_gib_per_day: f64,
    /// GPU temperature warning / critical, °C.
    pub gpu_temp_warn_celsius: f64,
    pub gpu_temp_critical_celsius: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            disk_warn_percent: 85.0,
            disk_critical_percent: 95.0,
            inode_warn_percent: 85.0,
            inode_critical_percent: 95.0,
            memory_some_avg60_warn: 10.0,
            memory_full_avg60_critical: 5.0,
            load_per_cpu_warn: 2.0,
            restart_loop_restarts: 5,
            journal_unit_errors: 20,
            journal_total_errors: 100,
            nix_generations_max: 50,
            nix_store_growth_gib_per_day: 20.0,
            gpu_temp_warn_celsius: 85.0,
            gpu_temp_critical_celsius: 95.0,
        }
    }
}

impl Thresholds {
    /// Rejects thresholds that would make a check meaningless (warn above critical, NaN, …).
    pub fn validate(&self) -> Result<(), String> {
        let pct = |name: &str, v: f64| {
            if v.is_finite() && (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} = {v} is not a percentage"))
            }
        };
        pct("disk_warn_percent", self.disk_warn_percent)?;
        pct("disk_critical_percent", self.disk_critical_percent)?;
        pct("inode_warn_percent", self.inode_warn_percent)?;
        pct("inode_critical_percent", self.inode_critical_percent)?;
        pct("memory_some_avg60_warn", self.memory_some_avg60_warn)?;
        pct("memory_full_avg60_critical", self.memory_full_avg60_critical)?;
        if self.disk_warn_percent > self.disk_critical_percent {
            return Err("disk_warn_percent is above disk_critical_percent".into());
        }
        if self.inode_warn_percent > self.inode_critical_percent {
            return Err("inode_warn_percent is above inode_critical_percent".into());
        }
        if self.gpu_temp_warn_celsius > self.gpu_temp_critical_celsius {
            return Err("gpu_temp_warn_celsius is above gpu_temp_critical_celsius".into());
        }
        for (n, v) in [
            ("load_per_cpu_warn", self.load_per_cpu_warn),
            ("nix_store_growth_gib_per_day", self.nix_store_growth_gib_per_day),
            ("gpu_temp_warn_celsius", self.gpu_temp_warn_celsius),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("{n} = {v} must be a positive number"));
            }
        }
        if self.restart_loop_restarts == 0 || self.journal_unit_errors == 0 || self.journal_total_errors == 0 {
            return Err("restart and journal thresholds must be at least 1".into());
        }
        Ok(())
    }
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub host: HostName,
    pub check: CheckName,
    /// What it is about: a unit, a mount point, a GPU slot, or a fixed word such as `memory`.
    pub subject: String,
    pub severity: Severity,
    pub summary: String,
    pub observed_at: Timestamp,
}

impl Finding {
    pub fn fingerprint(&self) -> String {
        fingerprint(self.host.as_str(), self.check.as_str(), &self.subject)
    }
}

/// What a check covered when it ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Coverage {
    /// Every possible subject was observed: a subject without a finding is clear.
    All,
    /// Only these subjects were observed.
    Subjects(BTreeSet<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckResult {
    Ran {
        findings: Vec<Finding>,
        coverage: Coverage,
    },
    /// The check could not run; the reason says which data was missing.
    Unknown {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub check: CheckName,
    pub result: CheckResult,
}

/// All checks over one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub host: HostName,
    pub outcomes: Vec<CheckOutcome>,
}

impl Evaluation {
    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.outcomes.iter().flat_map(|o| match &o.result {
            CheckResult::Ran { findings, .. } => findings.as_slice(),
            CheckResult::Unknown { .. } => &[],
        })
    }

    /// Sets the outcome of `outcome.check`, replacing an earlier one (the checks judged over time
    /// are added this way).
    pub fn set(&mut self, outcome: CheckOutcome) {
        match self.outcomes.iter_mut().find(|o| o.check == outcome.check) {
            Some(o) => *o = outcome,
            None => self.outcomes.push(outcome),
        }
    }

    /// `(check, reason)` for every check that could not run.
    pub fn unknown(&self) -> impl Iterator<Item = (CheckName, &str)> {
        self.outcomes.iter().filter_map(|o| match &o.result {
            CheckResult::Unknown { reason } => Some((o.check, reason.as_str())),
            CheckResult::Ran { .. } => None,
        })
    }

    /// What this evaluation says about `(check, subject)` on its host.
    pub fn observe(&self, check: CheckName, subject: &str) -> Observation {
        let Some(outcome) = self.outcomes.iter().find(|o| o.check == check) else {
            return Observation::Unknown;
        };
        match &outcome.result {
            CheckResult::Unknown { .. } => Observation::Unknown,
            CheckResult::Ran { findings, coverage } => {
                if findings.iter().any(|f| f.subject == subject) {
                    Observation::Present
                } else {
                    match coverage {
                        Coverage::All => Observation::Clear,
                        Coverage::Subjects(s) if s.contains(subject) => Observation::Clear,
                        Coverage::Subjects(_) => Observation::Unknown,
                    }
                }
            }
        }
    }
}

/// What the checks remember between evaluations (kept by the caller).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckHistory {
    /// Used bytes of the store filesystem at an earlier time, for the growth rate.
    pub store_baseline: Option<(Timestamp, u64)>,
}

/// Runs every check over `snap`.
pub fn evaluate(snap: &Snapshot, th: &Thresholds, history: &CheckHistory) -> Evaluation {
    let now = snap.taken_at;
    let host = &snap.host;
    let finding = |check: CheckName, subject: String, severity: Severity, summary: String| Finding {
        host: host.clone(),
        check,
        subject,
        severity,
        summary,
        observed_at: now,
    };
    let need = |name: &str, reason: Option<&str>| CheckResult::Unknown {
        reason: format!("{name} unavailable: {}", reason.unwrap_or("unknown")),
    };
    let mut outcomes = Vec::with_capacity(CheckName::ALL.len());
    let mut push = |check, result| outcomes.push(CheckOutcome { check, result });

    // Units: failed units and restart loops.
    match &snap.units {
        Section::Ok { data } => {
            let failed = data
                .failed
                .iter()
                .map(|u| {
                    let result = data.notable.iter().find(|n| &n.name == u).and_then(|n| n.result.clone());
                    let why = result.map(|r| format!(" (result: {r})")).unwrap_or_default();
                    finding(CheckName::FailedUnit, u.clone(), Severity::Critical, format!("unit {u} failed{why}"))
                })
                .collect();
            push(CheckName::FailedUnit, CheckResult::Ran { findings: failed, coverage: Coverage::All });
            let loops = data
                .notable
                .iter()
                .filter(|n| n.n_restarts.is_some_and(|r| r >= th.restart_loop_restarts))
                .map(|n| {
                    finding(
                        CheckName::RestartLoop,
                        n.name.clone(),
                        Severity::Warning,
                        format!(
                            "unit {} restarted {} times (now {}/{})",
                            n.name,
                            n.n_restarts.unwrap_or(0),
                            n.active_state,
                            n.sub_state
                        ),
                    )
                })
                .collect();
            push(CheckName::RestartLoop, CheckResult::Ran { findings: loops, coverage: Coverage::All });
        }
        Section::Unavailable { reason } => {
            push(CheckName::FailedUnit, need("units", Some(reason)));
            push(CheckName::RestartLoop, need("units", Some(reason)));
        }
    }

    // Filesystems: space and inodes.
    match &snap.filesystems {
        Section::Ok { data } => {
            let mut disk = Vec::new();
            let mut inodes = Vec::new();
            let mut covered_disk = BTreeSet::new();
            let mut covered_inodes = BTreeSet::new();
            for fs in data.iter().filter(|f| !f.read_only) {
                if let Some(p) = fs.used_percent() {
                    covered_disk.insert(fs.mount_point.clone());
                    let sev = if p >= th.disk_critical_percent {
                        Some(Severity::Critical)
                    } else if p >= th.disk_warn_percent {
                        Some(Severity::Warning)
                    } else {
                        None
                    };
                    if let Some(sev) = sev {
                        disk.push(finding(
                            CheckName::DiskSpace,
                            fs.mount_point.clone(),
                            sev,
                            format!("{} is {p:.1}% full ({} free)", fs.mount_point, human_bytes(fs.available_bytes)),
                        ));
                    }
                }
                if let Some(p) = fs.inodes_used_percent() {
                    covered_inodes.insert(fs.mount_point.clone());
                    let sev = if p >= th.inode_critical_percent {
                        Some(Severity::Critical)
                    } else if p >= th.inode_warn_percent {
                        Some(Severity::Warning)
                    } else {
                        None
                    };
                    if let Some(sev) = sev {
                        inodes.push(finding(
                            CheckName::InodeSpace,
                            fs.mount_point.clone(),
                            sev,
                            format!("{} has used {p:.1}% of its inodes", fs.mount_point),
                        ));
                    }
                }
            }
            push(CheckName::DiskSpace, CheckResult::Ran { findings: disk, coverage: Coverage::Subjects(covered_disk) });
            push(
                CheckName::InodeSpace,
                CheckResult::Ran { findings: inodes, coverage: Coverage::Subjects(covered_inodes) },
            );
        }
        Section::Unavailable { reason } => {
            push(CheckName::DiskSpace, need("filesystems", Some(reason)));
            push(CheckName::InodeSpace, need("filesystems", Some(reason)));
        }
    }

    // Memory pressure by PSI.
    match &snap.pressure {
        Section::Ok { data } => {
            let some = data.memory_some.avg60;
            let full = data.memory_full.avg60;
            let sev = if full >= th.memory_full_avg60_critical {
                Some(Severity::Critical)
            } else if some >= th.memory_some_avg60_warn {
                Some(Severity::Warning)
            } else {
                None
            };
            let findings = sev
                .map(|s| {
                    finding(
                        CheckName::MemoryPressure,
                        "memory".into(),
                        s,
                        format!(
                            "memory pressure: tasks stalled {some:.1}% (some) / {full:.1}% (full) of the last minute"
                        ),
                    )
                })
                .into_iter()
                .collect();
            push(CheckName::MemoryPressure, CheckResult::Ran { findings, coverage: Coverage::All });
        }
        Section::Unavailable { reason } => push(CheckName::MemoryPressure, need("pressure", Some(reason))),
    }

    // Sustained load: the 15-minute load average per logical CPU.
    let cpus = snap
        .cpu
        .data()
        .map(|c| c.logical_cpus)
        .or_else(|| snap.hardware.data().map(|h| h.logical_cpus))
        .filter(|n| *n > 0);
    match (&snap.load, cpus) {
        (Section::Ok { data }, Some(cpus)) => {
            let per_cpu = data.fifteen / f64::from(cpus);
            let findings = (per_cpu >= th.load_per_cpu_warn)
                .then(|| {
                    finding(
                        CheckName::SustainedLoad,
                        "load".into(),
                        Severity::Warning,
                        format!("15-minute load {:.2} on {cpus} CPUs ({per_cpu:.2} per CPU)", data.fifteen),
                    )
                })
                .into_iter()
                .collect();
            push(CheckName::SustainedLoad, CheckResult::Ran { findings, coverage: Coverage::All });
        }
        (Section::Unavailable { reason }, _) => push(CheckName::SustainedLoad, need("load", Some(reason))),
        (Section::Ok { .. }, None) => push(CheckName::SustainedLoad, need("CPU count", None)),
    }

    // Journal error bursts.
    match &snap.journal {
        Section::Ok { data } => {
            let mut findings: Vec<Finding> = data
                .by_unit
                .iter()
                .filter(|u| u.errors >= th.journal_unit_errors)
                .map(|u| {
                    finding(
                        CheckName::JournalErrors,
                        u.unit.clone(),
                        Severity::Warning,
                        format!("{} logged {} errors in {} min", u.unit, u.errors, data.window_secs / 60),
                    )
                })
                .collect();
            if data.errors_total >= th.journal_total_errors {
                findings.push(finding(
                    CheckName::JournalErrors,
                    "*".into(),
                    Severity::Warning,
                    format!("{} errors in the journal in {} min", data.errors_total, data.window_secs / 60),
                ));
            }
            push(CheckName::JournalErrors, CheckResult::Ran { findings, coverage: Coverage::All });
        }
        Section::Unavailable { reason } => push(CheckName::JournalErrors, need("journal", Some(reason))),
    }

    // Nix: generations and store growth.
    match &snap.nix {
        Section::Ok { data } => {
            let n = u32::try_from(data.generations.len()).unwrap_or(u32::MAX);
            let findings = (n > th.nix_generations_max)
                .then(|| {
                    finding(
                        CheckName::NixGenerations,
                        "system".into(),
                        Severity::Info,
                        format!("{n} system generations (more than {})", th.nix_generations_max),
                    )
                })
                .into_iter()
                .collect();
            push(CheckName::NixGenerations, CheckResult::Ran { findings, coverage: Coverage::All });
            let used = data.store_used_bytes();
            match history.store_baseline {
                Some((then, before)) if now.since(then) >= std::time::Duration::from_secs(3600) => {
                    let days = now.since(then).as_secs_f64() / 86_400.0;
                    let gib_per_day = (used as f64 - before as f64) / f64::from(1u32 << 30) / days;
                    let findings = (gib_per_day >= th.nix_store_growth_gib_per_day)
                        .then(|| {
                            finding(
                                CheckName::NixStoreGrowth,
                                "store".into(),
                                Severity::Warning,
                                format!("the Nix store grows {gib_per_day:.1} GiB per day"),
                            )
                        })
                        .into_iter()
                        .collect();
                    push(CheckName::NixStoreGrowth, CheckResult::Ran { findings, coverage: Coverage::All });
                }
                _ => push(
                    CheckName::NixStoreGrowth,
                    CheckResult::Unknown { reason: "store growth needs a baseline at least an hour old".into() },
                ),
            }
        }
        Section::Unavailable { reason } => {
            push(CheckName::NixGenerations, need("nix", Some(reason)));
            push(CheckName::NixStoreGrowth, need("nix", Some(reason)));
        }
    }

    // GPU temperature.
    match &snap.hardware {
        Section::Ok { data } => {
            let mut findings = Vec::new();
            let mut covered = BTreeSet::new();
            for gpu in &data.gpus {
                let Some(t) = gpu.temperature_celsius else { continue };
                covered.insert(gpu.pci_slot.clone());
                let sev = if t >= th.gpu_temp_critical_celsius {
                    Some(Severity::Critical)
                } else if t >= th.gpu_temp_warn_celsius {
                    Some(Severity::Warning)
                } else {
                    None
                };
                if let Some(sev) = sev {
                    findings.push(finding(
                        CheckName::GpuTemperature,
                        gpu.pci_slot.clone(),
                        sev,
                        format!("GPU {} ({}) at {t:.0} °C", gpu.pci_slot, gpu.driver),
                    ));
                }
            }
            push(CheckName::GpuTemperature, CheckResult::Ran { findings, coverage: Coverage::Subjects(covered) });
        }
        Section::Unavailable { reason } => push(CheckName::GpuTemperature, need("hardware", Some(reason))),
    }

    // Observation: always runs (it judges the snapshot itself), so it resolves only when the host
    // is observed again.
    let findings = match visibility(snap) {
        Visibility::Complete | Visibility::Partial { .. } => Vec::new(),
        Visibility::Degraded { reason } | Visibility::Blind { reason } => {
            vec![finding(CheckName::Observation, OBSERVATION_SUBJECT.into(), Severity::Warning, reason)]
        }
    };
    push(CheckName::Observation, CheckResult::Ran { findings, coverage: Coverage::All });

    Evaluation { host: host.clone(), outcomes }
}

/// The subject of every [`CheckName::Observation`] finding (one per host).
pub const OBSERVATION_SUBJECT: &str = "sections";

/// How much of a host one snapshot saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every section.
    Complete,
    /// Some sections are missing (a host without Nix, a container without systemd), no command
    /// timed out and most were observed.
    Partial { unavailable: usize },
    /// A command timed out, or most sections are missing: what was seen cannot stand for the host.
    Degraded { reason: String },
    /// Nothing was observed.
    Blind { reason: String },
}

impl Visibility {
    /// The word for a host's contact state: `ok`, `degraded` or `unknown`.
    pub fn word(&self) -> &'static str {
        match self {
            Visibility::Complete | Visibility::Partial { .. } => "ok",
            Visibility::Degraded { .. } => "degraded",
            Visibility::Blind { .. } => "unknown",
        }
    }
}

/// Judges a snapshot's coverage: blind when no section was observed, degraded when a command timed
/// out or more than half of the sections are unavailable.
pub fn visibility(snap: &Snapshot) -> Visibility {
    let missing = snap.unavailable_sections();
    let total = crate::snapshot::SECTION_NAMES.len();
    let names = || missing.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let host = &snap.host;
    if missing.len() == total {
        let reason = missing.first().map_or("unknown", |(_, r)| *r);
        return Visibility::Blind { reason: format!("nothing on {host} could be observed: {reason}") };
    }
    if snap.timed_out > 0 {
        let n = snap.timed_out;
        let what = if n == 1 { "1 command".to_owned() } else { format!("{n} commands") };
        return Visibility::Degraded { reason: format!("{what} timed out on {host}; unavailable: {}", names()) };
    }
    if missing.len() * 2 > total {
        return Visibility::Degraded {
            reason: format!("{} of {total} sections of {host} are unavailable: {}", missing.len(), names()),
        };
    }
    if missing.is_empty() { Visibility::Complete } else { Visibility::Partial { unavailable: missing.len() } }
}

/// The one status word of a host after a cycle, the same for the local host, remote hosts, the
/// history and every exit code: critical when a finding is critical; warning when another
/// finding is; unknown when a section was missing or the observation itself is a finding (a host
/// that could not be observed is never healthy); healthy otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Unknown,
    Warning,
    Critical,
}

impl Verdict {
    pub fn of<'a>(snap: &Snapshot, findings: impl IntoIterator<Item = &'a Finding>) -> Verdict {
        let mut worst: Option<Severity> = None;
        let mut blind_spot = false;
        for f in findings {
            if f.check == CheckName::Observation {
                blind_spot = true;
            } else {
                worst = worst.max(Some(f.severity));
            }
        }
        match worst {
            Some(Severity::Critical) => Verdict::Critical,
            Some(_) => Verdict::Warning,
            None if blind_spot || snap.timed_out > 0 || !snap.unavailable_sections().is_empty() => Verdict::Unknown,
            None => Verdict::Healthy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Unknown => "unknown",
            Verdict::Warning => "warning",
            Verdict::Critical => "critical",
        }
    }

    /// The exit code of `macha check` (monitoring-plugin convention): 0 healthy, 1 warning,
    /// 2 critical, 3 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        }
    }
}

/// The finding for a unit that a systemd signal reported in `failed`, without waiting for a cycle.
pub fn unit_failed_finding(host: &HostName, unit: &str, result: Option<&str>, now: Timestamp) -> Finding {
    let why = result.map(|r| format!(" (result: {r})")).unwrap_or_default();
    Finding {
        host: host.clone(),
        check: CheckName::FailedUnit,
        subject: unit.to_owned(),
        severity: Severity::Critical,
        summary: format!("unit {unit} failed{why}"),
        observed_at: now,
    }
}

/// What a unit state change says about a `failed_unit` issue: `failed` → present, `active` → clear,
/// anything in between → unknown.
pub fn unit_state_observation(active_state: &str) -> Observation {
    match active_state {
        "failed" => Observation::Present,
        "active" => Observation::Clear,
        _ => Observation::Unknown,
    }
}

/// The deterministic remediation rules: which actions a finding proposes. The policy decides them
/// like any other proposal.
/// What a host has that clean-ups need, as its snapshot showed: a Nix store (for garbage
/// collection) and a readable journal (for a vacuum). A clean-up is proposed only where it can
/// work: a full `/` on a host without Nix gets no garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTools {
    pub nix: bool,
    pub journal: bool,
}

impl HostTools {
    /// Everything (for findings whose remediations need neither, such as a failed unit).
    pub const ALL: HostTools = HostTools { nix: true, journal: true };

    /// From a snapshot: Nix when its Nix section was observed, a journal when its journal was.
    pub fn of(snapshot: &crate::snapshot::Snapshot) -> HostTools {
        HostTools { nix: snapshot.nix.data().is_some(), journal: snapshot.journal.data().is_some() }
    }
}

pub fn remediations(f: &Finding, tools: HostTools) -> Vec<Action> {
    let mut actions = remediations_of(f);
    actions.retain(|a| match a {
        Action::CollectGarbage { .. } => tools.nix,
        Action::JournalVacuum { .. } => tools.journal,
        _ => true,
    });
    actions
}

fn remediations_of(f: &Finding) -> Vec<Action> {
    let host = Hosts::One(f.host.clone());
    let unit = || UnitName::parse(&f.subject).ok();
    match f.check {
        CheckName::FailedUnit => {
            unit().map(|unit| Action::RestartUnit { host, unit, reason: f.summary.clone() }).into_iter().collect()
        }
        CheckName::RestartLoop | CheckName::JournalErrors => unit()
            .map(|unit| Action::Diagnostic {
                host,
                name: DiagnosticName::UnitLogs,
                args: DiagnosticArgs { unit: Some(unit), lines: Some(100), since_minutes: Some(60) },
                reason: f.summary.clone(),
            })
            .into_iter()
            .collect(),
        CheckName::DiskSpace | CheckName::InodeSpace => match f.subject.as_str() {
            "/nix" | "/nix/store" => {
                vec![Action::CollectGarbage { host, older_than_days: 14, reason: f.summary.clone() }]
            }
            "/" => vec![
                Action::CollectGarbage { host: host.clone(), older_than_days: 14, reason: f.summary.clone() },
                Action::JournalVacuum { host, max_age_days: 14, reason: f.summary.clone() },
            ],
            "/var" | "/var/log" => vec![Action::JournalVacuum { host, max_age_days: 14, reason: f.summary.clone() }],
            _ => Vec::new(),
        },
        CheckName::NixGenerations => {
            vec![Action::CollectGarbage { host, older_than_days: 30, reason: f.summary.clone() }]
        }
        CheckName::MemoryPressure
        | CheckName::SustainedLoad
        | CheckName::NixStoreGrowth
        | CheckName::GpuTemperature
        | CheckName::Observation
        // The model may explain an anomaly or a predicted fill-up; nothing acts on one by rule.
        | CheckName::Anomaly
        | CheckName::FillUp => Vec::new(),
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn host() -> HostName {
        HostName::local()
    }

    fn fs(mount: &str, total: u64, avail: u64) -> Filesystem {
        Filesystem {
            mount_point: mount.into(),
            device: "/dev/x".into(),
            fs_type: "ext4".into(),
            total_bytes: total,
            available_bytes: avail,
            used_bytes: None,
            total_inodes: 1000,
            free_inodes: 900,
            read_only: false,
        }
    }

    fn units(failed: &[&str]) -> Units {
        Units {
            system_state: if failed.is_empty() { "running".into() } else { "degraded".into() },
            total: 100,
            notable: failed
                .iter()
                .map(|u| UnitState {
                    name: (*u).into(),
                    description: String::new(),
                    load_state: "loaded".into(),
                    active_state: "failed".into(),
                    sub_state: "failed".into(),
                    result: Some("exit-code".into()),
                    n_restarts: Some(0),
                })
                .collect(),
            failed: failed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn unavailable_sections_are_unknown_never_clear() {
        let snap = Snapshot::all_unavailable(host(), NOW, "no system bus");
        let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
        // The one finding is the blind spot itself; every other check is unknown.
        let f: Vec<_> = ev.findings().collect();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].check, CheckName::Observation);
        assert!(f[0].summary.contains("nothing on local could be observed: no system bus"), "{}", f[0].summary);
        let over_time = CheckName::ALL.into_iter().filter(|c| c.over_time()).count();
        assert_eq!(ev.unknown().count(), CheckName::ALL.len() - 1 - over_time);
        for check in CheckName::ALL.into_iter().filter(|c| *c != CheckName::Observation) {
            assert_eq!(ev.observe(check, "nginx.service"), Observation::Unknown, "{check}");
        }
        assert_eq!(Verdict::of(&snap, ev.findings()), Verdict::Unknown);
    }

    #[test]
    fn a_blind_or_mostly_unseen_or_timed_out_host_is_never_ok() {
        let th = Thresholds::default();
        let observation = |snap: &Snapshot| {
            let ev = evaluate(snap, &th, &CheckHistory::default());
            let f: Vec<Finding> = ev.findings().filter(|f| f.check == CheckName::Observation).cloned().collect();
            (
                visibility(snap).word(),
                f.len(),
                Verdict::of(snap, ev.findings()),
                ev.observe(CheckName::Observation, OBSERVATION_SUBJECT),
            )
        };
        let mut snap = Snapshot::all_unavailable(host(), NOW, "timed out");
        assert_eq!(observation(&snap), ("unknown", 1, Verdict::Unknown, Observation::Present));
        // Five of eleven observed: more than half missing is degraded.
        snap.units = Section::ok(units(&[]));
        snap.load = Section::ok(Load { one: 0.1, five: 0.1, fifteen: 0.1, runnable: 1, processes: 9 });
        snap.network = Section::ok(Vec::new());
        snap.filesystems = Section::ok(Vec::new());
        snap.journal =
            Section::ok(JournalSummary { window_secs: 600, errors_total: 0, by_unit: Vec::new(), samples: Vec::new() });
        assert_eq!(observation(&snap), ("degraded", 1, Verdict::Unknown, Observation::Present));
        match visibility(&snap) {
            Visibility::Degraded { reason } => assert!(reason.contains("6 of 11 sections"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Six observed: partial, no finding (a host without Nix or GPUs is normal), still unknown.
        snap.processes = Section::ok(Processes { total: 9, top_cpu: Vec::new(), top_rss: Vec::new() });
        assert_eq!(observation(&snap), ("ok", 0, Verdict::Unknown, Observation::Clear));
        // A timed-out command degrades the host whatever else was seen.
        snap.timed_out = 1;
        assert_eq!(observation(&snap), ("degraded", 1, Verdict::Unknown, Observation::Present));
        // A real finding outranks the blind spot; a clean, complete snapshot is healthy.
        snap.units = Section::ok(units(&["nginx.service"]));
        assert_eq!(observation(&snap).2, Verdict::Critical);
        assert_eq!(Verdict::Critical.exit_code(), 2);
        assert_eq!(Verdict::Unknown.exit_code(), 3);
        assert!(
            Verdict::Critical > Verdict::Warning
                && Verdict::Warning > Verdict::Unknown
                && Verdict::Unknown > Verdict::Healthy
        );
    }

    #[test]
    fn failed_units_present_then_clear() {
        let mut snap = Snapshot::all_unavailable(host(), NOW, "x");
        snap.units = Section::ok(units(&["nginx.service"]));
        let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
        let f: Vec<_> = ev.findings().filter(|f| f.check != CheckName::Observation).collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].fingerprint(), "local/failed_unit/nginx.service");
        assert!(f[0].summary.contains("exit-code"));
        assert_eq!(ev.observe(CheckName::FailedUnit, "nginx.service"), Observation::Present);
        assert_eq!(remediations(f[0], HostTools::ALL).first().map(Action::kind), Some(crate::ActionKind::RestartUnit));
        snap.units = Section::ok(units(&[]));
        let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
        assert_eq!(ev.observe(CheckName::FailedUnit, "nginx.service"), Observation::Clear);
    }

    #[test]
    fn disk_thresholds_and_partial_coverage() {
        let mut snap = Snapshot::all_unavailable(host(), NOW, "x");
        snap.filesystems = Section::ok(vec![fs("/", 100, 3), fs("/home", 100, 12), fs("/data", 100, 50)]);
        let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
        let sev: Vec<_> = ev
            .findings()
            .filter(|f| f.check == CheckName::DiskSpace)
            .map(|f| (f.subject.as_str(), f.severity))
            .collect();
        assert_eq!(sev, [("/", Severity::Critical), ("/home", Severity::Warning)]);
        assert_eq!(ev.observe(CheckName::DiskSpace, "/data"), Observation::Clear);
        // A mount point that was not observed is unknown, not clear.
        assert_eq!(ev.observe(CheckName::DiskSpace, "/gone"), Observation::Unknown);
    }

    #[test]
    fn memory_load_journal_gpu_generations() {
        let line = |v| PressureLine { avg10: v, avg60: v, avg300: v };
        let mut snap = Snapshot::all_unavailable(host(), NOW, "x");
        snap.pressure = Section::ok(Pressure {
            cpu_some: line(0.0),
            memory_some: line(12.0),
            memory_full: line(1.0),
            io_some: line(0.0),
            io_full: line(0.0),
        });
        snap.load = Section::ok(Load { one: 9.0, five: 9.0, fifteen: 9.0, runnable: 1, processes: 100 });
        snap.journal = Section::ok(JournalSummary {
            window_secs: 600,
            errors_total: 150,
            by_unit: vec![UnitErrorCount { unit: "nginx.service".into(), errors: 40 }],
            samples: vec![],
        });
        snap.nix = Section::ok(NixInfo {
            current_system: "/nix/store/x".into(),
            generations: (1..=60)
                .map(|n| Generation { number: n, path: String::new(), created_at: None, current: n == 60 })
                .collect(),
            store_total_bytes: 100 << 30,
            store_available_bytes: 10 << 30,
        });
        let ev = evaluate(&snap, &Thresholds::default(), &CheckHistory::default());
        let checks: BTreeSet<_> = ev.findings().map(|f| f.check).collect();
        assert!(checks.contains(&CheckName::MemoryPressure));
        assert!(checks.contains(&CheckName::JournalErrors));
        assert!(checks.contains(&CheckName::NixGenerations));
        // The load check needs a CPU count; without one it is unknown, not clear.
        assert_eq!(ev.observe(CheckName::SustainedLoad, "load"), Observation::Unknown);
        // Store growth needs a baseline.
        assert_eq!(ev.observe(CheckName::NixStoreGrowth, "store"), Observation::Unknown);
        let history =
            CheckHistory { store_baseline: Some((NOW.minus(std::time::Duration::from_secs(86_400)), 40 << 30)) };
        let ev = evaluate(&snap, &Thresholds::default(), &history);
        assert_eq!(ev.observe(CheckName::NixStoreGrowth, "store"), Observation::Present);
    }

    #[test]
    fn thresholds_validate() {
        assert_eq!(Thresholds::default().validate(), Ok(()));
        let bad = Thresholds { disk_warn_percent: 99.0, ..Thresholds::default() };
        assert!(bad.validate().is_err());
        let nan = Thresholds { load_per_cpu_warn: f64::NAN, ..Thresholds::default() };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn unit_events() {
        assert_eq!(unit_state_observation("failed"), Observation::Present);
        assert_eq!(unit_state_observation("active"), Observation::Clear);
        assert_eq!(unit_state_observation("activating"), Observation::Unknown);
        let f = unit_failed_finding(&host(), "x.service", Some("exit-code"), NOW);
        assert_eq!(f.fingerprint(), "local/failed_unit/x.service");
    }
}
