//! The redaction corpus (`redaction_corpus.txt`): real-format log lines, single and split over
//! entries, each with the secrets that must not come out and the text that must stay readable.
//! Every case goes through the three ways text is redacted: a sequence of entries
//! (`redact_lines`), one joined text (`redact`), and entry by entry with carried state
//! (`LineRedactor`, except where only a whole sequence can look back).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use macha_agent::redact::{LineRedactor, Redactor};

#[derive(Debug, Default)]
struct Case {
    name: String,
    entries: Vec<String>,
    absent: Vec<String>,
    keep: Vec<String>,
    same: bool,
    stream: bool,
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => panic!("unknown escape \\{other} in {s:?}"),
            None => panic!("a trailing backslash in {s:?}"),
        }
    }
    out
}

fn corpus() -> Vec<Case> {
    let text = include_str!("redaction_corpus.txt");
    let mut cases: Vec<Case> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("== ") {
            cases.push(Case { name: name.to_owned(), stream: true, ..Case::default() });
            continue;
        }
        let case = cases.last_mut().unwrap_or_else(|| panic!("a line before the first case: {line}"));
        if let Some(v) = line.strip_prefix("in: ") {
            case.entries.push(unescape(v));
        } else if let Some(v) = line.strip_prefix("absent: ") {
            case.absent.push(v.to_owned());
        } else if let Some(v) = line.strip_prefix("keep: ") {
            case.keep.push(v.to_owned());
        } else if line == "same" {
            case.same = true;
        } else if line == "nostream" {
            case.stream = false;
        } else {
            panic!("case {}: unknown line {line:?}", case.name);
        }
    }
    cases
}

#[test]
fn the_corpus_is_large_and_varied() {
    let cases = corpus();
    assert!(cases.len() >= 200, "{} cases", cases.len());
    assert!(cases.iter().filter(|c| c.same).count() >= 50, "too few ordinary lines");
    assert!(cases.iter().filter(|c| c.entries.len() > 1).count() >= 15, "too few multi-entry cases");
    for c in &cases {
        assert!(!c.entries.is_empty(), "{}: no input", c.name);
        assert!(c.same || !c.absent.is_empty(), "{}: neither a secret nor `same`", c.name);
        for a in &c.absent {
            assert!(c.entries.iter().any(|e| e.contains(a.as_str())), "{}: {a:?} is not in the input", c.name);
        }
    }
}

#[test]
fn every_case_comes_out_as_expected() {
    let red = Redactor::builtin();
    let mut failures = Vec::new();
    for c in corpus() {
        let as_entries = red.redact_lines(&c.entries).join("\n");
        let as_text = red.apply(&c.entries.join("\n"));
        let mut state = LineRedactor::new();
        let streamed: Vec<String> = c.entries.iter().map(|e| red.redact_entry(&mut state, e)).collect();
        let streamed = streamed.join("\n");
        let mut outputs = vec![("entries", &as_entries), ("text", &as_text)];
        if c.stream {
            outputs.push(("stream", &streamed));
        }
        for (how, out) in outputs {
            for a in &c.absent {
                if out.contains(a.as_str()) {
                    failures.push(format!("{} [{how}]: {a:?} leaked in {out:?}", c.name));
                }
            }
            for k in &c.keep {
                if !out.contains(k.as_str()) {
                    failures.push(format!("{} [{how}]: {k:?} was masked in {out:?}", c.name));
                }
            }
            if c.same && *out != c.entries.join("\n") {
                failures.push(format!("{} [{how}]: an ordinary line changed: {out:?}", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
