//! The per-host deployment state machine: sans-IO, driven by events and a clock the caller passes
//! in, returning the commands to run next, and ending in exactly one truthful [`Final`] state.
//!
//! ```text
//! Preflight → Copy → Pin → Arm → Activate ─┬─────────────────→ Verify → Commit → Done(Succeeded)
//!     │        │      │     │      │       └→ ReadUnitResult ─┘   │        │
//!     └────────┴──────┴─────┴→ Done(Refused)                      └→ Rollback → VerifyRollback → Done(RolledBack)
//!                                                                                       └──────→ Done(RollbackFailed)
//! ```
//!
//! The rules (each has a test below):
//!
//! - A failure in preflight, copy, pin or arm ends `Refused`: nothing was activated. A preflight that
//!   finds another system running than the approved old path refuses too (the approval is bound to it).
//! - The dead-man timer is armed on the host before activation. It re-activates the *recorded* old
//!   path, never a relative generation, when it is not disarmed in time with this deploy's token.
//! - Activation (`switch-to-configuration test`, in a transient unit) exiting 0 or 4 (live, some units
//!   failed) goes to verification, which decides; any other exit rolls back.
//! - A connection lost during activation (or no answer by the activation deadline) reads the
//!   transient unit's result over a new connection. The machine never activates twice: exactly one
//!   [`Command::Activate`] is ever issued. A unit gone after a reboot means the host booted the old
//!   generation (`test` never touched the boot entry), which is verified as a rollback.
//! - Verification runs over a fresh connection: `/run/current-system` is the new path, the boot id is
//!   unchanged, failed units are a subset of the baseline's, every declared health check passed
//!   ([`verify`]). Failing checks are retried until the deadline; a wrong system or a changed boot id
//!   is final at once. Failure rolls back; a host never reached again until the deadline is
//!   `Unknown` (its dead-man timer rolls it back alone; [`crate::reconcile::judge`] settles it later).
//! - Commit disarms the timer with the token and needs the host's acknowledgement, then sets the
//!   system profile and the boot entry. A disarm that is not acknowledged is `Unknown`, never
//!   `Succeeded`; a profile or boot entry that cannot be set rolls back.
//! - Rollback goes to the recorded old path and is verified with the same checks: `RolledBack` only
//!   after that verification passed, `RollbackFailed` when the host answers but does not verify,
//!   `Unknown` when it cannot be reached until the deadline.

use crate::binding::StorePath;
use macha_core::{HostName, Timestamp, UnitName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("deploy id {0:?} is not 1-40 characters of a-z, 0-9 and '-' starting with a letter or digit")]
    BadId(String),
    #[error("the disarm token must be 32-128 characters of a-z, A-Z and 0-9")]
    BadToken,
    #[error("timeouts do not fit: {0}")]
    Timeouts(String),
}

/// A deploy's id: names the transient units and the record on the host, so it is kept to characters
/// that are safe in a unit name and a file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeployId(String);

impl DeployId {
    pub fn parse(s: &str) -> Result<DeployId, MachineError> {
        let ok = (1..=40).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok { Ok(DeployId(s.to_owned())) } else { Err(MachineError::BadId(s.chars().take(60).collect())) }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The transient unit the activation runs in: `macha-deploy-<id>.service`.
    pub fn activation_unit(&self) -> String {
        format!("macha-deploy-{}.service", self.0)
    }
    /// The transient unit Macha's own rollback runs in.
    pub fn rollback_unit(&self) -> String {
        format!("macha-deploy-{}-rollback.service", self.0)
    }
    /// The dead-man timer (its service re-activates the recorded old path).
    pub fn dead_man_timer(&self) -> String {
        format!("macha-deploy-{}-deadman.timer", self.0)
    }
}
impl TryFrom<String> for DeployId {
    type Error = MachineError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DeployId::parse(&s)
    }
}
impl From<DeployId> for String {
    fn from(d: DeployId) -> String {
        d.0
    }
}
impl fmt::Display for DeployId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The per-deploy secret that disarms the dead-man timer. The caller makes it from a random source;
/// an earlier deploy's token (even of the same closure) does not disarm this one's timer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisarmToken(String);

impl DisarmToken {
    pub fn parse(s: &str) -> Result<DisarmToken, MachineError> {
        if (32..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(DisarmToken(s.to_owned()))
        } else {
            Err(MachineError::BadToken)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for DisarmToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DisarmToken(…)")
    }
}
impl TryFrom<String> for DisarmToken {
    type Error = MachineError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DisarmToken::parse(&s)
    }
}
impl From<DisarmToken> for String {
    fn from(t: DisarmToken) -> String {
        t.0
    }
}

/// A declared health check of a host (`hosts.<name>.health`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheck {
    /// The unit is active.
    UnitActive(UnitName),
    /// A TCP connection to the port succeeds.
    Tcp { port: u16 },
    /// An HTTP GET of `path` on the port answers `status`.
    Http { port: u16, path: String, status: u16 },
    /// A named read-only diagnostic succeeds.
    Diagnostic(String),
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthCheck::UnitActive(u) => write!(f, "unit {u} active"),
            HealthCheck::Tcp { port } => write!(f, "tcp port {port}"),
            HealthCheck::Http { port, path, status } => write!(f, "http :{port}{path} answers {status}"),
            HealthCheck::Diagnostic(name) => write!(f, "diagnostic {name}"),
        }
    }
}

/// The result of one health check as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    pub check: HealthCheck,
    pub passed: bool,
    /// What was seen (an exit status, an HTTP status, an error), for the report.
    pub detail: String,
}

/// What preflight recorded before anything changed: the exact running system, the boot, the failed
/// units already there, and the health checks the deploy must pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// `/run/current-system` (resolved) at preflight: the path every rollback goes to.
    pub system: StorePath,
    /// The system profile's generation number, when known.
    pub generation: Option<u64>,
    pub boot_id: String,
    pub failed_units: BTreeSet<String>,
    pub health: Vec<HealthCheck>,
}

/// One observation of the host, made over a fresh connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// `/run/current-system`, resolved.
    pub current_system: StorePath,
    pub boot_id: String,
    pub failed_units: BTreeSet<String>,
    pub health: Vec<HealthResult>,
}

/// Checks an observation against the baseline for `expected` (the new system after activation, the
/// old one after a rollback). Every problem is listed; `Ok` only when there is none.
pub fn verify(baseline: &Baseline, observed: &Observed, expected: &StorePath) -> Result<(), Vec<String>> {
    let (problems, _) = problems(baseline, observed, expected);
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The problems, and whether any of them is final (waiting will not fix a wrong system or a reboot).
fn problems(baseline: &Baseline, observed: &Observed, expected: &StorePath) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut fatal = false;
    if &observed.current_system != expected {
        out.push(format!("/run/current-system is {}, not {expected}", observed.current_system));
        fatal = true;
    }
    if observed.boot_id != baseline.boot_id {
        out.push(format!("the host rebooted (boot id {} became {})", baseline.boot_id, observed.boot_id));
        fatal = true;
    }
    let new_failed: Vec<&str> =
        observed.failed_units.iter().filter(|u| !baseline.failed_units.contains(*u)).map(String::as_str).collect();
    if !new_failed.is_empty() {
        out.push(format!("units failed that had not before: {}", new_failed.join(", ")));
    }
    for check in &baseline.health {
        match observed.health.iter().find(|r| &r.check == check) {
            Some(r) if r.passed => {}
            Some(r) => out.push(format!("health check {check} failed: {}", r.detail)),
            None => out.push(format!("health check {check} was not run")),
        }
    }
    (out, fatal)
}

/// How long each wait may last. The dead-man timer must fire only after Macha has given up on
/// activation, reconnection and verification, so that a commit never races it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// From the start of the activation to its exit.
    pub activate: Duration,
    /// How long a host that stopped answering is tried again (the unit's result, a rollback).
    pub reconnect: Duration,
    /// From the start of verification to its deadline (and the same for a rollback's).
    pub verify: Duration,
    /// Between two attempts.
    pub retry: Duration,
    /// From arming to the timer firing on the host.
    pub dead_man: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            activate: Duration::from_secs(300),
            reconnect: Duration::from_secs(120),
            verify: Duration::from_secs(120),
            retry: Duration::from_secs(5),
            dead_man: Duration::from_secs(900),
        }
    }
}

impl Timeouts {
    /// Refuses timeouts under which the timer could fire while Macha still waits to commit.
    pub fn validate(&self) -> Result<(), MachineError> {
        if self.retry.is_zero() || self.activate.is_zero() || self.verify.is_zero() || self.reconnect.is_zero() {
            return Err(MachineError::Timeouts("every timeout must be positive".to_owned()));
        }
        let busy = self.activate + self.reconnect + self.verify + self.retry;
        if self.dead_man <= busy {
            return Err(MachineError::Timeouts(format!(
                "the dead-man timer ({} s) must fire after activate + reconnect + verify + retry ({} s)",
                self.dead_man.as_secs(),
                busy.as_secs()
            )));
        }
        Ok(())
    }
}

/// The deploy record Macha writes on the host when it arms the timer; the host's own units update
/// its state, so what happened survives a restart of Macha (or its loss of the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub deploy: DeployId,
    pub host: HostName,
    pub baseline: Baseline,
    pub new: StorePath,
    pub state: RecordState,
}

/// What the host knows about a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// The timer is armed (written by Macha).
    Armed,
    /// The timer was disarmed with the right token (written by the disarm).
    Disarmed,
    /// The profile and the boot entry point at the new system (written after the boot entry).
    Committed,
    /// The timer fired and its re-activation of the old path exited 0.
    TimerFired,
    /// The timer fired and its re-activation failed.
    TimerFailed,
}

/// One final state per host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Final {
    /// Verified and committed: the new system runs and boots.
    Succeeded,
    /// The new system was rolled back, and the rollback was verified.
    RolledBack,
    /// The rollback was attempted and the host does not verify on the old system.
    RollbackFailed,
    /// Macha does not know: the host was unreachable after activation, or did not acknowledge the
    /// disarm. What the host shows later settles it ([`crate::reconcile::judge`]).
    Unknown,
    /// Stopped before anything changed on the host.
    Refused { reason: String },
}

impl Final {
    /// The exit code of a deploy ending here: 0 succeeded, 3 refused, 4 rolled back, 5 unknown,
    /// 6 rollback failed (1 and 2 stay the command's own errors and usage errors). A fleet exits with
    /// the code of its worst host ([`Final::severity`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Final::Succeeded => 0,
            Final::Refused { .. } => 3,
            Final::RolledBack => 4,
            Final::Unknown => 5,
            Final::RollbackFailed => 6,
        }
    }

    /// How bad the outcome is, for the fleet's worst host: succeeded < refused < rolled back <
    /// unknown < rollback failed.
    pub fn severity(&self) -> u8 {
        self.exit_code()
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Final::Succeeded => "succeeded",
            Final::RolledBack => "rolled back",
            Final::RollbackFailed => "rollback failed",
            Final::Unknown => "unknown",
            Final::Refused { .. } => "refused",
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Final::Succeeded)
    }
}

impl fmt::Display for Final {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Final::Refused { reason } => write!(f, "refused: {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Where a host's deploy is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Preflight,
    Copy,
    Pin,
    Arm,
    Activate,
    ReadUnitResult,
    Verify,
    Commit,
    Rollback,
    VerifyRollback,
    Done(Final),
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Copy => "copy",
            Phase::Pin => "pin",
            Phase::Arm => "arm",
            Phase::Activate => "activate",
            Phase::ReadUnitResult => "read-unit-result",
            Phase::Verify => "verify",
            Phase::Commit => "commit",
            Phase::Rollback => "rollback",
            Phase::VerifyRollback => "verify-rollback",
            Phase::Done(_) => "done",
        }
    }
}

/// When a phase started and ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub phase: Phase,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
}

impl PhaseTiming {
    pub fn duration(&self) -> Option<Duration> {
        self.ended.map(|e| e.since(self.started))
    }
}

/// What the caller must do next. Every command after activation that talks to the host opens a new
/// connection (the one that activated may be the one that broke).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Read-only checks and the baseline: answer [`Event::Preflight`].
    Preflight { host: HostName },
    /// `nix copy` the new closure to the host and verify it: answer [`Event::Copied`].
    Copy { system: StorePath },
    /// GC roots on the host for both paths, so the rollback target cannot be collected: answer
    /// [`Event::Pinned`].
    Pin { old: StorePath, new: StorePath },
    /// Write `record` on the host and arm the dead-man timer: `fires_after` from now it re-activates
    /// `record.baseline.system` unless disarmed with `token`. Answer [`Event::Armed`].
    Arm { record: HostRecord, timer: String, fires_after: Duration, token: DisarmToken },
    /// `switch-to-configuration test` of `system` in the transient unit `unit` (kept after it exits,
    /// so its result can be read again): answer [`Event::ActivationExited`] or
    /// [`Event::ConnectionLost`]. Issued once per deploy.
    Activate { unit: String, system: StorePath },
    /// Over a new connection, the result of the activation unit: answer [`Event::UnitResult`] or
    /// [`Event::Unreachable`].
    ReadUnitResult { unit: String },
    /// Over a new connection, observe the host ([`Observed`]) for verification against `expected`:
    /// answer [`Event::Observed`] or [`Event::Unreachable`].
    Verify { expected: StorePath },
    /// Disarm the dead-man timer with the token; the host must acknowledge: answer [`Event::Disarm`].
    Disarm { deploy: DeployId, timer: String, token: DisarmToken },
    /// Point the system profile at `system`: answer [`Event::ProfileSet`].
    SetProfile { system: StorePath },
    /// Install the boot entry of `system` (`switch-to-configuration boot`) and mark the host's
    /// record committed: answer [`Event::BootEntrySet`].
    SetBootEntry { system: StorePath },
    /// Stop the dead-man timer and the activation unit, then re-activate `to` (the recorded old path)
    /// in the transient unit `unit`; with `restore_profile`, also point the profile and the boot
    /// entry back at `to`. Answer [`Event::RolledBack`] or [`Event::Unreachable`].
    Rollback { to: StorePath, unit: String, activation_unit: String, restore_profile: bool },
}

/// The activation unit's state, read after the connection was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "unit", rename_all = "snake_case")]
pub enum UnitState {
    /// Still running.
    Running,
    /// Exited with this status.
    Exited { code: i32 },
    /// Killed by a signal (or another failure without an exit status).
    Killed { detail: String },
    /// The unit does not exist; `boot_id` is the host's current one.
    Gone { boot_id: String },
}

/// The host's answer to [`Command::Disarm`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ack", rename_all = "snake_case")]
pub enum DisarmAck {
    Acknowledged,
    NotAcknowledged { reason: String },
}

/// What happened, reported by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Preflight {
        result: Result<Baseline, String>,
    },
    Copied {
        result: Result<(), String>,
    },
    Pinned {
        result: Result<(), String>,
    },
    Armed {
        result: Result<(), String>,
    },
    ActivationExited {
        code: i32,
    },
    /// The connection carrying the activation broke before its exit status arrived.
    ConnectionLost,
    UnitResult {
        state: UnitState,
    },
    Observed {
        observed: Observed,
    },
    /// A new connection to the host failed.
    Unreachable {
        reason: String,
    },
    Disarm {
        ack: DisarmAck,
    },
    ProfileSet {
        result: Result<(), String>,
    },
    BootEntrySet {
        result: Result<(), String>,
    },
    RolledBack {
        result: Result<(), String>,
    },
    /// Time passed (at [`HostDeploy::next_wakeup`] or later).
    Tick,
}

/// Everything a deploy to one host needs before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySpec {
    pub id: DeployId,
    pub host: HostName,
    /// The system path the approval names as running: preflight must find exactly this.
    pub old: StorePath,
    pub new: StorePath,
    pub token: DisarmToken,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitStep {
    Disarm,
    Profile,
    BootEntry,
}

/// The deploy of one host.
#[derive(Debug, Clone)]
pub struct HostDeploy {
    spec: DeploySpec,
    phase: Phase,
    started: bool,
    baseline: Option<Baseline>,
    deadline: Option<Timestamp>,
    retry_at: Option<Timestamp>,
    /// The host answered (with anything) in the current phase.
    reached: bool,
    /// The host rebooted during the deploy (it then runs its boot entry: the old system).
    rebooted: Option<String>,
    activation_started: Option<Timestamp>,
    commit: CommitStep,
    profile_changed: bool,
    activations: u32,
    timings: Vec<PhaseTiming>,
    notes: Vec<String>,
}

impl HostDeploy {
    pub fn new(spec: DeploySpec) -> Result<HostDeploy, MachineError> {
        spec.timeouts.validate()?;
        Ok(HostDeploy {
            spec,
            phase: Phase::Preflight,
            started: false,
            baseline: None,
            deadline: None,
            retry_at: None,
            reached: false,
            rebooted: None,
            activation_started: None,
            commit: CommitStep::Disarm,
            profile_changed: false,
            activations: 0,
            timings: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// Starts the deploy: the first command. Later calls return nothing.
    pub fn start(&mut self, now: Timestamp) -> Vec<Command> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        self.enter(Phase::Preflight, now);
        vec![Command::Preflight { host: self.spec.host.clone() }]
    }

    pub fn spec(&self) -> &DeploySpec {
        &self.spec
    }
    pub fn phase(&self) -> &Phase {
        &self.phase
    }
    pub fn final_state(&self) -> Option<&Final> {
        match &self.phase {
            Phase::Done(f) => Some(f),
            _ => None,
        }
    }
    pub fn baseline(&self) -> Option<&Baseline> {
        self.baseline.as_ref()
    }
    /// When the caller must send [`Event::Tick`] (a retry or a deadline), if anything waits on time.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        if matches!(self.phase, Phase::Done(_)) {
            return None;
        }
        match (self.retry_at, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    /// How many activations were issued (never more than one).
    pub fn activations(&self) -> u32 {
        self.activations
    }
    /// Each phase with its start and end.
    pub fn timings(&self) -> &[PhaseTiming] {
        &self.timings
    }
    /// What happened along the way, in sentences, for the report.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Feeds one event; returns the commands to run now.
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Vec<Command> {
        if !self.started || matches!(self.phase, Phase::Done(_)) {
            return Vec::new();
        }
        let phase = self.phase.clone();
        match (phase, event) {
            (Phase::Preflight, Event::Preflight { result: Ok(b) }) => {
                if b.system != self.spec.old {
                    let reason = format!(
                        "the host runs {}, not {} which the approval names; the change needs a new approval",
                        b.system, self.spec.old
                    );
                    return self.refuse(now, reason);
                }
                self.baseline = Some(b);
                self.enter(Phase::Copy, now);
                vec![Command::Copy { system: self.spec.new.clone() }]
            }
            (Phase::Preflight, Event::Preflight { result: Err(e) }) => self.refuse(now, format!("preflight: {e}")),
            (Phase::Copy, Event::Copied { result: Ok(()) }) => {
                self.enter(Phase::Pin, now);
                vec![Command::Pin { old: self.spec.old.clone(), new: self.spec.new.clone() }]
            }
            (Phase::Copy, Event::Copied { result: Err(e) }) => self.refuse(now, format!("copy: {e}")),
            (Phase::Pin, Event::Pinned { result: Ok(()) }) => {
                let Some(baseline) = self.baseline.clone() else {
                    return self.refuse(now, "internal: no baseline before arming".to_owned());
                };
                self.enter(Phase::Arm, now);
                let record = HostRecord {
                    deploy: self.spec.id.clone(),
                    host: self.spec.host.clone(),
                    baseline,
                    new: self.spec.new.clone(),
                    state: RecordState::Armed,
                };
                vec![Command::Arm {
                    record,
                    timer: self.spec.id.dead_man_timer(),
                    fires_after: self.spec.timeouts.dead_man,
                    token: self.spec.token.clone(),
                }]
            }
            (Phase::Pin, Event::Pinned { result: Err(e) }) => self.refuse(now, format!("pinning GC roots: {e}")),
            (Phase::Arm, Event::Armed { result: Ok(()) }) => {
                if self.activations > 0 {
                    return Vec::new();
                }
                self.enter(Phase::Activate, now);
                self.activations += 1;
                self.activation_started = Some(now);
                self.deadline = Some(now.plus(self.spec.timeouts.activate));
                vec![Command::Activate { unit: self.spec.id.activation_unit(), system: self.spec.new.clone() }]
            }
            (Phase::Arm, Event::Armed { result: Err(e) }) => {
                self.refuse(now, format!("arming the dead-man timer: {e} (nothing was activated)"))
            }
            (Phase::Activate, Event::ActivationExited { code }) => self.after_activation(now, code),
            (Phase::Activate, Event::ConnectionLost) => {
                self.note("the connection was lost during activation; reading the unit's result");
                self.enter_read_unit(now)
            }
            (Phase::Activate, Event::Tick) if self.past_deadline(now) => {
                self.note("no activation result by its deadline; reading the unit's result");
                self.enter_read_unit(now)
            }
            (Phase::ReadUnitResult, Event::UnitResult { state }) => {
                self.reached = true;
                match state {
                    UnitState::Exited { code } => self.after_activation(now, code),
                    UnitState::Killed { detail } => {
                        self.note(format!("the activation did not exit normally: {detail}"));
                        self.rollback(now)
                    }
                    UnitState::Running => {
                        let limit = self.activation_started.map(|t| t.plus(self.spec.timeouts.activate));
                        if limit.is_none_or(|l| now >= l) {
                            self.note("the activation is still running past its deadline");
                            return self.rollback(now);
                        }
                        // The host answers: what it may take now is the activation's own time, not
                        // the reconnection's (a slow activation read right after a drop).
                        self.deadline = limit;
                        self.retry_at = Some(now.plus(self.spec.timeouts.retry));
                        Vec::new()
                    }
                    UnitState::Gone { boot_id } => {
                        let before = self.baseline.as_ref().map(|b| b.boot_id.clone()).unwrap_or_default();
                        if boot_id != before {
                            self.note(format!(
                                "the host rebooted during activation (boot id {before} became {boot_id}); it \
                                 booted its boot entry, the old system, which is verified as a rollback"
                            ));
                            self.rebooted = Some(boot_id);
                            self.enter(Phase::VerifyRollback, now);
                            self.deadline = Some(now.plus(self.spec.timeouts.verify));
                            vec![Command::Verify { expected: self.spec.old.clone() }]
                        } else {
                            self.note("the activation unit is gone without a result; verification decides");
                            self.enter_verify(now)
                        }
                    }
                }
            }
            (Phase::ReadUnitResult, Event::Unreachable { reason }) => self.unreachable(now, reason, Final::Unknown),
            (Phase::ReadUnitResult, Event::Tick) => {
                if self.past_deadline(now) && self.reached {
                    // It answered that the activation runs, past the activation's deadline.
                    self.note("the activation is still running past its deadline");
                    return self.rollback(now);
                }
                if self.past_deadline(now) {
                    self.note("the host did not answer again after activation until the deadline");
                    return self.finish(now, Final::Unknown);
                }
                if self.retry_due(now) {
                    self.retry_at = None;
                    return vec![Command::ReadUnitResult { unit: self.spec.id.activation_unit() }];
                }
                Vec::new()
            }
            (Phase::Verify, Event::Observed { observed }) => {
                self.reached = true;
                let Some(baseline) = self.baseline.clone() else {
                    return self.rollback(now);
                };
                let (problems, fatal) = problems(&baseline, &observed, &self.spec.new);
                if problems.is_empty() {
                    self.enter(Phase::Commit, now);
                    self.commit = CommitStep::Disarm;
                    return vec![Command::Disarm {
                        deploy: self.spec.id.clone(),
                        timer: self.spec.id.dead_man_timer(),
                        token: self.spec.token.clone(),
                    }];
                }
                if fatal || self.past_deadline(now) {
                    self.note(format!("verification failed: {}", problems.join("; ")));
                    return self.rollback(now);
                }
                self.last_problems(problems);
                self.retry_at = Some(now.plus(self.spec.timeouts.retry));
                Vec::new()
            }
            (Phase::Verify, Event::Unreachable { reason }) => {
                let on_deadline = if self.reached { None } else { Some(Final::Unknown) };
                self.retry_or(now, reason, on_deadline)
            }
            (Phase::Verify, Event::Tick) => {
                if self.past_deadline(now) {
                    if self.reached {
                        self.note("verification did not pass by its deadline");
                        return self.rollback(now);
                    }
                    self.note("the host was not reached for verification until the deadline; its timer rolls it back");
                    return self.finish(now, Final::Unknown);
                }
                if self.retry_due(now) {
                    self.retry_at = None;
                    return vec![Command::Verify { expected: self.spec.new.clone() }];
                }
                Vec::new()
            }
            (Phase::Commit, Event::Disarm { ack }) if self.commit == CommitStep::Disarm => match ack {
                DisarmAck::Acknowledged => {
                    self.commit = CommitStep::Profile;
                    vec![Command::SetProfile { system: self.spec.new.clone() }]
                }
                DisarmAck::NotAcknowledged { reason } => {
                    self.note(format!("the disarm was not acknowledged: {reason}"));
                    self.finish(now, Final::Unknown)
                }
            },
            (Phase::Commit, Event::ProfileSet { result }) if self.commit == CommitStep::Profile => match result {
                Ok(()) => {
                    self.profile_changed = true;
                    self.commit = CommitStep::BootEntry;
                    vec![Command::SetBootEntry { system: self.spec.new.clone() }]
                }
                Err(e) => {
                    // The profile may have been written before the failure: restore it too.
                    self.profile_changed = true;
                    self.note(format!("setting the system profile failed: {e}"));
                    self.rollback(now)
                }
            },
            (Phase::Commit, Event::BootEntrySet { result }) if self.commit == CommitStep::BootEntry => match result {
                Ok(()) => self.finish(now, Final::Succeeded),
                Err(e) => {
                    self.note(format!("installing the boot entry failed: {e}"));
                    self.rollback(now)
                }
            },
            (Phase::Rollback, Event::RolledBack { result }) => {
                self.reached = true;
                if let Err(e) = result {
                    self.note(format!("the rollback reported a failure: {e}; verification decides"));
                }
                self.enter(Phase::VerifyRollback, now);
                self.deadline = Some(now.plus(self.spec.timeouts.verify));
                vec![Command::Verify { expected: self.spec.old.clone() }]
            }
            (Phase::Rollback, Event::Unreachable { reason }) => self.unreachable(now, reason, Final::Unknown),
            (Phase::Rollback, Event::Tick) => {
                if self.past_deadline(now) {
                    self.note("the host could not be reached to roll back until the deadline");
                    return self.finish(now, Final::Unknown);
                }
                if self.retry_due(now) {
                    self.retry_at = None;
                    return vec![self.rollback_command()];
                }
                Vec::new()
            }
            (Phase::VerifyRollback, Event::Observed { observed }) => {
                self.reached = true;
                let Some(mut baseline) = self.baseline.clone() else {
                    return self.finish(now, Final::RollbackFailed);
                };
                if let Some(boot) = &self.rebooted {
                    // A reboot during the deploy is the reason the old system runs; it is not a
                    // failure of the rollback.
                    baseline.boot_id = boot.clone();
                }
                let (problems, fatal) = problems(&baseline, &observed, &self.spec.old);
                if problems.is_empty() {
                    return self.finish(now, Final::RolledBack);
                }
                if fatal || self.past_deadline(now) {
                    self.note(format!("the rollback did not verify: {}", problems.join("; ")));
                    return self.finish(now, Final::RollbackFailed);
                }
                self.last_problems(problems);
                self.retry_at = Some(now.plus(self.spec.timeouts.retry));
                Vec::new()
            }
            (Phase::VerifyRollback, Event::Unreachable { reason }) => {
                let on_deadline = if self.reached { Final::RollbackFailed } else { Final::Unknown };
                self.retry_or(now, reason, Some(on_deadline))
            }
            (Phase::VerifyRollback, Event::Tick) => {
                if self.past_deadline(now) {
                    let f = if self.reached { Final::RollbackFailed } else { Final::Unknown };
                    self.note("the rollback was not verified by its deadline");
                    return self.finish(now, f);
                }
                if self.retry_due(now) {
                    self.retry_at = None;
                    return vec![Command::Verify { expected: self.spec.old.clone() }];
                }
                Vec::new()
            }
            (_, Event::Tick) => Vec::new(),
            (phase, event) => {
                self.note(format!("ignored {} in phase {}", event_name(&event), phase.as_str()));
                Vec::new()
            }
        }
    }

    /// The summary of this host's deploy for the fleet table.
    pub fn summary_row(&self) -> crate::fleet::SummaryRow {
        crate::fleet::SummaryRow {
            host: self.spec.host.clone(),
            final_state: self.final_state().cloned(),
            old: Some(self.spec.old.clone()),
            new: Some(self.spec.new.clone()),
            phases: self.timings.iter().filter_map(|t| Some((t.phase.as_str().to_owned(), t.duration()?))).collect(),
            notes: self.notes.clone(),
        }
    }

    fn after_activation(&mut self, now: Timestamp, code: i32) -> Vec<Command> {
        match code {
            0 => self.enter_verify(now),
            4 => {
                self.note(
                    "the activation exited 4: the new system is live but some units failed; verification decides",
                );
                self.enter_verify(now)
            }
            c => {
                self.note(format!("the activation exited {c}"));
                self.rollback(now)
            }
        }
    }

    fn enter_read_unit(&mut self, now: Timestamp) -> Vec<Command> {
        self.enter(Phase::ReadUnitResult, now);
        self.deadline = Some(now.plus(self.spec.timeouts.reconnect));
        vec![Command::ReadUnitResult { unit: self.spec.id.activation_unit() }]
    }

    fn enter_verify(&mut self, now: Timestamp) -> Vec<Command> {
        self.enter(Phase::Verify, now);
        self.deadline = Some(now.plus(self.spec.timeouts.verify));
        vec![Command::Verify { expected: self.spec.new.clone() }]
    }

    fn rollback_command(&self) -> Command {
        Command::Rollback {
            to: self.spec.old.clone(),
            unit: self.spec.id.rollback_unit(),
            activation_unit: self.spec.id.activation_unit(),
            restore_profile: self.profile_changed,
        }
    }

    fn rollback(&mut self, now: Timestamp) -> Vec<Command> {
        self.enter(Phase::Rollback, now);
        self.deadline = Some(now.plus(self.spec.timeouts.reconnect));
        vec![self.rollback_command()]
    }

    /// An unreachable host in a phase that ends `on_deadline` when it stays unreachable.
    fn unreachable(&mut self, now: Timestamp, reason: String, on_deadline: Final) -> Vec<Command> {
        self.retry_or(now, reason, Some(on_deadline))
    }

    /// Retries after a failed connection, or at the deadline ends with `on_deadline` (or rolls back
    /// when that is `None`).
    fn retry_or(&mut self, now: Timestamp, reason: String, on_deadline: Option<Final>) -> Vec<Command> {
        if self.past_deadline(now) {
            self.note(format!("the host was unreachable until the deadline: {reason}"));
            return match on_deadline {
                Some(f) => self.finish(now, f),
                None => self.rollback(now),
            };
        }
        self.retry_at = Some(now.plus(self.spec.timeouts.retry));
        Vec::new()
    }

    fn refuse(&mut self, now: Timestamp, reason: String) -> Vec<Command> {
        self.finish(now, Final::Refused { reason })
    }

    fn finish(&mut self, now: Timestamp, f: Final) -> Vec<Command> {
        self.enter(Phase::Done(f), now);
        Vec::new()
    }

    fn enter(&mut self, phase: Phase, now: Timestamp) {
        if let Some(last) = self.timings.last_mut()
            && last.ended.is_none()
        {
            last.ended = Some(now);
        }
        if !matches!(phase, Phase::Done(_)) {
            self.timings.push(PhaseTiming { phase: phase.clone(), started: now, ended: None });
        }
        self.phase = phase;
        self.deadline = None;
        self.retry_at = None;
        self.reached = false;
    }

    fn past_deadline(&self, now: Timestamp) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    fn retry_due(&self, now: Timestamp) -> bool {
        self.retry_at.is_some_and(|r| now >= r)
    }

    fn last_problems(&mut self, problems: Vec<String>) {
        let text = format!("not yet verified: {}", problems.join("; "));
        if self.notes.last() != Some(&text) {
            self.notes.push(text);
        }
    }

    fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::Preflight { .. } => "a preflight result",
        Event::Copied { .. } => "a copy result",
        Event::Pinned { .. } => "a pin result",
        Event::Armed { .. } => "an arm result",
        Event::ActivationExited { .. } => "an activation exit",
        Event::ConnectionLost => "a lost connection",
        Event::UnitResult { .. } => "a unit result",
        Event::Observed { .. } => "an observation",
        Event::Unreachable { .. } => "an unreachable host",
        Event::Disarm { .. } => "a disarm answer",
        Event::ProfileSet { .. } => "a profile result",
        Event::BootEntrySet { .. } => "a boot entry result",
        Event::RolledBack { .. } => "a rollback result",
        Event::Tick => "a tick",
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
