//! Searching the configuration index and the knowledge base: keyword search (FTS5, BM25) always,
//! and, with an embedding model, vector search fused with it by reciprocal rank
//! ([`crate::query::fuse_rrf`], k = 60): [`Retrieval::Hybrid`].
//!
//! Without a [`VectorSearch`] the results say [`Retrieval::KeywordOnly`]; they are still complete
//! keyword results, never an error. With one, a chunk found only by its meaning (no shared word)
//! joins the results too, restricted by host and category like the keyword hits.

use crate::layout::Category;
use crate::query::{RRF_K, fuse_rrf, to_fts5};
use crate::{KnowledgeError, Result};
use macha_store::{ConfigHit, ConfigSearch, Store};

/// The most hits one search returns.
pub const LIMIT_MAX: u32 = 200;

/// How the results were found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum Retrieval {
    /// FTS5 BM25 only: no embedding model is configured.
    KeywordOnly,
    /// Keyword and vector results fused by reciprocal rank.
    Hybrid { model: String },
}

/// Nearest items (chunks or entries) to a query by embedding. An implementation owns its model
/// id and dimension and returns item ids, best first ([`crate::embed::StoreVectors`]).
pub trait VectorSearch {
    /// The embedding model's id, named in the results.
    fn model(&self) -> &str;
    /// The ids of the chunks nearest to `query`, best first, at most `limit`.
    fn nearest(&self, query: &str, limit: u32) -> Result<Vec<i64>>;
}

/// A search as a person or the model asks it.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: String,
    pub host: Option<String>,
    pub category: Option<Category>,
    pub limit: u32,
}

/// Ranked hits, best first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SearchResults {
    #[serde(flatten)]
    pub retrieval: Retrieval,
    /// The FTS5 expression the query became (absent when it had nothing to search for).
    pub fts_query: Option<String>,
    pub hits: Vec<Hit>,
}

/// One hit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub chunk_id: i64,
    pub file: String,
    pub line_start: u32,
    pub line_end: u32,
    pub attr_path: String,
    pub category: String,
    pub snippet: String,
    pub score: f64,
}

impl From<ConfigHit> for Hit {
    fn from(h: ConfigHit) -> Hit {
        Hit {
            chunk_id: h.chunk_id,
            file: h.file,
            line_start: h.line_start,
            line_end: h.line_end,
            attr_path: h.attr_path,
            category: h.category,
            snippet: h.snippet,
            score: h.score,
        }
    }
}

/// Searches the index. `vectors` is `None` until an embedder is configured.
pub fn search(store: &Store, req: &SearchRequest, vectors: Option<&dyn VectorSearch>) -> Result<SearchResults> {
    let limit = req.limit.clamp(1, LIMIT_MAX);
    let fts = to_fts5(&req.query);
    if fts.is_none() && (vectors.is_none() || req.query.trim().is_empty()) {
        return Ok(SearchResults { retrieval: retrieval(vectors), fts_query: None, hits: Vec::new() });
    }
    let keyword_limit = if vectors.is_some() { limit.saturating_mul(3).min(LIMIT_MAX) } else { limit };
    let host = req.host.as_deref();
    let category = req.category.map(Category::as_str);
    let keyword: Vec<Hit> = match &fts {
        None => Vec::new(),
        Some(fts) => store
            .search_config_chunks(&ConfigSearch { fts_match: fts, host, category, limit: keyword_limit })
            .map_err(|e| KnowledgeError::Invalid(format!("search failed for {fts}: {e}")))?
            .into_iter()
            .map(Hit::from)
            .collect(),
    };
    let hits = match vectors {
        None => keyword,
        Some(v) => {
            // Filtering by host or category happens after the vector search, so it looks further.
            let wanted = if host.is_some() || category.is_some() { LIMIT_MAX * 2 } else { keyword_limit };
            let near_ids = v.nearest(&req.query, wanted)?;
            let near: Vec<Hit> =
                store.config_chunks_by_ids(&near_ids, host, category)?.into_iter().map(Hit::from).collect();
            let lists = [
                keyword.iter().map(|h| h.chunk_id).collect::<Vec<_>>(),
                near.iter().take(usize::try_from(keyword_limit).unwrap_or(usize::MAX)).map(|h| h.chunk_id).collect(),
            ];
            let mut out = Vec::new();
            for (id, score) in fuse_rrf(&lists, RRF_K) {
                if let Some(h) = keyword.iter().chain(&near).find(|h| h.chunk_id == id) {
                    out.push(Hit { score, ..h.clone() });
                }
            }
            out
        }
    };
    Ok(SearchResults {
        retrieval: retrieval(vectors),
        fts_query: fts,
        hits: hits.into_iter().take(usize::try_from(limit).unwrap_or(usize::MAX)).collect(),
    })
}

/// Knowledge entries for a query, best first: keyword hits ranked by BM25 and confidence
/// ([`crate::kb::rank_hits`]), fused with the nearest entries by embedding when `vectors` is
/// given. The score of a fused hit is its reciprocal-rank score.
pub fn search_entries(
    store: &Store,
    query: &str,
    limit: u32,
    vectors: Option<&dyn VectorSearch>,
    now: macha_core::Timestamp,
) -> Result<(Retrieval, Vec<macha_store::KbHit>)> {
    let limit = limit.clamp(1, LIMIT_MAX);
    let Some(v) = vectors else {
        let hits = crate::kb::rank_hits(store.kb_search(query, limit)?, now);
        return Ok((Retrieval::KeywordOnly, hits));
    };
    let wide = limit.saturating_mul(3).min(LIMIT_MAX);
    let keyword = crate::kb::rank_hits(store.kb_search(query, wide)?, now);
    let near = if query.trim().is_empty() { Vec::new() } else { v.nearest(query, wide)? };
    let lists = [keyword.iter().map(|h| h.entry.id).collect::<Vec<_>>(), near];
    let mut out = Vec::new();
    for (id, score) in fuse_rrf(&lists, RRF_K) {
        if out.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            break;
        }
        if let Some(h) = keyword.iter().find(|h| h.entry.id == id) {
            out.push(macha_store::KbHit { bm25: score, ..h.clone() });
        } else if let Some(entry) = store.kb_get(id)? {
            out.push(macha_store::KbHit { entry, bm25: score });
        }
    }
    Ok((retrieval(Some(v)), out))
}

impl Retrieval {
    /// How a person reads it: `hybrid (MODEL)` or `keyword-only (no embedder)`.
    pub fn describe(&self) -> String {
        match self {
            Retrieval::KeywordOnly => "keyword-only (no embedder)".to_owned(),
            Retrieval::Hybrid { model } => format!("hybrid ({model})"),
        }
    }
}

fn retrieval(vectors: Option<&dyn VectorSearch>) -> Retrieval {
    match vectors {
        None => Retrieval::KeywordOnly,
        Some(v) => Retrieval::Hybrid { model: v.model().to_owned() },
    }
}
