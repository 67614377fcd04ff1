//! The one policy gate.
//!
//! [`decide`] turns an [`Action`] plus context into a [`Ruling`]: execute (with a [`Permit`]), queue
//! for approval, or deny — with the risk and the reason. Risk comes from [`POLICY_TABLE`] in code,
//! never from whoever proposed the action. Deny by default: anything not explicitly allowed for the
//! autonomy level is not executed.
//!
//! Architecture invariant: a [`Permit`] can only be constructed here. The executor accepts nothing
//! else, so nothing executes without having passed this function.

use crate::action::{Action, ActionKind};
use crate::flap::{FlapGuard, FlapStatus, flap_key};
use crate::{HostName, Now, Timestamp, UnitName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How much Macha may do on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Autonomy {
    /// Nothing executes; proposals are recorded only.
    Observe,
    /// Read-only diagnostics execute; everything else is queued for approval.
    Suggest,
    /// Plus restarts, reset-failed and cleanup on unprotected units.
    AutoSafe,
    /// Plus everything outside the always-approval classes.
    AutoFull,
}

impl Autonomy {
    pub const ALL: [Autonomy; 4] = [Autonomy::Observe, Autonomy::Suggest, Autonomy::AutoSafe, Autonomy::AutoFull];
    pub fn as_str(self) -> &'static str {
        match self {
            Autonomy::Observe => "observe",
            Autonomy::Suggest => "suggest",
            Autonomy::AutoSafe => "auto-safe",
            Autonomy::AutoFull => "auto-full",
        }
    }
    pub fn parse(s: &str) -> Option<Autonomy> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Autonomy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
    fn raised(self) -> Risk {
        match self {
            Risk::Low => Risk::Medium,
            Risk::Medium => Risk::High,
            Risk::High | Risk::Critical => Risk::Critical,
        }
    }
}

/// Which autonomy level lets an action run without a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Read-only: executes from `suggest` up.
    ReadOnly,
    /// Routine remediation: executes from `auto-safe` up (never on protected units).
    Safe,
    /// Executes only at `auto-full`.
    Full,
    /// Always needs a person, whatever the autonomy level.
    AlwaysApproval,
}

impl Class {
    fn min_autonomy(self) -> Option<Autonomy> {
        match self {
            Class::ReadOnly => Some(Autonomy::Suggest),
            Class::Safe => Some(Autonomy::AutoSafe),
            Class::Full => Some(Autonomy::AutoFull),
            Class::AlwaysApproval => None,
        }
    }
}

/// One row of the policy table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PolicyRow {
    pub kind: ActionKind,
    pub risk: Risk,
    pub class: Class,
    /// Acts on a unit (so protection and unit-type rules apply).
    pub unit_action: bool,
    pub note: &'static str,
}

/// The policy table: risk and class of every action kind. `macha policy show` prints it.
pub const POLICY_TABLE: [PolicyRow; 12] = [
    PolicyRow {
        kind: ActionKind::Diagnostic,
        risk: Risk::Low,
        class: Class::ReadOnly,
        unit_action: false,
        note: "fixed read-only commands with typed arguments",
    },
    PolicyRow {
        kind: ActionKind::ResetFailed,
        risk: Risk::Low,
        class: Class::Safe,
        unit_action: true,
        note: "clears a unit's failed state",
    },
    PolicyRow {
        kind: ActionKind::RestartUnit,
        risk: Risk::Medium,
        class: Class::Safe,
        unit_action: true,
        note: "outcome verified: the unit must be active again",
    },
    PolicyRow {
        kind: ActionKind::JournalVacuum,
        risk: Risk::Medium,
        class: Class::Safe,
        unit_action: false,
        note: "cleanup: deletes old journal files",
    },
    PolicyRow {
        kind: ActionKind::CollectGarbage,
        risk: Risk::Medium,
        class: Class::Safe,
        unit_action: false,
        note: "cleanup: deletes old generations and unreachable store paths",
    },
    PolicyRow {
        kind: ActionKind::StartUnit,
        risk: Risk::Medium,
        class: Class::Full,
        unit_action: true,
        note: "starting may pull in dependencies",
    },
    PolicyRow {
        kind: ActionKind::StoreVerify,
        risk: Risk::Medium,
        class: Class::Full,
        unit_action: false,
        note: "long job; reads every store path",
    },
    PolicyRow {
        kind: ActionKind::StopUnit,
        risk: Risk::High,
        class: Class::AlwaysApproval,
        unit_action: true,
        note: "stopping units always needs a person",
    },
    PolicyRow {
        kind: ActionKind::StoreRepair,
        risk: Risk::High,
        class: Class::AlwaysApproval,
        unit_action: false,
        note: "store repair always needs a person",
    },
    PolicyRow {
        kind: ActionKind::ConfigChange,
        risk: Risk::High,
        class: Class::AlwaysApproval,
        unit_action: false,
        note: "config changes always need a person and are applied by one",
    },
    PolicyRow {
        kind: ActionKind::Reboot,
        risk: Risk::Critical,
        class: Class::AlwaysApproval,
        unit_action: false,
        note: "power actions always need a person",
    },
    PolicyRow {
        kind: ActionKind::NixosSwitch,
        risk: Risk::Critical,
        class: Class::AlwaysApproval,
        unit_action: false,
        note: "deployments always need a person",
    },
];

pub fn row(kind: ActionKind) -> PolicyRow {
    // The table has one row per kind (tested); fall back to the strictest row regardless.
    POLICY_TABLE.iter().copied().find(|r| r.kind == kind).unwrap_or(PolicyRow {
        kind,
        risk: Risk::Critical,
        class: Class::AlwaysApproval,
        unit_action: false,
        note: "not in the table",
    })
}

/// Unit types Macha may restart/start/stop/reset. Targets, mounts, slices, scopes, devices and swap
/// are never touched: restarting `multi-user.target` or `-.mount` is not remediation.
pub const MANAGED_UNIT_TYPES: [&str; 4] = ["service", "socket", "timer", "path"];

/// Built-in protected units (patterns on the unit stem; a trailing `*` is a prefix match). They can
/// be added to by configuration, never removed.
pub const BUILTIN_PROTECTED: &[&str] = &[
    // remote access
    "ssh",
    "sshd",
    "openssh",
    "openssh-server",
    "sshd-keygen",
    "sshd@*",
    // the system bus and authorisation
    "dbus",
    "dbus-*",
    "messagebus",
    "polkit",
    // network management
    "NetworkManager",
    "NetworkManager-*",
    "network-manager",
    "networking",
    "network-online",
    "network-setup",
    "network-addresses-*",
    "wpa_supplicant",
    "wpa_supplicant-*",
    "iwd",
    "dhcpcd",
    "connman",
    "firewall",
    "nftables",
    // systemd's own core units (journald, logind, networkd, resolved, udevd, …)
    "systemd-*",
    "init",
    "user@*",
    "user-runtime-dir@*",
    "getty@*",
    "serial-getty@*",
    "autovt@*",
    "console-getty",
    "emergency",
    "rescue",
    // Nix
    "nix-daemon",
    // Macha itself
    "macha",
    "macha-*",
];

/// Alias groups: a unit is protected if any name in its group is.
const ALIASES: &[&[&str]] = &[
    &["ssh", "sshd", "openssh", "openssh-server"],
    &["dbus", "dbus-broker", "messagebus", "dbus-daemon"],
    &["NetworkManager", "network-manager"],
    &["systemd-journald", "journald"],
    &["systemd-networkd", "networkd"],
    &["systemd-resolved", "resolved"],
    &["systemd-logind", "logind"],
    &["nix-daemon", "nix"],
];

/// The set of protected unit patterns: the built-in list plus configured additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedUnits {
    patterns: BTreeSet<String>,
}

impl ProtectedUnits {
    /// The built-in list plus `extra` (unit names or stem patterns with a trailing `*`). Entries are
    /// normalised: `nginx.service` and `nginx` mean the same.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> ProtectedUnits {
        let mut patterns: BTreeSet<String> = BUILTIN_PROTECTED.iter().map(|s| (*s).to_owned()).collect();
        for e in extra {
            let e = e.as_ref();
            let stem = e.rsplit_once('.').filter(|(_, t)| crate::names::UNIT_TYPES.contains(t)).map_or(e, |(s, _)| s);
            if !stem.is_empty() {
                patterns.insert(stem.to_owned());
            }
        }
        ProtectedUnits { patterns }
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(String::as_str)
    }

    fn matches_stem(&self, stem: &str) -> Option<&str> {
        self.patterns.iter().map(String::as_str).find(|p| match p.strip_suffix('*') {
            Some(prefix) => stem.starts_with(prefix),
            None => *p == stem || stem.strip_prefix(*p).is_some_and(|rest| rest.starts_with('@')),
        })
    }

    /// The pattern that protects `unit`, if any: by its stem, its template, or any alias of it.
    /// Matching is case-sensitive except for the alias table, as systemd's names are.
    pub fn protecting(&self, unit: &UnitName) -> Option<String> {
        let stem = unit.stem();
        if let Some(p) = self.matches_stem(stem) {
            return Some(p.to_owned());
        }
        let lower = stem.to_ascii_lowercase();
        for group in ALIASES {
            if group.iter().any(|a| a.eq_ignore_ascii_case(&lower)) {
                for alias in *group {
                    if let Some(p) = self.matches_stem(alias) {
                        return Some(format!("{p} (alias of {stem})"));
                    }
                }
            }
        }
        None
    }
}

/// What the gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Execute,
    Approval,
    Deny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Execute => "execute",
            Verdict::Approval => "approval",
            Verdict::Deny => "deny",
        }
    }
}

/// A verdict with its risk and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub risk: Risk,
    /// A sentence for people.
    pub reason: String,
    /// The rule that decided, for machines and tests.
    pub rule: String,
    pub autonomy: Autonomy,
}

/// Everything the gate needs besides the action.
#[derive(Debug)]
pub struct PolicyContext<'a> {
    pub autonomy: Autonomy,
    pub protected: &'a ProtectedUnits,
    pub flap: &'a FlapGuard,
    /// Hosts other than `local` that actions may target (trusted hosts of the registry).
    pub known_hosts: &'a BTreeSet<HostName>,
    /// A person approved exactly this action (approval id). Turns `approval` into `execute`; never
    /// turns `deny` into anything else.
    pub approved: Option<i64>,
}

/// Permission to execute one action, once. Only [`decide`] constructs it.
#[derive(Debug)]
#[must_use = "a permit that is not executed means the action silently did not run"]
pub struct Permit {
    action: Action,
    decision: Decision,
    approval_id: Option<i64>,
    issued_at: Timestamp,
}

impl Permit {
    pub fn action(&self) -> &Action {
        &self.action
    }
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
    pub fn approval_id(&self) -> Option<i64> {
        self.approval_id
    }
    pub fn issued_at(&self) -> Timestamp {
        self.issued_at
    }
}

/// The result of [`decide`].
#[derive(Debug)]
#[must_use]
pub enum Ruling {
    Execute(Permit),
    Approval(Decision),
    Deny(Decision),
}

impl Ruling {
    pub fn decision(&self) -> &Decision {
        match self {
            Ruling::Execute(p) => &p.decision,
            Ruling::Approval(d) | Ruling::Deny(d) => d,
        }
    }
    pub fn verdict(&self) -> Verdict {
        self.decision().verdict
    }
}

/// The gate. Pure and total: every input gets a ruling, nothing panics. A permit is stamped with
/// `now.wall`; the flap guard counts on `now.mono`.
pub fn decide(action: &Action, ctx: &PolicyContext<'_>, now: Now) -> Ruling {
    let row = row(action.kind());
    let multi = action.hosts().is_multi();
    let risk = if multi { row.risk.raised() } else { row.risk };
    let mk = |verdict: Verdict, rule: &str, reason: String| Decision {
        verdict,
        risk,
        reason,
        rule: rule.to_owned(),
        autonomy: ctx.autonomy,
    };
    let deny = |rule: &str, reason: String| Ruling::Deny(mk(Verdict::Deny, rule, reason));

    // Anything that does not validate is refused outright (a defence in depth: parsing validates too).
    if let Err(e) = action.validate() {
        return deny("invalid", e.to_string());
    }
    if ctx.autonomy == Autonomy::Observe {
        return deny("observe", "autonomy level observe: Macha executes nothing".into());
    }
    for host in action.hosts().as_slice() {
        if !host.is_local() && !ctx.known_hosts.contains(host) {
            return deny("unknown-host", format!("host {host} is not a trusted host of the registry"));
        }
    }
    if row.unit_action {
        let Some(unit) = action.unit() else {
            return deny("invalid", "unit action without a unit".into());
        };
        if !MANAGED_UNIT_TYPES.contains(&unit.unit_type()) {
            return deny("unit-type", format!("{unit}: Macha only acts on {} units", MANAGED_UNIT_TYPES.join("/")));
        }
        if let Some(p) = ctx.protected.protecting(unit) {
            return deny("protected", format!("{unit} is protected (matches {p}); Macha never acts on it"));
        }
    }

    let approved = |reason: String, rule: &str| match ctx.approved {
        Some(id) => Ruling::Execute(Permit {
            action: action.clone(),
            decision: mk(Verdict::Execute, "approved", format!("approved by a person (approval {id}); {reason}")),
            approval_id: Some(id),
            issued_at: now.wall,
        }),
        None => Ruling::Approval(mk(Verdict::Approval, rule, reason)),
    };

    if multi {
        return approved("the action touches several hosts".into(), "multi-host");
    }
    let Some(min) = row.class.min_autonomy() else {
        return approved(row.note.to_owned(), "always-approval");
    };
    if row.class != Class::ReadOnly {
        for host in action.hosts().as_slice() {
            if let FlapStatus::Exceeded { recent, limit, window } = ctx.flap.status(&flap_key(host, action), now.mono) {
                return approved(
                    format!(
                        "flap limit: {} ran {recent} times in the last {} min (limit {limit}); escalated to a person",
                        action.describe(),
                        window.as_secs() / 60
                    ),
                    "flap-limit",
                );
            }
        }
    }
    if ctx.autonomy >= min {
        return Ruling::Execute(Permit {
            action: action.clone(),
            decision: mk(
                Verdict::Execute,
                "autonomy",
                format!("{} is allowed at {} ({})", action.kind(), ctx.autonomy, row.note),
            ),
            approval_id: ctx.approved,
            issued_at: now.wall,
        });
    }
    approved(format!("{} needs autonomy {min} or a person's approval", action.kind()), "autonomy")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{DiagnosticArgs, DiagnosticName, Hosts, SwitchTarget};
    use std::time::Duration;

    const NOW: Now = Now::new(Timestamp(1_800_000_000_000), crate::Mono(0));

    fn unit(s: &str) -> UnitName {
        UnitName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn local() -> Hosts {
        Hosts::One(HostName::local())
    }

    /// One action of every kind, on `u` where the kind takes a unit.
    fn every_kind(u: &str) -> Vec<Action> {
        let r = || "test".to_owned();
        vec![
            Action::RestartUnit { host: local(), unit: unit(u), reason: r() },
            Action::StartUnit { host: local(), unit: unit(u), reason: r() },
            Action::StopUnit { host: local(), unit: unit(u), reason: r() },
            Action::ResetFailed { host: local(), unit: unit(u), reason: r() },
            Action::JournalVacuum { host: local(), max_age_days: 30, reason: r() },
            Action::CollectGarbage { host: local(), older_than_days: 30, reason: r() },
            Action::StoreVerify { host: local(), reason: r() },
            Action::StoreRepair { host: local(), reason: r() },
            Action::Diagnostic {
                host: local(),
                name: DiagnosticName::UnitStatus,
                args: DiagnosticArgs { unit: Some(unit(u)), ..Default::default() },
                reason: r(),
            },
            Action::Reboot { host: local(), reason: r() },
            Action::ConfigChange {
                host: local(),
                path: "/etc/nixos/configuration.nix".into(),
                patch: "--- a\n+++ b\n".into(),
                reason: r(),
            },
            Action::NixosSwitch { host: local(), target: SwitchTarget { flake: "/etc/nixos#h".into() }, reason: r() },
        ]
    }

    fn expected(kind: ActionKind, autonomy: Autonomy, protected: bool) -> Verdict {
        use ActionKind::*;
        use Autonomy::*;
        if autonomy == Observe {
            return Verdict::Deny;
        }
        let unit_action = matches!(kind, RestartUnit | StartUnit | StopUnit | ResetFailed);
        if unit_action && protected {
            return Verdict::Deny;
        }
        let min = match kind {
            Diagnostic => Some(Suggest),
            RestartUnit | ResetFailed | JournalVacuum | CollectGarbage => Some(AutoSafe),
            StartUnit | StoreVerify => Some(AutoFull),
            StopUnit | StoreRepair | Reboot | ConfigChange | NixosSwitch => None,
        };
        match min {
            Some(m) if autonomy >= m => Verdict::Execute,
            _ => Verdict::Approval,
        }
    }

    #[test]
    fn every_autonomy_kind_and_protection() {
        let protected = ProtectedUnits::new(&["postgresql"]);
        let flap = FlapGuard::new(3, Duration::from_secs(1800));
        let hosts = BTreeSet::new();
        let mut seen = 0;
        for autonomy in Autonomy::ALL {
            for (u, is_protected) in
                [("nginx", false), ("sshd", true), ("ssh.socket", true), ("postgresql.service", true)]
            {
                for action in every_kind(u) {
                    let ctx = PolicyContext {
                        autonomy,
                        protected: &protected,
                        flap: &flap,
                        known_hosts: &hosts,
                        approved: None,
                    };
                    let ruling = decide(&action, &ctx, NOW);
                    let want = expected(action.kind(), autonomy, is_protected);
                    assert_eq!(ruling.verdict(), want, "{} at {autonomy}: {:?}", action.describe(), ruling.decision());
                    assert_eq!(ruling.decision().risk, row(action.kind()).risk);
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 4 * 4 * 12);
    }

    #[test]
    fn approval_turns_approval_into_execute_but_never_deny() {
        let protected = ProtectedUnits::new::<&str>(&[]);
        let flap = FlapGuard::new(3, Duration::from_secs(1800));
        let hosts = BTreeSet::new();
        for autonomy in Autonomy::ALL {
            for action in every_kind("sshd").into_iter().chain(every_kind("nginx")) {
                let base =
                    PolicyContext { autonomy, protected: &protected, flap: &flap, known_hosts: &hosts, approved: None };
                let before = decide(&action, &base, NOW).verdict();
                let ctx = PolicyContext { approved: Some(7), ..base };
                let after = decide(&action, &ctx, NOW);
                match before {
                    Verdict::Deny => assert_eq!(after.verdict(), Verdict::Deny),
                    Verdict::Approval | Verdict::Execute => {
                        assert!(matches!(&after, Ruling::Execute(p) if p.approval_id() == Some(7)))
                    }
                }
            }
        }
    }

    #[test]
    fn protected_under_aliases_and_templates() {
        let p = ProtectedUnits::new(&["postgresql.service", "custom-*"]);
        for u in [
            "ssh",
            "sshd",
            "sshd.service",
            "ssh.socket",
            "openssh",
            "sshd@0-10.0.0.1:22-10.0.0.2:5000",
            "dbus",
            "dbus-broker",
            "messagebus.service",
            "NetworkManager",
            "network-manager",
            "systemd-journald",
            "journald",
            "systemd-logind.service",
            "systemd-networkd.socket",
            "nix-daemon",
            "nix-daemon.socket",
            "macha",
            "macha-approve.service",
            "getty@tty1",
            "user@1000",
            "postgresql",
            "custom-thing",
            "polkit",
            "wpa_supplicant",
        ] {
            assert!(p.protecting(&unit(u)).is_some(), "{u} not protected");
        }
        for u in ["nginx", "sshguard", "postgresql-backup", "dbusy", "my-ssh-tunnel", "nixos-upgrade"] {
            assert_eq!(p.protecting(&unit(u)), None, "{u} wrongly protected");
        }
    }

    #[test]
    fn unmanaged_unit_types_denied() {
        let protected = ProtectedUnits::new::<&str>(&[]);
        let flap = FlapGuard::new(3, Duration::from_secs(1800));
        let hosts = BTreeSet::new();
        let ctx = PolicyContext {
            autonomy: Autonomy::AutoFull,
            protected: &protected,
            flap: &flap,
            known_hosts: &hosts,
            approved: Some(1),
        };
        for u in ["multi-user.target", "-.mount", "system.slice", "init.scope", "dev-sda.device", "swapfile.swap"] {
            let a = Action::RestartUnit { host: local(), unit: unit(u), reason: String::new() };
            assert_eq!(decide(&a, &ctx, NOW).verdict(), Verdict::Deny, "{u}");
        }
    }

    #[test]
    fn flap_guard_escalates() {
        let protected = ProtectedUnits::new::<&str>(&[]);
        let mut flap = FlapGuard::new(3, Duration::from_secs(1800));
        let hosts = BTreeSet::new();
        let a = Action::RestartUnit { host: local(), unit: unit("nginx"), reason: String::new() };
        let key = flap_key(&HostName::local(), &a);
        for i in 0..3 {
            let ctx = PolicyContext {
                autonomy: Autonomy::AutoFull,
                protected: &protected,
                flap: &flap,
                known_hosts: &hosts,
                approved: None,
            };
            assert_eq!(decide(&a, &ctx, NOW).verdict(), Verdict::Execute, "run {i}");
            flap.record(&key, NOW.mono);
        }
        let ctx = PolicyContext {
            autonomy: Autonomy::AutoFull,
            protected: &protected,
            flap: &flap,
            known_hosts: &hosts,
            approved: None,
        };
        let r = decide(&a, &ctx, NOW);
        assert_eq!(r.verdict(), Verdict::Approval);
        assert_eq!(r.decision().rule, "flap-limit");
        // diagnostics are never flap-limited; other units are unaffected
        let d = Action::Diagnostic {
            host: local(),
            name: DiagnosticName::FailedUnits,
            args: DiagnosticArgs::default(),
            reason: String::new(),
        };
        assert_eq!(decide(&d, &ctx, NOW).verdict(), Verdict::Execute);
        let other = Action::RestartUnit { host: local(), unit: unit("other"), reason: String::new() };
        assert_eq!(decide(&other, &ctx, NOW).verdict(), Verdict::Execute);
        // after the window it may run again
        assert_eq!(decide(&a, &ctx, NOW.plus(Duration::from_secs(1801))).verdict(), Verdict::Execute);
    }

    #[test]
    fn the_flap_limit_holds_whatever_the_wall_clock_does() {
        let protected = ProtectedUnits::new::<&str>(&[]);
        let hosts = BTreeSet::new();
        let a = Action::RestartUnit { host: local(), unit: unit("nginx"), reason: String::new() };
        let key = flap_key(&HostName::local(), &a);
        let minute = Duration::from_secs(60);
        // Each direction: the wall clock is stepped by this many minutes after three runs.
        for step in [-180i64, 24 * 60] {
            let mut flap = FlapGuard::new(3, Duration::from_secs(1800));
            let mut now = NOW;
            for _ in 0..3 {
                flap.record(&key, now.mono);
                now = now.plus(minute);
            }
            now.wall = Timestamp(now.wall.0 + step * 60_000);
            let ctx = PolicyContext {
                autonomy: Autonomy::AutoFull,
                protected: &protected,
                flap: &flap,
                known_hosts: &hosts,
                approved: None,
            };
            let r = decide(&a, &ctx, now);
            assert_eq!(r.decision().rule, "flap-limit", "step {step} min: {:?}", r.decision());
            // The permit of the next allowed run carries the stepped wall time it was issued at.
            let later = now.plus(minute * 27);
            match decide(&a, &ctx, later) {
                Ruling::Execute(p) => assert_eq!(p.issued_at(), later.wall, "step {step} min"),
                other => panic!("step {step} min: not allowed one window after the first run: {:?}", other.decision()),
            }
            assert_eq!(decide(&a, &ctx, now.plus(minute * 26)).decision().rule, "flap-limit", "step {step} min");
        }
    }

    #[test]
    fn hosts_must_be_known_and_multi_host_needs_approval() {
        let protected = ProtectedUnits::new::<&str>(&[]);
        let flap = FlapGuard::new(3, Duration::from_secs(1800));
        let mut hosts = BTreeSet::new();
        let web = HostName::parse("web1.lan").unwrap_or_else(|e| panic!("{e}"));
        let db = HostName::parse("db1.lan").unwrap_or_else(|e| panic!("{e}"));
        let a = Action::RestartUnit { host: Hosts::One(web.clone()), unit: unit("nginx"), reason: String::new() };
        let ctx = PolicyContext {
            autonomy: Autonomy::AutoFull,
            protected: &protected,
            flap: &flap,
            known_hosts: &hosts,
            approved: None,
        };
        assert_eq!(decide(&a, &ctx, NOW).decision().rule, "unknown-host");
        hosts.insert(web.clone());
        hosts.insert(db.clone());
        let ctx = PolicyContext {
            autonomy: Autonomy::AutoFull,
            protected: &protected,
            flap: &flap,
            known_hosts: &hosts,
            approved: None,
        };
        assert_eq!(decide(&a, &ctx, NOW).verdict(), Verdict::Execute);
        let m = Action::RestartUnit { host: Hosts::Many(vec![web, db]), unit: unit("nginx"), reason: String::new() };
        let r = decide(&m, &ctx, NOW);
        assert_eq!((r.verdict(), r.decision().risk), (Verdict::Approval, Risk::High));
    }

    #[test]
    fn table_has_one_row_per_kind() {
        for k in ActionKind::ALL {
            assert_eq!(POLICY_TABLE.iter().filter(|r| r.kind == k).count(), 1, "{k}");
        }
    }
}
