//! Fuzz target: the text parsers of `macha-parse` (procfs files, mount tables, cpuinfo, CPU lists,
//! generation names) and os-release detection (`fleet::detect_os`). Every parser reads every
//! input: seeds are real files, and coverage tells the fuzzer which parser an input reached.

use macha_core::fleet::{detect_os, parse_os_release};
use macha_parse::mounts::{
    DEFAULT_EXCLUDED_MOUNT_PREFIXES, DEFAULT_NETWORK_FS_TYPES, DEFAULT_PSEUDO_FS_TYPES, MountFilter, parse_mountinfo,
    parse_proc_mounts, select_mounts, unescape_octal,
};
use macha_parse::{cpuinfo, nix, procfs};

fn main() {
    let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let pseudo = owned(DEFAULT_PSEUDO_FS_TYPES);
    let network = owned(DEFAULT_NETWORK_FS_TYPES);
    let excluded = owned(DEFAULT_EXCLUDED_MOUNT_PREFIXES);
    afl::fuzz!(|data: &[u8]| {
        let text = macha_fuzz::text(data);
        let _ = procfs::parse_stat(&text);
        let _ = procfs::parse_meminfo(&text);
        let _ = procfs::parse_loadavg(&text);
        let _ = procfs::parse_pressure(&text);
        let _ = procfs::parse_net_dev(&text);
        let _ = procfs::parse_pid_stat(&text);
        let filter =
            MountFilter { pseudo_fs_types: &pseudo, network_fs_types: &network, excluded_mount_prefixes: &excluded };
        if let Ok(m) = parse_mountinfo(data) {
            for e in &m {
                let _ = (e.mount_point_path(), e.mount_point_lossy(), e.read_only());
            }
            let _ = select_mounts(m, filter);
        }
        if let Ok(m) = parse_proc_mounts(data) {
            let _ = select_mounts(m, filter);
        }
        let unescaped = unescape_octal(data);
        assert!(unescaped.len() <= data.len(), "unescaping made the field longer");
        let _ = cpuinfo::parse_cpuinfo(&text);
        let _ = cpuinfo::normalise_hex_id(&text);
        for line in text.lines() {
            let _ = cpuinfo::parse_cpu_list(line);
            let _ = nix::generation_number(line);
        }
        let _ = parse_os_release(&text);
        let _ = detect_os(Some(&text), text.lines().next());
    });
}
