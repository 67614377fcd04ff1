//! Fill-up prediction: how long until a filesystem (space or inodes), the Nix store or /boot is
//! full, from its level AND its trend.
//!
//! Each volume keeps one point per five minutes over a window (default 6 h) and fits a line with
//! the Theil–Sen estimator (the median of the slopes between all pairs of points: a few odd
//! samples do not tilt it). A jump up in free space (a garbage collection, a deleted file) starts
//! the fit afresh instead of alarming. A prediction is a finding only when the free share is
//! below a level (default 40 %) AND the trend reaches zero within a horizon (default 24 h), as
//! node_exporter's fill-up alerts do.

use macha_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// One point per this many seconds is kept.
const BUCKET_SECS: i64 = 300;
/// Points a volume keeps at most, whatever the window.
const POINTS_MAX: usize = 300;
/// Points a fit needs.
const POINTS_MIN: usize = 6;
/// A rise in free space of at least this share of the total restarts the fit.
const JUMP_SHARE: f64 = 0.005;

/// Thresholds of the fill-up check (`fillup.*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FillConfig {
    /// Free share (percent) below which a trend towards zero is a finding (default 40).
    pub free_below_percent: f64,
    /// How soon the trend must reach zero to be a finding (default 24 h).
    pub horizon: Duration,
    /// The window the trend is fitted over (default 6 h).
    pub window: Duration,
    /// The shortest span of points that makes a trend (default 1 h).
    pub min_span: Duration,
    /// System generations older than this many days count as reclaimable (default 14).
    pub old_generation_days: u32,
}

impl Default for FillConfig {
    fn default() -> FillConfig {
        FillConfig {
            free_below_percent: 40.0,
            horizon: Duration::from_secs(24 * 3600),
            window: Duration::from_secs(6 * 3600),
            min_span: Duration::from_secs(3600),
            old_generation_days: 14,
        }
    }
}

impl FillConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.free_below_percent.is_finite() || !(0.0..=100.0).contains(&self.free_below_percent) {
            return Err(format!("fill-up free share {} is not a percentage", self.free_below_percent));
        }
        if self.horizon.is_zero() || self.window.is_zero() {
            return Err("fill-up horizon and window must be positive".into());
        }
        if self.min_span > self.window {
            return Err("fill-up minimum span is longer than the window".into());
        }
        Ok(())
    }
}

/// What the trend says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prediction {
    /// Not enough points over a long enough span yet (also right after a reset).
    Learning,
    /// Free space is not falling.
    Steady { free: f64, free_percent: f64 },
    /// Falling: `eta` until nothing is free at the fitted rate.
    Fills { eta: Duration, free: f64, free_percent: f64, per_hour: f64, span: Duration },
}

/// The recent free amounts of one volume.
#[derive(Debug, Clone, Default)]
pub struct Volume {
    total: f64,
    points: VecDeque<(i64, f64)>,
    resets: u32,
}

impl Volume {
    pub fn new() -> Volume {
        Volume::default()
    }

    /// Fits restarted by a jump up so far.
    pub fn resets(&self) -> u32 {
        self.resets
    }

    /// Records the free amount at `at` out of `total` (bytes or inodes). Values that are not
    /// finite or negative, and samples not after the previous one, are ignored.
    pub fn push(&mut self, at: Timestamp, free: f64, total: f64, window: Duration) {
        if !free.is_finite() || !total.is_finite() || free < 0.0 || total <= 0.0 {
            return;
        }
        let t = at.0.div_euclid(1000);
        if let Some(&(lt, lf)) = self.points.back() {
            if t <= lt {
                return;
            }
            if free - lf >= JUMP_SHARE * total {
                self.points.clear();
                self.resets = self.resets.saturating_add(1);
            } else if t.div_euclid(BUCKET_SECS) == lt.div_euclid(BUCKET_SECS) && self.points.len() > 1 {
                // One point per bucket: the newest stands for it (the first point of a fit stays).
                self.points.pop_back();
            }
        }
        self.total = total;
        self.points.push_back((t, free));
        let horizon = t - i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
        while self.points.front().is_some_and(|p| p.0 < horizon) || self.points.len() > POINTS_MAX {
            self.points.pop_front();
        }
    }

    /// The Theil–Sen slope (free units per second) over the kept points.
    fn slope(&self) -> Option<f64> {
        let p: Vec<(i64, f64)> = self.points.iter().copied().collect();
        let mut slopes = Vec::with_capacity(p.len() * p.len() / 2);
        for (i, a) in p.iter().enumerate() {
            for b in &p[i + 1..] {
                if b.0 > a.0 {
                    slopes.push((b.1 - a.1) / (b.0 - a.0) as f64);
                }
            }
        }
        if slopes.is_empty() {
            return None;
        }
        let mid = slopes.len() / 2;
        let (_, m, _) = slopes.select_nth_unstable_by(mid, f64::total_cmp);
        Some(*m)
    }

    /// The prediction at the newest point.
    pub fn predict(&self, cfg: &FillConfig) -> Prediction {
        let (Some(&(first, _)), Some(&(last, free))) = (self.points.front(), self.points.back()) else {
            return Prediction::Learning;
        };
        let span = Duration::from_secs(u64::try_from(last - first).unwrap_or(0));
        if self.points.len() < POINTS_MIN || span < cfg.min_span {
            return Prediction::Learning;
        }
        let free_percent = 100.0 * free / self.total;
        match self.slope() {
            Some(s) if s < 0.0 => {
                let secs = (free / -s).min(1e12);
                Prediction::Fills {
                    eta: Duration::from_secs_f64(secs),
                    free,
                    free_percent,
                    per_hour: -s * 3600.0,
                    span,
                }
            }
            _ => Prediction::Steady { free, free_percent },
        }
    }

    /// Whether this prediction is a finding: low AND falling fast enough.
    pub fn alarming(p: &Prediction, cfg: &FillConfig) -> bool {
        matches!(p, Prediction::Fills { eta, free_percent, .. }
            if *free_percent < cfg.free_below_percent && *eta <= cfg.horizon)
    }
}

/// `7 h 20 min`, `3 days 4 h`, `45 min`.
pub fn human_duration(d: Duration) -> String {
    let mins = d.as_secs() / 60;
    let (days, hours, m) = (mins / 1440, (mins / 60) % 24, mins % 60);
    if days > 0 {
        format!("{days} day{} {hours} h", if days == 1 { "" } else { "s" })
    } else if hours > 0 {
        format!("{hours} h {m} min")
    } else {
        format!("{m} min")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn a_linear_fill_gives_its_eta() {
        let cfg = FillConfig::default();
        let mut v = Volume::new();
        // 100 GiB, 30 GiB free, losing 2 GiB per hour: 15 h left at the start.
        for i in 0..=180 {
            let free = 30.0 * GIB - 2.0 * GIB * f64::from(i) / 60.0;
            v.push(Timestamp(i64::from(i) * 60_000), free, 100.0 * GIB, cfg.window);
        }
        let p = v.predict(&cfg);
        let Prediction::Fills { eta, per_hour, .. } = p else { panic!("{p:?}") };
        assert!((per_hour / GIB - 2.0).abs() < 0.01, "{per_hour}");
        // 24 GiB left after 3 h: 12 h.
        assert!((eta.as_secs_f64() / 3600.0 - 12.0).abs() < 0.1, "{eta:?}");
        assert!(Volume::alarming(&p, &cfg));
    }

    #[test]
    fn too_little_data_is_learning_and_hostile_values_are_ignored() {
        let cfg = FillConfig::default();
        let mut v = Volume::new();
        for i in 0..5 {
            v.push(Timestamp(i * 60_000), 10.0, 100.0, cfg.window);
            v.push(Timestamp(i * 60_000 + 1), f64::NAN, 100.0, cfg.window);
            v.push(Timestamp(i * 60_000 + 2), -1.0, f64::INFINITY, cfg.window);
        }
        assert_eq!(v.predict(&cfg), Prediction::Learning);
        assert_eq!(human_duration(Duration::from_secs(7 * 3600 + 20 * 60)), "7 h 20 min");
        assert_eq!(human_duration(Duration::from_secs(86_400 + 3600)), "1 day 1 h");
    }
}
