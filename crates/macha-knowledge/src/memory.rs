//! The memory of incidents: for an issue, the earlier issues most like it, with what resolved
//! them.
//!
//! The store finds the candidates (the same check and subject on any host, then a BM25 search of
//! the issues' check, subject and summary); [`rank`] orders them by a pure score: the same check
//! and subject first, then text similarity, a verified resolution, the same host and recency.

use macha_core::Timestamp;
use macha_store::{IssueCandidate, IssueRecord, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Candidates fetched per kind before ranking.
pub const CANDIDATES: u32 = 20;

/// A similar earlier issue, as people and the model see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarIssue {
    pub id: i64,
    pub host: String,
    pub check: String,
    pub subject: String,
    pub summary: String,
    pub state: String,
    pub last_seen: Timestamp,
    /// Higher is more similar.
    pub score: f64,
    /// Why it is similar: `same check and subject`, `similar text`, or both.
    pub why: String,
    /// Whether a remediation for it succeeded and the issue was then gone (resolved, closed or
    /// archived).
    pub verified: bool,
    /// What resolved it: the successful actions (`kind target`), or the resolution note.
    pub resolutions: Vec<String>,
}

const DAY_MS: f64 = 24.0 * 3_600_000.0;

/// Ranks candidates for `current`, best first, at most `limit`. Pure: `now` is a parameter.
pub fn rank(current: &IssueRecord, candidates: &[IssueCandidate], now: Timestamp, limit: usize) -> Vec<SimilarIssue> {
    let mut out: Vec<SimilarIssue> = candidates
        .iter()
        .filter(|c| c.issue.id != current.id)
        .map(|c| {
            let i = &c.issue;
            let succeeded: Vec<String> = c
                .actions
                .iter()
                .filter(|(_, _, state)| state == "succeeded")
                .map(|(kind, target, _)| format!("{kind} {target}"))
                .collect();
            let gone = matches!(i.state.as_str(), "resolved" | "closed" | "archived");
            let verified = gone && !succeeded.is_empty();
            let mut resolutions = succeeded;
            if let Some(note) = i.resolution.as_deref().filter(|n| !n.trim().is_empty()) {
                resolutions.push(note.to_owned());
            }
            // BM25 from FTS5 is negative (lower is better); its size grows with matching words.
            let text = c.bm25.map_or(0.0, |b| (-b).clamp(0.0, 20.0) / 4.0);
            let age_days = ((now.millis() - i.last_seen.millis()).max(0) as f64) / DAY_MS;
            let score = if c.same_check_subject { 10.0 } else { 0.0 }
                + text
                + if verified { 2.0 } else { 0.0 }
                + if i.host == current.host { 0.5 } else { 0.0 }
                + 1.0 / (1.0 + age_days / 30.0);
            let why = match (c.same_check_subject, c.bm25.is_some()) {
                (true, true) => "same check and subject, similar text",
                (true, false) => "same check and subject",
                _ => "similar text",
            };
            SimilarIssue {
                id: i.id,
                host: i.host.clone(),
                check: i.check_name.clone(),
                subject: i.subject.clone(),
                summary: i.summary.clone(),
                state: i.state.as_str().to_owned(),
                last_seen: i.last_seen,
                score,
                why: why.to_owned(),
                verified,
                resolutions,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.id.cmp(&a.id)));
    out.truncate(limit);
    out
}

/// The issues most like issue `id` (none if it does not exist).
pub fn similar_issues(store: &Store, id: i64, now: Timestamp, limit: usize) -> Result<Vec<SimilarIssue>, StoreError> {
    let Some(current) = store.get_issue(id)? else { return Ok(Vec::new()) };
    let candidates = store.similar_issue_candidates(&current, CANDIDATES)?;
    Ok(rank(&current, &candidates, now, limit))
}

/// Similar issues as text for a prompt (or a terminal): one line each, with the resolutions.
pub fn render(similar: &[SimilarIssue]) -> String {
    let mut out = String::new();
    for s in similar {
        out.push_str(&format!(
            "- issue {} on {}: {} {} — {} [{}; {}]\n",
            s.id, s.host, s.check, s.subject, s.summary, s.state, s.why
        ));
        if s.resolutions.is_empty() {
            out.push_str("    no recorded resolution\n");
        }
        for r in &s.resolutions {
            let mark = if s.verified { "verified" } else { "not verified" };
            out.push_str(&format!("    resolved by: {r} ({mark})\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use macha_store::{IssueState, Severity};

    fn issue(id: i64, host: &str, check: &str, subject: &str, state: IssueState, last_seen: i64) -> IssueRecord {
        IssueRecord {
            id,
            fingerprint: format!("{host}/{check}/{subject}"),
            host: host.into(),
            check_name: check.into(),
            subject: subject.into(),
            severity: Severity::Warning,
            summary: format!("{subject} is failing"),
            state,
            since: Timestamp(last_seen),
            first_seen: Timestamp(last_seen),
            last_seen: Timestamp(last_seen),
            recurrences: 0,
            resolution: None,
            details: serde_json::json!({}),
        }
    }

    fn cand(issue: IssueRecord, same: bool, bm25: Option<f64>, actions: &[(&str, &str, &str)]) -> IssueCandidate {
        IssueCandidate {
            issue,
            same_check_subject: same,
            bm25,
            actions: actions.iter().map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into())).collect(),
        }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn same_check_and_subject_first_then_text_then_verified() {
        let now = Timestamp(100 * DAY);
        let current = issue(10, "web1", "unit_failed", "nginx.service", IssueState::Open, 100 * DAY);
        let cands = [
            cand(issue(1, "web2", "unit_failed", "nginx.service", IssueState::Resolved, 10 * DAY), true, None, &[]),
            cand(
                issue(2, "web1", "unit_failed", "caddy.service", IssueState::Resolved, 99 * DAY),
                false,
                Some(-6.0),
                &[("restart_unit", "caddy.service", "succeeded")],
            ),
            cand(issue(3, "web1", "unit_failed", "php.service", IssueState::Open, 99 * DAY), false, Some(-6.0), &[]),
            cand(current.clone(), true, Some(-30.0), &[]),
        ];
        let ranked = rank(&current, &cands, now, 10);
        assert_eq!(ranked.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2, 3], "itself is never similar");
        assert_eq!(ranked[0].why, "same check and subject");
        assert!(ranked[1].verified && !ranked[2].verified);
        assert_eq!(ranked[1].resolutions, vec!["restart_unit caddy.service".to_owned()]);
        assert_eq!(rank(&current, &cands, now, 2).len(), 2);
    }

    #[test]
    fn a_successful_action_on_an_issue_still_open_is_not_verified() {
        let current = issue(10, "h", "c", "s", IssueState::Open, 0);
        let mut other = issue(1, "h", "c", "s", IssueState::Open, 0);
        other.resolution = Some("rebooted by hand".into());
        let ranked = rank(&current, &[cand(other, true, None, &[("restart_unit", "s", "succeeded")])], Timestamp(0), 5);
        assert!(!ranked[0].verified);
        assert_eq!(ranked[0].resolutions.len(), 2);
        assert!(render(&ranked).contains("(not verified)"));
    }

    #[test]
    fn recency_breaks_ties() {
        let now = Timestamp(400 * DAY);
        let current = issue(10, "h", "c", "s", IssueState::Open, 400 * DAY);
        let old = cand(issue(1, "x", "c", "s", IssueState::Closed, DAY), true, None, &[]);
        let new = cand(issue(2, "x", "c", "s", IssueState::Closed, 399 * DAY), true, None, &[]);
        let ranked = rank(&current, &[old, new], now, 5);
        assert_eq!(ranked[0].id, 2);
    }
}
