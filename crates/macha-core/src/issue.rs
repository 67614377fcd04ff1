//! The issue lifecycle: findings deduplicate into issues, which move
//! open → acting → resolved → closed → archived.
//!
//! Architecture invariant: an issue becomes `resolved` only on [`Observation::Clear`], i.e. when its
//! own check actually ran with data and saw the condition gone (or a person resolved it). An
//! action's outcome never resolves an issue, however well it was verified: a finished action puts
//! the issue back to `open`, and the next observation of its check decides. [`Observation::Unknown`]
//! (missing data, a failed probe, a dead model) changes nothing. An issue that comes back too often
//! within a window is flapping ([`ReopenRule`]).

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueState {
    /// The condition was observed and nobody is acting on it.
    Open,
    /// An action for it was permitted and is running or queued for approval.
    Acting,
    /// The condition was observed gone.
    Resolved,
    /// Done with: resolved and quiet for the close delay, or closed by a person.
    Closed,
    /// Closed and past retention; kept for history only.
    Archived,
}

impl IssueState {
    pub const ALL: [IssueState; 5] =
        [IssueState::Open, IssueState::Acting, IssueState::Resolved, IssueState::Closed, IssueState::Archived];

    pub fn as_str(self) -> &'static str {
        match self {
            IssueState::Open => "open",
            IssueState::Acting => "acting",
            IssueState::Resolved => "resolved",
            IssueState::Closed => "closed",
            IssueState::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<IssueState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Open or acting: the condition is believed to be present.
    pub fn is_active(self) -> bool {
        matches!(self, IssueState::Open | IssueState::Acting)
    }
}

impl std::fmt::Display for IssueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check (or the executor's verification) says about an issue's condition right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The condition is present.
    Present,
    /// The check ran with data and the condition is gone.
    Clear,
    /// Nothing is known: the data was missing or the check could not run. Never resolves.
    Unknown,
}

/// Something that happens to an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueEvent {
    Observed(Observation),
    /// An action for this issue was permitted (executing now or queued for approval).
    ActionStarted,
    /// The action finished; `verified` says whether the executor saw the action do what it was for.
    /// Either way the issue goes back to `open`: only its check resolves it.
    ActionFinished {
        verified: bool,
    },
    /// A person resolved it by hand.
    ManualResolve,
    /// A person closed it by hand.
    ManualClose,
    /// Time passed; resolved issues close after `close_after`, closed ones archive after `archive_after`.
    Tick {
        close_after: Duration,
        archive_after: Duration,
    },
}

/// The lifecycle fields of one issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub state: IssueState,
    /// When the issue entered `state`.
    pub since: Timestamp,
    pub last_seen: Timestamp,
    /// How often the condition came back after being resolved.
    pub recurrences: u32,
}

impl Lifecycle {
    pub fn opened(now: Timestamp) -> Lifecycle {
        Lifecycle { state: IssueState::Open, since: now, last_seen: now, recurrences: 0 }
    }

    /// Applies `event` at `now`. Returns the new lifecycle, or `None` when nothing changes. An event
    /// that makes no sense in the current state (a late `ActionFinished` on a closed issue) is a
    /// no-op, never a panic.
    pub fn apply(&self, now: Timestamp, event: &IssueEvent) -> Option<Lifecycle> {
        use IssueState::*;
        let to = |state: IssueState| Lifecycle { state, since: now, ..self.clone() };
        match (self.state, event) {
            (Open | Acting, IssueEvent::Observed(Observation::Present)) => {
                Some(Lifecycle { last_seen: now, ..self.clone() })
            }
            (Resolved, IssueEvent::Observed(Observation::Present)) => Some(Lifecycle {
                state: Open,
                since: now,
                last_seen: now,
                recurrences: self.recurrences.saturating_add(1),
            }),
            (Open | Acting, IssueEvent::Observed(Observation::Clear)) => Some(to(Resolved)),
            (_, IssueEvent::Observed(_)) => None,
            (Open, IssueEvent::ActionStarted) => Some(to(Acting)),
            (Acting, IssueEvent::ActionFinished { .. }) => Some(to(Open)),
            (Open | Acting, IssueEvent::ManualResolve) => Some(to(Resolved)),
            (Open | Acting | Resolved, IssueEvent::ManualClose) => Some(to(Closed)),
            (Resolved, IssueEvent::Tick { close_after, .. }) if now.since(self.since) >= *close_after => {
                Some(to(Closed))
            }
            (Closed, IssueEvent::Tick { archive_after, .. }) if now.since(self.since) >= *archive_after => {
                Some(to(Archived))
            }
            _ => None,
        }
    }
}

/// When an issue is flapping: it came back `limit` times within `window`. A flapping issue is
/// analysed once, not at every reopening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReopenRule {
    pub limit: u32,
    pub window: Duration,
}

impl Default for ReopenRule {
    fn default() -> Self {
        ReopenRule { limit: 3, window: Duration::from_secs(30 * 60) }
    }
}

impl ReopenRule {
    /// Notes a reopening at `now` after the earlier ones: returns the reopenings still within the
    /// window (the new one included, at most `limit` kept) and whether the issue is flapping.
    pub fn note(&self, earlier: &[Timestamp], now: Timestamp) -> (Vec<Timestamp>, bool) {
        let mut kept: Vec<Timestamp> =
            earlier.iter().copied().filter(|t| *t <= now && now.since(*t) < self.window).collect();
        kept.push(now);
        let limit = self.limit.max(1) as usize;
        if kept.len() > limit {
            kept.drain(..kept.len() - limit);
        }
        let flapping = kept.len() >= limit;
        (kept, flapping)
    }
}

/// A stable identity for "the same problem": host + check + subject.
pub fn fingerprint(host: &str, check: &str, subject: &str) -> String {
    format!("{host}/{check}/{subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000_000);
    const TICK: IssueEvent =
        IssueEvent::Tick { close_after: Duration::from_secs(3600), archive_after: Duration::from_secs(86_400) };

    fn at(s: i64) -> Timestamp {
        Timestamp(T0.0 + s * 1000)
    }

    #[test]
    fn unknown_never_resolves_in_any_state() {
        for state in IssueState::ALL {
            let l = Lifecycle { state, since: T0, last_seen: T0, recurrences: 0 };
            assert_eq!(l.apply(at(10), &IssueEvent::Observed(Observation::Unknown)), None, "{state}");
        }
    }

    #[test]
    fn full_path() {
        let l = Lifecycle::opened(T0);
        let l = l.apply(at(1), &IssueEvent::Observed(Observation::Present)).unwrap_or_else(|| l.clone());
        assert_eq!(l.state, IssueState::Open);
        assert_eq!(l.last_seen, at(1));
        let l = l.apply(at(2), &IssueEvent::ActionStarted).unwrap_or_else(|| l.clone());
        assert_eq!(l.state, IssueState::Acting);
        let failed = l.apply(at(3), &IssueEvent::ActionFinished { verified: false });
        assert_eq!(failed.map(|f| f.state), Some(IssueState::Open));
        // Even a verified action leaves the issue to its check.
        let l = l.apply(at(3), &IssueEvent::ActionFinished { verified: true }).unwrap_or_else(|| l.clone());
        assert_eq!(l.state, IssueState::Open);
        let l = l.apply(at(3), &IssueEvent::Observed(Observation::Clear)).unwrap_or_else(|| l.clone());
        assert_eq!(l.state, IssueState::Resolved);
        // Not closed before the delay, closed after it.
        assert_eq!(l.apply(at(100), &TICK), None);
        let l = l.apply(at(3 + 3600), &TICK).unwrap_or_else(|| l.clone());
        assert_eq!(l.state, IssueState::Closed);
        assert_eq!(l.apply(at(3700), &TICK), None);
        let l = l.apply(at(3 + 3600 + 86_400), &TICK).unwrap_or_else(|| l.clone());
        assert_eq!(l.state, IssueState::Archived);
        // A closed or archived issue is never reopened; the caller opens a new one.
        assert_eq!(l.apply(at(200_000), &IssueEvent::Observed(Observation::Present)), None);
    }

    #[test]
    fn recurrence_reopens_resolved() {
        let l = Lifecycle { state: IssueState::Resolved, since: T0, last_seen: T0, recurrences: 0 };
        let r = l.apply(at(5), &IssueEvent::Observed(Observation::Present));
        assert_eq!(r.as_ref().map(|r| (r.state, r.recurrences)), Some((IssueState::Open, 1)));
    }

    #[test]
    fn clear_resolves_only_active() {
        for state in IssueState::ALL {
            let l = Lifecycle { state, since: T0, last_seen: T0, recurrences: 0 };
            let r = l.apply(at(1), &IssueEvent::Observed(Observation::Clear)).map(|l| l.state);
            let expect = state.is_active().then_some(IssueState::Resolved);
            assert_eq!(r, expect, "{state}");
        }
    }

    /// Finding: a read-only diagnostic "verified" resolved a journal-error issue. No action outcome
    /// resolves an issue in any state; only an observation of its check does.
    #[test]
    fn no_action_outcome_resolves() {
        for state in IssueState::ALL {
            let l = Lifecycle { state, since: T0, last_seen: T0, recurrences: 0 };
            for verified in [true, false] {
                let next = l.apply(at(1), &IssueEvent::ActionFinished { verified }).map(|l| l.state);
                assert_ne!(next, Some(IssueState::Resolved), "{state} verified={verified}");
            }
        }
    }

    #[test]
    fn three_reopenings_in_the_window_flap() {
        let rule = ReopenRule::default();
        let (kept, flapping) = rule.note(&[], at(0));
        assert!(!flapping);
        let (kept, flapping) = rule.note(&kept, at(60));
        assert!(!flapping);
        let (kept, flapping) = rule.note(&kept, at(120));
        assert!(flapping);
        assert_eq!(kept.len(), 3);
        // Spread over more than the window: not flapping.
        let (kept, _) = rule.note(&[], at(0));
        let (kept, _) = rule.note(&kept, at(1000));
        let (kept, flapping) = rule.note(&kept, at(1900));
        assert!(!flapping, "{kept:?}");
    }
}
