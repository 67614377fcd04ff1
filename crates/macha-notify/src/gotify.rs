//! Gotify: `POST <url>/message` with a JSON body; the application token only in the
//! `X-Gotify-Key` header, never in the URL; markdown and the click URL as `extras`; priorities 2,
//! 5 and 8 ([`crate::Priority::gotify`]).

use crate::channel::{ChannelConfig, ChannelKind, HttpRequest, NotifyError, Secret, check_url, join_url};
use crate::limit::fit;
use crate::router::Outgoing;

/// The request that delivers `out` to the Gotify server of `cfg`.
pub fn request(out: &Outgoing, cfg: &ChannelConfig, token: Option<&Secret>) -> Result<HttpRequest, NotifyError> {
    let ChannelKind::Gotify { url } = &cfg.kind else {
        return Err(NotifyError::Config { channel: cfg.name.clone(), reason: "not a Gotify channel".to_owned() });
    };
    check_url(&cfg.name, url)?;
    let token = token.ok_or_else(|| NotifyError::MissingSecret { channel: cfg.name.clone() })?;
    let (title, _) = fit(&out.title, cfg.size.title);
    let message = crate::render_body(out, cfg.size.body);
    let mut extras = serde_json::json!({
        "client::display": { "contentType": "text/markdown" },
    });
    if let Some(link) = &out.link {
        extras["client::notification"] = serde_json::json!({ "click": { "url": link } });
    }
    let json = serde_json::json!({
        "title": title,
        "message": message,
        "priority": out.priority.gotify(),
        "extras": extras,
    });
    Ok(HttpRequest {
        method: "POST",
        url: join_url(url, "message"),
        headers: vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Gotify-Key".to_owned(), token.expose().to_owned()),
        ],
        body: json.to_string().into_bytes(),
    })
}
