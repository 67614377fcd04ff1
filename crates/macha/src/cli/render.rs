//! Text and JSON output of the client commands.

use crate::api::reply::{ApprovalView, AuditEntry, CheckReport, IssueView};
use crate::config::Config;
use macha_core::action::{Action, ActionKind, DiagnosticArgs, DiagnosticName, Hosts, SwitchTarget};
use macha_core::policy::{self, Autonomy};
use macha_core::snapshot::Section;
use macha_core::{HostName, Timestamp, UnitName};

/// The order in which the gate applies its rules, for `macha policy show`.
pub const POLICY_RULES: [&str; 11] = [
    "invalid: an action that does not validate is denied",
    "observe: at autonomy observe nothing executes (deny)",
    "unknown-host: a host that is not local or a trusted registry host is denied",
    "unit-type / protected: unit actions only on service/socket/timer/path units, never on protected units (deny)",
    "restart of a stopped unit: decided as start_unit (the executor refuses a restart that would start a unit unless the permit covers a start)",
    "approval-mismatch: an approval permits only the exact stored action it was given for (deny)",
    "flap-limit: the same action on the same target too often within the window needs approval; an approval does not lift it",
    "multi-host: an action touching several hosts needs approval",
    "always-approval: power, stopping units, config changes, store repair and deployments need approval",
    "cleanup-floor: a journal vacuum or garbage collection younger than policy.cleanup_min_age_days needs approval",
    "autonomy / model-proposal: executes if the autonomy level allows its class and, for the model's proposals, llm.may_execute lists its kind; else needs approval",
];

/// A representative action of each kind, on an unprotected unit of the local host.
pub fn sample_action(kind: ActionKind) -> Action {
    let host = Hosts::One(HostName::local());
    let reason = String::from("policy table");
    let Ok(unit) = UnitName::parse("example.service") else {
        return Action::StoreVerify { host, reason };
    };
    match kind {
        ActionKind::RestartUnit => Action::RestartUnit { host, unit, reason },
        ActionKind::StartUnit => Action::StartUnit { host, unit, reason },
        ActionKind::StopUnit => Action::StopUnit { host, unit, reason },
        ActionKind::ResetFailed => Action::ResetFailed { host, unit, reason },
        ActionKind::JournalVacuum => Action::JournalVacuum { host, max_age_days: 30, reason },
        ActionKind::CollectGarbage => Action::CollectGarbage { host, older_than_days: 30, reason },
        ActionKind::StoreVerify => Action::StoreVerify { host, reason },
        ActionKind::StoreRepair => Action::StoreRepair { host, reason },
        ActionKind::Diagnostic => {
            Action::Diagnostic { host, name: DiagnosticName::FailedUnits, args: DiagnosticArgs::default(), reason }
        }
        ActionKind::Reboot => Action::Reboot { host, reason },
        ActionKind::ConfigChange => Action::ConfigChange {
            host,
            path: "/etc/nixos/configuration.nix".into(),
            patch: "--- a\n+++ b\n".into(),
            reason,
        },
        ActionKind::NixosSwitch => {
            let path = |name: &str| macha_core::StorePath::parse(&format!("/nix/store/{}-{name}", "0".repeat(32))).ok();
            match (path("nixos-system-new"), path("nixos-system-old")) {
                (Some(system), Some(previous)) => Action::NixosSwitch {
                    host,
                    target: Box::new(SwitchTarget { system, previous, flake: Some("/etc/nixos#host".into()) }),
                    reason,
                },
                _ => Action::Reboot { host, reason },
            }
        }
    }
}

pub fn policy_table(protected: &policy::ProtectedUnits, config: &Config) {
    println!(
        "{:<16} {:<9} {:<16} {:<9} {:<9} {:<9} {:<9}  note",
        "kind", "risk", "class", "observe", "suggest", "auto-safe", "auto-full"
    );
    for row in policy::POLICY_TABLE {
        let class =
            serde_json::to_value(row.class).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let v: Vec<&str> =
            Autonomy::ALL.iter().map(|a| super::commands::verdict_for_table(row.kind, *a).as_str()).collect();
        println!(
            "{:<16} {:<9} {:<16} {:<9} {:<9} {:<9} {:<9}  {}",
            row.kind.as_str(),
            row.risk.as_str(),
            class,
            v[0],
            v[1],
            v[2],
            v[3],
            row.note
        );
    }
    println!();
    println!("Verdicts are for an unprotected unit on the local host. Rules, in order:");
    for r in POLICY_RULES {
        println!("  - {r}");
    }
    println!();
    println!(
        "Flap limit: {} runs of the same action on the same target within {}.",
        config.flap_limit,
        humantime::format_duration(config.flap_window)
    );
    println!("Unit actions only on: {}.", policy::MANAGED_UNIT_TYPES.join(", "));
    println!(
        "The model's proposals execute only: {} (llm.may_execute); clean-ups younger than {} days need a person.",
        config.llm.may_execute.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
        config.cleanup_min_age_days
    );
    println!("Protected units (never acted on; a trailing * is a prefix):");
    for (pattern, reason) in protected.entries() {
        println!("  {pattern:<28} {reason}");
    }
}

fn ts(t: Timestamp) -> String {
    t.to_string()
}

/// Prints a typed answer as pretty JSON, its object keys sorted (as `--json` always printed them).
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&serde_json::to_value(v)?)?);
    Ok(())
}

fn describe_action(v: &serde_json::Value) -> String {
    serde_json::from_value::<Action>(v.clone()).map(|a| a.describe()).unwrap_or_else(|_| v.to_string())
}

pub fn approvals(records: &[ApprovalView], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&records);
    }
    let records = &super::term::scrub(records.to_vec())?;
    if records.is_empty() {
        println!("no approval requests");
        return Ok(());
    }
    println!("{:>5}  {:<9} {:<8} {:<24}  action", "id", "state", "risk", "requested");
    for r in records {
        println!(
            "{:>5}  {:<9} {:<8} {:<24}  {}",
            r.id,
            r.state.as_str(),
            r.decision.risk.map_or("?", policy::Risk::as_str),
            ts(r.requested_at),
            describe_action(&r.action)
        );
    }
    Ok(())
}

pub fn approval(detail: &crate::api::reply::ApprovalDetail, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(detail);
    }
    let detail = &super::term::scrub(detail.clone())?;
    let r = &detail.approval;
    println!("approval {}: {}", r.id, r.state.as_str());
    println!("  action:     {}", describe_action(&r.action));
    println!("  reason:     {}", r.reason);
    if let Some(issue) = r.issue_id {
        println!("  issue:      {issue} (macha issues show {issue})");
    }
    println!("  risk:       {}", r.decision.risk.map_or("?", policy::Risk::as_str));
    println!("  policy:     {}", r.decision.reason.as_deref().unwrap_or("?"));
    println!("  requested:  {} by {}", ts(r.requested_at), r.requested_by);
    println!("  expires:    {}", ts(r.expires_at));
    if let (Some(by), Some(at)) = (&r.decided_by, r.decided_at) {
        println!(
            "  decided:    {} by {}{}",
            ts(at),
            by,
            r.decision_note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    if let Some(res) = &r.result {
        println!("  result:     {res}");
    }
    println!("  action JSON: {}", r.action);
    audit_section(&detail.audit);
    Ok(())
}

pub fn issues(records: &[IssueView], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&records);
    }
    let records = &super::term::scrub(records.to_vec())?;
    if records.is_empty() {
        println!("no issues");
        return Ok(());
    }
    println!("{:>5}  {:<9} {:<9} {:<10} {:<24}  summary", "id", "state", "severity", "host", "last seen");
    for r in records {
        println!(
            "{:>5}  {:<9} {:<9} {:<10} {:<24}  {}",
            r.id,
            r.state.as_str(),
            r.severity.as_str(),
            r.host,
            ts(r.last_seen),
            r.summary
        );
    }
    Ok(())
}

pub fn issue(detail: &crate::api::reply::IssueDetail, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(detail);
    }
    let detail = &super::term::scrub(detail.clone())?;
    let r = &detail.issue;
    println!("issue {}: {} ({})", r.id, r.state.as_str(), r.severity.as_str());
    println!("  {}", r.summary);
    println!("  check:      {} on {} ({})", r.check_name, r.host, r.subject);
    println!("  first seen: {}", ts(r.first_seen));
    println!("  last seen:  {}", ts(r.last_seen));
    println!("  in state since {}; came back {} times", ts(r.since), r.recurrences);
    if let Some(res) = &r.resolution {
        println!("  resolution: {res}");
    }
    audit_section(&detail.audit);
    if !detail.citations.is_empty() {
        println!("  cited by the analysis: {}", detail.citations.join(", "));
    }
    if !detail.recent_changes.is_empty() {
        println!("  Recent changes:");
        for line in &detail.recent_changes {
            println!("    {line}");
        }
    }
    if !detail.similar.is_empty() {
        println!("  similar past issues:");
        for s in &detail.similar {
            println!("    issue {} on {}: {} {} [{}; {}]", s.id, s.host, s.check, s.subject, s.state, s.why);
            println!("      {}", s.summary);
            let mark = if s.verified { "verified" } else { "not verified" };
            for r in &s.resolutions {
                println!("      resolved by: {r} ({mark})");
            }
        }
    }
    Ok(())
}

pub fn audit_section(trail: &[AuditEntry]) {
    if !trail.is_empty() {
        println!("  history:");
        for a in trail {
            println!("    {}  {:<9} {}", ts(a.ts), a.kind.as_str(), a.summary);
        }
    }
}

pub fn audit(records: &[AuditEntry], json: bool) -> anyhow::Result<()> {
    let scrubbed;
    let records = if json {
        records
    } else {
        scrubbed = super::term::scrub(records.to_vec())?;
        &scrubbed[..]
    };
    for r in records {
        if json {
            println!("{}", serde_json::to_string(&serde_json::to_value(r)?)?);
        } else {
            println!(
                "{}  {:<8} {:<11} {:<10} {}{}",
                ts(r.ts),
                r.severity.as_str(),
                r.kind.as_str(),
                r.host,
                r.summary,
                r.correlation_id.as_ref().map(|c| format!("  [{}]", &c[..c.len().min(8)])).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// One section's line: its detail when observed, else why not.
fn detail<T>(section: &Section<T>, f: impl Fn(&T) -> String) -> Result<String, String> {
    match section {
        Section::Ok { data } => Ok(f(data)),
        Section::Unavailable { reason } => Err(reason.clone()),
    }
}

#[allow(clippy::cast_precision_loss)]
fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// The human form of a check result.
/// One line per host after several reports: the status words, worst first.
pub fn check_summary(reports: &[CheckReport]) -> anyhow::Result<()> {
    let mut rows: Vec<&CheckReport> = reports.iter().collect();
    rows.sort_by(|a, b| b.status.cmp(&a.status).then_with(|| a.host.as_str().cmp(b.host.as_str())));
    println!("{:<32} {:<9} {:<9} observed", "host", "status", "findings");
    for r in rows {
        let host = super::term::clean(r.host.as_str());
        let note = r.stale.as_deref().map(|s| format!(" (stale: {})", super::term::clean(s))).unwrap_or_default();
        println!("{host:<32} {:<9} {:<9} {}{note}", r.status.as_str(), r.findings.len(), r.taken_at_text);
    }
    Ok(())
}

pub fn check(out: &CheckReport) -> anyhow::Result<()> {
    let out = &super::term::scrub(out.clone())?;
    println!(
        "macha check: {} on {} at {} ({} mode, autonomy {}, collected in {} µs)",
        out.status.as_str().to_uppercase(),
        out.host,
        out.taken_at_text,
        out.mode.as_str(),
        out.autonomy.as_str(),
        out.collect_micros
    );
    if let Some(stale) = &out.stale {
        println!("stale: {stale}");
    }
    println!();
    println!("sources:");
    let s = &out.snapshot;
    let rows: [(&str, Result<String, String>); 11] = [
        (
            "cpu",
            detail(&s.cpu, |d| match d.usage_percent {
                Some(p) => format!("  {} CPUs, {p:.1}% busy", d.logical_cpus),
                None => format!("  {} CPUs (usage needs a second sample)", d.logical_cpus),
            }),
        ),
        (
            "memory",
            detail(&s.memory, |d| {
                format!("  {:.1} of {:.1} GiB available", gib(d.available_bytes), gib(d.total_bytes))
            }),
        ),
        ("load", detail(&s.load, |d| format!("  {} {} {}", d.one, d.five, d.fifteen))),
        (
            "pressure",
            detail(&s.pressure, |d| {
                format!(
                    "  stalled over 60 s: memory {}%, io {}%, cpu {}%",
                    d.memory_some.avg60, d.io_some.avg60, d.cpu_some.avg60
                )
            }),
        ),
        ("filesystems", detail(&s.filesystems, |d| format!("  {} filesystems", d.len()))),
        ("network", detail(&s.network, |d| format!("  {} interfaces", d.len()))),
        ("processes", detail(&s.processes, |d| format!("  {} processes", d.total))),
        (
            "units",
            detail(&s.units, |d| format!("  {} units, {} failed, system {}", d.total, d.failed.len(), d.system_state)),
        ),
        (
            "journal",
            detail(&s.journal, |d| format!("  {} errors in the last {} min", d.errors_total, d.window_secs / 60)),
        ),
        ("nix", detail(&s.nix, |d| format!("  {} generations", d.generations.len()))),
        (
            "hardware",
            detail(&s.hardware, |d| format!("  {} ({} cores), {} GPUs", d.cpu_model, d.physical_cores, d.gpus.len())),
        ),
    ];
    for (name, row) in rows {
        match row {
            Ok(text) => println!("  {name:<12} ok{text}"),
            Err(reason) => println!("  {name:<12} unavailable: {reason}"),
        }
    }
    println!();
    if out.findings.is_empty() {
        println!("findings: none");
    } else {
        println!("findings:");
        for f in &out.findings {
            println!("  [{}] {}", f.severity.as_str(), f.summary);
        }
    }
    if !out.unknown_checks.is_empty() {
        println!("not checked:");
        for u in &out.unknown_checks {
            // "units unavailable: <long reason>" was already shown under sources.
            let short =
                u.reason.split_once(" unavailable: ").map_or(u.reason.clone(), |(src, _)| format!("{src} unavailable"));
            println!("  {:<18} {short}", u.check.as_str());
        }
    }
    if !out.proposals.is_empty() {
        println!("proposed actions:");
        for p in &out.proposals {
            let extra = match (p.approval_id, p.action_id) {
                (Some(id), _) => format!(" (approval {id}: macha-approve show {id})"),
                (_, Some(id)) => format!(" (action {id})"),
                _ => String::new(),
            };
            println!("  {}: {}{extra} - {}", p.action.describe(), p.decision.verdict.as_str(), p.decision.reason);
        }
        if out.mode == crate::api::reply::CheckMode::Standalone {
            println!("  (standalone: nothing is executed or queued; the daemon acts on these)");
        }
    }
    Ok(())
}
