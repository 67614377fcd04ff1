//! The OpenAI-compatible backend (`/v1/chat/completions`, `/v1/models`, `/v1/embeddings`), as
//! llama.cpp's server, vLLM and others speak it. Plain reqwest; server-sent events for streams.

use super::{
    ANSWER_MAX_DEFAULT, Backend, BackendError, ENVELOPE_MAX, Timeouts, TokenSink, body_capped, cut, describe_reqwest,
    http_client, parse_url, within,
};
use crate::backend::ollama::millis;
use crate::message::{ChatRequest, ChatResponse, GenOptions, Message, RawToolCall, Role};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::time::Instant;

/// An OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiBackend {
    http: reqwest::Client,
    /// The API base, e.g. `http://127.0.0.1:8080/v1` (no trailing slash).
    base: String,
    api_key: Option<String>,
    timeouts: Timeouts,
    answer_max: usize,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("OpenAiBackend").field("base", &self.base).field("api_key", &self.api_key.is_some()).finish()
    }
}

impl OpenAiBackend {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:8080/v1`), with an optional API key
    /// sent as a bearer token (to the server only; it never enters a prompt).
    pub fn new(base: &str, api_key: Option<String>, timeouts: Timeouts) -> Result<OpenAiBackend, BackendError> {
        let parsed = parse_url(base)?;
        if parsed.scheme() == "https" && !cfg!(feature = "tls") {
            return Err(BackendError::Config(format!(
                "llm.url {base:?} is https, and this build has no TLS (build macha-agent with the `tls` feature, or use a local http endpoint)"
            )));
        }
        Ok(OpenAiBackend {
            http: http_client(&timeouts)?,
            base: base.trim_end_matches('/').to_owned(),
            api_key: api_key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()),
            timeouts,
            answer_max: ANSWER_MAX_DEFAULT,
        })
    }

    /// The most bytes of one answer's text that are read (`llm.answer_max_bytes`).
    pub fn with_answer_max(mut self, bytes: usize) -> OpenAiBackend {
        self.answer_max = bytes.max(1024);
        self
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        let mut r = self.http.post(format!("{}/{path}", self.base)).json(body);
        if let Some(k) = &self.api_key {
            r = r.bearer_auth(k);
        }
        r
    }

    async fn send(&self, path: &str, body: &Value) -> Result<reqwest::Response, BackendError> {
        let url = format!("{}/{path}", self.base);
        let resp = self.post(path, body).send().await.map_err(|e| describe_reqwest(&url, &e))?;
        check_status(resp).await
    }
}

async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, BackendError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().or(v["error"].as_str()).map(str::to_owned))
        .unwrap_or(text);
    let detail: String = detail.chars().take(300).collect();
    Err(BackendError::Server(format!("HTTP {status}: {detail}")))
}

fn message(m: &Message, index: usize) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut v = json!({"role": role, "content": m.content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "id": c.id.clone().unwrap_or_else(|| format!("call_{index}_{i}")),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.to_string()},
                })
            })
            .collect();
    }
    if m.role == Role::Tool {
        v["tool_call_id"] =
            json!(m.tool_call_id.clone().unwrap_or_else(|| format!("call_{}_0", index.saturating_sub(1))));
        if let Some(n) = &m.tool_name {
            v["name"] = json!(n);
        }
    }
    v
}

/// The request body for `/chat/completions`.
pub fn body(req: &ChatRequest) -> Value {
    // Tool results refer to the call ids of the assistant message before them.
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut last_call: Option<(usize, usize)> = None;
    for (i, m) in req.messages.iter().enumerate() {
        let mut v = message(m, i);
        if m.role == Role::Assistant && !m.tool_calls.is_empty() {
            last_call = Some((i, 0));
        } else if m.role == Role::Tool
            && m.tool_call_id.is_none()
            && let Some((at, n)) = last_call.as_mut()
        {
            v["tool_call_id"] = json!(format!("call_{at}_{n}"));
            *n += 1;
        }
        messages.push(v);
    }
    let mut b = json!({
        "model": req.model,
        "messages": messages,
        "temperature": req.options.temperature,
        "max_tokens": req.options.max_tokens,
        "stream": req.stream,
    });
    if let Some(seed) = req.options.seed {
        b["seed"] = json!(seed);
    }
    if req.stream {
        b["stream_options"] = json!({"include_usage": true});
    }
    if !req.tools.is_empty() {
        b["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
    }
    if let Some(schema) = &req.format {
        b["response_format"] =
            json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}});
    }
    b
}

fn arguments(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        other => other.clone(),
    }
}

fn usage(v: &Value, out: &mut ChatResponse) {
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        out.prompt_tokens = u["prompt_tokens"].as_u64();
        out.completion_tokens = u["completion_tokens"].as_u64();
    }
}

/// Parses a complete (non-streamed) answer.
pub fn parse_completion(v: &Value) -> Result<ChatResponse, BackendError> {
    let msg = v["choices"]
        .get(0)
        .map(|c| &c["message"])
        .ok_or_else(|| BackendError::Protocol("no choices in the answer".into()))?;
    let mut out =
        ChatResponse { content: msg["content"].as_str().unwrap_or_default().to_owned(), ..ChatResponse::default() };
    if let Some(calls) = msg["tool_calls"].as_array() {
        for c in calls {
            out.tool_calls.push(RawToolCall {
                id: c["id"].as_str().map(str::to_owned),
                name: c["function"]["name"].as_str().unwrap_or_default().to_owned(),
                arguments: arguments(&c["function"]["arguments"]),
            });
        }
    }
    usage(v, &mut out);
    Ok(out)
}

/// Accumulates a streamed answer from server-sent events.
#[derive(Debug, Default)]
pub struct StreamState {
    pub out: ChatResponse,
    calls: Vec<(Option<String>, String, String)>,
    pub finished: bool,
    pub done: bool,
}

impl StreamState {
    /// Feeds one `data:` payload; returns new text, if any.
    pub fn feed(&mut self, data: &str) -> Result<Option<String>, BackendError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| BackendError::Protocol(format!("bad stream event: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(BackendError::Server(
                err["message"].as_str().unwrap_or("error event in the stream").to_owned(),
            ));
        }
        usage(&v, &mut self.out);
        let Some(choice) = v["choices"].get(0) else { return Ok(None) };
        if choice["finish_reason"].is_string() {
            self.finished = true;
        }
        let delta = &choice["delta"];
        if let Some(calls) = delta["tool_calls"].as_array() {
            for c in calls {
                let i = usize::try_from(c["index"].as_u64().unwrap_or(0)).unwrap_or(0).min(64);
                while self.calls.len() <= i {
                    self.calls.push((None, String::new(), String::new()));
                }
                if let Some(id) = c["id"].as_str() {
                    self.calls[i].0 = Some(id.to_owned());
                }
                if let Some(n) = c["function"]["name"].as_str() {
                    self.calls[i].1.push_str(n);
                }
                if let Some(a) = c["function"]["arguments"].as_str() {
                    self.calls[i].2.push_str(a);
                }
            }
        }
        match delta["content"].as_str() {
            Some(t) if !t.is_empty() => {
                self.out.content.push_str(t);
                Ok(Some(t.to_owned()))
            }
            _ => Ok(None),
        }
    }

    /// Bytes accumulated so far (text and tool-call arguments).
    pub fn size(&self) -> usize {
        self.out.content.len() + self.calls.iter().map(|(_, n, a)| n.len() + a.len()).sum::<usize>()
    }

    /// Ends the answer at `max` bytes of text, marked cut; the stream is not read further.
    pub fn cut_at(mut self, max: usize) -> ChatResponse {
        cut(&mut self.out.content, max);
        self.out.truncated = true;
        for (id, name, args) in self.calls {
            let arguments = serde_json::from_str(&args).unwrap_or(Value::Null);
            self.out.tool_calls.push(RawToolCall { id, name, arguments });
        }
        self.out
    }

    /// The answer, once the stream ended properly.
    pub fn finish(mut self) -> Result<ChatResponse, BackendError> {
        if !self.done && !self.finished {
            return Err(BackendError::Protocol("the answer stream ended before the model finished".into()));
        }
        for (id, name, args) in self.calls {
            let arguments = if args.trim().is_empty() { Value::Null } else { arguments(&Value::String(args)) };
            self.out.tool_calls.push(RawToolCall { id, name, arguments });
        }
        Ok(self.out)
    }
}

impl Backend for OpenAiBackend {
    fn describe(&self) -> String {
        format!("OpenAI-compatible server at {}", self.base)
    }

    fn wire_body(&self, req: &ChatRequest) -> Value {
        body(req)
    }

    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            let started = Instant::now();
            let b = body(req);
            within(self.timeouts.request, async {
                let resp = self.send("chat/completions", &b).await?;
                let mut out = if req.stream {
                    let mut state = StreamState::default();
                    let mut first: Option<u64> = None;
                    let mut buf: Vec<u8> = Vec::new();
                    let mut stream = resp.bytes_stream();
                    let mut cut_off = false;
                    loop {
                        let next = tokio::time::timeout(self.timeouts.idle, stream.next())
                            .await
                            .map_err(|_| BackendError::Stalled(self.timeouts.idle))?;
                        let Some(chunk) = next else { break };
                        let chunk = chunk.map_err(|e| describe_reqwest(&self.base, &e))?;
                        buf.extend_from_slice(&chunk);
                        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=nl).collect();
                            let line = String::from_utf8_lossy(&line);
                            let Some(data) = line.trim().strip_prefix("data:") else { continue };
                            if let Some(text) = state.feed(data)? {
                                first.get_or_insert_with(|| millis(started));
                                if let Some(t) = &tokens {
                                    let _ = t.send(text);
                                }
                            }
                        }
                        if state.done {
                            break;
                        }
                        if state.size() > self.answer_max {
                            // Stop reading: the rest of the answer is never taken in.
                            cut_off = true;
                            break;
                        }
                        if buf.len() > self.answer_max + ENVELOPE_MAX {
                            return Err(BackendError::TooLarge(self.answer_max + ENVELOPE_MAX));
                        }
                    }
                    let mut out = if cut_off { state.cut_at(self.answer_max) } else { state.finish()? };
                    out.first_token_ms = first;
                    out
                } else {
                    let bytes =
                        body_capped(resp, self.answer_max + ENVELOPE_MAX, self.timeouts.idle, &self.base).await?;
                    let v: Value = serde_json::from_slice(&bytes)
                        .map_err(|e| BackendError::Protocol(format!("the answer is not JSON: {e}")))?;
                    let mut out = parse_completion(&v)?;
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
        options: &'a GenOptions,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            let req = ChatRequest {
                model: model.to_owned(),
                messages: vec![Message::system(system), Message::user(prompt)],
                tools: Vec::new(),
                format: None,
                options: options.clone(),
                stream: false,
            };
            self.chat(&req, None).await
        })
    }

    fn embed<'a>(&'a self, model: &'a str, input: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BackendError>> {
        Box::pin(async move {
            within(self.timeouts.request, async {
                let resp = self.send("embeddings", &json!({"model": model, "input": input})).await?;
                let v: Value = resp.json().await.map_err(|e| BackendError::Protocol(e.to_string()))?;
                let data =
                    v["data"].as_array().ok_or_else(|| BackendError::Protocol("no data in the answer".into()))?;
                let out: Vec<Vec<f32>> = data
                    .iter()
                    .map(|d| {
                        d["embedding"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|x| x.as_f64().map(|f| f as f32)).collect())
                            .unwrap_or_default()
                    })
                    .collect();
                if out.len() != input.len() {
                    return Err(BackendError::Protocol(format!("{} embeddings for {} inputs", out.len(), input.len())));
                }
                Ok(out)
            })
            .await
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            within(self.timeouts.request, async {
                let url = format!("{}/models", self.base);
                let mut r = self.http.get(&url);
                if let Some(k) = &self.api_key {
                    r = r.bearer_auth(k);
                }
                let resp = check_status(r.send().await.map_err(|e| describe_reqwest(&url, &e))?).await?;
                let v: Value = resp.json().await.map_err(|e| BackendError::Protocol(e.to_string()))?;
                let names = v["data"]
                    .as_array()
                    .map(|d| d.iter().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                Ok(names)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ToolSpec;

    #[test]
    fn body_links_tool_results_to_their_calls() {
        let mut a = Message::assistant("");
        a.tool_calls.push(RawToolCall { id: None, name: "hardware".into(), arguments: json!({}) });
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![Message::system("s"), Message::user("u"), a, Message::tool("hardware", None, "out")],
            tools: vec![ToolSpec {
                name: "hardware".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            format: Some(json!({"type": "object"})),
            options: GenOptions::default(),
            stream: true,
        };
        let b = body(&req);
        assert_eq!(b["messages"][2]["tool_calls"][0]["id"], "call_2_0");
        assert_eq!(b["messages"][2]["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(b["messages"][3]["tool_call_id"], "call_2_0");
        assert_eq!(b["tools"][0]["function"]["name"], "hardware");
        assert_eq!(b["response_format"]["type"], "json_schema");
        assert_eq!(b["stream_options"]["include_usage"], true);
    }

    #[test]
    fn streams_accumulate_text_and_calls() {
        let mut s = StreamState::default();
        assert_eq!(s.feed(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#), Ok(Some("Hel".into())));
        assert_eq!(s.feed(r#"{"choices":[{"delta":{"content":"lo"}}]}"#), Ok(Some("lo".into())));
        let _ = s.feed(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"unit_","arguments":"{\"un"}}]}}]}"#);
        let _ = s.feed(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"status","arguments":"it\":\"x\"}"}}]},"finish_reason":"tool_calls"}]}"#);
        let _ = s.feed(r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#);
        assert_eq!(s.feed("[DONE]"), Ok(None));
        let out = s.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.content, "Hello");
        assert_eq!(out.tool_calls[0].name, "unit_status");
        assert_eq!(out.tool_calls[0].arguments, json!({"unit": "x"}));
        assert_eq!(out.prompt_tokens, Some(12));
        let mut cut = StreamState::default();
        let _ = cut.feed(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#);
        assert!(cut.finish().is_err());
        assert!(StreamState::default().feed("{garbage").is_err());
    }
}
