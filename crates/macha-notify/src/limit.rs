//! Per-channel limits: a token bucket for the request rate, and size caps for titles and bodies
//! (cut at a UTF-8 boundary, saying how much was left out). Sans-IO: time is a parameter.

use macha_core::Timestamp;
use std::time::Duration;

/// A token bucket's shape: up to `burst` requests at once, one more every `refill_every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub refill_every: Duration,
}

impl RateLimit {
    /// ntfy's visitor bucket: 60 requests, refilled one per 5 s.
    pub const NTFY: RateLimit = RateLimit { burst: 60, refill_every: Duration::from_secs(5) };
    /// Gotify and webhooks: 30 requests, one more per 2 s.
    pub const DEFAULT: RateLimit = RateLimit { burst: 30, refill_every: Duration::from_secs(2) };
    /// No limit (the journal).
    pub const UNLIMITED: RateLimit = RateLimit { burst: u32::MAX, refill_every: Duration::from_millis(1) };
}

/// The state of one channel's bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: u32,
    /// When the last token was added (or the bucket started).
    refilled: Timestamp,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(limit: RateLimit, now: Timestamp) -> TokenBucket {
        TokenBucket { limit, tokens: limit.burst, refilled: now }
    }

    fn refill(&mut self, now: Timestamp) {
        let every = u64::try_from(self.limit.refill_every.as_millis()).unwrap_or(u64::MAX).max(1);
        if now <= self.refilled {
            // A clock stepped backwards: restart the refill from here.
            self.refilled = now;
            return;
        }
        let elapsed = u64::try_from(now.millis() - self.refilled.millis()).unwrap_or(0);
        let new = elapsed / every;
        if new == 0 {
            return;
        }
        let room = u64::from(self.limit.burst - self.tokens);
        if new >= room {
            self.tokens = self.limit.burst;
            self.refilled = now;
        } else {
            self.tokens += u32::try_from(new).unwrap_or(0);
            self.refilled = self.refilled.plus(Duration::from_millis(new * every));
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// The tokens left at `now`.
    pub fn available(&mut self, now: Timestamp) -> u32 {
        self.refill(now);
        self.tokens
    }

    /// When the next token will be there (`now` if there is one).
    pub fn next_token(&mut self, now: Timestamp) -> Timestamp {
        self.refill(now);
        if self.tokens > 0 { now } else { self.refilled.plus(self.limit.refill_every) }
    }

    /// Empties the bucket, as when the receiver answered 429: its own bucket is empty.
    pub fn drain(&mut self, now: Timestamp) {
        self.refill(now);
        self.tokens = 0;
    }
}

/// Size caps of a channel, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimit {
    pub title: usize,
    pub body: usize,
}

impl SizeLimit {
    /// ntfy refuses messages over 4,096 bytes (or turns them into attachments).
    pub const NTFY: SizeLimit = SizeLimit { title: 250, body: 4_096 };
    /// Gotify has no documented cap; phones show little, so 16 KiB.
    pub const GOTIFY: SizeLimit = SizeLimit { title: 250, body: 16 * 1024 };
    pub const WEBHOOK: SizeLimit = SizeLimit { title: 1_000, body: 64 * 1024 };
    pub const JOURNAL: SizeLimit = SizeLimit { title: 1_000, body: 16 * 1024 };
}

/// `text` cut to at most `max` bytes at a UTF-8 boundary; a cut text ends with
/// "… (truncated, N bytes more)" within the limit. Returns the text and whether it was cut.
pub fn fit(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_owned(), false);
    }
    // The marker's length depends on the number it carries; two rounds settle it.
    let mut keep = max;
    for _ in 0..3 {
        let marker = format!("… (truncated, {} bytes more)", text.len() - keep);
        let room = max.saturating_sub(marker.len());
        let cut = floor_char_boundary(text, room);
        if cut == keep {
            break;
        }
        keep = cut;
    }
    let marker = format!("… (truncated, {} bytes more)", text.len() - keep);
    if marker.len() > max {
        // No room even for the marker: cut the text alone.
        let cut = floor_char_boundary(text, max);
        return (text[..cut].to_owned(), true);
    }
    (format!("{}{marker}", &text[..keep]), true)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ntfy_bucket_allows_a_burst_of_60_then_one_per_5_s() {
        let t0 = Timestamp(1_000_000);
        let mut b = TokenBucket::new(RateLimit::NTFY, t0);
        let sent = (0..100).filter(|_| b.try_take(t0)).count();
        assert_eq!(sent, 60);
        assert_eq!(b.next_token(t0), t0.plus(Duration::from_secs(5)));
        assert!(!b.try_take(t0.plus(Duration::from_millis(4_999))));
        assert!(b.try_take(t0.plus(Duration::from_secs(5))));
        assert!(!b.try_take(t0.plus(Duration::from_secs(6))));
        // A minute later, 12 tokens.
        assert_eq!(b.available(t0.plus(Duration::from_secs(65))), 12);
        // An hour later, full again and not more.
        assert_eq!(b.available(t0.plus(Duration::from_secs(3_600))), 60);
        b.drain(t0.plus(Duration::from_secs(3_600)));
        assert!(!b.try_take(t0.plus(Duration::from_secs(3_601))));
    }

    #[test]
    fn fit_cuts_at_a_char_boundary_and_says_how_much() {
        assert_eq!(fit("short", 10), ("short".to_owned(), false));
        let text = "é".repeat(3_000); // 6,000 bytes
        let (cut, was_cut) = fit(&text, 4_096);
        assert!(was_cut);
        assert!(cut.len() <= 4_096, "{}", cut.len());
        assert!(cut.len() > 4_000, "{}", cut.len());
        let kept = cut.split('…').next().unwrap().len();
        assert!(cut.ends_with(&format!("(truncated, {} bytes more)", 6_000 - kept)), "{cut}");
        // Tiny limits still give valid UTF-8 within the limit.
        let (tiny, _) = fit(&text, 5);
        assert!(tiny.len() <= 5);
    }
}
