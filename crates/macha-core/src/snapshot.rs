//! What observation produces: a [`Snapshot`] of one host, section by section.
//!
//! Architecture invariant: a section that could not be read is [`Section::Unavailable`] with the
//! reason, never an empty or zero value. Checks treat `Unavailable` as "unknown", which can neither
//! raise nor resolve an issue.
//!
//! API boundary: these types are the JSON of `macha check --json` and of the remote probe.

use crate::{HostName, Timestamp};
use serde::{Deserialize, Serialize};

/// One section of a snapshot: data, or the reason it is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Section<T> {
    Ok { data: T },
    Unavailable { reason: String },
}

impl<T> Section<T> {
    pub fn ok(data: T) -> Self {
        Section::Ok { data }
    }
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Section::Unavailable { reason: reason.into() }
    }
    pub fn data(&self) -> Option<&T> {
        match self {
            Section::Ok { data } => Some(data),
            Section::Unavailable { .. } => None,
        }
    }
    pub fn unavailable_reason(&self) -> Option<&str> {
        match self {
            Section::Ok { .. } => None,
            Section::Unavailable { reason } => Some(reason),
        }
    }
    pub fn from_result<E: std::fmt::Display>(r: Result<T, E>) -> Self {
        match r {
            Ok(data) => Section::ok(data),
            Err(e) => Section::unavailable(e.to_string()),
        }
    }
}

/// The sections of a [`Snapshot`], in the order people read them (also the JSON field names).
pub const SECTION_NAMES: [&str; 11] =
    ["cpu", "memory", "load", "pressure", "filesystems", "network", "processes", "units", "journal", "nix", "hardware"];

/// Everything observed about one host at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub host: HostName,
    pub taken_at: Timestamp,
    /// How long collecting the snapshot took, in microseconds.
    pub collect_micros: u64,
    /// Commands or calls that hit their time limit while the snapshot was taken (their sections
    /// are unavailable; a host where any did is degraded: [`crate::checks::visibility`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timed_out: u32,
    pub cpu: Section<Cpu>,
    pub memory: Section<Memory>,
    pub load: Section<Load>,
    pub pressure: Section<Pressure>,
    pub filesystems: Section<Vec<Filesystem>>,
    pub network: Section<Vec<NetInterface>>,
    pub processes: Section<Processes>,
    pub units: Section<Units>,
    pub journal: Section<JournalSummary>,
    pub nix: Section<NixInfo>,
    pub hardware: Section<Hardware>,
    /// Established TCP connections and listening ports: what the fleet map's observed relations
    /// are made of. Not a health section (not in [`SECTION_NAMES`]): a host that does not report
    /// it (an older `macha probe`) is not less visible for it.
    #[serde(default = "connections_not_reported")]
    pub connections: Section<Connections>,
}

fn connections_not_reported() -> Section<Connections> {
    Section::unavailable("not reported by this host")
}

impl Snapshot {
    /// A snapshot where every section is unavailable for the same reason (e.g. a host that did not
    /// answer).
    pub fn all_unavailable(host: HostName, taken_at: Timestamp, reason: &str) -> Snapshot {
        Snapshot {
            host,
            taken_at,
            collect_micros: 0,
            timed_out: 0,
            cpu: Section::unavailable(reason),
            memory: Section::unavailable(reason),
            load: Section::unavailable(reason),
            pressure: Section::unavailable(reason),
            filesystems: Section::unavailable(reason),
            network: Section::unavailable(reason),
            processes: Section::unavailable(reason),
            units: Section::unavailable(reason),
            journal: Section::unavailable(reason),
            nix: Section::unavailable(reason),
            hardware: Section::unavailable(reason),
            connections: Section::unavailable(reason),
        }
    }

    /// `(section name, unavailable reason)` for every section that is missing.
    pub fn unavailable_sections(&self) -> Vec<(&'static str, &str)> {
        let all: [(&'static str, Option<&str>); 11] = [
            ("cpu", self.cpu.unavailable_reason()),
            ("memory", self.memory.unavailable_reason()),
            ("load", self.load.unavailable_reason()),
            ("pressure", self.pressure.unavailable_reason()),
            ("filesystems", self.filesystems.unavailable_reason()),
            ("network", self.network.unavailable_reason()),
            ("processes", self.processes.unavailable_reason()),
            ("units", self.units.unavailable_reason()),
            ("journal", self.journal.unavailable_reason()),
            ("nix", self.nix.unavailable_reason()),
            ("hardware", self.hardware.unavailable_reason()),
        ];
        all.into_iter().filter_map(|(n, r)| r.map(|r| (n, r))).collect()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Cumulative CPU time counters from `/proc/stat`, in clock ticks. Usage is the delta between two
/// of these; the observer keeps the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuTicks {
    pub busy: u64,
    pub idle: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub logical_cpus: u32,
    /// Busy share of all CPUs between the previous tick and this one, 0-100. `None` on the very
    /// first observation, when there is no previous tick to compare with (never reported as 0).
    pub usage_percent: Option<f64>,
    /// The window `usage_percent` covers, in milliseconds.
    pub window_ms: Option<u64>,
    pub ticks: CpuTicks,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub runnable: u32,
    pub processes: u32,
}

/// Pressure-stall information: share of time (0-100) some / all tasks were stalled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PressureLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    pub cpu_some: PressureLine,
    pub memory_some: PressureLine,
    pub memory_full: PressureLine,
    pub io_some: PressureLine,
    pub io_full: PressureLine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filesystem {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// Space in use (`f_blocks - f_bfree`): what `df` calls Used. `None` from an observer that
    /// did not report it (older probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub read_only: bool,
}

impl Filesystem {
    /// Used share of the space an unprivileged user can use, 0-100, as `df` reports it:
    /// used / (used + available), so blocks reserved for root count as neither. Without a used
    /// figure, the share of the total that is not available (which counts the reserve as used).
    pub fn used_percent(&self) -> Option<f64> {
        match self.used_bytes {
            Some(used) if used.saturating_add(self.available_bytes) > 0 => {
                Some(100.0 * used as f64 / (used.saturating_add(self.available_bytes)) as f64)
            }
            _ => (self.total_bytes > 0).then(|| 100.0 * (1.0 - self.available_bytes as f64 / self.total_bytes as f64)),
        }
    }
    /// Used share of inodes, 0-100; `None` for filesystems without a fixed inode table (btrfs, …).
    pub fn inodes_used_percent(&self) -> Option<f64> {
        (self.total_inodes > 0).then(|| 100.0 * (1.0 - self.free_inodes as f64 / self.total_inodes as f64))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetInterface {
    pub name: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// Which side opened a connection, as this host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This host connected to the peer's `port`.
    Outbound,
    /// The peer connected to this host's `port` (one it listens on).
    Inbound,
}

/// Established TCP connections with one peer on one server port, in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConnections {
    pub peer: std::net::IpAddr,
    /// The server side's port: the peer's for outbound connections, this host's for inbound ones.
    pub port: u16,
    pub direction: Direction,
    pub count: u32,
}

/// The TCP picture of a host (`/proc/net/tcp` and `tcp6`): loopback and unspecified peers left
/// out, bounded lists, exact totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connections {
    /// Ports listened on (sorted, deduplicated, at most `macha_parse` lists).
    pub listening: Vec<u16>,
    /// Established connections grouped by peer, port and direction (the largest groups first).
    pub peers: Vec<PeerConnections>,
    /// Established connections seen, listed or not.
    pub established: u32,
    /// Established connections in groups beyond the listed ones.
    #[serde(default)]
    pub unlisted: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub name: String,
    pub rss_bytes: u64,
    /// CPU share of one core between the previous observation and this one; `None` without one.
    pub cpu_percent: Option<f64>,
    /// Total CPU time since the process started, in milliseconds.
    pub cpu_time_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processes {
    pub total: u32,
    pub top_cpu: Vec<ProcessInfo>,
    pub top_rss: Vec<ProcessInfo>,
}

/// One systemd unit as the manager reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitState {
    pub name: String,
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// `Result` of a service (`success`, `exit-code`, …); `None` for non-service units.
    pub result: Option<String>,
    /// `NRestarts` of a service; `None` for non-service units.
    pub n_restarts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Units {
    /// `running`, `degraded`, … as `Manager.SystemState` says.
    pub system_state: String,
    pub total: u32,
    /// Every unit in `failed`, plus every service with a non-zero `NRestarts`, with full state.
    pub notable: Vec<UnitState>,
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitErrorCount {
    pub unit: String,
    pub errors: u32,
}

/// Error-level journal entries (priority ≤ 3) in the recent window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalSummary {
    pub window_secs: u64,
    pub errors_total: u32,
    /// Per-unit counts, largest first.
    pub by_unit: Vec<UnitErrorCount>,
    /// A few recent error messages (sanitised, truncated), for context.
    pub samples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u32,
    pub path: String,
    /// Modification time of the generation link, in milliseconds since the epoch.
    pub created_at: Option<Timestamp>,
    pub current: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NixInfo {
    /// Target of `/run/current-system`.
    pub current_system: String,
    pub generations: Vec<Generation>,
    /// The filesystem holding `/nix/store` (statvfs, never `du`).
    pub store_total_bytes: u64,
    pub store_available_bytes: u64,
}

impl NixInfo {
    pub fn store_used_bytes(&self) -> u64 {
        self.store_total_bytes.saturating_sub(self.store_available_bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// `amdgpu`, `nvidia`, `i915`, …
    pub driver: String,
    pub pci_slot: String,
    pub vendor_id: String,
    pub device_id: String,
    pub temperature_celsius: Option<f64>,
    pub utilisation_percent: Option<f64>,
    pub vram_total_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsbDevice {
    pub bus_path: String,
    pub vendor_id: String,
    pub product_id: String,
    pub product: Option<String>,
    pub manufacturer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    pub size_bytes: u64,
    pub rotational: Option<bool>,
    pub removable: bool,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu_model: String,
    pub physical_cores: u32,
    pub logical_cpus: u32,
    pub gpus: Vec<Gpu>,
    /// Why GPU data is incomplete (e.g. "nvidia-smi not installed"), if it is.
    pub gpu_notes: Vec<String>,
    pub usb: Vec<UsbDevice>,
    pub block_devices: Vec<BlockDevice>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_full_is_what_df_says() {
        // 100 GiB filesystem, 80 GiB used, 15 GiB available, 5 GiB reserved for root: df says 85 %
        // (80 / 95), not 85 % of the total counted the other way round.
        let g = 1u64 << 30;
        let fs = Filesystem {
            mount_point: "/".into(),
            device: "/dev/sda1".into(),
            fs_type: "ext4".into(),
            total_bytes: 100 * g,
            available_bytes: 15 * g,
            used_bytes: Some(80 * g),
            total_inodes: 0,
            free_inodes: 0,
            read_only: false,
        };
        let p = fs.used_percent().unwrap_or_default();
        assert!((p - 84.21).abs() < 0.01, "{p}");
        // A nearly empty filesystem with a large reserve is nearly empty, as df says.
        let fresh = Filesystem { used_bytes: Some(g), available_bytes: 94 * g, ..fs.clone() };
        assert!(fresh.used_percent().unwrap_or_default() < 1.1);
        // Without a used figure (an older probe): the old estimate.
        let old = Filesystem { used_bytes: None, ..fs };
        assert!((old.used_percent().unwrap_or_default() - 85.0).abs() < 0.01);
    }

    #[test]
    fn section_names_match_the_fields() {
        let snap = Snapshot::all_unavailable(HostName::local(), Timestamp(0), "x");
        let names: Vec<&str> = snap.unavailable_sections().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, SECTION_NAMES);
        let json = serde_json::to_value(&snap).unwrap_or_default();
        for name in SECTION_NAMES {
            assert_eq!(json[name]["status"], "unavailable", "{name}");
        }
    }
}
