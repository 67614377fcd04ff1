//! The engine: the daemon's decisions, carried out against the store.
//!
//! Synchronous and free of sockets and processes: it takes findings, observations, approvals and
//! action outcomes, consults the core (lifecycle, policy, flap guard) and records every step in the
//! store. What must run comes back as [`Work`] — a [`Permit`] plus the [`Ticket`] to report back
//! with — for the async executor, which consumes the permit and hands back a receipt. Every record
//! of one trigger carries the same correlation id.
//!
//! Issues resolve only when their own check observes the condition gone: an action's outcome puts
//! an issue back to `open` (a read-only action does not move it at all), and a remediation that
//! was followed by that observation is what a learning may be asked about. An issue that keeps
//! coming back is marked flapping and analysed once.

use crate::config::Config;
use anyhow::Context;
use macha_core::action::{Action, Origin};
use macha_core::approval::ApprovalState;
use macha_core::checks::{self, CheckHistory, CheckName, Evaluation, Finding};
use macha_core::flap::flap_key;
use macha_core::issue::{IssueEvent, IssueState, Lifecycle, Observation, ReopenRule, fingerprint};
use macha_core::policy::{
    self, Autonomy, Class, Decision, Permit, PermitId, PolicyInputs, Ruling, UnitActivity, Verdict,
};
use macha_core::snapshot::Snapshot;
use macha_core::{HostName, Timestamp};
use macha_store::{
    AuditKind, IssueChanges, IssueRecord, NewAction, NewApproval, NewAudit, NewIssue, Severity as AuditSeverity, Store,
    StoreError,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Something the executor must carry out (consuming the permit), then report with
/// [`Engine::finish_action`] and the ticket.
#[derive(Debug)]
pub struct Work {
    pub permit: Permit,
    pub ticket: Ticket,
}

/// What the engine needs back with an outcome: the permitted action, the permit's identity (which
/// the receipt must name) and the ids the outcome is recorded against.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub action: Action,
    pub permit_id: PermitId,
    pub approval_id: Option<i64>,
    pub action_id: i64,
    pub issue_id: Option<i64>,
    pub correlation_id: String,
}

/// A remediation followed by its issue's check observing the condition gone: what a learning may be
/// asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learnable {
    pub action: String,
    pub issue_id: i64,
    pub correlation_id: String,
}

pub use macha_exec::{ActionOutcome, Receipt};

/// A reboot of this host that systemd queued, waiting for its proof: the host back with another
/// boot id. Kept in the store (it must outlive the daemon, which goes down with the host); the
/// action and its approval stay open until [`Engine::confirm_reboot`] settles them.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct PendingReboot {
    action: Action,
    action_id: i64,
    approval_id: Option<i64>,
    issue_id: Option<i64>,
    correlation_id: String,
    /// The boot id when the reboot was queued.
    boot_id: String,
    queued_at: Timestamp,
}

const PENDING_REBOOT: &str = "reboot.pending";
/// How long a queued reboot may take to bring the host down before it counts as failed.
pub const REBOOT_GRACE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The queued reboot waiting for its proof, if any (an unreadable record is none: logged).
fn pending_reboot(store: &Store) -> Option<PendingReboot> {
    let raw = store.get_kv(PENDING_REBOOT).ok().flatten()?;
    match serde_json::from_str(&raw) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("the queued reboot's record is unreadable ({e}); it is not confirmed");
            None
        }
    }
}

/// Whether the policy table classes `action` as read-only (it never moves an issue).
fn read_only(action: &Action) -> bool {
    policy::row(action.kind()).class == Class::ReadOnly
}

/// Who proposed an approval, from its `requested_by` (see [`origin_name`]); unknown names are
/// treated as the model's, the most restricted proposer.
fn origin_of(requested_by: &str) -> Origin {
    if let Some(check) = requested_by.strip_prefix("rule:") {
        return Origin::Rule { check: check.to_owned() };
    }
    match requested_by.strip_prefix("uid:").and_then(|u| u.parse().ok()) {
        Some(uid) => Origin::Person { uid },
        None => Origin::Model,
    }
}

/// An action's JSON without its free-text reason: what it would do, which approvals dedupe on.
fn what_it_does(action_json: &serde_json::Value) -> serde_json::Value {
    let mut v = action_json.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("reason");
    }
    v
}

/// What the engine did with one proposal.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalResult {
    pub action: Action,
    pub decision: Decision,
    pub approval_id: Option<i64>,
    pub action_id: Option<i64>,
}

/// A summary of one cycle, returned to `macha check` through the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    pub correlation_id: String,
    pub findings: Vec<Finding>,
    pub unknown_checks: Vec<(CheckName, String)>,
    pub resolved_issues: Vec<i64>,
    pub proposals: Vec<ProposalResult>,
}

pub struct Engine {
    store: Store,
    /// What the policy knows (built with `policy_inputs::load`, as `macha policy check` does), kept
    /// up to date: flap records as actions start, trusted hosts from the fleet, unit states from
    /// snapshots and unit events.
    policy: PolicyInputs,
    config: Config,
    history: CheckHistory,
    /// Whether the engine may create approvals and executions (false for a standalone check, which
    /// only reports what the policy would decide).
    acting: bool,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`), set by the daemon: what proves a reboot.
    /// `None`: a reboot is recorded as succeeded but not verified.
    boot_id: Option<String>,
    /// Issues opened (or back) since the last [`Engine::take_new_issues`]: what the model may be
    /// asked about. A healthy, unchanged cycle adds none; a flapping issue is added once.
    new_issues: Vec<i64>,
    /// Deployments a restart cut off, resumed with a re-decided permit (taken by the daemon once it
    /// runs: [`Engine::take_resumed`]).
    resumed: Vec<Work>,
    /// Issues whose last action was a verified remediation, not yet observed gone.
    remediated: BTreeMap<i64, (String, String)>,
    /// Remediations followed by their issue's check observing it gone, since the last
    /// [`Engine::take_learnings`].
    learnable: Vec<Learnable>,
    reopen: ReopenRule,
    /// Every host's metric detectors and volumes (metrics over time, decision 0023).
    metrics: macha_metrics::Tracker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("autonomy", &self.policy.autonomy).field("acting", &self.acting).finish()
    }
}

fn metrics_config(config: &Config) -> macha_metrics::TrackConfig {
    let (detect, fill) = config.metrics.track();
    macha_metrics::TrackConfig { detect, fill }
}

fn audit_severity(s: checks::Severity) -> AuditSeverity {
    match s {
        checks::Severity::Info => AuditSeverity::Info,
        checks::Severity::Warning => AuditSeverity::Warning,
        checks::Severity::Critical => AuditSeverity::Critical,
    }
}

fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

impl Engine {
    /// `acting = false` makes a report-only engine: issues are tracked, nothing is queued or run.
    pub fn new(store: Store, config: Config, acting: bool, now: Timestamp) -> anyhow::Result<Engine> {
        let mut store = store;
        let mut interrupted = Vec::new();
        store.set_limits(config.store_limits());
        let pending_reboot = pending_reboot(&store);
        if acting {
            // Actions a crash interrupted are closed as failed before anything new runs; a reboot
            // waiting for its proof is not interrupted (confirm_reboot settles it).
            let keep = pending_reboot.as_ref().map(|p| p.action_id);
            interrupted = store.mark_interrupted_actions(now, keep).context("closing interrupted actions")?;
            for a in &interrupted {
                tracing::warn!(action_id = a.id, kind = %a.kind, target = %a.target, "action interrupted by a restart");
            }
        }
        // The same inputs `macha policy check` builds: the flap guard survives restarts (reloaded
        // from what ran within its window) and the registry's trusted hosts apply at once.
        let policy = crate::policy_inputs::load(&config, Some(&store), crate::now_at(now))?;
        let history = store
            .get_kv("checks.history")
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let metrics = macha_metrics::Tracker::new(metrics_config(&config));
        let mut engine = Engine {
            metrics,
            store,
            policy,
            config,
            history,
            acting,
            boot_id: None,
            new_issues: Vec::new(),
            resumed: Vec::new(),
            remediated: BTreeMap::new(),
            learnable: Vec::new(),
            reopen: ReopenRule::default(),
        };
        if acting {
            let keep = pending_reboot.as_ref().and_then(|p| p.approval_id);
            engine.move_on_after_interruption(&interrupted, keep, now)?;
        }
        Ok(engine)
    }

    /// This boot's id, from the daemon (which reads it at start).
    pub fn set_boot_id(&mut self, boot_id: Option<String>) {
        self.boot_id = boot_id;
    }

    /// Settles a queued reboot of this host: succeeded and verified once the boot id changed;
    /// failed if the host is still on the same boot after [`REBOOT_GRACE`]; succeeded but not
    /// verified when the boot id cannot be read. Called at start and with every maintenance.
    pub fn confirm_reboot(&mut self, now: Timestamp) -> anyhow::Result<()> {
        let Some(p) = pending_reboot(&self.store) else { return Ok(()) };
        let outcome = match self.boot_id.as_deref() {
            Some(current) if current != p.boot_id => ActionOutcome {
                succeeded: true,
                verified: true,
                detail: format!("the host is back with boot id {current} (was {})", p.boot_id),
                output: None,
            },
            Some(_) if now.since(p.queued_at) <= REBOOT_GRACE => return Ok(()),
            Some(_) => ActionOutcome::failed(format!(
                "the host did not go down within {} min of the reboot being queued (same boot id {})",
                REBOOT_GRACE.as_secs() / 60,
                p.boot_id
            )),
            None => ActionOutcome {
                succeeded: true,
                verified: false,
                detail: "the boot id cannot be read, so the reboot cannot be confirmed".into(),
                output: None,
            },
        };
        self.store.delete_kv(PENDING_REBOOT)?;
        let PendingReboot { action, action_id, approval_id, issue_id, correlation_id, .. } = p;
        self.settle(&action, action_id, approval_id, issue_id, &correlation_id, &outcome, now)
    }

    /// After a crash: the issues and approvals of interrupted actions move on as if the action had
    /// failed (an issue left `acting` would never be proposed for again), and so does an approval
    /// left `approved` without an action (the crash came between approving and starting).
    fn move_on_after_interruption(
        &mut self,
        interrupted: &[macha_store::ActionRecord],
        keep_approval: Option<i64>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        const WHY: &str = "the action was interrupted by a restart";
        for a in interrupted {
            if let Some(issue) = a.issue_id {
                self.issue_event(issue, IssueEvent::ActionFinished { verified: false }, now, &a.correlation_id, WHY)?;
            }
        }
        // Every action was closed above, so an approval still `approved` has nothing left running.
        for approval in self.store.list_approvals(&[ApprovalState::Approved], None)? {
            if Some(approval.id) == keep_approval {
                continue;
            }
            // A deployment cut off after its timer was armed is resumed from its host, not failed.
            let why = match self.resume_deployment(&approval, now)? {
                None => continue,
                Some(unknown) => unknown,
            };
            let why = why.as_deref().unwrap_or(WHY);
            let audit = NewAudit::new(
                now,
                AuditKind::Approval,
                AuditSeverity::Warning,
                &approval.host,
                format!("approval {} failed: {why}", approval.id),
            )
            .with_correlation_id(&approval.correlation_id);
            match self.store.transition_approval(
                approval.id,
                ApprovalState::Approved,
                ApprovalState::Failed,
                "engine",
                Some(why),
                now,
                &audit,
            ) {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(issue) = approval.issue_id {
                self.issue_event(
                    issue,
                    IssueEvent::ActionFinished { verified: false },
                    now,
                    &approval.correlation_id,
                    WHY,
                )?;
            }
        }
        Ok(())
    }

    /// An approved deployment a restart cut off: with a record of it armed on its host, it is
    /// resumed under a permit re-decided now and bound to the same deployment (`Ok(None)`; the
    /// executor settles it from the host, [`Engine::take_resumed`]). Otherwise `Ok(Some(why))`:
    /// the approval fails, with the deployment `unknown` when it had been armed (reconciled later
    /// from the host), or as interrupted (`None` inside) when nothing shows it reached the host.
    fn resume_deployment(
        &mut self,
        approval: &macha_store::ApprovalRecord,
        now: Timestamp,
    ) -> anyhow::Result<Option<Option<String>>> {
        let Ok(action @ Action::NixosSwitch { .. }) = serde_json::from_value::<Action>(approval.action.clone()) else {
            return Ok(Some(None));
        };
        let dir = crate::deployments::journal_dir(&self.config);
        let Some(record) = macha_exec::journal::for_approval(&dir, approval.id).filter(|r| r.final_state.is_none())
        else {
            return Ok(Some(None));
        };
        let unknown = |why: &str| {
            Some(Some(format!(
                "deployment {} on {}: unknown (a restart of Macha cut it off and {why}; it is reconciled from the \
                 host when it is reached)",
                record.deploy, record.host
            )))
        };
        let ctx = match approval.evidence() {
            Some(evidence) => self.policy.context().with_approval(evidence),
            None => self.policy.context(),
        };
        let ruling = policy::decide(&action, &origin_of(&approval.requested_by), &ctx, crate::now_at(now));
        let Ruling::Execute(permit) = ruling else {
            let d = ruling.decision();
            return Ok(unknown(&format!("the policy now decides {}: {}", d.verdict.as_str(), d.reason)));
        };
        let Some(permit) = permit.resuming(record.deploy.as_str()) else {
            return Ok(unknown("its permit cannot be bound to it"));
        };
        // Carried out by this run from now on: not reconciled a second time beside it.
        let mut ours = record.clone();
        ours.run = macha_exec::journal::run_id().to_owned();
        if let Err(e) = macha_exec::journal::write(&dir, &ours) {
            tracing::warn!(deploy = %record.deploy, "cannot record the resumed deployment: {e}");
        }
        self.store.append_audit(
            &NewAudit::new(
                now,
                AuditKind::Approval,
                AuditSeverity::Notice,
                &approval.host,
                format!(
                    "approval {}: resuming deployment {} on {} after a restart of Macha (settled from the host)",
                    approval.id, record.deploy, record.host
                ),
            )
            .with_correlation_id(&approval.correlation_id),
        )?;
        let work = self.start(permit, approval.issue_id, now, &approval.correlation_id)?;
        self.resumed.push(work);
        Ok(None)
    }

    /// The deployments resumed at start, to be carried out now (once).
    pub fn take_resumed(&mut self) -> Vec<Work> {
        std::mem::take(&mut self.resumed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn autonomy(&self) -> Autonomy {
        self.policy.autonomy
    }

    /// What the policy knows right now.
    pub fn policy_inputs(&self) -> &PolicyInputs {
        &self.policy
    }

    /// Remediations followed by their issue observed gone, since the last call (for learnings).
    pub fn take_learnings(&mut self) -> Vec<Learnable> {
        std::mem::take(&mut self.learnable)
    }

    /// Notes what a unit was seen doing (the policy decides a restart of a stopped unit as a start).
    fn note_unit(&mut self, host: &HostName, unit: &str, active_state: &str) {
        let Ok(name) = macha_core::UnitName::parse(unit) else { return };
        match UnitActivity::from_active_state(active_state) {
            Some(a) => self.policy.unit_states.insert((host.clone(), name), a),
            None => self.policy.unit_states.remove(&(host.clone(), name)),
        };
    }

    /// The issues opened or come back since the last call (for the model's analysis).
    pub fn take_new_issues(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.new_issues)
    }

    /// The hosts other than `local` that actions may target: the trusted hosts of the registry
    /// (set by the fleet whenever the registry changes).
    pub fn set_known_hosts(&mut self, hosts: BTreeSet<HostName>) {
        self.policy.known_hosts = hosts;
    }

    /// Drops the metric detectors of every host other than this one that `registered` does not
    /// keep (a host removed from the registry or forgotten); returns how many were dropped. Its
    /// stored history stays: were it registered again, its detectors are warmed from it.
    pub fn forget_metrics_except(&mut self, registered: impl Fn(&HostName) -> bool) -> usize {
        let gone: Vec<HostName> = self.metrics.hosts().filter(|h| !h.is_local() && !registered(h)).cloned().collect();
        for h in &gone {
            tracing::debug!(host = %h, "forgetting the metric detectors of a host no longer in the fleet");
            self.metrics.forget(h);
        }
        gone.len()
    }

    /// Whether the engine holds metric detectors for `host`.
    pub fn tracks_metrics_of(&self, host: &HostName) -> bool {
        self.metrics.knows(host)
    }

    /// One periodic cycle over a snapshot: evaluate, track issues, propose remediations, expire
    /// approvals and age issues. Returns the report and the work to execute.
    pub fn cycle(&mut self, snapshot: &Snapshot, correlation_id: &str) -> anyhow::Result<(CycleReport, Vec<Work>)> {
        let started = std::time::Instant::now();
        let now = snapshot.taken_at;
        // The store-growth baseline is this host's; other hosts' snapshots are checked without one.
        let no_history = CheckHistory::default();
        let history = if snapshot.host.is_local() { &self.history } else { &no_history };
        let mut evaluation = checks::evaluate(snapshot, &self.config.thresholds, history);
        self.observe_metrics(snapshot, &mut evaluation);
        self.record_snapshot(snapshot, &evaluation)?;
        if let Some(units) = snapshot.units.data() {
            for u in &units.notable {
                self.note_unit(&snapshot.host, &u.name, &u.active_state);
            }
        }
        let mut report = CycleReport {
            correlation_id: correlation_id.to_owned(),
            findings: evaluation.findings().cloned().collect(),
            unknown_checks: evaluation.unknown().map(|(c, r)| (c, r.to_owned())).collect(),
            resolved_issues: Vec::new(),
            proposals: Vec::new(),
        };
        let mut work = Vec::new();
        let tools = checks::HostTools::of(snapshot);
        for finding in evaluation.findings() {
            let (proposals, w) = self.handle_finding(finding, tools, correlation_id)?;
            report.proposals.extend(proposals);
            work.extend(w);
        }
        // Issues of this host whose check now observed the condition gone.
        report.resolved_issues = self.resolve_cleared(&evaluation, now, correlation_id)?;
        if snapshot.host.is_local() {
            self.update_history(snapshot);
        }
        if self.acting {
            self.expire_approvals(now)?;
        }
        self.age_issues(now)?;
        self.policy.flap.prune(crate::mono_now());
        crate::prom::after_cycle(&self.store, snapshot, started);
        Ok((report, work))
    }

    /// One history row per host and cycle (not an audit record: the trail keeps what Macha decided
    /// and did; history is bounded by `Store::maintain`).
    fn record_snapshot(&mut self, snap: &Snapshot, ev: &Evaluation) -> anyhow::Result<()> {
        self.store.record_history(&macha_store::NewHistory::from_snapshot(snap, ev))?;
        Ok(())
    }

    /// Metrics over time: the snapshot's samples are stored and judged, and the outcomes of the
    /// checks judged over time (anomaly, fill-up) join the evaluation. A host seen for the first
    /// time since the start is first warmed with its stored samples of the last day. A failed
    /// write is logged; it never fails the cycle.
    fn observe_metrics(&mut self, snap: &Snapshot, ev: &mut Evaluation) {
        if !self.metrics.knows(&snap.host) {
            let since = snap.taken_at.minus(macha_store::metrics::RAW_KEEP);
            match self.store.metric_rows(snap.host.as_str(), since) {
                Ok(rows) => {
                    let rows: Vec<_> = rows
                        .into_iter()
                        .map(|(t, samples)| {
                            let samples = samples
                                .into_iter()
                                .filter_map(|(n, v)| macha_metrics::MetricKey::parse(&n).ok().map(|k| (k, v)))
                                .collect();
                            (t, samples)
                        })
                        .collect();
                    self.metrics.warm(&snap.host, &rows);
                }
                Err(e) => tracing::warn!(host = %snap.host, "reading the metric history failed: {e}"),
            }
        }
        let observed = self.metrics.observe(snap);
        let samples: Vec<(&str, f64)> = observed.samples.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        if !samples.is_empty()
            && let Err(e) = self.store.record_metrics(snap.host.as_str(), snap.taken_at, &samples)
        {
            tracing::warn!(host = %snap.host, "storing metrics failed: {e}");
        }
        if self.config.metrics.anomaly_enable {
            ev.set(observed.anomaly);
        }
        ev.set(observed.fillup);
    }

    /// Downsamples and deletes what has aged out (history, prompts, cached outputs,
    /// conversations), in bounded batches; cheap when nothing is due. Failures are logged.
    pub fn maintain(&mut self, now: Timestamp) {
        if self.acting
            && let Err(e) = self.confirm_reboot(now)
        {
            tracing::warn!("settling a queued reboot failed: {e:#}");
        }
        match self.store.maintain(now) {
            Ok(m) if !m.is_idle() => tracing::debug!(?m, "store maintenance"),
            Ok(_) => {}
            Err(e) => tracing::warn!("store maintenance failed: {e}"),
        }
    }

    fn update_history(&mut self, snap: &Snapshot) {
        if let Some(nix) = snap.nix.data() {
            let stale = self
                .history
                .store_baseline
                .is_none_or(|(t, _)| snap.taken_at.since(t) > std::time::Duration::from_secs(2 * 86_400));
            if stale {
                self.history.store_baseline = Some((snap.taken_at, nix.store_used_bytes()));
                if let Ok(s) = serde_json::to_string(&self.history) {
                    let _ = self.store.set_kv("checks.history", &s);
                }
            }
        }
    }

    /// A finding from a cycle or an event: open or refresh its issue and, if the issue is open,
    /// propose the deterministic remediations.
    pub fn handle_finding(
        &mut self,
        finding: &Finding,
        tools: checks::HostTools,
        correlation_id: &str,
    ) -> anyhow::Result<(Vec<ProposalResult>, Vec<Work>)> {
        let now = finding.observed_at;
        let (issue, fresh) = self.upsert_issue(finding, correlation_id)?;
        if issue.state != IssueState::Open {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut results = Vec::new();
        let mut work = Vec::new();
        for action in checks::remediations(finding, tools) {
            // A read-only action never moves the issue, so it would be proposed at every cycle:
            // it runs once per opening (new, or come back).
            if read_only(&action) && !fresh {
                continue;
            }
            let origin = Origin::Rule { check: finding.check.as_str().to_owned() };
            let (r, w) = self.propose(action, origin, Some(issue.id), now, correlation_id)?;
            results.push(r);
            work.extend(w);
        }
        Ok((results, work))
    }

    /// Opens or refreshes the finding's issue. Returns it and whether it was opened or came back
    /// just now.
    fn upsert_issue(&mut self, finding: &Finding, correlation_id: &str) -> anyhow::Result<(IssueRecord, bool)> {
        let now = finding.observed_at;
        let fp = finding.fingerprint();
        let host = finding.host.as_str();
        match self.store.active_issue_by_fingerprint(&fp)? {
            None => {
                let audit = NewAudit::new(
                    now,
                    AuditKind::Finding,
                    audit_severity(finding.severity),
                    host,
                    format!("new issue: {}", finding.summary),
                )
                .with_correlation_id(correlation_id)
                .with_subject(&finding.subject)
                .with_payload(json(finding));
                let new = NewIssue {
                    host: host.to_owned(),
                    check_name: finding.check.as_str().to_owned(),
                    subject: finding.subject.clone(),
                    severity: audit_severity(finding.severity),
                    summary: finding.summary.clone(),
                    details: json(finding),
                    seen_at: now,
                };
                let issue = self.store.insert_issue(&new, &audit)?;
                self.new_issues.push(issue.id);
                tracing::info!(issue_id = issue.id, fingerprint = %fp, correlation_id, "issue opened: {}", finding.summary);
                Ok((issue, true))
            }
            Some(issue) => {
                let event = IssueEvent::Observed(Observation::Present);
                match issue.lifecycle().apply(now, &event) {
                    Some(next) if next.state != issue.state => {
                        // Reopenings within the window make it flapping: analysed once, not at
                        // every reopening.
                        let earlier: Vec<Timestamp> = issue.details["reopened_at"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|t| t.as_i64()).map(Timestamp).collect())
                            .unwrap_or_default();
                        let was_flapping = issue.details["flapping"].as_bool() == Some(true);
                        let (reopened_at, flapping) = self.reopen.note(&earlier, now);
                        let mut details = json(finding);
                        if let Some(o) = details.as_object_mut() {
                            o.insert("reopened_at".into(), json(&reopened_at.iter().map(|t| t.0).collect::<Vec<_>>()));
                            o.insert("flapping".into(), serde_json::Value::Bool(flapping));
                        }
                        let summary = if flapping {
                            format!(
                                "issue {} came back ({} times within {} min: flapping): {}",
                                issue.id,
                                reopened_at.len(),
                                self.reopen.window.as_secs() / 60,
                                finding.summary
                            )
                        } else {
                            format!("issue {} came back: {}", issue.id, finding.summary)
                        };
                        let audit =
                            NewAudit::new(now, AuditKind::Issue, audit_severity(finding.severity), host, summary)
                                .with_correlation_id(correlation_id)
                                .with_subject(&finding.subject);
                        let changes = IssueChanges {
                            summary: Some(finding.summary.clone()),
                            details: Some(details),
                            ..IssueChanges::default()
                        };
                        let updated = self.store.update_issue(issue.id, issue.state, &next, &changes, &audit)?;
                        if !(flapping && was_flapping) {
                            self.new_issues.push(updated.id);
                        }
                        Ok((updated, true))
                    }
                    Some(_) => Ok((self.store.touch_issue(issue.id, issue.state, now)?, false)),
                    None => Ok((issue, false)),
                }
            }
        }
    }

    /// Resolves the active issues of the evaluated host whose check now says `Clear`.
    fn resolve_cleared(&mut self, ev: &Evaluation, now: Timestamp, correlation_id: &str) -> anyhow::Result<Vec<i64>> {
        let mut resolved = Vec::new();
        for issue in self.store.issues_in_states(&[IssueState::Open, IssueState::Acting])? {
            if issue.host != ev.host.as_str() {
                continue;
            }
            let Some(check) = CheckName::parse(&issue.check_name) else { continue };
            let obs = ev.observe(check, &issue.subject);
            if self.observe_issue(&issue, obs, now, correlation_id, "the check observed the condition gone")? {
                resolved.push(issue.id);
            }
        }
        Ok(resolved)
    }

    /// Applies an observation to an issue. Returns whether it was resolved by it.
    fn observe_issue(
        &mut self,
        issue: &IssueRecord,
        obs: Observation,
        now: Timestamp,
        correlation_id: &str,
        why: &str,
    ) -> anyhow::Result<bool> {
        if obs != Observation::Clear {
            return Ok(false);
        }
        let Some(next) = issue.lifecycle().apply(now, &IssueEvent::Observed(obs)) else { return Ok(false) };
        let audit = NewAudit::new(
            now,
            AuditKind::Issue,
            AuditSeverity::Notice,
            &issue.host,
            format!("issue {} resolved: {why}", issue.id),
        )
        .with_correlation_id(correlation_id)
        .with_subject(&issue.subject);
        let changes = IssueChanges { resolution: Some(why.to_owned()), ..IssueChanges::default() };
        match self.store.update_issue(issue.id, issue.state, &next, &changes, &audit) {
            Ok(_) => {
                if next.state == IssueState::Resolved
                    && let Some((action, correlation_id)) = self.remediated.remove(&issue.id)
                {
                    self.learnable.push(Learnable { action, issue_id: issue.id, correlation_id });
                }
                Ok(next.state == IssueState::Resolved)
            }
            // Someone else moved it meanwhile (a person, an action outcome): theirs stands.
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A unit changed state (from the systemd signal stream): `failed` raises a finding at once,
    /// `active` is an observation that clears a failed-unit issue.
    pub fn unit_event(
        &mut self,
        host: &HostName,
        unit: &str,
        active_state: &str,
        result: Option<&str>,
        now: Timestamp,
        correlation_id: &str,
    ) -> anyhow::Result<(Vec<ProposalResult>, Vec<Work>)> {
        self.note_unit(host, unit, active_state);
        match checks::unit_state_observation(active_state) {
            Observation::Present => {
                let finding = checks::unit_failed_finding(host, unit, result, now);
                // A failed unit's remediation (a restart) needs neither Nix nor the journal.
                self.handle_finding(&finding, checks::HostTools::ALL, correlation_id)
            }
            Observation::Clear => {
                let fp = fingerprint(host.as_str(), CheckName::FailedUnit.as_str(), unit);
                // An observation of the issue's own check: it resolves the issue whether or not an
                // action is still running for it.
                if let Some(issue) = self.store.active_issue_by_fingerprint(&fp)? {
                    self.observe_issue(
                        &issue,
                        Observation::Clear,
                        now,
                        correlation_id,
                        "systemd reports the unit active",
                    )?;
                }
                Ok((Vec::new(), Vec::new()))
            }
            Observation::Unknown => Ok((Vec::new(), Vec::new())),
        }
    }

    /// Runs one proposal through the policy and records the decision; queues or permits it.
    /// Like [`Engine::propose`], for a model working for a viewer (who may not let anything run):
    /// the decision is made with no kind the model may execute, so what it proposes is queued for
    /// an admin (or denied), never executed.
    pub fn propose_queued(
        &mut self,
        action: Action,
        origin: Origin,
        issue_id: Option<i64>,
        now: Timestamp,
        correlation_id: &str,
    ) -> anyhow::Result<(ProposalResult, Option<Work>)> {
        let allowed = std::mem::take(&mut self.policy.limits.model_may_execute);
        let result = self.propose(action, origin, issue_id, now, correlation_id);
        self.policy.limits.model_may_execute = allowed;
        result
    }

    pub fn propose(
        &mut self,
        action: Action,
        origin: Origin,
        issue_id: Option<i64>,
        now: Timestamp,
        correlation_id: &str,
    ) -> anyhow::Result<(ProposalResult, Option<Work>)> {
        let ruling = policy::decide(&action, &origin, &self.policy.context(), crate::now_at(now));
        let decision = ruling.decision().clone();
        macha_prom::publish(|m| m.decision(decision.verdict));
        let host = action.hosts().as_slice().first().map_or("local", HostName::as_str).to_owned();
        let audit_sev = match decision.verdict {
            Verdict::Execute => AuditSeverity::Info,
            Verdict::Approval => AuditSeverity::Notice,
            Verdict::Deny => AuditSeverity::Warning,
        };
        self.store.append_audit(
            &NewAudit::new(
                now,
                AuditKind::Decision,
                audit_sev,
                &host,
                format!("{}: {} ({})", decision.verdict.as_str(), action.describe(), decision.reason),
            )
            .with_correlation_id(correlation_id)
            .with_subject(action.subject())
            .with_payload(
                serde_json::json!({"action": action, "decision": decision, "origin": origin, "issue_id": issue_id}),
            ),
        )?;
        tracing::info!(
            correlation_id,
            verdict = decision.verdict.as_str(),
            risk = decision.risk.as_str(),
            rule = %decision.rule,
            "decision on {}: {}",
            action.describe(),
            decision.reason
        );
        let mut result = ProposalResult { action: action.clone(), decision, approval_id: None, action_id: None };
        if !self.acting {
            // Report-only: the decision is recorded, nothing is queued or run. The permit is dropped
            // here on purpose.
            drop(ruling);
            return Ok((result, None));
        }
        match ruling {
            Ruling::Deny(_) => Ok((result, None)),
            Ruling::Approval(decision) => {
                // One open request per thing it would do (kind, hosts, target, arguments — not the
                // free-text reason, not the issue): a repeat attaches to it and is recorded.
                let action_json = json(&action);
                let wanted = what_it_does(&action_json);
                let duplicate = self
                    .store
                    .list_approvals(&[ApprovalState::Pending, ApprovalState::Approved], None)?
                    .into_iter()
                    .find(|a| what_it_does(&a.action) == wanted);
                if let Some(existing) = duplicate {
                    let by = origin_name(&origin);
                    self.store.append_audit(
                        &NewAudit::new(
                            now,
                            AuditKind::Approval,
                            AuditSeverity::Info,
                            &host,
                            format!("approval {} proposed again by {by}: {}", existing.id, action.describe()),
                        )
                        .with_correlation_id(correlation_id)
                        .with_subject(action.subject())
                        .with_payload(serde_json::json!({
                            "approval_id": existing.id, "proposed_again_by": by, "origin": origin,
                            "issue_id": issue_id, "reason": action.reason(),
                        })),
                    )?;
                    result.approval_id = Some(existing.id);
                    return Ok((result, None));
                }
                let new = NewApproval {
                    host: host.clone(),
                    action: action_json,
                    decision: json(&decision),
                    reason: action.reason().to_owned(),
                    requested_by: origin_name(&origin),
                    requested_at: now,
                    expires_at: now.plus(self.config.approval_expiry),
                    correlation_id: correlation_id.to_owned(),
                    issue_id,
                };
                let audit = NewAudit::new(
                    now,
                    AuditKind::Approval,
                    AuditSeverity::Notice,
                    &host,
                    format!("approval requested: {} ({})", action.describe(), decision.reason),
                )
                .with_correlation_id(correlation_id)
                .with_subject(action.subject());
                let record = self.store.create_approval(&new, &audit)?;
                tracing::info!(approval_id = record.id, correlation_id, "queued for approval: {}", action.describe());
                result.approval_id = Some(record.id);
                if let Some(id) = issue_id
                    && !read_only(&action)
                {
                    self.issue_event(id, IssueEvent::ActionStarted, now, correlation_id, "an action awaits approval")?;
                }
                Ok((result, None))
            }
            Ruling::Execute(permit) => {
                let work = self.start(permit, issue_id, now, correlation_id)?;
                result.action_id = Some(work.ticket.action_id);
                Ok((result, Some(work)))
            }
        }
    }

    /// Logs a permitted action as running and counts it for the flap guard.
    fn start(
        &mut self,
        permit: Permit,
        issue_id: Option<i64>,
        now: Timestamp,
        correlation_id: &str,
    ) -> anyhow::Result<Work> {
        let action = permit.action();
        let host = action.hosts().as_slice().first().cloned().unwrap_or_else(HostName::local);
        let target = flap_key(&host, action);
        let new = NewAction {
            correlation_id: correlation_id.to_owned(),
            ts_started: now,
            host: host.as_str().to_owned(),
            kind: action.kind().as_str().to_owned(),
            target: target.clone(),
            approval_id: permit.approval_id(),
            issue_id,
        };
        let audit = NewAudit::new(
            now,
            AuditKind::Action,
            AuditSeverity::Notice,
            host.as_str(),
            format!("executing {}", action.describe()),
        )
        .with_correlation_id(correlation_id)
        .with_subject(action.subject())
        .with_payload(serde_json::json!({"action": action, "decision": permit.decision()}));
        let action_id = self.store.record_action_started(&new, &audit)?;
        for h in action.hosts().as_slice() {
            self.policy.flap.record(&flap_key(h, action), crate::mono_now());
        }
        // A read-only action (a diagnostic) leaves its issue where it is.
        if let Some(id) = issue_id
            && !read_only(action)
        {
            self.issue_event(id, IssueEvent::ActionStarted, now, correlation_id, "an action started")?;
        }
        let ticket = Ticket {
            action: action.clone(),
            permit_id: permit.id(),
            approval_id: permit.approval_id(),
            action_id,
            issue_id,
            correlation_id: correlation_id.to_owned(),
        };
        Ok(Work { permit, ticket })
    }

    fn issue_event(
        &mut self,
        id: i64,
        event: IssueEvent,
        now: Timestamp,
        correlation_id: &str,
        why: &str,
    ) -> anyhow::Result<()> {
        let Some(issue) = self.store.get_issue(id)? else { return Ok(()) };
        let Some(next) = issue.lifecycle().apply(now, &event) else { return Ok(()) };
        if next.state == issue.state {
            return Ok(());
        }
        let audit = NewAudit::new(
            now,
            AuditKind::Issue,
            AuditSeverity::Info,
            &issue.host,
            format!("issue {id}: {} → {} ({why})", issue.state, next.state),
        )
        .with_correlation_id(correlation_id)
        .with_subject(&issue.subject);
        let changes = IssueChanges {
            resolution: (next.state == IssueState::Resolved).then(|| why.to_owned()),
            ..IssueChanges::default()
        };
        match self.store.update_issue(id, issue.state, &next, &changes, &audit) {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records what the executor reports for the permit of `ticket` (the receipt must name that
    /// permit; one that names another is recorded as a failure), moves the approval on and puts the
    /// issue back to `open` for its check to decide.
    pub fn finish_action(&mut self, ticket: Ticket, receipt: &Receipt, now: Timestamp) -> anyhow::Result<()> {
        if *receipt.permit() != ticket.permit_id {
            let mismatch = ActionOutcome::failed(format!(
                "the executor's receipt names permit {} but this action ran under permit {}; recorded as failed",
                receipt.permit().serial,
                ticket.permit_id.serial
            ));
            return self.record_outcome(ticket, &mismatch, now);
        }
        self.record_outcome(ticket, receipt.outcome(), now)
    }

    /// [`Engine::finish_action`] once the receipt was checked.
    pub(crate) fn record_outcome(
        &mut self,
        ticket: Ticket,
        outcome: &ActionOutcome,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let Ticket { action, approval_id, action_id, issue_id, correlation_id, .. } = ticket;
        // A local reboot that systemd queued is proven only by the host coming back: it stays
        // open (action running, approval approved) until then.
        if let (Action::Reboot { host, .. }, true, Some(boot_id)) = (&action, outcome.succeeded, &self.boot_id)
            && host.as_slice().iter().all(HostName::is_local)
            && !outcome.verified
        {
            let pending = PendingReboot {
                action: action.clone(),
                action_id,
                approval_id,
                issue_id,
                correlation_id: correlation_id.clone(),
                boot_id: boot_id.clone(),
                queued_at: now,
            };
            self.store.set_kv(PENDING_REBOOT, &serde_json::to_string(&pending)?)?;
            self.store.append_audit(
                &NewAudit::new(
                    now,
                    AuditKind::Action,
                    AuditSeverity::Notice,
                    "local",
                    format!("{} queued: {}; it is confirmed when the host is back", action.describe(), outcome.detail),
                )
                .with_correlation_id(&correlation_id)
                .with_subject(action.subject()),
            )?;
            return Ok(());
        }
        self.settle(&action, action_id, approval_id, issue_id, &correlation_id, outcome, now)
    }

    /// Records an action's outcome: the action row and its audit record, the issue and the
    /// approval moved on.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        action: &Action,
        action_id: i64,
        approval_id: Option<i64>,
        issue_id: Option<i64>,
        correlation_id: &str,
        outcome: &ActionOutcome,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let correlation_id = correlation_id.to_owned();
        let host = action.hosts().as_slice().first().map_or("local", HostName::as_str).to_owned();
        let sev = if outcome.succeeded { AuditSeverity::Notice } else { AuditSeverity::Error };
        let verdict = match (outcome.succeeded, outcome.verified) {
            (true, true) => "succeeded and verified",
            (true, false) => "succeeded but not verified",
            (false, _) => "failed",
        };
        let audit = NewAudit::new(
            now,
            AuditKind::Outcome,
            sev,
            &host,
            format!("{} {verdict}: {}", action.describe(), outcome.detail),
        )
        .with_correlation_id(&correlation_id)
        .with_subject(action.subject())
        .with_payload(json(outcome));
        self.store.record_action_finished(
            action_id,
            outcome.succeeded && outcome.verified,
            Some(&outcome.detail),
            now,
            &audit,
        )?;
        tracing::info!(action_id, correlation_id = %correlation_id, succeeded = outcome.succeeded, verified = outcome.verified, "{} {verdict}", action.describe());
        crate::prom::action_finished(action, outcome.succeeded, outcome.verified, &outcome.detail);
        // A read-only action never moves its issue; any other outcome puts it back to `open` and
        // only its check resolves it. A verified remediation is remembered for a learning once the
        // check has observed the condition gone (perhaps already, from a unit event).
        if let Some(id) = issue_id
            && !read_only(action)
        {
            let verified = outcome.succeeded && outcome.verified;
            let why = if verified {
                "the action was verified; the check decides whether the issue is gone"
            } else {
                "the action did not do what it was for"
            };
            self.issue_event(id, IssueEvent::ActionFinished { verified }, now, &correlation_id, why)?;
            if verified {
                let resolved = self.store.get_issue(id)?.is_some_and(|i| i.state == IssueState::Resolved);
                if resolved {
                    self.learnable.push(Learnable {
                        action: action.describe(),
                        issue_id: id,
                        correlation_id: correlation_id.clone(),
                    });
                } else {
                    self.remediated.insert(id, (action.describe(), correlation_id.clone()));
                }
            } else {
                self.remediated.remove(&id);
                // The knowledge entries this issue used did not help.
                if let Err(e) = macha_knowledge::kb::record_outcome(&mut self.store, id, false, now) {
                    tracing::warn!("knowledge outcome of issue {id}: {e}");
                }
            }
        }
        if let Some(id) = approval_id {
            let to =
                if outcome.succeeded && outcome.verified { ApprovalState::Executed } else { ApprovalState::Failed };
            let audit =
                NewAudit::new(now, AuditKind::Approval, sev, &host, format!("approval {id} {to}: {}", outcome.detail))
                    .with_correlation_id(&correlation_id);
            match self.store.transition_approval(
                id,
                ApprovalState::Approved,
                to,
                "executor",
                Some(&outcome.detail),
                now,
                &audit,
            ) {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A person approved approval `id`: mark it approved, then re-decide the action now (the world
    /// may have changed; a deny stands even after approval) and permit it.
    pub fn approve(
        &mut self,
        id: i64,
        by: &str,
        note: Option<&str>,
        now: Timestamp,
    ) -> anyhow::Result<(Decision, Option<Work>)> {
        let record = self.store.get_approval(id)?.ok_or_else(|| anyhow::format_err!("approval {id} does not exist"))?;
        let action: Action = serde_json::from_value(record.action.clone())
            .map_err(|e| anyhow::format_err!("approval {id} holds an action this version cannot read: {e}"))?;
        let correlation_id = record.correlation_id.clone();
        let audit = NewAudit::new(
            now,
            AuditKind::Approval,
            AuditSeverity::Notice,
            &record.host,
            format!("approval {id} approved by {by}: {}", action.describe()),
        )
        .with_correlation_id(&correlation_id)
        .with_subject(action.subject());
        let approved = self.store.transition_approval(
            id,
            ApprovalState::Pending,
            ApprovalState::Approved,
            by,
            note,
            now,
            &audit,
        )?;
        // The approval enters the policy only as evidence made from the stored record, bound to the
        // exact stored action; the proposer is the one who asked for it.
        let ctx = match approved.evidence() {
            Some(evidence) => self.policy.context().with_approval(evidence),
            None => self.policy.context(),
        };
        let ruling = policy::decide(&action, &origin_of(&record.requested_by), &ctx, crate::now_at(now));
        let decision = ruling.decision().clone();
        self.store.append_audit(
            &NewAudit::new(
                now,
                AuditKind::Decision,
                AuditSeverity::Notice,
                &record.host,
                format!("re-decided at execution: {}: {}", decision.verdict.as_str(), decision.reason),
            )
            .with_correlation_id(&correlation_id)
            .with_subject(action.subject())
            .with_payload(json(&decision)),
        )?;
        match ruling {
            Ruling::Execute(permit) => {
                let work = self.start(permit, record.issue_id, now, &correlation_id)?;
                Ok((decision, Some(work)))
            }
            Ruling::Approval(d) | Ruling::Deny(d) => {
                let note = format!("refused at execution time: {}", d.reason);
                let audit = NewAudit::new(
                    now,
                    AuditKind::Approval,
                    AuditSeverity::Warning,
                    &record.host,
                    format!("approval {id} failed: {note}"),
                )
                .with_correlation_id(&correlation_id);
                self.store.transition_approval(
                    id,
                    ApprovalState::Approved,
                    ApprovalState::Failed,
                    "policy",
                    Some(&note),
                    now,
                    &audit,
                )?;
                if let Some(issue) = record.issue_id {
                    self.issue_event(
                        issue,
                        IssueEvent::ActionFinished { verified: false },
                        now,
                        &correlation_id,
                        "the approved action was refused",
                    )?;
                }
                Ok((d, None))
            }
        }
    }

    pub fn reject(&mut self, id: i64, by: &str, note: Option<&str>, now: Timestamp) -> anyhow::Result<()> {
        let record = self.store.get_approval(id)?.ok_or_else(|| anyhow::format_err!("approval {id} does not exist"))?;
        let audit = NewAudit::new(
            now,
            AuditKind::Approval,
            AuditSeverity::Notice,
            &record.host,
            format!("approval {id} rejected by {by}"),
        )
        .with_correlation_id(&record.correlation_id);
        self.store.transition_approval(id, ApprovalState::Pending, ApprovalState::Rejected, by, note, now, &audit)?;
        if let Some(note) = note.map(str::trim).filter(|n| !n.is_empty()) {
            // The reason goes into the request's discussion as the person's turn, so the model
            // reads it the next time anyone discusses this request (and, through the issue's
            // rejections, when it proposes for the issue again). The rejection itself stands
            // even if this cannot be written.
            let turn = ("user".to_owned(), rejection_turn(note), Some(by.to_owned()));
            if let Err(e) = self.store.append_conversation(&approval_conversation(id), Some(id), &[turn], now) {
                tracing::warn!(approval_id = id, "cannot add the rejection's reason to the discussion: {e}");
            }
        }
        if let Some(issue) = record.issue_id {
            self.issue_event(
                issue,
                IssueEvent::ActionFinished { verified: false },
                now,
                &record.correlation_id,
                "the proposed action was rejected",
            )?;
        }
        Ok(())
    }

    fn expire_approvals(&mut self, now: Timestamp) -> anyhow::Result<()> {
        for a in self.store.expire_approvals(now)? {
            tracing::info!(approval_id = a.id, "approval expired unanswered");
            if let Some(issue) = a.issue_id {
                self.issue_event(
                    issue,
                    IssueEvent::ActionFinished { verified: false },
                    now,
                    &a.correlation_id,
                    "the approval expired",
                )?;
            }
        }
        Ok(())
    }

    fn age_issues(&mut self, now: Timestamp) -> anyhow::Result<()> {
        let tick = IssueEvent::Tick { close_after: self.config.close_after, archive_after: self.config.archive_after };
        for issue in self.store.issues_in_states(&[IssueState::Resolved, IssueState::Closed])? {
            if let Some(next) = issue.lifecycle().apply(now, &tick) {
                let audit = NewAudit::new(
                    now,
                    AuditKind::Issue,
                    AuditSeverity::Info,
                    &issue.host,
                    format!("issue {}: {} → {}", issue.id, issue.state, next.state),
                )
                .with_subject(&issue.subject);
                match self.store.update_issue(issue.id, issue.state, &next, &IssueChanges::default(), &audit) {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// A person resolves or closes an issue by hand.
    pub fn manual_issue(
        &mut self,
        id: i64,
        close: bool,
        by: &str,
        note: Option<&str>,
        now: Timestamp,
    ) -> anyhow::Result<IssueRecord> {
        let issue = self.store.get_issue(id)?.ok_or_else(|| anyhow::format_err!("issue {id} does not exist"))?;
        let event = if close { IssueEvent::ManualClose } else { IssueEvent::ManualResolve };
        let next: Lifecycle = issue.lifecycle().apply(now, &event).ok_or_else(|| {
            anyhow::format_err!(
                "issue {id} is {}; it cannot be {}",
                issue.state,
                if close { "closed" } else { "resolved" }
            )
        })?;
        let verb = if close { "closed" } else { "resolved" };
        let why = match note {
            Some(n) => format!("{verb} by {by}: {n}"),
            None => format!("{verb} by {by}"),
        };
        let audit =
            NewAudit::new(now, AuditKind::Issue, AuditSeverity::Notice, &issue.host, format!("issue {id} {why}"))
                .with_subject(&issue.subject);
        let changes = IssueChanges { resolution: Some(why), ..IssueChanges::default() };
        Ok(self.store.update_issue(id, issue.state, &next, &changes, &audit)?)
    }

    /// Records an alert (a source went away, the journal follower died, …).
    pub fn alert(&mut self, now: Timestamp, summary: &str, payload: serde_json::Value) -> anyhow::Result<()> {
        tracing::warn!("{summary}");
        self.store.append_audit(
            &NewAudit::new(now, AuditKind::Alert, AuditSeverity::Warning, "local", summary).with_payload(payload),
        )?;
        Ok(())
    }
}

/// The conversation in which approval `id` is discussed (`macha chat --approval`, `discuss`).
pub fn approval_conversation(id: i64) -> String {
    format!("approval-{id}")
}

/// A rejection's reason as the person's turn in the request's discussion.
pub fn rejection_turn(note: &str) -> String {
    format!("I rejected this request. My reason: {note}")
}

fn origin_name(origin: &Origin) -> String {
    match origin {
        Origin::Rule { check } => format!("rule:{check}"),
        Origin::Model => "model".into(),
        Origin::Person { uid } => format!("uid:{uid}"),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
