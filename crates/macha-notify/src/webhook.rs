//! A generic webhook: `POST <url>` with the message as JSON, signed: `X-Macha-Signature:
//! sha256=<hex HMAC-SHA256 of the body>` with the key from the secret file, and the message id in
//! `X-Macha-Message-Id` so the receiver can drop a resend.

use crate::channel::{ChannelConfig, ChannelKind, HttpRequest, NotifyError, Secret, check_url};
use crate::limit::fit;
use crate::router::Outgoing;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Checks a `X-Macha-Signature` value against `body` in constant time.
pub fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else { return false };
    let Some(tag) = decode_hex(hex) else { return false };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else { return false };
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The request that delivers `out` to the webhook of `cfg`; unsigned without a key.
pub fn request(out: &Outgoing, cfg: &ChannelConfig, key: Option<&Secret>) -> Result<HttpRequest, NotifyError> {
    let ChannelKind::Webhook { url } = &cfg.kind else {
        return Err(NotifyError::Config { channel: cfg.name.clone(), reason: "not a webhook channel".to_owned() });
    };
    check_url(&cfg.name, url)?;
    let (title, _) = fit(&out.title, cfg.size.title);
    let (body, _) = fit(&out.body, cfg.size.body);
    let json = serde_json::json!({
        "message_id": out.message_id,
        "kind": out.kind,
        "severity": out.severity,
        "priority": out.priority,
        "host": out.host,
        "group_key": out.group_key,
        "title": title,
        "body": body,
        "link": out.link,
        "tags": out.tags,
        "why": out.why,
        "at": out.at,
    });
    let body = json.to_string().into_bytes();
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Macha-Message-Id".to_owned(), out.message_id.clone()),
    ];
    if let Some(key) = key {
        headers.push(("X-Macha-Signature".to_owned(), signature(key.expose().as_bytes(), &body)));
    }
    Ok(HttpRequest { method: "POST", url: url.clone(), headers, body })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = signature(b"k", b"body");
        assert!(verify(b"k", b"body", &sig));
        assert!(!verify(b"k", b"body!", &sig));
        assert!(!verify(b"other", b"body", &sig));
        assert!(!verify(b"k", b"body", "sha256=zz"));
    }
}
