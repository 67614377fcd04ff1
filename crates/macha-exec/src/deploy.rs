//! A permitted NixOS deployment of one other host, carried out. The `macha-deploy` state machine
//! decides every step and the one final state; this module only runs what it asks and reports what
//! happened: the preflight reads, `nix copy` through Macha's own SSH master, the GC roots, the
//! dead-man timer, the activation in a transient unit, and every read after the activation over a
//! new connection (the one that activated may be the one the new configuration broke).
//!
//! Every command comes from the core's builder ([`DeployStep`]); the ones that change the host run
//! under `sudo -n` with the deployment's permit, which covers exactly this deployment's steps.

use crate::local::Local;
use crate::outcome::ActionOutcome;
use crate::remote::{Remote, properties};
use macha_core::action::Action;
use macha_core::command::{DeployStep, nix_copy_command};
use macha_core::policy::Permit;
use macha_core::{HostName, StorePath, Timestamp};
use macha_deploy::machine::{
    Baseline, Command as Step, DeployId, DeploySpec, DisarmAck, DisarmToken, Event, HealthCheck, HealthResult,
    HostDeploy, Observed, Timeouts, UnitState,
};
use macha_ssh::{RemoteCommand, Target};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
}

/// The limit of one read-only command of a deployment.
const READ_LIMIT: Duration = Duration::from_secs(30);
/// The limit of the copy, the GC roots, the profile and the boot entry.
const CHANGE_LIMIT: Duration = Duration::from_secs(600);

fn now() -> Timestamp {
    Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// One deployment's run on `target`.
struct Run<'a> {
    remote: &'a Remote,
    local: &'a Local,
    target: Target,
    permit: &'a Permit,
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
        let Action::NixosSwitch { target: switch, .. } = permit.action() else {
            return ActionOutcome::failed("not a deployment; nothing was sent");
        };
        let Some(target) = self.target(host) else {
            return ActionOutcome::failed(format!(
                "{host} is not a registered host Macha may contact; nothing was sent"
            ));
        };
        let id = permit.deploy_id();
        // One deployment per host at a time from this daemon (another tool's switch is what
        // preflight looks for on the host).
        let Some(_running) = self.start_deploying(host) else {
            return ActionOutcome::failed(format!(
                "deployment {id} refused: another deployment of {host} is running; nothing was sent"
            ));
        };
        let spec = (|| {
            Ok::<_, String>(DeploySpec {
                id: DeployId::parse(&id).map_err(|e| e.to_string())?,
                host: host.clone(),
                old: switch.previous.clone(),
                new: switch.system.clone(),
                // The timer is named after the deployment: stopping it is the disarm, and no other
                // deployment's disarm can name it. The token the machine passes along is the
                // permit's digest of the action.
                token: DisarmToken::parse(&permit.id().action_digest).map_err(|e| e.to_string())?,
                timeouts: settings.timeouts,
            })
        })();
        let mut machine = match spec.and_then(|s| HostDeploy::new(s).map_err(|e| e.to_string())) {
            Ok(m) => m,
            Err(e) => return ActionOutcome::failed(format!("deployment {id} cannot start: {e}; nothing was sent")),
        };
        let health = settings.health.get(host).cloned().unwrap_or_default();
        let run = Run {
            remote: self,
            local,
            target,
            permit,
            id: id.clone(),
            previous: switch.previous.clone(),
            settings,
            health,
        };
        let mut queue: VecDeque<Step> = machine.start(now()).into();
        loop {
            while let Some(step) = queue.pop_front() {
                tracing::info!(deploy = %id, host = %host, phase = machine.phase().as_str(), "{}", step_name(&step));
                let event = run.step(step).await;
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
        if matches!(machine.final_state(), Some(macha_deploy::Final::Succeeded)) {
            // The activation unit was kept for its result; it is not needed any more.
            let _ = run.change(&DeployStep::Cleanup { id: &id }, READ_LIMIT).await;
        }
        outcome(&id, host, &machine)
    }
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
    let final_state = machine.final_state().cloned().unwrap_or(macha_deploy::Final::Unknown);
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
        let tools = self.remote.pool().tools(&self.target).await.map_err(|e| e.to_string())?;
        let cmd = macha_core::command::deploy_command(step, &tools.core_tools()).map_err(|e| e.to_string())?;
        let rc = RemoteCommand::new(cmd, limit);
        let rc = if privileged { rc.sudo(self.permit).map_err(|e| e.to_string())? } else { rc };
        let out = self.remote.pool().run(&self.target, &rc).await.map_err(|e| e.to_string())?;
        if out.success() {
            Ok(out.stdout_text())
        } else {
            Err(format!("`{}` failed ({:?}): {}", rc.display(), out.status, out.stderr_line()))
        }
    }

    async fn current_system(&self) -> Result<StorePath, String> {
        let text = self.read(&DeployStep::CurrentSystem).await?;
        StorePath::parse(text.trim()).map_err(|e| format!("/run/current-system: {e}"))
    }

    async fn boot_id(&self) -> Result<String, String> {
        let bytes = self
            .remote
            .pool()
            .read_file(&self.target, "/proc/sys/kernel/random/boot_id", 128)
            .await
            .map_err(|e| e.to_string())?;
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
        let Action::NixosSwitch { target, .. } = self.permit.action() else {
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
        let tools = self.remote.pool().tools(&self.target).await.map_err(|e| e.to_string())?;
        for step in &steps {
            let cmd = macha_core::command::deploy_command(step, &tools.core_tools()).map_err(|e| e.to_string())?;
            let rc = RemoteCommand::new(cmd, READ_LIMIT).sudo_check(self.permit).map_err(|e| e.to_string())?;
            let out = self.remote.pool().run(&self.target, &rc).await.map_err(|e| e.to_string())?;
            if !out.success() {
                let why = out.stderr_line();
                let why = if why.trim().is_empty() { "no rule allows it".to_owned() } else { why };
                return Err(format!(
                    "the host's sudo would not run `{}` without a password ({why}); a managed NixOS host \
                     needs services.macha.managed.deploy.enable, which allows exactly a deployment's steps",
                    rc.inner().display()
                ));
            }
        }
        Ok(())
    }

    /// `nix copy` on the controller through the host's master, then the host checks the path.
    async fn copy(&self, system: &StorePath) -> Result<(), String> {
        let transport = self.remote.pool().nix_transport(&self.target).await.map_err(|e| e.to_string())?;
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
        self.remote.pool().disconnect(&self.target.name).await;
        match self.unit_state().await {
            Ok(state) => Event::UnitResult { state },
            Err(reason) => Event::Unreachable { reason },
        }
    }

    /// Over a new connection, what verification compares with the baseline.
    async fn observe(&self) -> Result<Observed, String> {
        self.remote.pool().disconnect(&self.target.name).await;
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
        let addr = (self.target.address.as_str(), port);
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
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", self.target.address);
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
        match self.read(&DeployStep::ArmState { id: &self.id }).await {
            Ok(text) => {
                let units: Vec<_> = text.split("\n\n").map(properties).collect();
                let fired = units.iter().any(|u| {
                    u.get("Id").is_some_and(|i| i.ends_with(".service"))
                        && u.get("ExecMainStartTimestampMonotonic").is_some_and(|t| t != "0")
                });
                let armed = units.iter().any(|u| {
                    u.get("Id").is_some_and(|i| i.ends_with(".timer"))
                        && u.get("ActiveState").is_some_and(|s| s == "active")
                });
                match (fired, armed) {
                    (false, false) => DisarmAck::Acknowledged,
                    (true, _) => DisarmAck::NotAcknowledged { reason: "the dead-man timer had already fired".into() },
                    (false, true) => DisarmAck::NotAcknowledged { reason: "the dead-man timer is still armed".into() },
                }
            }
            Err(reason) => DisarmAck::NotAcknowledged { reason },
        }
    }

    /// Back to the recorded old system, over a new connection: the timer and the activation unit
    /// stopped first, then `previous`'s activation in a transient unit (and the profile and the
    /// boot entry back when they had moved).
    async fn rollback(&self, to: &StorePath, restore_profile: bool) -> Event {
        self.remote.pool().disconnect(&self.target.name).await;
        if let Err(reason) = self.remote.pool().tools(&self.target).await {
            return Event::Unreachable { reason: reason.to_string() };
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
}
