//! The journal follower against a real `journalctl` reading real journal files.
//!
//! The files are written by Debian's `systemd-journal-remote` from journal export format (which
//! carries binary fields, so a non-UTF-8 `MESSAGE` is a real one), into a temporary directory that
//! the follower reads with `--directory`. Appending to the file while journalctl follows it is a
//! real `--follow`. Install it with `tests/lab/ci-setup.sh --local`; `MACHA_JOURNAL_REMOTE` can
//! point at it if it lives elsewhere.
//!
//! One test uses a stand-in executable instead, because the real journalctl cannot produce what it
//! checks: journalctl always prints valid JSON, and prints `null` for any field over 4096 bytes, so
//! invalid JSON and a 10 MB line can only come from something else speaking in its place.

use macha_observe::journal::{JournalConfig, JournalEntry, JournalEvent, JournalFollower};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(10);

fn journal_remote() -> PathBuf {
    let candidates = std::env::var_os("MACHA_JOURNAL_REMOTE")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"].map(PathBuf::from));
    for c in candidates {
        if c.exists() {
            return c;
        }
    }
    panic!(
        "systemd-journal-remote not found: install it with `tests/lab/ci-setup.sh --local` \
         (apt-get install systemd-journal-remote) or set MACHA_JOURNAL_REMOTE"
    );
}

fn now_usec() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// One entry in journal export format: text fields as `KEY=value`, others in the binary form.
fn export_entry(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let t = now_usec();
    out.extend_from_slice(
        format!("__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={}\n", t % 1_000_000_000).as_bytes(),
    );
    out.extend_from_slice(b"_BOOT_ID=0123456789abcdef0123456789abcdef\n");
    for (key, value) in fields {
        let plain = value.iter().all(|b| (0x20..0x7f).contains(b));
        if plain {
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value);
        } else {
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Appends entries to `dir/remote.journal` through systemd-journal-remote.
fn write_journal(dir: &Path, entries: &[Vec<(&str, &[u8])>]) {
    let input = dir.join(format!("in-{}.export", now_usec()));
    let data: Vec<u8> = entries.iter().flat_map(|e| export_entry(e)).collect();
    std::fs::write(&input, data).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let out = std::process::Command::new(journal_remote())
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg(&input)
        .output()
        .unwrap_or_else(|e| panic!("systemd-journal-remote: {e}"));
    assert!(out.status.success(), "systemd-journal-remote: {}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&input);
}

fn err(unit: &str, message: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("PRIORITY", b"3".to_vec()),
        ("_SYSTEMD_UNIT", unit.as_bytes().to_vec()),
        ("MESSAGE", message.as_bytes().to_vec()),
    ]
}

fn borrow<'a>(e: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    e.iter().map(|(k, v)| (*k, v.as_slice())).collect()
}

fn config(dir: &Path) -> JournalConfig {
    JournalConfig {
        journalctl: PathBuf::from("journalctl"),
        directory: Some(dir.to_owned()),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..JournalConfig::default()
    }
}

async fn next(rx: &mut Receiver<JournalEvent>) -> JournalEvent {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("the follower stopped"),
        Err(_) => panic!("no journal event within {WAIT:?}"),
    }
}

async fn next_entry(rx: &mut Receiver<JournalEvent>) -> JournalEntry {
    loop {
        match next(rx).await {
            JournalEvent::Entry(e) => return e,
            JournalEvent::Following => {}
            JournalEvent::Unavailable(r) => panic!("unexpected Unavailable: {r}"),
        }
    }
}

async fn next_unavailable(rx: &mut Receiver<JournalEvent>) -> String {
    match next(rx).await {
        JournalEvent::Unavailable(r) => r,
        JournalEvent::Following => panic!("unexpected Following before Unavailable"),
        JournalEvent::Entry(e) => panic!("unexpected entry: {e:?}"),
    }
}

/// The running children of this process named `name`.
fn children(name: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let comm = head.split_once(" (").map_or("", |(_, c)| c);
        let mut f = rest.split(' ');
        let state = f.next().unwrap_or("");
        let ppid = f.next().unwrap_or("");
        if comm == name && ppid == me && state != "Z" {
            pids.extend(entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()));
        }
    }
    pids
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
        })
        .unwrap_or_default()
}

async fn wait_for_child(name: &str) -> i32 {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(pid) = children(name).first() {
            return *pid;
        }
        assert!(t0.elapsed() < WAIT, "no {name} child started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[ignore = "lab: needs systemd-journal-remote (tests/lab/ci-setup.sh --local)"]
async fn follows_real_journal_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let big = vec![b'x'; 5000];
    let e1 = vec![
        ("PRIORITY", b"3".to_vec()),
        ("_SYSTEMD_UNIT", b"web.service".to_vec()),
        ("_HOSTNAME", b"lab1".to_vec()),
        ("MESSAGE", b"upstream timed out".to_vec()),
    ];
    let info = vec![("PRIORITY", b"6".to_vec()), ("MESSAGE", b"just chatter".to_vec())];
    let binary = vec![
        ("PRIORITY", b"2".to_vec()),
        ("SYSLOG_IDENTIFIER", b"kernel".to_vec()),
        ("MESSAGE", b"bad \xff\xfe utf8".to_vec()),
    ];
    let hostile = vec![
        ("PRIORITY", b"3".to_vec()),
        ("_SYSTEMD_UNIT", b"init.scope".to_vec()),
        ("UNIT", b"db.service".to_vec()),
        ("MESSAGE", b"db.service: Failed\x1b[31m!\x1b[0m\x07\nnext\x1b]0;pwned\x07 line\xe2\x80\xae".to_vec()),
    ];
    let huge = vec![("PRIORITY", b"3".to_vec()), ("_SYSTEMD_UNIT", b"big.service".to_vec()), ("MESSAGE", big)];
    write_journal(dir.path(), &[borrow(&e1), borrow(&info), borrow(&binary), borrow(&hostile), borrow(&huge)]);

    let (follower, mut rx) = JournalFollower::spawn(config(dir.path()));
    let a = next_entry(&mut rx).await;
    assert_eq!((a.priority, a.unit.as_deref(), a.message.as_str()), (3, Some("web.service"), "upstream timed out"));
    assert_eq!(a.hostname.as_deref(), Some("lab1"));
    assert!(a.realtime_usec.abs_diff(now_usec()) < 60_000_000, "{a:?}");
    // The info entry is filtered out by journalctl (--priority=3).
    let b = next_entry(&mut rx).await;
    assert_eq!((b.priority, b.unit.as_deref(), b.message.as_str()), (2, Some("kernel"), "bad \u{fffd}\u{fffd} utf8"));
    let c = next_entry(&mut rx).await;
    assert_eq!((c.unit.as_deref(), c.message.as_str()), (Some("db.service"), "db.service: Failed! next line"));
    let d = next_entry(&mut rx).await;
    assert_eq!(
        (d.unit.as_deref(), d.message.as_str()),
        (Some("big.service"), "[message longer than 4096 bytes not shown]")
    );
    assert_eq!(follower.last_cursor().as_deref(), Some(d.cursor.as_str()));

    // Written while journalctl follows: it arrives without a restart.
    let live = err("late.service", "written while following");
    write_journal(dir.path(), &[borrow(&live)]);
    let e = next_entry(&mut rx).await;
    assert_eq!((e.unit.as_deref(), e.message.as_str()), (Some("late.service"), "written while following"));
    let stats = follower.stats();
    assert_eq!((stats.entries, stats.starts, stats.skipped()), (5, 1, 0), "{stats:?}");

    // Dropping the follower kills journalctl.
    let pid = wait_for_child("journalctl").await;
    drop(follower);
    drop(rx);
    let t0 = std::time::Instant::now();
    while children("journalctl").contains(&pid) {
        assert!(t0.elapsed() < WAIT, "journalctl {pid} outlived its follower");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[ignore = "lab: needs systemd-journal-remote (tests/lab/ci-setup.sh --local)"]
async fn restarts_and_resumes_after_the_last_cursor() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let first: Vec<_> = (1..=3).map(|i| err("a.service", &format!("first {i}"))).collect();
    write_journal(dir.path(), &first.iter().map(|e| borrow(e)).collect::<Vec<_>>());
    let (follower, mut rx) = JournalFollower::spawn(config(dir.path()));
    let mut last = String::new();
    for i in 1..=3 {
        let e = next_entry(&mut rx).await;
        assert_eq!(e.message, format!("first {i}"));
        last = e.cursor;
    }
    // The child dies.
    let pid = wait_for_child("journalctl").await;
    assert!(!cmdline(pid).iter().any(|a| a.starts_with("--after-cursor")), "{:?}", cmdline(pid));
    let killed = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    assert!(killed.is_ok(), "{killed:?}");
    let reason = next_unavailable(&mut rx).await;
    assert!(reason.contains("journalctl exited") && reason.contains("SIGTERM"), "{reason}");

    // More entries; the new child starts after the last cursor: no duplicates.
    let second: Vec<_> = (1..=2).map(|i| err("b.service", &format!("second {i}"))).collect();
    write_journal(dir.path(), &second.iter().map(|e| borrow(e)).collect::<Vec<_>>());
    for i in 1..=2 {
        let e = next_entry(&mut rx).await;
        assert_eq!(e.message, format!("second {i}"), "a duplicate or a gap after the restart");
    }
    let pid = wait_for_child("journalctl").await;
    let args = cmdline(pid);
    assert!(args.contains(&format!("--after-cursor={last}")), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--since")), "{args:?}");
    let stats = follower.stats();
    assert_eq!((stats.entries, stats.starts), (5, 2), "{stats:?}");
}

#[tokio::test]
#[ignore = "lab: needs systemd-journal-remote (tests/lab/ci-setup.sh --local)"]
async fn an_empty_directory_is_unavailable_until_files_appear() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (follower, mut rx) = JournalFollower::spawn(config(dir.path()));
    // No journal files: the probe says so before anything is followed (a follow would otherwise
    // look like a journal without errors).
    let reason = next_unavailable(&mut rx).await;
    assert!(reason.contains("no journal entries in"), "{reason}");
    let e = err("c.service", "finally");
    write_journal(dir.path(), &[borrow(&e)]);
    let got = loop {
        match next(&mut rx).await {
            JournalEvent::Entry(e) => break e,
            JournalEvent::Unavailable(_) | JournalEvent::Following => {}
        }
    };
    assert_eq!(got.message, "finally");
    assert!(follower.stats().starts >= 1);
    // journalctl keeps running now: the follower says it is following.
    loop {
        match next(&mut rx).await {
            JournalEvent::Following => break,
            JournalEvent::Entry(_) => {}
            JournalEvent::Unavailable(r) => panic!("unexpected Unavailable: {r}"),
        }
    }
}

#[tokio::test]
#[ignore = "lab: needs systemd-journal-remote (tests/lab/ci-setup.sh --local)"]
async fn a_stored_cursor_journalctl_rejects_falls_back_to_since() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let e = err("d.service", "after a bad cursor");
    write_journal(dir.path(), &[borrow(&e)]);
    let cfg = JournalConfig { cursor: Some("s=not-a-real-cursor".into()), ..config(dir.path()) };
    let (follower, mut rx) = JournalFollower::spawn(cfg);
    let reason = next_unavailable(&mut rx).await;
    assert!(reason.contains("Failed to seek to cursor") && reason.contains("resuming from --since"), "{reason}");
    let got = next_entry(&mut rx).await;
    assert_eq!(got.message, "after a bad cursor");
    assert_eq!(follower.last_cursor().as_deref(), Some(got.cursor.as_str()));
}

#[tokio::test]
async fn a_missing_journalctl_is_unavailable_and_retried() {
    let cfg = JournalConfig {
        journalctl: PathBuf::from("/nonexistent/macha/journalctl"),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        ..JournalConfig::default()
    };
    let (follower, mut rx) = JournalFollower::spawn(cfg);
    for _ in 0..3 {
        let reason = next_unavailable(&mut rx).await;
        assert!(reason.starts_with("/nonexistent/macha/journalctl not found"), "{reason}");
    }
    assert_eq!(follower.stats().starts, 0);
    assert_eq!(follower.last_cursor(), None);
}

/// A stand-in for journalctl (see the module docs for why): a script that logs its arguments, and
/// answers the follower's probe (`--lines=1`) with one entry, on its first start prints valid
/// entries around hostile lines and exits; on later starts prints one more entry and keeps running.
fn stand_in(dir: &Path) -> PathBuf {
    let entry = |i: u32, msg: &str| {
        format!(
            r#"{{"__CURSOR":"s=standin;i={i}","__REALTIME_TIMESTAMP":"{}","PRIORITY":"3","_SYSTEMD_UNIT":"x.service","MESSAGE":"{msg}"}}"#,
            now_usec()
        )
    };
    let first = dir.join("first.jsonl");
    let mut lines = vec![
        entry(1, "one"),
        "{not json".to_owned(),
        r#"{"__REALTIME_TIMESTAMP":"1","PRIORITY":"3","MESSAGE":"no cursor"}"#.to_owned(),
        r#"{"__CURSOR":"s=standin;i=99","__REALTIME_TIMESTAMP":"1","PRIORITY":"7","MESSAGE":"debug"}"#.to_owned(),
        entry(2, r"two \u001b[1mbold\u001b[0m\u0000"),
    ];
    lines.insert(2, "x".repeat(10 << 20));
    std::fs::write(&first, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("later.jsonl"), entry(3, "three") + "\n").unwrap_or_else(|e| panic!("{e}"));
    let script = dir.join("journalctl");
    let text = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {d}/argv.log\ncase \"$*\" in *--lines=1*) cat {d}/later.jsonl; exit 0;; esac\nif [ ! -e {d}/started ]; then\n  : > {d}/started\n  cat {d}/first.jsonl\n  exit 0\nfi\ncat {d}/later.jsonl\nexec sleep 60\n",
        d = dir.display()
    );
    std::fs::write(&script, text).unwrap_or_else(|e| panic!("{e}"));
    let made = std::process::Command::new("chmod").arg("755").arg(&script).status();
    assert!(made.is_ok_and(|s| s.success()));
    script
}

#[tokio::test]
async fn hostile_output_is_skipped_and_the_follower_carries_on() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = JournalConfig {
        journalctl: stand_in(dir.path()),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..JournalConfig::default()
    };
    let (follower, mut rx) = JournalFollower::spawn(cfg);
    let one = next_entry(&mut rx).await;
    assert_eq!((one.cursor.as_str(), one.message.as_str()), ("s=standin;i=1", "one"));
    let two = next_entry(&mut rx).await;
    assert_eq!((two.cursor.as_str(), two.message.as_str()), ("s=standin;i=2", "two bold"));
    let reason = next_unavailable(&mut rx).await;
    assert!(reason.contains("exited (exit status: 0)"), "{reason}");
    let three = next_entry(&mut rx).await;
    assert_eq!(three.message, "three");
    assert_eq!(follower.last_cursor().as_deref(), Some("s=standin;i=3"));
    let stats = follower.stats();
    assert_eq!(
        (stats.entries, stats.invalid_json, stats.oversized, stats.bad_cursor, stats.above_priority, stats.starts),
        (3, 1, 1, 1, 1, 2),
        "{stats:?}"
    );
    let argv = std::fs::read_to_string(dir.path().join("argv.log")).unwrap_or_default();
    // Every start is preceded by the probe; the follows themselves are what resume matters for.
    let (probes, runs): (Vec<&str>, Vec<&str>) = argv.lines().partition(|l| l.starts_with("--lines=1"));
    assert_eq!(probes.len(), 2, "{argv}");
    assert_eq!(runs.len(), 2, "{argv}");
    assert!(runs[0].contains("--since=-3600s") && !runs[0].contains("--after-cursor"), "{argv}");
    assert!(runs[1].ends_with("--after-cursor=s=standin;i=2"), "{argv}");
}
