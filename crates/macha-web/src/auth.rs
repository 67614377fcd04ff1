//! Sessions, CSRF tokens, one-time login tokens and the `Origin` check.
//!
//! A session id is 256 random bits in an `HttpOnly; SameSite=Strict` cookie; the server keeps the
//! session (its user, for a TCP login) with an idle and an absolute expiry. The CSRF token of a
//! session is the HMAC-SHA256 of its id under a key the daemon draws at start and never writes
//! anywhere, so a token is worthless in another session and after a restart. A login token is
//! single-use, kept only as its SHA-256, and expires after five minutes.

use crate::User;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login token from `macha web login` is good for.
pub const LOGIN_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// The most sessions and pending tokens kept; the oldest go first beyond it.
const SESSIONS_MAX: usize = 4096;

/// The name of the session cookie.
pub const COOKIE: &str = "macha_session";

/// A failure to draw random bytes from the kernel.
#[derive(Debug, thiserror::Error)]
#[error("no randomness from the kernel: {0}")]
pub struct NoRandomness(String);

/// 32 random bytes from the kernel.
pub fn random_bytes() -> Result<[u8; 32], NoRandomness> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(b)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// A server-side session.
#[derive(Debug, Clone)]
struct Session {
    /// Who logged in with a token (TCP); `None` where each request says who it is (the Unix
    /// socket's peer credentials, a trusted proxy's header).
    user: Option<User>,
    created: Instant,
    used: Instant,
}

/// A login token not yet redeemed.
#[derive(Debug, Clone)]
struct Pending {
    user: User,
    expires: Instant,
}

/// The console's secrets and sessions.
#[derive(Debug)]
pub struct Auth {
    key: [u8; 32],
    idle: Duration,
    max: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    tokens: Mutex<HashMap<String, Pending>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Auth {
    /// A fresh key; sessions end after `idle` unused or `max` in all.
    pub fn new(idle: Duration, max: Duration) -> Result<Auth, NoRandomness> {
        Ok(Auth {
            key: random_bytes()?,
            idle,
            max,
            sessions: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a session (for `user` when a token was redeemed) and returns its id.
    pub fn open(&self, user: Option<User>, now: Instant) -> Result<String, NoRandomness> {
        let id = hex(&random_bytes()?);
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| self.alive(s, now));
        if sessions.len() >= SESSIONS_MAX
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Session { user, created: now, used: now });
        Ok(id)
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.used) < self.idle && now.duration_since(s.created) < self.max
    }

    /// Whether `id` names a live session, and its logged-in user; marks it used.
    pub fn session(&self, id: &str, now: Instant) -> Option<Option<User>> {
        let mut sessions = lock(&self.sessions);
        let alive = sessions.get(id).map(|s| self.alive(s, now))?;
        if !alive {
            sessions.remove(id);
            return None;
        }
        let s = sessions.get_mut(id)?;
        s.used = now;
        Some(s.user.clone())
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, session: &str) -> String {
        hex(&self.mac(session))
    }

    fn mac(&self, session: &str) -> Vec<u8> {
        // An HMAC key of any length is accepted; the error arm cannot happen with 32 bytes.
        match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mut m) => {
                m.update(b"macha-web csrf\0");
                m.update(session.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Whether `token` is the CSRF token of `session` (compared in constant time).
    pub fn csrf_ok(&self, session: &str, token: &str) -> bool {
        let want = self.mac(session);
        let Some(given) = unhex(token) else { return false };
        !want.is_empty()
            && given.len() == want.len()
            && want.iter().zip(&given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// A single-use login token for `user`, good for [`LOGIN_TOKEN_TTL`].
    pub fn mint(&self, user: User, now: Instant) -> Result<String, NoRandomness> {
        let token = hex(&random_bytes()?);
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, p| p.expires > now);
        if tokens.len() >= SESSIONS_MAX {
            return Ok(String::new());
        }
        tokens.insert(sha256_hex(&token), Pending { user, expires: now + LOGIN_TOKEN_TTL });
        Ok(token)
    }

    /// Redeems a login token: its user, once; `None` when unknown, used or expired.
    pub fn redeem(&self, token: &str, now: Instant) -> Option<User> {
        let pending = lock(&self.tokens).remove(&sha256_hex(token))?;
        (pending.expires > now).then_some(pending.user)
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether a state-changing request comes from the console's own pages: its `Origin` must be
/// present and name the host the request was sent to (`Host`, as the browser wrote it). A
/// missing, `null` or foreign origin is refused.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    let (Some(origin), Some(host)) = (origin, host) else { return false };
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
        return false;
    };
    !host.is_empty() && rest.eq_ignore_ascii_case(host)
}

/// The value of the cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The `Set-Cookie` value of a session.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use macha_api::Tier;

    fn auth() -> Auth {
        Auth::new(Duration::from_secs(60), Duration::from_secs(600)).unwrap()
    }

    fn alice() -> User {
        User { name: "alice".into(), tier: Tier::Admin }
    }

    #[test]
    fn a_csrf_token_is_good_only_for_its_own_session() {
        let a = auth();
        let now = Instant::now();
        let s1 = a.open(None, now).unwrap();
        let s2 = a.open(None, now).unwrap();
        assert_ne!(s1, s2);
        assert!(a.csrf_ok(&s1, &a.csrf(&s1)));
        assert!(!a.csrf_ok(&s2, &a.csrf(&s1)));
        assert!(!a.csrf_ok(&s1, ""));
        assert!(!a.csrf_ok(&s1, "zz"));
        // Another daemon (another key) does not accept this one's tokens.
        assert!(!auth().csrf_ok(&s1, &a.csrf(&s1)));
    }

    #[test]
    fn sessions_end_when_idle_and_at_their_absolute_expiry() {
        let a = auth();
        let t0 = Instant::now();
        let id = a.open(Some(alice()), t0).unwrap();
        assert_eq!(a.session(&id, t0 + Duration::from_secs(59)), Some(Some(alice())));
        // Used at 59 s: alive at 118 s, dead after 60 s more of idling.
        assert!(a.session(&id, t0 + Duration::from_secs(118)).is_some());
        assert!(a.session(&id, t0 + Duration::from_secs(179)).is_none());
        let id = a.open(None, t0).unwrap();
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_secs(30);
            if a.session(&id, t).is_none() {
                break;
            }
        }
        assert!(t <= t0 + Duration::from_secs(600), "the absolute expiry holds even when used");
        assert!(a.session("nope", t0).is_none());
    }

    #[test]
    fn a_login_token_works_once_and_expires() {
        let a = auth();
        let t0 = Instant::now();
        let token = a.mint(alice(), t0).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(a.redeem(&token, t0), Some(alice()));
        assert_eq!(a.redeem(&token, t0), None, "single use");
        let late = a.mint(alice(), t0).unwrap();
        assert_eq!(a.redeem(&late, t0 + LOGIN_TOKEN_TTL), None, "expired");
    }

    #[test]
    fn only_the_same_origin_passes() {
        assert!(same_origin(Some("http://localhost:8470"), Some("localhost:8470")));
        assert!(same_origin(Some("https://macha.example"), Some("macha.example")));
        assert!(!same_origin(None, Some("localhost:8470")));
        assert!(!same_origin(Some("null"), Some("localhost:8470")));
        assert!(!same_origin(Some("http://evil.example"), Some("localhost:8470")));
        assert!(!same_origin(Some("http://localhost:8470.evil"), Some("localhost:8470")));
        assert!(!same_origin(Some("http://localhost:8470"), None));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        assert_eq!(cookie("a=1; macha_session=abc; b=2", COOKIE), Some("abc"));
        assert_eq!(cookie("macha_sessionx=abc", COOKIE), None);
        assert!(set_cookie("x", true).ends_with("; Secure"));
        assert!(set_cookie("x", false).contains("HttpOnly; SameSite=Strict"));
    }
}
