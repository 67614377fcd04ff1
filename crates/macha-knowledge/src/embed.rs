//! Embeddings for hybrid search: the [`Embedder`] interface, incremental embedding of chunks and
//! entries into the store, and brute-force cosine search over the stored vectors.
//!
//! An [`Embedder`] turns texts into vectors; it owns a model id and a dimension, and this module
//! never looks at how it computes them (the local model in [`crate::local`], a remote server in
//! the `macha` crate, a fixed table in tests). [`embed_pending`] embeds only what has no vector of
//! the current model yet or whose text changed (a hash of the text is stored), and first drops
//! every vector of another model or dimension: changing the model re-embeds, it never mixes.
//! [`StoreVectors`] answers [`crate::search::VectorSearch`] by comparing the query's vector with
//! every stored one of the same model (brute force: thousands of vectors take milliseconds);
//! [`Precomputed`] does the same with a query vector computed beforehand, so that whoever holds
//! the model can embed the query away from the thread that reads the store (the daemon embeds in
//! a task and searches on its engine thread). [`embed_pending_within`] can stop at a batch
//! boundary when its caller says so (the daemon's memory budget); what it wrote stays, and the
//! next run goes on from there.

use crate::search::VectorSearch;
use crate::{KnowledgeError, Result};
use macha_store::{EmbedKind, Store};
use sha2::{Digest, Sha256};
use std::time::Instant;

/// Texts are embedded this many at a time, and written after each batch.
pub const BATCH: usize = 16;

/// A failure of the embedding model or server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("embedding failed: {0}")]
pub struct EmbedError(pub String);

/// Something that turns texts into vectors of one model.
pub trait Embedder {
    /// The model's id, stored with every vector and named in results (e.g. `all-MiniLM-L6-v2`).
    fn model_id(&self) -> &str;
    /// How many values each vector has.
    fn dimension(&self) -> usize;
    /// One vector per text, in order; each has [`Embedder::dimension`] values.
    fn embed(&self, texts: &[String]) -> std::result::Result<Vec<Vec<f32>>, EmbedError>;
}

/// What [`embed_pending`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EmbedReport {
    pub model: String,
    pub dimension: usize,
    /// Vectors deleted because another model made them or their item is gone.
    pub dropped: usize,
    pub chunks_embedded: usize,
    pub entries_embedded: usize,
    /// Items whose vector was already current.
    pub unchanged: usize,
    pub elapsed_ms: u64,
    /// Items still without a current vector because the run stopped early.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left: usize,
    /// Why the run stopped before embedding everything (the caller's reason), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The hash stored with a vector: of the model id and the text, so either changing re-embeds.
pub fn text_hash(model: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn dim_u32(e: &dyn Embedder) -> Result<u32> {
    u32::try_from(e.dimension())
        .ok()
        .filter(|d| *d > 0)
        .ok_or_else(|| KnowledgeError::Invalid(format!("embedding dimension {} is not usable", e.dimension())))
}

/// Embeds every configuration chunk and knowledge entry that has no current vector of this
/// model; `progress(done, total)` after each batch.
pub fn embed_pending(
    store: &mut Store,
    embedder: &dyn Embedder,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EmbedReport> {
    embed_pending_within(store, embedder, progress, &mut || None)
}

/// [`embed_pending`] that asks `stop` before each batch after the first: when it answers with a
/// reason, the run ends there (everything written so far stays) and the report says why and how
/// many items are left for the next run.
pub fn embed_pending_within(
    store: &mut Store,
    embedder: &dyn Embedder,
    progress: &mut dyn FnMut(usize, usize),
    stop: &mut dyn FnMut() -> Option<String>,
) -> Result<EmbedReport> {
    let started = Instant::now();
    let model = embedder.model_id().to_owned();
    let dim = dim_u32(embedder)?;
    let mut report = EmbedReport { model: model.clone(), dimension: embedder.dimension(), ..EmbedReport::default() };
    report.dropped = store.drop_other_embeddings(&model, dim)?;
    let mut todo: Vec<(EmbedKind, i64, String, String)> = Vec::new();
    for kind in [EmbedKind::Chunk, EmbedKind::Entry] {
        let stored = store.stored_vectors(kind)?;
        for item in store.embed_items(kind)? {
            let hash = text_hash(&model, &item.text);
            match stored.get(&item.id) {
                Some(s) if s.text_hash == hash && s.model == model && s.dimension == dim => report.unchanged += 1,
                _ => todo.push((kind, item.id, item.text, hash)),
            }
        }
    }
    let total = todo.len();
    let mut done = 0;
    progress(done, total);
    for batch in todo.chunks(BATCH) {
        if done > 0
            && let Some(why) = stop()
        {
            report.left = total - done;
            report.stopped = Some(why);
            break;
        }
        let texts: Vec<String> = batch.iter().map(|(_, _, t, _)| t.clone()).collect();
        let vectors = embedder.embed(&texts).map_err(|e| KnowledgeError::Invalid(e.to_string()))?;
        if vectors.len() != batch.len() || vectors.iter().any(|v| v.len() != embedder.dimension()) {
            return Err(KnowledgeError::Invalid(format!(
                "the embedder returned {} vectors for {} texts, or a vector of the wrong dimension",
                vectors.len(),
                batch.len()
            )));
        }
        for kind in [EmbedKind::Chunk, EmbedKind::Entry] {
            let rows: Vec<(i64, String, Vec<f32>)> = batch
                .iter()
                .zip(&vectors)
                .filter(|((k, ..), _)| *k == kind)
                .map(|((_, id, _, hash), v)| (*id, hash.clone(), v.clone()))
                .collect();
            if rows.is_empty() {
                continue;
            }
            match kind {
                EmbedKind::Chunk => report.chunks_embedded += rows.len(),
                EmbedKind::Entry => report.entries_embedded += rows.len(),
            }
            store.put_embeddings(kind, &model, dim, &rows)?;
        }
        done += batch.len();
        progress(done, total);
    }
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        model = %report.model,
        chunks = report.chunks_embedded,
        entries = report.entries_embedded,
        unchanged = report.unchanged,
        dropped = report.dropped,
        left = report.left,
        ms = report.elapsed_ms,
        "embeddings updated"
    );
    Ok(report)
}

/// Cosine similarity; 0 when either vector is zero or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0_f32, 0.0_f32, 0.0_f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

/// The `limit` ids whose vectors are nearest to `query` by cosine, best first (ties by id).
pub fn nearest(query: &[f32], vectors: &[(i64, Vec<f32>)], limit: usize) -> Vec<(i64, f32)> {
    let mut scored: Vec<(i64, f32)> = vectors.iter().map(|(id, v)| (*id, cosine(query, v))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(limit);
    scored
}

/// Vector search over the store's vectors of one kind, with the query embedded by `embedder`.
pub struct StoreVectors<'a> {
    store: &'a Store,
    embedder: &'a dyn Embedder,
    kind: EmbedKind,
}

impl std::fmt::Debug for StoreVectors<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreVectors").field("model", &self.embedder.model_id()).field("kind", &self.kind).finish()
    }
}

impl<'a> StoreVectors<'a> {
    pub fn new(store: &'a Store, embedder: &'a dyn Embedder, kind: EmbedKind) -> StoreVectors<'a> {
        StoreVectors { store, embedder, kind }
    }
}

impl VectorSearch for StoreVectors<'_> {
    fn model(&self) -> &str {
        self.embedder.model_id()
    }

    fn nearest(&self, query: &str, limit: u32) -> Result<Vec<i64>> {
        let dim = dim_u32(self.embedder)?;
        let stored = self.store.embeddings(self.kind, self.embedder.model_id(), dim)?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let q = self
            .embedder
            .embed(&[query.to_owned()])
            .map_err(|e| KnowledgeError::Invalid(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| KnowledgeError::Invalid("the embedder returned no vector for the query".to_owned()))?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(nearest(&q, &stored, limit).into_iter().map(|(id, _)| id).collect())
    }
}

/// Vector search with the query already embedded, over vectors already loaded from the store
/// (all of one kind and one model): no model and no store are needed to answer it.
#[derive(Debug, Clone)]
pub struct Precomputed {
    model: String,
    query: Vec<f32>,
    stored: Vec<(i64, Vec<f32>)>,
}

impl Precomputed {
    /// `query` is the search text's vector by `model`; `stored` the items' vectors of that model
    /// (`Store::embeddings`).
    pub fn new(model: &str, query: Vec<f32>, stored: Vec<(i64, Vec<f32>)>) -> Precomputed {
        Precomputed { model: model.to_owned(), query, stored }
    }

    /// Whether any item has a vector (without one, a search is keyword-only).
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }
}

impl VectorSearch for Precomputed {
    fn model(&self) -> &str {
        &self.model
    }

    /// The text is ignored: the vector it became was given to [`Precomputed::new`].
    fn nearest(&self, _query: &str, limit: u32) -> Result<Vec<i64>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(nearest(&self.query, &self.stored, limit).into_iter().map(|(id, _)| id).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_nearest() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        let v = vec![(1, vec![0.0, 1.0]), (2, vec![1.0, 0.1]), (3, vec![1.0, 0.0])];
        let n = nearest(&[1.0, 0.0], &v, 2);
        assert_eq!(n.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 2]);
    }

    #[test]
    fn a_precomputed_query_finds_the_nearest_stored_vectors() {
        let p = Precomputed::new("m", vec![1.0, 0.0], vec![(1, vec![0.0, 1.0]), (2, vec![0.9, 0.1])]);
        assert_eq!(p.model(), "m");
        assert!(!p.is_empty());
        assert_eq!(p.nearest("ignored", 1).unwrap(), vec![2]);
        assert!(Precomputed::new("m", vec![1.0], Vec::new()).is_empty());
    }

    #[test]
    fn the_hash_depends_on_model_and_text() {
        assert_eq!(text_hash("m", "a"), text_hash("m", "a"));
        assert_ne!(text_hash("m", "a"), text_hash("n", "a"));
        assert_ne!(text_hash("m", "a"), text_hash("m", "b"));
    }
}
