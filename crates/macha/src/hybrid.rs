//! Hybrid search in the daemon (docs/knowledge.md, "Hybrid search"): the searches the daemon
//! answers — the socket's knowledge search and the model's `search_configs` and
//! `search_knowledge` — fuse keyword hits with the nearest stored vectors when the configured
//! embedding model is loaded (by the BATCH job, `crate::batch`) and its vectors exist; otherwise
//! they are keyword-only and say why.
//!
//! The query is embedded before the search reaches the engine thread ([`QueryVector`], computed
//! in a task: the model may be a remote server), and the search compares that vector with the
//! stored ones of exactly that model and dimension ([`vectors`]): vectors of two models are never
//! compared.

use macha_knowledge::embed::Precomputed;
use macha_knowledge::search::VectorSearch;
use macha_store::{EmbedKind, Store};

/// What a search the daemon answers knows of its query's meaning.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryVector {
    /// The search is keyword-only, and why (`no embedder`, `the embedder failed: …`).
    Unavailable(String),
    /// The query's vector by the configured model.
    Ready { model: String, dimension: u32, vector: Vec<f32> },
}

impl QueryVector {
    /// Keyword-only because `knowledge.embedder` is `none`: worded as the CLI words it.
    pub fn no_embedder() -> QueryVector {
        QueryVector::Unavailable("no embedder".to_owned())
    }
}

/// The vector search over the stored vectors of `kind`, or why the search is keyword-only (no
/// vector of the model yet, or none to compare with).
pub fn vectors(store: &Store, kind: EmbedKind, query: &QueryVector) -> Result<Precomputed, String> {
    match query {
        QueryVector::Unavailable(why) => Err(why.clone()),
        QueryVector::Ready { model, dimension, vector } => {
            let stored = store
                .embeddings(kind, model, *dimension)
                .map_err(|e| format!("the stored vectors could not be read: {e}"))?;
            if stored.is_empty() {
                return Err(format!("no vectors of {model} yet"));
            }
            Ok(Precomputed::new(model, vector.clone(), stored))
        }
    }
}

/// How a search was answered, as the CLI says it: `hybrid (MODEL)` or `keyword-only (WHY)`.
pub fn describe(v: &Result<Precomputed, String>) -> String {
    match v {
        Ok(p) => format!("hybrid ({})", p.model()),
        Err(why) => format!("keyword-only ({why})"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_hybrid_only_with_vectors_of_the_query_s_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("m.db")).unwrap();
        macha_knowledge::kb::seed(&mut store, macha_core::Timestamp(1)).unwrap();
        let id = store.embed_items(EmbedKind::Entry).unwrap()[0].id;
        store.put_embeddings(EmbedKind::Entry, "a", 2, &[(id, "h".to_owned(), vec![1.0, 0.0])]).unwrap();

        let none = vectors(&store, EmbedKind::Entry, &QueryVector::no_embedder());
        assert_eq!(describe(&none), "keyword-only (no embedder)");
        let a = QueryVector::Ready { model: "a".into(), dimension: 2, vector: vec![1.0, 0.0] };
        let found = vectors(&store, EmbedKind::Entry, &a);
        assert_eq!(describe(&found), "hybrid (a)");
        assert_eq!(found.unwrap().nearest("", 5).unwrap(), vec![id]);
        // Another model (or dimension) never sees model a's vectors.
        let b = QueryVector::Ready { model: "b".into(), dimension: 2, vector: vec![1.0, 0.0] };
        assert_eq!(describe(&vectors(&store, EmbedKind::Entry, &b)), "keyword-only (no vectors of b yet)");
        let a3 = QueryVector::Ready { model: "a".into(), dimension: 3, vector: vec![1.0, 0.0, 0.0] };
        assert!(vectors(&store, EmbedKind::Entry, &a3).is_err());
        assert!(vectors(&store, EmbedKind::Chunk, &a).is_err(), "no chunk has a vector");
    }
}
