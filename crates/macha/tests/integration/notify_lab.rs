//! Notifications through the real daemon on the lab's real systemd (`tests/lab/systemd-user.sh
//! up`): a unit that fails is one critical message at a fake ntfy server, at once (critical
//! group wait 0); a unit that keeps failing is one "flapping" message, then quiet.
//!
//! The daemon runs at autonomy `observe`, so nothing restarts the units behind the test's back.
//! The receiver is `macha_notify::testing`'s ntfy stand-in. Like every lab test these fail with
//! instructions when the lab is not up, and run one at a time.

use crate::support;

use macha_notify::testing::FakeServer;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::daemon::{TestDaemon, wait_for};
use support::lab::{Lab, lab};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap_or_else(|e| panic!("{e}"))
}

/// The daemon on the lab's systemd at `observe`, sending everything to the ntfy server at `url`.
fn start(lab: &Lab, url: &str, extra: &str) -> TestDaemon {
    TestDaemon::builder()
        .lab(lab)
        .autonomy("observe")
        .interval("1h")
        .tables(&format!(
            "[notifications]\n{extra}\n[notifications.ntfy]\nurl = \"{url}\"\ntopic = \"lab\"\nmin_severity = \"info\"\n"
        ))
        .log("info")
        .wait_for_first_cycle()
        .start()
}

/// The ntfy messages about `unit` (by title).
fn about(server: &FakeServer, unit: &str) -> Vec<macha_notify::testing::Received> {
    server.accepted().into_iter().filter(|r| r.header("title").is_some_and(|t| t.contains(unit))).collect()
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_a_failed_unit_is_one_critical_message_at_once() {
    let _g = serial();
    let lab = lab();
    let rt = runtime();
    let ntfy = rt.block_on(FakeServer::ntfy(None)).unwrap_or_else(|e| panic!("{e}"));
    let unit = lab.unit(&format!("mt-notify-{}", std::process::id()));
    unit.start();
    let d = start(&lab, &ntfy.url(), "");
    let t0 = Instant::now();
    unit.kill();
    wait_for("the message at ntfy", Duration::from_secs(10), || !about(&ntfy, &unit.name).is_empty());
    let took = t0.elapsed();
    // Nothing else comes for it: the issue stays open (observe), one incident, one message.
    std::thread::sleep(Duration::from_secs(3));
    let got = about(&ntfy, &unit.name);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].header("priority"), Some("5"), "critical is ntfy's max: {:?}", got[0]);
    assert_eq!(got[0].path, "/lab");
    let body = String::from_utf8_lossy(&got[0].body).into_owned();
    assert!(body.contains("macha issues show") && body.contains("sent at once"), "{body}");
    assert!(took < Duration::from_secs(2), "the critical message took {took:?} (group wait 0)");
    let log = d.json(&["notify", "log", "--json"]);
    let row = log["entries"].as_array().and_then(|e| e.first()).cloned().unwrap_or_default();
    assert_eq!((row["state"].as_str(), row["kind"].as_str()), (Some("sent"), Some("issue_opened")), "{log}");
}

#[test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
fn lab_a_flapping_unit_is_one_flapping_message_then_quiet() {
    let _g = serial();
    let lab = lab();
    let rt = runtime();
    let ntfy = rt.block_on(FakeServer::ntfy(None)).unwrap_or_else(|e| panic!("{e}"));
    // No start rate limit: the test starts the unit five times within seconds.
    let unit = lab.unit_file(
        &format!("mt-flap-{}.service", std::process::id()),
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sleep infinity\n",
    );
    unit.start();
    // Three openings within the hour make it flapping (the router's default); resolved messages
    // would wait for the group interval, so it is short here.
    let d = start(&lab, &ntfy.url(), "group_interval = \"1s\"\ngroup_wait = \"1s\"");
    for _ in 0..5 {
        unit.kill();
        wait_for("the failure recorded", Duration::from_secs(10), || {
            d.json(&["issues", "list", "--json"])
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["subject"] == unit.name.as_str() && i["state"] == "open"))
        });
        unit.start();
        wait_for("the issue resolved", Duration::from_secs(10), || {
            d.json(&["issues", "list", "--all", "--json"])
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["subject"] == unit.name.as_str() && i["state"] == "resolved"))
        });
    }
    std::thread::sleep(Duration::from_secs(3));
    let got = about(&ntfy, &unit.name);
    let titles: Vec<String> = got.iter().map(|r| r.header("title").unwrap_or_default().to_owned()).collect();
    let flapping = titles.iter().filter(|t| t.starts_with("Flapping")).count();
    assert_eq!(flapping, 1, "{titles:?}");
    // After the flapping message, quiet: no opening of it comes after.
    let at = titles.iter().position(|t| t.starts_with("Flapping")).unwrap_or(usize::MAX);
    assert_eq!(at, titles.len() - 1, "messages after the flapping one: {titles:?}");
    assert!(titles.len() <= 5, "five failures told as {} messages: {titles:?}", titles.len());
}
