//! `macha-systems` (also `macha systems`): the host registry — list, show, trust, admit, forget —
//! and `macha probe --json`, the snapshot a Macha on another host hands to the daemon observing it.
//!
//! Reads go to the daemon (or, with `--db` or when it is not running, to the database file,
//! read-only); changes always go through the daemon, which alone writes the registry and the
//! known_hosts file. `trust` shows the fingerprints of the keys the host presents (the daemon
//! runs `ssh-keyscan`) and pins only what the person confirmed: interactively, with
//! `--fingerprint SHA256:…` (checked against what the host presents), or with `--yes`.

use super::commands::load_config;
use super::{ClientOpts, CmdResult, EXIT_DATAERR, EXIT_USAGE, fail};
use crate::api::{Client, ClientError, Request};
use crate::config::Scope;
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum SystemsCmd {
    /// Every registered host: standing, source, address, operating system, role, last contact.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// One host in full: profile, pinned keys, last contact, recent records.
    Show {
        host: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show the fingerprints of the host's keys and pin them: the host becomes trusted (observed,
    /// and actions may run on it).
    Trust {
        host: String,
        /// Pin only the key with this fingerprint (repeatable); refused unless the host presents it.
        #[arg(long = "fingerprint")]
        fingerprints: Vec<String>,
        /// Pin every key the host presents without asking (after reading them yourself).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Let Macha contact a discovered host (observation only, until it is trusted).
    Admit {
        host: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Stop contacting a host and remove its pinned keys; its history stays.
    Forget {
        host: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Print the snapshot as JSON (the only format; the flag says so explicitly).
    #[arg(long)]
    pub json: bool,
    /// Configuration file (default /etc/macha/macha.toml if present).
    #[arg(long, env = "MACHA_CONFIG")]
    pub config: Option<PathBuf>,
}

fn client(opts: &ClientOpts, write: bool) -> Result<Option<Client>, super::Failure> {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    if opts.db.is_some() {
        if write {
            return Err(fail(EXIT_USAGE, anyhow::format_err!("--db is read-only; changes go through the daemon")));
        }
        return Ok(None);
    }
    let socket = opts.socket.clone().unwrap_or_else(|| config.socket.clone());
    match Client::connect(&socket, Duration::from_secs(60)) {
        Ok(c) => Ok(Some(c)),
        Err(e @ ClientError::Connect { .. }) if !write && config.database.exists() => {
            eprintln!("macha-systems: {e}; reading {} instead", config.database.display());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The registry from the database file, shaped like the daemon's answer.
fn from_db(opts: &ClientOpts, name: Option<&str>) -> Result<serde_json::Value, super::Failure> {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    let db = opts.db.clone().unwrap_or_else(|| config.database.clone());
    let store = macha_store::Store::open_read_only(&db)?;
    let kh = macha_ssh::KnownHosts::load(&config.ssh.known_hosts).ok();
    let summary = |h: &macha_store::FleetHost| {
        let pinned: Vec<String> = match (&kh, macha_core::HostName::parse(&h.record.name)) {
            (Some(kh), Ok(n)) => kh.keys_for(&n).iter().map(macha_ssh::HostKey::fingerprint).collect(),
            _ => Vec::new(),
        };
        let st = crate::fleet::standing(h.record.state);
        serde_json::json!({
            "name": h.record.name, "state": h.record.state, "source": h.source,
            "contacted": st.may_connect(), "actions": st.may_act(),
            "address": h.record.address.clone().unwrap_or_else(|| h.record.name.clone()),
            "port": h.record.port.unwrap_or(22),
            "user": h.record.user.clone().unwrap_or_else(|| config.ssh.user.clone()),
            "os": h.record.os, "role": h.record.profile.get("role"),
            "capabilities": h.record.profile.get("capabilities"),
            "pinned": pinned, "status": h.status, "profile": h.record.profile,
            "first_seen": h.record.first_seen, "last_seen": h.record.last_seen,
        })
    };
    match name {
        None => Ok(serde_json::Value::Array(store.list_fleet_hosts()?.iter().map(summary).collect())),
        Some(n) => {
            let h = store
                .get_fleet_host(n)?
                .ok_or_else(|| fail(EXIT_DATAERR, anyhow::format_err!("{n} is not a registered host")))?;
            let mut v = summary(&h);
            v["audit"] = serde_json::to_value(store.query_audit(&macha_store::AuditQuery {
                host: Some(n.to_owned()),
                limit: Some(30),
                order: macha_store::Order::NewestFirst,
                ..macha_store::AuditQuery::default()
            })?)?;
            Ok(v)
        }
    }
}

fn print_json(v: &serde_json::Value) -> CmdResult {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(0)
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn contact(status: &serde_json::Value) -> String {
    match status.get("ok").and_then(serde_json::Value::as_bool) {
        None => "never contacted".into(),
        Some(true) => format!("ok at {}", text(&status["at"])),
        Some(false) => format!("{}: {}", text(&status["kind"]), text(&status["reason"])),
    }
}

fn ts(v: &serde_json::Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), |ms| macha_core::Timestamp::from_millis(ms).to_string())
}

pub fn run(cmd: SystemsCmd) -> CmdResult {
    match cmd {
        SystemsCmd::List { client: opts } => {
            let v = match client(&opts, false)? {
                Some(mut c) => c.call(&Request::ListHosts)?,
                None => from_db(&opts, None)?,
            };
            if opts.json {
                return print_json(&v);
            }
            let hosts = v.as_array().cloned().unwrap_or_default();
            if hosts.is_empty() {
                println!("no hosts registered (add [hosts.<name>] to the configuration, or enable discovery)");
                return Ok(0);
            }
            println!(
                "{:<28} {:<11} {:<8} {:<18} {:<28} {:<15} last contact",
                "host", "state", "source", "address", "os", "role"
            );
            for h in &hosts {
                let status = &h["status"];
                let last = match status.get("ok").and_then(serde_json::Value::as_bool) {
                    None => "never".to_owned(),
                    Some(true) => format!("ok {}", ts(&status["at"])),
                    Some(false) => text(&status["kind"]),
                };
                let os: String = text(&h["os"]).chars().take(28).collect();
                println!(
                    "{:<28} {:<11} {:<8} {:<18} {:<28} {:<15} {last}",
                    text(&h["name"]),
                    text(&h["state"]),
                    text(&h["source"]),
                    format!("{}:{}", text(&h["address"]), text(&h["port"])),
                    os,
                    text(&h["role"]),
                );
            }
            Ok(0)
        }
        SystemsCmd::Show { host, client: opts } => {
            let v = match client(&opts, false)? {
                Some(mut c) => c.call(&Request::ShowHost { name: host })?,
                None => from_db(&opts, Some(&host))?,
            };
            if opts.json {
                return print_json(&v);
            }
            println!("host:        {}", text(&v["name"]));
            println!("state:       {} (source {})", text(&v["state"]), text(&v["source"]));
            let reach = if v["actions"] == true {
                "observed; actions may run"
            } else if v["contacted"] == true {
                "observed; no actions (not trusted)"
            } else {
                "never contacted"
            };
            println!("standing:    {reach}");
            println!("address:     {}@{}:{}", text(&v["user"]), text(&v["address"]), text(&v["port"]));
            let pinned: Vec<String> = v["pinned"].as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
            println!("pinned keys: {}", if pinned.is_empty() { "none".to_owned() } else { pinned.join(", ") });
            println!("contact:     {}", contact(&v["status"]));
            println!("os:          {}", text(&v["os"]));
            let p = &v["profile"];
            if p.get("role").is_some() {
                println!("role:        {}", text(&p["role"]));
                let caps: Vec<String> =
                    p["capabilities"].as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
                println!("capabilities: {}", if caps.is_empty() { "none".into() } else { caps.join(", ") });
                println!(
                    "cpus/memory: {} / {}",
                    text(&p["cpu_cores"]),
                    p["memory_bytes"].as_u64().map_or("-".into(), macha_core::checks::human_bytes)
                );
                println!("services:    {}", p["services"].as_array().map_or(0, Vec::len));
            }
            println!("first/last seen: {} / {}", ts(&v["first_seen"]), ts(&v["last_seen"]));
            if let Some(audit) = v["audit"].as_array() {
                println!("recent records:");
                for a in audit.iter().take(15) {
                    println!("  {} {:<8} {}", ts(&a["ts"]), text(&a["kind"]), text(&a["summary"]));
                }
            }
            Ok(0)
        }
        SystemsCmd::Trust { host, fingerprints, yes, client: opts } => trust(&host, fingerprints, yes, &opts),
        SystemsCmd::Admit { host, client: opts } => {
            let v = client(&opts, true)?
                .ok_or_else(|| fail(EXIT_USAGE, anyhow::format_err!("changes go through the daemon")))?
                .call(&Request::AdmitHost { name: host })?;
            if opts.json {
                return print_json(&v);
            }
            if v["changed"] == true {
                println!(
                    "{}: admitted; Macha contacts it once its host key is pinned (macha-systems trust {})",
                    text(&v["name"]),
                    text(&v["name"])
                );
            } else {
                println!("{}: already {}", text(&v["name"]), text(&v["state"]));
            }
            Ok(0)
        }
        SystemsCmd::Forget { host, client: opts } => {
            let v = client(&opts, true)?
                .ok_or_else(|| fail(EXIT_USAGE, anyhow::format_err!("changes go through the daemon")))?
                .call(&Request::ForgetHost { name: host })?;
            if opts.json {
                return print_json(&v);
            }
            println!("{}: forgotten (never contacted again; pinned keys removed)", text(&v["name"]));
            Ok(0)
        }
    }
}

fn trust(host: &str, fingerprints: Vec<String>, yes: bool, opts: &ClientOpts) -> CmdResult {
    let mut c =
        client(opts, true)?.ok_or_else(|| fail(EXIT_USAGE, anyhow::format_err!("changes go through the daemon")))?;
    let scan = c.call(&Request::ScanHost { name: host.to_owned() })?;
    let name = text(&scan["name"]);
    let presented: Vec<(String, String)> = scan["keys"]
        .as_array()
        .map(|a| a.iter().map(|k| (text(&k["algorithm"]), text(&k["fingerprint"]))).collect())
        .unwrap_or_default();
    if !opts.json {
        println!("{name} ({}, port {}) presents:", text(&scan["address"]), text(&scan["port"]));
        for (alg, fp) in &presented {
            println!("  {alg:<20} {fp}");
        }
        let pinned: Vec<String> =
            scan["pinned"].as_array().map(|a| a.iter().map(|k| text(&k["fingerprint"])).collect()).unwrap_or_default();
        if !pinned.is_empty() {
            println!("pinned now: {}", pinned.join(", "));
        }
    }
    let chosen: Vec<String> = if !fingerprints.is_empty() {
        for f in &fingerprints {
            if !presented.iter().any(|(_, p)| p == f) {
                return Err(fail(
                    EXIT_DATAERR,
                    anyhow::format_err!("{name} does not present a key with fingerprint {f}; nothing was pinned"),
                ));
            }
        }
        fingerprints
    } else if yes {
        presented.iter().map(|(_, f)| f.clone()).collect()
    } else if std::io::stdin().is_terminal() {
        print!(
            "Compare these with the host's own (on it: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).\n\
             Pin them and trust {name}? [y/N] "
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing pinned");
            return Ok(1);
        }
        presented.iter().map(|(_, f)| f.clone()).collect()
    } else {
        return Err(fail(
            EXIT_USAGE,
            anyhow::format_err!(
                "not a terminal: confirm with --fingerprint SHA256:… (checked against the host) or --yes"
            ),
        ));
    };
    let v = c.call(&Request::TrustHost { name: name.clone(), fingerprints: chosen })?;
    if opts.json {
        return print_json(&serde_json::json!({"scan": scan, "trust": v}));
    }
    let pinned: Vec<String> =
        v["pinned"].as_array().map(|a| a.iter().map(|k| text(&k["fingerprint"])).collect()).unwrap_or_default();
    println!("{name}: pinned {}; trusted (observed, and actions may run)", pinned.join(", "));
    Ok(0)
}

/// `macha probe --json`: this host's snapshot, for the Macha observing it over SSH. Observes only;
/// records nothing, executes nothing.
pub fn probe(args: &ProbeArgs) -> CmdResult {
    let config = load_config(args.config.as_deref(), Scope::User)?;
    let now = crate::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let snapshot = runtime.block_on(async {
        let journal = if config.journal_enable {
            match crate::observe::journal_once(&config, now).await {
                Ok(summary) => crate::observe::JournalState::Summary(summary),
                Err(reason) => crate::observe::JournalState::Unavailable(reason),
            }
        } else {
            crate::observe::JournalState::Unavailable("disabled in the configuration (journal.enable = false)".into())
        };
        let sources = crate::observe::Sources {
            observer: std::sync::Arc::new(std::sync::Mutex::new(macha_observe::LocalObserver::new(
                macha_observe::ObserveConfig::system(),
            ))),
            systemd: crate::observe::SystemdLink::new(crate::observe::connect_systemd(&config).await),
            journal: std::sync::Arc::new(std::sync::Mutex::new(journal)),
        };
        sources.collect(&macha_core::HostName::local(), now).await
    });
    let doc = macha_ssh::ProbeDocument { version: macha_ssh::probe::PROBE_DOCUMENT_VERSION, snapshot };
    println!("{}", serde_json::to_string(&doc)?);
    Ok(0)
}
