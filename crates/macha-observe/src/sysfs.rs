//! Hardware inventory from sysfs (and `/proc/cpuinfo` for the CPU model): CPU topology, GPUs under
//! `class/drm`, USB devices and block devices. All readers take the sysfs root (normally `/sys`).
//!
//! The inventory (what is plugged in) changes rarely and is cached by the observer; GPU live
//! figures (temperature, utilisation, VRAM) are re-read on every call with [`read_gpu_metrics`].
//! A GPU whose runtime power state is `suspended` is left alone: reading its sensors would wake it
//! up, which on a laptop with a discrete GPU costs battery on every observation.

use crate::error::{ObserveError, read_text, read_text_opt};
use macha_core::snapshot::{BlockDevice, Gpu, UsbDevice};
use macha_parse::cpuinfo::{normalise_hex_id, parse_cpu_list, parse_cpuinfo};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// Lists a directory's entries as `(name, path)`, sorted by name with numeric suffixes in numeric
/// order (`card2` before `card10`). A missing directory is an empty list: the hardware is absent.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, ObserveError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ObserveError::read(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ObserveError::read(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    out.sort_by(|(a, _), (b, _)| natural_key(a).cmp(&natural_key(b)));
    Ok(out)
}

fn natural_key(name: &str) -> (&str, u64, &str) {
    let prefix_end = name.find(|c: char| c.is_ascii_digit()).unwrap_or(name.len());
    let (prefix, rest) = name.split_at(prefix_end);
    let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    (prefix, rest[..digits_end].parse().unwrap_or(0), &rest[digits_end..])
}

/// A sysfs attribute, trimmed; `None` if the file does not exist or is empty.
fn attr(path: &Path) -> Result<Option<String>, ObserveError> {
    Ok(read_text_opt(path)?.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
}

/// A sysfs attribute that may fail to read for reasons that only mean "no value" (the driver
/// refuses the read, the device went away): `None` then.
fn soft_attr(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// CPU model and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInventory {
    pub model: String,
    pub physical_cores: u32,
    pub logical_cpus: u32,
}

/// Reads the CPU model from `<proc_root>/cpuinfo`, online CPUs from
/// `<sys_root>/devices/system/cpu/online`, and physical cores as the number of distinct
/// `topology/core_cpus_list` values (one per core, whatever the architecture numbers its cores),
/// falling back to cpuinfo's core ids and then to the logical count.
pub fn read_cpu_inventory(proc_root: &Path, sys_root: &Path) -> Result<CpuInventory, ObserveError> {
    let cpuinfo = parse_cpuinfo(&read_text(&proc_root.join("cpuinfo"))?);
    let cpu_dir = sys_root.join("devices/system/cpu");
    let online_path = cpu_dir.join("online");
    let logical_cpus = match attr(&online_path)? {
        Some(list) => parse_cpu_list(&list).map_err(|e| ObserveError::parse(&online_path, e))?,
        None => cpuinfo.processors,
    };
    let mut core_sets = BTreeSet::new();
    for (name, path) in list_dir(&cpu_dir)? {
        if !name.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let topology = path.join("topology");
        // Offline CPUs have no topology directory.
        if let Some(set) = attr(&topology.join("core_cpus_list"))?.or(attr(&topology.join("thread_siblings_list"))?) {
            core_sets.insert(set);
        }
    }
    let physical_cores = [u32::try_from(core_sets.len()).unwrap_or(u32::MAX), cpuinfo.cores, logical_cpus]
        .into_iter()
        .find(|&n| n > 0)
        .unwrap_or(0);
    Ok(CpuInventory { model: cpuinfo.model.unwrap_or_else(|| "unknown".to_owned()), physical_cores, logical_cpus })
}

/// A GPU found under `class/drm`, with the device directory its live figures are read from.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDevice {
    pub gpu: Gpu,
    pub device_dir: PathBuf,
}

impl GpuDevice {
    /// Driven by NVIDIA's own kernel module (proprietary or open), which `nvidia-smi` talks to.
    /// An NVIDIA card on `nouveau` is not: nouveau exposes its sensors in sysfs like other drivers.
    pub fn is_nvidia(&self) -> bool {
        self.gpu.driver == "nvidia"
    }

    /// The kernel has put the device into runtime suspend (`power/runtime_status`).
    pub fn runtime_suspended(&self) -> bool {
        soft_attr(&self.device_dir.join("power/runtime_status")).as_deref() == Some("suspended")
    }
}

/// Lists `<sys_root>/class/drm/card<N>` (not connectors like `card0-DP-1`, not render nodes) and
/// identifies each card's device from its `uevent` (`DRIVER`, `PCI_ID`, `PCI_SLOT_NAME`), falling
/// back to the `driver` link, the `vendor`/`device` files and the device link's name.
pub fn read_gpus(sys_root: &Path) -> Result<Vec<GpuDevice>, ObserveError> {
    let mut out: Vec<GpuDevice> = Vec::new();
    for (name, path) in list_dir(&sys_root.join("class/drm"))? {
        if !name.strip_prefix("card").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let device_dir = path.join("device");
        if !device_dir.exists() {
            continue;
        }
        let uevent = attr(&device_dir.join("uevent"))?.unwrap_or_default();
        let field = |key: &str| {
            uevent.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).map(str::to_owned)
        };
        let driver = field("DRIVER")
            .or_else(|| {
                std::fs::read_link(device_dir.join("driver"))
                    .ok()
                    .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .unwrap_or_default();
        let pci_id = field("PCI_ID");
        let (pci_vendor, pci_device) = match pci_id.as_deref().and_then(|id| id.split_once(':')) {
            Some((v, d)) => (Some(v.to_owned()), Some(d.to_owned())),
            None => (None, None),
        };
        let vendor_id = match pci_vendor {
            Some(v) => Some(v),
            None => attr(&device_dir.join("vendor"))?,
        }
        .map(|v| normalise_hex_id(&v))
        .unwrap_or_default();
        let device_id = match pci_device {
            Some(d) => Some(d),
            None => attr(&device_dir.join("device"))?,
        }
        .map(|d| normalise_hex_id(&d))
        .unwrap_or_default();
        let pci_slot = field("PCI_SLOT_NAME")
            .or_else(|| {
                std::fs::canonicalize(&device_dir)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            })
            .unwrap_or_default();
        if out.iter().any(|g| !pci_slot.is_empty() && g.gpu.pci_slot == pci_slot) {
            continue;
        }
        out.push(GpuDevice {
            gpu: Gpu {
                driver,
                pci_slot,
                vendor_id,
                device_id,
                temperature_celsius: None,
                utilisation_percent: None,
                vram_total_bytes: None,
                vram_used_bytes: None,
            },
            device_dir,
        });
    }
    Ok(out)
}

/// Re-reads a GPU's live figures from sysfs (amdgpu: `hwmon/hwmon*/temp1_input` in millidegrees,
/// `gpu_busy_percent`, `mem_info_vram_total`, `mem_info_vram_used`). Figures the driver does not
/// offer, or refuses to give, are `None`.
pub fn read_gpu_metrics(device: &GpuDevice) -> Gpu {
    let dir = &device.device_dir;
    let number = |p: PathBuf| soft_attr(&p).and_then(|s| s.parse::<u64>().ok());
    let temperature_celsius = std::fs::read_dir(dir.join("hwmon"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|hwmon| soft_attr(&hwmon.path().join("temp1_input")))
        .find_map(|s| s.parse::<i64>().ok())
        .map(|milli| milli as f64 / 1000.0);
    Gpu {
        temperature_celsius,
        utilisation_percent: number(dir.join("gpu_busy_percent")).map(|p| p as f64),
        vram_total_bytes: number(dir.join("mem_info_vram_total")),
        vram_used_bytes: number(dir.join("mem_info_vram_used")),
        ..device.gpu.clone()
    }
}

/// Lists `<sys_root>/bus/usb/devices`: devices only (not interfaces such as `1-1:1.0`, not the
/// `usbN` root hubs).
pub fn read_usb_devices(sys_root: &Path) -> Result<Vec<UsbDevice>, ObserveError> {
    let mut out = Vec::new();
    for (name, path) in list_dir(&sys_root.join("bus/usb/devices"))? {
        if name.contains(':') || name.starts_with("usb") {
            continue;
        }
        // Soft reads: a device unplugged mid-scan is simply no longer there.
        let (Some(vendor_id), Some(product_id)) =
            (soft_attr(&path.join("idVendor")), soft_attr(&path.join("idProduct")))
        else {
            continue;
        };
        out.push(UsbDevice {
            bus_path: name,
            vendor_id: normalise_hex_id(&vendor_id),
            product_id: normalise_hex_id(&product_id),
            product: soft_attr(&path.join("product")),
            manufacturer: soft_attr(&path.join("manufacturer")),
        });
    }
    Ok(out)
}

/// Lists `<sys_root>/block`: size (`size` counts 512-byte sectors whatever the device's block
/// size), `queue/rotational`, `removable`, `device/model`. Unused loop, ram and nbd devices (size 0)
/// are left out.
pub fn read_block_devices(sys_root: &Path) -> Result<Vec<BlockDevice>, ObserveError> {
    let mut out = Vec::new();
    for (name, path) in list_dir(&sys_root.join("block"))? {
        let size_path = path.join("size");
        // A device removed mid-scan (USB stick) has no size any more and is left out.
        let Some(size) = soft_attr(&size_path) else { continue };
        let sectors = size.parse::<u64>().map_err(|e| ObserveError::parse(&size_path, format!("{size:?}: {e}")))?;
        if sectors == 0 && ["loop", "ram", "nbd"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        out.push(BlockDevice {
            size_bytes: sectors.saturating_mul(512),
            rotational: soft_attr(&path.join("queue/rotational")).map(|v| v == "1"),
            removable: soft_attr(&path.join("removable")).is_some_and(|v| v == "1"),
            model: soft_attr(&path.join("device/model")),
            name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec!["card10", "card2", "card1", "card1-DP-1"];
        names.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(names, ["card1", "card1-DP-1", "card2", "card10"]);
    }
}
