//! Anomaly detection that explains itself: a streaming detector per host and metric
//! ([`Series`]), sans-IO and deterministic (the same samples in the same order give the same
//! scores, so every verdict can be reproduced from the stored history or a CSV file).
//!
//! Each sample is compared with three baselines:
//! - **seasonal**: the level usual at this hour of the week (168 slots), or at this hour of the day
//!   (24 slots) until the weekly slot has seen enough samples, or the overall level of roughly the
//!   last day before that, each with its own spread;
//! - **residual**: the same deviation from the seasonal level, measured against how far samples
//!   have strayed from their seasonal level over the last half day or so (all slots together: a
//!   slot whose spread is too small cannot raise an anomaly alone);
//! - **short**: the change from the previous sample against the recent changes (a robust z-score
//!   of differenced values over the last 32 samples: median and MAD).
//!
//! Baselines are Huber-clipped, exponentially weighted means and spreads: a sample further than
//! three spreads from the level moves it only as much as one at three spreads would, so outliers
//! have a bounded pull, and old behaviour decays away. Anomalous points do not move the levels at
//! all; they widen the residual spread (bounded by the clipping), so a lasting change stops being
//! anomalous after a while (about an hour for a shift of eight spreads) and becomes the new usual. A point counts as anomalous
//! only when the seasonal baseline and at least one other agree (same direction, both at least
//! the threshold); its score is `z² / (z² + k²)` of the agreed deviation `z` with `k` the
//! threshold, so 0.5 exactly at the threshold. A finding needs persistence: an [`Episode`] that has
//! lasted [`DetectConfig::persist`] with most of its recent points anomalous.
//!
//! Time slots are in UTC.

use crate::key::{Direction, Unit};
use macha_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Clipping of residuals, in spreads.
const HUBER_C: f64 = 3.0;
/// Samples a slot needs before it serves as the baseline.
const SLOT_MIN: u8 = 30;
/// Samples before clipping starts (the first ones set the spread).
const CLIP_AFTER: u32 = 10;
/// Decay: the overall level forgets with a time constant of about a day of 60 s samples; an
/// hour-of-day slot of about two days' visits; an hour-of-week slot of about three weeks'.
const ALPHA_GLOBAL: f64 = 1.0 / 1440.0;
const ALPHA_DAILY: f64 = 1.0 / 120.0;
const ALPHA_WEEKLY: f64 = 1.0 / 180.0;
/// The spread of deviations from the seasonal level forgets with a time constant of about 12 h.
const ALPHA_RESID: f64 = 1.0 / 720.0;
/// Differences kept for the short baseline.
const DIFFS: usize = 32;
/// Differences needed before the short baseline votes.
const DIFFS_MIN: usize = 8;
/// Points looked back on for persistence.
const RECENT: u32 = 10;

/// How the detector judges. All fields have documented defaults (`anomaly.*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetectConfig {
    /// Deviation, in spreads, at which baselines count as agreeing on an anomaly (default 3.5).
    pub z_threshold: f64,
    /// How long an anomaly must last before it is a finding (default 15 min).
    pub persist: Duration,
    /// Samples a series needs before any point can be anomalous (default 60).
    pub warmup: u32,
    /// A gap between samples longer than this restarts the short baseline (default 10 min).
    pub gap: Duration,
    /// Share of a host's metrics anomalous at once that makes the host anomalous (default 0.25).
    pub host_rate: f64,
}

impl Default for DetectConfig {
    fn default() -> DetectConfig {
        DetectConfig {
            z_threshold: 3.5,
            persist: Duration::from_secs(15 * 60),
            warmup: 60,
            gap: Duration::from_secs(10 * 60),
            host_rate: 0.25,
        }
    }
}

impl DetectConfig {
    /// Rejects settings that would make the detector meaningless.
    pub fn validate(&self) -> Result<(), String> {
        if !self.z_threshold.is_finite() || self.z_threshold < 1.0 {
            return Err(format!("anomaly z threshold {} must be at least 1", self.z_threshold));
        }
        if !self.host_rate.is_finite() || !(0.0..=1.0).contains(&self.host_rate) || self.host_rate == 0.0 {
            return Err(format!("anomaly host rate {} must be in (0, 1]", self.host_rate));
        }
        if self.gap.is_zero() {
            return Err("anomaly gap must be positive".into());
        }
        Ok(())
    }
}

/// Which baseline a point was compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Baseline {
    /// Not enough samples yet: nothing is judged.
    Warmup,
    /// The overall level.
    Overall,
    /// The usual level at this hour of the day (0-23, UTC).
    Daily { hour: u8 },
    /// The usual level at this hour of the week (0 = Monday 00:00 UTC).
    Weekly { slot: u8 },
}

const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

impl Baseline {
    /// `usual Tuesday 10:00 level`, `usual 10:00 level`, `recent level`.
    pub fn describe(self) -> String {
        match self {
            Baseline::Warmup => "level (still learning)".into(),
            Baseline::Overall => "recent level".into(),
            Baseline::Daily { hour } => format!("usual {hour:02}:00 level"),
            Baseline::Weekly { slot } => {
                let day = DAYS.get(usize::from(slot / 24)).copied().unwrap_or("?");
                format!("usual {day} {:02}:00 level", slot % 24)
            }
        }
    }
}

/// The verdict on one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// 0-1; 0.5 at the threshold.
    pub score: f64,
    pub flagged: bool,
    /// Signed deviation from the seasonal baseline, in spreads.
    pub z: f64,
    /// The seasonal baseline's level.
    pub expected: f64,
    pub baseline: Baseline,
    /// The sample was not judged (not finite, out of range, or not after the previous one).
    pub skipped: bool,
}

impl Point {
    fn skipped() -> Point {
        Point { score: 0.0, flagged: false, z: 0.0, expected: 0.0, baseline: Baseline::Warmup, skipped: true }
    }
}

/// An anomaly in progress.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub since: Timestamp,
    /// The latest anomalous point's deviation, value, expected level and baseline.
    pub z: f64,
    pub value: f64,
    pub expected: f64,
    pub baseline: Baseline,
    /// The largest deviation seen in the episode, in spreads.
    pub peak: f64,
}

/// Persistence over the last points: when an episode starts, continues and ends.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Persistence {
    bits: u32,
    since: Option<Timestamp>,
    /// The episode has been a finding: it stays one until it ends, so an issue does not flap
    /// while the share of anomalous points wavers between the two limits.
    reported: bool,
}

impl Persistence {
    /// Records one point; returns whether an episode is in progress afterwards. An episode
    /// becomes a finding once it has lasted `persist` with at least 6 of the last 10 points
    /// anomalous.
    pub fn push(&mut self, at: Timestamp, flagged: bool, persist: Duration) -> bool {
        self.bits = (self.bits << 1) | u32::from(flagged);
        let share = self.share();
        match self.since {
            None if flagged => {
                self.since = Some(at);
                self.reported = false;
            }
            // Hysteresis: an episode ends only when fewer than 3 of the last 10 points were
            // anomalous, so a noisy anomaly is one episode, not many.
            Some(_) if share < 0.3 => {
                self.since = None;
                self.reported = false;
            }
            _ => {}
        }
        if let Some(s) = self.since
            && at.since(s) >= persist
            && share >= 0.6
        {
            self.reported = true;
        }
        self.since.is_some()
    }

    /// The share of the last [`RECENT`] points that were anomalous.
    pub fn share(&self) -> f64 {
        f64::from((self.bits & ((1 << RECENT) - 1)).count_ones()) / f64::from(RECENT)
    }

    /// The episode's start if it is a finding: it has lasted `persist` by `now` and most recent
    /// points agreed at some moment since (see [`Persistence::push`]).
    pub fn persisting(&self, now: Timestamp, persist: Duration) -> Option<Timestamp> {
        self.since.filter(|s| self.reported && now.since(*s) >= persist)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Est {
    m: f64,
    s: f64,
    n: u32,
}

impl Est {
    fn update(&mut self, x: f64, alpha_min: f64, floor: f64) {
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.m = x;
            self.s = 0.0;
            return;
        }
        let a = (1.0 / f64::from(self.n)).max(alpha_min);
        let r = x - self.m;
        let r = if self.n > CLIP_AFTER {
            let lim = HUBER_C * self.s.max(floor);
            r.clamp(-lim, lim)
        } else {
            r
        };
        self.m += a * r;
        self.s = ((1.0 - a) * self.s * self.s + a * r * r).sqrt();
    }
}

/// Slots stored compactly (`f32` levels and spreads, `u8` counts): a series costs about 2 KiB.
#[derive(Debug, Clone)]
struct Slots<const N: usize> {
    m: [f32; N],
    s: [f32; N],
    n: [u8; N],
}

impl<const N: usize> Slots<N> {
    fn new() -> Self {
        Slots { m: [0.0; N], s: [0.0; N], n: [0; N] }
    }
    fn get(&self, i: usize) -> Est {
        Est { m: f64::from(self.m[i]), s: f64::from(self.s[i]), n: u32::from(self.n[i]) }
    }
    fn update(&mut self, i: usize, x: f64, alpha_min: f64, floor: f64) {
        let mut e = self.get(i);
        e.update(x, alpha_min, floor);
        self.m[i] = e.m as f32;
        self.s[i] = e.s as f32;
        self.n[i] = u8::try_from(e.n).unwrap_or(u8::MAX);
    }
}

/// Hour of the day and hour of the week (Monday 00:00 = 0) of a timestamp, in UTC.
pub fn slots_of(at: Timestamp) -> (usize, usize) {
    let secs = at.0.div_euclid(1000);
    let hour = secs.div_euclid(3600).rem_euclid(24);
    // 1970-01-01 was a Thursday (day 3 of a week starting on Monday).
    let weekday = (secs.div_euclid(86_400) + 3).rem_euclid(7);
    (usize::try_from(hour).unwrap_or(0), usize::try_from(weekday * 24 + hour).unwrap_or(0))
}

/// The detector of one metric of one host.
#[derive(Debug, Clone)]
pub struct Series {
    unit: Unit,
    direction: Direction,
    global: Est,
    resid: Est,
    daily: Slots<24>,
    weekly: Box<Slots<168>>,
    diffs: [f32; DIFFS],
    diffs_len: u8,
    diffs_pos: u8,
    last: Option<(i64, f64)>,
    /// The first sample's time: a daily slot serves only once the series is a day old, a weekly
    /// one once it is a week old (before that a slot knows only the current hour).
    first: Option<i64>,
    persistence: Persistence,
    episode: Option<Episode>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Series {
    pub fn new(unit: Unit) -> Series {
        Series::with_direction(unit, Direction::Both)
    }

    /// A detector that flags only moves in `direction` (free space rising is never a finding).
    pub fn with_direction(unit: Unit, direction: Direction) -> Series {
        Series {
            unit,
            direction,
            global: Est::default(),
            resid: Est::default(),
            daily: Slots::new(),
            weekly: Box::new(Slots::new()),
            diffs: [0.0; DIFFS],
            diffs_len: 0,
            diffs_pos: 0,
            last: None,
            first: None,
            persistence: Persistence::default(),
            episode: None,
        }
    }

    /// Bytes this detector holds (for the benchmarks' memory figure).
    pub fn heap_bytes() -> usize {
        std::mem::size_of::<Slots<168>>()
    }

    fn floor(&self, level: f64) -> f64 {
        let rel = if self.unit == Unit::Plain { 0.001 } else { 0.01 };
        self.unit.floor().max(rel * level.abs())
    }

    /// When the last sample was taken.
    pub fn last_at(&self) -> Option<Timestamp> {
        self.last.map(|(t, _)| Timestamp(t))
    }

    /// Samples judged so far.
    pub fn samples(&self) -> u32 {
        self.global.n
    }

    /// The anomaly in progress, if any.
    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }

    /// The episode, if it has persisted long enough to be a finding at `now`.
    pub fn persisting(&self, now: Timestamp, persist: Duration) -> Option<&Episode> {
        self.persistence.persisting(now, persist).and(self.episode.as_ref())
    }

    fn short_z(&self, d: f64, floor: f64) -> f64 {
        let n = usize::from(self.diffs_len);
        if n < DIFFS_MIN {
            return 0.0;
        }
        let mut v: Vec<f64> = self.diffs[..n].iter().map(|x| f64::from(*x)).collect();
        let med = median(&mut v);
        for x in &mut v {
            *x = (*x - med).abs();
        }
        let mad = median(&mut v) * 1.4826;
        (d - med) / mad.max(floor)
    }

    /// Judges one sample and learns from it. Samples must come in time order: one not after the
    /// previous is skipped, as is one that is not finite or beyond `f32`'s range (values are
    /// judged at `f32` precision, as they are stored).
    pub fn observe(&mut self, at: Timestamp, x: f64, cfg: &DetectConfig) -> Point {
        if !x.is_finite() || x.abs() > f64::from(f32::MAX) {
            return Point::skipped();
        }
        let x = f64::from(x as f32);
        let t = at.0;
        let gap_ms = i64::try_from(cfg.gap.as_millis()).unwrap_or(i64::MAX);
        let d = match self.last {
            Some((lt, _)) if t <= lt => return Point::skipped(),
            Some((lt, lx)) if t - lt <= gap_ms => Some(x - lx),
            _ => {
                self.diffs_len = 0;
                self.diffs_pos = 0;
                None
            }
        };
        let (hour, slot) = slots_of(at);
        let floor = self.floor(self.global.m);
        let k = cfg.z_threshold;

        let weekly = self.weekly.get(slot);
        let daily = self.daily.get(hour);
        let age = t - *self.first.get_or_insert(t);
        let (base, baseline) = if weekly.n >= u32::from(SLOT_MIN) && age >= 7 * 86_400_000 {
            (weekly, Baseline::Weekly { slot: u8::try_from(slot).unwrap_or(0) })
        } else if daily.n >= u32::from(SLOT_MIN) && age >= 86_400_000 {
            (daily, Baseline::Daily { hour: u8::try_from(hour).unwrap_or(0) })
        } else {
            (self.global, Baseline::Overall)
        };
        let warm = self.global.n >= cfg.warmup;
        let zs = (x - base.m) / base.s.max(floor);
        let mut point = Point {
            score: 0.0,
            flagged: false,
            z: if warm { zs } else { 0.0 },
            expected: base.m,
            baseline: if warm { baseline } else { Baseline::Warmup },
            skipped: false,
        };
        let matters = match self.direction {
            Direction::Both => true,
            Direction::Up => zs > 0.0,
            Direction::Down => zs < 0.0,
        };
        if warm && matters {
            let same = |z: f64| if z.signum() == zs.signum() { z.abs() } else { 0.0 };
            let zg = same((x - base.m - self.resid.m) / self.resid.s.max(floor));
            // The short baseline (two small sorts) is asked only when it can change the verdict.
            let other =
                if zg >= k || zs.abs() < 1.0 { zg } else { zg.max(d.map_or(0.0, |d| same(self.short_z(d, floor)))) };
            let eff = zs.abs().min(other);
            point.score = eff * eff / (eff * eff + k * k);
            point.flagged = eff >= k;
        }

        // Learn. The levels do not learn from anomalous points (an anomaly must not become the
        // usual level within its own hour); the residual spread always does, with clipping, so a
        // lasting change stops counting as anomalous after a while and the levels then follow it.
        self.resid.update(x - base.m, ALPHA_RESID, floor);
        if !point.flagged {
            self.global.update(x, ALPHA_GLOBAL, floor);
            self.daily.update(hour, x, ALPHA_DAILY, floor);
            self.weekly.update(slot, x, ALPHA_WEEKLY, floor);
        }
        if let Some(d) = d {
            self.diffs[usize::from(self.diffs_pos)] = d as f32;
            self.diffs_pos = u8::try_from((usize::from(self.diffs_pos) + 1) % DIFFS).unwrap_or(0);
            self.diffs_len = self.diffs_len.saturating_add(1).min(u8::try_from(DIFFS).unwrap_or(u8::MAX));
        }
        self.last = Some((t, x));

        let ongoing = self.persistence.push(at, point.flagged, cfg.persist);
        if !ongoing {
            self.episode = None;
        } else if point.flagged {
            let e = self.episode.get_or_insert(Episode {
                since: at,
                z: point.z,
                value: x,
                expected: point.expected,
                baseline: point.baseline,
                peak: 0.0,
            });
            e.z = point.z;
            e.value = x;
            e.expected = point.expected;
            e.baseline = point.baseline;
            e.peak = e.peak.max(point.z.abs());
        }
        point
    }
}

/// A whole series judged from the start: what `macha anomaly replay` prints and what the
/// synthetic tests measure.
pub fn replay(samples: &[(Timestamp, f64)], unit: Unit, cfg: &DetectConfig) -> Vec<Point> {
    let mut s = Series::new(unit);
    samples.iter().map(|(t, x)| s.observe(*t, *x, cfg)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn slots_are_utc_hours_of_the_week_from_monday() {
        // 2026-12-01 was a Tuesday; 10:00 UTC is slot 24 + 10.
        let tue_10 = Timestamp(1_796_119_200_000);
        assert_eq!(tue_10.to_string(), "2026-12-01T10:00:00.000Z");
        assert_eq!(slots_of(tue_10), (10, 34));
        assert_eq!(Baseline::Weekly { slot: 34 }.describe(), "usual Tuesday 10:00 level");
        assert_eq!(slots_of(Timestamp(0)), (0, 72));
    }

    #[test]
    fn persistence_has_hysteresis() {
        let quarter = Duration::from_secs(15 * 60);
        let mut p = Persistence::default();
        let at = |i: i64| Timestamp(i * 60_000);
        assert!(p.push(at(0), true, quarter));
        // One anomalous point among quiet ones ends at once.
        assert!(!p.push(at(1), false, quarter));
        let mut p = Persistence::default();
        for i in 0..20 {
            p.push(at(i), i % 3 != 0, quarter);
        }
        assert!(p.persisting(at(19), quarter).is_some());
        assert!(p.persisting(at(19), Duration::from_secs(30 * 60)).is_none());
        // Once a finding, it stays one while the episode lasts, even at 4 of 10.
        for i in 20..40 {
            p.push(at(i), i % 5 < 2, quarter);
            assert!(p.persisting(at(i), quarter).is_some(), "at {i}: {}", p.share());
        }
        // It ends below 3 of 10, and a new episode must persist again.
        for i in 40..50 {
            p.push(at(i), false, quarter);
        }
        assert!(p.persisting(at(49), quarter).is_none());
        p.push(at(50), true, quarter);
        assert!(p.persisting(at(50), Duration::ZERO).is_none());
    }

    #[test]
    fn hostile_values_never_panic_and_are_skipped() {
        let cfg = DetectConfig::default();
        let mut s = Series::new(Unit::Plain);
        for (i, x) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300, f64::MAX, 3e38, -3e38, 0.0, 1e-300]
            .into_iter()
            .cycle()
            .take(500)
            .enumerate()
        {
            let p = s.observe(Timestamp(i as i64 * 60_000), x, &cfg);
            assert!(p.score.is_finite() && (0.0..=1.0).contains(&p.score), "{p:?} for {x}");
            if !x.is_finite() || x.abs() > 1e39 {
                assert!(p.skipped);
            }
        }
        // Out of order and duplicate timestamps are skipped.
        assert!(s.observe(Timestamp(0), 1.0, &cfg).skipped);
    }
}
