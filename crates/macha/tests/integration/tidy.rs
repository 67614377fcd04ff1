//! Tidy checks over the source tree, run as ordinary tests: module docs, no shell anywhere, no
//! panic-expecting tests, processes started only where listed, every configuration key read by
//! something, the loop's event type private to the daemon, and the docs naming what the code has.

use std::collections::BTreeSet;
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

/// The product code (a crate's `src/`) that starts processes, each with the reason. Tests and
/// benchmarks are exempt: they start the real binary, the lab's tools and stand-ins for them.
const SPAWNING_FILES: &[(&str, &str)] = &[
    ("crates/macha-observe/src/journal.rs", "the supervised `journalctl --follow` child and its one-entry probe"),
    ("crates/macha-observe/src/nvidia.rs", "`nvidia-smi`, only when it is installed, under a timeout"),
    ("crates/macha-ssh/src/keyscan.rs", "`ssh-keyscan`, to show the keys a host presents before a person pins one"),
    ("crates/macha-ssh/src/pool.rs", "the OpenSSH master of each host: the one SSH module"),
    ("crates/macha/src/agent.rs", "`journalctl` for the model's read-only log tool (argv from `macha_core::command`)"),
    (
        "crates/macha/src/changes.rs",
        "`git log` of the fleet's flake for what changed (argv from `macha_core::command`)",
    ),
    (
        "crates/macha/src/cli/commands.rs",
        "`journalctl --unit macha.service` for `macha logs`, in the CLI's own process",
    ),
    ("crates/macha-exec/src/local.rs", "the one executor: a permitted action's absolute program and argv"),
    (
        "crates/macha-exec/src/deploy.rs",
        "`nix copy` of a permitted deployment's closure, through the host's SSH master",
    ),
    ("crates/macha/src/fleet.rs", "`journalctl` for discovery (the `_HOSTNAME`s of the journal entries)"),
    (
        "crates/macha/src/cli/deploy_build.rs",
        "`nix build`/`nh os build` of a host's system, the pre-deploy checks and the lock read of \
         `macha deploy --flake`, as the person running it",
    ),
    ("crates/macha/src/fleet/deploy.rs", "`nix path-info` of a built system, for a deployment's closure diff"),
    ("crates/macha/src/observe.rs", "a one-shot `journalctl` read for a standalone `macha check`"),
];

/// Whether `text` names `std::process::Command` or `tokio::process::Command`: written out, or
/// imported from a `process::{…}` group. `CommandExt` and the core's `command::Command` do not count.
fn names_process_command(text: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices("process::").any(|(i, m)| {
        let rest = &text[i + m.len()..];
        match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .any(|item| item == "Command" || item.starts_with("Command as ")),
            None => rest.strip_prefix("Command").is_some_and(|after| !after.starts_with(ident)),
        }
    })
}

/// `path` relative to the repository root, with `/` separators.
fn relative(path: &Path) -> String {
    let rel = path.strip_prefix(root()).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[test]
fn processes_are_started_only_in_the_listed_files() {
    // The detector itself: what counts and what does not.
    assert!(names_process_command("use std::process::{Child, Command, Stdio};"));
    assert!(names_process_command("let c = tokio::process::Command::new(p);"));
    assert!(names_process_command("use tokio::process::Command;"));
    assert!(!names_process_command("use std::os::unix::process::CommandExt;"));
    assert!(!names_process_command("use std::process::{ExitStatus, Stdio}; use macha_core::command::Command;"));

    let found: BTreeSet<String> = sources()
        .into_iter()
        .filter(|(p, _)| relative(p).split('/').nth(2) == Some("src"))
        .filter(|(_, text)| names_process_command(text))
        .map(|(p, _)| relative(&p))
        .collect();
    let listed: BTreeSet<String> = SPAWNING_FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
    assert_eq!(listed.len(), SPAWNING_FILES.len(), "SPAWNING_FILES lists a file twice");
    assert!(SPAWNING_FILES.iter().all(|(_, why)| !why.trim().is_empty()), "every entry needs a reason");
    let unlisted: Vec<_> = found.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "these files start processes but are not in SPAWNING_FILES (use an existing spawner, or list them \
         with the reason): {unlisted:#?}"
    );
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(stale.is_empty(), "these SPAWNING_FILES entries start no process any more; remove them: {stale:#?}");
}

/// The builder chain of each process started in `text`: from `Command::new(` to the call that
/// starts it (`.spawn()`, `.output()`, `.status()`), statements in between included.
fn spawn_chains(text: &str) -> Vec<(usize, &str)> {
    let starts = [".spawn()", ".output()", ".status()"];
    text.match_indices("Command::new(")
        .map(|(i, _)| {
            let rest = &text[i..];
            let end = starts.iter().filter_map(|s| rest.find(s).map(|j| j + s.len())).min().unwrap_or(rest.len());
            (text[..i].lines().count(), &rest[..end])
        })
        .collect()
}

#[test]
fn every_spawn_clears_its_environment() {
    // The detector itself.
    let good = "let mut c = Command::new(p);\n c.arg(x).env_clear().envs(SPAWN_ENV);\n let o = c.output().await;";
    let bad = "let mut c = Command::new(p);\n c.arg(x);\n let o = c.output().await; c2.env_clear();";
    assert!(spawn_chains(good).iter().all(|(_, chain)| chain.contains(".env_clear()")));
    assert!(spawn_chains(bad).iter().any(|(_, chain)| !chain.contains(".env_clear()")));

    let mut missing = Vec::new();
    let mut seen = 0;
    for (path, text) in sources() {
        let rel = relative(&path);
        if rel.split('/').nth(2) != Some("src") || !names_process_command(&text) {
            continue;
        }
        for (line, chain) in spawn_chains(without_tests(&text)) {
            seen += 1;
            if !chain.contains(".env_clear()") || !chain.contains("SPAWN_ENV") {
                missing.push(format!("{rel}:{line}"));
            }
        }
    }
    assert!(seen >= 9, "found only {seen} spawns; the detector is broken");
    assert!(
        missing.is_empty(),
        "these spawns inherit the daemon's environment (add .env_clear().envs(macha_core::command::SPAWN_ENV)): \
         {missing:#?}"
    );
}

/// Configuration keys that are parsed and validated but that nothing reads yet.
const KNOWN_UNUSED: &[&str] = &[
    // Empty: a key is read by a feature or it is not a key. Add one here only with the feature
    // that will read it named beside it.
];

/// `text` up to its first `#[cfg(test)]`: the code without its test module (test modules come
/// last in this code base).
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// Whether `needle` occurs in `hay` as a whole expression: not followed by an identifier
/// character, and (unless it starts with a dot, as a field access does) not preceded by an
/// identifier character or a dot.
fn contains_expr(hay: &str, needle: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        (needle.starts_with('.') || !before.is_some_and(|c| ident(c) || c == '.')) && !after.is_some_and(ident)
    })
}

/// Where the value of configuration key `key` lands, from config.rs's second stage (`resolve`):
/// the first line that reads the parsed value (`f.<key>`, or `h.<field>` for a host) and is an
/// assignment, `let NAME = …` or a struct field `NAME: …`, gives the field `NAME`.
fn landing_field(resolve: &str, key: &str) -> Option<String> {
    let expr = match key.strip_prefix("hosts.<name>.") {
        Some(field) => format!("h.{field}"),
        None => format!("f.{key}"),
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    resolve.lines().map(str::trim).filter(|l| contains_expr(l, &expr)).find_map(|line| {
        let (rest, is_let) = match line.strip_prefix("let ") {
            Some(r) => (r.trim_start_matches("mut "), true),
            None => (line, false),
        };
        let name: String = rest.chars().take_while(|c| ident(*c)).collect();
        let after = &rest[name.len()..];
        let assigns = if is_let {
            after.trim_start().starts_with('=')
        } else {
            after.starts_with(':') && !after.starts_with("::")
        };
        (assigns && !name.is_empty()).then_some(name)
    })
}

#[test]
fn every_configuration_key_is_read_outside_the_configuration_module() {
    // The heuristic. For each key of CONFIG_KEYS:
    //  1. `landing_field` finds the field of `Config` (or of its `ssh`, `discovery`, `llm`
    //     sections, or of a `hosts` entry) the parsed value is assigned to in config.rs.
    //  2. The key counts as read when that field is accessed (`.field`) in the `macha` crate's
    //     code outside config.rs and outside tests (only that crate can see `Config`): as
    //     `.section.field` for a field of a section, as `.field` in a file that also reads
    //     `.hosts` for a host's field, as `.field` for a top-level field. A `Config` method that
    //     reads `self.field` or `self.section.field` (such as `protected()`, `store_limits()`)
    //     counts as a reader when it is called.
    // Comments are stripped first, so a key named in a comment is not a use.
    let src = root().join("crates/macha/src");
    let config_rs = std::fs::read_to_string(src.join("config.rs")).unwrap_or_default();
    let config_code = without_tests(&config_rs);
    // Method chains broken over lines are joined, so `f\n    .llm\n    .x` reads as `f.llm.x`.
    let mut resolve = String::new();
    for line in config_code.lines() {
        let t = line.trim();
        if t.starts_with('.') {
            resolve.push_str(t);
        } else {
            resolve.push('\n');
            resolve.push_str(t);
        }
    }
    // The fields of `Config` and their types.
    let config_struct =
        config_code.split("pub struct Config {").nth(1).and_then(|s| s.split("\n}").next()).unwrap_or_default();
    let config_fields: Vec<(String, String)> = config_struct
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':'))
        .map(|(n, t)| (n.trim().to_owned(), t.trim().trim_end_matches(',').to_owned()))
        .collect();
    assert!(config_fields.len() > 20, "could not read `pub struct Config` in config.rs: {config_fields:?}");
    // `Config` methods that read fields: (method, fields it reads).
    let methods: Vec<(String, String)> = config_code
        .split("pub fn ")
        .skip(1)
        .filter(|s| s.contains("(&self"))
        .filter_map(|s| {
            let name = s.split('(').next()?.to_owned();
            let body = s.split("\n    }").next()?.to_owned();
            Some((name, body))
        })
        .collect();

    // The readers: the crate's code without config.rs, its tests and comments.
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let readers: Vec<String> = files
        .iter()
        .filter(|p| !p.ends_with("config.rs") && !p.to_string_lossy().ends_with("_tests.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            without_tests(&text)
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    assert!(readers.len() > 10, "found only {} files in {}", readers.len(), src.display());
    let read = |needle: &str, within: Option<&str>| {
        readers.iter().any(|r| contains_expr(r, needle) && within.is_none_or(|w| contains_expr(r, w)))
    };

    let mut unused = Vec::new();
    for key in macha::config::CONFIG_KEYS {
        let field = landing_field(&resolve, key)
            .unwrap_or_else(|| panic!("{key}: no `let NAME = …f.{key}…` or `NAME: …f.{key}…` in config.rs"));
        assert!(
            config_code.contains(&format!("pub {field}:")),
            "{key}: lands in `{field}`, which is no field in config.rs"
        );
        let section = key.split('.').next().unwrap_or_default();
        let section_type = config_fields.iter().find(|(n, _)| n == section).map(|(_, t)| t.as_str());
        let is_read = match section_type {
            Some(t) if t.starts_with("Vec<") => read(&format!(".{field}"), Some(&format!(".{section}"))),
            Some(t) if t.ends_with("Config") && key.contains('.') => {
                read(&format!(".{section}.{field}"), None)
                    || methods.iter().any(|(m, body)| {
                        body.contains(&format!("self.{section}.{field}")) && read(&format!(".{m}("), None)
                    })
            }
            _ => {
                read(&format!(".{field}"), None)
                    || methods
                        .iter()
                        .any(|(m, body)| body.contains(&format!("self.{field}")) && read(&format!(".{m}("), None))
            }
        };
        if !is_read {
            unused.push(*key);
        }
    }
    for k in KNOWN_UNUSED {
        assert!(
            macha::config::CONFIG_KEYS.contains(k),
            "KNOWN_UNUSED names {k}, which is no configuration key any more"
        );
    }
    let newly_unused: Vec<_> = unused.iter().filter(|k| !KNOWN_UNUSED.contains(k)).collect();
    assert!(newly_unused.is_empty(), "parsed but read by nothing outside config.rs: {newly_unused:?}");
    let now_used: Vec<_> = KNOWN_UNUSED.iter().filter(|k| !unused.contains(k)).collect();
    assert!(now_used.is_empty(), "in KNOWN_UNUSED but read now; remove them from the list: {now_used:?}");
}

/// The loop's own event type stays private to the daemon module: subsystems talk to the loop in
/// their own message types, so none of them can depend on (or construct) another's events.
#[test]
fn the_loop_event_type_is_named_only_in_the_daemon_module() {
    let daemon = root().join("crates/macha/src/daemon/mod.rs");
    let text = std::fs::read_to_string(&daemon).unwrap_or_default();
    let decl = text.lines().find(|l| l.contains("enum Turn")).unwrap_or_default();
    assert!(!decl.is_empty(), "the loop's event type `Turn` is no longer in daemon/mod.rs: update this test");
    assert!(!decl.contains("pub"), "the loop's event type must stay private: {decl}");
    let daemon_dir = root().join("crates/macha/src/daemon");
    for (path, text) in sources() {
        if path.starts_with(&daemon_dir) || path.ends_with(file!().rsplit('/').next().unwrap_or_default()) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            for name in ["daemon::Turn", "daemon::Event", "Turn::"] {
                assert!(!line.contains(name), "{}:{}: names the loop's event type: {line}", path.display(), n + 1);
            }
        }
    }
}

/// Functions of the CLI allowed to read JSON by string key, with the reason.
const DYNAMIC_JSON: [(&str, &str, &str); 1] = [(
    "chat.rs",
    "fn prompt_body(",
    "a prompt's body exactly as sent to the model server: its shape is the server's API, not Macha's",
)];

/// Whether `line` indexes or looks up JSON by a string key: `x["key"]`, `.get("key")`.
fn string_key_lookup(line: &str) -> bool {
    let bytes = line.as_bytes();
    let indexed = line.match_indices("[\"").any(|(i, _)| {
        i > 0 && {
            let before = bytes[i - 1];
            before.is_ascii_alphanumeric() || before == b'_' || before == b']' || before == b')'
        }
    });
    indexed || line.contains(".get(\"")
}

#[test]
fn string_key_lookup_finds_indexing_and_not_arrays() {
    assert!(string_key_lookup(r#"let x = v["approval_id"].as_i64();"#));
    assert!(string_key_lookup(r#"d["memory_some"]["avg60"]"#));
    assert!(string_key_lookup(r#"f(x)["k"]"#));
    assert!(string_key_lookup(r#"if body.get("format").is_some() {"#));
    assert!(!string_key_lookup(r#"for n in ["cpu", "memory"] {"#));
    assert!(!string_key_lookup(r#"let v = vec!["macha", "check"];"#));
    assert!(!string_key_lookup(r#"Applet::try_parse_from(["macha", "x"])"#));
}

#[test]
fn the_cli_reads_typed_answers_not_json_by_string_key() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/macha/src/cli"), &mut files);
    assert!(files.len() >= 5, "{files:?}");
    let mut found = Vec::new();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut allowed = false;
        for (n, line) in text.lines().enumerate() {
            if DYNAMIC_JSON.iter().any(|(file, start, _)| *file == name && line.contains(start)) {
                allowed = true;
            } else if allowed && line.starts_with('}') {
                allowed = false;
                continue;
            }
            if !allowed && string_key_lookup(line) {
                found.push(format!("{}:{}: {}", relative(&path), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the CLI reads JSON by string key; decode a macha-api type instead (or list a truly dynamic function \
         in DYNAMIC_JSON with its reason): {found:#?}"
    );
}

#[test]
fn the_api_crate_needs_neither_the_store_nor_a_runtime() {
    let manifest = std::fs::read_to_string(root().join("crates/macha-api/Cargo.toml")).unwrap_or_default();
    assert!(manifest.contains("[dependencies]"), "{manifest}");
    let deps: Vec<&str> = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split(['=', '.', ' ']).next().filter(|d| !d.is_empty()))
        .collect();
    assert!(deps.contains(&"macha-core") && deps.contains(&"serde"), "{deps:?}");
    for banned in ["macha-store", "tokio", "zbus", "rusqlite", "macha-agent", "macha-ssh"] {
        assert!(!deps.contains(&banned), "macha-api depends on {banned}: {deps:?}");
    }
    let mut files = Vec::new();
    rust_files(&root().join("crates/macha-api/src"), &mut files);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains("macha_store"), "{} names the store", relative(&path));
    }
}

/// A person's approval reaches the policy only as evidence made from a stored approval record:
/// `ApprovalEvidence::from_stored_approval` is called by the store's `ApprovalRecord::evidence` and
/// by the core's own tests, nowhere else.
#[test]
fn approval_evidence_is_made_only_from_stored_approvals() {
    let mut callers = Vec::new();
    for (path, text) in sources() {
        let rel = relative(&path);
        let code = without_tests(&text);
        if code.contains("ApprovalEvidence::from_stored_approval(") && rel != "crates/macha-store/src/approvals.rs" {
            callers.push(rel);
        }
    }
    // The definition itself names the function only as `fn from_stored_approval`.
    assert!(callers.is_empty(), "approval evidence made outside the store: {callers:?}");
}
