//! The mount table: `/proc/self/mountinfo` (or `/proc/mounts`) parsed byte-exactly, and the
//! selection of the mounts worth reporting.
//!
//! The kernel escapes space, tab, newline and backslash in mount points as `\040`, `\011`, `\012`
//! and `\134`; everything else (including bytes that are not UTF-8) is written raw. Mount points
//! are therefore decoded to bytes, and only turned into (lossy) text for a report.
//!
//! Network filesystems are set aside as [`SkippedMount`]s: a `statvfs` on a mount whose server is
//! gone blocks in the kernel, so an observer must never query them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Pseudo filesystems with no space of their own worth reporting. `tmpfs` and `devtmpfs` are *not*
/// here: a full `/run` or `/dev/shm` is a real problem.
pub const DEFAULT_PSEUDO_FS_TYPES: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "hugetlbfs",
    "autofs",
    "efivarfs",
    "selinuxfs",
    "nsfs",
    "rpc_pipefs",
    "nfsd",
    // No size: statvfs reports zero blocks (NixOS mounts /run/keys as ramfs).
    "ramfs",
];

/// Filesystems whose `statvfs` is answered over the network or by a userspace daemon, and so can
/// block indefinitely.
pub const DEFAULT_NETWORK_FS_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ncpfs",
    "ceph",
    "glusterfs",
    "lustre",
    "gpfs",
    "afs",
    "9p",
    "davfs",
    "fuse.sshfs",
    "fuse.rclone",
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.glusterfs",
    "fuse.cephfs",
    "fuse.davfs2",
    "fuse.gvfsd-fuse",
    "fuse.portal",
];

/// Mount-point prefixes of container runtimes' per-container mounts (overlay upper/lower layers,
/// network namespaces), which repeat the filesystem that holds them.
pub const DEFAULT_EXCLUDED_MOUNT_PREFIXES: &[&str] =
    &["/var/lib/docker/", "/var/lib/containers/storage/", "/run/containerd/", "/run/docker/", "/run/netns/"];

/// One line of `mountinfo` (or `mounts`), with escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the filesystem; empty when read from `/proc/mounts`.
    pub device_number: String,
    /// Raw bytes of the mount point.
    pub mount_point: Vec<u8>,
    pub fs_type: String,
    /// Raw bytes of the mount source (`/dev/vda1`, `server:/export`, `tmpfs`, …).
    pub source: Vec<u8>,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Per-superblock options; empty when read from `/proc/mounts`.
    pub super_options: String,
}

impl MountEntry {
    pub fn mount_point_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.mount_point))
    }

    pub fn mount_point_lossy(&self) -> String {
        String::from_utf8_lossy(&self.mount_point).into_owned()
    }

    /// Read-only as far as the mount table says (per mount or per superblock).
    pub fn read_only(&self) -> bool {
        let has_ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        has_ro(&self.mount_options) || has_ro(&self.super_options)
    }
}

/// A mount left out of the filesystem list, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedMount {
    pub mount_point: String,
    pub fs_type: String,
    pub reason: String,
}

/// Which mounts to report.
#[derive(Debug, Clone, Copy)]
pub struct MountFilter<'a> {
    pub pseudo_fs_types: &'a [String],
    pub network_fs_types: &'a [String],
    pub excluded_mount_prefixes: &'a [String],
}

/// Decodes the kernel's `\ooo` octal escapes. A backslash not followed by three octal digits is kept
/// as it is.
pub fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape_octal(field)).into_owned()
}

/// Parses `/proc/<pid>/mountinfo`:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
pub fn parse_mountinfo(bytes: &[u8]) -> Result<Vec<MountEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let separator =
            fields.iter().position(|f| *f == b"-").ok_or_else(|| format!("line {}: no \" - \" separator", n + 1))?;
        if separator < 6 || fields.len() < separator + 3 {
            return Err(format!("line {}: {} fields, separator at {separator}", n + 1, fields.len()));
        }
        out.push(MountEntry {
            device_number: text(fields[2]),
            mount_point: unescape_octal(fields[4]),
            mount_options: text(fields[5]),
            fs_type: text(fields[separator + 1]),
            source: unescape_octal(fields[separator + 2]),
            super_options: fields.get(separator + 3).map(|f| text(f)).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Parses `/proc/mounts` (`source mount_point type options 0 0`), the fallback when `mountinfo` is
/// not readable.
pub fn parse_proc_mounts(bytes: &[u8]) -> Result<Vec<MountEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if fields.len() < 4 {
            return Err(format!("line {}: {} fields, expected at least 4", n + 1, fields.len()));
        }
        out.push(MountEntry {
            device_number: String::new(),
            mount_point: unescape_octal(fields[1]),
            fs_type: text(fields[2]),
            source: unescape_octal(fields[0]),
            mount_options: text(fields[3]),
            super_options: String::new(),
        });
    }
    Ok(out)
}

/// Drops pseudo filesystems and container mounts, keeps only the topmost mount on each mount point
/// (a later mount shadows an earlier one), and sets network filesystems aside as skipped.
pub fn select_mounts(entries: Vec<MountEntry>, filter: MountFilter<'_>) -> (Vec<MountEntry>, Vec<SkippedMount>) {
    let mut kept: Vec<MountEntry> = Vec::with_capacity(entries.len());
    let mut index: HashMap<Vec<u8>, usize> = HashMap::with_capacity(entries.len());
    for entry in entries {
        match index.get(&entry.mount_point) {
            Some(&i) => kept[i] = entry,
            None => {
                index.insert(entry.mount_point.clone(), kept.len());
                kept.push(entry);
            }
        }
    }
    let mut selected = Vec::with_capacity(kept.len());
    let mut skipped = Vec::new();
    for entry in kept {
        let is = |list: &[String]| list.contains(&entry.fs_type);
        if is(filter.pseudo_fs_types)
            || filter.excluded_mount_prefixes.iter().any(|p| entry.mount_point.starts_with(p.as_bytes()))
        {
            continue;
        }
        if is(filter.network_fs_types) {
            skipped.push(SkippedMount {
                mount_point: entry.mount_point_lossy(),
                fs_type: entry.fs_type.clone(),
                reason: format!(
                    "network filesystem ({}): not queried, statvfs blocks while its server is unreachable",
                    entry.fs_type
                ),
            });
            continue;
        }
        selected.push(entry);
    }
    (selected, skipped)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MOUNTINFO: &[u8] = b"22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 27 0:27 / /dev/shm rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=24684084k
41 27 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 254:0 /nix/store /nix/store ro,relatime shared:1 - ext4 /dev/vda rw,discard
60 27 8:17 / /mnt/My\\040Disk\\011tab\\012newline\\134slash rw,relatime shared:9 master:2 - vfat /dev/sdb1 rw,fmask=0022
61 27 0:50 / /mnt/nas rw,relatime - nfs4 nas.lan:/export\\040share rw,vers=4.2
62 27 0:51 / /home/u/remote rw,nosuid - fuse.sshfs u@host: rw,user_id=1000
70 27 0:60 / /run rw,nosuid - tmpfs tmpfs rw,mode=755
71 27 0:61 / /run rw,nosuid - tmpfs tmpfs ro,mode=700
80 27 0:70 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw,lowerdir=/x
";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(m.len(), 11);
        let odd = &m[5];
        assert_eq!(odd.mount_point, b"/mnt/My Disk\ttab\nnewline\\slash");
        assert_eq!(odd.fs_type, "vfat");
        assert_eq!(odd.source, b"/dev/sdb1");
        assert_eq!(odd.device_number, "8:17");
        assert_eq!(m[6].source, b"nas.lan:/export share");
        assert!(m[4].read_only(), "per-mount ro");
        assert!(!m[1].read_only());
        assert!(m[9].read_only(), "per-superblock ro");
    }

    #[test]
    fn unescape_leaves_malformed_escapes() {
        assert_eq!(unescape_octal(b"a\\040b"), b"a b");
        assert_eq!(unescape_octal(b"a\\04"), b"a\\04");
        assert_eq!(unescape_octal(b"a\\999"), b"a\\999");
        assert_eq!(unescape_octal(b"\\"), b"\\");
        assert_eq!(unescape_octal(b"\\377"), [255u8]);
    }

    #[test]
    fn mountinfo_without_separator_is_an_error() {
        assert!(parse_mountinfo(b"22 27 0:21 / /proc rw proc proc rw\n").is_err());
    }

    #[test]
    fn proc_mounts_fallback() {
        let m =
            parse_proc_mounts(b"/dev/vda / ext4 rw,relatime 0 0\nserver:/a\\040b /mnt/a\\040b nfs ro 0 0\n").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mount_point, b"/mnt/a b");
        assert!(m[1].read_only());
    }

    #[test]
    fn selection_filters_dedupes_and_skips_network() {
        let pseudo = strings(DEFAULT_PSEUDO_FS_TYPES);
        let network = strings(DEFAULT_NETWORK_FS_TYPES);
        let prefixes = strings(DEFAULT_EXCLUDED_MOUNT_PREFIXES);
        let filter =
            MountFilter { pseudo_fs_types: &pseudo, network_fs_types: &network, excluded_mount_prefixes: &prefixes };
        let (selected, skipped) = select_mounts(parse_mountinfo(MOUNTINFO).unwrap(), filter);
        let points: Vec<String> = selected.iter().map(MountEntry::mount_point_lossy).collect();
        assert_eq!(points, ["/", "/dev/shm", "/nix/store", "/mnt/My Disk\ttab\nnewline\\slash", "/run"]);
        // The later of the two mounts on /run is the visible one.
        assert!(selected[4].read_only());
        let skipped_points: Vec<&str> = skipped.iter().map(|s| s.mount_point.as_str()).collect();
        assert_eq!(skipped_points, ["/mnt/nas", "/home/u/remote"]);
        assert!(skipped[0].reason.contains("network filesystem (nfs4)"), "{}", skipped[0].reason);
    }
}
