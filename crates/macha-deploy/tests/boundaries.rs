//! The boundary this crate exists for: `macha-deploy` decides and performs no IO. Its manifest names
//! only IO-free dependencies, and its source touches no file, process, socket, clock or runtime.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn depends_only_on_io_free_crates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    let deps: Vec<String> = ["dependencies", "build-dependencies"]
        .iter()
        .filter_map(|s| manifest.get(*s).and_then(toml::Value::as_table))
        .flat_map(|t| t.keys().cloned())
        .collect();
    assert!(deps.iter().any(|d| d == "macha-core"), "the manifest was not read: {deps:?}");
    let allowed = ["macha-core", "serde", "serde_json", "sha2", "thiserror"];
    let foreign: Vec<&String> = deps.iter().filter(|d| !allowed.contains(&d.as_str())).collect();
    assert!(foreign.is_empty(), "macha-deploy must stay IO-free, but depends on {foreign:?}");
    assert!(manifest.get("target").is_none(), "no target-specific dependencies");
}

#[test]
fn the_source_does_no_io() {
    let banned = [
        "std::fs",
        "std::process",
        "std::net",
        "std::io",
        "std::thread",
        "std::env",
        "SystemTime",
        "Instant::now",
        "tokio",
        "macha_ssh",
        "macha_store",
        "macha_exec",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("//!"), "{}: no module documentation", path.display());
        for word in banned {
            assert!(!text.contains(word), "{}: uses {word}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 6, "found only {checked} modules in {}", dir.display());
}
