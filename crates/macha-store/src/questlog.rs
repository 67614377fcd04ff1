//! The quest log: the audit trail searched, counted and replayed (`macha logs search`, `stats`,
//! `timeline`, `commands`).
//!
//! Search goes through `audit_fts` (an FTS5 index over each record's subject, summary and payload
//! text, kept in step by triggers), with the user's words made into a safe match expression by
//! [`crate::fts::match_expression`], so no text makes a query fail. Statistics are aggregate
//! queries over the actions, issues, audit and agent tables, bounded by a start time. Commands are
//! the action log joined with each action's outcome record: duration from the action's start and
//! end, output (redacted before it was stored) and exit status from the outcome.

use crate::audit::{AUDIT_COLUMNS_A, AuditKind, AuditRecord, audit_from_row};
use crate::db::Store;
use crate::error::Result;
use crate::row::placeholders;
use macha_core::Timestamp;
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// A full-text search of the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogSearch {
    /// Words, as a person types them (never parsed as FTS5 syntax).
    pub text: String,
    pub host: Option<String>,
    /// Any of these kinds (all when empty).
    pub kinds: Vec<AuditKind>,
    pub since: Option<Timestamp>,
    pub limit: u32,
}

/// Executed actions of one kind that ended in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionCount {
    pub kind: String,
    pub outcome: String,
    pub count: u64,
}

/// Issues of one check on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueCount {
    pub check_name: String,
    pub host: String,
    pub count: u64,
}

/// A subject whose issue came back most often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flapping {
    pub host: String,
    pub subject: String,
    pub recurrences: u64,
}

/// The quest log's statistics since a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogStats {
    pub since: Timestamp,
    /// Actions started since, by kind and state (`running`, `succeeded`, `failed`).
    pub actions: Vec<ActionCount>,
    /// Issues first seen since, by check and host (most first, at most 50).
    pub issues: Vec<IssueCount>,
    /// Issues resolved since (their first resolution), and how long that took from first sight.
    pub resolved: u64,
    pub resolve_median_ms: Option<i64>,
    pub resolve_p90_ms: Option<i64>,
    /// The issues that came back most often (at most 10), seen since.
    pub flapping: Vec<Flapping>,
    /// Requests to the model created since: all, failed, and their tokens (from the prompt log).
    pub model_requests: u64,
    pub model_failed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One command (or unit job) Macha ran, with how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRun {
    pub action_id: i64,
    pub host: String,
    pub kind: String,
    pub target: String,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// The exit status of a command that exited, when the outcome names one.
    pub exit_status: Option<i32>,
    pub detail: Option<String>,
    /// The output as stored (redacted).
    pub output: Option<String>,
}

/// The exit status in an outcome's detail (`… exited with status N`), if it names one.
pub fn exit_status_of(detail: &str) -> Option<i32> {
    let (_, rest) = detail.rsplit_once("exited with status ")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    digits.parse().ok()
}

/// The `q`-quantile (0-1) of sorted `values`, nearest rank.
fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    /// Audit records matching `search`, best match first (BM25), then newest.
    pub fn search_audit(&self, search: &LogSearch) -> Result<Vec<AuditRecord>> {
        use rusqlite::types::Value;
        let Some(expr) = crate::fts::match_expression(&search.text) else { return Ok(Vec::new()) };
        let mut sql = format!(
            "SELECT {AUDIT_COLUMNS_A} FROM audit_fts JOIN audit a ON a.id = audit_fts.rowid WHERE audit_fts MATCH ?"
        );
        let mut args: Vec<Value> = vec![expr.into()];
        if let Some(host) = &search.host {
            sql.push_str(" AND a.host = ?");
            args.push(host.clone().into());
        }
        if let Some(since) = search.since {
            sql.push_str(" AND a.ts >= ?");
            args.push(since.millis().into());
        }
        if !search.kinds.is_empty() {
            sql.push_str(&format!(" AND a.kind IN ({})", placeholders(search.kinds.len())));
            args.extend(search.kinds.iter().map(|k| Value::from(k.as_str().to_owned())));
        }
        sql.push_str(" ORDER BY bm25(audit_fts), a.ts DESC, a.id DESC LIMIT ?");
        args.push(i64::from(search.limit.max(1)).into());
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), audit_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The quest log's statistics since `since`.
    pub fn log_stats(&self, since: Timestamp) -> Result<LogStats> {
        let s = since.millis();
        let mut stats = LogStats {
            since,
            actions: Vec::new(),
            issues: Vec::new(),
            resolved: 0,
            resolve_median_ms: None,
            resolve_p90_ms: None,
            flapping: Vec::new(),
            model_requests: 0,
            model_failed: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, state, count(*) FROM actions WHERE ts_started >= ?1 GROUP BY kind, state \
             ORDER BY count(*) DESC, kind, state",
        )?;
        stats.actions = stmt
            .query_map([s], |r| Ok(ActionCount { kind: r.get(0)?, outcome: r.get(1)?, count: count(r.get(2)?) }))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT check_name, host, count(*) FROM issues WHERE first_seen >= ?1 GROUP BY check_name, host \
             ORDER BY count(*) DESC, check_name, host LIMIT 50",
        )?;
        stats.issues = stmt
            .query_map([s], |r| Ok(IssueCount { check_name: r.get(0)?, host: r.get(1)?, count: count(r.get(2)?) }))?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT min(a.ts) - i.first_seen FROM audit a JOIN issues i ON i.id = a.issue_id \
             WHERE a.new_state = 'resolved' AND a.ts >= ?1 GROUP BY a.issue_id",
        )?;
        let mut took: Vec<i64> = stmt.query_map([s], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        took.sort_unstable();
        stats.resolved = took.len() as u64;
        stats.resolve_median_ms = quantile(&took, 0.5);
        stats.resolve_p90_ms = quantile(&took, 0.9);
        let mut stmt = self.conn.prepare_cached(
            "SELECT host, subject, sum(recurrences) FROM issues WHERE last_seen >= ?1 AND recurrences > 0 \
             GROUP BY host, subject ORDER BY sum(recurrences) DESC, host, subject LIMIT 10",
        )?;
        stats.flapping = stmt
            .query_map([s], |r| Ok(Flapping { host: r.get(0)?, subject: r.get(1)?, recurrences: count(r.get(2)?) }))?
            .collect::<rusqlite::Result<_>>()?;
        let (requests, failed): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(state = 'failed'), 0) FROM agent_requests WHERE created_at >= ?1",
            [s],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (prompt, completion): (i64, i64) = self.conn.query_row(
            "SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) FROM prompts WHERE ts >= ?1",
            [s],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        stats.model_requests = count(requests);
        stats.model_failed = count(failed);
        stats.prompt_tokens = count(prompt);
        stats.completion_tokens = count(completion);
        Ok(stats)
    }

    /// The commands and unit jobs Macha ran (newest first, at most `limit`), with their outcome.
    pub fn command_runs(&self, host: Option<&str>, since: Option<Timestamp>, limit: u32) -> Result<Vec<CommandRun>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT x.id, x.host, x.kind, x.target, x.ts_started, x.ts_finished, x.state, x.detail, \
                    (SELECT json_extract(a.payload, '$.output') FROM audit a \
                     WHERE a.action_id = x.id AND a.kind = 'outcome' ORDER BY a.id DESC LIMIT 1), \
                    (SELECT json_extract(a.payload, '$.exit_status') FROM audit a \
                     WHERE a.action_id = x.id AND a.kind = 'outcome' ORDER BY a.id DESC LIMIT 1) \
             FROM actions x WHERE (?1 IS NULL OR x.host = ?1) AND x.ts_started >= ?2 \
             ORDER BY x.ts_started DESC, x.id DESC LIMIT ?3",
        )?;
        let rows =
            stmt.query_map(params![host, since.map_or(i64::MIN, Timestamp::millis), i64::from(limit.max(1))], |r| {
                let started: i64 = r.get(4)?;
                let finished: Option<i64> = r.get(5)?;
                let detail: Option<String> = r.get(7)?;
                let recorded: Option<i64> = r.get(9)?;
                Ok(CommandRun {
                    action_id: r.get(0)?,
                    host: r.get(1)?,
                    kind: r.get(2)?,
                    target: r.get(3)?,
                    started: Timestamp::from_millis(started),
                    finished: finished.map(Timestamp::from_millis),
                    duration_ms: finished.map(|f| f - started),
                    state: r.get(6)?,
                    exit_status: recorded
                        .and_then(|n| i32::try_from(n).ok())
                        .or_else(|| detail.as_deref().and_then(exit_status_of)),
                    detail,
                    output: r.get(8)?,
                })
            })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Open and acting issues of `host` by severity (for the metrics).
    pub fn open_issue_counts(&self, host: &str) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT severity, count(*) FROM issues WHERE host = ?1 AND state IN ('open', 'acting') GROUP BY severity",
        )?;
        let rows = stmt.query_map([host], |r| Ok((r.get::<_, String>(0)?, count(r.get(1)?))))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::{NewAudit, Severity};
    use crate::test_support::{audit, temp_store};

    #[test]
    fn search_finds_summaries_and_payload_text_and_never_fails_to_parse() {
        let (_dir, mut store) = temp_store();
        store
            .append_audit_batch(&[
                NewAudit { host: "web1".into(), ..audit(1_000, AuditKind::Finding, Severity::Warning) }
                    .with_subject("nginx.service")
                    .with_payload(serde_json::json!({"output": "bind() to 0.0.0.0:80 failed (98: Address in use)"})),
                NewAudit { host: "db1".into(), ..audit(2_000, AuditKind::Outcome, Severity::Notice) }
                    .with_subject("postgresql.service"),
                NewAudit {
                    summary: "disk almost full on /var".into(),
                    ..audit(3_000, AuditKind::Alert, Severity::Error)
                },
            ])
            .unwrap();
        let search = |text: &str, host: Option<&str>| {
            let q = LogSearch { text: text.into(), host: host.map(Into::into), limit: 10, ..LogSearch::default() };
            store.search_audit(&q).unwrap().into_iter().map(|r| r.host).collect::<Vec<_>>()
        };
        assert_eq!(search("address in use", None), vec!["web1"]);
        assert_eq!(search("nginx", None), vec!["web1"]);
        assert_eq!(search("postgresql", Some("web1")), Vec::<String>::new());
        assert_eq!(search("postgresql", Some("db1")), vec!["db1"]);
        assert_eq!(search("disk /var", None), vec!["local"]);
        // FTS5 syntax typed by a person is searched as words, never an error.
        for hostile in ["\"unbalanced", "NEAR(a b", "col:x", "^*", "AND OR NOT", ")(", ""] {
            let q = LogSearch { text: hostile.into(), limit: 10, ..LogSearch::default() };
            assert!(store.search_audit(&q).is_ok(), "{hostile:?}");
        }
    }

    #[test]
    fn exit_statuses_are_read_from_the_outcome() {
        assert_eq!(exit_status_of("/run/current-system/sw/bin/nix-collect-garbage exited with status 3"), Some(3));
        assert_eq!(exit_status_of("x exited with status 0"), Some(0));
        assert_eq!(exit_status_of("did not finish within 30 s and was killed"), None);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(quantile(&v, 0.5), Some(5));
        assert_eq!(quantile(&v, 0.9), Some(9));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.9), Some(7));
    }
}
