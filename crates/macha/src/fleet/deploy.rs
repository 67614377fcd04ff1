//! `macha deploy`, the daemon's part before a person approves: what each host runs now (read
//! there, over the pool; this host's own, `local` or its name, read here), the closure diff between that and the built system (Nix's own grouping,
//! from both closures' path-infos: the old one read on the host, the new one on the controller),
//! and an approval bound to exactly (host, running system, new system) — a `nixos_switch` a person
//! proposed, which the policy always sends to approval. Nothing changes on any host here; the
//! executor carries the approved action out (`macha_exec::deploy`).

use super::{Fleet, FleetEvent, standing, target_of};
use crate::api::reply::DeployPlan;
use crate::api::{ErrorCode, Response, ops};
use crate::engine::Engine;
use macha_core::action::{Action, Hosts, Origin, SwitchTarget};
use macha_core::command::{DeployStep, deploy_command, nix_closure_command};
use macha_core::{HostName, StorePath};
use macha_deploy::diff::{ClosureDiff, diff_closures, parse_path_infos};
use macha_ssh::{RemoteCommand, SshPool, Target};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// The most bytes of a closure's path-info JSON read (a NixOS system has a few thousand paths).
const PATH_INFO_MAX: usize = 4 * 1024 * 1024;
/// The limit of each read of a preparation.
const READ_LIMIT: Duration = Duration::from_secs(60);

/// What a host runs and the diff to the new system, or why it will not be deployed.
type HostSide = Result<(StorePath, ClosureDiff), String>;

/// A preparation, back on the loop with what the hosts said.
#[derive(Debug)]
pub struct Prepared {
    uid: u32,
    who: String,
    request: ops::PrepareDeploy,
    system: StorePath,
    hosts: Vec<(HostName, HostSide)>,
    reply: oneshot::Sender<Response>,
}

impl Fleet {
    /// Reads what each host runs and the diff, on a task; the approvals are made when it is back
    /// ([`Fleet::prepared`]).
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_deploy(
        &self,
        engine: &Engine,
        request: ops::PrepareDeploy,
        uid: u32,
        who: String,
        reply: oneshot::Sender<Response>,
        tx: &mpsc::Sender<FleetEvent>,
        tracker: &TaskTracker,
    ) {
        let system = match StorePath::parse(&request.system) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Response::err(ErrorCode::BadRequest, e.to_string()));
                return;
            }
        };
        if request.hosts.is_empty() || request.hosts.len() > 64 {
            let _ = reply.send(Response::err(ErrorCode::BadRequest, "name 1 to 64 hosts to deploy"));
            return;
        }
        let this_host = this_host_name();
        let pool = self.pool.as_ref().map(Arc::clone).map_err(|_| "SSH is not available on this host".to_owned());
        // Each host's target, or why it cannot be deployed (looked up now, on the loop). This host
        // (`local`, or its own name) is deployed here, without SSH.
        let mut targets: Vec<(HostName, Result<Side, String>)> = Vec::new();
        for raw in &request.hosts {
            if is_this_host(raw, this_host.as_deref()) {
                targets.push((HostName::local(), Ok(Side::Here)));
                continue;
            }
            let pool = match &pool {
                Ok(p) => Arc::clone(p),
                Err(e) => {
                    let _ = reply.send(Response::err(ErrorCode::Unavailable, e.clone()));
                    return;
                }
            };
            match self.lookup(engine, raw) {
                Ok(h) => {
                    let name = HostName::parse(&h.record.name).unwrap_or_else(|_| HostName::local());
                    let pinned = self.known_hosts().is_ok_and(|kh| !kh.keys_for(&name).is_empty());
                    let t = if !super::actionable(&h, pinned) {
                        Err(format!(
                            "{name} is {} without a pinned key or not trusted: actions may not run there",
                            crate::api::reply::standing_str(standing(h.record.state))
                        ))
                    } else {
                        target_of(&h, &self.settings.user)
                    };
                    targets.push((name, t.map(|t| Side::Remote(pool, t))));
                }
                Err(e) => {
                    let _ = reply.send(Response::err(ErrorCode::NotFound, format!("{e:#}")));
                    return;
                }
            }
        }
        let nix = self.nix.clone();
        let tx = tx.clone();
        tracker.spawn(async move {
            let new_closure = local_closure(nix.as_ref(), &system).await;
            let mut hosts = Vec::with_capacity(targets.len());
            for (name, target) in targets {
                let result = match (&new_closure, target) {
                    (Err(e), _) => Err(e.clone()),
                    (_, Err(e)) => Err(e),
                    (Ok(new), Ok(side)) => {
                        let read = match &side {
                            Side::Remote(pool, target) => host_side(pool, target).await,
                            Side::Here => here_side(nix.as_ref()).await,
                        };
                        read.map(|(old, old_closure)| {
                            let diff = diff_closures(&old_closure, new);
                            (old, diff)
                        })
                    }
                };
                hosts.push((name, result));
            }
            let prepared = Prepared { uid, who, request, system, hosts, reply };
            let _ = tx.send(FleetEvent::Prepared(Box::new(prepared))).await;
        });
    }

    /// The approvals (unless only the diff was asked for) and the answer.
    pub(super) fn prepared(&self, engine: &mut Engine, p: Prepared) -> anyhow::Result<()> {
        let Prepared { uid, who, request, system, hosts, reply } = p;
        let now = crate::now();
        let mut plans = Vec::with_capacity(hosts.len());
        for (host, result) in hosts {
            let mut plan = DeployPlan {
                host: host.as_str().to_owned(),
                previous: None,
                system: system.as_str().to_owned(),
                diff: None,
                changes: 0,
                notable: Vec::new(),
                approval_id: None,
                refused: None,
            };
            match result {
                Err(e) => plan.refused = Some(e),
                Ok((previous, diff)) => {
                    plan.previous = Some(previous.as_str().to_owned());
                    plan.diff = Some(diff.render_between(previous.as_str(), system.as_str()));
                    plan.changes = diff.changes.len();
                    plan.notable = diff.notable().iter().map(|n| format!("{}: {}", n.name, n.why)).collect();
                    if previous == system {
                        plan.refused = Some(format!("{host} already runs {system}"));
                    } else if !request.diff_only {
                        let reason = deploy_reason(&who, &diff, &previous, &system);
                        let action = Action::NixosSwitch {
                            host: Hosts::One(host.clone()),
                            target: Box::new(SwitchTarget {
                                system: system.clone(),
                                previous,
                                flake: request.flake.clone(),
                            }),
                            reason,
                        };
                        let correlation_id = crate::correlation_id();
                        let (result, _work) =
                            engine.propose(action, Origin::Person { uid }, None, now, &correlation_id)?;
                        plan.approval_id = result.approval_id;
                        if result.approval_id.is_none() {
                            plan.refused = Some(format!("the policy decided {}", result.decision.reason));
                        }
                    }
                }
            }
            plans.push(plan);
        }
        let _ = reply.send(Response::reply::<ops::PrepareDeploy>(&plans));
        Ok(())
    }
}

/// The approval's reason: who asked, and the diff's summary, within the 1024 bytes a reason has.
fn deploy_reason(who: &str, diff: &ClosureDiff, previous: &StorePath, system: &StorePath) -> String {
    let notable: Vec<String> = diff.notable().iter().map(|n| n.name.clone()).collect();
    let mut reason = format!(
        "deployment asked for by {who}: {} → {}; {} package change(s), {} in size",
        previous.name(),
        system.name(),
        diff.changes.len(),
        macha_deploy::diff::human_size(diff.size_delta_bytes)
    );
    if !notable.is_empty() {
        reason.push_str(&format!("; notable: {}", notable.join(", ")));
    }
    reason.chars().take(1000).collect()
}

/// Where a host's side of a preparation is read.
enum Side {
    Remote(Arc<SshPool>, Target),
    /// This host: `/run/current-system` and its closure, read here.
    Here,
}

/// This host's own name (`/proc/sys/kernel/hostname`), if it can be read.
fn this_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty())
}

/// Whether a name given to `macha deploy` means this host: `local`, or its own name (short or
/// full).
fn is_this_host(raw: &str, this_host: Option<&str>) -> bool {
    let raw = raw.trim().to_lowercase();
    raw == HostName::LOCAL || this_host.is_some_and(|h| h == raw || h.split('.').next() == Some(raw.as_str()))
}

/// What this host runs, and that system's closure (read here, with this host's `nix`).
async fn here_side(nix: Option<&PathBuf>) -> Result<(StorePath, Vec<(StorePath, u64)>), String> {
    let current = tokio::fs::canonicalize("/run/current-system")
        .await
        .map_err(|e| format!("this host: /run/current-system: {e}"))?;
    let previous = StorePath::parse(&current.display().to_string())
        .map_err(|e| format!("this host: /run/current-system is not a system: {e}"))?;
    let closure = local_closure(nix, &previous).await?;
    Ok((previous, closure))
}

/// What the host runs, and that system's closure (read-only, over the pool).
async fn host_side(pool: &SshPool, target: &Target) -> Result<(StorePath, Vec<(StorePath, u64)>), String> {
    let tools = pool.tools(target).await.map_err(|e| e.to_string())?;
    let core = tools.core_tools();
    let run = |cmd: macha_core::command::Command| async move {
        let rc = RemoteCommand::new(cmd, READ_LIMIT).output_max(PATH_INFO_MAX);
        let out = pool.run(target, &rc).await.map_err(|e| e.to_string())?;
        if out.truncated {
            return Err(format!("`{}` printed more than {PATH_INFO_MAX} bytes", rc.display()));
        }
        if !out.success() {
            return Err(format!("`{}` failed ({:?}): {}", rc.display(), out.status, out.stderr_line()));
        }
        Ok(out.stdout_text())
    };
    let current = run(deploy_command(&DeployStep::CurrentSystem, &core).map_err(|e| e.to_string())?).await?;
    let previous = StorePath::parse(current.trim())
        .map_err(|e| format!("{}: /run/current-system is not a system: {e}", target.name))?;
    // The running system is the rollback target: it must be in the host's store (asked without
    // substituters, which a missing path would send `nix path-info` to).
    run(deploy_command(&DeployStep::Valid { path: &previous }, &core).map_err(|e| e.to_string())?).await.map_err(
        |e| {
            format!(
                "{}: the running system {previous} is not a valid store path there, so there is no rollback \
                 target ({e})",
                target.name
            )
        },
    )?;
    let json = run(nix_closure_command(&core, &previous).map_err(|e| e.to_string())?).await?;
    let closure = parse_path_infos(&json).map_err(|e| format!("{}'s closure: {e}", target.name))?;
    Ok((previous, closure))
}

/// The new system's closure, read on the controller (where it was built).
async fn local_closure(nix: Option<&PathBuf>, system: &StorePath) -> Result<Vec<(StorePath, u64)>, String> {
    let nix = nix.ok_or("nix is not installed on this host (needed to read the built system)")?;
    let tools = macha_core::command::Tools::new().with("nix", &nix.display().to_string());
    let cmd = nix_closure_command(&tools, system).map_err(|e| e.to_string())?;
    let out = tokio::time::timeout(
        READ_LIMIT,
        tokio::process::Command::new(cmd.program())
            .args(cmd.argv())
            .env_clear()
            .envs(macha_core::command::SPAWN_ENV)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`{}` did not finish within {} s", cmd.display(), READ_LIMIT.as_secs()))?
    .map_err(|e| format!("cannot run {}: {e}", cmd.program()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty() && !l.contains("nixbld")).unwrap_or("");
        return Err(format!(
            "{system} is not a valid path on this host (build it first): {}",
            macha_core::journal::sanitize(last, 300)
        ));
    }
    if out.stdout.len() > PATH_INFO_MAX {
        return Err(format!("the closure of {system} is larger than {PATH_INFO_MAX} bytes of path-info"));
    }
    parse_path_infos(&String::from_utf8_lossy(&out.stdout)).map_err(|e| format!("the closure of {system}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::is_this_host;

    #[test]
    fn local_and_this_hosts_own_name_mean_this_host() {
        assert!(is_this_host("local", None));
        assert!(is_this_host("LOCAL", Some("ctl.example.org")));
        assert!(is_this_host("ctl", Some("ctl.example.org")));
        assert!(is_this_host("ctl.example.org", Some("ctl.example.org")));
        assert!(!is_this_host("web1", Some("ctl.example.org")));
        assert!(!is_this_host("ctl", None));
        assert!(!is_this_host("example", Some("ctl.example.org")));
    }
}
