//! `macha logs verify`, `export` and `prune`: the audit trail's hash chain, its export to a
//! compressed file, and the sanctioned deletion of exported records.
//!
//! `verify` and `export` open the database read-only (`--db`, else the daemon's database, else the
//! standalone store). `prune` writes: through the daemon when it runs; with `--db` it opens the
//! file itself, after checking that no daemon holds it.

use super::commands::load_config;
use super::{ClientOpts, CmdResult, EXIT_DATAERR, EXIT_USAGE, fail};
use crate::api::{Client, ClientError, ops};
use crate::config::Scope;
use anyhow::Context;
use macha_store::{ChainReport, ExportReport, Store};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code of `verify` when the chain is broken.
const EXIT_BROKEN: u8 = 1;

/// The database the daemon reports it uses, if a daemon answers on the socket.
fn daemon_database(opts: &ClientOpts) -> anyhow::Result<Option<PathBuf>> {
    let config = load_config(opts.config.as_deref(), Scope::User)?;
    let socket = opts.socket.clone().unwrap_or_else(|| config.socket.clone());
    match Client::connect(&socket, Duration::from_secs(10)) {
        Ok(mut c) => {
            let status = c.call(ops::Status)?;
            Ok(Some(PathBuf::from(status.database)))
        }
        Err(ClientError::Connect { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The database to read: `--db`, else the running daemon's, else the standalone store.
fn read_path(opts: &ClientOpts) -> anyhow::Result<PathBuf> {
    if let Some(db) = &opts.db {
        return Ok(db.clone());
    }
    if let Some(db) = daemon_database(opts)? {
        return Ok(db);
    }
    Ok(load_config(opts.config.as_deref(), Scope::User)?.database)
}

fn open_read_only(path: &Path) -> anyhow::Result<Store> {
    Store::open_read_only(path).with_context(|| format!("opening {} read-only", path.display()))
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// `macha logs verify [--export FILE]`.
pub fn verify(export: Option<&Path>, opts: &ClientOpts) -> CmdResult {
    let path = read_path(opts)?;
    let store = open_read_only(&path)?;
    if let Some(file) = export {
        let reader = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let report = macha_store::verify_export(reader, Some(&store))
            .map_err(|e| fail(EXIT_DATAERR, anyhow::format_err!("{}: {e}", file.display())))?;
        print_export_report(file, &path, &report, opts.json)?;
        return Ok(if report.is_ok() { 0 } else { EXIT_BROKEN });
    }
    let report = store.verify_audit()?;
    print_chain_report(&path, &report, opts.json)?;
    Ok(if report.is_ok() { 0 } else { EXIT_BROKEN })
}

/// A report as `--json` prints it: the store's report, with where it came from.
#[derive(serde::Serialize)]
struct Located<'a, R: serde::Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a Path>,
    database: &'a Path,
    #[serde(flatten)]
    report: &'a R,
}

fn print_chain_report(path: &Path, r: &ChainReport, json: bool) -> anyhow::Result<()> {
    if json {
        let out = Located { ok: Some(r.is_ok()), file: None, database: path, report: r };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let range = match (r.first_id, r.last_id) {
        (Some(a), Some(b)) => format!("ids {a} to {b}"),
        _ => "no records".to_owned(),
    };
    let from = match &r.anchor {
        Some(a) => format!(", after the prune of ids up to {} by {} at {}", a.upto_id, a.by, a.ts),
        None => String::new(),
    };
    if r.is_ok() {
        println!("OK: {} audit records, {range}{from}", r.records);
        if let Some(h) = &r.last_hash {
            println!("last hash: {h}");
        }
    } else {
        println!(
            "BROKEN: {} problems in {} audit records ({range}{from}) of {}",
            r.problems.len(),
            r.records,
            path.display()
        );
        for p in &r.problems {
            println!("  {p}");
        }
    }
    if r.awaiting_deletion > 0 {
        println!("{} pruned records are still waiting to be deleted (the daemon finishes that)", r.awaiting_deletion);
    }
    Ok(())
}

fn print_export_report(file: &Path, db: &Path, r: &ExportReport, json: bool) -> anyhow::Result<()> {
    if json {
        let out = Located { ok: Some(r.is_ok()), file: Some(file), database: db, report: r };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let range = match (r.header.first_id, r.header.last_id) {
        (Some(a), Some(b)) => format!("ids {a} to {b}"),
        _ => "no records".to_owned(),
    };
    if r.is_ok() {
        println!(
            "OK: {} holds {} records ({range}); {} identical in {}, {} pruned there",
            file.display(),
            r.records,
            r.matched_in_database,
            db.display(),
            r.pruned_in_database
        );
    } else {
        println!("BROKEN: {} problems in {}", r.problems.len(), file.display());
        for p in &r.problems {
            println!("  {p}");
        }
    }
    Ok(())
}

/// `macha logs export --out FILE [--upto ID]`.
pub fn export(out: &Path, upto: Option<i64>, opts: &ClientOpts) -> CmdResult {
    let path = read_path(opts)?;
    let store = open_read_only(&path)?;
    // Never overwrite an earlier export.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let started = std::time::Instant::now();
    let result = store.export_audit_with_progress(upto, file, |done, total| {
        if total >= 10_000 {
            eprintln!("macha: exported {done} of {total} records ({:.0?})", started.elapsed());
        }
    });
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(out);
            let code =
                if matches!(e, macha_store::StoreError::NotFound { .. }) { EXIT_USAGE } else { super::EXIT_SOFTWARE };
            return Err(fail(code, anyhow::Error::new(e).context(format!("exporting from {}", path.display()))));
        }
    };
    if opts.json {
        let located = Located { ok: None, file: Some(out), database: &path, report: &summary };
        println!("{}", serde_json::to_string_pretty(&located)?);
        return Ok(0);
    }
    match (summary.first_id, summary.last_id, &summary.last_hash) {
        (Some(first), Some(last), Some(hash)) => {
            println!("exported {} audit records (ids {first} to {last}) to {}", summary.count, out.display());
            println!("last id:   {last}");
            println!("last hash: {hash}");
            println!("after keeping the file safe: macha logs prune --upto {last} --hash {hash}");
        }
        _ => println!("no audit records to export; wrote an empty export to {}", out.display()),
    }
    Ok(0)
}

/// `macha logs prune --upto ID --hash HEX`.
pub fn prune(upto: i64, hash: &str, opts: &ClientOpts) -> CmdResult {
    let summary: macha_api::reply::PruneResult = match &opts.db {
        None => {
            let config = load_config(opts.config.as_deref(), Scope::User)?;
            let socket = opts.socket.clone().unwrap_or_else(|| config.socket.clone());
            let mut client = Client::connect(&socket, Duration::from_secs(300))?;
            client.call(ops::PruneAudit { upto_id: upto, hash: hash.to_owned() })?
        }
        Some(db) => {
            // One writer: a database a running daemon holds is changed through the daemon.
            if let Some(held) = daemon_database(opts).ok().flatten()
                && same_file(&held, db)
            {
                return Err(fail(
                    EXIT_USAGE,
                    anyhow::format_err!(
                        "the running daemon holds {}; prune without --db, through the daemon",
                        db.display()
                    ),
                ));
            }
            if !db.exists() {
                return Err(fail(EXIT_USAGE, anyhow::format_err!("{} does not exist", db.display())));
            }
            let mut store = Store::open(db).with_context(|| format!("opening {}", db.display()))?;
            let peer = crate::daemon::server::Peer {
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                pid: Some(std::process::id().cast_signed()),
            };
            let by = crate::daemon::server::peer_name(peer);
            let summary = store.prune_audit(upto, hash, &by, crate::now()).map_err(|e| {
                let code = match e {
                    macha_store::StoreError::Invalid { .. } | macha_store::StoreError::NotFound { .. } => EXIT_DATAERR,
                    _ => super::EXIT_SOFTWARE,
                };
                fail(code, e.into())
            })?;
            crate::wire::prune_result(&summary)
        }
    };
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "pruned audit records up to {} ({} records, hash {}…); recorded as audit record {}",
            summary.upto_id,
            summary.records,
            short(&summary.hash),
            summary.audit_id
        );
    }
    Ok(0)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
