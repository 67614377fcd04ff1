//! The daemon process as systemd runs it: readiness and watchdog notifications on a real
//! `NOTIFY_SOCKET`, a clean stop on SIGTERM, and a clear refusal of a wrong configuration.
//! These need no systemd (it is disabled in the configuration); the lab tests cover systemd.

use crate::support::daemon::TestDaemon;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn ready_watchdog_and_clean_stop() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap_or_else(|e| panic!("{e}"));
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap_or_else(|e| panic!("{e}"));
    let mut daemon =
        TestDaemon::builder().env("NOTIFY_SOCKET", &notify).env("WATCHDOG_USEC", "200000").no_wait().start();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while messages.iter().filter(|m: &&String| m.contains("WATCHDOG=1")).count() < 3 && Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => panic!("no notification: {e}; got {messages:?}"),
        }
    }
    assert!(messages.first().is_some_and(|m| m.contains("READY=1")), "{messages:?}");
    assert!(messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3, "{messages:?}");
    assert!(daemon.socket().exists());
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    let mut stopping = false;
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap_or_else(|e| panic!("{e}"));
    while let Ok(n) = sock.recv(&mut buf) {
        stopping |= String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1");
    assert!(!daemon.socket().exists(), "the socket is removed on a clean stop");
    let summaries: Vec<_> = daemon.audit(macha_store::AuditKind::Daemon).into_iter().map(|r| r.summary).collect();
    assert!(
        summaries.iter().any(|s| s.starts_with("daemon started")) && summaries.iter().any(|s| s == "daemon stopped"),
        "{summaries:?}"
    );
}

#[test]
fn a_wrong_configuration_is_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "autonomy = \"auto-yolo\"\n").unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(["daemon", "--config"])
        .arg(&bad)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auto-yolo") && err.contains("bad.toml"), "{err}");
    // A state directory that cannot be created is an error naming it, not a panic.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap_or_else(|e| panic!("{e}"));
    let cfg = dir.path().join("blocked.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nstate_dir = \"{}/sub\"\n[systemd]\nenable = false\n[journal]\nenable = false\n",
            blocked.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(["daemon", "--config"])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(70));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
