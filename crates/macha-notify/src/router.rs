//! The router: which events become which messages, when, and why. Sans-IO: every time is a
//! parameter, nothing is read or written; the caller puts what comes out into the outbox.
//!
//! - **Grouping.** Events of one incident (`group_key`) are told together: the first waits
//!   `group_wait` (30 s; critical ones `critical_group_wait`, 0 by default, so they go at once) for
//!   more of its kind; once the incident has been told, later news waits at least `group_interval`
//!   (5 min) after the last message. Incidents of one host that fall due together become one
//!   message ("grouped 3 events for host web1").
//! - **Resolved.** When an incident resolves, a resolved message goes out, only if its opening did.
//!   An incident that opens and resolves within its `group_wait` is never told.
//! - **Repeat.** An incident still open `repeat_interval` (4 h) after its last message is told again.
//! - **Flapping.** An incident opened `flap_opens` times within `flap_window` is flapping: one
//!   "flapping" message, then quiet until it has not changed for `flap_stable`, then one "stable
//!   again" message with its state.
//! - **Inhibition and silences.** An inhibited host (unreachable, being deployed) or a matching
//!   silence holds back a message: an open incident's messages wait until the inhibition or
//!   silence ends and go out then if still true; other events are dropped (counted in
//!   [`Router::stats`]). Some kinds are never inhibited ([`EventKind::inhibitable`]).
//! - **Why.** Every [`Outgoing`] says why it was sent, in a sentence.
//!
//! Message ids are derived from the group key, the instant the router first saw the incident and
//! a sequence number, so the same message enqueued twice is one message, and messages of a
//! restarted router do not collide with earlier ones.
//!
//! **Memory across restarts.** [`Router::export_state`] gives what the router remembers (its
//! groups with their sequence numbers, repeat timers, flapping and pending news, and the
//! inhibitions) as a versioned, bounded [`RouterState`]; [`Router::restore`] starts a router from
//! it, so an incident told before a restart is resolved, repeated and seen flapping after it, and
//! a restored group's message ids continue its sequence.

use crate::channel::ChannelFilter;
use crate::event::{Event, EventKind, Severity};
use crate::priority::Priority;
use macha_core::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A message for one channel, ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Idempotent: derived from the group key, the incident's start and a sequence number.
    pub message_id: String,
    pub channel: String,
    pub title: String,
    /// Markdown.
    pub body: String,
    pub priority: Priority,
    pub link: Option<String>,
    pub tags: Vec<String>,
    /// Why this message was sent, for people.
    pub why: String,
    pub host: String,
    pub group_key: String,
    /// The kind of the message (an incident's opening is `issue_opened`).
    pub kind: EventKind,
    pub severity: Severity,
    /// When the router produced it.
    pub at: Timestamp,
}

/// A channel as the router sees it: its name and what it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub channel: String,
    pub filter: ChannelFilter,
}

/// The router's timing and routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub group_wait: Duration,
    pub critical_group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Opens within `flap_window` that make an incident flapping.
    pub flap_opens: u32,
    pub flap_window: Duration,
    /// A flapping incident is stable again after this long without a change.
    pub flap_stable: Duration,
    pub routes: Vec<Route>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            group_wait: Duration::from_secs(30),
            critical_group_wait: Duration::ZERO,
            group_interval: Duration::from_secs(5 * 60),
            repeat_interval: Duration::from_secs(4 * 3600),
            flap_opens: 3,
            flap_window: Duration::from_secs(3600),
            flap_stable: Duration::from_secs(30 * 60),
            routes: vec![Route { channel: "journal".to_owned(), filter: ChannelFilter::default() }],
        }
    }
}

/// A glob over host, group key and event kind: `*` matches any run of characters; an absent part
/// matches everything. Written as `host=web*,kind=issue_opened,group=web1/unit/*`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Matcher {
    pub host: Option<String>,
    pub group_key: Option<String>,
    pub kind: Option<String>,
}

impl Matcher {
    /// Parses `key=glob` pairs separated by commas (`host`, `group`, `kind`). At least one is needed.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let mut m = Matcher::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("{part:?} is not key=glob"))?;
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("{key} has an empty pattern"));
            }
            let slot = match key.trim() {
                "host" => &mut m.host,
                "group" | "group_key" => &mut m.group_key,
                "kind" => &mut m.kind,
                other => return Err(format!("unknown matcher key {other:?} (host, group, kind)")),
            };
            *slot = Some(value.to_owned());
        }
        if m.host.is_none() && m.group_key.is_none() && m.kind.is_none() {
            return Err("a matcher needs at least one of host=, group=, kind=".to_owned());
        }
        Ok(m)
    }

    pub fn matches(&self, host: &str, group_key: &str, kind: EventKind) -> bool {
        let part = |p: &Option<String>, v: &str| p.as_deref().is_none_or(|p| glob(p, v));
        part(&self.host, host) && part(&self.group_key, group_key) && part(&self.kind, kind.as_str())
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [("host", &self.host), ("group", &self.group_key), ("kind", &self.kind)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `*`-only glob matching, linear in practice.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A silence: messages it matches are held back until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: i64,
    pub matcher: Matcher,
    pub until: Timestamp,
    pub reason: String,
    pub created_by: String,
}

impl Silence {
    /// A stored silence; fails if its matcher does not parse.
    pub fn from_record(r: &macha_store::SilenceRecord) -> Result<Silence, String> {
        Ok(Silence {
            id: r.id,
            matcher: Matcher::parse(&r.matcher)?,
            until: r.until,
            reason: r.reason.clone(),
            created_by: r.created_by.clone(),
        })
    }
}

/// An inhibited host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Inhibition {
    until: Option<Timestamp>,
    reason: String,
}

/// Counters of what the router did not send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Events dropped under a silence or an inhibition.
    pub suppressed: u64,
    /// Incidents that resolved before their opening was sent (never told).
    pub resolved_untold: u64,
    /// Events of flapping incidents, kept quiet.
    pub flap_quieted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Flap {
    last_change: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Group {
    key: String,
    host: String,
    /// When the router first saw this group, and its serial number (part of its message ids).
    started: Timestamp,
    serial: u64,
    seq: u64,
    /// Whether an issue is open in it.
    open: bool,
    severity: Severity,
    title: String,
    link: Option<String>,
    pending: Vec<Event>,
    due: Option<Timestamp>,
    /// The current incident's opening went out.
    told: bool,
    last_sent: Option<Timestamp>,
    opens: Vec<Timestamp>,
    flap: Option<Flap>,
    /// A resolved message waits for a silence or inhibition to end.
    resolve_held: bool,
    /// Why messages were held, for the why of the release.
    held: Option<String>,
}

/// The router. See the module documentation.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    groups: BTreeMap<String, Group>,
    inhibited: HashMap<String, Inhibition>,
    silences: Vec<Silence>,
    stats: RouterStats,
    /// Counts the groups this router created: part of their message ids, so a group forgotten
    /// and made again within the same millisecond never repeats an id.
    serial: u64,
}

/// One message before it is fanned out to channels.
struct Draft {
    key: String,
    id_seed: String,
    host: String,
    kind: EventKind,
    severity: Severity,
    priority: Priority,
    title: String,
    body: String,
    link: Option<String>,
    tags: Vec<String>,
    why: String,
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        "0".to_owned()
    } else if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

fn message_id(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("m-{hex}")
}

fn severity_tag(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "information_source",
        Severity::Warning => "warning",
        Severity::Critical => "rotating_light",
    }
}

impl Router {
    pub fn new(config: RouterConfig) -> Router {
        Router {
            config,
            groups: BTreeMap::new(),
            inhibited: HashMap::new(),
            silences: Vec::new(),
            stats: RouterStats::default(),
            serial: 0,
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// How many groups the router keeps state for (open, pending, flapping or recently opened).
    pub fn tracked(&self) -> usize {
        self.groups.len()
    }

    /// Replaces the silences (the store's active ones, [`Silence::from_record`]).
    pub fn set_silences(&mut self, silences: Vec<Silence>) {
        self.silences = silences;
    }

    /// Holds back the host's inhibitable messages until `until` (or [`Router::lift`]).
    pub fn inhibit(&mut self, host: &str, until: Option<Timestamp>, reason: &str) {
        self.inhibited.insert(host.to_owned(), Inhibition { until, reason: reason.to_owned() });
    }

    /// Ends the host's inhibition; its held messages go out at the next [`Router::tick`], which the
    /// caller should make at once (as after [`Router::set_silences`]).
    pub fn lift(&mut self, host: &str) {
        self.inhibited.remove(host);
    }

    /// Whether `host` is inhibited at `now`.
    pub fn is_inhibited(&self, host: &str, now: Timestamp) -> bool {
        self.inhibited.get(host).is_some_and(|i| i.until.is_none_or(|u| u > now))
    }

    fn wait_for(&self, severity: Severity) -> Duration {
        if severity == Severity::Critical { self.config.critical_group_wait } else { self.config.group_wait }
    }

    /// Why a message about (host, group, kind) is held back at `now`, if it is.
    fn suppressed(&self, now: Timestamp, host: &str, key: &str, kind: EventKind) -> Option<String> {
        if kind.inhibitable()
            && let Some(i) = self.inhibited.get(host).filter(|i| i.until.is_none_or(|u| u > now))
        {
            return Some(format!("{host} was inhibited ({})", i.reason));
        }
        self.silences
            .iter()
            .find(|s| s.until > now && s.matcher.matches(host, key, kind))
            .map(|s| format!("silence {} ({}, by {}) was in force", s.id, s.reason, s.created_by))
    }

    /// Takes one event; returns the messages due at once.
    pub fn on_event(&mut self, now: Timestamp, event: Event) -> Vec<Outgoing> {
        let key = event.group_key.clone();
        let wait = self.wait_for(event.severity);
        let (flap_opens, flap_window, group_interval) =
            (self.config.flap_opens, self.config.flap_window, self.config.group_interval);
        if !self.groups.contains_key(&event.group_key) {
            self.serial += 1;
        }
        let serial = self.serial;
        let g = self.groups.entry(event.group_key.clone()).or_insert_with(|| Group {
            key: event.group_key.clone(),
            host: event.host.clone(),
            started: now,
            serial,
            seq: 0,
            open: false,
            severity: event.severity,
            title: event.title.clone(),
            link: event.link.clone(),
            pending: Vec::new(),
            due: None,
            told: false,
            last_sent: None,
            opens: Vec::new(),
            flap: None,
            resolve_held: false,
            held: None,
        });
        g.host.clone_from(&event.host);
        let mut out = Vec::new();
        match event.kind {
            EventKind::IssueOpened if !g.open => {
                g.open = true;
                g.resolve_held = false;
                g.opens.push(now);
                g.opens.retain(|t| now.since(*t) < flap_window);
                if let Some(flap) = &mut g.flap {
                    flap.last_change = now;
                    self.stats.flap_quieted += 1;
                    return out;
                }
                if g.opens.len() >= flap_opens as usize && flap_opens > 0 {
                    g.flap = Some(Flap { last_change: now });
                    g.pending.clear();
                    g.due = None;
                    let n = g.opens.len();
                    let draft = Draft {
                        key: g.key.clone(),
                        id_seed: String::new(),
                        host: g.host.clone(),
                        kind: EventKind::IssueOpened,
                        severity: event.severity,
                        priority: Priority::of(event.severity),
                        title: format!("Flapping: {}", event.title),
                        body: format!(
                            "{}\n\nThis incident opened {n} times within {}. Macha stays quiet about it until it \
                             has not changed for {}.",
                            event.body,
                            secs(flap_window),
                            secs(self.config.flap_stable)
                        ),
                        link: event.link.clone(),
                        tags: vec!["flapping".to_owned()],
                        why: format!(
                            "flapping: opened {n} times within {}; quiet until stable for {}",
                            secs(flap_window),
                            secs(self.config.flap_stable)
                        ),
                    };
                    let key = g.key.clone();
                    self.send_group(now, &key, draft, &mut out, true);
                    return out;
                }
                g.told = false;
                g.severity = event.severity;
                g.title.clone_from(&event.title);
                g.link.clone_from(&event.link);
                g.pending.push(event);
                g.due = Some(now.plus(wait));
            }
            EventKind::IssueOpened => {
                // An update of an open incident.
                if g.flap.is_some() {
                    self.stats.flap_quieted += 1;
                    return out;
                }
                g.severity = g.severity.max(event.severity);
                g.pending.push(event);
                let earliest =
                    if g.told { g.last_sent.map_or(now, |t| t.plus(group_interval)).max(now) } else { now.plus(wait) };
                g.due = Some(g.due.map_or(earliest, |d| d.min(earliest)));
            }
            EventKind::IssueResolved => {
                if !g.open {
                    return out;
                }
                g.open = false;
                if let Some(flap) = &mut g.flap {
                    flap.last_change = now;
                    self.stats.flap_quieted += 1;
                    return out;
                }
                g.pending.retain(|e| e.kind != EventKind::IssueOpened);
                if g.pending.is_empty() {
                    g.due = None;
                }
                if g.told {
                    g.resolve_held = true;
                    let key = g.key.clone();
                    self.release_resolved(now, &key, &event, &mut out);
                } else {
                    self.stats.resolved_untold += 1;
                }
            }
            _ => {
                let earliest = match g.last_sent {
                    Some(t) => now.plus(wait).max(t.plus(group_interval)),
                    None => now.plus(wait),
                };
                g.pending.push(event);
                g.due = Some(g.due.map_or(earliest, |d| d.min(earliest)));
            }
        }
        // Only this group can have fallen due (the rest waits for the caller's tick at
        // `next_due`), so an event costs the same however many incidents are open.
        self.flush_if_due(now, &key, &mut out);
        out
    }

    /// Sends group `key`'s pending news if it is due at `now` and not held back.
    fn flush_if_due(&mut self, now: Timestamp, key: &str, out: &mut Vec<Outgoing>) {
        let Some(g) = self.groups.get(key) else { return };
        if g.pending.is_empty() || g.due.is_none_or(|d| d > now) {
            return;
        }
        let kind = g.pending[0].kind;
        if let Some(reason) = self.suppressed(now, &g.host, key, kind) {
            if let Some(g) = self.groups.get_mut(key) {
                if g.open {
                    g.held = Some(reason);
                } else {
                    self.stats.suppressed += g.pending.len() as u64;
                    g.pending.clear();
                    g.due = None;
                }
            }
            return;
        }
        if let Some(draft) = self.draft_pending(key) {
            let opening = draft.kind == EventKind::IssueOpened;
            self.send_group(now, key, draft, out, opening);
        }
        if self.groups.get(key).is_some_and(|g| {
            !g.open && g.pending.is_empty() && g.flap.is_none() && !g.resolve_held && g.opens.is_empty()
        }) {
            self.groups.remove(key);
        }
    }

    /// Sends the resolved message of group `key` unless it is held back.
    fn release_resolved(&mut self, now: Timestamp, key: &str, event: &Event, out: &mut Vec<Outgoing>) {
        let Some(g) = self.groups.get(key) else { return };
        if let Some(reason) = self.suppressed(now, &g.host, key, EventKind::IssueResolved) {
            if let Some(g) = self.groups.get_mut(key) {
                g.held = Some(reason);
            }
            return;
        }
        let since =
            g.last_sent.map(|t| format!(" (last told {} ago)", secs(Duration::from_secs(now.since(t).as_secs()))));
        let held = g.held.as_ref().map(|h| format!("; held while {h}")).unwrap_or_default();
        let draft = Draft {
            key: key.to_owned(),
            id_seed: String::new(),
            host: g.host.clone(),
            kind: EventKind::IssueResolved,
            severity: g.severity,
            priority: Priority::Low,
            title: format!("Resolved: {}", g.title),
            body: event.body.clone(),
            link: event.link.clone().or_else(|| g.link.clone()),
            tags: vec!["white_check_mark".to_owned(), "resolved".to_owned()],
            why: format!("issue resolved; its opening was sent{}{held}", since.unwrap_or_default()),
        };
        self.send_group(now, key, draft, out, false);
        if let Some(g) = self.groups.get_mut(key) {
            g.told = false;
            g.resolve_held = false;
            g.held = None;
        }
    }

    /// Fans a group's message out to the channels that take it and advances the group.
    fn send_group(&mut self, now: Timestamp, key: &str, mut draft: Draft, out: &mut Vec<Outgoing>, opening: bool) {
        let Some(g) = self.groups.get_mut(key) else { return };
        g.seq += 1;
        g.last_sent = Some(now);
        if opening {
            g.told = true;
        }
        draft.id_seed = format!("{}\0{}\0{}\0{}", g.key, g.started.millis(), g.serial, g.seq);
        fan_out(&self.config.routes, now, draft, out);
    }

    /// Everything due at `now`: held-back messages whose silence or inhibition ended, grouped
    /// news, repeats, flapping incidents that are stable again.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Outgoing> {
        let mut out = Vec::new();
        self.inhibited.retain(|_, i| i.until.is_none_or(|u| u > now));
        self.silences.retain(|s| s.until > now);
        let keys: Vec<String> = self.groups.keys().cloned().collect();

        // Flapping incidents that have been quiet long enough.
        for key in &keys {
            let Some(g) = self.groups.get_mut(key) else { continue };
            let Some(flap) = &g.flap else { continue };
            if now.since(flap.last_change) < self.config.flap_stable {
                continue;
            }
            g.flap = None;
            g.opens.clear();
            let state = if g.open { "open" } else { "resolved" };
            let draft = Draft {
                key: key.clone(),
                id_seed: String::new(),
                host: g.host.clone(),
                kind: if g.open { EventKind::IssueOpened } else { EventKind::IssueResolved },
                severity: g.severity,
                priority: if g.open { Priority::of(g.severity) } else { Priority::Low },
                title: format!("Stable again ({state}): {}", g.title),
                body: format!("No change for {}; the incident is {state}.", secs(self.config.flap_stable)),
                link: g.link.clone(),
                tags: vec!["stable".to_owned()],
                why: format!(
                    "stable again: no change for {} after flapping; now {state}",
                    secs(self.config.flap_stable)
                ),
            };
            let open = g.open;
            let host = g.host.clone();
            if self.suppressed(now, &host, key, draft.kind).is_none() {
                self.send_group(now, key, draft, &mut out, open);
            }
            if let Some(g) = self.groups.get_mut(key) {
                g.told = open;
            }
        }

        // Resolved messages held back by a silence or an inhibition.
        for key in &keys {
            let held = self.groups.get(key).is_some_and(|g| g.resolve_held && !g.open);
            if held {
                let ev = self.groups.get(key).map(|g| Event {
                    kind: EventKind::IssueResolved,
                    severity: g.severity,
                    host: g.host.clone(),
                    group_key: key.clone(),
                    title: g.title.clone(),
                    body: String::new(),
                    link: None,
                    at: now,
                    source: None,
                });
                if let Some(ev) = ev {
                    self.release_resolved(now, key, &ev, &mut out);
                }
            }
        }

        // Repeats of incidents still open.
        for key in &keys {
            let Some(g) = self.groups.get(key) else { continue };
            let repeat_due = g.open
                && g.told
                && g.flap.is_none()
                && g.pending.is_empty()
                && g.last_sent.is_some_and(|t| now.since(t) >= self.config.repeat_interval);
            if !repeat_due {
                continue;
            }
            if self.suppressed(now, &g.host, key, EventKind::IssueOpened).is_some() {
                continue;
            }
            let draft = Draft {
                key: key.clone(),
                id_seed: String::new(),
                host: g.host.clone(),
                kind: EventKind::IssueOpened,
                severity: g.severity,
                priority: Priority::of(g.severity),
                title: format!("Still open: {}", g.title),
                body: format!(
                    "Open since the router first saw it; last told {} ago.",
                    secs(self.config.repeat_interval)
                ),
                link: g.link.clone(),
                tags: vec!["repeat".to_owned()],
                why: format!("repeat after {}: still open", secs(self.config.repeat_interval)),
            };
            self.send_group(now, key, draft, &mut out, true);
        }

        // Pending news whose wait is over, grouped per host.
        let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in &keys {
            let Some(g) = self.groups.get(key) else { continue };
            if g.pending.is_empty() || g.due.is_none_or(|d| d > now) {
                continue;
            }
            let kind = g.pending[0].kind;
            if let Some(reason) = self.suppressed(now, &g.host, key, kind) {
                let incident = g.open;
                if let Some(g) = self.groups.get_mut(key) {
                    if incident {
                        g.held = Some(reason);
                    } else {
                        self.stats.suppressed += g.pending.len() as u64;
                        g.pending.clear();
                        g.due = None;
                    }
                }
                continue;
            }
            by_host.entry(g.host.clone()).or_default().push(key.clone());
        }
        for (host, keys) in by_host {
            if keys.len() == 1 {
                let key = &keys[0];
                if let Some(draft) = self.draft_pending(key) {
                    let opening = draft.kind == EventKind::IssueOpened;
                    self.send_group(now, key, draft, &mut out, opening);
                }
            } else {
                self.send_host_group(now, &host, &keys, &mut out);
            }
        }
        for g in self.groups.values_mut() {
            if g.due.is_some_and(|d| d <= now) && g.pending.is_empty() {
                g.due = None;
            }
        }
        // Forget groups with nothing left to tell (once their opens are out of the flap window).
        let window = self.config.flap_window;
        for g in self.groups.values_mut() {
            g.opens.retain(|t| now.since(*t) < window);
        }
        self.groups.retain(|_, g| {
            g.open || !g.pending.is_empty() || g.flap.is_some() || g.resolve_held || !g.opens.is_empty()
        });
        out
    }

    /// The message for group `key`'s pending events; empties them.
    fn draft_pending(&mut self, key: &str) -> Option<Draft> {
        let wait_normal = self.config.group_wait;
        let wait_critical = self.config.critical_group_wait;
        let interval = self.config.group_interval;
        let g = self.groups.get_mut(key)?;
        let events = std::mem::take(&mut g.pending);
        g.due = None;
        let first = events.first()?;
        let severity = events.iter().map(|e| e.severity).max().unwrap_or(first.severity);
        let kind = if events.iter().any(|e| e.kind == EventKind::IssueOpened) && !g.told {
            EventKind::IssueOpened
        } else {
            first.kind
        };
        let held = g.held.take().map(|h| format!("; held while {h}")).unwrap_or_default();
        let timing = if g.told || g.last_sent.is_some() && kind != EventKind::IssueOpened {
            format!("group_interval {}", secs(interval))
        } else if severity == Severity::Critical {
            format!("critical group_wait {}", secs(wait_critical))
        } else {
            format!("group_wait {}", secs(wait_normal))
        };
        let what = match kind {
            EventKind::IssueOpened if !g.told => format!("{severity} issue opened"),
            EventKind::IssueOpened => "update of an open incident".to_owned(),
            other => format!("{severity} {}", other.as_str().replace('_', " ")),
        };
        let why = if events.len() == 1 {
            if timing.starts_with("critical") && wait_critical.is_zero() {
                format!("{what}; sent at once ({timing}){held}")
            } else {
                format!("{what}; sent after {timing}{held}")
            }
        } else {
            format!("{what}; grouped {} events of this incident ({timing}){held}", events.len())
        };
        let title = if events.len() == 1 {
            first.title.clone()
        } else {
            format!("{} (+{} more)", first.title, events.len() - 1)
        };
        let body = events.iter().map(|e| e.body.as_str()).filter(|b| !b.is_empty()).collect::<Vec<_>>().join("\n\n");
        let link = events.iter().rev().find_map(|e| e.link.clone());
        Some(Draft {
            key: key.to_owned(),
            id_seed: String::new(),
            host: g.host.clone(),
            kind,
            severity,
            priority: Priority::of(severity),
            title,
            body,
            link,
            tags: vec![severity_tag(severity).to_owned(), kind.as_str().to_owned()],
            why,
        })
    }

    /// One message for several incidents of one host that fell due together.
    fn send_host_group(&mut self, now: Timestamp, host: &str, keys: &[String], out: &mut Vec<Outgoing>) {
        let mut parts = Vec::new();
        let mut seed = format!("host:{host}");
        let mut n_events = 0;
        for key in keys {
            let Some(d) = self.draft_pending(key) else { continue };
            n_events += self.groups.get(key).map_or(0, |_| 1);
            let opening = d.kind == EventKind::IssueOpened;
            if let Some(g) = self.groups.get_mut(key) {
                g.seq += 1;
                g.last_sent = Some(now);
                if opening {
                    g.told = true;
                }
                seed.push_str(&format!("\0{}\0{}\0{}\0{}", g.key, g.started.millis(), g.serial, g.seq));
            }
            parts.push(d);
        }
        let Some(top) = parts.iter().map(|d| d.severity).max() else { return };
        let kind =
            if parts.iter().any(|d| d.kind == EventKind::IssueOpened) { EventKind::IssueOpened } else { parts[0].kind };
        let body = parts.iter().map(|d| format!("**{}**\n{}", d.title, d.body)).collect::<Vec<_>>().join("\n\n");
        let whys = parts.iter().map(|d| d.why.as_str()).collect::<Vec<_>>().join("; ");
        let draft = Draft {
            key: format!("host:{host}"),
            id_seed: seed,
            host: host.to_owned(),
            kind,
            severity: top,
            priority: Priority::of(top),
            title: format!("{} events on {host}", parts.len()),
            body,
            link: parts.iter().find_map(|d| d.link.clone()),
            tags: vec![severity_tag(top).to_owned(), host.to_owned()],
            why: format!("grouped {n_events} events for host {host} ({whys})"),
        };
        fan_out(&self.config.routes, now, draft, out);
    }

    /// The next instant [`Router::tick`] has something to do, if any.
    pub fn next_due(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut at = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
        for g in self.groups.values() {
            // Held news waits for the end of its silence or inhibition (counted below), or for
            // the tick the caller makes after lifting one or replacing the silences.
            if let (Some(d), false, None) = (g.due, g.pending.is_empty(), &g.held) {
                at(d);
            }
            if let Some(f) = &g.flap {
                at(f.last_change.plus(self.config.flap_stable));
            }
            if g.open
                && g.told
                && g.flap.is_none()
                && let Some(t) = g.last_sent
            {
                at(t.plus(self.config.repeat_interval));
            }
        }
        for s in &self.silences {
            at(s.until);
        }
        for i in self.inhibited.values() {
            if let Some(u) = i.until {
                at(u);
            }
        }
        next
    }
}

fn fan_out(routes: &[Route], now: Timestamp, d: Draft, out: &mut Vec<Outgoing>) {
    let id = message_id(&d.id_seed);
    for route in routes.iter().filter(|r| r.filter.accepts(d.kind, d.severity)) {
        out.push(Outgoing {
            message_id: id.clone(),
            channel: route.channel.clone(),
            title: d.title.clone(),
            body: d.body.clone(),
            priority: d.priority,
            link: d.link.clone(),
            tags: d.tags.clone(),
            why: d.why.clone(),
            host: d.host.clone(),
            group_key: d.key.clone(),
            kind: d.kind,
            severity: d.severity,
            at: now,
        });
    }
}

#[path = "router_state.rs"]
mod state;
pub use state::{
    RouterState, STATE_MAX_AGE, STATE_MAX_BYTES, STATE_MAX_GROUPS, STATE_MAX_INHIBITIONS, STATE_MAX_PENDING,
    STATE_VERSION, StateError,
};

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "router_state_tests.rs"]
mod state_tests;
