//! A configured channel: where it sends, its secret (read from a file, never printed), which
//! events it takes, and its limits; and the plain HTTP request the channel builders produce.

use crate::event::{EventKind, Severity};
use crate::limit::{RateLimit, SizeLimit};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What kind of receiver a channel talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// A Gotify server: `POST <url>/message` with the application token in `X-Gotify-Key`.
    Gotify { url: String },
    /// An ntfy server: `POST <url>/<topic>`; an access token, if any, as `Authorization: Bearer`.
    Ntfy { url: String, topic: String },
    /// A generic webhook: `POST <url>` with a JSON body signed with HMAC-SHA256.
    Webhook { url: String },
    /// The systemd journal (a `tracing` event): always there, needs nothing.
    Journal,
}

impl ChannelKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Gotify { .. } => "gotify",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Journal => "journal",
        }
    }
}

/// Which events a channel takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFilter {
    /// Events below this severity are not sent on the channel.
    pub min_severity: Severity,
    /// Only these kinds; `None` takes every kind.
    pub kinds: Option<Vec<EventKind>>,
}

impl Default for ChannelFilter {
    fn default() -> Self {
        ChannelFilter { min_severity: Severity::Info, kinds: None }
    }
}

impl ChannelFilter {
    pub fn accepts(&self, kind: EventKind, severity: Severity) -> bool {
        severity >= self.min_severity && self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

/// The path of a file holding a secret (a token, an HMAC key). The secret is read when it is
/// needed ([`SecretFile::read`]), so a rotated file is picked up without a restart.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile(pub PathBuf);

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({})", self.0.display())
    }
}

impl SecretFile {
    pub fn new(path: impl Into<PathBuf>) -> SecretFile {
        SecretFile(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Reads the secret: the file's text without surrounding white space. An empty file is an
    /// error, as is one larger than 64 KiB.
    pub fn read(&self) -> Result<Secret, NotifyError> {
        let unreadable = |reason: String| NotifyError::Secret { path: self.0.clone(), reason };
        let meta = std::fs::metadata(&self.0).map_err(|e| unreadable(e.to_string()))?;
        if meta.len() > 64 * 1024 {
            return Err(unreadable(format!("{} bytes; a secret file holds at most 64 KiB", meta.len())));
        }
        let text = std::fs::read_to_string(&self.0).map_err(|e| unreadable(e.to_string()))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(unreadable("the file is empty".to_owned()));
        }
        if text.contains(['\r', '\n']) {
            return Err(unreadable("the secret spans several lines".to_owned()));
        }
        Ok(Secret(text.to_owned()))
    }
}

/// A secret's value. Its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One configured channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    /// The name messages are routed and queued by (`gotify`, `ntfy-ops`, …).
    pub name: String,
    pub kind: ChannelKind,
    /// The token (Gotify's application token, ntfy's access token) or the webhook's HMAC key.
    pub secret: Option<SecretFile>,
    pub filter: ChannelFilter,
    pub rate: RateLimit,
    pub size: SizeLimit,
    /// Longest wait for the connection.
    pub connect_timeout: Duration,
    /// Longest wait for the whole request and its answer.
    pub timeout: Duration,
}

impl ChannelConfig {
    /// A channel of `kind` with the defaults of its kind: every event, the kind's rate and size
    /// limits, 5 s to connect and 15 s for the request.
    pub fn new(name: impl Into<String>, kind: ChannelKind) -> ChannelConfig {
        let (rate, size) = match &kind {
            ChannelKind::Ntfy { .. } => (RateLimit::NTFY, SizeLimit::NTFY),
            ChannelKind::Gotify { .. } => (RateLimit::DEFAULT, SizeLimit::GOTIFY),
            ChannelKind::Webhook { .. } => (RateLimit::DEFAULT, SizeLimit::WEBHOOK),
            ChannelKind::Journal => (RateLimit::UNLIMITED, SizeLimit::JOURNAL),
        };
        ChannelConfig {
            name: name.into(),
            kind,
            secret: None,
            filter: ChannelFilter::default(),
            rate,
            size,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }

    pub fn with_secret(mut self, secret: SecretFile) -> ChannelConfig {
        self.secret = Some(secret);
        self
    }

    pub fn with_filter(mut self, filter: ChannelFilter) -> ChannelConfig {
        self.filter = filter;
        self
    }
}

/// A request to send, as data: what the channel builders return and the sender sends.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Headers whose values are secrets, masked in `Debug`.
const SECRET_HEADERS: [&str; 3] = ["x-gotify-key", "authorization", "x-macha-signature"];

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let secret = SECRET_HEADERS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl HttpRequest {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A secret file could not be read.
    #[error("cannot read the secret file {path}: {reason}")]
    Secret { path: PathBuf, reason: String },
    /// The channel needs a secret and has none configured.
    #[error("channel {channel} needs a secret file and has none")]
    MissingSecret { channel: String },
    /// The channel's configuration cannot make a request.
    #[error("channel {channel}: {reason}")]
    Config { channel: String, reason: String },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    Store(#[from] macha_store::StoreError),
}

/// Joins a base URL and a path segment with exactly one slash.
pub(crate) fn join_url(base: &str, segment: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), segment.trim_start_matches('/'))
}

/// Refuses a URL that carries a query or credentials: the token goes in a header, never in the
/// URL (where proxies and access logs would keep it).
pub(crate) fn check_url(channel: &str, url: &str) -> Result<(), NotifyError> {
    let bad = |reason: &str| NotifyError::Config { channel: channel.to_owned(), reason: reason.to_owned() };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("the URL must start with http:// or https://"))?;
    if url.starts_with("https://") && !cfg!(feature = "tls") {
        return Err(bad("this build has no TLS (feature `tls` of macha-notify); an https URL cannot be reached"));
    }
    if rest.contains('?') || rest.contains('#') {
        return Err(bad("the URL must not carry a query or fragment (a token goes in the secret file)"));
    }
    if rest.split('/').next().is_some_and(|authority| authority.contains('@')) {
        return Err(bad("the URL must not carry credentials (a token goes in the secret file)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        let req = HttpRequest {
            method: "POST",
            url: "http://x/message".into(),
            headers: vec![("X-Gotify-Key".into(), "hunter2".into()), ("Title".into(), "t".into())],
            body: vec![],
        };
        let printed = format!("{req:?}");
        assert!(!printed.contains("hunter2") && printed.contains("***") && printed.contains("Title"), "{printed}");
    }

    #[test]
    fn secret_files_are_read_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  abc123\n").unwrap();
        assert_eq!(SecretFile::new(&path).read().unwrap().expose(), "abc123");
        std::fs::write(&path, "\n").unwrap();
        assert!(SecretFile::new(&path).read().is_err());
        std::fs::write(&path, "a\nb").unwrap();
        assert!(SecretFile::new(&path).read().is_err());
        assert!(SecretFile::new(dir.path().join("missing")).read().is_err());
    }

    #[test]
    fn urls_with_queries_or_credentials_are_refused() {
        assert_eq!(check_url("g", "https://gotify.example/").is_ok(), cfg!(feature = "tls"));
        assert!(check_url("g", "http://gotify.example/").is_ok());
        assert!(check_url("g", "https://gotify.example/message?token=abc").is_err());
        assert!(check_url("g", "https://user:pw@gotify.example").is_err());
        assert!(check_url("g", "ftp://gotify.example").is_err());
        assert_eq!(join_url("http://a/", "/message"), "http://a/message");
    }

    #[test]
    fn filters_take_severity_and_kinds() {
        let f = ChannelFilter { min_severity: Severity::Warning, kinds: Some(vec![EventKind::IssueOpened]) };
        assert!(f.accepts(EventKind::IssueOpened, Severity::Critical));
        assert!(!f.accepts(EventKind::IssueOpened, Severity::Info));
        assert!(!f.accepts(EventKind::Deployment, Severity::Critical));
    }
}
