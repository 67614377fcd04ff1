//! The store's integration tests, in one binary: the kill -9 test, history and retention with a
//! simulated clock, the agent tables' caps, and the audit hash chain (tampering through a raw
//! connection, export, prune).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod agent;
mod chain;
mod crash;
mod history;
mod metrics;
mod outbox_crash;

use macha_core::snapshot::{Cpu, CpuTicks, Filesystem, Load, Memory, NixInfo, Section, Snapshot, Units};
use macha_core::{HostName, Timestamp};

/// A realistic snapshot of `host` at `ts`: every section the history keeps is observed (five
/// filesystems), the rest is unavailable.
pub fn snapshot(host: &str, ts: i64) -> Snapshot {
    let mut s = Snapshot::all_unavailable(HostName::parse(host).unwrap(), Timestamp(ts), "not observed in this test");
    s.collect_micros = 1_234;
    s.cpu = Section::ok(Cpu {
        logical_cpus: 8,
        usage_percent: Some(12.345_678),
        window_ms: Some(60_000),
        ticks: CpuTicks { busy: 1, idle: 2 },
    });
    s.memory = Section::ok(Memory {
        total_bytes: 16 << 30,
        available_bytes: 9 << 30,
        swap_total_bytes: 0,
        swap_free_bytes: 0,
    });
    s.load = Section::ok(Load { one: 0.51234, five: 0.4, fifteen: 0.3, runnable: 1, processes: 300 });
    s.filesystems = Section::ok(
        ["/", "/boot", "/home", "/nix/store", "/var/lib/postgresql"]
            .iter()
            .enumerate()
            .map(|(i, m)| Filesystem {
                mount_point: (*m).to_owned(),
                device: format!("/dev/sda{i}"),
                fs_type: "ext4".to_owned(),
                total_bytes: 100 << 30,
                available_bytes: (40 + i as u64) << 30,
                used_bytes: None,
                total_inodes: 6_000_000,
                free_inodes: 5_000_000,
                read_only: false,
            })
            .collect(),
    );
    s.units = Section::ok(Units { system_state: "running".to_owned(), total: 250, notable: vec![], failed: vec![] });
    s.nix = Section::ok(NixInfo {
        current_system: "/nix/store/abc-nixos-system".to_owned(),
        generations: vec![],
        store_total_bytes: 500 << 30,
        store_available_bytes: 320 << 30,
    });
    s
}

/// A fresh database file in a new temporary directory.
pub fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("macha.db");
    (dir, path)
}
