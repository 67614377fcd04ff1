//! Notifications in the daemon (docs/notifications.md, decision 0022): the notification task,
//! which follows the audit trail, routes what matters through `macha_notify`'s router into the
//! store's outbox and drains the outbox to the channels; and the socket's notification operations
//! (`macha notify`, `macha silence`).
//!
//! The task runs on a thread of its own with its own database connection and a current-thread
//! runtime: its SQLite writes (the outbox, its cursor) and its HTTP requests never hold up the
//! event loop or the engine thread. The engine thread wakes it after every job, so a critical
//! event is on its way within milliseconds of its audit record; otherwise it sleeps until the
//! router, a retry or a rate bucket has something due.
//!
//! Crash safety: the task stores a pass's messages and its own state — the last audit record read,
//! the router's memory (`Router::export_state`: incidents told, repeat timers, flapping, waiting
//! news, inhibitions, message-id sequences), and the records read whose events may still wait in
//! the router — in one transaction (`Store::outbox_enqueue_with_state`). At start it restores the
//! router from that state and reads the records after the last one read; were the router's state
//! unusable, it starts empty and reads again the records whose events were not yet told.

pub mod map;

use crate::api::notify::{NotifyAnswer, NotifyChange, NotifyLogEntry, NotifyQuery, SilenceView};
use crate::config::{Config, Notifications, NotifyService};
use macha_core::Timestamp;
use macha_notify::{
    ChannelConfig, ChannelFilter, ChannelKind, Deliverer, EventKind, Outgoing, Priority, Route, Router, RouterConfig,
    RouterState, SecretFile, SendOutcome, Severity, Silence,
};
use macha_store::{AuditKind, AuditQuery, NewAudit, NewSilence, OutboxFilter, Store};
use map::{Mapped, Mapper};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Where the task keeps the id of the last audit record it has settled.
pub const CURSOR_KEY: &str = "notify.cursor";
/// The journal channel's name: always routed, logged at once (it cannot fail).
pub const JOURNAL: &str = "journal";
/// Records read per pass.
const PAGE: u32 = 500;
/// The longest sleep when nothing is due (a safety net; every write wakes the task).
const IDLE: Duration = Duration::from_secs(60);
/// Sent and dead messages are kept this long for `macha notify log`.
const LOG_KEPT: Duration = Duration::from_secs(14 * 86_400);

fn filter_of(min_severity: &str, kinds: &[String]) -> ChannelFilter {
    let kinds: Vec<EventKind> = kinds.iter().filter_map(|k| EventKind::parse(k)).collect();
    ChannelFilter {
        min_severity: Severity::parse(min_severity).unwrap_or(Severity::Warning),
        kinds: (kinds.len() < EventKind::ALL.len()).then_some(kinds),
    }
}

/// The configured channels as the deliverer takes them, the journal channel first.
pub fn channel_configs(n: &Notifications) -> Vec<ChannelConfig> {
    let mut out = vec![ChannelConfig::new(JOURNAL, ChannelKind::Journal)];
    for c in &n.channels {
        let kind = match c.service {
            NotifyService::Gotify => ChannelKind::Gotify { url: c.url.clone() },
            NotifyService::Ntfy => ChannelKind::Ntfy { url: c.url.clone(), topic: c.topic.clone().unwrap_or_default() },
            NotifyService::Webhook => ChannelKind::Webhook { url: c.url.clone() },
        };
        let mut cfg = ChannelConfig::new(c.service.as_str(), kind).with_filter(filter_of(&c.min_severity, &c.kinds));
        if let Some(p) = &c.secret_file {
            cfg = cfg.with_secret(SecretFile::new(p.clone()));
        }
        out.push(cfg);
    }
    out
}

/// The router's times and routes from the configuration.
pub fn router_config(n: &Notifications) -> RouterConfig {
    RouterConfig {
        group_wait: n.group_wait,
        critical_group_wait: n.critical_group_wait,
        group_interval: n.group_interval,
        repeat_interval: n.repeat_interval,
        flap_opens: n.flap_opens,
        flap_window: n.flap_window,
        flap_stable: n.stable_after,
        routes: channel_configs(n).into_iter().map(|c| Route { channel: c.name, filter: c.filter }).collect(),
    }
}

/// A person's message (`macha notify`) for each channel it goes to: past the router (no grouping,
/// no silence, no channel filter: someone asked for it), with an id made from its audit record.
pub fn manual_outgoing(msg: &map::ManualMessage, channels: &[ChannelConfig]) -> Vec<Outgoing> {
    channels
        .iter()
        .filter(|c| msg.channel.as_deref().is_none_or(|want| want == c.name))
        .map(|c| Outgoing {
            message_id: format!("manual-{}", msg.audit_id),
            channel: c.name.clone(),
            title: msg.title.clone(),
            body: msg.message.clone(),
            priority: Priority::of(msg.severity),
            link: None,
            tags: vec!["manual".to_owned()],
            why: format!("sent on request by {} (`macha notify`)", msg.by),
            host: "local".to_owned(),
            group_key: format!("manual:{}", msg.audit_id),
            kind: EventKind::Manual,
            severity: msg.severity,
            at: msg.at,
        })
        .collect()
}

/// The running notification task.
#[derive(Debug)]
pub struct Notifier {
    wake: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Notifier {
    /// Starts the task's thread on `database`. It runs until `stop` is cancelled.
    pub fn start(config: &Config, stop: CancellationToken) -> std::io::Result<Notifier> {
        let wake = Arc::new(Notify::new());
        let task = Task {
            database: config.database.clone(),
            settings: config.notifications.clone(),
            wake: Arc::clone(&wake),
            stop,
        };
        let thread = std::thread::Builder::new().name("macha-notify".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("notifications are off: no runtime for the notification task: {e}");
                    return;
                }
            };
            runtime.block_on(task.run());
        })?;
        Ok(Notifier { wake, thread: Some(thread) })
    }

    /// What wakes the task: the engine thread notifies it after every job.
    pub fn wake(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Waits for the task's thread to end (after the stop token was cancelled).
    pub fn join(mut self) {
        self.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Task {
    database: PathBuf,
    settings: Notifications,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

/// The router and what the task remembers between passes.
struct State {
    router: Router,
    mapper: Mapper,
    channels: Vec<ChannelConfig>,
    /// The last audit record read.
    read_to: i64,
    /// Records read whose events may still wait in the router: id → (when read, group key).
    held: BTreeMap<i64, (Timestamp, String)>,
    /// Records held when the task last stopped whose events the router's restored state does not
    /// hold (read again at start, with those after `read_to`).
    replay: std::collections::BTreeSet<i64>,
    /// The state as last stored (the `kv` text).
    saved: String,
    /// How long an event may wait in the router before it is sent or dropped.
    hold: Duration,
    retry_max: Duration,
    last_prune: Option<Timestamp>,
}

impl State {
    /// The task's state at start (`now`): the place in the trail and the router's memory as stored
    /// (the first start follows the trail from its end with an empty router). A router state that
    /// is unusable is logged and the router starts empty; the records whose events it may have
    /// held are read again then.
    fn new(store: &Store, n: &Notifications, channels: Vec<ChannelConfig>, now: Timestamp) -> State {
        let (text, saved) = match store.get_kv(CURSOR_KEY) {
            Ok(Some(v)) => {
                let cursor = Cursor::parse(&v);
                (v, cursor)
            }
            _ => (String::new(), Cursor::at(store.last_audit_id().unwrap_or(0))),
        };
        let config = router_config(n);
        let restored = match saved.router.as_deref().map(|raw| RouterState::from_json(raw.get())) {
            Some(Ok(s)) => Some(Router::restore(config.clone(), s, now)),
            Some(Err(e)) => {
                tracing::warn!("the notification router's stored state is not used, it starts empty: {e}");
                None
            }
            None => None,
        };
        let replay = if restored.is_some() { Default::default() } else { saved.held.iter().copied().collect() };
        let mut mapper = Mapper::new(n.link_base.clone());
        match saved.mapper.as_deref().map(|raw| serde_json::from_str::<map::MapperState>(raw.get())) {
            Some(Ok(m)) => mapper.restore_state(m),
            Some(Err(e)) => tracing::warn!("the notification mapping's stored state is not used: {e}"),
            None => {}
        }
        State {
            router: restored.unwrap_or_else(|| Router::new(config)),
            mapper,
            channels,
            read_to: saved.read_to,
            held: BTreeMap::new(),
            replay,
            saved: text,
            hold: n.group_wait.max(n.critical_group_wait) + Duration::from_secs(5),
            retry_max: n.retry_max,
            last_prune: None,
        }
    }
}

impl Task {
    async fn run(self) {
        let mut store = match Store::open(&self.database) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("notifications are off: cannot open the database: {e}");
                return;
            }
        };
        let now = crate::now();
        match Deliverer::recover(&mut store) {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} notification(s) cut off by a restart are sent again"),
            Err(e) => tracing::warn!("cannot recover the outbox: {e}"),
        }
        let channels = channel_configs(&self.settings);
        let mut deliverer = match Deliverer::new(channels.clone(), now) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("notifications are off: {e}");
                return;
            }
        };
        let mut state = State::new(&store, &self.settings, channels, now);
        tracing::info!(
            channels = state.channels.len(),
            from = state.read_to,
            held = state.replay.len(),
            restored = state.router.tracked(),
            "notifications: following the audit trail"
        );
        loop {
            let next = match pass(&mut store, &mut deliverer, &mut state).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("notification pass failed: {e:#}");
                    Some(crate::now().plus(Duration::from_secs(5)))
                }
            };
            let now = crate::now();
            let sleep = next
                .map(|t| Duration::from_millis(u64::try_from(t.millis().saturating_sub(now.millis())).unwrap_or(0)))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
        // One last pass, so what the stop itself recorded is at least queued.
        if let Err(e) = route_new(&mut store, &mut state, crate::now()) {
            tracing::warn!("notifications at stop: {e:#}");
        }
    }
}

/// What the task stores of its place in the audit trail and of the router's memory (`kv` key
/// [`CURSOR_KEY`], JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The last record read.
    pub read_to: i64,
    /// Records read whose events may not have been told yet: read again at start when the router's
    /// state is missing or unusable (otherwise the router's state holds their events).
    pub held: Vec<i64>,
    /// The router's memory ([`RouterState`] as JSON), kept as written and read on its own, so a
    /// state that does not parse costs the router's memory and not the place in the trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Box<serde_json::value::RawValue>>,
    /// What the mapping of the trail remembers ([`map::MapperState`] as JSON: running actions'
    /// kinds, the model down), read on its own like the router's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapper: Option<Box<serde_json::value::RawValue>>,
}

impl Cursor {
    /// A cursor at record `read_to` with nothing held and no router state.
    pub fn at(read_to: i64) -> Cursor {
        Cursor { read_to, held: Vec::new(), router: None, mapper: None }
    }

    /// The stored text; a plain number (an id) is a cursor with nothing held.
    pub fn parse(text: &str) -> Cursor {
        serde_json::from_str(text).ok().or_else(|| text.trim().parse().ok().map(Cursor::at)).unwrap_or(Cursor::at(0))
    }
}

/// Reads new audit records (and, once after a start, those whose events were not yet told),
/// routes them, and queues what is due together with the task's new state.
fn route_new(store: &mut Store, state: &mut State, now: Timestamp) -> anyhow::Result<()> {
    let silences = store.silences_active(now)?.iter().filter_map(|r| Silence::from_record(r).ok()).collect();
    state.router.set_silences(silences);
    let from = state.replay.first().map_or(state.read_to, |first| (*first - 1).min(state.read_to));
    let records =
        store.query_audit(&AuditQuery { after_id: Some(from), limit: Some(PAGE), ..AuditQuery::default() })?;
    let mut out = Vec::new();
    for r in &records {
        // Below `read_to` only the records held at the last stop are read again.
        if r.id <= state.read_to && !state.replay.remove(&r.id) {
            continue;
        }
        for m in state.mapper.map(r) {
            match m {
                Mapped::Event(e) => {
                    state.held.insert(r.id, (now, e.group_key.clone()));
                    // The record's own time: grouping follows when things happened.
                    out.extend(state.router.on_event(r.ts, e));
                }
                Mapped::Manual(msg) => out.extend(manual_outgoing(&msg, &state.channels)),
                Mapped::Inhibit { host, reason } => state.router.inhibit(&host, None, &reason),
                Mapped::Lift { host } => state.router.lift(&host),
            }
        }
        state.read_to = state.read_to.max(r.id);
    }
    if records.is_empty() {
        state.replay.clear();
    }
    out.extend(state.router.tick(now));
    // A message of a group tells every event of it read so far; an event held longer than any
    // group wait was told or dropped by the router (a silence, an inhibition, a channel filter).
    let told: std::collections::BTreeSet<&str> = out.iter().map(|o| o.group_key.as_str()).collect();
    let hold = state.hold;
    state.held.retain(|_, (read, key)| !told.contains(key.as_str()) && read.plus(hold) > now);
    let router = serde_json::value::RawValue::from_string(state.router.export_state().to_json()?)?;
    let cursor = Cursor {
        read_to: state.read_to,
        held: state.held.keys().copied().collect(),
        router: Some(router),
        mapper: Some(serde_json::value::RawValue::from_string(serde_json::to_string(&state.mapper.export_state())?)?),
    };
    let text = serde_json::to_string(&cursor)?;
    let mut rows = Vec::new();
    for o in &out {
        if o.channel == JOURNAL {
            macha_notify::journal::emit(o);
            continue;
        }
        rows.push(macha_store::NewOutboxMessage {
            message_id: o.message_id.clone(),
            channel: o.channel.clone(),
            created: o.at,
            payload: serde_json::to_value(o)?,
        });
    }
    if rows.is_empty() && text == state.saved {
        return Ok(());
    }
    let new = store.outbox_enqueue_with_state(&rows, CURSOR_KEY, &text)?;
    if !rows.is_empty() {
        tracing::debug!(messages = rows.len(), new, "notifications queued");
    }
    state.saved = text;
    Ok(())
}

/// One pass: route, deliver, and when the next pass is due.
async fn pass(store: &mut Store, deliverer: &mut Deliverer, state: &mut State) -> anyhow::Result<Option<Timestamp>> {
    let now = crate::now();
    route_new(store, state, now)?;
    let report = deliverer.deliver_once(store, now).await?;
    for f in &report.failures {
        tracing::warn!("notification not delivered: {f}");
    }
    for channel in &report.failed_channels {
        macha_prom::publish(|m| m.notification_failed(channel));
    }
    // The longest wait between two attempts (`notifications.retry_max`).
    let cap = now.plus(state.retry_max);
    let waiting = store.outbox_log(&OutboxFilter { failed_only: true, channel: None, limit: 500 })?;
    let mut next_retry: Option<Timestamp> = None;
    for row in waiting.iter().filter(|r| r.state == macha_store::OutboxState::Failed) {
        let at = if row.next_attempt > cap {
            store.outbox_mark_retry(row.id, cap, row.last_error.as_deref().unwrap_or("retry"))?;
            cap
        } else {
            row.next_attempt
        };
        next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
    }
    if state.last_prune.is_none_or(|t| t.plus(Duration::from_secs(3600)) <= now) {
        store.outbox_prune(now.minus(LOG_KEPT), 1_000)?;
        state.last_prune = Some(now);
    }
    let held_until = state.held.values().map(|(t, _)| *t).min().map(|t| t.plus(state.hold));
    let due = [state.router.next_due(), next_retry, deliverer.next_token(now), held_until].into_iter().flatten().min();
    // Rows still due now (a full batch) go in the next pass at once.
    let more = report.sent + report.dead >= u32::try_from(deliverer.batch).unwrap_or(u32::MAX);
    Ok(if more { Some(now) } else { due })
}

/// The socket's reads (viewers): the delivery log and the silences.
pub fn read(store: &Store, query: &NotifyQuery, now: Timestamp) -> anyhow::Result<NotifyAnswer> {
    match query {
        NotifyQuery::Log { failed, channel, limit } => {
            let limit = usize::try_from(limit.unwrap_or(50).clamp(1, 500)).unwrap_or(50);
            let rows = store.outbox_log(&OutboxFilter { failed_only: *failed, channel: channel.clone(), limit })?;
            let entries = rows
                .into_iter()
                .map(|r| {
                    let out: Option<Outgoing> = serde_json::from_value(r.payload.clone()).ok();
                    NotifyLogEntry {
                        id: r.id,
                        message_id: r.message_id,
                        channel: r.channel,
                        created: r.created,
                        state: r.state.as_str().to_owned(),
                        attempts: r.attempts,
                        next_attempt: r.next_attempt,
                        last_error: r.last_error,
                        sent_at: r.sent_at,
                        title: out.as_ref().map(|o| o.title.clone()).unwrap_or_default(),
                        kind: out.as_ref().map(|o| o.kind.as_str().to_owned()).unwrap_or_default(),
                        severity: out.as_ref().map(|o| o.severity.as_str().to_owned()).unwrap_or_default(),
                        host: out.as_ref().map(|o| o.host.clone()).unwrap_or_default(),
                        why: out.map(|o| o.why).unwrap_or_default(),
                    }
                })
                .collect();
            Ok(NotifyAnswer::Log { entries, pending: store.outbox_pending_count()? })
        }
        NotifyQuery::Silences { all } => {
            let silences = store
                .silences()?
                .into_iter()
                .filter(|s| *all || s.until > now)
                .map(|s| SilenceView {
                    active: s.until > now,
                    id: s.id,
                    matcher: s.matcher,
                    until: s.until,
                    reason: s.reason,
                    created_by: s.created_by,
                    created: s.created,
                })
                .collect();
            Ok(NotifyAnswer::Silences { silences })
        }
    }
}

/// A refusal of a notification operation (bad input): the socket answers it as a bad request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The longest title and message of `macha notify` (the channels cut further).
pub const MANUAL_TITLE_MAX: usize = 250;
pub const MANUAL_MESSAGE_MAX: usize = 4_000;

/// The socket's changes (admins), each audited: a message sent on request becomes an audit record
/// the notification task picks up like any other; silences are added and removed.
pub fn write(
    store: &mut Store,
    settings: &Notifications,
    change: NotifyChange,
    who: &str,
    now: Timestamp,
) -> anyhow::Result<NotifyAnswer> {
    match change {
        NotifyChange::Send { title, message, priority, channel } => {
            let title = title.trim();
            if title.is_empty() || title.len() > MANUAL_TITLE_MAX || message.len() > MANUAL_MESSAGE_MAX {
                return Err(Refused(format!(
                    "a notification needs a title of 1-{MANUAL_TITLE_MAX} bytes and a message of at most \
                     {MANUAL_MESSAGE_MAX} bytes"
                ))
                .into());
            }
            if priority.is_some_and(|p| p > 10) {
                return Err(Refused("the priority is 0-10".to_owned()).into());
            }
            let mut channels: Vec<String> = std::iter::once(JOURNAL.to_owned())
                .chain(settings.channels.iter().map(|c| c.service.as_str().to_owned()))
                .collect();
            if let Some(c) = &channel {
                if !channels.contains(c) {
                    return Err(Refused(format!("no channel {c:?} (configured: {})", channels.join(", "))).into());
                }
                channels = vec![c.clone()];
            }
            let audit = NewAudit::new(
                now,
                AuditKind::Daemon,
                macha_store::Severity::Notice,
                "local",
                format!("notification requested by {who}: {title}"),
            )
            .with_subject("notify")
            .with_payload(serde_json::json!({ map::NOTIFICATION_PAYLOAD: {
                "kind": "manual", "title": title, "message": message, "priority": priority.unwrap_or(5),
                "channel": channel, "by": who,
            }}));
            let audit_id = store.append_audit(&audit)?;
            Ok(NotifyAnswer::Queued { audit_id, channels })
        }
        NotifyChange::Test { .. } => Err(Refused("a test is answered by the loop".to_owned()).into()),
        NotifyChange::SilenceAdd { matcher, until, reason } => {
            macha_notify::Matcher::parse(&matcher).map_err(|e| Refused(format!("matcher {matcher:?}: {e}")))?;
            if until <= now {
                return Err(Refused("a silence must end in the future".to_owned()).into());
            }
            if reason.trim().is_empty() {
                return Err(Refused("a silence needs a reason".to_owned()).into());
            }
            let id = store.silence_add(&NewSilence {
                matcher: matcher.clone(),
                until,
                reason: reason.clone(),
                created_by: who.to_owned(),
                created: now,
            })?;
            store.append_audit(
                &NewAudit::new(
                    now,
                    AuditKind::Config,
                    macha_store::Severity::Notice,
                    "local",
                    format!("silence {id} added by {who} until {until}: {matcher} ({reason})"),
                )
                .with_subject("silence")
                .with_payload(serde_json::json!({"silence": id, "matcher": matcher, "until": until, "reason": reason})),
            )?;
            Ok(NotifyAnswer::SilenceAdded { id })
        }
        NotifyChange::SilenceRemove { id } => {
            let existed = store.silence_remove(id)?;
            if existed {
                store.append_audit(
                    &NewAudit::new(
                        now,
                        AuditKind::Config,
                        macha_store::Severity::Notice,
                        "local",
                        format!("silence {id} removed by {who}"),
                    )
                    .with_subject("silence")
                    .with_payload(serde_json::json!({"silence": id})),
                )?;
            }
            Ok(NotifyAnswer::SilenceRemoved { id, existed })
        }
    }
}

/// The audit subject of the model's messages: what the hourly limit counts.
pub const MODEL_SUBJECT: &str = "notify-model";

/// The model's `send_notification`: refused unless `notifications.model_may_send`, and beyond
/// `notifications.model_per_hour` messages within the last hour; otherwise an audit record the
/// notification task sends (title marked `[model]`, the body saying it was written by the model
/// and `why`). Returns the answer the model reads.
pub fn model_message(
    store: &mut Store,
    settings: &Notifications,
    args: &macha_agent::tools::NotificationArgs,
    why: &str,
    now: Timestamp,
) -> anyhow::Result<String> {
    if !settings.model_may_send {
        return Ok("not sent: notifications.model_may_send is off".to_owned());
    }
    let hour = Duration::from_secs(3600);
    let recent = store.query_audit(&AuditQuery {
        since: Some(now.minus(hour)),
        kinds: vec![AuditKind::Daemon],
        subject: Some(MODEL_SUBJECT.to_owned()),
        ..AuditQuery::default()
    })?;
    if recent.len() >= usize::try_from(settings.model_per_hour).unwrap_or(usize::MAX) {
        return Ok(format!(
            "not sent: at most {} messages per hour (notifications.model_per_hour); tell the person in your answer instead",
            settings.model_per_hour
        ));
    }
    let audit = NewAudit::new(
        now,
        AuditKind::Daemon,
        macha_store::Severity::Notice,
        "local",
        format!("notification by the model ({why}): {}", args.title),
    )
    .with_subject(MODEL_SUBJECT)
    .with_payload(serde_json::json!({ map::NOTIFICATION_PAYLOAD: {
        "kind": "model", "title": args.title, "message": args.message,
        "priority": args.priority.unwrap_or(5), "why": why,
    }}));
    let id = store.append_audit(&audit)?;
    Ok(format!("queued (audit record {id}); people see it marked as written by you"))
}

/// `macha notify test CHANNEL`: one test message on the channel now, past the outbox, and what
/// the channel answered.
pub async fn test_channel(settings: &Notifications, channel: &str, who: &str) -> NotifyAnswer {
    let Some(cfg) = channel_configs(settings).into_iter().find(|c| c.name == channel) else {
        return NotifyAnswer::Tested {
            channel: channel.to_owned(),
            delivered: false,
            answer: "no such channel is configured".to_owned(),
        };
    };
    let now = crate::now();
    let out = Outgoing {
        message_id: format!("test-{}", now.millis()),
        channel: channel.to_owned(),
        title: "Macha test message".to_owned(),
        body: format!("A test of the {channel} channel, asked for by {who}."),
        priority: Priority::Low,
        link: None,
        tags: vec!["test".to_owned()],
        why: format!("`macha notify test {channel}` by {who}"),
        host: "local".to_owned(),
        group_key: "test".to_owned(),
        kind: EventKind::Manual,
        severity: Severity::Info,
        at: now,
    };
    let answer =
        |delivered: bool, answer: String| NotifyAnswer::Tested { channel: channel.to_owned(), delivered, answer };
    let secret = match cfg.secret.as_ref().map(SecretFile::read).transpose() {
        Ok(s) => s,
        Err(e) => return answer(false, e.to_string()),
    };
    let request = match &cfg.kind {
        ChannelKind::Journal => {
            macha_notify::journal::emit(&out);
            return answer(true, "written to the journal".to_owned());
        }
        ChannelKind::Gotify { .. } => macha_notify::gotify::request(&out, &cfg, secret.as_ref()),
        ChannelKind::Ntfy { .. } => macha_notify::ntfy::request(&out, &cfg, secret.as_ref()),
        ChannelKind::Webhook { .. } => macha_notify::webhook::request(&out, &cfg, secret.as_ref()),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return answer(false, e.to_string()),
    };
    let sender = match macha_notify::Sender::new(cfg.connect_timeout, cfg.timeout) {
        Ok(s) => s,
        Err(e) => return answer(false, e.to_string()),
    };
    match sender.send(&request).await {
        SendOutcome::Delivered => answer(true, "accepted".to_owned()),
        SendOutcome::Retry { after, reason } => answer(
            false,
            match after {
                Some(a) => format!("try again in {} s: {reason}", a.as_secs()),
                None => format!("temporary failure: {reason}"),
            },
        ),
        SendOutcome::Permanent { status, reason } => answer(false, format!("refused ({status}): {reason}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn settings(text: &str) -> Notifications {
        Config::from_toml(text, crate::config::Scope::System).unwrap().notifications
    }

    #[test]
    fn channels_and_routes_follow_the_configuration() {
        let n = settings(
            "[notifications]\ncritical_group_wait = \"1s\"\n[notifications.ntfy]\nurl = \"https://n\"\ntopic = \"t\"\n\
             min_severity = \"critical\"\nkinds = [\"issue_opened\"]\n",
        );
        let ch = channel_configs(&n);
        assert_eq!(ch.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec![JOURNAL, "ntfy"]);
        assert_eq!(ch[1].kind, ChannelKind::Ntfy { url: "https://n".into(), topic: "t".into() });
        assert_eq!(ch[1].filter.min_severity, Severity::Critical);
        assert_eq!(ch[1].filter.kinds, Some(vec![EventKind::IssueOpened]));
        assert!(ch[1].secret.is_none());
        let r = router_config(&n);
        assert_eq!(r.critical_group_wait, Duration::from_secs(1));
        assert_eq!(r.routes.len(), 2);
        // Every kind configured is no filter at all.
        let all = filter_of("info", &crate::config::NOTIFY_KINDS.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(all.kinds, None);
    }

    #[test]
    fn a_manual_message_goes_to_the_named_channel_or_to_all() {
        let n = settings("[notifications.ntfy]\nurl = \"https://n\"\ntopic = \"t\"\n");
        let ch = channel_configs(&n);
        let msg = map::ManualMessage {
            audit_id: 9,
            title: "T".into(),
            message: "M".into(),
            severity: Severity::Critical,
            channel: Some("ntfy".into()),
            by: "uid:0".into(),
            at: Timestamp(5),
        };
        let out = manual_outgoing(&msg, &ch);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].channel.as_str(), out[0].message_id.as_str()), ("ntfy", "manual-9"));
        assert_eq!(out[0].priority, Priority::High);
        assert!(out[0].why.contains("uid:0"), "{}", out[0].why);
        let all = manual_outgoing(&map::ManualMessage { channel: None, ..msg }, &ch);
        assert_eq!(all.iter().map(|o| o.channel.as_str()).collect::<Vec<_>>(), vec![JOURNAL, "ntfy"]);
    }

    #[test]
    fn send_and_silences_are_audited_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("m.db")).unwrap();
        let n = settings("");
        let now = Timestamp(10_000);
        let send = |title: &str, channel: Option<&str>| NotifyChange::Send {
            title: title.into(),
            message: "m".into(),
            priority: Some(8),
            channel: channel.map(str::to_owned),
        };
        let a = write(&mut store, &n, send("Backup done", None), "uid:0", now).unwrap();
        let NotifyAnswer::Queued { audit_id, channels } = a else { panic!("{a:?}") };
        assert_eq!(channels, vec![JOURNAL.to_owned()]);
        let rec = store.query_audit(&AuditQuery { after_id: Some(audit_id - 1), ..AuditQuery::default() }).unwrap();
        assert_eq!(rec[0].id, audit_id);
        let mut m = Mapper::new(None);
        assert!(
            matches!(m.map(&rec[0]).as_slice(), [Mapped::Manual(x)] if x.title == "Backup done" && x.by == "uid:0")
        );
        let err = write(&mut store, &n, send("x", Some("gotify")), "uid:0", now).unwrap_err();
        assert!(err.to_string().contains("no channel"), "{err}");
        assert!(write(&mut store, &n, send(" ", None), "uid:0", now).is_err());

        let add = |matcher: &str, until: i64| NotifyChange::SilenceAdd {
            matcher: matcher.into(),
            until: Timestamp(until),
            reason: "maintenance".into(),
        };
        let NotifyAnswer::SilenceAdded { id } = write(&mut store, &n, add("host=web*", 20_000), "uid:0", now).unwrap()
        else {
            panic!()
        };
        assert!(write(&mut store, &n, add("colour=red", 20_000), "uid:0", now).is_err());
        assert!(write(&mut store, &n, add("host=web1", 5_000), "uid:0", now).is_err());
        let NotifyAnswer::Silences { silences } = read(&store, &NotifyQuery::Silences { all: false }, now).unwrap()
        else {
            panic!()
        };
        assert_eq!(silences.len(), 1);
        assert_eq!((silences[0].id, silences[0].created_by.as_str(), silences[0].active), (id, "uid:0", true));
        let later = read(&store, &NotifyQuery::Silences { all: false }, Timestamp(30_000)).unwrap();
        assert_eq!(later, NotifyAnswer::Silences { silences: vec![] });
        let removed = write(&mut store, &n, NotifyChange::SilenceRemove { id }, "uid:0", now).unwrap();
        assert_eq!(removed, NotifyAnswer::SilenceRemoved { id, existed: true });
        let trail = store
            .query_audit(&AuditQuery { subject: Some("silence".into()), ..AuditQuery::default() })
            .unwrap()
            .into_iter()
            .map(|r| r.summary)
            .collect::<Vec<_>>();
        assert_eq!(trail.len(), 2, "{trail:?}");
        assert!(trail[0].contains("added by uid:0") && trail[1].contains("removed by uid:0"), "{trail:?}");
    }

    /// Opens an issue on `unit` (its audit record is a finding); returns its id.
    fn open_issue(store: &mut Store, sev: macha_store::Severity, unit: &str, now: Timestamp) -> i64 {
        let new = macha_store::NewIssue {
            host: "local".into(),
            check_name: "failed_unit".into(),
            subject: unit.into(),
            severity: sev,
            summary: format!("unit {unit} failed"),
            details: serde_json::Value::Null,
            seen_at: now,
        };
        let audit = NewAudit::new(now, AuditKind::Finding, sev, "local", format!("new issue: unit {unit} failed"));
        store.insert_issue(&new, &audit).unwrap().id
    }

    /// Resolves issue `id` as an observation would (its audit record says so).
    fn resolve_issue(store: &mut Store, id: i64, now: Timestamp) {
        let issue = store.get_issue(id).unwrap().unwrap();
        let next = issue.lifecycle().apply(now, &macha_core::issue::IssueEvent::ManualResolve).unwrap();
        let audit = NewAudit::new(
            now,
            AuditKind::Issue,
            macha_store::Severity::Notice,
            "local",
            format!("issue {id} resolved"),
        );
        store.update_issue(id, issue.state, &next, &macha_store::IssueChanges::default(), &audit).unwrap();
    }

    fn ntfy_settings() -> Notifications {
        settings("[notifications.ntfy]\nurl = \"https://n\"\ntopic = \"t\"\nmin_severity = \"info\"\n")
    }

    fn outbox(s: &Store) -> Vec<Outgoing> {
        let mut rows = s.outbox_log(&OutboxFilter::default()).unwrap();
        rows.reverse();
        rows.into_iter().map(|r| serde_json::from_value(r.payload).unwrap()).collect()
    }

    /// A kill after a pass: the next start restores the router, so the event that still waited in
    /// it is told once after its group wait, and the critical message of the first pass is not
    /// queued again. With the router's state unusable, the start reads again only the record whose
    /// event still waited (and says the same).
    #[test]
    fn a_restart_tells_what_was_not_told_and_nothing_twice() {
        for corrupt in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path().join("m.db")).unwrap();
            let n = ntfy_settings();
            let now = Timestamp(1_700_000_000_000);
            // A first start follows the trail from its end: here, the beginning.
            let mut first = State::new(&store, &n, channel_configs(&n), now);
            assert_eq!(first.read_to, 0);
            open_issue(&mut store, macha_store::Severity::Critical, "a.service", now);
            open_issue(&mut store, macha_store::Severity::Warning, "b.service", now);
            route_new(&mut store, &mut first, now).unwrap();
            assert_eq!(outbox(&store).len(), 1, "the critical one at once, the warning waits");
            let stored = Cursor::parse(&store.get_kv(CURSOR_KEY).unwrap().unwrap());
            assert_eq!(stored.held.len(), 1, "{stored:?}");
            assert!(stored.router.is_some(), "{stored:?}");
            // Killed here.
            drop(first);
            if corrupt {
                let mut v: serde_json::Value =
                    serde_json::from_str(&store.get_kv(CURSOR_KEY).unwrap().unwrap()).unwrap();
                v["router"] = serde_json::json!({"version": 1, "groups": "not a list"});
                store.set_kv(CURSOR_KEY, &v.to_string()).unwrap();
            }
            let mut second = State::new(&store, &n, channel_configs(&n), now);
            assert_eq!(second.router.tracked(), if corrupt { 0 } else { 2 }, "corrupt: {corrupt}");
            assert_eq!(second.replay.len(), usize::from(corrupt));
            route_new(&mut store, &mut second, now).unwrap();
            assert_eq!(outbox(&store).len(), 1, "nothing queued twice (corrupt: {corrupt})");
            route_new(&mut store, &mut second, now.plus(Duration::from_secs(31))).unwrap();
            let all = outbox(&store);
            assert_eq!(all.len(), 2, "the waiting one told after its group wait: {all:?}");
            assert_eq!(all[1].title, "local: unit b.service failed");
            assert_eq!(Cursor::parse(&store.get_kv(CURSOR_KEY).unwrap().unwrap()).held, Vec::<i64>::new());
        }
    }

    /// An incident told before a restart is resolved after it: the router's memory was stored
    /// with the cursor and restored at start; the resolved message is the incident's next one.
    #[test]
    fn a_restart_keeps_the_incidents_told_and_their_message_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("m.db")).unwrap();
        let n = ntfy_settings();
        let now = Timestamp(1_700_000_000_000);
        let mut first = State::new(&store, &n, channel_configs(&n), now);
        let id = open_issue(&mut store, macha_store::Severity::Critical, "a.service", now);
        route_new(&mut store, &mut first, now).unwrap();
        let opened = outbox(&store);
        assert_eq!(opened.len(), 1);
        drop(first);
        let later = now.plus(Duration::from_secs(600));
        let mut second = State::new(&store, &n, channel_configs(&n), later);
        resolve_issue(&mut store, id, later);
        route_new(&mut store, &mut second, later).unwrap();
        let all = outbox(&store);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!((all[1].kind, all[1].group_key.as_str()), (EventKind::IssueResolved, opened[0].group_key.as_str()));
        assert_ne!(all[1].message_id, opened[0].message_id);
        // The same resolution through a router that was never stopped has the same id.
        let mut never = Router::new(router_config(&n));
        let records = store.query_audit(&AuditQuery::default()).unwrap();
        let mut mapper = Mapper::new(None);
        let mut ids = Vec::new();
        for r in &records {
            for m in mapper.map(r) {
                if let Mapped::Event(e) = m {
                    ids.extend(
                        never.on_event(r.ts, e).into_iter().filter(|o| o.channel == "ntfy").map(|o| o.message_id),
                    );
                }
            }
        }
        assert_eq!(ids, vec![opened[0].message_id.clone(), all[1].message_id.clone()]);
    }

    #[test]
    fn the_model_sends_only_when_allowed_and_a_few_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("m.db")).unwrap();
        let args = macha_agent::tools::NotificationArgs {
            title: "Disk filling".into(),
            message: "at this rate /var is full tomorrow".into(),
            priority: Some(6),
        };
        let off = settings("");
        let said = model_message(&mut store, &off, &args, "agent request 1", Timestamp(1_000_000)).unwrap();
        assert!(said.contains("model_may_send is off"), "{said}");
        let on = settings("[notifications]\nmodel_may_send = true\nmodel_per_hour = 2\n");
        let t = |s: i64| Timestamp(1_000_000 + s * 1000);
        assert!(model_message(&mut store, &on, &args, "agent request 1", t(0)).unwrap().starts_with("queued"));
        assert!(model_message(&mut store, &on, &args, "agent request 2", t(60)).unwrap().starts_with("queued"));
        let third = model_message(&mut store, &on, &args, "agent request 3", t(120)).unwrap();
        assert!(third.contains("at most 2 messages per hour"), "{third}");
        // An hour after the first, one more.
        assert!(model_message(&mut store, &on, &args, "agent request 4", t(3_601)).unwrap().starts_with("queued"));
        let sent =
            store.query_audit(&AuditQuery { subject: Some(MODEL_SUBJECT.into()), ..AuditQuery::default() }).unwrap();
        assert_eq!(sent.len(), 3);
        let mut m = Mapper::new(None);
        let out = m.map(&sent[0]);
        let [Mapped::Event(e)] = out.as_slice() else { panic!("{out:?}") };
        assert_eq!((e.kind, e.title.as_str()), (EventKind::Model, "[model] Disk filling"));
        assert!(e.body.contains("Written by the model: agent request 1"), "{}", e.body);
    }
}
