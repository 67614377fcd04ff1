//! Macha's own known_hosts file: host keys pinned per host name.
//!
//! Every connection uses `StrictHostKeyChecking=yes` with this file as the only known_hosts
//! (`UserKnownHostsFile=<this>`, `GlobalKnownHostsFile=/dev/null`) and the registry name as
//! `HostKeyAlias`, so entries are keyed by Macha's name for the host whatever its address or
//! port. Keys get here only from a person (`macha-systems trust`, which shows the fingerprint
//! first), from the configuration (`hosts.<name>.host_key`), or from an administrator who provides
//! the file; never from a first connection.

use crate::error::SshError;
use base64::Engine as _;
use macha_core::HostName;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Host key algorithms Macha pins.
pub const ALGORITHMS: [&str; 8] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A public host key: algorithm and the base64 key blob, validated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostKey {
    pub algorithm: String,
    pub blob: String,
}

impl HostKey {
    /// Parses `ALGORITHM BASE64 [comment]` (as in a `.pub` file or a `host_key` setting). The blob
    /// must decode and must name the same algorithm inside (the SSH wire format starts with it).
    pub fn parse(text: &str) -> Result<HostKey, SshError> {
        let mut it = text.split_whitespace();
        let (Some(algorithm), Some(blob)) = (it.next(), it.next()) else {
            return Err(SshError::Invalid("a host key looks like \"ssh-ed25519 AAAA…\"".into()));
        };
        HostKey::new(algorithm, blob)
    }

    pub fn new(algorithm: &str, blob: &str) -> Result<HostKey, SshError> {
        if !ALGORITHMS.contains(&algorithm) {
            return Err(SshError::Invalid(format!(
                "unknown host key algorithm {:?}",
                algorithm.chars().take(40).collect::<String>()
            )));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|e| SshError::Invalid(format!("host key blob is not base64: {e}")))?;
        let inner = raw
            .get(..4)
            .and_then(|l| <[u8; 4]>::try_from(l).ok())
            .map(|l| u32::from_be_bytes(l) as usize)
            .and_then(|n| raw.get(4..4 + n));
        let inner_ok = inner
            .is_some_and(|name| name == algorithm.as_bytes() || (algorithm == "rsa-sha2-512" && name == b"ssh-rsa"));
        if !inner_ok {
            return Err(SshError::Invalid(format!("host key blob is not an {algorithm} key")));
        }
        Ok(HostKey { algorithm: algorithm.to_owned(), blob: blob.to_owned() })
    }

    /// `SHA256:…`, as `ssh-keygen -l` and `ssh` print it.
    pub fn fingerprint(&self) -> String {
        let raw = base64::engine::general_purpose::STANDARD.decode(&self.blob).unwrap_or_default();
        let digest = sha2::Sha256::digest(&raw);
        format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest))
    }

    /// `ALGORITHM BASE64`.
    pub fn line(&self) -> String {
        format!("{} {}", self.algorithm, self.blob)
    }
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.algorithm, self.fingerprint())
    }
}

/// One line of the file, kept as read: entries Macha understands, and every other line verbatim
/// (comments, hashed names, markers) so that rewriting the file never loses an administrator's
/// lines.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Entry { names: Vec<String>, key: HostKey },
    Other(String),
}

/// The known_hosts file, loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHosts {
    path: PathBuf,
    lines: Vec<Line>,
}

impl KnownHosts {
    /// Loads `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<KnownHosts, SshError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(SshError::local(format!("reading {}", path.display()), e)),
        };
        Ok(KnownHosts { path: path.to_path_buf(), lines: text.lines().map(parse_line).collect() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys pinned for `name`.
    pub fn keys_for(&self, name: &HostName) -> Vec<HostKey> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Entry { names, key } if names.iter().any(|n| n == name.as_str()) => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every name with at least one pinned key.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .lines
            .iter()
            .filter_map(|l| match l {
                Line::Entry { names, .. } => Some(names.clone()),
                Line::Other(_) => None,
            })
            .flatten()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Replaces whatever is pinned for `name` with `keys`. Returns whether anything changed.
    pub fn pin(&mut self, name: &HostName, keys: &[HostKey]) -> bool {
        let before = self.keys_for(name);
        let mut want: Vec<HostKey> = keys.to_vec();
        want.sort();
        want.dedup();
        let mut have = before.clone();
        have.sort();
        if have == want {
            return false;
        }
        self.remove(name);
        for key in want {
            self.lines.push(Line::Entry { names: vec![name.as_str().to_owned()], key });
        }
        true
    }

    /// Removes `name` from every entry (an entry left without names goes). Returns whether
    /// anything changed.
    pub fn remove(&mut self, name: &HostName) -> bool {
        let mut changed = false;
        self.lines.retain_mut(|l| match l {
            Line::Entry { names, .. } => {
                let n = names.len();
                names.retain(|x| x != name.as_str());
                changed |= names.len() != n;
                !names.is_empty()
            }
            Line::Other(_) => true,
        });
        changed
    }

    /// Writes the file atomically (a temporary file in the same directory, then a rename), mode
    /// 0644: host keys are public.
    pub fn save(&self) -> Result<(), SshError> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| SshError::local(format!("creating {}", dir.display()), e))?;
        let mut text = String::new();
        for l in &self.lines {
            match l {
                Line::Entry { names, key } => text.push_str(&format!("{} {}\n", names.join(","), key.line())),
                Line::Other(s) => {
                    text.push_str(s);
                    text.push('\n');
                }
            }
        }
        let tmp = dir.join(format!(
            ".{}.tmp.{}",
            self.path.file_name().and_then(|n| n.to_str()).unwrap_or("known_hosts"),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            SshError::local(format!("writing {}", self.path.display()), e)
        })
    }
}

fn parse_line(raw: &str) -> Line {
    let t = raw.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with('@') || t.starts_with('|') {
        return Line::Other(raw.to_owned());
    }
    let mut it = t.split_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some(names), Some(alg), Some(blob)) => match HostKey::new(alg, blob) {
            Ok(key) => Line::Entry { names: names.split(',').map(str::to_owned).collect(), key },
            Err(_) => Line::Other(raw.to_owned()),
        },
        _ => Line::Other(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The public half of a throwaway ed25519 key (`ssh-keygen -t ed25519`), and its fingerprint as
    // `ssh-keygen -l` prints it.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE0qsxSh/2W4bH/LeviKgKg5rlzbNPwOFvkYjqv70mR c1";
    const FP: &str = "SHA256:bzpIzhnyb0gUT0E3NCH/eNzkgzek9GnTHjztQG7CGc4";

    fn h(s: &str) -> HostName {
        HostName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keys_parse_validate_and_fingerprint() {
        let k = HostKey::parse(KEY).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.fingerprint(), FP);
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-ed25519 not-base64!",
            // an RSA blob labelled ed25519
            "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAAgQC",
        ] {
            assert!(HostKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pin_replace_remove_and_keep_foreign_lines() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, format!("# admin comment\n|1|hashed= ssh-ed25519 AAAA\nc2,10.0.0.2 {KEY}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut kh = KnownHosts::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kh.keys_for(&h("c2")).len(), 1);
        assert!(kh.keys_for(&h("c1")).is_empty());
        let key = HostKey::parse(KEY).unwrap_or_else(|e| panic!("{e}"));
        assert!(kh.pin(&h("c1"), std::slice::from_ref(&key)));
        assert!(!kh.pin(&h("c1"), std::slice::from_ref(&key)), "pinning the same key again changes nothing");
        assert!(kh.remove(&h("c2")));
        kh.save().unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.starts_with("# admin comment\n|1|hashed= ssh-ed25519 AAAA\n10.0.0.2 ssh-ed25519"), "{text}");
        assert!(text.contains(&format!("\nc1 {}\n", key.line())), "{text}");
        let again = KnownHosts::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.names(), ["10.0.0.2", "c1"]);
        assert!(KnownHosts::load(&dir.path().join("missing")).is_ok_and(|k| k.names().is_empty()));
    }
}
