//! The local API: newline-delimited JSON over a Unix socket.
//!
//! Architecture invariant: only this module knows the wire format. Authorisation is by the peer's
//! kernel-reported credentials (`SO_PEERCRED`), never by anything the client sends: root and members
//! of the configured admin group may change state (approve, reject, resolve, close); everyone else
//! may read. Every denial is audited.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The largest request line the daemon reads.
pub const REQUEST_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Daemon status: autonomy, uptime, sources.
    Status,
    /// Run one cycle now and return its report.
    RunCheck,
    ListIssues {
        #[serde(default)]
        states: Vec<String>,
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    ShowIssue {
        id: i64,
    },
    ResolveIssue {
        id: i64,
        #[serde(default)]
        note: Option<String>,
    },
    CloseIssue {
        id: i64,
        #[serde(default)]
        note: Option<String>,
    },
    ListApprovals {
        #[serde(default)]
        states: Vec<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    ShowApproval {
        id: i64,
    },
    Approve {
        id: i64,
        #[serde(default)]
        note: Option<String>,
    },
    Reject {
        id: i64,
        #[serde(default)]
        note: Option<String>,
    },
    /// Audit records; `after_id` lets `--follow` poll.
    QueryAudit {
        query: macha_store::AuditQuery,
    },
    /// One question to the model (streamed; `macha-ask`).
    Ask {
        question: String,
    },
    /// One turn of a chat (streamed; `macha-chat`). The conversation id comes back in the first
    /// answer; sending it again continues the conversation with its history.
    Chat {
        #[serde(default)]
        conversation: Option<String>,
        message: String,
    },
    /// One turn of a discussion of a pending approval (streamed; `macha-approve discuss`).
    Discuss {
        id: i64,
        message: String,
    },
    /// The prompt log: exactly what was sent to the model, redacted (`macha-logs prompts`).
    ListPrompts {
        #[serde(default)]
        request_id: Option<i64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The host registry (`macha-systems list`).
    ListHosts,
    /// One registered host with its profile and recent records (`macha-systems show`).
    ShowHost {
        name: String,
    },
    /// The keys a host presents, with fingerprints (`macha-systems trust`, before confirming).
    ScanHost {
        name: String,
    },
    /// Pins the presented keys with these fingerprints and makes the host trusted.
    TrustHost {
        name: String,
        fingerprints: Vec<String>,
    },
    /// Lets Macha contact a discovered (or new) host, for observation.
    AdmitHost {
        name: String,
    },
    /// Stops contacting a host and removes its pinned keys; its history stays.
    ForgetHost {
        name: String,
    },
    /// Deletes the audit records up to `upto_id`, if `hash` is the stored hash of that record
    /// (proof of an export; `macha logs prune`).
    PruneAudit {
        upto_id: i64,
        hash: String,
    },
}

impl Request {
    /// Whether the request needs an admin: it changes state, or it talks to the model (whose
    /// proposals the policy may execute), or it reveals what was sent to the model, or it makes
    /// Macha contact a host (a key scan).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::ResolveIssue { .. }
                | Request::CloseIssue { .. }
                | Request::Approve { .. }
                | Request::Reject { .. }
                | Request::Ask { .. }
                | Request::Chat { .. }
                | Request::Discuss { .. }
                | Request::ListPrompts { .. }
                | Request::ScanHost { .. }
                | Request::TrustHost { .. }
                | Request::AdmitHost { .. }
                | Request::ForgetHost { .. }
                | Request::PruneAudit { .. }
        )
    }

    /// Whether the answer is streamed: `{"event": …}` lines, then one final response line.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Request::Ask { .. } | Request::Chat { .. } | Request::Discuss { .. })
    }
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::RunCheck => "run_check",
            Request::ListIssues { .. } => "list_issues",
            Request::ShowIssue { .. } => "show_issue",
            Request::ResolveIssue { .. } => "resolve_issue",
            Request::CloseIssue { .. } => "close_issue",
            Request::ListApprovals { .. } => "list_approvals",
            Request::ShowApproval { .. } => "show_approval",
            Request::Approve { .. } => "approve",
            Request::Reject { .. } => "reject",
            Request::QueryAudit { .. } => "query_audit",
            Request::Ask { .. } => "ask",
            Request::Chat { .. } => "chat",
            Request::Discuss { .. } => "discuss",
            Request::ListPrompts { .. } => "list_prompts",
            Request::ListHosts => "list_hosts",
            Request::ShowHost { .. } => "show_host",
            Request::ScanHost { .. } => "scan_host",
            Request::TrustHost { .. } => "trust_host",
            Request::AdmitHost { .. } => "admit_host",
            Request::ForgetHost { .. } => "forget_host",
            Request::PruneAudit { .. } => "prune_audit",
        }
    }
}

/// Why a request failed, for exit codes and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Denied,
    NotFound,
    Conflict,
    Internal,
    /// A dependency (the model server) is not available.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    Ok { ok: bool, data: serde_json::Value },
    Err { ok: bool, code: ErrorCode, error: String },
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response::Ok { ok: true, data }
    }
    pub fn err(code: ErrorCode, error: impl Into<String>) -> Response {
        Response::Err { ok: false, code, error: error.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the Macha daemon at {path}: {source} (is macha.service running?)")]
    Connect { path: String, source: std::io::Error },
    #[error("talking to the Macha daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent an unreadable answer: {0}")]
    Protocol(String),
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
}

/// One line of a streamed answer: an event, or the final response that ends the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamLine {
    /// Written as `{"event": …}` (the value's own fields under `event`).
    Event(serde_json::Value),
    Done(Response),
}

impl StreamLine {
    /// An event line from anything serialisable with an `event` tag.
    pub fn event<T: Serialize>(e: &T) -> StreamLine {
        StreamLine::Event(serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
    }

    /// The wire form (without the newline).
    pub fn to_line(&self) -> String {
        let v = match self {
            StreamLine::Event(e) => serde_json::json!({"event": e}),
            StreamLine::Done(r) => serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
        };
        serde_json::to_string(&v).unwrap_or_else(|_| r#"{"ok":false,"code":"internal","error":"encoding"}"#.into())
    }
}

/// A synchronous client for the CLI.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .map_err(|source| ClientError::Connect { path: path.display().to_string(), source })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::new(stream), writer })
    }

    /// Sends one request and returns the `data` of a successful answer.
    pub fn call(&mut self, req: &Request) -> Result<serde_json::Value, ClientError> {
        let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(ClientError::Protocol("the daemon closed the connection".into()));
        }
        match serde_json::from_str::<Response>(&answer).map_err(|e| ClientError::Protocol(e.to_string()))? {
            Response::Ok { data, .. } => Ok(data),
            Response::Err { code, error, .. } => Err(ClientError::Remote { code, message: error }),
        }
    }

    /// Sends a streamed request: `on_event` sees every event (the value under `event`), and the
    /// final response's `data` is returned.
    pub fn call_streaming(
        &mut self,
        req: &Request,
        mut on_event: impl FnMut(&serde_json::Value),
    ) -> Result<serde_json::Value, ClientError> {
        let mut line = serde_json::to_string(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let mut answer = String::new();
            if self.reader.read_line(&mut answer)? == 0 {
                return Err(ClientError::Protocol("the daemon closed the connection".into()));
            }
            let v: serde_json::Value =
                serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
            if let Some(e) = v.get("event") {
                on_event(e);
                continue;
            }
            return match serde_json::from_value::<Response>(v).map_err(|e| ClientError::Protocol(e.to_string()))? {
                Response::Ok { data, .. } => Ok(data),
                Response::Err { code, error, .. } => Err(ClientError::Remote { code, message: error }),
            };
        }
    }
}

/// Parses one request line; errors are for the client to read.
pub fn parse_request(line: &str) -> Result<Request, String> {
    if line.len() > REQUEST_MAX {
        return Err(format!("request of {} bytes exceeds {REQUEST_MAX}", line.len()));
    }
    serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_ops_fail() {
        let r = Request::Approve { id: 4, note: Some("ok".into()) };
        let line = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(parse_request(&line), Ok(r));
        assert!(parse_request(r#"{"op":"rm_rf"}"#).is_err());
        assert!(parse_request(r#"{"op":"approve","id":1,"as_uid":0}"#).is_err());
        assert!(parse_request(&"x".repeat(REQUEST_MAX + 1)).is_err());
        assert!(Request::Reject { id: 1, note: None }.is_write());
        assert!(!Request::ListApprovals { states: vec![], limit: None }.is_write());
        let ask = Request::Ask { question: "why?".into() };
        assert!(ask.is_write() && ask.is_streamed());
        assert!(parse_request(r#"{"op":"chat","message":"hi"}"#).is_ok());
        assert!(!Request::ListPrompts { request_id: None, limit: None }.is_streamed());
        let line = StreamLine::Event(serde_json::json!({"event": "token", "text": "a"})).to_line();
        assert_eq!(line, r#"{"event":{"event":"token","text":"a"}}"#);
    }
}
