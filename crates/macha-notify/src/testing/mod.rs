//! Protocol-faithful fake receivers for tests (feature `test-support`): Gotify, ntfy and a
//! webhook receiver, each an HTTP/1.1 server on a local port that checks what the real one
//! checks, records every request, and can be told to answer 401, 429, 5xx or to stall.
//!
//! The Gotify stand-in is stricter than Gotify itself: Gotify also accepts its token as a
//! `?token=` query parameter, this one answers 401 to that, as a deployment behind a proxy that
//! must not log tokens would want. No Gotify server can be installed where these tests run, so
//! this is written from Gotify's API documentation (`POST /message`, `X-Gotify-Key`, the message
//! JSON with `title`, `message`, `priority` and `extras`), not checked against a live one. The
//! ntfy stand-in follows ntfy's documented limits: a message body of at most 4,096 bytes (413
//! above), and a visitor bucket of 60 requests refilled one per 5 s (429 when empty).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What kind of receiver a fake server plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    /// Gotify with one application token.
    Gotify { token: String },
    /// ntfy, with an access token if given; the visitor bucket as configured.
    Ntfy { token: Option<String>, burst: u32, refill_every: Duration },
    /// A webhook receiver checking the HMAC if it has a key.
    Webhook { key: Option<Vec<u8>> },
}

/// How the server answers the next request (before its own checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// As the real server would.
    Normal,
    /// This status, with `Retry-After` if given.
    Status { status: u16, retry_after: Option<u64> },
    /// Waits this long, then answers as the real server would.
    Stall(Duration),
}

/// One request the server received, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
struct State {
    flavor: Flavor,
    script: VecDeque<Mode>,
    default: Mode,
    received: Vec<Received>,
    tokens: u32,
    refilled: Instant,
}

/// A running fake server; stopped when dropped.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// ntfy's documented visitor bucket.
pub const NTFY_BURST: u32 = 60;
pub const NTFY_REFILL: Duration = Duration::from_secs(5);
/// ntfy's documented message size limit.
pub const NTFY_MESSAGE_MAX: usize = 4_096;

impl FakeServer {
    /// A fake Gotify server accepting `token`.
    pub async fn gotify(token: &str) -> std::io::Result<FakeServer> {
        FakeServer::start(Flavor::Gotify { token: token.to_owned() }).await
    }

    /// A fake ntfy server with the documented visitor bucket.
    pub async fn ntfy(token: Option<&str>) -> std::io::Result<FakeServer> {
        FakeServer::start(Flavor::Ntfy {
            token: token.map(str::to_owned),
            burst: NTFY_BURST,
            refill_every: NTFY_REFILL,
        })
        .await
    }

    /// A fake webhook receiver, checking signatures with `key` if given.
    pub async fn webhook(key: Option<&[u8]>) -> std::io::Result<FakeServer> {
        FakeServer::start(Flavor::Webhook { key: key.map(<[u8]>::to_vec) }).await
    }

    /// Starts a server of `flavor` on a free local port.
    pub async fn start(flavor: Flavor) -> std::io::Result<FakeServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tokens = match &flavor {
            Flavor::Ntfy { burst, .. } => *burst,
            _ => u32::MAX,
        };
        let state = Arc::new(Mutex::new(State {
            flavor,
            script: VecDeque::new(),
            default: Mode::Normal,
            received: Vec::new(),
            tokens,
            refilled: Instant::now(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(FakeServer { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, refused ones included.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    /// The requests answered with 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        lock(&self.state).received.iter().filter(|r| r.accepted()).cloned().collect()
    }

    /// The next answers, one mode per request; then the default mode again.
    pub fn script(&self, modes: impl IntoIterator<Item = Mode>) {
        lock(&self.state).script.extend(modes);
    }

    /// How every request without a scripted mode is answered.
    pub fn set_default(&self, mode: Mode) {
        lock(&self.state).default = mode;
    }
}

fn reply(status: u16, body: serde_json::Value, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    if let Some(s) = retry_after
        && let Ok(v) = hyper::header::HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}

fn gotify_error(status: u16, description: &str) -> (u16, serde_json::Value) {
    let error = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    (status, serde_json::json!({"error": error, "errorCode": status, "errorDescription": description}))
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let mode = {
        let mut s = lock(&state);
        let default = s.default.clone();
        s.script.pop_front().unwrap_or(default)
    };
    if let Mode::Stall(d) = &mode {
        tokio::time::sleep(*d).await;
    }
    let mut rec = Received { method, path, query, headers, body, status: 0 };
    let (status, answer, retry_after) = match mode {
        Mode::Status { status, retry_after } => (status, serde_json::json!({"error": "scripted"}), retry_after),
        Mode::Normal | Mode::Stall(_) => {
            let mut s = lock(&state);
            let (status, answer, retry_after) = judge(&mut s, &rec);
            drop(s);
            (status, answer, retry_after)
        }
    };
    rec.status = status;
    lock(&state).received.push(rec);
    Ok(reply(status, answer, retry_after))
}

/// What the real server would answer.
fn judge(s: &mut State, r: &Received) -> (u16, serde_json::Value, Option<u64>) {
    let id = s.received.len() + 1;
    match s.flavor.clone() {
        Flavor::Gotify { token } => {
            if r.query.as_deref().is_some_and(|q| q.split('&').any(|p| p.starts_with("token="))) {
                let (st, b) = gotify_error(401, "a token in the query string is refused here; send X-Gotify-Key");
                return (st, b, None);
            }
            if r.header("x-gotify-key") != Some(token.as_str()) {
                let (st, b) = gotify_error(401, "you need to provide a valid access token or user credentials");
                return (st, b, None);
            }
            if r.method != "POST" || r.path != "/message" {
                let (st, b) = gotify_error(404, "not found");
                return (st, b, None);
            }
            let Some(json) = r.json() else {
                let (st, b) = gotify_error(400, "the body is not JSON");
                return (st, b, None);
            };
            if json.get("message").and_then(|m| m.as_str()).is_none_or(str::is_empty) {
                let (st, b) = gotify_error(400, "Field 'message' is required");
                return (st, b, None);
            }
            let mut answer = json.clone();
            answer["id"] = serde_json::json!(id);
            answer["appid"] = serde_json::json!(1);
            (200, answer, None)
        }
        Flavor::Ntfy { token, burst, refill_every } => {
            // The visitor bucket, refilled in real time.
            let every = refill_every.max(Duration::from_millis(1));
            let elapsed = s.refilled.elapsed();
            let new = (elapsed.as_millis() / every.as_millis()) as u32;
            if new > 0 {
                s.tokens = s.tokens.saturating_add(new).min(burst);
                s.refilled += every * new;
            }
            if s.tokens == 0 {
                return (
                    429,
                    serde_json::json!({"code": 42901, "http": 429, "error": "limit reached: too many requests"}),
                    None,
                );
            }
            s.tokens -= 1;
            if let Some(token) = token
                && r.header("authorization") != Some(format!("Bearer {token}").as_str())
            {
                return (403, serde_json::json!({"code": 40301, "http": 403, "error": "forbidden"}), None);
            }
            let topic = r.path.trim_start_matches('/');
            if r.method != "POST" || topic.is_empty() || topic.contains('/') {
                return (404, serde_json::json!({"code": 40401, "http": 404, "error": "page not found"}), None);
            }
            if r.body.len() > NTFY_MESSAGE_MAX {
                return (413, serde_json::json!({"code": 41301, "http": 413, "error": "message too large"}), None);
            }
            let priority = r.header("priority").map_or(Ok(3), str::parse::<u8>);
            if !matches!(priority, Ok(1..=5)) {
                return (400, serde_json::json!({"code": 40007, "http": 400, "error": "invalid priority"}), None);
            }
            (
                200,
                serde_json::json!({
                    "id": format!("n{id}"),
                    "event": "message",
                    "topic": topic,
                    "title": r.header("title"),
                    "message": String::from_utf8_lossy(&r.body),
                }),
                None,
            )
        }
        Flavor::Webhook { key } => {
            if let Some(key) = key {
                let ok = r.header("x-macha-signature").is_some_and(|sig| crate::webhook::verify(&key, &r.body, sig));
                if !ok {
                    return (401, serde_json::json!({"error": "bad signature"}), None);
                }
            }
            if r.json().is_none() {
                return (400, serde_json::json!({"error": "the body is not JSON"}), None);
            }
            (200, serde_json::json!({"ok": true}), None)
        }
    }
}
