//! The configuration index: the fleet flake's files, their chunks by attribute path, the hosts
//! that use each file, and keyword search over the chunks (FTS5, BM25).
//!
//! What goes in is decided by `macha-knowledge` (parsing, chunking, redaction, which files are
//! never read); this module only stores and searches. An index run is one transaction
//! ([`Store::apply_config_index`]): a reader sees the previous index or the new one, never half.
//! The match expression handed to [`Store::search_config_chunks`] must already be a valid FTS5
//! query (`macha_knowledge::query` builds one from any user text); an invalid one is an error,
//! never a crash.

use crate::db::Store;
use crate::error::Result;
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;

/// One indexed file, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The path relative to the flake's root, with `/` separators.
    pub path: String,
    /// SHA-256 of the file's bytes (hex): an unchanged hash means an unchanged index.
    pub hash: String,
    /// The flake's git HEAD when it was indexed, if the flake is a git checkout.
    pub git_head: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub indexed_at: i64,
    /// The file's category (apps, systems, osconfigs, users, flake, other).
    pub category: String,
    /// Why the file could not be parsed (its chunks are then absent).
    pub error: Option<String>,
}

/// One chunk of a file to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConfigChunk {
    /// The attribute path the chunk sets (`services.nginx.virtualHosts."a.org"`), empty for the
    /// top level of a file.
    pub attr_path: String,
    pub line_start: u32,
    pub line_end: u32,
    pub category: String,
    /// The chunk's source text, secrets already redacted.
    pub text: String,
    /// Words derived from the identifiers in the text (camelCase split), indexed but not shown.
    pub words: String,
}

/// One run of the indexer: files to (re)write with their chunks, files to drop, and the complete
/// file-to-host map (it depends on every file's imports, so it is replaced as a whole).
#[derive(Debug, Clone, Default)]
pub struct ConfigIndexChanges {
    pub upserts: Vec<(ConfigFile, Vec<NewConfigChunk>)>,
    pub removals: Vec<String>,
    /// `(file, host)` pairs; replaces every stored pair.
    pub hosts: Vec<(String, String)>,
}

/// A keyword search over the chunks.
#[derive(Debug, Clone)]
pub struct ConfigSearch<'a> {
    /// A valid FTS5 match expression.
    pub fts_match: &'a str,
    /// Only chunks of files this host uses.
    pub host: Option<&'a str>,
    /// Only chunks of this category.
    pub category: Option<&'a str>,
    pub limit: u32,
}

/// One hit, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigHit {
    pub chunk_id: i64,
    pub file: String,
    pub line_start: u32,
    pub line_end: u32,
    pub attr_path: String,
    pub category: String,
    /// A short excerpt with the matched words between `[` and `]`.
    pub snippet: String,
    /// BM25 relevance, higher is better.
    pub score: f64,
}

/// What the index holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigIndexSummary {
    pub files: u64,
    pub chunks: u64,
    pub errors: u64,
    pub hosts: u64,
    pub last_indexed_at: Option<i64>,
    pub git_head: Option<String>,
}

/// BM25 column weights: the attribute path counts most, then the text, then the derived words.
const BM25_WEIGHTS: &str = "bm25(config_fts, 4.0, 1.0, 0.5)";

impl Store {
    /// The stored hash of every indexed file, by path.
    pub fn config_file_hashes(&self) -> Result<BTreeMap<String, String>> {
        let mut stmt = self.conn.prepare_cached("SELECT path, hash FROM config_files")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (path, hash) = row?;
            out.insert(path, hash);
        }
        Ok(out)
    }

    /// Applies one index run in one transaction.
    pub fn apply_config_index(&mut self, changes: &ConfigIndexChanges) -> Result<()> {
        let tx = self.write_txn()?;
        {
            let mut del_file = tx.prepare_cached("DELETE FROM config_files WHERE path = ?1")?;
            let mut del_chunks = tx.prepare_cached("DELETE FROM config_chunks WHERE file = ?1")?;
            let mut put_file = tx.prepare_cached(
                "INSERT INTO config_files (path, hash, git_head, indexed_at, category, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (path) DO UPDATE SET hash = excluded.hash, git_head = excluded.git_head,
                   indexed_at = excluded.indexed_at, category = excluded.category, error = excluded.error",
            )?;
            let mut put_chunk = tx.prepare_cached(
                "INSERT INTO config_chunks (file, attr_path, line_start, line_end, category, text, words)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for path in &changes.removals {
                del_chunks.execute([path])?;
                del_file.execute([path])?;
            }
            for (file, chunks) in &changes.upserts {
                del_chunks.execute([&file.path])?;
                put_file.execute(params![
                    file.path,
                    file.hash,
                    file.git_head,
                    file.indexed_at,
                    file.category,
                    file.error
                ])?;
                for c in chunks {
                    put_chunk.execute(params![
                        file.path,
                        c.attr_path,
                        c.line_start,
                        c.line_end.max(c.line_start),
                        c.category,
                        c.text,
                        c.words
                    ])?;
                }
            }
            tx.execute("DELETE FROM config_file_hosts", [])?;
            let mut put_host =
                tx.prepare_cached("INSERT OR IGNORE INTO config_file_hosts (file, host) SELECT path, ?2 FROM config_files WHERE path = ?1")?;
            for (file, host) in &changes.hosts {
                put_host.execute(params![file, host])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Keyword search, best first (BM25 over attribute path, text and derived words).
    pub fn search_config_chunks(&self, q: &ConfigSearch<'_>) -> Result<Vec<ConfigHit>> {
        let sql = format!(
            "SELECT c.id, c.file, c.line_start, c.line_end, c.attr_path, c.category,
                    snippet(config_fts, 1, '[', ']', '…', 16), -{BM25_WEIGHTS} AS score
             FROM config_fts JOIN config_chunks c ON c.id = config_fts.rowid
             WHERE config_fts MATCH ?1
               AND (?2 IS NULL OR c.file IN (SELECT file FROM config_file_hosts WHERE host = ?2))
               AND (?3 IS NULL OR c.category = ?3)
             ORDER BY {BM25_WEIGHTS}, c.id
             LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![q.fts_match, q.host, q.category, q.limit], |r| {
            Ok(ConfigHit {
                chunk_id: r.get(0)?,
                file: r.get(1)?,
                line_start: r.get(2)?,
                line_end: r.get(3)?,
                attr_path: r.get(4)?,
                category: r.get(5)?,
                snippet: r.get(6)?,
                score: r.get(7)?,
            })
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// The hosts that use a file, sorted.
    pub fn config_file_hosts(&self, file: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT host FROM config_file_hosts WHERE file = ?1 ORDER BY host")?;
        let rows = stmt.query_map([file], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Files that could not be parsed, with the reason.
    pub fn config_file_errors(&self) -> Result<Vec<(String, String)>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT path, error FROM config_files WHERE error IS NOT NULL ORDER BY path")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Counts and the newest run's time and git HEAD.
    pub fn config_index_summary(&self) -> Result<ConfigIndexSummary> {
        let (files, errors, last): (i64, i64, Option<i64>) =
            self.conn.query_row("SELECT count(*), count(error), max(indexed_at) FROM config_files", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let chunks: i64 = self.conn.query_row("SELECT count(*) FROM config_chunks", [], |r| r.get(0))?;
        let hosts: i64 = self.conn.query_row("SELECT count(DISTINCT host) FROM config_file_hosts", [], |r| r.get(0))?;
        let git_head: Option<String> = self
            .conn
            .query_row("SELECT git_head FROM config_files ORDER BY indexed_at DESC, path LIMIT 1", [], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(ConfigIndexSummary {
            files: files.unsigned_abs(),
            chunks: chunks.unsigned_abs(),
            errors: errors.unsigned_abs(),
            hosts: hosts.unsigned_abs(),
            last_indexed_at: last,
            git_head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, hash: &str) -> ConfigFile {
        ConfigFile {
            path: path.into(),
            hash: hash.into(),
            git_head: None,
            indexed_at: 1,
            category: "apps".into(),
            error: None,
        }
    }

    fn chunk(path: &str, text: &str) -> NewConfigChunk {
        NewConfigChunk {
            attr_path: path.into(),
            line_start: 1,
            line_end: 3,
            category: "apps".into(),
            text: text.into(),
            words: String::new(),
        }
    }

    fn search(store: &Store, m: &str) -> Vec<ConfigHit> {
        store.search_config_chunks(&ConfigSearch { fts_match: m, host: None, category: None, limit: 10 }).unwrap()
    }

    #[test]
    fn the_bundled_sqlite_has_fts5_and_the_index_round_trips() {
        let mut store = Store::open_in_memory().unwrap();
        let changes = ConfigIndexChanges {
            upserts: vec![
                (file("apps/nginx.nix", "h1"), vec![chunk("services nginx virtualHosts", "forceSSL = true;")]),
                (file("apps/db.nix", "h2"), vec![chunk("services postgresql", "enable = true;")]),
            ],
            removals: vec![],
            hosts: vec![("apps/nginx.nix".into(), "web1".into()), ("missing.nix".into(), "web1".into())],
        };
        store.apply_config_index(&changes).unwrap();
        let hits = search(&store, "\"nginx\"");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].file, "apps/nginx.nix");
        assert!(hits[0].score > 0.0);
        assert_eq!(store.config_file_hosts("apps/nginx.nix").unwrap(), ["web1"]);
        let by_host = store
            .search_config_chunks(&ConfigSearch {
                fts_match: "\"enable\"",
                host: Some("web1"),
                category: None,
                limit: 5,
            })
            .unwrap();
        assert!(by_host.is_empty(), "postgresql is not used by web1");
        // A replaced file loses its old chunks; a removed one is gone with its chunks and hosts.
        let again = ConfigIndexChanges {
            upserts: vec![(file("apps/nginx.nix", "h3"), vec![chunk("services caddy", "enable = true;")])],
            removals: vec!["apps/db.nix".into()],
            hosts: vec![],
        };
        store.apply_config_index(&again).unwrap();
        assert!(search(&store, "\"nginx\"").is_empty());
        assert_eq!(search(&store, "\"caddy\"").len(), 1);
        assert!(search(&store, "\"postgresql\"").is_empty());
        let summary = store.config_index_summary().unwrap();
        assert_eq!((summary.files, summary.chunks, summary.hosts), (1, 1, 0));
        assert_eq!(store.config_file_hashes().unwrap().get("apps/nginx.nix").map(String::as_str), Some("h3"));
    }

    #[test]
    fn an_invalid_match_expression_is_an_error_not_a_crash() {
        let store = Store::open_in_memory().unwrap();
        assert!(
            store
                .search_config_chunks(&ConfigSearch { fts_match: "\"", host: None, category: None, limit: 1 })
                .is_err()
        );
    }
}
