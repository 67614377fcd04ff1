//! The agent's records: requests to the model and their outcome, every prompt exactly as sent
//! (redacted), large tool outputs by id, conversation history (chat sessions and discussions of
//! approvals), and learnings.
//!
//! The prompt log is append-only: a trigger refuses updates, and deletes of prompts newer than
//! the retention horizon that [`Store::maintain`] moves forward. Texts larger than the caps of
//! [`crate::Limits`] are cut at a character boundary when written, marked `cut` with their
//! original size; they are never stored whole. Retention: see [`crate::retention`].

use crate::audit::{Link, NewAudit, insert_audit};
use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::retention::{cut_json, cut_str};
use crate::row::{non_empty, opt_ts_col, ts_col};
use macha_core::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// How long a cached tool output is kept by default (`Limits::output_cache_retention`).
pub const CACHE_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// A request to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAgentRequest {
    /// `analysis`, `chat`, `ask`, `discuss` or `learning`.
    pub kind: String,
    /// `interactive`, `autonomous` or `batch`.
    pub priority: String,
    pub requested_by: String,
    pub correlation_id: Option<String>,
    pub issue_ids: Vec<i64>,
    pub approval_id: Option<i64>,
    pub conversation: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRequestRecord {
    pub id: i64,
    pub kind: String,
    pub priority: String,
    pub requested_by: String,
    pub correlation_id: Option<String>,
    pub issue_ids: Vec<i64>,
    pub approval_id: Option<i64>,
    pub conversation: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub state: String,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub model: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// One prompt as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPrompt {
    pub request_id: i64,
    pub seq: u32,
    pub ts: Timestamp,
    pub purpose: String,
    pub model: String,
    pub backend: String,
    /// The request body exactly as it went on the wire (already redacted).
    pub request: serde_json::Value,
    pub estimated_tokens: u64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// The answer (text and tool calls) as JSON, if there was one.
    pub response: Option<serde_json::Value>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRecord {
    pub id: i64,
    #[serde(flatten)]
    pub prompt: NewPrompt,
    /// The request, the response or the error was larger than `llm.answer_max_bytes` and was cut:
    /// a cut request or response is stored as a JSON string holding the start of its JSON text.
    #[serde(default)]
    pub cut: bool,
    /// The size of the request's JSON text as sent, in bytes.
    #[serde(default)]
    pub request_bytes: Option<u64>,
    /// The size of the response's JSON text as received, in bytes.
    #[serde(default)]
    pub response_bytes: Option<u64>,
}

/// One turn of a stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationTurn {
    pub id: i64,
    pub conversation: String,
    pub ts: Timestamp,
    /// `user`, `assistant`, `system` or `tool`.
    pub role: String,
    pub content: String,
    /// Who typed it (user turns).
    pub who: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewKnowledge {
    pub topic: String,
    pub content: String,
    /// `command`, `pattern`, `troubleshooting`, `performance` or `general`.
    pub category: String,
    pub confidence: f64,
    pub source: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeRecord {
    pub id: i64,
    #[serde(flatten)]
    pub entry: NewKnowledge,
}

const REQUEST_COLUMNS: &str = "id, kind, priority, requested_by, correlation_id, issue_ids, approval_id, conversation, \
    state, created_at, finished_at, model, result, error";

fn request_from_row(row: &Row<'_>) -> rusqlite::Result<AgentRequestRecord> {
    let issues: String = row.get(5)?;
    Ok(AgentRequestRecord {
        id: row.get(0)?,
        kind: row.get(1)?,
        priority: row.get(2)?,
        requested_by: row.get(3)?,
        correlation_id: row.get(4)?,
        issue_ids: serde_json::from_str(&issues).unwrap_or_default(),
        approval_id: row.get(6)?,
        conversation: row.get(7)?,
        state: row.get(8)?,
        created_at: ts_col(row, 9)?,
        finished_at: opt_ts_col(row, 10)?,
        model: row.get(11)?,
        result: row.get(12)?,
        error: row.get(13)?,
    })
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn json_text(what: &'static str, v: &serde_json::Value) -> Result<String> {
    serde_json::to_string(v).map_err(|source| StoreError::Json { what, source })
}

impl Store {
    /// Records a new request to the model, `queued`.
    pub fn create_agent_request(&mut self, new: &NewAgentRequest) -> Result<i64> {
        non_empty("request kind", &new.kind)?;
        non_empty("requested_by", &new.requested_by)?;
        let issues =
            serde_json::to_string(&new.issue_ids).map_err(|source| StoreError::Json { what: "issue ids", source })?;
        let tx = self.write_txn()?;
        tx.execute(
            "INSERT INTO agent_requests (kind, priority, requested_by, correlation_id, issue_ids, approval_id, conversation, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                new.kind,
                new.priority,
                new.requested_by,
                new.correlation_id,
                issues,
                new.approval_id,
                new.conversation,
                new.created_at.millis()
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Moves a request to `running`.
    pub fn start_agent_request(&mut self, id: i64, model: &str) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE agent_requests SET state = 'running', model = ?2 WHERE id = ?1 AND state = 'queued'",
            params![id, model],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict {
                entity: "agent request",
                id,
                expected: "queued".into(),
                actual: "other".into(),
            });
        }
        Ok(())
    }

    /// Ends a request: `succeeded` with its result, or `failed` with the reason, plus an audit
    /// record (linked to `issue_id` when given) in the same transaction.
    pub fn finish_agent_request(
        &mut self,
        id: i64,
        outcome: std::result::Result<&str, &str>,
        now: Timestamp,
        audits: &[(Option<i64>, NewAudit)],
    ) -> Result<()> {
        let max = self.limits.answer_max_bytes;
        let (state, result, error) = match outcome {
            Ok(r) => ("succeeded", Some(cut_str(r, max).0), None),
            Err(e) => ("failed", None, Some(cut_str(e, max).0)),
        };
        let tx = self.write_txn()?;
        let n = tx.execute(
            "UPDATE agent_requests SET state = ?2, result = ?3, error = ?4, finished_at = ?5 \
             WHERE id = ?1 AND state IN ('queued', 'running')",
            params![id, state, result, error, now.millis()],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict {
                entity: "agent request",
                id,
                expected: "queued or running".into(),
                actual: "finished".into(),
            });
        }
        for (issue_id, audit) in audits {
            insert_audit(&tx, audit, &Link { issue_id: *issue_id, ..Link::default() })?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get_agent_request(&self, id: i64) -> Result<Option<AgentRequestRecord>> {
        let mut stmt =
            self.conn.prepare_cached(&format!("SELECT {REQUEST_COLUMNS} FROM agent_requests WHERE id = ?1"))?;
        Ok(stmt.query_row([id], request_from_row).optional()?)
    }

    /// The newest requests first.
    pub fn list_agent_requests(&self, limit: u32) -> Result<Vec<AgentRequestRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {REQUEST_COLUMNS} FROM agent_requests ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map([i64::from(limit)], request_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Requests left `queued` or `running` by a stop are closed as failed on the next start.
    pub fn close_interrupted_agent_requests(&mut self, now: Timestamp) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE agent_requests SET state = 'failed', error = 'interrupted by a daemon restart', finished_at = ?1 \
             WHERE state IN ('queued', 'running')",
            [now.millis()],
        )?)
    }

    /// Appends one prompt to the log. A request, response or error larger than
    /// `answer_max_bytes` is cut (see [`PromptRecord::cut`]).
    pub fn record_prompt(&mut self, p: &NewPrompt) -> Result<i64> {
        let max = self.limits.answer_max_bytes;
        let request = json_text("prompt request", &p.request)?;
        let request_bytes = request.len();
        let (request, request_cut) = cut_json(request, max);
        let response = p.response.as_ref().map(|r| json_text("prompt response", r)).transpose()?;
        let response_bytes = response.as_ref().map(String::len);
        let (response, response_cut) = match response {
            Some(r) => {
                let (r, cut) = cut_json(r, max);
                (Some(r), cut)
            }
            None => (None, false),
        };
        let (error, error_cut) = match p.error.as_deref() {
            Some(e) => {
                let (e, cut) = cut_str(e, max);
                (Some(e), cut)
            }
            None => (None, false),
        };
        let cut = request_cut || response_cut || error_cut;
        self.conn.execute(
            "INSERT INTO prompts (request_id, seq, ts, purpose, model, backend, request, estimated_tokens, \
             prompt_tokens, completion_tokens, response, error, cut, request_bytes, response_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                p.request_id,
                p.seq,
                p.ts.millis(),
                p.purpose,
                p.model,
                p.backend,
                request,
                to_i64(p.estimated_tokens),
                p.prompt_tokens.map(to_i64),
                p.completion_tokens.map(to_i64),
                response,
                error,
                cut,
                to_i64(request_bytes as u64),
                response_bytes.map(|b| to_i64(b as u64)),
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The prompts of one request, or the newest `limit` prompts.
    pub fn prompts(&self, request_id: Option<i64>, limit: u32) -> Result<Vec<PromptRecord>> {
        let sql = "SELECT id, request_id, seq, ts, purpose, model, backend, request, estimated_tokens, prompt_tokens, \
                   completion_tokens, response, error, cut, request_bytes, response_bytes FROM prompts WHERE (?1 IS NULL OR request_id = ?1) \
                   ORDER BY id DESC LIMIT ?2";
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![request_id, i64::from(limit)], |row| {
            let request: String = row.get(7)?;
            let response: Option<String> = row.get(11)?;
            Ok(PromptRecord {
                id: row.get(0)?,
                prompt: NewPrompt {
                    request_id: row.get(1)?,
                    seq: row.get(2)?,
                    ts: ts_col(row, 3)?,
                    purpose: row.get(4)?,
                    model: row.get(5)?,
                    backend: row.get(6)?,
                    request: serde_json::from_str(&request).unwrap_or(serde_json::Value::Null),
                    estimated_tokens: u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
                    prompt_tokens: row.get::<_, Option<i64>>(9)?.and_then(|v| u64::try_from(v).ok()),
                    completion_tokens: row.get::<_, Option<i64>>(10)?.and_then(|v| u64::try_from(v).ok()),
                    response: response.and_then(|r| serde_json::from_str(&r).ok()),
                    error: row.get(12)?,
                },
                cut: row.get(13)?,
                request_bytes: row.get::<_, Option<i64>>(14)?.and_then(|v| u64::try_from(v).ok()),
                response_bytes: row.get::<_, Option<i64>>(15)?.and_then(|v| u64::try_from(v).ok()),
            })
        })?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// Caches a large tool output; returns its id (`c-N`). Entries older than the cache retention
    /// go; an output larger than `output_max_bytes` is cut (its original size is recorded).
    pub fn cache_output(
        &mut self,
        request_id: Option<i64>,
        tool: &str,
        content: &str,
        now: Timestamp,
    ) -> Result<String> {
        let horizon = now.minus(self.limits.output_cache_retention).millis();
        let (stored, cut) = cut_str(content, self.limits.output_max_bytes);
        let original = cut.then(|| to_i64(content.len() as u64));
        let tx = self.write_txn()?;
        tx.execute(
            "DELETE FROM output_cache WHERE id IN (SELECT id FROM output_cache WHERE ts < ?1 LIMIT 200)",
            [horizon],
        )?;
        tx.execute(
            "INSERT INTO output_cache (request_id, ts, tool, content, original_bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![request_id, now.millis(), tool, stored, original],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(format!("c-{id}"))
    }

    /// Up to `len` bytes of a cached output from byte `offset` (at character boundaries), and its
    /// total size. `None` if there is no such id. Only the page is read out of the database, so
    /// paging through a large output costs a page at a time.
    pub fn cached_output(&self, id: &str, offset: u64, len: usize) -> Result<Option<(String, usize)>> {
        let Some(n) = id.strip_prefix("c-").and_then(|n| n.parse::<i64>().ok()) else { return Ok(None) };
        let exists: Option<i64> =
            self.conn.query_row("SELECT id FROM output_cache WHERE id = ?1", [n], |row| row.get(0)).optional()?;
        if exists.is_none() {
            return Ok(None);
        }
        // Incremental blob I/O reads only the page (plus 3 bytes on each side: a character is at
        // most 4 bytes), never the whole output.
        let blob = self.conn.blob_open(rusqlite::MAIN_DB, c"output_cache", c"content", n, true)?;
        let total = blob.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
        let want = len.saturating_add(6).min(total - start);
        let mut bytes = vec![0u8; want];
        blob.read_at_exact(&mut bytes, start)?;
        let row = Some((total, bytes));
        Ok(row.map(|(total, bytes)| {
            // Skip a character cut at the start; end at the last whole character within `len`.
            let skip = bytes.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
            let rest = &bytes[skip..];
            let mut end = rest.len().min(len);
            let text = loop {
                match std::str::from_utf8(&rest[..end]) {
                    Ok(t) => break t,
                    Err(e) => end = e.valid_up_to(),
                }
            };
            (text.to_owned(), total)
        }))
    }

    /// Appends turns to a conversation.
    pub fn append_conversation(
        &mut self,
        conversation: &str,
        approval_id: Option<i64>,
        turns: &[(String, String, Option<String>)],
        now: Timestamp,
    ) -> Result<()> {
        non_empty("conversation", conversation)?;
        let max = self.limits.answer_max_bytes;
        let tx = self.write_txn()?;
        for (role, content, who) in turns {
            let (stored, cut) = cut_str(content, max);
            let original = cut.then(|| to_i64(content.len() as u64));
            tx.execute(
                "INSERT INTO conversations (conversation, approval_id, ts, role, content, who, original_bytes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![conversation, approval_id, now.millis(), role, stored, who, original],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The turns of a conversation, oldest first.
    pub fn conversation(&self, conversation: &str) -> Result<Vec<ConversationTurn>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, conversation, ts, role, content, who FROM conversations WHERE conversation = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([conversation], |row| {
            Ok(ConversationTurn {
                id: row.get(0)?,
                conversation: row.get(1)?,
                ts: ts_col(row, 2)?,
                role: row.get(3)?,
                content: row.get(4)?,
                who: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Stores a learning.
    pub fn add_knowledge(&mut self, k: &NewKnowledge) -> Result<i64> {
        non_empty("knowledge topic", &k.topic)?;
        non_empty("knowledge content", &k.content)?;
        self.conn.execute(
            "INSERT INTO knowledge (topic, content, category, confidence, source, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![k.topic, k.content, k.category, k.confidence, k.source, k.created_at.millis()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Learnings, newest first.
    pub fn knowledge(&self, limit: u32) -> Result<Vec<KnowledgeRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, topic, content, category, confidence, source, created_at FROM knowledge ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::from(limit)], |row| {
            Ok(KnowledgeRecord {
                id: row.get(0)?,
                entry: NewKnowledge {
                    topic: row.get(1)?,
                    content: row.get(2)?,
                    category: row.get(3)?,
                    confidence: row.get(4)?,
                    source: row.get(5)?,
                    created_at: ts_col(row, 6)?,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;
    use crate::{AuditKind, AuditQuery, Severity};

    fn request(store: &mut Store) -> i64 {
        store
            .create_agent_request(&NewAgentRequest {
                kind: "analysis".into(),
                priority: "autonomous".into(),
                requested_by: "macha".into(),
                correlation_id: Some("c1".into()),
                issue_ids: vec![],
                approval_id: None,
                conversation: None,
                created_at: Timestamp(1),
            })
            .unwrap()
    }

    #[test]
    fn request_lifecycle_and_prompt_log() {
        let (_dir, mut store) = temp_store();
        let id = request(&mut store);
        store.start_agent_request(id, "m").unwrap();
        assert!(store.start_agent_request(id, "m").is_err());
        let p = NewPrompt {
            request_id: id,
            seq: 1,
            ts: Timestamp(2),
            purpose: "analysis".into(),
            model: "m".into(),
            backend: "ollama".into(),
            request: serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
            estimated_tokens: 10,
            prompt_tokens: Some(12),
            completion_tokens: None,
            response: Some(serde_json::json!({"content": "hello"})),
            error: None,
        };
        store.record_prompt(&p).unwrap();
        let got = store.prompts(Some(id), 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].prompt, p);
        assert!(store.conn.execute("UPDATE prompts SET model = 'x'", []).is_err(), "append-only");
        assert!(store.conn.execute("DELETE FROM prompts", []).is_err(), "append-only");
        let audit =
            NewAudit::new(Timestamp(3), AuditKind::Alert, Severity::Warning, "local", "analysis unavailable: down");
        store.finish_agent_request(id, Err("down"), Timestamp(3), &[(None, audit)]).unwrap();
        let r = store.get_agent_request(id).unwrap().unwrap();
        assert_eq!((r.state.as_str(), r.error.as_deref()), ("failed", Some("down")));
        assert_eq!(store.query_audit(&AuditQuery::default()).unwrap().len(), 1);
        assert!(store.finish_agent_request(id, Ok("x"), Timestamp(4), &[]).is_err());
        let other = request(&mut store);
        assert_eq!(store.close_interrupted_agent_requests(Timestamp(5)).unwrap(), 1);
        assert_eq!(store.get_agent_request(other).unwrap().unwrap().state, "failed");
    }

    #[test]
    fn cache_conversations_knowledge() {
        let (_dir, mut store) = temp_store();
        let big = "é".repeat(10_000);
        let id = store.cache_output(None, "read_file", &big, Timestamp(1_000)).unwrap();
        let (part, total) = store.cached_output(&id, 1, 5).unwrap().unwrap();
        assert_eq!(total, 20_000);
        assert_eq!(part, "éé");
        assert!(store.cached_output("c-999", 0, 5).unwrap().is_none());
        assert_eq!(store.cached_output(&id, 20_000, 5).unwrap().unwrap().0, "");
        assert_eq!(store.cached_output(&id, u64::MAX, 5).unwrap().unwrap().0, "");
        // Paging through 10 MB (multi-byte characters at every page edge) gives the text back
        // exactly.
        let mut ten = String::with_capacity(10 * 1024 * 1024 + 64);
        let mut i = 0u64;
        while ten.len() < 10 * 1024 * 1024 {
            ten.push_str(&format!("Zeile {i} — größer ✓\n"));
            i += 1;
        }
        let ten_id = store.cache_output(None, "read_file", &ten, Timestamp(1_000)).unwrap();
        let (mut at, mut pages, mut back) = (0u64, 0, String::with_capacity(ten.len()));
        loop {
            let (page, total) = store.cached_output(&ten_id, at, 3_500).unwrap().unwrap();
            assert_eq!(total, ten.len());
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3_500);
            at += page.len() as u64;
            back.push_str(&page);
            pages += 1;
        }
        assert_eq!(back, ten);
        assert!(pages > 2_900, "{pages} pages");
        assert!(store.cached_output("../x", 0, 5).unwrap().is_none());
        // A week later the entry is gone.
        store
            .cache_output(None, "x", "y", Timestamp(1_000).plus(CACHE_KEEP).plus(std::time::Duration::from_secs(1)))
            .unwrap();
        assert!(store.cached_output(&id, 0, 5).unwrap().is_none());

        store
            .append_conversation(
                "approval-1",
                None,
                &[("user".into(), "why?".into(), Some("root".into())), ("assistant".into(), "because".into(), None)],
                Timestamp(5),
            )
            .unwrap();
        let turns = store.conversation("approval-1").unwrap();
        assert_eq!(turns.iter().map(|t| t.content.as_str()).collect::<Vec<_>>(), ["why?", "because"]);

        let k = NewKnowledge {
            topic: "nginx".into(),
            content: "restart fixes a stale socket".into(),
            category: "troubleshooting".into(),
            confidence: 0.6,
            source: Some("request 1".into()),
            created_at: Timestamp(6),
        };
        store.add_knowledge(&k).unwrap();
        assert_eq!(store.knowledge(10).unwrap()[0].entry, k);
        let bad = NewKnowledge { category: "magic".into(), ..k.clone() };
        assert!(store.add_knowledge(&bad).is_err());
        let bad = NewKnowledge { confidence: 3.0, ..k };
        assert!(store.add_knowledge(&bad).is_err());
    }
}
