//! The line framing: requests as `{"v": N, "req": …}`, answers and events carrying `"v"`, and the
//! version check on both sides.

use crate::ops::Call;
use crate::reply::StreamEvent;
use crate::request::Request;
use crate::{PROTOCOL_VERSION, REQUEST_MAX};
use serde::{Deserialize, Serialize};

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
    /// The request speaks another protocol version than the daemon.
    VersionMismatch,
}

/// A request frame as it goes on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFrame {
    v: u32,
    req: Request,
}

/// Only the version of a line, whatever else it holds.
#[derive(Debug, Deserialize)]
struct VersionOnly {
    #[serde(default)]
    v: Option<u64>,
}

/// A refused request line: the code and the message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn bad(message: String) -> Refusal {
        Refusal { code: ErrorCode::BadRequest, message }
    }
}

/// One request line (without the newline), as the client writes it.
pub fn encode_request(req: &Request) -> Result<String, serde_json::Error> {
    serde_json::to_string(&RequestFrame { v: PROTOCOL_VERSION, req: req.clone() })
}

/// Parses one request line. A line of another protocol version (or without one) is refused with
/// [`ErrorCode::VersionMismatch`], naming both versions; anything else malformed, an unknown
/// operation or an unknown field with [`ErrorCode::BadRequest`].
pub fn parse_request(line: &str) -> Result<Request, Refusal> {
    if line.len() > REQUEST_MAX {
        return Err(Refusal::bad(format!("request of {} bytes exceeds {REQUEST_MAX}", line.len())));
    }
    let version: VersionOnly = serde_json::from_str(line).map_err(|e| Refusal::bad(format!("bad request: {e}")))?;
    match version.v {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        other => {
            let theirs = match other {
                Some(v) => format!("protocol {v}"),
                None => "protocol 0 (no version)".to_owned(),
            };
            return Err(Refusal {
                code: ErrorCode::VersionMismatch,
                message: format!(
                    "version mismatch: the request speaks {theirs}, this daemon speaks protocol {PROTOCOL_VERSION}; \
                     use the macha CLI of the daemon's version (or restart macha.service after an upgrade)"
                ),
            });
        }
    }
    let frame: RequestFrame = serde_json::from_str(line).map_err(|e| Refusal::bad(format!("bad request: {e}")))?;
    Ok(frame.req)
}

/// A final answer, built by the daemon: a typed reply, or an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Response(Result<serde_json::Value, Refusal>);

impl Response {
    /// The answer to a request of operation `C`: only `C`'s reply type is accepted.
    pub fn reply<C: Call>(reply: &C::Reply) -> Response {
        match serde_json::to_value(reply) {
            Ok(v) => Response(Ok(v)),
            Err(e) => Response::err(ErrorCode::Internal, format!("encoding the answer: {e}")),
        }
    }

    pub fn err(code: ErrorCode, message: impl Into<String>) -> Response {
        Response(Err(Refusal { code, message: message.into() }))
    }

    /// The typed reply of operation `C`, or the refusal (what a client would decode).
    pub fn into_reply<C: Call>(self) -> Result<C::Reply, Refusal> {
        let data = self.0?;
        serde_json::from_value(data)
            .map_err(|e| Refusal { code: ErrorCode::Internal, message: format!("decoding the answer: {e}") })
    }

    /// The error code, if this is an error.
    pub fn code(&self) -> Option<ErrorCode> {
        self.0.as_ref().err().map(|r| r.code)
    }

    /// The wire form (without the newline).
    pub fn to_line(&self) -> String {
        let line = match &self.0 {
            Ok(data) => serde_json::to_string(&OkFrame { v: PROTOCOL_VERSION, ok: true, data }),
            Err(r) => {
                serde_json::to_string(&ErrFrame { v: PROTOCOL_VERSION, ok: false, code: r.code, error: &r.message })
            }
        };
        line.unwrap_or_else(|_| {
            format!(r#"{{"v":{PROTOCOL_VERSION},"ok":false,"code":"internal","error":"encoding the answer"}}"#)
        })
    }
}

#[derive(Serialize)]
struct OkFrame<'a> {
    v: u32,
    ok: bool,
    data: &'a serde_json::Value,
}

#[derive(Serialize)]
struct ErrFrame<'a> {
    v: u32,
    ok: bool,
    code: ErrorCode,
    error: &'a str,
}

#[derive(Serialize)]
struct EventFrame<'a> {
    v: u32,
    event: &'a StreamEvent,
}

/// One line of a streamed answer: an event, or the final answer that ends the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamLine {
    Event(StreamEvent),
    Done(Response),
}

impl StreamLine {
    /// The wire form (without the newline).
    pub fn to_line(&self) -> String {
        match self {
            StreamLine::Event(e) => serde_json::to_string(&EventFrame { v: PROTOCOL_VERSION, event: e })
                .unwrap_or_else(|_| {
                    format!(
                        r#"{{"v":{PROTOCOL_VERSION},"event":{{"event":"progress","what":"?","done":0,"total":0}}}}"#
                    )
                }),
            StreamLine::Done(r) => r.to_line(),
        }
    }
}

/// An answer line as the client reads it (after the version check).
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Event(StreamEvent),
    Ok(serde_json::Value),
    Err { code: ErrorCode, message: String },
}

/// Why an answer line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The daemon speaks another protocol (0: a line without a version).
    #[error("the daemon speaks protocol {0}")]
    Version(u64),
    #[error("{0}")]
    Malformed(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerFrame {
    #[allow(dead_code)]
    v: u64,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    code: Option<ErrorCode>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    event: Option<StreamEvent>,
}

/// Reads one answer line: the version first (a line without one is protocol 0), then the rest.
pub fn decode_line(line: &str) -> Result<Incoming, LineError> {
    let version: VersionOnly = serde_json::from_str(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    match version.v {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        other => return Err(LineError::Version(other.unwrap_or(0))),
    }
    let frame: AnswerFrame = serde_json::from_str(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    match frame {
        AnswerFrame { event: Some(e), .. } => Ok(Incoming::Event(e)),
        AnswerFrame { ok: Some(true), data, .. } => Ok(Incoming::Ok(data.unwrap_or(serde_json::Value::Null))),
        AnswerFrame { ok: Some(false), code: Some(code), error, .. } => {
            Ok(Incoming::Err { code, message: error.unwrap_or_default() })
        }
        _ => Err(LineError::Malformed("an answer with neither data, an error nor an event".into())),
    }
}
