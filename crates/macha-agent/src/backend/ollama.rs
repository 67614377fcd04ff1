//! The Ollama backend, through `ollama-rs` (default features off: no OpenSSL). Only its request
//! and response types are used; its automatic tool executor (`Coordinator`) never is: Macha runs
//! the tool loop itself, so every call goes through Macha's validation and policy. Chat and
//! generate requests are sent by Macha's own HTTP client, which reads an answer only up to
//! `llm.answer_max_bytes`: a streamed answer is cut there (and marked cut), a whole body over it
//! is refused.

use super::{
    ANSWER_MAX_DEFAULT, Backend, BackendError, ENVELOPE_MAX, Timeouts, TokenSink, body_capped, cut, describe_reqwest,
    http_client, parse_url, within,
};
use crate::message::{ChatRequest, ChatResponse, GenOptions, Message, RawToolCall, Role};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use ollama_rs::Ollama;
use ollama_rs::error::OllamaError;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::{ChatMessage, ChatMessageResponse, MessageRole};
use ollama_rs::generation::completion::GenerationResponse;
use ollama_rs::generation::completion::request::GenerationRequest;
use ollama_rs::generation::embeddings::request::{EmbeddingsInput, GenerateEmbeddingsRequest};
use ollama_rs::generation::parameters::{FormatType, JsonStructure};
use ollama_rs::generation::tools::{ToolCall, ToolCallFunction, ToolFunctionInfo, ToolInfo, ToolType};
use ollama_rs::models::ModelOptions;
use std::time::Instant;

/// An Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaBackend {
    client: Ollama,
    http: reqwest::Client,
    url: String,
    timeouts: Timeouts,
    answer_max: usize,
}

impl OllamaBackend {
    /// A client of the server at `url` (e.g. `http://127.0.0.1:11434`). Nothing is sent yet.
    pub fn new(url: &str, timeouts: Timeouts) -> Result<OllamaBackend, BackendError> {
        let parsed = parse_url(url)?;
        if parsed.scheme() == "https" && !cfg!(feature = "tls") {
            return Err(BackendError::Config(format!(
                "llm.url {url:?} is https, and this build has no TLS (build macha-agent with the `tls` feature, or use a local http endpoint)"
            )));
        }
        let http = http_client(&timeouts)?;
        let client = Ollama::builder().url(parsed).reqwest_client(http.clone()).build();
        Ok(OllamaBackend { client, http, url: url.to_owned(), timeouts, answer_max: ANSWER_MAX_DEFAULT })
    }

    /// The most bytes of one answer's text that are read (`llm.answer_max_bytes`).
    pub fn with_answer_max(mut self, bytes: usize) -> OllamaBackend {
        self.answer_max = bytes.max(1024);
        self
    }

    /// Posts `body` to `/api/<path>`; a status other than success is an error with the body's
    /// first bytes.
    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<reqwest::Response, BackendError> {
        let url = format!("{}/api/{path}", self.url.trim_end_matches('/'));
        let resp = self.http.post(&url).json(body).send().await.map_err(|e| describe_reqwest(&self.url, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = match body_capped(resp, 4096, self.timeouts.idle, &self.url).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => String::new(),
        };
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(BackendError::Server(format!("HTTP {status}: {}", shorten(&detail))))
    }

    /// A streamed chat answer (NDJSON), read up to the answer cap.
    async fn read_stream(
        &self,
        resp: reqwest::Response,
        tokens: Option<&TokenSink>,
        started: Instant,
    ) -> Result<ChatResponse, BackendError> {
        let mut out = ChatResponse::default();
        let mut buf: Vec<u8> = Vec::new();
        let mut stream = resp.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.timeouts.idle, stream.next())
                .await
                .map_err(|_| BackendError::Stalled(self.timeouts.idle))?;
            let Some(bytes) = next else { break };
            let bytes =
                bytes.map_err(|_| BackendError::Protocol("the answer stream broke off (connection error)".into()))?;
            buf.extend_from_slice(&bytes);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&line)
                    .map_err(|e| BackendError::Protocol(format!("bad stream line: {e}")))?;
                if let Some(e) = v.get("error") {
                    return Err(BackendError::Server(shorten(e.as_str().unwrap_or("error in the stream"))));
                }
                let chunk: ChatMessageResponse =
                    serde_json::from_value(v).map_err(|e| BackendError::Protocol(format!("bad stream line: {e}")))?;
                if !chunk.message.content.is_empty() {
                    if out.first_token_ms.is_none() {
                        out.first_token_ms = Some(millis(started));
                    }
                    if let Some(t) = tokens {
                        let _ = t.send(chunk.message.content.clone());
                    }
                    out.content.push_str(&chunk.message.content);
                }
                out.tool_calls.extend(calls(&chunk.message));
                if out.content.len() > self.answer_max || out.tool_calls.len() > 64 {
                    // Stop reading: the rest of the answer is never taken in.
                    cut(&mut out.content, self.answer_max);
                    out.tool_calls.truncate(64);
                    out.truncated = true;
                    return Ok(out);
                }
                if chunk.done {
                    finish(&chunk, &mut out);
                    return Ok(out);
                }
            }
            if buf.len() > self.answer_max + ENVELOPE_MAX {
                return Err(BackendError::TooLarge(self.answer_max + ENVELOPE_MAX));
            }
        }
        Err(BackendError::Protocol("the answer stream ended before the model finished (no \"done\")".into()))
    }

    fn error(&self, e: OllamaError) -> BackendError {
        match e {
            OllamaError::ReqwestError(r) => describe_reqwest(&self.url, &r),
            OllamaError::JsonError(j) => BackendError::Protocol(j.to_string()),
            OllamaError::InternalError(i) => BackendError::Server(i.message),
            OllamaError::Other(s) => BackendError::Server(shorten(&s)),
            OllamaError::ToolCallError(t) => BackendError::Protocol(t.to_string()),
        }
    }
}

fn shorten(s: &str) -> String {
    let mut out: String = s.trim().chars().take(300).collect();
    if out.len() < s.trim().len() {
        out.push('…');
    }
    out
}

fn options(o: &GenOptions) -> ModelOptions {
    let mut m = ModelOptions::default()
        .temperature(o.temperature)
        .num_ctx(u64::from(o.num_ctx))
        .num_predict(i32::try_from(o.max_tokens).unwrap_or(i32::MAX));
    if let Some(seed) = o.seed {
        m = m.seed(seed);
    }
    m
}

fn to_ollama(m: &Message) -> ChatMessage {
    let role = match m.role {
        Role::System => MessageRole::System,
        Role::User => MessageRole::User,
        Role::Assistant => MessageRole::Assistant,
        Role::Tool => MessageRole::Tool,
    };
    let mut msg = ChatMessage::new(role, m.content.clone());
    msg.tool_calls = m
        .tool_calls
        .iter()
        .map(|c| ToolCall { function: ToolCallFunction { name: c.name.clone(), arguments: c.arguments.clone() } })
        .collect();
    msg
}

fn format_of(schema: &serde_json::Value) -> Result<FormatType, BackendError> {
    let s = schemars::Schema::try_from(schema.clone())
        .map_err(|e| BackendError::Config(format!("the output schema is not a JSON Schema: {e}")))?;
    Ok(FormatType::StructuredJson(Box::new(JsonStructure::new_for_schema(s))))
}

fn request(req: &ChatRequest) -> Result<ChatMessageRequest, BackendError> {
    let mut tools = Vec::with_capacity(req.tools.len());
    for t in &req.tools {
        let parameters = schemars::Schema::try_from(t.parameters.clone())
            .map_err(|e| BackendError::Config(format!("the schema of tool {} is not a JSON Schema: {e}", t.name)))?;
        tools.push(ToolInfo {
            tool_type: ToolType::Function,
            function: ToolFunctionInfo { name: t.name.clone(), description: t.description.clone(), parameters },
        });
    }
    let mut r = ChatMessageRequest::new(req.model.clone(), req.messages.iter().map(to_ollama).collect())
        .options(options(&req.options))
        .tools(tools);
    if let Some(f) = &req.format {
        r = r.format(format_of(f)?);
    }
    Ok(r)
}

fn calls(m: &ChatMessage) -> Vec<RawToolCall> {
    m.tool_calls
        .iter()
        .map(|c| RawToolCall { id: None, name: c.function.name.clone(), arguments: c.function.arguments.clone() })
        .collect()
}

fn finish(resp: &ChatMessageResponse, out: &mut ChatResponse) {
    if let Some(f) = &resp.final_data {
        out.prompt_tokens = Some(f.prompt_eval_count);
        out.completion_tokens = Some(f.eval_count);
    }
}

impl Backend for OllamaBackend {
    fn describe(&self) -> String {
        format!("ollama at {}", self.url)
    }

    fn wire_body(&self, req: &ChatRequest) -> serde_json::Value {
        let mut v = request(req).ok().and_then(|r| serde_json::to_value(r).ok()).unwrap_or(serde_json::Value::Null);
        if v.is_object() {
            v["stream"] = serde_json::Value::Bool(req.stream);
        }
        v
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            let started = Instant::now();
            let mut body = serde_json::to_value(request(req)?)
                .map_err(|e| BackendError::Config(format!("cannot write the request: {e}")))?;
            body["stream"] = serde_json::Value::Bool(req.stream);
            within(self.timeouts.request, async {
                let resp = self.post("chat", &body).await?;
                let mut out = if req.stream {
                    self.read_stream(resp, tokens.as_ref(), started).await?
                } else {
                    let bytes =
                        body_capped(resp, self.answer_max + ENVELOPE_MAX, self.timeouts.idle, &self.url).await?;
                    let resp: ChatMessageResponse = serde_json::from_slice(&bytes)
                        .map_err(|e| BackendError::Protocol(format!("the answer is not JSON: {e}")))?;
                    let mut out = ChatResponse { content: resp.message.content.clone(), ..ChatResponse::default() };
                    out.tool_calls = calls(&resp.message);
                    finish(&resp, &mut out);
                    out.truncated = cut(&mut out.content, self.answer_max);
                    out
                };
                out.total_ms = millis(started);
                Ok(out)
            })
            .await
        })
    }

    fn generate<'a>(
        &'a self,
        model: &'a str,
        system: &'a str,
        prompt: &'a str,
        opts: &'a GenOptions,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            let started = Instant::now();
            let req = GenerationRequest::new(model.to_owned(), prompt).system(system).options(options(opts));
            let mut body = serde_json::to_value(req)
                .map_err(|e| BackendError::Config(format!("cannot write the request: {e}")))?;
            body["stream"] = serde_json::Value::Bool(false);
            within(self.timeouts.request, async {
                let resp = self.post("generate", &body).await?;
                let bytes = body_capped(resp, self.answer_max + ENVELOPE_MAX, self.timeouts.idle, &self.url).await?;
                let r: GenerationResponse = serde_json::from_slice(&bytes)
                    .map_err(|e| BackendError::Protocol(format!("the answer is not JSON: {e}")))?;
                let mut content = r.response;
                let truncated = cut(&mut content, self.answer_max);
                Ok(ChatResponse {
                    content,
                    tool_calls: Vec::new(),
                    prompt_tokens: r.prompt_eval_count,
                    completion_tokens: r.eval_count,
                    first_token_ms: None,
                    total_ms: millis(started),
                    truncated,
                })
            })
            .await
        })
    }

    fn embed<'a>(&'a self, model: &'a str, input: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BackendError>> {
        Box::pin(async move {
            let req = GenerateEmbeddingsRequest::new(model.to_owned(), EmbeddingsInput::Multiple(input.to_vec()));
            within(self.timeouts.request, async {
                let r = self.client.generate_embeddings(req).await.map_err(|e| self.error(e))?;
                if r.embeddings.len() != input.len() {
                    return Err(BackendError::Protocol(format!(
                        "{} embeddings for {} inputs",
                        r.embeddings.len(),
                        input.len()
                    )));
                }
                Ok(r.embeddings)
            })
            .await
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            within(self.timeouts.request, async {
                let list = self.client.list_local_models().await.map_err(|e| self.error(e))?;
                Ok(list.into_iter().map(|m| m.name).collect())
            })
            .await
        })
    }
}

pub(crate) fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
