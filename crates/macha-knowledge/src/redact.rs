//! Secrets out of the index: attribute names that hold secrets, and `key = value` lines inside
//! strings (pure functions over text).
//!
//! The daemon's redactor lives in `macha-agent`, which this crate may not depend on (it depends
//! on `macha-core` and `macha-store` at most), so this is a small one for configuration text. It
//! errs on the side of masking: a masked public key costs little, a leaked password a lot.

use regex::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

/// What replaces a secret value.
pub const MASK: &str = "«redacted»";

/// Words that make an attribute name a secret's name (case-insensitive, anywhere in the name).
const SECRET_WORDS: &[&str] =
    &["password", "passwd", "passphrase", "secret", "token", "key", "psk", "credential", "apikey", "auth_pass"];

/// Name endings that point to a secret instead of holding it (`passwordFile`, `keyFile`,
/// `environmentFile`), and names that only look like secrets (`keyMap`).
const REFERENCE_SUFFIXES: &[&str] = &["file", "files", "path", "paths", "dir", "command", "cmd"];
const NOT_SECRETS: &[&str] = &["keymap", "keyboard", "keys", "xkb", "keybindings", "keyring"];

/// True when an attribute name names a secret value.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.trim_matches('"').to_ascii_lowercase();
    if NOT_SECRETS.contains(&lower.as_str()) {
        return false;
    }
    if REFERENCE_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
        return false;
    }
    SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// True when any component of an attribute path names a secret.
pub fn is_secret_path<S: AsRef<str>>(path: &[S]) -> bool {
    path.iter().any(|c| is_secret_name(c.as_ref()))
}

static ASSIGNMENT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b([A-Za-z0-9_.-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|private[_-]?key|psk|auth_pass)[A-Za-z0-9_.-]*)(\s*[:=]\s*|\s+)("[^"]*"|'[^']*'|[^\s;,]+)"#,
    )
    .ok()
});

static PEM: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\z)").ok()
});

/// Masks `name = value`, `name: value` and `name value` where the name looks like a secret's,
/// and private key blocks, inside free text (multi-line strings, `extraConfig`).
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if let Some(re) = PEM.as_ref()
        && re.is_match(&out)
    {
        out = Cow::Owned(re.replace_all(&out, MASK).into_owned());
    }
    if let Some(re) = ASSIGNMENT.as_ref()
        && re.is_match(&out)
    {
        let replaced = re
            .replace_all(&out, |c: &regex::Captures<'_>| {
                let name = c.get(1).map_or("", |m| m.as_str());
                let sep = c.get(2).map_or("", |m| m.as_str());
                let value = c.get(3).map_or("", |m| m.as_str());
                // A reference to a secret (a file, a variable, a Nix expression) stays readable.
                let reference = value.starts_with('/')
                    || value.starts_with('$')
                    || value.starts_with("config.")
                    || value.starts_with("\"/")
                    || value.starts_with("\"$")
                    || value == "="
                    || !is_secret_name(name)
                    || (sep.trim().is_empty() && !sep.is_empty() && value.len() < 8);
                if reference { c[0].to_owned() } else { format!("{name}{sep}{MASK}") }
            })
            .into_owned();
        out = Cow::Owned(replaced);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in ["password", "hashedPassword", "initialPassword", "secretKey", "apiToken", "wireguardPsk", "\"token\""]
        {
            assert!(is_secret_name(n), "{n}");
        }
        for n in
            ["passwordFile", "hashedPasswordFile", "keyFile", "environmentFile", "keyMap", "enable", "keys", "port"]
        {
            assert!(!is_secret_name(n), "{n}");
        }
        assert!(is_secret_path(&["services", "grafana", "settings", "security", "admin_password"]));
        assert!(!is_secret_path(&["services", "nginx", "enable"]));
    }

    #[test]
    fn free_text_is_masked() {
        let t = "user=app\npassword = hunter2hunter2\nsmtp_token: abcdef123456\nhost = db";
        let r = redact_text(t);
        assert!(!r.contains("hunter2"), "{r}");
        assert!(!r.contains("abcdef123456"), "{r}");
        assert!(r.contains("user=app") && r.contains("host = db"));
        let pem = "a\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAB3Nza\n-----END OPENSSH PRIVATE KEY-----\nb";
        let r = redact_text(pem);
        assert!(!r.contains("AAAAB3Nza") && r.contains(MASK), "{r}");
    }

    #[test]
    fn references_stay() {
        let t = "password_file = /run/secrets/db\nsecret = $SECRET_FROM_ENV";
        assert_eq!(redact_text(t), t);
    }
}
