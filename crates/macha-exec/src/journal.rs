//! The deployments' journal: one small JSON file per deployment ([`DeployRecord`]) in a private
//! directory of the daemon, written when the host's dead-man timer is armed and again when the
//! deployment ends or is reconciled. It is what a restarted daemon knows of a deployment it was
//! carrying out (the baseline preflight read, when the timer fires), so that it can settle it from
//! the host instead of guessing. Each write replaces the file whole (a temporary file renamed).

use macha_deploy::DeployRecord;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The most bytes a record may have (a baseline lists failed units and checks; a few KiB).
const RECORD_MAX: u64 = 256 * 1024;

/// The id of this run of the daemon: a record of another run that has no final state was cut off.
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{}-{nanos:x}", std::process::id())
    })
}

fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes `record` (replacing an earlier version). The directory is created private (0700).
pub fn write(dir: &Path, record: &DeployRecord) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
    let path = path_of(dir, record.deploy.as_str());
    let tmp = dir.join(format!(".{}.json.tmp", record.deploy.as_str()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The record of deployment `id`, if there is one.
pub fn read(dir: &Path, id: &str) -> Result<Option<DeployRecord>, String> {
    if !macha_core::command::valid_deploy_id(id) {
        return Err(format!("{id:?} is not a deployment id"));
    }
    read_path(&path_of(dir, id))
}

fn read_path(path: &Path) -> Result<Option<DeployRecord>, String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > RECORD_MAX => return Err(format!("{} is larger than {RECORD_MAX} bytes", path.display())),
        Ok(_) => {}
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every record in the directory, oldest arming first; an unreadable file is skipped with a warning.
pub fn all(dir: &Path) -> Vec<DeployRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<DeployRecord> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| match read_path(&p) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("skipping a deployment record: {e}");
                None
            }
        })
        .collect();
    out.sort_by_key(|r| r.armed_at);
    out
}

/// The record of the deployment approval `approval_id` carries out, the newest if several.
pub fn for_approval(dir: &Path, approval_id: i64) -> Option<DeployRecord> {
    all(dir).into_iter().rev().find(|r| r.approval_id == Some(approval_id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use macha_core::{HostName, StorePath, Timestamp};
    use macha_deploy::{Baseline, DeployId, Final};
    use std::time::Duration;

    pub(crate) fn record(id: &str, approval: i64, armed: i64) -> DeployRecord {
        let old = StorePath::parse("/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixos-system-a").unwrap();
        let new = StorePath::parse("/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-b").unwrap();
        DeployRecord {
            deploy: DeployId::parse(id).unwrap(),
            host: HostName::parse("web1").unwrap(),
            approval_id: Some(approval),
            old: old.clone(),
            new,
            baseline: Baseline {
                system: old,
                generation: None,
                boot_id: "b1".into(),
                failed_units: Default::default(),
                health: Vec::new(),
            },
            armed_at: Timestamp::from_millis(armed),
            dead_man: Duration::from_secs(900),
            run: run_id().to_owned(),
            final_state: None,
            notes: Vec::new(),
            reconciled: None,
        }
    }

    #[test]
    fn records_are_written_whole_read_back_and_found_by_approval() {
        let dir = std::env::temp_dir().join(format!("macha-journal-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(all(&dir).is_empty(), "a missing directory holds no records");
        let mut a = record("aaa111", 1, 2000);
        write(&dir, &a).unwrap();
        write(&dir, &record("bbb222", 2, 1000)).unwrap();
        a.final_state = Some(Final::Unknown);
        write(&dir, &a).unwrap();
        assert_eq!(read(&dir, "aaa111").unwrap(), Some(a.clone()));
        assert_eq!(read(&dir, "ccc333").unwrap(), None);
        assert!(read(&dir, "../etc").is_err(), "only deployment ids name files");
        let ids: Vec<String> = all(&dir).iter().map(|r| r.deploy.to_string()).collect();
        assert_eq!(ids, ["bbb222", "aaa111"], "oldest arming first; replaced, not duplicated");
        assert_eq!(for_approval(&dir, 1).map(|r| r.final_state), Some(Some(Final::Unknown)));
        assert!(for_approval(&dir, 3).is_none());
        std::fs::write(dir.join("broken.json"), b"{").unwrap();
        assert_eq!(all(&dir).len(), 2, "an unreadable file is skipped");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(run_id().contains(&std::process::id().to_string()));
    }
}
