//! What an execution reports, and the rules every backend shares: the verification table, the
//! alias re-check against the protected units, and how command results and several hosts'
//! outcomes become one report.

use macha_core::policy::{Permit, PermitId, ProtectedUnits, UnitActivity};
use macha_core::{Action, HostName, UnitName};
use macha_observe::systemd::{CleanupRun, SystemdError};
use serde::Serialize;

/// What the executor reports back for one permit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionOutcome {
    pub succeeded: bool,
    /// The condition the action was for was observed gone afterwards.
    pub verified: bool,
    pub detail: String,
    /// Command output or job result, truncated.
    pub output: Option<String>,
}

impl ActionOutcome {
    /// A failure: nothing (or not everything) was done.
    pub fn failed(detail: impl Into<String>) -> ActionOutcome {
        ActionOutcome { succeeded: false, verified: false, detail: detail.into(), output: None }
    }
}

/// What the executor hands back for a permit it consumed: the outcome and the permit's identity, so
/// the outcome is recorded against the permit it came from. Only the executor makes a receipt of a
/// run; [`Receipt::not_run`] records that a permit was consumed without a result (a panic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    outcome: ActionOutcome,
    permit: PermitId,
}

impl Receipt {
    pub(crate) fn new(outcome: ActionOutcome, permit: PermitId) -> Receipt {
        Receipt { outcome, permit }
    }

    /// A failed receipt for a permit whose execution produced no outcome (the executor panicked).
    pub fn not_run(permit: PermitId, detail: impl Into<String>) -> Receipt {
        Receipt { outcome: ActionOutcome::failed(detail), permit }
    }

    pub fn outcome(&self) -> &ActionOutcome {
        &self.outcome
    }

    pub fn permit(&self) -> &PermitId {
        &self.permit
    }

    /// The receipt with its texts (detail and output) passed through `redact` before they are
    /// stored; what happened (succeeded, verified) and the permit it names stay as they are.
    pub fn redacted(mut self, redact: impl Fn(&str) -> String) -> Receipt {
        self.outcome.detail = redact(&self.outcome.detail);
        self.outcome.output = self.outcome.output.as_deref().map(&redact);
        self
    }
}

/// Before a restart: a unit that is not running and has not failed is stopped, and restarting it
/// would start it. Refused unless the permit covers a start (`Permit::allows_start`); the
/// policy decided the restart without knowing the unit was stopped.
pub fn restart_of_stopped(permit: &Permit, unit: &UnitName, on: &str, seen: &ObservedUnit) -> Option<ActionOutcome> {
    let stopped = matches!(UnitActivity::from_active_state(&seen.active_state), Some(UnitActivity::Stopped) | None);
    (stopped && !permit.allows_start()).then(|| {
        ActionOutcome::failed(format!(
            "{unit}{on} is {} ({}): restarting it would start it, and this permit does not cover a start; nothing was sent",
            seen.active_state, seen.sub_state
        ))
    })
}

/// The four unit jobs. Each action kind that acts on a unit maps to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitVerb {
    Restart,
    Start,
    Stop,
    ResetFailed,
}

impl UnitVerb {
    /// The unit job `action` asks for, or `None` when it is not a unit action. Exhaustive: a new
    /// action kind must say here whether it is one.
    pub fn of(action: &Action) -> Option<(UnitVerb, &UnitName)> {
        match action {
            Action::RestartUnit { unit, .. } => Some((UnitVerb::Restart, unit)),
            Action::StartUnit { unit, .. } => Some((UnitVerb::Start, unit)),
            Action::StopUnit { unit, .. } => Some((UnitVerb::Stop, unit)),
            Action::ResetFailed { unit, .. } => Some((UnitVerb::ResetFailed, unit)),
            Action::JournalVacuum { .. }
            | Action::CollectGarbage { .. }
            | Action::StoreVerify { .. }
            | Action::StoreRepair { .. }
            | Action::Diagnostic { .. }
            | Action::Reboot { .. }
            | Action::ConfigChange { .. }
            | Action::NixosSwitch { .. } => None,
        }
    }

    /// `systemctl`'s verb.
    pub fn systemctl(self) -> &'static str {
        match self {
            UnitVerb::Restart => "restart",
            UnitVerb::Start => "start",
            UnitVerb::Stop => "stop",
            UnitVerb::ResetFailed => "reset-failed",
        }
    }

    /// The unit properties that name what a job of this kind pulls along (systemd's job
    /// propagation): a stop or restart also stops or restarts the units that are part of the unit
    /// (`ConsistsOf`, from their `PartOf=`), bound to it (`BoundBy`) or require it (`RequiredBy`);
    /// a start also starts what it requires, binds to or wants. Reset-failed pulls nothing along.
    pub fn reach_properties(self) -> &'static [&'static str] {
        match self {
            UnitVerb::Restart | UnitVerb::Stop => &["ConsistsOf", "BoundBy", "RequiredBy"],
            UnitVerb::Start => &["Requires", "BindsTo", "Wants"],
            UnitVerb::ResetFailed => &[],
        }
    }

    /// The verification table: the `ActiveState`s that mean the job did what it was for.
    pub fn expected_states(self) -> &'static [&'static str] {
        match self {
            UnitVerb::Restart | UnitVerb::Start => &["active", "reloading"],
            UnitVerb::Stop => &["inactive"],
            // Reset-failed is done when the unit is no longer `failed`, whatever it does next.
            UnitVerb::ResetFailed => &["inactive", "active", "activating", "deactivating", "reloading"],
        }
    }
}

/// Defence in depth: the policy matched the name as given; systemd may know the unit under other
/// names (aliases). Returns the refusal when any of them is protected.
pub fn protected_alias<'a>(
    protected: &ProtectedUnits,
    unit: &UnitName,
    host: &HostName,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<ActionOutcome> {
    for n in names {
        if let Ok(u) = UnitName::parse(n)
            && let Some(p) = protected.protecting(&u)
        {
            let on = if host.is_local() { String::new() } else { format!(" on {host}") };
            return Some(ActionOutcome::failed(format!(
                "{unit}{on} is also known as {n}, which is protected ({p}); nothing was sent"
            )));
        }
    }
    None
}

/// A job that would reach a protected unit (stop or restart it along with the target, or start
/// it): refused before anything is sent, naming the unit and the way it is reached.
pub fn protected_reach(
    protected: &ProtectedUnits,
    unit: &UnitName,
    on: &str,
    reach: &[(String, String)],
) -> Option<ActionOutcome> {
    for (name, via) in reach {
        if let Ok(u) = UnitName::parse(name)
            && let Some(p) = protected.protecting(&u)
        {
            return Some(ActionOutcome::failed(format!(
                "the job on {unit}{on} would also reach {name} ({via}), which is protected ({p}); nothing was sent"
            )));
        }
    }
    None
}

/// The state a unit was observed in after its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedUnit {
    pub active_state: String,
    pub sub_state: String,
    pub result: Option<String>,
}

/// The outcome of a unit job that finished, judged by the state observed afterwards.
pub fn verified_unit(
    verb: UnitVerb,
    what: &str,
    unit: &UnitName,
    delay_ms: u128,
    seen: &ObservedUnit,
) -> ActionOutcome {
    ActionOutcome {
        succeeded: true,
        verified: verb.expected_states().contains(&seen.active_state.as_str()),
        detail: format!(
            "{what}; {unit} after {delay_ms} ms: {}/{}{}",
            seen.active_state,
            seen.sub_state,
            seen.result.as_ref().map(|r| format!(" (result {r})")).unwrap_or_default()
        ),
        output: None,
    }
}

/// A job that finished but whose unit could not be observed afterwards: done, not verified.
pub fn unobserved_unit(what: &str, unit: &UnitName, reason: &str) -> ActionOutcome {
    ActionOutcome {
        succeeded: true,
        verified: false,
        detail: format!("{what}, but {unit} could not be observed afterwards: {reason}"),
        output: None,
    }
}

/// How a command ended, as either backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by a signal (or the remote side did not say).
    Signalled,
    /// It did not finish within the deadline and was killed.
    TimedOut { secs: u64 },
}

/// A command's outcome: success is exit code 0; the output keeps stdout, then stderr marked.
pub fn command_outcome(display: &str, on: &str, exit: &Exit, stdout: &[u8], stderr: &[u8]) -> ActionOutcome {
    let mut text = String::from_utf8_lossy(stdout).into_owned();
    if !stderr.is_empty() {
        text.push_str("\n[stderr]\n");
        text.push_str(&String::from_utf8_lossy(stderr));
    }
    let (ok, how) = match exit {
        Exit::Code(0) => (true, "exited with status 0".to_owned()),
        Exit::Code(c) => (false, format!("exited with status {c}")),
        Exit::Signalled => (false, "was killed by a signal".to_owned()),
        Exit::TimedOut { secs } => (false, format!("did not finish within {secs} s and was killed")),
    };
    ActionOutcome { succeeded: ok, verified: ok, detail: format!("{display}{on} {how}"), output: Some(text) }
}

/// The module option that installs the fixed clean-up units.
pub const CLEANUP_UNITS_OPTION: &str = "services.macha.enable";

/// A clean-up action's run through its fixed root unit: succeeded (and verified, as a command
/// that exited 0 is) only when the unit's `Result` is `success`.
pub fn cleanup_unit_outcome(run: &CleanupRun) -> ActionOutcome {
    match run {
        CleanupRun::NotLoaded { unit, load_state } => ActionOutcome::failed(format!(
            "{unit} is not available on this host (LoadState {load_state}): Macha runs without root here, so \
             its clean-up actions run through the fixed root units that the NixOS module installs \
             ({CLEANUP_UNITS_OPTION}); nothing was run"
        )),
        CleanupRun::Ran { unit, job, result, exec_main_status } => {
            let ok = result == "success" && job.succeeded();
            ActionOutcome {
                succeeded: ok,
                verified: ok,
                detail: format!(
                    "ran through the fixed unit {unit}: job {}, Result {result}, exit status {exec_main_status} \
                     (its output: journalctl -u {unit})",
                    job.result
                ),
                output: Some(format!("Result={result}\nExecMainStatus={exec_main_status}\n")),
            }
        }
    }
}

/// A clean-up action whose fixed unit could not be run (refused, not answered, or not finished
/// within the executor's deadline, after which the unit may still be running under its own limit).
pub fn cleanup_unit_error(action: &Action, error: &SystemdError) -> ActionOutcome {
    let unit =
        macha_core::command::cleanup_unit(action).map_or_else(|_| "its fixed unit".to_owned(), |u| u.to_string());
    let after = match error {
        SystemdError::JobTimeout { .. } => "; the unit may still be running (journalctl -u it to see)",
        _ => "; nothing was run",
    };
    ActionOutcome::failed(format!("{} through the fixed unit {unit} failed: {error}{after}", action.kind()))
}

/// One report for an action that ran on several hosts: it succeeded (was verified) only if it did
/// everywhere; every host's detail and output is kept, in order.
pub fn combine(outcomes: Vec<(HostName, ActionOutcome)>) -> ActionOutcome {
    if outcomes.len() == 1 {
        if let Some((_, only)) = outcomes.into_iter().next() {
            return only;
        }
        return ActionOutcome::failed("no host to act on");
    }
    if outcomes.is_empty() {
        return ActionOutcome::failed("no host to act on");
    }
    let mut output = String::new();
    for (h, o) in &outcomes {
        if let Some(text) = &o.output {
            output.push_str(&format!("== {h}\n{text}\n"));
        }
    }
    ActionOutcome {
        succeeded: outcomes.iter().all(|(_, o)| o.succeeded),
        verified: outcomes.iter().all(|(_, o)| o.verified),
        detail: outcomes.iter().map(|(h, o)| format!("{h}: {}", o.detail)).collect::<Vec<_>>().join("; "),
        output: (!output.is_empty()).then_some(output),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reach_that_touches_a_protected_unit_refuses_and_names_the_way() {
        let protected = ProtectedUnits::new(&["guarded"]);
        let target = unit("lab-demo");
        let reach = vec![
            ("follower.service".to_owned(), "ConsistsOf of lab-demo.service".to_owned()),
            ("sshd.service".to_owned(), "BoundBy of follower.service".to_owned()),
        ];
        let refused = protected_reach(&protected, &target, " on h1", &reach).unwrap();
        assert!(!refused.succeeded);
        assert!(refused.detail.contains("sshd.service (BoundBy of follower.service)"), "{}", refused.detail);
        assert!(refused.detail.contains("on h1") && refused.detail.contains("nothing was sent"));
        let configured = vec![("guarded.service".to_owned(), "ConsistsOf of lab-demo.service".to_owned())];
        assert!(protected_reach(&protected, &target, "", &configured).is_some());
        let harmless = vec![("follower.service".to_owned(), "ConsistsOf of lab-demo.service".to_owned())];
        assert!(protected_reach(&protected, &target, "", &harmless).is_none());
        assert!(UnitVerb::ResetFailed.reach_properties().is_empty());
        assert!(UnitVerb::Restart.reach_properties().contains(&"ConsistsOf"));
    }

    #[test]
    fn a_cleanup_unit_succeeds_only_on_result_success_and_names_the_unit() {
        use macha_observe::systemd::{JobOutcome, JobResult};
        let unit = "macha-journal-vacuum@30.service".to_owned();
        let job = |r: JobResult| JobOutcome { unit: unit.clone(), job: Some("/job/1".into()), result: r };
        let ok = cleanup_unit_outcome(&CleanupRun::Ran {
            unit: unit.clone(),
            job: job(JobResult::Done),
            result: "success".into(),
            exec_main_status: 0,
        });
        assert!(ok.succeeded && ok.verified, "{ok:?}");
        assert!(ok.detail.contains("through the fixed unit macha-journal-vacuum@30.service"), "{}", ok.detail);
        let failed = cleanup_unit_outcome(&CleanupRun::Ran {
            unit: unit.clone(),
            job: job(JobResult::Failed),
            result: "exit-code".into(),
            exec_main_status: 1,
        });
        assert!(!failed.succeeded && !failed.verified);
        assert!(failed.detail.contains("Result exit-code, exit status 1"), "{}", failed.detail);
        // A job that systemd reports done is not enough: the unit's Result decides.
        let odd = cleanup_unit_outcome(&CleanupRun::Ran {
            unit: unit.clone(),
            job: job(JobResult::Done),
            result: "timeout".into(),
            exec_main_status: 0,
        });
        assert!(!odd.succeeded);
        let missing = cleanup_unit_outcome(&CleanupRun::NotLoaded { unit, load_state: "not-found".into() });
        assert!(!missing.succeeded);
        assert!(
            missing.detail.contains("macha-journal-vacuum@30.service")
                && missing.detail.contains("not-found")
                && missing.detail.contains(CLEANUP_UNITS_OPTION)
                && missing.detail.contains("nothing was run"),
            "{}",
            missing.detail
        );
    }

    #[test]
    fn a_cleanup_unit_error_names_the_unit_and_whether_it_may_still_run() {
        let action = Action::CollectGarbage { host: Default::default(), older_than_days: 14, reason: String::new() };
        let refused = cleanup_unit_error(&action, &SystemdError::Refused("no".into()));
        assert!(
            refused.detail.contains("macha-collect-garbage@14.service") && refused.detail.ends_with("nothing was run")
        );
        let late = cleanup_unit_error(
            &action,
            &SystemdError::JobTimeout {
                unit: "macha-collect-garbage@14.service".into(),
                job: "/job/2".into(),
                timeout: std::time::Duration::from_secs(90),
            },
        );
        assert!(!late.succeeded && late.detail.contains("may still be running"), "{}", late.detail);
    }

    #[test]
    fn a_redacted_receipt_keeps_what_happened_and_its_permit() {
        let outcome = ActionOutcome {
            succeeded: true,
            verified: true,
            detail: "journalctl exited 0".into(),
            output: Some("MYSQL_PWD=hunter2 connected".into()),
        };
        let permit =
            PermitId { serial: 1, action_digest: "d".into(), approval_id: None, issued_at: macha_core::Timestamp(0) };
        let r = Receipt::new(outcome, permit.clone()).redacted(|t| t.replace("hunter2", "[REDACTED]"));
        assert_eq!(r.outcome().output.as_deref(), Some("MYSQL_PWD=[REDACTED] connected"));
        assert!(r.outcome().succeeded && r.outcome().verified);
        assert_eq!(r.permit(), &permit);
    }
    use macha_core::action::Hosts;

    fn unit(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[test]
    fn every_unit_kind_has_one_verb_and_a_verification() {
        let u = unit("nginx");
        let reason = "r".to_owned();
        let cases = [
            (
                Action::RestartUnit { unit: u.clone(), host: Hosts::default(), reason: reason.clone() },
                UnitVerb::Restart,
                "active",
            ),
            (
                Action::StartUnit { unit: u.clone(), host: Hosts::default(), reason: reason.clone() },
                UnitVerb::Start,
                "active",
            ),
            (
                Action::StopUnit { unit: u.clone(), host: Hosts::default(), reason: reason.clone() },
                UnitVerb::Stop,
                "inactive",
            ),
            (
                Action::ResetFailed { unit: u.clone(), host: Hosts::default(), reason },
                UnitVerb::ResetFailed,
                "inactive",
            ),
        ];
        for (action, verb, good) in cases {
            let (v, n) = UnitVerb::of(&action).unwrap();
            assert_eq!((v, n), (verb, &u));
            assert!(v.expected_states().contains(&good));
            assert!(!v.expected_states().contains(&"failed"), "{v:?} must never verify a failed unit");
        }
        // A stop is not verified by an active unit, a restart not by an inactive one.
        assert!(!UnitVerb::Stop.expected_states().contains(&"active"));
        assert!(!UnitVerb::Restart.expected_states().contains(&"inactive"));
    }

    #[test]
    fn an_alias_that_is_protected_refuses() {
        let protected = ProtectedUnits::new::<&str>(&[]);
        let host = HostName::local();
        let refused = protected_alias(&protected, &unit("lab-demo"), &host, ["lab-demo.service", "sshd.service"]);
        let refused = refused.unwrap();
        assert!(!refused.succeeded && refused.detail.contains("sshd.service"), "{}", refused.detail);
        assert!(protected_alias(&protected, &unit("lab-demo"), &host, ["lab-demo.service"]).is_none());
    }

    #[test]
    fn verification_and_commands() {
        let seen = ObservedUnit {
            active_state: "failed".into(),
            sub_state: "failed".into(),
            result: Some("exit-code".into()),
        };
        let o = verified_unit(UnitVerb::Restart, "job done", &unit("a"), 500, &seen);
        assert!(o.succeeded && !o.verified);
        assert!(o.detail.contains("failed/failed (result exit-code)"), "{}", o.detail);

        let ok = command_outcome("/bin/true", "", &Exit::Code(0), b"out", b"");
        assert!(ok.succeeded && ok.verified && ok.output.as_deref() == Some("out"));
        let timed = command_outcome("/bin/sleep 9", " on h1", &Exit::TimedOut { secs: 3 }, b"", b"e");
        assert!(!timed.succeeded);
        assert!(timed.detail.contains("on h1 did not finish within 3 s"), "{}", timed.detail);
        assert!(timed.output.unwrap().contains("[stderr]\ne"));
        let killed = command_outcome("x", "", &Exit::Signalled, b"", b"");
        assert!(killed.detail.contains("killed by a signal"));
    }

    #[test]
    fn several_hosts_succeed_only_together() {
        let a = HostName::parse("a").unwrap();
        let b = HostName::parse("b").unwrap();
        let good = ActionOutcome { succeeded: true, verified: true, detail: "ok".into(), output: Some("1".into()) };
        let all = combine(vec![(a.clone(), good.clone()), (b.clone(), ActionOutcome::failed("down"))]);
        assert!(!all.succeeded && !all.verified);
        assert_eq!(all.detail, "a: ok; b: down");
        assert_eq!(all.output.as_deref(), Some("== a\n1\n"));
        assert_eq!(combine(vec![(a, good.clone())]), good);
        assert!(!combine(Vec::new()).succeeded);
    }

    fn restart_permit(autonomy: macha_core::policy::Autonomy) -> Permit {
        use macha_core::policy::{PolicyInputs, Ruling, decide};
        let inputs = PolicyInputs::new(autonomy, ProtectedUnits::new::<&str>(&[]));
        let action = Action::RestartUnit { host: Hosts::default(), unit: unit("nginx"), reason: "r".into() };
        let now = macha_core::Now::new(macha_core::Timestamp(0), macha_core::Mono(0));
        match decide(&action, &macha_core::action::Origin::Person { uid: 0 }, &inputs.context(), now) {
            Ruling::Execute(p) => p,
            other => panic!("{:?}", other.decision()),
        }
    }

    /// Finding: `restart_unit` of a stopped unit started it at auto-safe. The executor looks first
    /// and refuses unless the permit covers a start.
    #[test]
    fn a_restart_of_a_stopped_unit_needs_a_permit_that_covers_a_start() {
        use macha_core::policy::Autonomy;
        let seen = |state: &str| ObservedUnit { active_state: state.into(), sub_state: "x".into(), result: None };
        let safe = restart_permit(Autonomy::AutoSafe);
        let full = restart_permit(Autonomy::AutoFull);
        for state in ["inactive", "deactivating", "maintenance"] {
            let refused = restart_of_stopped(&safe, &unit("nginx"), "", &seen(state));
            assert!(
                refused.as_ref().is_some_and(|o| !o.succeeded && o.detail.contains("does not cover a start")),
                "{state}"
            );
            assert_eq!(restart_of_stopped(&full, &unit("nginx"), "", &seen(state)), None, "{state}");
        }
        for state in ["active", "failed", "activating", "reloading"] {
            assert_eq!(restart_of_stopped(&safe, &unit("nginx"), "", &seen(state)), None, "{state}");
        }
    }
}
