//! Readers for the kernel's `/proc` text files: `stat`, `meminfo`, `loadavg`, `pressure/*`,
//! `net/dev` and `<pid>/stat`.
//!
//! The parsing is [`macha_parse::procfs`]'s; these functions only read the files. They take the
//! proc root (normally `/proc`) so tests can point them at a fixture tree.
use crate::error::{ObserveError, read_text};
use macha_core::snapshot::{Connections, Load, Memory, NetInterface, Pressure, PressureLine};
use macha_parse::procfs::{
    PidStat, PressureFile, StatCpu, parse_loadavg, parse_meminfo, parse_net_dev, parse_pid_stat, parse_pressure,
    parse_stat,
};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Reads `<proc_root>/stat`.
pub fn read_stat(proc_root: &Path) -> Result<StatCpu, ObserveError> {
    let path = proc_root.join("stat");
    parse_stat(&read_text(&path)?).map_err(|e| ObserveError::parse(&path, e))
}

/// Reads `<proc_root>/meminfo`.
pub fn read_meminfo(proc_root: &Path) -> Result<Memory, ObserveError> {
    let path = proc_root.join("meminfo");
    parse_meminfo(&read_text(&path)?).map_err(|e| ObserveError::parse(&path, e))
}

/// Reads `<proc_root>/loadavg`.
pub fn read_loadavg(proc_root: &Path) -> Result<Load, ObserveError> {
    let path = proc_root.join("loadavg");
    parse_loadavg(&read_text(&path)?).map_err(|e| ObserveError::parse(&path, e))
}

/// Reads `<proc_root>/net/dev` (the network namespace of the reading process).
pub fn read_net_dev(proc_root: &Path) -> Result<Vec<NetInterface>, ObserveError> {
    let path = proc_root.join("net/dev");
    parse_net_dev(&read_text(&path)?).map_err(|e| ObserveError::parse(&path, e))
}

/// Reads `<proc_root>/net/tcp` and `tcp6` line by line into the bounded [`Connections`] (a busy
/// host's tables can be megabytes; only the groups are kept). Fails only when neither exists.
pub fn read_connections(proc_root: &Path) -> Result<Connections, ObserveError> {
    use std::io::BufRead;
    let mut table = macha_parse::tcp::TcpTable::default();
    let mut found = false;
    let mut first_error = None;
    for name in ["net/tcp", "net/tcp6"] {
        let path = proc_root.join(name);
        match std::fs::File::open(&path) {
            Ok(f) => {
                found = true;
                for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                    table.line(&line);
                }
            }
            Err(source) => {
                first_error.get_or_insert(ObserveError::Read { path, source });
            }
        }
    }
    match (found, first_error) {
        (false, Some(e)) => Err(e),
        _ => Ok(table.finish()),
    }
}

/// Reads `<proc_root>/pressure/{cpu,memory,io}`. A missing directory means the kernel was built
/// without `CONFIG_PSI`; files that exist but cannot be read (`EOPNOTSUPP`) mean PSI was disabled
/// at boot.
pub fn read_pressure(proc_root: &Path) -> Result<Pressure, ObserveError> {
    let dir = proc_root.join("pressure");
    if !dir.exists() {
        return Err(ObserveError::PsiUnsupported { path: dir });
    }
    let read = |name: &str| -> Result<PressureFile, ObserveError> {
        let path = dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ObserveError::PsiUnsupported { path }),
            Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
                return Err(ObserveError::PsiDisabled { path, source: e });
            }
            Err(e) => return Err(ObserveError::read(&path, e)),
        };
        parse_pressure(&text).map_err(|e| ObserveError::parse(&path, e))
    };
    let full = |name: &str| -> Result<(PressureLine, PressureLine), ObserveError> {
        let PressureFile { some, full } = read(name)?;
        let full = full.ok_or_else(|| ObserveError::parse(&dir.join(name), "no \"full\" line"))?;
        Ok((some, full))
    };
    let cpu = read("cpu")?;
    let (memory_some, memory_full) = full("memory")?;
    let (io_some, io_full) = full("io")?;
    Ok(Pressure { cpu_some: cpu.some, memory_some, memory_full, io_some, io_full })
}

/// Reads `<proc_root>/<pid>/stat` of every process, and nothing else per process. Only an
/// unreadable proc root is an error; processes that vanish mid-scan are skipped.
pub fn scan_processes(proc_root: &Path) -> Result<Vec<PidStat>, ObserveError> {
    let entries = std::fs::read_dir(proc_root).map_err(|e| ObserveError::read(proc_root, e))?;
    let mut out = Vec::with_capacity(512);
    let mut buf = String::with_capacity(512);
    let mut path = PathBuf::from(proc_root);
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        path.push(name);
        path.push("stat");
        buf.clear();
        // The process may exit between readdir and open (ENOENT) or between open and read (ESRCH);
        // either way it is no longer there to report.
        let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_string(&mut buf));
        path.pop();
        path.pop();
        if read.is_err() {
            continue;
        }
        if let Ok(stat) = parse_pid_stat(&buf) {
            out.push(stat);
        }
    }
    Ok(out)
}
