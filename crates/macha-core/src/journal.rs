//! The journal error window: error-level journal entries of the recent past, per unit, as a
//! [`JournalSummary`], plus the one sanitiser for journal text that is shown to people or to the
//! model.
//!
//! Pure: the daemon feeds every error entry it reads into an [`ErrorWindow`] and asks for a summary
//! at `now`. Nothing here reads a clock.
//!
//! Memory is bounded whatever the log rate: counts are kept per unit in time buckets (a fixed
//! number per window), the number of distinct units is capped (the rest are counted under
//! [`OTHER_UNITS`]), and only a few samples are kept. A flood of a million errors costs the same
//! memory as a hundred.
//!
//! Data is not instructions: journal text is written by whatever runs on the host, so it is
//! sanitised ([`sanitize`]) before it goes anywhere: no terminal escapes, no control characters, no
//! bidirectional overrides, bounded length.

use crate::Timestamp;
use crate::snapshot::{JournalSummary, UnitErrorCount};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The key entries without a unit are counted under.
pub const NO_UNIT: &str = "(no unit)";
/// The key entries of units beyond [`WindowLimits::max_units`] are counted under.
pub const OTHER_UNITS: &str = "(other units)";

/// How many buckets one window is split into: counts are exact up to one bucket (1/60 of the
/// window) at the window's old edge.
const BUCKETS_PER_WINDOW: u64 = 60;

/// Memory bounds of an [`ErrorWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// Distinct units tracked; errors of further units are counted under [`OTHER_UNITS`].
    pub max_units: usize,
    /// Samples kept (the most recent ones).
    pub max_samples: usize,
    /// Longest sample text, in characters, after sanitising.
    pub sample_chars: usize,
    /// Most units listed in a summary's `by_unit` (largest first).
    pub max_by_unit: usize,
}

impl WindowLimits {
    pub const DEFAULT: WindowLimits =
        WindowLimits { max_units: 256, max_samples: 5, sample_chars: 200, max_by_unit: 20 };
}

impl Default for WindowLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sample {
    at: Timestamp,
    unit: String,
    text: String,
}

/// A sliding window of error-level journal entries.
#[derive(Debug, Clone)]
pub struct ErrorWindow {
    window: Duration,
    bucket_ms: i64,
    limits: WindowLimits,
    /// Per unit: `(bucket start in ms, count)`, oldest first, at most `BUCKETS_PER_WINDOW + 2`.
    units: BTreeMap<String, VecDeque<(i64, u32)>>,
    samples: VecDeque<Sample>,
}

impl ErrorWindow {
    /// A window of `window` (at least one second) with the default limits.
    pub fn new(window: Duration) -> ErrorWindow {
        Self::with_limits(window, WindowLimits::DEFAULT)
    }

    pub fn with_limits(window: Duration, limits: WindowLimits) -> ErrorWindow {
        let window = window.max(Duration::from_secs(1));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let bucket_ms = i64::try_from((window_ms / BUCKETS_PER_WINDOW).max(1)).unwrap_or(i64::MAX);
        ErrorWindow { window, bucket_ms, limits, units: BTreeMap::new(), samples: VecDeque::new() }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records one error entry of `unit` (`None`: an entry without a unit) that happened at `at`.
    /// `message` is sanitised here; pass the raw text.
    pub fn record(&mut self, unit: Option<&str>, at: Timestamp, message: &str) {
        let key = match unit {
            Some(u) if !u.is_empty() => sanitize(u, 128),
            _ => NO_UNIT.to_owned(),
        };
        let key = if self.units.contains_key(&key) || self.units.len() < self.limits.max_units {
            key
        } else {
            // Make room from units whose errors all fell out of the window before lumping.
            self.prune(at);
            if self.units.len() < self.limits.max_units { key } else { OTHER_UNITS.to_owned() }
        };
        let bucket = at.millis().div_euclid(self.bucket_ms).saturating_mul(self.bucket_ms);
        let buckets = self.units.entry(key.clone()).or_default();
        match buckets.iter().rposition(|(start, _)| *start <= bucket) {
            Some(i) if buckets[i].0 == bucket => buckets[i].1 = buckets[i].1.saturating_add(1),
            Some(i) => buckets.insert(i + 1, (bucket, 1)),
            None => buckets.push_front((bucket, 1)),
        }
        // Bounded: a window spans at most BUCKETS_PER_WINDOW + 1 buckets; older ones cannot count.
        while buckets.len() as u64 > BUCKETS_PER_WINDOW + 2 {
            buckets.pop_front();
        }

        if self.limits.max_samples > 0 {
            let text = sanitize(message, self.limits.sample_chars);
            // A unit repeating the same line is one sample, refreshed.
            if let Some(pos) = self.samples.iter().position(|s| s.unit == key && s.text == text) {
                self.samples.remove(pos);
            }
            let pos = self.samples.iter().rposition(|s| s.at <= at).map_or(0, |i| i + 1);
            self.samples.insert(pos, Sample { at, unit: key, text });
            while self.samples.len() > self.limits.max_samples {
                self.samples.pop_front();
            }
        }
    }

    /// Forgets everything that can no longer be inside the window ending at `now`.
    pub fn prune(&mut self, now: Timestamp) {
        let edge = self.edge(now);
        self.units.retain(|_, buckets| {
            while buckets.front().is_some_and(|(start, _)| start + self.bucket_ms <= edge) {
                buckets.pop_front();
            }
            !buckets.is_empty()
        });
        self.samples.retain(|s| s.at.millis() > edge);
    }

    /// The summary of the window ending at `now`: a bucket counts while any part of it is inside
    /// the window, so an entry is counted for at most one bucket (1/60 of the window) longer than
    /// the window, never shorter.
    pub fn summary(&self, now: Timestamp) -> JournalSummary {
        let edge = self.edge(now);
        let mut by_unit: Vec<UnitErrorCount> = self
            .units
            .iter()
            .filter_map(|(unit, buckets)| {
                let n: u64 =
                    buckets.iter().filter(|(start, _)| start + self.bucket_ms > edge).map(|(_, c)| u64::from(*c)).sum();
                (n > 0).then(|| UnitErrorCount { unit: unit.clone(), errors: u32::try_from(n).unwrap_or(u32::MAX) })
            })
            .collect();
        let total = by_unit.iter().fold(0u32, |acc, u| acc.saturating_add(u.errors));
        by_unit.sort_by(|a, b| b.errors.cmp(&a.errors).then_with(|| a.unit.cmp(&b.unit)));
        by_unit.truncate(self.limits.max_by_unit);
        let samples = self
            .samples
            .iter()
            .rev()
            .filter(|s| s.at.millis() > edge)
            .map(|s| format!("{}: {}", s.unit, s.text))
            .collect();
        JournalSummary { window_secs: self.window.as_secs(), errors_total: total, by_unit, samples }
    }

    /// The old edge of the window ending at `now`, in ms.
    fn edge(&self, now: Timestamp) -> i64 {
        now.minus(self.window).millis()
    }
}

/// Makes untrusted journal text safe to show: removes ANSI/VT escape sequences (CSI, OSC, and
/// two-byte escapes), turns newlines and tabs into spaces, drops other control characters
/// (C0, DEL, C1) and Unicode bidirectional overrides and isolates, and cuts the result to
/// `max_chars` characters (ending in `…` when cut). The result is trimmed.
pub fn sanitize(raw: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max_chars.saturating_mul(4)));
    let mut chars = raw.chars().peekable();
    let mut count = 0usize;
    let mut cut = false;
    while let Some(c) = chars.next() {
        let mapped = match c {
            '\u{1b}' => {
                skip_escape(&mut chars);
                continue;
            }
            // A C1 CSI/OSC introducer behaves like ESC [ / ESC ].
            '\u{9b}' => {
                skip_csi(&mut chars);
                continue;
            }
            '\u{9d}' => {
                skip_osc(&mut chars);
                continue;
            }
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => continue,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}' => continue,
            c => c,
        };
        // Collapse runs of spaces produced by line breaks.
        if mapped == ' ' && out.ends_with(' ') {
            continue;
        }
        if count == max_chars {
            cut = true;
            break;
        }
        out.push(mapped);
        count += 1;
    }
    let trimmed_len = out.trim_end().len();
    out.truncate(trimmed_len);
    if cut {
        out.push('…');
    }
    match out.find(|c: char| c != ' ') {
        Some(0) | None => out,
        Some(i) => out[i..].to_owned(),
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After an ESC: skips the rest of the sequence.
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        Some(']' | 'P' | 'X' | '^' | '_') => {
            chars.next();
            skip_osc(chars);
        }
        // Intermediate bytes, then one final byte (e.g. `ESC ( B`, `ESC 7`).
        Some(_) => {
            while chars.next_if(|c| ('\u{20}'..='\u{2f}').contains(c)).is_some() {}
            chars.next_if(|c| ('\u{30}'..='\u{7e}').contains(c));
        }
        None => {}
    }
}

/// Skips CSI parameters and intermediates up to and including the final byte.
fn skip_csi(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) || !('\u{20}'..='\u{3f}').contains(&c) {
            break;
        }
    }
}

/// Skips an OSC/DCS string up to BEL, ST (`ESC \`) or the C1 ST.
fn skip_osc(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => break,
            '\u{1b}' => {
                chars.next_if_eq(&'\\');
                break;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_800_000_000);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(T0.millis() + secs * 1000)
    }

    fn counts(s: &JournalSummary) -> Vec<(&str, u32)> {
        s.by_unit.iter().map(|u| (u.unit.as_str(), u.errors)).collect()
    }

    #[test]
    fn counts_per_unit_largest_first() {
        let mut w = ErrorWindow::new(Duration::from_secs(600));
        for i in 0..3 {
            w.record(Some("nginx.service"), at(i), "upstream timed out");
        }
        w.record(Some("postgresql.service"), at(5), "FATAL: too many connections");
        w.record(None, at(6), "kernel: oops");
        for i in 0..5 {
            w.record(Some("backup.service"), at(10 + i), &format!("disk full {i}"));
        }
        let s = w.summary(at(20));
        assert_eq!(s.window_secs, 600);
        assert_eq!(s.errors_total, 10);
        assert_eq!(counts(&s), [("backup.service", 5), ("nginx.service", 3), (NO_UNIT, 1), ("postgresql.service", 1)]);
        // Most recent first; the repeated nginx line is one sample.
        assert_eq!(s.samples.first().map(String::as_str), Some("backup.service: disk full 4"));
        assert_eq!(s.samples.len(), WindowLimits::DEFAULT.max_samples);
        assert!(!s.samples.iter().any(|x| x.starts_with("nginx")), "{:?}", s.samples);
    }

    #[test]
    fn entries_leave_the_window() {
        let mut w = ErrorWindow::new(Duration::from_secs(60));
        w.record(Some("a.service"), at(0), "old");
        w.record(Some("b.service"), at(50), "new");
        assert_eq!(w.summary(at(55)).errors_total, 2);
        // The bucket of `old` is [0 s, 1 s): counted until the window's edge passes its end.
        assert_eq!(w.summary(at(60)).errors_total, 2);
        let s = w.summary(at(61));
        assert_eq!(counts(&s), [("b.service", 1)]);
        assert_eq!(s.samples, ["b.service: new"]);
        assert_eq!(w.summary(at(200)).errors_total, 0);
        assert!(w.summary(at(200)).samples.is_empty());
        w.prune(at(200));
        assert!(w.units.is_empty() && w.samples.is_empty());
    }

    #[test]
    fn out_of_order_entries_count() {
        let mut w = ErrorWindow::new(Duration::from_secs(60));
        w.record(Some("a"), at(30), "x");
        w.record(Some("a"), at(10), "y");
        w.record(Some("a"), at(20), "z");
        w.record(Some("a"), at(10), "y2");
        assert_eq!(w.units.get("a").map(|b| b.iter().map(|(_, c)| *c).collect::<Vec<_>>()), Some(vec![2, 1, 1]));
        assert_eq!(w.summary(at(40)).errors_total, 4);
        assert_eq!(w.summary(at(75)).errors_total, 2);
    }

    #[test]
    fn memory_is_bounded_under_a_flood() {
        let limits = WindowLimits { max_units: 8, ..WindowLimits::DEFAULT };
        let mut w = ErrorWindow::with_limits(Duration::from_secs(3600), limits);
        for i in 0..200_000i64 {
            let unit = format!("u{}.service", i % 50);
            w.record(Some(&unit), Timestamp::from_millis(T0.millis() + i * 37), "flood");
        }
        assert!(w.units.len() <= 8 + 1, "{}", w.units.len());
        assert!(w.units.values().all(|b| b.len() as u64 <= BUCKETS_PER_WINDOW + 2));
        assert!(w.samples.len() <= limits.max_samples);
        let now = Timestamp::from_millis(T0.millis() + 200_000 * 37);
        let s = w.summary(now);
        assert!(s.by_unit.iter().any(|u| u.unit == OTHER_UNITS));
        // Everything within the last hour is still counted, lumped or not.
        let in_window = (0..200_000i64).filter(|i| T0.millis() + i * 37 > now.millis() - 3_600_000).count();
        let total = u64::from(s.errors_total);
        assert!(
            total >= in_window as u64 && total <= in_window as u64 + 3_600_000 / 60 / 37 + 1,
            "{total} vs {in_window}"
        );
    }

    #[test]
    fn by_unit_is_capped_and_units_are_freed() {
        let limits = WindowLimits { max_units: 3, max_by_unit: 2, ..WindowLimits::DEFAULT };
        let mut w = ErrorWindow::with_limits(Duration::from_secs(60), limits);
        for u in ["a", "b", "c"] {
            w.record(Some(u), at(0), "e");
        }
        w.record(Some("d"), at(1), "e");
        assert_eq!(w.summary(at(2)).by_unit.len(), 2);
        assert!(w.units.contains_key(OTHER_UNITS));
        // Once a, b, c expired, a new unit gets its own entry again.
        w.record(Some("e"), at(300), "e");
        assert!(w.units.contains_key("e"));
        assert_eq!(counts(&w.summary(at(300))), [("e", 1)]);
    }

    #[test]
    fn sanitize_strips_escapes_and_controls() {
        assert_eq!(sanitize("plain text", 100), "plain text");
        assert_eq!(sanitize("\u{1b}[31mred\u{1b}[0m and \u{1b}[1;4mbold", 100), "red and bold");
        assert_eq!(sanitize("title\u{1b}]0;pwned\u{7}rest", 100), "titlerest");
        assert_eq!(sanitize("osc st\u{1b}]8;;http://x\u{1b}\\link", 100), "osc stlink");
        assert_eq!(sanitize("bell\u{7} nul\0 del\u{7f} c1\u{85}", 100), "bell nul del c1");
        assert_eq!(sanitize("line1\nline2\r\n\tline3", 100), "line1 line2 line3");
        assert_eq!(sanitize("abc\u{202e}evil\u{2066}x", 100), "abcevilx");
        assert_eq!(sanitize("\u{9b}2Jcleared", 100), "cleared");
        assert_eq!(sanitize("  padded \n", 100), "padded");
        assert_eq!(sanitize("ünïcödé ✓", 100), "ünïcödé ✓");
        assert_eq!(sanitize(&"x".repeat(50), 10), format!("{}…", "x".repeat(10)));
        assert_eq!(sanitize("trailing esc \u{1b}", 100), "trailing esc");
        assert_eq!(sanitize("", 10), "");
    }

    #[test]
    fn samples_are_sanitised() {
        let mut w = ErrorWindow::new(Duration::from_secs(60));
        w.record(Some("evil\u{1b}[2J.service"), at(0), "\u{1b}[31mboom\u{1b}[0m\nnext line");
        let s = w.summary(at(1));
        assert_eq!(s.samples, ["evil.service: boom next line"]);
        assert_eq!(counts(&s), [("evil.service", 1)]);
    }
}
