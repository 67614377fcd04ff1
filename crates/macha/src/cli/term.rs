//! Terminal safety: text that came from a model, a log, a host or the database is stripped of
//! control sequences before it reaches a terminal, so it cannot clear the screen, rewrite the
//! title, write the clipboard (OSC 52), hide text or move the cursor. Newlines and tabs stay.
//!
//! Text output is cleaned; `--json` output needs no cleaning (JSON escapes every control
//! character); `--raw` prints text exactly as received.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

static RAW: AtomicBool = AtomicBool::new(false);

/// `--raw`: print text exactly as received, control sequences included.
pub fn set_raw(raw: bool) {
    RAW.store(raw, Ordering::Relaxed);
}

/// Characters that change how a terminal shows text without being text: C0 and C1 controls
/// (except newline and tab), and the bidirectional overrides and isolates that reorder or hide
/// what follows.
fn invisible(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` without control sequences: an escape sequence (CSI `ESC [ … final`, OSC/DCS/APC/PM/SOS
/// `ESC ] … BEL|ST`, or `ESC` plus one character) is removed whole, and any other control or
/// bidirectional-control character is dropped. Borrowed when there was nothing to remove.
pub fn clean(s: &str) -> Cow<'_, str> {
    if RAW.load(Ordering::Relaxed) || !s.chars().any(invisible) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                _ => {}
            },
            // The 8-bit forms: CSI and the string introducers.
            '\u{9b}' => {
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            }
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if invisible(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(n) = chars.next() {
        match n {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' if chars.peek() == Some(&'\\') => {
                chars.next();
                return;
            }
            _ => {}
        }
    }
}

/// `value` with every string inside it cleaned (for text output of a typed answer).
pub fn scrub<T: Serialize + DeserializeOwned>(value: T) -> anyhow::Result<T> {
    if RAW.load(Ordering::Relaxed) {
        return Ok(value);
    }
    let mut v = serde_json::to_value(&value)?;
    clean_value(&mut v);
    Ok(serde_json::from_value(v)?)
}

fn clean_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Cow::Owned(c) = clean(s) {
                *s = c;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(clean_value),
        serde_json::Value::Object(map) => {
            let keys: Vec<String> = map.keys().filter(|k| matches!(clean(k), Cow::Owned(_))).cloned().collect();
            for k in keys {
                if let Some(inner) = map.remove(&k) {
                    map.insert(clean(&k).into_owned(), inner);
                }
            }
            map.values_mut().for_each(clean_value);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hostile_sequences_are_removed_and_text_stays() {
        let cases = [
            ("clear\u{1b}[2J\u{1b}[H screen", "clear screen"),
            ("title\u{1b}]0;pwned\u{7} set", "title set"),
            ("clip\u{1b}]52;c;ZWNobyBoaQ==\u{1b}\\board", "clipboard"),
            ("hidden \u{1b}[8msecret\u{1b}[0m text", "hidden secret text"),
            ("8-bit \u{9b}31m red", "8-bit  red"),
            ("dcs \u{1b}Pq#0;2;0;0;0\u{1b}\\ sixel", "dcs  sixel"),
            ("bell\u{7} and backspace\u{8}", "bell and backspace"),
            ("carriage\rreturn", "carriagereturn"),
            ("bidi \u{202e}txet\u{202c} end", "bidi txet end"),
            ("lines\nand\ttabs stay", "lines\nand\ttabs stay"),
            ("unterminated \u{1b}]0;forever", "unterminated "),
            ("ünïcödé ✓ stays", "ünïcödé ✓ stays"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
        }
        assert!(matches!(clean("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_string_of_a_typed_value_is_cleaned() {
        #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
        struct Answer {
            text: String,
            items: Vec<String>,
            note: Option<String>,
        }
        let a = Answer {
            text: "a\u{1b}[2Jb".into(),
            items: vec!["\u{1b}]52;c;eA==\u{7}x".into()],
            note: Some("ok".into()),
        };
        let clean = scrub(a).unwrap();
        assert_eq!(clean, Answer { text: "ab".into(), items: vec!["x".into()], note: Some("ok".into()) });
    }
}
