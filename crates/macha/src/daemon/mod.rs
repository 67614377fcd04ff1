//! The daemon: a closed event loop that decides nothing slowly.
//!
//! Each subsystem owns its message type and channel — the systemd signal task ([`UnitSignal`]),
//! the journal follower (`JournalEvent`), the fleet (`FleetEvent`), the agent (`AgentMsg`), the
//! socket ([`ApiCall`]) and the executor's outcomes ([`Done`]) — and the loop selects over them,
//! plus the timers and signals. A loop turn only dispatches: engine work (everything that touches
//! the database) is posted to the engine thread ([`engine_thread`]), and IO (snapshot collection,
//! D-Bus, SSH, executions) runs in tasks whose results come back on those channels. So a slow disk
//! or a hung bus never stops signals, the socket, SSH or the model. Every turn is timed; a turn
//! over 100 ms is logged with what it handled. "One writer" holds: only the engine thread writes.

pub mod engine_thread;
pub mod lock;
mod reconcile;
mod requests;
pub mod server;
pub mod units;
mod web;

use crate::agent::{AgentMsg, AgentService};
use crate::api::reply::{CheckMode, CheckReport, StatusInfo};
use crate::api::{ErrorCode, Request, Response, ops};
use crate::config::Config;
use crate::engine::{Engine, Receipt, Ticket, Work};
use crate::fleet::{Fleet, FleetEvent};
use crate::observe::{self, JournalState, Sources};
use anyhow::Context;
use engine_thread::EngineHandle;
use futures_util::FutureExt;
use macha_api::Tier;
use macha_core::HostName;
use macha_core::command::Tools;
use macha_core::journal::ErrorWindow;
use macha_core::snapshot::Snapshot;
use macha_exec::Executor;
use macha_observe::journal::{JournalConfig, JournalEvent, JournalFollower};
use macha_observe::{LocalObserver, ObserveConfig};
use macha_store::{AuditKind, NewAudit, Severity, Store};
use server::ApiCall;
use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
pub use units::UnitSignal;

const JOURNAL_CURSOR_KEY: &str = "journal.cursor";

/// A loop turn longer than this is logged with what it handled.
const SLOW_TURN: Duration = Duration::from_millis(100);

/// An execution's outcome, back from its task.
#[derive(Debug)]
pub struct Done {
    ticket: Ticket,
    receipt: Receipt,
}

/// One turn of the loop: what woke it. Private to the loop; subsystems only know their own types.
enum Turn {
    Stop,
    Watchdog,
    Tick,
    Unit(UnitSignal),
    Journal(JournalEvent),
    Api(ApiCall),
    Agent(AgentMsg),
    Fleet(FleetEvent),
    Done(Box<Done>),
}

impl Turn {
    fn name(&self) -> &'static str {
        match self {
            Turn::Stop => "stop",
            Turn::Watchdog => "watchdog",
            Turn::Tick => "tick",
            Turn::Unit(_) => "unit signal",
            Turn::Journal(_) => "journal entry",
            Turn::Api(_) => "api request",
            Turn::Agent(_) => "agent call",
            Turn::Fleet(_) => "fleet event",
            Turn::Done(_) => "action outcome",
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT, on a small multi-threaded runtime (observation of many
/// hosts parses on both cores) plus the engine thread.
pub fn run_blocking(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .max_blocking_threads(4)
        .thread_name("macha-worker")
        // A deployment's steps nest deep async calls (protocol, runner, SSH pool); in a debug
        // build their frames outgrew tokio's 2 MiB default. Untouched stack pages cost nothing.
        .thread_stack_size(8 * 1024 * 1024)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config))
}

fn resolve_tools(config: &Config) -> Tools {
    let mut tools = Tools::new();
    for name in macha_core::command::TOOL_NAMES {
        let path = config.tools.get(name).cloned().or_else(|| which::which(name).ok().map(|p| p.display().to_string()));
        if let Some(p) = path {
            tools = tools.with(name, &p);
        }
    }
    match &config.journal_directory {
        Some(d) => tools.with_journal_directory(&d.display().to_string()),
        None => tools,
    }
}

/// What the loop, its tasks and the engine thread's jobs share.
pub(crate) struct Shared {
    /// The web console, when enabled (`macha web login` mints its tokens).
    web: Option<Arc<macha_web::Console>>,
    config: Config,
    executor: Executor,
    admin_gid: Option<u32>,
    viewer_gid: Option<u32>,
    host: HostName,
    started: Instant,
    agent: Option<AgentService>,
    fleet: Fleet,
    sources: Sources,
    tracker: TaskTracker,
    done_tx: mpsc::Sender<Done>,
    fleet_tx: mpsc::Sender<FleetEvent>,
    /// The cursor of the last journal entry seen and not yet stored. Stored once per cycle and at
    /// a clean stop, not per entry: an error burst must not become a burst of fsyncs. After a crash
    /// the follower re-reads at most one cycle's entries.
    journal_cursor: Mutex<Option<String>>,
    /// A periodic cycle is collecting or being evaluated: the next tick does not start another.
    cycle_running: AtomicBool,
    /// The last cycle's report: what a viewer's `macha check` gets (only admins start a cycle).
    last_report: Mutex<Option<CheckReport>>,
    /// Journal messages are redacted as they arrive (key blocks split over entries included),
    /// before they enter the error window whose samples reports and the model see.
    journal_redactor: Mutex<macha_agent::redact::LineRedactor>,
    /// Execution outputs are redacted before they are stored (viewers read the trail).
    redactor: macha_agent::Redactor,
    /// BATCH work while the host is idle (re-indexing the flake), and the hosts' addresses.
    batch: Arc<crate::batch::Batch>,
}

impl Shared {
    /// Starts one task per permitted action. A panic inside the executor is caught and reported as
    /// a failed outcome, so no action is ever left `running`.
    pub(crate) fn spawn_work(&self, work: Vec<Work>) {
        for Work { permit, ticket } in work {
            let executor = self.executor.clone();
            let done = self.done_tx.clone();
            let redactor = self.redactor.clone();
            self.tracker.spawn(async move {
                // The executor consumes the permit; its receipt names it.
                let receipt = AssertUnwindSafe(executor.execute(permit)).catch_unwind().await.unwrap_or_else(|p| {
                    let message = engine_thread::panic_message(p.as_ref());
                    tracing::error!(action_id = ticket.action_id, "the executor panicked: {message}");
                    Receipt::not_run(
                        ticket.permit_id.clone(),
                        format!("the executor failed unexpectedly ({message}); the outcome is unknown"),
                    )
                });
                // Diagnostic output can hold secrets; it is stored (and shown to viewers) redacted.
                let receipt = receipt.redacted(|t| redactor.apply(t));
                let _ = done.send(Done { ticket, receipt }).await;
            });
        }
    }

    fn save_journal_cursor(&self, engine: &mut Engine) {
        let cursor = lock(&self.journal_cursor).take();
        if let Some(cursor) = cursor
            && let Err(e) = engine.store_mut().set_kv(JOURNAL_CURSOR_KEY, &cursor)
        {
            tracing::warn!("cannot store the journal cursor: {e}");
        }
    }

    fn status(&self) -> Response {
        Response::reply::<ops::Status>(&StatusInfo {
            autonomy: self.config.autonomy,
            uptime_secs: self.started.elapsed().as_secs(),
            database: self.config.database.display().to_string(),
            systemd: match self.sources.systemd.get() {
                Ok(_) => "connected".to_owned(),
                Err(e) => format!("unavailable: {e}"),
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ssh: self.fleet.stats().as_ref().map(crate::wire::ssh_stats),
            jobs: self.batch.views(),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Spawns `work` as a task whose panic is caught and logged (the daemon goes on).
fn spawn_guarded(
    tracker: &TaskTracker,
    what: &'static str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tracker.spawn(async move {
        if let Err(p) = AssertUnwindSafe(work).catch_unwind().await {
            tracing::error!(task = what, "a task panicked: {}", engine_thread::panic_message(p.as_ref()));
        }
    });
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating the state directory {}", config.state_dir.display()))?;
    let _ = std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700));
    // One daemon per database: a second one exits here, naming the first.
    let _lock = lock::DatabaseLock::acquire(&config.database)?;
    let store = Store::open(&config.database).with_context(|| format!("opening {}", config.database.display()))?;
    // Overwritten or torn pages are found before anything is read from or written to them.
    let problems = store.quick_check().with_context(|| format!("checking {}", config.database.display()))?;
    if !problems.is_empty() {
        anyhow::bail!(
            "the database {} is damaged ({}{}); refusing to start on it: restore it from a backup (or move it \
             away to start with an empty history)",
            config.database.display(),
            problems.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
            if problems.len() > 3 { format!("; and {} more", problems.len() - 3) } else { String::new() }
        );
    }
    let now = crate::now();
    let mut engine = Engine::new(store, config.clone(), true, now)?;
    // A reboot queued before this start is proven by a new boot id.
    engine.set_boot_id(crate::observe::boot_id());
    engine.confirm_reboot(now)?;
    let host = HostName::local();

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (unit_tx, mut unit_rx) = mpsc::channel::<UnitSignal>(1024);
    let (journal_tx, mut journal_rx) = mpsc::channel::<JournalEvent>(1024);
    let (api_tx, mut api_rx) = mpsc::channel::<ApiCall>(256);
    let (agent_tx, mut agent_rx) = mpsc::channel::<AgentMsg>(256);
    let (fleet_tx, mut fleet_rx) = mpsc::channel::<FleetEvent>(1024);
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(256);

    // systemd: the connection for snapshots and execution, and the signal stream. The signal task
    // reconnects with backoff when the bus goes away, and asks for a cycle when it is back (to
    // catch what happened meanwhile).
    let link = observe::SystemdLink::new(observe::connect_systemd(&config).await);
    if let Err(reason) = link.get() {
        engine.alert(now, &format!("systemd unavailable: {reason}"), serde_json::Value::Null)?;
    }
    if config.systemd_enable {
        tracker.spawn(units::watch(Arc::clone(&link), config.clone(), unit_tx, stop.clone()));
    }

    // The journal follower, resumed from the stored cursor.
    let journal = Arc::new(Mutex::new(JournalState::Unavailable("starting".into())));
    if config.journal_enable {
        match observe::journalctl_path(&config) {
            Ok(journalctl) => {
                let cursor = engine.store().get_kv(JOURNAL_CURSOR_KEY).ok().flatten();
                let jc = JournalConfig {
                    journalctl,
                    directory: config.journal_directory.clone(),
                    cursor,
                    since: config.journal_window,
                    ..JournalConfig::default()
                };
                let (follower, mut events) = JournalFollower::spawn(jc);
                *lock(&journal) = JournalState::Unavailable("the journal follower is starting".into());
                let stop = stop.clone();
                tracker.spawn(async move {
                    // Dropping the follower stops journalctl: it lives as long as this task.
                    let _follower = follower;
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            ev = events.recv() => match ev {
                                Some(e) => { if journal_tx.send(e).await.is_err() { return; } }
                                None => return,
                            }
                        }
                    }
                });
            }
            Err(reason) => *lock(&journal) = JournalState::Unavailable(reason),
        }
    } else {
        *lock(&journal) = JournalState::Unavailable("disabled in the configuration (journal.enable = false)".into());
    }

    // The fleet: the host registry (synchronised with the configuration) and SSH to other hosts.
    let fleet = Fleet::start(&config, &mut engine, now)?;
    let executor = Executor::new(
        macha_exec::Local::new(Arc::clone(&link), resolve_tools(&config)),
        macha_exec::Settings {
            protected: config.protected(),
            timeout: config.executor_timeout,
            verify_delay: config.verify_delay,
            deploy: macha_exec::deploy::DeploySettings {
                timeouts: macha_deploy::Timeouts {
                    activate: config.deploy.activate_timeout,
                    reconnect: config.deploy.reconnect_timeout,
                    verify: config.deploy.verify_timeout,
                    retry: config.deploy.retry,
                    dead_man: config.deploy.dead_man,
                },
                min_free_bytes: config.deploy.min_free_mib.saturating_mul(1024 * 1024),
                health: config.hosts.iter().map(|h| (h.name.clone(), h.health.clone())).collect(),
                journal: Some(crate::deployments::journal_dir(&config)),
            },
        },
    )
    .with_remote(fleet.remote());
    let sources = Sources {
        observer: Arc::new(Mutex::new(LocalObserver::new(ObserveConfig::system()))),
        systemd: Arc::clone(&link),
        journal: Arc::clone(&journal),
    };

    // The language model: a scheduler task, fed by the loop; the cycle never waits for it.
    let _ = engine.store_mut().close_interrupted_agent_requests(now);
    // Compiled once: the journal, receipts and the model's inputs share these rules.
    let redactor = macha_agent::Redactor::new(&config.llm.redact_patterns).context("llm.redact_patterns")?;
    // BATCH work while the host is idle; its embedding model also serves the searches.
    let batch = crate::batch::Batch::start(&config, &tracker, stop.clone());
    let shared_batch = Arc::clone(&batch);
    let agent = match AgentService::start(&config, redactor.clone(), agent_tx, &tracker, stop.clone(), shared_batch) {
        Ok(a) => a,
        Err(e) => {
            engine.alert(now, &format!("the language model is unavailable: {e:#}"), serde_json::Value::Null)?;
            None
        }
    };

    // Prometheus metrics, when enabled: a failure to bind is an alert, not a stop.
    if let Err(e) = crate::prom::start(&config, &tracker, &stop) {
        engine.alert(now, &format!("Prometheus metrics unavailable: {e:#}"), serde_json::Value::Null)?;
    }

    // The local API.
    let listener = server::bind(&config.socket)?;
    tracker.spawn(server::serve(listener, api_tx.clone(), stop.clone()));
    let admin_gid = server::group_gid(config.admin_group.as_deref(), "admin");
    let viewer_gid = server::group_gid(config.viewer_group.as_deref(), "viewer");

    // Signals.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;

    engine.store_mut().append_audit(&NewAudit::new(
        crate::now(),
        AuditKind::Daemon,
        Severity::Info,
        "local",
        format!(
            "daemon started (autonomy {}, interval {})",
            config.autonomy,
            humantime::format_duration(config.check_interval)
        ),
    ))?;

    // Notifications: a thread that follows the audit trail, woken after every engine job.
    let notifier = crate::notify::Notifier::start(&config, stop.clone()).context("starting notifications")?;
    // From here on the engine lives on its own thread.
    let (engine, engine_thread) = EngineHandle::start(engine, tokio::runtime::Handle::current(), Some(notifier.wake()))
        .context("starting the engine thread")?;
    // The web console, when enabled: its requests come back on the API channel.
    let web = web::start(&config, &api_tx, &engine, (admin_gid, viewer_gid), &tracker, &stop).await?;
    let shared = Arc::new(Shared {
        web,
        config: config.clone(),
        executor,
        admin_gid,
        viewer_gid,
        host,
        started,
        agent,
        fleet,
        sources,
        tracker: tracker.clone(),
        done_tx,
        fleet_tx,
        journal_cursor: Mutex::new(None),
        cycle_running: AtomicBool::new(false),
        last_report: Mutex::new(None),
        journal_redactor: Mutex::new(macha_agent::redact::LineRedactor::new()),
        redactor,
        batch,
    });

    reconcile::start(&shared, &engine);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("watching")]);
    tracing::info!(autonomy = %config.autonomy, socket = %config.socket.display(), "macha daemon ready");

    let watchdog = sd_notify::watchdog_enabled();
    let watchdog_period = watchdog.map_or(Duration::from_secs(3600), |d| d / 2);
    let mut watchdog_tick = tokio::time::interval(watchdog_period);
    let mut cycle_tick = tokio::time::interval(config.check_interval);
    cycle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let turn = tokio::select! {
            _ = sigterm.recv() => Turn::Stop,
            _ = sigint.recv() => Turn::Stop,
            _ = watchdog_tick.tick() => Turn::Watchdog,
            _ = cycle_tick.tick() => Turn::Tick,
            Some(s) = unit_rx.recv() => Turn::Unit(s),
            Some(e) = journal_rx.recv() => Turn::Journal(e),
            Some(c) = api_rx.recv() => Turn::Api(c),
            Some(m) = agent_rx.recv() => Turn::Agent(m),
            Some(f) = fleet_rx.recv() => Turn::Fleet(f),
            Some(d) = done_rx.recv() => Turn::Done(Box::new(d)),
        };
        let what = turn.name();
        let turn_started = Instant::now();
        match turn {
            Turn::Stop => break,
            Turn::Watchdog => {
                if watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            Turn::Tick => {
                let s = Arc::clone(&shared);
                engine.post("fleet tick", move |e| s.fleet.tick(e, &s.fleet_tx, &s.tracker));
                reconcile::tick(&shared, &engine);
                start_cycle(&shared, &engine, None);
            }
            Turn::Unit(signal) => on_unit(&shared, &engine, signal),
            Turn::Journal(event) => on_journal(&shared, &engine, event),
            Turn::Api(call) => on_api(&shared, &engine, call),
            Turn::Agent(msg) => on_agent(&shared, &engine, msg),
            Turn::Fleet(mut event) => {
                crate::fleet::redact_remote_journal(&mut event, |t| shared.redactor.apply(t));
                let s = Arc::clone(&shared);
                engine.post("fleet event", move |e| match s.fleet.handle(e, event) {
                    Ok(work) => s.spawn_work(work),
                    Err(err) => tracing::error!("fleet event failed: {err:#}"),
                });
            }
            Turn::Done(done) => on_done(&shared, &engine, *done),
        }
        let took = turn_started.elapsed();
        macha_prom::publish(|m| m.loop_turn(took));
        if took > SLOW_TURN {
            tracing::warn!(handled = what, millis = took.as_millis(), "a slow loop turn");
        }
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: waiting for running actions");
    stop.cancel();
    tracker.close();
    // Outcomes of actions still running are recorded if they finish within the grace period; a
    // record left `running` is closed as interrupted on the next start.
    let grace = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            () = &mut grace => break,
            () = tracker.wait() => break,
            Some(done) = done_rx.recv() => finish(&engine, done),
        }
    }
    while let Ok(done) = done_rx.try_recv() {
        finish(&engine, done);
    }
    shared.fleet.shutdown().await;
    let s = Arc::clone(&shared);
    let stopped = engine
        .call("stop", move |e| {
            s.save_journal_cursor(e);
            e.store_mut().append_audit(&NewAudit::new(
                crate::now(),
                AuditKind::Daemon,
                Severity::Info,
                "local",
                "daemon stopped",
            ))
        })
        .await;
    engine.stop();
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    let _ = tokio::task::spawn_blocking(move || notifier.join()).await;
    let _ = std::fs::remove_file(&config.socket);
    stopped?.context("recording the stop")?;
    Ok(())
}

/// Records an execution's outcome (on the engine thread); whether it was recorded.
fn record_outcome(e: &mut Engine, done: Done) -> bool {
    match e.finish_action(done.ticket, &done.receipt, crate::now()) {
        Ok(()) => true,
        Err(err) => {
            tracing::error!("recording an outcome failed: {err:#}");
            false
        }
    }
}

/// Records an outcome while stopping (no learning hook: the agent is going away).
fn finish(engine: &EngineHandle, done: Done) {
    engine.post("finish action", move |e| {
        record_outcome(e, done);
    });
}

/// Starts a cycle of this host: the snapshot is collected in a task, then evaluated on the engine
/// thread. A periodic cycle is skipped while the previous one is still running; a requested one
/// (`reply`, from `macha check`) always runs and answers with the report.
fn start_cycle(shared: &Arc<Shared>, engine: &EngineHandle, reply: Option<oneshot::Sender<Response>>) {
    let periodic = reply.is_none();
    if periodic && shared.cycle_running.swap(true, Ordering::AcqRel) {
        tracing::debug!("the previous cycle is still running; this tick is skipped");
        return;
    }
    let (shared, engine) = (Arc::clone(shared), engine.clone());
    spawn_guarded(&shared.tracker.clone(), "cycle", async move {
        let snapshot = shared.sources.collect(&shared.host, crate::now()).await;
        let s = Arc::clone(&shared);
        let result = engine.call("cycle", move |e| cycle(e, &s, &snapshot)).await;
        if periodic {
            shared.cycle_running.store(false, Ordering::Release);
        }
        let response = match result {
            Ok(Ok(report)) => Response::reply::<ops::RunCheck>(&report),
            Ok(Err(err)) => {
                tracing::error!("cycle failed: {err:#}");
                Response::err(ErrorCode::Internal, format!("{err:#}"))
            }
            Err(gone) => Response::err(ErrorCode::Internal, gone.to_string()),
        };
        if let Some(reply) = reply {
            let _ = reply.send(response);
        }
    });
}

/// One cycle over a collected snapshot, on the engine thread.
fn cycle(engine: &mut Engine, shared: &Shared, snapshot: &Snapshot) -> anyhow::Result<CheckReport> {
    shared.save_journal_cursor(engine);
    let correlation_id = crate::correlation_id();
    let (report, work) = engine.cycle(snapshot, &correlation_id)?;
    // Only new issues reach the model; a healthy, unchanged cycle makes no model call.
    let new_issues = engine.take_new_issues();
    let analysis =
        crate::agent::after_findings(shared.agent.as_ref(), engine, &new_issues, Some(snapshot), &correlation_id);
    tracing::info!(
        correlation_id = %correlation_id,
        findings = report.findings.len(),
        unavailable = snapshot.unavailable_sections().len(),
        micros = snapshot.collect_micros,
        "cycle done"
    );
    let out = crate::wire::check_report(
        snapshot,
        &report,
        engine.autonomy(),
        CheckMode::Daemon,
        &engine.config().database,
        Some(analysis),
    );
    shared.spawn_work(work);
    // Retention and downsampling of the history, in bounded batches (cheap when nothing is due).
    engine.maintain(crate::now());
    *lock(&shared.last_report) = Some(out.clone());
    Ok(out)
}

fn on_unit(shared: &Arc<Shared>, engine: &EngineHandle, signal: UnitSignal) {
    match signal {
        UnitSignal::Changed { unit, active_state, result } => {
            tracing::debug!(unit = %unit, active_state = %active_state, "unit state changed");
            let s = Arc::clone(shared);
            engine.post("unit event", move |e| {
                let correlation_id = crate::correlation_id();
                match e.unit_event(&s.host, &unit, &active_state, result.as_deref(), crate::now(), &correlation_id) {
                    Ok((_, work)) => s.spawn_work(work),
                    Err(err) => tracing::error!("unit event failed: {err:#}"),
                }
                let new_issues = e.take_new_issues();
                crate::agent::after_findings(s.agent.as_ref(), e, &new_issues, None, &correlation_id);
            });
        }
        UnitSignal::Restored => {
            tracing::info!("systemd signal stream restored; running a cycle to catch up");
            start_cycle(shared, engine, None);
        }
        UnitSignal::Lost(reason) => {
            alert(engine, format!("systemd signal stream lost: {reason}; failures are seen only by the periodic cycle"))
        }
    }
}

fn alert(engine: &EngineHandle, summary: String) {
    engine.post("alert", move |e| {
        if let Err(err) = e.alert(crate::now(), &summary, serde_json::Value::Null) {
            tracing::error!("cannot record an alert: {err:#}");
        }
    });
}

/// Journal entries update the error window in memory (no database write per entry).
fn on_journal(shared: &Shared, engine: &EngineHandle, event: JournalEvent) {
    let window = shared.config.journal_window;
    match event {
        JournalEvent::Entry(entry) => {
            let at = macha_core::Timestamp::from_millis(i64::try_from(entry.realtime_usec / 1000).unwrap_or(0));
            // Redacted before it is kept: the window's samples reach reports, viewers and the model.
            let message = shared.redactor.redact_entry(&mut lock(&shared.journal_redactor), &entry.message);
            {
                let mut state = lock(&shared.sources.journal);
                match &mut *state {
                    JournalState::Following(w) => w.record(entry.unit.as_deref(), at, &message),
                    other => {
                        let mut w = ErrorWindow::new(window);
                        w.record(entry.unit.as_deref(), at, &message);
                        *other = JournalState::Following(w);
                    }
                }
            }
            *lock(&shared.journal_cursor) = Some(entry.cursor);
        }
        JournalEvent::Following => {
            let mut state = lock(&shared.sources.journal);
            if !matches!(&*state, JournalState::Following(_)) {
                *state = JournalState::Following(ErrorWindow::new(window));
            }
        }
        JournalEvent::Unavailable(reason) => {
            *lock(&shared.sources.journal) = JournalState::Unavailable(reason.clone());
            alert(engine, format!("journal unavailable: {reason}"));
        }
    }
}

fn on_api(shared: &Arc<Shared>, engine: &EngineHandle, call: ApiCall) {
    match call {
        ApiCall::Once { request: Request::Status, reply, .. } => {
            let _ = reply.send(shared.status());
        }
        ApiCall::Once { request: Request::RunCheck, peer, reply } => {
            match server::access(peer, shared.admin_gid, shared.viewer_gid) {
                // Only an admin starts a cycle (it records and may act).
                Tier::Admin => start_cycle(shared, engine, Some(reply)),
                // A viewer gets the last report; nothing runs because of a read.
                Tier::Viewer => {
                    let last = lock(&shared.last_report).clone();
                    let _ = reply.send(match last {
                        Some(report) => Response::reply::<ops::RunCheck>(&report),
                        None => Response::err(ErrorCode::Unavailable, "no cycle has finished yet; ask again shortly"),
                    });
                }
                Tier::Anyone => {
                    engine.post("api denial", move |e| {
                        let _ = reply.send(requests::deny(e, &Request::RunCheck, peer));
                    });
                }
            }
        }
        ApiCall::Once { request: Request::PrepareDeploy(prepare), peer, reply }
            if server::access(peer, shared.admin_gid, shared.viewer_gid) == Tier::Admin =>
        {
            // A deployment's preparation reads its hosts: answered from a task when it is done.
            let s = Arc::clone(shared);
            engine.post("deploy preparation", move |e| {
                let who = server::peer_name(peer);
                s.fleet.prepare_deploy(e, prepare, peer.uid, who, reply, &s.fleet_tx, &s.tracker);
            });
        }
        ApiCall::Once {
            request:
                Request::NotifyWrite(crate::api::notify::NotifyWrite {
                    change: crate::api::notify::NotifyChange::Test { channel },
                }),
            peer,
            reply,
        } if server::access(peer, shared.admin_gid, shared.viewer_gid) == Tier::Admin => {
            // A test message goes out now, from a task; the answer is the channel's.
            let s = Arc::clone(shared);
            let (e, who) = (engine.clone(), server::peer_name(peer));
            spawn_guarded(&shared.tracker, "notification test", async move {
                let answer = crate::notify::test_channel(&s.config.notifications, &channel, &who).await;
                let said = match &answer {
                    crate::api::notify::NotifyAnswer::Tested { delivered: true, answer, .. } => {
                        format!("delivered ({answer})")
                    }
                    crate::api::notify::NotifyAnswer::Tested { answer, .. } => format!("not delivered: {answer}"),
                    _ => String::new(),
                };
                let summary = format!("notification test on {channel} by {who}: {said}");
                // The answer goes out once the test is in the audit trail, so whoever reads the
                // trail after the answer finds it.
                e.post("notification test audit", move |e| {
                    let audit = NewAudit::new(crate::now(), AuditKind::Daemon, Severity::Notice, "local", summary)
                        .with_subject("notify");
                    if let Err(err) = e.store_mut().append_audit(&audit) {
                        tracing::warn!("cannot audit a notification test: {err}");
                    }
                    let _ = reply.send(Response::reply::<crate::api::notify::NotifyWrite>(&answer));
                });
            });
        }
        ApiCall::Once { request, peer, reply }
            if Fleet::is_deferred(&request)
                && server::access(peer, shared.admin_gid, shared.viewer_gid) == Tier::Admin =>
        {
            // Key scans contact the host: answered from a task when the scan is done.
            let s = Arc::clone(shared);
            engine.post("key scan", move |e| {
                s.fleet.defer(e, request, server::peer_name(peer), reply, &s.fleet_tx, &s.tracker);
            });
        }
        ApiCall::Once { request: Request::KnowledgeRead(read), peer, reply }
            if read.search_text().is_some()
                && server::access(peer, shared.admin_gid, shared.viewer_gid) >= Tier::Viewer =>
        {
            // A knowledge search's query is embedded in a task (the model may be remote), then the
            // search runs on the engine thread.
            let (s, engine) = (Arc::clone(shared), engine.clone());
            spawn_guarded(&shared.tracker, "knowledge search", async move {
                let query = s.batch.embed_query(read.search_text().unwrap_or_default()).await;
                engine.post("knowledge search", move |e| {
                    let _ = reply.send(requests::knowledge_search(e, &read, &query));
                });
            });
        }
        ApiCall::Once { request, peer, reply } => {
            let s = Arc::clone(shared);
            engine.post("api request", move |e| {
                let _ = reply.send(requests::answer(e, &s, request, peer));
            });
        }
        ApiCall::Web { request, user, reply } => web::on_call(shared, engine, request, user, reply),
        ApiCall::Stream { request, peer, sink } => {
            let s = Arc::clone(shared);
            engine.post("api stream", move |e| {
                let tier = server::access(peer, s.admin_gid, s.viewer_gid);
                if tier < request.tier() {
                    let _ = sink.send(crate::api::StreamLine::Done(requests::deny(e, &request, peer)));
                } else {
                    let admin = tier == Tier::Admin;
                    crate::agent::stream(e, s.agent.as_ref(), request, &server::peer_name(peer), admin, sink);
                }
            });
        }
    }
}

fn on_agent(shared: &Arc<Shared>, engine: &EngineHandle, msg: AgentMsg) {
    match msg {
        // Observation for the model's tools runs as a task, never on the loop or the engine.
        AgentMsg::Observe(call) => {
            let s = Arc::clone(shared);
            spawn_guarded(&shared.tracker, "agent observation", async move {
                crate::agent::observe(&s.sources, &s.host, call).await;
            });
        }
        AgentMsg::Engine(call) => {
            let s = Arc::clone(shared);
            let f = Arc::clone(shared);
            let fleet = move || crate::agent::FleetInputs {
                connections: f.fleet.connections(),
                addresses: f.batch.addresses(),
            };
            engine.post("agent call", move |e| match crate::agent::handle_call(e, call, &fleet) {
                Ok(work) => s.spawn_work(work),
                Err(err) => tracing::error!("agent call failed: {err:#}"),
            });
        }
    }
}

fn on_done(shared: &Arc<Shared>, engine: &EngineHandle, done: Done) {
    let s = Arc::clone(shared);
    engine.post("finish action", move |e| {
        if !record_outcome(e, done) {
            return;
        }
        // Learnings only from remediations whose issue its check has observed gone.
        crate::agent::after_resolutions(s.agent.as_ref(), e);
    });
}
