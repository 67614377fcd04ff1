//! The framing, the version check and every request's round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::ops::*;
use crate::reply::*;
use macha_core::Timestamp;
use macha_core::approval::ApprovalState;
use macha_core::issue::IssueState;

fn every_request() -> Vec<Request> {
    vec![
        Status.into_request(),
        RunCheck.into_request(),
        ListIssues { states: vec![IssueState::Open, IssueState::Acting], host: Some("c1".into()), limit: Some(5) }
            .into_request(),
        ShowIssue { id: 3 }.into_request(),
        ResolveIssue { id: 3, note: Some("fixed by hand".into()) }.into_request(),
        CloseIssue { id: 3, note: None }.into_request(),
        ListApprovals { states: vec![ApprovalState::Pending], limit: None }.into_request(),
        ShowApproval { id: 4 }.into_request(),
        Approve { id: 4, note: Some("ok".into()) }.into_request(),
        Reject { id: 4, note: None }.into_request(),
        QueryAudit {
            filter: AuditFilter {
                since: Some(Timestamp(1)),
                host: Some("local".into()),
                kinds: vec![AuditKind::Decision, AuditKind::AuthDenied],
                min_severity: Some(Severity::Warning),
                after_id: Some(9),
                limit: Some(100),
                order: Order::NewestFirst,
            },
        }
        .into_request(),
        Ask { question: "why?".into() }.into_request(),
        Chat { conversation: Some("chat-1".into()), message: "hi".into() }.into_request(),
        Discuss { id: 4, message: "is it safe?".into() }.into_request(),
        ListPrompts { request_id: Some(2), limit: Some(3) }.into_request(),
        ListHosts.into_request(),
        FleetGraph.into_request(),
        DeployProgress.into_request(),
        ShowHost { name: "c1".into() }.into_request(),
        ScanHost { name: "c1".into() }.into_request(),
        TrustHost { name: "c1".into(), fingerprints: vec!["SHA256:x".into()] }.into_request(),
        AdmitHost { name: "c1".into() }.into_request(),
        ForgetHost { name: "c1".into() }.into_request(),
        PruneAudit { upto_id: 10, hash: "ab".repeat(32) }.into_request(),
        crate::metrics::MetricsRead {
            host: "web1".into(),
            metric: Some("load.1".into()),
            since_secs: 3600,
            latest: false,
        }
        .into_request(),
    ]
}

#[test]
fn every_request_round_trips_through_the_frame() {
    let all = every_request();
    let mut ops: Vec<&str> = all.iter().map(Request::op).collect();
    ops.sort_unstable();
    ops.dedup();
    assert_eq!(ops.len(), 25, "one of each operation");
    for r in all {
        let line = encode_request(&r).unwrap();
        assert!(line.starts_with(&format!("{{\"v\":{PROTOCOL_VERSION},\"req\":{{\"op\":\"{}\"", r.op())), "{line}");
        assert_eq!(parse_request(&line), Ok(r.clone()), "{line}");
    }
}

#[test]
fn writes_and_streams_are_classified() {
    assert!(Reject { id: 1, note: None }.into_request().is_write());
    assert!(!ListApprovals::default().into_request().is_write());
    let ask = Ask { question: "why?".into() }.into_request();
    assert!(!ask.is_write() && ask.is_streamed() && ask.tier() == crate::Tier::Viewer);
    assert!(ListPrompts::default().into_request().is_write());
    assert!(!ListPrompts::default().into_request().is_streamed());
    assert!(!Status.into_request().is_write());
}

#[test]
fn unknown_operations_fields_and_oversized_lines_are_bad_requests() {
    let bad = |line: &str| parse_request(line).map_err(|r| r.code);
    assert_eq!(bad(r#"{"v":1,"req":{"op":"rm_rf"}}"#), Err(ErrorCode::BadRequest));
    assert_eq!(bad(r#"{"v":1,"req":{"op":"approve","id":1,"as_uid":0}}"#), Err(ErrorCode::BadRequest));
    assert_eq!(bad(r#"{"v":1,"req":{"op":"status"},"as_uid":0}"#), Err(ErrorCode::BadRequest));
    assert_eq!(bad(r#"{"v":1,"req":{"op":"list_issues","states":["bogus"]}}"#), Err(ErrorCode::BadRequest));
    assert_eq!(bad("not json"), Err(ErrorCode::BadRequest));
    assert_eq!(bad(r#"{"v":"1","req":{"op":"status"}}"#), Err(ErrorCode::BadRequest));
    let big = format!(r#"{{"v":1,"req":{{"op":"ask","question":"{}"}}}}"#, "x".repeat(REQUEST_MAX));
    let refusal = parse_request(&big).unwrap_err();
    assert_eq!(refusal.code, ErrorCode::BadRequest);
    assert!(refusal.message.contains("exceeds"), "{}", refusal.message);
    assert!(parse_request(r#"{"v":1,"req":{"op":"chat","message":"hi"}}"#).is_ok());
}

#[test]
fn a_request_of_another_version_is_refused_naming_both_versions() {
    for (line, theirs) in [
        (r#"{"op":"status"}"#.to_owned(), "protocol 0 (no version)"),
        (format!(r#"{{"v":{},"req":{{"op":"status"}}}}"#, PROTOCOL_VERSION + 1), "protocol 2"),
        (r#"{"v":0,"req":{"op":"status"}}"#.to_owned(), "protocol 0"),
    ] {
        let refusal = parse_request(&line).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::VersionMismatch, "{line}");
        assert!(
            refusal.message.contains(theirs)
                && refusal.message.contains(&format!("this daemon speaks protocol {PROTOCOL_VERSION}")),
            "{}",
            refusal.message
        );
        // The refusal itself is a versioned line.
        let answer = Response::err(refusal.code, refusal.message).to_line();
        assert!(answer.starts_with(&format!(r#"{{"v":{PROTOCOL_VERSION},"ok":false,"code":"version_mismatch""#)));
    }
}

#[test]
fn answers_carry_the_version_and_decode_typed() {
    let change = HostChange { name: "c1".into(), state: macha_core::fleet::Standing::Admitted, changed: true };
    let line = Response::reply::<AdmitHost>(&change).to_line();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"v": 1, "ok": true, "data": {"name": "c1", "state": "admitted", "changed": true}})
    );
    match decode_line(&line).unwrap() {
        Incoming::Ok(data) => assert_eq!(serde_json::from_value::<HostChange>(data).unwrap(), change),
        other => panic!("{other:?}"),
    }
    let err = Response::err(ErrorCode::NotFound, "issue 9 does not exist").to_line();
    assert_eq!(
        decode_line(&err),
        Ok(Incoming::Err { code: ErrorCode::NotFound, message: "issue 9 does not exist".into() })
    );
    let event = StreamLine::Event(StreamEvent::Token { text: "a".into() }).to_line();
    assert_eq!(event, r#"{"v":1,"event":{"event":"token","text":"a"}}"#);
    assert_eq!(decode_line(&event), Ok(Incoming::Event(StreamEvent::Token { text: "a".into() })));
    assert_eq!(StreamLine::Done(Response::err(ErrorCode::Denied, "no")).to_line(), {
        r#"{"v":1,"ok":false,"code":"denied","error":"no"}"#
    });
}

#[test]
fn an_answer_of_another_version_or_without_one_is_a_version_error() {
    // What a daemon from before versioning answers (to anything, since it cannot read `v`).
    let old = r#"{"ok":false,"code":"bad_request","error":"bad request: unknown field `v`"}"#;
    assert_eq!(decode_line(old), Err(LineError::Version(0)));
    assert_eq!(decode_line(r#"{"ok":true,"data":{}}"#), Err(LineError::Version(0)));
    assert_eq!(decode_line(r#"{"v":7,"ok":true,"data":{}}"#), Err(LineError::Version(7)));
    assert!(matches!(decode_line("garbage"), Err(LineError::Malformed(_))));
    assert!(matches!(decode_line(r#"{"v":1}"#), Err(LineError::Malformed(_))));
}

#[test]
fn the_client_reports_a_version_mismatch_and_a_typed_answer() {
    use std::io::{BufRead, BufReader, Write};
    let dir = std::env::temp_dir().join(format!("macha-api-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let socket = dir.join("s.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for answer in [
            r#"{"ok":true,"data":{"name":"c1","state":"admitted","changed":true}}"#.to_owned(),
            Response::reply::<AdmitHost>(&HostChange {
                name: "c1".into(),
                state: macha_core::fleet::Standing::Admitted,
                changed: false,
            })
            .to_line(),
        ] {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            seen.push(parse_request(line.trim()));
            (&stream).write_all(format!("{answer}\n").as_bytes()).unwrap();
        }
        seen
    });
    let timeout = std::time::Duration::from_secs(10);
    let mut old = Client::connect(&socket, timeout).unwrap();
    let err = old.call(AdmitHost { name: "c1".into() }).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ClientError::VersionMismatch { daemon: 0, ours: PROTOCOL_VERSION, .. }), "{err:?}");
    assert!(
        text.contains(&format!("{} speaks protocol 0, this macha speaks {PROTOCOL_VERSION}", socket.display()))
            && text.contains("restart macha.service"),
        "{text}"
    );
    let mut current = Client::connect(&socket, timeout).unwrap();
    let reply: HostChange = current.call(AdmitHost { name: "c1".into() }).unwrap();
    assert!(!reply.changed);
    let seen = server.join().unwrap();
    assert_eq!(seen, vec![Ok(AdmitHost { name: "c1".into() }.into_request()); 2]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_audit_kind_parses_back_from_its_name() {
    use crate::reply::AuditKind;
    for k in AuditKind::ALL {
        assert_eq!(AuditKind::parse(k.as_str()), Some(k));
        // The name is the wire name too.
        assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
    }
    assert_eq!(AuditKind::parse("bogus"), None);
}
