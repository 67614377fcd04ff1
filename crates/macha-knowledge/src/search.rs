//! Searching the configuration index: keyword search (FTS5, BM25) always, and the seam where
//! vector search will join it, fused by reciprocal rank ([`crate::query::fuse_rrf`], k = 60).
//!
//! Without a [`VectorSearch`] the results say [`Retrieval::KeywordOnly`]; they are still complete
//! keyword results, never an error.

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

/// Nearest chunks to a query by embedding: the seam for vector search. An implementation owns
/// its model id and dimension and returns chunk ids, best first.
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
    let Some(fts) = to_fts5(&req.query) else {
        return Ok(SearchResults { retrieval: retrieval(vectors), fts_query: None, hits: Vec::new() });
    };
    let keyword_limit = if vectors.is_some() { limit.saturating_mul(3).min(LIMIT_MAX) } else { limit };
    let keyword: Vec<Hit> = store
        .search_config_chunks(&ConfigSearch {
            fts_match: &fts,
            host: req.host.as_deref(),
            category: req.category.map(Category::as_str),
            limit: keyword_limit,
        })
        .map_err(|e| KnowledgeError::Invalid(format!("search failed for {fts}: {e}")))?
        .into_iter()
        .map(Hit::from)
        .collect();
    let hits = match vectors {
        None => keyword,
        Some(v) => {
            let near = v.nearest(&req.query, keyword_limit)?;
            let ids: Vec<i64> = keyword.iter().map(|h| h.chunk_id).collect();
            // Until chunks can be loaded by id for vector-only hits, fusion reorders the keyword
            // hits by their combined rank.
            let fused = fuse_rrf(&[ids, near], RRF_K);
            let mut out = Vec::new();
            for (id, score) in fused {
                if let Some(h) = keyword.iter().find(|h| h.chunk_id == id) {
                    out.push(Hit { score, ..h.clone() });
                }
            }
            out
        }
    };
    Ok(SearchResults {
        retrieval: retrieval(vectors),
        fts_query: Some(fts),
        hits: hits.into_iter().take(usize::try_from(limit).unwrap_or(usize::MAX)).collect(),
    })
}

fn retrieval(vectors: Option<&dyn VectorSearch>) -> Retrieval {
    match vectors {
        None => Retrieval::KeywordOnly,
        Some(v) => Retrieval::Hybrid { model: v.model().to_owned() },
    }
}
