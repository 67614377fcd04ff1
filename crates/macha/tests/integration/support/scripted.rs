//! A scripted model server that speaks the Ollama HTTP API for real: `/api/chat` (with
//! `tool_calls`, streamed as NDJSON or not), `/api/generate`, `/api/embed`, `/api/tags`. Each chat
//! request takes the next scripted reply; every request is recorded for the test to inspect.

use super::http::{self, HttpRequest, Out};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the model does on one chat request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A final text answer.
    Text(String),
    /// Tool calls: (name, arguments).
    Calls(Vec<(String, Value)>),
    /// A raw body (e.g. not JSON at all).
    Raw(String),
    /// Headers and one chunk, then nothing, forever.
    Stall,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// An HTTP error.
    Status(u16, String),
    /// A hostile answer of this many bytes of text (streamed in 64 KiB pieces, or one body),
    /// written until the client stops reading.
    Huge(usize),
}

impl Reply {
    pub fn text(s: &str) -> Reply {
        Reply::Text(s.to_owned())
    }
    pub fn call(name: &str, args: Value) -> Reply {
        Reply::Calls(vec![(name.to_owned(), args)])
    }
}

#[derive(Default)]
struct State {
    chat: VecDeque<Reply>,
    requests: Vec<(String, Value)>,
    /// Only chat requests whose body contains this take scripted replies; others get `other`.
    only_if: Option<(String, Reply)>,
}

/// A running scripted server.
#[derive(Clone)]
pub struct Scripted {
    pub url: String,
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> &'static str {
    "2026-11-21T10:00:00Z"
}

fn done_fields(prompt: &Value) -> Value {
    let n = (prompt.to_string().len() / 4) as u64;
    json!({"total_duration": 1_000_000, "load_duration": 0, "prompt_eval_count": n, "prompt_eval_duration": 1000, "eval_count": 8, "eval_duration": 1000})
}

fn message(content: &str, calls: &[(String, Value)]) -> Value {
    let tool_calls: Vec<Value> = calls.iter().map(|(n, a)| json!({"function": {"name": n, "arguments": a}})).collect();
    json!({"role": "assistant", "content": content, "tool_calls": tool_calls})
}

impl Scripted {
    pub fn start(script: Vec<Reply>) -> Scripted {
        let state = Arc::new(Mutex::new(State { chat: script.into(), requests: Vec::new(), only_if: None }));
        let s2 = Arc::clone(&state);
        let url = http::serve(Arc::new(move |req: HttpRequest, out: Out| {
            let state = Arc::clone(&s2);
            Box::pin(async move { handle(state, req, out).await })
        }));
        Scripted { url, state }
    }

    /// Scripted replies only for chat requests that mention `needle`; every other chat request
    /// (say, about another test's units in a shared lab) gets `other`.
    pub fn start_for(needle: &str, script: Vec<Reply>, other: Reply) -> Scripted {
        let s = Scripted::start(script);
        lock(&s.state).only_if = Some((needle.to_owned(), other));
        s
    }

    /// Adds replies to the script.
    pub fn push(&self, replies: Vec<Reply>) {
        lock(&self.state).chat.extend(replies);
    }

    /// Every request so far: (path, body).
    pub fn requests(&self) -> Vec<(String, Value)> {
        lock(&self.state).requests.clone()
    }

    /// The chat requests so far.
    pub fn chats(&self) -> Vec<Value> {
        self.requests().into_iter().filter(|(p, _)| p == "/api/chat").map(|(_, b)| b).collect()
    }

    /// Waits until at least `n` requests arrived.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.requests().len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

async fn handle(state: Arc<Mutex<State>>, req: HttpRequest, mut out: Out) {
    let body = req.json();
    lock(&state).requests.push((req.path.clone(), body.clone()));
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/tags") => {
            let _ =
                out.json(200, &json!({"models": [{"name": "scripted:latest", "modified_at": now(), "size": 1}]})).await;
        }
        ("POST", "/api/embed") => {
            let n = body["input"].as_array().map_or(1, Vec::len);
            let e: Vec<Value> = (0..n).map(|i| json!([0.1, 0.2, i as f64])).collect();
            let _ = out.json(200, &json!({"embeddings": e})).await;
        }
        ("POST", "/api/generate") => {
            let prompt = body["prompt"].as_str().unwrap_or_default();
            let mut r = json!({"model": body["model"], "created_at": now(), "done": true,
                "response": format!("summary of {} bytes of data", prompt.len())});
            if let (Some(o), Some(d)) = (r.as_object_mut(), done_fields(&body).as_object()) {
                o.extend(d.clone());
            }
            let _ = out.json(200, &r).await;
        }
        ("POST", "/api/chat") => {
            let reply = {
                let mut st = lock(&state);
                match &st.only_if {
                    Some((needle, other)) if !body.to_string().contains(needle.as_str()) => other.clone(),
                    _ => st.chat.pop_front().unwrap_or_else(|| Reply::text("(the script is over)")),
                }
            };
            let stream = body["stream"].as_bool().unwrap_or(false);
            answer(reply, stream, &body, &mut out).await;
        }
        _ => {
            let _ = out.json(404, &json!({"error": "not found"})).await;
        }
    }
}

fn answer<'a>(
    reply: Reply,
    stream: bool,
    body: &'a Value,
    out: &'a mut Out,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let model = body["model"].clone();
        let mut done = json!({"model": model, "created_at": now(), "done": true});
        if let (Some(o), Some(d)) = (done.as_object_mut(), done_fields(body).as_object()) {
            o.extend(d.clone());
        }
        match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                answer(*inner, stream, body, out).await;
            }
            Reply::Status(code, text) => {
                let _ = out.json(code, &json!({"error": text})).await;
            }
            Reply::Huge(n) => {
                let piece = "A".repeat(64 * 1024);
                let mut sent = 0;
                if stream {
                    let _ = out.head(200, "application/x-ndjson").await;
                    while sent < n {
                        let chunk = json!({"model": model, "created_at": now(), "message": message(&piece, &[]), "done": false});
                        if out.write(format!("{chunk}\n").as_bytes()).await.is_err() {
                            return;
                        }
                        sent += piece.len();
                    }
                    done["message"] = message("", &[]);
                    let _ = out.write(format!("{done}\n").as_bytes()).await;
                } else {
                    let _ = out.head(200, "application/json").await;
                    let open = format!(
                        "{{\"model\":{model},\"created_at\":\"{}\",\"done\":true,\"message\":{{\"role\":\"assistant\",\"content\":\"",
                        now()
                    );
                    if out.write(open.as_bytes()).await.is_err() {
                        return;
                    }
                    while sent < n {
                        if out.write(piece.as_bytes()).await.is_err() {
                            return;
                        }
                        sent += piece.len();
                    }
                    let _ = out.write(b"\"}}").await;
                }
            }
            Reply::Raw(text) => {
                let _ = out.head(200, "application/json").await;
                let _ = out.write(text.as_bytes()).await;
            }
            Reply::Stall => {
                let _ = out.head(200, "application/x-ndjson").await;
                let first =
                    json!({"model": model, "created_at": now(), "message": message("Thinking", &[]), "done": false});
                let _ = out.write(format!("{first}\n").as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            r @ (Reply::Text(_) | Reply::Calls(_)) if !stream => {
                let (content, calls) = match r {
                    Reply::Text(t) => (t, Vec::new()),
                    Reply::Calls(c) => (String::new(), c),
                    _ => (String::new(), Vec::new()),
                };
                done["message"] = message(&content, &calls);
                let _ = out.json(200, &done).await;
            }
            Reply::Text(text) => {
                let _ = out.head(200, "application/x-ndjson").await;
                let pieces: Vec<String> = {
                    let chars: Vec<char> = text.chars().collect();
                    chars.chunks(7).map(|c| c.iter().collect()).collect()
                };
                for p in pieces {
                    let chunk =
                        json!({"model": model, "created_at": now(), "message": message(&p, &[]), "done": false});
                    let _ = out.write(format!("{chunk}\n").as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                done["message"] = message("", &[]);
                let _ = out.write(format!("{done}\n").as_bytes()).await;
            }
            Reply::Calls(calls) => {
                let _ = out.head(200, "application/x-ndjson").await;
                let chunk = json!({"model": model, "created_at": now(), "message": message("", &calls), "done": false});
                let _ = out.write(format!("{chunk}\n").as_bytes()).await;
                done["message"] = message("", &[]);
                let _ = out.write(format!("{done}\n").as_bytes()).await;
            }
        }
    })
}
