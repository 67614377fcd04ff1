//! `macha check`: one cycle now. Through the daemon when it runs (the daemon records and acts at
//! its autonomy level); otherwise standalone, on the user's own store, where it records issues and
//! shows what the policy would decide but never executes anything.

use super::commands::load_config;
use super::{CheckArgs, CmdResult};
use crate::api::reply::{CheckMode, CheckReport, CheckStatus};
use crate::api::{Client, ClientError, ops};
use crate::config::Scope;
use crate::engine::Engine;
use crate::observe::{self, JournalState, Sources};
use anyhow::Context;
use macha_core::HostName;
use macha_core::snapshot::Snapshot;
use macha_observe::{CpuSample, LocalObserver, ObserveConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CPU_SEED_KEY: &str = "observe.cpu_sample";

pub fn run(args: &CheckArgs) -> CmdResult {
    let config = load_config(args.client.config.as_deref(), Scope::User)?;
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
    let snapshot: Snapshot = runtime.block_on(async {
        let observer = LocalObserver::new(ObserveConfig { previous_cpu, ..ObserveConfig::system() });
        let journal = if config.journal_enable {
            match observe::journal_once(&config, now).await {
                Ok(summary) => JournalState::Summary(summary),
                Err(reason) => JournalState::Unavailable(reason),
            }
        } else {
            JournalState::Unavailable("disabled in the configuration (journal.enable = false)".into())
        };
        let sources = Sources {
            observer: Arc::new(Mutex::new(observer)),
            systemd: observe::SystemdLink::new(observe::connect_systemd(&config).await),
            journal: Arc::new(Mutex::new(journal)),
        };
        sources.collect(&HostName::local(), now).await
    });
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

/// Prints a check result and returns the exit code for its status.
fn print(out: &CheckReport, json: bool) -> CmdResult {
    if json {
        super::render::print_json(out)?;
    } else {
        super::render::check(out)?;
    }
    Ok(match out.status {
        CheckStatus::Healthy => 0,
        CheckStatus::Warning => 1,
        CheckStatus::Critical => 2,
        CheckStatus::Unknown => 3,
    })
}
