//! The one executor: carries out what the policy permitted, with deadlines, then verifies the
//! outcome by observing again, and reports the truth.
//!
//! It accepts only a [`Permit`] (which only `policy::decide` can construct). Unit actions go to
//! systemd over D-Bus; everything else is a [`macha_core::command::Command`] — an absolute program
//! and an argv vector, spawned directly, never through a shell, with a cleared environment.

use crate::engine::ActionOutcome;
use crate::observe::SystemdLink;
use macha_core::Action;
use macha_core::command::{self, Tools};
use macha_core::policy::{Permit, ProtectedUnits};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The most command output kept per stream.
pub const OUTPUT_MAX: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Executor {
    systemd: Arc<SystemdLink>,
    tools: Tools,
    protected: ProtectedUnits,
    timeout: Duration,
    verify_delay: Duration,
    /// Actions on other hosts (SSH); `None` when SSH is not available.
    remote: Option<crate::fleet::Remote>,
}

fn fail(detail: impl Into<String>) -> ActionOutcome {
    ActionOutcome { succeeded: false, verified: false, detail: detail.into(), output: None }
}

impl Executor {
    pub fn new(
        systemd: Arc<SystemdLink>,
        tools: Tools,
        protected: ProtectedUnits,
        timeout: Duration,
        verify_delay: Duration,
    ) -> Executor {
        Executor { systemd, tools, protected, timeout, verify_delay, remote: None }
    }

    /// With actions on other hosts carried out over SSH by `remote`.
    pub fn with_remote(mut self, remote: Option<crate::fleet::Remote>) -> Executor {
        self.remote = remote;
        self
    }

    /// Executes `permit` and reports what happened. Never panics, never returns early without an
    /// outcome: an error is an outcome with `succeeded = false`. An action on other hosts goes to
    /// the remote executor (SSH), with the same permit.
    pub async fn execute(&self, permit: &Permit) -> ActionOutcome {
        if permit.action().hosts().as_slice().iter().any(|h| !h.is_local()) {
            return match &self.remote {
                Some(remote) => remote.execute(permit, self).await,
                None => fail("remote execution is not available (SSH is not set up on this host); nothing was sent"),
            };
        }
        self.execute_local(permit).await
    }

    /// The part of `permit` that runs on this host.
    pub(crate) async fn execute_local(&self, permit: &Permit) -> ActionOutcome {
        let action = permit.action();
        match action {
            Action::RestartUnit { unit, .. }
            | Action::StartUnit { unit, .. }
            | Action::StopUnit { unit, .. }
            | Action::ResetFailed { unit, .. } => self.unit_action(permit, unit).await,
            Action::ConfigChange { path, .. } => ActionOutcome {
                succeeded: true,
                verified: false,
                detail: format!(
                    "approved patch for {path} recorded; Macha never edits configuration files, apply it by hand"
                ),
                output: None,
            },
            Action::NixosSwitch { .. } => fail("NixOS deployment is not available in this version; nothing was run"),
            other => match command::command_for(other, &self.tools) {
                Ok(cmd) => self.run_command(&cmd).await,
                Err(e) => fail(e.to_string()),
            },
        }
    }

    async fn unit_action(&self, permit: &Permit, unit: &macha_core::UnitName) -> ActionOutcome {
        let systemd = match self.systemd.get() {
            Ok(s) => s,
            Err(reason) => return fail(format!("systemd is not reachable ({reason}); nothing was sent")),
        };
        // Defence in depth: the policy matched the name as given; systemd may know the unit under
        // another name (an alias). Refuse if any of its names is protected.
        match systemd.canonical_name(unit).await {
            Ok(names) => {
                for n in std::iter::once(&names.id).chain(names.names.iter()) {
                    if let Ok(u) = macha_core::UnitName::parse(n)
                        && let Some(p) = self.protected.protecting(&u)
                    {
                        return fail(format!(
                            "{unit} is also known as {n}, which is protected ({p}); nothing was sent"
                        ));
                    }
                }
            }
            Err(e) => return fail(format!("cannot resolve {unit}: {e}")),
        }
        let job = match systemd.execute_unit_action(permit, self.timeout).await {
            Ok(job) => job,
            Err(e) => return fail(format!("{e}")),
        };
        let job_result = job.result.as_str().to_owned();
        if !job.succeeded() {
            return ActionOutcome {
                succeeded: false,
                verified: false,
                detail: format!("systemd job ended with result {job_result:?}"),
                output: Some(job_result),
            };
        }
        // Verify: observe the unit again after a short delay.
        tokio::time::sleep(self.verify_delay).await;
        let state = match systemd.unit_state(unit).await {
            Ok(s) => s,
            Err(e) => {
                return ActionOutcome {
                    succeeded: true,
                    verified: false,
                    detail: format!("job done, but the unit could not be observed afterwards: {e}"),
                    output: None,
                };
            }
        };
        let want: &[&str] = match permit.action() {
            Action::StopUnit { .. } => &["inactive"],
            Action::ResetFailed { .. } => &["inactive", "active", "activating", "deactivating", "reloading"],
            _ => &["active", "reloading"],
        };
        let ok = want.contains(&state.active_state.as_str());
        ActionOutcome {
            succeeded: true,
            verified: ok,
            detail: format!(
                "job done; {} after {} ms: {}/{}{}",
                unit,
                self.verify_delay.as_millis(),
                state.active_state,
                state.sub_state,
                state.result.as_ref().map(|r| format!(" (result {r})")).unwrap_or_default()
            ),
            output: None,
        }
    }

    async fn run_command(&self, cmd: &command::Command) -> ActionOutcome {
        let mut child = match tokio::process::Command::new(cmd.program())
            .args(cmd.argv())
            .env_clear()
            .env("PATH", "/run/current-system/sw/bin:/usr/bin:/bin")
            .env("LC_ALL", "C")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot start {}: {e}", cmd.program())),
        };
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let read = async move { tokio::join!(read_capped(stdout.as_mut()), read_capped(stderr.as_mut())) };
        let waited = tokio::time::timeout(self.timeout, async {
            let (out, err) = read.await;
            (child.wait().await, out, err)
        })
        .await;
        match waited {
            Err(_) => {
                fail(format!("{} did not finish within {} s and was killed", cmd.display(), self.timeout.as_secs()))
            }
            Ok((Err(e), _, _)) => fail(format!("waiting for {}: {e}", cmd.program())),
            Ok((Ok(status), out, err)) => {
                let mut text = String::from_utf8_lossy(&out).into_owned();
                if !err.is_empty() {
                    text.push_str("\n[stderr]\n");
                    text.push_str(&String::from_utf8_lossy(&err));
                }
                ActionOutcome {
                    succeeded: status.success(),
                    verified: status.success(),
                    detail: format!("{} exited with {status}", cmd.display()),
                    output: Some(text),
                }
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
