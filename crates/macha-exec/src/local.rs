//! This host's backend: unit jobs through systemd over D-Bus (the adapter takes the permit), and
//! commands spawned directly — an absolute program and argv, no shell, a cleared environment, both
//! output streams read to a cap while the child is drained, and a deadline after which it is killed.
//! A daemon that is not root runs the clean-up actions (which need root) through their fixed root
//! units instead, started over D-Bus with the polkit allowance of the NixOS module.

use crate::outcome::{ActionOutcome, Exit, ObservedUnit};
use crate::runner::Privilege;
use crate::{JobEnd, Ran};
use macha_core::UnitName;
use macha_core::command::{Command, Tools};
use macha_core::policy::Permit;
use macha_observe::systemd::SystemdLink;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most command output kept per stream.
pub const OUTPUT_MAX: usize = 64 * 1024;

/// This host: the systemd connection (as the daemon currently has it) and the programs found here.
#[derive(Debug, Clone)]
pub struct Local {
    systemd: Arc<SystemdLink>,
    tools: Tools,
    /// The daemon runs as root (effective UID 0): clean-up commands run directly, not through
    /// their fixed units.
    root: bool,
    /// How a deployment of this host runs its privileged steps.
    privilege: Privilege,
}

impl Local {
    pub fn new(systemd: Arc<SystemdLink>, tools: Tools) -> Local {
        Local { systemd, tools, root: nix::unistd::geteuid().is_root(), privilege: Privilege::detect() }
    }

    /// The same, as if the daemon ran as root (`true`) or not (`false`), whatever it runs as.
    pub fn with_root(mut self, root: bool) -> Local {
        self.root = root;
        self
    }

    /// Whether the daemon runs as root here.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// With the privilege given instead of the detected one.
    pub fn with_privilege(mut self, privilege: Privilege) -> Local {
        self.privilege = privilege;
        self
    }

    pub(crate) fn privilege(&self) -> &Privilege {
        &self.privilege
    }

    pub(crate) fn tools(&self) -> &Tools {
        &self.tools
    }

    pub(crate) async fn unit_names(&self, unit: &UnitName) -> Result<Vec<String>, String> {
        let systemd = self.systemd.get().map_err(|r| format!("systemd is not reachable ({r})"))?;
        let names = systemd.canonical_name(unit).await.map_err(|e| e.to_string())?;
        Ok(std::iter::once(names.id).chain(names.names).collect())
    }

    pub(crate) async fn related_units(&self, unit: &UnitName, properties: &[&str]) -> Result<Vec<String>, String> {
        let systemd = self.systemd.get().map_err(|r| format!("systemd is not reachable ({r})"))?;
        systemd.related_units(unit, properties).await.map_err(|e| e.to_string())
    }

    pub(crate) async fn unit_job(&self, permit: &Permit, timeout: Duration) -> JobEnd {
        let systemd = match self.systemd.get() {
            Ok(s) => s,
            Err(r) => {
                return JobEnd::Failed(ActionOutcome::failed(format!(
                    "systemd is not reachable ({r}); nothing was sent"
                )));
            }
        };
        match systemd.execute_unit_action(permit, timeout).await {
            Ok(job) => JobEnd::Finished {
                done: job.succeeded(),
                result: job.result.as_str().to_owned(),
                what: "systemd job".to_owned(),
            },
            Err(e) => JobEnd::Failed(ActionOutcome::failed(e.to_string())),
        }
    }

    /// A permitted reboot of this host over D-Bus ([`macha_observe::systemd::Systemd::reboot`]).
    /// Succeeded once systemd queued it; verified only when the host is back with another boot id,
    /// which this daemon (going down with it) cannot see.
    pub(crate) async fn reboot(&self, permit: &Permit, timeout: Duration) -> ActionOutcome {
        let systemd = match self.systemd.get() {
            Ok(s) => s,
            Err(r) => return ActionOutcome::failed(format!("systemd is not reachable ({r}); nothing was sent")),
        };
        match systemd.reboot(permit, timeout).await {
            Ok(job) => ActionOutcome {
                succeeded: true,
                verified: false,
                detail: format!(
                    "{} started ({job}): the host is going down; the reboot is confirmed when the host is back \
                     with a new boot id",
                    macha_observe::systemd::REBOOT_TARGET
                ),
                output: None,
            },
            Err(e) => ActionOutcome::failed(format!("reboot refused: {e}; nothing was changed")),
        }
    }

    /// A permitted clean-up action through its fixed root unit
    /// ([`macha_observe::systemd::Systemd::run_cleanup_unit`]), for a daemon that is not root.
    pub(crate) async fn cleanup_unit(&self, permit: &Permit, timeout: Duration) -> ActionOutcome {
        let systemd = match self.systemd.get() {
            Ok(s) => s,
            Err(r) => return ActionOutcome::failed(format!("systemd is not reachable ({r}); nothing was run")),
        };
        match systemd.run_cleanup_unit(permit, timeout).await {
            Ok(run) => crate::outcome::cleanup_unit_outcome(&run),
            Err(e) => crate::outcome::cleanup_unit_error(permit.action(), &e),
        }
    }

    pub(crate) async fn unit_state(&self, unit: &UnitName) -> Result<ObservedUnit, String> {
        let systemd = self.systemd.get().map_err(|r| format!("systemd is not reachable ({r})"))?;
        let s = systemd.unit_state(unit).await.map_err(|e| e.to_string())?;
        Ok(ObservedUnit { active_state: s.active_state, sub_state: s.sub_state, result: s.result })
    }

    pub(crate) async fn run(&self, cmd: &Command, timeout: Duration) -> Ran {
        let mut child = match tokio::process::Command::new(cmd.program())
            .args(cmd.argv())
            .env_clear()
            .envs(macha_core::command::SPAWN_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return Ran::Failed(ActionOutcome::failed(format!("cannot start {}: {e}", cmd.program()))),
        };
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let read = async move { tokio::join!(read_capped(stdout.as_mut()), read_capped(stderr.as_mut())) };
        let waited = tokio::time::timeout(timeout, async {
            let (out, err) = read.await;
            (child.wait().await, out, err)
        })
        .await;
        let display = cmd.display();
        match waited {
            // Dropping the child (kill_on_drop) kills it.
            Err(_) => Ran::Exited {
                display,
                exit: Exit::TimedOut { secs: timeout.as_secs() },
                stdout: Vec::new(),
                stderr: Vec::new(),
            },
            Ok((Err(e), _, _)) => Ran::Failed(ActionOutcome::failed(format!("waiting for {}: {e}", cmd.program()))),
            Ok((Ok(status), stdout, stderr)) => {
                let exit = status.code().map_or(Exit::Signalled, Exit::Code);
                Ran::Exited { display, exit, stdout, stderr }
            }
        }
    }
}

/// Reads a stream to its end, keeping the first [`OUTPUT_MAX`] bytes and discarding the rest (so a
/// chatty child never blocks on a full pipe).
async fn read_capped<R: AsyncRead + Unpin>(stream: Option<&mut R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(stream) = stream else { return kept };
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = OUTPUT_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
