//! What the agent recalls from earlier records: an analysis of the same evidence (the answer
//! cache, keyed by the evidence hash the analysis audit records carry), and a host's last
//! deployments (approvals of kind `nixos_switch`).
//!
//! Nothing new is stored for either: an analysis's audit record per issue holds its
//! `agent_request` and `evidence` in the payload, and a deployment is an approval. These are
//! read-only queries over those rows.

use crate::Store;
use crate::error::Result;
use crate::row::ts_col;
use macha_core::Timestamp;
use rusqlite::{OptionalExtension, params};

/// A finished analysis whose evidence hash matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnalysis {
    /// The agent request that asked the model.
    pub request_id: i64,
    /// The model's answer as it was stored.
    pub answer: String,
    pub finished_at: Timestamp,
}

/// A deployment to a host: an approval of kind `nixos_switch` that was approved, executed or
/// failed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    pub approval_id: i64,
    pub state: String,
    /// When it was decided (approved), or requested when it never was.
    pub at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub decided_by: Option<String>,
    pub reason: String,
    pub result: Option<String>,
}

impl Store {
    /// The newest analysis by the model (not itself an answer from the cache) that succeeded at
    /// or after `since` and recorded `evidence` as its evidence hash.
    pub fn analysis_by_evidence(&self, evidence: &str, since: Timestamp) -> Result<Option<CachedAnalysis>> {
        let row = self
            .conn
            .query_row(
                "SELECT r.id, r.result, r.finished_at FROM agent_requests r \
                 WHERE r.kind = 'analysis' AND r.state = 'succeeded' AND r.result IS NOT NULL \
                   AND r.finished_at >= ?2 \
                   AND EXISTS (SELECT 1 FROM audit a WHERE a.kind = 'issue' \
                       AND a.ts >= ?2 \
                       AND json_extract(a.payload, '$.agent_request') = r.id \
                       AND json_extract(a.payload, '$.evidence') = ?1 \
                       AND json_extract(a.payload, '$.cached_from') IS NULL) \
                 ORDER BY r.id DESC LIMIT 1",
                params![evidence, since.millis()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, ts_col(r, 2)?)),
            )
            .optional()?;
        Ok(row.map(|(request_id, answer, finished_at)| CachedAnalysis { request_id, answer, finished_at }))
    }

    /// The newest `limit` deployments that name `host` (in the approval's host column or in the
    /// action's `host`, one name or a list), newest first.
    pub fn deployments_of_host(&self, host: &str, limit: u32) -> Result<Vec<DeploymentRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, state, coalesce(decided_at, requested_at), finished_at, decided_by, reason, result \
             FROM approvals \
             WHERE json_extract(action, '$.kind') = 'nixos_switch' \
               AND state IN ('approved', 'executed', 'failed') \
               AND (host = ?1 \
                    OR json_extract(action, '$.host') = ?1 \
                    OR (json_type(action, '$.host') = 'array' \
                        AND EXISTS (SELECT 1 FROM json_each(action, '$.host') WHERE value = ?1))) \
             ORDER BY coalesce(decided_at, requested_at) DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![host, i64::from(limit)], |r| {
            Ok(DeploymentRecord {
                approval_id: r.get(0)?,
                state: r.get(1)?,
                at: ts_col(r, 2)?,
                finished_at: r.get::<_, Option<i64>>(3)?.map(Timestamp),
                decided_by: r.get(4)?,
                reason: r.get(5)?,
                result: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Appends an audit record linked to issue `issue_id` (an analysis answered from the cache).
    pub fn append_issue_audit(&mut self, issue_id: i64, audit: &crate::NewAudit) -> Result<i64> {
        let tx = self.write_txn()?;
        let id = crate::audit::insert_audit(
            &tx,
            audit,
            &crate::audit::Link { issue_id: Some(issue_id), ..Default::default() },
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// The files of the configuration index that `host` uses, sorted.
    pub fn config_files_of_host(&self, host: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT file FROM config_file_hosts WHERE host = ?1 ORDER BY file")?;
        let rows = stmt.query_map([host], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_support::{new_approval, new_issue, temp_store};
    use crate::{AuditKind, NewAgentRequest, NewAudit, Severity};

    fn analysis(store: &mut Store, issue: i64, evidence: &str, at: i64, cached_from: Option<i64>) -> i64 {
        let id = store
            .create_agent_request(&NewAgentRequest {
                kind: "analysis".into(),
                priority: "autonomous".into(),
                requested_by: "macha".into(),
                correlation_id: None,
                issue_ids: vec![issue],
                approval_id: None,
                conversation: None,
                created_at: Timestamp(at),
            })
            .unwrap();
        store.start_agent_request(id, "m").unwrap();
        let mut payload = serde_json::json!({"agent_request": id, "evidence": evidence});
        if let Some(n) = cached_from {
            payload["cached_from"] = n.into();
        }
        let a = NewAudit::new(Timestamp(at), AuditKind::Issue, Severity::Info, "local", "analysis: x")
            .with_payload(payload);
        store.finish_agent_request(id, Ok("{\"summary\":\"x\"}"), Timestamp(at), &[(Some(issue), a)]).unwrap();
        id
    }

    #[test]
    fn an_analysis_is_found_by_its_evidence_within_the_window() {
        let (_d, mut store) = temp_store();
        let audit = NewAudit::new(Timestamp(1), AuditKind::Issue, Severity::Info, "local", "opened");
        let issue = store.insert_issue(&new_issue("nginx.service", 1), &audit).unwrap().id;
        let first = analysis(&mut store, issue, "e1", 1_000, None);
        analysis(&mut store, issue, "e2", 2_000, None);
        // An answer that was itself from the cache is never the source.
        analysis(&mut store, issue, "e1", 3_000, Some(first));
        let hit = store.analysis_by_evidence("e1", Timestamp(500)).unwrap().unwrap();
        assert_eq!(hit.request_id, first);
        assert!(hit.answer.contains("summary"));
        assert!(store.analysis_by_evidence("e1", Timestamp(1_500)).unwrap().is_none(), "too old");
        assert!(store.analysis_by_evidence("e3", Timestamp(0)).unwrap().is_none());
    }

    #[test]
    fn deployments_name_their_hosts() {
        let (_d, mut store) = temp_store();
        let mut a = new_approval(10, 1_000);
        a.host = "web1".into();
        a.action = serde_json::json!({"kind": "nixos_switch", "host": ["web1", "web2"], "target": {}, "reason": "r"});
        let audit = NewAudit::new(Timestamp(10), AuditKind::Approval, Severity::Info, "web1", "requested");
        let rec = store.create_approval(&a, &audit).unwrap();
        assert!(store.deployments_of_host("web2", 5).unwrap().is_empty(), "pending is not a deployment");
        store
            .transition_approval(
                rec.id,
                crate::ApprovalState::Pending,
                crate::ApprovalState::Approved,
                "alice",
                None,
                Timestamp(20),
                &audit,
            )
            .unwrap();
        let d = store.deployments_of_host("web2", 5).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].approval_id, d[0].state.as_str(), d[0].at), (rec.id, "approved", Timestamp(20)));
        assert_eq!(d[0].decided_by.as_deref(), Some("alice"));
        assert_eq!(store.deployments_of_host("web1", 5).unwrap().len(), 1);
        assert!(store.deployments_of_host("db1", 5).unwrap().is_empty());
        // Other kinds are not deployments.
        let other = store.create_approval(&new_approval(30, 1_000), &audit).unwrap();
        store
            .transition_approval(
                other.id,
                crate::ApprovalState::Pending,
                crate::ApprovalState::Approved,
                "alice",
                None,
                Timestamp(40),
                &audit,
            )
            .unwrap();
        assert!(store.deployments_of_host("local", 5).unwrap().is_empty());
    }
}
