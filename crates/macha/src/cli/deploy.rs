//! `macha deploy HOST…`: a built NixOS system to other hosts. The daemon prepares (what each host
//! runs, the closure diff, an approval bound to the pair); with `--approve` the person running the
//! command approves each host in the order of the fleet plan (a canary alone first, then up to
//! `--parallel` at a time, stopping at the first failure with `--stop-on-failure`), and the command
//! waits for each host's final state. The exit code is the worst host's (docs/deploy.md). With
//! `--flake` the build side comes first (`deploy_build`): the lock update of `--update-input`, the
//! pre-deploy checks and each host's build, each timed.

use super::commands::load_config;
use super::deploy_build::{self, BuildReport, CheckReport, LockChange};
use super::{ClientOpts, CmdResult, EXIT_USAGE, fail};
use crate::api::reply::DeployPlan;
use crate::api::{Client, ops};
use crate::config::Scope;
use clap::Args;
use macha_core::HostName;
use macha_core::approval::ApprovalState;
use macha_deploy::Final;
use macha_deploy::fleet::{FleetPlan, Scheduler};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub cmd: Option<DeployCmd>,
    #[command(flatten)]
    pub client: ClientOpts,
    /// The hosts to deploy (registered, trusted, with a pinned key).
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The built system to deploy (`/nix/store/…-nixos-system-…`), for every host.
    #[arg(long, value_name = "PATH", conflicts_with = "flake", required_unless_present = "flake")]
    pub system: Option<String>,
    /// Build each host's system from this flake first
    /// (`REF#nixosConfigurations.HOST.config.system.build.toplevel`, with the controller's `nix`,
    /// or `nh os build` with `deploy.engine = "nh"`), after the pre-deploy checks (`deploy.checks`).
    #[arg(long, value_name = "REF")]
    pub flake: Option<String>,
    /// Build with this flake input updated (shown as a lock diff first; the flake's lock file is
    /// not written). Needs --flake.
    #[arg(long, value_name = "INPUT", requires = "flake")]
    pub update_input: Option<String>,
    /// Only show what would change; nothing is approved or run.
    #[arg(long)]
    pub diff_only: bool,
    /// Approve now, as the person running this command, and wait for each host's result.
    #[arg(long, conflicts_with = "diff_only")]
    pub approve: bool,
    /// Hosts deployed at once (1-64).
    #[arg(long, default_value_t = 10)]
    pub parallel: usize,
    /// Deploy this host alone first; the rest only if it succeeded.
    #[arg(long, value_name = "HOST")]
    pub canary: Option<String>,
    /// Start no other host after one did not succeed.
    #[arg(long)]
    pub stop_on_failure: bool,
    /// How long to wait for all hosts' results.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// The deployments Macha has prepared or carried out (they are its `nixos_switch` approvals).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeployCmd {
    /// Every deployment: host, from → to, its approval's state and the final state.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// One deployment in full: the change, the final state, each phase's time, the trail.
    Show {
        /// The deployment's approval id.
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub fn run(args: &DeployArgs) -> CmdResult {
    match &args.cmd {
        Some(DeployCmd::List { client }) => return list(client),
        Some(DeployCmd::Show { id, client }) => return show(client, *id),
        None => {}
    }
    let config = load_config(args.client.config.as_deref(), Scope::User)?;
    let socket = args.client.socket.clone().unwrap_or_else(|| config.socket.clone());
    let mut client = Client::connect(&socket, Duration::from_secs(600))?;
    // With a flake: the lock update, the checks and the builds, on this machine, before the daemon
    // prepares anything (and so before any approval is asked for). `links` holds nh's out-links
    // while the command runs (the built systems stay GC roots meanwhile).
    let mut links: Option<tempfile::TempDir> = None;
    let mut side = FlakeSide::default();
    let mut systems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match (&args.system, &args.flake) {
        (Some(s), _) => {
            systems.insert(s.clone(), args.hosts.clone());
        }
        (None, Some(flake)) => {
            if !macha_core::command::valid_flake_ref(flake) {
                return Err(fail(
                    EXIT_USAGE,
                    anyhow::format_err!(
                        "--flake {flake:?} is not a plain flake reference (no #attribute: Macha adds it)"
                    ),
                ));
            }
            let builder = deploy_build::Builder::new(&config)?;
            if let Some(v) = &builder.nh_version {
                eprintln!("building with {v} (deploy.engine = \"nh\"; nh only builds)");
            }
            let started = Instant::now();
            if let Some(input) = &args.update_input {
                let change = deploy_build::update_input(&builder, flake, input)?;
                if !args.client.json {
                    println!("{}", change.render());
                }
                side.lock = Some(change);
            }
            let pin = side.lock.as_ref().map(LockChange::pin);
            let dir = tempfile::Builder::new()
                .prefix("macha-deploy-")
                .tempdir()
                .map_err(|e| fail(super::EXIT_SOFTWARE, anyhow::format_err!("a temporary directory: {e}")))?;
            let dir = links.insert(dir).path().to_owned();
            side.checks = deploy_build::run_checks(&builder, &config.deploy.checks, flake, pin.as_ref())?;
            for host in &args.hosts {
                let built = deploy_build::build_system(&builder, flake, host, pin.as_ref(), &dir)?;
                systems.entry(built.system.clone()).or_default().push(host.clone());
                side.builds.insert(host.to_ascii_lowercase(), built);
            }
            side.seconds = Some(started.elapsed().as_secs_f64());
            if !args.client.json {
                side.print();
            }
        }
        (None, None) => return Err(fail(EXIT_USAGE, anyhow::format_err!("give --system PATH or --flake REF"))),
    }
    let mut plans: Vec<DeployPlan> = Vec::new();
    for (system, hosts) in systems {
        let req = ops::PrepareDeploy { hosts, system, flake: args.flake.clone(), diff_only: args.diff_only };
        plans.extend(client.call(req)?);
    }
    let plans = super::term::scrub(plans)?;
    if !args.approve {
        if args.client.json {
            let out: Vec<PlanOut> = plans.iter().map(|p| PlanOut { plan: p, side: side.of(&p.host) }).collect();
            super::render::print_json(&out)?;
        } else {
            print_plans(&plans);
            let ids: Vec<String> = plans.iter().filter_map(|p| p.approval_id).map(|i| i.to_string()).collect();
            if !ids.is_empty() {
                println!("\napprove with: macha-approve approve {}   (or run again with --approve)", ids.join(" "));
            }
        }
        let refused = plans.iter().filter(|p| p.refused.is_some()).count();
        return Ok(if refused > 0 { Final::Refused { reason: String::new() }.exit_code() } else { 0 });
    }
    if !args.client.json {
        print_plans(&plans);
    }
    let results = approve_and_wait(&mut client, args, &plans)?;
    drop(links);
    if args.client.json {
        let out: Vec<ResultOut> = results.iter().map(|r| ResultOut { result: r, side: side.of(&r.host) }).collect();
        super::render::print_json(&out)?;
    } else {
        println!();
        println!("{:<28} {:<16} result", "host", "final");
        for r in &results {
            println!("{:<28} {:<16} {}", r.host, r.final_state.as_str(), super::term::clean(&r.detail));
        }
    }
    Ok(results.iter().map(|r| r.final_state.exit_code()).max().unwrap_or(0))
}

/// The build side of a `--flake` deployment: the lock change, the checks, each host's build and
/// the whole phase's time.
#[derive(Debug, Default)]
struct FlakeSide {
    lock: Option<LockChange>,
    checks: Vec<CheckReport>,
    builds: BTreeMap<String, BuildReport>,
    seconds: Option<f64>,
}

/// What the JSON output adds to each host's entry (nothing without `--flake`).
#[derive(Debug, Clone, serde::Serialize)]
struct SideOf<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    lock: Option<&'a LockChange>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    checks: &'a [CheckReport],
    #[serde(skip_serializing_if = "Option::is_none")]
    build: Option<&'a BuildReport>,
    /// The whole build phase (lock update, checks, every host's build), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    build_phase_seconds: Option<f64>,
}

impl FlakeSide {
    fn of(&self, host: &str) -> SideOf<'_> {
        SideOf {
            lock: self.lock.as_ref(),
            checks: &self.checks,
            build: self.builds.get(&host.to_ascii_lowercase()),
            build_phase_seconds: self.seconds,
        }
    }

    fn print(&self) {
        for c in &self.checks {
            println!("check  {:<40} passed  {:>7.1} s", c.name, c.seconds);
        }
        for (host, b) in &self.builds {
            println!("build  {:<40} {:<6}  {:>7.1} s", host, b.engine, b.seconds);
        }
        if let Some(s) = self.seconds {
            println!("build phase (lock, checks, builds): {s:.1} s");
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct PlanOut<'a> {
    #[serde(flatten)]
    plan: &'a DeployPlan,
    #[serde(flatten)]
    side: SideOf<'a>,
}

#[derive(Debug, serde::Serialize)]
struct ResultOut<'a> {
    #[serde(flatten)]
    result: &'a HostResult,
    #[serde(flatten)]
    side: SideOf<'a>,
}

/// One host's result.
#[derive(Debug, Clone, serde::Serialize)]
struct HostResult {
    host: String,
    approval_id: Option<i64>,
    final_state: Final,
    exit_code: u8,
    detail: String,
}

fn print_plans(plans: &[DeployPlan]) {
    for p in plans {
        println!("== {}", p.host);
        match (&p.refused, &p.previous) {
            (Some(why), _) => println!("  not deployed: {why}"),
            (None, Some(prev)) => println!("  {prev}\n→ {}", p.system),
            (None, None) => {}
        }
        if let Some(diff) = &p.diff {
            for line in diff.lines() {
                println!("  {line}");
            }
        }
        if let Some(id) = p.approval_id {
            println!("  approval {id} (bound to this host, its running system and the new one)");
        }
    }
}

/// Approves the hosts in the fleet plan's order and waits for each final state.
fn approve_and_wait(
    client: &mut Client,
    args: &DeployArgs,
    plans: &[DeployPlan],
) -> Result<Vec<HostResult>, super::Failure> {
    let mut results: Vec<HostResult> = plans
        .iter()
        .filter_map(|p| {
            p.refused.as_ref().map(|why| HostResult {
                host: p.host.clone(),
                approval_id: None,
                final_state: Final::Refused { reason: why.clone() },
                exit_code: 3,
                detail: why.clone(),
            })
        })
        .collect();
    let ready: BTreeMap<HostName, i64> =
        plans.iter().filter_map(|p| Some((HostName::parse(&p.host).ok()?, p.approval_id?))).collect();
    if ready.is_empty() {
        return Ok(results);
    }
    let canary = match &args.canary {
        Some(c) => Some(HostName::parse(c).map_err(|e| fail(EXIT_USAGE, anyhow::format_err!("--canary {c}: {e}")))?),
        None => None,
    };
    let plan = FleetPlan {
        hosts: ready.keys().cloned().collect(),
        parallel: args.parallel,
        canary,
        stop_on_failure: args.stop_on_failure,
    };
    let mut scheduler = Scheduler::new(plan).map_err(|e| fail(EXIT_USAGE, anyhow::format_err!("{e}")))?;
    let mut finals: BTreeMap<HostName, Final> = BTreeMap::new();
    let mut running: BTreeMap<HostName, i64> = BTreeMap::new();
    let deadline = Instant::now() + args.wait;
    let mut shown: BTreeMap<HostName, String> = BTreeMap::new();
    loop {
        for host in scheduler.next(&finals) {
            let Some(&id) = ready.get(&host) else { continue };
            let r = client.call(ops::Approve { id, note: Some("approved with macha deploy --approve".into()) })?;
            if r.action_id.is_some() {
                eprintln!("{host}: approval {id} approved; deploying");
                running.insert(host, id);
            } else {
                let why = format!("the policy decided {} at approval", r.decision.reason);
                eprintln!("{host}: {why}");
                finals.insert(host.clone(), Final::Refused { reason: why.clone() });
                results.push(HostResult {
                    host: host.to_string(),
                    approval_id: Some(id),
                    final_state: Final::Refused { reason: why.clone() },
                    exit_code: 3,
                    detail: why,
                });
            }
        }
        // Live progress: each host's phase and step as they change (stderr; `--json` stays the
        // final states only). A daemon that cannot say is not an error: the final state will.
        if !running.is_empty()
            && let Ok(now) = client.call(ops::DeployProgress)
        {
            for p in now {
                let Ok(host) = HostName::parse(&p.host) else { continue };
                if !running.contains_key(&host) {
                    continue;
                }
                let line = if p.step == p.phase { p.phase.clone() } else { format!("{} ({})", p.phase, p.step) };
                if shown.get(&host) != Some(&line) {
                    let into = p.step_started.0.saturating_sub(p.started.0);
                    eprintln!("{host}: {line}, {:.1} s in", into as f64 / 1000.0);
                    shown.insert(host, line);
                }
            }
        }
        let mut done = Vec::new();
        for (host, id) in &running {
            let shown = client.call(ops::ShowApproval { id: *id })?;
            let a = shown.approval;
            if matches!(
                a.state,
                ApprovalState::Executed | ApprovalState::Failed | ApprovalState::Expired | ApprovalState::Rejected
            ) {
                let detail = a.result.clone().unwrap_or_else(|| format!("approval {} {}", a.id, a.state.as_str()));
                let final_state = final_of(&detail, a.state);
                eprintln!("{host}: {}", final_state.as_str());
                done.push(host.clone());
                finals.insert(host.clone(), final_state.clone());
                results.push(HostResult {
                    host: host.to_string(),
                    approval_id: Some(*id),
                    exit_code: final_state.exit_code(),
                    final_state,
                    detail,
                });
            }
        }
        for h in done {
            running.remove(&h);
        }
        if running.is_empty() && scheduler.is_finished(&finals) {
            break;
        }
        if Instant::now() > deadline {
            for (host, id) in &running {
                let detail = format!(
                    "still deploying after {}; see macha-approve show {id}",
                    humantime::format_duration(args.wait)
                );
                results.push(HostResult {
                    host: host.to_string(),
                    approval_id: Some(*id),
                    final_state: Final::Unknown,
                    exit_code: 5,
                    detail,
                });
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (host, final_state) in scheduler.not_started() {
        let detail = final_state.to_string();
        results.push(HostResult {
            host: host.to_string(),
            approval_id: ready.get(&host).copied(),
            exit_code: final_state.exit_code(),
            final_state,
            detail,
        });
    }
    Ok(results)
}

/// How a deployment's final state was reached: by the deployment itself, or by a reconciliation
/// from the host later (its result then says `reconciled at …`).
fn how_reached(result: &str) -> String {
    match result.split_once("(reconciled at ") {
        Some((_, rest)) => {
            let at = rest.split(" from the host").next().unwrap_or_default();
            format!("reconciled at {at} from the host, after the deployment was left unknown (see the trail)")
        }
        None => "by the deployment itself".to_owned(),
    }
}

/// The final state the executor reported (`deployment ID on HOST: FINAL …`).
fn final_of(detail: &str, state: ApprovalState) -> Final {
    let after = detail.split_once(": ").map(|(_, r)| r).unwrap_or_default();
    for f in [Final::Succeeded, Final::RollbackFailed, Final::RolledBack, Final::Unknown] {
        if after.starts_with(f.as_str()) {
            return f;
        }
    }
    if after.starts_with("refused") {
        return Final::Refused { reason: after.trim_start_matches("refused: ").to_owned() };
    }
    match state {
        // Failed before the deployment started (refused at execution, unreachable, …).
        ApprovalState::Failed | ApprovalState::Expired | ApprovalState::Rejected => {
            Final::Refused { reason: detail.to_owned() }
        }
        _ => Final::Unknown,
    }
}

fn connect(opts: &ClientOpts) -> Result<Client, super::Failure> {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    let socket = opts.socket.clone().unwrap_or_else(|| config.socket.clone());
    Ok(Client::connect(&socket, Duration::from_secs(60))?)
}

/// A deployment as listed: its approval and the action it holds.
#[derive(Debug, Clone, serde::Serialize)]
struct Listed {
    id: i64,
    host: String,
    previous: String,
    system: String,
    state: ApprovalState,
    final_state: Option<Final>,
    result: Option<String>,
    requested_by: String,
    requested_at: String,
}

fn listed(a: &crate::api::reply::ApprovalView) -> Option<Listed> {
    let action: macha_core::Action = serde_json::from_value(a.action.clone()).ok()?;
    let macha_core::Action::NixosSwitch { target, .. } = action else { return None };
    let done = matches!(a.state, ApprovalState::Executed | ApprovalState::Failed);
    Some(Listed {
        id: a.id,
        host: a.host.clone(),
        previous: target.previous.as_str().to_owned(),
        system: target.system.as_str().to_owned(),
        state: a.state,
        final_state: a.result.as_deref().filter(|_| done).map(|r| final_of(r, a.state)),
        result: a.result.clone(),
        requested_by: a.requested_by.clone(),
        requested_at: a.requested_at.to_string(),
    })
}

fn list(opts: &ClientOpts) -> CmdResult {
    let mut client = connect(opts)?;
    let all = client.call(ops::ListApprovals { states: ApprovalState::ALL.to_vec(), limit: Some(500) })?;
    let rows: Vec<Listed> = super::term::scrub(all)?.iter().filter_map(listed).collect();
    if opts.json {
        super::render::print_json(&rows)?;
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no deployments yet (macha deploy HOST --system PATH prepares one)");
        return Ok(0);
    }
    println!("{:<6} {:<20} {:<10} {:<16} change", "id", "host", "approval", "final");
    for r in &rows {
        let name = |p: &str| macha_core::StorePath::parse(p).map(|s| s.name().to_owned()).unwrap_or_default();
        println!(
            "{:<6} {:<20} {:<10} {:<16} {} → {}",
            r.id,
            r.host,
            r.state.as_str(),
            r.final_state.as_ref().map_or("-", Final::as_str),
            name(&r.previous),
            name(&r.system)
        );
    }
    Ok(0)
}

fn show(opts: &ClientOpts, id: i64) -> CmdResult {
    let mut client = connect(opts)?;
    let detail = super::term::scrub(client.call(ops::ShowApproval { id })?)?;
    let Some(row) = listed(&detail.approval) else {
        return Err(fail(65, anyhow::format_err!("approval {id} is not a deployment")));
    };
    if opts.json {
        super::render::print_json(&serde_json::json!({"deployment": row, "audit": detail.audit}))?;
        return Ok(0);
    }
    println!("deployment (approval {id}) of {}", row.host);
    println!(
        "  from   {}
  to     {}",
        row.previous, row.system
    );
    println!("  asked  by {} at {}", row.requested_by, row.requested_at);
    println!("  state  {}", row.state.as_str());
    if let Some(f) = &row.final_state {
        println!("  final  {f}");
        println!("  how    {}", how_reached(row.result.as_deref().unwrap_or_default()));
    }
    if let Some(r) = &row.result {
        println!("  result {r}");
    }
    println!(
        "
reason: {}",
        detail.approval.reason
    );
    for a in &detail.audit {
        println!("  {}  {}", a.ts, a.summary);
    }
    Ok(row.final_state.as_ref().map_or(0, Final::exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconciled_result_reads_as_its_final_state_and_says_how() {
        let result = "deployment abc123 on web1: rolled back (reconciled at 2026-12-05T18:00:00Z from the host: \
                      rolled back by the host's dead-man timer, which verifies)";
        assert_eq!(final_of(result, ApprovalState::Failed), Final::RolledBack);
        let how = how_reached(result);
        assert!(how.starts_with("reconciled at 2026-12-05T18:00:00Z from the host"), "{how}");
        let plain = "deployment abc123 on web1: succeeded (preflight 5 ms)";
        assert_eq!(final_of(plain, ApprovalState::Executed), Final::Succeeded);
        assert_eq!(how_reached(plain), "by the deployment itself");
        let resumed = "deployment abc123 on local: unknown (a restart of Macha cut it off and …)";
        assert_eq!(final_of(resumed, ApprovalState::Failed), Final::Unknown);
    }
}
