//! The journal channel: every message as one `tracing` event (target `macha::notify`), which
//! the daemon's subscriber writes to the systemd journal. Always on, needs nothing, cannot fail.

use crate::router::Outgoing;

/// Logs `out` with its id, host, group, priority and why.
pub fn emit(out: &Outgoing) {
    tracing::info!(
        target: "macha::notify",
        message_id = %out.message_id,
        host = %out.host,
        group_key = %out.group_key,
        kind = %out.kind,
        priority = out.priority.as_str(),
        why = %out.why,
        "{}",
        out.title
    );
}
