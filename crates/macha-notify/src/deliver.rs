//! Delivery: the router's messages into the outbox ([`enqueue`]), and the outbox drained to the
//! channels ([`Deliverer::deliver_once`]), which the daemon calls in a loop.
//!
//! Guarantees (decision 0021): at least once (a message leaves the outbox only when the receiver
//! accepted it, or as `dead` with an `alert` audit record), with the same message id on every
//! attempt; per channel in creation order: a later message of a channel never overtakes an
//! earlier one that waits for its retry (the store's `outbox_due` stops at it, and a pass stops a
//! channel at its first retry or empty rate bucket); each channel within its token bucket.

use crate::channel::{ChannelConfig, ChannelKind, NotifyError, Secret};
use crate::limit::TokenBucket;
use crate::router::Outgoing;
use crate::send::{SendOutcome, Sender, backoff};
use macha_core::Timestamp;
use macha_store::{NewOutboxMessage, OutboxRecord, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Puts the router's messages into the outbox in one transaction; messages for the journal
/// channel are logged at once instead (they cannot fail). Returns how many rows were new.
pub fn enqueue(store: &mut Store, messages: &[Outgoing], journal_channels: &[&str]) -> Result<usize, NotifyError> {
    let mut rows = Vec::with_capacity(messages.len());
    for out in messages {
        if journal_channels.contains(&out.channel.as_str()) {
            crate::journal::emit(out);
            continue;
        }
        let payload = serde_json::to_value(out)
            .map_err(|e| NotifyError::Config { channel: out.channel.clone(), reason: e.to_string() })?;
        rows.push(NewOutboxMessage {
            message_id: out.message_id.clone(),
            channel: out.channel.clone(),
            created: out.at,
            payload,
        });
    }
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(store.outbox_enqueue_batch(&rows)?.iter().filter(|e| e.new).count())
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: u32,
    pub retried: u32,
    pub dead: u32,
    /// Messages left for later because their channel's rate bucket was empty.
    pub rate_limited: u32,
    /// One line per failed attempt: `channel message_id: reason`.
    pub failures: Vec<String>,
    /// The channel of each failed attempt and of each message given up, for the failure counters.
    pub failed_channels: Vec<String>,
}

/// One channel at delivery: its configuration, rate bucket and HTTP client.
#[derive(Debug)]
struct Live {
    config: ChannelConfig,
    bucket: TokenBucket,
    sender: Sender,
}

/// Drains the outbox to the configured channels.
#[derive(Debug)]
pub struct Deliverer {
    channels: BTreeMap<String, Live>,
    /// A message is given up (dead) after this many failed attempts.
    pub max_attempts: u32,
    /// At most this many rows per pass.
    pub batch: usize,
    rng: u64,
}

/// Attempts before a message is given up: 10 s doubling to an hour, about 20 hours in all.
pub const MAX_ATTEMPTS: u32 = 30;

impl Deliverer {
    pub fn new(channels: Vec<ChannelConfig>, now: Timestamp) -> Result<Deliverer, NotifyError> {
        let mut map = BTreeMap::new();
        for config in channels {
            let sender = Sender::new(config.connect_timeout, config.timeout)?;
            let bucket = TokenBucket::new(config.rate, now);
            map.insert(config.name.clone(), Live { config, bucket, sender });
        }
        Ok(Deliverer {
            channels: map,
            max_attempts: MAX_ATTEMPTS,
            batch: 200,
            rng: u64::try_from(now.millis()).unwrap_or(1) | 1,
        })
    }

    /// Puts rows left in `sending` by a previous process back to `queued`; call once at start.
    pub fn recover(store: &mut Store) -> Result<u64, NotifyError> {
        Ok(store.outbox_recover()?)
    }

    /// splitmix64 into `[0, 1)`, for the backoff's jitter.
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// When the next pass has something to do as far as the rate buckets tell: the earliest
    /// instant a token is back on a channel that has none.
    pub fn next_token(&mut self, now: Timestamp) -> Option<Timestamp> {
        self.channels.values_mut().map(|c| c.bucket.next_token(now)).filter(|t| *t > now).min()
    }

    /// One pass over the due rows: each channel's rows in order, within its rate bucket, until
    /// the channel's first retry.
    pub async fn deliver_once(&mut self, store: &mut Store, now: Timestamp) -> Result<DeliveryReport, NotifyError> {
        let mut report = DeliveryReport::default();
        let rows = store.outbox_due(now, self.batch)?;
        let mut stopped: BTreeSet<String> = BTreeSet::new();
        for row in rows {
            if stopped.contains(&row.channel) {
                continue;
            }
            let Some(live) = self.channels.get_mut(&row.channel) else {
                store.outbox_mark_dead(row.id, now, &format!("channel {} is no longer configured", row.channel))?;
                report.dead += 1;
                report.failed_channels.push(row.channel.clone());
                continue;
            };
            if !live.bucket.try_take(now) {
                report.rate_limited += 1;
                stopped.insert(row.channel.clone());
                continue;
            }
            let outcome = match prepare(&row, &live.config) {
                Err(reason) => SendOutcome::Permanent { status: 0, reason },
                Ok(Prepared::Journal(out)) => {
                    crate::journal::emit(&out);
                    SendOutcome::Delivered
                }
                Ok(Prepared::Http(req)) => {
                    store.outbox_mark_sending(row.id)?;
                    live.sender.send(&req).await
                }
            };
            let attempts = row.attempts + 1;
            match outcome {
                SendOutcome::Delivered => {
                    store.outbox_mark_sent(row.id, now)?;
                    report.sent += 1;
                }
                SendOutcome::Retry { after, reason } => {
                    report.failures.push(format!("{} {}: {reason}", row.channel, row.message_id));
                    report.failed_channels.push(row.channel.clone());
                    if attempts >= self.max_attempts {
                        store.outbox_mark_dead(row.id, now, &format!("gave up after {attempts} attempts: {reason}"))?;
                        report.dead += 1;
                        continue;
                    }
                    if reason.starts_with("429")
                        && let Some(live) = self.channels.get_mut(&row.channel)
                    {
                        live.bucket.drain(now);
                    }
                    let wait = backoff(attempts, self.next_unit()).max(after.unwrap_or(Duration::ZERO));
                    store.outbox_mark_retry(row.id, now.plus(wait), &reason)?;
                    report.retried += 1;
                    // Later messages of this channel wait behind this one.
                    stopped.insert(row.channel.clone());
                }
                SendOutcome::Permanent { reason, .. } => {
                    report.failures.push(format!("{} {}: {reason}", row.channel, row.message_id));
                    report.failed_channels.push(row.channel.clone());
                    store.outbox_mark_dead(row.id, now, &reason)?;
                    report.dead += 1;
                }
            }
        }
        Ok(report)
    }
}

/// The same pass as [`Deliverer::deliver_once`], as one function.
pub async fn deliver_once(
    store: &mut Store,
    channels: &mut Deliverer,
    now: Timestamp,
) -> Result<DeliveryReport, NotifyError> {
    channels.deliver_once(store, now).await
}

enum Prepared {
    Http(crate::channel::HttpRequest),
    Journal(Outgoing),
}

/// The request for a row; an error is permanent (unreadable payload, missing secret, bad URL).
fn prepare(row: &OutboxRecord, config: &ChannelConfig) -> Result<Prepared, String> {
    let out: Outgoing =
        serde_json::from_value(row.payload.clone()).map_err(|e| format!("unreadable message in the outbox: {e}"))?;
    let secret = |cfg: &ChannelConfig| -> Result<Option<Secret>, String> {
        cfg.secret.as_ref().map(|s| s.read()).transpose().map_err(|e| e.to_string())
    };
    let req = match &config.kind {
        ChannelKind::Journal => return Ok(Prepared::Journal(out)),
        ChannelKind::Gotify { .. } => crate::gotify::request(&out, config, secret(config)?.as_ref()),
        ChannelKind::Ntfy { .. } => crate::ntfy::request(&out, config, secret(config)?.as_ref()),
        ChannelKind::Webhook { .. } => crate::webhook::request(&out, config, secret(config)?.as_ref()),
    };
    req.map(Prepared::Http).map_err(|e| e.to_string())
}
