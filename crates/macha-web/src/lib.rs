//! Macha's web console: server-rendered pages over the daemon's own request handling, and the
//! approval card, as safe as the socket (docs/web.md, decision 0025).
//!
//! The crate knows nothing of the engine or the store: the daemon hands it a [`Daemon`], through
//! which every page asks the same questions the CLI asks over the socket (`macha-api` requests,
//! answered on the engine thread with the caller's tier). Pages are rendered with maud, which
//! escapes every interpolated value; there is no inline script or style, and the
//! `Content-Security-Policy` forbids both. GET never changes anything: every change is a POST
//! with a CSRF token, a same-origin `Origin` header and, for a decision, the digest of the exact
//! action the person saw.

pub mod assets;
pub mod auth;
pub mod pages;
mod server;

pub use server::{Console, serve_tcp, serve_unix};

use macha_api::{Request, Response, Tier};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, as [`Daemon::call`] returns it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Who is asking, once the console has decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name audit records carry (`alice (uid 1000) via web`).
    pub name: String,
    /// What this person may do: the socket's tiers.
    pub tier: Tier,
}

/// What the console audits besides the decisions the engine records itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A session began (a one-time token redeemed, or a proxy user seen for the first time).
    Login { user: String, how: String },
    /// A request was refused before it reached the daemon (CSRF, origin, proxy, token).
    Refused { who: String, what: String, why: String },
    /// A person asked to decide an approval from the console (the engine records the decision).
    Decision { user: String, approval_id: i64, verdict: String, note: Option<String> },
}

/// The daemon as the console sees it.
pub trait Daemon: Send + Sync + 'static {
    /// Answers one request as the socket answers it for a caller of `user`'s tier (the same
    /// functions on the engine thread; the daemon denies and audits what the tier does not allow).
    fn call(&self, user: &User, request: Request) -> BoxFuture<Response>;
    /// The person behind a local connection, by the kernel's credentials (the socket's tiers).
    fn local_user(&self, uid: u32, gid: u32) -> User;
    /// Records a login, refusal or decision in the audit trail.
    fn audit(&self, event: AuditEvent);
}

/// Where the console listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket (the default; reached with `ssh -L`), authorised by peer credentials.
    Unix(PathBuf),
    /// A TCP address: one-time-token logins and, from trusted proxies, the proxy's user header.
    Tcp(std::net::SocketAddr),
}

impl Listen {
    /// `unix:/run/macha/web.sock` or `127.0.0.1:8470`.
    pub fn parse(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("web.listen = {text:?}: a Unix socket path must be absolute"));
            }
            return Ok(Listen::Unix(path));
        }
        text.parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("web.listen = {text:?}: give unix:/absolute/path or an address with a port ({e})"))
    }
}

/// The console's settings (the `web.*` configuration keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: Listen,
    /// Peers whose `proxy_user_header` is believed; from anyone else the header is refused.
    pub trusted_proxies: Vec<IpAddr>,
    /// The header a trusted reverse proxy names its authenticated user in.
    pub proxy_user_header: Option<String>,
    /// Proxy users who are admins, and who are viewers; any other proxy user gets nothing.
    pub proxy_admins: Vec<String>,
    pub proxy_viewers: Vec<String>,
    /// A session ends after this long unused, and after `session_max` whatever happens.
    pub session_idle: Duration,
    pub session_max: Duration,
    /// Whether cookies are marked `Secure` (TLS in front of the console).
    pub secure_cookies: bool,
    /// Critical actions need two distinct admins.
    pub two_person: bool,
}

impl Settings {
    /// The defaults for `listen`.
    pub fn new(listen: Listen) -> Settings {
        Settings {
            listen,
            trusted_proxies: Vec::new(),
            proxy_user_header: None,
            proxy_admins: Vec::new(),
            proxy_viewers: Vec::new(),
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            two_person: false,
        }
    }
}
