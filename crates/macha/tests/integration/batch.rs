//! BATCH work in a real daemon: with the host counted as idle (limits raised), the daemon indexes
//! the sample fleet flake into its own database, `macha status` shows the job, and `macha configs`
//! finds a chunk of it through the daemon's index without any `macha configs index`; the fleet
//! map shows the declared relations. With an embedding model (the scripted server's
//! `/api/embed`), the daemon embeds after indexing and its searches — the socket's and the
//! model's — are hybrid and say so; with a model that cannot be reached, the job fails loudly and
//! the searches say they are keyword-only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::daemon::{TestDaemon, wait_for};
use std::time::Duration;

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fleet-flake").canonicalize().unwrap()
}

#[test]
fn the_daemon_indexes_the_flake_when_idle_and_configs_finds_it() {
    let flake = fixture();
    let d = TestDaemon::builder()
        .interval("1h")
        .tables(&format!(
            "[knowledge]\nflake = \"{}\"\n[knowledge.idle]\nmax_cpu_pressure = 100.0\nmax_memory_pressure = 100.0\n\
             max_load_per_cpu = 64.0\n[hosts.web1]\naddress = \"192.0.2.11\"\ndepends_on = [\"db1\"]\n\
             [hosts.db1]\naddress = \"192.0.2.12\"\n",
            flake.display()
        ))
        .start();
    let mut status = serde_json::Value::Null;
    wait_for("the re-index job's first run", Duration::from_secs(90), || {
        status = d.json(&["status", "--json"]);
        status["jobs"][0]["runs"].as_u64().unwrap_or(0) >= 1 && status["jobs"][0]["state"] == "idle"
    });
    let job = &status["jobs"][0];
    assert_eq!(job["name"], "reindex-flake", "{status}");
    let result = job["last_result"].as_str().unwrap();
    assert!(result.starts_with(&format!("indexed {}", flake.display())), "{result}");
    let summary = d.store().config_index_summary().unwrap();
    assert!(summary.files >= 80, "the daemon's database holds the index: {summary:?}");

    // The search reads the daemon's index: this user has no standalone store of its own here.
    let home = d.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(["configs", "10.20.0.21 address of the database server", "--json"])
        .env("MACHA_SOCKET", d.socket())
        .env("HOME", &home)
        .env("XDG_STATE_HOME", home.join("state"))
        .env("MACHA_LOG", "error")
        .env_remove("MACHA_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = hits["hits"].as_array().unwrap().iter().filter_map(|h| h["file"].as_str()).collect();
    assert_eq!(files.first(), Some(&"systems/db1/networking.nix"), "{hits}");

    // The fleet map: the declared relation, with its kind.
    let text = d.cli(&["systems", "graph"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("web1") && text.contains("→ db1  declared"), "{text}");
    let dot = d.cli(&["systems", "graph", "--dot"]);
    assert!(String::from_utf8_lossy(&dot.stdout).contains("\"web1\" -> \"db1\" [style=dashed"), "dot");
    let map = d.json(&["systems", "graph", "--json"]);
    assert_eq!(map["edges"][0]["kind"], "declared", "{map}");
}

/// The idle limits raised so that a test machine counts as idle.
const IDLE: &str = "[knowledge.idle]\nmax_cpu_pressure = 100.0\nmax_memory_pressure = 100.0\nmax_load_per_cpu = 64.0\n";

fn job(status: &serde_json::Value, name: &str) -> serde_json::Value {
    status["jobs"].as_array().into_iter().flatten().find(|j| j["name"] == name).cloned().unwrap_or_default()
}

#[test]
fn the_daemon_embeds_after_indexing_and_its_searches_are_hybrid() {
    use crate::support::scripted::{Reply, Scripted};
    use serde_json::json;
    // Whatever the first cycle finds on this machine gets a plain answer; the question gets the
    // script.
    let question = "how is garbage collected?";
    let model = Scripted::start_for(
        question,
        vec![
            Reply::call("search_knowledge", json!({"query": "garbage collection"})),
            Reply::call("search_configs", json!({"query": "nginx"})),
            Reply::text("done"),
        ],
        Reply::text("{\"summary\": \"nothing\", \"cause\": \"none\", \"confidence\": \"low\"}"),
    );
    let d = TestDaemon::builder()
        .interval("1h")
        .llm(&format!(
            "url = \"{}\"\ntimeout = \"5s\"\nmodels = {{ triage = \"scripted\", analysis = \"scripted\" }}\n\
             [knowledge]\nflake = \"{}\"\nembedder = \"ollama\"\nembed_model = \"embed\"\n{IDLE}",
            model.url,
            fixture().display()
        ))
        .prepare(|dir| {
            std::fs::create_dir_all(dir.join("state")).unwrap();
            let mut store = macha_store::Store::open(dir.join("state/macha.db")).unwrap();
            macha_knowledge::kb::seed(&mut store, macha_core::Timestamp(1)).unwrap();
        })
        .start();
    let mut status = serde_json::Value::Null;
    wait_for("the embedding job's first run", Duration::from_secs(90), || {
        status = d.json(&["status", "--json"]);
        let embed = job(&status, "embed");
        embed["runs"].as_u64().unwrap_or(0) >= 1 && embed["state"] != "running" && embed["state"] != "pending"
    });
    let embed = job(&status, "embed");
    assert_eq!(embed["state"], "idle", "{status}");
    let result = embed["last_result"].as_str().unwrap();
    assert!(result.starts_with("embedded ") && result.contains("with ollama:embed (3 dimensions)"), "{result}");
    assert_eq!(job(&status, "reindex-flake")["state"], "idle", "{status}");
    let store = d.store();
    let chunks = store.embeddings(macha_store::EmbedKind::Chunk, "ollama:embed", 3).unwrap();
    let entries = store.embeddings(macha_store::EmbedKind::Entry, "ollama:embed", 3).unwrap();
    assert!(chunks.len() > 100 && entries.len() > 40, "{} {}", chunks.len(), entries.len());
    let text = d.cli(&["status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("job:      embed idle, 1 runs"), "status text");

    // The socket's knowledge search and the model's searches are hybrid, and say so.
    let out = d.cli(&["knowledge", "search", "garbage", "collection"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("hybrid (ollama:embed) search"), "{shown}");
    let out = d.cli_as("macha-ask", &[question], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chats: Vec<serde_json::Value> =
        model.chats().into_iter().filter(|c| c.to_string().contains(question)).collect();
    let last = |i: usize| chats[i]["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].to_string());
    let kb = last(1).unwrap_or_default();
    assert!(kb.contains("hybrid (ollama:embed) search") && kb.contains("kb:"), "{kb}");
    let configs = last(2).unwrap_or_default();
    assert!(configs.contains("hybrid (ollama:embed) search") && configs.contains("config:"), "{configs}");
    // Each query was embedded by the same model the vectors came from.
    let embeds: Vec<serde_json::Value> =
        model.requests().into_iter().filter(|(p, _)| p == "/api/embed").map(|(_, b)| b).collect();
    assert!(embeds.iter().all(|b| b["model"] == "embed"), "{embeds:?}");
    assert!(embeds.iter().any(|b| b["input"] == json!(["nginx"])), "the model's query was embedded");
}

#[test]
fn an_embedder_that_fails_fails_the_job_loudly_and_searches_say_keyword_only() {
    let d = TestDaemon::builder()
        .interval("1h")
        .tables(&format!(
            "[llm]\nurl = \"http://127.0.0.1:9\"\ntimeout = \"2s\"\n[knowledge]\nflake = \"{}\"\nembedder = \"ollama\"\n\
             embed_model = \"embed\"\n{IDLE}",
            fixture().display()
        ))
        .start();
    let mut status = serde_json::Value::Null;
    wait_for("the embedding job to fail", Duration::from_secs(90), || {
        status = d.json(&["status", "--json"]);
        job(&status, "embed")["state"] == "failed"
    });
    let embed = job(&status, "embed");
    let result = embed["last_result"].as_str().unwrap();
    assert!(result.starts_with("failed: ") && result.contains("127.0.0.1:9"), "{result}");
    // The index itself is there: only the vectors are missing.
    assert_eq!(job(&status, "reindex-flake")["state"], "idle", "{status}");
    assert!(d.store().embeddings(macha_store::EmbedKind::Chunk, "ollama:embed", 3).unwrap().is_empty());
    let text = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("job:      embed failed, 1 runs") && text.contains("failed: "), "{text}");
    let out = d.cli(&["knowledge", "search", "garbage"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("keyword-only (the embedder failed: "), "{shown}");
}
