//! The registry the daemon publishes into, and its families.
//!
//! Every value is an atomic inside `prometheus-client`'s metric types; publishing a value takes
//! no lock that is held across an await (the per-host bookkeeping is one short mutex section).
//! Per-host series are bounded twice: only hosts whose snapshot reached a cycle (configured or
//! admitted registry hosts, and this one) get series, and at most [`Limits::max_hosts`] of them
//! (a host beyond that is counted in `macha_metrics_hosts_refused`); at most
//! [`Limits::max_mounts`] filesystems per host are exposed. A host that has not been seen for
//! [`Limits::host_ttl_secs`] (it was forgotten, or removed from the configuration) loses its
//! series at the next render.

use crate::label::SafeLabel;
use crate::text;
use macha_core::action::ActionKind;
use macha_core::policy::Verdict;
use macha_core::snapshot::Snapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The bounds on per-host series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hosts with series at most.
    pub max_hosts: usize,
    /// Filesystems per host at most (in the snapshot's order, which is the mount table's).
    pub max_mounts: usize,
    /// A host not seen for this long loses its series.
    pub host_ttl_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_hosts: 1000, max_mounts: 32, host_ttl_secs: 24 * 3600 }
    }
}

/// What one cycle observed of one host, in base units.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostSample {
    /// The host answered: at least one section of its snapshot is available.
    pub up: bool,
    /// When the snapshot was taken, in seconds since the Unix epoch.
    pub contact_unix_secs: f64,
    /// The cycle's duration: collecting the snapshot and evaluating it.
    pub cycle_secs: f64,
    /// CPU in use, 0-1.
    pub cpu_ratio: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// Pressure stall over 60 s, 0-1: (resource, kind, ratio).
    pub pressure: Vec<(&'static str, &'static str, f64)>,
    /// Used share of each filesystem, 0-1: (mount point, ratio).
    pub filesystems: Vec<(String, f64)>,
    /// Units in the `failed` state.
    pub failed_units: Option<u64>,
    /// Sections of the snapshot that were unavailable.
    pub unavailable_sections: u64,
}

impl HostSample {
    /// The sample of `snapshot`, whose cycle took `cycle` in all.
    pub fn of(snapshot: &Snapshot, cycle: Duration) -> HostSample {
        let unavailable = snapshot.unavailable_sections().len();
        let pressure = snapshot
            .pressure
            .data()
            .map(|p| {
                vec![
                    ("cpu", "some", p.cpu_some.avg60 / 100.0),
                    ("memory", "some", p.memory_some.avg60 / 100.0),
                    ("memory", "full", p.memory_full.avg60 / 100.0),
                    ("io", "some", p.io_some.avg60 / 100.0),
                    ("io", "full", p.io_full.avg60 / 100.0),
                ]
            })
            .unwrap_or_default();
        HostSample {
            up: unavailable < macha_core::snapshot::SECTION_NAMES.len(),
            contact_unix_secs: snapshot.taken_at.millis() as f64 / 1000.0,
            cycle_secs: cycle.as_secs_f64(),
            cpu_ratio: snapshot.cpu.data().and_then(|c| c.usage_percent).map(|p| p / 100.0),
            memory_total_bytes: snapshot.memory.data().map(|m| m.total_bytes),
            memory_available_bytes: snapshot.memory.data().map(|m| m.available_bytes),
            load: snapshot.load.data().map(|l| [l.one, l.five, l.fifteen]),
            pressure,
            filesystems: snapshot
                .filesystems
                .data()
                .map(|fs| fs.iter().filter_map(|f| Some((f.mount_point.clone(), f.used_percent()? / 100.0))).collect())
                .unwrap_or_default(),
            failed_units: snapshot.units.data().map(|u| u.failed.len() as u64),
            unavailable_sections: unavailable as u64,
        }
    }
}

/// An action's outcome as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcomeClass {
    /// It ran and its verification held.
    Verified,
    /// It ran, but the verification did not hold.
    Unverified,
    Failed,
}

impl ActionOutcomeClass {
    /// From the executor's two flags.
    pub fn of(succeeded: bool, verified: bool) -> ActionOutcomeClass {
        match (succeeded, verified) {
            (true, true) => ActionOutcomeClass::Verified,
            (true, false) => ActionOutcomeClass::Unverified,
            (false, _) => ActionOutcomeClass::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ActionOutcomeClass::Verified => "verified",
            ActionOutcomeClass::Unverified => "unverified",
            ActionOutcomeClass::Failed => "failed",
        }
    }
}

/// The issue severities, in the order the store knows them (the `severity` label's values).
pub const SEVERITIES: [&str; 5] = ["info", "notice", "warning", "error", "critical"];

/// Distinct notification channels with series at most (channels come from the configuration).
const MAX_CHANNELS: usize = 32;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostL {
    host: SafeLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountL {
    host: SafeLabel,
    mount: SafeLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PressureL {
    host: SafeLabel,
    resource: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeverityL {
    host: SafeLabel,
    severity: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeriodL {
    host: SafeLabel,
    period: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeL {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokensL {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictL {
    verdict: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionL {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelL {
    channel: SafeLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateL {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionL {
    version: &'static str,
}

type FGauge = Gauge<f64, AtomicU64>;

/// What is kept per host to bound and expire its series.
#[derive(Debug)]
struct HostEntry {
    contact_unix_secs: f64,
    mounts: Vec<SafeLabel>,
}

/// The shared registry: the daemon publishes into it, the server and the textfile writer render
/// it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    limits: Limits,
    hosts: Mutex<BTreeMap<SafeLabel, HostEntry>>,
    channels: Mutex<usize>,
    host_up: Family<HostL, Gauge>,
    host_contact: Family<HostL, FGauge>,
    host_contact_age: Family<HostL, FGauge>,
    host_cycle: Family<HostL, FGauge>,
    host_cpu: Family<HostL, FGauge>,
    host_mem_total: Family<HostL, Gauge>,
    host_mem_available: Family<HostL, Gauge>,
    host_mem_used: Family<HostL, FGauge>,
    host_load: Family<PeriodL, FGauge>,
    host_pressure: Family<PressureL, FGauge>,
    host_fs_used: Family<MountL, FGauge>,
    host_failed_units: Family<HostL, Gauge>,
    host_unavailable: Family<HostL, Gauge>,
    host_issues: Family<SeverityL, Gauge>,
    hosts_refused: Gauge,
    turn: Histogram,
    cycle: Histogram,
    last_cycle: FGauge,
    model_latency: Histogram,
    model_requests: Family<OutcomeL, Counter>,
    model_tokens: Family<TokensL, Counter>,
    agent_queue: Gauge,
    decisions: Family<VerdictL, Counter>,
    actions: Family<ActionL, Counter>,
    notifications_failed: Family<ChannelL, Counter>,
    deployments: Family<StateL, Counter>,
}

fn histogram(buckets: &[f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

impl Metrics {
    /// An empty registry with every family registered (each with its HELP text), and the
    /// constant series: the build, the start time and the check interval.
    pub fn new(limits: Limits, check_interval: Duration, started_unix_secs: f64) -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            limits,
            hosts: Mutex::new(BTreeMap::new()),
            channels: Mutex::new(0),
            host_up: Family::default(),
            host_contact: Family::default(),
            host_contact_age: Family::default(),
            host_cycle: Family::default(),
            host_cpu: Family::default(),
            host_mem_total: Family::default(),
            host_mem_available: Family::default(),
            host_mem_used: Family::default(),
            host_load: Family::default(),
            host_pressure: Family::default(),
            host_fs_used: Family::default(),
            host_failed_units: Family::default(),
            host_unavailable: Family::default(),
            host_issues: Family::default(),
            hosts_refused: Gauge::default(),
            turn: histogram(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            cycle: histogram(&[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
            last_cycle: FGauge::default(),
            model_latency: histogram(&[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            model_requests: Family::default(),
            model_tokens: Family::default(),
            agent_queue: Gauge::default(),
            decisions: Family::default(),
            actions: Family::default(),
            notifications_failed: Family::default(),
            deployments: Family::default(),
        };
        let build: Family<VersionL, Gauge> = Family::default();
        build.get_or_create(&VersionL { version: env!("CARGO_PKG_VERSION") }).set(1);
        r.register("macha_build_info", "Macha's version (always 1)", build);
        let start: FGauge = FGauge::default();
        start.set(started_unix_secs);
        r.register("macha_start_time_seconds", "When the daemon started, in seconds since the Unix epoch", start);
        let interval: FGauge = FGauge::default();
        interval.set(check_interval.as_secs_f64());
        r.register("macha_check_interval_seconds", "The configured interval between cycles", interval);
        r.register(
            "macha_host_up",
            "1 when the host answered its last observation, 0 when nothing of it could be read",
            m.host_up.clone(),
        );
        r.register(
            "macha_host_last_contact_timestamp_seconds",
            "When the host's last snapshot was taken, in seconds since the Unix epoch",
            m.host_contact.clone(),
        );
        r.register(
            "macha_host_last_contact_age_seconds",
            "Seconds since the host's last snapshot, at the time of the scrape",
            m.host_contact_age.clone(),
        );
        r.register(
            "macha_host_cycle_duration_seconds",
            "How long the host's last cycle took: observation and evaluation",
            m.host_cycle.clone(),
        );
        r.register(
            "macha_host_cpu_usage_ratio",
            "Share of CPU time in use between the last two observations (0-1)",
            m.host_cpu.clone(),
        );
        r.register("macha_host_memory_total_bytes", "Memory installed", m.host_mem_total.clone());
        r.register(
            "macha_host_memory_available_bytes",
            "Memory available to new work (MemAvailable)",
            m.host_mem_available.clone(),
        );
        r.register("macha_host_memory_used_ratio", "Share of memory not available (0-1)", m.host_mem_used.clone());
        r.register("macha_host_load", "Load average over the period", m.host_load.clone());
        r.register(
            "macha_host_pressure_ratio",
            "Pressure stall information over 60 s: share of time some or all tasks were stalled on the resource (0-1)",
            m.host_pressure.clone(),
        );
        r.register(
            "macha_host_filesystem_used_ratio",
            "Used share of the space an unprivileged user can use, per mount point (0-1)",
            m.host_fs_used.clone(),
        );
        r.register("macha_host_failed_units", "Units in the failed state", m.host_failed_units.clone());
        r.register(
            "macha_host_unavailable_sections",
            "Sections of the host's last snapshot that could not be read",
            m.host_unavailable.clone(),
        );
        r.register("macha_host_open_issues", "Open and acting issues of the host, by severity", m.host_issues.clone());
        r.register(
            "macha_metrics_hosts_refused",
            "Hosts without series because the host limit was reached",
            m.hosts_refused.clone(),
        );
        r.register(
            "macha_loop_turn_duration_seconds",
            "How long one turn of the daemon's event loop took",
            m.turn.clone(),
        );
        r.register(
            "macha_cycle_duration_seconds",
            "How long one host's cycle took: observation and evaluation",
            m.cycle.clone(),
        );
        r.register(
            "macha_last_cycle_timestamp_seconds",
            "When the last cycle of any host finished, in seconds since the Unix epoch",
            m.last_cycle.clone(),
        );
        r.register(
            "macha_model_request_duration_seconds",
            "How long a request to the language model took, answered or not",
            m.model_latency.clone(),
        );
        r.register("macha_model_requests", "Requests to the language model, by outcome", m.model_requests.clone());
        r.register(
            "macha_model_tokens",
            "Tokens of the language model's requests, by kind (prompt or completion)",
            m.model_tokens.clone(),
        );
        r.register("macha_agent_queue_depth", "Requests waiting for the language model", m.agent_queue.clone());
        r.register("macha_action_decisions", "Proposed actions, by the policy's verdict", m.decisions.clone());
        r.register("macha_actions", "Executed actions, by kind and outcome", m.actions.clone());
        r.register(
            "macha_notifications_failed",
            "Notifications that could not be delivered, by channel",
            m.notifications_failed.clone(),
        );
        r.register("macha_deployments", "Deployments that ended, by final state", m.deployments.clone());
        Metrics { registry: r, ..m }
    }

    /// The bounds this registry keeps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One host's cycle. Refused (and counted) when the host limit is reached and the host has no
    /// series yet.
    pub fn host(&self, host: &str, sample: &HostSample) {
        let label = SafeLabel::new(host);
        let mounts: Vec<(SafeLabel, f64)> = sample
            .filesystems
            .iter()
            .take(self.limits.max_mounts)
            .map(|(mount, ratio)| (SafeLabel::new(mount), *ratio))
            .collect();
        {
            let mut hosts = lock(&self.hosts);
            if !hosts.contains_key(&label) && hosts.len() >= self.limits.max_hosts {
                drop(hosts);
                self.hosts_refused.inc();
                return;
            }
            let entry = hosts
                .entry(label.clone())
                .or_insert_with(|| HostEntry { contact_unix_secs: sample.contact_unix_secs, mounts: Vec::new() });
            entry.contact_unix_secs = sample.contact_unix_secs;
            // Mounts that went away lose their series.
            for old in &entry.mounts {
                if !mounts.iter().any(|(m, _)| m == old) {
                    self.host_fs_used.remove(&MountL { host: label.clone(), mount: old.clone() });
                }
            }
            entry.mounts = mounts.iter().map(|(m, _)| m.clone()).collect();
        }
        let h = HostL { host: label.clone() };
        self.host_up.get_or_create(&h).set(i64::from(sample.up));
        self.host_contact.get_or_create(&h).set(sample.contact_unix_secs);
        self.host_cycle.get_or_create(&h).set(sample.cycle_secs);
        self.host_unavailable.get_or_create(&h).set(clamp_i64(sample.unavailable_sections));
        self.cycle.observe(sample.cycle_secs);
        // A section that could not be read loses its series rather than keep a stale value.
        set_or_remove(&self.host_cpu, &h, sample.cpu_ratio);
        match (sample.memory_total_bytes, sample.memory_available_bytes) {
            (Some(total), Some(available)) => {
                self.host_mem_total.get_or_create(&h).set(clamp_i64(total));
                self.host_mem_available.get_or_create(&h).set(clamp_i64(available));
                let used = if total > 0 { 1.0 - available as f64 / total as f64 } else { 0.0 };
                self.host_mem_used.get_or_create(&h).set(used.clamp(0.0, 1.0));
            }
            _ => {
                self.host_mem_total.remove(&h);
                self.host_mem_available.remove(&h);
                self.host_mem_used.remove(&h);
            }
        }
        for (i, period) in ["1m", "5m", "15m"].into_iter().enumerate() {
            let l = PeriodL { host: label.clone(), period };
            set_or_remove(&self.host_load, &l, sample.load.map(|load| load[i]));
        }
        for (resource, kind) in PRESSURE_LINES {
            let l = PressureL { host: label.clone(), resource, kind };
            let v = sample.pressure.iter().find(|(r, k, _)| *r == resource && *k == kind).map(|(_, _, v)| *v);
            set_or_remove(&self.host_pressure, &l, v);
        }
        for (mount, ratio) in mounts {
            self.host_fs_used.get_or_create(&MountL { host: label.clone(), mount }).set(ratio);
        }
        set_or_remove(&self.host_failed_units, &h, sample.failed_units.map(clamp_i64));
        self.last_cycle.set(sample.contact_unix_secs + sample.cycle_secs);
    }

    /// The open (or acting) issues of `host` by severity (`SEVERITIES` order); a severity not
    /// given is 0. Ignored for a host without series.
    pub fn open_issues(&self, host: &str, counts: &[(&str, u64)]) {
        let label = SafeLabel::new(host);
        if !lock(&self.hosts).contains_key(&label) {
            return;
        }
        for severity in SEVERITIES {
            let n = counts.iter().find(|(s, _)| *s == severity).map_or(0, |(_, n)| *n);
            self.host_issues.get_or_create(&SeverityL { host: label.clone(), severity }).set(clamp_i64(n));
        }
    }

    /// One turn of the event loop.
    pub fn loop_turn(&self, took: Duration) {
        self.turn.observe(took.as_secs_f64());
    }

    /// One request to the model: how long it took, whether it was answered, its tokens.
    pub fn model_request(&self, took: Duration, answered: bool, prompt_tokens: u64, completion_tokens: u64) {
        self.model_latency.observe(took.as_secs_f64());
        let outcome = if answered { "answered" } else { "failed" };
        self.model_requests.get_or_create(&OutcomeL { outcome }).inc();
        self.model_tokens.get_or_create(&TokensL { kind: "prompt" }).inc_by(prompt_tokens);
        self.model_tokens.get_or_create(&TokensL { kind: "completion" }).inc_by(completion_tokens);
    }

    /// Requests waiting for the model now.
    pub fn agent_queue(&self, depth: usize) {
        self.agent_queue.set(clamp_i64(depth as u64));
    }

    /// The policy decided a proposed action.
    pub fn decision(&self, verdict: Verdict) {
        self.decisions.get_or_create(&VerdictL { verdict: verdict.as_str() }).inc();
    }

    /// An executed action ended.
    pub fn action(&self, kind: ActionKind, outcome: ActionOutcomeClass) {
        self.actions.get_or_create(&ActionL { kind: kind.as_str(), outcome: outcome.as_str() }).inc();
    }

    /// A notification on `channel` could not be delivered (the notifier calls this).
    pub fn notification_failed(&self, channel: &str) {
        let l = ChannelL { channel: SafeLabel::new(channel) };
        if self.notifications_failed.get(&l).is_none() {
            let mut n = lock(&self.channels);
            if *n >= MAX_CHANNELS {
                return;
            }
            *n += 1;
        }
        self.notifications_failed.get_or_create(&l).inc();
    }

    /// A deployment ended in `state` (its final state's name, such as `committed`).
    pub fn deployment(&self, state: &'static str) {
        self.deployments.get_or_create(&StateL { state }).inc();
    }

    /// Refreshes what depends on the time of the scrape (the contact ages) and drops hosts not
    /// seen for the TTL.
    fn refresh(&self, now_unix_secs: f64) {
        let mut hosts = lock(&self.hosts);
        let ttl = self.limits.host_ttl_secs as f64;
        let expired: Vec<SafeLabel> =
            hosts.iter().filter(|(_, e)| now_unix_secs - e.contact_unix_secs > ttl).map(|(h, _)| h.clone()).collect();
        for host in expired {
            if let Some(entry) = hosts.remove(&host) {
                self.forget(&host, &entry);
            }
        }
        for (host, entry) in hosts.iter() {
            let age = (now_unix_secs - entry.contact_unix_secs).max(0.0);
            self.host_contact_age.get_or_create(&HostL { host: host.clone() }).set(age);
        }
    }

    fn forget(&self, host: &SafeLabel, entry: &HostEntry) {
        let h = HostL { host: host.clone() };
        for family in
            [&self.host_contact, &self.host_contact_age, &self.host_cycle, &self.host_cpu, &self.host_mem_used]
        {
            family.remove(&h);
        }
        for family in [
            &self.host_up,
            &self.host_mem_total,
            &self.host_mem_available,
            &self.host_failed_units,
            &self.host_unavailable,
        ] {
            family.remove(&h);
        }
        for period in ["1m", "5m", "15m"] {
            self.host_load.remove(&PeriodL { host: host.clone(), period });
        }
        for (resource, kind) in PRESSURE_LINES {
            self.host_pressure.remove(&PressureL { host: host.clone(), resource, kind });
        }
        for mount in &entry.mounts {
            self.host_fs_used.remove(&MountL { host: host.clone(), mount: mount.clone() });
        }
        for severity in SEVERITIES {
            self.host_issues.remove(&SeverityL { host: host.clone(), severity });
        }
    }

    /// Hosts with series now.
    pub fn host_count(&self) -> usize {
        lock(&self.hosts).len()
    }

    /// The exposition in OpenMetrics at `now_unix_secs`.
    pub fn render_openmetrics(&self, now_unix_secs: f64) -> String {
        self.refresh(now_unix_secs);
        let mut out = String::with_capacity(64 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String does not fail; an encoder error would be a bug in a family.
            tracing::error!("encoding the metrics failed: {e}");
        }
        out
    }

    /// The exposition in the Prometheus text format 0.0.4 at `now_unix_secs`.
    pub fn render_text(&self, now_unix_secs: f64) -> String {
        text::to_prometheus_text(&self.render_openmetrics(now_unix_secs))
    }
}

const PRESSURE_LINES: [(&str, &str); 5] =
    [("cpu", "some"), ("memory", "some"), ("memory", "full"), ("io", "some"), ("io", "full")];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

trait Settable<V> {
    fn put(&self, v: V);
}

impl Settable<f64> for FGauge {
    fn put(&self, v: f64) {
        self.set(v);
    }
}

impl Settable<i64> for Gauge {
    fn put(&self, v: i64) {
        self.set(v);
    }
}

fn set_or_remove<L, G, V>(family: &Family<L, G>, labels: &L, value: Option<V>)
where
    L: Clone + std::hash::Hash + Eq,
    G: Settable<V> + prometheus_client::metrics::TypedMetric + Default,
{
    match value {
        Some(v) => family.get_or_create(labels).put(v),
        None => {
            family.remove(labels);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample(at: f64) -> HostSample {
        HostSample {
            up: true,
            contact_unix_secs: at,
            cycle_secs: 0.25,
            cpu_ratio: Some(0.5),
            memory_total_bytes: Some(1000),
            memory_available_bytes: Some(250),
            load: Some([1.0, 0.5, 0.25]),
            pressure: vec![("io", "some", 0.125)],
            filesystems: vec![("/".into(), 0.5), ("/var".into(), 0.75)],
            failed_units: Some(2),
            unavailable_sections: 0,
        }
    }

    fn metrics(limits: Limits) -> Metrics {
        Metrics::new(limits, Duration::from_secs(60), 1_000.0)
    }

    #[test]
    fn a_host_cycle_becomes_series_in_base_units() {
        let m = metrics(Limits::default());
        m.host("web1", &sample(2_000.0));
        m.open_issues("web1", &[("critical", 1), ("warning", 3)]);
        let text = m.render_text(2_010.0);
        for line in [
            "macha_host_up{host=\"web1\"} 1",
            "macha_host_memory_used_ratio{host=\"web1\"} 0.75",
            "macha_host_filesystem_used_ratio{host=\"web1\",mount=\"/var\"} 0.75",
            "macha_host_pressure_ratio{host=\"web1\",resource=\"io\",kind=\"some\"} 0.125",
            "macha_host_load{host=\"web1\",period=\"5m\"} 0.5",
            "macha_host_failed_units{host=\"web1\"} 2",
            "macha_host_open_issues{host=\"web1\",severity=\"critical\"} 1",
            "macha_host_open_issues{host=\"web1\",severity=\"info\"} 0",
            "macha_host_last_contact_age_seconds{host=\"web1\"} 10.0",
            "macha_check_interval_seconds 60.0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("# HELP macha_host_up 1 when the host answered"), "{text}");
        assert!(!text.contains("# EOF"));
        let om = m.render_openmetrics(2_010.0);
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn hostile_mount_points_and_host_names_cannot_forge_series() {
        let m = metrics(Limits::default());
        let mut s = sample(1.0);
        s.filesystems = vec![("/mnt/x\"} 1\nmacha_host_up{host=\"forged".into(), 0.5)];
        m.host("evil\"host\nmacha_build_info 7", &s);
        let text = m.render_text(2.0);
        assert!(!text.lines().any(|l| l.starts_with("macha_host_up{host=\"forged")), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("macha_build_info 7")), "{text}");
        assert!(text.contains(r#"mount="/mnt/x\"} 1\nmacha_host_up{host=\"forged""#), "{text}");
        // Each sample is one line: as many sample lines as before the hostile values.
        let fs_lines = text.lines().filter(|l| l.starts_with("macha_host_filesystem_used_ratio{")).count();
        assert_eq!(fs_lines, 1);
    }

    #[test]
    fn hosts_and_mounts_are_capped_and_old_hosts_expire() {
        let m = metrics(Limits { max_hosts: 2, max_mounts: 1, host_ttl_secs: 100 });
        m.host("a", &sample(1_000.0));
        m.host("b", &sample(1_050.0));
        m.host("c", &sample(1_050.0));
        assert_eq!(m.host_count(), 2);
        let text = m.render_text(1_060.0);
        assert!(text.contains("macha_metrics_hosts_refused 1"), "{text}");
        assert!(!text.contains("host=\"c\""), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("macha_host_filesystem_used_ratio{host=\"a\"")).count(), 1);
        // Host a was last seen 140 s before this render (over the TTL): its series go, b's stay.
        let text = m.render_text(1_140.0);
        assert!(!text.contains("host=\"a\""), "{text}");
        assert!(text.contains("macha_host_up{host=\"b\"} 1"), "{text}");
        assert_eq!(m.host_count(), 1);
    }

    #[test]
    fn an_unreadable_section_removes_its_series() {
        let m = metrics(Limits::default());
        m.host("h", &sample(1.0));
        let down = HostSample { up: false, contact_unix_secs: 2.0, ..HostSample::default() };
        m.host("h", &down);
        let text = m.render_text(3.0);
        assert!(text.contains("macha_host_up{host=\"h\"} 0"), "{text}");
        assert!(!text.contains("macha_host_cpu_usage_ratio{"), "{text}");
        assert!(!text.contains("macha_host_filesystem_used_ratio{"), "{text}");
    }

    #[test]
    fn own_health_counters_count() {
        let m = metrics(Limits::default());
        m.loop_turn(Duration::from_millis(3));
        m.model_request(Duration::from_secs(2), true, 100, 20);
        m.model_request(Duration::from_secs(1), false, 50, 0);
        m.decision(Verdict::Approval);
        m.action(ActionKind::RestartUnit, ActionOutcomeClass::of(true, true));
        m.notification_failed("email");
        m.notification_failed("email");
        m.deployment("rolled_back");
        m.agent_queue(4);
        let text = m.render_text(0.0);
        for line in [
            "macha_loop_turn_duration_seconds_count 1",
            "macha_model_requests_total{outcome=\"failed\"} 1",
            "macha_model_tokens_total{kind=\"prompt\"} 150",
            "macha_action_decisions_total{verdict=\"approval\"} 1",
            "macha_actions_total{kind=\"restart_unit\",outcome=\"verified\"} 1",
            "macha_notifications_failed_total{channel=\"email\"} 2",
            "macha_deployments_total{state=\"rolled_back\"} 1",
            "macha_agent_queue_depth 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Counters are named with `_total` in the text format, HELP line included.
        assert!(text.contains("# HELP macha_actions_total Executed actions, by kind and outcome.\n"), "{text}");
        assert!(text.contains("# TYPE macha_actions_total counter\n"), "{text}");
    }
}
