//! Time as data, supplied by the caller: wall time ([`Timestamp`], milliseconds since the Unix
//! epoch) for records and people, monotonic time ([`Mono`]) for intervals that must not move when
//! the wall clock is stepped, and [`Now`], one reading of both.

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since the Unix epoch (UTC). The core never reads a clock; the
/// daemon passes `now` into every time-dependent function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }
    pub const fn from_secs(s: i64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
    /// `self - d`, saturating.
    pub fn minus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
    /// Milliseconds elapsed from `earlier` to `self` (0 if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// A point on a monotonic axis: milliseconds since an arbitrary origin the daemon fixes once per
/// process (it reads `std::time::Instant` at its edge). Setting the wall clock, NTP steps and
/// suspend do not move it backwards. Only distances mean anything; points before the origin (history
/// from before the start) are negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mono(pub i64);

impl Mono {
    pub const fn from_millis(ms: i64) -> Self {
        Mono(ms)
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// `self + d`, saturating.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Mono(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
    /// `self - d`, saturating.
    pub fn minus(self, d: std::time::Duration) -> Self {
        Mono(self.0.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
    /// Milliseconds elapsed from `earlier` to `self` (0 if `earlier` is later).
    pub fn since(self, earlier: Mono) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// One reading of both clocks, taken together: the wall time to record and show, the monotonic
/// time to measure intervals with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall: Timestamp,
    pub mono: Mono,
}

impl Now {
    pub const fn new(wall: Timestamp, mono: Mono) -> Self {
        Now { wall, mono }
    }

    /// Both clocks `d` later (as time passes when nobody touches the wall clock).
    pub fn plus(self, d: std::time::Duration) -> Self {
        Now { wall: self.wall.plus(d), mono: self.mono.plus(d) }
    }

    /// Where a wall time falls on the monotonic axis, measured back from this reading. A wall time
    /// after this reading's (the wall clock was stepped back since it was written) is `Err(now)`:
    /// the caller decides what "in the future" means for it.
    pub fn mono_of(self, wall: Timestamp) -> Result<Mono, Mono> {
        if wall > self.wall { Err(self.mono) } else { Ok(self.mono.minus(self.wall.since(wall))) }
    }

    /// The wall time of a monotonic point, by its distance from this reading (for reports: the
    /// distance is what counts, whatever the wall clock did before).
    pub fn wall_of(self, mono: Mono) -> Timestamp {
        Timestamp(self.wall.0.saturating_add(mono.0.saturating_sub(self.mono.0)))
    }
}

impl std::fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision, computed without a clock or a time-zone database.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(1_795_000_000_123).to_string(), "2026-11-18T11:06:40.123Z");
        assert_eq!(Timestamp(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp(i64::MAX - 1);
        assert_eq!(t.plus(std::time::Duration::from_secs(10)), Timestamp(i64::MAX));
        assert_eq!(Timestamp(5).since(Timestamp(10)), std::time::Duration::ZERO);
        assert_eq!(Mono(i64::MIN + 1).minus(std::time::Duration::from_secs(10)), Mono(i64::MIN));
        assert_eq!(Mono(5).since(Mono(10)), std::time::Duration::ZERO);
    }

    #[test]
    fn wall_and_monotonic_points_convert_by_distance() {
        let now = Now::new(Timestamp(1_000_000), Mono(500));
        assert_eq!(now.mono_of(Timestamp(990_000)), Ok(Mono(-9_500)));
        assert_eq!(now.mono_of(Timestamp(1_000_000)), Ok(Mono(500)));
        assert_eq!(now.mono_of(Timestamp(1_000_001)), Err(Mono(500)));
        assert_eq!(now.wall_of(Mono(2_500)), Timestamp(1_002_000));
        assert_eq!(now.wall_of(Mono(-9_500)), Timestamp(990_000));
        let later = now.plus(std::time::Duration::from_secs(2));
        assert_eq!((later.wall, later.mono), (Timestamp(1_002_000), Mono(2_500)));
    }
}
