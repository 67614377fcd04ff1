//! Deploying to several hosts: the plan, a pure scheduler that says which hosts start now, and the
//! one summary table.
//!
//! [`Scheduler::next`] is called with the final states so far whenever one arrives (and once at the
//! start). It starts the canary alone first and nothing else until the canary succeeded; then up to
//! `parallel` hosts at a time, in the plan's order. After a failure (any final state but
//! `Succeeded`) with `stop_on_failure`, or after a failed canary whatever the option, nothing new
//! starts: the hosts already running finish, and [`Scheduler::not_started`] reports every other host
//! `Refused { reason: "not started: …" }`, so every host of the plan has a final state.

use crate::binding::StorePath;
use crate::machine::Final;
use macha_core::HostName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

/// The default number of hosts deployed at once.
pub const DEFAULT_PARALLEL: usize = 10;
/// The most hosts deployed at once.
pub const MAX_PARALLEL: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("a deploy needs at least one host")]
    NoHosts,
    #[error("{0} is named twice")]
    Duplicate(HostName),
    #[error("parallel must be between 1 and {MAX_PARALLEL}, not {0}")]
    Parallel(usize),
    #[error("the canary {0} is not one of the hosts deployed")]
    CanaryNotInPlan(HostName),
}

/// What to deploy where, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetPlan {
    pub hosts: Vec<HostName>,
    pub parallel: usize,
    pub canary: Option<HostName>,
    pub stop_on_failure: bool,
}

impl FleetPlan {
    /// A plan with the defaults: 10 at once, no canary, go on after a failure.
    pub fn new(hosts: Vec<HostName>) -> FleetPlan {
        FleetPlan { hosts, parallel: DEFAULT_PARALLEL, canary: None, stop_on_failure: false }
    }

    pub fn validate(&self) -> Result<(), FleetError> {
        if self.hosts.is_empty() {
            return Err(FleetError::NoHosts);
        }
        if !(1..=MAX_PARALLEL).contains(&self.parallel) {
            return Err(FleetError::Parallel(self.parallel));
        }
        let mut seen = BTreeSet::new();
        for h in &self.hosts {
            if !seen.insert(h) {
                return Err(FleetError::Duplicate(h.clone()));
            }
        }
        if let Some(c) = &self.canary
            && !seen.contains(c)
        {
            return Err(FleetError::CanaryNotInPlan(c.clone()));
        }
        Ok(())
    }
}

/// Decides which hosts start when.
#[derive(Debug, Clone)]
pub struct Scheduler {
    plan: FleetPlan,
    started: Vec<HostName>,
    stopped: Option<String>,
}

impl Scheduler {
    pub fn new(plan: FleetPlan) -> Result<Scheduler, FleetError> {
        plan.validate()?;
        Ok(Scheduler { plan, started: Vec::new(), stopped: None })
    }

    pub fn plan(&self) -> &FleetPlan {
        &self.plan
    }

    /// The hosts to start now, given every final state so far (results of hosts outside the plan
    /// are ignored).
    pub fn next(&mut self, results: &BTreeMap<HostName, Final>) -> Vec<HostName> {
        let started: BTreeSet<&HostName> = self.started.iter().collect();
        if self.stopped.is_none() {
            let canary = self.plan.canary.as_ref();
            let failed = self.started.iter().find_map(|h| {
                let f = results.get(h)?;
                let stops = self.plan.stop_on_failure || Some(h) == canary;
                (!f.is_success() && stops).then_some((h, f))
            });
            if let Some((h, f)) = failed {
                let who = if Some(h) == canary { "the canary " } else { "" };
                self.stopped = Some(format!("not started: {who}{h} ended {f}"));
            }
        }
        if self.stopped.is_some() {
            return Vec::new();
        }
        if let Some(canary) = &self.plan.canary {
            if !started.contains(canary) {
                self.started.push(canary.clone());
                return vec![canary.clone()];
            }
            if !results.contains_key(canary) {
                return Vec::new();
            }
        }
        let running = self.started.iter().filter(|h| !results.contains_key(*h)).count();
        let room = self.plan.parallel.saturating_sub(running);
        let now: Vec<HostName> = self.plan.hosts.iter().filter(|h| !started.contains(h)).take(room).cloned().collect();
        self.started.extend(now.iter().cloned());
        now
    }

    /// Whether the scheduler stopped starting hosts, and why.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Every host that was never started, as refused, once the scheduler stopped (else nothing).
    pub fn not_started(&self) -> Vec<(HostName, Final)> {
        let Some(reason) = &self.stopped else { return Vec::new() };
        self.plan
            .hosts
            .iter()
            .filter(|h| !self.started.contains(h))
            .map(|h| (h.clone(), Final::Refused { reason: reason.clone() }))
            .collect()
    }

    /// Whether every host has a final state (from `results`, or as not started).
    pub fn is_finished(&self, results: &BTreeMap<HostName, Final>) -> bool {
        let running = self.started.iter().any(|h| !results.contains_key(h));
        let waiting = self.stopped.is_none() && self.started.len() < self.plan.hosts.len();
        !running && !waiting
    }
}

/// One host's line of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub host: HostName,
    /// `None` while the deploy runs.
    pub final_state: Option<Final>,
    pub old: Option<StorePath>,
    pub new: Option<StorePath>,
    /// Each phase and how long it took, in order.
    pub phases: Vec<(String, Duration)>,
    /// What happened along the way, in sentences.
    pub notes: Vec<String>,
}

impl SummaryRow {
    /// A row for a host that never started.
    pub fn not_started(host: HostName, final_state: Final) -> SummaryRow {
        SummaryRow { host, final_state: Some(final_state), old: None, new: None, phases: Vec::new(), notes: Vec::new() }
    }
}

/// The table printed at the end of a deploy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub rows: Vec<SummaryRow>,
}

impl FleetSummary {
    /// The exit code of the whole deploy: that of its worst host (0 only if every host
    /// succeeded; a host still running counts as unknown).
    pub fn exit_code(&self) -> u8 {
        self.rows.iter().map(|r| r.final_state.as_ref().unwrap_or(&Final::Unknown).exit_code()).max().unwrap_or(0)
    }

    /// A plain-text table, one host per line sorted by host, then the notes and the reasons of the
    /// hosts that did not succeed. Deterministic.
    pub fn render(&self) -> String {
        let mut rows: Vec<&SummaryRow> = self.rows.iter().collect();
        rows.sort_by(|a, b| a.host.cmp(&b.host));
        let cells: Vec<[String; 4]> = rows
            .iter()
            .map(|r| {
                let state = r.final_state.as_ref().map_or("running", Final::as_str).to_owned();
                let change = match (&r.old, &r.new) {
                    (Some(o), Some(n)) => format!("{} → {}", short(o), short(n)),
                    _ => "-".to_owned(),
                };
                let phases = if r.phases.is_empty() {
                    "-".to_owned()
                } else {
                    r.phases.iter().map(|(p, d)| format!("{p} {}", seconds(*d))).collect::<Vec<_>>().join(", ")
                };
                [r.host.to_string(), state, change, phases]
            })
            .collect();
        let header = ["HOST", "RESULT", "OLD → NEW", "PHASES"];
        let mut width = header.map(|h| h.chars().count());
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c.iter()) {
                *w = (*w).max(s.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |c: [&str; 4]| {
            let _ =
                writeln!(out, "{}  {}  {}  {}", pad(c[0], width[0]), pad(c[1], width[1]), pad(c[2], width[2]), c[3]);
        };
        line(header);
        for c in &cells {
            line([&c[0], &c[1], &c[2], &c[3]]);
        }
        for r in rows {
            let reason = match &r.final_state {
                Some(Final::Refused { reason }) => Some(reason.as_str()),
                _ => None,
            };
            if reason.is_none() && r.notes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{}:", r.host);
            if let Some(reason) = reason {
                let _ = writeln!(out, "  {reason}");
            }
            for n in &r.notes {
                let _ = writeln!(out, "  {n}");
            }
        }
        out
    }
}

/// A store path shortened for the table: the first 8 characters of its hash and its name.
fn short(p: &StorePath) -> String {
    format!("{}…-{}", p.hash_part().get(..8).unwrap_or_default(), p.name())
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::binding::parse_store_path;

    fn hosts(n: usize) -> Vec<HostName> {
        (1..=n).map(|i| HostName::parse(&format!("h{i:02}")).unwrap()).collect()
    }

    fn h(name: &str) -> HostName {
        HostName::parse(name).unwrap()
    }

    fn names(v: &[HostName]) -> Vec<&str> {
        v.iter().map(HostName::as_str).collect()
    }

    #[test]
    fn plans_are_validated() {
        assert_eq!(FleetPlan::new(Vec::new()).validate(), Err(FleetError::NoHosts));
        assert_eq!(FleetPlan::new(hosts(3)).parallel, 10);
        assert_eq!(FleetPlan { parallel: 0, ..FleetPlan::new(hosts(1)) }.validate(), Err(FleetError::Parallel(0)));
        assert_eq!(FleetPlan { parallel: 65, ..FleetPlan::new(hosts(1)) }.validate(), Err(FleetError::Parallel(65)));
        assert!(FleetPlan { parallel: 64, ..FleetPlan::new(hosts(1)) }.validate().is_ok());
        let mut dup = hosts(2);
        dup.push(h("h01"));
        assert_eq!(FleetPlan::new(dup).validate(), Err(FleetError::Duplicate(h("h01"))));
        let plan = FleetPlan { canary: Some(h("elsewhere")), ..FleetPlan::new(hosts(2)) };
        assert!(matches!(plan.validate(), Err(FleetError::CanaryNotInPlan(_))));
        assert!(Scheduler::new(FleetPlan::new(Vec::new())).is_err());
    }

    #[test]
    fn at_most_parallel_hosts_run_at_once_in_plan_order() {
        let mut s = Scheduler::new(FleetPlan { parallel: 3, ..FleetPlan::new(hosts(7)) }).unwrap();
        let mut results = BTreeMap::new();
        assert_eq!(names(&s.next(&results)), ["h01", "h02", "h03"]);
        assert!(s.next(&results).is_empty(), "no room");
        results.insert(h("h02"), Final::Succeeded);
        assert_eq!(names(&s.next(&results)), ["h04"]);
        // Without stop_on_failure, a failure does not stop the rest.
        results.insert(h("h01"), Final::RolledBack);
        results.insert(h("h03"), Final::Succeeded);
        assert_eq!(names(&s.next(&results)), ["h05", "h06"]);
        for x in ["h04", "h05", "h06"] {
            results.insert(h(x), Final::Succeeded);
        }
        assert!(!s.is_finished(&results));
        assert_eq!(names(&s.next(&results)), ["h07"]);
        results.insert(h("h07"), Final::Succeeded);
        assert!(s.next(&results).is_empty());
        assert!(s.is_finished(&results));
        assert!(s.not_started().is_empty());
    }

    #[test]
    fn the_canary_runs_alone_first() {
        let plan = FleetPlan { canary: Some(h("h03")), parallel: 10, ..FleetPlan::new(hosts(4)) };
        let mut s = Scheduler::new(plan).unwrap();
        let mut results = BTreeMap::new();
        assert_eq!(names(&s.next(&results)), ["h03"]);
        assert!(s.next(&results).is_empty(), "nothing else while the canary runs");
        results.insert(h("h03"), Final::Succeeded);
        assert_eq!(names(&s.next(&results)), ["h01", "h02", "h04"]);
    }

    #[test]
    fn a_failed_canary_stops_everything_else() {
        let plan = FleetPlan { canary: Some(h("h01")), ..FleetPlan::new(hosts(3)) };
        let mut s = Scheduler::new(plan).unwrap();
        let mut results = BTreeMap::new();
        s.next(&results);
        results.insert(h("h01"), Final::Unknown);
        assert!(s.next(&results).is_empty());
        assert!(s.is_finished(&results));
        let rest = s.not_started();
        assert_eq!(rest.len(), 2);
        let Final::Refused { reason } = &rest[0].1 else { panic!() };
        assert_eq!(reason, "not started: the canary h01 ended unknown");
    }

    #[test]
    fn stop_on_failure_starts_nothing_new_and_reports_the_rest() {
        let plan = FleetPlan { parallel: 2, stop_on_failure: true, ..FleetPlan::new(hosts(5)) };
        let mut s = Scheduler::new(plan).unwrap();
        let mut results = BTreeMap::new();
        assert_eq!(s.next(&results).len(), 2);
        results.insert(h("h01"), Final::Refused { reason: "preflight: locked".into() });
        assert!(s.next(&results).is_empty());
        assert!(!s.is_finished(&results), "h02 still runs");
        results.insert(h("h02"), Final::Succeeded);
        assert!(s.next(&results).is_empty());
        assert!(s.is_finished(&results));
        let rest = s.not_started();
        assert_eq!(rest.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(), ["h03", "h04", "h05"]);
        assert!(rest.iter().all(
            |(_, f)| matches!(f, Final::Refused { reason } if reason.starts_with("not started: h01 ended refused"))
        ));
    }

    #[test]
    fn the_summary_is_a_deterministic_table_with_the_worst_exit_code() {
        let old = parse_store_path("/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixos-system-a").unwrap();
        let new = parse_store_path("/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-a").unwrap();
        let summary = FleetSummary {
            rows: vec![
                SummaryRow {
                    host: h("web2"),
                    final_state: Some(Final::RolledBack),
                    old: Some(old.clone()),
                    new: Some(new.clone()),
                    phases: vec![
                        ("preflight".into(), Duration::from_millis(1200)),
                        ("copy".into(), Duration::from_secs(30)),
                    ],
                    notes: vec!["the activation exited 1".into()],
                },
                SummaryRow {
                    host: h("web1"),
                    final_state: Some(Final::Succeeded),
                    old: Some(old),
                    new: Some(new),
                    phases: vec![("preflight".into(), Duration::from_secs(1))],
                    notes: Vec::new(),
                },
                SummaryRow::not_started(
                    h("web3"),
                    Final::Refused { reason: "not started: web2 ended rolled back".into() },
                ),
            ],
        };
        let text = summary.render();
        assert_eq!(text, summary.clone().render());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("HOST  RESULT       OLD → NEW"), "{text}");
        assert!(
            lines[1]
                .starts_with("web1  succeeded    0a1b2c3d…-nixos-system-a → zyxwvsrq…-nixos-system-a  preflight 1.0s"),
            "{text}"
        );
        assert!(lines[2].contains("rolled back") && lines[2].ends_with("preflight 1.2s, copy 30.0s"), "{text}");
        assert!(lines[3].starts_with("web3  refused      -"), "{text}");
        assert!(text.contains("\nweb2:\n  the activation exited 1\n"));
        assert!(text.contains("\nweb3:\n  not started: web2 ended rolled back\n"));
        assert_eq!(summary.exit_code(), 4);
        assert_eq!(FleetSummary::default().exit_code(), 0);
        let running = FleetSummary { rows: vec![SummaryRow { final_state: None, ..summary.rows[1].clone() }] };
        assert_eq!(running.exit_code(), 5, "a host still running is not a success");
    }
}
