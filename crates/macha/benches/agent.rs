//! Agent benchmarks (`cargo bench -p macha --bench agent`): prompt tokens of a single failed-unit
//! incident and of a healthy cycle, time from an INTERACTIVE request to its first token while
//! AUTONOMOUS work runs and waits, and real-model throughput when `MACHA_LLM_URL` (or the default
//! `tests/llm/model-server.sh` port) answers. Prints a Markdown table for docs/performance.md.

#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use macha_agent::backend::openai::OpenAiBackend;
use macha_agent::backend::{Backend, Timeouts};
use macha_agent::budget;
use macha_agent::message::{ChatRequest, GenOptions, Message};
use macha_agent::prompt;
use serde_json::json;
use std::time::{Duration, Instant};
use support::daemon::TestDaemon;
use support::scripted::{Reply, Scripted};

const QUIET: &str = "[thresholds]\ndisk_warn_percent = 99.9\ndisk_critical_percent = 100.0\ninode_warn_percent = 99.9\ninode_critical_percent = 100.0\nload_per_cpu_warn = 100000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0";
const NOISY: &str = "[thresholds]\ndisk_warn_percent = 0.0\ndisk_critical_percent = 0.0\ninode_warn_percent = 99.9\ninode_critical_percent = 100.0\nload_per_cpu_warn = 100000.0\nmemory_some_avg60_warn = 100.0\nmemory_full_avg60_critical = 100.0";

fn incident_request() -> ChatRequest {
    prompt::sample_incident_request("smollm2:135m")
}

fn llm_url() -> Option<String> {
    let url = std::env::var("MACHA_LLM_URL").unwrap_or_else(|_| "http://127.0.0.1:18080".into());
    let addr = url.trim_start_matches("http://").parse().ok()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok().map(|_| url)
}

fn llm(url: &str) -> String {
    format!("url = \"{url}\"\ntimeout = \"30s\"\nmodels = {{ triage = \"scripted\", analysis = \"scripted\" }}")
}

/// Milliseconds from sending `macha-ask` to its first token event.
fn first_token_ms(d: &TestDaemon) -> u64 {
    let link = d.path("macha-ask");
    if !link.exists() {
        let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_macha"), &link);
    }
    let started = Instant::now();
    let mut child = std::process::Command::new(&link)
        .args(["--json", "hello"])
        .env("MACHA_SOCKET", d.socket())
        .env("MACHA_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut first = None;
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if first.is_none() && line.contains("\"token\"") {
                first = Some(started.elapsed());
            }
        }
    }
    let _ = child.wait();
    first.map_or(u64::MAX, |d| d.as_millis() as u64)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // 1. Prompt tokens of one failed-unit incident.
    let req = incident_request();
    let estimate = budget::request_tokens(&req);
    rows.push((
        "prompt tokens, one failed-unit incident (estimate, tools included)".into(),
        estimate.to_string(),
        "≤ 1,500".into(),
    ));
    let real = llm_url();
    if let Some(url) = &real {
        let b = OpenAiBackend::new(&format!("{url}/v1"), None, Timeouts::from_request(Duration::from_secs(300)))
            .unwrap_or_else(|e| panic!("{e}"));
        if let Ok(r) = rt.block_on(b.chat(&req, None)) {
            rows.push((
                "prompt tokens, same incident, SmolLM2 tokenizer + chat template (server count)".into(),
                r.prompt_tokens.map_or("-".into(), |n| n.to_string()),
                "≤ 1,500".into(),
            ));
        }
    }

    // 2. A healthy, unchanged cycle: model calls and prompt tokens.
    let model = Scripted::start(vec![]);
    let d = TestDaemon::builder().autonomy("suggest").top(QUIET).llm(&llm(&model.url)).start();
    for _ in 0..5 {
        let _ = d.cli(&["check", "--json"]);
    }
    let calls = model.requests().len();
    rows.push(("model calls / prompt tokens per healthy cycle (5 cycles)".into(), format!("{calls} / 0"), "0".into()));
    drop(d);

    // 3. INTERACTIVE first token: idle, and while an AUTONOMOUS analysis runs (the model takes
    //    1 s per call) with more work waiting.
    let idle_model = Scripted::start(vec![Reply::text("Hello, administrator.")]);
    let idle = TestDaemon::builder().autonomy("suggest").top(QUIET).llm(&llm(&idle_model.url)).start();
    let idle_ms = first_token_ms(&idle);
    drop(idle);
    let busy_model = Scripted::start(vec![
        Reply::Delay(
            Duration::from_millis(1000),
            Box::new(Reply::call("get_snapshot", json!({"section": "filesystems"}))),
        ),
        Reply::Delay(
            Duration::from_millis(1000),
            Box::new(Reply::Text(json!({"summary": "full", "cause": "test", "confidence": "low"}).to_string())),
        ),
        Reply::text("Hello, administrator."),
    ]);
    let busy = TestDaemon::builder().autonomy("suggest").top(NOISY).llm(&llm(&busy_model.url)).start();
    std::thread::sleep(Duration::from_millis(100));
    let busy_ms = first_token_ms(&busy);
    drop(busy);
    rows.push(("INTERACTIVE first token, idle (scripted model)".into(), format!("{idle_ms} ms"), "-".into()));
    rows.push((
        "INTERACTIVE first token, AUTONOMOUS analysis running (2 model calls of 1 s)".into(),
        format!("{busy_ms} ms"),
        "≤ the running call's remainder + own call".into(),
    ));

    // 4. Real-model throughput.
    if let Some(url) = &real {
        let b = OpenAiBackend::new(&format!("{url}/v1"), None, Timeouts::from_request(Duration::from_secs(300)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut gen_rates = Vec::new();
        let mut first = Vec::new();
        for i in 0..3 {
            let req = ChatRequest {
                model: "smollm2:135m".into(),
                messages: vec![Message::user(format!("Explain systemd unit files, part {i}."))],
                tools: Vec::new(),
                format: None,
                options: GenOptions { temperature: 0.0, num_ctx: 4096, max_tokens: 128, seed: Some(1) },
                stream: true,
            };
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            if let Ok(r) = rt.block_on(b.chat(&req, Some(tx))) {
                let gen_ms = r.total_ms.saturating_sub(r.first_token_ms.unwrap_or(0)).max(1);
                gen_rates.push(r.completion_tokens.unwrap_or(0) as f64 * 1000.0 / gen_ms as f64);
                first.push(r.first_token_ms.unwrap_or(0));
            }
        }
        if !gen_rates.is_empty() {
            gen_rates.sort_by(f64::total_cmp);
            rows.push((
                "SmolLM2-135M Q4_1 generation, llama.cpp (xllamacpp), 2 threads: median of 3 × 128 tokens".into(),
                format!("{:.1} tokens/s", gen_rates[gen_rates.len() / 2]),
                "-".into(),
            ));
            first.sort_unstable();
            rows.push((
                "same, time to first token (short prompt)".into(),
                format!("{} ms", first[first.len() / 2]),
                "-".into(),
            ));
        }
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\n| measure | value | budget |\n|---|---|---|");
    for (m, v, b) in rows {
        println!("| {m} | {v} | {b} |");
    }
    println!("\nload average while measuring: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}
