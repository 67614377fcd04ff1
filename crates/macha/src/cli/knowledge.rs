//! `macha knowledge` (also `macha-knowledge`): the knowledge base and the runbooks.
//!
//! Reads go to the daemon (viewers) or, with `--db` or no daemon, to a database read-only; every
//! change goes through the daemon and needs an admin (docs/decisions/0016). Runbooks are files,
//! read here directly: the built-in ones and those of `knowledge.runbooks`.

use super::commands::{Source, load_config, read_source, write_client};
use super::{CmdResult, EXIT_DATAERR, EXIT_USAGE, fail, render, term};
use crate::api::knowledge::{
    KnowledgeAnswer, KnowledgeChange, KnowledgeDraft, KnowledgeEntry, KnowledgeQuery, KnowledgeRead, KnowledgeWrite,
};
use crate::config::Scope;
use clap::{Args, Subcommand};
use macha_knowledge::kb;
use macha_knowledge::runbooks::{Catalog, Origin};
use std::io::Read;
use std::path::PathBuf;

use super::ClientOpts;

/// The largest import batch sent in one request (the socket reads lines up to 64 KiB).
const IMPORT_BATCH_BYTES: usize = 40 * 1024;

#[derive(Debug, Subcommand)]
pub enum KnowledgeCmd {
    /// Entries, most confident first.
    List {
        #[command(flatten)]
        client: ClientOpts,
        /// Only this category (command, pattern, troubleshooting, performance, general).
        #[arg(long)]
        category: Option<String>,
        /// Only this provenance (seeded, person, learned).
        #[arg(long)]
        provenance: Option<String>,
        #[arg(long, short = 'n')]
        limit: Option<u32>,
    },
    /// Keyword search (BM25 over topic, content and "use when"; any text is a valid query).
    Search {
        #[command(flatten)]
        client: ClientOpts,
        #[arg(long, short = 'n')]
        limit: Option<u32>,
        /// The words to search for (several words are joined).
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        query: Vec<String>,
    },
    /// One entry in full.
    Show {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Adds an entry (admin). The content comes from --content, --content-file, or standard input.
    Add {
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        fields: Fields,
    },
    /// Changes the given fields of an entry (admin); it becomes yours.
    Edit {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
        #[command(flatten)]
        fields: Fields,
    },
    /// Deletes an entry (admin).
    Forget {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Loads the shipped seed set; running it again only updates changed seed texts (admin).
    Seed {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Prints every entry as JSON lines.
    Export {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Adds entries from JSON lines (a file, or `-` for standard input; admin). Every line is
    /// validated; bad lines are reported and the good ones are imported.
    Import {
        file: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The runbooks: the built-in ones and those in `knowledge.runbooks`.
    Runbooks {
        #[command(subcommand)]
        cmd: Option<RunbooksCmd>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunbooksCmd {
    /// The catalog: id, "use when", updated.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// One runbook by id.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Fields {
    #[arg(long)]
    pub topic: Option<String>,
    /// command, pattern, troubleshooting, performance or general.
    #[arg(long)]
    pub category: Option<String>,
    /// When the entry applies, in one line.
    #[arg(long)]
    pub use_when: Option<String>,
    /// 0 to 1 (default 0.7 for a new entry).
    #[arg(long)]
    pub confidence: Option<f64>,
    #[arg(long, conflicts_with = "content_file")]
    pub content: Option<String>,
    #[arg(long)]
    pub content_file: Option<PathBuf>,
}

impl Fields {
    fn content(&self, stdin_if_missing: bool) -> anyhow::Result<Option<String>> {
        if let Some(c) = &self.content {
            return Ok(Some(c.clone()));
        }
        if let Some(p) = &self.content_file {
            return Ok(Some(std::fs::read_to_string(p)?));
        }
        if stdin_if_missing {
            let mut s = String::new();
            std::io::stdin().take(kb::CONTENT_MAX as u64 * 4 + 1).read_to_string(&mut s)?;
            return Ok(Some(s));
        }
        Ok(None)
    }
}

fn read(client: &ClientOpts, query: KnowledgeQuery) -> Result<KnowledgeAnswer, super::Failure> {
    match read_source(client)? {
        Source::Daemon(mut c) => Ok(c.call(KnowledgeRead { query })?),
        Source::Local(store) => {
            // A search of a local store is hybrid when an embedder is configured.
            let embedder = match &query {
                KnowledgeQuery::Search { .. } => {
                    super::commands::load_config(client.config.as_deref(), crate::config::Scope::User)
                        .ok()
                        .and_then(|c| crate::embedder::for_search(&c))
                }
                _ => None,
            };
            crate::knowledge::read_with(&store, &query, crate::now(), embedder.as_deref().map(|e| e as _)).map_err(
                |e| {
                    if e.downcast_ref::<crate::knowledge::Refused>().is_some() {
                        fail(EXIT_DATAERR, e)
                    } else {
                        e.into()
                    }
                },
            )
        }
    }
}

fn write(client: &ClientOpts, change: KnowledgeChange) -> Result<KnowledgeAnswer, super::Failure> {
    Ok(write_client(client)?.call(KnowledgeWrite { change })?)
}

fn entries(answer: KnowledgeAnswer) -> Vec<KnowledgeEntry> {
    match answer {
        KnowledgeAnswer::Entries { entries, .. } => entries,
        _ => Vec::new(),
    }
}

pub fn run(cmd: KnowledgeCmd) -> CmdResult {
    match cmd {
        KnowledgeCmd::List { client, category, provenance, limit } => {
            let list = entries(read(&client, KnowledgeQuery::List { category, provenance, limit })?);
            print_list(&list, client.json)
        }
        KnowledgeCmd::Search { client, limit, query } => {
            let answer = read(&client, KnowledgeQuery::Search { query: query.join(" "), limit })?;
            if let KnowledgeAnswer::Entries { retrieval: Some(r), .. } = &answer
                && !client.json
            {
                println!("{r} search");
            }
            print_list(&entries(answer), client.json)
        }
        KnowledgeCmd::Show { id, client } => {
            let list = entries(read(&client, KnowledgeQuery::Show { id })?);
            if client.json {
                render::print_json(&list.first())?;
                return Ok(0);
            }
            for e in term::scrub(list)? {
                let prov = kb::Provenance::from_columns(&e.provenance, e.added_by.as_deref(), e.issue_id);
                println!("knowledge {}: {}", e.id, e.topic);
                println!("  category:   {}", e.category);
                println!("  use when:   {}", e.use_when);
                println!("  confidence: {:.2}", e.confidence);
                println!("  provenance: {}", prov.describe());
                println!("  used {} times: helped {}, failed {}", e.used, e.helped, e.failed);
                println!("  created {}, updated {}", e.created_at, e.updated_at);
                println!();
                println!("{}", e.content);
            }
            Ok(0)
        }
        KnowledgeCmd::Add { client, fields } => {
            let (Some(topic), Some(category)) = (fields.topic.clone(), fields.category.clone()) else {
                return Err(fail(EXIT_USAGE, anyhow::format_err!("add needs --topic and --category")));
            };
            let content = fields.content(true)?.unwrap_or_default();
            let entry = KnowledgeDraft {
                topic,
                content,
                category,
                use_when: fields.use_when.clone().unwrap_or_default(),
                confidence: fields.confidence,
            };
            print_change(&write(&client, KnowledgeChange::Add { entry })?, client.json)
        }
        KnowledgeCmd::Edit { id, client, fields } => {
            let change = KnowledgeChange::Edit {
                id,
                topic: fields.topic.clone(),
                content: fields.content(false)?,
                category: fields.category.clone(),
                use_when: fields.use_when.clone(),
                confidence: fields.confidence,
            };
            print_change(&write(&client, change)?, client.json)
        }
        KnowledgeCmd::Forget { id, client } => {
            print_change(&write(&client, KnowledgeChange::Forget { id })?, client.json)
        }
        KnowledgeCmd::Seed { client } => print_change(&write(&client, KnowledgeChange::Seed)?, client.json),
        KnowledgeCmd::Export { client } => {
            let list = entries(read(&client, KnowledgeQuery::List { category: None, provenance: None, limit: None })?);
            for e in &list {
                println!("{}", serde_json::to_string(&crate::knowledge::record(e))?);
            }
            Ok(0)
        }
        KnowledgeCmd::Import { file, client } => import(&file, &client),
        KnowledgeCmd::Runbooks { cmd, client } => match cmd {
            None => runbook_list(&client),
            Some(RunbooksCmd::List { client }) => runbook_list(&client),
            Some(RunbooksCmd::Show { id, client }) => runbook_show(&id, &client),
        },
    }
}

fn print_list(list: &[KnowledgeEntry], json: bool) -> CmdResult {
    if json {
        render::print_json(&list)?;
        return Ok(0);
    }
    if list.is_empty() {
        println!("no knowledge entries");
        return Ok(0);
    }
    for e in term::scrub(list.to_vec())? {
        println!("{:>5}  {:.2}  {:<15} {:<8} {}", e.id, e.confidence, e.category, e.provenance, e.topic);
        if !e.use_when.is_empty() {
            println!("       use when: {}", e.use_when);
        }
    }
    Ok(0)
}

fn print_change(answer: &KnowledgeAnswer, json: bool) -> CmdResult {
    if json {
        render::print_json(answer)?;
        return Ok(0);
    }
    match answer {
        KnowledgeAnswer::Changed { summary, .. } => println!("{summary}"),
        KnowledgeAnswer::Seeded { added, updated, unchanged } => {
            println!("seed: {added} added, {updated} updated, {unchanged} unchanged")
        }
        KnowledgeAnswer::Imported { added, skipped, refused } => {
            println!("imported {added}, skipped {skipped} already known");
            for r in refused {
                eprintln!("refused: {r}");
            }
        }
        KnowledgeAnswer::Entries { .. } | KnowledgeAnswer::Runbooks { .. } => {}
    }
    Ok(0)
}

fn import(file: &std::path::Path, client: &ClientOpts) -> CmdResult {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file)?
    };
    let (good, bad) = kb::parse_import(&text);
    for b in &bad {
        eprintln!("line {}: {}", b.line, b.error);
    }
    let drafts: Vec<KnowledgeDraft> = good
        .iter()
        .map(|r| KnowledgeDraft {
            topic: r.topic.clone(),
            content: r.content.clone(),
            category: r.category.as_str().to_owned(),
            use_when: r.use_when.clone(),
            confidence: Some(r.confidence),
        })
        .collect();
    // Batches that fit in one request line.
    let (mut added, mut skipped, mut refused) = (0, 0, Vec::new());
    let mut batch: Vec<KnowledgeDraft> = Vec::new();
    let mut size = 0;
    let mut send = |batch: Vec<KnowledgeDraft>| -> Result<(), super::Failure> {
        if let KnowledgeAnswer::Imported { added: a, skipped: s, refused: r } =
            write(client, KnowledgeChange::Import { entries: batch })?
        {
            added += a;
            skipped += s;
            refused.extend(r);
        }
        Ok(())
    };
    for d in drafts {
        let n = serde_json::to_string(&d)?.len();
        if size + n > IMPORT_BATCH_BYTES && !batch.is_empty() {
            send(std::mem::take(&mut batch))?;
            size = 0;
        }
        size += n;
        batch.push(d);
    }
    if !batch.is_empty() {
        send(batch)?;
    }
    let summary = serde_json::json!({
        "added": added,
        "skipped": skipped,
        "refused": refused,
        "bad_lines": bad,
    });
    if client.json {
        render::print_json(&summary)?;
    } else {
        println!("imported {added}, skipped {skipped} already known, {} bad lines", bad.len());
        for r in &refused {
            eprintln!("refused: {r}");
        }
    }
    Ok(if bad.is_empty() && refused.is_empty() { 0 } else { EXIT_DATAERR })
}

fn catalog(client: &ClientOpts) -> anyhow::Result<Catalog> {
    let config = load_config(client.config.as_deref(), Scope::User)?;
    Ok(Catalog::load(Some(&config.knowledge_runbooks)))
}

fn runbook_list(client: &ClientOpts) -> CmdResult {
    let c = catalog(client)?;
    if client.json {
        render::print_json(&serde_json::json!({ "runbooks": c.entries(), "skipped": c.problems }))?;
        return Ok(0);
    }
    for e in term::scrub(c.entries())? {
        let origin = match e.origin {
            Origin::Builtin => "built-in",
            Origin::Directory => "local",
        };
        println!("{:<28} {} ({origin}, updated {})", e.id, e.title, e.updated);
        println!("{:<28} use when: {}", "", e.use_when);
    }
    for (name, why) in &c.problems {
        eprintln!("skipped {}: {}", term::clean(name), term::clean(why));
    }
    Ok(0)
}

fn runbook_show(id: &str, client: &ClientOpts) -> CmdResult {
    let c = catalog(client)?;
    let Some(r) = c.get(id) else {
        return Err(fail(
            EXIT_DATAERR,
            anyhow::format_err!("no runbook {:?} (see `macha knowledge runbooks`)", term::clean(id)),
        ));
    };
    if client.json {
        render::print_json(r)?;
        return Ok(0);
    }
    let r = term::scrub(r.clone())?;
    println!("{} — {}", r.id, r.title);
    println!("use when: {}", r.use_when);
    println!("updated:  {}", r.updated);
    println!();
    println!("{}", r.body);
    Ok(0)
}
