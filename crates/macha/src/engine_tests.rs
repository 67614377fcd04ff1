//! Unit tests of the engine: a real store in a temporary file, a configuration built in code and a
//! simulated clock (every `now` and every snapshot's `taken_at` is an explicit timestamp).
//!
//! Each test drives the engine through its public entry points (cycles, unit events, approvals,
//! outcomes, a new `Engine` for a restart) and asserts on what the store holds afterwards: issues,
//! approvals, actions and the kinds and texts of the audit records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::config::Scope;
use macha_core::action::Hosts;
use macha_core::snapshot::{Section, UnitState, Units};
use macha_core::{HostName, UnitName};
use macha_store::{ActionRecord, ActionState, ApprovalRecord, AuditQuery, IssueQuery, IssueRecord};
use std::path::PathBuf;
use std::time::Duration;

/// The simulated clock's origin.
const T0: Timestamp = Timestamp(1_800_000_000_000);

/// `T0` plus `secs` seconds.
fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

/// A database file in its own temporary directory; engines are opened on it one after another,
/// like a daemon that restarts.
struct Db {
    dir: tempfile::TempDir,
}

impl Db {
    fn new() -> Db {
        Db { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("macha.db")
    }

    fn engine(&self, config: Config, now: Timestamp) -> Engine {
        Engine::new(Store::open(self.path()).unwrap(), config, true, now).unwrap()
    }

    fn report_only(&self, config: Config, now: Timestamp) -> Engine {
        Engine::new(Store::open(self.path()).unwrap(), config, false, now).unwrap()
    }
}

/// The defaults with short, round durations: flap limit 2 in 10 minutes, approvals expire after an
/// hour, resolved issues close after an hour and closed ones archive after a day.
fn config(autonomy: Autonomy) -> Config {
    let mut c = Config::defaults(Scope::System).unwrap();
    c.autonomy = autonomy;
    c.flap_limit = 2;
    c.flap_window = Duration::from_secs(600);
    c.approval_expiry = Duration::from_secs(3600);
    c.close_after = Duration::from_secs(3600);
    c.archive_after = Duration::from_secs(86_400);
    c
}

fn host(name: &str) -> HostName {
    HostName::parse(name).unwrap()
}

/// A snapshot of `host` at `taken_at` in which only systemd was observed, with `failed` units in
/// `failed`. Every other section is unavailable, so only the unit checks say anything.
fn units(host_name: &str, taken_at: Timestamp, failed: &[&str]) -> Snapshot {
    let mut snap = quiet_rest(Snapshot::all_unavailable(host(host_name), taken_at, "not observed in this test"));
    snap.units = Section::ok(Units {
        system_state: if failed.is_empty() { "running".into() } else { "degraded".into() },
        total: 50,
        notable: failed
            .iter()
            .map(|u| UnitState {
                name: (*u).into(),
                description: String::new(),
                load_state: "loaded".into(),
                active_state: "failed".into(),
                sub_state: "failed".into(),
                result: Some("exit-code".into()),
                n_restarts: Some(0),
            })
            .collect(),
        failed: failed.iter().map(|s| (*s).to_owned()).collect(),
    });
    snap
}

/// Marks five sections the tests do not look at as observed and quiet, so that a snapshot is not
/// mostly unavailable (which is a finding of its own: the observation check).
fn quiet_rest(mut snap: Snapshot) -> Snapshot {
    use macha_core::snapshot::{Load, Memory, Processes};
    snap.network = Section::ok(Vec::new());
    snap.filesystems = Section::ok(Vec::new());
    snap.processes = Section::ok(Processes { total: 0, top_cpu: Vec::new(), top_rss: Vec::new() });
    snap.load = Section::ok(Load { one: 0.0, five: 0.0, fifteen: 0.0, runnable: 0, processes: 0 });
    snap.memory =
        Section::ok(Memory { total_bytes: 8 << 30, available_bytes: 8 << 30, swap_total_bytes: 0, swap_free_bytes: 0 });
    snap
}

/// The local host with `nginx.service` failed.
fn nginx_failed(taken_at: Timestamp) -> Snapshot {
    units("local", taken_at, &["nginx.service"])
}

/// The local host with every unit fine.
fn healthy(taken_at: Timestamp) -> Snapshot {
    units("local", taken_at, &[])
}

/// The local host with nothing observable (no system bus, say).
fn unobserved(taken_at: Timestamp) -> Snapshot {
    Snapshot::all_unavailable(HostName::local(), taken_at, "no system bus")
}

fn issues(e: &Engine) -> Vec<IssueRecord> {
    let mut all = e.store().list_issues(&IssueQuery::default()).unwrap();
    all.sort_by_key(|i| i.id);
    all
}

fn only_issue(e: &Engine) -> IssueRecord {
    let all = issues(e);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap()
}

/// The one `failed_unit` issue (other checks' issues, such as a blind cycle's, aside).
fn unit_issue(e: &Engine) -> IssueRecord {
    let all: Vec<_> = issues(e).into_iter().filter(|i| i.check_name == "failed_unit").collect();
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap()
}

fn approvals(e: &Engine) -> Vec<ApprovalRecord> {
    let mut all = e.store().list_approvals(&ApprovalState::ALL, None).unwrap();
    all.sort_by_key(|a| a.id);
    all
}

fn approval(e: &Engine, id: i64) -> ApprovalRecord {
    e.store().get_approval(id).unwrap().unwrap()
}

fn actions(e: &Engine) -> Vec<ActionRecord> {
    e.store().actions_since(Timestamp(0)).unwrap()
}

/// The summaries of every audit record of `kind`, oldest first.
fn audit(e: &Engine, kind: AuditKind) -> Vec<String> {
    e.store()
        .query_audit(&AuditQuery { kinds: vec![kind], ..AuditQuery::default() })
        .unwrap()
        .into_iter()
        .map(|r| r.summary)
        .collect()
}

fn outcome(succeeded: bool, verified: bool) -> ActionOutcome {
    ActionOutcome { succeeded, verified, detail: "job done".into(), output: None }
}

#[test]
fn a_finding_opens_an_issue_and_presence_again_refreshes_it() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Observe), at(0));
    let (report, work) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    assert!(work.is_empty());
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.proposals.len(), 1);
    assert_eq!(report.proposals[0].decision.verdict, Verdict::Deny, "observe executes nothing");
    let issue = only_issue(&e);
    assert_eq!(issue.fingerprint, "local/failed_unit/nginx.service");
    assert_eq!(
        (issue.state, issue.first_seen, issue.last_seen, issue.recurrences),
        (IssueState::Open, at(0), at(0), 0)
    );
    assert_eq!(e.take_new_issues(), vec![issue.id]);
    assert!(e.take_new_issues().is_empty(), "taken once");

    // Present again a minute later: the same issue, seen later; nothing new for the model.
    let (report, _) = e.cycle(&nginx_failed(at(60)), "c2").unwrap();
    assert_eq!(report.findings.len(), 1);
    let again = only_issue(&e);
    assert_eq!(again.id, issue.id);
    assert_eq!((again.state, again.first_seen, again.last_seen), (IssueState::Open, at(0), at(60)));
    assert!(e.take_new_issues().is_empty());
    assert_eq!(audit(&e, AuditKind::Finding), ["new issue: unit nginx.service failed (result: exit-code)"]);
    // Snapshots go to the bounded history, one row per cycle, not to the audit trail.
    assert!(audit(&e, AuditKind::Snapshot).is_empty());
    let history = e.store().query_history(&macha_store::HistoryQuery::default()).unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    let decisions = audit(&e, AuditKind::Decision);
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(decisions.iter().all(|d| d.starts_with("deny:")), "{decisions:?}");
    // The cycle's records carry its correlation id.
    let trail =
        e.store().query_audit(&AuditQuery { correlation_id: Some("c1".into()), ..AuditQuery::default() }).unwrap();
    let kinds: Vec<_> = trail.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [AuditKind::Finding, AuditKind::Decision]);
    assert!(approvals(&e).is_empty() && actions(&e).is_empty());
}

#[test]
fn a_cleared_check_resolves_and_ageing_closes_then_archives() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Observe), at(0));
    e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = unit_issue(&e).id;

    // Fail closed: a cycle that could not see the units resolves nothing.
    let (report, _) = e.cycle(&unobserved(at(60)), "c2").unwrap();
    assert!(report.resolved_issues.is_empty());
    assert!(report.unknown_checks.iter().any(|(c, _)| *c == CheckName::FailedUnit), "{report:?}");
    assert_eq!(unit_issue(&e).state, IssueState::Open);
    // …and the blind cycle is an issue of its own (the observation check), never silence.
    assert!(
        issues(&e).iter().any(|i| i.check_name == "observation" && i.state == IssueState::Open),
        "{:#?}",
        issues(&e)
    );

    // Observed gone: resolved, with the reason.
    let (report, _) = e.cycle(&healthy(at(120)), "c3").unwrap();
    assert!(report.resolved_issues.contains(&id), "{report:?}");
    let resolved = unit_issue(&e);
    assert_eq!((resolved.state, resolved.since), (IssueState::Resolved, at(120)));
    assert_eq!(resolved.resolution.as_deref(), Some("the check observed the condition gone"));

    // Ageing: closed exactly `close_after` after resolving, archived `archive_after` after closing.
    // Any cycle ages every issue, whatever it observed.
    let closed_at = 120 + 3600;
    e.cycle(&unobserved(at(closed_at - 1)), "c4").unwrap();
    assert_eq!(unit_issue(&e).state, IssueState::Resolved);
    e.cycle(&unobserved(at(closed_at)), "c5").unwrap();
    let closed = unit_issue(&e);
    assert_eq!((closed.state, closed.since), (IssueState::Closed, at(closed_at)));
    e.cycle(&unobserved(at(closed_at + 86_399)), "c6").unwrap();
    assert_eq!(unit_issue(&e).state, IssueState::Closed);
    e.cycle(&unobserved(at(closed_at + 86_400)), "c7").unwrap();
    assert_eq!(unit_issue(&e).state, IssueState::Archived);
    let prefix = (format!("issue {id} "), format!("issue {id}:"));
    let trail: Vec<String> = audit(&e, AuditKind::Issue)
        .into_iter()
        .filter(|t| t.starts_with(&prefix.0) || t.starts_with(&prefix.1))
        .collect();
    assert_eq!(
        trail,
        [
            format!("issue {id} resolved: the check observed the condition gone"),
            format!("issue {id}: resolved → closed"),
            format!("issue {id}: closed → archived"),
        ]
    );

    // Archived issues are history: the same failure again opens a new issue.
    e.cycle(&nginx_failed(at(closed_at + 86_460)), "c8").unwrap();
    let all: Vec<_> = issues(&e).into_iter().filter(|i| i.check_name == "failed_unit").collect();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].id, all[0].state), (id, IssueState::Archived));
    assert_eq!((all[1].state, all[1].recurrences), (IssueState::Open, 0));
    assert_ne!(all[1].id, id);
}

#[test]
fn a_resolved_issue_that_comes_back_is_reopened_with_a_recurrence() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Observe), at(0));
    e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = only_issue(&e).id;
    e.take_new_issues();
    e.cycle(&healthy(at(60)), "c2").unwrap();
    assert_eq!(only_issue(&e).state, IssueState::Resolved);

    e.cycle(&nginx_failed(at(120)), "c3").unwrap();
    let back = only_issue(&e);
    assert_eq!(back.id, id, "the same issue, not a new one");
    assert_eq!((back.state, back.since, back.first_seen, back.recurrences), (IssueState::Open, at(120), at(0), 1));
    assert_eq!(e.take_new_issues(), vec![id], "a recurrence is new for the model");
    let trail = audit(&e, AuditKind::Issue);
    assert_eq!(
        trail.last().map(String::as_str),
        Some(&*format!("issue {id} came back: unit nginx.service failed (result: exit-code)"))
    );
    assert_eq!(audit(&e, AuditKind::Finding).len(), 1, "only the first sighting is a new finding");
}

#[test]
fn unit_events_open_and_resolve_without_waiting_for_a_cycle() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Observe), at(0));
    let local = HostName::local();
    e.unit_event(&local, "nginx.service", "failed", Some("signal"), at(0), "s1").unwrap();
    let issue = only_issue(&e);
    assert_eq!((issue.state, issue.summary.as_str()), (IssueState::Open, "unit nginx.service failed (result: signal)"));
    // In between states say nothing.
    e.unit_event(&local, "nginx.service", "activating", None, at(5), "s2").unwrap();
    assert_eq!(only_issue(&e).state, IssueState::Open);
    e.unit_event(&local, "nginx.service", "active", None, at(10), "s3").unwrap();
    let resolved = only_issue(&e);
    assert_eq!((resolved.state, resolved.since), (IssueState::Resolved, at(10)));
    assert_eq!(resolved.resolution.as_deref(), Some("systemd reports the unit active"));
}

#[test]
fn suggest_queues_one_approval_and_approving_re_decides_and_permits() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Suggest), at(0));
    let (report, work) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    assert!(work.is_empty(), "nothing runs at suggest before a person approves");
    let proposal = &report.proposals[0];
    assert_eq!((proposal.decision.verdict, proposal.decision.rule.as_str()), (Verdict::Approval, "autonomy"));
    let id = proposal.approval_id.unwrap();
    let issue = only_issue(&e);
    assert_eq!(issue.state, IssueState::Acting, "an action awaits approval");
    let queued = approval(&e, id);
    assert_eq!(queued.state, ApprovalState::Pending);
    assert_eq!(queued.issue_id, Some(issue.id));
    assert_eq!(queued.requested_by, "rule:failed_unit");
    assert_eq!((queued.requested_at, queued.expires_at), (at(0), at(3600)));
    assert_eq!(queued.action["kind"], "restart_unit");
    assert_eq!(queued.action["unit"], "nginx.service");

    // Still failed a minute later: the issue is being acted on, no second request.
    let (report, work) = e.cycle(&nginx_failed(at(60)), "c2").unwrap();
    assert!(work.is_empty() && report.proposals.is_empty(), "{report:?}");
    assert_eq!(approvals(&e).len(), 1);

    // A person approves: decided again now, and permitted with the approval's id.
    let (decision, work) = e.approve(id, "alice", Some("go ahead"), at(120)).unwrap();
    assert_eq!((decision.verdict, decision.rule.as_str()), (Verdict::Execute, "approved"));
    let work = work.expect("an approved, still allowed action is permitted");
    assert_eq!(work.permit.approval_id(), Some(id));
    assert_eq!(work.ticket.issue_id, Some(issue.id));
    assert_eq!(work.ticket.correlation_id, "c1", "the approval's trail keeps the original correlation id");
    let approved = approval(&e, id);
    assert_eq!(approved.state, ApprovalState::Approved);
    assert_eq!((approved.decided_by.as_deref(), approved.decision_note.as_deref()), (Some("alice"), Some("go ahead")));
    let logged = actions(&e);
    assert_eq!(logged.len(), 1);
    assert_eq!((logged[0].id, logged[0].state), (work.ticket.action_id, ActionState::Running));
    assert_eq!(logged[0].target, "local/restart_unit/nginx.service");
    assert_eq!((logged[0].approval_id, logged[0].issue_id), (Some(id), Some(issue.id)));
    let decisions = audit(&e, AuditKind::Decision);
    assert!(decisions.last().is_some_and(|d| d.starts_with("re-decided at execution: execute")), "{decisions:?}");

    // The executor reports success, verified.
    let action_id = work.ticket.action_id;
    e.record_outcome(work.ticket, &outcome(true, true), at(130)).unwrap();
    let done = e.store().get_action(action_id).unwrap().unwrap();
    assert_eq!((done.state, done.ts_finished), (ActionState::Succeeded, Some(at(130))));
    let executed = approval(&e, id);
    assert_eq!((executed.state, executed.finished_by.as_deref()), (ApprovalState::Executed, Some("executor")));
    // The outcome does not resolve the issue: its check does, when it observes the unit fine.
    let issue = only_issue(&e);
    assert_eq!(issue.state, IssueState::Open);
    assert!(audit(&e, AuditKind::Outcome)[0].contains("succeeded and verified"));
    assert!(e.take_learnings().is_empty(), "nothing learnt before the check observed it gone");
    e.cycle(&healthy(at(140)), "c3").unwrap();
    let issue = only_issue(&e);
    assert_eq!(
        (issue.state, issue.resolution.as_deref()),
        (IssueState::Resolved, Some("the check observed the condition gone"))
    );
    let learnt = e.take_learnings();
    assert_eq!(learnt.len(), 1);
    assert_eq!((learnt[0].issue_id, learnt[0].correlation_id.as_str()), (issue.id, "c1"));
    // Everything about this failure, from the finding to the outcome, carries one correlation id.
    let trail =
        e.store().query_audit(&AuditQuery { correlation_id: Some("c1".into()), ..AuditQuery::default() }).unwrap();
    for kind in [AuditKind::Finding, AuditKind::Approval, AuditKind::Action, AuditKind::Outcome, AuditKind::Issue] {
        assert!(trail.iter().any(|r| r.kind == kind), "no {kind:?} record under c1: {trail:#?}");
    }
}

#[test]
fn rejecting_returns_the_issue_to_open_and_the_next_cycle_asks_again() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Suggest), at(0));
    let (report, _) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = report.proposals[0].approval_id.unwrap();
    e.reject(id, "bob", Some("not during business hours"), at(60)).unwrap();
    let rejected = approval(&e, id);
    assert_eq!(rejected.state, ApprovalState::Rejected);
    assert_eq!(rejected.decided_by.as_deref(), Some("bob"));
    assert_eq!(only_issue(&e).state, IssueState::Open);
    assert!(actions(&e).is_empty());
    assert!(audit(&e, AuditKind::Approval).iter().any(|s| s == &format!("approval {id} rejected by bob")));
    // A rejection is final.
    assert!(e.approve(id, "bob", None, at(61)).is_err());
    assert!(e.reject(id, "bob", None, at(61)).is_err());
    assert_eq!(approval(&e, id).state, ApprovalState::Rejected);

    // Still failed: a new request for a person.
    let (report, work) = e.cycle(&nginx_failed(at(120)), "c2").unwrap();
    assert!(work.is_empty());
    let again = report.proposals[0].approval_id.unwrap();
    assert_ne!(again, id);
    assert_eq!(approval(&e, again).state, ApprovalState::Pending);
    assert_eq!(only_issue(&e).state, IssueState::Acting);
}

#[test]
fn a_rejections_reason_reaches_the_requests_discussion_and_the_next_proposal() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Suggest), at(0));
    let (report, _) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = report.proposals[0].approval_id.unwrap();
    e.reject(id, "bob", Some("  not during business hours "), at(60)).unwrap();

    // The reason is the person's turn in the request's discussion, which `discuss` reads back
    // as the model's history.
    let turns = e.store().conversation(&approval_conversation(id)).unwrap();
    assert_eq!(turns.len(), 1, "{turns:#?}");
    assert_eq!((turns[0].role.as_str(), turns[0].who.as_deref()), ("user", Some("bob")));
    assert_eq!(turns[0].content, rejection_turn("not during business hours"));

    // When the model proposes for the issue again, its prompt's knowledge says what was rejected
    // and why.
    let issue = only_issue(&e);
    let item = macha_agent::prompt::IncidentItem {
        issue_id: issue.id,
        host: issue.host.clone(),
        check: issue.check_name.clone(),
        subject: issue.subject.clone(),
        severity: issue.severity.as_str().to_owned(),
        summary: issue.summary.clone(),
    };
    let (blocks, _) = crate::agent::incident_knowledge(&e, &[item]);
    let rejected = blocks.iter().find(|b| b.source == "rejected_proposals").expect("no rejected_proposals block");
    assert!(rejected.text.contains(&format!("approval {id} (restart_unit nginx.service)")), "{}", rejected.text);
    assert!(rejected.text.contains("rejected by bob: not during business hours"), "{}", rejected.text);

    // A rejection without a reason adds no turn.
    let (report, _) = e.cycle(&nginx_failed(at(120)), "c2").unwrap();
    let again = report.proposals[0].approval_id.unwrap();
    e.reject(again, "bob", Some("   "), at(130)).unwrap();
    assert!(e.store().conversation(&approval_conversation(again)).unwrap().is_empty());
}

#[test]
fn an_unanswered_approval_expires_and_the_issue_moves_on() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Suggest), at(0));
    let (report, _) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = report.proposals[0].approval_id.unwrap();

    e.cycle(&nginx_failed(at(3599)), "c2").unwrap();
    assert_eq!(approval(&e, id).state, ApprovalState::Pending, "not yet due");
    assert_eq!(only_issue(&e).state, IssueState::Acting);

    e.cycle(&nginx_failed(at(3600)), "c3").unwrap();
    let expired = approval(&e, id);
    assert_eq!(
        (expired.state, expired.decided_by.as_deref()),
        (ApprovalState::Expired, Some(macha_store::EXPIRY_ACTOR))
    );
    assert_eq!(only_issue(&e).state, IssueState::Open, "the issue is no longer waiting for anyone");
    assert!(audit(&e, AuditKind::Issue).iter().any(|s| s.ends_with("(the approval expired)")));
    // An expired approval cannot be approved any more.
    assert!(e.approve(id, "alice", None, at(3601)).is_err());
    assert!(actions(&e).is_empty());

    // The next cycle asks a person again.
    let (report, _) = e.cycle(&nginx_failed(at(3660)), "c4").unwrap();
    let again = report.proposals[0].approval_id.unwrap();
    assert_ne!(again, id);
    assert_eq!(approval(&e, again).state, ApprovalState::Pending);
}

#[test]
fn an_approval_for_a_unit_protected_since_is_refused_at_execution() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Suggest), at(0));
    let (report, _) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = report.proposals[0].approval_id.unwrap();
    drop(e);

    // The daemon restarts with nginx protected; then a person approves the old request.
    let mut protecting = config(Autonomy::Suggest);
    protecting.protected_extra = vec!["nginx".into()];
    let mut e = db.engine(protecting, at(60));
    let (decision, work) = e.approve(id, "alice", None, at(60)).unwrap();
    assert!(work.is_none(), "a deny stands even after approval");
    assert_eq!((decision.verdict, decision.rule.as_str()), (Verdict::Deny, "protected"));
    let failed = approval(&e, id);
    assert_eq!(failed.state, ApprovalState::Failed);
    assert_eq!(failed.finished_by.as_deref(), Some("policy"));
    assert!(failed.result.as_deref().is_some_and(|r| r.starts_with("refused at execution time")), "{failed:?}");
    assert!(actions(&e).is_empty(), "nothing ran");
    assert_eq!(only_issue(&e).state, IssueState::Open);
    let decisions = audit(&e, AuditKind::Decision);
    assert!(decisions.last().is_some_and(|d| d.starts_with("re-decided at execution: deny")), "{decisions:?}");
}

#[test]
fn an_approval_for_a_host_no_longer_trusted_is_refused_at_execution() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Suggest), at(0));
    let web1 = host("web1");
    e.set_known_hosts(BTreeSet::from([web1.clone()]));
    let (report, _) = e.cycle(&units("web1", at(0), &["nginx.service"]), "c1").unwrap();
    assert_eq!(report.proposals[0].decision.verdict, Verdict::Approval);
    let id = report.proposals[0].approval_id.unwrap();
    assert_eq!(approval(&e, id).host, "web1");

    // The registry changed meanwhile: web1 is no longer trusted.
    e.set_known_hosts(BTreeSet::new());
    let (decision, work) = e.approve(id, "alice", None, at(60)).unwrap();
    assert!(work.is_none());
    assert_eq!((decision.verdict, decision.rule.as_str()), (Verdict::Deny, "unknown-host"));
    assert_eq!(approval(&e, id).state, ApprovalState::Failed);
    assert!(actions(&e).is_empty());
    let issue = only_issue(&e);
    assert_eq!((issue.host.as_str(), issue.state), ("web1", IssueState::Open));
    assert!(
        audit(&e, AuditKind::Approval)
            .iter()
            .any(|s| s.starts_with(&format!("approval {id} failed: refused at execution time")))
    );

    // Control: the same approval flow while the host is trusted executes.
    e.set_known_hosts(BTreeSet::from([web1]));
    let (report, _) = e.cycle(&units("web1", at(120), &["nginx.service"]), "c2").unwrap();
    let again = report.proposals[0].approval_id.unwrap();
    let (decision, work) = e.approve(again, "alice", None, at(180)).unwrap();
    assert_eq!(decision.verdict, Verdict::Execute);
    assert_eq!(work.map(|w| w.permit.action().hosts().as_slice().to_vec()), Some(vec![host("web1")]));
}

#[test]
fn an_approved_action_that_is_not_verified_fails_its_approval_and_reopens_the_issue() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Suggest), at(0));
    let (report, _) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = report.proposals[0].approval_id.unwrap();
    let (_, work) = e.approve(id, "alice", None, at(60)).unwrap();
    let work = work.unwrap();
    let action_id = work.ticket.action_id;
    e.record_outcome(work.ticket, &outcome(true, false), at(70)).unwrap();
    assert_eq!(e.store().get_action(action_id).unwrap().unwrap().state, ActionState::Failed);
    let failed = approval(&e, id);
    assert_eq!((failed.state, failed.result.as_deref()), (ApprovalState::Failed, Some("job done")));
    assert_eq!(only_issue(&e).state, IssueState::Open);
    assert!(audit(&e, AuditKind::Outcome)[0].contains("succeeded but not verified"));
}

#[test]
fn auto_safe_executes_and_a_failed_outcome_reopens_the_issue() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoSafe), at(0));
    let (report, mut work) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    assert_eq!(report.proposals[0].decision.verdict, Verdict::Execute);
    assert_eq!(work.len(), 1);
    let work = work.remove(0);
    assert_eq!(work.permit.approval_id(), None);
    assert_eq!(report.proposals[0].action_id, Some(work.ticket.action_id));
    assert_eq!(only_issue(&e).state, IssueState::Acting);
    assert!(approvals(&e).is_empty());
    let action_id = work.ticket.action_id;
    e.record_outcome(work.ticket, &outcome(false, false), at(5)).unwrap();
    let done = e.store().get_action(action_id).unwrap().unwrap();
    assert_eq!((done.state, done.detail.as_deref()), (ActionState::Failed, Some("job done")));
    let issue = only_issue(&e);
    assert_eq!((issue.state, issue.resolution), (IssueState::Open, None));
    assert!(audit(&e, AuditKind::Outcome)[0].contains("failed"));
}

/// Runs one cycle with nginx failed at `secs` and finishes its one execution as failed.
fn failing_restart(e: &mut Engine, secs: u64) {
    let (report, mut work) = e.cycle(&nginx_failed(at(secs)), &format!("c{secs}")).unwrap();
    assert_eq!(work.len(), 1, "an execution at {secs}: {report:?}");
    e.record_outcome(work.remove(0).ticket, &outcome(false, false), at(secs + 5)).unwrap();
}

#[test]
fn the_flap_guard_escalates_after_the_limit_even_across_a_restart() {
    let db = Db::new();
    let cfg = config(Autonomy::AutoSafe);
    let mut e = db.engine(cfg.clone(), at(0));
    failing_restart(&mut e, 0);
    failing_restart(&mut e, 60);
    drop(e);

    // A new engine on the same database (a restarted daemon) reloads the history from the store.
    let mut e = db.engine(cfg.clone(), at(120));
    let (report, work) = e.cycle(&nginx_failed(at(120)), "c120").unwrap();
    assert!(work.is_empty(), "the third restart within the window is not run");
    let decision = &report.proposals[0].decision;
    assert_eq!((decision.verdict, decision.rule.as_str()), (Verdict::Approval, "flap-limit"));
    assert!(decision.reason.contains("ran 2 times"), "{}", decision.reason);
    let id = report.proposals[0].approval_id.unwrap();
    assert_eq!(approval(&e, id).state, ApprovalState::Pending);
    assert_eq!(actions(&e).len(), 2);
    assert_eq!(only_issue(&e).state, IssueState::Acting);

    // A person declines; once the window has passed (both runs older than 10 minutes), a newly
    // started engine may run it again on its own.
    e.reject(id, "alice", None, at(130)).unwrap();
    drop(e);
    let mut e = db.engine(cfg, at(661));
    let (report, work) = e.cycle(&nginx_failed(at(661)), "c661").unwrap();
    assert_eq!(report.proposals[0].decision.verdict, Verdict::Execute, "{report:?}");
    assert_eq!(work.len(), 1);
    assert_eq!(actions(&e).len(), 3);
}

#[test]
fn an_action_left_running_is_closed_as_interrupted_by_the_next_acting_engine() {
    let db = Db::new();
    let cfg = config(Autonomy::AutoSafe);
    let mut e = db.engine(cfg.clone(), at(0));
    let (_, work) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    assert_eq!(work.len(), 1);
    // A crash: the outcome is never reported.
    drop(work);
    drop(e);
    assert_eq!(Store::open(db.path()).unwrap().running_actions().unwrap().len(), 1);

    // A report-only engine (a standalone check) leaves it alone.
    let ro = db.report_only(cfg.clone(), at(30));
    assert_eq!(actions(&ro)[0].state, ActionState::Running);
    drop(ro);

    let mut e = db.engine(cfg, at(60));
    let logged = actions(&e);
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].state, ActionState::Failed);
    assert_eq!(logged[0].detail.as_deref(), Some(macha_store::INTERRUPTED));
    assert_eq!(logged[0].ts_finished, Some(at(60)));
    let trail = audit(&e, AuditKind::Action);
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert!(trail[1].contains("was interrupted and is marked failed"), "{trail:?}");
    // The issue moved on with it: not stuck `acting`, so the unit still failed is acted on again.
    assert_eq!(only_issue(&e).state, IssueState::Open);
    let (report, work) = e.cycle(&nginx_failed(at(120)), "c120").unwrap();
    assert_eq!(report.proposals.len(), 1, "{report:?}");
    assert_eq!(work.len(), 1);
}

#[test]
fn an_approval_left_approved_by_a_crash_fails_and_frees_its_issue() {
    let db = Db::new();
    let cfg = config(Autonomy::Suggest);
    let mut e = db.engine(cfg.clone(), at(0));
    let (report, _) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
    let id = report.proposals[0].approval_id.unwrap();
    // Approved, then the daemon died before the action was started or recorded.
    let (_, work) = e.approve(id, "alice", None, at(10)).unwrap();
    let work = work.unwrap();
    let action_id = work.ticket.action_id;
    drop(work);
    drop(e);
    let e = db.engine(cfg, at(60));
    assert_eq!(approval(&e, id).state, ApprovalState::Failed);
    assert_eq!(actions(&e).iter().find(|a| a.id == action_id).unwrap().state, ActionState::Failed);
    assert_eq!(only_issue(&e).state, IssueState::Open);
    let trail = audit(&e, AuditKind::Approval);
    assert!(trail.iter().any(|t| t.contains("interrupted by a restart")), "{trail:?}");
}

#[test]
fn a_report_only_engine_decides_but_queues_and_runs_nothing() {
    let db = Db::new();
    for (autonomy, verdict) in [(Autonomy::Suggest, Verdict::Approval), (Autonomy::AutoSafe, Verdict::Execute)] {
        let mut e = db.report_only(config(autonomy), at(0));
        let (report, work) = e.cycle(&nginx_failed(at(0)), "c1").unwrap();
        assert!(work.is_empty());
        let p = &report.proposals[0];
        assert_eq!((p.decision.verdict, p.approval_id, p.action_id), (verdict, None, None));
        assert!(approvals(&e).is_empty() && actions(&e).is_empty());
        assert_eq!(only_issue(&e).state, IssueState::Open, "issues are still tracked");
    }
}

#[test]
fn a_person_proposal_on_a_protected_unit_is_denied_and_recorded() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoFull), at(0));
    let action = Action::RestartUnit {
        host: Hosts::One(HostName::local()),
        unit: UnitName::parse("sshd").unwrap(),
        reason: "a person asked".into(),
    };
    let (result, work) = e.propose(action, Origin::Person { uid: 0 }, None, at(0), "p1").unwrap();
    assert!(work.is_none());
    assert_eq!((result.decision.verdict, result.decision.rule.as_str()), (Verdict::Deny, "protected"));
    assert!(approvals(&e).is_empty() && actions(&e).is_empty());
    let decisions = audit(&e, AuditKind::Decision);
    assert_eq!(decisions.len(), 1);
    assert!(decisions[0].starts_with("deny: "), "{decisions:?}");
}

/// A snapshot of the local host with a journal error burst of `unit` (only the journal observed).
fn journal_burst(taken_at: Timestamp, unit: &str, errors: u32) -> Snapshot {
    use macha_core::snapshot::{JournalSummary, UnitErrorCount};
    let mut snap = quiet_rest(Snapshot::all_unavailable(HostName::local(), taken_at, "not observed in this test"));
    snap.journal = Section::ok(JournalSummary {
        window_secs: 600,
        errors_total: errors,
        by_unit: if errors == 0 { Vec::new() } else { vec![UnitErrorCount { unit: unit.into(), errors }] },
        samples: Vec::new(),
    });
    snap
}

/// Finding: a read-only diagnostic resolved a journal-error issue ("the action was verified"), so it
/// reopened at every cycle and was analysed each time. A diagnostic never moves its issue, runs once
/// per opening, and the issue stays open while the unit still floods the journal.
#[test]
fn a_diagnostic_never_resolves_and_runs_once_per_opening() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoSafe), at(0));
    let (report, mut work) = e.cycle(&journal_burst(at(0), "noisy.service", 50), "j1").unwrap();
    assert!(!report.findings.is_empty(), "{report:?}");
    assert_eq!(work.len(), 1, "the diagnostic runs: {report:?}");
    assert_eq!(work[0].permit.action().kind(), macha_core::ActionKind::Diagnostic);
    assert_eq!(e.take_new_issues().len(), 1);
    assert_eq!(only_issue(&e).state, IssueState::Open, "a diagnostic does not make the issue acting");
    e.record_outcome(work.remove(0).ticket, &outcome(true, true), at(3)).unwrap();
    assert_eq!(only_issue(&e).state, IssueState::Open, "a verified diagnostic resolves nothing");
    assert!(e.take_learnings().is_empty(), "no learning from a diagnostic");
    // The unit still floods the journal: still open, no second diagnostic, nothing new to analyse.
    for i in 1..=6 {
        let (_, work) = e.cycle(&journal_burst(at(5 * i), "noisy.service", 50), "j2").unwrap();
        assert!(work.is_empty(), "cycle {i}");
        assert!(e.take_new_issues().is_empty(), "cycle {i}: re-analysed");
    }
    assert_eq!(only_issue(&e).state, IssueState::Open);
    assert_eq!(actions(&e).len(), 1);
    // Only the check's own observation resolves it.
    e.cycle(&journal_burst(at(60), "noisy.service", 0), "j3").unwrap();
    assert_eq!(only_issue(&e).state, IssueState::Resolved);
}

/// An issue that comes back three times within 30 minutes is flapping: analysed once, not at
/// every reopening.
#[test]
fn an_issue_that_keeps_coming_back_is_flapping_and_analysed_once() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Observe), at(0));
    e.cycle(&nginx_failed(at(0)), "f0").unwrap();
    assert_eq!(e.take_new_issues().len(), 1);
    let mut analysed = 0;
    for i in 1..=6u64 {
        e.cycle(&healthy(at(i * 60)), "ok").unwrap();
        assert_eq!(only_issue(&e).state, IssueState::Resolved);
        e.cycle(&nginx_failed(at(i * 60 + 30)), "back").unwrap();
        analysed += e.take_new_issues().len();
    }
    let issue = only_issue(&e);
    assert_eq!((issue.state, issue.recurrences), (IssueState::Open, 6));
    assert_eq!(issue.details["flapping"], true);
    // Reopenings 1 and 2 are analysed, the third marks it flapping and is analysed once, then none.
    assert_eq!(analysed, 3);
    assert!(audit(&e, AuditKind::Issue).iter().any(|a| a.contains("flapping")));
}

/// Finding: one model turn opened 50 pending approvals for the same restart (they deduped on the
/// free-text reason). Approvals dedupe on what they would do; a repeat is recorded on the first.
#[test]
fn fifty_identical_model_proposals_open_one_approval() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoSafe), at(0));
    let mut ids = BTreeSet::new();
    for i in 0..50 {
        let action = Action::RestartUnit {
            host: Hosts::One(HostName::local()),
            unit: UnitName::parse("nginx").unwrap(),
            reason: format!("attempt {i}: the unit looks unhappy"),
        };
        let (result, work) = e.propose(action, Origin::Model, None, at(i), "m1").unwrap();
        assert!(work.is_none(), "a model's restart is not executed by default");
        assert_eq!(result.decision.rule, "model-proposal");
        ids.insert(result.approval_id.unwrap());
    }
    assert_eq!(ids.len(), 1);
    let pending = e.store().list_approvals(&[ApprovalState::Pending], None).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].requested_by, "model");
    let again = audit(&e, AuditKind::Approval).into_iter().filter(|a| a.contains("proposed again by model")).count();
    assert_eq!(again, 49);
    // Something different (another unit) is a request of its own.
    let other = Action::RestartUnit {
        host: Hosts::One(HostName::local()),
        unit: UnitName::parse("redis").unwrap(),
        reason: "attempt 0: the unit looks unhappy".into(),
    };
    let (result, _) = e.propose(other, Origin::Model, None, at(60), "m2").unwrap();
    assert!(result.approval_id.is_some_and(|id| !ids.contains(&id)));
}

/// Finding: an approval turned a flap-guard stop into execute. An approved action over the flap
/// limit is refused at execution, as the docs say.
#[test]
fn an_approval_does_not_lift_the_flap_limit() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoSafe), at(0));
    failing_restart(&mut e, 0);
    failing_restart(&mut e, 60);
    let (report, work) = e.cycle(&nginx_failed(at(120)), "c3").unwrap();
    assert!(work.is_empty());
    assert_eq!(report.proposals[0].decision.rule, "flap-limit");
    let id = report.proposals[0].approval_id.unwrap();
    let (decision, work) = e.approve(id, "alice", None, at(130)).unwrap();
    assert!(work.is_none(), "{decision:?}");
    assert_eq!(decision.rule, "flap-limit");
    assert_eq!(approval(&e, id).state, ApprovalState::Failed);
}

/// Finding: `macha policy check` built its context without trusted hosts or flap history. It now
/// uses the engine's inputs builder and gives the daemon's verdict.
#[test]
fn policy_check_and_the_daemon_agree() {
    use macha_store::{HostRecord, HostState};
    let db = Db::new();
    let cfg = config(Autonomy::AutoSafe);
    let mut e = db.engine(cfg.clone(), at(0));
    // A trusted host in the registry, and a flap history of nginx.
    let record = HostRecord {
        name: "web1.lan".into(),
        address: None,
        port: None,
        user: None,
        state: HostState::Trusted,
        host_key: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3Wn2Fq1rVqg2m6mU4cI3u2FQ6r4n1XrP5pnlrkB3xS".into()),
        os: None,
        profile: serde_json::Value::Null,
        first_seen: at(0),
        last_seen: at(0),
    };
    let audit = NewAudit::new(at(0), AuditKind::Config, AuditSeverity::Info, "web1.lan", "trusted");
    e.store_mut().put_fleet_host(&record, macha_store::HostSource::Config, None, &audit).unwrap();
    let e_hosts = crate::policy_inputs::trusted_hosts(&e.store().list_fleet_hosts().unwrap(), "macha");
    e.set_known_hosts(e_hosts);
    failing_restart(&mut e, 0);
    failing_restart(&mut e, 60);
    let store = Store::open_read_only(db.path()).unwrap();
    let now = at(120);
    let restart = |h: &str, u: &str| Action::RestartUnit {
        host: Hosts::One(host(h)),
        unit: UnitName::parse(u).unwrap(),
        reason: "r".into(),
    };
    let cases = [
        (restart("local", "nginx"), Origin::Person { uid: 0 }, "flap-limit"),
        (restart("web1.lan", "nginx"), Origin::Person { uid: 0 }, "autonomy"),
        (restart("web2.lan", "nginx"), Origin::Person { uid: 0 }, "unknown-host"),
        (restart("local", "redis"), Origin::Model, "model-proposal"),
        (
            Action::JournalVacuum { host: Hosts::One(HostName::local()), max_age_days: 1, reason: "r".into() },
            Origin::Rule { check: "disk_space".into() },
            "cleanup-floor",
        ),
    ];
    for (action, origin, rule) in cases {
        let cli = crate::policy_inputs::check(&cfg, Some(&store), &action, &origin, None, crate::now_at(now)).unwrap();
        let (daemon, _) = e.propose(action.clone(), origin, None, now, "cmp").unwrap();
        assert_eq!((cli.verdict, cli.rule.as_str()), (daemon.decision.verdict, rule), "{}", action.describe());
        assert_eq!(cli.rule, daemon.decision.rule, "{}", action.describe());
    }
}

/// A restart of a unit the engine saw stopped is decided as a start (approval at auto-safe).
#[test]
fn a_restart_of_a_unit_seen_stopped_is_decided_as_a_start() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoSafe), at(0));
    e.unit_event(&HostName::local(), "debug-tool.service", "inactive", None, at(0), "u1").unwrap();
    let action = Action::RestartUnit {
        host: Hosts::One(HostName::local()),
        unit: UnitName::parse("debug-tool").unwrap(),
        reason: "r".into(),
    };
    let (result, work) = e.propose(action.clone(), Origin::Person { uid: 0 }, None, at(1), "p").unwrap();
    assert!(work.is_none());
    assert_eq!(result.decision.decided_as, Some(macha_core::ActionKind::StartUnit));
    assert_eq!(result.decision.verdict, Verdict::Approval);
    e.unit_event(&HostName::local(), "debug-tool.service", "active", None, at(2), "u2").unwrap();
    let (result, work) = e.propose(action, Origin::Person { uid: 0 }, None, at(3), "p").unwrap();
    assert_eq!(result.decision.verdict, Verdict::Execute);
    assert!(work.is_some_and(|w| !w.permit.allows_start()));
}

/// Queues an approved local reboot on an engine whose boot id is `boot`; returns the action and
/// approval ids.
fn queued_reboot(e: &mut Engine, boot: &str, secs: u64) -> (i64, i64) {
    e.set_boot_id(Some(boot.to_owned()));
    let reboot = Action::Reboot { host: Hosts::One(HostName::local()), reason: "kernel update".into() };
    let (result, work) = e.propose(reboot, Origin::Person { uid: 0 }, None, at(secs), "r1").unwrap();
    assert!(work.is_none(), "a reboot always waits for a person: {result:?}");
    let id = result.approval_id.unwrap();
    let (_, work) = e.approve(id, "alice", None, at(secs + 10)).unwrap();
    let work = work.unwrap();
    let action_id = work.ticket.action_id;
    e.record_outcome(work.ticket, &outcome(true, false), at(secs + 11)).unwrap();
    (action_id, id)
}

#[test]
fn a_queued_reboot_is_confirmed_by_a_new_boot_id_across_the_restart() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoFull), at(0));
    let (action_id, id) = queued_reboot(&mut e, "boot-a", 0);
    // Queued, not settled: the action runs on and the approval stays approved.
    assert_eq!(e.store().get_action(action_id).unwrap().unwrap().state, ActionState::Running);
    assert_eq!(approval(&e, id).state, ApprovalState::Approved);
    assert!(
        audit(&e, AuditKind::Action)
            .iter()
            .any(|a| a.contains("queued") && a.contains("confirmed when the host is back"))
    );
    // The same boot, within the grace: nothing yet.
    e.maintain(at(60));
    assert_eq!(e.store().get_action(action_id).unwrap().unwrap().state, ActionState::Running);
    drop(e);
    // The daemon starts on the new boot: not an interrupted action, but a verified reboot.
    let mut e = db.engine(config(Autonomy::AutoFull), at(120));
    assert_eq!(e.store().get_action(action_id).unwrap().unwrap().state, ActionState::Running);
    assert_eq!(approval(&e, id).state, ApprovalState::Approved, "not failed as interrupted");
    e.set_boot_id(Some("boot-b".into()));
    e.confirm_reboot(at(121)).unwrap();
    assert_eq!(e.store().get_action(action_id).unwrap().unwrap().state, ActionState::Succeeded);
    assert_eq!(approval(&e, id).state, ApprovalState::Executed);
    let outcomes = audit(&e, AuditKind::Outcome);
    assert!(
        outcomes
            .iter()
            .any(|o| o.contains("succeeded and verified: the host is back with boot id boot-b (was boot-a)")),
        "{outcomes:?}"
    );
    // Settled once.
    e.confirm_reboot(at(122)).unwrap();
    assert_eq!(audit(&e, AuditKind::Outcome).len(), outcomes.len());
}

#[test]
fn a_queued_reboot_that_never_happens_fails_after_the_grace() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::AutoFull), at(0));
    let (action_id, id) = queued_reboot(&mut e, "boot-a", 0);
    let grace = REBOOT_GRACE.as_secs();
    e.maintain(at(grace));
    assert_eq!(e.store().get_action(action_id).unwrap().unwrap().state, ActionState::Running);
    e.maintain(at(grace + 60));
    assert_eq!(e.store().get_action(action_id).unwrap().unwrap().state, ActionState::Failed);
    assert_eq!(approval(&e, id).state, ApprovalState::Failed);
    assert!(audit(&e, AuditKind::Outcome).iter().any(|o| o.contains("did not go down within 15 min")));
}

/// A deployment of this host, proposed by a person and approved; its record armed on the host (as
/// the executor writes it) unless `armed` is false. The approval's id and the record's id.
fn approved_deployment(db: &Db, cfg: &Config, armed: bool) -> (i64, String) {
    let p =
        |n: &str| macha_core::StorePath::parse(&format!("/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-{n}")).unwrap();
    let action = Action::NixosSwitch {
        host: Hosts::One(HostName::local()),
        target: Box::new(macha_core::action::SwitchTarget { system: p("new"), previous: p("old"), flake: None }),
        reason: "deploy this host".into(),
    };
    let mut e = db.engine(cfg.clone(), at(0));
    let (result, _) = e.propose(action, Origin::Person { uid: 0 }, None, at(0), "d1").unwrap();
    let id = result.approval_id.expect("a deployment always goes to approval");
    let (_, work) = e.approve(id, "alice", None, at(10)).unwrap();
    let deploy = work.expect("approved").permit.deploy_id();
    if armed {
        let record = macha_deploy::DeployRecord {
            deploy: macha_deploy::DeployId::parse(&deploy).unwrap(),
            host: HostName::local(),
            approval_id: Some(id),
            old: p("old"),
            new: p("new"),
            baseline: macha_deploy::Baseline {
                system: p("old"),
                generation: None,
                boot_id: "b1".into(),
                failed_units: Default::default(),
                health: Vec::new(),
            },
            armed_at: at(20),
            dead_man: Duration::from_secs(900),
            run: "the-run-that-died".into(),
            final_state: None,
            notes: Vec::new(),
            reconciled: None,
        };
        macha_exec::journal::write(&crate::deployments::journal_dir(cfg), &record).unwrap();
    }
    (id, deploy)
}

#[test]
fn an_armed_deployment_cut_off_by_a_restart_is_resumed_under_the_same_deployment() {
    let db = Db::new();
    let mut cfg = config(Autonomy::Suggest);
    cfg.state_dir = db.dir.path().to_path_buf();
    let (id, deploy) = approved_deployment(&db, &cfg, true);
    // The daemon restarts (the activation restarted it).
    let mut e = db.engine(cfg, at(60));
    assert_eq!(approval(&e, id).state, ApprovalState::Approved, "not failed as interrupted");
    let resumed = e.take_resumed();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].permit.resumes(), Some(deploy.as_str()));
    assert_eq!(resumed[0].permit.deploy_id(), deploy, "the same units and GC roots on the host");
    assert_eq!(resumed[0].ticket.approval_id, Some(id));
    assert!(e.take_resumed().is_empty(), "taken once");
    let dir = crate::deployments::journal_dir(e.config());
    let record = macha_exec::journal::read(&dir, &deploy).unwrap().unwrap();
    assert_eq!(record.run, macha_exec::journal::run_id(), "carried out by this run: the tick leaves it alone");
    let trail = audit(&e, AuditKind::Approval);
    assert!(trail.iter().any(|t| t.contains(&format!("resuming deployment {deploy}"))), "{trail:?}");
}

#[test]
fn a_deployment_cut_off_before_it_was_armed_fails_as_interrupted() {
    let db = Db::new();
    let mut cfg = config(Autonomy::Suggest);
    cfg.state_dir = db.dir.path().to_path_buf();
    let (id, _) = approved_deployment(&db, &cfg, false);
    let mut e = db.engine(cfg, at(60));
    assert_eq!(approval(&e, id).state, ApprovalState::Failed);
    assert!(e.take_resumed().is_empty());
    assert!(approval(&e, id).result.unwrap().contains("interrupted by a restart"));
}

#[test]
fn a_reconciliation_is_recorded_on_the_deployments_approval_and_its_trail() {
    let db = Db::new();
    let mut cfg = config(Autonomy::Suggest);
    cfg.state_dir = db.dir.path().to_path_buf();
    let (id, deploy) = approved_deployment(&db, &cfg, true);
    let mut e = db.engine(cfg.clone(), at(60));
    // The resumed deployment ends unknown (say the host could not be read).
    let work = e.take_resumed().remove(0);
    let detail = format!("deployment {deploy} on local: unknown (reconciled at … from the host: not readable)");
    let receipt = macha_exec::Receipt::not_run(work.permit.id(), detail.clone());
    e.finish_action(work.ticket, &receipt, at(70)).unwrap();
    assert_eq!(approval(&e, id).result.as_deref(), Some(detail.as_str()));
    let mut record = macha_exec::journal::read(&crate::deployments::journal_dir(&cfg), &deploy).unwrap().unwrap();
    record.final_state = Some(macha_deploy::Final::Unknown);
    // Later the host is read again: still unknown, a new note; then rolled back by its timer.
    let still = macha_exec::deploy::Reconciliation {
        record: record.clone(),
        final_state: None,
        how: "the host runs the old system, and its timer is still armed".into(),
        at: at(100),
    };
    crate::deployments::record(&mut e, &still, true, at(100)).unwrap();
    crate::deployments::record(&mut e, &still, false, at(200)).unwrap();
    assert_eq!(approval(&e, id).result.as_deref(), Some(detail.as_str()), "a note changes no result");
    let settled = macha_exec::deploy::Reconciliation {
        record,
        final_state: Some(macha_deploy::Final::RolledBack),
        how: "rolled back by the host's dead-man timer, which verifies".into(),
        at: at(1000),
    };
    crate::deployments::record(&mut e, &settled, true, at(1000)).unwrap();
    let a = approval(&e, id);
    assert!(
        a.result.as_deref().unwrap().starts_with(&format!("deployment {deploy} on local: rolled back (reconciled at "))
    );
    assert_eq!(a.finished_by.as_deref(), Some(macha_store::RECONCILIATION_ACTOR));
    let trail: Vec<String> = e
        .store()
        .query_audit(&AuditQuery { approval_id: Some(id), ..AuditQuery::default() })
        .unwrap()
        .into_iter()
        .map(|r| r.summary)
        .collect();
    assert_eq!(trail.iter().filter(|t| t.contains("still unknown")).count(), 1, "an unchanged note is not repeated");
    assert!(trail.iter().any(|t| t.contains("reconciled at") && t.contains("rolled back")), "{trail:?}");
}

/// The local host with `/var` (100 GiB) at `free_gib` free.
fn var_at(taken_at: Timestamp, free_gib: f64) -> Snapshot {
    let mut snap = quiet_rest(Snapshot::all_unavailable(host("local"), taken_at, "not observed in this test"));
    let total = 100u64 << 30;
    let free = (free_gib * f64::from(1u32 << 30)) as u64;
    snap.filesystems = Section::ok(vec![macha_core::snapshot::Filesystem {
        mount_point: "/var".into(),
        device: "/dev/vda2".into(),
        fs_type: "ext4".into(),
        total_bytes: total,
        available_bytes: free,
        used_bytes: Some(total - free),
        total_inodes: 0,
        free_inodes: 0,
        read_only: false,
    }]);
    snap
}

#[test]
fn a_filling_disk_opens_a_fill_up_issue_and_the_metric_history_survives_a_restart() {
    let db = Db::new();
    let mut e = db.engine(config(Autonomy::Observe), at(0));
    // 20 GiB free, losing 2 GiB per hour: after an hour of samples the trend is a finding.
    let mut first_finding = None;
    for i in 0..150u64 {
        let (report, _) = e.cycle(&var_at(at(i * 60), 20.0 - 2.0 * i as f64 / 60.0), "c").unwrap();
        let fill: Vec<_> = report.findings.iter().filter(|f| f.check == CheckName::FillUp).collect();
        if first_finding.is_none() && !fill.is_empty() {
            first_finding = Some(i);
            assert_eq!(fill[0].subject, "/var");
            assert!(fill[0].summary.starts_with("/var fills up in about 9 h"), "{}", fill[0].summary);
        }
        // Nothing is judged as an anomaly before the detectors have an hour of samples.
        if i < 60 {
            assert!(report.unknown_checks.iter().any(|(c, _)| *c == CheckName::Anomaly), "{report:?}");
        }
    }
    assert!(first_finding.is_some_and(|i| (60..70).contains(&i)), "first fill-up finding at {first_finding:?}");
    let issues = e.store().list_issues(&IssueQuery::default()).unwrap();
    assert!(issues.iter().any(|i| i.check_name == "fill_up" && i.subject == "/var"), "{issues:?}");
    let points = e.store().metric_series("local", "fs.avail_bytes:/var", at(0), at(150 * 60)).unwrap();
    assert_eq!(points.len(), 150);
    drop(e);

    // After a restart the detectors are warmed from the stored day: judged at once.
    let mut e = db.engine(config(Autonomy::Observe), at(150 * 60));
    let (report, _) = e.cycle(&var_at(at(150 * 60), 15.0), "c").unwrap();
    assert!(!report.unknown_checks.iter().any(|(c, _)| *c == CheckName::Anomaly), "{report:?}");
}
