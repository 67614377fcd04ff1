//! The daemon: one closed event loop.
//!
//! Every trigger of work is an [`Event`] on one channel — the periodic tick, a unit state change
//! from the systemd signal stream, a journal entry, a socket request, an executor outcome — and one
//! task owns the engine (and so the database) and handles them in order. Observation adapters and
//! executions run in their own tasks and only send events. That keeps "one writer" true and every
//! cause of an action visible in one place.

pub mod server;

use crate::api::{ErrorCode, Request, Response};
use crate::config::Config;
use crate::engine::{ActionOutcome, Engine, Work};
use crate::executor::Executor;
use crate::observe::{self, JournalState, Sources};
use anyhow::Context;
use macha_core::HostName;
use macha_core::command::Tools;
use macha_core::journal::ErrorWindow;
use macha_observe::journal::{JournalConfig, JournalEvent, JournalFollower};
use macha_observe::{LocalObserver, ObserveConfig};
use macha_store::{AuditKind, NewAudit, Severity, Store};
use server::Peer;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything the loop reacts to.
#[derive(Debug)]
pub enum Event {
    Unit {
        unit: String,
        active_state: String,
        result: Option<String>,
    },
    /// The unit signal stream ended or failed.
    UnitStreamLost(String),
    /// The unit signal stream is back after a loss: run a cycle to catch up.
    UnitStreamRestored,
    Journal(JournalEvent),
    Api {
        request: Request,
        peer: Peer,
        reply: oneshot::Sender<Response>,
    },
    Done {
        work: Work,
        outcome: ActionOutcome,
    },
    /// A streamed API request (chat, ask, discuss): event lines and the final response go to `sink`.
    ApiStream {
        request: Request,
        peer: Peer,
        sink: crate::agent::Sink,
    },
    /// The agent needs the store or the engine (proposals, records, conversations).
    Agent(crate::agent::AgentCall),
    /// A fleet task finished: a host observed, a discovery pass, a key scan.
    Fleet(crate::fleet::FleetEvent),
}

const JOURNAL_CURSOR_KEY: &str = "journal.cursor";

/// Runs the daemon on a single-threaded runtime until SIGTERM/SIGINT.
pub fn run_blocking(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
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
    tools
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating the state directory {}", config.state_dir.display()))?;
    let _ = std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700));
    let store = Store::open(&config.database).with_context(|| format!("opening {}", config.database.display()))?;
    let now = crate::now();
    let mut engine = Engine::new(store, config.clone(), true, now)?;
    let host = HostName::local();

    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    // systemd: the connection for snapshots and execution, and the signal stream. The signal task
    // reconnects with backoff when the bus goes away, and asks for a cycle when it is back (to
    // catch what happened meanwhile).
    let link = observe::SystemdLink::new(observe::connect_systemd(&config).await);
    if let Err(reason) = link.get() {
        engine.alert(now, &format!("systemd unavailable: {reason}"), serde_json::Value::Null)?;
    }
    if config.systemd_enable {
        tracker.spawn(watch_units(Arc::clone(&link), config.clone(), tx.clone(), stop.clone()));
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
                let tx = tx.clone();
                let stop = stop.clone();
                tracker.spawn(async move {
                    // Dropping the follower stops journalctl: it lives as long as this task.
                    let _follower = follower;
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            ev = events.recv() => match ev {
                                Some(e) => { if tx.send(Event::Journal(e)).await.is_err() { return; } }
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
    let fleet = crate::fleet::Fleet::start(&config, &mut engine, now)?;
    let executor = Executor::new(
        Arc::clone(&link),
        resolve_tools(&config),
        config.protected(),
        config.executor_timeout,
        config.verify_delay,
    )
    .with_remote(fleet.remote());
    let sources = Sources {
        observer: Arc::new(Mutex::new(LocalObserver::new(ObserveConfig::system()))),
        systemd: Arc::clone(&link),
        journal: Arc::clone(&journal),
    };

    // The language model: a scheduler task, fed by the loop; the cycle never waits for it.
    let _ = engine.store_mut().close_interrupted_agent_requests(now);
    let agent = match crate::agent::AgentService::start(&config, tx.clone(), &tracker, stop.clone()) {
        Ok(a) => a,
        Err(e) => {
            engine.alert(now, &format!("the language model is unavailable: {e:#}"), serde_json::Value::Null)?;
            None
        }
    };

    // The local API.
    let listener = server::bind(&config.socket)?;
    tracker.spawn(server::serve(listener, tx.clone(), stop.clone()));
    let admin_gid = server::admin_gid(config.admin_group.as_deref());

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
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("watching")]);
    tracing::info!(autonomy = %config.autonomy, socket = %config.socket.display(), "macha daemon ready");

    let watchdog = sd_notify::watchdog_enabled();
    let watchdog_period = watchdog.map_or(Duration::from_secs(3600), |d| d / 2);
    let mut watchdog_tick = tokio::time::interval(watchdog_period);
    let mut cycle_tick = tokio::time::interval(config.check_interval);
    cycle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ctx = LoopCtx {
        tx: tx.clone(),
        tracker: tracker.clone(),
        executor,
        admin_gid,
        host,
        started,
        agent,
        fleet,
        journal_cursor: std::cell::RefCell::new(None),
    };
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = watchdog_tick.tick() => {
                if watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            _ = cycle_tick.tick() => {
                if let Err(e) = cycle(&mut engine, &sources, &ctx).await {
                    tracing::error!("cycle failed: {e:#}");
                }
                ctx.fleet.tick(&engine, &ctx.tx, &ctx.tracker);
                engine.maintain(crate::now());
            }
            Some(event) = rx.recv() => {
                if let Err(e) = handle(&mut engine, &sources, &ctx, &journal, event).await {
                    tracing::error!("event handling failed: {e:#}");
                }
            }
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
            Some(event) = rx.recv() => {
                if let Event::Done { work, outcome } = event {
                    engine.finish_action(work, &outcome, crate::now())?;
                }
            }
        }
    }
    while let Ok(event) = rx.try_recv() {
        if let Event::Done { work, outcome } = event {
            engine.finish_action(work, &outcome, crate::now())?;
        }
    }
    ctx.fleet.shutdown().await;
    ctx.save_journal_cursor(&mut engine);
    engine.store_mut().append_audit(&NewAudit::new(
        crate::now(),
        AuditKind::Daemon,
        Severity::Info,
        "local",
        "daemon stopped",
    ))?;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct LoopCtx {
    tx: mpsc::Sender<Event>,
    tracker: TaskTracker,
    executor: Executor,
    admin_gid: Option<u32>,
    host: HostName,
    started: std::time::Instant,
    agent: Option<crate::agent::AgentService>,
    fleet: crate::fleet::Fleet,
    /// The cursor of the last journal entry seen and not yet stored. Stored once per cycle and at
    /// a clean stop, not per entry: an error burst must not become a burst of fsyncs in the loop.
    /// After a crash the follower re-reads at most one cycle's entries.
    journal_cursor: std::cell::RefCell<Option<String>>,
}

impl LoopCtx {
    fn save_journal_cursor(&self, engine: &mut Engine) {
        if let Some(cursor) = self.journal_cursor.borrow_mut().take()
            && let Err(e) = engine.store_mut().set_kv(JOURNAL_CURSOR_KEY, &cursor)
        {
            tracing::warn!("cannot store the journal cursor: {e}");
        }
    }

    fn spawn_work(&self, work: Vec<Work>) {
        for w in work {
            let executor = self.executor.clone();
            let tx = self.tx.clone();
            self.tracker.spawn(async move {
                let outcome = executor.execute(&w.permit).await;
                let _ = tx.send(Event::Done { work: w, outcome }).await;
            });
        }
    }
}

async fn cycle(engine: &mut Engine, sources: &Sources, ctx: &LoopCtx) -> anyhow::Result<serde_json::Value> {
    ctx.save_journal_cursor(engine);
    let now = crate::now();
    let snapshot = sources.collect(&ctx.host, now).await;
    let correlation_id = crate::correlation_id();
    let (report, work) = engine.cycle(&snapshot, &correlation_id)?;
    // Only new issues reach the model; a healthy, unchanged cycle makes no model call.
    let new_issues = engine.take_new_issues();
    let analysis =
        crate::agent::after_findings(ctx.agent.as_ref(), engine, &new_issues, Some(&snapshot), &correlation_id);
    tracing::info!(
        correlation_id = %correlation_id,
        findings = report.findings.len(),
        unavailable = snapshot.unavailable_sections().len(),
        micros = snapshot.collect_micros,
        "cycle done"
    );
    let mut out =
        crate::engine::check_output(&snapshot, &report, engine.autonomy(), "daemon", &engine.config().database);
    out["analysis"] = analysis;
    ctx.spawn_work(work);
    Ok(out)
}

async fn handle(
    engine: &mut Engine,
    sources: &Sources,
    ctx: &LoopCtx,
    journal: &Mutex<JournalState>,
    event: Event,
) -> anyhow::Result<()> {
    match event {
        Event::Unit { unit, active_state, result } => {
            let now = crate::now();
            let correlation_id = crate::correlation_id();
            tracing::debug!(unit = %unit, active_state = %active_state, "unit state changed");
            let (_, work) =
                engine.unit_event(&ctx.host, &unit, &active_state, result.as_deref(), now, &correlation_id)?;
            ctx.spawn_work(work);
            let new_issues = engine.take_new_issues();
            crate::agent::after_findings(ctx.agent.as_ref(), engine, &new_issues, None, &correlation_id);
        }
        Event::UnitStreamRestored => {
            tracing::info!("systemd signal stream restored; running a cycle to catch up");
            cycle(engine, sources, ctx).await?;
        }
        Event::UnitStreamLost(reason) => {
            engine.alert(
                crate::now(),
                &format!("systemd signal stream lost: {reason}; failures are seen only by the periodic cycle"),
                serde_json::Value::Null,
            )?;
        }
        Event::Journal(ev) => match ev {
            JournalEvent::Entry(entry) => {
                let at = macha_core::Timestamp::from_millis(i64::try_from(entry.realtime_usec / 1000).unwrap_or(0));
                let mut state = lock(journal);
                match &mut *state {
                    JournalState::Following(w) => w.record(entry.unit.as_deref(), at, &entry.message),
                    other => {
                        let mut w = ErrorWindow::new(engine.config().journal_window);
                        w.record(entry.unit.as_deref(), at, &entry.message);
                        *other = JournalState::Following(w);
                    }
                }
                drop(state);
                *ctx.journal_cursor.borrow_mut() = Some(entry.cursor);
            }
            JournalEvent::Following => {
                let mut state = lock(journal);
                if !matches!(&*state, JournalState::Following(_)) {
                    *state = JournalState::Following(ErrorWindow::new(engine.config().journal_window));
                }
            }
            JournalEvent::Unavailable(reason) => {
                *lock(journal) = JournalState::Unavailable(reason.clone());
                engine.alert(crate::now(), &format!("journal unavailable: {reason}"), serde_json::Value::Null)?;
            }
        },
        Event::Api { request, peer, reply }
            if crate::fleet::Fleet::is_deferred(&request) && server::is_admin(peer, ctx.admin_gid) =>
        {
            // Key scans contact the host: answered from a task, never blocking the loop.
            ctx.fleet.defer(engine, request, server::peer_name(peer), reply, &ctx.tx, &ctx.tracker);
        }
        Event::Fleet(event) => {
            let work = ctx.fleet.handle(engine, event)?;
            ctx.spawn_work(work);
        }
        Event::Api { request, peer, reply } => {
            let response = api(engine, sources, ctx, request, peer).await;
            let _ = reply.send(response);
        }
        Event::Done { work, outcome } => {
            let learn = (outcome.succeeded && outcome.verified)
                .then(|| (work.permit.action().describe(), work.issue_id, work.correlation_id.clone()));
            engine.finish_action(work, &outcome, crate::now())?;
            if let Some((action, issue_id, correlation_id)) = learn {
                crate::agent::after_success(ctx.agent.as_ref(), engine, &action, issue_id, &correlation_id);
            }
        }
        Event::ApiStream { request, peer, sink } => {
            if request.is_write() && !server::is_admin(peer, ctx.admin_gid) {
                let _ = sink.send(crate::api::StreamLine::Done(deny(engine, &request, peer)));
            } else {
                crate::agent::stream(engine, ctx.agent.as_ref(), request, &server::peer_name(peer), sink);
            }
        }
        Event::Agent(call) => {
            let work = crate::agent::handle_call(engine, sources, call).await?;
            ctx.spawn_work(work);
        }
    }
    Ok(())
}

async fn api(engine: &mut Engine, sources: &Sources, ctx: &LoopCtx, request: Request, peer: Peer) -> Response {
    let now = crate::now();
    let who = server::peer_name(peer);
    if request.is_write() && !server::is_admin(peer, ctx.admin_gid) {
        return deny(engine, &request, peer);
    }
    let result: anyhow::Result<serde_json::Value> = async {
        match request {
            Request::Status => Ok(serde_json::json!({
                "autonomy": engine.autonomy(),
                "uptime_secs": ctx.started.elapsed().as_secs(),
                "database": engine.config().database,
                "systemd": match sources.systemd.get() { Ok(_) => "connected".to_owned(), Err(e) => format!("unavailable: {e}") },
                "version": env!("CARGO_PKG_VERSION"),
                "ssh": ctx.fleet.stats(),
            })),
            Request::RunCheck => cycle(engine, sources, ctx).await,
            Request::ListIssues { states, host, limit } => {
                let states = parse_list(&states, macha_core::issue::IssueState::parse)?;
                Ok(v(&engine.store().list_issues(&macha_store::IssueQuery { states, host, limit })?))
            }
            Request::ShowIssue { id } => {
                let issue = engine.store().get_issue(id)?.ok_or_else(|| NotFound(format!("issue {id} does not exist")))?;
                let audit = engine.store().query_audit(&macha_store::AuditQuery { issue_id: Some(id), ..Default::default() })?;
                Ok(serde_json::json!({"issue": issue, "audit": audit}))
            }
            Request::ResolveIssue { id, note } => Ok(v(&engine.manual_issue(id, false, &who, note.as_deref(), now)?)),
            Request::CloseIssue { id, note } => Ok(v(&engine.manual_issue(id, true, &who, note.as_deref(), now)?)),
            Request::ListApprovals { states, limit } => {
                let states = parse_list(&states, macha_core::approval::ApprovalState::parse)?;
                Ok(v(&engine.store().list_approvals(&states, limit)?))
            }
            Request::ShowApproval { id } => {
                let a = engine.store().get_approval(id)?.ok_or_else(|| NotFound(format!("approval {id} does not exist")))?;
                let audit = engine.store().query_audit(&macha_store::AuditQuery { approval_id: Some(id), ..Default::default() })?;
                Ok(serde_json::json!({"approval": a, "audit": audit}))
            }
            Request::Approve { id, note } => {
                let (decision, work) = engine.approve(id, &who, note.as_deref(), now)?;
                let action_id = work.as_ref().map(|w| w.action_id);
                ctx.spawn_work(work.into_iter().collect());
                Ok(serde_json::json!({"approval_id": id, "decision": decision, "action_id": action_id}))
            }
            Request::Reject { id, note } => {
                engine.reject(id, &who, note.as_deref(), now)?;
                Ok(serde_json::json!({"approval_id": id, "state": "rejected"}))
            }
            Request::QueryAudit { query } => Ok(v(&engine.store().query_audit(&query)?)),
            Request::PruneAudit { upto_id, hash } => Ok(v(&engine.store_mut().prune_audit(upto_id, &hash, &who, now)?)),
            Request::ListPrompts { request_id, limit } => crate::agent::list_prompts(engine, request_id, limit),
            Request::ListHosts | Request::ShowHost { .. } | Request::AdmitHost { .. } | Request::ForgetHost { .. } => {
                ctx.fleet.api(engine, request, &who)
            }
            Request::ScanHost { .. } | Request::TrustHost { .. } => {
                Err(BadRequest(format!("{} is answered after a key scan", request.op())).into())
            }
            Request::Ask { .. } | Request::Chat { .. } | Request::Discuss { .. } => {
                Err(BadRequest(format!("{} is answered as a stream", request.op())).into())
            }
        }
    }
    .await;
    match result {
        Ok(data) => Response::ok(data),
        Err(e) => {
            let code = if e.downcast_ref::<NotFound>().is_some() {
                ErrorCode::NotFound
            } else if let Some(se) = e.downcast_ref::<macha_store::StoreError>() {
                match se {
                    macha_store::StoreError::NotFound { .. } => ErrorCode::NotFound,
                    macha_store::StoreError::Conflict { .. }
                    | macha_store::StoreError::IllegalTransition { .. }
                    | macha_store::StoreError::ApprovalExpired { .. } => ErrorCode::Conflict,
                    macha_store::StoreError::Invalid { .. } => ErrorCode::BadRequest,
                    _ => ErrorCode::Internal,
                }
            } else if e.downcast_ref::<BadRequest>().is_some() {
                ErrorCode::BadRequest
            } else {
                ErrorCode::Internal
            };
            Response::err(code, format!("{e:#}"))
        }
    }
}

/// Refuses a request that needs an admin, and audits the refusal.
fn deny(engine: &mut Engine, request: &Request, peer: Peer) -> Response {
    let who = server::peer_name(peer);
    let summary = format!("denied {} to {who}: not root and not in the admin group", request.op());
    let audit = NewAudit::new(crate::now(), AuditKind::AuthDenied, Severity::Warning, "local", summary.clone())
        .with_payload(serde_json::json!({"uid": peer.uid, "gid": peer.gid, "pid": peer.pid, "request": request}));
    if let Err(e) = engine.store_mut().append_audit(&audit) {
        tracing::error!("cannot audit a denial: {e}");
    }
    tracing::warn!(uid = peer.uid, "{summary}");
    Response::err(ErrorCode::Denied, format!("permission denied: {} needs root or the admin group", request.op()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadRequest(String);

fn parse_list<T>(items: &[String], parse: impl Fn(&str) -> Option<T>) -> anyhow::Result<Vec<T>> {
    items.iter().map(|s| parse(s).ok_or_else(|| BadRequest(format!("unknown state {s:?}")).into())).collect()
}

fn v<T: serde::Serialize>(x: &T) -> serde_json::Value {
    serde_json::to_value(x).unwrap_or(serde_json::Value::Null)
}

/// Follows systemd's unit signals, forever: on loss, marks the link down, reconnects with backoff
/// (1 s doubling to 60 s), and reports both transitions to the loop.
async fn watch_units(
    link: Arc<observe::SystemdLink>,
    config: Config,
    tx: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    let mut lost = false;
    loop {
        let systemd = match link.get() {
            Ok(s) => Ok(s),
            Err(_) => observe::connect_systemd(&config).await,
        };
        let subscribed = match systemd {
            Ok(s) => s.subscribe().await.map(|events| (s, events)).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match subscribed {
            Ok((s, mut events)) => {
                link.set(Ok(s));
                backoff = Duration::from_secs(1);
                if std::mem::take(&mut lost) {
                    let _ = tx.send(Event::UnitStreamRestored).await;
                }
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        ev = events.next() => match ev {
                            Ok(e) => {
                                // Only state changes matter here; job ends are the executor's.
                                if let Some(active_state) = e.active_state.filter(|_| e.job_result.is_none()) {
                                    let _ = tx.send(Event::Unit { unit: e.unit, active_state, result: e.result }).await;
                                }
                            }
                            Err(e) => {
                                link.set(Err(format!("connection lost: {e}")));
                                let _ = tx.send(Event::UnitStreamLost(e.to_string())).await;
                                lost = true;
                                break;
                            }
                        }
                    }
                }
            }
            Err(reason) => {
                if !lost {
                    let _ = tx.send(Event::UnitStreamLost(reason.clone())).await;
                    lost = true;
                }
                link.set(Err(reason));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}
