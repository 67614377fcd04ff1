//! The [`Tracker`]: every host's detectors and volumes, fed one snapshot at a time, giving the
//! samples to store and the outcomes of the two checks judged over time
//! ([`CheckName::Anomaly`], [`CheckName::FillUp`]).
//!
//! Sans-IO: the caller stores the samples (macha-store) and hands the outcomes to the issue
//! tracking. Counters become rates here, so what is stored is exactly what is judged, and
//! [`Tracker::warm`] can rebuild the detectors from the stored history after a restart.

use crate::detect::{DetectConfig, Persistence, Series};
use crate::fillup::{FillConfig, Prediction, Volume, human_duration};
use crate::key::{Kind, MetricKey, Unit, extract};
use macha_core::checks::{CheckName, CheckOutcome, CheckResult, Coverage, Finding, Severity};
use macha_core::snapshot::Snapshot;
use macha_core::{HostName, Timestamp};
use std::collections::{BTreeSet, HashMap};

/// Series one host may have at most; further names are not tracked (nor stored).
pub const SERIES_PER_HOST_MAX: usize = 512;
/// A series without a sample for this long is dropped.
pub const SERIES_IDLE_MAX: std::time::Duration = std::time::Duration::from_secs(86_400);
/// The subject of the host-wide anomaly finding.
pub const HOST_SUBJECT: &str = "host";

/// The tracker's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrackConfig {
    pub detect: DetectConfig,
    pub fill: FillConfig,
}

#[derive(Debug, Default)]
struct HostState {
    counters: HashMap<MetricKey, (i64, f64)>,
    series: HashMap<MetricKey, Series>,
    volumes: HashMap<String, Volume>,
    host: Persistence,
}

/// What one snapshot gave.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The samples to store: gauges as observed, counters as rates per second, at `f32` precision.
    pub samples: Vec<(MetricKey, f64)>,
    /// Share of the host's judged metrics anomalous at this sample (0-1).
    pub anomaly_rate: f64,
    /// Metrics anomalous at this sample.
    pub flagged: Vec<MetricKey>,
    pub anomaly: CheckOutcome,
    pub fillup: CheckOutcome,
}

/// Every host's state.
#[derive(Debug, Default)]
pub struct Tracker {
    cfg: TrackConfig,
    hosts: HashMap<HostName, HostState>,
}

impl Tracker {
    pub fn new(cfg: TrackConfig) -> Tracker {
        Tracker { cfg, hosts: HashMap::new() }
    }

    pub fn config(&self) -> &TrackConfig {
        &self.cfg
    }

    /// Whether `host` has any state (the caller warms a host it has not seen yet).
    pub fn knows(&self, host: &HostName) -> bool {
        self.hosts.contains_key(host)
    }

    /// Drops a host's state (a host removed from the fleet).
    pub fn forget(&mut self, host: &HostName) {
        self.hosts.remove(host);
    }

    /// The hosts with state, in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = &HostName> {
        self.hosts.keys()
    }

    /// Series tracked over all hosts.
    pub fn series_count(&self) -> usize {
        self.hosts.values().map(|h| h.series.len()).sum()
    }

    /// Feeds stored samples (oldest first, as [`Observed::samples`] gave them) through the
    /// detectors without judging: the state after a restart is what it would have been.
    pub fn warm(&mut self, host: &HostName, rows: &[(Timestamp, Vec<(MetricKey, f64)>)]) {
        let cfg = self.cfg.detect;
        let state = self.hosts.entry(host.clone()).or_default();
        for (at, samples) in rows {
            for (k, v) in samples.iter().filter(|(k, _)| k.as_str() != crate::key::ANOMALY_RATE) {
                if let Some(s) = series_of(state, k) {
                    s.observe(*at, *v, &cfg);
                }
            }
        }
    }

    /// Feeds one snapshot and judges it.
    pub fn observe(&mut self, snap: &Snapshot) -> Observed {
        let cfg = self.cfg;
        let now = snap.taken_at;
        let state = self.hosts.entry(snap.host.clone()).or_default();
        let mut samples = Vec::new();
        for (k, raw) in extract(snap) {
            let v = match k.kind() {
                Kind::Gauge => Some(raw),
                Kind::Counter => rate(state, &k, now, raw, &cfg.detect),
            };
            if let Some(v) = v.map(|v| f64::from(v as f32)).filter(|v| v.is_finite()) {
                samples.push((k, v));
            }
        }
        samples.retain(|(k, _)| state.series.contains_key(k) || state.series.len() < SERIES_PER_HOST_MAX);

        let mut findings = Vec::new();
        let mut covered = BTreeSet::new();
        let mut flagged = Vec::new();
        let mut judged = 0usize;
        for (k, v) in &samples {
            let Some(series) = series_of(state, k) else { continue };
            let p = series.observe(now, *v, &cfg.detect);
            if p.skipped || series.samples() <= cfg.detect.warmup {
                continue;
            }
            judged += 1;
            covered.insert(k.to_string());
            if p.flagged {
                flagged.push(k.clone());
            }
            if let Some(e) = series.persisting(now, cfg.detect.persist) {
                let unit = k.unit();
                let dir = if e.z >= 0.0 { "above" } else { "below" };
                findings.push(finding(
                    snap,
                    CheckName::Anomaly,
                    k.to_string(),
                    format!(
                        "{} {:.1} σ {dir} its {} (expected {}, now {}) for {}",
                        k.describe(),
                        e.z.abs(),
                        e.baseline.describe(),
                        unit.format(e.expected),
                        unit.format(e.value),
                        human_duration(now.since(e.since)),
                    ),
                ));
            }
        }
        // A series not seen for a day (a process that went away, an unmounted filesystem) is
        // forgotten, so a host's state follows what it has now.
        state.series.retain(|_, s| s.last_at().is_none_or(|t| now.since(t) < SERIES_IDLE_MAX));
        let anomaly_rate = if judged == 0 { 0.0 } else { flagged.len() as f64 / judged as f64 };
        if judged > 0 {
            covered.insert(HOST_SUBJECT.to_owned());
            state.host.push(now, anomaly_rate >= cfg.detect.host_rate, cfg.detect.persist);
            if let Some(since) = state.host.persisting(now, cfg.detect.persist) {
                findings.push(finding(
                    snap,
                    CheckName::Anomaly,
                    HOST_SUBJECT.to_owned(),
                    format!(
                        "{:.0}% of {}'s metrics are unusual at once ({} of {judged}) for {}",
                        100.0 * anomaly_rate,
                        snap.host,
                        flagged.len(),
                        human_duration(now.since(since)),
                    ),
                ));
            }
        }
        // The host's anomaly rate is stored with its samples (not judged itself), so
        // `macha metrics HOST anomaly.rate_percent` draws it.
        if judged > 0 {
            samples.push((MetricKey::anomaly_rate(), f64::from((100.0 * anomaly_rate) as f32)));
        }
        let anomaly = CheckOutcome {
            check: CheckName::Anomaly,
            result: if judged == 0 {
                CheckResult::Unknown { reason: "no metric has enough history yet".into() }
            } else {
                CheckResult::Ran { findings, coverage: Coverage::Subjects(covered) }
            },
        };
        let fillup = fill(state, snap, &cfg.fill);
        Observed { samples, anomaly_rate, flagged, anomaly, fillup }
    }
}

fn series_of<'a>(state: &'a mut HostState, k: &MetricKey) -> Option<&'a mut Series> {
    if !state.series.contains_key(k) && state.series.len() >= SERIES_PER_HOST_MAX {
        return None;
    }
    Some(state.series.entry(k.clone()).or_insert_with(|| Series::with_direction(k.unit(), k.direction())))
}

/// A counter's rate per second since its previous value; `None` for the first value, after a gap
/// and after a reset (a value below the previous one).
fn rate(state: &mut HostState, k: &MetricKey, now: Timestamp, v: f64, cfg: &DetectConfig) -> Option<f64> {
    let prev = state.counters.insert(k.clone(), (now.0, v));
    let (t0, v0) = prev?;
    let dt = (now.0 - t0) as f64 / 1000.0;
    let gap = cfg.gap.as_secs_f64();
    (dt > 0.0 && dt <= gap && v >= v0).then(|| (v - v0) / dt)
}

fn finding(snap: &Snapshot, check: CheckName, subject: String, summary: String) -> Finding {
    Finding {
        host: snap.host.clone(),
        check,
        subject,
        severity: Severity::Warning,
        summary,
        observed_at: snap.taken_at,
    }
}

fn fill(state: &mut HostState, snap: &Snapshot, cfg: &FillConfig) -> CheckOutcome {
    let now = snap.taken_at;
    // (subject, what, free, total, unit)
    let mut volumes: Vec<(String, String, f64, f64, Unit)> = Vec::new();
    if let Some(fss) = snap.filesystems.data() {
        for fs in fss.iter().filter(|f| !f.read_only).take(crate::key::FILESYSTEMS_MAX) {
            let total = fs.used_bytes.map_or(fs.total_bytes, |u| u.saturating_add(fs.available_bytes));
            volumes.push((
                fs.mount_point.clone(),
                fs.mount_point.clone(),
                fs.available_bytes as f64,
                total as f64,
                Unit::Bytes,
            ));
            if fs.total_inodes > 0 {
                volumes.push((
                    format!("inodes:{}", fs.mount_point),
                    format!("the inodes of {}", fs.mount_point),
                    fs.free_inodes as f64,
                    fs.total_inodes as f64,
                    Unit::Count,
                ));
            }
        }
    }
    if let Some(nix) = snap.nix.data() {
        // The store's filesystem is usually one of the mounts already; only otherwise on its own.
        let listed = snap.filesystems.data().is_some_and(|f| {
            f.iter()
                .any(|fs| fs.total_bytes == nix.store_total_bytes && fs.available_bytes == nix.store_available_bytes)
        });
        if !listed && nix.store_total_bytes > 0 {
            volumes.push((
                "/nix/store".into(),
                "the Nix store".into(),
                nix.store_available_bytes as f64,
                nix.store_total_bytes as f64,
                Unit::Bytes,
            ));
        }
    }
    if snap.filesystems.data().is_none() && snap.nix.data().is_none() {
        let reason = snap.filesystems.unavailable_reason().unwrap_or("unknown");
        return CheckOutcome {
            check: CheckName::FillUp,
            result: CheckResult::Unknown { reason: format!("filesystems unavailable: {reason}") },
        };
    }
    let mut findings = Vec::new();
    let mut covered = BTreeSet::new();
    for (subject, what, free, total, unit) in volumes {
        let v = state.volumes.entry(subject.clone()).or_default();
        v.push(now, free, total, cfg.window);
        let p = v.predict(cfg);
        if matches!(p, Prediction::Learning) {
            continue;
        }
        covered.insert(subject.clone());
        if let Prediction::Fills { eta, free, free_percent, per_hour, span } = p
            && Volume::alarming(&p, cfg)
        {
            let reclaim = reclaimable(snap, &subject, cfg);
            findings.push(finding(
                snap,
                CheckName::FillUp,
                subject,
                format!(
                    "{what} fills up in about {} ({free_percent:.1}% free, {} left, losing {} per hour over the last {}){reclaim}",
                    human_duration(eta),
                    unit.format(free),
                    unit.format(per_hour),
                    human_duration(span),
                ),
            ));
        }
    }
    // A volume that vanished from the snapshot is forgotten.
    let present: BTreeSet<String> = state.volumes.keys().cloned().collect();
    for gone in present.iter().filter(|s| !covered.contains(*s)) {
        let seen_now = snap.filesystems.data().is_some_and(|f| {
            f.iter().any(|fs| gone == &fs.mount_point || gone.strip_prefix("inodes:") == Some(fs.mount_point.as_str()))
        }) || gone == "/nix/store";
        if !seen_now {
            state.volumes.remove(gone);
        }
    }
    CheckOutcome {
        check: CheckName::FillUp,
        result: CheckResult::Ran { findings, coverage: Coverage::Subjects(covered) },
    }
}

/// What could be freed, as far as the snapshot says: old system generations (on `/`, `/nix`,
/// the store and `/boot`).
fn reclaimable(snap: &Snapshot, subject: &str, cfg: &FillConfig) -> String {
    if !matches!(subject, "/" | "/nix" | "/nix/store" | "/boot") {
        return String::new();
    }
    let Some(nix) = snap.nix.data() else { return String::new() };
    let horizon = snap.taken_at.minus(std::time::Duration::from_secs(u64::from(cfg.old_generation_days) * 86_400));
    let old = nix.generations.iter().filter(|g| !g.current && g.created_at.is_some_and(|c| c < horizon)).count();
    if old == 0 {
        String::new()
    } else {
        format!(
            "; reclaimable: {old} system generation{} older than {} days",
            if old == 1 { "" } else { "s" },
            cfg.old_generation_days
        )
    }
}
