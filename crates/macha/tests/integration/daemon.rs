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

/// A second daemon on the same database exits naming the first one's PID, and leaves the first
/// one's socket alone (it used to start and take the socket over).
#[test]
fn a_second_daemon_on_the_same_database_is_refused_and_names_the_first() {
    let first = TestDaemon::builder().start();
    let out = Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(["daemon", "--config"])
        .arg(first.path("macha.toml"))
        .env("MACHA_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success(), "the second daemon must not run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("PID {}", first.pid())), "{err}");
    assert!(err.contains("one daemon per database"), "{err}");
    // The first daemon still answers on its socket.
    let status = first.json(&["status", "--json"]);
    assert!(status.get("uptime_secs").is_some(), "{status}");
}

/// A database whose pages were overwritten (a disk error, a stray write) is found damaged at
/// start, and the daemon refuses to run on it instead of reading or extending garbage.
#[test]
fn a_damaged_database_is_refused_at_start() {
    let mut d = TestDaemon::builder().start();
    d.stop();
    let db = d.db();
    // Everything into the main file first: a stop that left pages in the write-ahead log (a busy
    // machine) would leave too small a file to damage. Closing the last connection checkpoints.
    drop(macha_store::Store::open(&db).unwrap_or_else(|e| panic!("{e}")));
    // Overwrite two pages in the middle of the file with garbage.
    let mut bytes = std::fs::read(&db).unwrap_or_else(|e| panic!("{e}"));
    assert!(bytes.len() > 4 * 4096, "the database is unexpectedly small: {}", bytes.len());
    for b in &mut bytes[4096 * 2..4096 * 4] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(["daemon", "--config"])
        .arg(d.path("macha.toml"))
        .env("MACHA_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged") || err.contains("malformed") || err.contains("not a database"), "{err}");
}
