//! NixOS state read from the filesystem alone: the running system (`/run/current-system`), the
//! system profile's generations (`/nix/var/nix/profiles/system-<N>-link`) and the space of the
//! filesystem holding `/nix/store` (`statvfs`, never a walk of the store).
//!
//! A generation is `current` when the profile's `system` link points at it: that is the generation
//! the boot loader defaults to. The *running* system can differ (after `nixos-rebuild test` or
//! `boot`); compare [`NixInfo::current_system`] with each generation's `path` to tell.

use crate::error::ObserveError;
use crate::fs::wide;
use macha_core::Timestamp;
use macha_core::snapshot::{Generation, NixInfo};
use macha_parse::nix::generation_number;
use nix::sys::statvfs::statvfs;
use std::io;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

/// Where the Nix state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixPaths {
    /// Normally `/run/current-system`.
    pub current_system: PathBuf,
    /// Normally `/nix/var/nix/profiles`.
    pub profiles: PathBuf,
    /// Normally `/nix/store`.
    pub store: PathBuf,
}

impl NixPaths {
    pub fn system() -> NixPaths {
        NixPaths {
            current_system: PathBuf::from("/run/current-system"),
            profiles: PathBuf::from("/nix/var/nix/profiles"),
            store: PathBuf::from("/nix/store"),
        }
    }
}

/// Reads everything [`NixInfo`] holds. A missing `current_system` link means this is not NixOS.
pub fn read_nix_info(paths: &NixPaths) -> Result<NixInfo, ObserveError> {
    let current_system = match std::fs::read_link(&paths.current_system) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ObserveError::NotNixos { path: paths.current_system.clone() });
        }
        Err(e) => return Err(ObserveError::read(&paths.current_system, e)),
    };

    // The profile's `system` link is relative (`system-42-link`); keep only its file name. Without
    // it (a system never switched to through the profile) no generation is current.
    let system_link = paths.profiles.join("system");
    let default_name = match std::fs::read_link(&system_link) {
        Ok(target) => target.file_name().map(|n| n.to_os_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(ObserveError::read(&system_link, e)),
    };

    let entries = std::fs::read_dir(&paths.profiles).map_err(|e| ObserveError::read(&paths.profiles, e))?;
    let mut generations = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ObserveError::read(&paths.profiles, e))?;
        let name = entry.file_name();
        let Some(number) = name.to_str().and_then(generation_number) else { continue };
        let link = entry.path();
        // A generation deleted by a concurrent garbage collection between readdir and here is gone.
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ObserveError::read(&link, e)),
        };
        let target = if target.is_relative() { paths.profiles.join(target) } else { target };
        let created_at = std::fs::symlink_metadata(&link)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .map(Timestamp::from_millis);
        generations.push(Generation {
            number,
            path: target.to_string_lossy().into_owned(),
            created_at,
            current: default_name.as_deref() == Some(name.as_os_str()),
        });
    }
    generations.sort_by_key(|g| g.number);

    let st = statvfs(&paths.store).map_err(|source| ObserveError::Statvfs { path: paths.store.clone(), source })?;
    let fragment = wide(st.fragment_size());

    Ok(NixInfo {
        current_system: current_system.to_string_lossy().into_owned(),
        generations,
        store_total_bytes: wide(st.blocks()).saturating_mul(fragment),
        store_available_bytes: wide(st.blocks_available()).saturating_mul(fragment),
    })
}
