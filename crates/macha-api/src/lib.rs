//! Macha's local API: the one wire format between the daemon and its clients.
//!
//! Newline-delimited JSON over a Unix socket. A request line is `{"v": N, "req": {"op": …}}`;
//! every answer line carries `"v"` too: `{"v": N, "ok": true, "data": …}`,
//! `{"v": N, "ok": false, "code": …, "error": …}`, or, for streamed requests, event lines
//! `{"v": N, "event": {…}}` before the final answer. `N` is [`PROTOCOL_VERSION`]; it changes with
//! any incompatible change of a request or an answer, and each side refuses the other's lines when
//! they differ (the daemon with [`ErrorCode::VersionMismatch`], the client with
//! [`ClientError::VersionMismatch`]).
//!
//! Both ends are type-checked by one table: every operation is a small request type in [`ops`]
//! that implements [`Call`], whose `Reply` is the answer's type in [`reply`]. The client's
//! [`Client::call`] returns that type; the daemon builds its answer with [`Response::reply`],
//! which takes exactly that type. Store rows and engine types never cross the socket: the daemon
//! converts them to these types at its edge.
//!
//! Authorisation is not part of the format: the daemon reads the peer's credentials from the
//! kernel, and [`Request::is_write`] says which requests need an admin.

mod client;
mod frame;
pub mod knowledge;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod questlog;
pub mod reply;
mod request;

pub use client::{Client, ClientError};
pub use frame::{
    ErrorCode, Incoming, LineError, Refusal, Response, StreamLine, decode_line, encode_request, parse_request,
};
pub use ops::Call;
pub use reply::StreamEvent;
pub use request::{Request, Tier};

/// The protocol both ends must speak. Bumped on any incompatible change of the framing, a request
/// or an answer (docs/decisions/0007-typed-api.md). Lines without a version are protocol 0, the
/// format before versioning.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest request line the daemon reads.
pub const REQUEST_MAX: usize = 64 * 1024;

#[cfg(test)]
mod tests;
