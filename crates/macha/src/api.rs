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
}

impl Request {
    /// Whether the request changes state (and so needs an admin).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::ResolveIssue { .. }
                | Request::CloseIssue { .. }
                | Request::Approve { .. }
                | Request::Reject { .. }
        )
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
    }
}
