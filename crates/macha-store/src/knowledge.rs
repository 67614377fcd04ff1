//! The knowledge base's rows (`knowledge`, `knowledge_fts`, `knowledge_uses`) and the queries
//! behind the memory of incidents (`issues_fts`, the actions that resolved an issue).
//!
//! The rules (merging learnings, confidence, ranking) are not here: they are pure functions in
//! `macha-knowledge`, which reads and writes through these methods. Searches take the user's words
//! as they are and turn them into a safe FTS5 expression ([`crate::fts::match_expression`]), so no
//! query can fail on FTS5 syntax.

use crate::Store;
use crate::audit::{Link, NewAudit, insert_audit};
use crate::error::Result;
use crate::issues::IssueRecord;
use crate::row::{non_empty, ts_col};
use macha_core::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// One knowledge entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KbEntry {
    pub id: i64,
    #[serde(flatten)]
    pub fields: KbFields,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// How many issues used the entry, and how many of those ended with a verified remediation
    /// (`helped`) or a failed one (`failed`).
    pub used: u32,
    pub helped: u32,
    pub failed: u32,
}

/// What a writer sets on an entry (the counters and times are the store's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KbFields {
    pub topic: String,
    pub content: String,
    /// `command`, `pattern`, `troubleshooting`, `performance` or `general` (checked by the schema).
    pub category: String,
    pub use_when: String,
    /// 0 to 1 (checked by the schema).
    pub confidence: f64,
    /// `seeded`, `person` or `learned` (checked by the schema).
    pub provenance: String,
    /// The person who added or last edited it.
    pub added_by: Option<String>,
    /// The issue it was learned from.
    pub issue_id: Option<i64>,
    /// Free text: where it came from (the learning request, the import).
    pub source: Option<String>,
}

/// One hit of a knowledge search: the entry and its BM25 score (lower is better, as FTS5 ranks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KbHit {
    pub entry: KbEntry,
    pub bm25: f64,
}

/// An earlier issue that may be like the one at hand, before ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueCandidate {
    pub issue: IssueRecord,
    /// The same check and subject (on any host).
    pub same_check_subject: bool,
    /// Its BM25 score against the issue's words, when the text search found it.
    pub bm25: Option<f64>,
    /// The actions logged for it (kind, target, state), oldest first.
    pub actions: Vec<(String, String, String)>,
}

const COLUMNS: &str = "id, topic, content, category, use_when, confidence, provenance, added_by, issue_id, source, \
    created_at, updated_at, used, helped, failed";

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<KbEntry> {
    Ok(KbEntry {
        id: row.get(0)?,
        fields: KbFields {
            topic: row.get(1)?,
            content: row.get(2)?,
            category: row.get(3)?,
            use_when: row.get(4)?,
            confidence: row.get(5)?,
            provenance: row.get(6)?,
            added_by: row.get(7)?,
            issue_id: row.get(8)?,
            source: row.get(9)?,
        },
        created_at: ts_col(row, 10)?,
        updated_at: ts_col(row, 11)?,
        used: row.get(12)?,
        helped: row.get(13)?,
        failed: row.get(14)?,
    })
}

fn check_fields(f: &KbFields) -> Result<()> {
    non_empty("knowledge topic", &f.topic)?;
    non_empty("knowledge content", &f.content)
}

impl Store {
    /// Inserts an entry (and `audit`, if given, in the same transaction); returns its id.
    pub fn kb_insert(&mut self, f: &KbFields, now: Timestamp, audit: Option<&NewAudit>) -> Result<i64> {
        check_fields(f)?;
        let tx = self.write_txn()?;
        tx.execute(
            "INSERT INTO knowledge (topic, content, category, use_when, confidence, provenance, added_by, issue_id, \
             source, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            params![
                f.topic,
                f.content,
                f.category,
                f.use_when,
                f.confidence,
                f.provenance,
                f.added_by,
                f.issue_id,
                f.source,
                now.millis()
            ],
        )?;
        let id = tx.last_insert_rowid();
        if let Some(a) = audit {
            insert_audit(&tx, a, &Link::default())?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Replaces an entry's fields (its counters stay); false if there is no such entry.
    pub fn kb_update(&mut self, id: i64, f: &KbFields, now: Timestamp, audit: Option<&NewAudit>) -> Result<bool> {
        check_fields(f)?;
        let tx = self.write_txn()?;
        let n = tx.execute(
            "UPDATE knowledge SET topic = ?2, content = ?3, category = ?4, use_when = ?5, confidence = ?6, \
             provenance = ?7, added_by = ?8, issue_id = ?9, source = ?10, updated_at = ?11 WHERE id = ?1",
            params![
                id,
                f.topic,
                f.content,
                f.category,
                f.use_when,
                f.confidence,
                f.provenance,
                f.added_by,
                f.issue_id,
                f.source,
                now.millis()
            ],
        )?;
        if n == 1
            && let Some(a) = audit
        {
            insert_audit(&tx, a, &Link::default())?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Sets an entry's confidence and counters (after an outcome); false if there is no such entry.
    pub fn kb_set_score(&mut self, id: i64, confidence: f64, used: u32, helped: u32, failed: u32) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE knowledge SET confidence = ?2, used = ?3, helped = ?4, failed = ?5 WHERE id = ?1",
            params![id, confidence, used, helped, failed],
        )?;
        Ok(n == 1)
    }

    /// Deletes an entry and its uses; false if there is no such entry.
    pub fn kb_forget(&mut self, id: i64, audit: Option<&NewAudit>) -> Result<bool> {
        let tx = self.write_txn()?;
        tx.execute("DELETE FROM knowledge_uses WHERE knowledge_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM knowledge WHERE id = ?1", [id])?;
        if n == 1
            && let Some(a) = audit
        {
            insert_audit(&tx, a, &Link::default())?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// One entry.
    pub fn kb_get(&self, id: i64) -> Result<Option<KbEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM knowledge WHERE id = ?1");
        Ok(self.conn.query_row(&sql, [id], entry_from_row).optional()?)
    }

    /// Entries, most confident first, optionally of one category and one provenance.
    pub fn kb_list(&self, category: Option<&str>, provenance: Option<&str>, limit: u32) -> Result<Vec<KbEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM knowledge WHERE (?1 IS NULL OR category = ?1) AND (?2 IS NULL OR provenance = ?2) \
             ORDER BY confidence DESC, id LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![category, provenance, i64::from(limit)], entry_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Entries whose topic is `topic`, ignoring case (to merge learnings and update seeds).
    pub fn kb_by_topic(&self, topic: &str) -> Result<Vec<KbEntry>> {
        let sql = format!("SELECT {COLUMNS} FROM knowledge WHERE lower(topic) = lower(?1) ORDER BY id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([topic], entry_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Keyword search (FTS5 BM25 over topic, content and "use when"; the topic weighs most). Any
    /// text is a valid query; one with no words has no hits.
    pub fn kb_search(&self, query: &str, limit: u32) -> Result<Vec<KbHit>> {
        let Some(expr) = crate::fts::match_expression(query) else { return Ok(Vec::new()) };
        let cols = COLUMNS.split(", ").map(|c| format!("k.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {cols}, bm25(knowledge_fts, 5.0, 1.0, 2.0) AS score FROM knowledge_fts \
             JOIN knowledge k ON k.id = knowledge_fts.rowid WHERE knowledge_fts MATCH ?1 ORDER BY score LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![expr, i64::from(limit)], |row| {
            Ok(KbHit { entry: entry_from_row(row)?, bm25: row.get(15)? })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Records that `issue_id` used entry `id` (once per issue); true if it is the first use.
    pub fn kb_record_use(&mut self, id: i64, issue_id: i64, now: Timestamp) -> Result<bool> {
        let tx = self.write_txn()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO knowledge_uses (knowledge_id, issue_id, ts) \
             SELECT id, ?2, ?3 FROM knowledge WHERE id = ?1",
            params![id, issue_id, now.millis()],
        )?;
        if n == 1 {
            tx.execute("UPDATE knowledge SET used = used + 1 WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// The entries `issue_id` used whose outcome is not yet known.
    pub fn kb_pending_uses(&self, issue_id: i64) -> Result<Vec<i64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT knowledge_id FROM knowledge_uses WHERE issue_id = ?1 AND outcome IS NULL ORDER BY knowledge_id",
        )?;
        let rows = stmt.query_map([issue_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Records the outcome of one use (`helped` or `failed`); false if it already had one.
    pub fn kb_use_outcome(&mut self, id: i64, issue_id: i64, helped: bool) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE knowledge_uses SET outcome = ?3 WHERE knowledge_id = ?1 AND issue_id = ?2 AND outcome IS NULL",
            params![id, issue_id, if helped { "helped" } else { "failed" }],
        )?;
        Ok(n == 1)
    }

    /// Earlier issues like `issue`: those of the same check and subject (on any host), then those
    /// whose check, subject and summary share words with it, each with its logged actions. At most
    /// `limit` of each kind; `issue` itself is never among them.
    pub fn similar_issue_candidates(&self, issue: &IssueRecord, limit: u32) -> Result<Vec<IssueCandidate>> {
        let cols = crate::issues::ISSUE_COLUMNS.split(", ").map(|c| format!("i.{}", c.trim())).collect::<Vec<_>>();
        let cols = cols.join(", ");
        let mut out: Vec<IssueCandidate> = Vec::new();
        {
            let sql = format!(
                "SELECT {cols} FROM issues i WHERE i.check_name = ?1 AND i.subject = ?2 AND i.id != ?3 \
                 ORDER BY i.last_seen DESC LIMIT ?4"
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![issue.check_name, issue.subject, issue.id, i64::from(limit)],
                crate::issues::issue_from_row,
            )?;
            for r in rows {
                out.push(IssueCandidate { issue: r?, same_check_subject: true, bm25: None, actions: Vec::new() });
            }
        }
        let words = format!("{} {} {}", issue.check_name, issue.subject, issue.summary);
        if let Some(expr) = crate::fts::match_expression(&words) {
            let sql = format!(
                "SELECT {cols}, bm25(issues_fts, 2.0, 3.0, 1.0) AS score FROM issues_fts \
                 JOIN issues i ON i.id = issues_fts.rowid WHERE issues_fts MATCH ?1 AND i.id != ?2 \
                 ORDER BY score LIMIT ?3"
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let n = crate::issues::ISSUE_COLUMNS.split(',').count();
            let rows = stmt.query_map(params![expr, issue.id, i64::from(limit)], |row| {
                Ok((crate::issues::issue_from_row(row)?, row.get::<_, f64>(n)?))
            })?;
            for r in rows {
                let (found, score) = r?;
                match out.iter_mut().find(|c| c.issue.id == found.id) {
                    Some(c) => c.bm25 = Some(score),
                    None => out.push(IssueCandidate {
                        issue: found,
                        same_check_subject: false,
                        bm25: Some(score),
                        actions: Vec::new(),
                    }),
                }
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, target, state FROM actions WHERE issue_id = ?1 ORDER BY id LIMIT 20")?;
        for c in &mut out {
            let rows = stmt.query_map([c.issue.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            c.actions = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;

    fn fields(topic: &str, content: &str) -> KbFields {
        KbFields {
            topic: topic.into(),
            content: content.into(),
            category: "troubleshooting".into(),
            use_when: "a unit keeps restarting".into(),
            confidence: 0.5,
            provenance: "person".into(),
            added_by: Some("alice".into()),
            issue_id: None,
            source: None,
        }
    }

    #[test]
    fn insert_search_update_forget() {
        let (_dir, mut store) = temp_store();
        let a = store.kb_insert(&fields("nginx restart loop", "Check nginx -t first."), Timestamp(10), None).unwrap();
        let b = store.kb_insert(&fields("disk full on /nix", "Run nix-collect-garbage."), Timestamp(11), None).unwrap();
        let hits = store.kb_search("nginx.service loop", 10).unwrap();
        assert_eq!(hits.first().map(|h| h.entry.id), Some(a));
        assert!(hits.iter().all(|h| h.entry.id != b));
        assert_eq!(store.kb_search("nix-coll*", 10).unwrap()[0].entry.id, b);
        let mut f = fields("disk full on /nix", "Run nix-store --optimise.");
        f.confidence = 0.9;
        assert!(store.kb_update(b, &f, Timestamp(20), None).unwrap());
        assert!(store.kb_search("garbage", 10).unwrap().is_empty(), "the index follows the update");
        assert_eq!(store.kb_get(b).unwrap().unwrap().updated_at, Timestamp(20));
        assert!(store.kb_forget(a, None).unwrap());
        assert!(store.kb_search("nginx", 10).unwrap().is_empty(), "the index follows the delete");
        assert!(!store.kb_forget(a, None).unwrap());
    }

    #[test]
    fn hostile_queries_never_fail() {
        let (_dir, mut store) = temp_store();
        store.kb_insert(&fields("journal too large", "journalctl --vacuum-size=500M"), Timestamp(1), None).unwrap();
        for q in [
            "\"",
            "\"unterminated",
            "NEAR(journal",
            "journal AND",
            "OR OR OR",
            "-journal",
            "*",
            "journal*",
            "topic:journal",
            "{topic content}: x",
            "(((",
            "^journal",
            "'; DROP TABLE knowledge; --",
            "\u{0}journal",
            "ジャーナル",
        ] {
            store.kb_search(q, 5).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        }
        assert_eq!(store.kb_search("NEAR(journal", 5).unwrap().len(), 1);
        assert_eq!(store.kb_search("\"vacuum-size=500M\"", 5).unwrap().len(), 1);
    }

    #[test]
    fn uses_count_once_per_issue_and_take_one_outcome() {
        let (_dir, mut store) = temp_store();
        let a = store.kb_insert(&fields("t", "c"), Timestamp(1), None).unwrap();
        assert!(store.kb_record_use(a, 7, Timestamp(2)).unwrap());
        assert!(!store.kb_record_use(a, 7, Timestamp(3)).unwrap());
        assert!(!store.kb_record_use(999, 7, Timestamp(3)).unwrap(), "no such entry");
        assert_eq!(store.kb_get(a).unwrap().unwrap().used, 1);
        assert_eq!(store.kb_pending_uses(7).unwrap(), vec![a]);
        assert!(store.kb_use_outcome(a, 7, true).unwrap());
        assert!(!store.kb_use_outcome(a, 7, false).unwrap());
        assert!(store.kb_pending_uses(7).unwrap().is_empty());
    }

    #[test]
    fn schema_checks_category_confidence_provenance() {
        let (_dir, mut store) = temp_store();
        let mut f = fields("t", "c");
        f.category = "gossip".into();
        assert!(store.kb_insert(&f, Timestamp(1), None).is_err());
        let mut f = fields("t", "c");
        f.confidence = 1.5;
        assert!(store.kb_insert(&f, Timestamp(1), None).is_err());
        let mut f = fields("t", "c");
        f.provenance = "rumour".into();
        assert!(store.kb_insert(&f, Timestamp(1), None).is_err());
        assert!(store.kb_insert(&fields(" ", "c"), Timestamp(1), None).is_err());
    }
}
