//! The local observer against fixture trees: a sysfs with an AMD GPU, one with NVIDIA GPUs and a
//! stand-in `nvidia-smi`, proc roots built per test, and Nix profile links.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use macha_core::Timestamp;
use macha_core::snapshot::CpuTicks;
use macha_observe::nixinfo::NixPaths;
use macha_observe::{CpuSample, LocalObserver, ObserveConfig};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Writes `files` (relative path, content) under a fresh directory.
fn tree(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// A writable copy of a fixture tree, plus `extra` files. Sysfs names with ':' (USB interfaces,
/// PCI slots) are added this way because a published crate may not contain such file names.
fn fixture_copy(name: &str, extra: &[(&str, &str)]) -> TempDir {
    let dir = tree(extra);
    copy_tree(&fixture(name), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const CPUINFO: &str = "processor\t: 0\nmodel name\t: AMD Ryzen 7 5800X 8-Core Processor\n\n\
                       processor\t: 1\nmodel name\t: AMD Ryzen 7 5800X 8-Core Processor\n";

fn config(proc_root: &Path, sys_root: &Path) -> ObserveConfig {
    ObserveConfig {
        proc_root: proc_root.to_owned(),
        sys_root: sys_root.to_owned(),
        nvidia_smi_dirs: Vec::new(),
        ..ObserveConfig::system()
    }
}

#[test]
fn amdgpu_sysfs_tree() {
    let proc_root = tree(&[("cpuinfo", CPUINFO)]);
    let sys = fixture_copy("sysfs-amdgpu", &[("bus/usb/devices/1-1:1.0/bInterfaceClass", "03\n")]);
    let mut observer = LocalObserver::new(config(proc_root.path(), sys.path()));
    let hardware = observer.hardware();
    let hw = hardware.data().expect("hardware");

    assert_eq!(hw.cpu_model, "AMD Ryzen 7 5800X 8-Core Processor");
    assert_eq!((hw.logical_cpus, hw.physical_cores), (4, 2));

    assert_eq!(hw.gpus.len(), 2, "card0 and card1; the connector card0-DP-1 is not a GPU");
    let gpu = &hw.gpus[0];
    assert_eq!(gpu.driver, "amdgpu");
    assert_eq!(gpu.pci_slot, "0000:03:00.0");
    assert_eq!((gpu.vendor_id.as_str(), gpu.device_id.as_str()), ("1002", "73bf"));
    assert_eq!(gpu.temperature_celsius, Some(45.0));
    assert_eq!(gpu.utilisation_percent, Some(7.0));
    assert_eq!(gpu.vram_total_bytes, Some(17_163_091_968));
    assert_eq!(gpu.vram_used_bytes, Some(1_073_741_824));

    // The sleeping dGPU is listed but its sensors are not read.
    let asleep = &hw.gpus[1];
    assert_eq!(asleep.pci_slot, "0000:07:00.0");
    assert_eq!((asleep.temperature_celsius, asleep.utilisation_percent), (None, None));
    assert_eq!(hw.gpu_notes.len(), 1);
    assert!(hw.gpu_notes[0].contains("0000:07:00.0 is runtime-suspended"), "{:?}", hw.gpu_notes);

    let usb: Vec<(&str, &str, &str)> =
        hw.usb.iter().map(|u| (u.bus_path.as_str(), u.vendor_id.as_str(), u.product_id.as_str())).collect();
    assert_eq!(usb, [("1-1", "046d", "c52b"), ("1-2", "0bda", "8153")], "no root hub, no interface");
    assert_eq!(hw.usb[0].product.as_deref(), Some("USB Receiver"));
    assert_eq!(hw.usb[0].manufacturer.as_deref(), Some("Logitech"));
    assert_eq!(hw.usb[1].product, None);

    let names: Vec<&str> = hw.block_devices.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["nvme0n1", "sda"], "the unused loop device is left out");
    let nvme = &hw.block_devices[0];
    assert_eq!(nvme.size_bytes, 1_953_525_168 * 512);
    assert_eq!(nvme.rotational, Some(false));
    assert!(!nvme.removable);
    assert_eq!(nvme.model.as_deref(), Some("Samsung SSD 980 PRO 1TB"));
    assert_eq!(hw.block_devices[1].rotational, Some(true));
}

#[test]
fn hardware_inventory_is_cached_until_refreshed() {
    let proc_root = tree(&[("cpuinfo", CPUINFO)]);
    let sys = fixture_copy("sysfs-amdgpu", &[]);
    let config = ObserveConfig { hardware_refresh_every: 3, ..config(proc_root.path(), sys.path()) };
    let mut observer = LocalObserver::new(config);
    let usb_count = |o: &mut LocalObserver| o.hardware().data().expect("hardware").usb.len();
    assert_eq!(usb_count(&mut observer), 2);

    let new_device = sys.path().join("bus/usb/devices/1-3");
    std::fs::create_dir_all(&new_device).unwrap();
    std::fs::write(new_device.join("idVendor"), "1050\n").unwrap();
    std::fs::write(new_device.join("idProduct"), "0407\n").unwrap();
    // GPU figures are live even while the inventory is cached.
    std::fs::write(sys.path().join("class/drm/card0/device/gpu_busy_percent"), "93\n").unwrap();

    let hw = observer.hardware();
    let hw = hw.data().unwrap();
    assert_eq!(hw.usb.len(), 2, "cached inventory");
    assert_eq!(hw.gpus[0].utilisation_percent, Some(93.0));
    assert_eq!(usb_count(&mut observer), 2);
    assert_eq!(usb_count(&mut observer), 3, "re-read on the 4th call");

    std::fs::remove_dir_all(&new_device).unwrap();
    assert_eq!(usb_count(&mut observer), 3, "cached again");
    observer.refresh_hardware();
    assert_eq!(usb_count(&mut observer), 2, "re-read on request");
}

fn fake_nvidia_smi(dir: &Path, script: &str) {
    let path = dir.join("nvidia-smi");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn nvidia_without_nvidia_smi_is_noted() {
    let proc_root = tree(&[("cpuinfo", CPUINFO)]);
    let mut observer = LocalObserver::new(config(proc_root.path(), &fixture("sysfs-nvidia")));
    let hardware = observer.hardware();
    let hw = hardware.data().expect("hardware");
    assert_eq!(hw.gpu_notes, ["nvidia-smi not installed"]);
    assert_eq!(hw.gpus.len(), 1);
    assert_eq!((hw.gpus[0].driver.as_str(), hw.gpus[0].vendor_id.as_str()), ("nvidia", "10de"));
    assert_eq!(hw.gpus[0].temperature_celsius, None);
}

#[test]
fn nvidia_smi_figures_are_matched_by_bus_id() {
    let proc_root = tree(&[("cpuinfo", CPUINFO)]);
    let bin = tempfile::tempdir().unwrap();
    // Prints its argv to a file so the test can check no shell quoting was involved.
    let argv_file = bin.path().join("argv");
    fake_nvidia_smi(
        bin.path(),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n\
             echo '00000000:01:00.0, 61, 87, 24576, 20480'\n\
             echo '00000000:02:00.0, [N/A], [N/A], 4096, 12'\n",
            argv_file.display()
        ),
    );
    let sys = fixture_copy(
        "sysfs-nvidia",
        &[("bus/pci/devices/0000:02:00.0/vendor", "0x10de\n"), ("bus/pci/devices/0000:02:00.0/device", "0x1eb8\n")],
    );
    let config = ObserveConfig {
        nvidia_smi_dirs: vec![PathBuf::from("relative/ignored"), bin.path().to_owned()],
        ..config(proc_root.path(), sys.path())
    };
    let mut observer = LocalObserver::new(config);
    let hardware = observer.hardware();
    let hw = hardware.data().expect("hardware");
    assert!(hw.gpu_notes.is_empty(), "{:?}", hw.gpu_notes);
    assert_eq!(hw.gpus.len(), 2);
    let drm = &hw.gpus[0];
    assert_eq!(drm.pci_slot, "0000:01:00.0");
    assert_eq!(drm.temperature_celsius, Some(61.0));
    assert_eq!(drm.utilisation_percent, Some(87.0));
    assert_eq!(drm.vram_total_bytes, Some(24576 * 1024 * 1024));
    assert_eq!(drm.vram_used_bytes, Some(20480 * 1024 * 1024));
    // The second GPU has no DRM card; it is identified from the PCI bus.
    let headless = &hw.gpus[1];
    assert_eq!(headless.pci_slot, "0000:02:00.0");
    assert_eq!((headless.vendor_id.as_str(), headless.device_id.as_str()), ("10de", "1eb8"));
    assert_eq!(headless.temperature_celsius, None);
    assert_eq!(headless.vram_used_bytes, Some(12 * 1024 * 1024));

    let argv = std::fs::read_to_string(argv_file).unwrap();
    assert_eq!(
        argv,
        "--query-gpu=pci.bus_id,temperature.gpu,utilization.gpu,memory.total,memory.used\n\
         --format=csv,noheader,nounits\n"
    );
}

#[test]
fn nvidia_smi_failure_and_timeout_become_notes() {
    let proc_root = tree(&[("cpuinfo", CPUINFO)]);
    let bin = tempfile::tempdir().unwrap();
    let config = ObserveConfig {
        nvidia_smi_dirs: vec![bin.path().to_owned()],
        hardware_refresh_every: 1,
        ..config(proc_root.path(), &fixture("sysfs-nvidia"))
    };

    fake_nvidia_smi(
        bin.path(),
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n",
    );
    let mut observer = LocalObserver::new(config);
    let hw = observer.hardware();
    let notes = &hw.data().expect("hardware").gpu_notes;
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("could not communicate with the NVIDIA driver"), "{notes:?}");
    assert!(notes[0].contains("exit status: 9"), "{notes:?}");

    // A hung nvidia-smi is killed at the deadline instead of stalling observation.
    fake_nvidia_smi(bin.path(), "#!/bin/sh\nexec sleep 30\n");
    let hw = observer.hardware();
    let notes = &hw.data().expect("hardware").gpu_notes;
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("did not finish within 2000 ms and was killed"), "{notes:?}");
}

#[test]
fn missing_pressure_dir_is_unavailable_with_reason() {
    let proc_root = tree(&[("loadavg", "0.50 0.40 0.30 2/300 4242\n")]);
    let observer = LocalObserver::new(config(proc_root.path(), proc_root.path()));
    let pressure = observer.pressure();
    let reason = pressure.unavailable_reason().expect("unavailable");
    assert!(reason.starts_with("PSI not supported by this kernel (CONFIG_PSI)"), "{reason}");
    assert!(reason.contains(&proc_root.path().join("pressure").display().to_string()), "{reason}");

    // Other sections are unaffected; a missing file names its path and the OS error.
    assert_eq!(observer.load().data().map(|l| l.runnable), Some(2));
    let memory = observer.memory();
    let reason = memory.unavailable_reason().expect("no meminfo");
    assert!(reason.contains("meminfo") && reason.contains("No such file or directory"), "{reason}");
}

#[test]
fn pressure_files_are_read() {
    let line = |a: f64| {
        format!("some avg10={a:.2} avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    };
    let proc_root =
        tree(&[("pressure/cpu", &line(12.5)), ("pressure/memory", &line(3.0)), ("pressure/io", &line(40.25))]);
    let observer = LocalObserver::new(config(proc_root.path(), proc_root.path()));
    let pressure = observer.pressure();
    let p = pressure.data().expect("pressure");
    assert_eq!((p.cpu_some.avg10, p.memory_some.avg10, p.io_some.avg10), (12.5, 3.0, 40.25));
}

const STAT_HEADER: &str = "cpu0 1 1 1 1 1 0 0 0 0 0\ncpu1 1 1 1 1 1 0 0 0 0 0\n";

#[test]
fn cpu_seed_gives_usage_on_the_first_call() {
    let proc_root = tree(&[("stat", &format!("cpu  300 0 100 1500 100 0 0 0 0 0\n{STAT_HEADER}"))]);
    let seed = CpuSample { ticks: CpuTicks { busy: 200, idle: 1400 }, at: Timestamp(10_000) };
    let config = ObserveConfig { previous_cpu: Some(seed), ..config(proc_root.path(), proc_root.path()) };
    let mut observer = LocalObserver::new(config);
    let cpu = observer.cpu(Timestamp(12_500));
    let cpu = cpu.data().expect("cpu");
    assert_eq!(cpu.logical_cpus, 2);
    assert_eq!(cpu.ticks, CpuTicks { busy: 400, idle: 1600 });
    assert_eq!(cpu.usage_percent, Some(50.0));
    assert_eq!(cpu.window_ms, Some(2500));

    // A seed from before a reboot (counters now lower) is discarded, not turned into a bogus rate.
    let stale = CpuSample { ticks: CpuTicks { busy: 9_000_000, idle: 9_000_000 }, at: Timestamp(1) };
    let config = ObserveConfig { previous_cpu: Some(stale), ..observer.config().clone() };
    let mut observer = LocalObserver::new(config);
    assert_eq!(observer.cpu(Timestamp(12_500)).data().unwrap().usage_percent, None);
    assert_eq!(observer.cpu_sample().map(|s| s.ticks.busy), Some(400));
}

fn pid_stat(pid: i32, comm: &str, utime: u64, stime: u64, start: u64, rss_pages: u64) -> String {
    format!(
        "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 1000000 {rss_pages} \
         18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
    )
}

#[test]
fn processes_from_deltas_keyed_by_pid_and_start_time() {
    let proc_root = tempfile::tempdir().unwrap();
    let write = |pid: i32, content: &str| {
        let dir = proc_root.path().join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), content).unwrap();
    };
    write(1, &pid_stat(1, "systemd", 500, 500, 10, 3000));
    write(4242, &pid_stat(4242, "tmux: server", 100, 50, 5000, 9000));
    write(777, &pid_stat(777, "a) (b", 0, 0, 7000, 10));
    // A process that vanished between readdir and open, and entries that are not processes.
    std::fs::create_dir_all(proc_root.path().join("999")).unwrap();
    std::fs::create_dir_all(proc_root.path().join("self")).unwrap();
    std::fs::write(proc_root.path().join("uptime"), "1.0 1.0\n").unwrap();

    let config = ObserveConfig { top_n: 2, ..config(proc_root.path(), proc_root.path()) };
    let mut observer = LocalObserver::new(config);
    let first = observer.processes(Timestamp(100_000));
    let first = first.data().expect("processes");
    assert_eq!(first.total, 3);
    let top_cpu: Vec<(i32, Option<f64>, u64)> =
        first.top_cpu.iter().map(|p| (p.pid, p.cpu_percent, p.cpu_time_ms)).collect();
    assert_eq!(top_cpu, [(1, None, 10_000), (4242, None, 1_500)], "first call: by total CPU time");
    let top_rss: Vec<(i32, &str)> = first.top_rss.iter().map(|p| (p.pid, p.name.as_str())).collect();
    assert_eq!(top_rss, [(4242, "tmux: server"), (1, "systemd")]);
    let page = first.top_rss[0].rss_bytes / 9000;
    assert!(page >= 4096 && page.is_power_of_two());

    // Two seconds later: pid 1 used 20 ticks (10 %), tmux 300 ticks (150 %: more than one core),
    // and pid 777 was replaced by a new process with the same pid that used 100 ticks (50 %).
    write(1, &pid_stat(1, "systemd", 510, 510, 10, 3000));
    write(4242, &pid_stat(4242, "tmux: server", 300, 150, 5000, 9000));
    write(777, &pid_stat(777, "worker", 100, 0, 7100, 10));
    let second = observer.processes(Timestamp(102_000));
    let second = second.data().expect("processes");
    let top_cpu: Vec<(i32, Option<f64>)> = second.top_cpu.iter().map(|p| (p.pid, p.cpu_percent)).collect();
    assert_eq!(top_cpu, [(4242, Some(150.0)), (777, Some(50.0))]);
}

#[test]
fn filesystems_from_a_hostile_mount_table() {
    let scratch = tempfile::tempdir().unwrap();
    let odd = scratch.path().join("My Disk\tx\ny\\z");
    std::fs::create_dir_all(&odd).unwrap();
    let escape = |p: &Path| {
        p.to_str().unwrap().replace('\\', "\\134").replace(' ', "\\040").replace('\t', "\\011").replace('\n', "\\012")
    };
    let mountinfo = format!(
        "22 1 0:21 / /proc rw - proc proc rw\n\
         27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
         60 27 8:17 / {odd} ro,relatime shared:9 master:2 - vfat /dev/sdb\\0401 rw\n\
         61 27 0:50 / /mnt/nas rw - nfs4 nas.lan:/export rw,vers=4.2\n\
         62 27 0:51 / {missing} rw - ext4 /dev/sdc1 rw\n",
        odd = escape(&odd),
        missing = escape(&scratch.path().join("gone")),
    );
    let proc_root = tree(&[("self/mountinfo", &mountinfo)]);
    let mut observer = LocalObserver::new(config(proc_root.path(), proc_root.path()));
    let section = observer.filesystems();
    let filesystems = section.data().expect("filesystems");
    let points: Vec<&str> = filesystems.iter().map(|f| f.mount_point.as_str()).collect();
    assert_eq!(points, ["/", odd.to_str().unwrap()]);
    let odd_fs = &filesystems[1];
    assert_eq!(odd_fs.device, "/dev/sdb 1");
    assert_eq!(odd_fs.fs_type, "vfat");
    assert!(odd_fs.read_only);
    assert!(odd_fs.total_bytes > 0, "statvfs reached the decoded path");

    let skipped: Vec<(&str, &str)> =
        observer.skipped_mounts().iter().map(|s| (s.fs_type.as_str(), s.reason.as_str())).collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, "nfs4");
    assert!(skipped[0].1.starts_with("network filesystem (nfs4)"), "{skipped:?}");
    assert_eq!(skipped[1].0, "ext4");
    assert!(skipped[1].1.starts_with("statvfs ") && skipped[1].1.contains("ENOENT"), "{skipped:?}");
}

#[test]
fn only_network_mounts_is_unavailable_not_empty() {
    let proc_root = tree(&[("self/mountinfo", "61 1 0:50 / / rw - nfs4 nas.lan:/root rw\n")]);
    let mut observer = LocalObserver::new(config(proc_root.path(), proc_root.path()));
    let section = observer.filesystems();
    let reason = section.unavailable_reason().expect("unavailable");
    assert!(reason.contains("no local filesystem") && reason.contains("network filesystem (nfs4)"), "{reason}");
}

#[test]
fn nix_generations_from_profile_links() {
    let root = tempfile::tempdir().unwrap();
    let profiles = root.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    symlink("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1-24.05", profiles.join("system-1-link"))
        .unwrap();
    symlink("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-web1-24.11", profiles.join("system-2-link"))
        .unwrap();
    symlink("/nix/store/cccccccccccccccccccccccccccccccc-nixos-system-web1-24.11", profiles.join("system-10-link"))
        .unwrap();
    symlink("system-2-link", profiles.join("system")).unwrap();
    symlink("/nix/store/dddddddddddddddddddddddddddddddd-user-env", profiles.join("default-1-link")).unwrap();
    let current = root.path().join("current-system");
    symlink("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-web1-24.11", &current).unwrap();

    let paths = NixPaths { current_system: current, profiles, store: root.path().to_owned() };
    let config = ObserveConfig { nix: paths, ..ObserveConfig::system() };
    let observer = LocalObserver::new(config);
    let nix = observer.nix();
    let nix = nix.data().expect("nix info");
    assert_eq!(nix.current_system, "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nixos-system-web1-24.11");
    let generations: Vec<(u32, bool)> = nix.generations.iter().map(|g| (g.number, g.current)).collect();
    assert_eq!(generations, [(1, false), (2, true), (10, false)]);
    assert_eq!(nix.generations[0].path, "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-web1-24.05");
    assert!(nix.generations.iter().all(|g| g.created_at.is_some_and(|t| t.millis() > 0)));
    assert!(nix.store_total_bytes > 0 && nix.store_available_bytes <= nix.store_total_bytes);
}

#[test]
fn not_nixos_names_the_missing_link() {
    let root = tempfile::tempdir().unwrap();
    let current = root.path().join("current-system");
    let paths =
        NixPaths { current_system: current.clone(), profiles: root.path().join("p"), store: root.path().into() };
    let observer = LocalObserver::new(ObserveConfig { nix: paths, ..ObserveConfig::system() });
    assert_eq!(
        observer.nix().unavailable_reason(),
        Some(format!("not NixOS: {} does not exist", current.display()).as_str())
    );
}
