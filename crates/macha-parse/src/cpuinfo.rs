//! CPU and device identity from text: `/proc/cpuinfo`, the kernel's CPU lists (`0-3,8`) and the
//! hexadecimal ids sysfs and `lspci` print.

use std::collections::HashSet;

/// `0x1002` or `1002` → `1002` (lower case, as `lspci -n` prints it).
pub fn normalise_hex_id(raw: &str) -> String {
    let raw = raw.trim();
    raw.strip_prefix("0x").unwrap_or(raw).to_ascii_lowercase()
}

/// Counts the CPUs in a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Result<u32, String> {
    let mut count = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let first: u32 = first.parse().map_err(|e| format!("{part:?}: {e}"))?;
        let last: u32 = last.parse().map_err(|e| format!("{part:?}: {e}"))?;
        if last < first {
            return Err(format!("{part:?}: descending range"));
        }
        count = count.saturating_add(last - first + 1);
    }
    Ok(count)
}

/// What `/proc/cpuinfo` says about the CPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    pub model: Option<String>,
    pub processors: u32,
    /// Distinct `(physical id, core id)` pairs (x86 only).
    pub cores: u32,
}

/// Parses `/proc/cpuinfo`. The model comes from `model name` (x86), else `Model` (Raspberry Pi and
/// other device-tree boards), `cpu model` (MIPS) or `cpu` (POWER).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut found: [Option<&str>; 4] = [None; 4];
    let mut processors = 0u32;
    let mut pairs = HashSet::new();
    let mut physical_id = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            physical_id = None;
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let slot = match key {
            "processor" => {
                processors += 1;
                None
            }
            "model name" => Some(0),
            "Model" => Some(1),
            "cpu model" => Some(2),
            "cpu" => Some(3),
            "physical id" => {
                physical_id = Some(value);
                None
            }
            "core id" => {
                pairs.insert((physical_id.unwrap_or(""), value));
                None
            }
            _ => None,
        };
        if let Some(i) = slot
            && found[i].is_none()
            && !value.is_empty()
        {
            found[i] = Some(value);
        }
    }
    CpuInfo {
        model: found.iter().flatten().next().map(|s| (*s).to_owned()),
        processors,
        cores: u32::try_from(pairs.len()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3\n"), Ok(4));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Ok(7));
        assert_eq!(parse_cpu_list("0"), Ok(1));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }

    #[test]
    fn cpuinfo_x86_and_arm() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 9 7950X 16-Core Processor\n\
                   physical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nmodel name\t: AMD Ryzen 9 7950X 16-Core Processor\n\
                   physical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 2\nphysical id\t: 0\ncore id\t\t: 1\n";
        let info = parse_cpuinfo(x86);
        assert_eq!(info.model.as_deref(), Some("AMD Ryzen 9 7950X 16-Core Processor"));
        assert_eq!((info.processors, info.cores), (3, 2));

        let pi = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd08\n\nprocessor\t: 1\n\n\
                  Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        let info = parse_cpuinfo(pi);
        assert_eq!(info.model.as_deref(), Some("Raspberry Pi 4 Model B Rev 1.4"));
        assert_eq!((info.processors, info.cores), (2, 0));
    }

    #[test]
    fn hex_ids() {
        assert_eq!(normalise_hex_id("0x1002\n"), "1002");
        assert_eq!(normalise_hex_id("73BF"), "73bf");
    }
}
