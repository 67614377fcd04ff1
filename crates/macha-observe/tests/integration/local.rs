//! The local observer against this machine's real `/proc` and `/sys`.
//!
//! These assert shape and sanity, never timing or exact values, since the machine keeps changing
//! under the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use macha_core::snapshot::Section;
use macha_core::{HostName, Timestamp};
use macha_observe::local::NOT_COLLECTED;
use macha_observe::{LocalObserver, ObserveConfig};
use macha_parse::mounts::DEFAULT_PSEUDO_FS_TYPES;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Timestamp::from_millis(i64::try_from(d.as_millis()).unwrap())
}

/// Spends a little CPU time so the kernel's tick counters move.
fn burn(d: Duration) {
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

#[test]
fn cpu_usage_needs_two_calls() {
    let mut observer = LocalObserver::new(ObserveConfig::system());
    let first = observer.cpu(now());
    let first = first.data().expect("cpu readable");
    assert!(first.logical_cpus >= 1);
    assert_eq!(first.usage_percent, None, "first call has no previous ticks");
    assert_eq!(first.window_ms, None);

    // Calls within one clock tick cannot be compared; keep calling until ticks have moved.
    let mut second = None;
    for _ in 0..200 {
        burn(Duration::from_millis(10));
        let cpu = observer.cpu(now());
        let cpu = cpu.data().expect("cpu readable").clone();
        if cpu.usage_percent.is_some() {
            second = Some(cpu);
            break;
        }
    }
    let second = second.expect("usage after the tick counters moved");
    let usage = second.usage_percent.unwrap();
    assert!((0.0..=100.0).contains(&usage), "{usage}");
    assert!(second.window_ms.is_some());
    assert!(second.ticks.busy >= first.ticks.busy);
    assert_eq!(observer.cpu_sample().map(|s| s.ticks), Some(second.ticks));
}

#[test]
fn memory_load_network_are_read() {
    let observer = LocalObserver::new(ObserveConfig::system());
    let memory = observer.memory();
    let memory = memory.data().expect("meminfo");
    assert!(memory.total_bytes > 0 && memory.available_bytes <= memory.total_bytes);
    let load = observer.load();
    assert!(load.data().expect("loadavg").processes >= 1);
    let network = observer.network();
    assert!(network.data().expect("net/dev").iter().any(|n| n.name == "lo"));
}

#[test]
fn pressure_is_data_or_a_reason() {
    let observer = LocalObserver::new(ObserveConfig::system());
    match observer.pressure() {
        Section::Ok { data } => assert!((0.0..=100.0).contains(&data.cpu_some.avg10)),
        Section::Unavailable { reason } => assert!(reason.contains("PSI"), "{reason}"),
    }
}

#[test]
fn filesystems_are_sane() {
    let mut observer = LocalObserver::new(ObserveConfig::system());
    let section = observer.filesystems();
    let filesystems = section.data().expect("mount table readable");
    assert!(!filesystems.is_empty());
    for fs in filesystems {
        assert!(fs.mount_point.starts_with('/'), "{fs:?}");
        assert!(fs.available_bytes <= fs.total_bytes, "{fs:?}");
        assert!(fs.free_inodes <= fs.total_inodes, "{fs:?}");
        assert!(!DEFAULT_PSEUDO_FS_TYPES.contains(&fs.fs_type.as_str()), "{fs:?}");
    }
    let mut points: Vec<&str> = filesystems.iter().map(|f| f.mount_point.as_str()).collect();
    let before = points.len();
    points.sort_unstable();
    points.dedup();
    assert_eq!(points.len(), before, "one entry per mount point");
}

#[test]
fn processes_include_this_test() {
    let config = ObserveConfig { top_n: usize::MAX, ..ObserveConfig::system() };
    let mut observer = LocalObserver::new(config);
    let me = i32::try_from(std::process::id()).unwrap();

    let first = observer.processes(now());
    let first = first.data().expect("process list");
    assert!(first.total >= 1);
    assert_eq!(first.top_cpu.len(), first.total as usize);
    let own = first.top_rss.iter().find(|p| p.pid == me).expect("own process listed");
    assert!(own.rss_bytes > 0);
    assert!(first.top_cpu.iter().all(|p| p.cpu_percent.is_none()), "no rates on the first call");

    std::thread::sleep(Duration::from_millis(20));
    burn(Duration::from_millis(30));
    let second = observer.processes(now());
    let second = second.data().expect("process list");
    let own = second.top_cpu.iter().find(|p| p.pid == me).expect("own process listed");
    assert!(own.cpu_percent.is_some_and(|p| p >= 0.0), "{own:?}");
    // Sorted by rate, highest first.
    let rates: Vec<f64> = second.top_cpu.iter().map(|p| p.cpu_percent.unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn nix_section_matches_the_os() {
    let observer = LocalObserver::new(ObserveConfig::system());
    let nix = observer.nix();
    if Path::new("/run/current-system").exists() {
        assert!(nix.data().is_some(), "{nix:?}");
    } else {
        assert_eq!(nix.unavailable_reason(), Some("not NixOS: /run/current-system does not exist"));
    }
}

#[test]
fn hardware_inventory_is_read() {
    let mut observer = LocalObserver::new(ObserveConfig::system());
    let hardware = observer.hardware();
    let hardware = hardware.data().expect("hardware");
    assert!(hardware.logical_cpus >= 1);
    assert!(hardware.physical_cores >= 1 && hardware.physical_cores <= hardware.logical_cpus);
    assert!(!hardware.cpu_model.is_empty());
}

#[test]
fn collect_leaves_units_and_journal_to_others() {
    let mut observer = LocalObserver::new(ObserveConfig::system());
    let host = HostName::local();
    let taken_at = now();
    let snapshot = observer.collect(host.clone(), taken_at);
    assert_eq!(snapshot.host, host);
    assert_eq!(snapshot.taken_at, taken_at);
    assert_eq!(snapshot.units.unavailable_reason(), Some(NOT_COLLECTED));
    assert_eq!(snapshot.journal.unavailable_reason(), Some(NOT_COLLECTED));
    for section in ["cpu", "memory", "load", "filesystems", "network", "processes", "hardware"] {
        assert!(
            !snapshot.unavailable_sections().iter().any(|(name, _)| *name == section),
            "{section} unavailable: {:?}",
            snapshot.unavailable_sections()
        );
    }
    // The snapshot round-trips as the JSON other tools read.
    let json = serde_json::to_string(&snapshot).unwrap();
    assert_eq!(serde_json::from_str::<macha_core::snapshot::Snapshot>(&json).unwrap(), snapshot);
}
