//! One daemon per database: an exclusive `flock` on `<database>.lock`, held for the daemon's life
//! and released by the kernel when the process ends (also after SIGKILL). The file holds the PID of
//! the daemon that has it, so a second daemon can say which one it would have raced.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The held lock; dropping it releases the database.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: Flock<std::fs::File>,
    path: PathBuf,
}

impl DatabaseLock {
    /// Takes the lock of `database`, or fails naming the PID of the daemon that holds it.
    pub fn acquire(database: &Path) -> anyhow::Result<DatabaseLock> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another Macha daemon".to_owned()
                } else {
                    format!("the Macha daemon with PID {holder}")
                };
                anyhow::bail!(
                    "{} already uses the database {} (lock {}); one daemon per database: stop it first",
                    who,
                    database.display(),
                    path.display()
                );
            }
            Err((_, errno)) => return Err(errno).with_context(|| format!("locking {}", path.display())),
        };
        file.set_len(0).with_context(|| format!("writing {}", path.display()))?;
        file.rewind().with_context(|| format!("writing {}", path.display()))?;
        writeln!(file, "{}", std::process::id()).with_context(|| format!("writing {}", path.display()))?;
        Ok(DatabaseLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_lock_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("macha.db");
        let first = DatabaseLock::acquire(&db).unwrap();
        let content = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(content.trim(), std::process::id().to_string());
        // flock is per open file description: a second open in the same process conflicts too.
        let err = DatabaseLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains(&format!("PID {}", std::process::id())), "{err}");
        assert!(err.contains("one daemon per database"), "{err}");
        drop(first);
        DatabaseLock::acquire(&db).unwrap();
    }
}
