//! Text and JSON output of the client commands.

use crate::config::Config;
use macha_core::action::{Action, ActionKind, DiagnosticArgs, DiagnosticName, Hosts, SwitchTarget};
use macha_core::policy::{self, Autonomy};
use macha_core::{HostName, Timestamp, UnitName};
use macha_store::{ApprovalRecord, AuditRecord, IssueRecord};

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
            Action::NixosSwitch { host, target: SwitchTarget { flake: "/etc/nixos#host".into() }, reason }
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

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn value_or(v: &serde_json::Value, json: bool, text: impl Fn(&serde_json::Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", text(v));
    }
}

fn describe_action(v: &serde_json::Value) -> String {
    serde_json::from_value::<Action>(v.clone()).map(|a| a.describe()).unwrap_or_else(|_| v.to_string())
}

pub fn approvals(records: &[ApprovalRecord], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&records);
    }
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
            r.decision["risk"].as_str().unwrap_or("?"),
            ts(r.requested_at),
            describe_action(&r.action)
        );
    }
    Ok(())
}

pub fn approval(r: &ApprovalRecord, trail: &[AuditRecord], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({"approval": r, "audit": trail}));
    }
    println!("approval {}: {}", r.id, r.state.as_str());
    println!("  action:     {}", describe_action(&r.action));
    println!("  reason:     {}", r.reason);
    println!("  risk:       {}", r.decision["risk"].as_str().unwrap_or("?"));
    println!("  policy:     {}", r.decision["reason"].as_str().unwrap_or("?"));
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
    audit_section(trail);
    Ok(())
}

pub fn issues(records: &[IssueRecord], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&records);
    }
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

pub fn issue(r: &IssueRecord, trail: &[AuditRecord], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&serde_json::json!({"issue": r, "audit": trail}));
    }
    println!("issue {}: {} ({})", r.id, r.state.as_str(), r.severity.as_str());
    println!("  {}", r.summary);
    println!("  check:      {} on {} ({})", r.check_name, r.host, r.subject);
    println!("  first seen: {}", ts(r.first_seen));
    println!("  last seen:  {}", ts(r.last_seen));
    println!("  in state since {}; came back {} times", ts(r.since), r.recurrences);
    if let Some(res) = &r.resolution {
        println!("  resolution: {res}");
    }
    audit_section(trail);
    Ok(())
}

fn audit_section(trail: &[AuditRecord]) {
    if !trail.is_empty() {
        println!("  history:");
        for a in trail {
            println!("    {}  {:<9} {}", ts(a.ts), a.kind.as_str(), a.summary);
        }
    }
}

pub fn audit(records: &[AuditRecord], json: bool) -> anyhow::Result<()> {
    for r in records {
        if json {
            println!("{}", serde_json::to_string(r)?);
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

/// The human form of a check result.
pub fn check(out: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    println!(
        "macha check: {} on {} at {} ({} mode, autonomy {}, collected in {} µs)",
        s(&out["status"]).to_uppercase(),
        s(&out["host"]),
        s(&out["taken_at_text"]),
        s(&out["mode"]),
        s(&out["autonomy"]),
        out["collect_micros"]
    );
    println!();
    println!("sources:");
    for name in macha_core::snapshot::SECTION_NAMES {
        let v = &out["sections"][name];
        {
            match v["status"].as_str() {
                Some("ok") => println!("  {name:<12} ok{}", section_detail(name, &out["snapshot"][name]["data"])),
                _ => println!("  {name:<12} unavailable: {}", s(&v["reason"])),
            }
        }
    }
    println!();
    let findings = out["findings"].as_array().cloned().unwrap_or_default();
    if findings.is_empty() {
        println!("findings: none");
    } else {
        println!("findings:");
        for f in &findings {
            println!("  [{}] {}", s(&f["severity"]), s(&f["summary"]));
        }
    }
    let unknown = out["unknown_checks"].as_array().cloned().unwrap_or_default();
    if !unknown.is_empty() {
        println!("not checked:");
        for u in &unknown {
            // "units unavailable: <long reason>" was already shown under sources.
            let reason = s(&u["reason"]);
            let short =
                reason.split_once(" unavailable: ").map_or(reason.clone(), |(src, _)| format!("{src} unavailable"));
            println!("  {:<18} {short}", s(&u["check"]));
        }
    }
    let proposals = out["proposals"].as_array().cloned().unwrap_or_default();
    if !proposals.is_empty() {
        println!("proposed actions:");
        for p in &proposals {
            let what = describe_action(&p["action"]);
            let verdict = s(&p["decision"]["verdict"]);
            let extra = match (p["approval_id"].as_i64(), p["action_id"].as_i64()) {
                (Some(id), _) => format!(" (approval {id}: macha-approve show {id})"),
                (_, Some(id)) => format!(" (action {id})"),
                _ => String::new(),
            };
            println!("  {what}: {verdict}{extra} - {}", s(&p["decision"]["reason"]));
        }
        if out["mode"] == "standalone" {
            println!("  (standalone: nothing is executed or queued; the daemon acts on these)");
        }
    }
}

fn section_detail(name: &str, d: &serde_json::Value) -> String {
    let gib = |v: &serde_json::Value| v.as_f64().map(|b| b / f64::from(1u32 << 30)).unwrap_or(0.0);
    match name {
        "cpu" => match d["usage_percent"].as_f64() {
            Some(p) => format!("  {} CPUs, {p:.1}% busy", d["logical_cpus"]),
            None => format!("  {} CPUs (usage needs a second sample)", d["logical_cpus"]),
        },
        "memory" => format!("  {:.1} of {:.1} GiB available", gib(&d["available_bytes"]), gib(&d["total_bytes"])),
        "load" => format!("  {} {} {}", d["one"], d["five"], d["fifteen"]),
        "pressure" => format!(
            "  stalled over 60 s: memory {}%, io {}%, cpu {}%",
            d["memory_some"]["avg60"], d["io_some"]["avg60"], d["cpu_some"]["avg60"]
        ),
        "filesystems" => format!("  {} filesystems", d.as_array().map_or(0, Vec::len)),
        "network" => format!("  {} interfaces", d.as_array().map_or(0, Vec::len)),
        "processes" => format!("  {} processes", d["total"]),
        "units" => format!(
            "  {} units, {} failed, system {}",
            d["total"],
            d["failed"].as_array().map_or(0, Vec::len),
            d["system_state"].as_str().unwrap_or("?")
        ),
        "journal" => {
            format!("  {} errors in the last {} min", d["errors_total"], d["window_secs"].as_u64().unwrap_or(0) / 60)
        }
        "nix" => format!("  {} generations", d["generations"].as_array().map_or(0, Vec::len)),
        "hardware" => format!(
            "  {} ({} cores), {} GPUs",
            d["cpu_model"].as_str().unwrap_or("?"),
            d["physical_cores"],
            d["gpus"].as_array().map_or(0, Vec::len)
        ),
        _ => String::new(),
    }
}
