//! An Ollama-API front over an OpenAI-compatible server (llama.cpp's), for the real-model tier:
//! `ollama-rs` in Macha talks to a real model through exactly the production code path, and this
//! front translates `/api/chat` (tools, structured `format`, NDJSON streaming), `/api/generate`,
//! `/api/embed` and `/api/tags` to `/v1/*`. Upstream calls go through Macha's own OpenAI backend.

use super::http::{self, HttpRequest, Out};
use macha_agent::backend::openai::OpenAiBackend;
use macha_agent::backend::{Backend, Timeouts};
use macha_agent::message::{ChatRequest, GenOptions, Message, RawToolCall, Role, ToolSpec};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn role(s: &str) -> Role {
    match s {
        "system" => Role::System,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => Role::User,
    }
}

/// The Ollama chat request as Macha's neutral request.
pub fn to_request(body: &Value) -> ChatRequest {
    let messages = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mut msg =
                Message::new(role(m["role"].as_str().unwrap_or("user")), m["content"].as_str().unwrap_or_default());
            msg.tool_calls = m["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| RawToolCall {
                    id: None,
                    name: c["function"]["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: c["function"]["arguments"].clone(),
                })
                .collect();
            msg
        })
        .collect();
    let tools = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| ToolSpec {
            name: t["function"]["name"].as_str().unwrap_or_default().to_owned(),
            description: t["function"]["description"].as_str().unwrap_or_default().to_owned(),
            parameters: t["function"]["parameters"].clone(),
        })
        .collect();
    let format = match &body["format"] {
        Value::String(s) if s == "json" => Some(json!({"type": "object"})),
        Value::Object(_) => Some(body["format"].clone()),
        _ => None,
    };
    let o = &body["options"];
    ChatRequest {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        messages,
        tools,
        format,
        options: GenOptions {
            temperature: o["temperature"].as_f64().unwrap_or(0.1) as f32,
            num_ctx: o["num_ctx"].as_u64().unwrap_or(4096) as u32,
            max_tokens: o["num_predict"].as_u64().unwrap_or(256).min(4096) as u32,
            seed: o["seed"].as_i64().map(|s| s as i32),
        },
        stream: body["stream"].as_bool().unwrap_or(false),
    }
}

fn now() -> &'static str {
    "2026-11-21T10:00:00Z"
}

fn assistant(content: &str, calls: &[RawToolCall]) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|c| json!({"function": {"name": c.name, "arguments": if c.arguments.is_object() { c.arguments.clone() } else { json!({}) }}}))
        .collect();
    json!({"role": "assistant", "content": content, "tool_calls": tool_calls})
}

fn done(model: &Value, prompt: Option<u64>, eval: Option<u64>, ms: u64) -> Value {
    json!({"model": model, "created_at": now(), "done": true, "total_duration": ms * 1_000_000, "load_duration": 0,
        "prompt_eval_count": prompt.unwrap_or(0), "prompt_eval_duration": 0, "eval_count": eval.unwrap_or(0), "eval_duration": 0})
}

async fn handle(up: Arc<OpenAiBackend>, req: HttpRequest, mut out: Out) {
    let body = req.json();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/tags") => {
            let names = up.models().await.unwrap_or_default();
            let models: Vec<Value> =
                names.iter().map(|n| json!({"name": n, "modified_at": now(), "size": 0})).collect();
            let _ = out.json(200, &json!({"models": models})).await;
        }
        ("POST", "/api/embed") => match up.embed(body["model"].as_str().unwrap_or_default(), &[]).await {
            Ok(_) | Err(_) => {
                let _ = out.json(501, &json!({"error": "embeddings are not served by this front"})).await;
            }
        },
        ("POST", "/api/generate") => {
            let opts = to_request(&json!({"options": body["options"]})).options;
            let r = up
                .generate(
                    body["model"].as_str().unwrap_or_default(),
                    body["system"].as_str().unwrap_or(""),
                    body["prompt"].as_str().unwrap_or(""),
                    &opts,
                )
                .await;
            match r {
                Ok(r) => {
                    let mut v = done(&body["model"], r.prompt_tokens, r.completion_tokens, r.total_ms);
                    v["response"] = json!(r.content);
                    let _ = out.json(200, &v).await;
                }
                Err(e) => {
                    let _ = out.json(502, &json!({"error": e.to_string()})).await;
                }
            }
        }
        ("POST", "/api/chat") => {
            let request = to_request(&body);
            if request.stream {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let _ = out.head(200, "application/x-ndjson").await;
                let call = up.chat(&request, Some(tx));
                tokio::pin!(call);
                let model = body["model"].clone();
                let chunk = |t: &str| {
                    format!(
                        "{}\n",
                        json!({"model": model, "created_at": now(), "message": assistant(t, &[]), "done": false})
                    )
                };
                // Pieces are written as they arrive: this is the stream the Ollama client reads.
                let r = loop {
                    tokio::select! {
                        Some(t) = rx.recv() => { let _ = out.write(chunk(&t).as_bytes()).await; }
                        r = &mut call => break r,
                    }
                };
                while let Ok(t) = rx.try_recv() {
                    let _ = out.write(chunk(&t).as_bytes()).await;
                }
                match r {
                    Ok(r) => {
                        if !r.tool_calls.is_empty() {
                            let c = json!({"model": model, "created_at": now(), "message": assistant("", &r.tool_calls), "done": false});
                            let _ = out.write(format!("{c}\n").as_bytes()).await;
                        }
                        let mut d = done(&model, r.prompt_tokens, r.completion_tokens, r.total_ms);
                        d["message"] = assistant("", &[]);
                        let _ = out.write(format!("{d}\n").as_bytes()).await;
                    }
                    Err(e) => {
                        let _ = out.write(format!("{}\n", json!({"error": e.to_string()})).as_bytes()).await;
                    }
                }
            } else {
                match up.chat(&request, None).await {
                    Ok(r) => {
                        let mut d = done(&body["model"], r.prompt_tokens, r.completion_tokens, r.total_ms);
                        d["message"] = assistant(&r.content, &r.tool_calls);
                        let _ = out.json(200, &d).await;
                    }
                    Err(e) => {
                        let _ = out.json(502, &json!({"error": e.to_string()})).await;
                    }
                }
            }
        }
        _ => {
            let _ = out.json(404, &json!({"error": "not found"})).await;
        }
    }
}

/// Starts the front for the OpenAI-compatible API at `upstream` (e.g. `http://127.0.0.1:18080/v1`).
pub fn start(upstream: &str) -> String {
    let up = match OpenAiBackend::new(upstream, None, Timeouts::from_request(Duration::from_secs(300))) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("{e}"),
    };
    http::serve(Arc::new(move |req: HttpRequest, out: Out| {
        let up = Arc::clone(&up);
        Box::pin(async move { handle(up, req, out).await })
    }))
}
