//! Replay: a `timestamp,value` CSV text into samples for the same detector the daemon runs
//! (`macha anomaly replay`).
//!
//! The header line is optional; timestamps are unix seconds (decimals allowed) or ISO 8601
//! (`2026-12-01T10:00:00Z`, with a space instead of `T`, fractions of seconds, an offset such as
//! `+02:00`, or none for UTC, or a date alone). Empty lines and lines starting with `#` are
//! skipped, and so is a row whose value is empty (a missing sample). Anything else that does not
//! parse is an error naming its line; rows must be in time order.

use macha_core::Timestamp;

/// Rows a replay reads at most.
pub const ROWS_MAX: usize = 10_000_000;
/// The longest line read, in bytes.
pub const LINE_MAX: usize = 4096;

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CsvError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> CsvError {
    CsvError { line, message: message.into() }
}

/// Reads the samples of a CSV text.
pub fn parse_csv(text: &str) -> Result<Vec<(Timestamp, f64)>, CsvError> {
    let mut out: Vec<(Timestamp, f64)> = Vec::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.len() > LINE_MAX {
            return Err(err(line, format!("longer than {LINE_MAX} bytes")));
        }
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let header = std::mem::replace(&mut first, false);
        let fields: Vec<&str> = l.split(',').map(|f| f.trim().trim_matches('"').trim()).collect();
        if fields.len() != 2 {
            return Err(err(line, format!("expected 2 fields (timestamp,value), found {}", fields.len())));
        }
        let ts = match parse_time(fields[0]) {
            Ok(t) => t,
            // A first line whose timestamp is a word is the header.
            Err(_) if header && fields[0].bytes().all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b' ') => {
                continue;
            }
            Err(e) => return Err(err(line, format!("timestamp {:?}: {e}", cut(fields[0])))),
        };
        if fields[1].is_empty() {
            continue;
        }
        let value: f64 =
            fields[1].parse().map_err(|_| err(line, format!("value {:?} is not a number", cut(fields[1]))))?;
        if !value.is_finite() {
            return Err(err(line, format!("value {:?} is not a finite number", cut(fields[1]))));
        }
        if let Some((prev, _)) = out.last()
            && ts <= *prev
        {
            return Err(err(line, format!("timestamp {ts} is not after the previous row's ({prev})")));
        }
        if out.len() >= ROWS_MAX {
            return Err(err(line, format!("more than {ROWS_MAX} rows")));
        }
        out.push((ts, value));
    }
    Ok(out)
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Unix seconds or ISO 8601, into a timestamp.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') && !s[1..].contains('-') {
        let secs: f64 = s.parse().map_err(|_| "not a number of seconds".to_owned())?;
        let ms = secs * 1000.0;
        if !ms.is_finite() || ms.abs() > 8.0e15 {
            return Err("out of range".into());
        }
        return Ok(Timestamp(ms.round() as i64));
    }
    parse_iso(s)
}

fn num(s: &str, what: &str, max: i64) -> Result<i64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what}"));
    }
    let v: i64 = s.parse().map_err(|_| format!("bad {what}"))?;
    if v > max { Err(format!("{what} {v} out of range")) } else { Ok(v) }
}

fn parse_iso(s: &str) -> Result<Timestamp, String> {
    if !s.is_ascii() {
        return Err("not ASCII".into());
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err("neither unix seconds nor ISO 8601 (YYYY-MM-DDTHH:MM:SSZ)".into());
    }
    let y = num(&s[0..4], "year", 9999)?;
    let m = num(&s[5..7], "month", 12)?;
    let d = num(&s[8..10], "day", 31)?;
    if m == 0 || d == 0 || d > days_in_month(y, m) {
        return Err("no such date".into());
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    let mut ms = 0i64;
    let rest = &s[10..];
    if !rest.is_empty() {
        let rest = rest.strip_prefix(['T', 't', ' ']).ok_or("expected T between date and time")?;
        // The time, up to an offset.
        let end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
        let (time, zone) = rest.split_at(end);
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let parts: Vec<&str> = hms.split(':').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
            return Err("bad time (HH:MM or HH:MM:SS)".into());
        }
        let h = num(parts[0], "hour", 23)?;
        let mi = num(parts[1], "minute", 59)?;
        let se = if parts.len() == 3 { num(parts[2], "second", 60)? } else { 0 };
        if !frac.is_empty() {
            if frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
                return Err("bad fraction of a second".into());
            }
            let f3: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
            ms = num(&f3, "fraction", 999)?;
        }
        secs += h * 3600 + mi * 60 + se;
        match zone {
            "" | "Z" | "z" => {}
            z => {
                let sign = if z.starts_with('-') { -1 } else { 1 };
                let z = &z[1..];
                let (zh, zm) = match z.split_once(':') {
                    Some((a, b)) => (a, b),
                    None if z.len() == 4 => z.split_at(2),
                    None if z.len() == 2 => (z, "00"),
                    None => return Err("bad offset".into()),
                };
                if zh.len() != 2 || zm.len() != 2 {
                    return Err("bad offset".into());
                }
                secs -= sign * (num(zh, "offset hours", 23)? * 3600 + num(zm, "offset minutes", 59)? * 60);
            }
        }
    }
    Ok(Timestamp(secs * 1000 + ms))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's civil-to-days algorithm (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn timestamps_in_both_forms() {
        let t = Timestamp(1_796_119_200_000);
        assert_eq!(parse_time("1796119200").unwrap(), t);
        assert_eq!(parse_time("1796119200.5").unwrap(), Timestamp(1_796_119_200_500));
        assert_eq!(parse_time("2026-12-01T10:00:00Z").unwrap(), t);
        assert_eq!(parse_time("2026-12-01 10:00:00").unwrap(), t);
        assert_eq!(parse_time("2026-12-01T10:00").unwrap(), t);
        assert_eq!(parse_time("2026-12-01T12:00:00+02:00").unwrap(), t);
        assert_eq!(parse_time("2026-12-01T05:30:00.250-0430").unwrap(), Timestamp(1_796_119_200_250));
        assert_eq!(parse_time("2026-12-01").unwrap(), Timestamp(1_796_083_200_000));
        assert_eq!(parse_time("2024-02-29").unwrap().to_string(), "2024-02-29T00:00:00.000Z");
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-12-01T25:00",
            "yesterday",
            "1e400",
            "2026-12-01X10:00",
            "12:00",
            "2026-12-01T10:00+é0",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_text_is_an_error_or_rows_never_a_panic() {
        let mut rng = crate::synth::Rng::new(9);
        let alphabet: Vec<char> = "0123456789-+:.,TZ tz#\"e\u{e9}\u{202e}\n\r".chars().collect();
        for _ in 0..20_000 {
            let len = rng.below(60);
            let text: String = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            if let Ok(rows) = parse_csv(&text) {
                assert!(rows.iter().all(|(_, v)| v.is_finite()));
                assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }
    }

    #[test]
    fn a_header_is_optional_and_bad_rows_name_their_line() {
        let rows = parse_csv("timestamp,value\n1000,1.5\n\n# note\n1060,\n1120,2\n").unwrap();
        assert_eq!(rows, vec![(Timestamp(1_000_000), 1.5), (Timestamp(1_120_000), 2.0)]);
        assert_eq!(parse_csv("1000,1\n1060,2").unwrap().len(), 2);
        let e = parse_csv("ts,value\n1000,1\n1060,abc\n").unwrap_err();
        assert_eq!((e.line, e.to_string()), (3, "line 3: value \"abc\" is not a number".to_owned()));
        assert_eq!(parse_csv("1000,1\n1000,2\n").unwrap_err().line, 2);
        assert_eq!(parse_csv("1000,1,3\n").unwrap_err().line, 1);
        assert_eq!(parse_csv("1000,NaN\n").unwrap_err().line, 1);
        assert_eq!(parse_csv("1000,1\nvalue,ts\n").unwrap_err().line, 2);
        assert_eq!(parse_csv(&format!("1000,{}\n", "9".repeat(LINE_MAX))).unwrap_err().line, 1);
    }
}
