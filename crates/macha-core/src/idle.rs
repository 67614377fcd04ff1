//! Heavy work only when the host is idle: the decision of the daemon's BATCH scheduler
//! (re-indexing the fleet's flake now; embedding and learning later), as a pure function of the
//! clock, the host's pressure and load, and the last run ([`should_run`]).
//!
//! A job runs only while CPU and memory pressure (PSI `some avg10`) and the load per CPU are below
//! their limits, not more often than its interval, and not before its CPU budget allows: a run
//! that used `c` ms of CPU is followed by a pause of `c × (100 − budget) / budget` ms, so batch
//! work takes at most `budget` percent of one CPU over time, however long a run takes.
//!
//! A run also has a memory budget ([`memory_over`]): the daemon's resident memory may grow by at
//! most `memory_max_mib` during one run. The run looks at each of its batch boundaries and, over
//! the budget, stops there; what it did is kept and the next run goes on from there.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// The limits (`knowledge.idle.*`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IdleLimits {
    /// CPU pressure, `some avg10` in percent, above which work waits.
    pub max_cpu_pressure: f64,
    /// Memory pressure, `some avg10` in percent, above which work waits.
    pub max_memory_pressure: f64,
    /// The 1-minute load average divided by the CPUs, above which work waits.
    pub max_load_per_cpu: f64,
    /// The shortest time between two runs of a job, in milliseconds.
    pub min_interval_ms: i64,
    /// The share of one CPU batch work may take over time, in percent (1-100).
    pub cpu_budget_percent: u32,
    /// How much the daemon's resident memory may grow during one run, in MiB (at least 1).
    pub memory_max_mib: u64,
}

impl Default for IdleLimits {
    fn default() -> Self {
        IdleLimits {
            max_cpu_pressure: 10.0,
            max_memory_pressure: 5.0,
            max_load_per_cpu: 0.7,
            min_interval_ms: 60_000,
            cpu_budget_percent: 25,
            memory_max_mib: 256,
        }
    }
}

/// How busy the host is now; `None` where it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HostPressure {
    pub cpu_some_avg10: Option<f64>,
    pub memory_some_avg10: Option<f64>,
    pub load_one: Option<f64>,
    pub logical_cpus: u32,
}

/// A job's last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub ended_at: Timestamp,
    /// CPU time the run used, in milliseconds.
    pub cpu_ms: u64,
}

/// Why a job waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Defer {
    /// Ran less than the interval ago, or its CPU budget is spent: not before `until`.
    NotDue {
        until: Timestamp,
    },
    CpuPressure {
        avg10: f64,
        max: f64,
    },
    MemoryPressure {
        avg10: f64,
        max: f64,
    },
    Load {
        per_cpu: f64,
        max: f64,
    },
    /// The load could not be read: a host Macha cannot see is not assumed idle.
    LoadUnknown,
}

impl std::fmt::Display for Defer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Defer::NotDue { until } => write!(f, "not due before {until}"),
            Defer::CpuPressure { avg10, max } => write!(f, "CPU pressure {avg10:.1}% > {max:.1}%"),
            Defer::MemoryPressure { avg10, max } => write!(f, "memory pressure {avg10:.1}% > {max:.1}%"),
            Defer::Load { per_cpu, max } => write!(f, "load {per_cpu:.2} per CPU > {max:.2}"),
            Defer::LoadUnknown => write!(f, "the load could not be read"),
        }
    }
}

/// Run now, or wait and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Run,
    Defer(Defer),
}

/// When a job may run next after `last`: the interval, or the pause its CPU budget asks for,
/// whichever is later.
pub fn next_allowed(last: &LastRun, limits: &IdleLimits) -> Timestamp {
    let budget = i64::from(limits.cpu_budget_percent.clamp(1, 100));
    let cpu = i64::try_from(last.cpu_ms).unwrap_or(i64::MAX);
    let pause = cpu.saturating_mul(100 - budget) / budget;
    Timestamp(last.ended_at.0.saturating_add(pause.max(limits.min_interval_ms)))
}

/// Whether a pending job runs now. PSI that cannot be read (a kernel without it) is no reason to
/// wait; a load that cannot be read is.
pub fn should_run(now: Timestamp, pressure: &HostPressure, last: Option<&LastRun>, limits: &IdleLimits) -> Decision {
    if let Some(last) = last {
        let until = next_allowed(last, limits);
        if now < until {
            return Decision::Defer(Defer::NotDue { until });
        }
    }
    if let Some(avg10) = pressure.cpu_some_avg10
        && avg10 > limits.max_cpu_pressure
    {
        return Decision::Defer(Defer::CpuPressure { avg10, max: limits.max_cpu_pressure });
    }
    if let Some(avg10) = pressure.memory_some_avg10
        && avg10 > limits.max_memory_pressure
    {
        return Decision::Defer(Defer::MemoryPressure { avg10, max: limits.max_memory_pressure });
    }
    let Some(load) = pressure.load_one else { return Decision::Defer(Defer::LoadUnknown) };
    let per_cpu = load / f64::from(pressure.logical_cpus.max(1));
    if per_cpu > limits.max_load_per_cpu {
        return Decision::Defer(Defer::Load { per_cpu, max: limits.max_load_per_cpu });
    }
    Decision::Run
}

/// A run that went over its memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryOver {
    /// How much the resident memory grew since the run began, in bytes.
    pub grown: u64,
    /// The budget, in bytes.
    pub max: u64,
}

impl std::fmt::Display for MemoryOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = 1024.0 * 1024.0;
        write!(
            f,
            "memory grew by {:.1} MiB during the run, over its budget of {:.1} MiB",
            self.grown as f64 / MIB,
            self.max as f64 / MIB
        )
    }
}

/// Whether a run whose process had `base` bytes resident when it began, and has `now` bytes now,
/// is over the budget (`memory_max_mib`). Memory given back during the run is not a credit.
pub fn memory_over(base: u64, now: u64, limits: &IdleLimits) -> Option<MemoryOver> {
    let max = limits.memory_max_mib.max(1).saturating_mul(1024 * 1024);
    let grown = now.saturating_sub(base);
    (grown > max).then_some(MemoryOver { grown, max })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn quiet() -> HostPressure {
        HostPressure { cpu_some_avg10: Some(0.5), memory_some_avg10: Some(0.0), load_one: Some(0.2), logical_cpus: 2 }
    }

    #[test]
    fn a_quiet_host_runs_a_pending_job_at_once() {
        assert_eq!(should_run(Timestamp(0), &quiet(), None, &IdleLimits::default()), Decision::Run);
    }

    #[test]
    fn pressure_or_load_over_a_limit_defers_with_the_reason() {
        let limits = IdleLimits::default();
        let busy_cpu = HostPressure { cpu_some_avg10: Some(35.0), ..quiet() };
        assert_eq!(
            should_run(Timestamp(0), &busy_cpu, None, &limits),
            Decision::Defer(Defer::CpuPressure { avg10: 35.0, max: 10.0 })
        );
        let swapping = HostPressure { memory_some_avg10: Some(12.5), ..quiet() };
        assert!(matches!(
            should_run(Timestamp(0), &swapping, None, &limits),
            Decision::Defer(Defer::MemoryPressure { .. })
        ));
        // Load 1.8 on 2 CPUs is 0.9 per CPU, over 0.7.
        let loaded = HostPressure { load_one: Some(1.8), ..quiet() };
        match should_run(Timestamp(0), &loaded, None, &limits) {
            Decision::Defer(Defer::Load { per_cpu, max }) => assert!((per_cpu - 0.9).abs() < 1e-9 && max == 0.7),
            other => panic!("{other:?}"),
        }
        // No PSI (a kernel without it) is no reason to wait; an unknown load is.
        let no_psi = HostPressure { cpu_some_avg10: None, memory_some_avg10: None, ..quiet() };
        assert_eq!(should_run(Timestamp(0), &no_psi, None, &limits), Decision::Run);
        let blind = HostPressure { load_one: None, ..quiet() };
        assert_eq!(should_run(Timestamp(0), &blind, None, &limits), Decision::Defer(Defer::LoadUnknown));
    }

    #[test]
    fn the_interval_and_the_cpu_budget_space_runs_out_on_a_simulated_clock() {
        let limits = IdleLimits { min_interval_ms: 60_000, cpu_budget_percent: 25, ..IdleLimits::default() };
        // A cheap run: the interval decides.
        let cheap = LastRun { ended_at: Timestamp(1_000_000), cpu_ms: 100 };
        assert_eq!(
            should_run(Timestamp(1_059_999), &quiet(), Some(&cheap), &limits),
            Decision::Defer(Defer::NotDue { until: Timestamp(1_060_000) })
        );
        assert_eq!(should_run(Timestamp(1_060_000), &quiet(), Some(&cheap), &limits), Decision::Run);
        // A run that used 40 s of CPU at a 25 % budget waits 120 s: 40 of every 160 s at most.
        let heavy = LastRun { ended_at: Timestamp(1_000_000), cpu_ms: 40_000 };
        assert_eq!(next_allowed(&heavy, &limits), Timestamp(1_120_000));
        assert!(matches!(
            should_run(Timestamp(1_100_000), &quiet(), Some(&heavy), &limits),
            Decision::Defer(Defer::NotDue { .. })
        ));
        assert_eq!(should_run(Timestamp(1_120_000), &quiet(), Some(&heavy), &limits), Decision::Run);
        // Due again but busy: the pressure is the reason, not the clock.
        let busy = HostPressure { cpu_some_avg10: Some(50.0), ..quiet() };
        assert!(matches!(
            should_run(Timestamp(2_000_000), &busy, Some(&heavy), &limits),
            Decision::Defer(Defer::CpuPressure { .. })
        ));
    }

    #[test]
    fn a_run_over_its_memory_budget_is_told_so() {
        const MIB: u64 = 1024 * 1024;
        let limits = IdleLimits { memory_max_mib: 64, ..IdleLimits::default() };
        assert_eq!(memory_over(100 * MIB, 164 * MIB, &limits), None, "exactly the budget is within it");
        let over = memory_over(100 * MIB, 165 * MIB, &limits).unwrap();
        assert_eq!(over, MemoryOver { grown: 65 * MIB, max: 64 * MIB });
        assert_eq!(over.to_string(), "memory grew by 65.0 MiB during the run, over its budget of 64.0 MiB");
        // Shrinking is no credit and no error.
        assert_eq!(memory_over(100 * MIB, 10 * MIB, &limits), None);
        // A budget of 0 counts as 1 MiB.
        let tiny = IdleLimits { memory_max_mib: 0, ..IdleLimits::default() };
        assert!(memory_over(0, MIB + 1, &tiny).is_some() && memory_over(0, MIB, &tiny).is_none());
    }
}
