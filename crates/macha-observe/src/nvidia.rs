//! NVIDIA GPU metrics from `nvidia-smi`, the one place local observation runs a program.
//!
//! The proprietary driver exposes no temperature, utilisation or memory figures in sysfs, so the
//! observer asks `nvidia-smi` — only when an NVIDIA GPU is present and the binary is found, resolved
//! to an absolute path up front and started with a fixed argv (never through a shell), with a hard
//! deadline after which it is killed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The argv after the program name. `pci.bus_id` comes first so each row can be matched with the
/// sysfs device it describes.
pub const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=pci.bus_id,temperature.gpu,utilization.gpu,memory.total,memory.used",
    "--format=csv,noheader,nounits",
];

/// How long `nvidia-smi` may run before it is killed.
pub const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NvidiaSmiError {
    #[error("nvidia-smi not installed")]
    NotInstalled,
    #[error("cannot run {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} did not finish within {} ms and was killed", path.display(), timeout.as_millis())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("{} failed ({status}): {message}", path.display())]
    Failed { path: PathBuf, status: std::process::ExitStatus, message: String },
    #[error("unexpected output from {}: {detail}", path.display())]
    Output { path: PathBuf, detail: String },
}

/// One GPU row of `nvidia-smi --query-gpu`.
#[derive(Debug, Clone, PartialEq)]
pub struct NvidiaReading {
    /// In sysfs form: `0000:01:00.0`.
    pub pci_slot: String,
    pub temperature_celsius: Option<f64>,
    pub utilisation_percent: Option<f64>,
    pub vram_total_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
}

/// `00000000:01:00.0` (nvidia-smi, 8-digit domain, upper case) → `0000:01:00.0` (sysfs).
pub fn normalise_pci_slot(raw: &str) -> String {
    let raw = raw.trim().to_ascii_lowercase();
    match raw.split_once(':') {
        Some((domain, rest)) if domain.len() > 4 && domain.bytes().all(|b| b.is_ascii_hexdigit()) => {
            match u32::from_str_radix(domain, 16) {
                Ok(d) => format!("{d:04x}:{rest}"),
                Err(_) => raw,
            }
        }
        _ => raw,
    }
}

/// Parses the CSV rows (`00000000:01:00.0, 45, 3, 24576, 1024`; memory in MiB). Fields the GPU
/// does not support (`[N/A]`, `[Not Supported]`) become `None`.
pub fn parse_query_gpu(text: &str) -> Result<Vec<NvidiaReading>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [bus_id, temperature, utilisation, total, used] = fields[..] else {
            return Err(format!("expected 5 fields, got {}: {line:?}", fields.len()));
        };
        let number = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite());
        let mib = |v: &str| v.parse::<u64>().ok().map(|m| m.saturating_mul(1024 * 1024));
        out.push(NvidiaReading {
            pci_slot: normalise_pci_slot(bus_id),
            temperature_celsius: number(temperature),
            utilisation_percent: number(utilisation),
            vram_total_bytes: mib(total),
            vram_used_bytes: mib(used),
        });
    }
    Ok(out)
}

/// The first `nvidia-smi` in `dirs`, as an absolute path.
pub fn find_nvidia_smi(dirs: &[PathBuf]) -> Option<PathBuf> {
    let absolute: Vec<&PathBuf> = dirs.iter().filter(|d| d.is_absolute()).collect();
    let search = std::env::join_paths(absolute).ok()?;
    which::which_in_global("nvidia-smi", Some(search)).ok()?.next()
}

/// Runs `<path> NVIDIA_SMI_ARGS…` and parses its rows; kills it after `timeout`.
pub fn query(path: &Path, timeout: Duration) -> Result<Vec<NvidiaReading>, NvidiaSmiError> {
    let mut child = Command::new(path)
        .args(NVIDIA_SMI_ARGS)
        .env_clear()
        .envs(macha_core::command::SPAWN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NvidiaSmiError::Spawn { path: path.to_owned(), source })?;
    // Drain stdout on its own thread so a chatty child can never block on a full pipe.
    let stdout_reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).map(|_| s)
        })
    });
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                // Kill and reap; the reader thread ends once the pipe closes.
                let _ = child.kill();
                let _ = child.wait();
                return Err(NvidiaSmiError::Timeout { path: path.to_owned(), timeout });
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(25));
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NvidiaSmiError::Spawn { path: path.to_owned(), source });
            }
        }
    };
    let stdout = match stdout_reader.map(|h| h.join()) {
        Some(Ok(Ok(s))) => s,
        Some(Ok(Err(e))) => {
            return Err(NvidiaSmiError::Output { path: path.to_owned(), detail: format!("reading stdout: {e}") });
        }
        Some(Err(_)) | None => {
            return Err(NvidiaSmiError::Output { path: path.to_owned(), detail: "stdout unavailable".to_owned() });
        }
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        // nvidia-smi reports driver trouble on stdout, so use whichever says something.
        let message = if stderr.trim().is_empty() { stdout } else { stderr };
        let message: String = message.trim().chars().take(300).collect();
        return Err(NvidiaSmiError::Failed { path: path.to_owned(), status, message });
    }
    parse_query_gpu(&stdout).map_err(|detail| NvidiaSmiError::Output { path: path.to_owned(), detail })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_match_sysfs_form() {
        assert_eq!(normalise_pci_slot("00000000:01:00.0"), "0000:01:00.0");
        assert_eq!(normalise_pci_slot("00000001:0A:00.0"), "0001:0a:00.0");
        assert_eq!(normalise_pci_slot("0000:01:00.0"), "0000:01:00.0");
    }

    #[test]
    fn rows_with_unsupported_fields() {
        let rows = parse_query_gpu(
            "00000000:01:00.0, 45, 3, 24576, 1024\n00000000:02:00.0, [N/A], [Not Supported], 8192, 0\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].pci_slot, "0000:01:00.0");
        assert_eq!(rows[0].temperature_celsius, Some(45.0));
        assert_eq!(rows[0].utilisation_percent, Some(3.0));
        assert_eq!(rows[0].vram_total_bytes, Some(24576 * 1024 * 1024));
        assert_eq!(rows[0].vram_used_bytes, Some(1024 * 1024 * 1024));
        assert_eq!(rows[1].temperature_celsius, None);
        assert_eq!(rows[1].utilisation_percent, None);
        assert!(parse_query_gpu("No devices were found\n").is_err());
    }
}
