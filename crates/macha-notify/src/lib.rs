//! Macha's notifications (docs/notifications.md, decision 0021): what matters is told once, and
//! never dropped.
//!
//! - [`event`]: what the rest of Macha reports ([`Event`]).
//! - [`router`]: sans-IO grouping, repeats, resolved messages, flapping, inhibition and silences,
//!   each message with its why ([`Router`], [`Outgoing`]).
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
pub use router::{Matcher, Outgoing, Route, Router, RouterConfig, RouterStats, Silence};
pub use send::{SendOutcome, Sender, backoff, classify};

/// The text of a message as the phone shows it: the body, then why it was sent, in italics.
pub fn render_body(out: &Outgoing) -> String {
    let why = format!("_Why: {}_", out.why);
    if out.body.trim().is_empty() { why } else { format!("{}\n\n{why}", out.body.trim_end()) }
}
