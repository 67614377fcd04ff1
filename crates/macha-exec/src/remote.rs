//! Other hosts' backend: the same jobs over the one SSH module (`macha-ssh`). A unit job is
//! `systemctl --no-ask-password VERB -- UNIT` (allowed through polkit where the host grants it) and,
//! only when that is refused for lack of privileges (so nothing ran), `sudo -n systemctl …`; the
//! unit's names and state come from `systemctl show`. Commands that change the host run under
//! `sudo -n`, which takes the permit that covers exactly that command; diagnostics, which only read,
//! do not. Only hosts the registry lists as reachable
//! (trusted, with a pinned key) are contacted.

use crate::outcome::{ActionOutcome, Exit, ObservedUnit};
use crate::{JobEnd, Ran, UnitVerb};
use macha_core::command::Command;
use macha_core::policy::Permit;
use macha_core::{HostName, UnitName};
use macha_ssh::{RemoteCommand, RemoteOutput, RemoteTools, SshError, SshPool, Target};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The hosts Macha may act on, as the fleet's registry says (the fleet replaces the map whenever
/// the registry changes), and the SSH pool to reach them.
#[derive(Debug, Clone)]
pub struct Remote {
    pool: Arc<SshPool>,
    targets: Arc<RwLock<BTreeMap<HostName, Target>>>,
    /// The longest a remote command may run (`ssh.command_timeout`), whatever the executor allows.
    command_max: Duration,
    /// Hosts a deployment runs on now: one at a time per host.
    deploying: Arc<std::sync::Mutex<std::collections::BTreeSet<HostName>>>,
}

/// A running deployment of one host (see [`Remote::start_deploying`]).
pub(crate) struct DeployingGuard {
    set: Arc<std::sync::Mutex<std::collections::BTreeSet<HostName>>>,
    host: HostName,
}

impl Drop for DeployingGuard {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.host);
    }
}

/// One host's part of an action: its target and the programs found there.
pub(crate) struct Session<'a> {
    pool: &'a SshPool,
    command_max: Duration,
    target: Target,
    tools: RemoteTools,
}

/// Whether `systemctl` refused for lack of privileges (and so did nothing).
fn refused(stderr: &str) -> bool {
    ["Access denied", "Interactive authentication required", "Permission denied", "not authorized"]
        .iter()
        .any(|m| stderr.contains(m))
}

/// `Key=value` lines → map.
pub fn properties(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.trim().to_owned())).collect()
}

/// How a remote command ended: the remote `timeout -k` kills with 124 (or 137 after the grace);
/// no status at all means a signal ended it.
fn exit_of(out: &RemoteOutput, timeout: Duration) -> Exit {
    match out.status {
        Some(c) if macha_ssh::remote::is_timeout_status(Some(c)) => Exit::TimedOut { secs: timeout.as_secs() },
        Some(c) => Exit::Code(c),
        None => Exit::Signalled,
    }
}

impl Remote {
    pub fn new(pool: Arc<SshPool>, targets: Arc<RwLock<BTreeMap<HostName, Target>>>, command_max: Duration) -> Remote {
        Remote { pool, targets, command_max, deploying: Arc::default() }
    }

    /// The registered target of `host`, if Macha may contact it.
    pub(crate) fn target(&self, host: &HostName) -> Option<Target> {
        self.targets.read().ok().and_then(|t| t.get(host).cloned())
    }

    pub(crate) fn pool(&self) -> &SshPool {
        &self.pool
    }

    /// Marks a deployment of `host` as running; `None` if one already is (the guard unmarks it).
    pub(crate) fn start_deploying(&self, host: &HostName) -> Option<DeployingGuard> {
        let mut set = self.deploying.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(host.clone()).then(|| DeployingGuard { set: Arc::clone(&self.deploying), host: host.clone() })
    }

    /// Opens `host`'s part of an action, or says why nothing can be sent there.
    pub(crate) async fn session(&self, host: &HostName) -> Result<Session<'_>, ActionOutcome> {
        let target = self.targets.read().ok().and_then(|t| t.get(host).cloned());
        let Some(target) = target else {
            return Err(ActionOutcome::failed(format!(
                "{host} is not a registered host Macha may contact; nothing was sent"
            )));
        };
        match self.pool.tools(&target).await {
            Ok(tools) => Ok(Session { pool: &self.pool, command_max: self.command_max, target, tools }),
            Err(e) => Err(ActionOutcome::failed(format!("{e}; nothing was sent"))),
        }
    }
}

impl Session<'_> {
    pub(crate) fn host(&self) -> &HostName {
        &self.target.name
    }

    pub(crate) fn tools(&self) -> &RemoteTools {
        &self.tools
    }

    async fn show(&self, unit: &UnitName, props: &str, timeout: Duration) -> Result<BTreeMap<String, String>, String> {
        let cmd = self.tools.command("systemctl").map_err(|e| e.to_string())?.args([
            "show",
            "--no-pager",
            "-p",
            props,
            "--",
            unit.as_str(),
        ]);
        let out = self.pool.run(&self.target, &RemoteCommand::new(cmd, timeout)).await.map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!("systemctl show exited with {:?}: {}", out.status, out.stderr_line()));
        }
        Ok(properties(&out.stdout_text()))
    }

    pub(crate) async fn related_units(&self, unit: &UnitName, properties: &[&str]) -> Result<Vec<String>, String> {
        let shown = self.show(unit, &properties.join(","), SHOW_TIMEOUT.min(self.command_max)).await?;
        Ok(properties
            .iter()
            .filter_map(|p| shown.get(*p))
            .flat_map(|s| s.split_whitespace())
            .map(str::to_owned)
            .collect())
    }

    pub(crate) async fn unit_names(&self, unit: &UnitName) -> Result<Vec<String>, String> {
        let names = self.show(unit, "Id,Names", SHOW_TIMEOUT.min(self.command_max)).await?;
        Ok(names
            .get("Id")
            .into_iter()
            .chain(names.get("Names"))
            .flat_map(|s| s.split_whitespace())
            .map(str::to_owned)
            .collect())
    }

    pub(crate) async fn unit_state(&self, unit: &UnitName) -> Result<ObservedUnit, String> {
        let state = self.show(unit, "ActiveState,SubState,Result", SHOW_TIMEOUT.min(self.command_max)).await?;
        let get = |k: &str| state.get(k).cloned().unwrap_or_default();
        Ok(ObservedUnit {
            active_state: get("ActiveState"),
            sub_state: get("SubState"),
            result: state.get("Result").cloned(),
        })
    }

    pub(crate) async fn unit_job(&self, permit: &Permit, verb: UnitVerb, unit: &UnitName, timeout: Duration) -> JobEnd {
        let timeout = timeout.min(self.command_max);
        let host = self.host();
        let verb = verb.systemctl();
        // Least privilege first: on a host that grants the login user unit control through polkit
        // (NixOS, `services.macha.managed`), plain `systemctl` does it. Where that is refused
        // (nothing ran), `sudo -n systemctl` (a NOPASSWD rule) does.
        let cmd = match self.tools.command("systemctl") {
            Ok(c) => c.args(["--no-ask-password", verb, "--", unit.as_str()]),
            Err(e) => return JobEnd::Failed(ActionOutcome::failed(format!("{e}; nothing was sent"))),
        };
        let plain = RemoteCommand::new(cmd, timeout);
        let (rc, out) = match self.pool.run(&self.target, &plain).await {
            Ok(o) if !o.success() && refused(&o.stderr_line()) => {
                let rc = match plain.sudo(permit) {
                    Ok(rc) => rc,
                    Err(e) => return JobEnd::Failed(ActionOutcome::failed(e.to_string())),
                };
                match self.pool.run(&self.target, &rc).await {
                    Ok(o) => (rc, o),
                    Err(e) => return JobEnd::Failed(ActionOutcome::failed(e.to_string())),
                }
            }
            Ok(o) => (plain, o),
            Err(e) => return JobEnd::Failed(ActionOutcome::failed(e.to_string())),
        };
        if !out.success() {
            let err = out.stderr_line();
            let hint = if err.contains("a password is required") || err.contains("a terminal is required") {
                " (the login user needs unit control through polkit, or a NOPASSWD sudo rule for systemctl; see docs/fleet.md)"
            } else {
                ""
            };
            let how = match exit_of(&out, timeout) {
                Exit::TimedOut { secs } => format!("did not finish within {secs} s and was killed"),
                Exit::Code(c) => format!("exited with status {c}"),
                Exit::Signalled => "was killed by a signal".to_owned(),
            };
            return JobEnd::Failed(ActionOutcome {
                succeeded: false,
                verified: false,
                detail: format!("{} on {host} {how}: {err}{hint}", rc.display()),
                output: Some(err),
            });
        }
        JobEnd::Finished { done: true, result: "done".to_owned(), what: format!("systemctl {verb} on {host}") }
    }

    pub(crate) async fn run(&self, cmd: Command, privileged: Option<&Permit>, timeout: Duration) -> Ran {
        let timeout = timeout.min(self.command_max);
        let rc = RemoteCommand::new(cmd, timeout);
        let rc = match privileged {
            Some(permit) => match rc.sudo(permit) {
                Ok(rc) => rc,
                Err(e) => return Ran::Failed(ActionOutcome::failed(e.to_string())),
            },
            None => rc,
        };
        match self.pool.run(&self.target, &rc).await {
            Err(SshError::CommandTimeout { .. }) => Ran::Exited {
                display: rc.display(),
                exit: Exit::TimedOut { secs: timeout.as_secs() },
                stdout: Vec::new(),
                stderr: Vec::new(),
            },
            Err(e) => Ran::Failed(ActionOutcome::failed(e.to_string())),
            Ok(out) => Ran::Exited {
                display: rc.display(),
                exit: exit_of(&out, timeout),
                stdout: out.stdout,
                stderr: out.stderr,
            },
        }
    }
}

/// The deadline of the `systemctl show` reads around a job.
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_and_refusals() {
        let p = properties("Id=a.service\nNames=a.service b.service\nbroken line\n");
        assert_eq!(p.get("Names").map(String::as_str), Some("a.service b.service"));
        assert_eq!(p.len(), 2);
        assert!(refused("Failed to restart x: Interactive authentication required."));
        assert!(!refused("Job for x failed because the control process exited with error code."));
    }
}
