//! The evidence of an incident analysis as one hash: the key of the answer cache.
//!
//! The hash covers what the incident prompt is built from and what makes two incidents the same:
//! each finding's host, check, subject and severity (sorted, so order does not matter) and the
//! redacted journal sample, with digits folded (`#`) so that timestamps, process ids and counters
//! do not make every sample new. The summary is left out: it carries measured numbers.

use sha2::{Digest, Sha256};

/// One finding of the incident.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding<'a> {
    pub host: &'a str,
    pub check: &'a str,
    pub subject: &'a str,
    pub severity: &'a str,
}

/// A journal line with every run of digits replaced by `#`.
pub fn fold_digits(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_digits = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// The evidence hash (SHA-256, hex) of `findings` and the redacted `journal` sample.
pub fn evidence_hash(findings: &[Finding<'_>], journal: &str) -> String {
    let mut sorted: Vec<&Finding<'_>> = findings.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut h = Sha256::new();
    h.update(b"macha-evidence-v1\n");
    for f in sorted {
        for part in [f.host, f.check, f.subject, f.severity] {
            h.update(part.as_bytes());
            h.update([0x1f]);
        }
        h.update(b"\n");
    }
    h.update(b"journal\n");
    for line in journal.lines() {
        h.update(fold_digits(line.trim_end()).as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f<'a>(subject: &'a str, severity: &'a str) -> Finding<'a> {
        Finding { host: "local", check: "failed_unit", subject, severity }
    }

    #[test]
    fn the_same_evidence_has_the_same_hash() {
        let a = evidence_hash(&[f("nginx.service", "critical"), f("php.service", "warning")], "");
        let b = evidence_hash(&[f("php.service", "warning"), f("nginx.service", "critical")], "");
        assert_eq!(a, b, "order does not matter");
        assert_eq!(a.len(), 64);
        let j1 = "2026-01-01T10:00:01 web nginx[812]: bind() to 0.0.0.0:80 failed";
        let j2 = "2026-01-02T11:30:59 web nginx[9001]: bind() to 0.0.0.0:80 failed";
        let j3 = "2026-01-02T11:30:59 web nginx[9001]: unknown directive \"proxy_pas\"";
        let fs = [f("nginx.service", "critical")];
        assert_eq!(evidence_hash(&fs, j1), evidence_hash(&fs, j2), "times and pids are folded");
        assert_ne!(evidence_hash(&fs, j1), evidence_hash(&fs, j3));
        assert_ne!(evidence_hash(&fs, ""), evidence_hash(&[f("nginx.service", "warning")], ""));
        assert_ne!(evidence_hash(&fs, ""), evidence_hash(&[Finding { host: "web1", ..fs[0].clone() }], ""));
        assert_eq!(fold_digits("a12b3"), "a#b#");
    }
}
