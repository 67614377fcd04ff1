//! The flap guard: the same action on the same target `limit` times within `window` stops Macha
//! from doing it again on its own and escalates to a person.
//!
//! Pure: the daemon records every executed action here and passes `now` in.
//!
//! Time is monotonic ([`Mono`]): the window is measured on a clock that setting the wall clock does
//! not move, so a step backwards cannot disarm the guard (records would look like the future) and
//! a step forwards cannot make fresh records look old. Only the history reloaded from the store on
//! start (so that a restart does not reset the counters) comes with wall timestamps: [`reload`]
//! places each at its wall-clock age before `now` on the monotonic axis, and a record that looks
//! like it is in the future (the wall clock went back across the restart) is placed at `now`. It
//! counts, so the guard stays armed, and it leaves the window one window later, so nothing is
//! blocked forever.
//!
//! [`reload`]: FlapGuard::reload

use crate::{Action, HostName, Mono, Now, Timestamp};
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

/// What [`FlapGuard::reload`] did with stored history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Records within the window, placed at their age before now.
    pub placed: u32,
    /// Records stamped after now (the wall clock went back): placed at now, counted for one window.
    pub clamped: u32,
    /// Records older than the window: left out.
    pub expired: u32,
}

#[derive(Debug, Clone)]
pub struct FlapGuard {
    limit: u32,
    window: Duration,
    history: BTreeMap<String, VecDeque<Mono>>,
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
    pub fn record(&mut self, key: &str, at: Mono) {
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

    /// Records executions read back from the store (`(key, wall time started)`), placed on the
    /// monotonic axis relative to `now`: a record `age` before `now.wall` goes to `now.mono - age`;
    /// one stamped after `now.wall` goes to `now.mono` (clamped); one a window old or older is left
    /// out.
    pub fn reload<K: AsRef<str>>(&mut self, history: impl IntoIterator<Item = (K, Timestamp)>, now: Now) -> Reloaded {
        let mut out = Reloaded::default();
        for (key, started) in history {
            match now.mono_of(started) {
                Ok(at) if now.mono.since(at) >= self.window => out.expired += 1,
                Ok(at) => {
                    self.record(key.as_ref(), at);
                    out.placed += 1;
                }
                Err(at) => {
                    self.record(key.as_ref(), at);
                    out.clamped += 1;
                }
            }
        }
        out
    }

    /// How often `key` ran within the window ending at `now`. Every record after the window's start
    /// counts: on a monotonic axis nothing recorded lies in the future.
    pub fn status(&self, key: &str, now: Mono) -> FlapStatus {
        let start = now.minus(self.window);
        let recent = self.history.get(key).map_or(0, |q| q.iter().filter(|t| **t > start).count());
        let recent = u32::try_from(recent).unwrap_or(u32::MAX);
        if recent >= self.limit {
            FlapStatus::Exceeded { recent, limit: self.limit, window: self.window }
        } else {
            FlapStatus::Ok { recent }
        }
    }

    /// Forgets entries that fell out of the window.
    pub fn prune(&mut self, now: Mono) {
        let start = now.minus(self.window);
        self.history.retain(|_, q| {
            while q.front().is_some_and(|t| *t <= start) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    /// When `key` could run again, in wall time: the monotonic moment the entry that keeps it at the
    /// limit leaves the window, reported at its distance from `now.wall`.
    pub fn next_allowed(&self, key: &str, now: Now) -> Option<Timestamp> {
        match self.status(key, now.mono) {
            FlapStatus::Ok { .. } => None,
            FlapStatus::Exceeded { recent, .. } => {
                let q = self.history.get(key)?;
                let start = now.mono.minus(self.window);
                let in_window: Vec<_> = q.iter().filter(|t| **t > start).collect();
                let idx = (recent - self.limit) as usize;
                in_window.get(idx).map(|t| now.wall_of(t.plus(self.window)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn t(min: i64) -> Mono {
        Mono(min * 60_000)
    }

    /// A simulated machine: both clocks advance together, and the wall clock can be stepped.
    struct Clock {
        now: Now,
    }

    impl Clock {
        fn new() -> Clock {
            Clock { now: Now::new(Timestamp::from_secs(1_800_000_000), Mono(0)) }
        }
        fn advance(&mut self, minutes: u64) {
            self.now = self.now.plus(MIN * minutes as u32);
        }
        /// Sets the wall clock `minutes` later (negative: earlier); the monotonic clock is untouched.
        fn step_wall(&mut self, minutes: i64) {
            self.now.wall = Timestamp(self.now.wall.0 + minutes * 60_000);
        }
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
        let now = Now::new(Timestamp::from_secs(1_000_000), t(11));
        assert_eq!(g.next_allowed(k, now), Some(Timestamp::from_secs(1_000_000 + 19 * 60)));
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

    #[test]
    fn a_wall_clock_step_backwards_keeps_the_guard_armed() {
        let mut c = Clock::new();
        let mut g = FlapGuard::new(3, DEFAULT_WINDOW);
        for _ in 0..3 {
            g.record("k", c.now.mono);
            c.advance(5);
        }
        // Someone sets the clock back two hours: by wall time, all three runs are in the future.
        c.step_wall(-120);
        assert!(matches!(g.status("k", c.now.mono), FlapStatus::Exceeded { recent: 3, .. }));
        // The first run (at monotonic 0) leaves the window 30 min after it, i.e. 15 min from now,
        // and that is what is reported on the stepped wall clock.
        assert_eq!(g.next_allowed("k", c.now), Some(c.now.wall.plus(MIN * 15)));
        c.advance(14);
        assert!(matches!(g.status("k", c.now.mono), FlapStatus::Exceeded { .. }));
        c.advance(1);
        assert_eq!(g.status("k", c.now.mono), FlapStatus::Ok { recent: 2 });
    }

    #[test]
    fn a_wall_clock_step_forwards_neither_disarms_nor_blocks_forever() {
        let mut c = Clock::new();
        let mut g = FlapGuard::new(3, DEFAULT_WINDOW);
        for _ in 0..3 {
            g.record("k", c.now.mono);
            c.advance(1);
        }
        // The clock jumps a day ahead: by wall time the runs are old, but they are three minutes old.
        c.step_wall(24 * 60);
        assert!(matches!(g.status("k", c.now.mono), FlapStatus::Exceeded { .. }));
        assert_eq!(g.next_allowed("k", c.now), Some(c.now.wall.plus(MIN * 27)));
        // One window of monotonic time after the first run, it may run again.
        c.advance(27);
        assert_eq!(g.status("k", c.now.mono), FlapStatus::Ok { recent: 2 });
        g.prune(c.now.mono);
        c.advance(2);
        assert_eq!(g.status("k", c.now.mono), FlapStatus::Ok { recent: 0 });
    }

    #[test]
    fn reload_places_history_by_age() {
        let c = Clock::new();
        let mut g = FlapGuard::new(3, DEFAULT_WINDOW);
        let minutes_ago = |m: u64| c.now.wall.minus(MIN * m as u32);
        let r = g.reload(
            [
                ("old", minutes_ago(45)),
                ("old", minutes_ago(30)),
                ("k", minutes_ago(20)),
                ("k", minutes_ago(10)),
                ("k", minutes_ago(1)),
            ],
            c.now,
        );
        assert_eq!(r, Reloaded { placed: 3, clamped: 0, expired: 2 });
        assert!(matches!(g.status("k", c.now.mono), FlapStatus::Exceeded { recent: 3, .. }));
        assert_eq!(g.status("old", c.now.mono), FlapStatus::Ok { recent: 0 });
        // The run of 20 minutes ago leaves the window in 10 minutes.
        assert_eq!(g.next_allowed("k", c.now), Some(c.now.wall.plus(MIN * 10)));
        assert_eq!(g.status("k", c.now.mono.plus(MIN * 10)), FlapStatus::Ok { recent: 2 });
    }

    #[test]
    fn a_restart_after_the_clock_went_back_keeps_the_guard_armed_for_one_window() {
        // Three runs, then a restart during which the wall clock was set back an hour: every stored
        // record now looks like it is in the future.
        let mut before = Clock::new();
        let mut stored = Vec::new();
        for _ in 0..3 {
            stored.push(("k", before.now.wall));
            before.advance(2);
        }
        let mut c = Clock::new();
        c.now.wall = before.now.wall;
        c.step_wall(-60);
        let mut g = FlapGuard::new(3, DEFAULT_WINDOW);
        let r = g.reload(stored.iter().copied(), c.now);
        assert_eq!(r, Reloaded { placed: 0, clamped: 3, expired: 0 });
        assert!(matches!(g.status("k", c.now.mono), FlapStatus::Exceeded { recent: 3, .. }));
        assert_eq!(g.next_allowed("k", c.now), Some(c.now.wall.plus(DEFAULT_WINDOW)));
        // Nothing is blocked forever: one window later the clamped records are gone.
        c.advance(29);
        assert!(matches!(g.status("k", c.now.mono), FlapStatus::Exceeded { .. }));
        c.advance(1);
        assert_eq!(g.status("k", c.now.mono), FlapStatus::Ok { recent: 0 });
    }
}
