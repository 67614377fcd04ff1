//! Notifications through the real daemon, without the lab: `macha notify` reaches a fake Gotify
//! server with the token in its header; `macha notify test` and `macha notify log` say what the
//! channel answered and why a message was sent; a channel that is down gets the messages in
//! order when it is back; a daemon killed (SIGKILL) while a message is on the wire sends it again
//! after its restart with the same message id; issues told before a restart (SIGTERM or SIGKILL)
//! are resolved after it, each with one message of its incident; silences are listed and removed.
//!
//! The fake servers are `macha_notify::testing` (protocol stand-ins, not the real services). "Down
//! for an hour" is compressed: `notifications.retry_max = "1s"` caps the wait between two
//! attempts, so an outage of a few seconds exercises the same retries, in the same order.

use crate::support::daemon::{TestDaemon, wait_for};
use macha_notify::testing::{FakeServer, Mode};
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap_or_else(|e| panic!("{e}"))
}

/// A daemon (no systemd, no journal) whose secret file `secret` holds `secret`, with the
/// `[notifications…]` tables `tables` gives for that file's path.
fn daemon(secret: &'static str, tables: impl Fn(&str) -> String + 'static) -> TestDaemon {
    TestDaemon::builder()
        .prepare(move |dir| std::fs::write(dir.join("secret"), secret).unwrap_or_else(|e| panic!("{e}")))
        .config(move |dir| {
            format!(
                "check_interval = \"1h\"\n[paths]\nstate_dir = \"{}\"\nsocket = \"{}\"\n\
                 [systemd]\nenable = false\n[journal]\nenable = false\n{}",
                dir.join("state").display(),
                dir.join("macha.sock").display(),
                tables(&dir.join("secret").display().to_string()),
            )
        })
        .start()
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_manual_message_reaches_gotify_with_the_token_in_its_header_and_the_log_says_why() {
    let rt = runtime();
    let gotify = rt.block_on(FakeServer::gotify("tok-123")).unwrap_or_else(|e| panic!("{e}"));
    let url = gotify.url();
    let d = daemon("tok-123\n", move |secret| {
        format!(
            "[notifications]\nlink_base = \"https://console.example\"\n\
             [notifications.gotify]\nurl = \"{url}\"\ntoken_file = \"{secret}\"\nmin_severity = \"info\"\n"
        )
    });

    let out = d.cli_as("macha-notify", &["--priority", "8", "Backup failed", "the nightly **backup** failed"], "");
    let said = ok(&out);
    assert!(said.contains("queued") && said.contains("gotify"), "{said}");
    wait_for("the message at Gotify", Duration::from_secs(10), || !gotify.accepted().is_empty());
    let got = gotify.accepted();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!((m.method.as_str(), m.path.as_str(), m.query.as_deref()), ("POST", "/message", None));
    assert_eq!(m.header("x-gotify-key"), Some("tok-123"), "the token goes in the header");
    let json = m.json().unwrap_or_default();
    assert_eq!(json["title"], "Backup failed", "{json}");
    assert_eq!(json["priority"], 8, "priority 8 is critical, sent as Gotify's 8: {json}");
    assert!(json["message"].as_str().unwrap_or_default().contains("nightly **backup** failed"), "{json}");

    // The log: sent, and why.
    let log = d.json(&["notify", "log", "--json"]);
    let entries = log["entries"].as_array().cloned().unwrap_or_default();
    let gotify_row = entries.iter().find(|e| e["channel"] == "gotify").unwrap_or_else(|| panic!("{log}"));
    assert_eq!(gotify_row["state"], "sent", "{log}");
    assert_eq!(gotify_row["kind"], "manual", "{log}");
    assert!(gotify_row["why"].as_str().unwrap_or_default().contains("on request by"), "{log}");
    let text = ok(&d.cli(&["notify", "log"]));
    assert!(text.contains("why: sent on request by") && text.contains("Backup failed"), "{text}");

    // A test message now, and what Gotify said; an unknown channel is not delivered.
    let tested = ok(&d.cli(&["notify", "test", "gotify"]));
    assert!(tested.contains("gotify: delivered"), "{tested}");
    assert_eq!(gotify.accepted().len(), 2);
    let out = d.cli(&["notify", "test", "ntfy"]);
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stdout));

    // A wrong token is a permanent refusal, which `notify test` shows.
    std::fs::write(d.path("secret"), "wrong").unwrap_or_else(|e| panic!("{e}"));
    let out = d.cli(&["notify", "test", "gotify"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused (401)"), "{}", String::from_utf8_lossy(&out.stdout));

    // Every send and test is in the audit trail (a test's record is written after its answer).
    let trail = || -> Vec<String> {
        d.audit(macha_store::AuditKind::Daemon)
            .into_iter()
            .filter(|r| r.subject.as_deref() == Some("notify"))
            .map(|r| r.summary)
            .collect()
    };
    wait_for("four notify records in the trail", Duration::from_secs(10), || trail().len() >= 4);
    let trail = trail();
    assert_eq!(trail.len(), 4, "{trail:?}");
    assert!(trail[0].starts_with("notification requested by"), "{trail:?}");
}

#[test]
fn a_channel_that_is_down_gets_every_message_in_order_when_it_is_back() {
    let rt = runtime();
    let hook = rt.block_on(FakeServer::webhook(Some(b"k3y"))).unwrap_or_else(|e| panic!("{e}"));
    hook.set_default(Mode::Status { status: 503, retry_after: None });
    let url = hook.url();
    let d = daemon("k3y", move |secret| {
        format!(
            "[notifications]\nretry_max = \"1s\"\n\
             [notifications.webhook]\nurl = \"{url}/hook\"\nsecret_file = \"{secret}\"\nmin_severity = \"info\"\n"
        )
    });
    for i in 1..=3 {
        ok(&d.cli(&["notify", "--channel", "webhook", &format!("message {i}"), "body"]));
    }
    // Down: refused again and again, never the second message before the first.
    wait_for("three refused attempts", Duration::from_secs(20), || hook.received().len() >= 3);
    let before = hook.received();
    assert!(before.iter().all(|r| r.status == 503), "{before:?}");
    let titles = |rs: &[macha_notify::testing::Received]| -> Vec<String> {
        rs.iter().map(|r| r.json().unwrap_or_default()["title"].as_str().unwrap_or_default().to_owned()).collect()
    };
    assert!(
        titles(&before).iter().all(|t| t == "message 1"),
        "a later message overtook the first: {:?}",
        titles(&before)
    );
    let failed = d.json(&["notify", "log", "--failed", "--json"]);
    let first = failed["entries"].as_array().and_then(|e| e.last()).cloned().unwrap_or_default();
    assert!(first["last_error"].as_str().unwrap_or_default().contains("503"), "{failed}");

    // Back: all three, in order, each once.
    hook.set_default(Mode::Normal);
    wait_for("three messages accepted", Duration::from_secs(20), || hook.accepted().len() >= 3);
    let accepted = hook.accepted();
    assert_eq!(titles(&accepted), vec!["message 1", "message 2", "message 3"]);
    let ids: std::collections::BTreeSet<_> =
        accepted.iter().filter_map(|r| r.header("x-macha-message-id").map(str::to_owned)).collect();
    assert_eq!(ids.len(), 3, "{accepted:?}");
    let log = d.json(&["notify", "log", "--channel", "webhook", "--json"]);
    assert_eq!(log["pending"], 0, "{log}");
}

#[test]
fn a_daemon_killed_while_a_message_is_on_the_wire_sends_it_once_more_with_the_same_id() {
    let rt = runtime();
    let hook = rt.block_on(FakeServer::webhook(None)).unwrap_or_else(|e| panic!("{e}"));
    // The first request hangs (the daemon is killed meanwhile); later ones are answered.
    hook.script([Mode::Stall(Duration::from_secs(8))]);
    let url = hook.url();
    let mut d = daemon("x", move |secret| {
        format!("[notifications.webhook]\nurl = \"{url}\"\nsecret_file = \"{secret}\"\nmin_severity = \"info\"\n")
    });
    ok(&d.cli(&["notify", "--channel", "webhook", "on the wire", "body"]));
    let sending = || {
        macha_store::Store::open_read_only(d.db())
            .ok()
            .and_then(|s| s.outbox_log(&macha_store::OutboxFilter::default()).ok())
            .is_some_and(|rows| rows.iter().any(|r| r.state == macha_store::OutboxState::Sending))
    };
    wait_for("the message on the wire", Duration::from_secs(10), sending);
    d.kill_and_restart();
    wait_for("the message delivered after the restart", Duration::from_secs(30), || !hook.accepted().is_empty());
    // The stalled request may still be answered into the dead connection; whatever the receiver
    // saw, it is one message: one id.
    std::thread::sleep(Duration::from_secs(9));
    let accepted = hook.accepted();
    let ids: std::collections::BTreeSet<_> =
        accepted.iter().filter_map(|r| r.header("x-macha-message-id").map(str::to_owned)).collect();
    assert_eq!(ids.len(), 1, "{accepted:?}");
    let rows = d.store().outbox_log(&macha_store::OutboxFilter::default()).unwrap_or_else(|e| panic!("{e}"));
    let webhook_rows: Vec<_> = rows.iter().filter(|r| r.channel == "webhook").collect();
    assert_eq!(webhook_rows.len(), 1, "{rows:?}");
    assert_eq!(webhook_rows[0].state, macha_store::OutboxState::Sent, "{rows:?}");
    assert_eq!(webhook_rows[0].attempts, 2, "{rows:?}");
}

#[test]
fn silences_are_added_listed_and_removed_with_their_reason() {
    let d = TestDaemon::builder().start();
    let added =
        d.json(&["silence", "add", "--host", "web*", "--for", "2h", "--reason", "maintenance window", "--json"]);
    let id = added["id"].as_i64().unwrap_or_else(|| panic!("{added}"));
    let text = ok(&d.cli(&["silence", "list"]));
    assert!(text.contains("host=web*") && text.contains("maintenance window"), "{text}");
    let out = d.cli(&["silence", "add", "--match", "colour=red", "--for", "1h", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stderr));
    let out = d.cli(&["silence", "add", "--for", "1h", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(64), "no --host, --issue or --match");
    let removed = d.json(&["silence", "remove", &id.to_string(), "--json"]);
    assert_eq!(removed["existed"], true, "{removed}");
    assert!(ok(&d.cli(&["silence", "list"])).contains("no silences"));
    let all = d.json(&["silence", "list", "--all", "--json"]);
    assert_eq!(all["silences"].as_array().map(Vec::len), Some(0), "a removed silence is gone: {all}");
}

/// Thresholds every filesystem crosses (and no busy test machine's load or memory): the first
/// cycle opens a disk issue per filesystem, and nothing else.
const NOISY: &str = "[thresholds]\ndisk_warn_percent = 0.0\ndisk_critical_percent = 0.0\ninode_warn_percent = 99.9\ninode_critical_percent = 100.0\nload_per_cpu_warn = 100000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0";
/// Thresholds no healthy test machine crosses: a cycle resolves those issues.
const QUIET: &str = "[thresholds]\ndisk_warn_percent = 99.9\ndisk_critical_percent = 100.0\ninode_warn_percent = 99.9\ninode_critical_percent = 100.0\nload_per_cpu_warn = 100000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0";

/// The webhook messages of `kind`, one per message id (a message cut off by a kill is sent again
/// with its id, which a receiver drops): their group keys.
fn groups_of(hook: &FakeServer, kind: &str) -> Vec<String> {
    let by_id: std::collections::BTreeMap<String, String> = hook
        .accepted()
        .iter()
        .filter_map(|r| Some((r.header("x-macha-message-id")?.to_owned(), r.json()?)))
        .filter(|(_, j)| j["kind"] == kind)
        .map(|(id, j)| (id, j["group_key"].as_str().unwrap_or_default().to_owned()))
        .collect();
    by_id.into_values().collect()
}

/// Issues open and are told; the daemon stops (SIGTERM, or SIGKILL when `kill`) and starts again
/// with thresholds that clear them; its first cycle resolves them, and each incident gets exactly
/// one resolved message, in its own group: the router's memory came back with the restart.
fn issues_told_before_a_restart_are_resolved_after_it(kill: bool) {
    let rt = runtime();
    let hook = rt.block_on(FakeServer::webhook(None)).unwrap_or_else(|e| panic!("{e}"));
    let url = hook.url();
    let mut d = daemon("x", move |secret| {
        format!(
            "{NOISY}\n[notifications]\ngroup_wait = \"0s\"\n\
             [notifications.webhook]\nurl = \"{url}\"\nsecret_file = \"{secret}\"\nmin_severity = \"info\"\n"
        )
    });
    let open_issues = || {
        let issues = d.json(&["issues", "list", "--json"]);
        issues.as_array().map_or(0, Vec::len)
    };
    wait_for("the first cycle's issues", Duration::from_secs(40), || open_issues() > 0);
    let n = open_issues();
    wait_for("every opening at the webhook", Duration::from_secs(20), || groups_of(&hook, "issue_opened").len() >= n);
    let opened: std::collections::BTreeSet<String> = groups_of(&hook, "issue_opened").into_iter().collect();
    assert_eq!(opened.len(), n, "one opening per issue: {opened:?}");
    assert!(opened.iter().all(|g| g.starts_with("issue:")), "{opened:?}");

    let config = d.path("macha.toml");
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let quiet = text.replace(NOISY, QUIET);
    assert_ne!(quiet, text);
    if kill {
        std::fs::write(&config, quiet).unwrap_or_else(|e| panic!("{e}"));
        d.kill_and_restart();
    } else {
        let status = d.stop();
        assert!(status.success(), "{status:?}");
        std::fs::write(&config, quiet).unwrap_or_else(|e| panic!("{e}"));
        d.start_again();
    }
    wait_for("every resolution at the webhook", Duration::from_secs(40), || {
        groups_of(&hook, "issue_resolved").len() >= n
    });
    // Whatever else comes, nothing is told twice.
    std::thread::sleep(Duration::from_secs(2));
    let mut resolved = groups_of(&hook, "issue_resolved");
    resolved.sort();
    assert_eq!(resolved, opened.iter().cloned().collect::<Vec<_>>(), "exactly one resolved message per incident");
    assert_eq!(groups_of(&hook, "issue_opened").len(), n, "no opening told again under a new id");
}

#[test]
fn issues_told_before_a_stop_are_resolved_after_the_start() {
    issues_told_before_a_restart_are_resolved_after_it(false);
}

#[test]
fn issues_told_before_a_kill_are_resolved_after_the_restart() {
    issues_told_before_a_restart_are_resolved_after_it(true);
}
