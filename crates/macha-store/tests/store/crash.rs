//! The kill -9 test: a child process writes to the database as fast as it can and is killed with
//! SIGKILL at a random instant, round after round, on the same database file. After every kill the
//! parent reopens the database and checks that nothing committed was lost and nothing was
//! half-written.
//!
//! The child is this test binary itself, re-executed with [`CHILD_DB`] set so that
//! [`child_process_entry_point`] runs the writer loop; this works under `cargo test` and
//! `cargo nextest` alike. After each commit returns the child prints one `commit <ts> …` line
//! describing it. The child may commit one more transaction after its last line (killed between
//! the commit and the print); the checks allow for exactly that one.
//!
//! Every transaction of the child uses its own logical timestamp, so the audit records of one
//! transaction can be told apart by their `ts`.
//!
//! Knobs: `MACHA_CRASH_SEED` (the seed is printed) and `MACHA_CRASH_ROUNDS` (default 200).

use macha_core::Timestamp;
use macha_core::issue::{IssueEvent, Observation, fingerprint};
use macha_store::{
    ActionState, ApprovalState, AuditKind, AuditQuery, AuditRecord, IssueChanges, IssueState, NewAction, NewApproval,
    NewAudit, NewIssue, Order, Severity, Store, StoreError,
};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child's environment: the database to hammer.
const CHILD_DB: &str = "MACHA_STORE_CRASH_CHILD_DB";
/// Set in the child's environment: the seed of its operation sequence.
const CHILD_SEED: &str = "MACHA_STORE_CRASH_CHILD_SEED";
const DEFAULT_SEED: u64 = 0x6d61_6368_6121;
const DEFAULT_ROUNDS: u32 = 200;
/// Logical milliseconds between two transactions of the child.
const STEP_MS: i64 = 10;
const SUBJECTS: [&str; 6] = ["nginx.service", "sshd.service", "postgresql.service", "/", "/var", "eth0"];

/// splitmix64: small, seedable, good enough to pick operations and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn ids(list: &[i64]) -> String {
    if list.is_empty() {
        return "-".to_owned();
    }
    list.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

fn parse_ids(s: &str) -> Vec<i64> {
    if s == "-" {
        return Vec::new();
    }
    s.split(',').map(|id| id.parse().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// The child: writes until killed.
// ---------------------------------------------------------------------------------------------

/// Runs the writer loop when started by the parent; does nothing in a normal test run.
#[test]
fn child_process_entry_point() {
    let Ok(db) = std::env::var(CHILD_DB) else { return };
    let seed = env_u64(CHILD_SEED).unwrap_or(1);
    child(Path::new(&db), seed);
}

struct Child {
    store: Store,
    rng: Rng,
    now: i64,
    /// Standard output without buffering: one `write` per line, so that a line is in the pipe as
    /// soon as its commit returned.
    out: std::fs::File,
}

impl Child {
    /// Reports a commit. Called only after the commit returned.
    fn report(&mut self, what: std::fmt::Arguments<'_>) {
        self.out.write_all(format!("commit {} {what}\n", self.now).as_bytes()).unwrap();
    }

    fn audit(&self, kind: AuditKind, op: &str) -> NewAudit {
        NewAudit::new(Timestamp(self.now), kind, Severity::Info, "local", format!("crash test {op}"))
            .with_correlation_id(format!("c{}", self.now))
            .with_payload(serde_json::json!({"op": op}))
    }
}

fn child(db: &Path, seed: u64) {
    let store = Store::open(db).unwrap();
    let last = store.query_audit(&AuditQuery { order: Order::NewestFirst, limit: Some(1), ..Default::default() });
    let base = last.unwrap().first().map_or(1_700_000_000_000, |r| r.ts.millis() + 1_000);
    let out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned().unwrap());
    let mut c = Child { store, rng: Rng(seed), now: base, out };
    // The test harness may have printed `test … ... ` without a line break; start a fresh line.
    c.out.write_all(b"\n").unwrap();

    // What the daemon does at start: close what the previous run left running.
    let closed = c.store.mark_interrupted_actions(Timestamp(c.now), None).unwrap();
    if !closed.is_empty() {
        let list = ids(&closed.iter().map(|a| a.id).collect::<Vec<_>>());
        c.report(format_args!("interrupted {list}"));
    }
    c.out.write_all(b"ready\n").unwrap();
    // A child the parent failed to kill must not run forever.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        c.now += STEP_MS;
        step(&mut c);
    }
}

/// One transaction (or none, when the chosen operation has nothing to work on).
fn step(c: &mut Child) {
    let op = c.rng.below(100);
    match op {
        0..20 => {
            let id = c.store.append_audit(&c.audit(AuditKind::Finding, "audit")).unwrap();
            c.report(format_args!("audit {id}"));
        }
        20..35 => {
            let n = 1 + c.rng.below(20);
            let batch: Vec<NewAudit> = (0..n)
                .map(|i| {
                    let a = c.audit(AuditKind::Snapshot, "batch");
                    a.with_payload(serde_json::json!({"op": "batch", "n": n, "i": i}))
                })
                .collect();
            let got = c.store.append_audit_batch(&batch).unwrap();
            c.report(format_args!("batch {}", ids(&got)));
        }
        35..50 => {
            let ttl = 20 + c.rng.below(400) as i64;
            let new = NewApproval {
                host: "local".to_owned(),
                action: serde_json::json!({"kind": "restart_unit", "host": "local", "unit": "nginx.service"}),
                decision: serde_json::json!({"verdict": "approval", "risk": "medium"}),
                reason: "crash test".to_owned(),
                requested_by: "macha".to_owned(),
                requested_at: Timestamp(c.now),
                expires_at: Timestamp(c.now + ttl),
                correlation_id: format!("c{}", c.now),
                issue_id: None,
            };
            let rec = c.store.create_approval(&new, &c.audit(AuditKind::Approval, "create")).unwrap();
            c.report(format_args!("approval {} pending", rec.id));
        }
        50..65 => {
            let pending = c.store.list_approvals(&[ApprovalState::Pending], None).unwrap();
            let Some(id) = c.rng.pick(&pending).map(|a| a.id) else { return };
            let to = if c.rng.below(3) == 0 { ApprovalState::Rejected } else { ApprovalState::Approved };
            let audit = c.audit(AuditKind::Approval, "decide");
            match c.store.transition_approval(id, ApprovalState::Pending, to, "person", None, Timestamp(c.now), &audit)
            {
                Ok(rec) => c.report(format_args!("approval {} {}", rec.id, rec.state)),
                Err(StoreError::ApprovalExpired { .. }) => {}
                Err(e) => panic!("decide {id}: {e}"),
            }
        }
        65..75 => {
            let approved = c.store.list_approvals(&[ApprovalState::Approved], None).unwrap();
            let Some(id) = c.rng.pick(&approved).map(|a| a.id) else { return };
            let to = if c.rng.below(4) == 0 { ApprovalState::Failed } else { ApprovalState::Executed };
            let audit = c.audit(AuditKind::Outcome, "finish");
            let rec = c
                .store
                .transition_approval(id, ApprovalState::Approved, to, "macha", Some("done"), Timestamp(c.now), &audit)
                .unwrap();
            c.report(format_args!("approval {} {}", rec.id, rec.state));
        }
        75..80 => {
            let expired = c.store.expire_approvals(Timestamp(c.now)).unwrap();
            if !expired.is_empty() {
                let list = ids(&expired.iter().map(|a| a.id).collect::<Vec<_>>());
                c.report(format_args!("expired {list}"));
            }
        }
        80..92 => issue_step(c),
        _ => {
            let running = c.store.running_actions().unwrap();
            if let Some(action) = running.first() {
                let ok = c.rng.below(3) != 0;
                let audit = c.audit(AuditKind::Outcome, "action");
                let rec =
                    c.store.record_action_finished(action.id, ok, Some("exit 0"), Timestamp(c.now), &audit).unwrap();
                c.report(format_args!("action {} {}", rec.id, rec.state));
            } else {
                let new = NewAction {
                    correlation_id: format!("c{}", c.now),
                    ts_started: Timestamp(c.now),
                    host: "local".to_owned(),
                    kind: "restart_unit".to_owned(),
                    target: "local/restart_unit/nginx.service".to_owned(),
                    approval_id: None,
                    issue_id: None,
                };
                let id = c.store.record_action_started(&new, &c.audit(AuditKind::Action, "action")).unwrap();
                c.report(format_args!("action {id} running"));
            }
        }
    }
}

fn issue_step(c: &mut Child) {
    let subject = *c.rng.pick(&SUBJECTS).unwrap();
    let fp = fingerprint("local", "crash_check", subject);
    let now = Timestamp(c.now);
    let Some(issue) = c.store.active_issue_by_fingerprint(&fp).unwrap() else {
        let new = NewIssue {
            host: "local".to_owned(),
            check_name: "crash_check".to_owned(),
            subject: subject.to_owned(),
            severity: Severity::Warning,
            summary: format!("{subject} is unwell"),
            details: serde_json::json!({"updates": 0}),
            seen_at: now,
        };
        let rec = c.store.insert_issue(&new, &c.audit(AuditKind::Issue, "issue")).unwrap();
        c.report(format_args!("issue {} {} 0", rec.id, rec.state));
        return;
    };
    let event = match c.rng.below(6) {
        0 => IssueEvent::Observed(Observation::Present),
        1 => IssueEvent::Observed(Observation::Clear),
        2 => IssueEvent::ActionStarted,
        3 => IssueEvent::ActionFinished { verified: true },
        4 => IssueEvent::ActionFinished { verified: false },
        _ => IssueEvent::ManualClose,
    };
    let Some(next) = issue.lifecycle().apply(now, &event) else { return };
    let updates = issue.details["updates"].as_u64().unwrap() + 1;
    let changes = IssueChanges { details: Some(serde_json::json!({"updates": updates})), ..Default::default() };
    let rec =
        c.store.update_issue(issue.id, issue.state, &next, &changes, &c.audit(AuditKind::Issue, "issue")).unwrap();
    c.report(format_args!("issue {} {} {updates}", rec.id, rec.state));
}

// ---------------------------------------------------------------------------------------------
// The parent: kills and checks.
// ---------------------------------------------------------------------------------------------

/// One committed transaction as the child reported it.
#[derive(Debug, Clone, PartialEq)]
enum Report {
    Audit(i64),
    Batch(Vec<i64>),
    Approval(i64, String),
    Expired(Vec<i64>),
    Issue(i64, String),
    Action(i64, String),
    Interrupted(Vec<i64>),
}

fn parse_report(line: &str) -> Option<(i64, Report)> {
    let mut words = line.strip_prefix("commit ")?.split(' ');
    let ts: i64 = words.next()?.parse().ok()?;
    let kind = words.next()?;
    let mut word = || words.next().unwrap_or_else(|| panic!("short report line {line:?}"));
    let report = match kind {
        "audit" => Report::Audit(word().parse().ok()?),
        "batch" => Report::Batch(parse_ids(word())),
        "approval" => Report::Approval(word().parse().ok()?, word().to_owned()),
        "expired" => Report::Expired(parse_ids(word())),
        "issue" => Report::Issue(word().parse().ok()?, word().to_owned()),
        "action" => Report::Action(word().parse().ok()?, word().to_owned()),
        "interrupted" => Report::Interrupted(parse_ids(word())),
        other => panic!("unknown report {other:?} in {line:?}"),
    };
    Some((ts, report))
}

/// What the parent knows is in the database, checked after every round.
#[derive(Default)]
struct Model {
    /// Highest audit id checked so far; ids are contiguous from 1.
    audit_seen: i64,
    /// The `new_state` sequence of the audit records linked to each approval, issue and action.
    approval_history: HashMap<i64, Vec<(i64, String)>>,
    issue_history: HashMap<i64, Vec<(i64, String)>>,
    action_history: HashMap<i64, Vec<(i64, String)>>,
    reported_commits: u64,
    unreported_commits: u64,
    killed_before_ready: u32,
}

struct RoundOutput {
    lines: Vec<String>,
    ready: bool,
}

/// Starts the child, kills it at a random instant, returns what it printed.
fn run_child(db: &Path, seed: u64, rng: &mut Rng) -> RoundOutput {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["crash::child_process_entry_point", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, db)
        .env(CHILD_SEED, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "ready" {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // One round in six kills within a few milliseconds of the start, which may hit the open, the
    // migration check or the start-up clean-up; the others let the writer get going first.
    let early = rng.below(6) == 0;
    if early {
        std::thread::sleep(Duration::from_micros(rng.below(8_000)));
    } else {
        let started = ready_rx.recv_timeout(Duration::from_secs(20)).is_ok();
        assert!(started || child.try_wait().unwrap().is_none(), "the child exited before it was ready");
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(48_000)));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert_eq!(status.signal(), Some(9), "the child ended by itself ({status}); its stderr:\n{stderr}");
    let ready = lines.iter().any(|l| l == "ready");
    RoundOutput { lines, ready }
}

fn approval_path(state: ApprovalState) -> Vec<&'static str> {
    match state {
        ApprovalState::Pending => vec!["pending"],
        ApprovalState::Approved => vec!["pending", "approved"],
        ApprovalState::Rejected => vec!["pending", "rejected"],
        ApprovalState::Expired => vec!["pending", "expired"],
        ApprovalState::Executed => vec!["pending", "approved", "executed"],
        ApprovalState::Failed => vec!["pending", "approved", "failed"],
    }
}

fn states(history: Option<&Vec<(i64, String)>>) -> Vec<&str> {
    history.map(|h| h.iter().map(|(_, s)| s.as_str()).collect()).unwrap_or_default()
}

/// Checks that the rows of one transaction match what the child reported for it.
fn check_reported(ts: i64, report: &Report, rows: &[AuditRecord]) {
    let linked = |rows: &[AuditRecord], f: &dyn Fn(&AuditRecord) -> Option<i64>| -> Vec<(i64, String)> {
        rows.iter().map(|r| (f(r).unwrap_or(-1), r.new_state.clone().unwrap_or_default())).collect()
    };
    match report {
        Report::Audit(id) => {
            assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![*id], "audit at {ts}");
            assert_eq!(rows[0].payload["op"], "audit");
        }
        Report::Batch(ids) => {
            assert_eq!(&rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids, "batch at {ts}");
            assert!(rows.iter().all(|r| r.payload["n"] == ids.len()), "batch at {ts}");
        }
        Report::Approval(id, state) => {
            assert_eq!(linked(rows, &|r| r.approval_id), vec![(*id, state.clone())], "approval at {ts}");
        }
        Report::Expired(ids) => {
            let want: Vec<_> = ids.iter().map(|id| (*id, "expired".to_owned())).collect();
            assert_eq!(linked(rows, &|r| r.approval_id), want, "expiry at {ts}");
        }
        Report::Issue(id, state) => {
            assert_eq!(linked(rows, &|r| r.issue_id), vec![(*id, state.clone())], "issue at {ts}");
        }
        Report::Action(id, state) => {
            assert_eq!(linked(rows, &|r| r.action_id), vec![(*id, state.clone())], "action at {ts}");
        }
        Report::Interrupted(ids) => {
            let want: Vec<_> = ids.iter().map(|id| (*id, "failed".to_owned())).collect();
            assert_eq!(linked(rows, &|r| r.action_id), want, "interruption at {ts}");
        }
    }
}

/// Checks that the rows of the one unreported transaction form one whole transaction.
fn check_unreported(ts: i64, rows: &[AuditRecord]) {
    let first = &rows[0];
    if first.payload["op"] == "batch" {
        assert_eq!(first.payload["n"], rows.len(), "partial batch at {ts}: {rows:?}");
    } else if first.payload["op"] == "audit" {
        assert_eq!(rows.len(), 1, "{rows:?}");
    } else if first.new_state.as_deref() == Some("expired") {
        assert!(rows.iter().all(|r| r.approval_id.is_some() && r.new_state.as_deref() == Some("expired")));
    } else if first.summary.contains("interrupted") {
        assert!(rows.iter().all(|r| r.action_id.is_some() && r.new_state.as_deref() == Some("failed")));
    } else {
        assert_eq!(rows.len(), 1, "one guarded transition writes one audit record: {rows:?}");
        let links = [first.approval_id, first.issue_id, first.action_id].iter().flatten().count();
        assert_eq!(links, 1, "{first:?}");
    }
}

fn verify(db: &Path, round: u32, out: &RoundOutput, model: &mut Model) {
    let store = Store::open(db).unwrap_or_else(|e| panic!("round {round}: the database does not open: {e}"));
    assert_eq!(store.integrity_check().unwrap(), Vec::<String>::new(), "round {round}");
    // The hash chain survives every kill: each commit chained its records in its own transaction.
    let chain = store.verify_audit().unwrap();
    assert!(chain.is_ok(), "round {round}: {:?}", chain.problems);

    // The audit records of this round: ids contiguous, grouped by transaction (timestamp).
    let fresh = store.query_audit(&AuditQuery { after_id: Some(model.audit_seen), ..Default::default() }).unwrap();
    for (i, rec) in fresh.iter().enumerate() {
        assert_eq!(rec.id, model.audit_seen + 1 + i as i64, "round {round}: audit ids have a gap");
    }
    let mut by_ts: BTreeMap<i64, Vec<AuditRecord>> = BTreeMap::new();
    for rec in &fresh {
        by_ts.entry(rec.ts.millis()).or_default().push(rec.clone());
    }

    let reports: Vec<(i64, Report)> = out.lines.iter().filter_map(|l| parse_report(l)).collect();
    let mut last_reported = i64::MIN;
    for (ts, report) in &reports {
        assert!(*ts > last_reported, "round {round}: reports out of order");
        last_reported = *ts;
        let rows = by_ts.remove(ts).unwrap_or_default();
        check_reported(*ts, report, &rows);
    }
    // What is left was committed after the last report: at most one transaction, and later.
    assert!(
        by_ts.len() <= 1,
        "round {round}: more than one unreported transaction: {:?}; the child printed {:?}",
        by_ts.iter().map(|(ts, rows)| (ts, rows.len(), &rows[0].summary)).collect::<Vec<_>>(),
        out.lines
    );
    if let Some((ts, rows)) = by_ts.iter().next() {
        assert!(*ts > last_reported, "round {round}: unreported commit at {ts} before the last report");
        check_unreported(*ts, rows);
        model.unreported_commits += 1;
    }
    model.reported_commits += reports.len() as u64;
    if !out.ready {
        model.killed_before_ready += 1;
    }
    for rec in &fresh {
        let entry = (rec.ts.millis(), rec.new_state.clone().unwrap_or_default());
        if let Some(id) = rec.approval_id {
            model.approval_history.entry(id).or_default().push(entry.clone());
        }
        if let Some(id) = rec.issue_id {
            model.issue_history.entry(id).or_default().push(entry.clone());
        }
        if let Some(id) = rec.action_id {
            model.action_history.entry(id).or_default().push(entry);
        }
    }
    if let Some(last) = fresh.last() {
        model.audit_seen = last.id;
    }

    // Every row's state has exactly the audit records of the transitions that led to it.
    for a in store.list_approvals(&[], None).unwrap() {
        let history = model.approval_history.get(&a.id);
        assert_eq!(states(history), approval_path(a.state), "round {round}: approval {}", a.id);
        let history = history.unwrap();
        assert_eq!(a.requested_at.millis(), history[0].0, "approval {}", a.id);
        if let Some(decided) = history.get(1) {
            assert_eq!(a.decided_at, Some(Timestamp(decided.0)), "approval {}", a.id);
        }
        if let Some(finished) = history.get(2) {
            assert_eq!(a.finished_at, Some(Timestamp(finished.0)), "approval {}", a.id);
        }
    }
    assert_eq!(model.approval_history.len(), store.list_approvals(&[], None).unwrap().len());

    let issues = store.issues_in_states(&[]).unwrap();
    let mut active: HashMap<&str, i64> = HashMap::new();
    for i in &issues {
        let history = model.issue_history.get(&i.id);
        let path = states(history);
        assert_eq!(path.first(), Some(&"open"), "round {round}: issue {}", i.id);
        assert_eq!(path.last(), Some(&i.state.as_str()), "round {round}: issue {}", i.id);
        assert_eq!(path.len() as u64, 1 + i.details["updates"].as_u64().unwrap(), "round {round}: issue {}", i.id);
        assert_eq!(history.unwrap().last().map(|h| h.0), Some(i.last_seen.millis().max(i.since.millis())));
        if matches!(i.state, IssueState::Open | IssueState::Acting | IssueState::Resolved) {
            assert!(active.insert(&i.fingerprint, i.id).is_none(), "two active issues for {}", i.fingerprint);
        }
    }
    assert_eq!(model.issue_history.len(), issues.len());

    let actions = store.actions_since(Timestamp(0)).unwrap();
    for a in &actions {
        let history = model.action_history.get(&a.id);
        let want = match a.state {
            ActionState::Running => vec!["running"],
            ActionState::Succeeded => vec!["running", "succeeded"],
            ActionState::Failed => vec!["running", "failed"],
        };
        assert_eq!(states(history), want, "round {round}: action {}", a.id);
        assert_eq!(a.ts_finished.map(|t| t.millis()), history.unwrap().get(1).map(|h| h.0));
    }
    assert_eq!(model.action_history.len(), actions.len());
    assert!(store.running_actions().unwrap().len() <= 1, "round {round}: the child runs one action at a time");
}

#[test]
fn kill_nine_never_loses_or_half_writes_a_commit() {
    let seed = env_u64("MACHA_CRASH_SEED").unwrap_or(DEFAULT_SEED);
    let rounds = env_u64("MACHA_CRASH_ROUNDS").map_or(DEFAULT_ROUNDS, |r| r as u32);
    println!("kill -9 test: seed {seed}, {rounds} rounds (MACHA_CRASH_SEED / MACHA_CRASH_ROUNDS to change)");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("macha.db");
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let started = Instant::now();
    for round in 0..rounds {
        let out = run_child(&db, rng.next(), &mut rng);
        verify(&db, round, &out, &mut model);
    }
    // A last look with a read-only connection, as a CLI would open it.
    let store = Store::open_read_only(&db).unwrap();
    assert_eq!(store.last_audit_id().unwrap(), model.audit_seen);
    assert_eq!(store.integrity_check().unwrap(), Vec::<String>::new());
    println!(
        "{rounds} rounds in {:.1} s: {} reported commits, {} committed after the last report, {} kills before ready, {} audit records, database {} KiB",
        started.elapsed().as_secs_f64(),
        model.reported_commits,
        model.unreported_commits,
        model.killed_before_ready,
        model.audit_seen,
        std::fs::metadata(&db).map(|m| m.len() / 1024).unwrap_or(0),
    );
    assert!(model.reported_commits > u64::from(rounds), "the child hardly wrote anything");
}
