//! The real-model tier: SmolLM2-135M-Instruct served by llama.cpp (`tests/llm/model-server.sh
//! up`), driven through the production code: the OpenAI-compatible backend directly, and the
//! Ollama backend (`ollama-rs`) through a small Ollama-API front in the test support, both in the
//! real daemon. A 135M model cannot pick the right fix, so these tests assert structure and
//! plumbing — the tool loop terminates, schema-constrained answers parse, streams stream,
//! timeouts fire — never the model's judgement.
//!
//! The server is found through `MACHA_LLM_URL` (default `http://127.0.0.1:18080`). Without it
//! these tests fail with instructions; they never pass silently. They are `#[ignore]`d so that a
//! plain `cargo test` does not need the model; `tests/run.sh` (CI) starts it and runs them.

use crate::support;

use macha_agent::backend::openai::OpenAiBackend;
use macha_agent::backend::{Backend, BackendError, Timeouts};
use macha_agent::message::{ChatRequest, GenOptions, Message};
use macha_agent::output::{self, Diagnosis};
use std::time::Duration;
use support::daemon::TestDaemon;

fn server() -> String {
    let url = std::env::var("MACHA_LLM_URL").unwrap_or_else(|_| "http://127.0.0.1:18080".into());
    let ok = std::net::TcpStream::connect_timeout(
        &url.trim_start_matches("http://").parse().unwrap_or_else(|e| panic!("MACHA_LLM_URL {url}: {e}")),
        Duration::from_secs(2),
    )
    .is_ok();
    assert!(ok, "no model server at {url}: start it with `tests/llm/model-server.sh up` (or set MACHA_LLM_URL)");
    url
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"))
}

fn request(text: &str, max_tokens: u32, stream: bool) -> ChatRequest {
    ChatRequest {
        model: "smollm2:135m".into(),
        messages: vec![Message::system("You are a terse system administrator."), Message::user(text)],
        tools: Vec::new(),
        format: None,
        options: GenOptions { temperature: 0.0, num_ctx: 4096, max_tokens, seed: Some(7) },
        stream,
    }
}

#[test]
#[ignore = "llm: needs tests/llm/model-server.sh up"]
fn llm_openai_backend_streams_follows_schemas_and_times_out() {
    let url = format!("{}/v1", server());
    let b = OpenAiBackend::new(&url, None, Timeouts::from_request(Duration::from_secs(120)))
        .unwrap_or_else(|e| panic!("{e}"));
    rt().block_on(async {
        assert!(!b.models().await.unwrap_or_default().is_empty());
        // Streaming: pieces arrive one by one, and they make up the answer.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let r = b
            .chat(&request("Say hello to the administrator.", 24, true), Some(tx))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut pieces = Vec::new();
        while let Ok(p) = rx.try_recv() {
            pieces.push(p);
        }
        assert!(pieces.len() > 1, "{pieces:?}");
        assert_eq!(pieces.concat(), r.content);
        assert!(r.first_token_ms.is_some() && r.completion_tokens.is_some_and(|n| n > 0), "{r:?}");
        // Schema-constrained output parses as the diagnosis, every time.
        let mut req = request("nginx.service failed with exit code 1. Diagnose it as JSON.", 700, false);
        req.format = Some(output::schema::<Diagnosis>());
        let r = b.chat(&req, None).await.unwrap_or_else(|e| panic!("{e}"));
        let d: Result<Diagnosis, _> = output::parse(&r.content);
        assert!(d.is_ok(), "{:?}: {}", d.err(), r.content);
        // A call that cannot finish in time is cut off with a clear error.
        let slow = OpenAiBackend::new(&url, None, Timeouts::from_request(Duration::from_millis(200)))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = slow.chat(&request("Write a long essay about systemd.", 2000, false), None).await.err();
        assert!(matches!(err, Some(BackendError::Timeout(_))), "{err:?}");
    });
}

/// The budget, counted by the real model's tokenizer and chat template (which renders the
/// tool schemas into the prompt): one failed-unit incident costs at most 1,500 prompt tokens.
#[test]
#[ignore = "llm: needs tests/llm/model-server.sh up"]
fn llm_a_failed_unit_incident_prompt_fits_the_budget() {
    let url = format!("{}/v1", server());
    let b = OpenAiBackend::new(&url, None, Timeouts::from_request(Duration::from_secs(300)))
        .unwrap_or_else(|e| panic!("{e}"));
    let req = macha_agent::prompt::sample_incident_request("smollm2:135m");
    let r = rt().block_on(b.chat(&req, None)).unwrap_or_else(|e| panic!("{e}"));
    let n = r.prompt_tokens.unwrap_or(u64::MAX);
    eprintln!("incident prompt: {n} tokens by the server, {} estimated", macha_agent::budget::request_tokens(&req));
    assert!(n <= 1_500, "{n} prompt tokens");
}

fn daemon_with(backend: &str, url: &str, top: &str) -> TestDaemon {
    let llm = format!(
        "backend = \"{backend}\"\nurl = \"{url}\"\ntimeout = \"120s\"\ncontext_tokens = 4096\ntool_mode = \"json\"\nmodels = {{ triage = \"smollm2:135m\", analysis = \"smollm2:135m\" }}\n"
    );
    TestDaemon::builder().autonomy("suggest").top(top).llm(&llm).start()
}

/// Thresholds no machine crosses: the ask tests are about the ask, and an incident analysis of the
/// test machine's own load (a busy CI runner) would queue before it and could time out.
const QUIET: &str = "[thresholds]\ndisk_warn_percent = 99.9\ndisk_critical_percent = 100.0\ninode_warn_percent = 99.9\ninode_critical_percent = 100.0\nload_per_cpu_warn = 100000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0";

/// One question through the daemon: the tool loop runs against the real model and ends with an
/// answer or a clear, closed failure; every model call is in the prompt log.
fn ask_through(d: &TestDaemon) {
    let out = d.cli_as("macha-ask", &["Which units have failed on this host?"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty(), "empty answer"),
        Some(69) => assert!(
            err.contains("answered invalidly twice") || err.contains("more than 8 tool calls"),
            "an unexpected failure: {err}"
        ),
        other => panic!("exit {other:?}: {err}"),
    }
    // Every call the model made named an offered tool (the schema allows nothing else).
    for line in err.lines().filter(|l| l.contains('⚙')) {
        let name = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(macha_agent::tools::ToolName::parse(name).is_some(), "{line}");
    }
    let prompts = d.store().prompts(None, 100).unwrap_or_default();
    assert!(!prompts.is_empty());
    assert!(prompts.iter().all(|p| p.prompt.error.is_none()), "a backend error: {prompts:?}");
    assert!(prompts.iter().any(|p| p.prompt.prompt_tokens.is_some_and(|n| n > 0)), "the server counted tokens");
}

#[test]
#[ignore = "llm: needs tests/llm/model-server.sh up"]
fn llm_daemon_through_the_openai_backend() {
    let url = format!("{}/v1", server());
    let d = daemon_with("openai", &url, QUIET);
    ask_through(&d);
}

#[test]
#[ignore = "llm: needs tests/llm/model-server.sh up"]
fn llm_daemon_through_the_ollama_backend_and_an_ollama_front() {
    let front = support::front::start(&format!("{}/v1", server()));
    let d = daemon_with("ollama", &front, QUIET);
    ask_through(&d);
    // Streaming through ollama-rs: the chat answer arrives as events.
    let out = d.cli_as("macha-chat", &["--json"], "thanks\n/exit\n");
    assert!(out.status.success());
}

#[test]
#[ignore = "llm: needs tests/llm/model-server.sh up"]
fn llm_incident_analysis_finishes_and_never_blocks_the_cycle() {
    let front = support::front::start(&format!("{}/v1", server()));
    let noisy = "[thresholds]\ndisk_warn_percent = 0.0\ndisk_critical_percent = 0.0\nload_per_cpu_warn = 100000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0";
    let d = daemon_with("ollama", &front, noisy);
    let started = std::time::Instant::now();
    let out = d.cli(&["check", "--json"]);
    assert!(started.elapsed() < Duration::from_secs(15), "the cycle waited: {:?}", started.elapsed());
    assert!(!out.stdout.is_empty());
    let r = d.finished_request(1, Duration::from_secs(600));
    match r.state.as_str() {
        "succeeded" => assert!(output::parse::<Diagnosis>(r.result.as_deref().unwrap_or_default()).is_ok(), "{r:?}"),
        _ => assert!(r.error.is_some(), "{r:?}"),
    }
    let prompts = d.store().prompts(Some(1), 100).unwrap_or_default();
    let first = prompts.first().and_then(|p| p.prompt.prompt_tokens).unwrap_or(0);
    eprintln!(
        "incident analysis: first prompt {first} tokens (server count), {} model calls, state {}",
        prompts.len(),
        r.state
    );
}

/// The knowledge tools end to end with the small model: a question about what changed and what
/// Macha knows runs through the tool loop (json tool mode) against a seeded knowledge base and a
/// real git checkout; whatever the model picks, the turn finishes, every tool result it got is
/// fenced, and no prompt reached the server with an error. The model's choice is not judged.
#[test]
#[ignore = "llm: needs tests/llm/model-server.sh up"]
fn llm_knowledge_tools_run_end_to_end() {
    let url = server();
    let flake = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(flake.path().join("flake.nix"), "{ outputs = { ... }: { }; }\n").unwrap_or_else(|e| panic!("{e}"));
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .arg("-C")
            .arg(flake.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    let llm = format!(
        "backend = \"openai\"\nurl = \"{url}/v1\"\ntimeout = \"120s\"\ncontext_tokens = 4096\ntool_mode = \"json\"\nmodels = {{ triage = \"smollm2:135m\", analysis = \"smollm2:135m\" }}\n[knowledge]\nflake = \"{}\"\n",
        flake.path().display()
    );
    let d = TestDaemon::builder()
        .autonomy("suggest")
        .top("[thresholds]\ndisk_warn_percent = 99.9\ndisk_critical_percent = 100.0\ninode_warn_percent = 99.9\ninode_critical_percent = 100.0\nload_per_cpu_warn = 100000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0")
        .prepare(|dir| {
            std::fs::create_dir_all(dir.join("state")).unwrap_or_else(|e| panic!("{e}"));
            let mut store = macha_store::Store::open(dir.join("state/macha.db")).unwrap_or_else(|e| panic!("{e}"));
            macha_knowledge::kb::seed(&mut store, macha_core::Timestamp(1)).unwrap_or_else(|e| panic!("{e}"));
        })
        .llm(&llm)
        .start();
    // The tools run end to end through the real model: each call is shown with its result. A
    // 135M model may call a tool again and again instead of answering, or call it with arguments
    // Macha refuses; Macha then ends the turn with its own clear error (fail closed), the only
    // other acceptable ends.
    let mut answered_calls = 0;
    for (question, tool) in [
        ("Use search_knowledge to look up nix-collect-garbage, then answer.", "search_knowledge"),
        ("Use recent_changes for host local, then answer.", "recent_changes"),
        ("Use fetch_runbook with id nix-store-disk-full, then answer.", "fetch_runbook"),
    ] {
        let out = d.cli_as("macha-ask", &[question], "");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let shown = format!("{stdout}{stderr}");
        let ended = out.status.success()
            || stderr.contains("tool calls without answering")
            || stderr.contains("the model answered invalidly twice");
        assert!(ended, "{question}: neither an answer nor the tool-call limit:\n{shown}");
        // A call Macha refused for its arguments is one of those fail-closed ends, shown as such;
        // any other call must show its result.
        if shown.contains(&format!("⚙ {tool}")) && !shown.contains(&format!("✗ {tool} refused")) {
            assert!(shown.contains(&format!("← {tool}: ")), "{tool} was called but gave no result:\n{shown}");
            answered_calls += 1;
        }
    }
    assert!(answered_calls >= 1, "the model called none of the knowledge tools");
    let prompts = d.json(&["logs", "prompts", "--json", "--limit", "100"]);
    let all = prompts["prompts"].as_array().cloned().unwrap_or_default();
    assert!(all.len() >= 3, "{prompts}");
    assert!(all.iter().all(|p| p["error"].is_null()), "a backend error: {prompts}");
    let sent = prompts.to_string();
    for tool in ["search_knowledge", "recent_changes", "fetch_runbook"] {
        assert!(sent.contains(tool), "{tool} was not offered");
    }
}
