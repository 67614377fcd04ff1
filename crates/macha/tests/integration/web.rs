//! The web console over HTTP against the real daemon: the security headers, GET that changes
//! nothing, the POST guarantees (origin, session, CSRF, the action's digest, expiry), idempotent
//! decisions through the same engine functions as `macha approve`, hostile text rendered inert,
//! and on TCP the one-time login, the trusted proxy's header and a viewer who cannot approve.

use super::support::daemon::{TestDaemon, wait_for};
use macha_core::Timestamp;
use macha_store::{AuditKind, NewApproval, NewAudit, NewIssue, Severity, Store};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const HOSTILE: &str =
    "<script>alert(1)</script> <img src=x onerror=alert(2)> javascript:alert(3) https://ok.example/doc";

/// One answer: status, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The session cookie this answer sets, as `name=value`.
    fn cookie(&self) -> Option<String> {
        self.header("set-cookie").and_then(|c| c.split(';').next()).map(str::to_owned)
    }

    /// The value of the first hidden input `name` in the page.
    fn input(&self, name: &str) -> String {
        let key = format!("name=\"{name}\" value=\"");
        let at = self.body.find(&key).unwrap_or_else(|| panic!("no input {name} in {}", self.body)) + key.len();
        self.body[at..].split('"').next().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 exchange on `stream` (the connection closes after it).
fn exchange(mut stream: impl Read + Write, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost:8470\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: body.to_owned() }
}

fn unix(sock: &Path, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap_or_else(|e| panic!("{e}"));
    exchange(s, method, path, headers, body)
}

/// A TCP exchange from the source address `from` (a loopback address).
fn tcp(from: &str, port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
        s.bind(format!("{from}:0").parse().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
        s.connect(format!("127.0.0.1:{port}").parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let stream = stream.into_std().unwrap_or_else(|e| panic!("{e}"));
    stream.set_nonblocking(false).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap_or_else(|e| panic!("{e}"));
    exchange(stream, method, path, headers, body)
}

fn now() -> Timestamp {
    Timestamp::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
    )
}

/// The model's diagnosis recorded on the issue behind approvals 1 and 3.
pub(super) const DIAGNOSIS: &str = "The data volume fills with rotated logs";

/// Queues approvals as the daemon would have: 1, 3 and 4 pending (1 with hostile text in its
/// reason), 2 already past its expiry; 1 and 3 come from issue 1, which the model analysed
/// (citing `kb:7`).
pub(super) fn queue_approvals(dir: &Path) {
    std::fs::create_dir_all(dir.join("state")).unwrap_or_else(|e| panic!("{e}"));
    let mut store = Store::open(dir.join("state/macha.db")).unwrap_or_else(|e| panic!("{e}"));
    let now = now();
    let issue = NewIssue {
        host: "local".into(),
        check_name: "web_test".into(),
        subject: "/data".into(),
        severity: Severity::Warning,
        summary: "the data volume is 93% full".into(),
        details: serde_json::json!({}),
        seen_at: now.minus(Duration::from_secs(600)),
    };
    let audit = NewAudit::new(now, AuditKind::Issue, Severity::Warning, "local", "issue opened: /data is 93% full");
    let issue = store.insert_issue(&issue, &audit).unwrap_or_else(|e| panic!("{e}"));
    let analysis = NewAudit::new(now, AuditKind::Issue, Severity::Info, "local", "analysis of issue 1")
        .with_payload(serde_json::json!({"diagnosis": {"summary": DIAGNOSIS, "citations": ["kb:7"]}}));
    store.append_issue_audit(issue.id, &analysis).unwrap_or_else(|e| panic!("{e}"));
    for (i, (reason, expires)) in [
        (HOSTILE, now.plus(Duration::from_secs(3600))),
        ("expired", now.minus(Duration::from_secs(60))),
        ("to reject", now.plus(Duration::from_secs(3600))),
        ("decided elsewhere", now.plus(Duration::from_secs(3600))),
    ]
    .into_iter()
    .enumerate()
    {
        let action = serde_json::json!({"kind": "diagnostic", "host": "local", "name": "disk_usage", "reason": reason});
        let new = NewApproval {
            host: "local".into(),
            action,
            decision: serde_json::json!({"verdict": "approval", "risk": "low", "reason": "a person decides (test)"}),
            reason: reason.into(),
            requested_by: "model".into(),
            requested_at: now.minus(Duration::from_secs(120)),
            expires_at: expires,
            correlation_id: format!("c0ffee{i}"),
            issue_id: [0, 2].contains(&i).then_some(issue.id),
        };
        let audit =
            NewAudit::new(now, AuditKind::Approval, Severity::Notice, "local", format!("approval requested: {reason}"));
        store.create_approval(&new, &audit).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn form(csrf: &str, digest: &str, note: &str) -> String {
    format!("csrf={csrf}&digest={digest}&note={}", note.replace(' ', "+"))
}

#[test]
fn the_console_on_the_unix_socket_keeps_every_guarantee() {
    let daemon =
        TestDaemon::builder().autonomy("observe").tables("[web]\nenable = true\n").prepare(queue_approvals).start();
    let sock = daemon.dir.path().join("web.sock");
    wait_for("the console's socket", Duration::from_secs(30), || sock.exists());

    // Every answer carries the policy; GET hands out a strict session cookie.
    let home = unix(&sock, "GET", "/", &[], "");
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.header("content-security-policy"), Some(CSP));
    assert_eq!(home.header("x-frame-options"), Some("DENY"));
    let set = home.header("set-cookie").unwrap_or_default().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = home.cookie().unwrap_or_default();
    let assets = unix(&sock, "GET", "/assets/htmx.min.js", &[], "");
    assert_eq!((assets.status, assets.header("content-security-policy")), (200, Some(CSP)));
    assert!(assets.body.contains("htmx"), "the vendored htmx is served");

    // The card: hostile text escaped, no javascript: link, the forms carry token and digest.
    let card = unix(&sock, "GET", "/approvals/1", &[("Cookie", &cookie)], "");
    assert_eq!(card.status, 200, "{}", card.body);
    assert!(!card.body.contains("<script>alert"), "{}", card.body);
    assert!(!card.body.contains("<img src=x"), "{}", card.body);
    assert!(card.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", card.body);
    assert!(!card.body.to_lowercase().contains("href=\"javascript"), "{}", card.body);
    assert!(card.body.contains("<a href=\"https://ok.example/doc\""), "http(s) links stay links");
    assert_eq!(card.body.matches("<script").count(), 1, "only the htmx script element");
    let csrf = card.input("csrf");
    let digest = card.input("digest");
    assert_eq!(digest.len(), 64);
    // It links to the issue it came from and shows that issue's analysis and citations.
    assert!(card.body.contains("<a href=\"/issues/1\">issue 1</a>"), "{}", card.body);
    assert!(card.body.contains("the data volume is 93% full"), "{}", card.body);
    assert!(card.body.contains(DIAGNOSIS), "{}", card.body);
    assert!(card.body.contains("<li>kb:7</li>"), "{}", card.body);
    // A request without an issue has no issue line.
    let card4 = unix(&sock, "GET", "/approvals/4", &[("Cookie", &cookie)], "");
    assert!(!card4.body.contains("href=\"/issues/"), "{}", card4.body);
    // `macha approve show` names the same issue, and no issue where there is none.
    let shown = String::from_utf8_lossy(&daemon.cli(&["approve", "show", "1"]).stdout).into_owned();
    assert!(shown.contains("issue:      1 (macha issues show 1)"), "{shown}");
    let shown4 = String::from_utf8_lossy(&daemon.cli(&["approve", "show", "4"]).stdout).into_owned();
    assert!(shown4.contains("approval 4") && !shown4.contains("issue:"), "{shown4}");

    let origin = ("Origin", "http://localhost:8470");
    let good = [("Cookie", cookie.as_str()), origin];
    // GET never decides.
    assert_eq!(unix(&sock, "GET", "/approvals/1/approve", &[("Cookie", &cookie)], "").status, 405);
    // No origin, a foreign origin, no token, a wrong token, no session: 403.
    assert_eq!(
        unix(&sock, "POST", "/approvals/1/approve", &[("Cookie", &cookie)], &form(&csrf, &digest, "")).status,
        403
    );
    let foreign = [("Cookie", cookie.as_str()), ("Origin", "http://evil.example")];
    assert_eq!(unix(&sock, "POST", "/approvals/1/approve", &foreign, &form(&csrf, &digest, "")).status, 403);
    assert_eq!(unix(&sock, "POST", "/approvals/1/approve", &good, &form("", &digest, "")).status, 403);
    assert_eq!(unix(&sock, "POST", "/approvals/1/approve", &good, &form(&"0".repeat(64), &digest, "")).status, 403);
    assert_eq!(unix(&sock, "POST", "/approvals/1/approve", &[origin], &form(&csrf, &digest, "")).status, 403);
    // Another action than the one shown: 409; an expired request: 410.
    let stale = unix(&sock, "POST", "/approvals/1/approve", &good, &form(&csrf, &"a".repeat(64), ""));
    assert_eq!(stale.status, 409, "{}", stale.body);
    let expired = unix(&sock, "POST", "/approvals/2/approve", &good, &form(&csrf, &digest, ""));
    assert_eq!(expired.status, 410, "{}", expired.body);
    let store = daemon.store();
    let a = store.get_approval(1).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("approval 1"));
    assert!(a.decided_by.is_none(), "nothing was decided by a refused form: {a:?}");
    let a = store.get_approval(2).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("approval 2"));
    assert_eq!(a.decided_by.as_deref(), Some("expiry"), "only the daemon's expiry decided it: {a:?}");

    // Approve through the same engine function as `macha approve`: at autonomy observe the
    // re-decided policy refuses at execution, as it does for the CLI.
    let approved = unix(&sock, "POST", "/approvals/1/approve", &good, &form(&csrf, &digest, "looks right"));
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(approved.body.contains("refused it at execution"), "{}", approved.body);
    let a = daemon.store().get_approval(1).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("approval 1"));
    assert_eq!(a.state.as_str(), "failed", "{a:?}");
    assert!(a.decided_by.as_deref().is_some_and(|b| b.ends_with("via web")), "{a:?}");
    // A double submit does nothing again and says so.
    let again = unix(&sock, "POST", "/approvals/1/approve", &good, &form(&csrf, &digest, "looks right"));
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("Already approved by you at"), "{}", again.body);

    // Reject with a reason; the reason is kept on the request.
    let card3 = unix(&sock, "GET", "/approvals/3", &[("Cookie", &cookie)], "");
    let digest3 = card3.input("digest");
    let rejected = unix(&sock, "POST", "/approvals/3/reject", &good, &form(&csrf, &digest3, "wrong host"));
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    let a = daemon.store().get_approval(3).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("approval 3"));
    assert_eq!((a.state.as_str(), a.decision_note.as_deref()), ("rejected", Some("wrong host")));
    // ... and in the model's discussion of the request, as the rejecting person's turn.
    let turns = daemon.store().conversation("approval-3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert_eq!(turns[0].role, "user");
    assert!(turns[0].content.ends_with("My reason: wrong host"), "{turns:?}");
    assert_eq!(turns[0].who, a.decided_by, "{turns:?}");
    let twice = unix(&sock, "POST", "/approvals/3/reject", &good, &form(&csrf, &digest3, "wrong host"));
    assert!(twice.body.contains("Already rejected by you at"), "{}", twice.body);

    // Every page renders for a reader.
    for path in [
        "/",
        "/issues",
        "/issues?state=open&severity=warning",
        "/approvals",
        "/deployments",
        "/deployments/progress",
        "/logs?q=approval",
        "/knowledge",
        "/knowledge?q=disk",
    ] {
        let p = unix(&sock, "GET", path, &[("Cookie", &cookie)], "");
        assert_eq!(p.status, 200, "{path}: {}", p.body);
    }
    assert_eq!(unix(&sock, "GET", "/issues/999", &[("Cookie", &cookie)], "").status, 404);
    // The knowledge page lists the runbook catalog, as `macha knowledge runbooks` does.
    let kb = unix(&sock, "GET", "/knowledge", &[("Cookie", &cookie)], "");
    assert!(kb.body.contains("<code>unit-restart-loop</code>"), "{}", kb.body);
    assert!(kb.body.contains("(built-in)"), "{}", kb.body);

    // The refusals and the decisions are in the audit trail.
    wait_for("the refusals in the audit trail", Duration::from_secs(10), || {
        daemon.audit(AuditKind::AuthDenied).iter().any(|r| r.summary.contains("CSRF"))
    });
    let refused = daemon.audit(AuditKind::AuthDenied);
    assert!(
        refused.iter().any(|r| r.summary.contains("web console refused") && r.summary.contains("origin")),
        "{refused:?}"
    );
    assert!(refused.iter().any(|r| r.summary.contains("CSRF")), "{refused:?}");
    let decisions = daemon.audit(AuditKind::Approval);
    assert!(
        decisions.iter().any(|r| r.summary.contains("approval 1 approved by") && r.summary.contains("via web")),
        "{decisions:?}"
    );
}

/// Two hours of a configured host's metric history, a sample a minute, with a filesystem whose
/// name is hostile markup.
fn record_history(dir: &Path) {
    std::fs::create_dir_all(dir.join("state")).unwrap_or_else(|e| panic!("{e}"));
    let mut store = Store::open(dir.join("state/macha.db")).unwrap_or_else(|e| panic!("{e}"));
    let now = now();
    for i in 0..120u64 {
        let at = now.minus(Duration::from_secs(7200 - i * 60));
        let samples = [
            ("cpu.usage_percent", 20.0 + (i % 10) as f64),
            ("mem.used_percent", 41.5),
            ("load.1", 0.5),
            ("anomaly.rate_percent", 7.5),
            ("fs.used_percent:/<script>alert(1)</script>", 63.0),
        ];
        store.record_metrics("web1", at, &samples).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_host_page_charts_the_metric_history_escaped_and_refuses_a_bad_range() {
    let daemon = TestDaemon::builder()
        .autonomy("observe")
        .tables("[web]\nenable = true\n[hosts.web1]\naddress = \"192.0.2.10\"\n")
        .prepare(record_history)
        .start();
    let sock = daemon.dir.path().join("web.sock");
    wait_for("the console's socket", Duration::from_secs(30), || sock.exists());

    let page = unix(&sock, "GET", "/hosts/web1", &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("No metric history yet."), "{}", page.body);
    assert!(page.body.contains("<svg class=\"chart metric\""), "{}", page.body);
    for chart in ["CPU", "Memory used", "Load", "Anomaly rate"] {
        assert!(page.body.contains(&format!("<figcaption>{chart}<")), "{chart}: {}", page.body);
    }
    assert!(page.body.contains("<path class=\"line s0\""), "a line is drawn: {}", page.body);
    assert!(page.body.contains("anomaly rate: <strong>7.5 %</strong>"), "{}", page.body);
    assert!(page.body.contains("<strong>6 h</strong>") && page.body.contains("href=\"?range=30d\""));
    // The hostile mount point is text, never markup; no inline style anywhere.
    assert!(page.body.contains("Filesystem /&lt;script&gt;alert(1)&lt;/script&gt;: used"), "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert_eq!(page.body.matches("<script").count(), 1, "only the htmx script element");
    assert!(!page.body.contains("style="), "{}", page.body);
    assert_eq!(page.header("content-security-policy"), Some(CSP));

    // Each offered range renders; anything else is a 400 that does not echo it as markup.
    for range in ["6h", "24h", "7d", "30d"] {
        let p = unix(&sock, "GET", &format!("/hosts/web1?range={range}"), &[], "");
        assert_eq!(p.status, 200, "{range}: {}", p.body);
        // Two hours of history: a line in every range but 30 days, where it fits in one column
        // of the chart (2.4 h) and is a dot.
        let drawn = if range == "30d" { "<circle class=\"dot s0\"" } else { "<path class=\"line s0\"" };
        assert!(p.body.contains(drawn), "{range}: {}", p.body);
    }
    for bad in ["1y", "6H", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "-1"] {
        let p = unix(&sock, "GET", &format!("/hosts/web1?range={bad}"), &[], "");
        assert_eq!(p.status, 400, "{bad}: {}", p.body);
        assert!(!p.body.contains("<script>alert"), "{}", p.body);
    }
    // A hostile host name: not found, and escaped.
    let hostile = unix(&sock, "GET", "/hosts/%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[], "");
    assert_eq!(hostile.status, 404, "{}", hostile.body);
    assert!(!hostile.body.contains("<script>alert"), "{}", hostile.body);
    assert!(hostile.body.contains("&lt;script&gt;alert(1)"), "{}", hostile.body);

    // The fleet page: the host's anomaly rate in its row.
    let fleet = unix(&sock, "GET", "/", &[], "");
    assert_eq!(fleet.status, 200, "{}", fleet.body);
    assert!(fleet.body.contains("<th>anomaly rate</th>"), "{}", fleet.body);
    let row = fleet.body.split("<a href=\"/hosts/web1\">").nth(1).and_then(|r| r.split("</tr>").next());
    assert!(row.is_some_and(|r| r.contains("<td>7.5 %</td>")), "{}", fleet.body);

    // This host has no history of its own until its first cycle: the placeholder, or charts.
    wait_for("this host's page", Duration::from_secs(60), || unix(&sock, "GET", "/hosts/local", &[], "").status == 200);
    let local = unix(&sock, "GET", "/hosts/local", &[], "");
    assert!(local.body.contains("No metric history yet.") || local.body.contains("<svg class=\"chart metric\""));
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn on_tcp_only_a_login_or_a_trusted_proxy_gets_in_and_a_viewer_cannot_approve() {
    let port = free_port();
    let daemon = TestDaemon::builder()
        .autonomy("observe")
        .tables(&format!(
            "[web]\nenable = true\nlisten = \"127.0.0.1:{port}\"\ntrusted_proxies = [\"127.0.0.2\"]\n\
             proxy_user_header = \"X-Remote-User\"\nproxy_viewers = [\"victor\"]\nproxy_admins = [\"ada\"]\n"
        ))
        .prepare(queue_approvals)
        .start();
    wait_for("the console's port", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // Nobody in: a login is needed.
    assert_eq!(tcp("127.0.0.1", port, "GET", "/", &[], "").status, 401);
    // The proxy's header from a peer that is not a trusted proxy: refused and audited.
    let forged = tcp("127.0.0.1", port, "GET", "/", &[("X-Remote-User", "ada")], "");
    assert_eq!(forged.status, 403, "{}", forged.body);
    wait_for("the refusal in the audit trail", Duration::from_secs(10), || {
        daemon.audit(AuditKind::AuthDenied).iter().any(|r| r.summary.contains("not a trusted proxy"))
    });

    // A viewer through the trusted proxy reads, but cannot approve (the daemon refuses, audited).
    let victor = [("X-Remote-User", "victor")];
    let card = tcp("127.0.0.2", port, "GET", "/approvals/1", &victor, "");
    assert_eq!(card.status, 200, "{}", card.body);
    assert!(!card.body.contains("name=\"digest\""), "no decision forms for a viewer");
    let cookie = card.cookie().unwrap_or_default();
    let csrf = {
        // The viewer's page has no form; the token of the session is on the login page.
        let p = tcp("127.0.0.2", port, "GET", "/login", &[("Cookie", &cookie)], "");
        p.input("csrf")
    };
    let digest = macha_core::policy::action_digest(
        &daemon
            .store()
            .get_approval(1)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("approval 1"))
            .action,
    );
    let h = [("X-Remote-User", "victor"), ("Cookie", cookie.as_str()), ("Origin", "http://localhost:8470")];
    let denied = tcp("127.0.0.2", port, "POST", "/approvals/1/approve", &h, &form(&csrf, &digest, ""));
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(
        daemon.audit(AuditKind::AuthDenied).iter().any(|r| r.summary.contains("denied approve to victor via proxy")),
        "the daemon's own denial"
    );
    let a = daemon.store().get_approval(1).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("approval 1"));
    assert_eq!(a.state.as_str(), "pending");

    // `macha web login`: a link that works once.
    let out = daemon.cli(&["web", "login"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = url.strip_prefix(&format!("http://127.0.0.1:{port}")).unwrap_or_else(|| panic!("{url}")).to_owned();
    let token = path.split("token=").nth(1).unwrap_or_default().to_owned();
    let page = tcp("127.0.0.1", port, "GET", &path, &[], "");
    assert_eq!(page.status, 200);
    let anon = page.cookie().unwrap_or_default();
    let csrf = page.input("csrf");
    let h = [("Cookie", anon.as_str()), ("Origin", "http://localhost:8470")];
    let login = tcp("127.0.0.1", port, "POST", "/login", &h, &format!("csrf={csrf}&token={token}"));
    assert_eq!(login.status, 200, "{}", login.body);
    let session = login.cookie().unwrap_or_default();
    assert_ne!(session, anon, "a new session id at login");
    let home = tcp("127.0.0.1", port, "GET", "/", &[("Cookie", &session)], "");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("via web · admin"), "{}", home.body);
    let replay = tcp("127.0.0.1", port, "POST", "/login", &h, &format!("csrf={csrf}&token={token}"));
    assert_eq!(replay.status, 403, "a token works once");
    wait_for("the login in the audit trail", Duration::from_secs(10), || {
        daemon.audit(AuditKind::Daemon).iter().any(|r| r.summary.contains("web console login"))
    });
}
