//! Label values that are safe and bounded in the exposition.
//!
//! `prometheus-client` writes label values as they are, and a mount point or a unit name comes
//! from a host, which may be hostile: a quote or a newline in it would end the value early and
//! forge series. So every label value that did not come from a fixed list in this crate is a
//! [`SafeLabel`]: at most [`LABEL_MAX_CHARS`] characters, control characters other than a newline
//! replaced by `?`, and the backslash, the double quote and the newline escaped as the text
//! formats require (`\\`, `\"`, `\n`).

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use std::fmt::Write;

/// At most this many characters of a label value are kept (the rest is cut and marked `…`).
pub const LABEL_MAX_CHARS: usize = 128;

/// A label value from outside: cut to [`LABEL_MAX_CHARS`] and escaped when it is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafeLabel(String);

impl SafeLabel {
    /// `value`, cut and with control characters (other than a newline, which is escaped)
    /// replaced by `?`.
    pub fn new(value: &str) -> SafeLabel {
        let mut out = String::with_capacity(value.len().min(LABEL_MAX_CHARS));
        for (i, c) in value.chars().enumerate() {
            if i == LABEL_MAX_CHARS {
                out.push('…');
                break;
            }
            out.push(if c.is_control() && c != '\n' { '?' } else { c });
        }
        SafeLabel(out)
    }

    /// The value before escaping.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `value` escaped for a quoted label value of the text formats.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl EncodeLabelValue for SafeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&escape(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_escaped_cut_and_cleaned() {
        assert_eq!(escape(r#"/mnt/a"b\c"#), r#"/mnt/a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(SafeLabel::new("a\u{1b}[31mb\tc").as_str(), "a?[31mb?c");
        let long = "x".repeat(500);
        let cut = SafeLabel::new(&long);
        assert_eq!(cut.as_str().chars().count(), LABEL_MAX_CHARS + 1);
        assert!(cut.as_str().ends_with('…'));
        assert_eq!(SafeLabel::new("/var/lib").as_str(), "/var/lib");
    }
}
