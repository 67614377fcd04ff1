//! `macha configs`: search the fleet's flake (`macha configs QUERY`), read one of its files
//! (`macha configs read PATH`), and index it (`macha configs index`) — docs/knowledge.md.
//!
//! `macha configs index` writes the standalone store of the user who runs the command (the
//! database of `macha check --standalone`, or `--db`) as that store's only writer; a database the
//! running daemon holds is refused for writing (decision 0015). Searches read, read-only, `--db`,
//! else the running daemon's database when the user may read it and the daemon has indexed the
//! flake (its idle-time job, decision 0019), else the standalone store.

use super::commands::load_config;
use super::{CmdResult, EXIT_DATAERR, EXIT_UNAVAILABLE, EXIT_USAGE, fail, term};
use crate::api::{Client, ClientError, ops};
use crate::config::{Config, Scope};
use anyhow::Context;
use clap::{Args, Subcommand};
use macha_knowledge::KnowledgeError;
use macha_knowledge::embed::{StoreVectors, embed_pending};
use macha_knowledge::index::{Progress, index_flake};
use macha_knowledge::layout::Category;
use macha_knowledge::read::{parse_lines, read_config};
use macha_knowledge::search::{SearchRequest, VectorSearch, search};
use macha_store::EmbedKind;
use macha_store::Store;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the flake and the index are.
#[derive(Debug, Clone, Args)]
pub struct KnowledgeOpts {
    /// Configuration file (its `knowledge.flake` and `paths.database`).
    #[arg(long, env = "MACHA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The flake to index or read (default: `knowledge.flake`, /etc/nixos).
    #[arg(long, global = true)]
    pub flake: Option<PathBuf>,
    /// The database holding the index (default: the running daemon's when you may read it and it
    /// has indexed the flake, else your standalone store).
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// The daemon's socket (default: `paths.socket`).
    #[arg(long, env = "MACHA_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ConfigsArgs {
    #[command(subcommand)]
    pub cmd: Option<ConfigsCmd>,
    #[command(flatten)]
    pub search: SearchArgs,
    #[command(flatten)]
    pub opts: KnowledgeOpts,
}

#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// What to look for: words, option paths (`services.nginx.enable`), unit names, error text;
    /// `"a phrase"`, `prefix*`, and `-word` to exclude (inside one quoted argument,
    /// `'nginx -acme'`, or after `--`).
    #[arg(required = true, num_args = 1..)]
    pub query: Vec<String>,
    /// Only files this host uses (from the flake's nixosConfigurations and imports).
    #[arg(long)]
    pub host: Option<String>,
    /// Only this category: apps, systems, osconfigs, users, other.
    #[arg(long)]
    pub category: Option<String>,
    /// At most this many hits (default 10).
    #[arg(long, short = 'n', default_value_t = 10)]
    pub limit: u32,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigsCmd {
    /// Print a file of the flake (only inside it; secrets refused, secret values masked).
    Read(ReadArgs),
    /// Index the flake now (incremental: unchanged files are skipped).
    Index,
}

#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// The file, relative to the flake (or absolute, inside it).
    pub path: String,
    /// Only these lines: `A:B` (1-based, inclusive), `A:` or `:B`.
    #[arg(long, value_name = "A:B")]
    pub lines: Option<String>,
}

/// `macha-configs-read`: the read on its own.
#[derive(Debug, Clone, Args)]
pub struct ReadApplet {
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub opts: KnowledgeOpts,
}

pub fn run(args: &ConfigsArgs) -> CmdResult {
    match &args.cmd {
        Some(ConfigsCmd::Read(r)) => read(r, &args.opts),
        Some(ConfigsCmd::Index) => index(&args.opts),
        None => find(&args.search, &args.opts),
    }
}

fn config(opts: &KnowledgeOpts) -> anyhow::Result<Config> {
    load_config(opts.config.as_deref(), Scope::User)
}

fn flake(opts: &KnowledgeOpts, config: &Config) -> PathBuf {
    opts.flake.clone().unwrap_or_else(|| config.knowledge_flake.clone())
}

fn database(opts: &KnowledgeOpts, config: &Config) -> PathBuf {
    opts.db.clone().unwrap_or_else(|| config.database.clone())
}

fn knowledge_failure(e: KnowledgeError) -> super::Failure {
    let code = match &e {
        KnowledgeError::Refused(_) | KnowledgeError::Invalid(_) => EXIT_DATAERR,
        KnowledgeError::Io { .. } => EXIT_UNAVAILABLE,
        KnowledgeError::Store(_) => super::EXIT_SOFTWARE,
    };
    fail(code, e.into())
}

/// Where a search reads: `--db`; else the running daemon's database when this user can read it
/// and the daemon has indexed the flake into it (its BATCH job); else the user's standalone store.
fn search_database(opts: &KnowledgeOpts, config: &Config) -> PathBuf {
    if let Some(db) = &opts.db {
        return db.clone();
    }
    if let Some(held) = daemon_database(opts, config)
        && let Ok(store) = Store::open_read_only(&held)
        && store.config_index_summary().is_ok_and(|s| s.files > 0)
    {
        return held;
    }
    config.database.clone()
}

fn find(args: &SearchArgs, opts: &KnowledgeOpts) -> CmdResult {
    let config = config(opts)?;
    let db = search_database(opts, &config);
    if !db.exists() {
        return Err(fail(
            EXIT_UNAVAILABLE,
            anyhow::format_err!("{} does not exist: run `macha configs index` first", db.display()),
        ));
    }
    let category = match &args.category {
        None => None,
        Some(c) => Some(Category::parse(c).ok_or_else(|| {
            fail(EXIT_USAGE, anyhow::format_err!("--category {c:?}: use apps, systems, osconfigs, users or other"))
        })?),
    };
    let store = Store::open_read_only(&db).with_context(|| format!("opening {} read-only", db.display()))?;
    let req = SearchRequest { query: args.query.join(" "), host: args.host.clone(), category, limit: args.limit };
    let embedder = crate::embedder::for_search(&config);
    let vectors = embedder.as_deref().map(|e| StoreVectors::new(&store, e, EmbedKind::Chunk));
    let results = search(&store, &req, vectors.as_ref().map(|v| v as &dyn VectorSearch)).map_err(knowledge_failure)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(0);
    }
    println!("{} search", results.retrieval.describe());
    if results.hits.is_empty() {
        let summary = store.config_index_summary()?;
        if summary.files == 0 {
            println!("the index is empty: run `macha configs index`");
        } else {
            println!("no matches in {} files", summary.files);
        }
        return Ok(1);
    }
    for (i, h) in results.hits.iter().enumerate() {
        let path = if h.attr_path.is_empty() { "(top level)" } else { h.attr_path.as_str() };
        println!(
            "{:>2}. {}:{}-{}  {}  [{}]  score {:.2}",
            i + 1,
            term::clean(&h.file),
            h.line_start,
            h.line_end,
            term::clean(path),
            h.category,
            h.score
        );
        let snippet = h.snippet.split_whitespace().collect::<Vec<_>>().join(" ");
        println!("    {}", term::clean(&snippet));
    }
    Ok(0)
}

/// `macha-configs-read PATH`.
pub fn read_applet(args: &ReadApplet) -> CmdResult {
    read(&args.read, &args.opts)
}

fn read(args: &ReadArgs, opts: &KnowledgeOpts) -> CmdResult {
    let config = config(opts)?;
    let root = flake(opts, &config);
    let lines = match &args.lines {
        None => None,
        Some(spec) => Some(parse_lines(spec).map_err(|e| fail(EXIT_USAGE, e.into()))?),
    };
    let text = read_config(&root, &args.path, lines).map_err(knowledge_failure)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&text)?);
        return Ok(0);
    }
    let width = (u64::from(text.first) + text.lines.len() as u64).to_string().len();
    for (i, line) in text.lines.iter().enumerate() {
        println!("{:>width$}  {}", u64::from(text.first) + i as u64, term::clean(line));
    }
    Ok(0)
}

/// The running daemon's database, if a daemon answers on the configured socket.
fn daemon_database(opts: &KnowledgeOpts, config: &Config) -> Option<PathBuf> {
    let socket = opts.socket.as_deref().unwrap_or(&config.socket);
    match Client::connect(socket, Duration::from_secs(5)) {
        Ok(mut c) => c.call(ops::Status).ok().map(|s| PathBuf::from(s.database)),
        Err(ClientError::Connect { .. }) | Err(_) => None,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn index(opts: &KnowledgeOpts) -> CmdResult {
    let config = config(opts)?;
    let root = flake(opts, &config);
    let db = database(opts, &config);
    // One writer: never write a database the running daemon holds.
    if let Some(held) = daemon_database(opts, &config)
        && same_file(&held, &db)
    {
        return Err(fail(
            EXIT_USAGE,
            anyhow::format_err!("the running daemon holds {}; index into another database with --db", db.display()),
        ));
    }
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut store = Store::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let interactive = !opts.json;
    let mut progress = |p: Progress| {
        if !interactive {
            return;
        }
        match p {
            Progress::Reading { done, total } => eprint!("\rreading {done}/{total} files"),
            Progress::Writing { files } => eprintln!("\rwriting {files} changed files"),
        }
    };
    let report = index_flake(&mut store, &root, crate::now().millis(), &mut progress).map_err(knowledge_failure)?;
    // Then the embeddings of new and changed chunks and knowledge entries, if a model is configured.
    let embedded = match crate::embedder::from_config(&config).context("the embedding model (knowledge.embedder)")? {
        None => None,
        Some(e) => {
            let mut progress = |done: usize, total: usize| {
                if interactive && total > 0 {
                    eprint!("\rembedding {done}/{total} with {}", e.model_id());
                    if done == total {
                        eprintln!();
                    }
                }
            };
            Some(embed_pending(&mut store, e.as_ref(), &mut progress).map_err(knowledge_failure)?)
        }
    };
    if opts.json {
        /// The index run's report with what was embedded after it.
        #[derive(serde::Serialize)]
        struct IndexOutput<'a, R: serde::Serialize, E: serde::Serialize> {
            #[serde(flatten)]
            report: &'a R,
            embeddings: &'a E,
        }
        println!("{}", serde_json::to_string_pretty(&IndexOutput { report: &report, embeddings: &embedded })?);
        return Ok(0);
    }
    println!(
        "indexed {}: {} files ({} new or changed, {} unchanged, {} removed), {} chunks written, {} hosts, in {} ms",
        root.display(),
        report.files,
        report.indexed,
        report.unchanged,
        report.removed,
        report.chunks_written,
        report.hosts.len(),
        report.elapsed_ms
    );
    if let Some(head) = &report.git_head {
        println!("git HEAD {head}");
    }
    for (path, why) in &report.skipped {
        println!("skipped {}: {why}", term::clean(path));
    }
    for (path, why) in &report.errors {
        println!("error {}: {}", term::clean(path), term::clean(why));
    }
    match &embedded {
        None => println!("no embedding model configured: search is keyword-only"),
        Some(r) => println!(
            "embeddings ({}, {} dimensions): {} chunks and {} entries embedded, {} unchanged, {} dropped, in {} ms",
            r.model, r.dimension, r.chunks_embedded, r.entries_embedded, r.unchanged, r.dropped, r.elapsed_ms
        ),
    }
    println!("into {}", db.display());
    Ok(0)
}
