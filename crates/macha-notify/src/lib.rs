//! Macha's notifications (docs/notifications.md, decision 0021): what matters is told once, and
//! never dropped.
//!
//! - [`event`]: what the rest of Macha reports ([`Event`]).
//! - [`router`]: sans-IO grouping, repeats, resolved messages, flapping, inhibition and silences,
//!   each message with its why ([`Router`], [`Outgoing`]), and its memory across restarts
//!   ([`RouterState`]).
//! - [`limit`]: per-channel token buckets and size caps.
//! - [`channel`], [`gotify`], [`ntfy`], [`webhook`], [`journal`]: channel configuration (secrets
//!   from files, never printed) and pure request builders.
//! - [`send`]: one HTTP attempt and its classification; [`deliver`]: the outbox drained in order.
//! - `testing` (feature `test-support`): fake Gotify, ntfy and webhook servers.

pub mod channel;
pub mod deliver;
pub mod event;
pub mod gotify;
pub mod journal;
pub mod limit;
pub mod ntfy;
pub mod priority;
pub mod router;
pub mod send;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod webhook;

pub use channel::{ChannelConfig, ChannelFilter, ChannelKind, HttpRequest, NotifyError, Secret, SecretFile};
pub use deliver::{Deliverer, DeliveryReport, deliver_once, enqueue};
pub use event::{Event, EventKind, Severity};
pub use limit::{RateLimit, SizeLimit, TokenBucket, fit};
pub use priority::Priority;
pub use router::{Matcher, Outgoing, Route, Router, RouterConfig, RouterState, RouterStats, Silence, StateError};
pub use send::{SendOutcome, Sender, backoff, classify};

/// The text of a message as the phone shows it, within `max` bytes: the body (cut if it must be,
/// saying how much was left out), then why it was sent, in italics.
pub fn render_body(out: &Outgoing, max: usize) -> String {
    let (why, _) = fit(&format!("_Why: {}_", out.why), max / 2);
    let body = out.body.trim_end();
    if body.is_empty() {
        return why;
    }
    let (body, _) = fit(body, max.saturating_sub(why.len() + 2));
    format!("{body}\n\n{why}")
}
