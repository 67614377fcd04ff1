//! Embedding vectors of configuration chunks and knowledge entries, for hybrid search
//! (`macha-knowledge` decides what to embed and with which model; decision 0017).
//!
//! One row per item: the model id and dimension that made the vector, a hash of the text it was
//! made from (so a changed text is embedded again), and the vector as little-endian `f32`.
//! Vectors of another model or dimension are never returned by [`Store::embeddings`], and
//! [`Store::drop_other_embeddings`] deletes them so they are recomputed.

use crate::db::Store;
use crate::error::Result;
use rusqlite::params;
use std::collections::BTreeMap;

/// What a vector embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EmbedKind {
    /// A configuration chunk (`config_chunks.id`).
    Chunk,
    /// A knowledge entry (`knowledge.id`).
    Entry,
}

impl EmbedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmbedKind::Chunk => "chunk",
            EmbedKind::Entry => "entry",
        }
    }
}

/// An item's text to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedItem {
    pub id: i64,
    pub text: String,
}

/// What is stored about an item's vector, without the vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVector {
    pub model: String,
    pub dimension: u32,
    pub text_hash: String,
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

impl Store {
    /// The texts to embed of every item of `kind`, by id: a chunk is its attribute path and
    /// text, an entry its topic, "use when" and content.
    pub fn embed_items(&self, kind: EmbedKind) -> Result<Vec<EmbedItem>> {
        let sql = match kind {
            EmbedKind::Chunk => "SELECT id, attr_path || char(10) || text FROM config_chunks ORDER BY id",
            EmbedKind::Entry => {
                "SELECT id, topic || char(10) || use_when || char(10) || content FROM knowledge ORDER BY id"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| Ok(EmbedItem { id: r.get(0)?, text: r.get(1)? }))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// What is stored for each item of `kind` that has a vector, by id.
    pub fn stored_vectors(&self, kind: EmbedKind) -> Result<BTreeMap<i64, StoredVector>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT item_id, model, dimension, text_hash FROM embeddings WHERE kind = ?1")?;
        let rows = stmt.query_map([kind.as_str()], |r| {
            Ok((r.get::<_, i64>(0)?, StoredVector { model: r.get(1)?, dimension: r.get(2)?, text_hash: r.get(3)? }))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, v) = row?;
            out.insert(id, v);
        }
        Ok(out)
    }

    /// Stores (or replaces) vectors of one model, in one transaction: `(id, text hash, vector)`.
    /// Every vector must have `dimension` values.
    pub fn put_embeddings(
        &mut self,
        kind: EmbedKind,
        model: &str,
        dimension: u32,
        vectors: &[(i64, String, Vec<f32>)],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO embeddings (kind, item_id, model, dimension, text_hash, vector)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (kind, item_id) DO UPDATE SET model = excluded.model,
                     dimension = excluded.dimension, text_hash = excluded.text_hash, vector = excluded.vector",
            )?;
            for (id, hash, v) in vectors {
                stmt.execute(params![kind.as_str(), id, model, dimension, hash, to_blob(v)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the vectors made by any other model or dimension, and those whose item is gone;
    /// returns how many were deleted.
    pub fn drop_other_embeddings(&mut self, model: &str, dimension: u32) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut n =
            tx.execute("DELETE FROM embeddings WHERE model <> ?1 OR dimension <> ?2", params![model, dimension])?;
        n += tx.execute(
            "DELETE FROM embeddings WHERE kind = 'chunk' AND item_id NOT IN (SELECT id FROM config_chunks)",
            [],
        )?;
        n += tx
            .execute("DELETE FROM embeddings WHERE kind = 'entry' AND item_id NOT IN (SELECT id FROM knowledge)", [])?;
        tx.commit()?;
        Ok(n)
    }

    /// Every vector of `kind` made by exactly this model and dimension, by item id.
    pub fn embeddings(&self, kind: EmbedKind, model: &str, dimension: u32) -> Result<Vec<(i64, Vec<f32>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT item_id, vector FROM embeddings WHERE kind = ?1 AND model = ?2 AND dimension = ?3 ORDER BY item_id",
        )?;
        let rows = stmt.query_map(params![kind.as_str(), model, dimension], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, blob) = row?;
            out.push((id, from_blob(&blob)));
        }
        Ok(out)
    }

    /// Configuration chunks by id, as hits (the snippet is the start of the text, the score 0),
    /// restricted like a keyword search by host and category; in the order of `ids`.
    pub fn config_chunks_by_ids(
        &self,
        ids: &[i64],
        host: Option<&str>,
        category: Option<&str>,
    ) -> Result<Vec<crate::ConfigHit>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.file, c.line_start, c.line_end, c.attr_path, c.category, substr(c.text, 1, 160)
             FROM config_chunks c
             WHERE c.id = ?1
               AND (?2 IS NULL OR c.file IN (SELECT file FROM config_file_hosts WHERE host = ?2))
               AND (?3 IS NULL OR c.category = ?3)",
        )?;
        let mut out = Vec::new();
        for id in ids {
            let mut rows = stmt.query(params![id, host, category])?;
            if let Some(r) = rows.next()? {
                out.push(crate::ConfigHit {
                    chunk_id: r.get(0)?,
                    file: r.get(1)?,
                    line_start: r.get(2)?,
                    line_end: r.get(3)?,
                    attr_path: r.get(4)?,
                    category: r.get(5)?,
                    snippet: r.get(6)?,
                    score: 0.0,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_is_little_endian() {
        let v = vec![1.0_f32, -0.5, 3.25];
        let b = to_blob(&v);
        assert_eq!(&b[..4], &1.0_f32.to_le_bytes());
        assert_eq!(from_blob(&b), v);
    }

    #[test]
    fn other_models_are_dropped_and_never_returned() {
        let mut store = Store::open_in_memory().unwrap();
        store.put_embeddings(EmbedKind::Entry, "a", 2, &[(1, "h".into(), vec![1.0, 0.0])]).unwrap();
        // The item does not exist, but `embeddings` does not check that; only the model filters.
        assert_eq!(store.embeddings(EmbedKind::Entry, "a", 2).unwrap().len(), 1);
        assert!(store.embeddings(EmbedKind::Entry, "b", 2).unwrap().is_empty());
        assert!(store.embeddings(EmbedKind::Entry, "a", 3).unwrap().is_empty());
        assert_eq!(store.drop_other_embeddings("b", 2).unwrap(), 1);
        assert!(store.stored_vectors(EmbedKind::Entry).unwrap().is_empty());
    }

    #[test]
    fn a_vector_of_the_wrong_length_is_refused() {
        let mut store = Store::open_in_memory().unwrap();
        assert!(store.put_embeddings(EmbedKind::Chunk, "a", 3, &[(1, "h".into(), vec![1.0, 0.0])]).is_err());
    }
}
