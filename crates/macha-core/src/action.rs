//! The typed action schema: everything Macha can ever be asked to do.
//!
//! API boundary: this is the JSON a person, a rule or the model proposes (`macha policy check`,
//! `macha schema action`, the model's `propose_action` tool). It is a closed, internally tagged enum:
//! unknown kinds and unknown fields are errors, every string has a length limit, names are parsed
//! into [`UnitName`]/[`HostName`]. Risk is not part of it: the policy assigns risk, never the proposer.

use crate::{HostName, UnitName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest accepted `reason`.
pub const REASON_MAX: usize = 1024;
/// Longest accepted config patch.
pub const PATCH_MAX: usize = 64 * 1024;
/// Longest accepted path.
pub const PATH_MAX: usize = 4096;
/// Longest accepted flake reference.
pub const FLAKE_MAX: usize = 512;
/// Largest accepted proposal document, in bytes (checked before parsing).
pub const DOCUMENT_MAX: usize = 128 * 1024;
/// Most hosts one action may name.
pub const HOSTS_MAX: usize = 64;

/// Where an action applies: one host, or several (which always needs approval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Hosts {
    One(HostName),
    Many(Vec<HostName>),
}

impl Hosts {
    pub fn as_slice(&self) -> &[HostName] {
        match self {
            Hosts::One(h) => std::slice::from_ref(h),
            Hosts::Many(v) => v,
        }
    }
    /// More than one distinct host.
    pub fn is_multi(&self) -> bool {
        let s = self.as_slice();
        s.iter().skip(1).any(|h| *h != s[0])
    }
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts::One(HostName::local())
    }
}

/// Read-only diagnostics Macha may run: a fixed set, each mapped to a fixed command by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticName {
    /// `systemctl status` of one unit (args: `unit`).
    UnitStatus,
    /// Recent journal lines of one unit (args: `unit`, optional `lines`, `since_minutes`).
    UnitLogs,
    /// All failed units.
    FailedUnits,
    /// Recent error-priority journal lines (optional `lines`, `since_minutes`).
    JournalErrors,
    /// Space per filesystem (`df`).
    DiskUsage,
    /// Network addresses (`ip -j addr`).
    NetworkAddresses,
    /// Listening sockets (`ss -tulpn`).
    ListeningSockets,
    /// Timers and when they fire next.
    ListTimers,
    /// System profile generations (`nix-env --list-generations`).
    NixGenerations,
}

impl DiagnosticName {
    pub const ALL: [DiagnosticName; 9] = [
        DiagnosticName::UnitStatus,
        DiagnosticName::UnitLogs,
        DiagnosticName::FailedUnits,
        DiagnosticName::JournalErrors,
        DiagnosticName::DiskUsage,
        DiagnosticName::NetworkAddresses,
        DiagnosticName::ListeningSockets,
        DiagnosticName::ListTimers,
        DiagnosticName::NixGenerations,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosticName::UnitStatus => "unit_status",
            DiagnosticName::UnitLogs => "unit_logs",
            DiagnosticName::FailedUnits => "failed_units",
            DiagnosticName::JournalErrors => "journal_errors",
            DiagnosticName::DiskUsage => "disk_usage",
            DiagnosticName::NetworkAddresses => "network_addresses",
            DiagnosticName::ListeningSockets => "listening_sockets",
            DiagnosticName::ListTimers => "list_timers",
            DiagnosticName::NixGenerations => "nix_generations",
        }
    }
    fn needs_unit(self) -> bool {
        matches!(self, DiagnosticName::UnitStatus | DiagnosticName::UnitLogs)
    }
    fn takes_lines(self) -> bool {
        matches!(self, DiagnosticName::UnitLogs | DiagnosticName::JournalErrors)
    }
}

/// Typed arguments of a diagnostic. Which ones a diagnostic takes is checked by [`Action::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitName>,
    /// How many lines, 1-1000 (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub lines: Option<u32>,
    /// How far back, in minutes, 1-10080 (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10080))]
    pub since_minutes: Option<u32>,
}

/// What a NixOS deployment switches from and to: two built system closures. An approval of a
/// deployment is bound to exactly this pair (and the host): a rebuilt closure, or a host that runs
/// something else by the time it executes, needs a new approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchTarget {
    /// The system to activate (`/nix/store/…-nixos-system-…`).
    pub system: crate::StorePath,
    /// The system the host ran when the deployment was prepared: what it must still run when the
    /// deployment starts, and what a rollback returns to (never a relative "previous generation").
    pub previous: crate::StorePath,
    /// Where `system` was built from (a flake reference), for people; nothing builds from it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub flake: Option<String>,
}

/// One action. `kind` selects the variant; every variant names its host(s) and a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Restart a unit.
    RestartUnit {
        #[serde(default)]
        host: Hosts,
        unit: UnitName,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Start a unit.
    StartUnit {
        #[serde(default)]
        host: Hosts,
        unit: UnitName,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Stop a unit (always needs approval).
    StopUnit {
        #[serde(default)]
        host: Hosts,
        unit: UnitName,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Clear a unit's failed state (`systemctl reset-failed`).
    ResetFailed {
        #[serde(default)]
        host: Hosts,
        unit: UnitName,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Delete journal files older than `max_age_days` (`journalctl --vacuum-time`).
    JournalVacuum {
        #[serde(default)]
        host: Hosts,
        #[schemars(range(min = 1, max = 3650))]
        max_age_days: u32,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Delete unreachable store paths and generations older than `older_than_days`.
    CollectGarbage {
        #[serde(default)]
        host: Hosts,
        #[schemars(range(min = 1, max = 3650))]
        older_than_days: u32,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Verify the Nix store's contents (a long, read-only job).
    StoreVerify {
        #[serde(default)]
        host: Hosts,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Verify and repair the Nix store (always needs approval).
    StoreRepair {
        #[serde(default)]
        host: Hosts,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Run one read-only diagnostic from the fixed set.
    Diagnostic {
        #[serde(default)]
        host: Hosts,
        name: DiagnosticName,
        #[serde(default)]
        args: DiagnosticArgs,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Reboot the host (always needs approval).
    Reboot {
        #[serde(default)]
        host: Hosts,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Change a configuration file with a unified diff. Never applied automatically.
    ConfigChange {
        #[serde(default)]
        host: Hosts,
        /// Absolute path of the file to change.
        #[schemars(length(min = 1, max = 4096))]
        path: String,
        /// A unified diff.
        #[schemars(length(min = 1, max = 65536))]
        patch: String,
        #[schemars(length(max = 1024))]
        reason: String,
    },
    /// Deploy a NixOS configuration (always needs approval).
    NixosSwitch {
        #[serde(default)]
        host: Hosts,
        target: Box<SwitchTarget>,
        #[schemars(length(max = 1024))]
        reason: String,
    },
}

/// The kind of an action, without its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    RestartUnit,
    StartUnit,
    StopUnit,
    ResetFailed,
    JournalVacuum,
    CollectGarbage,
    StoreVerify,
    StoreRepair,
    Diagnostic,
    Reboot,
    ConfigChange,
    NixosSwitch,
}

impl ActionKind {
    pub const ALL: [ActionKind; 12] = [
        ActionKind::RestartUnit,
        ActionKind::StartUnit,
        ActionKind::StopUnit,
        ActionKind::ResetFailed,
        ActionKind::JournalVacuum,
        ActionKind::CollectGarbage,
        ActionKind::StoreVerify,
        ActionKind::StoreRepair,
        ActionKind::Diagnostic,
        ActionKind::Reboot,
        ActionKind::ConfigChange,
        ActionKind::NixosSwitch,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::RestartUnit => "restart_unit",
            ActionKind::StartUnit => "start_unit",
            ActionKind::StopUnit => "stop_unit",
            ActionKind::ResetFailed => "reset_failed",
            ActionKind::JournalVacuum => "journal_vacuum",
            ActionKind::CollectGarbage => "collect_garbage",
            ActionKind::StoreVerify => "store_verify",
            ActionKind::StoreRepair => "store_repair",
            ActionKind::Diagnostic => "diagnostic",
            ActionKind::Reboot => "reboot",
            ActionKind::ConfigChange => "config_change",
            ActionKind::NixosSwitch => "nixos_switch",
        }
    }
}

impl ActionKind {
    pub fn parse(s: &str) -> Option<ActionKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a proposed action document was refused before the policy even looked at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("the action document is {0} bytes; the limit is {DOCUMENT_MAX}")]
    TooLarge(usize),
    #[error("invalid action: {0}")]
    Parse(String),
    #[error("invalid action: {field} is {len} bytes; the limit is {max}")]
    FieldTooLong { field: &'static str, len: usize, max: usize },
    #[error("invalid action: {0}")]
    Invalid(String),
}

impl Action {
    /// Parses and validates a JSON action document. Unknown kinds, unknown fields, bad names, missing
    /// fields and oversized values are errors.
    pub fn from_json(doc: &str) -> Result<Action, ActionError> {
        if doc.len() > DOCUMENT_MAX {
            return Err(ActionError::TooLarge(doc.len()));
        }
        let action: Action = serde_json::from_str(doc).map_err(|e| ActionError::Parse(e.to_string()))?;
        action.validate()?;
        Ok(action)
    }

    /// Checks what the type system cannot: lengths, which diagnostic takes which argument, paths.
    pub fn validate(&self) -> Result<(), ActionError> {
        let len = |field: &'static str, s: &str, max: usize| {
            if s.len() > max { Err(ActionError::FieldTooLong { field, len: s.len(), max }) } else { Ok(()) }
        };
        len("reason", self.reason(), REASON_MAX)?;
        if self.reason().chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(ActionError::Invalid("reason contains control characters".into()));
        }
        let hosts = self.hosts().as_slice();
        if hosts.is_empty() {
            return Err(ActionError::Invalid("host list is empty".into()));
        }
        if hosts.len() > HOSTS_MAX {
            return Err(ActionError::Invalid(format!("{} hosts named; the limit is {HOSTS_MAX}", hosts.len())));
        }
        // A host named twice would run the action twice there (and read as "one host" to the
        // policy): never valid.
        for (i, h) in hosts.iter().enumerate() {
            if hosts[..i].contains(h) {
                return Err(ActionError::Invalid(format!("host {h} is named more than once")));
            }
        }
        match self {
            Action::JournalVacuum { max_age_days: d, .. } | Action::CollectGarbage { older_than_days: d, .. }
                if !(1..=3650).contains(d) =>
            {
                return Err(ActionError::Invalid(format!("age of {d} days is outside 1-3650")));
            }
            Action::Diagnostic { name, args, .. } => {
                if name.needs_unit() != args.unit.is_some() {
                    return Err(ActionError::Invalid(if name.needs_unit() {
                        format!("diagnostic {} needs args.unit", name.as_str())
                    } else {
                        format!("diagnostic {} takes no unit", name.as_str())
                    }));
                }
                if !name.takes_lines() && (args.lines.is_some() || args.since_minutes.is_some()) {
                    return Err(ActionError::Invalid(format!(
                        "diagnostic {} takes no lines or since_minutes",
                        name.as_str()
                    )));
                }
                if args.lines.is_some_and(|n| !(1..=1000).contains(&n)) {
                    return Err(ActionError::Invalid("args.lines is outside 1-1000".into()));
                }
                if args.since_minutes.is_some_and(|n| !(1..=10080).contains(&n)) {
                    return Err(ActionError::Invalid("args.since_minutes is outside 1-10080".into()));
                }
            }
            Action::ConfigChange { path, patch, .. } => {
                len("path", path, PATH_MAX)?;
                len("patch", patch, PATCH_MAX)?;
                validate_abs_path(path)?;
                if patch.trim().is_empty() {
                    return Err(ActionError::Invalid("patch is empty".into()));
                }
            }
            Action::NixosSwitch { target, host, .. } => {
                if let Some(flake) = &target.flake {
                    len("target.flake", flake, FLAKE_MAX)?;
                    let ok = !flake.is_empty()
                        && !flake.starts_with('-')
                        && flake.bytes().all(|b| b.is_ascii_alphanumeric() || b"/:#.?=&_+-~@%,".contains(&b));
                    if !ok {
                        return Err(ActionError::Invalid("target.flake is not a plain flake reference".into()));
                    }
                }
                // One host per deployment action: each host has its own previous system.
                if host.as_slice().len() != 1 {
                    return Err(ActionError::Invalid("a deployment names exactly one host".into()));
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            Action::RestartUnit { .. } => ActionKind::RestartUnit,
            Action::StartUnit { .. } => ActionKind::StartUnit,
            Action::StopUnit { .. } => ActionKind::StopUnit,
            Action::ResetFailed { .. } => ActionKind::ResetFailed,
            Action::JournalVacuum { .. } => ActionKind::JournalVacuum,
            Action::CollectGarbage { .. } => ActionKind::CollectGarbage,
            Action::StoreVerify { .. } => ActionKind::StoreVerify,
            Action::StoreRepair { .. } => ActionKind::StoreRepair,
            Action::Diagnostic { .. } => ActionKind::Diagnostic,
            Action::Reboot { .. } => ActionKind::Reboot,
            Action::ConfigChange { .. } => ActionKind::ConfigChange,
            Action::NixosSwitch { .. } => ActionKind::NixosSwitch,
        }
    }

    pub fn hosts(&self) -> &Hosts {
        match self {
            Action::RestartUnit { host, .. }
            | Action::StartUnit { host, .. }
            | Action::StopUnit { host, .. }
            | Action::ResetFailed { host, .. }
            | Action::JournalVacuum { host, .. }
            | Action::CollectGarbage { host, .. }
            | Action::StoreVerify { host, .. }
            | Action::StoreRepair { host, .. }
            | Action::Diagnostic { host, .. }
            | Action::Reboot { host, .. }
            | Action::ConfigChange { host, .. }
            | Action::NixosSwitch { host, .. } => host,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Action::RestartUnit { reason, .. }
            | Action::StartUnit { reason, .. }
            | Action::StopUnit { reason, .. }
            | Action::ResetFailed { reason, .. }
            | Action::JournalVacuum { reason, .. }
            | Action::CollectGarbage { reason, .. }
            | Action::StoreVerify { reason, .. }
            | Action::StoreRepair { reason, .. }
            | Action::Diagnostic { reason, .. }
            | Action::Reboot { reason, .. }
            | Action::ConfigChange { reason, .. }
            | Action::NixosSwitch { reason, .. } => reason,
        }
    }

    /// The unit this action targets, if it is a unit action (or a unit diagnostic).
    pub fn unit(&self) -> Option<&UnitName> {
        match self {
            Action::RestartUnit { unit, .. }
            | Action::StartUnit { unit, .. }
            | Action::StopUnit { unit, .. }
            | Action::ResetFailed { unit, .. } => Some(unit),
            Action::Diagnostic { args, .. } => args.unit.as_ref(),
            _ => None,
        }
    }

    /// What the action is about, for flap keys and display: the unit, diagnostic, path or `-`.
    pub fn subject(&self) -> String {
        match self {
            Action::Diagnostic { name, args, .. } => match &args.unit {
                Some(u) => format!("{}:{u}", name.as_str()),
                None => name.as_str().to_owned(),
            },
            Action::ConfigChange { path, .. } => path.clone(),
            Action::NixosSwitch { target, .. } => target.system.name().to_owned(),
            other => other.unit().map_or_else(|| "-".to_owned(), |u| u.to_string()),
        }
    }

    /// A one-line human description.
    pub fn describe(&self) -> String {
        let hosts: Vec<&str> = self.hosts().as_slice().iter().map(HostName::as_str).collect();
        format!("{} {} on {}", self.kind(), self.subject(), hosts.join(","))
    }

    pub fn to_json(&self) -> String {
        // Serialising a closed enum of plain data cannot fail; fall back to the description anyway.
        serde_json::to_string(self).unwrap_or_else(|_| self.describe())
    }
}

fn validate_abs_path(path: &str) -> Result<(), ActionError> {
    if !path.starts_with('/') {
        return Err(ActionError::Invalid("path must be absolute".into()));
    }
    if path.contains('\0') || path.chars().any(char::is_control) {
        return Err(ActionError::Invalid("path contains control characters".into()));
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(ActionError::Invalid("path must not contain '.' or '..' components".into()));
    }
    Ok(())
}

/// Who proposed an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "origin", rename_all = "snake_case")]
pub enum Origin {
    /// A deterministic rule reacting to a finding.
    Rule { check: String },
    /// The language model.
    Model,
    /// A person, identified by uid.
    Person { uid: u32 },
}

/// An action plus who proposed it and for which issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedAction {
    pub action: Action,
    pub origin: Origin,
    pub issue_id: Option<i64>,
}

/// The JSON Schema of [`Action`], the same one the model's `propose_action` tool uses.
pub fn action_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Action);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(doc: &str) -> Action {
        match Action::from_json(doc) {
            Ok(a) => a,
            Err(e) => panic!("{doc}: {e}"),
        }
    }

    #[test]
    fn parses_the_design_example() {
        let a = ok(r#"{ "kind": "restart_unit", "host": "local", "unit": "nginx", "reason": "unit failed (exit 1)" }"#);
        assert_eq!(a.kind(), ActionKind::RestartUnit);
        assert_eq!(a.unit().map(UnitName::as_str), Some("nginx.service"));
        assert!(!a.hosts().is_multi());
        // host defaults to local
        let b = ok(r#"{ "kind": "reset_failed", "unit": "x", "reason": "" }"#);
        assert_eq!(b.hosts().as_slice(), [HostName::local()]);
        let m = ok(r#"{ "kind": "reboot", "host": ["a.lan", "b.lan"], "reason": "kernel" }"#);
        assert!(m.hosts().is_multi());
    }

    #[test]
    fn a_host_named_twice_is_invalid() {
        let doc = r#"{"kind":"restart_unit","host":["local","local"],"unit":"nginx","reason":"r"}"#;
        let err = Action::from_json(doc).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("named more than once"), "{err}");
        let doc = r#"{"kind":"restart_unit","host":["web1","db1","web1"],"unit":"nginx","reason":"r"}"#;
        assert!(Action::from_json(doc).is_err());
        let ok = r#"{"kind":"restart_unit","host":["web1","db1"],"unit":"nginx","reason":"r"}"#;
        assert!(Action::from_json(ok).is_ok());
    }

    #[test]
    fn rejects_hostile_documents() {
        for doc in [
            r#"{"kind":"run_shell","cmd":"rm -rf /","reason":""}"#,
            r#"{"kind":"restart_unit","unit":"nginx; rm -rf /","reason":""}"#,
            r#"{"kind":"restart_unit","unit":"$(reboot)","reason":""}"#,
            r#"{"kind":"restart_unit","unit":"nginx","reason":"","command":"rm -rf /"}"#,
            r#"{"kind":"restart_unit","unit":"nginx","reason":"","risk":"low"}"#,
            r#"{"kind":"restart_unit","host":"-oProxyCommand=sh","unit":"nginx","reason":""}"#,
            r#"{"kind":"restart_unit","unit":"../../etc/shadow","reason":""}"#,
            r#"{"kind":"restart_unit","reason":""}"#,
            r#"{"kind":"diagnostic","name":"shell","reason":""}"#,
            r#"{"kind":"diagnostic","name":"unit_status","reason":""}"#,
            r#"{"kind":"diagnostic","name":"disk_usage","args":{"unit":"x"},"reason":""}"#,
            r#"{"kind":"diagnostic","name":"unit_logs","args":{"unit":"x","lines":100000},"reason":""}"#,
            r#"{"kind":"diagnostic","name":"unit_logs","args":{"unit":"x","grep":"; id"},"reason":""}"#,
            r#"{"kind":"config_change","path":"etc/nixos/configuration.nix","patch":"x","reason":""}"#,
            r#"{"kind":"config_change","path":"/etc/nixos/../shadow","patch":"x","reason":""}"#,
            r#"{"kind":"nixos_switch","target":{"flake":"--impure","system":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s","previous":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s"},"reason":""}"#,
            r#"{"kind":"nixos_switch","target":{"flake":"/etc/nixos#x;id","system":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s","previous":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s"},"reason":""}"#,
            r#"{"kind":"nixos_switch","target":{"system":"/nix/store/x-s","previous":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s"},"reason":""}"#,
            r#"{"kind":"nixos_switch","target":{"system":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s/bin","previous":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s"},"reason":""}"#,
            r#"{"kind":"nixos_switch","host":["a","b"],"target":{"system":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s","previous":"/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-s"},"reason":""}"#,
            r#"{"kind":"journal_vacuum","max_age_days":0,"reason":""}"#,
            r#"{"kind":"restart_unit","host":[],"unit":"x","reason":""}"#,
            r#"["restart_unit"]"#,
            r#"{"kind":"restart_unit","unit":"x","reason":"a"#,
            "",
        ] {
            assert!(Action::from_json(doc).is_err(), "accepted: {doc}");
        }
        let long_reason = format!(r#"{{"kind":"restart_unit","unit":"x","reason":"{}"}}"#, "a".repeat(2000));
        assert!(matches!(Action::from_json(&long_reason), Err(ActionError::FieldTooLong { field: "reason", .. })));
        let huge = "x".repeat(DOCUMENT_MAX + 1);
        assert!(matches!(Action::from_json(&huge), Err(ActionError::TooLarge(_))));
    }

    #[test]
    fn round_trips_through_json() {
        let a = ok(r#"{"kind":"diagnostic","name":"unit_logs","args":{"unit":"nginx","lines":50},"reason":"why"}"#);
        assert_eq!(ok(&a.to_json()), a);
        assert_eq!(a.subject(), "unit_logs:nginx.service");
    }

    #[test]
    fn schema_names_every_kind() {
        let schema = action_schema().to_string();
        for k in ActionKind::ALL {
            assert!(schema.contains(&format!("\"{}\"", k.as_str())), "{k} missing from schema");
        }
        for d in DiagnosticName::ALL {
            assert!(schema.contains(&format!("\"{}\"", d.as_str())), "{} missing", d.as_str());
        }
    }
}
