//! The tool loop, run by Macha itself: send the conversation, validate what comes back, run
//! read-only tools, hand proposals to the host (which puts them through the policy gate), feed
//! results back as fenced data, and stop with an answer — or fail closed.
//!
//! Fail closed means: a backend error, a timeout, a stalled stream, or a second invalid output in
//! a row ends the turn with an [`AgentError`]; nothing the model said is acted on past that point,
//! and the caller records "analysis unavailable: <reason>".

use crate::backend::{Backend, BackendError};
use crate::budget::{self, Budget, Plan};
use crate::history;
use crate::message::{ChatRequest, ChatResponse, GenOptions, Message, RawToolCall};
use crate::output::{self, Step};
use crate::prompt;
use crate::redact::Redactor;
use crate::tools::{self, ToolCall, ToolName};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

/// Most `propose_action` calls one turn may make; later ones are answered with an error the model
/// sees, and are not decided.
pub const MAX_PROPOSALS_PER_TURN: usize = 3;
/// Most bytes of an invalid answer quoted back to the model in its history.
pub const QUOTE_MAX: usize = 4 * 1024;

/// How tools reach the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    /// The server's native tool calling (`tools` in the request, `tool_calls` in the answer).
    Native,
    /// Tools described in the prompt; every answer constrained by a JSON schema to be a tool call
    /// or the final answer. For models whose native tool calling is unreliable.
    Json,
}

impl ToolMode {
    pub fn parse(s: &str) -> Option<ToolMode> {
        match s {
            "native" => Some(ToolMode::Native),
            "json" => Some(ToolMode::Json),
            _ => None,
        }
    }
}

/// What the CLI shows while a request runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A piece of the streamed answer.
    Token { text: String },
    /// The model called a tool (arguments as it wrote them, redacted).
    ToolCall { name: String, arguments: serde_json::Value },
    /// A tool's result went back to the model.
    ToolResult { name: String, bytes: usize, note: Option<String> },
    /// A call was refused (unknown tool, invalid arguments).
    ToolRefused { name: String, error: String },
    /// Progress of a long step (summarising a large output).
    Progress { what: String, done: usize, total: usize },
    /// Waiting in the scheduler's queue.
    Queued { position: usize },
}

pub type EventSink = UnboundedSender<AgentEvent>;

/// One request as it went to the model (already redacted), and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRecord {
    /// Order within the agent request.
    pub seq: u32,
    pub purpose: String,
    pub model: String,
    /// The request body on the wire.
    pub request: serde_json::Value,
    pub estimated_tokens: usize,
    pub response: Option<ChatResponse>,
    pub error: Option<String>,
}

/// What the loop needs from the daemon.
pub trait ToolHost: Send + Sync {
    /// Runs one validated call: a read-only tool, or a proposal through the policy gate. The text
    /// goes back to the model (as data); an error text too, marked as an error.
    fn run(&self, call: ToolCall) -> BoxFuture<'_, Result<String, String>>;
    /// Stores a large output and returns its id.
    fn cache(&self, text: String) -> BoxFuture<'_, Result<String, String>>;
    /// Records one prompt exactly as sent.
    fn record(&self, rec: PromptRecord) -> BoxFuture<'_, ()>;
}

/// Why a turn ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("the model answered invalidly twice: {0}")]
    Invalid(String),
    #[error("the model made more than {0} tool calls without answering")]
    TooManySteps(usize),
}

/// The settings of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub model: String,
    pub budget: Budget,
    pub options: GenOptions,
    pub tool_mode: ToolMode,
    /// Most model calls in one turn.
    pub max_steps: usize,
    /// Stream the answer (native tool mode only; JSON-mode answers are not prose).
    pub stream: bool,
    pub purpose: String,
}

/// A finished turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnResult {
    /// The answer text (for structured answers: the JSON).
    pub text: String,
    /// Model calls made.
    pub steps: usize,
    /// Tools called, in order.
    pub calls: Vec<String>,
    /// Prompt tokens the server reported, summed over calls.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Estimated prompt tokens of the first call.
    pub first_prompt_estimate: usize,
    /// Milliseconds to the first streamed token of the first call.
    pub first_token_ms: Option<u64>,
    /// An answer of this turn was longer than the answer cap and was cut (the prompt log holds
    /// it once, as cut).
    #[serde(default)]
    pub truncated: bool,
}

/// Checks a final answer; `Err` is quoted back to the model once.
pub type FinalCheck<'a> = &'a (dyn Fn(&str) -> Result<(), String> + Sync);

/// The tool loop over one backend.
pub struct Runner<'a> {
    pub backend: &'a dyn Backend,
    pub host: &'a dyn ToolHost,
    pub redactor: &'a Redactor,
    pub config: RunConfig,
    pub events: Option<EventSink>,
    /// Marks this request's data blocks; unpredictable to the authors of the data.
    pub nonce: String,
    pub seq: std::sync::atomic::AtomicU32,
    /// In an incident analysis: the kinds and hosts `propose_action` accepts (others are refused
    /// when the call is parsed, with an error the model sees).
    pub scope: Option<tools::ProposalScope>,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("backend", &self.backend.describe()).field("config", &self.config).finish()
    }
}

impl<'a> Runner<'a> {
    pub fn new(
        backend: &'a dyn Backend,
        host: &'a dyn ToolHost,
        redactor: &'a Redactor,
        config: RunConfig,
        events: Option<EventSink>,
        nonce: String,
    ) -> Runner<'a> {
        Runner {
            backend,
            host,
            redactor,
            config,
            events,
            nonce,
            seq: std::sync::atomic::AtomicU32::new(0),
            scope: None,
        }
    }

    /// Limits `propose_action` to `scope` (an incident analysis: the offered kinds, its hosts).
    pub fn with_proposal_scope(mut self, scope: tools::ProposalScope) -> Runner<'a> {
        self.scope = Some(scope);
        self
    }

    fn emit(&self, e: AgentEvent) {
        if let Some(s) = &self.events {
            let _ = s.send(e);
        }
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Sends one request, streaming if asked, and records it.
    async fn send(&self, req: &ChatRequest, purpose: &str) -> Result<ChatResponse, BackendError> {
        let estimated = budget::request_tokens(req);
        let mut rec = PromptRecord {
            seq: self.next_seq(),
            purpose: purpose.to_owned(),
            model: req.model.clone(),
            request: self.backend.wire_body(req),
            estimated_tokens: estimated,
            response: None,
            error: None,
        };
        let result = if req.stream && self.events.is_some() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let chat = self.backend.chat(req, Some(tx));
            let forward = async {
                while let Some(text) = rx.recv().await {
                    self.emit(AgentEvent::Token { text });
                }
            };
            let (r, ()) = tokio::join!(chat, forward);
            r
        } else {
            self.backend.chat(req, None).await
        };
        match &result {
            Ok(r) => rec.response = Some(r.clone()),
            Err(e) => rec.error = Some(e.to_string()),
        }
        self.host.record(rec).await;
        result
    }

    /// Runs the loop over `messages` (extended in place with the model's turns and the tool
    /// results) until the model answers.
    pub async fn run(
        &self,
        messages: &mut Vec<Message>,
        offered: &[ToolName],
        final_schema: Option<&serde_json::Value>,
        final_check: Option<FinalCheck<'_>>,
    ) -> Result<TurnResult, AgentError> {
        self.run_with_tools(messages, offered, tools::specs(offered), final_schema, final_check).await
    }

    /// [`Runner::run`] with the tool specs given (e.g. `propose_action` limited to some kinds).
    pub async fn run_with_tools(
        &self,
        messages: &mut Vec<Message>,
        offered: &[ToolName],
        specs: Vec<crate::message::ToolSpec>,
        final_schema: Option<&serde_json::Value>,
        final_check: Option<FinalCheck<'_>>,
    ) -> Result<TurnResult, AgentError> {
        let mut result = TurnResult::default();
        let mut invalid: Option<String> = None;
        let mut force_format = false;
        let mut proposals = 0usize;
        let json_mode = self.config.tool_mode == ToolMode::Json;
        for step in 0..self.config.max_steps {
            let mut sent = history::prune(messages, self.config.budget.history_tokens());
            let mut req = ChatRequest {
                model: self.config.model.clone(),
                messages: Vec::new(),
                tools: Vec::new(),
                format: None,
                options: self.config.options.clone(),
                stream: self.config.stream && !json_mode && !force_format,
            };
            if json_mode {
                if let Some(first) = sent.first_mut().filter(|m| m.role == crate::message::Role::System) {
                    first.content.push_str(&prompt::json_tool_mode_note(&specs));
                }
                req.format = Some(output::step_schema(&specs, final_schema));
            } else if force_format || offered.is_empty() {
                req.format = final_schema.cloned();
            } else {
                req.tools = specs.clone();
            }
            req.messages = sent;
            if step == 0 {
                result.first_prompt_estimate = budget::request_tokens(&req);
            }
            let resp = self.send(&req, &self.config.purpose).await?;
            result.steps += 1;
            result.prompt_tokens += resp.prompt_tokens.unwrap_or(0);
            result.completion_tokens += resp.completion_tokens.unwrap_or(0);
            if result.first_token_ms.is_none() {
                result.first_token_ms = resp.first_token_ms;
            }
            result.truncated |= resp.truncated;

            // What did the model do?
            let (calls, answer): (Vec<RawToolCall>, Option<String>) = if json_mode {
                match output::parse_step(&resp.content) {
                    Ok(Step::Call(c)) => (vec![c], None),
                    Ok(Step::Answer(serde_json::Value::String(s))) => (Vec::new(), Some(s)),
                    Ok(Step::Answer(v)) => (Vec::new(), Some(v.to_string())),
                    Err(e) => {
                        messages.push(Message::assistant(self.redactor.apply(budget::head(&resp.content, QUOTE_MAX))));
                        self.refuse(&mut invalid, e.to_string(), messages)?;
                        continue;
                    }
                }
            } else if !resp.tool_calls.is_empty() && !force_format {
                (resp.tool_calls.clone(), None)
            } else {
                (Vec::new(), Some(resp.content.clone()))
            };

            if let Some(text) = answer {
                let problem = if text.trim().is_empty() {
                    Some("the answer was empty".to_owned())
                } else {
                    final_check.and_then(|check| check(&text).err())
                };
                match problem {
                    None => {
                        messages.push(Message::assistant(self.redactor.apply(&text)));
                        result.text = text;
                        return Ok(result);
                    }
                    Some(p) => {
                        messages.push(Message::assistant(self.redactor.apply(budget::head(&text, QUOTE_MAX))));
                        force_format = final_schema.is_some();
                        self.refuse(&mut invalid, p, messages)?;
                        continue;
                    }
                }
            }

            // Tool calls: validate each; run the valid ones.
            let mut assistant = Message::assistant(self.redactor.apply(&resp.content));
            if !json_mode {
                assistant.tool_calls = calls
                    .iter()
                    .map(|c| RawToolCall {
                        id: c.id.clone(),
                        name: c.name.chars().take(64).collect(),
                        arguments: redact_value(self.redactor, &c.arguments),
                    })
                    .collect();
            }
            messages.push(assistant);
            let mut refused: Option<String> = None;
            for raw in &calls {
                let shown_name: String = raw.name.chars().take(64).collect();
                self.emit(AgentEvent::ToolCall {
                    name: shown_name.clone(),
                    arguments: redact_value(self.redactor, &raw.arguments),
                });
                let content = match tools::parse_call_scoped(raw, offered, self.scope.as_ref()) {
                    Err(e) => {
                        let msg = e.to_string();
                        self.emit(AgentEvent::ToolRefused { name: shown_name.clone(), error: msg.clone() });
                        refused = Some(msg.clone());
                        format!("error: {msg}")
                    }
                    Ok(call) if call.name() == ToolName::ProposeAction && proposals >= MAX_PROPOSALS_PER_TURN => {
                        let msg =
                            format!("at most {MAX_PROPOSALS_PER_TURN} proposals per turn; this one was not decided");
                        self.emit(AgentEvent::ToolRefused { name: shown_name.clone(), error: msg.clone() });
                        format!("error: {msg}")
                    }
                    Ok(call) => {
                        if call.name() == ToolName::ProposeAction {
                            proposals += 1;
                        }
                        result.calls.push(call.name().as_str().to_owned());
                        let name = call.name().as_str();
                        match self.host.run(call).await {
                            Ok(out) => self.fit(name, &out).await,
                            Err(e) => {
                                let e = self.redactor.apply(&e);
                                self.emit(AgentEvent::ToolResult {
                                    name: name.to_owned(),
                                    bytes: e.len(),
                                    note: Some("error".into()),
                                });
                                format!("error: {e}")
                            }
                        }
                    }
                };
                if json_mode {
                    messages.push(Message::user(format!("Result of {shown_name}:\n{content}")));
                } else {
                    messages.push(Message::tool(&shown_name, raw.id.clone(), content));
                }
            }
            match refused {
                Some(e) => {
                    if let Some(prev) = invalid.take() {
                        return Err(AgentError::Invalid(format!("{prev}; then: {e}")));
                    }
                    invalid = Some(e);
                }
                None => invalid = None,
            }
        }
        Err(AgentError::TooManySteps(self.config.max_steps))
    }

    /// Records an invalid output: the first one gets a retry quoting the error, the second fails.
    fn refuse(
        &self,
        invalid: &mut Option<String>,
        error: String,
        messages: &mut Vec<Message>,
    ) -> Result<(), AgentError> {
        if let Some(prev) = invalid.take() {
            return Err(AgentError::Invalid(format!("{prev}; then: {error}")));
        }
        messages.push(Message::user(output::retry_prompt(&error)));
        *invalid = Some(error);
        Ok(())
    }

    /// A tool's output as the model sees it: redacted, fenced, and within the budget (large
    /// outputs are cached and summarised chunk by chunk).
    pub async fn fit(&self, tool: &str, output: &str) -> String {
        // A page of a cached output is already redacted and sized to fit: it goes to the model
        // verbatim, never cached or summarised again.
        if tool == ToolName::GetCachedOutput.as_str() {
            self.emit(AgentEvent::ToolResult { name: tool.to_owned(), bytes: output.len(), note: None });
            return prompt::tool_result(tool, &self.nonce, output, None);
        }
        // Large outputs are redacted off the async thread (the daemon's runtime is single-threaded).
        let red = if output.len() > 64 * 1024 {
            let (redactor, text) = (self.redactor.clone(), output.to_owned());
            match tokio::task::spawn_blocking(move || redactor.apply(&text)).await {
                Ok(r) => r,
                // Fail closed: nothing unredacted goes out.
                Err(e) => format!("[the output could not be redacted: {e}]"),
            }
        } else {
            self.redactor.apply(output)
        };
        match budget::plan(&red, &self.config.budget) {
            Plan::Inline => {
                self.emit(AgentEvent::ToolResult { name: tool.to_owned(), bytes: red.len(), note: None });
                prompt::tool_result(tool, &self.nonce, &red, None)
            }
            Plan::Summarise { total_bytes, chunks, skipped_bytes } => {
                let id = self.host.cache(red.clone()).await;
                let id_note = match &id {
                    Ok(id) => format!("the full output is cached as id {id}; read it with get_cached_output"),
                    Err(e) => format!("the full output could not be cached: {e}"),
                };
                let summary = self.summarise(tool, &red, &chunks).await;
                let covered = total_bytes - skipped_bytes;
                let (text, how) = match summary {
                    Some(s) => (s, format!("a summary of the last {covered} bytes")),
                    None => {
                        let keep = self.config.budget.tool_output_bytes().min(budget::CACHE_THRESHOLD);
                        let t = budget::tail(&red, keep).to_owned();
                        let n = t.len();
                        (t, format!("only its last {n} bytes (summarising failed)"))
                    }
                };
                let note = format!("truncated: the output was {total_bytes} bytes; shown is {how}; {id_note}");
                self.emit(AgentEvent::ToolResult {
                    name: tool.to_owned(),
                    bytes: total_bytes,
                    note: Some(note.clone()),
                });
                prompt::tool_result(tool, &self.nonce, &text, Some(&note))
            }
        }
    }

    /// Summaries of `chunks` of `text`, then a summary of the summaries. `None` if the model could
    /// not summarise (the caller falls back to the output's tail).
    async fn summarise(&self, tool: &str, text: &str, chunks: &[(usize, usize)]) -> Option<String> {
        let mut opts = self.config.options.clone();
        opts.max_tokens = opts.max_tokens.min(256);
        let total = chunks.len() + usize::from(chunks.len() > 1);
        let mut parts = Vec::with_capacity(chunks.len());
        for (i, (s, e)) in chunks.iter().enumerate() {
            self.emit(AgentEvent::Progress { what: format!("summarising {tool} output"), done: i, total });
            let piece = text.get(*s..*e)?;
            parts.push(self.generate(&prompt::fence(tool, &self.nonce, piece), &opts).await?);
        }
        let out = if parts.len() > 1 {
            self.emit(AgentEvent::Progress { what: format!("summarising {tool} output"), done: parts.len(), total });
            let joined = parts.join("\n---\n");
            self.generate(&prompt::fence("summaries", &self.nonce, &joined), &opts).await?
        } else {
            parts.pop()?
        };
        self.emit(AgentEvent::Progress { what: format!("summarising {tool} output"), done: total, total });
        Some(self.redactor.apply(budget::head(&out, budget::CHUNK_BYTES)))
    }

    async fn generate(&self, data: &str, opts: &GenOptions) -> Option<String> {
        let req = ChatRequest {
            model: self.config.model.clone(),
            messages: vec![Message::system(prompt::SUMMARISE), Message::user(data)],
            tools: Vec::new(),
            format: None,
            options: opts.clone(),
            stream: false,
        };
        let mut rec = PromptRecord {
            seq: self.next_seq(),
            purpose: "summary".into(),
            model: req.model.clone(),
            request: self.backend.wire_body(&req),
            estimated_tokens: budget::request_tokens(&req),
            response: None,
            error: None,
        };
        let r = self.backend.generate(&req.model, prompt::SUMMARISE, data, opts).await;
        match &r {
            Ok(resp) => rec.response = Some(resp.clone()),
            Err(e) => rec.error = Some(e.to_string()),
        }
        self.host.record(rec).await;
        r.ok().map(|resp| resp.content).filter(|c| !c.trim().is_empty())
    }
}

/// Redacts every string inside a JSON value.
pub fn redact_value(redactor: &Redactor, v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(redactor.apply(s)),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(|x| redact_value(redactor, x)).collect()),
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, x)| (k.clone(), redact_value(redactor, x))).collect())
        }
        other => other.clone(),
    }
}
