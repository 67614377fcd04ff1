//! The router's memory as data: [`RouterState`], what [`Router::export_state`] gives and
//! [`Router::restore`] takes, so a restarted daemon still knows which incidents it told, their
//! repeat timers and sequence numbers, which are flapping, what news waits, and which hosts are
//! inhibited.
//!
//! The form is versioned ([`STATE_VERSION`]) and bounded: at most [`STATE_MAX_GROUPS`] groups (the
//! most recently active), [`STATE_MAX_PENDING`] waiting events per group with their texts cut,
//! [`STATE_MAX_INHIBITIONS`] inhibitions, [`STATE_MAX_BYTES`] of JSON; a group with no activity for
//! [`STATE_MAX_AGE`] (or twice the repeat interval, if longer) is dropped at restore. Silences are
//! not part of it (they are in the store), nor are the counters of [`Router::stats`].

use super::{Group, Inhibition, Router, RouterConfig};
use crate::event::Event;
use crate::limit::fit;
use macha_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The version of the state this router writes and reads.
pub const STATE_VERSION: u32 = 1;
/// The largest state, in bytes of JSON, that is written or read.
pub const STATE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Groups kept at most (the most recently active).
pub const STATE_MAX_GROUPS: usize = 2_000;
/// Waiting events kept per group at most (the first ones: they make the message's kind and title).
pub const STATE_MAX_PENDING: usize = 20;
/// Inhibited hosts kept at most.
pub const STATE_MAX_INHIBITIONS: usize = 1_000;
/// A group without activity for this long (or twice the repeat interval, if longer) is forgotten.
pub const STATE_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

/// The longest event body and title kept in the state.
const MAX_BODY: usize = 4 * 1024;
const MAX_TITLE: usize = 1024;
/// The longest inhibition reason kept.
const MAX_REASON: usize = 512;

/// What a router remembers, as it is stored. Made by [`Router::export_state`]; written with
/// [`RouterState::to_json`], read with [`RouterState::from_json`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    version: u32,
    /// The router's group counter (part of message ids).
    serial: u64,
    #[serde(default)]
    groups: Vec<Group>,
    #[serde(default)]
    inhibitions: BTreeMap<String, Inhibition>,
}

/// Why a stored state was not restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the router's state is {0} bytes, more than the {STATE_MAX_BYTES} kept")]
    TooLarge(usize),
    #[error("the router's state is not valid: {0}")]
    Json(String),
    #[error("the router's state has version {found}; this version of Macha reads version {STATE_VERSION}")]
    Version { found: u32 },
}

/// Only the version, read first, so a state of another version is told as such.
#[derive(Deserialize)]
struct Head {
    version: u32,
}

impl RouterState {
    pub fn version(&self) -> u32 {
        self.version
    }

    /// How many groups (incidents and other news) the state holds.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// How many hosts the state holds as inhibited.
    pub fn inhibitions(&self) -> usize {
        self.inhibitions.len()
    }

    /// The state as JSON within [`STATE_MAX_BYTES`]: if it would be larger, the least recently
    /// active groups are left out until it fits.
    pub fn to_json(&self) -> Result<String, StateError> {
        let json = |s: &RouterState| serde_json::to_string(s).map_err(|e| StateError::Json(e.to_string()));
        let text = json(self)?;
        if text.len() <= STATE_MAX_BYTES {
            return Ok(text);
        }
        let mut smaller = self.clone();
        smaller.groups.sort_by_key(|g| std::cmp::Reverse(last_activity(g)));
        loop {
            let keep = smaller.groups.len() - smaller.groups.len().div_ceil(4);
            smaller.groups.truncate(keep);
            let text = json(&smaller)?;
            if text.len() <= STATE_MAX_BYTES || smaller.groups.is_empty() {
                return Ok(text);
            }
        }
    }

    /// A stored state: refused when larger than [`STATE_MAX_BYTES`], not valid JSON of this form,
    /// or of another version.
    pub fn from_json(text: &str) -> Result<RouterState, StateError> {
        if text.len() > STATE_MAX_BYTES {
            return Err(StateError::TooLarge(text.len()));
        }
        let head: Head = serde_json::from_str(text).map_err(|e| StateError::Json(e.to_string()))?;
        if head.version != STATE_VERSION {
            return Err(StateError::Version { found: head.version });
        }
        serde_json::from_str(text).map_err(|e| StateError::Json(e.to_string()))
    }
}

/// The last instant anything happened in a group.
fn last_activity(g: &Group) -> Timestamp {
    let mut t = g.started;
    for x in [g.last_sent, g.opens.last().copied(), g.flap.as_ref().map(|f| f.last_change)].into_iter().flatten() {
        t = t.max(x);
    }
    g.pending.iter().map(|e| e.at).fold(t, Timestamp::max)
}

fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        *text = fit(text, max).0;
    }
}

/// A group within the bounds: its waiting events and their texts cut.
fn bounded(mut g: Group) -> Group {
    g.pending.truncate(STATE_MAX_PENDING);
    for e in &mut g.pending {
        bound_event(e);
    }
    cut(&mut g.title, MAX_TITLE);
    if let Some(h) = &mut g.held {
        cut(h, MAX_REASON);
    }
    g
}

fn bound_event(e: &mut Event) {
    cut(&mut e.body, MAX_BODY);
    cut(&mut e.title, MAX_TITLE);
}

/// The `n` most recently active groups.
fn most_recent(mut groups: Vec<Group>, n: usize) -> Vec<Group> {
    if groups.len() > n {
        groups.sort_by_key(|g| std::cmp::Reverse(last_activity(g)));
        groups.truncate(n);
    }
    groups
}

fn bounded_inhibitions<'a>(
    inhibitions: impl Iterator<Item = (&'a String, &'a Inhibition)>,
) -> BTreeMap<String, Inhibition> {
    inhibitions
        .take(STATE_MAX_INHIBITIONS)
        .map(|(host, i)| {
            let mut i = i.clone();
            cut(&mut i.reason, MAX_REASON);
            (host.clone(), i)
        })
        .collect()
}

impl Router {
    /// What the router remembers, to be stored with the messages it produced (so the two agree)
    /// and given to [`Router::restore`] after a restart. Bounded (see the module documentation).
    pub fn export_state(&self) -> RouterState {
        let groups = most_recent(self.groups.values().cloned().collect(), STATE_MAX_GROUPS);
        let mut sorted: Vec<_> = self.inhibited.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        RouterState {
            version: STATE_VERSION,
            serial: self.serial,
            groups: groups.into_iter().map(bounded).collect(),
            inhibitions: bounded_inhibitions(sorted.into_iter()),
        }
    }

    /// A router with `config` that remembers what `state` holds, as of `now`: groups without
    /// activity for [`STATE_MAX_AGE`] (or twice `config.repeat_interval`, if longer) and ended
    /// inhibitions are dropped, the rest bounded as [`Router::export_state`] bounds it. A state of
    /// another version gives an empty router. Timers that fell due while the daemon was down (a
    /// group wait, a repeat, a flapping incident now stable) fire at the next [`Router::tick`].
    pub fn restore(config: RouterConfig, state: RouterState, now: Timestamp) -> Router {
        let max_age = STATE_MAX_AGE.max(config.repeat_interval.saturating_mul(2));
        let mut router = Router::new(config);
        if state.version != STATE_VERSION {
            tracing::warn!(
                version = state.version,
                "the router's stored state has another version; notifications start without it"
            );
            return router;
        }
        let total = state.groups.len();
        let fresh: Vec<Group> = state.groups.into_iter().filter(|g| now.since(last_activity(g)) <= max_age).collect();
        let mut serial = state.serial;
        for g in most_recent(fresh, STATE_MAX_GROUPS) {
            serial = serial.max(g.serial);
            let g = bounded(g);
            // A key given twice keeps its first group.
            router.groups.entry(g.key.clone()).or_insert(g);
        }
        router.serial = serial;
        router.inhibited =
            bounded_inhibitions(state.inhibitions.iter().filter(|(_, i)| i.until.is_none_or(|u| u > now)))
                .into_iter()
                .collect();
        if router.groups.len() < total {
            tracing::info!(
                kept = router.groups.len(),
                dropped = total - router.groups.len(),
                "notification groups older than the bound were not restored"
            );
        }
        router
    }
}
