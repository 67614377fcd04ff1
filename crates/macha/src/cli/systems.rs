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
use crate::api::reply::{ContactStatus, HostDetail, HostView, KeyScan, TrustResult};
use crate::api::{Client, ClientError, ops};
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
        /// Only hosts with this configured tag (`hosts.<name>.tags`).
        #[arg(long, value_name = "TAG")]
        tag: Option<String>,
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
    /// The fleet map: each host and what it depends on, declared (`hosts.<name>.depends_on`),
    /// observed (established TCP connections between managed hosts) or both.
    Graph {
        /// Print Graphviz DOT (`macha systems graph --dot | dot -Tsvg > fleet.svg`).
        #[arg(long, conflicts_with = "json")]
        dot: bool,
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

/// What the standalone registry views need besides the database: the pinned keys, the default
/// user and the configured tags.
struct Offline {
    kh: Option<macha_ssh::KnownHosts>,
    user: String,
    tags: std::collections::BTreeMap<macha_core::HostName, Vec<String>>,
}

/// The registry from the database file, converted as the daemon converts it.
fn from_db(opts: &ClientOpts) -> Result<(macha_store::Store, Offline), super::Failure> {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    let db = opts.db.clone().unwrap_or_else(|| config.database.clone());
    let store = macha_store::Store::open_read_only(&db)?;
    let kh = macha_ssh::KnownHosts::load(&config.ssh.known_hosts).ok();
    let tags = config.hosts.iter().map(|h| (h.name.clone(), h.tags.clone())).collect();
    Ok((store, Offline { kh, user: config.ssh.user.clone(), tags }))
}

fn view(h: &macha_store::FleetHost, off: &Offline) -> HostView {
    let name = macha_core::HostName::parse(&h.record.name);
    let pinned: Vec<String> = match (&off.kh, &name) {
        (Some(kh), Ok(n)) => kh.keys_for(n).iter().map(macha_ssh::HostKey::fingerprint).collect(),
        _ => Vec::new(),
    };
    let tags = name.ok().and_then(|n| off.tags.get(&n)).cloned().unwrap_or_default();
    crate::wire::host(h, pinned, tags, &off.user, 0)
}

fn list_from_db(opts: &ClientOpts) -> Result<Vec<HostView>, super::Failure> {
    let (store, off) = from_db(opts)?;
    Ok(store.list_fleet_hosts()?.iter().map(|h| view(h, &off)).collect())
}

fn show_from_db(opts: &ClientOpts, name: &str) -> Result<HostDetail, super::Failure> {
    let (store, off) = from_db(opts)?;
    let h = store
        .get_fleet_host(name)?
        .ok_or_else(|| fail(EXIT_DATAERR, anyhow::format_err!("{name} is not a registered host")))?;
    let audit = store.query_audit(&macha_store::AuditQuery {
        host: Some(name.to_owned()),
        limit: Some(30),
        order: macha_store::Order::NewestFirst,
        ..macha_store::AuditQuery::default()
    })?;
    Ok(crate::wire::host_detail(view(&h, &off), &h, &audit))
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn contact(status: Option<&ContactStatus>) -> String {
    match status {
        None => "never contacted".into(),
        Some(s) if s.ok => format!("ok at {}", opt(s.at)),
        Some(s) => format!("{}: {}", s.kind, s.reason.as_deref().unwrap_or("-")),
    }
}

fn role(r: Option<macha_core::fleet::Role>) -> String {
    r.and_then(|r| serde_json::to_value(r).ok()).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or("-".into())
}

/// Without a daemon: the declared relations only (observations live in the daemon's memory).
fn graph_from_db(opts: &ClientOpts) -> Result<macha_core::fleet_map::FleetMap, super::Failure> {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    let (store, _) = from_db(opts)?;
    Ok(crate::fleet_map::answer(&store, &config, &Default::default(), &Default::default())?)
}

pub fn run(cmd: SystemsCmd) -> CmdResult {
    match cmd {
        SystemsCmd::Graph { dot, client: opts } => {
            let map = match client(&opts, false)? {
                Some(mut c) => c.call(ops::FleetGraph)?,
                None => {
                    eprintln!("macha-systems: without the daemon only declared relations are shown");
                    graph_from_db(&opts)?
                }
            };
            if opts.json {
                super::render::print_json(&map)?;
                return Ok(0);
            }
            if map.nodes.is_empty() {
                println!("no hosts registered (add [hosts.<name>] to the configuration)");
                return Ok(0);
            }
            let text =
                if dot { macha_core::fleet_map::render_dot(&map) } else { macha_core::fleet_map::render_text(&map) };
            print!("{}", super::term::clean(&text));
            Ok(0)
        }
        SystemsCmd::List { client: opts, tag } => {
            let mut hosts = match client(&opts, false)? {
                Some(mut c) => c.call(ops::ListHosts)?,
                None => list_from_db(&opts)?,
            };
            if let Some(tag) = &tag {
                hosts.retain(|h| h.tags.contains(tag));
            }
            if opts.json {
                super::render::print_json(&hosts)?;
                return Ok(0);
            }
            let hosts = super::term::scrub(hosts)?;
            if hosts.is_empty() {
                println!("no hosts registered (add [hosts.<name>] to the configuration, or enable discovery)");
                return Ok(0);
            }
            println!(
                "{:<28} {:<11} {:<8} {:<18} {:<28} {:<15} last contact",
                "host", "state", "source", "address", "os", "role"
            );
            for h in &hosts {
                let last = match &h.status {
                    None => "never".to_owned(),
                    Some(s) if s.ok => format!("ok {}", opt(s.at)),
                    Some(s) => s.kind.clone(),
                };
                let os: String = h.os.as_deref().unwrap_or("-").chars().take(28).collect();
                println!(
                    "{:<28} {:<11} {:<8} {:<18} {:<28} {:<15} {last}",
                    h.name,
                    h.state_str(),
                    h.source.as_str(),
                    format!("{}:{}", h.address, h.port),
                    os,
                    role(h.role),
                );
            }
            Ok(0)
        }
        SystemsCmd::Show { host, client: opts } => {
            let d = match client(&opts, false)? {
                Some(mut c) => c.call(ops::ShowHost { name: host })?,
                None => show_from_db(&opts, &host)?,
            };
            if opts.json {
                super::render::print_json(&d)?;
                return Ok(0);
            }
            let d = super::term::scrub(d)?;
            let h = &d.host;
            println!("host:        {}", h.name);
            println!("state:       {} (source {})", h.state_str(), h.source.as_str());
            let reach = if h.actions {
                "observed; actions may run"
            } else if h.contacted {
                "observed; no actions (not trusted)"
            } else {
                "never contacted"
            };
            println!("standing:    {reach}");
            println!("address:     {}@{}:{}", h.user, h.address, h.port);
            println!("pinned keys: {}", if h.pinned.is_empty() { "none".to_owned() } else { h.pinned.join(", ") });
            println!("contact:     {}", contact(h.status.as_ref()));
            println!("os:          {}", h.os.as_deref().unwrap_or("-"));
            if let Some(p) = &d.profile {
                println!("role:        {}", role(Some(p.role)));
                let caps: Vec<String> = p
                    .capabilities
                    .iter()
                    .filter_map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_owned)))
                    .collect();
                println!("capabilities: {}", if caps.is_empty() { "none".into() } else { caps.join(", ") });
                println!(
                    "cpus/memory: {} / {}",
                    opt(p.cpu_cores),
                    p.memory_bytes.map_or("-".into(), macha_core::checks::human_bytes)
                );
                println!("services:    {}", p.services.len());
            }
            println!("first/last seen: {} / {}", h.first_seen, h.last_seen);
            println!("recent records:");
            for a in d.audit.iter().take(15) {
                println!("  {} {:<8} {}", a.ts, a.kind.as_str(), a.summary);
            }
            Ok(0)
        }
        SystemsCmd::Trust { host, fingerprints, yes, client: opts } => trust(&host, fingerprints, yes, &opts),
        SystemsCmd::Admit { host, client: opts } => {
            let v = client(&opts, true)?
                .ok_or_else(|| fail(EXIT_USAGE, anyhow::format_err!("changes go through the daemon")))?
                .call(ops::AdmitHost { name: host })?;
            if opts.json {
                super::render::print_json(&v)?;
                return Ok(0);
            }
            if v.changed {
                println!(
                    "{}: admitted; Macha contacts it once its host key is pinned (macha-systems trust {})",
                    v.name, v.name
                );
            } else {
                println!("{}: already {}", v.name, crate::api::reply::standing_str(v.state));
            }
            Ok(0)
        }
        SystemsCmd::Forget { host, client: opts } => {
            let v = client(&opts, true)?
                .ok_or_else(|| fail(EXIT_USAGE, anyhow::format_err!("changes go through the daemon")))?
                .call(ops::ForgetHost { name: host })?;
            if opts.json {
                super::render::print_json(&v)?;
                return Ok(0);
            }
            println!("{}: forgotten (never contacted again; pinned keys removed)", v.name);
            Ok(0)
        }
    }
}

/// What `trust --json` prints: the scan and the result of pinning.
#[derive(Debug, serde::Serialize)]
struct TrustOutput<'a> {
    scan: &'a KeyScan,
    trust: &'a TrustResult,
}

fn trust(host: &str, fingerprints: Vec<String>, yes: bool, opts: &ClientOpts) -> CmdResult {
    let mut c =
        client(opts, true)?.ok_or_else(|| fail(EXIT_USAGE, anyhow::format_err!("changes go through the daemon")))?;
    let scan = c.call(ops::ScanHost { name: host.to_owned() })?;
    let name = scan.name.clone();
    if !opts.json {
        println!("{name} ({}, port {}) presents:", scan.address, scan.port);
        for k in &scan.keys {
            println!("  {:<20} {}", k.algorithm, k.fingerprint);
        }
        if !scan.pinned.is_empty() {
            let pinned: Vec<&str> = scan.pinned.iter().map(|k| k.fingerprint.as_str()).collect();
            println!("pinned now: {}", pinned.join(", "));
        }
    }
    let presented: Vec<String> = scan.keys.iter().map(|k| k.fingerprint.clone()).collect();
    let chosen: Vec<String> = if !fingerprints.is_empty() {
        for f in &fingerprints {
            if !presented.contains(f) {
                return Err(fail(
                    EXIT_DATAERR,
                    anyhow::format_err!("{name} does not present a key with fingerprint {f}; nothing was pinned"),
                ));
            }
        }
        fingerprints
    } else if yes {
        presented
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
        presented
    } else {
        return Err(fail(
            EXIT_USAGE,
            anyhow::format_err!(
                "not a terminal: confirm with --fingerprint SHA256:… (checked against the host) or --yes"
            ),
        ));
    };
    let v = c.call(ops::TrustHost { name: name.clone(), fingerprints: chosen })?;
    if opts.json {
        super::render::print_json(&TrustOutput { scan: &scan, trust: &v })?;
        return Ok(0);
    }
    let pinned: Vec<&str> = v.pinned.iter().map(|k| k.fingerprint.as_str()).collect();
    println!("{name}: pinned {}; trusted (observed, and actions may run)", pinned.join(", "));
    Ok(0)
}

/// `macha probe --json`: this host's snapshot, for the Macha observing it over SSH. Observes only;
/// records nothing, executes nothing.
pub fn probe(args: &ProbeArgs) -> CmdResult {
    let config = load_config(args.config.as_deref(), Scope::User)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let snapshot = runtime.block_on(crate::observe::one_shot(&config, None));
    let doc = macha_ssh::ProbeDocument { version: macha_ssh::probe::PROBE_DOCUMENT_VERSION, snapshot };
    println!("{}", serde_json::to_string(&doc)?);
    Ok(0)
}
