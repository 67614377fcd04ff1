//! Secret redaction: applied to every piece of text before it is put into a prompt, so that
//! nothing secret leaves the daemon, and what `macha-logs prompts` shows is the redacted form.
//!
//! Two passes. The first goes over the text line by line with state, because a secret can span
//! lines that arrive as separate journal entries: once a `-----BEGIN … PRIVATE KEY-----` line is
//! seen, everything up to the END line is masked; an END line seen without its BEGIN (the block
//! began before the lines read) masks the key-body lines above it; and a line whose message is a
//! long base64 run (a key body line on its own) is masked. [`LineRedactor`] does the same for lines
//! that arrive one at a time. The second pass applies the rules below to the whole text.
//!
//! Built in: private key blocks on one line, authorisation and API-key headers, bearer/basic
//! tokens, passwords in URLs, `password=`-style settings (also `secret`, `token`, `api_key`,
//! `access_key`, … in `=`, `:` and JSON form), environment-style assignments (`MYSQL_PWD=`,
//! `*_PASSWORD=`, `*_TOKEN=`, `*_SECRET=`, `*_KEY=`, `AWS_SECRET…=`, `PGPASSWORD=`), argv-style
//! options (`--password value`, `--password=value`, `--token x`, `-p…` of MySQL-like tools),
//! well-known token shapes (AWS, Google, GitHub, GitLab, Slack, Stripe, Hugging Face, npm, PyPI,
//! age, OpenAI-style, JWTs) and long base64 runs. Configuration may add regular expressions;
//! whatever they match is replaced whole. Ordinary log lines stay readable: a word like
//! "password" alone masks nothing.

use regex::{Captures, Regex, RegexSet};
use std::sync::LazyLock;

/// What replaces a secret.
pub const MASK: &str = "[REDACTED]";

/// A compiled set of redaction rules.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<Rule>,
    /// All rules at once: one scan of the text says which rules can match at all.
    set: Option<RegexSet>,
}

/// What a rule replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// The whole match.
    Nothing,
    /// Capture group 1 stays (the key or prefix); the rest of the match is masked, and a quoted
    /// value keeps its quotes.
    Prefix,
    /// Like `Prefix`, and a URL's closing `@` stays.
    UrlPrefix,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    re: Regex,
    keep: Keep,
    /// A match is only masked if this accepts it (the regex crate has no look-around).
    accept: Option<fn(&str) -> bool>,
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

/// A quoted or bare value after a key.
const VALUE: &str = r#"(?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s"'&,;<>]+)"#;

const BUILTIN: &[(&str, &str, Keep)] = &[
    (
        "private_key",
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
        Keep::Nothing,
    ),
    ("authorization_header", r"(?im)(\b(?:proxy-)?authorization\s*[:=]\s*)[^\r\n]+", Keep::Prefix),
    (
        "secret_header",
        r"(?im)(\b(?:x-api-key|x-auth-token|x-access-token|api-key|private-token|x-vault-token|cookie|set-cookie)\s*:\s*)[^\r\n]+",
        Keep::Prefix,
    ),
    ("bearer", r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9\-._~+/]{8,}=*", Keep::Prefix),
    ("url_password", r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@", Keep::UrlPrefix),
    (
        "env_assignment",
        r#"(\b(?:MYSQL_PWD|PGPASSWORD|[A-Z][A-Z0-9_]*_(?:PASSWORD|PASSWD|PASS|PWD|TOKEN|SECRET|KEY|KEY_ID|CREDENTIALS?)|AWS_(?:ACCESS|SECRET|SESSION|SECURITY)[A-Z0-9_]*)=)(?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s"']+)"#,
        Keep::Prefix,
    ),
    (
        "argv_option",
        r#"(?i)((?:^|\s)--?(?:[a-z0-9]+-)*(?:password|passwd|pass|passphrase|token|secret|api-?key|access-key|secret-key|private-key|client-secret|auth-token)(?:=|\s+))(?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s\-"'][^\s]*)"#,
        Keep::Prefix,
    ),
    (
        "mysql_like_p",
        r#"((?i:\b(?:mysql[a-z\-]*|mariadb[a-z\-]*|sshpass))\b[^\r\n]*?\s-p)(?:\s+)?(?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s\-"'][^\s]*)"#,
        Keep::Prefix,
    ),
    ("redis_cli_a", r#"(\bredis-cli\b[^\r\n]*?\s-a\s+)(?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s\-"'][^\s]*)"#, Keep::Prefix),
    ("aws_access_key_id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", Keep::Nothing),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b", Keep::Nothing),
    ("google_oauth_token", r"\bya29\.[0-9A-Za-z_\-]{20,}", Keep::Nothing),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})\b", Keep::Nothing),
    ("gitlab_token", r"\bgl(?:pat|dt|rt|ptt|cbt|soat)-[A-Za-z0-9_\-]{20,}", Keep::Nothing),
    ("slack_token", r"\bxox[abposre]-[A-Za-z0-9\-]{10,}|\bxapp-[A-Za-z0-9\-]{10,}", Keep::Nothing),
    ("stripe_key", r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b", Keep::Nothing),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}\b", Keep::Nothing),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b", Keep::Nothing),
    ("pypi_token", r"\bpypi-[A-Za-z0-9_\-]{50,}", Keep::Nothing),
    ("age_secret_key", r"\bAGE-SECRET-KEY-1[0-9A-Z]{50,}", Keep::Nothing),
    ("api_secret_key", r"\bsk-(?:ant-|proj-|live-)?[A-Za-z0-9_\-]{20,}\b", Keep::Nothing),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\b", Keep::Nothing),
];

/// The `password=`-style rule, built from [`VALUE`].
fn setting_pattern() -> String {
    format!(
        r#"(?i)(/?\b[A-Za-z0-9_.\-]*?(?:password|passwd|passphrase|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|account[_\-]?key|client[_\-]?secret|credentials?)["']?\s*[:=]\s*){VALUE}"#
    )
}

/// A `passwd:` inside a path (`/etc/passwd: Permission denied`) is not a setting.
fn not_a_path(s: &str) -> bool {
    !s.starts_with('/')
}

/// Words that follow an option in prose (`--password was not given`), not a value.
const PROSE: &[&str] = &[
    "was",
    "is",
    "not",
    "missing",
    "required",
    "given",
    "specified",
    "option",
    "flag",
    "must",
    "cannot",
    "and",
    "or",
    "the",
    "to",
    "for",
    "file",
    "given;",
    "set",
    "unset",
    "ignored",
];

/// An option's value is masked unless it is a word of prose.
fn not_prose(s: &str) -> bool {
    let value = s.split(['=', ' ', '\t']).rfind(|w| !w.is_empty()).unwrap_or_default();
    !PROSE.contains(&value.to_ascii_lowercase().as_str())
}

/// A base64 run long enough to be key material or a token: at least 40 characters, mixing upper
/// case, lower case and digits, and not a path (few slashes).
const BASE64_RUN: &str = r"[A-Za-z0-9+/]{40,}={0,2}";

/// What precedes a base64 run that is not secret: public keys, fingerprints, SRI hashes (a Nix
/// hash mismatch must stay readable).
const PUBLIC_PREFIX: &str =
    r"(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-ssh-ed25519@openssh\.com) |SHA256:|sha(?:1|256|384|512)-";

fn has_public_prefix(s: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-ssh-", "SHA256:", "sha1-", "sha256-", "sha384-", "sha512-"].iter().any(|p| s.starts_with(p))
}

fn looks_like_key_material(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    let slashes = body.bytes().filter(|b| *b == b'/').count();
    body.len() >= 40
        && !body.starts_with('/')
        && slashes * 16 <= body.len()
        && body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase())
        && body.bytes().any(|b| b.is_ascii_digit())
}

/// A token after `bearer`/`basic` is masked only if it has a digit or a symbol: "Basic
/// authentication failed" stays readable.
fn looks_like_token(s: &str) -> bool {
    let token = s.split_whitespace().last().unwrap_or_default();
    token.bytes().any(|b| b.is_ascii_digit() || b"-._~+/=".contains(&b))
}

static BEGIN_KEY: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----").ok());
static END_KEY: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----").ok());

/// The start and end of the first BEGIN (or END) marker of a private key in `line`. If the
/// patterns did not compile (they are constants; tested), every `-----BEGIN`/`-----END` counts,
/// which only ever masks more.
fn marker(line: &str, begin: bool) -> Option<(usize, usize)> {
    // Most lines have no marker at all: skip the regex for them.
    if !line.contains("-----") {
        return None;
    }
    let (re, fallback) = if begin { (&*BEGIN_KEY, "-----BEGIN") } else { (&*END_KEY, "-----END") };
    match re {
        Some(re) => re.find(line).map(|m| (m.start(), m.end())),
        None => line.find(fallback).map(|i| (i, line.len())),
    }
}

/// Splits a log line into its prefix (timestamp, host, `unit[pid]: `) and its message: the prefix
/// ends at the last `": "`. Key material and base64 contain no `": "`.
fn split_message(line: &str) -> (&str, &str) {
    match line.rfind(": ") {
        Some(i) => line.split_at(i + 2),
        None => ("", line),
    }
}

/// Whether the message of a line could be part of a key body: base64 characters only, or a
/// PEM header (`Proc-Type: …`, `DEK-Info: …`), or nothing.
fn key_body_like(line: &str) -> bool {
    let (prefix, msg) = split_message(line);
    let msg = msg.trim();
    let header = ["Proc-Type", "DEK-Info", "Comment"].iter().any(|h| prefix.trim_end().ends_with(&format!("{h}:")));
    let base64 = msg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    // A word such as "starting" is not key material: a digit or symbol, or a long mixed-case run.
    let random = msg.bytes().any(|b| b.is_ascii_digit() || b == b'+' || b == b'/' || b == b'=')
        || (msg.len() >= 20
            && msg.bytes().any(|b| b.is_ascii_uppercase())
            && msg.bytes().any(|b| b.is_ascii_lowercase()));
    header || (msg.len() >= 4 && base64 && random)
}

/// Whether a line's message is one long base64 run (a key body line arriving on its own).
fn lone_key_line(line: &str) -> bool {
    if line.len() < 40 {
        return false;
    }
    let msg = split_message(line).1.trim();
    msg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        && looks_like_key_material(msg)
}

fn masked_message(line: &str) -> String {
    format!("{}{MASK}", split_message(line).0)
}

/// Masks private keys across lines that arrive one at a time (journal entries, streamed output).
/// State: whether a BEGIN has been seen without its END. Lines given to it are only masked,
/// never held back; [`Redactor::redact_lines`] also looks back from an END line it sees without
/// a BEGIN, which a stream cannot.
#[derive(Debug, Clone, Default)]
pub struct LineRedactor {
    in_key: bool,
    count: usize,
}

impl LineRedactor {
    pub fn new() -> LineRedactor {
        LineRedactor::default()
    }

    /// Whether a key block is open (a BEGIN without its END yet).
    pub fn in_key(&self) -> bool {
        self.in_key
    }

    /// How many lines were masked so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The line with key material masked (only the key-block pass; see [`Redactor::redact_entry`]).
    pub fn line(&mut self, line: &str) -> String {
        if self.in_key {
            self.count += 1;
            return match marker(line, false) {
                Some((_, end)) => {
                    self.in_key = false;
                    format!("{MASK}{}", &line[end..])
                }
                None => masked_message(line),
            };
        }
        if let Some((start, end)) = marker(line, true) {
            self.count += 1;
            // BEGIN and END on one line: the rules' `private_key` masks the block.
            if marker(&line[end..], false).is_some() {
                return line.to_owned();
            }
            self.in_key = true;
            return format!("{}{MASK}", &line[..start]);
        }
        if let Some((_, end)) = marker(line, false) {
            self.count += 1;
            return format!("{MASK}{}", &line[end..]);
        }
        if lone_key_line(line) {
            self.count += 1;
            return masked_message(line);
        }
        line.to_owned()
    }
}

/// The rules for the configured patterns: each compiles and none is empty.
fn configured_rules<S: AsRef<str>>(extra: &[S]) -> Result<Vec<Rule>, RedactError> {
    let mut rules = Vec::with_capacity(extra.len());
    for (i, p) in extra.iter().enumerate() {
        let p = p.as_ref();
        if p.is_empty() {
            return Err(RedactError { pattern: String::new(), reason: "an empty pattern matches everything".into() });
        }
        let re = Regex::new(p).map_err(|e| RedactError { pattern: p.to_owned(), reason: e.to_string() })?;
        rules.push(Rule { name: format!("configured_{i}"), re, keep: Keep::Nothing, accept: None });
    }
    Ok(rules)
}

impl Redactor {
    /// The built-in rules plus `extra` patterns from the configuration.
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Result<Redactor, RedactError> {
        let mut rules = Vec::with_capacity(BUILTIN.len() + extra.len() + 2);
        let compile = |pattern: &str| {
            Regex::new(pattern).map_err(|e| RedactError { pattern: pattern.to_owned(), reason: e.to_string() })
        };
        for (name, pattern, keep) in BUILTIN {
            let accept: Option<fn(&str) -> bool> = match *name {
                "bearer" => Some(looks_like_token),
                "argv_option" => Some(not_prose),
                _ => None,
            };
            rules.push(Rule { name: (*name).to_owned(), re: compile(pattern)?, keep: *keep, accept });
        }
        rules.push(Rule {
            name: "setting".into(),
            re: compile(&setting_pattern())?,
            keep: Keep::Prefix,
            accept: Some(not_a_path),
        });
        rules.push(Rule {
            name: "base64_run".into(),
            re: compile(&format!(r"\b(?:{PUBLIC_PREFIX})?{BASE64_RUN}"))?,
            keep: Keep::Nothing,
            accept: Some(|s: &str| !has_public_prefix(s) && looks_like_key_material(s)),
        });
        rules.extend(configured_rules(extra)?);
        // Without the set every rule scans the text on its own: slower, never less redaction.
        let set = RegexSet::new(rules.iter().map(|r| r.re.as_str())).ok();
        Ok(Redactor { rules, set })
    }

    /// Checks configured patterns the way [`Redactor::new`] would take them, without compiling the
    /// built-in rules (the configuration is validated before any redactor is built).
    pub fn check_patterns<S: AsRef<str>>(extra: &[S]) -> Result<(), RedactError> {
        configured_rules(extra).map(drop)
    }

    /// Only the built-in rules.
    pub fn builtin() -> Redactor {
        // The built-in patterns are constants that compile (tested); an empty set would only ever
        // under-redact, so fall back to compiling them one by one and skipping none silently.
        Redactor::new::<&str>(&[]).unwrap_or_else(|_| Redactor { rules: Vec::new(), set: None })
    }

    /// The names of the rules, for documentation and tests.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }

    /// The key-block pass over `lines`, with look-back: an END line without a BEGIN masks the
    /// key-body-like lines right above it.
    fn key_blocks<'a>(lines: impl Iterator<Item = &'a str>) -> (Vec<String>, usize) {
        let mut state = LineRedactor::new();
        let mut out: Vec<String> = Vec::new();
        let mut extra = 0;
        for line in lines {
            let was_in_key = state.in_key;
            let masked = state.line(line);
            if !was_in_key && marker(line, true).is_none() && marker(line, false).is_some() {
                // An END whose BEGIN came before what we were given: mask the body above it.
                for prev in out.iter_mut().rev() {
                    if split_message(prev).1 == MASK {
                        continue;
                    }
                    if !key_body_like(prev) {
                        break;
                    }
                    *prev = masked_message(prev);
                    extra += 1;
                }
            }
            out.push(masked);
        }
        let count = state.count() + extra;
        (out, count)
    }

    /// Applies the rules to text the key-block pass has seen.
    fn rules(&self, text: String, count: &mut usize) -> String {
        let mut out = text;
        let hits = self.set.as_ref().map(|set| set.matches(&out));
        for (i, rule) in self.rules.iter().enumerate() {
            let possible = match &hits {
                Some(h) => h.matched(i),
                None => rule.re.is_match(&out),
            };
            // A replacement only ever inserts the mask, so a rule that matched nothing before
            // cannot match after.
            if !possible || !rule.re.is_match(&out) {
                continue;
            }
            let replaced = rule.re.replace_all(&out, |c: &Captures<'_>| {
                let whole = c.get(0).map_or("", |m| m.as_str());
                if rule.accept.is_some_and(|ok| !ok(whole)) {
                    return whole.to_owned();
                }
                *count += 1;
                match (rule.keep, c.get(1)) {
                    (Keep::Prefix | Keep::UrlPrefix, Some(prefix)) => {
                        let value = &whole[prefix.as_str().len()..];
                        let tail = if rule.keep == Keep::UrlPrefix { "@" } else { "" };
                        match value.chars().next() {
                            Some(q @ ('"' | '\'')) if value.len() > 1 && value.ends_with(q) => {
                                format!("{}{q}{MASK}{q}", prefix.as_str())
                            }
                            _ => format!("{}{MASK}{tail}", prefix.as_str()),
                        }
                    }
                    _ => MASK.to_owned(),
                }
            });
            out = replaced.into_owned();
        }
        out
    }

    /// Masks every secret in `text` (lines separated by `\n`, kept as they are).
    pub fn redact(&self, text: &str) -> Redacted {
        // The line pass only when a line could hold key material (most text has none).
        let (text, mut count) = if text.contains("-----") || text.split('\n').any(lone_key_line) {
            let (lines, count) = Redactor::key_blocks(text.split('\n'));
            (lines.join("\n"), count)
        } else {
            (text.to_owned(), 0)
        };
        let text = self.rules(text, &mut count);
        Redacted { text, count }
    }

    /// Masks every secret in a sequence of entries (journal entries, one line each or several):
    /// a key split over entries is masked as if they were one text.
    pub fn redact_lines<S: AsRef<str>>(&self, entries: &[S]) -> Vec<String> {
        let joined: Vec<&str> = entries.iter().flat_map(|e| e.as_ref().split('\n')).collect();
        let (lines, _) = Redactor::key_blocks(joined.into_iter());
        let mut out = Vec::with_capacity(entries.len());
        let mut it = lines.into_iter();
        for e in entries {
            let n = e.as_ref().split('\n').count();
            let parts: Vec<String> = it.by_ref().take(n).collect();
            out.push(self.rules(parts.join("\n"), &mut 0));
        }
        out
    }

    /// One entry of a stream, with `state` carried from the entries before it.
    pub fn redact_entry(&self, state: &mut LineRedactor, entry: &str) -> String {
        let lines: Vec<String> = entry.split('\n').map(|l| state.line(l)).collect();
        self.rules(lines.join("\n"), &mut 0)
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
        assert_eq!(Redactor::builtin().rule_names().len(), BUILTIN.len() + 2);
        assert!(BEGIN_KEY.is_some() && END_KEY.is_some());
        assert!(Redactor::builtin().set.is_some());
    }

    #[test]
    fn a_key_logged_line_by_line_is_masked_from_begin_to_end() {
        let entries = [
            "2026-11-21T10:00:00+0000 web deploy[7]: loading key",
            "2026-11-21T10:00:00+0000 web deploy[7]: -----BEGIN RSA PRIVATE KEY-----",
            "2026-11-21T10:00:00+0000 web deploy[7]: MIIEowIBAAKCAQEA7xyzQWERTYuiop1234567890abcdEFGHijklMNOPqrstUV",
            "2026-11-21T10:00:00+0000 web deploy[7]: Zm9vYmFy",
            "2026-11-21T10:00:00+0000 web deploy[7]: -----END RSA PRIVATE KEY-----",
            "2026-11-21T10:00:01+0000 web deploy[7]: key loaded",
        ];
        let out = Redactor::builtin().redact_lines(&entries);
        assert_eq!(out[0], entries[0]);
        assert_eq!(out[5], entries[5]);
        for (i, line) in out.iter().enumerate().take(5).skip(1) {
            assert!(line.ends_with(MASK) || line.starts_with(MASK), "{i}: {line}");
        }
        assert!(!out.join("\n").contains("Zm9vYmFy"));
        // The same, one entry at a time.
        let red = Redactor::builtin();
        let mut state = LineRedactor::new();
        let streamed: Vec<String> = entries.iter().map(|e| red.redact_entry(&mut state, e)).collect();
        assert!(!streamed.join("\n").contains("Zm9vYmFy") && !streamed.join("\n").contains("MIIEow"));
        assert!(!state.in_key());
    }

    #[test]
    fn an_end_without_its_begin_masks_the_body_above_it() {
        let text = "app[1]: starting\napp[1]: QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\napp[1]: c2hvcnQ=\napp[1]: -----END PRIVATE KEY-----\napp[1]: done";
        let out = r(text);
        assert!(!out.contains("QUJDREVG") && !out.contains("c2hvcnQ"), "{out}");
        assert!(out.starts_with("app[1]: starting\n") && out.ends_with("app[1]: done"), "{out}");
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
