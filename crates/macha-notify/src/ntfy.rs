//! ntfy: `POST <url>/<topic>` with the text as the body (at most 4,096 bytes) and the rest in
//! headers: `Title`, `Priority` (1 to 5, [`crate::Priority::ntfy`]), `Tags`, `Markdown: yes`,
//! `Click` and a view action to the link; an access token, if configured, as
//! `Authorization: Bearer`.

use crate::channel::{ChannelConfig, ChannelKind, HttpRequest, NotifyError, Secret, check_url, join_url};
use crate::limit::fit;
use crate::router::Outgoing;

/// Header values must be one line of visible text; anything else becomes a space.
fn header_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

/// The request that delivers `out` to the ntfy topic of `cfg`.
pub fn request(out: &Outgoing, cfg: &ChannelConfig, token: Option<&Secret>) -> Result<HttpRequest, NotifyError> {
    let ChannelKind::Ntfy { url, topic } = &cfg.kind else {
        return Err(NotifyError::Config { channel: cfg.name.clone(), reason: "not an ntfy channel".to_owned() });
    };
    check_url(&cfg.name, url)?;
    if topic.is_empty() || topic.len() > 64 || !topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(NotifyError::Config {
            channel: cfg.name.clone(),
            reason: format!("topic {topic:?} must be 1 to 64 letters, digits, - or _"),
        });
    }
    let (title, _) = fit(&header_text(&out.title), cfg.size.title);
    let body = crate::render_body(out, cfg.size.body);
    let mut headers = vec![
        ("Title".to_owned(), title),
        ("Priority".to_owned(), out.priority.ntfy().to_string()),
        ("Markdown".to_owned(), "yes".to_owned()),
        ("X-Macha-Message-Id".to_owned(), out.message_id.clone()),
    ];
    let tags: Vec<String> =
        out.tags.iter().map(|t| header_text(t).replace(',', " ")).filter(|t| !t.is_empty()).collect();
    if !tags.is_empty() {
        headers.push(("Tags".to_owned(), tags.join(",")));
    }
    if let Some(link) = &out.link {
        let link = header_text(link);
        headers.push(("Click".to_owned(), link.clone()));
        headers.push(("Actions".to_owned(), format!("view, Open, {link}")));
    }
    if let Some(token) = token {
        headers.push(("Authorization".to_owned(), format!("Bearer {}", token.expose())));
    }
    Ok(HttpRequest { method: "POST", url: join_url(url, topic), headers, body: body.into_bytes() })
}
