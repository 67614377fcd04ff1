//! Parsers for the kernel's `/proc` text files: `stat`, `meminfo`, `loadavg`, `pressure/*`,
//! `net/dev` and `<pid>/stat`.
//!
//! They take text and return data, so they read a fixture, the local `/proc` or the output of a
//! command on another host alike.

use macha_core::snapshot::{CpuTicks, Load, Memory, NetInterface, PressureLine};

/// The aggregate CPU line and the number of per-CPU lines of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatCpu {
    pub ticks: CpuTicks,
    /// Number of `cpuN` lines: the CPUs online right now.
    pub logical_cpus: u32,
}

/// Parses `/proc/stat`. Busy is user + nice + system + irq + softirq + steal (guest time is already
/// inside user and nice); idle is idle + iowait.
/// `/proc/sys/kernel/random/boot_id`: a UUID (36 characters of hex digits and dashes), or
/// `None` for anything else. What proves that a host rebooted.
pub fn parse_boot_id(text: &str) -> Option<String> {
    let id = text.trim();
    (id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then(|| id.to_owned())
}

pub fn parse_stat(text: &str) -> Result<StatCpu, String> {
    let mut ticks = None;
    let mut logical_cpus = 0u32;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else { continue };
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            logical_cpus += 1;
            continue;
        }
        if !rest.starts_with(' ') {
            continue;
        }
        let values = rest
            .split_ascii_whitespace()
            .map(|v| v.parse::<u64>().map_err(|e| format!("cpu line field {v:?}: {e}")))
            .collect::<Result<Vec<u64>, String>>()?;
        if values.len() < 4 {
            return Err(format!("cpu line has {} fields, expected at least 4", values.len()));
        }
        let field = |i: usize| values.get(i).copied().unwrap_or(0);
        let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| field(i)).fold(0u64, u64::saturating_add);
        let idle = field(3).saturating_add(field(4));
        ticks = Some(CpuTicks { busy, idle });
    }
    let ticks = ticks.ok_or("no aggregate \"cpu \" line")?;
    if logical_cpus == 0 {
        return Err("no per-CPU \"cpuN\" lines".to_owned());
    }
    Ok(StatCpu { ticks, logical_cpus })
}

/// Parses `/proc/meminfo` (values in kB) into bytes. `MemAvailable` is required (Linux ≥ 3.14);
/// swap lines missing (a kernel without swap support) mean no swap.
pub fn parse_meminfo(text: &str) -> Result<Memory, String> {
    let mut total = None;
    let mut available = None;
    let mut swap_total = None;
    let mut swap_free = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        let mut parts = value.split_ascii_whitespace();
        let number = parts
            .next()
            .ok_or_else(|| format!("{key}: no value"))?
            .parse::<u64>()
            .map_err(|e| format!("{key}: {e}"))?;
        let bytes = match parts.next() {
            Some("kB") => number.saturating_mul(1024),
            None => number,
            Some(unit) => return Err(format!("{key}: unknown unit {unit:?}")),
        };
        *slot = Some(bytes);
    }
    Ok(Memory {
        total_bytes: total.ok_or("no MemTotal line")?,
        available_bytes: available.ok_or("no MemAvailable line (kernel older than 3.14?)")?,
        swap_total_bytes: swap_total.unwrap_or(0),
        swap_free_bytes: swap_free.unwrap_or(0),
    })
}

/// Parses `/proc/loadavg`: `0.24 0.14 0.05 1/84 3980`.
pub fn parse_loadavg(text: &str) -> Result<Load, String> {
    let mut it = text.split_ascii_whitespace();
    let mut avg = |name: &str| -> Result<f64, String> {
        let v = it.next().ok_or_else(|| format!("missing {name} average"))?;
        v.parse::<f64>().map_err(|e| format!("{name} average {v:?}: {e}"))
    };
    let (one, five, fifteen) = (avg("1-minute")?, avg("5-minute")?, avg("15-minute")?);
    let tasks = it.next().ok_or("missing runnable/total field")?;
    let (runnable, processes) = tasks.split_once('/').ok_or_else(|| format!("bad runnable/total {tasks:?}"))?;
    Ok(Load {
        one,
        five,
        fifteen,
        runnable: runnable.parse().map_err(|e| format!("runnable {runnable:?}: {e}"))?,
        processes: processes.parse().map_err(|e| format!("total {processes:?}: {e}"))?,
    })
}

/// The `some` and `full` lines of one `/proc/pressure/<resource>` file.
#[derive(Debug, Clone, PartialEq)]
pub struct PressureFile {
    pub some: PressureLine,
    /// Absent for `cpu` before Linux 5.13.
    pub full: Option<PressureLine>,
}

/// Parses one PSI file: `some avg10=0.12 avg60=0.05 avg300=0.01 total=123456`.
pub fn parse_pressure(text: &str) -> Result<PressureFile, String> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let (mut avg10, mut avg60, mut avg300) = (None, None, None);
        for word in words {
            let Some((key, value)) = word.split_once('=') else { continue };
            let target = match key {
                "avg10" => &mut avg10,
                "avg60" => &mut avg60,
                "avg300" => &mut avg300,
                _ => continue,
            };
            *target = Some(value.parse::<f64>().map_err(|e| format!("{key}={value}: {e}"))?);
        }
        match (avg10, avg60, avg300) {
            (Some(avg10), Some(avg60), Some(avg300)) => *slot = Some(PressureLine { avg10, avg60, avg300 }),
            _ => return Err(format!("incomplete line {line:?}")),
        }
    }
    Ok(PressureFile { some: some.ok_or("no \"some\" line")?, full })
}

/// Parses `/proc/net/dev`: two header lines, then `name: 8 receive counters 8 transmit counters`.
pub fn parse_net_dev(text: &str) -> Result<Vec<NetInterface>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        // Interface names cannot contain ':' or whitespace, so the first ':' ends the name. The
        // header lines have '|' and no ':'.
        let Some((name, counters)) = line.split_once(':') else { continue };
        let name = name.trim();
        let values = counters
            .split_ascii_whitespace()
            .map(|v| v.parse::<u64>().map_err(|e| format!("{name}: counter {v:?}: {e}")))
            .collect::<Result<Vec<u64>, String>>()?;
        if values.len() < 16 {
            return Err(format!("{name}: {} counters, expected 16", values.len()));
        }
        out.push(NetInterface {
            name: name.to_owned(),
            rx_bytes: values[0],
            rx_errors: values[2],
            rx_dropped: values[3],
            tx_bytes: values[8],
            tx_errors: values[10],
            tx_dropped: values[11],
        });
    }
    Ok(out)
}

/// The fields of `/proc/<pid>/stat` the observer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStat {
    pub pid: i32,
    /// The kernel's `comm`: at most 15 bytes, may contain spaces, parentheses and any other byte.
    pub comm: String,
    /// `utime + stime`, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks; with the pid it identifies a process across scans.
    pub start_time: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses one `/proc/<pid>/stat` line. `comm` is everything between the first `(` and the *last*
/// `)`, since a process can name itself `a) b (c`.
pub fn parse_pid_stat(text: &str) -> Result<PidStat, String> {
    let open = text.find('(').ok_or("no '(' before comm")?;
    let close = text.rfind(')').ok_or("no ')' after comm")?;
    if close < open {
        return Err("')' before '('".to_owned());
    }
    let pid = text[..open].trim().parse::<i32>().map_err(|e| format!("pid: {e}"))?;
    let comm = text[open + 1..close].to_owned();
    // Fields after comm, numbered as in proc(5) minus 3: state is [0], utime (14) is [11].
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().take(22).collect();
    let num = |i: usize, name: &str| -> Result<u64, String> {
        let v = rest.get(i).ok_or_else(|| format!("missing {name}"))?;
        v.parse::<u64>().map_err(|e| format!("{name} {v:?}: {e}"))
    };
    let rss = rest.get(21).ok_or("missing rss")?;
    // rss is signed in the kernel's format string; a negative value is a transient accounting
    // artefact, read as zero.
    let rss_pages = match rss.parse::<i64>() {
        Ok(v) => u64::try_from(v).unwrap_or(0),
        Err(e) => return Err(format!("rss {rss:?}: {e}")),
    };
    Ok(PidStat {
        pid,
        comm,
        cpu_ticks: num(11, "utime")?.saturating_add(num(12, "stime")?),
        start_time: num(19, "starttime")?,
        rss_pages,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 175628 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
cpu1 1335862 31829 515329 13403366 5230 0 3195 0 24016 0
intr 1462898 0 0 0
ctxt 2375387
btime 1700000000
processes 12345
procs_running 2
procs_blocked 0
";

    #[test]
    fn boot_ids_are_uuids() {
        let id = "3f1c1d2e-8b9a-4c7d-9e0f-112233445566";
        assert_eq!(parse_boot_id(&format!("{id}\n")).as_deref(), Some(id));
        for bad in ["", "not-a-boot-id", "3f1c1d2e-8b9a-4c7d-9e0f-11223344556", "3f1c1d2e 8b9a 4c7d 9e0f 112233445566x"]
        {
            assert_eq!(parse_boot_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stat_busy_and_idle() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.logical_cpus, 2);
        assert_eq!(s.ticks.busy, 10132153 + 290696 + 3084719 + 25195);
        assert_eq!(s.ticks.idle, 46828483 + 16683);
    }

    #[test]
    fn stat_without_cpu_line_is_an_error() {
        assert!(parse_stat("intr 1 2 3\n").is_err());
        assert!(parse_stat("cpu  1 2 x 4\ncpu0 1 2 3 4\n").is_err());
    }

    #[test]
    fn meminfo_in_bytes() {
        let text = "MemTotal:       16303428 kB\nMemFree:         1234567 kB\nMemAvailable:   10000000 kB\n\
                    Buffers:          123 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097000 kB\n\
                    HugePages_Total:       0\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total_bytes, 16303428 * 1024);
        assert_eq!(m.available_bytes, 10000000 * 1024);
        assert_eq!(m.swap_total_bytes, 2097148 * 1024);
        assert_eq!(m.swap_free_bytes, 2097000 * 1024);
        let err = parse_meminfo("MemTotal: 1 kB\nMemFree: 1 kB\n").unwrap_err();
        assert!(err.contains("MemAvailable"), "{err}");
    }

    #[test]
    fn loadavg_fields() {
        let l = parse_loadavg("0.24 0.14 0.05 1/84 3980\n").unwrap();
        assert_eq!((l.one, l.five, l.fifteen, l.runnable, l.processes), (0.24, 0.14, 0.05, 1, 84));
        assert!(parse_loadavg("0.24 0.14\n").is_err());
    }

    #[test]
    fn pressure_some_and_full() {
        let p = parse_pressure(
            "some avg10=98.01 avg60=45.50 avg300=12.00 total=123456789\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(p.some, PressureLine { avg10: 98.01, avg60: 45.5, avg300: 12.0 });
        assert_eq!(p.full.unwrap().avg10, 0.0);
        // cpu before Linux 5.13: only a "some" line.
        let cpu = parse_pressure("some avg10=1.50 avg60=0.20 avg300=0.00 total=42\n").unwrap();
        assert!(cpu.full.is_none());
        assert!(parse_pressure("some avg10=1.50 total=42\n").is_err());
        assert!(parse_pressure("").is_err());
    }

    #[test]
    fn net_dev_counters() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1296570   12081    0    0    0     0          0         0  1296570   12081    0    0    0     0       0          0
  eth0: 987654321 654321   3    7    0     0          0       120 123456789 111111    1    2    0     0       0          0
wlp3s0:5 6 0 0 0 0 0 0 7 8 0 0 0 0 0 0
";
        let n = parse_net_dev(text).unwrap();
        assert_eq!(n.len(), 3);
        assert_eq!(n[1].name, "eth0");
        assert_eq!((n[1].rx_bytes, n[1].rx_errors, n[1].rx_dropped), (987654321, 3, 7));
        assert_eq!((n[1].tx_bytes, n[1].tx_errors, n[1].tx_dropped), (123456789, 1, 2));
        assert_eq!((n[2].name.as_str(), n[2].rx_bytes, n[2].tx_bytes), ("wlp3s0", 5, 7));
    }

    #[test]
    fn pid_stat_with_spaces_and_parentheses_in_comm() {
        let line = "4242 (tmux: server) S 1 4242 4242 0 -1 4194560 1200 0 0 0 150 75 0 0 20 0 1 0 98765 \
                    12345678 2048 18446744073709551615 1 1 0 0 0 0 0 3 1 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_pid_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "tmux: server");
        assert_eq!(s.cpu_ticks, 225);
        assert_eq!(s.start_time, 98765);
        assert_eq!(s.rss_pages, 2048);

        let hostile = "7 (a) R (b) c) S 1 7 7 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 555 0 -3\n";
        let s = parse_pid_stat(hostile).unwrap();
        assert_eq!(s.comm, "a) R (b) c");
        assert_eq!((s.cpu_ticks, s.start_time, s.rss_pages), (10, 555, 0));

        assert!(parse_pid_stat("12 (truncated) S 1 2").is_err());
    }
}
