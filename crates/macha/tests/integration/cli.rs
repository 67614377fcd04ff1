//! The command line, run as a person would: the real binary, real files, real stdin/stdout.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn macha() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_macha"));
    c.env_remove("MACHA_CONFIG").env_remove("MACHA_SOCKET").env("MACHA_LOG", "error");
    c
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = macha()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin.as_bytes());
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"))
}

fn verdict(autonomy: &str, doc: &str) -> (i32, serde_json::Value, String) {
    let out = run_with_stdin(&["policy", "check", "--autonomy", autonomy, "--json"], doc);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn policy_check_verdicts() {
    let restart = r#"{"kind":"restart_unit","host":"local","unit":"nginx","reason":"failed"}"#;
    for (autonomy, want) in
        [("observe", "deny"), ("suggest", "approval"), ("auto-safe", "execute"), ("auto-full", "execute")]
    {
        let (code, v, err) = verdict(autonomy, restart);
        assert_eq!(code, 0, "{err}");
        assert_eq!(v["verdict"], want, "{autonomy}: {v}");
        assert_eq!(v["risk"], "medium");
    }
    let (_, v, _) = verdict("auto-full", r#"{"kind":"reboot","reason":"kernel update"}"#);
    assert_eq!((v["verdict"].as_str(), v["risk"].as_str()), (Some("approval"), Some("critical")));
}

#[test]
fn policy_check_never_executes_hostile_input() {
    // Protected units under aliases and other names: deny at every level.
    for unit in [
        "sshd",
        "ssh.service",
        "openssh",
        "dbus-broker",
        "systemd-journald",
        "NetworkManager",
        "nix-daemon.socket",
        "macha",
    ] {
        for autonomy in ["suggest", "auto-safe", "auto-full"] {
            let doc = format!(r#"{{"kind":"restart_unit","unit":"{unit}","reason":"x"}}"#);
            let (code, v, _) = verdict(autonomy, &doc);
            assert_eq!(code, 0);
            assert_eq!(v["verdict"], "deny", "{unit} at {autonomy}: {v}");
        }
    }
    // Malformed or hostile documents are errors with exit code 65, never a verdict.
    for doc in [
        r#"{"kind":"restart_unit","unit":"nginx; rm -rf /","reason":"x"}"#,
        r#"{"kind":"restart_unit","unit":"nginx","reason":"x","command":"rm -rf /"}"#,
        r#"{"kind":"shell","cmd":"rm -rf /","reason":"x"}"#,
        r#"{"kind":"restart_unit","unit":"$(reboot)","reason":"x"}"#,
        r#"{"kind":"config_change","path":"/etc/../etc/shadow","patch":"x","reason":"x"}"#,
        r#"{"kind":"diagnostic","name":"unit_logs","args":{"unit":"x","extra":"|sh"},"reason":"x"}"#,
        r#"{"kind":"restart_unit","host":"--oProxyCommand=sh","unit":"x","reason":"x"}"#,
        "not json",
        "",
    ] {
        let (code, v, err) = verdict("auto-full", doc);
        assert_eq!(code, 65, "{doc}: {v} {err}");
        assert!(v.is_null());
        assert!(err.contains("invalid action") || err.contains("bytes"), "{doc}: {err}");
    }
    let huge = format!(r#"{{"kind":"restart_unit","unit":"x","reason":"{}"}}"#, "a".repeat(200_000));
    let (code, _, err) = verdict("auto-full", &huge);
    assert_eq!(code, 65, "{err}");
}

#[test]
fn schema_and_policy_table() {
    let out = macha().args(["schema", "action"]).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(schema.to_string().contains("restart_unit"));
    let out = macha().args(["policy", "show", "--json"]).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(table["table"].as_array().map(Vec::len), Some(12));
    let reboot =
        table["table"].as_array().and_then(|t| t.iter().find(|r| r["kind"] == "reboot")).cloned().unwrap_or_default();
    assert_eq!(reboot["verdicts"]["auto-full"], "approval");
    assert!(table["protected_units"].to_string().contains("sshd"));
    let text = macha().args(["policy", "show"]).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&text.stdout).contains("restart_unit"));
}

#[test]
fn standalone_check_reports_every_section() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("m.db");
    // Point the system bus at a socket that does not exist: systemd must be reported unavailable
    // with a reason, never as healthy.
    let out = macha()
        .args(["check", "--standalone", "--json", "--db"])
        .arg(&db)
        .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}/nobus", dir.path().display()))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    for section in [
        "cpu",
        "memory",
        "load",
        "pressure",
        "filesystems",
        "network",
        "processes",
        "units",
        "journal",
        "nix",
        "hardware",
    ] {
        let s = &v["sections"][section];
        assert!(
            s["status"] == "ok"
                || (s["status"] == "unavailable" && s["reason"].as_str().is_some_and(|r| !r.is_empty())),
            "{section}: {s}"
        );
    }
    assert_eq!(v["sections"]["units"]["status"], "unavailable");
    assert_ne!(v["status"], "healthy", "an unobserved source can never be healthy");
    // A one-shot check measures CPU % (per process too) over a short window of its own.
    let procs = &v["snapshot"]["processes"]["data"]["top_cpu"];
    assert!(procs.as_array().is_some_and(|p| !p.is_empty() && p.iter().all(|p| p["cpu_percent"].is_f64())), "{procs}");
    assert!(v["snapshot"]["cpu"]["data"]["usage_percent"].is_f64(), "{}", v["snapshot"]["cpu"]);
    assert_eq!(
        out.status.code(),
        Some(match v["status"].as_str() {
            Some("warning") => 1,
            Some("critical") => 2,
            _ => 3,
        })
    );
    assert!(db.exists());
    // A second run computes CPU usage from the stored ticks.
    let out =
        macha().args(["check", "--standalone", "--json", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(v["snapshot"]["cpu"]["data"]["usage_percent"].is_number(), "{}", v["snapshot"]["cpu"]);
    // Text mode names the unavailable sources.
    let out = macha()
        .args(["check", "--standalone", "--db"])
        .arg(&db)
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("units") && text.contains("unavailable:"), "{text}");
}

#[test]
fn check_config_accepts_good_and_explains_bad() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "autonomy = \"auto-safe\"\ncheck_interval = \"30s\"\n[flap]\nlimit = 2\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = macha().args(["check-config", "--json"]).arg(&good).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(v["autonomy"], "auto-safe");
    // The printed configuration is a configuration: it reads back to the same values.
    std::fs::write(
        &good,
        "[approvals]\nexpiry = \"2h\"\n[llm]\nmay_execute = [\"diagnostic\"]\n[hosts.web1]\naddress = \"10.0.0.1\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let effective = |path: &std::path::Path| {
        let out = macha().args(["check-config", "--json"]).arg(path).output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let printed = macha().args(["check-config"]).arg(&good).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(printed.status.success());
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &printed.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(effective(&again), effective(&good), "{}", String::from_utf8_lossy(&printed.stdout));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "autonomy = \"auto-safe\"\nchek_interval = \"30s\"\n").unwrap_or_else(|e| panic!("{e}"));
    let out = macha().args(["check-config"]).arg(&bad).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chek_interval") && err.contains("bad.toml"), "{err}");
    let out =
        macha().args(["check-config"]).arg(dir.path().join("missing.toml")).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn usage_errors_completions_and_man_pages() {
    let out = macha().args(["frobnicate"]).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(64));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = macha().args(["completions", "bash", "--dir"]).arg(dir.path()).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    for name in ["macha.bash", "macha-approve.bash", "macha-check.bash", "macha-logs.bash", "macha-issues.bash"] {
        assert!(dir.path().join(name).exists(), "{name}");
    }
    let man = dir.path().join("man");
    let out = macha().args(["man"]).arg(&man).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let page = std::fs::read_to_string(man.join("macha-approve.1")).unwrap_or_default();
    assert!(page.contains(".TH"), "{page}");
    assert!(man.join("macha-policy.1").exists());
}

#[test]
fn clients_without_daemon_fail_clearly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sock = dir.path().join("none.sock");
    let out = macha()
        .args(["approve", "approve", "1", "--socket"])
        .arg(&sock)
        .env("HOME", dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the Macha daemon"));
}

#[test]
fn an_empty_journal_is_unavailable_never_zero_errors() {
    // journalctl on a place without journal files prints nothing and exits 0, exactly like a
    // journal without errors; Macha must tell the two apart.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let empty = dir.path().join("journal");
    std::fs::create_dir(&empty).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("macha.toml");
    // Thresholds out of reach: a busy test machine must not turn this into a load finding.
    std::fs::write(
        &config,
        format!(
            "[journal]\ndirectory = \"{}\"\n[systemd]\nenable = false\n[thresholds]\nload_per_cpu_warn = 1000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0\ndisk_warn_percent = 100.0\ndisk_critical_percent = 100.0\ninode_warn_percent = 100.0\ninode_critical_percent = 100.0\n",
            empty.display()
        ),
    )
        .unwrap_or_else(|e| panic!("{e}"));
    let out = macha()
        .args(["check", "--standalone", "--json", "--config"])
        .arg(&config)
        .arg("--db")
        .arg(dir.path().join("m.db"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let journal = &v["sections"]["journal"];
    assert_eq!(journal["status"], "unavailable", "{journal}");
    assert!(
        journal["reason"].as_str().is_some_and(|r| r.contains("no journal entries") || r.contains("journalctl")),
        "{journal}"
    );
    assert_eq!(out.status.code(), Some(3));
}

/// Text from logs, hosts or the model that reaches a terminal is stripped of control sequences
/// (screen clear, title, clipboard write, hidden text); `--json` escapes them; `--raw` keeps them.
#[test]
fn hostile_text_never_reaches_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("macha.db");
    let hostile = "unit failed\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[2J\u{1b}[8mhidden\u{1b}[0m\u{202e}done";
    {
        let mut store = macha_store::Store::open(&db).unwrap_or_else(|e| panic!("{e}"));
        let rec = macha_store::NewAudit::new(
            macha_core::Timestamp::from_secs(1_700_000_000),
            macha_store::AuditKind::Alert,
            macha_store::Severity::Warning,
            "local",
            hostile,
        );
        store.append_audit(&rec).unwrap_or_else(|e| panic!("{e}"));
    }
    let text = macha().args(["logs", "audit", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("unit failed") && out.contains("hidden") && out.contains("done"), "{out}");
    for c in ['\u{1b}', '\u{7}', '\u{202e}', '\u{9b}'] {
        assert!(!out.contains(c), "{c:?} reached the terminal: {out:?}");
    }
    let json = macha().args(["logs", "audit", "--json", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    let line = String::from_utf8_lossy(&json.stdout);
    assert!(!line.contains('\u{1b}') && line.contains("\\u001b"), "{line}");
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["summary"], hostile, "JSON keeps the exact text");
    let raw = macha().args(["logs", "audit", "--raw", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&raw.stdout).contains('\u{1b}'), "--raw prints the bytes as they are");
}

/// `check-config` reads a bounded amount (a 20 MiB file is refused, not loaded), and an invalid
/// 40 KB line is not echoed back whole.
#[test]
fn check_config_is_bounded_and_does_not_echo_huge_lines() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let big = dir.path().join("big.toml");
    let mut text = String::from("autonomy = \"suggest\"\n");
    while text.len() < 20 * 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).unwrap_or_else(|e| panic!("{e}"));
    let out = macha().arg("check-config").arg(&big).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limit"), "{err}");
    let long = dir.path().join("long.toml");
    std::fs::write(&long, format!("autonomy = \"{}\n", "x".repeat(40 * 1024))).unwrap_or_else(|e| panic!("{e}"));
    let out = macha().arg("check-config").arg(&long).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(out.stderr.len() < 2048, "stderr is {} bytes: the line was echoed", out.stderr.len());
}

/// A document padded past the limit, hiding a second action after the padding, is refused as too
/// large; it is never cut at the limit and judged on its first part.
#[test]
fn policy_check_refuses_a_padded_document_instead_of_judging_its_start() {
    let first = r#"{"kind":"restart_unit","unit":"nginx","reason":"r"}"#;
    let hidden = r#"{"kind":"reboot","reason":"r"}"#;
    let doc = format!("{first}{}{hidden}", " ".repeat(128 * 1024));
    let out = run_with_stdin(&["policy", "check", "--autonomy", "auto-full", "--json"], &doc);
    assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    // A host named twice is invalid, not "one host".
    let twice = r#"{"kind":"restart_unit","host":["local","local"],"unit":"nginx","reason":"r"}"#;
    let out = run_with_stdin(&["policy", "check", "--autonomy", "auto-full"], twice);
    assert_eq!(out.status.code(), Some(65));
}

/// `logs prompts --db FILE` reads the file (it used to be refused as if it wrote).
#[test]
fn the_prompt_log_of_a_database_file_is_read() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("macha.db");
    drop(macha_store::Store::open(&db).unwrap_or_else(|e| panic!("{e}")));
    let out = macha().args(["logs", "prompts", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no prompts recorded"));
    let out = macha().args(["logs", "prompts", "--json", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(v["prompts"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn anomaly_replay_scores_every_row_and_names_a_bad_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Two days of a daily cycle at 5-minute samples, one spike near the end.
    let mut csv = String::from("timestamp,value\n");
    for i in 0..576i64 {
        let phase = 2.0 * std::f64::consts::PI * (i % 288) as f64 / 288.0;
        let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        let spike = if i == 560 { 40.0 } else { 0.0 };
        csv.push_str(&format!("{},{:.3}\n", 1_796_083_200 + i * 300, 50.0 + 10.0 * phase.sin() + noise + spike));
    }
    let file = dir.path().join("s.csv");
    std::fs::write(&file, &csv).unwrap_or_else(|e| panic!("{e}"));
    let out = macha().args(["anomaly", "replay", "--json"]).arg(&file).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 576);
    assert_eq!(rows[560]["flagged"], true, "{}", rows[560]);
    let score = rows[560]["score"].as_f64().unwrap_or(0.0);
    assert!(score > 0.5 && score <= 1.0, "{score}");
    assert!(rows.iter().filter(|r| r["flagged"] == true).count() <= 3);
    let text = macha().args(["anomaly", "replay"]).arg(&file).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.lines().count() == 578 && text.contains("yes (+"), "{text}");

    std::fs::write(&file, "timestamp,value\n1796083200,1\n1796083500,one\n").unwrap_or_else(|e| panic!("{e}"));
    let out = macha().args(["anomaly", "replay"]).arg(&file).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: value \"one\" is not a number"));
}

#[test]
fn metrics_of_a_standalone_store_are_listed_and_drawn() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("m.db");
    for _ in 0..2 {
        let out = macha().args(["check", "--standalone", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.code().is_some_and(|c| c <= 3), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = macha().args(["metrics", "local", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l.starts_with("mem.available_bytes") && l.contains("memory available")), "{list}");
    let out = macha()
        .args(["metrics", "local", "mem.available_bytes", "--since", "1h", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(v["points"].as_array().is_some_and(|p| !p.is_empty()), "{v}");
    let out = macha()
        .args(["metrics", "local", "mem.available_bytes", "--db"])
        .arg(&db)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("memory available") && text.contains("latest"), "{text}");
    assert!(text.chars().any(|c| ('▁'..='█').contains(&c)), "{text}");
    let out = macha().args(["metrics", "local", "no such", "--db"]).arg(&db).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(64));
}
