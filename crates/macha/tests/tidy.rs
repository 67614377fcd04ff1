//! Tidy checks over the source tree, run as ordinary tests: module docs, no shell anywhere, no
//! panic-expecting tests, and the docs naming what the code has.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !p.ends_with("target") && !p.ends_with("fixtures") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap_or_default())).collect()
}

#[test]
fn every_module_has_a_doc_comment() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|(p, _)| p.components().any(|c| c.as_os_str() == "src"))
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a //! doc: {missing:#?}");
}

#[test]
fn no_shell_anywhere() {
    let shells = ["\"sh\"", "\"bash\"", "\"/bin/sh\"", "\"/bin/bash\"", "\"/usr/bin/env\"", "\"zsh\"", "\"dash\""];
    let this = file!().rsplit('/').next().unwrap_or_default().to_owned();
    for (path, text) in sources() {
        if path.ends_with(&this) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains("Command::new(") {
                for s in shells {
                    assert!(!line.contains(s), "{}:{}: a shell is spawned: {line}", path.display(), n + 1);
                }
            }
            assert!(!line.contains(".arg(\"-c\")"), "{}:{}: `-c` argument: {line}", path.display(), n + 1);
        }
    }
}

#[test]
fn no_should_panic() {
    let needle = ["#[should", "_panic]"].concat();
    for (path, text) in sources() {
        assert!(!text.contains(&needle), "{} uses should_panic; test Err/None explicitly", path.display());
    }
}

#[test]
fn architecture_names_every_crate_and_docs_name_every_config_key() {
    let arch = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap_or_default();
    for entry in std::fs::read_dir(root().join("crates")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(arch.contains(&format!("crates/{name}")), "docs/ARCHITECTURE.md does not map crates/{name}");
    }
    let conf = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap_or_default();
    for key in macha::config::CONFIG_KEYS {
        assert!(conf.contains(&format!("`{key}")), "docs/configuration.md does not document {key}");
    }
}
