//! `macha check`: one cycle now. Through the daemon when it runs (the daemon records and acts at
//! its autonomy level); otherwise standalone, on the user's own store, where it records issues and
//! shows what the policy would decide but never executes anything.

use super::commands::load_config;
use super::{CheckArgs, CmdResult};
use crate::api::reply::{CheckMode, CheckReport, CheckStatus};
use crate::api::{Client, ClientError, ops};
use crate::config::Scope;
use crate::engine::Engine;
use crate::observe;
use anyhow::Context;
use macha_core::HostName;
use macha_core::snapshot::Snapshot;
use macha_observe::CpuSample;
use std::time::Duration;

const CPU_SEED_KEY: &str = "observe.cpu_sample";

pub fn run(args: &CheckArgs) -> CmdResult {
    let config = load_config(args.client.config.as_deref(), Scope::User)?;
    if args.all || !args.host.is_empty() || args.tag.is_some() {
        return hosts(args, &config);
    }
    if !args.standalone && args.client.db.is_none() {
        let socket = args.client.socket.clone().unwrap_or_else(|| config.socket.clone());
        match Client::connect(&socket, Duration::from_secs(120)) {
            Ok(mut client) => {
                let out = client.call(ops::RunCheck)?;
                return print(&out, args.client.json);
            }
            Err(ClientError::Connect { .. }) => {
                tracing::debug!("daemon not reachable at {}; running standalone", socket.display());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let db = args.client.db.clone().unwrap_or_else(|| config.database.clone());
    let out = standalone(config, &db)?;
    print(&out, args.client.json)
}

fn standalone(config: crate::config::Config, db: &std::path::Path) -> anyhow::Result<CheckReport> {
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store = macha_store::Store::open(db).with_context(|| format!("opening the store {}", db.display()))?;
    let previous_cpu = store
        .get_kv(CPU_SEED_KEY)
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str::<(macha_core::snapshot::CpuTicks, i64)>(&s).ok())
        .map(|(ticks, at)| CpuSample { ticks, at: macha_core::Timestamp::from_millis(at) });
    let now = crate::now();
    let mut engine = Engine::new(store, config.clone(), false, now)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let snapshot: Snapshot = runtime.block_on(observe::one_shot(&config, previous_cpu));
    if let Some(cpu) = snapshot.cpu.data()
        && let Ok(s) = serde_json::to_string(&(cpu.ticks, snapshot.taken_at.millis()))
    {
        let _ = engine.store_mut().set_kv(CPU_SEED_KEY, &s);
    }
    let correlation_id = crate::correlation_id();
    let (report, _work) = engine.cycle(&snapshot, &correlation_id)?;
    engine.maintain(now);
    Ok(crate::wire::check_report(&snapshot, &report, engine.autonomy(), CheckMode::Standalone, db, None))
}

/// `--host H…` and `--all`: the local host checked now, remote hosts' last reports from the
/// daemon (which alone observes them). The exit code is the worst status (critical, warning,
/// unknown, healthy), with the same codes as for one host.
fn hosts(args: &CheckArgs, config: &crate::config::Config) -> CmdResult {
    let local =
        args.all || (args.tag.is_none() && args.host.iter().any(|h| HostName::parse(h).is_ok_and(|n| n.is_local())));
    let remote: Vec<String> =
        args.host.iter().filter(|h| !HostName::parse(h).is_ok_and(|n| n.is_local())).cloned().collect();
    let socket = args.client.socket.clone().unwrap_or_else(|| config.socket.clone());
    let mut reports = Vec::new();
    let mut client = match Client::connect(&socket, Duration::from_secs(120)) {
        Ok(c) => Some(c),
        Err(ClientError::Connect { .. }) if !args.all && remote.is_empty() && args.tag.is_none() => None,
        Err(ClientError::Connect { .. }) => {
            eprintln!(
                "macha: remote hosts are observed by the daemon, which is not answering at {}; \
                 their status is unknown",
                socket.display()
            );
            return Ok(CheckStatus::Unknown.exit_code());
        }
        Err(e) => return Err(e.into()),
    };
    if local {
        reports.push(match client.as_mut() {
            Some(c) => c.call(ops::RunCheck)?,
            None => standalone(config.clone(), &args.client.db.clone().unwrap_or_else(|| config.database.clone()))?,
        });
    }
    if let Some(c) = client.as_mut()
        && (args.all || !remote.is_empty() || args.tag.is_some())
    {
        reports.extend(c.call(ops::HostReports { hosts: remote, tag: args.tag.clone() })?);
    }
    let worst = reports.iter().map(|r| r.status).max().unwrap_or(CheckStatus::Unknown);
    if args.client.json {
        if reports.len() == 1 && !args.all && args.tag.is_none() {
            super::render::print_json(&reports[0])?;
        } else {
            super::render::print_json(&reports)?;
        }
    } else {
        for (i, r) in reports.iter().enumerate() {
            if i > 0 {
                println!();
            }
            super::render::check(r)?;
        }
        if reports.len() > 1 {
            println!();
            super::render::check_summary(&reports)?;
        }
    }
    Ok(worst.exit_code())
}

/// Prints a check result and returns the exit code for its status.
fn print(out: &CheckReport, json: bool) -> CmdResult {
    if json {
        super::render::print_json(out)?;
    } else {
        super::render::check(out)?;
    }
    Ok(out.status.exit_code())
}
