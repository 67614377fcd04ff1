//! Textfile-collector mode: `<dir>/macha.prom` for a node_exporter that already runs on the host.
//!
//! The file is replaced atomically: the exposition is written to a temporary file in the same
//! directory (named so that the collector, which reads only `*.prom`, ignores it), synced,
//! renamed over `macha.prom`, and the directory is synced, so a scrape sees the old file or the
//! new one, never a half-written one, and a crash leaves one of them.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name in the textfile directory.
pub const FILE_NAME: &str = "macha.prom";

/// Writes `text` to `<dir>/macha.prom` atomically and returns its path.
pub fn write_atomic(dir: &Path, text: &str) -> std::io::Result<PathBuf> {
    let target = dir.join(FILE_NAME);
    let temp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map(|()| target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_atomic(dir.path(), "a 1\n").unwrap();
        assert_eq!(path, dir.path().join("macha.prom"));
        write_atomic(dir.path(), "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["macha.prom".to_owned()]);
        // A directory that does not exist is an error, not a panic, and leaves nothing behind.
        assert!(write_atomic(&dir.path().join("missing"), "c 3\n").is_err());
    }
}
