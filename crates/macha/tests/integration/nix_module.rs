//! The NixOS module against the daemon: its map of options to configuration keys
//! (`modules/config-keys.nix`) covers exactly `CONFIG_KEYS`, and what the module renders from its
//! options passes `macha check-config` and resolves to those values — the same check the module
//! runs while a system is built. Also the two hidden commands the module uses: `macha applets`
//! (the package's links) and `macha unit-allowed` (the polkit rule's helper).
//!
//! Needs `nix-instantiate` (Debian: `apt-get install nix-bin`; `.ci/run` installs it and the flake's
//! checks provide it). It evaluates plain Nix only, offline, with no store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|e| panic!("repository root: {e}"))
}

fn keys_file() -> String {
    root().join("modules/config-keys.nix").display().to_string()
}

/// Evaluates `expr` (with `keys` bound to modules/config-keys.nix) to JSON.
fn nix_eval(expr: &str) -> serde_json::Value {
    let Ok(nix) = which::which("nix-instantiate") else {
        panic!(
            "nix-instantiate not found: this test evaluates modules/config-keys.nix. Install Nix \
             (Debian/Ubuntu: `apt-get install --no-install-recommends nix-bin`; `nix develop` has it)"
        )
    };
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let full = format!("let keys = import (/. + {:?}); in {expr}", keys_file());
    let out = Command::new(nix)
        .args(["--eval", "--strict", "--json", "--store", "dummy://", "--expr", &full])
        .env("NIX_CONFIG", "build-users-group =")
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", home.path())
        .env("NIX_STATE_DIR", home.path())
        .output()
        .unwrap_or_else(|e| panic!("nix-instantiate: {e}"));
    assert!(out.status.success(), "nix-instantiate failed on\n{full}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("nix-instantiate printed no JSON: {e}"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")).to_owned())
        .collect()
}

fn macha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_macha"))
        .args(args)
        .env_remove("MACHA_CONFIG")
        .env("MACHA_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("macha: {e}"))
}

/// Renders settings (JSON from Nix) as the module does (TOML) and runs `macha check-config --json`.
fn check_config(settings: &serde_json::Value) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("macha.toml");
    let text = toml::to_string(settings).unwrap_or_else(|e| panic!("not TOML-able: {e}: {settings}"));
    std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    let out = macha(&["check-config", "--json", &file.display().to_string()]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, format!("{text}\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Every option of the module set to a non-default value, in the shape of `config.services.macha`.
const SAMPLE: &str = r#"{
  autonomyLevel = "auto-safe";
  checkInterval = "30s";
  protectedServices = [ "postgresql" "backup-*" ];
  adminGroup = "wheel";
  viewerGroup = "adm";
  modelMayExecute = [ "diagnostic" "reset_failed" ];
  cleanupMinAgeDays = 14;
  models = { triage = "qwen2.5:1.5b"; analysis = "qwen2.5:7b"; };
  ollama = { url = "http://gpu-box:11434"; };
  hosts = {
    web1 = { address = "10.0.0.11"; user = "ops"; port = 2222; hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA web1"; tags = [ "web" "eu" ]; dependsOn = [ "db1" ]; };
    db1 = { address = "db1"; user = null; port = 22; hostKey = null; tags = [ ]; };
  };
  discovery = { enable = true; allowedDomains = [ "*.lab.example.org" ]; };
  modelApiKeyFile = "/run/secrets/llm-api-key";
  prometheus = { enable = true; listen = "0.0.0.0:9469"; textfile = "/var/lib/node-exporter-textfiles"; };
  notifications = {
    linkBase = "https://macha.example.org";
    modelMaySend = true;
    gotify = { url = "https://gotify.example.org"; tokenFile = "/run/secrets/gotify"; minSeverity = "critical"; kinds = [ "issue_opened" "security" ]; };
    ntfy = { url = "https://ntfy.example.org"; topic = "macha"; tokenFile = "/run/secrets/ntfy"; minSeverity = "info"; kinds = [ "manual" ]; };
    webhook = { url = "https://hooks.example.org/m"; secretFile = "/run/secrets/hook"; minSeverity = "warning"; kinds = [ "deployment" ]; };
  };
  web = {
    enable = true; listen = "127.0.0.1:8471"; trustedProxies = [ "127.0.0.1" "::1" ];
    proxyUserHeader = "X-Remote-User"; proxyAdmins = [ "alice" ]; proxyViewers = [ "bob" ];
    sessionIdle = "10m"; sessionMax = "8h"; secureCookies = true; twoPerson = true;
  };
}"#;

/// The typed web options at their defaults, `enable` as given.
fn web_defaults(enable: bool) -> String {
    format!("(keys.defaults.web // {{ enable = {enable}; }})")
}

#[test]
fn the_module_reaches_every_config_key_once() {
    let v = nix_eval(
        "{ typed = builtins.attrValues keys.typed; fixed = builtins.attrNames keys.fixed; \
         settingsOnly = keys.settingsOnly; options = builtins.attrNames keys.typed; moduleOnly = keys.moduleOnly; }",
    );
    let mut all: Vec<String> = Vec::new();
    for part in ["typed", "fixed", "settingsOnly"] {
        all.extend(strings(&v[part]));
    }
    let set: BTreeSet<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(set.len(), all.len(), "a key is listed twice in modules/config-keys.nix: {all:?}");
    let daemon: BTreeSet<&str> = macha::config::CONFIG_KEYS.iter().copied().collect();
    let missing: Vec<_> = daemon.difference(&set).collect();
    let unknown: Vec<_> = set.difference(&daemon).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "modules/config-keys.nix and CONFIG_KEYS differ.\n  daemon keys the module cannot reach: {missing:?}\n  \
         module keys the daemon does not have: {unknown:?}\nMap a new key to a typed option or list it in \
         `settingsOnly`; a module key must be read by the daemon (FileConfig, CONFIG_KEYS, docs/configuration.md)."
    );
    let options: BTreeSet<String> = strings(&v["options"]).into_iter().collect();
    let module_only: BTreeSet<String> = strings(&v["moduleOnly"]).into_iter().collect();
    assert!(options.is_disjoint(&module_only), "an option is both typed and module-only");
}

#[test]
fn every_typed_option_round_trips_through_check_config() {
    let settings = nix_eval(&format!("keys.moduleSettings {SAMPLE}"));

    // Every typed key is written (for web1, which sets them all).
    let typed = nix_eval("builtins.attrValues keys.typed");
    for key in strings(&typed) {
        let mut node = &settings;
        for part in key.replace("<name>", "web1").split('.') {
            node = node.get(part).unwrap_or_else(|| panic!("the module does not write {key}: {settings}"));
        }
    }

    let (code, c, log) = check_config(&settings);
    assert_eq!(code, 0, "macha check-config rejected what the module renders:\n{log}");
    let expect = [
        ("/autonomy", serde_json::json!("auto-safe")),
        ("/check_interval", serde_json::json!("30s")),
        ("/protected_extra", serde_json::json!(["postgresql", "backup-*"])),
        ("/admin_group", serde_json::json!("wheel")),
        ("/llm/may_execute", serde_json::json!(["diagnostic", "reset_failed"])),
        ("/cleanup_min_age_days", serde_json::json!(14)),
        ("/state_dir", serde_json::json!("/var/lib/macha")),
        ("/socket", serde_json::json!("/run/macha/macha.sock")),
        ("/llm/url", serde_json::json!("http://gpu-box:11434")),
        ("/llm/triage_model", serde_json::json!("qwen2.5:1.5b")),
        ("/llm/analysis_model", serde_json::json!("qwen2.5:7b")),
        ("/discovery/enable", serde_json::json!(true)),
        ("/discovery/allowed_domains", serde_json::json!(["*.lab.example.org"])),
        // The key file reaches the daemon as the unit's credential, never the file's contents.
        ("/llm/api_key_file", serde_json::json!("/run/credentials/macha.service/llm-api-key")),
        ("/prometheus/enable", serde_json::json!(true)),
        ("/prometheus/listen", serde_json::json!("0.0.0.0:9469")),
        ("/prometheus/textfile", serde_json::json!("/var/lib/node-exporter-textfiles")),
        ("/notifications/link_base", serde_json::json!("https://macha.example.org")),
        ("/notifications/model_may_send", serde_json::json!(true)),
        ("/notifications/channels/0/service", serde_json::json!("gotify")),
        ("/notifications/channels/0/min_severity", serde_json::json!("critical")),
        ("/notifications/channels/0/kinds", serde_json::json!(["issue_opened", "security"])),
        // Secrets reach the daemon as the unit's credentials, never the files' contents.
        (
            "/notifications/channels/0/secret_file",
            serde_json::json!("/run/credentials/macha.service/notify-gotify-token"),
        ),
        ("/notifications/channels/1/topic", serde_json::json!("macha")),
        (
            "/notifications/channels/1/secret_file",
            serde_json::json!("/run/credentials/macha.service/notify-ntfy-token"),
        ),
        ("/notifications/channels/2/url", serde_json::json!("https://hooks.example.org/m")),
        (
            "/notifications/channels/2/secret_file",
            serde_json::json!("/run/credentials/macha.service/notify-webhook-secret"),
        ),
        ("/web/listen", serde_json::json!("127.0.0.1:8471")),
        ("/web/trusted_proxies", serde_json::json!(["127.0.0.1", "::1"])),
        ("/web/proxy_user_header", serde_json::json!("X-Remote-User")),
        ("/web/proxy_admins", serde_json::json!(["alice"])),
        ("/web/proxy_viewers", serde_json::json!(["bob"])),
        ("/web/session_idle", serde_json::json!("10m")),
        ("/web/session_max", serde_json::json!("8h")),
        ("/web/secure_cookies", serde_json::json!(true)),
        ("/web/two_person", serde_json::json!(true)),
    ];
    for (pointer, want) in expect {
        assert_eq!(c.pointer(pointer), Some(&want), "{pointer} in {c:#}");
    }
    let hosts = c["hosts"].as_array().unwrap_or_else(|| panic!("hosts: {c}"));
    let web1 = hosts.iter().find(|h| h["name"] == "web1").unwrap_or_else(|| panic!("no web1: {c}"));
    assert_eq!(
        web1,
        &serde_json::json!({"name": "web1", "address": "10.0.0.11", "user": "ops", "port": 2222,
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA web1", "tags": ["web", "eu"], "health": [], "depends_on": ["db1"]})
    );
    let db1 = hosts.iter().find(|h| h["name"] == "db1").unwrap_or_else(|| panic!("no db1: {c}"));
    assert_eq!((db1["user"].is_null(), db1["host_key"].is_null(), &db1["port"]), (true, true, &serde_json::json!(22)));
}

#[test]
fn the_module_defaults_are_the_daemon_defaults() {
    // Once with the console off (the default) and once on, so that its defaults are compared too.
    for web in [false, true] {
        module_defaults_match_daemon_defaults(web);
    }
}

fn module_defaults_match_daemon_defaults(web: bool) {
    let settings = nix_eval(&format!(
        "keys.moduleSettings {{ autonomyLevel = keys.defaults.autonomyLevel; checkInterval = keys.defaults.checkInterval; \
         models = keys.defaults.models; protectedServices = [ ]; adminGroup = null; viewerGroup = null; ollama.url = null; hosts = {{ }}; \
         modelMayExecute = keys.defaults.modelMayExecute; cleanupMinAgeDays = keys.defaults.cleanupMinAgeDays; \
         discovery = {{ enable = false; allowedDomains = [ ]; }}; modelApiKeyFile = null; \
         prometheus = {{ enable = false; listen = null; textfile = null; }}; \
         notifications = {{ linkBase = null; modelMaySend = keys.defaults.notifications.modelMaySend; }}; web = {}; }}",
        web_defaults(web)
    ));
    let (code, module, log) = check_config(&settings);
    assert_eq!(code, 0, "{log}");
    let (code, daemon, log) = check_config(&serde_json::json!({ "web": { "enable": web } }));
    assert_eq!(code, 0, "{log}");
    // Nothing listens on TCP unless asked: the console is off, or on the Unix socket in the
    // unit's RuntimeDirectory.
    let want = if web { serde_json::json!("unix:/run/macha/web.sock") } else { serde_json::Value::Null };
    assert_eq!(module.pointer("/web/listen").cloned().unwrap_or_default(), want, "{module:#}");
    for pointer in [
        "/autonomy",
        "/check_interval",
        "/protected_extra",
        "/admin_group",
        "/cleanup_min_age_days",
        "/state_dir",
        "/socket",
        "/database",
        "/llm",
        "/discovery",
        "/hosts",
        "/prometheus",
        "/notifications",
        "/web",
    ] {
        assert_eq!(module.pointer(pointer), daemon.pointer(pointer), "the module's default for {pointer} differs");
    }
}

#[test]
fn a_notification_url_without_its_secret_fails_evaluation() {
    let problems = |cfg: &str| strings(&nix_eval(&format!("keys.notificationProblems {cfg}")));
    assert_eq!(problems(SAMPLE), Vec::<String>::new());
    let gotify = problems("{ notifications.gotify.url = \"https://g\"; }");
    assert_eq!(gotify.len(), 1, "{gotify:?}");
    assert!(gotify[0].contains("gotify.tokenFile"), "{gotify:?}");
    let webhook = problems("{ notifications.webhook.url = \"https://w\"; }");
    assert!(webhook.len() == 1 && webhook[0].contains("webhook.secretFile"), "{webhook:?}");
    let ntfy = problems("{ notifications.ntfy.url = \"https://n\"; }");
    assert!(ntfy.len() == 1 && ntfy[0].contains("ntfy.topic"), "{ntfy:?}");
    // A public ntfy topic needs no token.
    assert_eq!(problems("{ notifications.ntfy = { url = \"https://n\"; topic = \"t\"; }; }"), Vec::<String>::new());
    // The secrets become credentials of the unit, by path.
    let creds = strings(&nix_eval(&format!("keys.notifyLoadCredentials {SAMPLE}")));
    assert_eq!(
        creds,
        vec![
            "notify-gotify-token:/run/secrets/gotify".to_owned(),
            "notify-ntfy-token:/run/secrets/ntfy".to_owned(),
            "notify-webhook-secret:/run/secrets/hook".to_owned(),
        ]
    );
    // The daemon refuses the same mistake on its own (`macha check-config`).
    let (code, _, log) = check_config(&serde_json::json!({"notifications": {"gotify": {"url": "https://g"}}}));
    assert_eq!(code, 65, "{log}");
    assert!(log.contains("notifications.gotify.token_file"), "{log}");
}

#[test]
fn a_value_the_daemon_rejects_fails_check_config() {
    // `checkInterval` is a string to Nix; only the daemon knows 1s is below its minimum. The
    // module's build-time check turns this exit code into a failed `nixos-rebuild`.
    let settings = nix_eval(&format!("keys.moduleSettings ({SAMPLE} // {{ checkInterval = \"1s\"; }})"));
    let (code, _, log) = check_config(&settings);
    assert_eq!(code, 65, "{log}");
    assert!(log.contains("check_interval"), "{log}");
}

#[test]
fn applets_lists_the_multicall_names() {
    let out = macha(&["applets"]);
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    for want in ["macha", "macha-check", "macha-approve", "macha-logs", "macha-issues"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(names.iter().all(|n| n == "macha" || n.starts_with("macha-")), "{names:?}");
}

#[test]
fn unit_allowed_is_the_policy_for_the_polkit_rule() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("polkit.toml");
    std::fs::write(&config, "protected_units = [\"postgresql\", \"backup-*\"]\n").unwrap_or_else(|e| panic!("{e}"));
    let config = config.display().to_string();
    let allowed = |unit: &str| {
        let out = macha(&["unit-allowed", "--config", &config, "--", unit]);
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!("unit-allowed {unit}: exit {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
        }
    };
    for unit in ["nginx.service", "foo@bar.service", "backup.timer", "cups.socket", "mnt-data.path"] {
        assert!(allowed(unit), "{unit} should be allowed");
    }
    for unit in [
        "sshd.service",
        "ssh.service",
        "dbus-broker.service",
        "polkit.service",
        "systemd-journald.service",
        "journald.service",
        "nix-daemon.socket",
        "macha.service",
        "getty@tty1.service",
        "postgresql.service",
        "backup-daily.timer",
        "multi-user.target",
        "-.mount",
        "nginx",
        "--help",
        "a;b.service",
        "",
    ] {
        assert!(!allowed(unit), "{unit:?} should be refused");
    }
    let out = macha(&["unit-allowed", "--config", "/nonexistent/macha.toml", "--", "nginx.service"]);
    assert_eq!(out.status.code(), Some(65), "an unreadable configuration refuses (polkit then says no)");
}

/// Runs the module's web checks on `web` (Nix, over the defaults): which assertions fail (their
/// messages) and which warnings are given.
fn web_checks(web: &str) -> (Vec<String>, Vec<String>) {
    let v = nix_eval(&format!(
        "let w = keys.defaults.web // {web}; in {{ failed = map (a: a.message) (builtins.filter (a: !a.assertion) \
         (keys.webAssertions w)); warnings = keys.webWarnings w; }}"
    ));
    (strings(&v["failed"]), strings(&v["warnings"]))
}

#[test]
fn the_module_checks_the_web_console_setup() {
    // The default (off), and on over the Unix socket: nothing to say.
    assert_eq!(web_checks("{ }"), (vec![], vec![]));
    assert_eq!(web_checks("{ enable = true; }"), (vec![], vec![]));
    // A loopback TCP address behind a proxy that names its user: fine.
    let ok = r#"{ enable = true; listen = "127.0.0.1:8470"; trustedProxies = [ "127.0.0.1" ]; proxyUserHeader = "X-Remote-User"; }"#;
    assert_eq!(web_checks(ok), (vec![], vec![]));

    // Trusted proxies without the header they would name users in: an error.
    let (failed, _) = web_checks(r#"{ enable = true; listen = "127.0.0.1:8470"; trustedProxies = [ "127.0.0.1" ]; }"#);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("proxyUserHeader"), "{failed:?}");
    // The same while the console is off: nothing runs, nothing to refuse.
    assert_eq!(
        web_checks(r#"{ listen = "127.0.0.1:8470"; trustedProxies = [ "127.0.0.1" ]; }"#).0,
        Vec::<String>::new()
    );

    // A Unix socket outside the RuntimeDirectory (the sandbox cannot write it), or escaping it.
    for listen in ["unix:/tmp/web.sock", "unix:/run/macha/../web.sock", "unix:/run/machaX/web.sock"] {
        let (failed, _) = web_checks(&format!("{{ enable = true; listen = \"{listen}\"; }}"));
        assert_eq!(failed.len(), 1, "{listen}: {failed:?}");
        assert!(failed[0].contains("/run/macha/"), "{failed:?}");
    }

    // Proxy settings on the Unix socket are ignored: a warning says so.
    let (failed, warnings) = web_checks(r#"{ enable = true; proxyAdmins = [ "alice" ]; }"#);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("ignored"), "{warnings:?}");
    // Plain HTTP beyond this host: a warning, silenced by secureCookies (TLS in front).
    let (_, warnings) = web_checks(r#"{ enable = true; listen = "0.0.0.0:8470"; }"#);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("TLS"), "{warnings:?}");
    assert_eq!(web_checks(r#"{ enable = true; listen = "0.0.0.0:8470"; secureCookies = true; }"#), (vec![], vec![]));
}
