//! A permitted NixOS deployment of one host, carried out: another host over SSH, or this host
//! (the controller deploying itself) with the same steps run here. The `macha-deploy` state machine
//! decides every step and the one final state; this module only runs what it asks and reports what
//! happened: the preflight reads, `nix copy` through Macha's own SSH master (on this host the
//! closure is already in the store and only checked), the GC roots, the dead-man timer, the
//! activation in a transient unit, and every read after the activation over a new connection (the
//! one that activated may be the one the new configuration broke). Where the commands run is the
//! [`Runner`]; the protocol is written once.
//!
//! Every command comes from the core's builder ([`DeployStep`]); the ones that change the host run
//! privileged (`sudo -n` on another host; directly or through `sudo -n` here) and only when the
//! deployment's permit covers exactly that command.
//!
//! A deployment is recorded in the journal ([`crate::journal`]) when its timer is armed and when it
//! ends. One that ended `unknown`, or that a restart of Macha cut off, is settled later from the
//! host by [`reconcile`] ([`macha_deploy::judge`] decides; nothing is ever activated by it).

use crate::journal;
use crate::local::Local;
use crate::outcome::ActionOutcome;
use crate::remote::{Remote, properties};
use crate::runner::Runner;
use macha_core::action::Action;
use macha_core::command::{DeployStep, nix_copy_command};
use macha_core::policy::Permit;
use macha_core::{HostName, StorePath, Timestamp};
use macha_deploy::machine::{
    Baseline, Command as Step, DeployId, DeploySpec, DisarmAck, DisarmToken, Event, HealthCheck, HealthResult,
    HostDeploy, Observed, Timeouts, UnitState,
};
use macha_deploy::{ActivationView, DeployRecord, Final, HostView, Judgement, Reconciled, TimerView};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a deployment may wait for, and how much room it needs on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct DeploySettings {
    pub timeouts: Timeouts,
    /// Free space `/nix` must have at preflight.
    pub min_free_bytes: u64,
    /// Each host's declared health checks (`hosts.<name>.health`): they must pass before a
    /// deployment starts and after it, checked from the controller (ports) or over SSH (units).
    pub health: BTreeMap<HostName, Vec<HealthCheck>>,
    /// Where the deployments' records are kept ([`crate::journal`]); without one nothing is
    /// recorded and nothing can be reconciled.
    pub journal: Option<PathBuf>,
}

/// The limit of one read-only command of a deployment.
const READ_LIMIT: Duration = Duration::from_secs(30);
/// The limit of the copy, the GC roots, the profile and the boot entry.
const CHANGE_LIMIT: Duration = Duration::from_secs(600);

/// A deployment of this host runs now (one at a time).
static LOCAL_DEPLOYING: AtomicBool = AtomicBool::new(false);

/// Where one deployment under way is now (`macha deploy --wait` shows it live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub deploy: String,
    pub host: HostName,
    /// The machine's phase (`preflight`, `copy`, …).
    pub phase: String,
    /// The step being run in it, in words.
    pub step: String,
    /// When the deployment and the current step started (wall clock, ms).
    pub started: Timestamp,
    pub step_started: Timestamp,
    /// The phases done so far, with their times.
    pub done: Vec<(String, Duration)>,
}

/// Every deployment this process runs, by id: one registry for the process (as the per-host
/// locks are), written only by the deployment's own loop.
static PROGRESS: std::sync::Mutex<BTreeMap<String, Progress>> = std::sync::Mutex::new(BTreeMap::new());

/// The deployments under way now, oldest first.
pub fn in_progress() -> Vec<Progress> {
    let all = PROGRESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut list: Vec<Progress> = all.values().cloned().collect();
    list.sort_by_key(|p| (p.started, p.host.clone()));
    list
}

/// Removes a deployment from [`PROGRESS`] when its loop ends, however it ends.
struct ProgressGuard(String);

impl ProgressGuard {
    fn start(id: &str, host: &HostName) -> ProgressGuard {
        let at = now();
        let entry = Progress {
            deploy: id.to_owned(),
            host: host.clone(),
            phase: "start".to_owned(),
            step: "start".to_owned(),
            started: at,
            step_started: at,
            done: Vec::new(),
        };
        PROGRESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.to_owned(), entry);
        ProgressGuard(id.to_owned())
    }

    fn step(&self, phase: &str, step: &str, done: Vec<(String, Duration)>) {
        let mut all = PROGRESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = all.get_mut(&self.0) {
            p.phase = phase.to_owned();
            p.step = step.to_owned();
            p.step_started = now();
            p.done = done;
        }
    }
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        PROGRESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.0);
    }
}

/// Clears [`LOCAL_DEPLOYING`] when the local deployment ends.
struct LocalGuard;
impl Drop for LocalGuard {
    fn drop(&mut self) {
        LOCAL_DEPLOYING.store(false, Ordering::SeqCst);
    }
}

fn now() -> Timestamp {
    Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// One deployment's run on one host.
struct Run<'a> {
    runner: Runner<'a>,
    local: &'a Local,
    /// What covers the privileged steps (a reconciliation without one only reads).
    permit: Option<&'a Permit>,
    id: String,
    previous: StorePath,
    settings: &'a DeploySettings,
    health: Vec<HealthCheck>,
}

impl Remote {
    /// Deploys the permit's system to `host` and reports the final state as the outcome: succeeded
    /// (and verified) only for [`macha_deploy::Final::Succeeded`]; the detail says which final
    /// state, with every phase's time and what happened along the way.
    pub(crate) async fn deploy(
        &self,
        host: &HostName,
        permit: &Permit,
        local: &Local,
        settings: &DeploySettings,
    ) -> ActionOutcome {
        let Some(target) = self.target(host) else {
            return ActionOutcome::failed(format!(
                "{host} is not a registered host Macha may contact; nothing was sent"
            ));
        };
        // One deployment per host at a time from this daemon (another tool's switch is what
        // preflight looks for on the host).
        let Some(_running) = self.start_deploying(host) else {
            return ActionOutcome::failed(format!(
                "deployment {} refused: another deployment of {host} is running; nothing was sent",
                permit.deploy_id()
            ));
        };
        carry_out(Runner::Remote { remote: self, target }, host, permit, local, settings).await
    }
}

/// Deploys the permit's system to this host: the same protocol with the steps run here.
pub(crate) async fn deploy_here(
    host: &HostName,
    permit: &Permit,
    local: &Local,
    settings: &DeploySettings,
) -> ActionOutcome {
    if let crate::runner::Privilege::Unprivileged { uid } = local.privilege() {
        return ActionOutcome::failed(format!(
            "deployment {} refused: Macha runs as uid {uid} without sudo and cannot change this host; nothing was run",
            permit.deploy_id()
        ));
    }
    if LOCAL_DEPLOYING.swap(true, Ordering::SeqCst) {
        return ActionOutcome::failed(format!(
            "deployment {} refused: another deployment of this host is running; nothing was run",
            permit.deploy_id()
        ));
    }
    let _guard = LocalGuard;
    carry_out(Runner::Local { local }, host, permit, local, settings).await
}

/// A new deployment, or the resumption of one a restart cut off ([`Permit::resumes`]).
async fn carry_out(
    runner: Runner<'_>,
    host: &HostName,
    permit: &Permit,
    local: &Local,
    settings: &DeploySettings,
) -> ActionOutcome {
    let Action::NixosSwitch { target: switch, .. } = permit.action() else {
        return ActionOutcome::failed("not a deployment; nothing was sent");
    };
    let id = permit.deploy_id();
    let run = Run {
        runner,
        local,
        permit: Some(permit),
        id: id.clone(),
        previous: switch.previous.clone(),
        settings,
        health: settings.health.get(host).cloned().unwrap_or_default(),
    };
    if permit.resumes().is_some() {
        return run.resume(host).await;
    }
    let spec = (|| {
        Ok::<_, String>(DeploySpec {
            id: DeployId::parse(&id).map_err(|e| e.to_string())?,
            host: host.clone(),
            old: switch.previous.clone(),
            new: switch.system.clone(),
            // The timer is named after the deployment: stopping it is the disarm, and no other
            // deployment's disarm can name it. The token the machine passes along is the permit's
            // digest of the action.
            token: DisarmToken::parse(&permit.id().action_digest).map_err(|e| e.to_string())?,
            timeouts: settings.timeouts,
        })
    })();
    let mut machine = match spec.and_then(|s| HostDeploy::new(s).map_err(|e| e.to_string())) {
        Ok(m) => m,
        Err(e) => return ActionOutcome::failed(format!("deployment {id} cannot start: {e}; nothing was sent")),
    };
    let mut record: Option<DeployRecord> = None;
    let mut armed_at = now();
    let progress = ProgressGuard::start(&id, host);
    let mut queue: VecDeque<Step> = machine.start(now()).into();
    loop {
        while let Some(step) = queue.pop_front() {
            tracing::info!(deploy = %id, host = %host, phase = machine.phase().as_str(), "{}", step_name(&step));
            progress.step(machine.phase().as_str(), step_name(&step), machine.summary_row().phases.clone());
            match &step {
                Step::Arm { .. } => armed_at = now(),
                // Recorded before the activation: a restart from here on is resumed from the host.
                Step::Activate { .. } => record = run.record_armed(&machine, armed_at),
                _ => {}
            }
            let event = Box::pin(run.step(step)).await;
            queue.extend(machine.handle(now(), event));
        }
        if machine.final_state().is_some() {
            break;
        }
        let Some(wake) = machine.next_wakeup() else { break };
        let wait = u64::try_from(wake.millis().saturating_sub(now().millis())).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait.min(60_000))).await;
        queue.extend(machine.handle(now(), Event::Tick));
    }
    if matches!(machine.final_state(), Some(Final::Succeeded)) {
        // The activation unit was kept for its result; it is not needed any more.
        let _ = run.change(&DeployStep::Cleanup { id: &id }, READ_LIMIT).await;
    }
    if let Some(mut r) = record {
        r.final_state = Some(machine.final_state().cloned().unwrap_or(Final::Unknown));
        r.notes = machine.notes().to_vec();
        run.save(&r);
    }
    outcome(&id, host, &machine)
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Preflight { .. } => "preflight",
        Step::Copy { .. } => "copy",
        Step::Pin { .. } => "pin",
        Step::Arm { .. } => "arm the dead-man timer",
        Step::Activate { .. } => "activate",
        Step::ReadUnitResult { .. } => "read the activation's result",
        Step::Verify { .. } => "verify",
        Step::Disarm { .. } => "disarm",
        Step::SetProfile { .. } => "set the profile",
        Step::SetBootEntry { .. } => "set the boot entry",
        Step::Rollback { .. } => "roll back",
    }
}

/// The action's outcome from the machine's final state.
fn outcome(id: &str, host: &HostName, machine: &HostDeploy) -> ActionOutcome {
    let row = machine.summary_row();
    let final_state = machine.final_state().cloned().unwrap_or(Final::Unknown);
    let phases: Vec<String> = row.phases.iter().map(|(p, d)| format!("{p} {} ms", d.as_millis())).collect();
    let mut detail = format!("deployment {id} on {host}: {final_state}");
    if !phases.is_empty() {
        detail.push_str(&format!(" ({})", phases.join(", ")));
    }
    if !row.notes.is_empty() {
        detail.push_str(&format!("; {}", row.notes.join("; ")));
    }
    let ok = final_state.is_success();
    ActionOutcome {
        succeeded: ok,
        verified: ok,
        detail,
        output: serde_json::to_string(&serde_json::json!({
            "deploy": id, "final": final_state, "exit_code": final_state.exit_code(), "phases": row.phases.iter()
                .map(|(p, d)| (p.clone(), u64::try_from(d.as_millis()).unwrap_or(u64::MAX))).collect::<Vec<_>>(),
            "notes": row.notes,
        }))
        .ok(),
    }
}

/// What a reconciliation decided, and the record as it now is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciliation {
    pub record: DeployRecord,
    /// The final state reached (`None`: still unknown).
    pub final_state: Option<Final>,
    /// How, or why not, in a sentence.
    pub how: String,
    pub at: Timestamp,
}

impl Reconciliation {
    /// The deployment's result as the approval records it: `deployment ID on HOST: FINAL
    /// (reconciled at …: how)`, which `macha deploy show` reads back.
    pub fn detail(&self) -> String {
        let f = self.final_state.clone().unwrap_or(Final::Unknown);
        format!(
            "deployment {} on {}: {f} (reconciled at {} from the host: {})",
            self.record.deploy, self.record.host, self.at, self.how
        )
    }

    fn outcome(&self) -> ActionOutcome {
        let ok = self.final_state.as_ref().is_some_and(Final::is_success);
        let f = self.final_state.clone().unwrap_or(Final::Unknown);
        ActionOutcome {
            succeeded: ok,
            verified: ok,
            detail: self.detail(),
            output: serde_json::to_string(&serde_json::json!({
                "deploy": self.record.deploy, "final": f, "exit_code": f.exit_code(),
                "reconciled_at": self.at, "how": self.how,
            }))
            .ok(),
        }
    }
}

/// Settles a recorded deployment from its host, never activating anything. With `permit` (an
/// approved deployment a restart cut off, [`Permit::resuming`]) a new system that verifies while
/// its timer is armed is disarmed and committed; without one it stays unknown and its timer decides.
pub(crate) async fn reconcile(
    record: DeployRecord,
    permit: Option<&Permit>,
    remote: Option<&Remote>,
    local: &Local,
    settings: &DeploySettings,
) -> Reconciliation {
    let at = now();
    let runner = if record.host.is_local() {
        Runner::Local { local }
    } else {
        match remote.zip(remote.and_then(|r| r.target(&record.host))) {
            Some((remote, target)) => Runner::Remote { remote, target },
            None => {
                return Reconciliation {
                    how: format!("{} is not a registered host Macha may contact now", record.host),
                    record,
                    final_state: None,
                    at,
                };
            }
        }
    };
    let run = Run {
        runner,
        local,
        permit,
        id: record.deploy.to_string(),
        previous: record.old.clone(),
        settings,
        health: record.baseline.health.clone(),
    };
    run.settle(record, at).await
}

/// The dead-man timer from `systemctl show` of the timer and its service.
fn timer_view(text: &str) -> TimerView {
    let units: Vec<_> = text.split("\n\n").map(properties).collect();
    let fired = units.iter().any(|u| {
        u.get("Id").is_some_and(|i| i.ends_with(".service"))
            && u.get("ExecMainStartTimestampMonotonic").is_some_and(|t| !t.is_empty() && t != "0")
    });
    let armed = units.iter().any(|u| {
        u.get("Id").is_some_and(|i| i.ends_with(".timer")) && u.get("ActiveState").is_some_and(|s| s == "active")
    });
    match (fired, armed) {
        (true, _) => TimerView::Fired,
        (false, true) => TimerView::Armed,
        (false, false) => TimerView::Gone,
    }
}

/// The activation unit's view for a reconciliation.
fn activation_view(state: &UnitState) -> ActivationView {
    match state {
        UnitState::Running => ActivationView::Running,
        UnitState::Exited { code: 0 | 4 } => ActivationView::Succeeded,
        UnitState::Exited { code } => ActivationView::Failed { detail: format!("exit status {code}") },
        UnitState::Killed { detail } => ActivationView::Failed { detail: detail.clone() },
        UnitState::Gone { .. } => ActivationView::Gone,
    }
}

impl Run<'_> {
    /// Runs one step the machine asked for and returns what happened.
    async fn step(&self, step: Step) -> Event {
        match step {
            Step::Preflight { .. } => Event::Preflight { result: self.preflight().await },
            Step::Copy { system } => Event::Copied { result: self.copy(&system).await },
            Step::Pin { old, new } => {
                let result = async {
                    self.change(&DeployStep::PinRoot { id: &self.id, role: "old", path: &old }, CHANGE_LIMIT).await?;
                    self.change(&DeployStep::PinRoot { id: &self.id, role: "new", path: &new }, CHANGE_LIMIT).await
                }
                .await;
                Event::Pinned { result: result.map(drop) }
            }
            Step::Arm { record, fires_after, .. } => {
                let secs = fires_after.as_secs().max(1);
                let step = DeployStep::Arm { id: &self.id, previous: &record.baseline.system, secs };
                Event::Armed { result: self.change(&step, READ_LIMIT).await.map(drop) }
            }
            Step::Activate { system, .. } => self.activate(&system).await,
            Step::ReadUnitResult { .. } => self.read_unit_result().await,
            Step::Verify { expected: _ } => match self.observe().await {
                Ok(observed) => Event::Observed { observed },
                Err(reason) => Event::Unreachable { reason },
            },
            Step::Disarm { .. } => Event::Disarm { ack: self.disarm().await },
            Step::SetProfile { system } => Event::ProfileSet {
                result: self.change(&DeployStep::SetProfile { system: &system }, CHANGE_LIMIT).await.map(drop),
            },
            Step::SetBootEntry { system } => Event::BootEntrySet {
                result: self.change(&DeployStep::Boot { id: &self.id, system: &system }, CHANGE_LIMIT).await.map(drop),
            },
            Step::Rollback { to, restore_profile, .. } => self.rollback(&to, restore_profile).await,
        }
    }

    /// A read-only command on the host; `Err` with the reason when it did not succeed.
    async fn read(&self, step: &DeployStep<'_>) -> Result<String, String> {
        self.run(step, READ_LIMIT, false).await
    }

    /// A command that changes the host, under `sudo -n` with the deployment's permit.
    async fn change(&self, step: &DeployStep<'_>, limit: Duration) -> Result<String, String> {
        self.run(step, limit, true).await
    }

    /// One step's command on the host; its standard output, or why it did not succeed.
    async fn run(&self, step: &DeployStep<'_>, limit: Duration, privileged: bool) -> Result<String, String> {
        let tools = self.runner.tools().await?;
        let cmd = macha_core::command::deploy_command(step, &tools).map_err(|e| e.to_string())?;
        let permit = match (privileged, self.permit) {
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) => return Err(format!("no permit covers `{}` now; nothing was run", cmd.display())),
        };
        self.runner.exec(cmd, limit, permit).await
    }

    async fn current_system(&self) -> Result<StorePath, String> {
        let text = self.read(&DeployStep::CurrentSystem).await?;
        StorePath::parse(text.trim()).map_err(|e| format!("/run/current-system: {e}"))
    }

    async fn boot_id(&self) -> Result<String, String> {
        let bytes = self.runner.read_file("/proc/sys/kernel/random/boot_id", 128).await?;
        let text = String::from_utf8_lossy(&bytes);
        macha_parse::procfs::parse_boot_id(&text).ok_or_else(|| format!("the boot id {:?} is not one", text.trim()))
    }

    async fn failed_units(&self) -> Result<BTreeSet<String>, String> {
        let text = self.read(&DeployStep::FailedUnits).await?;
        Ok(text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect())
    }

    /// The baseline, read-only; refuses when another switch runs or `/nix` is short of space.
    async fn preflight(&self) -> Result<Baseline, String> {
        let system = self.current_system().await?;
        let switching = self.read(&DeployStep::Switching).await?;
        let busy: Vec<&str> = switching.lines().filter_map(|l| l.split_whitespace().next()).collect();
        if !busy.is_empty() {
            return Err(format!("another switch is running on the host: {}", busy.join(", ")));
        }
        let free = self.read(&DeployStep::FreeSpace { path: "/nix" }).await?;
        let avail: u64 = free.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        if avail < self.settings.min_free_bytes {
            return Err(format!(
                "/nix has {} free, less than the {} a deployment needs",
                macha_core::checks::human_bytes(avail),
                macha_core::checks::human_bytes(self.settings.min_free_bytes)
            ));
        }
        // The rollback target must be in the host's store, or there is nothing to go back to.
        self.read(&DeployStep::Valid { path: &system }).await.map_err(|e| {
            format!(
                "the running system {system} is not a valid store path on the host, so there is no rollback target: {e}"
            )
        })?;
        self.elevation(&system).await?;
        // A check that fails before anything changed could never confirm the change.
        let failing: Vec<String> = self
            .health_results()
            .await
            .into_iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{}: {}", r.check, r.detail))
            .collect();
        if !failing.is_empty() {
            return Err(format!("health checks fail before the deployment: {}", failing.join("; ")));
        }
        Ok(Baseline {
            system,
            generation: None,
            boot_id: self.boot_id().await?,
            failed_units: self.failed_units().await?,
            health: self.health.clone(),
        })
    }

    /// Proves, running nothing, that the host's sudo would run every privileged step of this
    /// deployment without a password (`sudo -n -l` of each exact command): a password prompt or a
    /// missing rule refuses the deployment here, before the copy, not halfway through it.
    async fn elevation(&self, previous: &StorePath) -> Result<(), String> {
        let Some(permit) = self.permit else {
            return Err("no permit: nothing privileged may run".to_owned());
        };
        let Action::NixosSwitch { target, .. } = permit.action() else {
            return Err("not a deployment".to_owned());
        };
        let secs = self.settings.timeouts.activate.as_secs().max(1);
        let id = self.id.as_str();
        let system = &target.system;
        let steps = [
            DeployStep::PinRoot { id, role: "old", path: previous },
            DeployStep::PinRoot { id, role: "new", path: system },
            DeployStep::Arm { id, previous, secs },
            DeployStep::Activate { id, system, previous, secs },
            DeployStep::Disarm { id },
            DeployStep::SetProfile { system },
            DeployStep::Boot { id, system },
            DeployStep::Rollback { id, previous, secs },
        ];
        let tools = self.runner.tools().await?;
        for step in &steps {
            let cmd = macha_core::command::deploy_command(step, &tools).map_err(|e| e.to_string())?;
            self.runner.may_elevate(cmd, READ_LIMIT, permit).await?;
        }
        Ok(())
    }

    /// `nix copy` on the controller through the host's master, then the host checks the path. On
    /// this host the closure is already in the store (it was built here): only checked.
    async fn copy(&self, system: &StorePath) -> Result<(), String> {
        let Runner::Remote { remote, target } = &self.runner else {
            return self
                .read(&DeployStep::Valid { path: system })
                .await
                .map(drop)
                .map_err(|e| format!("{system} is not a valid path in this host's store (build it here first): {e}"));
        };
        let transport = remote.pool().nix_transport(target).await.map_err(|e| e.to_string())?;
        let cmd = nix_copy_command(self.local.tools(), &transport.uri, system).map_err(|e| e.to_string())?;
        let path = format!("{}:{}", transport.ssh_dir.display(), macha_core::command::SPAWN_ENV[0].1);
        let ran = tokio::time::timeout(
            CHANGE_LIMIT,
            tokio::process::Command::new(cmd.program())
                .args(cmd.argv())
                .env_clear()
                .envs(macha_core::command::SPAWN_ENV)
                .env("PATH", path)
                .env("NIX_SSHOPTS", &transport.sshopts)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| format!("`{}` did not finish within {} s", cmd.display(), CHANGE_LIMIT.as_secs()))?
        .map_err(|e| format!("cannot run {}: {e}", cmd.program()))?;
        if !ran.status.success() {
            let err = String::from_utf8_lossy(&ran.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty() && !l.contains("nixbld")).unwrap_or("");
            let hint = if last.contains("lacks a valid signature") {
                " (the host's Nix does not trust the login user: add it to nix.settings.trusted-users)"
            } else {
                ""
            };
            return Err(format!(
                "the copy failed ({}): {}{hint}",
                ran.status,
                macha_core::journal::sanitize(last, 300)
            ));
        }
        self.read(&DeployStep::Valid { path: system }).await.map(drop).map_err(|e| format!("copied, but {e}"))
    }

    /// The activation in its transient unit. `systemd-run --wait` exits 0 when the activation
    /// did; for a failure it exits 1 whatever the status, which the failed unit keeps (read here).
    /// No answer at all (the connection broke) is a lost connection: the machine reads the unit's
    /// result over a new one and never activates again.
    async fn activate(&self, system: &StorePath) -> Event {
        let secs = self.settings.timeouts.activate.as_secs().max(1);
        let step = DeployStep::Activate { id: &self.id, system, previous: &self.previous, secs };
        let limit = self.settings.timeouts.activate + Duration::from_secs(30);
        match self.change(&step, limit).await {
            Ok(_) => Event::ActivationExited { code: 0 },
            Err(_) => match self.unit_state().await {
                Ok(UnitState::Exited { code }) => Event::ActivationExited { code },
                Ok(UnitState::Killed { .. }) => Event::ActivationExited { code: -1 },
                Ok(UnitState::Running | UnitState::Gone { .. }) | Err(_) => Event::ConnectionLost,
            },
        }
    }

    /// The activation unit's state, over the current connection.
    async fn unit_state(&self) -> Result<UnitState, String> {
        let text = self.read(&DeployStep::ActivationState { id: &self.id }).await?;
        let p = properties(&text);
        let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
        if get("LoadState") == "not-found" {
            return Ok(UnitState::Gone { boot_id: self.boot_id().await? });
        }
        Ok(match (get("ActiveState"), get("Result")) {
            ("activating" | "deactivating" | "reloading", _) => UnitState::Running,
            (_, "success") => UnitState::Exited { code: 0 },
            (_, "exit-code") => UnitState::Exited { code: get("ExecMainStatus").parse().unwrap_or(1) },
            (_, other) => UnitState::Killed { detail: format!("the activation unit ended with result {other}") },
        })
    }

    /// Over a new connection, the activation unit's result.
    async fn read_unit_result(&self) -> Event {
        self.runner.fresh().await;
        match self.unit_state().await {
            Ok(state) => Event::UnitResult { state },
            Err(reason) => Event::Unreachable { reason },
        }
    }

    /// Over a new connection, what verification compares with the baseline.
    async fn observe(&self) -> Result<Observed, String> {
        self.runner.fresh().await;
        Ok(Observed {
            current_system: self.current_system().await?,
            boot_id: self.boot_id().await?,
            failed_units: self.failed_units().await?,
            health: self.health_results().await,
        })
    }

    /// Runs every declared health check: units over SSH, ports from the controller (as a client
    /// would reach them).
    async fn health_results(&self) -> Vec<HealthResult> {
        let mut out = Vec::with_capacity(self.health.len());
        for check in &self.health {
            let (passed, detail) = match check {
                HealthCheck::UnitActive(unit) => match self.read(&DeployStep::UnitActive { unit }).await {
                    Ok(state) => (state.trim() == "active", format!("ActiveState={}", state.trim())),
                    Err(e) => (false, e),
                },
                HealthCheck::Tcp { port } => match self.connect(*port).await {
                    Ok(_) => (true, "connected".to_owned()),
                    Err(e) => (false, e),
                },
                HealthCheck::Http { port, path, status } => match self.http_status(*port, path).await {
                    Ok(got) => (got == *status, format!("HTTP {got}")),
                    Err(e) => (false, e),
                },
                HealthCheck::Diagnostic(name) => (false, format!("diagnostic {name} is not a check Macha runs")),
            };
            out.push(HealthResult { check: check.clone(), passed, detail });
        }
        out
    }

    async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let addr = (self.runner.address(), port);
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("port {port}: {e}")),
            Err(_) => Err(format!("port {port}: no answer within 5 s")),
        }
    }

    /// The status of `GET path` over HTTP/1.0 (the first line of the answer, at most 1 KiB read).
    async fn http_status(&self, port: u16, path: &str) -> Result<u16, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = self.connect(port).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", self.runner.address());
        let exchange = async {
            s.write_all(request.as_bytes()).await?;
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf)
        };
        let head = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| format!("port {port}: no HTTP answer within 5 s"))?
            .map_err(|e| format!("port {port}: {e}"))?;
        let line = String::from_utf8_lossy(&head);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .filter(|_| line.starts_with("HTTP/"))
            .ok_or_else(|| format!("port {port}: not an HTTP answer"))
    }

    /// Stops the dead-man timer; acknowledged when the timer is gone and its service never ran.
    async fn disarm(&self) -> DisarmAck {
        if let Err(reason) = self.change(&DeployStep::Disarm { id: &self.id }, READ_LIMIT).await {
            return DisarmAck::NotAcknowledged { reason };
        }
        match self.timer().await {
            Ok(TimerView::Gone) => DisarmAck::Acknowledged,
            Ok(TimerView::Fired) => {
                DisarmAck::NotAcknowledged { reason: "the dead-man timer had already fired".into() }
            }
            Ok(TimerView::Armed) => DisarmAck::NotAcknowledged { reason: "the dead-man timer is still armed".into() },
            Err(reason) => DisarmAck::NotAcknowledged { reason },
        }
    }

    /// The dead-man timer as the host shows it (read-only).
    async fn timer(&self) -> Result<TimerView, String> {
        Ok(timer_view(&self.read(&DeployStep::ArmState { id: &self.id }).await?))
    }

    /// Back to the recorded old system, over a new connection: the timer and the activation unit
    /// stopped first, then `previous`'s activation in a transient unit (and the profile and the
    /// boot entry back when they had moved).
    async fn rollback(&self, to: &StorePath, restore_profile: bool) -> Event {
        self.runner.fresh().await;
        if let Err(reason) = self.runner.reachable().await {
            return Event::Unreachable { reason };
        }
        let _ = self.change(&DeployStep::Disarm { id: &self.id }, READ_LIMIT).await;
        let _ = self.change(&DeployStep::Cleanup { id: &self.id }, READ_LIMIT).await;
        let _ = self.change(&DeployStep::Forget { id: &self.id }, READ_LIMIT).await;
        let secs = self.settings.timeouts.activate.as_secs().max(1);
        let mut result = self
            .change(
                &DeployStep::Rollback { id: &self.id, previous: to, secs },
                self.settings.timeouts.activate + Duration::from_secs(30),
            )
            .await
            .map(drop);
        if result.is_ok() && restore_profile {
            result = async {
                self.change(&DeployStep::SetProfile { system: to }, CHANGE_LIMIT).await?;
                self.change(&DeployStep::Boot { id: &self.id, system: to }, CHANGE_LIMIT).await
            }
            .await
            .map(drop);
        }
        match result {
            Err(e) if e.contains("connect") || e.contains("disconnect") => Event::Unreachable { reason: e },
            r => Event::RolledBack { result: r },
        }
    }

    /// The deployment's record once its timer is armed, written to the journal.
    fn record_armed(&self, machine: &HostDeploy, armed_at: Timestamp) -> Option<DeployRecord> {
        let spec = machine.spec();
        let record = DeployRecord {
            deploy: spec.id.clone(),
            host: spec.host.clone(),
            approval_id: self.permit.and_then(Permit::approval_id),
            old: spec.old.clone(),
            new: spec.new.clone(),
            baseline: machine.baseline()?.clone(),
            armed_at,
            dead_man: spec.timeouts.dead_man,
            run: journal::run_id().to_owned(),
            final_state: None,
            notes: Vec::new(),
            reconciled: None,
        };
        self.save(&record);
        Some(record)
    }

    /// Writes `record` to the journal, if there is one (a failure is logged: the deployment goes on,
    /// it only could not be resumed after a restart).
    fn save(&self, record: &DeployRecord) {
        if let Some(dir) = &self.settings.journal
            && let Err(e) = journal::write(dir, record)
        {
            tracing::warn!(deploy = %record.deploy, "cannot record the deployment: {e}");
        }
    }

    /// Resumes the deployment a restart cut off: its record, then [`Run::settle`].
    async fn resume(&self, host: &HostName) -> ActionOutcome {
        let at = now();
        let record = match &self.settings.journal {
            Some(dir) => journal::read(dir, &self.id),
            None => Ok(None),
        };
        let record = match record {
            Ok(Some(r)) if &r.host == host => r,
            Ok(_) => {
                return ActionOutcome::failed(format!(
                    "deployment {} on {host}: unknown (no record of it was kept, so it cannot be resumed; check \
                     the host: its dead-man timer rolls it back)",
                    self.id
                ));
            }
            Err(e) => return ActionOutcome::failed(format!("deployment {} on {host}: unknown ({e})", self.id)),
        };
        self.settle(record, at).await.outcome()
    }

    /// Reads the host, judges, commits when the judgement says so and a permit covers it, and
    /// records the result.
    async fn settle(&self, mut record: DeployRecord, at: Timestamp) -> Reconciliation {
        let done = |record: &mut DeployRecord, final_state: Option<Final>, how: String| {
            if let Some(f) = &final_state {
                record.final_state = Some(f.clone());
                record.reconciled = Some(Reconciled { at, how: how.clone() });
            } else {
                record.final_state = Some(Final::Unknown);
                if record.notes.last() != Some(&how) {
                    record.notes.push(how.clone());
                }
            }
            record.run = journal::run_id().to_owned();
            self.save(record);
            Reconciliation { record: record.clone(), final_state, how, at }
        };
        let view = match self.view().await {
            Ok(v) => v,
            Err(e) => return done(&mut record, None, format!("the host could not be read: {e}")),
        };
        match macha_deploy::judge(&record, &view, at) {
            Judgement::Settled { final_state, how } => done(&mut record, Some(final_state), how),
            Judgement::Undecided { why } => done(&mut record, None, why),
            Judgement::Commit { how } => {
                if self.permit.is_none() {
                    let why = format!(
                        "{how}, but its approval is closed and nothing may commit it now; its dead-man timer rolls \
                         it back at {}",
                        record.timer_due()
                    );
                    return done(&mut record, None, why);
                }
                if let DisarmAck::NotAcknowledged { reason } = self.disarm().await {
                    return done(&mut record, None, format!("{how}; the disarm was not acknowledged: {reason}"));
                }
                let commit = async {
                    self.change(&DeployStep::SetProfile { system: &record.new }, CHANGE_LIMIT).await?;
                    self.change(&DeployStep::Boot { id: &self.id, system: &record.new }, CHANGE_LIMIT).await
                }
                .await;
                match commit {
                    Ok(_) => {
                        let _ = self.change(&DeployStep::Cleanup { id: &self.id }, READ_LIMIT).await;
                        done(&mut record, Some(Final::Succeeded), format!("{how}; disarmed and committed"))
                    }
                    // Nothing is activated by a reconciliation: the host runs the new system, disarmed,
                    // and its boot entry may still be the old one.
                    Err(e) => done(
                        &mut record,
                        None,
                        format!("{how}; disarmed, but the commit failed: {e} (the boot entry may be the old system)"),
                    ),
                }
            }
        }
    }

    /// What the host shows now, over a fresh connection.
    async fn view(&self) -> Result<HostView, String> {
        let observed = self.observe().await?;
        let timer = self.timer().await?;
        let activation = activation_view(&self.unit_state().await?);
        Ok(HostView { observed, timer, activation })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::runner::Privilege;
    use macha_core::action::{Hosts, Origin, SwitchTarget};
    use macha_core::approval::ApprovalState;
    use macha_core::command::Tools;
    use macha_core::policy::{ApprovalEvidence, Autonomy, PolicyInputs, ProtectedUnits, Ruling, decide};
    use macha_core::{Mono, Now};
    use std::os::unix::fs::PermissionsExt;

    const OLD: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixos-system-ctl-a";
    const NEW: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-ctl-b";

    fn path(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    fn local(tools: Tools, privilege: Privilege) -> Local {
        Local::new(macha_observe::systemd::SystemdLink::new(Err("not in a test".into())), tools)
            .with_privilege(privilege)
    }

    /// An approved deployment's permit for this host.
    fn permit() -> Permit {
        let action = Action::NixosSwitch {
            host: Hosts::One(HostName::local()),
            target: Box::new(SwitchTarget { system: path(NEW), previous: path(OLD), flake: None }),
            reason: "test".into(),
        };
        let inputs = PolicyInputs::new(Autonomy::AutoFull, ProtectedUnits::new::<&str>(&[]));
        let stored = serde_json::to_value(&action).unwrap();
        let evidence = ApprovalEvidence::from_stored_approval(5, ApprovalState::Approved, &stored).unwrap();
        let now = Now::new(Timestamp::from_millis(1_800_000_000_000), Mono(0));
        match decide(&action, &Origin::Person { uid: 0 }, &inputs.context().with_approval(evidence), now) {
            Ruling::Execute(p) => p,
            other => panic!("{:?}", other.decision()),
        }
    }

    /// A directory of stand-in programs: each prints what the test says for the arguments it gets.
    struct FakeHost {
        dir: PathBuf,
    }

    impl FakeHost {
        fn new(name: &str) -> FakeHost {
            let dir = std::env::temp_dir().join(format!("macha-deploy-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            FakeHost { dir }
        }
        fn program(&self, name: &str, script: &str) -> String {
            let p = self.dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p.display().to_string()
        }
        /// A host running `system`, whose dead-man timer and activation unit show `timer` and
        /// `activation` (`systemctl show` output).
        fn tools(&self, system: &str, timer: &str, activation: &str) -> Tools {
            let log = self.dir.join("calls");
            let systemctl = format!(
                "echo \"$*\" >> {log}\ncase \"$*\" in\n  *deadman*) printf '%s\\n' '{timer}' ;;\n  \
                 *ExecMainStatus*) printf '%s\\n' '{activation}' ;;\n  *) : ;;\nesac",
                log = log.display()
            );
            Tools::new()
                .with("readlink", &self.program("readlink", &format!("echo {system}")))
                .with("systemctl", &self.program("systemctl", &systemctl))
        }
        fn calls(&self) -> String {
            std::fs::read_to_string(self.dir.join("calls")).unwrap_or_default()
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn this_boot() -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim().to_owned()
    }

    fn record(armed_secs_ago: u64) -> DeployRecord {
        DeployRecord {
            deploy: DeployId::parse("abc123").unwrap(),
            host: HostName::local(),
            approval_id: Some(5),
            old: path(OLD),
            new: path(NEW),
            baseline: Baseline {
                system: path(OLD),
                generation: None,
                boot_id: this_boot(),
                failed_units: BTreeSet::new(),
                health: Vec::new(),
            },
            armed_at: Timestamp::from_millis(now().millis() - i64::try_from(armed_secs_ago * 1000).unwrap()),
            dead_man: Duration::from_secs(900),
            run: "an-earlier-run".into(),
            final_state: None,
            notes: Vec::new(),
            reconciled: None,
        }
    }

    const ARMED: &str = "Id=macha-deploy-abc123-deadman.timer\nActiveState=active\n\n\
                         Id=macha-deploy-abc123-deadman.service\nExecMainStartTimestampMonotonic=0";
    const FIRED: &str = "Id=macha-deploy-abc123-deadman.timer\nActiveState=inactive\n\n\
                         Id=macha-deploy-abc123-deadman.service\nExecMainStartTimestampMonotonic=123456";
    const GONE_UNIT: &str = "LoadState=not-found\nActiveState=inactive\nResult=success";

    #[test]
    fn the_timer_and_the_activation_unit_read_as_views() {
        assert_eq!(timer_view(ARMED), TimerView::Armed);
        assert_eq!(timer_view(FIRED), TimerView::Fired);
        assert_eq!(
            timer_view("Id=x.timer\nActiveState=inactive\n\nId=x.service\nExecMainStartTimestampMonotonic=0"),
            TimerView::Gone
        );
        assert_eq!(timer_view(""), TimerView::Gone);
        assert_eq!(activation_view(&UnitState::Exited { code: 4 }), ActivationView::Succeeded);
        assert_eq!(
            activation_view(&UnitState::Exited { code: 1 }),
            ActivationView::Failed { detail: "exit status 1".into() }
        );
        assert_eq!(activation_view(&UnitState::Gone { boot_id: "b".into() }), ActivationView::Gone);
        assert_eq!(activation_view(&UnitState::Running), ActivationView::Running);
    }

    #[tokio::test]
    async fn this_host_is_not_deployed_without_root_or_sudo() {
        let host = FakeHost::new("unprivileged");
        let l = local(host.tools(NEW, ARMED, GONE_UNIT), Privilege::Unprivileged { uid: 990 });
        let out = deploy_here(&HostName::local(), &permit(), &l, &DeploySettings::default()).await;
        assert!(!out.succeeded);
        assert!(
            out.detail.contains("uid 990 without sudo") && out.detail.contains("nothing was run"),
            "{}",
            out.detail
        );
        assert_eq!(host.calls(), "", "nothing ran on the host");
    }

    #[tokio::test]
    async fn a_privileged_local_step_needs_the_permit_to_cover_it() {
        let host = FakeHost::new("permit");
        let l = local(host.tools(NEW, ARMED, GONE_UNIT), Privilege::Root);
        let p = permit();
        let runner = Runner::Local { local: &l };
        let tools = runner.tools().await.unwrap();
        let other = macha_core::command::deploy_command(&DeployStep::Disarm { id: "fff000" }, &tools).unwrap();
        let err = runner.exec(other, READ_LIMIT, Some(&p)).await.unwrap_err();
        assert!(err.contains("does not cover"), "{err}");
        assert_eq!(host.calls(), "", "nothing ran");
        // Its own disarm is covered and runs (as root: directly).
        let own = macha_core::command::deploy_command(&DeployStep::Disarm { id: &p.deploy_id() }, &tools).unwrap();
        runner.exec(own, READ_LIMIT, Some(&p)).await.unwrap();
        assert!(host.calls().contains(&format!("stop -- macha-deploy-{}-deadman.timer", p.deploy_id())));
    }

    #[tokio::test]
    async fn this_host_rolled_back_by_its_timer_is_reconciled_as_rolled_back() {
        let host = FakeHost::new("fired");
        let dir = host.dir.join("journal");
        let l = local(host.tools(OLD, FIRED, GONE_UNIT), Privilege::Unprivileged { uid: 990 });
        let settings = DeploySettings { journal: Some(dir.clone()), ..DeploySettings::default() };
        let r = reconcile(record(1000), None, None, &l, &settings).await;
        assert_eq!(r.final_state, Some(Final::RolledBack), "{}", r.how);
        assert!(r.detail().starts_with("deployment abc123 on local: rolled back (reconciled at "), "{}", r.detail());
        // The journal now holds the settled record.
        let saved = journal::read(&dir, "abc123").unwrap().unwrap();
        assert_eq!(saved.final_state, Some(Final::RolledBack));
        assert!(saved.reconciled.is_some_and(|x| x.how.contains("dead-man timer")));
        assert!(!host.calls().contains("stop"), "a reconciliation without a commit changes nothing");
    }

    #[tokio::test]
    async fn a_verified_new_system_is_not_committed_without_a_permit() {
        let host = FakeHost::new("closed");
        let l = local(host.tools(NEW, ARMED, GONE_UNIT), Privilege::Root);
        let r = reconcile(record(60), None, None, &l, &DeploySettings::default()).await;
        assert_eq!(r.final_state, None);
        assert!(r.how.contains("nothing may commit it now"), "{}", r.how);
        assert!(!host.calls().contains("stop"), "not disarmed");
    }

    #[tokio::test]
    async fn a_resumed_deployment_of_this_host_disarms_commits_and_says_when_the_commit_fails() {
        let host = FakeHost::new("resume");
        let dir = host.dir.join("journal");
        let p = permit().resuming("abc123").unwrap();
        // After the disarm the timer reads gone; before, armed.
        let state = host.dir.join("disarmed");
        let systemctl = format!(
            "echo \"$*\" >> {log}\ncase \"$*\" in\n  stop*) touch {state} ;;\n  *deadman*) if [ -e {state} ]; then \
             printf 'Id=x.timer\\nActiveState=inactive\\n'; else printf '%s\\n' '{ARMED}'; fi ;;\n  \
             *ExecMainStatus*) printf '%s\\n' '{GONE_UNIT}' ;;\n  *) : ;;\nesac",
            log = host.dir.join("calls").display(),
            state = state.display()
        );
        let nix_env = host.program("nix-env", &format!("echo \"nix-env $*\" >> {}", host.dir.join("calls").display()));
        let tools = Tools::new()
            .with("readlink", &host.program("readlink", &format!("echo {NEW}")))
            .with("systemctl", &host.program("systemctl", &systemctl))
            .with("nix-env", &nix_env);
        let l = local(tools, Privilege::Root);
        let settings = DeploySettings { journal: Some(dir.clone()), ..DeploySettings::default() };
        journal::write(&dir, &record(60)).unwrap();
        let out = carry_out(Runner::Local { local: &l }, &HostName::local(), &p, &l, &settings).await;
        let calls = host.calls();
        assert!(calls.contains("stop -- macha-deploy-abc123-deadman.timer"), "disarmed: {calls}");
        assert!(calls.contains(&format!("nix-env --profile /nix/var/nix/profiles/system --set {NEW}")), "{calls}");
        // The boot entry is NEW/bin/switch-to-configuration boot, which does not exist here: the
        // commit fails after the disarm, and the deployment stays unknown, saying so.
        assert!(!out.succeeded);
        assert!(out.detail.contains("unknown") && out.detail.contains("the commit failed"), "{}", out.detail);
        let saved = journal::read(&dir, "abc123").unwrap().unwrap();
        assert_eq!(saved.final_state, Some(Final::Unknown));
        assert_eq!(saved.run, journal::run_id());
    }
}
