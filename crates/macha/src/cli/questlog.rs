//! The quest log: `macha logs search`, `stats`, `timeline` and `commands` (viewers; `--db` reads
//! a database file directly, read-only). The daemon answers from its database; without a daemon
//! the standalone store is read.

use super::commands::{Source, read_source};
use super::{ClientOpts, CmdResult, EXIT_USAGE, fail, render, term};
use crate::api::questlog::{CommandRunView, CommandRuns, LogStats, LogStatsView, SearchAudit};
use crate::api::reply::{AuditEntry, AuditKind};
use crate::api::{ops, ops::AuditFilter};
use crate::wire;
use macha_core::Timestamp;

/// At most this many records an answer by default.
const DEFAULT_LIMIT: u32 = 50;

fn since(s: Option<&str>, default: Option<&str>) -> Result<Option<Timestamp>, super::Failure> {
    match s.or(default) {
        None => Ok(None),
        Some(s) => {
            let d = humantime::parse_duration(s)
                .map_err(|e| fail(EXIT_USAGE, anyhow::format_err!("--since {s:?}: {e} (examples: 6h, 7d, 30d)")))?;
            Ok(Some(crate::now().minus(d)))
        }
    }
}

fn kinds(names: &[String]) -> Result<Vec<AuditKind>, super::Failure> {
    names
        .iter()
        .map(|k| {
            AuditKind::parse(k).ok_or_else(|| {
                let all: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
                fail(EXIT_USAGE, anyhow::format_err!("--kind {k:?}: use {}", all.join(", ")))
            })
        })
        .collect()
}

/// `macha logs search TEXT [--host H] [--kind K] [--since 6h]`.
pub fn search(
    text: &str,
    host: Option<String>,
    kind: &[String],
    since_arg: Option<&str>,
    limit: Option<u32>,
    opts: &ClientOpts,
) -> CmdResult {
    let query = SearchAudit {
        text: text.to_owned(),
        host,
        kinds: kinds(kind)?,
        since: since(since_arg, None)?,
        limit: Some(limit.unwrap_or(DEFAULT_LIMIT)),
    };
    let records: Vec<AuditEntry> = match read_source(opts)? {
        Source::Daemon(mut c) => c.call(query)?,
        Source::Local(store) => {
            let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
            wire::audit_entries(&store.search_audit(&wire::log_search(&query, limit))?)
        }
    };
    if records.is_empty() && !opts.json {
        println!("no records match {text:?}");
    }
    render::audit(&records, opts.json)?;
    Ok(0)
}

/// `macha logs timeline HOST [--since 24h]`: everything about one host, oldest first (the
/// snapshots left out).
pub fn timeline(host: &str, since_arg: Option<&str>, limit: Option<u32>, opts: &ClientOpts) -> CmdResult {
    let filter = AuditFilter {
        since: since(since_arg, Some("24h"))?,
        host: Some(host.to_owned()),
        kinds: AuditKind::ALL.into_iter().filter(|k| *k != AuditKind::Snapshot).collect(),
        limit: Some(limit.unwrap_or(500)),
        order: ops::Order::OldestFirst,
        ..AuditFilter::default()
    };
    let records = match read_source(opts)? {
        Source::Daemon(mut c) => c.call(ops::QueryAudit { filter })?,
        Source::Local(store) => wire::audit_entries(&store.query_audit(&wire::audit_query(&filter))?),
    };
    render::audit(&records, opts.json)?;
    Ok(0)
}

/// `macha logs stats [--since 30d]`.
pub fn stats(since_arg: Option<&str>, opts: &ClientOpts) -> CmdResult {
    let since = since(since_arg, Some("30d"))?.unwrap_or(Timestamp::from_millis(0));
    let stats: LogStatsView = match read_source(opts)? {
        Source::Daemon(mut c) => c.call(LogStats { since })?,
        Source::Local(store) => wire::log_stats(&store.log_stats(since)?),
    };
    if opts.json {
        render::print_json(&stats)?;
        return Ok(0);
    }
    print_stats(&term::scrub(stats)?);
    Ok(0)
}

fn millis(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |m| humantime::format_duration(std::time::Duration::from_secs((m.max(0) / 1000) as u64)).to_string(),
    )
}

fn print_stats(s: &LogStatsView) {
    println!("since {}", s.since);
    println!("\nactions by kind and outcome:");
    if s.actions.is_empty() {
        println!("  none");
    }
    for a in &s.actions {
        println!("  {:<24} {:<10} {:>6}", a.kind, a.outcome, a.count);
    }
    println!("\nissues by check and host:");
    if s.issues.is_empty() {
        println!("  none");
    }
    for i in &s.issues {
        println!("  {:<20} {:<24} {:>6}", i.check_name, i.host, i.count);
    }
    println!(
        "\ntime to resolve: {} resolved, median {}, p90 {}",
        s.resolved,
        millis(s.resolve_median_ms),
        millis(s.resolve_p90_ms)
    );
    println!("\nmost flapping:");
    if s.flapping.is_empty() {
        println!("  none");
    }
    for f in &s.flapping {
        println!("  {:<24} {:<32} came back {} times", f.host, f.subject, f.recurrences);
    }
    println!(
        "\nmodel: {} requests, {} failed, {} prompt tokens, {} completion tokens",
        s.model_requests, s.model_failed, s.prompt_tokens, s.completion_tokens
    );
}

/// `macha logs commands [--host H] [--since 7d]`: every command and unit job Macha ran.
pub fn commands(host: Option<String>, since_arg: Option<&str>, limit: Option<u32>, opts: &ClientOpts) -> CmdResult {
    let query = CommandRuns { host, since: since(since_arg, None)?, limit: Some(limit.unwrap_or(DEFAULT_LIMIT)) };
    let runs: Vec<CommandRunView> = match read_source(opts)? {
        Source::Daemon(mut c) => c.call(query)?,
        Source::Local(store) => wire::command_runs(&store.command_runs(
            query.host.as_deref(),
            query.since,
            query.limit.unwrap_or(DEFAULT_LIMIT),
        )?),
    };
    if opts.json {
        render::print_json(&runs)?;
        return Ok(0);
    }
    for r in term::scrub(runs)? {
        let status = r.exit_status.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let took = r.duration_ms.map_or_else(|| "running".to_owned(), |d| format!("{:.1} s", d as f64 / 1000.0));
        println!(
            "{}  {:<10} {:<9} exit {:<4} {:>9}  {} {}",
            r.started, r.host, r.state, status, took, r.kind, r.target
        );
        if let Some(d) = &r.detail {
            println!("    {d}");
        }
        if let Some(out) = r.output.as_deref().filter(|o| !o.trim().is_empty()) {
            for line in out.lines().take(20) {
                println!("    | {line}");
            }
        }
    }
    Ok(0)
}
