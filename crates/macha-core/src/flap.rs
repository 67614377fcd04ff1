//! The flap guard: the same action on the same target `limit` times within `window` stops Macha
//! from doing it again on its own and escalates to a person.
//!
//! Pure: the daemon records every executed action here (and reloads recent history from the store on
//! start, so a restart does not reset the counters) and passes `now` in.

use crate::{Action, HostName, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Default: 3 executions of the same action within 30 minutes.
pub const DEFAULT_LIMIT: u32 = 3;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapStatus {
    /// Fewer than the limit in the window.
    Ok { recent: u32 },
    /// The limit is reached: stop and escalate.
    Exceeded { recent: u32, limit: u32, window: Duration },
}

#[derive(Debug, Clone)]
pub struct FlapGuard {
    limit: u32,
    window: Duration,
    history: BTreeMap<String, VecDeque<Timestamp>>,
}

/// The flap key of an action on one host: `host/kind/subject`.
pub fn flap_key(host: &HostName, action: &Action) -> String {
    format!("{host}/{}/{}", action.kind(), action.subject())
}

impl FlapGuard {
    /// A `limit` of 0 is treated as 1: an action can always run at least once.
    pub fn new(limit: u32, window: Duration) -> FlapGuard {
        FlapGuard { limit: limit.max(1), window, history: BTreeMap::new() }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records one execution of `key` at `at`.
    pub fn record(&mut self, key: &str, at: Timestamp) {
        let q = self.history.entry(key.to_owned()).or_default();
        q.push_back(at);
        // Keep only what can matter; history arrives roughly in order, so sort the rare stragglers.
        if q.len() > 1 && q.iter().zip(q.iter().skip(1)).any(|(a, b)| a > b) {
            q.make_contiguous().sort();
        }
        while q.len() > self.limit as usize * 4 {
            q.pop_front();
        }
    }

    /// How often `key` ran within the window ending at `now`.
    pub fn status(&self, key: &str, now: Timestamp) -> FlapStatus {
        let start = now.minus(self.window);
        let recent = self.history.get(key).map_or(0, |q| q.iter().filter(|t| **t > start && **t <= now).count());
        let recent = u32::try_from(recent).unwrap_or(u32::MAX);
        if recent >= self.limit {
            FlapStatus::Exceeded { recent, limit: self.limit, window: self.window }
        } else {
            FlapStatus::Ok { recent }
        }
    }

    /// Forgets entries that fell out of the window.
    pub fn prune(&mut self, now: Timestamp) {
        let start = now.minus(self.window);
        self.history.retain(|_, q| {
            while q.front().is_some_and(|t| *t <= start) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    /// When the oldest entry of the window for `key` expires, i.e. when it could run again.
    pub fn next_allowed(&self, key: &str, now: Timestamp) -> Option<Timestamp> {
        match self.status(key, now) {
            FlapStatus::Ok { .. } => None,
            FlapStatus::Exceeded { recent, .. } => {
                let q = self.history.get(key)?;
                let start = now.minus(self.window);
                let in_window: Vec<_> = q.iter().filter(|t| **t > start).collect();
                let idx = (recent - self.limit) as usize;
                in_window.get(idx).map(|t| t.plus(self.window))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> Timestamp {
        Timestamp::from_secs(1_000_000 + min * 60)
    }

    #[test]
    fn stops_at_the_limit_and_recovers_after_the_window() {
        let mut g = FlapGuard::new(3, Duration::from_secs(30 * 60));
        let k = "local/restart_unit/nginx.service";
        assert_eq!(g.status(k, t(0)), FlapStatus::Ok { recent: 0 });
        g.record(k, t(0));
        g.record(k, t(5));
        assert_eq!(g.status(k, t(6)), FlapStatus::Ok { recent: 2 });
        g.record(k, t(10));
        assert!(matches!(g.status(k, t(11)), FlapStatus::Exceeded { recent: 3, limit: 3, .. }));
        assert_eq!(g.next_allowed(k, t(11)), Some(t(30)));
        // other targets are independent
        assert_eq!(g.status("local/restart_unit/other.service", t(11)), FlapStatus::Ok { recent: 0 });
        // the first one falls out of the window at 30 min
        assert_eq!(g.status(k, t(30)), FlapStatus::Ok { recent: 2 });
        g.prune(t(41));
        assert_eq!(g.status(k, t(41)), FlapStatus::Ok { recent: 0 });
    }

    #[test]
    fn zero_limit_means_one() {
        let mut g = FlapGuard::new(0, Duration::from_secs(60));
        assert!(matches!(g.status("k", t(0)), FlapStatus::Ok { .. }));
        g.record("k", t(0));
        assert!(matches!(g.status("k", t(0)), FlapStatus::Exceeded { .. }));
    }

    #[test]
    fn out_of_order_history_is_counted() {
        let mut g = FlapGuard::new(2, Duration::from_secs(600));
        g.record("k", t(5));
        g.record("k", t(1));
        assert!(matches!(g.status("k", t(6)), FlapStatus::Exceeded { recent: 2, .. }));
    }
}
