//! The crate boundaries this crate exists for: `macha-parse` stays free of IO (its manifest names
//! only IO-free dependencies, its source touches no file, process, socket or clock), and the SSH
//! module reaches the parsers through it, never through the D-Bus and tokio laden observer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn manifest(name: &str) -> toml::Table {
    let path = crate_dir(name).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse::<toml::Table>().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every dependency name of a manifest, in all dependency tables (target-specific ones included).
fn dependencies(table: &toml::Table, sections: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |t: &toml::Table| {
        for s in sections {
            if let Some(deps) = t.get(*s).and_then(toml::Value::as_table) {
                out.extend(deps.keys().cloned());
            }
        }
    };
    add(table);
    if let Some(targets) = table.get("target").and_then(toml::Value::as_table) {
        for t in targets.values().filter_map(toml::Value::as_table) {
            add(t);
        }
    }
    out
}

#[test]
fn macha_parse_depends_only_on_io_free_crates() {
    let allowed = ["macha-core", "serde", "serde_json"];
    let deps = dependencies(&manifest("macha-parse"), &["dependencies", "build-dependencies"]);
    assert!(deps.iter().any(|d| d == "macha-core"), "the manifest was not read: {deps:?}");
    let foreign: Vec<&String> = deps.iter().filter(|d| !allowed.contains(&d.as_str())).collect();
    assert!(foreign.is_empty(), "macha-parse must stay IO-free, but depends on {foreign:?}");
    for banned in ["tokio", "zbus", "nix", "which", "futures-util", "macha-observe", "macha-ssh", "macha-store"] {
        assert!(!deps.iter().any(|d| d == banned), "macha-parse depends on {banned}");
    }
}

#[test]
fn macha_parse_source_does_no_io() {
    let banned =
        ["std::fs", "std::process", "std::net", "std::io", "std::thread", "SystemTime", "Instant::now", "std::env"];
    let dir = crate_dir("macha-parse").join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Tests may build their fixtures however they like; the library part above them may not.
        let library = text.split("#[cfg(test)]").next().unwrap_or_default();
        for word in banned {
            assert!(!library.contains(word), "{}: uses {word}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 5, "found only {checked} modules in {}", dir.display());
}

#[test]
fn macha_ssh_does_not_depend_on_the_observer() {
    let deps = dependencies(&manifest("macha-ssh"), &["dependencies", "dev-dependencies", "build-dependencies"]);
    assert!(deps.iter().any(|d| d == "macha-parse"), "macha-ssh reads through macha-parse: {deps:?}");
    assert!(!deps.iter().any(|d| d == "macha-observe"), "macha-ssh must not depend on macha-observe");
}
