//! The protocol version at both ends: a real daemon refuses a request line of another version (or
//! none) with `version_mismatch`, naming both versions, and stays usable; the CLI refuses an answer
//! of another version (here from a stand-in for a daemon from before versioning) with a plain
//! message and exit code 76.

use crate::support::daemon::TestDaemon;
use macha::api::PROTOCOL_VERSION;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;

fn ask(s: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> serde_json::Value {
    s.write_all(format!("{line}\n").as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{line} -> {answer}: {e}"))
}

#[test]
fn the_daemon_refuses_requests_of_another_protocol_version_naming_both() {
    let daemon = TestDaemon::builder().start();
    let mut s = UnixStream::connect(daemon.socket()).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("{e}"));
    let mut r = BufReader::new(s.try_clone().unwrap_or_else(|e| panic!("{e}")));

    // A client from before versioning.
    let old = ask(&mut s, &mut r, r#"{"op":"status"}"#);
    assert_eq!((old["v"].as_u64(), old["ok"].as_bool()), (Some(u64::from(PROTOCOL_VERSION)), Some(false)), "{old}");
    assert_eq!(old["code"], "version_mismatch", "{old}");
    let message = old["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("protocol 0") && message.contains(&format!("this daemon speaks protocol {PROTOCOL_VERSION}")),
        "{message}"
    );
    // A client from the future.
    let newer = ask(&mut s, &mut r, &format!(r#"{{"v":{},"req":{{"op":"status"}}}}"#, PROTOCOL_VERSION + 1));
    assert_eq!(newer["code"], "version_mismatch", "{newer}");
    assert!(newer["error"].as_str().is_some_and(|m| m.contains(&format!("protocol {}", PROTOCOL_VERSION + 1))));
    // The same connection still answers a request of the right version.
    let ok = ask(&mut s, &mut r, &format!(r#"{{"v":{PROTOCOL_VERSION},"req":{{"op":"status"}}}}"#));
    assert_eq!((ok["ok"].as_bool(), ok["data"]["autonomy"].is_string()), (Some(true), true), "{ok}");
    // And so does the CLI.
    let out = daemon.cli(&["issues", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_cli_names_both_versions_when_the_daemon_speaks_another_protocol() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let socket = dir.path().join("old.sock");
    let listener = UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
    // What a daemon from before versioning answers to a versioned request.
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{e}"));
        (&stream)
            .write_all(b"{\"ok\":false,\"code\":\"bad_request\",\"error\":\"bad request: unknown field `v`\"}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        line
    });
    let out = Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(["issues", "list", "--socket"])
        .arg(&socket)
        .env_remove("MACHA_CONFIG")
        .env("MACHA_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let sent = server.join().unwrap_or_else(|_| panic!("the stand-in daemon failed"));
    assert!(sent.starts_with(&format!(r#"{{"v":{PROTOCOL_VERSION},"req":{{"op":"list_issues""#)), "{sent}");
    assert_eq!(out.status.code(), Some(76), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the daemon at {} speaks protocol 0, this macha speaks {PROTOCOL_VERSION}: restart macha.service after an \
             upgrade, or use the matching CLI",
            socket.display()
        )),
        "{err}"
    );
}
