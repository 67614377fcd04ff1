//! The client commands: policy, schema, approvals, logs, issues, config, and starting the daemon.

use super::render;
use super::{
    ApproveCmd, CheckConfigArgs, ClientOpts, CmdResult, DaemonArgs, EXIT_DATAERR, EXIT_USAGE, IssuesCmd, LogFilter,
    LogsCmd, PolicyCmd, fail,
};
use crate::api::ops::{self, AuditFilter, Order};
use crate::api::reply::{ApprovalDetail, AuditKind, IssueDetail, Severity};
use crate::api::{Client, ClientError};
use crate::config::{Config, DEFAULT_CONFIG_PATH, Scope};
use crate::wire;
use anyhow::Context;
use macha_core::action::{Action, ActionKind, DOCUMENT_MAX};
use macha_core::flap::FlapGuard;
use macha_core::policy::{self, Autonomy, PolicyInputs};
use macha_store::{AuditQuery, Store};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration a client command uses: `--config`, else the default file if it exists, else
/// the embedded defaults.
pub fn load_config(path: Option<&Path>, scope: Scope) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p, scope),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Config::load(Path::new(DEFAULT_CONFIG_PATH), scope),
        None => Config::defaults(scope),
    }
}

pub fn daemon(args: &DaemonArgs) -> CmdResult {
    let config = load_config(args.config.as_deref(), Scope::System).map_err(|e| fail(EXIT_DATAERR, e))?;
    crate::daemon::run_blocking(config)?;
    Ok(0)
}

pub fn check_config(args: &CheckConfigArgs) -> CmdResult {
    let path = args.file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let (file, config) = Config::load_file(&path, Scope::System).map_err(|e| fail(EXIT_DATAERR, e))?;
    if args.json {
        // Every effective value, defaults included (not a configuration file).
        println!("{}", serde_json::to_string_pretty(&config)?);
    } else {
        // The file as read, normalised: a valid configuration that reads back to the same values
        // (what is not set takes its default; `--json` shows every effective value).
        println!("# {}: ok", path.display());
        println!("{}", toml::to_string(&file)?);
    }
    Ok(0)
}

pub fn schema_action() -> CmdResult {
    println!("{}", serde_json::to_string_pretty(&macha_core::action::action_schema())?);
    Ok(0)
}

pub fn policy(cmd: PolicyCmd) -> CmdResult {
    match cmd {
        PolicyCmd::Show { json, config } => {
            let config = load_config(config.as_deref(), Scope::User)?;
            let protected = config.protected();
            let rows: Vec<_> = policy::POLICY_TABLE
                .iter()
                .map(|r| {
                    let verdicts: Vec<_> = Autonomy::ALL
                        .iter()
                        .map(|a| (a.as_str(), verdict_for_table(r.kind, *a).as_str()))
                        .collect();
                    serde_json::json!({
                        "kind": r.kind, "risk": r.risk, "class": r.class, "unit_action": r.unit_action,
                        "note": r.note, "verdicts": verdicts.iter().map(|(a, v)| (a.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>()
                    })
                })
                .collect();
            let patterns: Vec<&str> = protected.patterns().collect();
            if json {
                let reasons: serde_json::Map<String, serde_json::Value> =
                    protected.entries().map(|(p, r)| (p.to_owned(), serde_json::json!(r))).collect();
                let doc = serde_json::json!({
                    "table": rows,
                    "protected_units": patterns,
                    "protected_reasons": reasons,
                    "model_may_execute": config.llm.may_execute,
                    "cleanup_min_age_days": config.cleanup_min_age_days,
                    "managed_unit_types": policy::MANAGED_UNIT_TYPES,
                    "flap": {"limit": config.flap_limit, "window_secs": config.flap_window.as_secs()},
                    "rules": render::POLICY_RULES,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                render::policy_table(&protected, &config);
            }
            Ok(0)
        }
        PolicyCmd::Check { autonomy, origin, json, config, db } => {
            // The daemon's view: the system scope's database unless told otherwise.
            let config = load_config(config.as_deref(), Scope::System)?;
            let mut doc = String::new();
            std::io::stdin()
                .take(DOCUMENT_MAX as u64 + 1)
                .read_to_string(&mut doc)
                .map_err(|e| fail(EXIT_DATAERR, anyhow::format_err!("reading the action from stdin: {e}")))?;
            // The size is checked on what was sent, before anything is trimmed: a document cut at
            // the limit could hide what follows it (a second action) and be judged without it.
            if doc.len() > DOCUMENT_MAX {
                return Err(fail(
                    EXIT_DATAERR,
                    anyhow::format_err!("the action document exceeds {DOCUMENT_MAX} bytes; nothing was judged"),
                ));
            }
            let action = Action::from_json(doc.trim()).map_err(|e| fail(EXIT_DATAERR, e.into()))?;
            let db = db.unwrap_or_else(|| config.database.clone());
            let store = match Store::open_read_only(&db) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!(
                        "macha: cannot read {} ({e}); deciding without trusted hosts or flap history",
                        db.display()
                    );
                    None
                }
            };
            let origin = origin.origin();
            let d = &crate::policy_inputs::check(
                &config,
                store.as_ref(),
                &action,
                &origin,
                autonomy.map(Into::into),
                crate::now_at(crate::now()),
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "verdict": d.verdict, "risk": d.risk, "reason": d.reason, "rule": d.rule,
                        "autonomy": d.autonomy, "action": action, "origin": origin,
                        "decided_as": d.decided_as,
                    }))?
                );
            } else {
                println!("verdict: {}", d.verdict.as_str());
                println!("risk:    {}", d.risk.as_str());
                println!("reason:  {}", d.reason);
                println!("rule:    {}", d.rule);
            }
            Ok(0)
        }
    }
}

/// The verdict the table shows: for an unprotected unit on the local host, nothing approved.
pub fn verdict_for_table(kind: ActionKind, autonomy: Autonomy) -> policy::Verdict {
    let sample = render::sample_action(kind);
    let mut inputs = PolicyInputs::new(autonomy, policy::ProtectedUnits::new::<&str>(&[]));
    inputs.flap = FlapGuard::new(u32::MAX, Duration::from_secs(1));
    let origin = macha_core::action::Origin::Rule { check: "policy-table".into() };
    policy::decide(
        &sample,
        &origin,
        &inputs.context(),
        macha_core::Now::new(macha_core::Timestamp(0), macha_core::Mono(0)),
    )
    .verdict()
}

/// Where a read comes from: the daemon, or a database file opened read-only.
pub(super) enum Source {
    Daemon(Client),
    Local(Store),
}

fn socket_path(opts: &ClientOpts, config: &Config) -> PathBuf {
    opts.socket.clone().unwrap_or_else(|| config.socket.clone())
}

/// Opens a read source: `--db` if given; else the daemon; else, if the daemon is not reachable, the
/// standalone store of `macha check` (with a note on stderr).
pub(super) fn read_source(opts: &ClientOpts) -> Result<Source, super::Failure> {
    if let Some(db) = &opts.db {
        return Ok(Source::Local(Store::open_read_only(db).with_context(|| format!("opening {}", db.display()))?));
    }
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    match Client::connect(&socket_path(opts, &config), Duration::from_secs(30)) {
        Ok(c) => Ok(Source::Daemon(c)),
        Err(e @ ClientError::Connect { .. }) => {
            let local = config.database.clone();
            if local.exists() {
                eprintln!("macha: {e}; reading the standalone store {} instead", local.display());
                Ok(Source::Local(Store::open_read_only(&local)?))
            } else {
                Err(e.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) fn write_client(opts: &ClientOpts) -> Result<Client, super::Failure> {
    if opts.db.is_some() {
        return Err(fail(EXIT_USAGE, anyhow::format_err!("--db is read-only; changes go through the daemon")));
    }
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    Ok(Client::connect(&socket_path(opts, &config), Duration::from_secs(120))?)
}

/// `macha status`: the daemon's own summary (answered by its event loop, so it answers even while
/// the database is slow).
/// `macha web login`: a one-time link that opens a console session with the asker's rights.
pub fn web_login(opts: &ClientOpts) -> CmdResult {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    let mut client = Client::connect(&socket_path(opts, &config), Duration::from_secs(10))?;
    let link = client.call(crate::api::ops::WebLogin)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&link)?);
    } else {
        println!("{}", link.url);
        eprintln!("(good once, for {} seconds)", link.expires_in_secs);
    }
    Ok(0)
}

pub fn status(opts: &ClientOpts) -> CmdResult {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    let mut client = Client::connect(&socket_path(opts, &config), Duration::from_secs(10))?;
    let s = client.call(crate::api::ops::Status)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    println!(
        "macha {} — autonomy {}, up {}",
        s.version,
        s.autonomy,
        humantime::format_duration(Duration::from_secs(s.uptime_secs))
    );
    println!("database: {}", s.database);
    println!("systemd:  {}", s.systemd);
    match &s.ssh {
        Some(ssh) => println!("ssh:      {} hosts connected, {} connections opened", ssh.connected, ssh.connects),
        None => println!("ssh:      not available"),
    }
    for j in &s.jobs {
        let mut line = format!("job:      {} {}, {} runs", j.name, j.state, j.runs);
        if let Some(t) = j.last_run {
            line.push_str(&format!(", last {t}"));
        }
        if let Some(t) = j.next_check {
            line.push_str(&format!(", next look {t}"));
        }
        if let Some(why) = &j.deferred {
            line.push_str(&format!(" (deferred: {why})"));
        }
        if let Some(p) = &j.progress {
            line.push_str(&format!(" ({p})"));
        }
        println!("{}", super::term::clean(&line));
        if let Some(r) = &j.last_result {
            println!("          {}", super::term::clean(r));
        }
    }
    Ok(0)
}

fn parse_states<T>(states: &[String], parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, super::Failure> {
    states
        .iter()
        .map(|s| parse(s).ok_or_else(|| fail(EXIT_USAGE, anyhow::format_err!("unknown state {s:?}"))))
        .collect()
}

pub fn approve(cmd: ApproveCmd) -> CmdResult {
    use macha_core::approval::ApprovalState;
    match cmd {
        ApproveCmd::List { client, all } => {
            let states: Vec<ApprovalState> = if all { vec![] } else { vec![ApprovalState::Pending] };
            let records = match read_source(&client)? {
                Source::Daemon(mut c) => c.call(ops::ListApprovals { states, limit: Some(500) })?,
                Source::Local(store) => store.list_approvals(&states, Some(500))?.iter().map(wire::approval).collect(),
            };
            render::approvals(&records, client.json)?;
            Ok(0)
        }
        ApproveCmd::Show { id, client } => {
            let detail = match read_source(&client)? {
                Source::Daemon(mut c) => c.call(ops::ShowApproval { id })?,
                Source::Local(store) => {
                    let r =
                        store.get_approval(id)?.ok_or_else(|| anyhow::format_err!("approval {id} does not exist"))?;
                    let q = AuditQuery { approval_id: Some(id), ..AuditQuery::default() };
                    ApprovalDetail { approval: wire::approval(&r), audit: wire::audit_entries(&store.query_audit(&q)?) }
                }
            };
            render::approval(&detail, client.json)?;
            Ok(0)
        }
        ApproveCmd::Approve { id, note, client } => {
            let r = write_client(&client)?.call(ops::Approve { id, note })?;
            if client.json {
                render::print_json(&r)?;
            } else {
                println!("approval {id}: approved; {}", r.decision.reason);
            }
            Ok(0)
        }
        ApproveCmd::Discuss { id, client } => super::chat::discuss(id, &client),
        ApproveCmd::Reject { id, note, client } => {
            let r = write_client(&client)?.call(ops::Reject { id, note })?;
            if client.json {
                render::print_json(&r)?;
            } else {
                println!("approval {id}: rejected");
            }
            Ok(0)
        }
    }
}

pub fn issues(cmd: IssuesCmd) -> CmdResult {
    use macha_core::issue::IssueState;
    match cmd {
        IssuesCmd::List { client, all, state, host } => {
            let states: Vec<IssueState> = if !state.is_empty() {
                parse_states(&state, IssueState::parse)?
            } else if all {
                vec![]
            } else {
                vec![IssueState::Open, IssueState::Acting, IssueState::Resolved]
            };
            let records = match read_source(&client)? {
                Source::Daemon(mut c) => c.call(ops::ListIssues { states, host, limit: Some(500) })?,
                Source::Local(store) => store
                    .list_issues(&macha_store::IssueQuery { states, host, limit: Some(500) })?
                    .iter()
                    .map(wire::issue)
                    .collect(),
            };
            render::issues(&records, client.json)?;
            Ok(0)
        }
        IssuesCmd::Show { id, client } => {
            let detail = match read_source(&client)? {
                Source::Daemon(mut c) => c.call(ops::ShowIssue { id })?,
                Source::Local(store) => {
                    let r = store.get_issue(id)?.ok_or_else(|| anyhow::format_err!("issue {id} does not exist"))?;
                    let q = AuditQuery { issue_id: Some(id), ..AuditQuery::default() };
                    IssueDetail {
                        issue: wire::issue(&r),
                        audit: wire::audit_entries(&store.query_audit(&q)?),
                        similar: crate::knowledge::similar(&store, id, crate::now()),
                        recent_changes: load_config(client.config.as_deref(), Scope::User)
                            .map(|c| crate::changes::issue_lines(&store, &c, &r))
                            .unwrap_or_default(),
                        citations: crate::changes::citations(&store, id),
                    }
                }
            };
            render::issue(&detail, client.json)?;
            Ok(0)
        }
        IssuesCmd::Resolve { id, note, client } => {
            let r = write_client(&client)?.call(ops::ResolveIssue { id, note })?;
            if client.json {
                render::print_json(&r)?;
            } else {
                println!("issue {id}: resolved");
            }
            Ok(0)
        }
        IssuesCmd::Close { id, note, client } => {
            let r = write_client(&client)?.call(ops::CloseIssue { id, note })?;
            if client.json {
                render::print_json(&r)?;
            } else {
                println!("issue {id}: closed");
            }
            Ok(0)
        }
    }
}

pub fn logs(cmd: LogsCmd) -> CmdResult {
    let (filter, kinds) = match cmd {
        LogsCmd::Decisions(f) => (f, vec![AuditKind::Decision]),
        LogsCmd::Actions(f) => (f, vec![AuditKind::Action, AuditKind::Outcome]),
        LogsCmd::Audit(f) => (f, vec![]),
        LogsCmd::Service { since, follow, limit } => return service_log(since.as_deref(), follow, limit),
        LogsCmd::Prompts { request, limit, client } => return super::chat::prompts(request, limit, &client),
        LogsCmd::Verify { export, client } => return super::audit::verify(export.as_deref(), &client),
        LogsCmd::Export { out, upto, client } => return super::audit::export(&out, upto, &client),
        LogsCmd::Prune { upto, hash, client } => return super::audit::prune(upto, &hash, &client),
        LogsCmd::Search { text, host, kind, since, limit, client } => {
            return super::questlog::search(&text, host, &kind, since.as_deref(), limit, &client);
        }
        LogsCmd::Stats { since, client } => return super::questlog::stats(since.as_deref(), &client),
        LogsCmd::Timeline { host, since, limit, client } => {
            return super::questlog::timeline(&host, since.as_deref(), limit, &client);
        }
        LogsCmd::Commands { host, since, limit, client } => {
            return super::questlog::commands(host, since.as_deref(), limit, &client);
        }
    };
    audit_log(&filter, kinds)
}

fn audit_log(f: &LogFilter, kinds: Vec<AuditKind>) -> CmdResult {
    let since = match &f.since {
        Some(s) => {
            let d = humantime::parse_duration(s)
                .map_err(|e| fail(EXIT_USAGE, anyhow::format_err!("--since {s:?}: {e} (examples: 30m, 2h, 7d)")))?;
            Some(crate::now().minus(d))
        }
        None => None,
    };
    let min_severity = match &f.severity {
        Some(s) => Some(Severity::parse(s).ok_or_else(|| {
            fail(EXIT_USAGE, anyhow::format_err!("--severity {s:?}: use info, notice, warning, error or critical"))
        })?),
        None => None,
    };
    let mut source = read_source(&f.client)?;
    let mut filter = AuditFilter {
        since,
        host: f.host.clone(),
        kinds,
        min_severity,
        limit: Some(f.limit.unwrap_or(100)),
        after_id: f.after_id,
        // A page after an id reads forward; otherwise the newest, shown oldest first.
        order: if f.after_id.is_some() { Order::OldestFirst } else { Order::NewestFirst },
    };
    let mut fetch = |filter: &AuditFilter| -> Result<Vec<crate::api::reply::AuditEntry>, super::Failure> {
        match &mut source {
            Source::Daemon(c) => Ok(c.call(ops::QueryAudit { filter: filter.clone() })?),
            Source::Local(store) => Ok(wire::audit_entries(&store.query_audit(&wire::audit_query(filter))?)),
        }
    };
    let mut records = fetch(&filter)?;
    if f.after_id.is_none() {
        records.reverse();
    }
    let mut last = records.iter().map(|r| r.id).max();
    render::audit(&records, f.client.json)?;
    if f.follow {
        filter.order = Order::OldestFirst;
        filter.limit = Some(500);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            filter.after_id = Some(last.unwrap_or(0));
            let new = fetch(&filter)?;
            if let Some(r) = new.last() {
                last = Some(r.id);
            }
            render::audit(&new, f.client.json)?;
        }
    }
    Ok(0)
}

fn service_log(since: Option<&str>, follow: bool, limit: Option<u32>) -> CmdResult {
    let journalctl = which::which("journalctl").map_err(|e| anyhow::format_err!("journalctl is not available: {e}"))?;
    let mut cmd = std::process::Command::new(journalctl);
    cmd.args(["--unit", "macha.service", "--no-pager", "--output", "short-iso"])
        .env_clear()
        .envs(macha_core::command::SPAWN_ENV);
    if let Some(s) = since {
        let d =
            humantime::parse_duration(s).map_err(|e| fail(EXIT_USAGE, anyhow::format_err!("--since {s:?}: {e}")))?;
        cmd.arg(format!("--since=-{}s", d.as_secs()));
    }
    cmd.arg(format!("--lines={}", limit.unwrap_or(100)));
    if follow {
        cmd.arg("--follow");
    }
    let status = cmd.status()?;
    Ok(if status.success() { 0 } else { super::EXIT_SOFTWARE })
}
