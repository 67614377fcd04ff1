//! Mounted filesystems: `/proc/self/mountinfo` (or `/proc/mounts`) parsed byte-exactly, filtered,
//! then `statvfs`'d one by one.
//!
//! The kernel escapes space, tab, newline and backslash in mount points as `\040`, `\011`, `\012`
//! and `\134`; everything else (including bytes that are not UTF-8) is written raw. Paths are
//! therefore decoded to bytes and handed to `statvfs` as they are, and only turned into (lossy)
//! text for the report.
//!
//! Network filesystems are never `statvfs`'d: on a mount whose server is gone the call blocks in
//! the kernel, uninterruptibly, and would take the observer thread with it. They are reported as
//! [`SkippedMount`]s instead, as are mounts whose `statvfs` failed.

use crate::error::ObserveError;
use macha_core::snapshot::Filesystem;
use macha_parse::mounts::{MountEntry, MountFilter, SkippedMount, parse_mountinfo, parse_proc_mounts, select_mounts};
use nix::sys::statvfs::{FsFlags, statvfs};
use std::path::Path;

/// Reads `<proc_root>/self/mountinfo`, or `<proc_root>/mounts` if that cannot be read.
pub fn read_mounts(proc_root: &Path) -> Result<Vec<MountEntry>, ObserveError> {
    let mountinfo = proc_root.join("self/mountinfo");
    match std::fs::read(&mountinfo) {
        Ok(bytes) => parse_mountinfo(&bytes).map_err(|e| ObserveError::parse(&mountinfo, e)),
        Err(first) => {
            let mounts = proc_root.join("mounts");
            match std::fs::read(&mounts) {
                Ok(bytes) => parse_proc_mounts(&bytes).map_err(|e| ObserveError::parse(&mounts, e)),
                // Report the preferred source's error; the fallback failing too adds nothing.
                Err(_) => Err(ObserveError::read(&mountinfo, first)),
            }
        }
    }
}

/// Widens the platform's `fsblkcnt_t` / `c_ulong` (u64 on 64-bit Linux, u32 elsewhere).
pub(crate) fn wide<T: Into<u64>>(v: T) -> u64 {
    v.into()
}

/// Space and inodes of one mount.
pub fn stat_mount(entry: &MountEntry) -> Result<Filesystem, ObserveError> {
    let path = entry.mount_point_path();
    let st = statvfs(path).map_err(|source| ObserveError::Statvfs { path: path.to_owned(), source })?;
    let fragment = wide(st.fragment_size());
    Ok(Filesystem {
        mount_point: entry.mount_point_lossy(),
        device: String::from_utf8_lossy(&entry.source).into_owned(),
        fs_type: entry.fs_type.clone(),
        total_bytes: wide(st.blocks()).saturating_mul(fragment),
        available_bytes: wide(st.blocks_available()).saturating_mul(fragment),
        used_bytes: Some(wide(st.blocks()).saturating_sub(wide(st.blocks_free())).saturating_mul(fragment)),
        total_inodes: wide(st.files()),
        free_inodes: wide(st.files_free()),
        read_only: entry.read_only() || st.flags().contains(FsFlags::ST_RDONLY),
    })
}

/// Reads the mount table and `statvfs`es every selected mount. A mount whose `statvfs` fails is
/// skipped with its reason rather than failing the whole list.
pub fn read_filesystems(
    proc_root: &Path,
    filter: MountFilter<'_>,
) -> Result<(Vec<Filesystem>, Vec<SkippedMount>), ObserveError> {
    let (selected, mut skipped) = select_mounts(read_mounts(proc_root)?, filter);
    let mut filesystems = Vec::with_capacity(selected.len());
    for entry in &selected {
        match stat_mount(entry) {
            Ok(fs) => filesystems.push(fs),
            Err(e) => skipped.push(SkippedMount {
                mount_point: entry.mount_point_lossy(),
                fs_type: entry.fs_type.clone(),
                reason: e.to_string(),
            }),
        }
    }
    Ok((filesystems, skipped))
}
