//! BATCH work in a real daemon: with the host counted as idle (limits raised), the daemon indexes
//! the sample fleet flake into its own database, `macha status` shows the job, and `macha configs`
//! finds a chunk of it through the daemon's index without any `macha configs index`; the fleet
//! map shows the declared relations.

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
