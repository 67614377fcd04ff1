//! The one executor: carries out what the policy permitted, then verifies the outcome by observing
//! again, and reports the truth.
//!
//! Its only entry point, [`Executor::execute`], consumes a [`Permit`] (which only
//! `macha_core::policy::decide` constructs) and returns a [`Receipt`]: the outcome and the permit's
//! identity. A permit runs once. An action runs on each of its hosts through one of two
//! backends — this host ([`local`]: systemd over D-Bus for units, an argv command spawned directly
//! with a cleared environment otherwise) or another host ([`remote`]: the same jobs over the one SSH
//! module) — while what an action means is written once, here and in [`outcome`]: which job or
//! command each kind is, the re-check of every name systemd knows a unit by against the protected
//! units, the verification table, and how outcomes are reported. Matches over action kinds are
//! exhaustive, so a new kind does not compile until it says what it does.

pub mod deploy;
pub mod journal;
pub mod local;
pub mod outcome;
pub mod remote;
pub mod runner;

pub use local::{Local, OUTPUT_MAX};
pub use outcome::{ActionOutcome, Receipt, UnitVerb};
pub use remote::Remote;

use macha_core::command::{self, Command};
use macha_core::policy::{Permit, ProtectedUnits};
use macha_core::{Action, HostName, UnitName};
use outcome::{Exit, ObservedUnit};
use std::time::Duration;

/// The most units one job may reach before the executor refuses it unread.
pub const REACH_MAX: usize = 64;

/// The settings every backend shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Checked again against every name systemd reports for a unit.
    pub protected: ProtectedUnits,
    /// The deadline of one job or command.
    pub timeout: Duration,
    /// How long after a unit job its state is observed for verification.
    pub verify_delay: Duration,
    /// What a deployment may wait for (docs/deploy.md).
    pub deploy: deploy::DeploySettings,
}

/// The executor: this host's backend, optionally another hosts' backend, and the shared settings.
#[derive(Debug, Clone)]
pub struct Executor {
    local: Local,
    remote: Option<Remote>,
    settings: Settings,
}

/// The backend one host's part of an action runs through.
enum Via<'a> {
    Local(&'a Local),
    Remote(remote::Session<'a>),
}

impl Via<'_> {
    fn on(&self) -> String {
        match self {
            Via::Local(_) => String::new(),
            Via::Remote(s) => format!(" on {}", s.host()),
        }
    }

    async fn unit_names(&self, unit: &UnitName) -> Result<Vec<String>, String> {
        match self {
            Via::Local(l) => l.unit_names(unit).await,
            Via::Remote(s) => s.unit_names(unit).await,
        }
    }

    async fn related_units(&self, unit: &UnitName, properties: &[&str]) -> Result<Vec<String>, String> {
        match self {
            Via::Local(l) => l.related_units(unit, properties).await,
            Via::Remote(s) => s.related_units(unit, properties).await,
        }
    }

    /// Every unit a job on `unit` would pull along, transitively, with the property that led to
    /// it (`(name, "PartOf x.service")`-like text), at most [`REACH_MAX`] units.
    async fn reach(&self, verb: UnitVerb, unit: &UnitName) -> Result<Vec<(String, String)>, String> {
        let properties = verb.reach_properties();
        let mut found: Vec<(String, String)> = Vec::new();
        if properties.is_empty() {
            return Ok(found);
        }
        let mut queue = vec![unit.clone()];
        let mut seen = std::collections::BTreeSet::from([unit.as_str().to_owned()]);
        while let Some(next) = queue.pop() {
            for p in properties {
                for name in self.related_units(&next, &[p]).await? {
                    if !seen.insert(name.clone()) {
                        continue;
                    }
                    if found.len() >= REACH_MAX {
                        return Err(format!("{unit} reaches more than {REACH_MAX} units"));
                    }
                    found.push((name.clone(), format!("{p} of {next}")));
                    if let Ok(u) = UnitName::parse(&name) {
                        queue.push(u);
                    }
                }
            }
        }
        Ok(found)
    }

    async fn unit_job(&self, permit: &Permit, verb: UnitVerb, unit: &UnitName, timeout: Duration) -> JobEnd {
        match self {
            Via::Local(l) => l.unit_job(permit, timeout).await,
            Via::Remote(s) => s.unit_job(permit, verb, unit, timeout).await,
        }
    }

    async fn unit_state(&self, unit: &UnitName) -> Result<ObservedUnit, String> {
        match self {
            Via::Local(l) => l.unit_state(unit).await,
            Via::Remote(s) => s.unit_state(unit).await,
        }
    }

    fn tools(&self) -> command::Tools {
        match self {
            Via::Local(l) => l.tools().clone(),
            Via::Remote(s) => s.tools().core_tools(),
        }
    }

    /// Runs `cmd`; on another host under `sudo -n` when `privileged` names the permit that covers it.
    async fn run(&self, cmd: Command, privileged: Option<&Permit>, timeout: Duration) -> Ran {
        match self {
            Via::Local(l) => l.run(&cmd, timeout).await,
            Via::Remote(s) => s.run(cmd, privileged, timeout).await,
        }
    }
}

/// How a unit job ended on either backend.
pub(crate) enum JobEnd {
    /// The job finished with this result (`done` is success); `what` names the job.
    Finished { done: bool, result: String, what: String },
    /// Nothing (or not everything) happened: the refusal or error.
    Failed(ActionOutcome),
}

/// A command that ran (or could not).
pub(crate) enum Ran {
    Exited { display: String, exit: Exit, stdout: Vec<u8>, stderr: Vec<u8> },
    Failed(ActionOutcome),
}

impl Executor {
    /// An executor for this host only; see [`Executor::with_remote`].
    pub fn new(local: Local, settings: Settings) -> Executor {
        Executor { local, remote: None, settings }
    }

    /// With actions on other hosts carried out over SSH by `remote`.
    pub fn with_remote(mut self, remote: Option<Remote>) -> Executor {
        self.remote = remote;
        self
    }

    /// Executes `permit` on each of its hosts, consuming it, and reports what happened with the
    /// permit's identity. Never panics, never returns without an outcome: an error is an outcome
    /// with `succeeded = false`. The action succeeded only if it did on every host.
    pub async fn execute(&self, permit: Permit) -> Receipt {
        let id = permit.id();
        let permit = &permit;
        let hosts = permit.action().hosts().as_slice();
        let runs = hosts.iter().map(|h| async move { (h.clone(), self.on_host(h, permit).await) });
        Receipt::new(outcome::combine(futures_util::future::join_all(runs).await), id)
    }

    async fn on_host(&self, host: &HostName, permit: &Permit) -> ActionOutcome {
        if host.is_local() && matches!(permit.action(), Action::NixosSwitch { .. }) {
            // Boxed: a deployment's future is large, and polled inline it would be on the worker's stack.
            return Box::pin(deploy::deploy_here(host, permit, &self.local, &self.settings.deploy)).await;
        }
        if host.is_local() {
            return self.carry_out(&Via::Local(&self.local), host, permit).await;
        }
        if matches!(permit.action(), Action::NixosSwitch { .. })
            && let Some(remote) = &self.remote
        {
            return Box::pin(remote.deploy(host, permit, &self.local, &self.settings.deploy)).await;
        }
        let Some(remote) = &self.remote else {
            return ActionOutcome::failed(format!(
                "remote execution is not available (SSH is not set up on this host); nothing was sent to {host}"
            ));
        };
        match remote.session(host).await {
            Ok(session) => self.carry_out(&Via::Remote(session), host, permit).await,
            Err(refused) => refused,
        }
    }

    /// Settles a recorded deployment that ended `unknown` or was cut off, from its host, with no
    /// permit: it only reads (a new system that would verify is left to its dead-man timer, since
    /// nothing may commit it). The record is updated in the journal.
    pub async fn reconcile(&self, record: macha_deploy::DeployRecord) -> deploy::Reconciliation {
        deploy::reconcile(record, None, self.remote.as_ref(), &self.local, &self.settings.deploy).await
    }

    /// Where the deployments' records are kept, if anywhere.
    pub fn deploy_journal(&self) -> Option<&std::path::Path> {
        self.settings.deploy.journal.as_deref()
    }

    async fn carry_out(&self, via: &Via<'_>, host: &HostName, permit: &Permit) -> ActionOutcome {
        let action = permit.action();
        let on = via.on();
        match action {
            Action::RestartUnit { unit, .. } => self.unit_action(via, host, permit, UnitVerb::Restart, unit).await,
            Action::StartUnit { unit, .. } => self.unit_action(via, host, permit, UnitVerb::Start, unit).await,
            Action::StopUnit { unit, .. } => self.unit_action(via, host, permit, UnitVerb::Stop, unit).await,
            Action::ResetFailed { unit, .. } => self.unit_action(via, host, permit, UnitVerb::ResetFailed, unit).await,
            Action::ConfigChange { path, .. } => ActionOutcome {
                succeeded: true,
                verified: false,
                detail: format!(
                    "approved patch for {path}{on} recorded; Macha never edits configuration files, apply it by hand"
                ),
                output: None,
            },
            // Deployments run before a session is opened (`on_host`), on every host.
            Action::NixosSwitch { .. } => {
                ActionOutcome::failed(format!("deploying{on} goes through the deployment protocol; nothing was run"))
            }
            Action::Reboot { .. } => match via {
                Via::Local(local) => local.reboot(permit, self.settings.timeout).await,
                Via::Remote(_) => ActionOutcome::failed(format!(
                    "rebooting{on} is not available (only this host reboots, over D-Bus); nothing was sent"
                )),
            },
            // Diagnostics only read; the rest change the host (as root on other hosts).
            Action::Diagnostic { .. } => self.command_action(via, action, None).await,
            Action::JournalVacuum { .. }
            | Action::CollectGarbage { .. }
            | Action::StoreVerify { .. }
            | Action::StoreRepair { .. } => self.command_action(via, action, Some(permit)).await,
        }
    }

    async fn command_action(&self, via: &Via<'_>, action: &Action, privileged: Option<&Permit>) -> ActionOutcome {
        // Clean-ups need root: a daemon without it starts their fixed root units (docs/actions.md).
        if let (Via::Local(local), Some(permit)) = (via, privileged)
            && !local.is_root()
        {
            return local.cleanup_unit(permit, self.settings.timeout).await;
        }
        let on = via.on();
        let cmd = match command::command_for(action, &via.tools()) {
            Ok(c) => c,
            Err(e) => return ActionOutcome::failed(format!("{e}{on}; nothing was run")),
        };
        match via.run(cmd, privileged, self.settings.timeout).await {
            Ran::Exited { display, exit, stdout, stderr } => {
                outcome::command_outcome(&display, &on, &exit, &stdout, &stderr)
            }
            Ran::Failed(o) => o,
        }
    }

    async fn unit_action(
        &self,
        via: &Via<'_>,
        host: &HostName,
        permit: &Permit,
        verb: UnitVerb,
        unit: &UnitName,
    ) -> ActionOutcome {
        let on = via.on();
        match via.unit_names(unit).await {
            Ok(names) => {
                if let Some(refused) =
                    outcome::protected_alias(&self.settings.protected, unit, host, names.iter().map(String::as_str))
                {
                    return refused;
                }
            }
            Err(e) => return ActionOutcome::failed(format!("cannot resolve {unit}{on}: {e}; nothing was changed")),
        }
        // A job's whole reach is judged: what it would stop, restart or start along with the unit
        // (systemd propagates jobs through PartOf=, BindsTo=, Requires=, Wants=) must not be
        // protected either. What it reached is named in the outcome.
        let reach = match via.reach(verb, unit).await {
            Ok(r) => r,
            Err(e) => {
                return ActionOutcome::failed(format!(
                    "cannot tell what a {} of {unit}{on} would reach: {e}; nothing was sent",
                    verb.systemctl()
                ));
            }
        };
        if let Some(refused) = outcome::protected_reach(&self.settings.protected, unit, &on, &reach) {
            return refused;
        }
        // A restart of a stopped unit is a start: only if the permit covers one.
        if verb == UnitVerb::Restart {
            match via.unit_state(unit).await {
                Ok(seen) => {
                    if let Some(refused) = outcome::restart_of_stopped(permit, unit, &on, &seen) {
                        return refused;
                    }
                }
                Err(e) => {
                    return ActionOutcome::failed(format!(
                        "cannot observe {unit}{on} before restarting it: {e}; nothing was sent"
                    ));
                }
            }
        }
        let what = match via.unit_job(permit, verb, unit, self.settings.timeout).await {
            JobEnd::Failed(o) => return o,
            JobEnd::Finished { done: false, result, what } => {
                return ActionOutcome {
                    succeeded: false,
                    verified: false,
                    detail: format!("{what} ended with result {result:?}"),
                    output: Some(result),
                };
            }
            JobEnd::Finished { done: true, what, .. } => format!("{what} done"),
        };
        tokio::time::sleep(self.settings.verify_delay).await;
        let mut outcome = match via.unit_state(unit).await {
            Ok(seen) => outcome::verified_unit(verb, &what, unit, self.settings.verify_delay.as_millis(), &seen),
            Err(e) => outcome::unobserved_unit(&what, unit, &e),
        };
        if !reach.is_empty() {
            let names: Vec<&str> = reach.iter().map(|(n, _)| n.as_str()).collect();
            outcome.detail.push_str(&format!("; the job also reached {}", names.join(", ")));
        }
        outcome
    }
}
