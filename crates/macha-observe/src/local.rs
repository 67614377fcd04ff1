//! [`LocalObserver`]: the snapshot of the machine it runs on, from `/proc`, `/sys` and the Nix
//! profile links.
//!
//! Rates (CPU usage, per-process CPU) come from the difference between two calls: the observer
//! keeps the previous counters, so it never sleeps to sample. The first call has nothing to compare
//! with and reports those rates as `None`, never as 0. A one-shot command can carry the CPU counters
//! from one run to the next with [`ObserveConfig::previous_cpu`] and [`LocalObserver::cpu_sample`].
//!
//! Everything here is blocking file IO (plus, on NVIDIA hosts, one bounded `nvidia-smi` run); the
//! daemon calls it on a blocking thread. Each section that cannot be read becomes
//! `Section::Unavailable` with the path and the OS error, and the other sections are unaffected.

use crate::error::ObserveError;
use crate::fs::read_filesystems;
use crate::nixinfo::{NixPaths, read_nix_info};
use crate::nvidia::{self, NVIDIA_SMI_TIMEOUT, NvidiaReading, NvidiaSmiError};
use crate::procfs;
use crate::sysfs::{
    self, CpuInventory, GpuDevice, read_block_devices, read_cpu_inventory, read_gpus, read_usb_devices,
};
use macha_core::snapshot::{
    BlockDevice, Cpu, CpuTicks, Filesystem, Gpu, Hardware, Load, Memory, NetInterface, NixInfo, Pressure, ProcessInfo,
    Processes, Section, Snapshot, UsbDevice,
};
use macha_core::{HostName, Timestamp};
use macha_parse::mounts::{
    DEFAULT_EXCLUDED_MOUNT_PREFIXES, DEFAULT_NETWORK_FS_TYPES, DEFAULT_PSEUDO_FS_TYPES, MountFilter, SkippedMount,
};
use macha_parse::procfs::PidStat;
use nix::unistd::{SysconfVar, sysconf};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The reason given for the sections another module fills (`units`, `journal`).
pub const NOT_COLLECTED: &str = "not collected by the local observer";

/// Where to look and what to report. [`ObserveConfig::system`] is the real machine; tests point
/// the roots at fixture trees.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveConfig {
    /// Normally `/proc`.
    pub proc_root: PathBuf,
    /// Normally `/sys`.
    pub sys_root: PathBuf,
    pub nix: NixPaths,
    /// How many processes to list by CPU and by memory.
    pub top_n: usize,
    /// Filesystem types never reported (see [`DEFAULT_PSEUDO_FS_TYPES`]).
    pub pseudo_fs_types: Vec<String>,
    /// Filesystem types never `statvfs`'d, because a dead server makes the call hang; reported by
    /// [`LocalObserver::skipped_mounts`] (see [`DEFAULT_NETWORK_FS_TYPES`]).
    pub network_fs_types: Vec<String>,
    /// Mount points under these prefixes are never reported (see
    /// [`DEFAULT_EXCLUDED_MOUNT_PREFIXES`]).
    pub excluded_mount_prefixes: Vec<String>,
    /// CPU counters from an earlier run, so that even the first [`LocalObserver::cpu`] call can
    /// report usage.
    pub previous_cpu: Option<CpuSample>,
    /// The hardware inventory (CPU model, GPUs, USB and block devices) is re-read every this many
    /// [`LocalObserver::hardware`] calls (0 or 1: every call), or after
    /// [`LocalObserver::refresh_hardware`]. GPU temperature, utilisation and VRAM are re-read on
    /// every call regardless.
    pub hardware_refresh_every: u32,
    /// Directories searched for `nvidia-smi`. Only absolute ones are used.
    pub nvidia_smi_dirs: Vec<PathBuf>,
}

impl ObserveConfig {
    /// The real machine: `/proc`, `/sys`, the standard Nix paths, top 5 processes, the default
    /// filesystem exclusions, hardware inventory re-read every 10 calls, and `nvidia-smi` looked up
    /// in `$PATH` then in `/run/current-system/sw/bin` (where NixOS installs it, and which a
    /// service's `PATH` often lacks).
    pub fn system() -> ObserveConfig {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let mut nvidia_smi_dirs: Vec<PathBuf> =
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
        nvidia_smi_dirs.push(PathBuf::from("/run/current-system/sw/bin"));
        ObserveConfig {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            nix: NixPaths::system(),
            top_n: 5,
            pseudo_fs_types: strings(DEFAULT_PSEUDO_FS_TYPES),
            network_fs_types: strings(DEFAULT_NETWORK_FS_TYPES),
            excluded_mount_prefixes: strings(DEFAULT_EXCLUDED_MOUNT_PREFIXES),
            previous_cpu: None,
            hardware_refresh_every: 10,
            nvidia_smi_dirs,
        }
    }
}

impl Default for ObserveConfig {
    /// Same as [`ObserveConfig::system`].
    fn default() -> Self {
        ObserveConfig::system()
    }
}

/// CPU counters and when they were read: what a rate is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub ticks: CpuTicks,
    pub at: Timestamp,
}

impl CpuSample {
    /// The counters a snapshot carries, for seeding the next run of a one-shot command.
    pub fn from_snapshot(snapshot: &Snapshot) -> Option<CpuSample> {
        snapshot.cpu.data().map(|cpu| CpuSample { ticks: cpu.ticks, at: snapshot.taken_at })
    }
}

/// Busy share between two samples, 0-100, and the window in ms. `None` usage when the counters went
/// backwards (a reboot since `previous`) or no tick elapsed.
fn cpu_usage(previous: CpuSample, current: CpuSample) -> (Option<f64>, Option<u64>) {
    let total = |t: CpuTicks| t.busy.saturating_add(t.idle);
    let (Some(busy), Some(all)) =
        (current.ticks.busy.checked_sub(previous.ticks.busy), total(current.ticks).checked_sub(total(previous.ticks)))
    else {
        return (None, None);
    };
    if all == 0 {
        return (None, None);
    }
    // `idle` includes iowait, which the kernel may report slightly decreasing; clamp.
    let usage = (100.0 * busy as f64 / all as f64).clamp(0.0, 100.0);
    let window = (current.at >= previous.at)
        .then(|| u64::try_from(current.at.since(previous.at).as_millis()).unwrap_or(u64::MAX));
    (Some(usage), window)
}

/// Puts `nvidia-smi`'s figures on the GPUs they belong to (matched by PCI slot). A GPU with no DRM
/// card (`nvidia-drm` not loaded) is added, identified from `<sys_root>/bus/pci/devices/<slot>`.
fn merge_nvidia_readings(gpus: &mut Vec<Gpu>, readings: Vec<NvidiaReading>, sys_root: &Path) {
    for reading in readings {
        let index = match gpus.iter().position(|g| g.pci_slot == reading.pci_slot) {
            Some(i) => i,
            None => {
                let pci = sys_root.join("bus/pci/devices").join(&reading.pci_slot);
                let id = |name: &str| {
                    std::fs::read_to_string(pci.join(name))
                        .map(|s| macha_parse::cpuinfo::normalise_hex_id(&s))
                        .unwrap_or_default()
                };
                gpus.push(Gpu {
                    driver: "nvidia".to_owned(),
                    pci_slot: reading.pci_slot.clone(),
                    vendor_id: id("vendor"),
                    device_id: id("device"),
                    temperature_celsius: None,
                    utilisation_percent: None,
                    vram_total_bytes: None,
                    vram_used_bytes: None,
                });
                gpus.len() - 1
            }
        };
        let gpu = &mut gpus[index];
        gpu.temperature_celsius = reading.temperature_celsius;
        gpu.utilisation_percent = reading.utilisation_percent;
        gpu.vram_total_bytes = reading.vram_total_bytes;
        gpu.vram_used_bytes = reading.vram_used_bytes;
    }
}

/// Per-process CPU counters from the previous [`LocalObserver::processes`] call, keyed by pid and
/// start time so a reused pid is a new process.
#[derive(Debug, Clone)]
struct ProcessSample {
    at: Timestamp,
    ticks: HashMap<(i32, u64), u64>,
}

/// The slow-changing part of [`Hardware`].
#[derive(Debug, Clone)]
struct Inventory {
    cpu: CpuInventory,
    gpus: Vec<GpuDevice>,
    usb: Vec<UsbDevice>,
    block_devices: Vec<BlockDevice>,
    /// An NVIDIA GPU is present (a DRM card, or the `nvidia` module without one).
    nvidia_present: bool,
    nvidia_smi: Option<PathBuf>,
}

/// Observes the local machine. Holds the previous CPU and per-process counters and the cached
/// hardware inventory, hence `&mut self` on the methods that use them.
#[derive(Debug)]
pub struct LocalObserver {
    config: ObserveConfig,
    ticks_per_second: u64,
    page_size: u64,
    previous_cpu: Option<CpuSample>,
    previous_processes: Option<ProcessSample>,
    inventory: Option<Inventory>,
    hardware_calls_since_refresh: u32,
    skipped_mounts: Vec<SkippedMount>,
}

impl LocalObserver {
    pub fn new(config: ObserveConfig) -> LocalObserver {
        // Neither can fail on Linux; the fallbacks are the values on every common architecture.
        let positive = |v: SysconfVar, fallback: u64| {
            sysconf(v).ok().flatten().and_then(|n| u64::try_from(n).ok()).filter(|&n| n > 0).unwrap_or(fallback)
        };
        LocalObserver {
            ticks_per_second: positive(SysconfVar::CLK_TCK, 100),
            page_size: positive(SysconfVar::PAGE_SIZE, 4096),
            previous_cpu: config.previous_cpu,
            previous_processes: None,
            inventory: None,
            hardware_calls_since_refresh: 0,
            skipped_mounts: Vec::new(),
            config,
        }
    }

    pub fn config(&self) -> &ObserveConfig {
        &self.config
    }

    /// The CPU counters of the last successful [`LocalObserver::cpu`] call (or the seed), to
    /// persist for the next run of a one-shot command.
    pub fn cpu_sample(&self) -> Option<CpuSample> {
        self.previous_cpu
    }

    /// Logical CPUs, cumulative busy/idle ticks, and usage since the previous call.
    pub fn cpu(&mut self, now: Timestamp) -> Section<Cpu> {
        let stat = match procfs::read_stat(&self.config.proc_root) {
            Ok(s) => s,
            Err(e) => return Section::unavailable(e.to_string()),
        };
        let current = CpuSample { ticks: stat.ticks, at: now };
        let (usage_percent, window_ms) = match self.previous_cpu {
            Some(previous) => cpu_usage(previous, current),
            None => (None, None),
        };
        // Keep the older sample when no tick elapsed, so the next call measures a real window.
        let no_tick_elapsed = self.previous_cpu.is_some_and(|p| p.ticks == current.ticks);
        if !no_tick_elapsed {
            self.previous_cpu = Some(current);
        }
        Section::ok(Cpu { logical_cpus: stat.logical_cpus, usage_percent, window_ms, ticks: stat.ticks })
    }

    pub fn memory(&self) -> Section<Memory> {
        Section::from_result(procfs::read_meminfo(&self.config.proc_root))
    }

    pub fn load(&self) -> Section<Load> {
        Section::from_result(procfs::read_loadavg(&self.config.proc_root))
    }

    pub fn pressure(&self) -> Section<Pressure> {
        Section::from_result(procfs::read_pressure(&self.config.proc_root))
    }

    /// Local filesystems with space and inodes. Network mounts and mounts whose `statvfs` failed are
    /// left out and listed by [`LocalObserver::skipped_mounts`].
    pub fn filesystems(&mut self) -> Section<Vec<Filesystem>> {
        let filter = MountFilter {
            pseudo_fs_types: &self.config.pseudo_fs_types,
            network_fs_types: &self.config.network_fs_types,
            excluded_mount_prefixes: &self.config.excluded_mount_prefixes,
        };
        match read_filesystems(&self.config.proc_root, filter) {
            Ok((filesystems, skipped)) => {
                self.skipped_mounts = skipped;
                if filesystems.is_empty() {
                    let skipped: Vec<String> =
                        self.skipped_mounts.iter().map(|s| format!("{}: {}", s.mount_point, s.reason)).collect();
                    return Section::unavailable(format!(
                        "no local filesystem to report in the mount table of {}{}",
                        self.config.proc_root.display(),
                        if skipped.is_empty() { String::new() } else { format!(" (skipped: {})", skipped.join("; ")) }
                    ));
                }
                Section::ok(filesystems)
            }
            Err(e) => {
                self.skipped_mounts.clear();
                Section::unavailable(e.to_string())
            }
        }
    }

    /// Mounts the last [`LocalObserver::filesystems`] call left out (network filesystems, failed
    /// `statvfs`), with the reason.
    pub fn skipped_mounts(&self) -> &[SkippedMount] {
        &self.skipped_mounts
    }

    pub fn network(&self) -> Section<Vec<NetInterface>> {
        Section::from_result(procfs::read_net_dev(&self.config.proc_root))
    }

    /// Takes the first sample of CPU and per-process times for a one-shot observation (a
    /// standalone `macha check`, `macha probe`) that has no earlier one: a [`collect`] some time
    /// later reports CPU and per-process CPU % over that window instead of nothing. A CPU sample
    /// carried over with [`ObserveConfig::previous_cpu`] is kept.
    ///
    /// [`collect`]: LocalObserver::collect
    pub fn prime(&mut self, now: Timestamp) {
        if self.previous_cpu.is_none() {
            let _ = self.cpu(now);
        }
        let _ = self.processes(now);
    }

    /// Process count and the top processes by CPU and by resident memory, from one read of
    /// `/proc/<pid>/stat` per process.
    ///
    /// `cpu_percent` is the share of one core since the previous call (a process born since then
    /// is charged all its CPU time). On the first call it is `None` and `top_cpu` is ordered by
    /// total CPU time since each process started instead.
    pub fn processes(&mut self, now: Timestamp) -> Section<Processes> {
        let stats = match procfs::scan_processes(&self.config.proc_root) {
            Ok(s) => s,
            Err(e) => return Section::unavailable(e.to_string()),
        };
        let window_secs =
            self.previous_processes.as_ref().filter(|p| now > p.at).map(|p| now.since(p.at).as_secs_f64());
        let tps = self.ticks_per_second as f64;
        let cpu_percent: Vec<Option<f64>> = stats
            .iter()
            .map(|s| {
                let (previous, window) = (self.previous_processes.as_ref()?, window_secs?);
                let before = previous.ticks.get(&(s.pid, s.start_time)).copied().unwrap_or(0);
                Some(s.cpu_ticks.saturating_sub(before) as f64 / tps / window * 100.0)
            })
            .collect();

        let info = |i: usize| -> ProcessInfo {
            let s: &PidStat = &stats[i];
            ProcessInfo {
                pid: s.pid,
                name: s.comm.clone(),
                rss_bytes: s.rss_pages.saturating_mul(self.page_size),
                cpu_percent: cpu_percent[i],
                cpu_time_ms: s.cpu_ticks.saturating_mul(1000) / self.ticks_per_second,
            }
        };
        let top_n = self.config.top_n;
        let mut order: Vec<usize> = (0..stats.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            let by_rate = cpu_percent[b].unwrap_or(0.0).total_cmp(&cpu_percent[a].unwrap_or(0.0));
            by_rate.then(stats[b].cpu_ticks.cmp(&stats[a].cpu_ticks))
        });
        let top_cpu: Vec<ProcessInfo> = order.iter().take(top_n).map(|&i| info(i)).collect();
        order.sort_unstable_by(|&a, &b| stats[b].rss_pages.cmp(&stats[a].rss_pages));
        let top_rss: Vec<ProcessInfo> = order.iter().take(top_n).map(|&i| info(i)).collect();
        let total = u32::try_from(stats.len()).unwrap_or(u32::MAX);

        // With no measurable window (same millisecond, or the clock went back), keep the older
        // sample so the next call has one.
        if self.previous_processes.is_none() || window_secs.is_some() {
            self.previous_processes = Some(ProcessSample {
                at: now,
                ticks: stats.iter().map(|s| ((s.pid, s.start_time), s.cpu_ticks)).collect(),
            });
        }
        Section::ok(Processes { total, top_cpu, top_rss })
    }

    pub fn nix(&self) -> Section<NixInfo> {
        Section::from_result(read_nix_info(&self.config.nix))
    }

    /// Makes the next [`LocalObserver::hardware`] call re-read the inventory.
    pub fn refresh_hardware(&mut self) {
        self.inventory = None;
    }

    fn read_inventory(&self) -> Result<Inventory, ObserveError> {
        let (proc_root, sys_root) = (&self.config.proc_root, &self.config.sys_root);
        let gpus = read_gpus(sys_root)?;
        let nvidia_present = gpus.iter().any(GpuDevice::is_nvidia) || sys_root.join("module/nvidia").exists();
        Ok(Inventory {
            cpu: read_cpu_inventory(proc_root, sys_root)?,
            nvidia_smi: if nvidia_present { nvidia::find_nvidia_smi(&self.config.nvidia_smi_dirs) } else { None },
            nvidia_present,
            gpus,
            usb: read_usb_devices(sys_root)?,
            block_devices: read_block_devices(sys_root)?,
        })
    }

    /// CPU model and topology, GPUs with live figures, USB and block devices. The inventory is
    /// cached (see [`ObserveConfig::hardware_refresh_every`]); GPU figures are read on every call.
    ///
    /// On a host with an NVIDIA GPU that means one `nvidia-smi` run per call: typically tens of
    /// milliseconds, more without the persistence daemon, and never more than
    /// [`NVIDIA_SMI_TIMEOUT`]. Its failure or absence is a `gpu_notes` entry, not a failed section.
    pub fn hardware(&mut self) -> Section<Hardware> {
        let every = self.config.hardware_refresh_every.max(1);
        if self.inventory.is_none() || self.hardware_calls_since_refresh >= every {
            match self.read_inventory() {
                Ok(inventory) => {
                    self.inventory = Some(inventory);
                    self.hardware_calls_since_refresh = 0;
                }
                Err(e) => {
                    self.inventory = None;
                    return Section::unavailable(e.to_string());
                }
            }
        }
        self.hardware_calls_since_refresh = self.hardware_calls_since_refresh.saturating_add(1);
        let Some(inventory) = self.inventory.as_ref() else {
            return Section::unavailable("hardware inventory missing after a successful read");
        };

        let mut gpu_notes = Vec::new();
        let mut gpus: Vec<Gpu> = Vec::with_capacity(inventory.gpus.len());
        for device in &inventory.gpus {
            if device.runtime_suspended() {
                gpu_notes.push(format!(
                    "GPU {} is runtime-suspended; its sensors were not read so as not to wake it",
                    device.gpu.pci_slot
                ));
                gpus.push(device.gpu.clone());
            } else if device.is_nvidia() {
                // The proprietary driver has no sysfs figures; nvidia-smi fills them below.
                gpus.push(device.gpu.clone());
            } else {
                gpus.push(sysfs::read_gpu_metrics(device));
            }
        }
        if inventory.nvidia_present {
            let nvidia_devices: Vec<&GpuDevice> = inventory.gpus.iter().filter(|d| d.is_nvidia()).collect();
            let all_asleep = !nvidia_devices.is_empty() && nvidia_devices.iter().all(|d| d.runtime_suspended());
            match &inventory.nvidia_smi {
                None => gpu_notes.push(NvidiaSmiError::NotInstalled.to_string()),
                Some(_) if all_asleep => {}
                Some(path) => match nvidia::query(path, NVIDIA_SMI_TIMEOUT) {
                    Ok(readings) => merge_nvidia_readings(&mut gpus, readings, &self.config.sys_root),
                    Err(e) => gpu_notes.push(e.to_string()),
                },
            }
        }
        Section::ok(Hardware {
            cpu_model: inventory.cpu.model.clone(),
            physical_cores: inventory.cpu.physical_cores,
            logical_cpus: inventory.cpu.logical_cpus,
            gpus,
            gpu_notes,
            usb: inventory.usb.clone(),
            block_devices: inventory.block_devices.clone(),
        })
    }

    /// Every section this observer fills; `units` and `journal` are left to the systemd module.
    /// `collect_micros` is the time spent here.
    pub fn collect(&mut self, host: HostName, now: Timestamp) -> Snapshot {
        let started = Instant::now();
        let cpu = self.cpu(now);
        let memory = self.memory();
        let load = self.load();
        let pressure = self.pressure();
        let filesystems = self.filesystems();
        let network = self.network();
        let processes = self.processes(now);
        let nix = self.nix();
        let hardware = self.hardware();
        let connections = Section::from_result(procfs::read_connections(&self.config.proc_root));
        Snapshot {
            host,
            taken_at: now,
            collect_micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            timed_out: 0,
            cpu,
            memory,
            load,
            pressure,
            filesystems,
            network,
            processes,
            units: Section::unavailable(NOT_COLLECTED),
            journal: Section::unavailable(NOT_COLLECTED),
            nix,
            hardware,
            connections,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(busy: u64, idle: u64, at: i64) -> CpuSample {
        CpuSample { ticks: CpuTicks { busy, idle }, at: Timestamp(at) }
    }

    #[test]
    fn usage_from_deltas() {
        let (usage, window) = cpu_usage(sample(100, 900, 0), sample(130, 970, 1000));
        assert_eq!(usage, Some(30.0));
        assert_eq!(window, Some(1000));
    }

    #[test]
    fn counters_going_back_mean_no_usage() {
        assert_eq!(cpu_usage(sample(100, 900, 0), sample(50, 950, 1000)), (None, None));
        assert_eq!(cpu_usage(sample(100, 900, 0), sample(100, 900, 1000)), (None, None));
    }

    #[test]
    fn shrinking_iowait_is_clamped() {
        // Idle went down by 5 while busy went up by 10: usage is capped at 100, never above.
        let (usage, _) = cpu_usage(sample(100, 900, 0), sample(110, 895, 1000));
        assert_eq!(usage, Some(100.0));
    }

    #[test]
    fn clock_going_back_keeps_usage_but_no_window() {
        let (usage, window) = cpu_usage(sample(100, 900, 5000), sample(150, 950, 1000));
        assert_eq!(usage, Some(50.0));
        assert_eq!(window, None);
    }
}
