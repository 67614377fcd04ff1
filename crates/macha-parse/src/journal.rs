//! Journal entries: one line of `journalctl --output=json` parsed defensively into a
//! [`JournalEntry`], or the reason it cannot be used.
//!
//! Data is not instructions: journal text comes from anything running on the host. `MESSAGE` may
//! be a string, a JSON byte array when it is not UTF-8 or has control characters, `null` when it
//! is larger than journalctl's 4096-byte JSON limit, or an array when the field repeats; every
//! text kept is sanitised for display with [`macha_core::journal::sanitize`]. A line that cannot
//! be used is a [`SkipReason`], never a panic.

use macha_core::journal::sanitize;
use serde::Deserialize;
use serde_json::Value;

/// Longest message kept, in characters after sanitising.
pub const MESSAGE_CHARS: usize = 2048;
/// Longest unit or host name kept, in characters after sanitising.
const NAME_CHARS: usize = 256;
/// Longest cursor accepted (journalctl's are about 130 bytes).
const CURSOR_MAX: usize = 512;

/// One journal entry, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`: microseconds since the epoch.
    pub realtime_usec: u64,
    /// `_SYSTEMD_UNIT` (set by journald, trustworthy); for messages systemd itself logs about a
    /// unit (`_SYSTEMD_UNIT=init.scope`), the `UNIT` they are about; for entries without a unit
    /// (kernel, processes outside units), `UNIT`, else `SYSLOG_IDENTIFIER`. Sanitised.
    pub unit: Option<String>,
    /// 0 (emerg) to 7 (debug).
    pub priority: u8,
    /// Sanitised, at most [`MESSAGE_CHARS`] characters.
    pub message: String,
    pub hostname: Option<String>,
}

impl JournalEntry {
    /// `realtime_usec` in milliseconds, for [`macha_core::Timestamp`].
    pub fn realtime_millis(&self) -> i64 {
        i64::try_from(self.realtime_usec / 1000).unwrap_or(i64::MAX)
    }
}

/// Why a line was not turned into an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Longer than `max_line_bytes`.
    Oversized,
    /// Not a JSON object.
    InvalidJson,
    /// No usable `__CURSOR` (missing, too long, or with characters a cursor never has).
    BadCursor,
    /// No usable `__REALTIME_TIMESTAMP`.
    BadTimestamp,
    /// No usable `PRIORITY`.
    BadPriority,
    /// A priority above `max_priority` (journalctl filters these; a stand-in may not).
    AbovePriority,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Oversized => "line too long",
            SkipReason::InvalidJson => "not a JSON object",
            SkipReason::BadCursor => "no usable __CURSOR",
            SkipReason::BadTimestamp => "no usable __REALTIME_TIMESTAMP",
            SkipReason::BadPriority => "no usable PRIORITY",
            SkipReason::AbovePriority => "priority above the configured maximum",
        }
    }
}

/// The fields Macha reads from one journalctl JSON line.
#[derive(Debug, Deserialize)]
struct RawEntry {
    #[serde(rename = "__CURSOR")]
    cursor: Option<Value>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    realtime: Option<Value>,
    #[serde(rename = "PRIORITY")]
    priority: Option<Value>,
    /// `Some(Value::Null)` when journalctl printed `null`, `None` when the field is absent.
    #[serde(rename = "MESSAGE", default, deserialize_with = "present")]
    message: Option<Value>,
    #[serde(rename = "_SYSTEMD_UNIT")]
    systemd_unit: Option<Value>,
    #[serde(rename = "UNIT")]
    unit: Option<Value>,
    #[serde(rename = "SYSLOG_IDENTIFIER")]
    identifier: Option<Value>,
    #[serde(rename = "_HOSTNAME")]
    hostname: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The text of a journalctl JSON field: a string; a byte array (a value that is not UTF-8 or has
/// control characters), decoded lossily; for a repeated field (an array of values), the first.
/// `None` for `null` (larger than journalctl's JSON limit) and anything else.
fn field_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Option<Vec<u8>> = items.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
        }
        Value::Array(items) => items.first().and_then(field_text),
        _ => None,
    }
}

/// Parses one journalctl `--output=json` line into an entry, or says why it cannot be used.
pub fn parse_entry(line: &[u8], max_priority: u8) -> Result<JournalEntry, SkipReason> {
    let raw: RawEntry = serde_json::from_slice(line).map_err(|_| SkipReason::InvalidJson)?;
    let cursor = raw
        .cursor
        .as_ref()
        .and_then(field_text)
        .filter(|c| !c.is_empty() && c.len() <= CURSOR_MAX && c.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(SkipReason::BadCursor)?;
    let realtime_usec = raw
        .realtime
        .as_ref()
        .and_then(field_text)
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or(SkipReason::BadTimestamp)?;
    let priority = raw
        .priority
        .as_ref()
        .and_then(field_text)
        .and_then(|p| p.trim().parse::<u8>().ok())
        .filter(|p| *p <= 7)
        .ok_or(SkipReason::BadPriority)?;
    if priority > max_priority {
        return Err(SkipReason::AbovePriority);
    }
    let message = match &raw.message {
        None => String::new(),
        Some(Value::Null) => "[message longer than 4096 bytes not shown]".to_owned(),
        Some(v) => field_text(v).map(|m| sanitize(&m, MESSAGE_CHARS)).unwrap_or_default(),
    };
    let name =
        |v: &Option<Value>| v.as_ref().and_then(field_text).map(|s| sanitize(&s, NAME_CHARS)).filter(|s| !s.is_empty());
    let systemd_unit = name(&raw.systemd_unit);
    let unit = match systemd_unit {
        Some(u) if u == "init.scope" => name(&raw.unit).or(Some(u)),
        Some(u) => Some(u),
        None => name(&raw.unit).or_else(|| name(&raw.identifier)),
    };
    Ok(JournalEntry { cursor, realtime_usec, unit, priority, message, hostname: name(&raw.hostname) })
}

/// What one journalctl read produced, line by line. Output that is not journal JSON (a broken,
/// replaced or wrapped journalctl that still exits 0) must make the journal section unavailable,
/// never read as "no errors": [`ReadTally::verdict`] says which.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadTally {
    /// Lines that were journal entries (including ones above the priority asked for).
    pub entries: u64,
    /// Lines that were not: not JSON, or without a cursor, timestamp or priority, or too long.
    pub unreadable: u64,
}

impl ReadTally {
    /// Counts one line's outcome.
    pub fn add<T>(&mut self, outcome: &Result<T, SkipReason>) {
        match outcome {
            Ok(_) | Err(SkipReason::AbovePriority) => self.entries = self.entries.saturating_add(1),
            Err(_) => self.unreadable = self.unreadable.saturating_add(1),
        }
    }

    /// `Err` with the reason when more than one line in a hundred was unreadable (journalctl's
    /// own output always parses; a rare oversized entry is tolerated, a stream of text is not).
    pub fn verdict(&self) -> Result<(), String> {
        let total = self.entries.saturating_add(self.unreadable);
        if self.unreadable == 0 || self.unreadable.saturating_mul(100) <= total {
            return Ok(());
        }
        Err(format!(
            "{} of {total} lines of journalctl's output were not journal entries (JSON with a cursor, \
             timestamp and priority)",
            self.unreadable
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_is_mostly_not_journal_json_is_refused() {
        let good = line(r#","MESSAGE":"x""#);
        let mut t = ReadTally::default();
        for _ in 0..200 {
            t.add(&parse_entry(&good, 3));
        }
        // Debug-level entries are still entries (journalctl filters; a stand-in may not).
        let debug = String::from_utf8(good.clone()).unwrap().replace(r#""PRIORITY":"3""#, r#""PRIORITY":"7""#);
        t.add(&parse_entry(debug.as_bytes(), 3));
        assert_eq!(t, ReadTally { entries: 201, unreadable: 0 });
        t.add(&parse_entry(b"Segmentation fault", 3));
        t.add(&parse_entry(b"{}", 3));
        assert!(t.verdict().is_ok(), "2 in 203 is tolerated: {t:?}");
        let mut garbage = ReadTally::default();
        for l in ["hello", "-- No entries --", "[1,2,3]", ""] {
            garbage.add(&parse_entry(l.as_bytes(), 3));
        }
        let why = garbage.verdict().unwrap_err();
        assert!(why.contains("4 of 4 lines"), "{why}");
        assert!(ReadTally::default().verdict().is_ok(), "no output is an empty journal, not garbage");
    }

    const C: &str = "s=2d87a39ef1b24ab3b6ef31bd1e9928c7;i=1;b=0123;m=3e8;t=660cee9d5f54c;x=890b3c91d46f6221";

    fn line(fields: &str) -> Vec<u8> {
        format!(r#"{{"__CURSOR":"{C}","__REALTIME_TIMESTAMP":"1795291662906700","PRIORITY":"3"{fields}}}"#).into_bytes()
    }

    #[test]
    fn string_message() {
        let e = parse_entry(&line(r#","MESSAGE":"disk full","_SYSTEMD_UNIT":"backup.service","_HOSTNAME":"web1""#), 3);
        let e = e.unwrap_or_else(|r| panic!("{}", r.as_str()));
        assert_eq!(e.cursor, C);
        assert_eq!(e.realtime_usec, 1_795_291_662_906_700);
        assert_eq!(e.realtime_millis(), 1_795_291_662_906);
        assert_eq!((e.priority, e.message.as_str()), (3, "disk full"));
        assert_eq!(e.unit.as_deref(), Some("backup.service"));
        assert_eq!(e.hostname.as_deref(), Some("web1"));
    }

    #[test]
    fn byte_array_message_is_decoded_lossily_and_sanitised() {
        // "bad \xff\xfe utf8"
        let e = parse_entry(&line(r#","MESSAGE":[98,97,100,32,255,254,32,117,116,102,56]"#), 3);
        assert_eq!(e.map(|e| e.message), Ok("bad \u{fffd}\u{fffd} utf8".to_owned()));
        // ANSI colours and a bell, as journalctl emits them (a byte array: control characters).
        let ansi: Vec<String> = "ansi \x1b[31mred\x1b[0m bell\x07".bytes().map(|b| b.to_string()).collect();
        let e = parse_entry(&line(&format!(r#","MESSAGE":[{}]"#, ansi.join(","))), 3);
        assert_eq!(e.map(|e| e.message), Ok("ansi red bell".to_owned()));
    }

    #[test]
    fn odd_messages() {
        let msg = |fields: &str| parse_entry(&line(fields), 3).map(|e| e.message);
        assert_eq!(msg(""), Ok(String::new()));
        assert_eq!(msg(r#","MESSAGE":null"#), Ok("[message longer than 4096 bytes not shown]".into()));
        assert_eq!(msg(r#","MESSAGE":["first","second"]"#), Ok("first".into()));
        assert_eq!(msg(r#","MESSAGE":[[104,105],"x"]"#), Ok("hi".into()));
        assert_eq!(msg(r#","MESSAGE":[1,300]"#), Ok(String::new()));
        assert_eq!(msg(r#","MESSAGE":{"a":1}"#), Ok(String::new()));
        assert_eq!(msg(r#","MESSAGE":"line1\nline2\u001b]0;title\u0007""#), Ok("line1 line2".into()));
        let long = "x".repeat(10_000);
        let m = msg(&format!(r#","MESSAGE":"{long}""#)).unwrap_or_default();
        assert_eq!(m.chars().count(), MESSAGE_CHARS + 1);
    }

    #[test]
    fn unit_attribution() {
        let unit = |fields: &str| parse_entry(&line(fields), 3).ok().and_then(|e| e.unit);
        assert_eq!(unit(r#","_SYSTEMD_UNIT":"a.service","UNIT":"b.service""#).as_deref(), Some("a.service"));
        // systemd's own messages about a unit.
        assert_eq!(unit(r#","_SYSTEMD_UNIT":"init.scope","UNIT":"b.service""#).as_deref(), Some("b.service"));
        assert_eq!(unit(r#","_SYSTEMD_UNIT":"init.scope""#).as_deref(), Some("init.scope"));
        assert_eq!(unit(r#","UNIT":"b.service","SYSLOG_IDENTIFIER":"x""#).as_deref(), Some("b.service"));
        assert_eq!(unit(r#","SYSLOG_IDENTIFIER":"kernel""#).as_deref(), Some("kernel"));
        assert_eq!(unit(r#","SYSLOG_IDENTIFIER":"\u001b[2Jevil""#).as_deref(), Some("evil"));
        assert_eq!(unit(r#","SYSLOG_IDENTIFIER":"""#), None);
        assert_eq!(unit(""), None);
    }

    #[test]
    fn unusable_lines_say_why() {
        let p = |s: &str| parse_entry(s.as_bytes(), 3).map(|_| ());
        assert_eq!(p("not json"), Err(SkipReason::InvalidJson));
        assert_eq!(p(""), Err(SkipReason::InvalidJson));
        assert_eq!(p("[1,2]"), Err(SkipReason::InvalidJson));
        assert_eq!(p(r#"{"__CURSOR":"c","#), Err(SkipReason::InvalidJson));
        assert_eq!(p(r#"{"__REALTIME_TIMESTAMP":"1","PRIORITY":"3"}"#), Err(SkipReason::BadCursor));
        assert_eq!(p(r#"{"__CURSOR":"a b","__REALTIME_TIMESTAMP":"1","PRIORITY":"3"}"#), Err(SkipReason::BadCursor));
        let long = format!(r#"{{"__CURSOR":"{}","__REALTIME_TIMESTAMP":"1","PRIORITY":"3"}}"#, "c".repeat(600));
        assert_eq!(p(&long), Err(SkipReason::BadCursor));
        assert_eq!(p(r#"{"__CURSOR":"c","PRIORITY":"3"}"#), Err(SkipReason::BadTimestamp));
        assert_eq!(p(r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"-5","PRIORITY":"3"}"#), Err(SkipReason::BadTimestamp));
        assert_eq!(p(r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1"}"#), Err(SkipReason::BadPriority));
        assert_eq!(p(r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","PRIORITY":"9"}"#), Err(SkipReason::BadPriority));
        assert_eq!(p(r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","PRIORITY":"6"}"#), Err(SkipReason::AbovePriority));
        assert_eq!(p(r#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","PRIORITY":"0"}"#), Ok(()));
    }
}
