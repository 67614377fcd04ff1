//! The one policy gate.
//!
//! [`decide`] turns an [`Action`], who proposed it ([`Origin`]) and the context into a [`Ruling`]:
//! execute (with a [`Permit`]), queue for approval, or deny — with the risk and the reason. Risk comes
//! from [`POLICY_TABLE`] in code and from the action's arguments (a clean-up younger than the floor,
//! a restart of a stopped unit), never from whoever proposed the action. Deny by default: anything
//! not explicitly allowed for the autonomy level and the proposer is not executed.
//!
//! Architecture invariant: a [`Permit`] can only be constructed here, and a person's approval only
//! enters as [`ApprovalEvidence`] built from a stored approval record, bound to the exact stored
//! action by its digest. The executor accepts nothing else and consumes the permit, so nothing
//! executes without having passed this function, and a permit runs once.

use crate::action::{Action, ActionKind, Origin};
use crate::approval::ApprovalState;
use crate::command::{Command, DeployStep, Tools, command_for, deploy_command};
use crate::flap::{FlapGuard, FlapStatus, flap_key};
use crate::{HostName, Now, Timestamp, UnitName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

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

const REMOTE_ACCESS: &str = "remote access: Macha (on other hosts) and people reach the host through it";
const BUS: &str = "the system bus and authorisation: unit control itself goes through them";
const NETWORK: &str = "network management: stopping it can cut the host off";
const OVERLAY: &str = "VPN or overlay network: stopping it can cut Macha and people off from the host";
const SECRETS: &str = "installs secrets: a restart can leave services without their keys";
const CORE: &str = "systemd's own core units: the system itself";
const CONSOLE: &str = "console and emergency access: the way back in when the network is gone";
const DISPLAY: &str = "display manager: a restart ends every graphical session";

/// Built-in protected units: a pattern on the unit stem (a trailing `*` is a prefix match; a plain
/// name also matches its template instances, `name@…`) and why it is protected. They can be added to
/// by configuration, never removed.
pub const BUILTIN_PROTECTED: &[(&str, &str)] = &[
    ("ssh", REMOTE_ACCESS),
    ("sshd", REMOTE_ACCESS),
    ("sshd@*", REMOTE_ACCESS),
    ("ssh@*", REMOTE_ACCESS),
    ("openssh", REMOTE_ACCESS),
    ("openssh-server", REMOTE_ACCESS),
    ("sshd-keygen", "creates the SSH host keys remote access is checked against"),
    ("dbus", BUS),
    ("dbus-*", BUS),
    ("messagebus", BUS),
    ("polkit", BUS),
    ("NetworkManager", NETWORK),
    ("NetworkManager-*", NETWORK),
    ("network-manager", NETWORK),
    ("networking", NETWORK),
    ("network-online", NETWORK),
    ("network-setup", NETWORK),
    ("network-addresses-*", NETWORK),
    ("wpa_supplicant", NETWORK),
    ("wpa_supplicant-*", NETWORK),
    ("iwd", NETWORK),
    ("dhcpcd", NETWORK),
    ("connman", NETWORK),
    ("firewall", "the firewall: a restart can drop the rules that let Macha in (or keep others out)"),
    ("nftables", "the firewall: a restart can drop the rules that let Macha in (or keep others out)"),
    ("nscd", "name service cache: user and host lookups (including Macha's own logins) go through it"),
    ("tailscaled", OVERLAY),
    ("tailscaled-*", OVERLAY),
    ("tailscale-*", OVERLAY),
    ("wireguard-*", OVERLAY),
    ("wg-quick@*", OVERLAY),
    ("wg-quick-*", OVERLAY),
    ("openvpn*", OVERLAY),
    ("zerotier-one", OVERLAY),
    ("netbird", OVERLAY),
    ("netbird-*", OVERLAY),
    ("nebula*", OVERLAY),
    ("sops-install-secrets*", SECRETS),
    ("agenix*", SECRETS),
    ("vault-agent*", SECRETS),
    ("systemd-*", CORE),
    ("init", CORE),
    ("user@*", "a user's service manager: stopping it ends their sessions"),
    ("user-runtime-dir@*", "a user's service manager: stopping it ends their sessions"),
    ("getty@*", CONSOLE),
    ("serial-getty@*", CONSOLE),
    ("autovt@*", CONSOLE),
    ("console-getty", CONSOLE),
    ("emergency", CONSOLE),
    ("rescue", CONSOLE),
    ("debug-shell", "a root shell on tty9 without a password: starting it opens the console to anyone"),
    ("display-manager", DISPLAY),
    ("gdm", DISPLAY),
    ("sddm", DISPLAY),
    ("lightdm", DISPLAY),
    ("nix-daemon", "the Nix daemon: builds and every store change go through it"),
    ("nixos-upgrade", "automatic upgrades: running it deploys a new system, which is a person's decision"),
    ("macha", "Macha itself"),
    ("macha-*", "Macha itself"),
];

/// The reason given for protected units added by configuration.
pub const CONFIGURED_REASON: &str = "listed in protected_units";

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

/// The set of protected unit patterns, each with its reason: the built-in list plus configured
/// additions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedUnits {
    patterns: BTreeMap<String, &'static str>,
}

/// Why a unit is protected: the pattern that matched (and through which alias) and its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// The pattern, with `(alias of …)` when it matched through an alias.
    pub pattern: String,
    pub reason: &'static str,
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.pattern, self.reason)
    }
}

impl ProtectedUnits {
    /// The built-in list plus `extra` (unit names or stem patterns with a trailing `*`). Entries are
    /// normalised: `nginx.service` and `nginx` mean the same. An extra entry never replaces a
    /// built-in one (nor its reason): the list can only grow.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> ProtectedUnits {
        let mut patterns: BTreeMap<String, &'static str> =
            BUILTIN_PROTECTED.iter().map(|(p, r)| ((*p).to_owned(), *r)).collect();
        for e in extra {
            let e = e.as_ref();
            let stem = e.rsplit_once('.').filter(|(_, t)| crate::names::UNIT_TYPES.contains(t)).map_or(e, |(s, _)| s);
            if !stem.is_empty() {
                patterns.entry(stem.to_owned()).or_insert(CONFIGURED_REASON);
            }
        }
        ProtectedUnits { patterns }
    }

    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.keys().map(String::as_str)
    }

    /// Every pattern with its reason.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.patterns.iter().map(|(p, r)| (p.as_str(), *r))
    }

    fn matches_stem(&self, stem: &str) -> Option<(&str, &'static str)> {
        self.patterns
            .iter()
            .find(|(p, _)| match p.strip_suffix('*') {
                Some(prefix) => stem.starts_with(prefix),
                None => *p == stem || stem.strip_prefix(p.as_str()).is_some_and(|rest| rest.starts_with('@')),
            })
            .map(|(p, r)| (p.as_str(), *r))
    }

    /// Why `unit` is protected, if it is: by its stem, its template, or any alias of it. Matching is
    /// case-sensitive except for the alias table, as systemd's names are.
    pub fn protection(&self, unit: &UnitName) -> Option<Protection> {
        let stem = unit.stem();
        if let Some((p, reason)) = self.matches_stem(stem) {
            return Some(Protection { pattern: p.to_owned(), reason });
        }
        let lower = stem.to_ascii_lowercase();
        for group in ALIASES {
            if group.iter().any(|a| a.eq_ignore_ascii_case(&lower)) {
                for alias in *group {
                    if let Some((p, reason)) = self.matches_stem(alias) {
                        return Some(Protection { pattern: format!("{p} (alias of {stem})"), reason });
                    }
                }
            }
        }
        None
    }

    /// The pattern that protects `unit`, if any (see [`ProtectedUnits::protection`]).
    pub fn protecting(&self, unit: &UnitName) -> Option<String> {
        self.protection(unit).map(|p| p.pattern)
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
    /// The kind the action was decided as, when it differs from its own (a restart of a stopped
    /// unit is decided as a start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_as: Option<ActionKind>,
}

/// What a unit was last seen doing, as far as Macha knows (from snapshots and unit events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitActivity {
    /// `active`, `reloading`, `activating` (including a pending automatic restart), `refreshing`.
    Running,
    /// `failed`: restarting it is the routine remediation.
    Failed,
    /// `inactive` or `deactivating`: someone or something stopped it; "restarting" it starts it.
    Stopped,
}

impl UnitActivity {
    /// From systemd's `ActiveState`; `None` for anything else (unknown, so decided as proposed).
    pub fn from_active_state(s: &str) -> Option<UnitActivity> {
        match s {
            "active" | "reloading" | "activating" | "refreshing" => Some(UnitActivity::Running),
            "failed" => Some(UnitActivity::Failed),
            "inactive" | "deactivating" => Some(UnitActivity::Stopped),
            _ => None,
        }
    }
}

/// The last known activity of units, by host and unit.
pub type UnitStates = BTreeMap<(HostName, UnitName), UnitActivity>;

/// The default floor of clean-ups: vacuuming the journal or collecting garbage younger than this
/// many days needs a person.
pub const DEFAULT_CLEANUP_MIN_AGE_DAYS: u32 = 7;

/// What the model's proposals may execute by default: read-only diagnostics only.
pub const DEFAULT_MODEL_MAY_EXECUTE: [ActionKind; 1] = [ActionKind::Diagnostic];

/// Limits that depend on who proposed and on the arguments (`llm.may_execute`,
/// `policy.cleanup_min_age_days`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLimits {
    /// The kinds a model's proposal may execute without a person (still within the autonomy
    /// level); every other kind the model proposes goes to approval.
    pub model_may_execute: BTreeSet<ActionKind>,
    /// Journal vacuums and garbage collections of anything younger than this need a person.
    pub cleanup_min_age_days: u32,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            model_may_execute: DEFAULT_MODEL_MAY_EXECUTE.into_iter().collect(),
            cleanup_min_age_days: DEFAULT_CLEANUP_MIN_AGE_DAYS,
        }
    }
}

/// Everything the gate knows besides the action and the approval, owned: built once from the
/// configuration and the store (the daemon and `macha policy check` build it with the same code)
/// and kept up to date by the engine.
#[derive(Debug, Clone)]
pub struct PolicyInputs {
    pub autonomy: Autonomy,
    pub protected: ProtectedUnits,
    pub flap: FlapGuard,
    /// Hosts other than `local` that actions may target (trusted hosts of the registry).
    pub known_hosts: BTreeSet<HostName>,
    pub limits: PolicyLimits,
    pub unit_states: UnitStates,
}

impl PolicyInputs {
    /// Inputs with the default flap guard and limits, no trusted hosts and no known unit states.
    pub fn new(autonomy: Autonomy, protected: ProtectedUnits) -> PolicyInputs {
        PolicyInputs {
            autonomy,
            protected,
            flap: FlapGuard::new(crate::flap::DEFAULT_LIMIT, crate::flap::DEFAULT_WINDOW),
            known_hosts: BTreeSet::new(),
            limits: PolicyLimits::default(),
            unit_states: UnitStates::new(),
        }
    }

    /// The context of a decision without a person's approval.
    pub fn context(&self) -> PolicyContext<'_> {
        PolicyContext { inputs: self, approval: None }
    }
}

/// The SHA-256 of an action's JSON (a `serde_json::Value`, whose objects keep their keys sorted),
/// in hex: what an approval's evidence binds to.
pub fn action_digest(action_json: &serde_json::Value) -> String {
    let text = serde_json::to_string(action_json).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of(action: &Action) -> String {
    action_digest(&serde_json::to_value(action).unwrap_or(serde_json::Value::Null))
}

/// Proof that a person approved one stored action: the approval's id and the digest of the exact
/// action stored with it. Built only from an approval record in state `approved`
/// (`macha_store::ApprovalRecord::evidence`); [`decide`] checks the digest against the action it
/// decides, so the evidence of one approval never permits anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalEvidence {
    id: i64,
    digest: String,
}

impl ApprovalEvidence {
    /// Evidence from a stored approval: its id, its state and the action as stored. `None` unless
    /// the state is `approved`. Only the store's approval record calls this (a tidy test checks).
    pub fn from_stored_approval(
        id: i64,
        state: ApprovalState,
        stored_action: &serde_json::Value,
    ) -> Option<ApprovalEvidence> {
        (state == ApprovalState::Approved).then(|| ApprovalEvidence { id, digest: action_digest(stored_action) })
    }

    pub fn id(&self) -> i64 {
        self.id
    }
}

/// Everything the gate needs besides the action and its origin: the inputs, and optionally a
/// person's approval. The approval can only be given as [`ApprovalEvidence`].
#[derive(Debug, Clone)]
pub struct PolicyContext<'a> {
    inputs: &'a PolicyInputs,
    approval: Option<ApprovalEvidence>,
}

impl<'a> PolicyContext<'a> {
    pub fn new(inputs: &'a PolicyInputs) -> PolicyContext<'a> {
        PolicyContext { inputs, approval: None }
    }

    /// With a person's approval. It turns `approval` into `execute` only for the exact action it was
    /// given for, never turns `deny` into anything else, and does not lift the flap guard.
    pub fn with_approval(mut self, evidence: ApprovalEvidence) -> PolicyContext<'a> {
        self.approval = Some(evidence);
        self
    }

    pub fn inputs(&self) -> &PolicyInputs {
        self.inputs
    }

    pub fn autonomy(&self) -> Autonomy {
        self.inputs.autonomy
    }
}

/// Every permit's serial number, unique within the process.
static PERMIT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Permission to execute one action, once. Only [`decide`] constructs it; the executor consumes it.
#[derive(Debug)]
#[must_use = "a permit that is not executed means the action silently did not run"]
pub struct Permit {
    serial: u64,
    action: Action,
    digest: String,
    origin: Origin,
    decision: Decision,
    approval_id: Option<i64>,
    issued_at: Timestamp,
    allows_start: bool,
    /// The deployment this permit resumes instead of starting a new one ([`Permit::resuming`]).
    resumes: Option<String>,
}

/// The identity of a permit: what a receipt names, so an outcome is recorded against the permit it
/// came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermitId {
    pub serial: u64,
    /// The digest of the permitted action ([`action_digest`]).
    pub action_digest: String,
    pub approval_id: Option<i64>,
    pub issued_at: Timestamp,
}

impl Permit {
    pub fn action(&self) -> &Action {
        &self.action
    }
    pub fn origin(&self) -> &Origin {
        &self.origin
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
    pub fn id(&self) -> PermitId {
        PermitId {
            serial: self.serial,
            action_digest: self.digest.clone(),
            approval_id: self.approval_id,
            issued_at: self.issued_at,
        }
    }

    /// Whether this permit also covers starting its unit: a restart of a unit that turns out to be
    /// stopped is a start, and the executor refuses it unless this is true (the policy would have
    /// let a start of the same unit execute too).
    pub fn allows_start(&self) -> bool {
        self.allows_start
    }

    /// The id of the deployment this permit carries out (hexadecimal, 12 characters): from the
    /// permitted action's digest, the permit's serial and its time, so two executions never share
    /// one — the transient units and GC roots on the host are named after it, and a stale one of
    /// an earlier deployment cannot stand for this one.
    pub fn deploy_id(&self) -> String {
        if let Some(id) = &self.resumes {
            return id.clone();
        }
        let mut h = Sha256::new();
        h.update(self.digest.as_bytes());
        h.update(self.serial.to_le_bytes());
        h.update(self.issued_at.millis().to_le_bytes());
        h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// This permit, re-decided for an approved deployment that a restart of Macha cut off, bound to
    /// that deployment's id instead of a new one: the executor then settles the deployment already
    /// on the host (it reads, and at most disarms and commits the verified new system) and never
    /// starts another. `None` unless the permit is a deployment's, carries an approval, and `id` is
    /// a deployment id.
    pub fn resuming(mut self, id: &str) -> Option<Permit> {
        let ok = matches!(self.action, Action::NixosSwitch { .. })
            && self.approval_id.is_some()
            && crate::command::valid_deploy_id(id);
        if !ok {
            return None;
        }
        self.resumes = Some(id.to_owned());
        Some(self)
    }

    /// The deployment this permit resumes ([`Permit::resuming`]), if it does.
    pub fn resumes(&self) -> Option<&str> {
        self.resumes.as_deref()
    }

    /// Whether `cmd` is one of the privileged steps of this permit's deployment, with its own
    /// paths and id (the time limits of the steps that have one may be any from 1 s to a day).
    fn authorises_deploy(&self, cmd: &Command) -> bool {
        let Action::NixosSwitch { target, .. } = &self.action else { return false };
        let id = self.deploy_id();
        let (system, previous) = (&target.system, &target.previous);
        let program = cmd.program().rsplit('/').next().unwrap_or_default();
        let tools = Tools::new().with(program, cmd.program());
        let secs_after = |prefix: &str, suffix: &str| {
            cmd.argv()
                .iter()
                .find_map(|a| a.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| (1..=86_400).contains(n))
                .unwrap_or(0)
        };
        let arm = secs_after("--on-active=", "s");
        let limit = secs_after("--property=TimeoutStartSec=", "");
        let steps = [
            DeployStep::PinRoot { id: &id, role: "old", path: previous },
            DeployStep::PinRoot { id: &id, role: "new", path: system },
            DeployStep::Arm { id: &id, previous, secs: arm },
            DeployStep::Disarm { id: &id },
            DeployStep::Activate { id: &id, system, previous, secs: limit },
            DeployStep::Rollback { id: &id, previous, secs: limit },
            DeployStep::SetProfile { system },
            DeployStep::Boot { id: &id, system },
            // A rollback after the profile moved puts the profile and the boot entry back.
            DeployStep::SetProfile { system: previous },
            DeployStep::Boot { id: &id, system: previous },
            DeployStep::Cleanup { id: &id },
            DeployStep::Forget { id: &id },
        ];
        steps.iter().any(|step| deploy_command(step, &tools).is_ok_and(|expected| expected == *cmd))
    }

    /// Whether `cmd` is exactly what this permit allows to run with privileges (`sudo -n` on another
    /// host): `systemctl --no-ask-password VERB -- UNIT` of a unit action, or the fixed command of a
    /// command action that changes the host. Read-only diagnostics never need privileges.
    pub fn authorises(&self, cmd: &Command) -> bool {
        let program = cmd.program().rsplit('/').next().unwrap_or_default();
        let unit_verbs: &[&str] = match &self.action {
            Action::RestartUnit { .. } if self.allows_start => &["restart", "start"],
            Action::RestartUnit { .. } => &["restart"],
            Action::StartUnit { .. } => &["start"],
            Action::StopUnit { .. } => &["stop"],
            Action::ResetFailed { .. } => &["reset-failed"],
            Action::Diagnostic { .. } | Action::Reboot { .. } | Action::ConfigChange { .. } => return false,
            Action::NixosSwitch { .. } => return self.authorises_deploy(cmd),
            Action::JournalVacuum { .. }
            | Action::CollectGarbage { .. }
            | Action::StoreVerify { .. }
            | Action::StoreRepair { .. } => {
                let tools = Tools::new().with(program, cmd.program());
                return command_for(&self.action, &tools).is_ok_and(|expected| expected == *cmd);
            }
        };
        let Some(unit) = self.action.unit() else { return false };
        program == "systemctl"
            && matches!(cmd.argv(), [flag, verb, sep, u]
                if flag == "--no-ask-password" && unit_verbs.contains(&verb.as_str()) && sep == "--" && u == unit.as_str())
    }
}

/// The result of [`decide`].
#[derive(Debug)]
#[must_use]
#[expect(
    clippy::large_enum_variant,
    reason = "a ruling is matched at once and its permit moved out; boxing it would change every caller"
)]
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

/// The kind an action is decided as: a restart of a unit known to be stopped on any of its hosts is
/// a start.
fn effective_kind(action: &Action, inputs: &PolicyInputs) -> ActionKind {
    if let Action::RestartUnit { unit, host, .. } = action {
        let stopped = host
            .as_slice()
            .iter()
            .any(|h| inputs.unit_states.get(&(h.clone(), unit.clone())) == Some(&UnitActivity::Stopped));
        if stopped {
            return ActionKind::StartUnit;
        }
    }
    action.kind()
}

/// The days of a clean-up, if the action is one.
fn cleanup_days(action: &Action) -> Option<u32> {
    match action {
        Action::JournalVacuum { max_age_days, .. } => Some(*max_age_days),
        Action::CollectGarbage { older_than_days, .. } => Some(*older_than_days),
        _ => None,
    }
}

/// The gate. Pure and total: every input gets a ruling, nothing panics. A permit is stamped with
/// `now.wall`; the flap guard counts on `now.mono`.
pub fn decide(action: &Action, origin: &Origin, ctx: &PolicyContext<'_>, now: Now) -> Ruling {
    let kind = effective_kind(action, ctx.inputs);
    let ruling = decide_as(action, kind, origin, ctx, now);
    match ruling {
        Ruling::Execute(mut permit) => {
            // A restart covers a start if the unit is known stopped (decided as a start above) or if
            // a start of the same unit would execute here too.
            permit.allows_start = match action {
                Action::RestartUnit { .. } if kind == ActionKind::StartUnit => true,
                Action::RestartUnit { .. } => {
                    matches!(decide_as(action, ActionKind::StartUnit, origin, ctx, now), Ruling::Execute(_))
                }
                Action::StartUnit { .. } => true,
                _ => false,
            };
            Ruling::Execute(permit)
        }
        other => other,
    }
}

fn decide_as(action: &Action, kind: ActionKind, origin: &Origin, ctx: &PolicyContext<'_>, now: Now) -> Ruling {
    let inputs = ctx.inputs;
    let row = row(kind);
    let multi = action.hosts().is_multi();
    let risk = if multi { row.risk.raised() } else { row.risk };
    let decided_as = (kind != action.kind()).then_some(kind);
    let mk = |verdict: Verdict, rule: &str, reason: String| Decision {
        verdict,
        risk,
        reason,
        rule: rule.to_owned(),
        autonomy: inputs.autonomy,
        decided_as,
    };
    let deny = |rule: &str, reason: String| Ruling::Deny(mk(Verdict::Deny, rule, reason));

    // Anything that does not validate is refused outright (a defence in depth: parsing validates too).
    if let Err(e) = action.validate() {
        return deny("invalid", e.to_string());
    }
    if inputs.autonomy == Autonomy::Observe {
        return deny("observe", "autonomy level observe: Macha executes nothing".into());
    }
    for host in action.hosts().as_slice() {
        if !host.is_local() && !inputs.known_hosts.contains(host) {
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
        if let Some(p) = inputs.protected.protection(unit) {
            return deny("protected", format!("{unit} is protected (matches {p}); Macha never acts on it"));
        }
    }
    let digest = digest_of(action);
    // An approval's evidence belongs to exactly one stored action.
    let approval = match &ctx.approval {
        Some(ev) if ev.digest != digest => {
            return deny(
                "approval-mismatch",
                format!("approval {} was given for a different action; nothing is permitted by it", ev.id),
            );
        }
        Some(ev) => Some(ev.id),
        None => None,
    };
    let as_start = if decided_as.is_some() { " (the unit is stopped: a restart starts it)" } else { "" };
    let permit = |decision: Decision| {
        Ruling::Execute(Permit {
            serial: PERMIT_SERIAL.fetch_add(1, Ordering::Relaxed),
            action: action.clone(),
            digest: digest.clone(),
            origin: origin.clone(),
            decision,
            approval_id: approval,
            issued_at: now.wall,
            allows_start: false,
            resumes: None,
        })
    };
    let approved = |reason: String, rule: &str| match approval {
        Some(id) => permit(mk(Verdict::Execute, "approved", format!("approved by a person (approval {id}); {reason}"))),
        None => Ruling::Approval(mk(Verdict::Approval, rule, reason)),
    };

    // The flap guard comes first among the escalations: an approval does not lift it.
    if row.class != Class::ReadOnly {
        for host in action.hosts().as_slice() {
            if let FlapStatus::Exceeded { recent, limit, window } =
                inputs.flap.status(&flap_key(host, action), now.mono)
            {
                let after = if approval.is_some() { "; an approval does not lift the flap limit" } else { "" };
                return Ruling::Approval(mk(
                    Verdict::Approval,
                    "flap-limit",
                    format!(
                        "flap limit: {} ran {recent} times in the last {} min (limit {limit}); escalated to a person{after}",
                        action.describe(),
                        window.as_secs() / 60
                    ),
                ));
            }
        }
    }
    if multi {
        return approved("the action touches several hosts".into(), "multi-host");
    }
    let Some(min) = row.class.min_autonomy() else {
        return approved(format!("{}{as_start}", row.note), "always-approval");
    };
    if let Some(days) = cleanup_days(action)
        && days < inputs.limits.cleanup_min_age_days
    {
        return approved(
            format!(
                "{} of anything younger than {} days ({days} asked) needs a person",
                action.kind(),
                inputs.limits.cleanup_min_age_days
            ),
            "cleanup-floor",
        );
    }
    if inputs.autonomy < min {
        return approved(format!("{kind} needs autonomy {min} or a person's approval{as_start}"), "autonomy");
    }
    if *origin == Origin::Model && !inputs.limits.model_may_execute.contains(&kind) {
        return approved(
            format!("the model proposed {kind}{as_start}; a model's proposal of it needs a person (llm.may_execute)"),
            "model-proposal",
        );
    }
    permit(mk(
        Verdict::Execute,
        if approval.is_some() { "approved" } else { "autonomy" },
        format!("{kind} is allowed at {} ({}){as_start}", inputs.autonomy, row.note),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::action::{DiagnosticArgs, DiagnosticName, Hosts, SwitchTarget};
    use std::time::Duration;

    const NOW: Now = Now::new(Timestamp(1_800_000_000_000), crate::Mono(0));
    const RULE: Origin = Origin::Person { uid: 0 };

    fn inputs(
        autonomy: Autonomy,
        protected: &ProtectedUnits,
        flap: &FlapGuard,
        hosts: &BTreeSet<HostName>,
    ) -> PolicyInputs {
        PolicyInputs {
            flap: flap.clone(),
            known_hosts: hosts.clone(),
            ..PolicyInputs::new(autonomy, protected.clone())
        }
    }

    fn switch_target() -> SwitchTarget {
        let p = |n: &str| crate::StorePath::parse(&format!("/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-{n}")).unwrap();
        SwitchTarget { system: p("new"), previous: p("old"), flake: None }
    }

    fn evidence(id: i64, action: &Action) -> ApprovalEvidence {
        let stored = serde_json::to_value(action).unwrap_or_else(|e| panic!("{e}"));
        ApprovalEvidence::from_stored_approval(id, ApprovalState::Approved, &stored)
            .unwrap_or_else(|| panic!("approved evidence"))
    }

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
            Action::NixosSwitch { host: local(), target: Box::new(switch_target()), reason: r() },
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
                    let inp = inputs(autonomy, &protected, &flap, &hosts);
                    let ctx = inp.context();
                    let ruling = decide(&action, &RULE, &ctx, NOW);
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
                let inp = inputs(autonomy, &protected, &flap, &hosts);
                let before = decide(&action, &RULE, &inp.context(), NOW).verdict();
                let ctx = inp.context().with_approval(evidence(7, &action));
                let after = decide(&action, &RULE, &ctx, NOW);
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
        for u in ["nginx", "sshguard", "postgresql-backup", "dbusy", "my-ssh-tunnel", "nixos-rebuild-helper"] {
            assert_eq!(p.protecting(&unit(u)), None, "{u} wrongly protected");
        }
    }

    #[test]
    fn unmanaged_unit_types_denied() {
        let protected = ProtectedUnits::new::<&str>(&[]);
        let flap = FlapGuard::new(3, Duration::from_secs(1800));
        let hosts = BTreeSet::new();
        let inp = inputs(Autonomy::AutoFull, &protected, &flap, &hosts);
        let ctx = inp.context();
        for u in ["multi-user.target", "-.mount", "system.slice", "init.scope", "dev-sda.device", "swapfile.swap"] {
            let a = Action::RestartUnit { host: local(), unit: unit(u), reason: String::new() };
            assert_eq!(decide(&a, &RULE, &ctx, NOW).verdict(), Verdict::Deny, "{u}");
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
            let inp = inputs(Autonomy::AutoFull, &protected, &flap, &hosts);
            let ctx = inp.context();
            assert_eq!(decide(&a, &RULE, &ctx, NOW).verdict(), Verdict::Execute, "run {i}");
            flap.record(&key, NOW.mono);
        }
        let inp = inputs(Autonomy::AutoFull, &protected, &flap, &hosts);
        let ctx = inp.context();
        let r = decide(&a, &RULE, &ctx, NOW);
        assert_eq!(r.verdict(), Verdict::Approval);
        assert_eq!(r.decision().rule, "flap-limit");
        // diagnostics are never flap-limited; other units are unaffected
        let d = Action::Diagnostic {
            host: local(),
            name: DiagnosticName::FailedUnits,
            args: DiagnosticArgs::default(),
            reason: String::new(),
        };
        assert_eq!(decide(&d, &RULE, &ctx, NOW).verdict(), Verdict::Execute);
        let other = Action::RestartUnit { host: local(), unit: unit("other"), reason: String::new() };
        assert_eq!(decide(&other, &RULE, &ctx, NOW).verdict(), Verdict::Execute);
        // after the window it may run again
        assert_eq!(decide(&a, &RULE, &ctx, NOW.plus(Duration::from_secs(1801))).verdict(), Verdict::Execute);
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
            let inp = inputs(Autonomy::AutoFull, &protected, &flap, &hosts);
            let ctx = inp.context();
            let r = decide(&a, &RULE, &ctx, now);
            assert_eq!(r.decision().rule, "flap-limit", "step {step} min: {:?}", r.decision());
            // The permit of the next allowed run carries the stepped wall time it was issued at.
            let later = now.plus(minute * 27);
            match decide(&a, &RULE, &ctx, later) {
                Ruling::Execute(p) => assert_eq!(p.issued_at(), later.wall, "step {step} min"),
                other => panic!("step {step} min: not allowed one window after the first run: {:?}", other.decision()),
            }
            assert_eq!(decide(&a, &RULE, &ctx, now.plus(minute * 26)).decision().rule, "flap-limit", "step {step} min");
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
        let inp = inputs(Autonomy::AutoFull, &protected, &flap, &hosts);
        let ctx = inp.context();
        assert_eq!(decide(&a, &RULE, &ctx, NOW).decision().rule, "unknown-host");
        hosts.insert(web.clone());
        hosts.insert(db.clone());
        let inp = inputs(Autonomy::AutoFull, &protected, &flap, &hosts);
        let ctx = inp.context();
        assert_eq!(decide(&a, &RULE, &ctx, NOW).verdict(), Verdict::Execute);
        let m = Action::RestartUnit { host: Hosts::Many(vec![web, db]), unit: unit("nginx"), reason: String::new() };
        let r = decide(&m, &RULE, &ctx, NOW);
        assert_eq!((r.verdict(), r.decision().risk), (Verdict::Approval, Risk::High));
    }

    #[test]
    fn table_has_one_row_per_kind() {
        for k in ActionKind::ALL {
            assert_eq!(POLICY_TABLE.iter().filter(|r| r.kind == k).count(), 1, "{k}");
        }
    }

    fn restart(u: &str) -> Action {
        Action::RestartUnit { host: local(), unit: unit(u), reason: "test".into() }
    }

    /// Finding: a model's journal vacuum ran at auto-safe. Now a model's proposal executes only the
    /// kinds of `llm.may_execute` (default: diagnostics); the rest goes to a person.
    #[test]
    fn model_proposals_execute_only_what_llm_may_execute() {
        let mut inp = PolicyInputs::new(Autonomy::AutoFull, ProtectedUnits::new::<&str>(&[]));
        let rule = Origin::Rule { check: "disk_space".into() };
        for action in every_kind("nginx") {
            let by_rule = decide(&action, &rule, &inp.context(), NOW);
            let by_model = decide(&action, &Origin::Model, &inp.context(), NOW);
            match action.kind() {
                ActionKind::Diagnostic => assert_eq!(by_model.verdict(), Verdict::Execute),
                _ if by_rule.verdict() == Verdict::Execute => {
                    assert_eq!(by_model.verdict(), Verdict::Approval, "{}", action.describe());
                    assert_eq!(by_model.decision().rule, "model-proposal");
                }
                _ => assert_eq!(by_model.verdict(), by_rule.verdict(), "{}", action.describe()),
            }
        }
        // Configured kinds execute (within the autonomy level); a person's approval covers the rest.
        inp.limits.model_may_execute.insert(ActionKind::RestartUnit);
        assert_eq!(decide(&restart("nginx"), &Origin::Model, &inp.context(), NOW).verdict(), Verdict::Execute);
        let vacuum = Action::JournalVacuum { host: local(), max_age_days: 30, reason: "r".into() };
        assert_eq!(decide(&vacuum, &Origin::Model, &inp.context(), NOW).verdict(), Verdict::Approval);
        let ctx = inp.context().with_approval(evidence(3, &vacuum));
        assert_eq!(decide(&vacuum, &Origin::Model, &ctx, NOW).verdict(), Verdict::Execute);
    }

    /// Finding: vacuum and GC were "safe" from 1 day up. Younger than the floor needs a person.
    #[test]
    fn cleanup_younger_than_the_floor_needs_a_person() {
        let mut inp = PolicyInputs::new(Autonomy::AutoFull, ProtectedUnits::new::<&str>(&[]));
        for days in [1, 6, 7, 30] {
            for action in [
                Action::JournalVacuum { host: local(), max_age_days: days, reason: "r".into() },
                Action::CollectGarbage { host: local(), older_than_days: days, reason: "r".into() },
            ] {
                let r = decide(&action, &RULE, &inp.context(), NOW);
                if days < 7 {
                    assert_eq!(
                        (r.verdict(), r.decision().rule.as_str()),
                        (Verdict::Approval, "cleanup-floor"),
                        "{days}"
                    );
                } else {
                    assert_eq!(r.verdict(), Verdict::Execute, "{days}");
                }
            }
        }
        inp.limits.cleanup_min_age_days = 31;
        let gc = Action::CollectGarbage { host: local(), older_than_days: 30, reason: "r".into() };
        assert_eq!(decide(&gc, &RULE, &inp.context(), NOW).decision().rule, "cleanup-floor");
    }

    /// Finding: `restart_unit` of a stopped unit started it at auto-safe. It is decided as a start
    /// when the unit is known stopped, and the permit says whether it covers a start.
    #[test]
    fn restart_of_a_stopped_unit_is_decided_as_a_start() {
        let mut inp = PolicyInputs::new(Autonomy::AutoSafe, ProtectedUnits::new::<&str>(&[]));
        let key = (HostName::local(), unit("nginx"));
        // Unknown state: a restart, which does not cover a start at auto-safe.
        match decide(&restart("nginx"), &RULE, &inp.context(), NOW) {
            Ruling::Execute(p) => assert!(!p.allows_start()),
            other => panic!("{:?}", other.decision()),
        }
        for (state, verdict) in [
            (UnitActivity::Running, Verdict::Execute),
            (UnitActivity::Failed, Verdict::Execute),
            (UnitActivity::Stopped, Verdict::Approval),
        ] {
            inp.unit_states.insert(key.clone(), state);
            let r = decide(&restart("nginx"), &RULE, &inp.context(), NOW);
            assert_eq!(r.verdict(), verdict, "{state:?}: {:?}", r.decision());
        }
        let r = decide(&restart("nginx"), &RULE, &inp.context(), NOW);
        assert_eq!(r.decision().decided_as, Some(ActionKind::StartUnit));
        assert!(r.decision().reason.contains("stopped"), "{}", r.decision().reason);
        // At auto-full a start is allowed, so the permit covers it.
        inp.autonomy = Autonomy::AutoFull;
        match decide(&restart("nginx"), &RULE, &inp.context(), NOW) {
            Ruling::Execute(p) => assert!(p.allows_start()),
            other => panic!("{:?}", other.decision()),
        }
        inp.unit_states.clear();
        match decide(&restart("nginx"), &RULE, &inp.context(), NOW) {
            Ruling::Execute(p) => assert!(p.allows_start()),
            other => panic!("{:?}", other.decision()),
        }
        assert_eq!(UnitActivity::from_active_state("inactive"), Some(UnitActivity::Stopped));
        assert_eq!(UnitActivity::from_active_state("activating"), Some(UnitActivity::Running));
        assert_eq!(UnitActivity::from_active_state("maintenance"), None);
    }

    /// Finding: VPN daemons, secret installers, debug-shell, nixos-upgrade and nscd were allowed.
    #[test]
    fn protected_by_default_with_reasons() {
        let p = ProtectedUnits::new::<&str>(&[]);
        for u in [
            "tailscaled",
            "tailscaled-autoconnect",
            "wireguard-wg0",
            "wg-quick@wg0",
            "wg-quick-wg0",
            "openvpn-office",
            "openvpn@client",
            "zerotier-one",
            "netbird",
            "netbird-wt0",
            "nebula@mesh",
            "sops-install-secrets",
            "sops-install-secrets-for-users",
            "agenix",
            "agenix-install-secrets",
            "vault-agent-default",
            "debug-shell",
            "nixos-upgrade",
            "nscd",
            "polkit",
            "display-manager",
            "gdm",
            "sddm",
            "lightdm",
            "sshd.socket",
            "sshd@1-10.0.0.1:22-10.0.0.2:5000",
            "ssh@0-10.0.0.1:22-10.0.0.2:5000",
        ] {
            let why = p.protection(&unit(u)).unwrap_or_else(|| panic!("{u} not protected"));
            assert!(!why.reason.is_empty() && why.reason != CONFIGURED_REASON, "{u}: {why}");
        }
        assert!(BUILTIN_PROTECTED.iter().all(|(pattern, reason)| !pattern.is_empty() && reason.len() > 10));
        let inp = PolicyInputs::new(Autonomy::AutoFull, p);
        let r = decide(&restart("tailscaled"), &RULE, &inp.context(), NOW);
        assert_eq!(r.decision().rule, "protected");
        assert!(r.decision().reason.contains("VPN"), "{}", r.decision().reason);
    }

    /// Configuration extends the list; it never shortens it, nor replaces a built-in reason.
    #[test]
    fn configuration_extends_never_shortens() {
        let builtin = ProtectedUnits::new::<&str>(&[]);
        let configured = ProtectedUnits::new(&["sshd", "postgresql.service", "tailscaled", "backup-*"]);
        for (pattern, reason) in builtin.entries() {
            assert_eq!(configured.entries().find(|(p, _)| *p == pattern).map(|(_, r)| r), Some(reason), "{pattern}");
        }
        assert_eq!(configured.protection(&unit("postgresql")).map(|p| p.reason), Some(CONFIGURED_REASON));
        assert!(configured.protection(&unit("backup-db")).is_some());
        assert_eq!(configured.patterns().count(), builtin.patterns().count() + 2);
    }

    /// Finding: any code could set `approved`. Approval now enters only as evidence bound to the
    /// exact stored action, and only from a record in state `approved`.
    #[test]
    fn approval_evidence_binds_to_the_exact_action() {
        let inp = PolicyInputs::new(Autonomy::AutoSafe, ProtectedUnits::new::<&str>(&[]));
        let reboot = Action::Reboot { host: local(), reason: "kernel update".into() };
        let stored = serde_json::to_value(&reboot).unwrap_or_else(|e| panic!("{e}"));
        for state in [ApprovalState::Pending, ApprovalState::Rejected, ApprovalState::Expired, ApprovalState::Executed]
        {
            assert!(ApprovalEvidence::from_stored_approval(4, state, &stored).is_none(), "{state:?}");
        }
        let ev = evidence(4, &reboot);
        match decide(&reboot, &RULE, &inp.context().with_approval(ev.clone()), NOW) {
            Ruling::Execute(p) => {
                assert_eq!(p.approval_id(), Some(4));
                assert_eq!(p.id().action_digest, action_digest(&stored));
            }
            other => panic!("{:?}", other.decision()),
        }
        // The same evidence for another action (even one differing only in its reason) permits nothing.
        for other in [
            Action::Reboot { host: local(), reason: "something else".into() },
            Action::StopUnit { host: local(), unit: unit("nginx"), reason: "kernel update".into() },
        ] {
            let r = decide(&other, &RULE, &inp.context().with_approval(ev.clone()), NOW);
            assert_eq!((r.verdict(), r.decision().rule.as_str()), (Verdict::Deny, "approval-mismatch"));
        }
        // Every permit has its own serial: two permits for the same action are two permits.
        let a = decide(&reboot, &RULE, &inp.context().with_approval(ev.clone()), NOW);
        let b = decide(&reboot, &RULE, &inp.context().with_approval(ev), NOW);
        match (a, b) {
            (Ruling::Execute(a), Ruling::Execute(b)) => assert_ne!(a.id().serial, b.id().serial),
            _ => panic!("not permitted"),
        }
    }

    /// Finding: an approval turned a flap-guard stop into execute, contrary to the docs.
    #[test]
    fn an_approval_does_not_lift_the_flap_guard() {
        let mut inp = PolicyInputs::new(Autonomy::AutoFull, ProtectedUnits::new::<&str>(&[]));
        let a = restart("nginx");
        let key = flap_key(&HostName::local(), &a);
        for _ in 0..3 {
            inp.flap.record(&key, NOW.mono);
        }
        let r = decide(&a, &RULE, &inp.context().with_approval(evidence(9, &a)), NOW);
        assert_eq!((r.verdict(), r.decision().rule.as_str()), (Verdict::Approval, "flap-limit"));
        assert!(r.decision().reason.contains("does not lift"), "{}", r.decision().reason);
    }

    /// Finding: privileged SSH needed no permit. A permit authorises exactly its own command.
    #[test]
    fn a_permit_authorises_only_its_own_privileged_command() {
        let inp = PolicyInputs::new(Autonomy::AutoFull, ProtectedUnits::new::<&str>(&[]));
        let permit = |a: &Action| match decide(a, &RULE, &inp.context(), NOW) {
            Ruling::Execute(p) => p,
            other => panic!("{:?}", other.decision()),
        };
        let cmd = |prog: &str, args: &[&str]| {
            Command::new(prog).unwrap_or_else(|e| panic!("{e}")).args(args.iter().map(|s| (*s).to_owned()))
        };
        let systemctl = "/run/current-system/sw/bin/systemctl";
        let r = permit(&restart("nginx"));
        assert!(r.authorises(&cmd(systemctl, &["--no-ask-password", "restart", "--", "nginx.service"])));
        assert!(r.authorises(&cmd(systemctl, &["--no-ask-password", "start", "--", "nginx.service"])));
        assert!(!r.authorises(&cmd(systemctl, &["--no-ask-password", "stop", "--", "nginx.service"])));
        assert!(!r.authorises(&cmd(systemctl, &["--no-ask-password", "restart", "--", "sshd.service"])));
        assert!(!r.authorises(&cmd("/bin/sh", &["--no-ask-password", "restart", "--", "nginx.service"])));
        let gc = permit(&Action::CollectGarbage { host: local(), older_than_days: 14, reason: "r".into() });
        let nix_gc = "/run/current-system/sw/bin/nix-collect-garbage";
        assert!(gc.authorises(&cmd(nix_gc, &["--delete-older-than", "14d"])));
        assert!(!gc.authorises(&cmd(nix_gc, &["--delete-older-than", "1d"])));
        assert!(!gc.authorises(&cmd("/run/current-system/sw/bin/journalctl", &["--vacuum-time=14d"])));
        // A deployment's permit covers exactly the privileged steps of its own deployment.
        let switch = Action::NixosSwitch { host: local(), target: Box::new(switch_target()), reason: "r".into() };
        let ctx = inp.context().with_approval(evidence(3, &switch));
        let Ruling::Execute(d) = decide(&switch, &RULE, &ctx, NOW) else { panic!("an approved deployment executes") };
        let id = d.deploy_id();
        assert_eq!(id.len(), 12);
        let tools = Tools::new()
            .with("systemd-run", "/usr/bin/systemd-run")
            .with("systemctl", systemctl)
            .with("nix-env", "/usr/bin/nix-env")
            .with("nix-store", "/usr/bin/nix-store");
        let t = switch_target();
        let step = |s: DeployStep<'_>| deploy_command(&s, &tools).unwrap_or_else(|e| panic!("{e}"));
        for s in [
            DeployStep::Arm { id: &id, previous: &t.previous, secs: 90 },
            DeployStep::Activate { id: &id, system: &t.system, previous: &t.previous, secs: 300 },
            DeployStep::Rollback { id: &id, previous: &t.previous, secs: 300 },
            DeployStep::Disarm { id: &id },
            DeployStep::PinRoot { id: &id, role: "old", path: &t.previous },
            DeployStep::SetProfile { system: &t.system },
            DeployStep::Boot { id: &id, system: &t.system },
            DeployStep::Cleanup { id: &id },
        ] {
            assert!(s.changes_the_host());
            assert!(d.authorises(&step(s.clone())), "{s:?}");
        }
        // Not another deployment's units, not the systems swapped, not a read, not another program.
        let other = "abcdef123456";
        assert!(!d.authorises(&step(DeployStep::Disarm { id: other })));
        assert!(!d.authorises(&step(DeployStep::Arm { id: &id, previous: &t.system, secs: 90 })));
        assert!(!d.authorises(&step(DeployStep::Activate {
            id: &id,
            system: &t.previous,
            previous: &t.system,
            secs: 300
        })));
        let elsewhere = crate::StorePath::parse("/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-other").unwrap();
        assert!(!d.authorises(&step(DeployStep::SetProfile { system: &elsewhere })));
        assert!(!d.authorises(&step(DeployStep::Boot { id: &id, system: &elsewhere })));
        assert!(d.authorises(&step(DeployStep::SetProfile { system: &t.previous })), "a rollback restores the profile");
        assert!(!d.authorises(&step(DeployStep::FailedUnits)));
        assert!(!d.authorises(&cmd("/bin/sh", &["-c", "reboot"])));
        assert!(!r.authorises(&step(DeployStep::Cleanup { id: &id })), "a restart's permit covers no deployment");
        let diag = permit(&every_kind("nginx").remove(8));
        assert_eq!(diag.action().kind(), ActionKind::Diagnostic);
        assert!(
            !diag.authorises(&cmd(systemctl, &["status", "--no-pager", "--full", "--lines=20", "--", "nginx.service"]))
        );
        // A permit resuming an earlier deployment covers that deployment's steps, not its own id's.
        assert!(r.resuming(other).is_none(), "only a deployment's permit resumes one");
        let Ruling::Execute(bad) = decide(&switch, &RULE, &ctx, NOW) else { panic!("re-decided") };
        assert!(bad.resuming("not-hex").is_none());
        let Ruling::Execute(again) = decide(&switch, &RULE, &ctx, NOW) else { panic!("re-decided") };
        let fresh = again.deploy_id();
        let resumed = again.resuming(other).expect("an approved deployment's permit resumes");
        assert_eq!((resumed.deploy_id().as_str(), resumed.resumes()), (other, Some(other)));
        assert!(resumed.authorises(&step(DeployStep::Disarm { id: other })));
        assert!(!resumed.authorises(&step(DeployStep::Disarm { id: &fresh })));
        assert!(resumed.authorises(&step(DeployStep::Boot { id: other, system: &t.system })));
        assert_eq!(d.resumes(), None);
    }
}
