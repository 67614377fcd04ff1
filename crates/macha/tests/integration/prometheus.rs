//! Prometheus: the daemon's `/metrics` (only GET of that path, bounded), its exposition and its
//! textfile checked by `promtool check metrics`, the example rules by `promtool check rules` and
//! their unit tests, and a real Prometheus scraping a running daemon and answering a query.
//!
//! `tests/run.sh` installs Debian's `prometheus` (which ships `promtool`) and sets
//! `MACHA_TEST_PROMETHEUS=/usr/bin/prometheus`; the tests that need it say so and pass without it
//! only when that variable is unset, and fail when it is set but the programs do not work.

use crate::support::daemon::{TestDaemon, wait_for};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `prometheus` and `promtool` from `MACHA_TEST_PROMETHEUS`, or `None` (with a line saying what
/// is not tested) when it is not set.
fn prometheus(test: &str) -> Option<(PathBuf, PathBuf)> {
    let Some(path) = std::env::var_os("MACHA_TEST_PROMETHEUS") else {
        eprintln!("{test}: MACHA_TEST_PROMETHEUS is not set (tests/run.sh sets it): the Prometheus part is not run");
        return None;
    };
    let prometheus = PathBuf::from(path);
    let promtool = prometheus.with_file_name("promtool");
    assert!(prometheus.is_file(), "MACHA_TEST_PROMETHEUS={} is no file", prometheus.display());
    assert!(promtool.is_file(), "no promtool beside {}", prometheus.display());
    Some((prometheus, promtool))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

/// One HTTP/1.1 request; the status code and the body.
fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap_or_else(|e| panic!("{e}"));
    s.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn get(port: u16, path: &str) -> (u16, String) {
    http(port, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn check_metrics(promtool: &Path, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
    child.stdin.take().map(|mut i| i.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn daemon_with_metrics(port: u16, textfile: Option<&Path>) -> TestDaemon {
    daemon_with_metrics_and(port, textfile, "")
}

/// The same with more configuration tables.
fn daemon_with_metrics_and(port: u16, textfile: Option<&Path>, tables: &str) -> TestDaemon {
    let mut table = format!("[prometheus]\nenable = true\nlisten = \"127.0.0.1:{port}\"\n");
    if let Some(dir) = textfile {
        table.push_str(&format!("textfile = \"{}\"\n", dir.display()));
    }
    table.push_str(tables);
    TestDaemon::builder().tables(&table).wait_for_first_cycle().start()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn metrics_are_served_only_as_get_metrics_and_pass_promtool() {
    let port = free_port();
    let textfile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A webhook nobody listens on: every attempt fails, and is counted.
    let secrets = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = secrets.path().join("webhook.key");
    std::fs::write(&key, "k").unwrap_or_else(|e| panic!("{e}"));
    let webhook = format!(
        "[notifications.webhook]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_file = \"{}\"\nmin_severity = \"info\"\n",
        free_port(),
        key.display()
    );
    let d = daemon_with_metrics_and(port, Some(textfile.path()), &webhook);
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    for family in [
        "# HELP macha_host_up ",
        "# TYPE macha_loop_turn_duration_seconds histogram",
        "macha_check_interval_seconds 3600.0",
        "macha_build_info{version=",
        "macha_host_cycle_duration_seconds{host=",
    ] {
        assert!(body.contains(family), "{family:?} missing from\n{body}");
    }
    // The first cycle observed this host and it answered.
    assert!(body.lines().any(|l| l.starts_with("macha_host_up{host=") && l.ends_with(" 1")), "{body}");
    // The loop has turned (the first cycle's outcome, at least).
    let turns = body
        .lines()
        .find_map(|l| l.strip_prefix("macha_loop_turn_duration_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(turns > 0, "{body}");

    // A notification that cannot be delivered is counted by channel.
    let out = d.cli(&["notify", "--channel", "webhook", "unreachable", "body"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the failed notification counted", Duration::from_secs(20), || {
        get(port, "/metrics").1.lines().any(|l| l.starts_with("macha_notifications_failed_total{channel=\"webhook\"} "))
    });

    // Nothing else is served.
    assert_eq!(get(port, "/").0, 404);
    assert_eq!(get(port, "/metrics/../etc/passwd").0, 404);
    let (status, _) =
        http(port, "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    assert_eq!(status, 405);
    // A request head larger than the bound is refused, and the server goes on.
    let huge = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(64 * 1024));
    let (status, body) = http(port, &huge);
    assert_ne!(status, 200, "a 64 KiB request head was served: {body}");
    assert_eq!(get(port, "/metrics").0, 200);

    // The textfile is written after the cycle, whole.
    let file = textfile.path().join("macha.prom");
    wait_for("the textfile", Duration::from_secs(20), || file.exists());
    let written = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(written.contains("macha_host_up{host="), "{written}");
    let leftovers: Vec<_> = std::fs::read_dir(textfile.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "macha.prom")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    if let Some((_, promtool)) = prometheus("metrics_are_served_only_as_get_metrics_and_pass_promtool") {
        let (_, body) = get(port, "/metrics");
        let (ok, said) = check_metrics(&promtool, &body);
        assert!(ok, "promtool check metrics refused /metrics: {said}\n{body}");
        let (ok, said) = check_metrics(&promtool, &written);
        assert!(ok, "promtool check metrics refused macha.prom: {said}\n{written}");
    }
    drop(d);
}

#[test]
fn hostile_label_values_stay_inside_their_label_for_promtool() {
    let m = macha_prom::Metrics::new(macha_prom::Limits::default(), Duration::from_secs(60), 0.0);
    let sample = macha_prom::HostSample {
        up: true,
        contact_unix_secs: 1.0,
        filesystems: vec![
            ("/mnt/with \"quotes\" and \\ backslash".to_owned(), 0.5),
            ("/mnt/new\nline\"} 1\nmacha_forged 1".to_owned(), 0.25),
        ],
        ..macha_prom::HostSample::default()
    };
    m.host("web1", &sample);
    let text = m.render_text(2.0);
    assert!(!text.lines().any(|l| l.starts_with("macha_forged")), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("macha_host_filesystem_used_ratio{")).count(), 2, "{text}");
    if let Some((_, promtool)) = prometheus("hostile_label_values_stay_inside_their_label_for_promtool") {
        let (ok, said) = check_metrics(&promtool, &text);
        assert!(ok, "promtool check metrics: {said}\n{text}");
    }
}

#[test]
fn the_example_rules_pass_promtool_and_their_unit_tests() {
    let Some((_, promtool)) = prometheus("the_example_rules_pass_promtool_and_their_unit_tests") else { return };
    let dir = repo().join("contrib/prometheus");
    for args in [["check", "rules", "macha-rules.yml"], ["test", "rules", "macha-rules.test.yml"]] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Kills the Prometheus server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_answers_queries() {
    let Some((prometheus, _)) = prometheus("a_real_prometheus_scrapes_the_daemon_and_answers_queries") else { return };
    let port = free_port();
    let _daemon = daemon_with_metrics(port, None);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: macha\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let web = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", prometheus.display()));
    let _server = Server(child);
    let query = |q: &str| -> Vec<serde_json::Value> {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", web)) else { return Vec::new() };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!("GET /api/v1/query?query={q} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return Vec::new();
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // Chunked or not, the JSON object is between the first `{` and the last `}`.
        let json = body.find('{').and_then(|a| body.rfind('}').map(|b| &body[a..=b])).unwrap_or("");
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    };
    let log_tail = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let up = loop {
        let r = query("macha_host_up");
        if !r.is_empty() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "Prometheus never had macha_host_up; its log:\n{}", log_tail());
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    assert!(up[0]["metric"]["host"].as_str().is_some_and(|h| !h.is_empty()), "{up:?}");
    // The scrape itself was healthy, and Macha's own families arrived too.
    let target_up = query("up%7Bjob%3D%22macha%22%7D");
    assert_eq!(target_up.first().map(|r| r["value"][1].clone()), Some(serde_json::json!("1")), "{target_up:?}");
    let interval = query("macha_check_interval_seconds");
    assert_eq!(interval.first().map(|r| r["value"][1].clone()), Some(serde_json::json!("3600")), "{interval:?}");
    let turns = query("macha_loop_turn_duration_seconds_count");
    assert!(
        turns.first().and_then(|r| r["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok()).is_some_and(|n| n > 0.0),
        "{turns:?}"
    );
}
