//! Where a deployment's steps run: another host over the SSH pool, or this host (the controller
//! deploying itself) with processes spawned here. The protocol (`deploy.rs`) is written once over
//! this small enum; only how a command reaches the host differs.
//!
//! On this host the steps that change it run directly when the daemon is root, and through
//! `sudo -n` otherwise (never prompting: without a rule that allows them they fail, before anything
//! was activated, since the first privileged step is a GC root). Either way the permit must cover
//! the exact command first, as it must for `sudo` on another host.

use crate::Ran;
use crate::local::Local;
use crate::outcome::Exit;
use crate::remote::Remote;
use macha_core::command::{Command, Tools};
use macha_core::policy::Permit;
use macha_ssh::{RemoteCommand, Target};
use std::time::Duration;

/// How this host's daemon may run a deployment's privileged steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// The daemon runs as root: the commands run as they are.
    Root,
    /// Through `sudo -n` at this absolute path.
    Sudo(String),
    /// Neither: this host cannot be deployed by the daemon.
    Unprivileged { uid: u32 },
}

/// Where `sudo` is looked for (NixOS's wrapper first); never through `PATH`.
pub const SUDO_PATHS: [&str; 3] = ["/run/wrappers/bin/sudo", "/usr/bin/sudo", "/bin/sudo"];

impl Privilege {
    /// The privilege of a process running as `euid`, with the first of [`SUDO_PATHS`] for which
    /// `exists` holds.
    pub fn of(euid: u32, exists: impl Fn(&str) -> bool) -> Privilege {
        if euid == 0 {
            return Privilege::Root;
        }
        match SUDO_PATHS.iter().find(|p| exists(p)) {
            Some(p) => Privilege::Sudo((*p).to_owned()),
            None => Privilege::Unprivileged { uid: euid },
        }
    }

    /// This process's privilege (its effective uid is the owner of `/proc/self`).
    pub fn detect() -> Privilege {
        use std::os::unix::fs::MetadataExt;
        let euid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
        Privilege::of(euid, |p| std::path::Path::new(p).is_file())
    }

    /// The command to spawn for a privileged `cmd`, or why it cannot run.
    pub fn wrap(&self, cmd: Command) -> Result<Command, String> {
        match self {
            Privilege::Root => Ok(cmd),
            Privilege::Sudo(sudo) => Ok(Command::new(sudo)
                .map_err(|e| e.to_string())?
                .arg("-n")
                .arg("--")
                .arg(cmd.program())
                .args(cmd.argv().iter().cloned())),
            Privilege::Unprivileged { uid } => {
                Err(format!("Macha runs as uid {uid} without sudo, so it cannot change this host; nothing was run"))
            }
        }
    }
}

/// `Ok` when `permit` covers exactly `cmd` (as `sudo` on another host requires), else why not.
fn covered(permit: &Permit, cmd: &Command) -> Result<(), String> {
    if permit.authorises(cmd) {
        Ok(())
    } else {
        Err(format!(
            "the permit for {} does not cover `{}`; nothing was run",
            permit.action().describe(),
            cmd.display()
        ))
    }
}

/// The last non-empty line a local command wrote to standard error, sanitised for a message.
fn last_line(stderr: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr);
    macha_core::journal::sanitize(err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(""), 300)
}

/// The host a deployment's steps run on.
pub(crate) enum Runner<'a> {
    /// Another host, over the pool (privileged steps under `sudo -n` with the permit).
    Remote { remote: &'a Remote, target: Target },
    /// This host.
    Local { local: &'a Local },
}

/// The limit of a local read of a small file (the boot id).
const FILE_MAX: usize = 4096;

impl Runner<'_> {
    /// The programs found on the host.
    pub(crate) async fn tools(&self) -> Result<Tools, String> {
        match self {
            Runner::Remote { remote, target } => {
                Ok(remote.pool().tools(target).await.map_err(|e| e.to_string())?.core_tools())
            }
            Runner::Local { local } => Ok(local.tools().clone()),
        }
    }

    /// Runs `cmd` with a time limit; privileged (as root) when `privileged` names the permit that
    /// covers exactly this command. Its standard output, or why it did not succeed.
    pub(crate) async fn exec(
        &self,
        cmd: Command,
        limit: Duration,
        privileged: Option<&Permit>,
    ) -> Result<String, String> {
        match self {
            Runner::Remote { remote, target } => {
                let rc = RemoteCommand::new(cmd, limit);
                let rc = match privileged {
                    Some(permit) => rc.sudo(permit).map_err(|e| e.to_string())?,
                    None => rc,
                };
                let out = remote.pool().run(target, &rc).await.map_err(|e| e.to_string())?;
                if out.success() {
                    Ok(out.stdout_text())
                } else {
                    Err(format!("`{}` failed ({:?}): {}", rc.display(), out.status, out.stderr_line()))
                }
            }
            Runner::Local { local } => {
                let cmd = match privileged {
                    Some(permit) => {
                        covered(permit, &cmd)?;
                        local.privilege().wrap(cmd)?
                    }
                    None => cmd,
                };
                match local.run(&cmd, limit).await {
                    Ran::Exited { exit: Exit::Code(0), stdout, .. } => {
                        Ok(String::from_utf8_lossy(&stdout).into_owned())
                    }
                    Ran::Exited { display, exit, stderr, .. } => {
                        Err(format!("`{display}` failed ({exit:?}): {}", last_line(&stderr)))
                    }
                    Ran::Failed(o) => Err(o.detail),
                }
            }
        }
    }

    /// Whether the host would run `cmd` as root without a password, running nothing: `sudo -n -l`
    /// of the exact command (on another host under the permit, as a run would be; on this host
    /// only when Macha is not root). `Err` says why not.
    pub(crate) async fn may_elevate(&self, cmd: Command, limit: Duration, permit: &Permit) -> Result<(), String> {
        let refused = |display: &str, why: &str| {
            let why = if why.trim().is_empty() { "no rule allows it" } else { why.trim() };
            format!(
                "the host's sudo would not run `{display}` without a password ({why}); a managed NixOS host \
                 needs services.macha.managed.deploy.enable, which allows exactly a deployment's steps"
            )
        };
        match self {
            Runner::Remote { remote, target } => {
                let rc = RemoteCommand::new(cmd, limit).sudo_check(permit).map_err(|e| e.to_string())?;
                let out = remote.pool().run(target, &rc).await.map_err(|e| e.to_string())?;
                if out.success() { Ok(()) } else { Err(refused(&rc.inner().display(), &out.stderr_line())) }
            }
            Runner::Local { local } => {
                covered(permit, &cmd)?;
                let sudo = match local.privilege() {
                    Privilege::Root => return Ok(()),
                    Privilege::Unprivileged { uid } => {
                        return Err(format!(
                            "Macha runs as uid {uid} without sudo, so it cannot change this host; nothing was run"
                        ));
                    }
                    Privilege::Sudo(sudo) => sudo.clone(),
                };
                let check = Command::new(&sudo)
                    .map_err(|e| e.to_string())?
                    .args(["-n", "-l", "--"])
                    .arg(cmd.program())
                    .args(cmd.argv().iter().cloned());
                match local.run(&check, limit).await {
                    Ran::Exited { exit: Exit::Code(0), .. } => Ok(()),
                    Ran::Exited { stderr, .. } => Err(refused(&cmd.display(), &last_line(&stderr))),
                    Ran::Failed(o) => Err(o.detail),
                }
            }
        }
    }

    /// A small file of the host (read-only).
    pub(crate) async fn read_file(&self, path: &str, max: usize) -> Result<Vec<u8>, String> {
        match self {
            Runner::Remote { remote, target } => {
                remote.pool().read_file(target, path, max).await.map_err(|e| e.to_string())
            }
            Runner::Local { .. } => {
                let mut bytes = tokio::fs::read(path).await.map_err(|e| format!("{path}: {e}"))?;
                bytes.truncate(max.min(FILE_MAX));
                Ok(bytes)
            }
        }
    }

    /// Drops the connection, so the next command opens a new one (the one that activated may be the
    /// one the new configuration broke). Nothing to drop on this host.
    pub(crate) async fn fresh(&self) {
        if let Runner::Remote { remote, target } = self {
            remote.pool().disconnect(&target.name).await;
        }
    }

    /// Whether the host answers at all (a new connection), before a step that must not half-run.
    pub(crate) async fn reachable(&self) -> Result<(), String> {
        match self {
            Runner::Remote { remote, target } => remote.pool().tools(target).await.map(drop).map_err(|e| e.to_string()),
            Runner::Local { .. } => Ok(()),
        }
    }

    /// The address ports are checked at (as a client would reach them).
    pub(crate) fn address(&self) -> &str {
        match self {
            Runner::Remote { target, .. } => &target.address,
            Runner::Local { .. } => "127.0.0.1",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cmd() -> Command {
        Command::new("/usr/bin/systemctl").unwrap().args(["stop", "--", "macha-deploy-abc-deadman.timer"])
    }

    #[test]
    fn root_runs_directly_and_others_through_sudo_found_at_a_fixed_path() {
        assert_eq!(Privilege::of(0, |_| false), Privilege::Root);
        assert_eq!(Privilege::of(0, |_| true), Privilege::Root, "root never goes through sudo");
        assert_eq!(
            Privilege::of(990, |p| p == "/usr/bin/sudo"),
            Privilege::Sudo("/usr/bin/sudo".into()),
            "the first existing candidate"
        );
        assert_eq!(Privilege::of(990, |_| true), Privilege::Sudo("/run/wrappers/bin/sudo".into()));
        assert_eq!(Privilege::of(990, |_| false), Privilege::Unprivileged { uid: 990 });
    }

    #[test]
    fn the_argv_is_the_command_behind_sudo_n() {
        let wrapped = Privilege::Sudo("/run/wrappers/bin/sudo".into()).wrap(cmd()).unwrap();
        assert_eq!(wrapped.program(), "/run/wrappers/bin/sudo");
        assert_eq!(
            wrapped.argv(),
            ["-n", "--", "/usr/bin/systemctl", "stop", "--", "macha-deploy-abc-deadman.timer"].map(String::from)
        );
        assert_eq!(Privilege::Root.wrap(cmd()).unwrap(), cmd());
        let refused = Privilege::Unprivileged { uid: 990 }.wrap(cmd()).unwrap_err();
        assert!(refused.contains("uid 990 without sudo") && refused.contains("nothing was run"), "{refused}");
    }
}
