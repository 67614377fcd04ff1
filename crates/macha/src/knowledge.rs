//! The knowledge base at the daemon's edge: socket operations (`knowledge_read` for viewers,
//! `knowledge_write` for admins) answered from the store with the rules of `macha-knowledge`,
//! learnings from the model routed into it, the similar past issues of `macha issues show`, and
//! the runbook catalog for readers of the socket (the web console).

use crate::api::knowledge::{
    KnowledgeAnswer, KnowledgeChange, KnowledgeDraft, KnowledgeEntry, KnowledgeQuery, RunbookView, SimilarIssueView,
};
use macha_core::Timestamp;
use macha_knowledge::kb::{self, Category, Draft, Provenance};
use macha_knowledge::memory;
use macha_store::{KbEntry, Store};
use std::path::Path;

/// At most this many entries per answer.
pub const LIST_MAX: u32 = 1_000;

/// How many similar past issues `macha issues show` lists.
pub const SIMILAR_SHOWN: usize = 5;

/// A refused request (bad input, or no such entry); the daemon answers it as a bad request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A stored entry as clients see it.
pub fn view(e: &KbEntry, score: Option<f64>) -> KnowledgeEntry {
    KnowledgeEntry {
        id: e.id,
        topic: e.fields.topic.clone(),
        content: e.fields.content.clone(),
        category: e.fields.category.clone(),
        use_when: e.fields.use_when.clone(),
        confidence: e.fields.confidence,
        provenance: e.fields.provenance.clone(),
        added_by: e.fields.added_by.clone(),
        issue_id: e.fields.issue_id,
        created_at: e.created_at,
        updated_at: e.updated_at,
        used: e.used,
        helped: e.helped,
        failed: e.failed,
        score,
    }
}

/// The export record of an entry as clients see it.
pub fn record(e: &KnowledgeEntry) -> kb::Record {
    kb::Record {
        id: Some(e.id),
        topic: e.topic.clone(),
        content: e.content.clone(),
        category: Category::parse(&e.category).unwrap_or(Category::General),
        use_when: e.use_when.clone(),
        confidence: e.confidence,
        provenance: Provenance::from_columns(&e.provenance, e.added_by.as_deref(), e.issue_id),
        created_at: Some(e.created_at),
        updated_at: Some(e.updated_at),
        used: e.used,
        helped: e.helped,
        failed: e.failed,
    }
}

fn draft(d: &KnowledgeDraft) -> anyhow::Result<Draft> {
    let category = Category::parse(&d.category).ok_or_else(|| {
        Refused(format!("unknown category {:?} (command, pattern, troubleshooting, performance, general)", d.category))
    })?;
    Ok(Draft {
        topic: d.topic.clone(),
        content: d.content.clone(),
        category,
        use_when: d.use_when.clone(),
        confidence: d.confidence.unwrap_or(0.7),
    }
    .validated()
    .map_err(|e| Refused(e.to_string()))?)
}

/// Answers a read (viewers; also `--db` and the standalone store); searches by keyword only.
pub fn read(store: &Store, query: &KnowledgeQuery, now: Timestamp, runbooks: &Path) -> anyhow::Result<KnowledgeAnswer> {
    match query {
        KnowledgeQuery::Runbooks => Ok(runbook_catalog(Some(runbooks))),
        _ => read_with(store, query, now, None),
    }
}

/// The runbook catalog: the built-in runbooks and those of `dir` (`knowledge.runbooks`), read
/// from their files as `macha knowledge runbooks` reads them.
pub fn runbook_catalog(dir: Option<&Path>) -> KnowledgeAnswer {
    let catalog = macha_knowledge::runbooks::Catalog::load(dir);
    let runbooks = catalog
        .entries()
        .into_iter()
        .map(|e| RunbookView {
            origin: match e.origin {
                macha_knowledge::runbooks::Origin::Builtin => "built-in",
                macha_knowledge::runbooks::Origin::Directory => "local",
            }
            .to_owned(),
            id: e.id,
            title: e.title,
            use_when: e.use_when,
            updated: e.updated,
        })
        .collect();
    let skipped = catalog.problems.iter().map(|(name, why)| format!("{name}: {why}")).collect();
    KnowledgeAnswer::Runbooks { runbooks, skipped }
}

/// Answers a read; a search is hybrid with `embedder` (over the entries' stored vectors of its
/// model: `macha configs index` computes them).
pub fn read_with(
    store: &Store,
    query: &KnowledgeQuery,
    now: Timestamp,
    embedder: Option<&dyn macha_knowledge::embed::Embedder>,
) -> anyhow::Result<KnowledgeAnswer> {
    let vectors = embedder.map(|e| macha_knowledge::embed::StoreVectors::new(store, e, macha_store::EmbedKind::Entry));
    read_search(store, query, now, vectors.as_ref().map(|v| v as &dyn macha_knowledge::search::VectorSearch), None)
}

/// Answers a read in the daemon: a search is hybrid when its query came embedded by the daemon's
/// model and the entries have vectors of that model; otherwise keyword-only, saying why.
pub fn read_daemon(
    store: &Store,
    query: &KnowledgeQuery,
    now: Timestamp,
    vector: &crate::hybrid::QueryVector,
) -> anyhow::Result<KnowledgeAnswer> {
    let vectors = crate::hybrid::vectors(store, macha_store::EmbedKind::Entry, vector);
    let how = crate::hybrid::describe(&vectors);
    let v = vectors.as_ref().ok().map(|v| v as &dyn macha_knowledge::search::VectorSearch);
    read_search(store, query, now, v, Some(how))
}

/// `how`: the retrieval a search reports, when the caller knows better than the search itself
/// (why it is keyword-only).
fn read_search(
    store: &Store,
    query: &KnowledgeQuery,
    now: Timestamp,
    vectors: Option<&dyn macha_knowledge::search::VectorSearch>,
    how: Option<String>,
) -> anyhow::Result<KnowledgeAnswer> {
    let mut retrieval = None;
    let entries = match query {
        KnowledgeQuery::List { category, provenance, limit } => store
            .kb_list(category.as_deref(), provenance.as_deref(), limit.unwrap_or(LIST_MAX).min(LIST_MAX))?
            .iter()
            .map(|e| view(e, None))
            .collect(),
        KnowledgeQuery::Search { query, limit } => {
            let limit = limit.unwrap_or(20).min(LIST_MAX);
            let (mode, hits) = macha_knowledge::search::search_entries(store, query, limit, vectors, now)?;
            retrieval = Some(how.unwrap_or_else(|| mode.describe()));
            hits.iter().map(|h| view(&h.entry, Some(h.bm25))).collect()
        }
        // Without the configuration: the built-in runbooks only.
        KnowledgeQuery::Runbooks => return Ok(runbook_catalog(None)),
        KnowledgeQuery::Show { id } => {
            let e = store.kb_get(*id)?.ok_or_else(|| Refused(format!("knowledge entry {id} does not exist")))?;
            vec![view(&e, None)]
        }
    };
    Ok(KnowledgeAnswer::Entries { entries, retrieval })
}

/// Answers a write (admins): every change by a person is audited.
pub fn write(store: &mut Store, change: KnowledgeChange, who: &str, now: Timestamp) -> anyhow::Result<KnowledgeAnswer> {
    let person = Provenance::Person { who: who.to_owned() };
    match change {
        KnowledgeChange::Add { entry } => {
            let d = draft(&entry)?;
            let audit = kb::audit(now, "local", format!("{who} added knowledge: {}", d.topic));
            let id = store.kb_insert(&d.fields(&person, None), now, Some(&audit))?;
            Ok(KnowledgeAnswer::Changed { id, summary: format!("added knowledge entry {id}") })
        }
        KnowledgeChange::Edit { id, topic, content, category, use_when, confidence } => {
            let e = store.kb_get(id)?.ok_or_else(|| Refused(format!("knowledge entry {id} does not exist")))?;
            let d = draft(&KnowledgeDraft {
                topic: topic.unwrap_or(e.fields.topic),
                content: content.unwrap_or(e.fields.content),
                category: category.unwrap_or(e.fields.category),
                use_when: use_when.unwrap_or(e.fields.use_when),
                confidence: Some(confidence.unwrap_or(e.fields.confidence)),
            })?;
            let audit = kb::audit(now, "local", format!("{who} edited knowledge entry {id}: {}", d.topic));
            store.kb_update(id, &d.fields(&person, e.fields.source), now, Some(&audit))?;
            Ok(KnowledgeAnswer::Changed { id, summary: format!("edited knowledge entry {id}") })
        }
        KnowledgeChange::Forget { id } => {
            let audit = kb::audit(now, "local", format!("{who} forgot knowledge entry {id}"));
            if !store.kb_forget(id, Some(&audit))? {
                return Err(Refused(format!("knowledge entry {id} does not exist")).into());
            }
            Ok(KnowledgeAnswer::Changed { id, summary: format!("forgot knowledge entry {id}") })
        }
        KnowledgeChange::Seed => {
            let r = kb::seed(store, now).map_err(anyhow::Error::msg)?;
            store.append_audit(&kb::audit(
                now,
                "local",
                format!("{who} loaded the knowledge seed: {} added, {} updated", r.added, r.updated),
            ))?;
            Ok(KnowledgeAnswer::Seeded { added: r.added, updated: r.updated, unchanged: r.unchanged })
        }
        KnowledgeChange::Import { entries } => {
            let (mut added, mut skipped, mut refused) = (0, 0, Vec::new());
            for (i, entry) in entries.iter().enumerate() {
                let d = match draft(entry) {
                    Ok(d) => d,
                    Err(e) => {
                        refused.push(format!("entry {}: {e}", i + 1));
                        continue;
                    }
                };
                if store.kb_by_topic(&d.topic)?.iter().any(|e| e.fields.content == d.content) {
                    skipped += 1;
                    continue;
                }
                store.kb_insert(&d.fields(&person, Some("import".into())), now, None)?;
                added += 1;
            }
            store.append_audit(&kb::audit(now, "local", format!("{who} imported {added} knowledge entries")))?;
            Ok(KnowledgeAnswer::Imported { added, skipped, refused })
        }
    }
}

/// The similar past issues of issue `id`, for `macha issues show` (empty on any failure: this
/// section never hides the issue itself).
pub fn similar(store: &Store, id: i64, now: Timestamp) -> Vec<SimilarIssueView> {
    match memory::similar_issues(store, id, now, SIMILAR_SHOWN) {
        Ok(found) => found
            .into_iter()
            .map(|s| SimilarIssueView {
                id: s.id,
                host: s.host,
                check: s.check,
                subject: s.subject,
                summary: s.summary,
                state: s.state,
                last_seen: s.last_seen,
                why: s.why,
                verified: s.verified,
                resolutions: s.resolutions,
            })
            .collect(),
        Err(e) => {
            tracing::warn!("similar issues of {id}: {e}");
            Vec::new()
        }
    }
}

/// Keeps the model's learnings about issue `issue_id`, whose remediation was verified (the only
/// kind the daemon asks about): merged with what is known, or dropped with a log line.
pub fn learn(store: &mut Store, learnings: Vec<Draft>, issue_id: Option<i64>, source: &str, now: Timestamp) -> usize {
    let mut kept = 0;
    for l in learnings {
        match kb::learn(store, l, issue_id, issue_id.is_some(), Some(source.to_owned()), now) {
            Ok(kb::Learned::Added { .. } | kb::Learned::Merged { .. }) => kept += 1,
            Ok(kb::Learned::Dropped { .. }) => {}
            Err(e) => tracing::warn!("learning not stored: {e}"),
        }
    }
    kept
}
