//! Sending one request over HTTP (reqwest, no proxy, no redirects, connect and overall timeouts)
//! and classifying the answer: delivered, retry later, or refused for good. The classification
//! and the backoff are pure functions.

use crate::channel::{HttpRequest, NotifyError};
use std::time::Duration;

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered,
    /// Try again: 429 (with its `Retry-After`, if any), 408, 5xx, a timeout, a connection error.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Retrying will not help: 400, 401, 403, 404, 413 and the other 4xx, a redirect.
    Permanent {
        status: u16,
        reason: String,
    },
}

/// The longest `Retry-After` honoured; a receiver asking for more is asked again after this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// Classifies an HTTP answer by its status and `Retry-After` header.
pub fn classify(status: u16, retry_after: Option<&str>, detail: &str) -> SendOutcome {
    let detail = detail.trim();
    let reason = |what: &str| {
        if detail.is_empty() { format!("{status} {what}") } else { format!("{status} {what}: {detail}") }
    };
    match status {
        200..=299 => SendOutcome::Delivered,
        429 => {
            SendOutcome::Retry { after: retry_after.and_then(parse_retry_after), reason: reason("Too Many Requests") }
        }
        408 => SendOutcome::Retry { after: None, reason: reason("Request Timeout") },
        500..=599 => {
            SendOutcome::Retry { after: retry_after.and_then(parse_retry_after), reason: reason("server error") }
        }
        300..=399 => SendOutcome::Permanent { status, reason: reason("redirect (not followed)") },
        401 | 403 => SendOutcome::Permanent { status, reason: reason("refused: check the token or key") },
        404 => SendOutcome::Permanent { status, reason: reason("Not Found: check the URL or topic") },
        413 => SendOutcome::Permanent { status, reason: reason("Payload Too Large") },
        _ => SendOutcome::Permanent { status, reason: reason("refused") },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: the backoff applies), capped at
/// [`RETRY_AFTER_MAX`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX))
}

/// The wait before attempt `attempt + 1` after `attempt` failures (1-based): 10 s doubled per
/// failure up to an hour, scaled by a jitter factor between 0.5 and 1 from `rng_value` (in
/// `[0, 1)`), so that many messages failing together do not come back together.
pub fn backoff(attempt: u32, rng_value: f64) -> Duration {
    let base = Duration::from_secs(10);
    let cap = Duration::from_secs(3600);
    let exp = attempt.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exp).min(cap);
    let jitter = 0.5 + 0.5 * rng_value.clamp(0.0, 1.0);
    full.mul_f64(jitter)
}

/// An HTTP client for one channel.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
}

/// The most of an error answer's body kept in the reason.
const DETAIL_MAX: usize = 200;

impl Sender {
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Sender, NotifyError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("macha/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Client(e.to_string()))?;
        Ok(Sender { client, timeout })
    }

    /// Sends `req` and classifies the answer.
    pub async fn send(&self, req: &HttpRequest) -> SendOutcome {
        let method = match reqwest::Method::from_bytes(req.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return SendOutcome::Permanent { status: 0, reason: format!("bad method {}", req.method) },
        };
        let mut builder = self.client.request(method, &req.url).timeout(self.timeout).body(req.body.clone());
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        let answer = match builder.send().await {
            Ok(a) => a,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                // reqwest's error text names the URL, which never carries a secret (check_url).
                return SendOutcome::Retry { after: None, reason: format!("{what}: {e}") };
            }
        };
        let status = answer.status().as_u16();
        let retry_after =
            answer.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let detail = if (200..300).contains(&status) {
            String::new()
        } else {
            match tokio::time::timeout(Duration::from_secs(2), answer.bytes()).await {
                Ok(Ok(b)) => {
                    let text = String::from_utf8_lossy(&b[..b.len().min(DETAIL_MAX * 4)]).into_owned();
                    crate::limit::fit(&text.replace(['\n', '\r'], " "), DETAIL_MAX).0
                }
                _ => String::new(),
            }
        };
        classify(status, retry_after.as_deref(), &detail)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, None, ""), SendOutcome::Delivered);
        assert_eq!(classify(204, None, ""), SendOutcome::Delivered);
        assert!(
            matches!(classify(429, Some("7"), ""), SendOutcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert!(matches!(
            classify(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), ""),
            SendOutcome::Retry { after: None, .. }
        ));
        assert!(
            matches!(classify(429, Some("999999"), ""), SendOutcome::Retry { after: Some(d), .. } if d == RETRY_AFTER_MAX)
        );
        assert!(matches!(classify(503, None, ""), SendOutcome::Retry { after: None, .. }));
        assert!(matches!(classify(408, None, ""), SendOutcome::Retry { .. }));
        for status in [400, 401, 403, 404, 413, 422, 302] {
            assert!(
                matches!(classify(status, None, "x"), SendOutcome::Permanent { status: s, .. } if s == status),
                "{status}"
            );
        }
        match classify(401, None, "invalid token") {
            SendOutcome::Permanent { reason, .. } => {
                assert!(reason.contains("invalid token") && reason.contains("401"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        assert_eq!(backoff(1, 0.999_999).as_secs(), 9);
        assert_eq!(backoff(1, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(2, 0.0), Duration::from_secs(10));
        assert_eq!(backoff(4, 0.0), Duration::from_secs(40));
        assert!(backoff(30, 0.999).as_secs() <= 3600);
        assert!(backoff(30, 0.0).as_secs() >= 1800);
        assert!(backoff(3, 0.2) < backoff(3, 0.8));
    }
}
