//! The model's `read_file`: an allow-listed file opened beneath its allowed root, with no gap
//! between checking a path and opening it.
//!
//! The allowed root (a directory entry of `llm.readable_paths`, or a file entry's parent) is opened
//! first; the rest of the path is resolved by the kernel with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` from that directory, so no symlink, `..` or component swapped in while
//! the path is resolved can lead outside it. The file that was opened is then checked by its real
//! path (read back from the descriptor, so it is the file that will be read) against the allow-list
//! again: a symlink inside the root to a name that is never read (`*.key`, `shadow`, …) is refused
//! too. Only regular files are read, at most `max` bytes.

use macha_agent::tools::FileAllowList;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::io::Read;
use std::os::fd::AsRawFd;

/// Reads `path` if the allow-list allows it and it resolves beneath its allowed root.
pub fn read(allow: &FileAllowList, path: &str, max: u64) -> Result<String, String> {
    allow.check(path)?;
    let (root, rel) = allow.root_of(path).ok_or_else(|| format!("{path} is not in the allow-list"))?;
    let root_fd = nix::fcntl::open(root.as_str(), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("{path}: cannot open its allowed directory {root}: {e}"))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(&root_fd, rel, how).map_err(|e| match e {
        Errno::EXDEV => format!("{path} leads outside {root} (through a symlink or '..') and is not read"),
        Errno::ELOOP => format!("{path}: too many symlinks, or a /proc magic link"),
        Errno::ENOSYS => format!("{path}: this kernel has no openat2 (Linux 5.6 or later), so no file is read"),
        other => format!("{path}: {}", other.desc()),
    })?;
    // The real path of the file that is open, from its descriptor: what will be read.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("{path}: cannot tell what was opened: {e}"))?;
    let real = real.to_string_lossy().into_owned();
    if real != path {
        allow.check(&real).map_err(|e| format!("{path} resolves to {real}: {e}"))?;
    }
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|e| format!("{path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    let mut buf = Vec::new();
    file.take(max).read_to_end(&mut buf).map_err(|e| format!("{path}: {e}"))?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if meta.len() > max {
        text.push_str(&format!("\n[the file has {} bytes; only the first {max} were read]", meta.len()));
    }
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::Path;

    struct Tree {
        _dir: tempfile::TempDir,
        allowed: String,
        outside: String,
    }

    /// `allowed/sub/ok.txt` ("fine"), `outside/ok.txt` and `outside/secret.txt` ("SECRET").
    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(allowed.join("sub/ok.txt"), "fine").unwrap();
        std::fs::write(outside.join("ok.txt"), "SECRET").unwrap();
        std::fs::write(outside.join("secret.txt"), "SECRET").unwrap();
        Tree { allowed: allowed.display().to_string(), outside: outside.display().to_string(), _dir: dir }
    }

    fn list(t: &Tree) -> FileAllowList {
        FileAllowList::new(&[format!("{}/", t.allowed)])
    }

    #[test]
    fn reads_inside_and_refuses_dot_dot_and_escaping_symlinks() {
        let t = tree();
        let allow = list(&t);
        assert_eq!(read(&allow, &format!("{}/sub/ok.txt", t.allowed), 1024), Ok("fine".into()));
        // `..` is refused by the allow-list before anything is opened.
        let dotdot = read(&allow, &format!("{}/../outside/secret.txt", t.allowed), 1024);
        assert!(dotdot.is_err_and(|e| e.contains("'..'")));
        // Relative and absolute symlinks that leave the root.
        std::os::unix::fs::symlink("../outside/secret.txt", Path::new(&t.allowed).join("rel")).unwrap();
        std::os::unix::fs::symlink(format!("{}/secret.txt", t.outside), Path::new(&t.allowed).join("abs")).unwrap();
        for name in ["rel", "abs"] {
            let r = read(&allow, &format!("{}/{name}", t.allowed), 1024);
            assert!(r.as_ref().is_err_and(|e| e.contains("leads outside")), "{name}: {r:?}");
        }
        // A symlink inside the root to a name that is never read.
        std::fs::write(Path::new(&t.allowed).join("sub/tls.key"), "KEY").unwrap();
        std::os::unix::fs::symlink("sub/tls.key", Path::new(&t.allowed).join("innocent.txt")).unwrap();
        let r = read(&allow, &format!("{}/innocent.txt", t.allowed), 1024);
        assert!(r.as_ref().is_err_and(|e| e.contains("never read")), "{r:?}");
        // Not a regular file.
        let r = read(&allow, &format!("{}/sub", t.allowed), 1024);
        assert!(r.is_err_and(|e| e.contains("not a regular file")));
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_read_never_leads_outside() {
        let t = tree();
        let allow = list(&t);
        // `allowed/link` points outside; a thread keeps exchanging it with `allowed/sub`
        // (atomically, renameat2 RENAME_EXCHANGE), while reads of `allowed/sub/ok.txt` run.
        let link = Path::new(&t.allowed).join("link");
        std::os::unix::fs::symlink(&t.outside, &link).unwrap();
        let sub = Path::new(&t.allowed).join("sub");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, sub, link) = (std::sync::Arc::clone(&stop), sub.clone(), link.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &sub,
                        nix::fcntl::AT_FDCWD,
                        &link,
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                    swaps += 1;
                }
                swaps
            })
        };
        let path = format!("{}/sub/ok.txt", t.allowed);
        let (mut fine, mut refused) = (0, 0);
        for _ in 0..50_000 {
            match read(&allow, &path, 1024) {
                Ok(text) => {
                    assert_eq!(text, "fine", "a read left the allowed directory");
                    fine += 1;
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(swaps > 100, "the swapper barely ran ({swaps} swaps)");
        assert!(fine > 0 && refused > 0, "the race was not exercised: {fine} read, {refused} refused");
    }
}
