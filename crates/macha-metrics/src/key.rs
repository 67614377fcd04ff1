//! Metric names and what a snapshot yields: [`MetricKey`] (a validated, bounded name that also
//! says what kind of value it is) and [`extract`].
//!
//! A name is `family` or `family:subject` (`fs.avail_bytes:/var`, `net.rx_bytes:eth0`). Subjects
//! come from the host (mount points, interface and process names), so they are cleaned: only
//! printable ASCII without spaces survives, everything else becomes `_`, and the whole name is at
//! most [`NAME_MAX`] bytes. How many subjects of each family one snapshot yields is capped, so a
//! host cannot grow its metric set without bound.

use macha_core::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest metric name, in bytes.
pub const NAME_MAX: usize = 96;
/// The name of the host's anomaly rate in the history ([`MetricKey::anomaly_rate`]).
pub const ANOMALY_RATE: &str = "anomaly.rate_percent";
/// Filesystems per snapshot that yield metrics.
pub const FILESYSTEMS_MAX: usize = 32;
/// Network interfaces per snapshot that yield metrics.
pub const INTERFACES_MAX: usize = 16;
/// Processes (by name, from the top by resident memory) per snapshot that yield metrics.
pub const PROCESSES_MAX: usize = 10;
/// GPUs per snapshot that yield metrics.
pub const GPUS_MAX: usize = 8;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("metric name is empty")]
    Empty,
    #[error("metric name is longer than {NAME_MAX} bytes")]
    TooLong,
    #[error("metric name {0:?} has a character outside printable ASCII or a space")]
    Character(String),
    #[error("metric name {0:?} has no family")]
    Family(String),
}

/// How a value behaves over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A level (memory available, percent used): stored and judged as it is.
    Gauge,
    /// A cumulative counter (bytes received): stored and judged as a rate per second; a drop is a
    /// reset, never a negative rate.
    Counter,
}

/// Which way of moving is worth a finding: more free space or fewer used bytes never is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Both,
    /// Only a rise is unusual in a way that matters (space used, swap in use).
    Up,
    /// Only a fall is (space or memory available).
    Down,
}

/// What a value measures, for the smallest change worth a deviation and for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Percent,
    Bytes,
    BytesPerSecond,
    PerSecond,
    Count,
    /// Load averages and other plain ratios.
    Ratio,
    Celsius,
    /// Anything else (replayed series).
    Plain,
}

impl Unit {
    /// The smallest spread a baseline is given: a series that never moved must not make the
    /// first small wobble infinitely unusual. The floor is the larger of this and 1 % of the
    /// level.
    pub fn floor(self) -> f64 {
        match self {
            Unit::Percent => 1.0,
            Unit::Bytes => 1024.0 * 1024.0,
            Unit::BytesPerSecond => 1024.0,
            Unit::PerSecond => 0.1,
            Unit::Count => 1.0,
            Unit::Ratio => 0.1,
            Unit::Celsius => 1.0,
            Unit::Plain => 1e-9,
        }
    }

    /// A value in this unit for people (`1.2 GiB`, `37.5%`).
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Percent => format!("{v:.1}%"),
            Unit::Bytes => human(v, ""),
            Unit::BytesPerSecond => human(v, "/s"),
            Unit::PerSecond => format!("{v:.2}/s"),
            Unit::Count => format!("{v:.0}"),
            Unit::Ratio => format!("{v:.2}"),
            Unit::Celsius => format!("{v:.0} °C"),
            Unit::Plain => format!("{v}"),
        }
    }
}

fn human(v: f64, suffix: &str) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = v.abs();
    let mut i = 0;
    while x >= 1024.0 && i + 1 < UNITS.len() {
        x /= 1024.0;
        i += 1;
    }
    let sign = if v < 0.0 { "-" } else { "" };
    if i == 0 { format!("{sign}{x:.0} B{suffix}") } else { format!("{sign}{x:.1} {}{suffix}", UNITS[i]) }
}

/// A validated metric name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MetricKey(String);

impl MetricKey {
    /// Parses a stored or typed name.
    pub fn parse(raw: &str) -> Result<MetricKey, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > NAME_MAX {
            return Err(KeyError::TooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyError::Character(raw.escape_debug().to_string()));
        }
        let family = raw.split(':').next().unwrap_or("");
        if family.is_empty()
            || !family.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b))
        {
            return Err(KeyError::Family(raw.to_owned()));
        }
        Ok(MetricKey(raw.to_owned()))
    }

    /// `family:subject`, the subject cleaned and the whole cut to [`NAME_MAX`] bytes.
    fn with_subject(family: &str, subject: &str) -> MetricKey {
        let mut s = String::with_capacity(family.len() + 1 + subject.len());
        s.push_str(family);
        s.push(':');
        for c in subject.chars() {
            if s.len() >= NAME_MAX {
                break;
            }
            s.push(if c.is_ascii_graphic() { c } else { '_' });
        }
        MetricKey(s)
    }

    fn plain(family: &str) -> MetricKey {
        MetricKey(family.to_owned())
    }

    /// The share of a host's metrics anomalous at a sample, percent: stored with the samples,
    /// never judged itself.
    pub fn anomaly_rate() -> MetricKey {
        MetricKey::plain(ANOMALY_RATE)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `:`.
    pub fn family(&self) -> &str {
        self.0.split(':').next().unwrap_or(&self.0)
    }

    /// The part after the first `:`, if any.
    pub fn subject(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, s)| s)
    }

    /// Counters are judged as rates.
    pub fn kind(&self) -> Kind {
        match self.family() {
            "net.rx_bytes" | "net.tx_bytes" | "net.rx_errors" | "net.tx_errors" | "net.rx_dropped"
            | "net.tx_dropped" | "cpu.busy_ticks" => Kind::Counter,
            _ => Kind::Gauge,
        }
    }

    /// The unit of the stored value (a counter's is per second).
    pub fn unit(&self) -> Unit {
        let f = self.family();
        if f.ends_with("_percent") || f.starts_with("psi.") {
            Unit::Percent
        } else if f == "net.rx_bytes" || f == "net.tx_bytes" {
            Unit::BytesPerSecond
        } else if self.kind() == Kind::Counter {
            Unit::PerSecond
        } else if f.ends_with("_bytes") {
            Unit::Bytes
        } else if f.starts_with("load.") && f != "load.runnable" {
            Unit::Ratio
        } else if f.ends_with("_celsius") {
            Unit::Celsius
        } else if f.contains('.') {
            Unit::Count
        } else {
            Unit::Plain
        }
    }

    /// Which way of moving this metric matters.
    pub fn direction(&self) -> Direction {
        match self.family() {
            "fs.avail_bytes" | "fs.inodes_free" | "nix.store_avail_bytes" | "mem.available_bytes" => Direction::Down,
            "fs.used_percent"
            | "fs.inodes_used_percent"
            | "nix.store_used_bytes"
            | "nix.generations"
            | "mem.used_percent"
            | "mem.swap_used_bytes"
            | "units.failed"
            | "journal.errors" => Direction::Up,
            _ => Direction::Both,
        }
    }

    /// What the metric is, in words, for findings (`memory available`, `space available on /var`).
    pub fn describe(&self) -> String {
        let sub = self.subject().unwrap_or("");
        match self.family() {
            "cpu.usage_percent" => "CPU usage".into(),
            "mem.available_bytes" => "memory available".into(),
            "mem.used_percent" => "memory in use".into(),
            "mem.swap_used_bytes" => "swap in use".into(),
            "load.1" => "1-minute load".into(),
            "load.5" => "5-minute load".into(),
            "load.15" => "15-minute load".into(),
            "fs.used_percent" => format!("space used on {sub}"),
            "fs.avail_bytes" => format!("space available on {sub}"),
            "fs.inodes_used_percent" => format!("inodes used on {sub}"),
            "fs.inodes_free" => format!("inodes free on {sub}"),
            "net.rx_bytes" => format!("bytes received on {sub}"),
            "net.tx_bytes" => format!("bytes sent on {sub}"),
            "proc.rss_bytes" => format!("resident memory of {sub}"),
            "units.failed" => "failed units".into(),
            "anomaly.rate_percent" => "share of the host's metrics that are unusual".into(),
            "journal.errors" => "journal errors".into(),
            _ => self.0.clone(),
        }
    }
}

impl TryFrom<String> for MetricKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<MetricKey, KeyError> {
        MetricKey::parse(&s)
    }
}

impl From<MetricKey> for String {
    fn from(k: MetricKey) -> String {
        k.0
    }
}

impl std::fmt::Display for MetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every metric a snapshot yields, with its value as observed (counters cumulative, see
/// [`Kind`]). Unavailable sections yield nothing; values that are not finite are left out. At
/// most a few hundred values, whatever the host reports.
pub fn extract(snap: &Snapshot) -> Vec<(MetricKey, f64)> {
    let mut out: Vec<(MetricKey, f64)> = Vec::with_capacity(96);
    let mut put = |k: MetricKey, v: f64| {
        if v.is_finite() {
            out.push((k, v));
        }
    };
    if let Some(u) = snap.cpu.data().and_then(|c| c.usage_percent) {
        put(MetricKey::plain("cpu.usage_percent"), u);
    }
    if let Some(m) = snap.memory.data() {
        put(MetricKey::plain("mem.available_bytes"), m.available_bytes as f64);
        if m.total_bytes > 0 {
            put(MetricKey::plain("mem.used_percent"), 100.0 * (1.0 - m.available_bytes as f64 / m.total_bytes as f64));
        }
        put(MetricKey::plain("mem.swap_used_bytes"), m.swap_total_bytes.saturating_sub(m.swap_free_bytes) as f64);
    }
    if let Some(l) = snap.load.data() {
        put(MetricKey::plain("load.1"), l.one);
        put(MetricKey::plain("load.5"), l.five);
        put(MetricKey::plain("load.15"), l.fifteen);
        put(MetricKey::plain("load.runnable"), f64::from(l.runnable));
    }
    if let Some(p) = snap.pressure.data() {
        put(MetricKey::plain("psi.cpu_some"), p.cpu_some.avg60);
        put(MetricKey::plain("psi.memory_some"), p.memory_some.avg60);
        put(MetricKey::plain("psi.memory_full"), p.memory_full.avg60);
        put(MetricKey::plain("psi.io_some"), p.io_some.avg60);
        put(MetricKey::plain("psi.io_full"), p.io_full.avg60);
    }
    if let Some(fss) = snap.filesystems.data() {
        for fs in fss.iter().take(FILESYSTEMS_MAX) {
            let m = &fs.mount_point;
            if let Some(p) = fs.used_percent() {
                put(MetricKey::with_subject("fs.used_percent", m), p);
            }
            put(MetricKey::with_subject("fs.avail_bytes", m), fs.available_bytes as f64);
            if let Some(p) = fs.inodes_used_percent() {
                put(MetricKey::with_subject("fs.inodes_used_percent", m), p);
                put(MetricKey::with_subject("fs.inodes_free", m), fs.free_inodes as f64);
            }
        }
    }
    if let Some(ifs) = snap.network.data() {
        for i in ifs.iter().filter(|i| i.name != "lo").take(INTERFACES_MAX) {
            put(MetricKey::with_subject("net.rx_bytes", &i.name), i.rx_bytes as f64);
            put(MetricKey::with_subject("net.tx_bytes", &i.name), i.tx_bytes as f64);
            put(MetricKey::with_subject("net.rx_errors", &i.name), i.rx_errors as f64);
            put(MetricKey::with_subject("net.tx_errors", &i.name), i.tx_errors as f64);
        }
    }
    if let Some(p) = snap.processes.data() {
        put(MetricKey::plain("proc.total"), f64::from(p.total));
        // Processes of one name are summed (several workers are one service's memory).
        let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
        for pr in &p.top_rss {
            if by_name.len() >= PROCESSES_MAX && !by_name.contains_key(pr.name.as_str()) {
                continue;
            }
            let sum = by_name.entry(pr.name.as_str()).or_default();
            *sum = sum.saturating_add(pr.rss_bytes);
        }
        for (name, rss) in by_name {
            put(MetricKey::with_subject("proc.rss_bytes", name), rss as f64);
        }
    }
    if let Some(u) = snap.units.data() {
        put(MetricKey::plain("units.total"), f64::from(u.total));
        put(MetricKey::plain("units.failed"), u.failed.len() as f64);
    }
    if let Some(j) = snap.journal.data() {
        put(MetricKey::plain("journal.errors"), f64::from(j.errors_total));
    }
    if let Some(n) = snap.nix.data() {
        put(MetricKey::plain("nix.store_used_bytes"), n.store_used_bytes() as f64);
        put(MetricKey::plain("nix.store_avail_bytes"), n.store_available_bytes as f64);
        put(MetricKey::plain("nix.generations"), n.generations.len() as f64);
    }
    if let Some(h) = snap.hardware.data() {
        for g in h.gpus.iter().take(GPUS_MAX) {
            if let Some(t) = g.temperature_celsius {
                put(MetricKey::with_subject("gpu.temp_celsius", &g.pci_slot), t);
            }
            if let Some(u) = g.utilisation_percent {
                put(MetricKey::with_subject("gpu.util_percent", &g.pci_slot), u);
            }
        }
    }
    if let Some(c) = snap.connections.data() {
        put(MetricKey::plain("tcp.established"), f64::from(c.established));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_are_validated_and_subjects_cleaned() {
        assert!(MetricKey::parse("mem.available_bytes").is_ok());
        assert!(MetricKey::parse("fs.avail_bytes:/var/lib").is_ok());
        assert_eq!(MetricKey::parse(""), Err(KeyError::Empty));
        assert!(matches!(MetricKey::parse("fs.avail bytes"), Err(KeyError::Character(_))));
        assert!(matches!(MetricKey::parse(":x"), Err(KeyError::Family(_))));
        assert!(matches!(MetricKey::parse("Mem"), Err(KeyError::Family(_))));
        assert_eq!(MetricKey::parse(&"a".repeat(NAME_MAX + 1)), Err(KeyError::TooLong));
        let k = MetricKey::with_subject("fs.avail_bytes", "/mnt/my disk\u{202e}");
        assert_eq!(k.as_str(), "fs.avail_bytes:/mnt/my_disk_");
        assert!(MetricKey::parse(k.as_str()).is_ok());
        let long = MetricKey::with_subject("fs.avail_bytes", &"/x".repeat(200));
        assert!(long.as_str().len() <= NAME_MAX);
        assert!(MetricKey::parse(long.as_str()).is_ok());
    }

    #[test]
    fn kinds_and_units_follow_the_family() {
        let k = MetricKey::parse("net.rx_bytes:eth0").unwrap();
        assert_eq!((k.kind(), k.unit()), (Kind::Counter, Unit::BytesPerSecond));
        let k = MetricKey::parse("fs.used_percent:/").unwrap();
        assert_eq!((k.kind(), k.unit()), (Kind::Gauge, Unit::Percent));
        assert_eq!(MetricKey::parse("load.15").unwrap().unit(), Unit::Ratio);
        assert_eq!(MetricKey::parse("mem.available_bytes").unwrap().unit(), Unit::Bytes);
        assert_eq!(Unit::Bytes.format(3.5 * 1024.0 * 1024.0 * 1024.0), "3.5 GiB");
    }
}
