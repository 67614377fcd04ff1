//! The agent in the daemon: the request scheduler, the tools as the daemon implements them, and
//! what the event loop does for the agent (proposals, records, conversations).
//!
//! The model never executes anything. Its one proposing tool becomes a
//! [`ProposedAction`](macha_core::ProposedAction) with [`Origin::Model`] that goes through
//! [`Engine::propose`] — the same policy gate as every rule and person. The agent talks to the
//! daemon only through its own messages ([`AgentMsg`]): store and engine work ([`AgentCall`]) runs
//! on the engine thread, so "one writer" holds; observation for the tools ([`ObserveCall`]) runs in
//! tasks. The cycle never waits for the
//! model: an analysis is queued and runs later; when it fails, the issue's trail and an alert say
//! `analysis unavailable: <reason>`, and nothing is resolved because of it.

use crate::api::reply::{Analysis, ChatAnswer, PromptLog, StreamEvent};
use crate::api::{ErrorCode, Request, Response, StreamLine, ops};
use crate::config::{Config, LlmBackend};
use crate::engine::{Engine, Work};
use crate::observe::Sources;
use macha_agent::backend::ollama::OllamaBackend;
use macha_agent::backend::openai::OpenAiBackend;
use macha_agent::backend::{Backend, Timeouts};
use macha_agent::budget::Budget;
use macha_agent::message::{GenOptions, Message};
use macha_agent::output::{self, Diagnosis, Learnings};
use macha_agent::prompt::{self, ContextBlock, IncidentItem};
use macha_agent::runner::{AgentEvent, PromptRecord, RunConfig, Runner, ToolHost, ToolMode};
use macha_agent::schedule::{Next, Priority, Queue};
use macha_agent::tools::{FileAllowList, ToolCall, ToolName};
use macha_agent::{Redactor, ack};
use macha_core::HostName;
use macha_core::action::{Action, Origin};
use macha_core::snapshot::Snapshot;
use macha_store::{AuditKind, NewAgentRequest, NewAudit, NewPrompt, Severity};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most model calls in one turn.
const MAX_STEPS: usize = 8;
/// How long a request may wait in the queue before it is dropped as expired.
const QUEUE_WAIT: Duration = Duration::from_secs(600);
/// Most bytes one `read_file` or `read_logs` call reads.
const READ_MAX: u64 = 16 * 1024 * 1024;

/// Where streamed lines for a socket client go.
pub type Sink = mpsc::UnboundedSender<StreamLine>;

/// What the agent sends the daemon.
#[derive(Debug)]
pub enum AgentMsg {
    /// Store and engine work (the engine thread).
    Engine(AgentCall),
    /// Observation for a tool (a task).
    Observe(ObserveCall),
}

/// Observation the model's tools ask for.
#[derive(Debug)]
pub enum ObserveCall {
    /// A fresh snapshot of this host.
    Snapshot { reply: oneshot::Sender<Box<Snapshot>> },
    /// One unit's state from systemd.
    UnitStatus { unit: macha_core::UnitName, reply: oneshot::Sender<Result<String, String>> },
}

/// What the agent asks of the engine (the only place that touches the store).
#[derive(Debug)]
pub enum AgentCall {
    Start {
        id: i64,
        model: String,
    },
    Finish {
        id: i64,
        outcome: Result<String, String>,
        audits: Vec<(Option<i64>, NewAudit)>,
        /// Answered once the engine has recorded this and everything the job sent before it (its
        /// conversation turns): only then does the person get the answer, so the next message of a
        /// conversation always finds the previous turn in the store.
        recorded: Option<oneshot::Sender<()>>,
    },
    Record(Box<NewPrompt>),
    Cache {
        request_id: i64,
        tool: String,
        text: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Cached {
        id: String,
        offset: u64,
        len: usize,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// `queue_only`: the model works for a viewer; whatever the policy says, nothing executes.
    Propose {
        action: Box<Action>,
        issue_id: Option<i64>,
        correlation_id: String,
        queue_only: bool,
        reply: oneshot::Sender<String>,
    },
    Converse {
        conversation: String,
        approval_id: Option<i64>,
        turns: Vec<(String, String, Option<String>)>,
    },
    /// Learnings about `issue_id`, whose remediation was verified (merged into the knowledge base).
    Learn {
        entries: Vec<macha_knowledge::kb::Draft>,
        issue_id: Option<i64>,
        source: String,
    },
    /// A knowledge tool answered from the store: its text and the ids a person can open. A
    /// search's query comes embedded (or with why it is keyword-only).
    Knowledge {
        call: ToolCall,
        query: crate::hybrid::QueryVector,
        reply: oneshot::Sender<Result<(String, Vec<String>), String>>,
    },
    /// The fleet map (all of it, or one host's part), as text.
    FleetMap {
        host: Option<HostName>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A diagnosis cited these knowledge entries for these issues (`kb_record_use`).
    KbUses {
        entries: Vec<i64>,
        issue_ids: Vec<i64>,
    },
    /// The model's `send_notification` (already redacted): queued, or refused with why.
    Notify {
        args: macha_agent::tools::NotificationArgs,
        why: String,
        reply: oneshot::Sender<String>,
    },
}

#[derive(Debug, Clone)]
enum Mode {
    Chat,
    Ask,
    Discuss { approval_id: i64, context: String },
}

#[derive(Debug)]
enum JobKind {
    Analysis {
        items: Vec<IncidentItem>,
        context: Vec<ContextBlock>,
        /// What Macha knows about it (recent changes, the runbook catalog, knowledge entries and
        /// similar past issues), fenced in the prompt.
        knowledge: Vec<ContextBlock>,
        /// The citation ids the knowledge blocks carry.
        offered_ids: Vec<String>,
        /// The evidence hash (the answer cache's key).
        evidence: String,
        correlation_id: String,
    },
    /// `admin`: whether the person may let the model's proposals run by the policy; a viewer's
    /// conversation has its proposals queued for an admin, whatever `llm.may_execute` allows.
    Converse {
        mode: Mode,
        conversation: String,
        history: Vec<Message>,
        text: String,
        who: String,
        admin: bool,
    },
    Learning {
        prompt: String,
        source: String,
        issue_id: Option<i64>,
    },
}

#[derive(Debug)]
struct Job {
    request_id: i64,
    priority: Priority,
    queued_at: Instant,
    kind: JobKind,
    sink: Option<Sink>,
}

struct Shared {
    backend: Arc<dyn Backend>,
    backend_name: &'static str,
    redactor: Redactor,
    config: Config,
    allow: FileAllowList,
    events: mpsc::Sender<AgentMsg>,
    /// The last failure and when, for the cycle report.
    last_error: Mutex<Option<String>>,
    nonce_seed: RandomState,
    nonce_counter: AtomicU64,
    /// The BATCH work's embedding model: the searches embed their queries with it.
    batch: Arc<crate::batch::Batch>,
}

/// The daemon's handle on the agent.
#[derive(Clone)]
pub struct AgentService {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AgentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentService").field("backend", &self.shared.backend.describe()).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The backend the configuration names.
pub fn backend(config: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    let t = Timeouts::from_request(config.llm.timeout);
    Ok(match config.llm.backend {
        LlmBackend::Ollama => Arc::new(
            OllamaBackend::new(&config.llm.url, t)?
                .with_answer_max(usize::try_from(config.llm.answer_max_bytes).unwrap_or(usize::MAX)),
        ),
        LlmBackend::Openai => {
            let key = match &config.llm.api_key_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::format_err!("llm.api_key_file {}: {e}", p.display()))?,
                ),
                None => None,
            };
            Arc::new(
                OpenAiBackend::new(&config.llm.url, key, t)?
                    .with_answer_max(usize::try_from(config.llm.answer_max_bytes).unwrap_or(usize::MAX)),
            )
        }
    })
}

impl AgentService {
    /// Starts the scheduler task, if the agent is enabled.
    pub fn start(
        config: &Config,
        redactor: Redactor,
        events: mpsc::Sender<AgentMsg>,
        tracker: &TaskTracker,
        stop: CancellationToken,
        batch: Arc<crate::batch::Batch>,
    ) -> anyhow::Result<Option<AgentService>> {
        if !config.llm.enable {
            return Ok(None);
        }
        let shared = Arc::new(Shared {
            backend: backend(config)?,
            backend_name: match config.llm.backend {
                LlmBackend::Ollama => "ollama",
                LlmBackend::Openai => "openai",
            },
            redactor,
            config: config.clone(),
            allow: FileAllowList::new(&config.llm.readable_paths),
            events,
            last_error: Mutex::new(None),
            nonce_seed: RandomState::new(),
            nonce_counter: AtomicU64::new(0),
            batch,
        });
        let (tx, rx) = mpsc::channel(256);
        tracker.spawn(scheduler(rx, Arc::clone(&shared), tracker.clone(), stop));
        Ok(Some(AgentService { jobs: tx, shared }))
    }

    fn queue(&self, job: Job) -> Result<(), String> {
        self.jobs.try_send(job).map_err(|e| format!("the agent's queue is full or closed: {e}"))
    }
}

fn now_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The scheduler: one queue per backend (there is one backend), INTERACTIVE before AUTONOMOUS
/// before BATCH, at most `llm.concurrency` requests at once, deadlines while waiting.
async fn scheduler(mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>, tracker: TaskTracker, stop: CancellationToken) {
    let epoch = Instant::now();
    let limit = usize::try_from(shared.config.llm.concurrency).unwrap_or(1);
    let mut queue: Queue<Job> = Queue::new(limit);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    loop {
        loop {
            match queue.next(now_ms(epoch)) {
                Next::Run { item, .. } => {
                    let shared = Arc::clone(&shared);
                    let done = done_tx.clone();
                    let stop = stop.clone();
                    tracker.spawn(async move {
                        run_job(&shared, item, stop).await;
                        let _ = done.send(());
                    });
                }
                Next::Expired { item, .. } => {
                    let reason = format!("it waited longer than {} s in the queue", QUEUE_WAIT.as_secs());
                    fail_job(&shared, &item, &reason).await;
                }
                Next::Idle => break,
            }
        }
        macha_prom::publish(|m| m.agent_queue(queue.queued()));
        let wake = queue
            .next_deadline()
            .map_or(Duration::from_secs(3600), |d| Duration::from_millis(d.saturating_sub(now_ms(epoch))));
        tokio::select! {
            () = stop.cancelled() => return,
            job = rx.recv() => match job {
                Some(job) => {
                    let deadline = now_ms(epoch) + u64::try_from(QUEUE_WAIT.as_millis()).unwrap_or(u64::MAX);
                    let id = u64::try_from(job.request_id).unwrap_or(0);
                    let sink = job.sink.clone();
                    let waited = job.queued_at.elapsed();
                    queue.push(id, job.priority, Some(deadline.saturating_sub(u64::try_from(waited.as_millis()).unwrap_or(0))), job);
                    if let (Some(sink), Some(position)) = (sink, queue.position(id)) {
                        let busy = queue.running();
                        if position + busy > 0 {
                            let _ = sink.send(StreamLine::Event(StreamEvent::Queued { position: position + busy }));
                        }
                    }
                }
                None => return,
            },
            Some(()) = done_rx.recv() => queue.finish(),
            () = tokio::time::sleep(wake) => {}
        }
    }
}

impl Shared {
    fn nonce(&self) -> String {
        let n = self.nonce_counter.fetch_add(1, Ordering::Relaxed);
        let a = self.nonce_seed.hash_one((n, std::process::id(), Instant::now()));
        let b = self.nonce_seed.hash_one((a, n));
        format!("{a:016x}{b:08x}").chars().take(20).collect()
    }

    async fn call(&self, call: AgentCall) {
        self.send(AgentMsg::Engine(call)).await;
    }

    async fn send(&self, msg: AgentMsg) {
        if self.events.send(msg).await.is_err() {
            tracing::debug!("the event loop is gone; an agent record was dropped");
        }
    }

    fn run_config(&self, model: &str, purpose: &str, stream: bool) -> RunConfig {
        RunConfig {
            model: model.to_owned(),
            budget: Budget::new(self.config.llm.context_tokens),
            options: GenOptions {
                temperature: 0.1,
                num_ctx: self.config.llm.context_tokens,
                max_tokens: 1024,
                seed: None,
            },
            tool_mode: ToolMode::parse(&self.config.llm.tool_mode).unwrap_or(ToolMode::Native),
            max_steps: MAX_STEPS,
            stream,
            purpose: purpose.to_owned(),
        }
    }
}

async fn fail_job(shared: &Shared, job: &Job, reason: &str) {
    let (audits, _) = outcome_audits(job, Err(reason));
    shared
        .call(AgentCall::Finish { id: job.request_id, outcome: Err(reason.to_owned()), audits, recorded: None })
        .await;
    if let Some(sink) = &job.sink {
        let _ =
            sink.send(StreamLine::Done(Response::err(ErrorCode::Unavailable, format!("model unavailable: {reason}"))));
    }
}

/// The audit records of a finished job: per issue for analyses, plus an alert on failure.
fn outcome_audits(job: &Job, outcome: Result<&str, &str>) -> (Vec<(Option<i64>, NewAudit)>, Option<String>) {
    let now = crate::now();
    let mut audits = Vec::new();
    let JobKind::Analysis { items, correlation_id, evidence, .. } = &job.kind else {
        if let Err(reason) = outcome {
            let a = NewAudit::new(
                now,
                AuditKind::Alert,
                Severity::Warning,
                "local",
                format!("model unavailable: {reason}"),
            )
            .with_payload(serde_json::json!({"agent_request": job.request_id}));
            audits.push((None, a));
        }
        return (audits, None);
    };
    match outcome {
        Ok(text) => {
            let d: Option<Diagnosis> = output::parse(text).ok();
            let line = d.as_ref().map_or_else(
                || text.chars().take(300).collect::<String>(),
                |d| {
                    let cause = if d.cause.trim().is_empty() { String::new() } else { format!("; cause: {}", d.cause) };
                    format!("{}{cause} (confidence {:?})", d.summary, d.confidence)
                },
            );
            for i in items {
                let a = NewAudit::new(now, AuditKind::Issue, Severity::Info, &i.host, format!("analysis: {line}"))
                    .with_correlation_id(correlation_id)
                    .with_subject(&i.subject)
                    .with_payload(
                        serde_json::json!({"agent_request": job.request_id, "diagnosis": d, "evidence": evidence}),
                    );
                audits.push((Some(i.issue_id), a));
            }
            (audits, Some(line))
        }
        Err(reason) => {
            let summary = format!("analysis unavailable: {reason}");
            for i in items {
                let a = NewAudit::new(now, AuditKind::Issue, Severity::Warning, &i.host, summary.clone())
                    .with_correlation_id(correlation_id)
                    .with_subject(&i.subject)
                    .with_payload(serde_json::json!({"agent_request": job.request_id}));
                audits.push((Some(i.issue_id), a));
            }
            let ids: Vec<i64> = items.iter().map(|i| i.issue_id).collect();
            let alert = NewAudit::new(now, AuditKind::Alert, Severity::Warning, "local", summary)
                .with_correlation_id(correlation_id)
                .with_payload(serde_json::json!({"agent_request": job.request_id, "issues": ids}));
            audits.push((None, alert));
            (audits, None)
        }
    }
}

async fn run_job(shared: &Arc<Shared>, job: Job, stop: CancellationToken) {
    // The larger model analyses and talks with people; the fast one does batch work (learnings).
    let model = match &job.kind {
        JobKind::Analysis { .. } | JobKind::Converse { .. } => shared.config.llm.analysis_model.clone(),
        JobKind::Learning { .. } => shared.config.llm.triage_model.clone(),
    };
    shared.call(AgentCall::Start { id: job.request_id, model: model.clone() }).await;
    let asked = Instant::now();
    // The whole job is bounded; each model call is bounded by llm.timeout inside the backend.
    let limit = shared.config.llm.timeout.saturating_mul(3);
    let closed = async {
        match &job.sink {
            Some(s) => s.closed().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = execute(shared, &job, &model) => r,
        () = tokio::time::sleep(limit) => Err(format!("the request did not finish within {} s", limit.as_secs())),
        () = stop.cancelled() => Err("the daemon is stopping".to_owned()),
        () = closed => Err("the client went away".to_owned()),
    };
    match &result {
        Ok(_) => *lock(&shared.last_error) = None,
        Err(e) => {
            tracing::warn!(request_id = job.request_id, "agent request failed: {e}");
            *lock(&shared.last_error) = Some(e.clone());
        }
    }
    let tokens = result.as_ref().map_or((0, 0), |r| (r.turn.prompt_tokens, r.turn.completion_tokens));
    crate::prom::model_request(asked.elapsed(), result.is_ok(), tokens.0, tokens.1);
    let outcome = result.as_ref().map(|r| r.answer.as_str()).map_err(String::as_str);
    let (audits, _) = outcome_audits(&job, outcome);
    let (recorded, was_recorded) = oneshot::channel();
    shared
        .call(AgentCall::Finish {
            id: job.request_id,
            outcome: result.as_ref().map(|r| r.answer.clone()).map_err(Clone::clone),
            audits,
            recorded: Some(recorded),
        })
        .await;
    if let Some(sink) = &job.sink {
        // The answer goes out after the engine recorded the turn (bounded: a loop that is gone or
        // stuck does not hold the person's answer back for long).
        let _ = tokio::time::timeout(Duration::from_secs(10), was_recorded).await;
        // `ask`, `chat` and `discuss` share one reply type, `ChatAnswer`.
        let line = match result {
            Ok(r) => Response::reply::<ops::Chat>(&ChatAnswer {
                request_id: Some(job.request_id),
                answer: r.answer,
                conversation: match &job.kind {
                    JobKind::Converse { conversation, .. } => Some(conversation.clone()),
                    _ => None,
                },
                tools: r.turn.calls,
                model_calls: r.turn.steps,
                prompt_tokens: Some(r.turn.prompt_tokens),
                completion_tokens: Some(r.turn.completion_tokens),
                estimated_prompt_tokens: Some(r.turn.first_prompt_estimate),
                first_token_ms: r.turn.first_token_ms,
            }),
            Err(e) => {
                Response::err(ErrorCode::Unavailable, format!("model unavailable: {e} (request {})", job.request_id))
            }
        };
        let _ = sink.send(StreamLine::Done(line));
    }
}

struct Answer {
    answer: String,
    turn: macha_agent::runner::TurnResult,
}

async fn execute(shared: &Arc<Shared>, job: &Job, model: &str) -> Result<Answer, String> {
    let events = job.sink.as_ref().map(|sink| {
        let (tx, mut rx) = mpsc::unbounded_channel::<AgentEvent>();
        let sink = sink.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if sink.send(StreamLine::Event(crate::wire::agent_event(&e))).is_err() {
                    return;
                }
            }
        });
        tx
    });
    let issue_ids = match &job.kind {
        JobKind::Analysis { items, .. } => items.iter().map(|i| i.issue_id).collect(),
        _ => Vec::new(),
    };
    let correlation_id = match &job.kind {
        JobKind::Analysis { correlation_id, .. } => correlation_id.clone(),
        _ => crate::correlation_id(),
    };
    let queue_only = matches!(&job.kind, JobKind::Converse { admin: false, .. });
    let nonce = shared.nonce();
    let host = DaemonHost {
        shared: Arc::clone(shared),
        request_id: job.request_id,
        correlation_id,
        issue_ids,
        queue_only,
        nonce: nonce.clone(),
        returned: Mutex::new(std::collections::BTreeSet::new()),
    };
    match &job.kind {
        JobKind::Analysis { items, context, knowledge, offered_ids, .. } => {
            lock(&host.returned).extend(offered_ids.iter().cloned());
            let mut context = context.clone();
            // The failed units' own recent log lines, read now (not in the cycle).
            for i in items.iter().filter(|i| i.check == "failed_unit" || i.check == "restart_loop").take(2) {
                if let Ok(unit) = macha_core::UnitName::parse(&i.subject) {
                    let args = macha_agent::tools::LogsArgs { unit: Some(unit), lines: Some(15), ..Default::default() };
                    if let Ok(text) = host.read_logs(args).await {
                        context.push(ContextBlock { source: format!("journal:{}", i.subject), text });
                    }
                }
            }
            let checks: Vec<&str> = items.iter().map(|i| i.check.as_str()).collect();
            let kinds = prompt::incident_action_kinds(&checks);
            let names = prompt::incident_tools(&checks);
            let mut messages = vec![
                Message::system(prompt::DIAGNOSE),
                Message::user(prompt::incident_with_knowledge(items, &context, knowledge, &shared.redactor, &nonce)),
            ];
            // `propose_action` accepts only the offered kinds, on the incident's hosts.
            let scope = macha_agent::tools::ProposalScope {
                kinds: kinds.clone(),
                hosts: items.iter().filter_map(|i| HostName::parse(&i.host).ok()).collect(),
            };
            let runner = Runner::new(
                &*shared.backend,
                &host,
                &shared.redactor,
                shared.run_config(model, "analysis", false),
                events,
                nonce,
            )
            .with_proposal_scope(scope);
            let schema = output::schema::<Diagnosis>();
            let check = |t: &str| output::parse::<Diagnosis>(t).map(|_| ()).map_err(|e| e.to_string());
            let offered = macha_agent::tools::incident_specs(&names, &kinds);
            let turn = runner
                .run_with_tools(&mut messages, &names, offered, Some(&schema), Some(&check))
                .await
                .map_err(|e| e.to_string())?;
            // Citations: only ids this conversation returned are kept; the knowledge entries
            // cited are recorded as used for the issues (their outcome moves the confidence).
            let mut answer = turn.text.clone();
            if let Ok(mut d) = output::parse::<Diagnosis>(&turn.text) {
                let dropped = d.keep_citations(&lock(&host.returned));
                if !dropped.is_empty() {
                    tracing::info!(request_id = job.request_id, "citations dropped (not returned here): {dropped:?}");
                }
                let entries: Vec<i64> =
                    d.citations.iter().filter_map(|c| c.strip_prefix("kb:")?.parse().ok()).collect();
                if !entries.is_empty() {
                    let issue_ids = items.iter().map(|i| i.issue_id).collect();
                    shared.call(AgentCall::KbUses { entries, issue_ids }).await;
                }
                answer = serde_json::to_string(&d).unwrap_or(answer);
            }
            Ok(Answer { answer, turn })
        }
        JobKind::Converse { mode, conversation, history, text, who, .. } => {
            let system = match mode {
                Mode::Chat | Mode::Ask => prompt::CHAT.to_owned(),
                Mode::Discuss { context, .. } => {
                    format!(
                        "{}\n{}",
                        prompt::DISCUSS,
                        prompt::fence("approval", &nonce, &shared.redactor.apply(context))
                    )
                }
            };
            let mut messages = vec![Message::system(system)];
            messages.extend(history.iter().cloned());
            let user_text = shared.redactor.apply(text);
            messages.push(Message::user(user_text.clone()));
            let stream = events.is_some();
            let purpose = match mode {
                Mode::Chat => "chat",
                Mode::Ask => "ask",
                Mode::Discuss { .. } => "discuss",
            };
            let runner = Runner::new(
                &*shared.backend,
                &host,
                &shared.redactor,
                shared.run_config(model, purpose, stream),
                events,
                nonce,
            );
            let offered = chat_tools(&shared.config);
            let turn = runner.run(&mut messages, &offered, None, None).await.map_err(|e| e.to_string())?;
            let approval_id = match mode {
                Mode::Discuss { approval_id, .. } => Some(*approval_id),
                _ => None,
            };
            shared
                .call(AgentCall::Converse {
                    conversation: conversation.clone(),
                    approval_id,
                    turns: vec![
                        ("user".into(), user_text, Some(who.clone())),
                        ("assistant".into(), shared.redactor.apply(&turn.text), None),
                    ],
                })
                .await;
            Ok(Answer { answer: turn.text.clone(), turn })
        }
        JobKind::Learning { prompt: text, source, issue_id } => {
            let mut messages = vec![Message::system(prompt::LEARN), Message::user(shared.redactor.apply(text))];
            let runner = Runner::new(
                &*shared.backend,
                &host,
                &shared.redactor,
                shared.run_config(model, "learning", false),
                events,
                nonce,
            );
            let schema = output::schema::<Learnings>();
            let check = |t: &str| output::parse::<Learnings>(t).map(|_| ()).map_err(|e| e.to_string());
            let turn = runner.run(&mut messages, &[], Some(&schema), Some(&check)).await.map_err(|e| e.to_string())?;
            let learned: Learnings = output::parse(&turn.text).map_err(|e| e.to_string())?;
            let entries = learned
                .learnings
                .iter()
                .filter_map(|l| {
                    let category = macha_knowledge::kb::Category::parse(l.category.as_str())?;
                    Some(macha_knowledge::kb::Draft {
                        topic: shared.redactor.apply(&l.topic),
                        content: shared.redactor.apply(&l.content),
                        category,
                        use_when: String::new(),
                        confidence: l.confidence,
                    })
                })
                .collect();
            shared.call(AgentCall::Learn { entries, issue_id: *issue_id, source: source.clone() }).await;
            Ok(Answer { answer: turn.text.clone(), turn })
        }
    }
}

/// The daemon's implementation of the model's tools.
struct DaemonHost {
    shared: Arc<Shared>,
    request_id: i64,
    correlation_id: String,
    issue_ids: Vec<i64>,
    /// The model works for a viewer: its proposals are queued for an admin, never executed.
    queue_only: bool,
    /// The request's nonce (runbook fences).
    nonce: String,
    /// The citation ids the conversation's prompt and tool results carried.
    returned: Mutex<std::collections::BTreeSet<String>>,
}

impl DaemonHost {
    async fn snapshot(&self) -> Result<Snapshot, String> {
        let (reply, rx) = oneshot::channel();
        self.shared.send(AgentMsg::Observe(ObserveCall::Snapshot { reply })).await;
        rx.await.map(|b| *b).map_err(|_| "the daemon is stopping".to_owned())
    }

    /// Journal lines through the one command builder (`journal.directory` included), spawned
    /// with a cleared environment; redacted as a whole sequence first (a key split over entries is
    /// masked), and only then filtered, so a filter never picks secret lines out of their context.
    async fn read_logs(&self, a: macha_agent::tools::LogsArgs) -> Result<String, String> {
        let journalctl = crate::observe::journalctl_path(&self.shared.config)?;
        let mut tools = macha_core::command::Tools::new().with("journalctl", &journalctl.display().to_string());
        if let Some(d) = &self.shared.config.journal_directory {
            tools = tools.with_journal_directory(&d.display().to_string());
        }
        let query = macha_core::command::LogQuery {
            unit: a.unit.clone(),
            priority: a.priority.map(macha_agent::tools::LogPriority::level),
            lines: a.lines.unwrap_or(100).min(macha_agent::tools::LOG_LINES_MAX),
            since_minutes: a.since_minutes.unwrap_or(60),
        };
        let cmd = macha_core::command::read_logs(&query, &tools).map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new(cmd.program())
            .args(cmd.argv())
            .env_clear()
            .envs(macha_core::command::SPAWN_ENV)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", cmd.program()))?;
        let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
            .await
            .map_err(|_| "journalctl did not finish within 15 s".to_owned())?
            .map_err(|e| format!("cannot run {}: {e}", cmd.program()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(4096)]).into_owned();
            return Err(format!("journalctl failed: {}", self.shared.redactor.apply(err.trim())));
        }
        let text = String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(READ_MAX as usize)]).into_owned();
        let red = self.shared.redactor.apply(&text);
        Ok(match &a.grep {
            Some(g) => red.lines().filter(|l| l.contains(g.as_str())).collect::<Vec<_>>().join("\n"),
            None => red,
        })
    }

    /// An allow-listed file, opened beneath its allowed root without a gap between check and
    /// open (`crate::beneath`).
    async fn read_file(&self, path: String) -> Result<String, String> {
        let allow = self.shared.allow.clone();
        tokio::task::spawn_blocking(move || crate::beneath::read(&allow, &path, READ_MAX))
            .await
            .map_err(|e| format!("the read failed: {e}"))?
    }

    async fn unit_status(&self, unit: macha_core::UnitName) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.shared.send(AgentMsg::Observe(ObserveCall::UnitStatus { unit, reply })).await;
        rx.await.unwrap_or_else(|_| Err("the daemon is stopping".into()))
    }

    /// A TCP connect to a port of a configured service: `llm.check_ports` by host, plus a
    /// configured host's SSH port. Any other port is refused (the model cannot scan).
    async fn check_network(&self, host: HostName, port: u16) -> Result<String, String> {
        let host = &host;
        let config = &self.shared.config;
        let (address, mut allowed) = if host.is_local() {
            ("127.0.0.1".to_owned(), Vec::new())
        } else {
            config
                .hosts
                .iter()
                .find(|h| &h.name == host)
                .map(|h| (h.address.clone(), vec![h.port]))
                .ok_or_else(|| format!("{host} is not a known host (see list_hosts)"))?
        };
        allowed.extend(config.llm.check_ports.get(host.as_str()).into_iter().flatten().copied());
        allowed.sort_unstable();
        allowed.dedup();
        if !allowed.contains(&port) {
            let list = allowed.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "port {port} of {host} is not a configured service port; allowed: {}",
                if list.is_empty() { "none (llm.check_ports lists them)".to_owned() } else { list }
            ));
        }
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect((address.as_str(), port)))
            .await
        {
            Ok(Ok(_)) => {
                Ok(format!("{host} ({address}) port {port}: open (connected in {} ms)", started.elapsed().as_millis()))
            }
            Ok(Err(e)) => Ok(format!("{host} ({address}) port {port}: not reachable: {e}")),
            Err(_) => Ok(format!("{host} ({address}) port {port}: no answer within 3 s")),
        }
    }

    async fn ask_loop<T>(&self, call: AgentCall, rx: oneshot::Receiver<T>) -> Option<T> {
        self.shared.call(call).await;
        rx.await.ok()
    }

    async fn run_tool(&self, call: ToolCall) -> Result<String, String> {
        let json = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
        match call {
            ToolCall::GetSnapshot(a) => {
                let snap = self.snapshot().await?;
                let mut v = serde_json::to_value(&snap).map_err(|e| e.to_string())?;
                Ok(match a.section {
                    Some(s) => json(v[s.as_str()].take()),
                    None => {
                        if let Some(o) = v.as_object_mut() {
                            o.remove("processes");
                            o.remove("hardware");
                        }
                        serde_json::to_string(&v).unwrap_or_default()
                    }
                })
            }
            ToolCall::UnitStatus(a) => self.unit_status(a.unit).await,
            ToolCall::ReadLogs(a) => self.read_logs(a).await,
            ToolCall::ReadFile(a) => self.read_file(a.path).await,
            ToolCall::Hardware => {
                let snap = self.snapshot().await?;
                Ok(json(serde_json::to_value(&snap.hardware).unwrap_or_default()))
            }
            ToolCall::CheckNetwork(a) => self.check_network(a.host, a.port).await,
            ToolCall::ListHosts => {
                let mut lines = vec!["local (this host)".to_owned()];
                lines.extend(self.shared.config.hosts.iter().map(|h| format!("{} ({})", h.name, h.address)));
                Ok(lines.join("\n"))
            }
            ToolCall::GetCachedOutput(a) => {
                let (reply, rx) = oneshot::channel();
                // One page fits the per-tool budget, so it goes to the model as it is.
                let len = Budget::new(self.shared.config.llm.context_tokens)
                    .tool_output_bytes()
                    .min(macha_agent::budget::CHUNK_BYTES)
                    .saturating_sub(128);
                let call = AgentCall::Cached { id: a.id, offset: a.offset.unwrap_or(0), len, reply };
                self.ask_loop(call, rx).await.unwrap_or_else(|| Err("the daemon is stopping".into()))
            }
            ToolCall::ReadConfig(a) => {
                let flake = self.shared.config.knowledge_flake.clone();
                let range = a.range().or(Some((1, macha_agent::tools::CONFIG_LINES_MAX)));
                let path = a.path.clone();
                let read =
                    tokio::task::spawn_blocking(move || macha_knowledge::read::read_config(&flake, &path, range))
                        .await
                        .map_err(|e| format!("the read failed: {e}"))?;
                // A refusal is an answer the model reads (as data), not a failure of the request.
                Ok(match read {
                    Ok(t) => {
                        let last = t.first + u32::try_from(t.lines.len()).unwrap_or(u32::MAX).saturating_sub(1);
                        let id = format!("config:{}:{}-{}", t.path, t.first, last.max(t.first));
                        lock(&self.returned).insert(id.clone());
                        let mut out = format!("{id} ({} lines in the file)\n", t.total_lines);
                        for (n, l) in t.lines.iter().enumerate() {
                            out.push_str(&format!("{:>5} {l}\n", t.first as usize + n));
                        }
                        out
                    }
                    Err(e) => format!("refused: {e}"),
                })
            }
            ToolCall::FetchRunbook(a) => {
                let dir = self.shared.config.knowledge_runbooks.clone();
                let catalog = tokio::task::spawn_blocking(move || macha_knowledge::runbooks::Catalog::load(Some(&dir)))
                    .await
                    .map_err(|e| format!("the catalog could not be read: {e}"))?;
                match catalog.get(&a.id) {
                    Some(r) => {
                        let id = format!("runbook:{}", r.id);
                        lock(&self.returned).insert(id.clone());
                        Ok(format!("{id}\n{}", macha_knowledge::runbooks::render_for_prompt(r, &self.nonce)))
                    }
                    None => {
                        let ids: Vec<String> = catalog.entries().into_iter().map(|e| e.id).collect();
                        Err(format!("there is no runbook {:?}; the catalog: {}", a.id, ids.join(", ")))
                    }
                }
            }
            call @ (ToolCall::SearchConfigs(_)
            | ToolCall::SearchKnowledge(_)
            | ToolCall::SimilarIssues(_)
            | ToolCall::RecentChanges(_)) => {
                // A search's query is embedded here, off the engine thread (the model may be remote).
                let query = match &call {
                    ToolCall::SearchConfigs(a) => self.shared.batch.embed_query(&a.query).await,
                    ToolCall::SearchKnowledge(a) => self.shared.batch.embed_query(&a.query).await,
                    _ => crate::hybrid::QueryVector::Unavailable("not a search".to_owned()),
                };
                let (reply, rx) = oneshot::channel();
                let (text, ids) = self
                    .ask_loop(AgentCall::Knowledge { call, query, reply }, rx)
                    .await
                    .unwrap_or_else(|| Err("the daemon is stopping".into()))?;
                lock(&self.returned).extend(ids);
                Ok(text)
            }
            ToolCall::FleetMap(a) => {
                let (reply, rx) = oneshot::channel();
                let call = AgentCall::FleetMap { host: a.host, reply };
                self.ask_loop(call, rx).await.unwrap_or_else(|| Err("the daemon is stopping".into()))
            }
            ToolCall::ProposeAction(action) => {
                let (reply, rx) = oneshot::channel();
                let call = AgentCall::Propose {
                    action,
                    issue_id: pick_issue(&self.issue_ids),
                    correlation_id: self.correlation_id.clone(),
                    queue_only: self.queue_only,
                    reply,
                };
                Ok(self.ask_loop(call, rx).await.unwrap_or_else(|| "not decided: the daemon is stopping".into()))
            }
            ToolCall::SendNotification(mut args) => {
                // Redacted like everything else that leaves the daemon.
                args.title = self.shared.redactor.apply(&args.title);
                args.message = self.shared.redactor.apply(&args.message);
                let why = match self.issue_ids.as_slice() {
                    [] => format!("agent request {}", self.request_id),
                    ids => format!(
                        "agent request {}, about issue {}",
                        self.request_id,
                        ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                    ),
                };
                let (reply, rx) = oneshot::channel();
                let call = AgentCall::Notify { args, why, reply };
                Ok(self.ask_loop(call, rx).await.unwrap_or_else(|| "not sent: the daemon is stopping".into()))
            }
        }
    }
}

/// The tools of a chat, a question or a discussion: every tool, `send_notification` only when
/// `notifications.model_may_send` allows it.
pub fn chat_tools(config: &Config) -> Vec<ToolName> {
    ToolName::ALL
        .into_iter()
        .filter(|t| *t != ToolName::SendNotification || config.notifications.model_may_send)
        .collect()
}

fn pick_issue(ids: &[i64]) -> Option<i64> {
    if ids.len() == 1 { ids.first().copied() } else { None }
}

impl ToolHost for DaemonHost {
    fn run(&self, call: ToolCall) -> futures_util::future::BoxFuture<'_, Result<String, String>> {
        Box::pin(self.run_tool(call))
    }

    fn cache(&self, text: String) -> futures_util::future::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let call = AgentCall::Cache { request_id: self.request_id, tool: "tool".into(), text, reply };
            self.ask_loop(call, rx).await.unwrap_or_else(|| Err("the daemon is stopping".into()))
        })
    }

    fn record(&self, rec: PromptRecord) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            let (prompt_tokens, completion_tokens, response) = match &rec.response {
                Some(r) => (r.prompt_tokens, r.completion_tokens, serde_json::to_value(r).ok()),
                None => (None, None, None),
            };
            let p = NewPrompt {
                request_id: self.request_id,
                seq: rec.seq,
                ts: crate::now(),
                purpose: rec.purpose,
                model: rec.model,
                backend: self.shared.backend_name.to_owned(),
                request: rec.request,
                estimated_tokens: u64::try_from(rec.estimated_tokens).unwrap_or(u64::MAX),
                prompt_tokens,
                completion_tokens,
                response,
                error: rec.error,
            };
            self.shared.call(AgentCall::Record(Box::new(p))).await;
        })
    }
}

/// What the event loop does for the agent. Returns work a proposal permitted.
/// Serves a tool's observation (in a task of its own).
pub async fn observe(sources: &Sources, host: &HostName, call: ObserveCall) {
    match call {
        ObserveCall::Snapshot { reply } => {
            let _ = reply.send(Box::new(sources.collect(host, crate::now()).await));
        }
        ObserveCall::UnitStatus { unit, reply } => {
            let _ = reply.send(unit_status(sources, &unit).await);
        }
    }
}

/// What the fleet map needs beyond the store: the hosts' last connections and their resolved
/// addresses (the daemon gathers them when the `fleet_map` tool asks).
#[derive(Debug, Clone, Default)]
pub struct FleetInputs {
    pub connections: std::collections::BTreeMap<HostName, macha_core::snapshot::Connections>,
    pub addresses: std::collections::BTreeMap<HostName, Vec<std::net::IpAddr>>,
}

/// Carries out what the agent asks of the store and the engine (on the engine thread); returns the
/// work the policy permitted for a proposal. `fleet` gathers the fleet map's other inputs.
pub fn handle_call(engine: &mut Engine, call: AgentCall, fleet: &dyn Fn() -> FleetInputs) -> anyhow::Result<Vec<Work>> {
    let now = crate::now();
    match call {
        AgentCall::Start { id, model } => {
            if let Err(e) = engine.store_mut().start_agent_request(id, &model) {
                tracing::debug!("agent request {id}: {e}");
            }
        }
        AgentCall::Finish { id, outcome, audits, recorded } => {
            let o = outcome.as_ref().map(String::as_str).map_err(String::as_str);
            if let Err(reason) = &outcome {
                tracing::warn!(request_id = id, "{reason}");
            }
            let finished = engine.store_mut().finish_agent_request(id, o, now, &audits);
            if let Some(recorded) = recorded {
                let _ = recorded.send(());
            }
            finished?;
        }
        AgentCall::Record(p) => {
            engine.store_mut().record_prompt(&p)?;
        }
        AgentCall::Cache { request_id, tool, text, reply } => {
            let r = engine.store_mut().cache_output(Some(request_id), &tool, &text, now).map_err(|e| e.to_string());
            let _ = reply.send(r);
        }
        AgentCall::Cached { id, offset, len, reply } => {
            let r = match engine.store().cached_output(&id, offset, len) {
                Ok(Some((text, total))) => {
                    let end = offset + text.len() as u64;
                    Ok(format!(
                        "{text}\n[bytes {offset}-{end} of {total}{}]",
                        if end < total as u64 { "; more with a higher offset" } else { "" }
                    ))
                }
                Ok(None) => Err(format!("no cached output {id} (it may have expired)")),
                Err(e) => Err(e.to_string()),
            };
            let _ = reply.send(r);
        }
        AgentCall::Propose { action, issue_id, correlation_id, queue_only, reply } => {
            let (result, work) = if queue_only {
                engine.propose_queued(*action, Origin::Model, issue_id, now, &correlation_id)?
            } else {
                engine.propose(*action, Origin::Model, issue_id, now, &correlation_id)?
            };
            let d = &result.decision;
            let text = match (d.verdict, result.approval_id, result.action_id) {
                (macha_core::policy::Verdict::Execute, _, Some(id)) => {
                    format!("decided: execute — Macha runs it now (action {id}): {}", d.reason)
                }
                (macha_core::policy::Verdict::Execute, _, None) => {
                    format!("decided: execute (report only): {}", d.reason)
                }
                (macha_core::policy::Verdict::Approval, Some(id), _) => {
                    format!("decided: a person must approve it (approval {id}): {}", d.reason)
                }
                (macha_core::policy::Verdict::Approval, None, _) => format!("decided: needs a person: {}", d.reason),
                (macha_core::policy::Verdict::Deny, _, _) => format!("decided: refused: {}", d.reason),
            };
            let _ = reply.send(text);
            return Ok(work.into_iter().collect());
        }
        AgentCall::Notify { args, why, reply } => {
            let settings = engine.config().notifications.clone();
            let answer = crate::notify::model_message(engine.store_mut(), &settings, &args, &why, now)
                .unwrap_or_else(|e| format!("not sent: {e}"));
            let _ = reply.send(answer);
        }
        AgentCall::Converse { conversation, approval_id, turns } => {
            engine.store_mut().append_conversation(&conversation, approval_id, &turns, now)?;
        }
        AgentCall::Learn { entries, issue_id, source } => {
            let offered = entries.len();
            let kept = crate::knowledge::learn(engine.store_mut(), entries, issue_id, &source, now);
            tracing::info!("kept {kept} of {offered} learnings");
        }
        AgentCall::Knowledge { call, query, reply } => {
            let _ = reply.send(knowledge_tool(engine, call, &query, now));
        }
        AgentCall::FleetMap { host, reply } => {
            let _ = reply.send(fleet_map_tool(engine, host.as_ref(), &fleet()));
        }
        AgentCall::KbUses { entries, issue_ids } => {
            for id in &entries {
                for issue in &issue_ids {
                    if let Err(e) = engine.store_mut().kb_record_use(*id, *issue, now) {
                        tracing::warn!("knowledge use of entry {id} for issue {issue}: {e}");
                    }
                }
            }
        }
    }
    Ok(Vec::new())
}

async fn unit_status(sources: &Sources, unit: &macha_core::UnitName) -> Result<String, String> {
    let sd = sources.systemd.get().map_err(|e| format!("systemd unavailable: {e}"))?;
    let s = tokio::time::timeout(Duration::from_secs(10), sd.unit_state(unit))
        .await
        .map_err(|_| "systemd did not answer within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "unit: {}\ndescription: {}\nload: {}\nactive: {} ({})\nresult: {}\nrestarts: {}",
        s.name,
        s.description,
        s.load_state,
        s.active_state,
        s.sub_state,
        s.result.as_deref().unwrap_or("-"),
        s.n_restarts.map_or_else(|| "-".to_owned(), |n| n.to_string())
    ))
}

/// Deterministic context for an incident from the snapshot: the failed units' states and the
/// journal error lines that mention the issues' subjects.
fn incident_context(items: &[IncidentItem], snapshot: Option<&Snapshot>, redactor: &Redactor) -> Vec<ContextBlock> {
    let Some(snap) = snapshot else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(units) = snap.units.data() {
        for i in items {
            if let Some(u) = units.notable.iter().find(|u| u.name == i.subject) {
                out.push(ContextBlock {
                    source: format!("unit:{}", u.name),
                    text: format!(
                        "{}: load {}, active {} ({}), result {}, restarts {}",
                        u.name,
                        u.load_state,
                        u.active_state,
                        u.sub_state,
                        u.result.as_deref().unwrap_or("-"),
                        u.n_restarts.map_or_else(|| "-".to_owned(), |n| n.to_string())
                    ),
                });
            }
        }
    }
    if let Some(j) = snap.journal.data() {
        let stems: Vec<&str> = items.iter().map(|i| i.subject.trim_end_matches(".service")).collect();
        // Redacted as one sequence before filtering: a key logged line by line stays masked.
        let samples = redactor.redact_lines(&j.samples);
        let lines: Vec<&str> =
            samples.iter().map(String::as_str).filter(|s| stems.iter().any(|st| s.contains(st))).take(10).collect();
        if !lines.is_empty() {
            out.push(ContextBlock { source: "journal:errors".into(), text: lines.join("\n") });
        }
    }
    out
}

/// After a cycle or an event: if it opened new issues, queue an analysis (never waits for it).
/// Returns what the cycle report says about the analysis.
pub fn after_findings(
    agent: Option<&AgentService>,
    engine: &mut Engine,
    new_issues: &[i64],
    snapshot: Option<&Snapshot>,
    correlation_id: &str,
) -> Analysis {
    after_resolutions(agent, engine);
    let Some(agent) = agent else {
        return Analysis::Disabled;
    };
    if new_issues.is_empty() {
        let last_error = lock(&agent.shared.last_error).clone().map(|e| format!("analysis unavailable: {e}"));
        return Analysis::NotNeeded { reason: "no new issues".into(), last_error };
    }
    let mut items = Vec::new();
    for id in new_issues {
        if let Ok(Some(i)) = engine.store().get_issue(*id) {
            items.push(IncidentItem {
                issue_id: i.id,
                host: i.host,
                check: i.check_name,
                subject: i.subject,
                severity: i.severity.as_str().to_owned(),
                summary: i.summary,
            });
        }
    }
    let context = incident_context(&items, snapshot, &agent.shared.redactor);
    let evidence = evidence_of(&items, &context);
    if let Some(cached) = from_cache(engine, &agent.shared.config, &items, &evidence, correlation_id) {
        return cached;
    }
    let (knowledge, offered_ids) = incident_knowledge(engine, &items);
    let new = NewAgentRequest {
        kind: "analysis".into(),
        priority: Priority::Autonomous.as_str().into(),
        requested_by: "macha".into(),
        correlation_id: Some(correlation_id.to_owned()),
        issue_ids: new_issues.to_vec(),
        approval_id: None,
        conversation: None,
        created_at: crate::now(),
    };
    let last_error = lock(&agent.shared.last_error).clone();
    let request_id = match engine.store_mut().create_agent_request(&new) {
        Ok(id) => id,
        Err(e) => return Analysis::Unavailable { reason: format!("analysis unavailable: {e}") },
    };
    let job = Job {
        request_id,
        priority: Priority::Autonomous,
        queued_at: Instant::now(),
        kind: JobKind::Analysis {
            items,
            context,
            knowledge,
            offered_ids,
            evidence,
            correlation_id: correlation_id.to_owned(),
        },
        sink: None,
    };
    if let Err(reason) = agent.queue(job) {
        let summary = format!("analysis unavailable: {reason}");
        let _ = engine.store_mut().finish_agent_request(
            request_id,
            Err(&reason),
            crate::now(),
            &[(None, NewAudit::new(crate::now(), AuditKind::Alert, Severity::Warning, "local", summary.clone()))],
        );
        return Analysis::Unavailable { reason: summary };
    }
    Analysis::Queued { request_id, last_error: last_error.map(|e| format!("analysis unavailable: {e}")) }
}

/// The evidence hash of an incident: its findings and the redacted journal sample the prompt
/// carries (`journal:errors`).
fn evidence_of(items: &[IncidentItem], context: &[ContextBlock]) -> String {
    use macha_knowledge::evidence::{Finding, evidence_hash};
    let findings: Vec<Finding<'_>> = items
        .iter()
        .map(|i| Finding { host: &i.host, check: &i.check, subject: &i.subject, severity: &i.severity })
        .collect();
    let journal: Vec<&str> = context.iter().filter(|c| c.source == "journal:errors").map(|c| c.text.as_str()).collect();
    evidence_hash(&findings, &journal.join("\n"))
}

/// The answer cache: an analysis of the same evidence within `llm.cache_ttl` answers these
/// issues, marked "cached from request N". It never carries a proposal: whatever that analysis
/// proposed was decided for its own issues then, and nothing is proposed again for these (a rule,
/// a person, or the next analysis after the TTL may act).
fn from_cache(
    engine: &mut Engine,
    config: &Config,
    items: &[IncidentItem],
    evidence: &str,
    correlation_id: &str,
) -> Option<Analysis> {
    if config.llm.cache_ttl.is_zero() {
        return None;
    }
    let now = crate::now();
    let ttl = i64::try_from(config.llm.cache_ttl.as_millis()).unwrap_or(i64::MAX);
    let since = macha_core::Timestamp(now.millis().saturating_sub(ttl));
    let hit = match engine.store().analysis_by_evidence(evidence, since) {
        Ok(Some(hit)) => hit,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!("the answer cache could not be read: {e}");
            return None;
        }
    };
    let d: Option<Diagnosis> = output::parse(&hit.answer).ok();
    let line = d.as_ref().map_or_else(
        || hit.answer.chars().take(300).collect::<String>(),
        |d| {
            let cause = if d.cause.trim().is_empty() { String::new() } else { format!("; cause: {}", d.cause) };
            format!("{}{cause} (confidence {:?})", d.summary, d.confidence)
        },
    );
    for i in items {
        let a = NewAudit::new(
            now,
            AuditKind::Issue,
            Severity::Info,
            &i.host,
            format!("analysis (cached from request {}; no proposal carried over): {line}", hit.request_id),
        )
        .with_correlation_id(correlation_id)
        .with_subject(&i.subject)
        .with_payload(serde_json::json!({"cached_from": hit.request_id, "diagnosis": d, "evidence": evidence}));
        if let Err(e) = engine.store_mut().append_issue_audit(i.issue_id, &a) {
            tracing::warn!("cached analysis of issue {}: {e}", i.issue_id);
        }
    }
    tracing::info!("analysis answered from the cache (request {})", hit.request_id);
    Some(Analysis::NotNeeded {
        reason: format!("answered from the cache: request {}", hit.request_id),
        last_error: None,
    })
}

/// What Macha knows about an incident, for its prompt: recent changes to the hosts'
/// configuration, the runbook catalog, knowledge entries that may apply and similar past issues
/// — and the citation ids those blocks carry.
pub(crate) fn incident_knowledge(engine: &Engine, items: &[IncidentItem]) -> (Vec<ContextBlock>, Vec<String>) {
    let store = engine.store();
    let config = engine.config();
    let mut blocks = Vec::new();
    let mut ids = Vec::new();
    let mut hosts: Vec<&str> = items.iter().map(|i| i.host.as_str()).collect();
    hosts.dedup();
    for i in items.iter().take(3) {
        if !hosts.contains(&i.host.as_str()) {
            continue;
        }
        hosts.retain(|h| *h != i.host);
        if let Ok(Some(issue)) = store.get_issue(i.issue_id) {
            let rc = crate::changes::for_issue(store, config, &issue);
            if !rc.is_empty() {
                blocks.push(ContextBlock { source: format!("recent_changes:{}", i.host), text: rc.render() });
            }
        }
    }
    // What people said when they rejected earlier proposals for these issues.
    let mut rejected = Vec::new();
    for i in items.iter().take(3) {
        for a in store.rejections_with_reason(i.issue_id, 2).unwrap_or_default() {
            rejected.push(rejection_line(&a));
        }
    }
    if !rejected.is_empty() {
        blocks.push(ContextBlock { source: "rejected_proposals".into(), text: rejected.join("\n") });
    }
    let catalog = macha_knowledge::runbooks::Catalog::load(Some(&config.knowledge_runbooks));
    let lines: Vec<String> = catalog.entries().iter().map(|e| format!("{}: {}", e.id, e.use_when)).collect();
    if !lines.is_empty() {
        blocks.push(ContextBlock { source: "runbooks".into(), text: lines.join("\n") });
    }
    let words: Vec<String> = items
        .iter()
        .take(3)
        .map(|i| format!("{} {}", i.check.replace('_', " "), i.subject.trim_end_matches(".service")))
        .collect();
    let hits = store.kb_search(&words.join(" "), 3).map(|h| macha_knowledge::kb::rank_hits(h, crate::now()));
    let kb_lines: Vec<String> = hits
        .unwrap_or_default()
        .iter()
        .take(3)
        .map(|h| {
            ids.push(format!("kb:{}", h.entry.id));
            format!("kb:{} {} (use when: {})", h.entry.id, h.entry.fields.topic, h.entry.fields.use_when)
        })
        .collect();
    if !kb_lines.is_empty() {
        blocks.push(ContextBlock { source: "knowledge".into(), text: kb_lines.join("\n") });
    }
    if let Some(first) = items.first() {
        let similar =
            macha_knowledge::memory::similar_issues(store, first.issue_id, crate::now(), 2).unwrap_or_default();
        let lines: Vec<String> = similar
            .iter()
            .map(|s| {
                ids.push(format!("issue:{}", s.id));
                let res = if s.resolutions.is_empty() {
                    "no recorded resolution".to_owned()
                } else {
                    s.resolutions.join("; ")
                };
                format!("issue:{} {} {} on {} [{}]: {}", s.id, s.check, s.subject, s.host, s.state, res)
            })
            .collect();
        if !lines.is_empty() {
            blocks.push(ContextBlock { source: "similar_issues".into(), text: lines.join("\n") });
        }
    }
    (blocks, ids)
}

/// One rejected proposal, for the prompt (short: what Macha knows is capped): the action's kind
/// and target, who rejected it and why.
fn rejection_line(a: &macha_store::ApprovalRecord) -> String {
    let field = |k: &str| a.action.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let target = [field("unit"), field("host")].into_iter().find(|t| !t.is_empty()).unwrap_or("");
    format!(
        "approval {} ({} {target}) for issue {} rejected by {}: {}",
        a.id,
        field("kind"),
        a.issue_id.unwrap_or_default(),
        a.decided_by.as_deref().unwrap_or("a person"),
        a.decision_note.as_deref().unwrap_or("").trim(),
    )
}

/// Answers a knowledge tool from the store (on the engine thread): the text the model reads and
/// the citation ids it carries.
fn knowledge_tool(
    engine: &Engine,
    call: ToolCall,
    query: &crate::hybrid::QueryVector,
    now: macha_core::Timestamp,
) -> Result<(String, Vec<String>), String> {
    let store = engine.store();
    let mut ids = Vec::new();
    let text = match call {
        ToolCall::SearchConfigs(a) => {
            let summary = store.config_index_summary().map_err(|e| e.to_string())?;
            if summary.files == 0 {
                return Ok(("the configuration index is empty (macha configs index builds it)".into(), ids));
            }
            let req = macha_knowledge::search::SearchRequest {
                query: a.query,
                host: a.host.map(|h| h.as_str().to_owned()),
                category: a.category.as_deref().and_then(macha_knowledge::layout::Category::parse),
                limit: a.limit.unwrap_or(5),
            };
            let vectors = crate::hybrid::vectors(store, macha_store::EmbedKind::Chunk, query);
            let how = crate::hybrid::describe(&vectors);
            let v = vectors.as_ref().ok().map(|v| v as &dyn macha_knowledge::search::VectorSearch);
            let found = macha_knowledge::search::search(store, &req, v).map_err(|e| e.to_string())?;
            if found.hits.is_empty() {
                return Ok((format!("{how} search: no configuration matches"), ids));
            }
            let mut out = format!("{how} search\n");
            for h in &found.hits {
                let id = format!("config:{}:{}-{}", h.file, h.line_start, h.line_end);
                out.push_str(&format!("{id} {} ({})\n  {}\n", h.attr_path, h.category, h.snippet.replace('\n', " ")));
                ids.push(id);
            }
            out
        }
        ToolCall::SearchKnowledge(a) => {
            let limit = a.limit.unwrap_or(5);
            let vectors = crate::hybrid::vectors(store, macha_store::EmbedKind::Entry, query);
            let how = crate::hybrid::describe(&vectors);
            let v = vectors.as_ref().ok().map(|v| v as &dyn macha_knowledge::search::VectorSearch);
            let (_, hits) =
                macha_knowledge::search::search_entries(store, &a.query, limit, v, now).map_err(|e| e.to_string())?;
            if hits.is_empty() {
                return Ok((format!("{how} search: no knowledge entry matches"), ids));
            }
            let mut out = format!("{how} search\n");
            for h in &hits {
                let e = &h.entry;
                let id = format!("kb:{}", e.id);
                let content: String = e.fields.content.chars().take(600).collect();
                out.push_str(&format!(
                    "{id} {} [{}, confidence {:.2}, {}]\n  use when: {}\n  {}\n",
                    e.fields.topic,
                    e.fields.category,
                    e.fields.confidence,
                    e.fields.provenance,
                    e.fields.use_when,
                    content
                ));
                ids.push(id);
            }
            out
        }
        ToolCall::SimilarIssues(a) => {
            let found =
                macha_knowledge::memory::similar_issues(store, a.issue_id, now, 5).map_err(|e| e.to_string())?;
            if found.is_empty() {
                return Ok((format!("no earlier issue like issue {}", a.issue_id), ids));
            }
            let mut out = String::new();
            for s in &found {
                let id = format!("issue:{}", s.id);
                out.push_str(&format!(
                    "{id} on {}: {} {} — {} [{}; {}]\n",
                    s.host, s.check, s.subject, s.summary, s.state, s.why
                ));
                for r in &s.resolutions {
                    out.push_str(&format!(
                        "  resolved by: {r} ({})\n",
                        if s.verified { "verified" } else { "not verified" }
                    ));
                }
                ids.push(id);
            }
            out
        }
        ToolCall::RecentChanges(a) => {
            let since = macha_core::Timestamp(now.millis().saturating_sub(crate::changes::TOOL_LOOKBACK_MS));
            crate::changes::recent(store, engine.config(), a.host.as_str(), since).render()
        }
        other => return Err(format!("{} is not a knowledge tool", other.name().as_str())),
    };
    Ok((text, ids))
}

/// The `fleet_map` tool: the whole map as text, or one host's part of it (its profile, what it
/// depends on, what depends on it, and whose failures its being down explains).
fn fleet_map_tool(engine: &Engine, host: Option<&HostName>, inputs: &FleetInputs) -> Result<String, String> {
    use macha_core::fleet_map::{explained_by, render_text};
    let map = crate::fleet_map::answer(engine.store(), engine.config(), &inputs.connections, &inputs.addresses)
        .map_err(|e| format!("the fleet map could not be built: {e:#}"))?;
    if map.nodes.is_empty() {
        return Ok("the fleet map is empty: Macha manages no other host (hosts.<name> in the configuration)".into());
    }
    let legend = "relations: A → B means A depends on B (declared in the configuration, observed as TCP \
                  connections, or both)\n";
    let Some(h) = host else { return Ok(format!("{legend}{}", render_text(&map))) };
    let Some(node) = map.nodes.iter().find(|n| &n.name == h) else {
        let names: Vec<&str> = map.nodes.iter().map(|n| n.name.as_str()).collect();
        return Ok(format!("{h} is not on the fleet map; its hosts: {}", names.join(", ")));
    };
    let edge = |e: &macha_core::fleet_map::Edge, other: &HostName| {
        let mut line = format!("  {other}  {}", e.kind.as_str());
        if !e.ports.is_empty() {
            let ports: Vec<String> = e.ports.iter().map(u16::to_string).collect();
            line.push_str(&format!("  port {}", ports.join(",")));
        }
        line.push('\n');
        line
    };
    let what: Vec<&str> = [node.role.as_deref(), node.os.as_deref()].into_iter().flatten().collect();
    let mut out = format!("{legend}{h}");
    if !what.is_empty() {
        out.push_str(&format!(" ({})", what.join(", ")));
    }
    out.push_str(if node.observed { "\n" } else { "  [connections not observed]\n" });
    let (deps, users): (Vec<_>, Vec<_>) =
        (map.edges.iter().filter(|e| &e.from == h).collect(), map.edges.iter().filter(|e| &e.to == h).collect());
    out.push_str(if deps.is_empty() { "depends on: nothing known\n" } else { "depends on:\n" });
    deps.iter().for_each(|e| out.push_str(&edge(e, &e.to)));
    out.push_str(if users.is_empty() { "depended on by: nothing known\n" } else { "depended on by:\n" });
    users.iter().for_each(|e| out.push_str(&edge(e, &e.from)));
    let explained: Vec<String> = explained_by(&map, h).iter().map(ToString::to_string).collect();
    if !explained.is_empty() {
        out.push_str(&format!(
            "while {h} is down, failures of these hosts may be its consequences: {}\n",
            explained.join(", ")
        ));
    }
    Ok(out)
}

/// After issues were observed gone following a verified remediation: ask for learnings about those
/// remediations (never about a read-only action, nor one whose issue was not observed gone).
pub fn after_resolutions(agent: Option<&AgentService>, engine: &mut Engine) {
    for l in engine.take_learnings() {
        // The knowledge entries this issue used helped.
        if let Err(e) = macha_knowledge::kb::record_outcome(engine.store_mut(), l.issue_id, true, crate::now()) {
            tracing::warn!("knowledge outcome of issue {}: {e}", l.issue_id);
        }
        after_success(agent, engine, &l.action, Some(l.issue_id), &l.correlation_id);
    }
}

/// After a remediation whose issue its check then observed gone: ask for one or two learnings
/// (BATCH).
pub fn after_success(
    agent: Option<&AgentService>,
    engine: &mut Engine,
    action: &str,
    issue_id: Option<i64>,
    correlation_id: &str,
) {
    let Some(agent) = agent else { return };
    let issue = issue_id.and_then(|id| engine.store().get_issue(id).ok().flatten());
    let mut text = format!("Action that fixed it: {action}\n");
    if let Some(i) = &issue {
        text.push_str(&format!("Issue: {} {} on {}: {}\n", i.check_name, i.subject, i.host, i.summary));
    }
    let new = NewAgentRequest {
        kind: "learning".into(),
        priority: Priority::Batch.as_str().into(),
        requested_by: "macha".into(),
        correlation_id: Some(correlation_id.to_owned()),
        issue_ids: issue_id.into_iter().collect(),
        approval_id: None,
        conversation: None,
        created_at: crate::now(),
    };
    let Ok(request_id) = engine.store_mut().create_agent_request(&new) else { return };
    let job = Job {
        request_id,
        priority: Priority::Batch,
        queued_at: Instant::now(),
        kind: JobKind::Learning { prompt: text, source: format!("request {request_id}: {action}"), issue_id },
        sink: None,
    };
    if let Err(e) = agent.queue(job) {
        tracing::warn!("learning not queued: {e}");
    }
}

/// A streamed request from the socket (chat, ask, discuss): checks, records and queues it; the
/// answer and the events go to `sink`, ending with one final response.
pub fn stream(engine: &mut Engine, agent: Option<&AgentService>, request: Request, who: &str, admin: bool, sink: Sink) {
    let Some(agent) = agent else {
        let _ = sink.send(StreamLine::Done(Response::err(
            ErrorCode::Unavailable,
            "the language model is not enabled on this host (llm.enable = false)",
        )));
        return;
    };
    let (mode, conversation, text, kind) = match request {
        Request::Ask(ops::Ask { question }) => (Mode::Ask, format!("ask-{}", crate::correlation_id()), question, "ask"),
        Request::Chat(ops::Chat { conversation, message }) => {
            let c = conversation
                .filter(|c| valid_conversation(c))
                .unwrap_or_else(|| format!("chat-{}", crate::correlation_id()));
            (Mode::Chat, c, message, "chat")
        }
        Request::Discuss(ops::Discuss { id, message }) => {
            let context = match approval_context(engine, id) {
                Ok(c) => c,
                Err(e) => {
                    let _ = sink.send(StreamLine::Done(Response::err(ErrorCode::NotFound, e)));
                    return;
                }
            };
            (Mode::Discuss { approval_id: id, context }, crate::engine::approval_conversation(id), message, "discuss")
        }
        other => {
            let _ = sink.send(StreamLine::Done(Response::err(
                ErrorCode::BadRequest,
                format!("{} is not a streamed request", other.op()),
            )));
            return;
        }
    };
    let text: String = text.chars().take(8_000).collect();
    if text.trim().is_empty() {
        let _ = sink.send(StreamLine::Done(Response::err(ErrorCode::BadRequest, "the message is empty")));
        return;
    }
    let history: Vec<Message> = engine
        .store()
        .conversation(&conversation)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| match t.role.as_str() {
            "user" => Some(Message::user(t.content)),
            "assistant" => Some(Message::assistant(t.content)),
            _ => None,
        })
        .collect();
    let approval_id = match &mode {
        Mode::Discuss { approval_id, .. } => Some(*approval_id),
        _ => None,
    };
    // An acknowledgement is answered here: no model call, no tools.
    if ack::is_acknowledgement(&text) {
        let turns = vec![
            ("user".to_owned(), agent.shared.redactor.apply(&text), Some(who.to_owned())),
            ("assistant".to_owned(), ack::REPLY.to_owned(), None),
        ];
        if let Err(e) = engine.store_mut().append_conversation(&conversation, approval_id, &turns, crate::now()) {
            tracing::warn!("cannot record a conversation turn: {e}");
        }
        let _ = sink.send(StreamLine::Event(StreamEvent::Token { text: ack::REPLY.to_owned() }));
        let _ = sink.send(StreamLine::Done(Response::reply::<ops::Chat>(&ChatAnswer {
            answer: ack::REPLY.to_owned(),
            conversation: Some(conversation),
            ..ChatAnswer::default()
        })));
        return;
    }
    let new = NewAgentRequest {
        kind: kind.into(),
        priority: Priority::Interactive.as_str().into(),
        requested_by: who.to_owned(),
        correlation_id: None,
        issue_ids: Vec::new(),
        approval_id,
        conversation: Some(conversation.clone()),
        created_at: crate::now(),
    };
    let request_id = match engine.store_mut().create_agent_request(&new) {
        Ok(id) => id,
        Err(e) => {
            let _ = sink.send(StreamLine::Done(Response::err(ErrorCode::Internal, e.to_string())));
            return;
        }
    };
    let _ = sink.send(StreamLine::Event(StreamEvent::Started { request_id, conversation: conversation.clone() }));
    let job = Job {
        request_id,
        priority: Priority::Interactive,
        queued_at: Instant::now(),
        kind: JobKind::Converse { mode, conversation, history, text, who: who.to_owned(), admin },
        sink: Some(sink.clone()),
    };
    if let Err(e) = agent.queue(job) {
        let _ = sink.send(StreamLine::Done(Response::err(ErrorCode::Unavailable, e)));
    }
}

fn valid_conversation(c: &str) -> bool {
    (1..=80).contains(&c.len())
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !c.starts_with("approval-")
}

/// What the model is told about a pending action: the action, the policy's decision (without
/// risk), the issue and the trail.
fn approval_context(engine: &Engine, id: i64) -> Result<String, String> {
    let store = engine.store();
    let a =
        store.get_approval(id).map_err(|e| e.to_string())?.ok_or_else(|| format!("approval {id} does not exist"))?;
    let mut s = format!(
        "approval {id} ({}): {}\nreason given: {}\npolicy: {}\n",
        a.state,
        serde_json::to_string(&a.action).unwrap_or_default(),
        a.reason,
        a.decision["reason"].as_str().unwrap_or("-"),
    );
    if let Some(issue_id) = a.issue_id
        && let Ok(Some(i)) = store.get_issue(issue_id)
    {
        s.push_str(&format!(
            "issue {}: {} {} on {} ({}): {}\n",
            i.id, i.check_name, i.subject, i.host, i.state, i.summary
        ));
        let trail = store
            .query_audit(&macha_store::AuditQuery { issue_id: Some(issue_id), limit: Some(20), ..Default::default() })
            .unwrap_or_default();
        for r in trail {
            s.push_str(&format!("- {} {}\n", r.ts, r.summary));
        }
    }
    Ok(s)
}

/// `macha-logs prompts`: the prompt log (admin only; it holds redacted logs and files).
pub fn list_prompts(engine: &Engine, r: &ops::ListPrompts) -> anyhow::Result<PromptLog> {
    prompt_log(engine.store(), r)
}

/// The prompt log from a store (the daemon's, or a database file given with `--db`).
pub fn prompt_log(store: &macha_store::Store, r: &ops::ListPrompts) -> anyhow::Result<PromptLog> {
    let prompts = store.prompts(r.request_id, r.limit.unwrap_or(20).min(500))?;
    Ok(PromptLog { prompts: prompts.iter().map(crate::wire::prompt).collect() })
}

/// For tests and benchmarks: the incident prompt the daemon would build.
pub fn incident_prompt(
    items: &[IncidentItem],
    snapshot: Option<&Snapshot>,
    redactor: &Redactor,
    nonce: &str,
) -> String {
    prompt::incident(items, &incident_context(items, snapshot, redactor), redactor, nonce)
}
