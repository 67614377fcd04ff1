//! The channels against the fake receivers: what goes over the wire (headers, body, priority,
//! markdown and click extras, signatures), and how answers are classified (delivered, retry,
//! permanent); the deliverer's order under retry and its rate limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use macha_core::Timestamp;
use macha_notify::testing::{FakeServer, Mode, NTFY_MESSAGE_MAX};
use macha_notify::{
    ChannelConfig, ChannelKind, Deliverer, EventKind, HttpRequest, Outgoing, Priority, RateLimit, Secret, SecretFile,
    SendOutcome, Sender, Severity, enqueue, gotify, ntfy, webhook,
};
use macha_store::{OutboxState, Store};
use std::time::Duration;

fn out(id: &str, priority: Priority) -> Outgoing {
    Outgoing {
        message_id: id.to_owned(),
        channel: "c".to_owned(),
        title: "nginx.service failed on web1".to_owned(),
        body: "**nginx** exited with status 1.".to_owned(),
        priority,
        link: Some("https://macha.example/issues/7".to_owned()),
        tags: vec!["rotating_light".to_owned(), "issue_opened".to_owned()],
        why: "critical issue opened; sent at once (critical group_wait 0)".to_owned(),
        host: "web1".to_owned(),
        group_key: "web1/unit/nginx.service".to_owned(),
        kind: EventKind::IssueOpened,
        severity: Severity::Critical,
        at: Timestamp(1_700_000_000_000),
    }
}

fn sender() -> Sender {
    Sender::new(Duration::from_secs(2), Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn gotify_gets_the_token_in_the_header_markdown_and_the_click_url() {
    let server = FakeServer::gotify("AppToken.1").await.unwrap();
    let cfg = ChannelConfig::new("gotify", ChannelKind::Gotify { url: server.url() });
    for (p, expected) in [(Priority::Low, 2), (Priority::Medium, 5), (Priority::High, 8)] {
        let req = gotify::request(&out("m-1", p), &cfg, Some(&Secret::new("AppToken.1"))).unwrap();
        assert!(!req.url.contains("AppToken"), "{}", req.url);
        assert_eq!(sender().send(&req).await, SendOutcome::Delivered);
        let got = server.accepted().pop().unwrap();
        assert_eq!((got.method.as_str(), got.path.as_str(), got.query.as_deref()), ("POST", "/message", None));
        assert_eq!(got.header("x-gotify-key"), Some("AppToken.1"));
        let json = got.json().unwrap();
        assert_eq!(json["priority"], expected);
        assert_eq!(json["title"], "nginx.service failed on web1");
        assert_eq!(json["extras"]["client::display"]["contentType"], "text/markdown");
        assert_eq!(json["extras"]["client::notification"]["click"]["url"], "https://macha.example/issues/7");
        let message = json["message"].as_str().unwrap();
        assert!(
            message.starts_with("**nginx** exited")
                && message.ends_with("_Why: critical issue opened; sent at once (critical group_wait 0)_"),
            "{message}"
        );
    }
    // A wrong token is refused for good.
    let req = gotify::request(&out("m-2", Priority::High), &cfg, Some(&Secret::new("wrong"))).unwrap();
    assert!(matches!(sender().send(&req).await, SendOutcome::Permanent { status: 401, .. }));
    // The stand-in refuses a token in the query string, even the right one.
    let mut leaky = req.clone();
    leaky.url.push_str("?token=AppToken.1");
    leaky.headers.retain(|(k, _)| k != "X-Gotify-Key");
    assert!(matches!(sender().send(&leaky).await, SendOutcome::Permanent { status: 401, .. }));
    // And the builder never makes one: no secret, no request; a URL with a query is refused.
    assert!(gotify::request(&out("m-3", Priority::High), &cfg, None).is_err());
    let bad = ChannelConfig::new("gotify", ChannelKind::Gotify { url: format!("{}/?token=x", server.url()) });
    assert!(gotify::request(&out("m-3", Priority::High), &bad, Some(&Secret::new("x"))).is_err());
}

#[tokio::test]
async fn ntfy_gets_headers_priorities_view_actions_and_a_body_within_4096_bytes() {
    let server = FakeServer::ntfy(Some("tk_ops")).await.unwrap();
    let cfg = ChannelConfig::new("ntfy", ChannelKind::Ntfy { url: server.url(), topic: "macha-ops".into() });
    for (p, expected) in [(Priority::Low, "2"), (Priority::Medium, "4"), (Priority::High, "5")] {
        let req = ntfy::request(&out("m-1", p), &cfg, Some(&Secret::new("tk_ops"))).unwrap();
        assert_eq!(sender().send(&req).await, SendOutcome::Delivered);
        let got = server.accepted().pop().unwrap();
        assert_eq!(got.path, "/macha-ops");
        assert_eq!(got.header("priority"), Some(expected));
        assert_eq!(got.header("title"), Some("nginx.service failed on web1"));
        assert_eq!(got.header("markdown"), Some("yes"));
        assert_eq!(got.header("tags"), Some("rotating_light,issue_opened"));
        assert_eq!(got.header("click"), Some("https://macha.example/issues/7"));
        assert_eq!(got.header("actions"), Some("view, Open, https://macha.example/issues/7"));
        assert_eq!(got.header("x-macha-message-id"), Some("m-1"));
        assert_eq!(got.header("authorization"), Some("Bearer tk_ops"));
    }
    // A long body is cut to fit, with the why kept.
    let mut long = out("m-long", Priority::High);
    long.body = "ü".repeat(5_000);
    let req = ntfy::request(&long, &cfg, Some(&Secret::new("tk_ops"))).unwrap();
    assert!(req.body.len() <= NTFY_MESSAGE_MAX, "{}", req.body.len());
    assert_eq!(sender().send(&req).await, SendOutcome::Delivered);
    let text = String::from_utf8(server.accepted().pop().unwrap().body).unwrap();
    assert!(text.contains("bytes more)") && text.contains("_Why: "), "{}", &text[text.len() - 200..]);
    // What the server answers to a body over its limit: 413, permanent.
    let mut big = req.clone();
    big.body = vec![b'x'; NTFY_MESSAGE_MAX + 1];
    assert!(matches!(sender().send(&big).await, SendOutcome::Permanent { status: 413, .. }));
    // A wrong access token: 403, permanent.
    let req = ntfy::request(&out("m-2", Priority::Low), &cfg, Some(&Secret::new("nope"))).unwrap();
    assert!(matches!(sender().send(&req).await, SendOutcome::Permanent { status: 403, .. }));
}

#[tokio::test]
async fn ntfy_visitor_bucket_answers_429_after_60_requests() {
    let server = FakeServer::ntfy(None).await.unwrap();
    let cfg = ChannelConfig::new("ntfy", ChannelKind::Ntfy { url: server.url(), topic: "t".into() });
    let req = ntfy::request(&out("m", Priority::Low), &cfg, None).unwrap();
    let s = sender();
    let mut delivered = 0;
    let mut limited = 0;
    for _ in 0..65 {
        match s.send(&req).await {
            SendOutcome::Delivered => delivered += 1,
            SendOutcome::Retry { reason, .. } if reason.starts_with("429") => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((delivered, limited), (60, 5));
}

#[tokio::test]
async fn webhooks_are_signed_and_a_bad_key_is_refused() {
    let server = FakeServer::webhook(Some(b"k3y")).await.unwrap();
    let cfg = ChannelConfig::new("hook", ChannelKind::Webhook { url: format!("{}/macha", server.url()) });
    let req = webhook::request(&out("m-9", Priority::Medium), &cfg, Some(&Secret::new("k3y"))).unwrap();
    assert_eq!(sender().send(&req).await, SendOutcome::Delivered);
    let got = server.accepted().pop().unwrap();
    assert_eq!(got.header("x-macha-message-id"), Some("m-9"));
    assert!(webhook::verify(b"k3y", &got.body, got.header("x-macha-signature").unwrap()));
    let json = got.json().unwrap();
    assert_eq!(
        (json["message_id"].as_str(), json["priority"].as_str(), json["kind"].as_str()),
        (Some("m-9"), Some("medium"), Some("issue_opened"))
    );
    assert_eq!(json["why"], "critical issue opened; sent at once (critical group_wait 0)");
    let wrong = webhook::request(&out("m-9", Priority::Medium), &cfg, Some(&Secret::new("other"))).unwrap();
    assert!(matches!(sender().send(&wrong).await, SendOutcome::Permanent { status: 401, .. }));
    let unsigned = webhook::request(&out("m-9", Priority::Medium), &cfg, None).unwrap();
    assert!(unsigned.header("x-macha-signature").is_none());
    assert!(matches!(sender().send(&unsigned).await, SendOutcome::Permanent { status: 401, .. }));
}

#[tokio::test]
async fn server_errors_rate_limits_stalls_and_refused_connections_are_retried() {
    let server = FakeServer::webhook(None).await.unwrap();
    let cfg = ChannelConfig::new("hook", ChannelKind::Webhook { url: server.url() });
    let req = webhook::request(&out("m", Priority::Low), &cfg, None).unwrap();
    server.script([
        Mode::Status { status: 503, retry_after: None },
        Mode::Status { status: 429, retry_after: Some(17) },
        Mode::Stall(Duration::from_secs(5)),
    ]);
    let s = Sender::new(Duration::from_secs(1), Duration::from_millis(500)).unwrap();
    assert!(matches!(s.send(&req).await, SendOutcome::Retry { after: None, ref reason } if reason.starts_with("503")));
    assert!(matches!(s.send(&req).await, SendOutcome::Retry { after: Some(d), .. } if d == Duration::from_secs(17)));
    assert!(
        matches!(s.send(&req).await, SendOutcome::Retry { ref reason, .. } if reason.starts_with("timed out")),
        "stall"
    );
    assert_eq!(s.send(&req).await, SendOutcome::Delivered);
    let closed = HttpRequest { url: "http://127.0.0.1:9/".into(), ..req };
    assert!(matches!(s.send(&closed).await, SendOutcome::Retry { .. }));
}

fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> SecretFile {
    let path = dir.path().join(name);
    std::fs::write(&path, value).unwrap();
    SecretFile::new(path)
}

#[tokio::test]
async fn the_deliverer_keeps_order_per_channel_behind_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("macha.db")).unwrap();
    let hook = FakeServer::webhook(Some(b"key")).await.unwrap();
    let gotify = FakeServer::gotify("tok").await.unwrap();
    let channels = vec![
        ChannelConfig::new("hook", ChannelKind::Webhook { url: hook.url() })
            .with_secret(secret_file(&dir, "k", "key\n")),
        ChannelConfig::new("gotify", ChannelKind::Gotify { url: gotify.url() })
            .with_secret(secret_file(&dir, "t", "tok")),
    ];
    let t0 = Timestamp(1_700_000_000_000);
    let mut d = Deliverer::new(channels, t0).unwrap();
    let mut msgs = Vec::new();
    for i in 1..=3 {
        for ch in ["hook", "gotify"] {
            msgs.push(Outgoing { channel: ch.into(), ..out(&format!("m-{i}"), Priority::High) });
        }
    }
    assert_eq!(enqueue(&mut store, &msgs, &["journal"]).unwrap(), 6);
    assert_eq!(enqueue(&mut store, &msgs, &["journal"]).unwrap(), 0, "idempotent");
    // The first webhook message meets a 503: the other two wait behind it; gotify goes on.
    hook.script([Mode::Status { status: 503, retry_after: None }]);
    let r = d.deliver_once(&mut store, t0).await.unwrap();
    assert_eq!((r.sent, r.retried, r.dead), (3, 1, 0), "{r:?}");
    assert_eq!(r.failed_channels, ["hook"], "{r:?}");
    assert_eq!(hook.accepted().len(), 0);
    assert_eq!(gotify.accepted().len(), 3);
    // Before its retry is due nothing of the webhook goes, even though m-2 and m-3 are queued.
    let r = d.deliver_once(&mut store, t0.plus(Duration::from_secs(2))).await.unwrap();
    assert_eq!((r.sent, r.retried), (0, 0));
    assert_eq!(hook.received().len(), 1);
    // After the backoff (at most 10 s for the first failure), all three in order.
    let r = d.deliver_once(&mut store, t0.plus(Duration::from_secs(11))).await.unwrap();
    assert_eq!(r.sent, 3, "{r:?}");
    let ids: Vec<String> = hook.accepted().iter().map(|r| r.header("x-macha-message-id").unwrap().to_owned()).collect();
    assert_eq!(ids, ["m-1", "m-2", "m-3"]);
    assert_eq!(store.outbox_pending_count().unwrap(), 0);
}

#[tokio::test]
async fn the_deliverer_gives_up_on_a_permanent_refusal_and_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("macha.db")).unwrap();
    let gotify = FakeServer::gotify("right").await.unwrap();
    let channels = vec![
        ChannelConfig::new("gotify", ChannelKind::Gotify { url: gotify.url() })
            .with_secret(secret_file(&dir, "t", "wrong")),
    ];
    let t0 = Timestamp(1_700_000_000_000);
    let mut d = Deliverer::new(channels, t0).unwrap();
    let msgs = vec![
        Outgoing { channel: "gotify".into(), ..out("m-1", Priority::High) },
        Outgoing { channel: "gotify".into(), ..out("m-2", Priority::High) },
        Outgoing { channel: "gone".into(), ..out("m-3", Priority::High) },
    ];
    enqueue(&mut store, &msgs, &[]).unwrap();
    let r = d.deliver_once(&mut store, t0).await.unwrap();
    assert_eq!((r.sent, r.retried, r.dead), (0, 0, 3), "{r:?}");
    assert_eq!(r.failed_channels, ["gotify", "gotify", "gone"], "{r:?}");
    let log = store.outbox_log(&macha_store::OutboxFilter { failed_only: true, ..Default::default() }).unwrap();
    assert!(log.iter().all(|r| r.state == OutboxState::Dead));
    assert!(log.iter().any(|r| r.last_error.as_deref().is_some_and(|e| e.contains("no longer configured"))));
    let alerts = store
        .query_audit(&macha_store::AuditQuery { kinds: vec![macha_store::AuditKind::Alert], ..Default::default() })
        .unwrap();
    assert_eq!(alerts.len(), 3);
}

#[tokio::test]
async fn the_deliverer_respects_the_channel_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path().join("macha.db")).unwrap();
    let server = FakeServer::ntfy(None).await.unwrap();
    let mut cfg = ChannelConfig::new("ntfy", ChannelKind::Ntfy { url: server.url(), topic: "t".into() });
    cfg.rate = RateLimit { burst: 5, refill_every: Duration::from_secs(5) };
    let t0 = Timestamp(1_700_000_000_000);
    let mut d = Deliverer::new(vec![cfg], t0).unwrap();
    let msgs: Vec<Outgoing> =
        (0..8).map(|i| Outgoing { channel: "ntfy".into(), ..out(&format!("m-{i}"), Priority::Low) }).collect();
    enqueue(&mut store, &msgs, &[]).unwrap();
    let r = d.deliver_once(&mut store, t0).await.unwrap();
    assert_eq!((r.sent, r.rate_limited), (5, 1));
    assert_eq!(d.next_token(t0), Some(t0.plus(Duration::from_secs(5))));
    let r = d.deliver_once(&mut store, t0.plus(Duration::from_secs(10))).await.unwrap();
    assert_eq!(r.sent, 2);
    let r = d.deliver_once(&mut store, t0.plus(Duration::from_secs(15))).await.unwrap();
    assert_eq!(r.sent, 1);
    let ids: Vec<String> =
        server.accepted().iter().map(|r| r.header("x-macha-message-id").unwrap().to_owned()).collect();
    assert_eq!(ids, (0..8).map(|i| format!("m-{i}")).collect::<Vec<_>>());
}
