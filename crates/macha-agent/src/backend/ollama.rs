//! The Ollama backend, through `ollama-rs` (default features off: no OpenSSL). Only its request,
//! response and streaming types are used; its automatic tool executor (`Coordinator`) never is:
//! Macha runs the tool loop itself, so every call goes through Macha's validation and policy.

use super::{Backend, BackendError, Timeouts, TokenSink, describe_reqwest, http_client, parse_url, within};
use crate::message::{ChatRequest, ChatResponse, GenOptions, Message, RawToolCall, Role};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use ollama_rs::Ollama;
use ollama_rs::error::OllamaError;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::{ChatMessage, ChatMessageResponse, MessageRole};
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
    url: String,
    timeouts: Timeouts,
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
        let client = Ollama::builder().url(parsed).reqwest_client(http_client(&timeouts)?).build();
        Ok(OllamaBackend { client, url: url.to_owned(), timeouts })
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
            let request = request(req)?;
            within(self.timeouts.request, async {
                let mut out = ChatResponse::default();
                if req.stream {
                    let mut stream = self.client.send_chat_messages_stream(request).await.map_err(|e| self.error(e))?;
                    let mut done = false;
                    loop {
                        let next = tokio::time::timeout(self.timeouts.idle, stream.next())
                            .await
                            .map_err(|_| BackendError::Stalled(self.timeouts.idle))?;
                        let Some(item) = next else { break };
                        let chunk = item.map_err(|()| {
                            BackendError::Protocol("the answer stream broke off (connection error)".into())
                        })?;
                        if !chunk.message.content.is_empty() {
                            if out.first_token_ms.is_none() {
                                out.first_token_ms = Some(millis(started));
                            }
                            if let Some(t) = &tokens {
                                let _ = t.send(chunk.message.content.clone());
                            }
                            out.content.push_str(&chunk.message.content);
                        }
                        out.tool_calls.extend(calls(&chunk.message));
                        if chunk.done {
                            finish(&chunk, &mut out);
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        return Err(BackendError::Protocol(
                            "the answer stream ended before the model finished (no \"done\")".into(),
                        ));
                    }
                } else {
                    let resp = self.client.send_chat_messages(request).await.map_err(|e| self.error(e))?;
                    out.content = resp.message.content.clone();
                    out.tool_calls = calls(&resp.message);
                    finish(&resp, &mut out);
                }
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
            within(self.timeouts.request, async {
                let r = self.client.generate(req).await.map_err(|e| self.error(e))?;
                Ok(ChatResponse {
                    content: r.response,
                    tool_calls: Vec::new(),
                    prompt_tokens: r.prompt_eval_count,
                    completion_tokens: r.eval_count,
                    first_token_ms: None,
                    total_ms: millis(started),
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
