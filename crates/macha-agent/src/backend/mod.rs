//! The model backends behind one trait: Ollama through `ollama-rs` ([`ollama`]) and any
//! OpenAI-compatible server such as llama.cpp's or vLLM's ([`openai`]).
//!
//! Every call is bounded: a connect timeout, an overall timeout, and for streams an idle timeout
//! (a stream that stops sending is "stalled", not waited on forever). Errors say what failed in
//! words an administrator can act on; they end up in `analysis unavailable: <reason>`.

pub mod ollama;
pub mod openai;

use crate::message::{ChatRequest, ChatResponse, GenOptions};
use futures_util::future::BoxFuture;
use std::time::Duration;

/// Where streamed answer text goes, piece by piece.
pub type TokenSink = tokio::sync::mpsc::UnboundedSender<String>;

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("cannot reach the model server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the model server did not answer within {}", humantime_secs(*.0))]
    Timeout(Duration),
    #[error("the model server stopped sending (nothing for {})", humantime_secs(*.0))]
    Stalled(Duration),
    #[error("the model server answered with an error: {0}")]
    Server(String),
    #[error("the model server sent an unreadable answer: {0}")]
    Protocol(String),
    #[error("the configuration is not usable: {0}")]
    Config(String),
    #[error("the model server's answer is larger than {0} bytes; it was cut off and refused")]
    TooLarge(usize),
}

/// Default most bytes of one answer's text (`llm.answer_max_bytes`).
pub const ANSWER_MAX_DEFAULT: usize = 256 * 1024;
/// What a whole response body may add to the answer's text: the JSON envelope, tool calls.
pub const ENVELOPE_MAX: usize = 64 * 1024;

fn humantime_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

/// The time limits of every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole call, from sending to the last byte.
    pub request: Duration,
    /// Longest silence within a streamed answer.
    pub idle: Duration,
}

impl Timeouts {
    /// Defaults derived from the configured overall timeout.
    pub fn from_request(request: Duration) -> Timeouts {
        Timeouts {
            connect: request.min(Duration::from_secs(5)),
            request,
            idle: (request / 2).min(Duration::from_secs(30)),
        }
    }
}

/// A model server.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// "ollama at http://127.0.0.1:11434", for messages.
    fn describe(&self) -> String;

    /// One chat turn. With `tokens`, the answer is streamed and its text sent there piece by piece.
    fn chat<'a>(
        &'a self,
        req: &'a ChatRequest,
        tokens: Option<TokenSink>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>>;

    /// One completion without history (used for summaries).
    fn generate<'a>(
        &'a self,
        model: &'a str,
        system: &'a str,
        prompt: &'a str,
        options: &'a GenOptions,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>>;

    /// Embeddings of `input`, one vector per text.
    fn embed<'a>(&'a self, model: &'a str, input: &'a [String]) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BackendError>>;

    /// The models the server has.
    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>>;

    /// The request body as it goes on the wire, for the prompt log.
    fn wire_body(&self, req: &ChatRequest) -> serde_json::Value {
        serde_json::to_value(req).unwrap_or(serde_json::Value::Null)
    }
}

/// Runs `fut` within `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(BackendError::Timeout(limit)),
    }
}

/// Reads a whole response body, at most `max` bytes: a larger one is [`BackendError::TooLarge`],
/// and nothing past the limit is read. Each chunk must come within `idle`.
pub(crate) async fn body_capped(
    resp: reqwest::Response,
    max: usize,
    idle: Duration,
    url: &str,
) -> Result<Vec<u8>, BackendError> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    loop {
        let next = tokio::time::timeout(idle, stream.next()).await.map_err(|_| BackendError::Stalled(idle))?;
        let Some(chunk) = next else { return Ok(out) };
        let chunk = chunk.map_err(|e| describe_reqwest(url, &e))?;
        if out.len() + chunk.len() > max {
            return Err(BackendError::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary; whether it cut.
pub(crate) fn cut(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Parses and checks a server URL (http or https, with a host).
pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, BackendError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| BackendError::Config(format!("llm.url {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err(BackendError::Config(format!("llm.url {url:?} must be an http:// or https:// URL with a host")));
    }
    Ok(parsed)
}

/// The HTTP client both backends use: a connect timeout, no proxy from the environment (the
/// model server is configured, not discovered), no redirects.
pub(crate) fn http_client(t: &Timeouts) -> Result<reqwest::Client, BackendError> {
    reqwest::Client::builder()
        .connect_timeout(t.connect)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BackendError::Config(format!("cannot build the HTTP client: {e}")))
}

/// A reqwest error in words.
pub(crate) fn describe_reqwest(url: &str, e: &reqwest::Error) -> BackendError {
    use std::error::Error;
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    if e.is_connect() || e.is_timeout() || e.is_request() && !e.is_body() && !e.is_decode() {
        BackendError::Unreachable { url: url.to_owned(), reason }
    } else if e.is_decode() || e.is_body() {
        BackendError::Protocol(reason)
    } else {
        BackendError::Server(reason)
    }
}
