//! Tests of the reconciliation judgement: every branch of [`judge`], with a simulated clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::binding::parse_store_path;
use crate::machine::{HealthCheck, HealthResult};
use macha_core::UnitName;

const OLD: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixos-system-web1-24.05";
const NEW: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-web1-24.11";
const OTHER: &str = "/nix/store/11111111111111111111111111111111-nixos-system-web1-hand";
const BOOT: &str = "b1";

fn path(s: &str) -> StorePath {
    parse_store_path(s).unwrap()
}

/// Seconds after the timer was armed.
fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis((1_700_000_000 + secs) * 1000)
}

fn checks() -> Vec<HealthCheck> {
    vec![HealthCheck::UnitActive(UnitName::parse("nginx").unwrap()), HealthCheck::Tcp { port: 22 }]
}

fn record() -> DeployRecord {
    DeployRecord {
        deploy: DeployId::parse("d42").unwrap(),
        host: HostName::parse("web1").unwrap(),
        approval_id: Some(7),
        old: path(OLD),
        new: path(NEW),
        baseline: Baseline {
            system: path(OLD),
            generation: None,
            boot_id: BOOT.into(),
            failed_units: ["old-broken.service".to_owned()].into(),
            health: checks(),
        },
        armed_at: t(0),
        dead_man: Duration::from_secs(900),
        run: "run1".into(),
        final_state: None,
        notes: Vec::new(),
        reconciled: None,
    }
}

fn view(system: &str, timer: TimerView, activation: ActivationView) -> HostView {
    HostView {
        observed: Observed {
            current_system: path(system),
            boot_id: BOOT.into(),
            failed_units: ["old-broken.service".to_owned()].into(),
            health: checks()
                .into_iter()
                .map(|c| HealthResult { check: c, passed: true, detail: "ok".into() })
                .collect(),
        },
        timer,
        activation,
    }
}

fn failed(detail: &str) -> ActivationView {
    ActivationView::Failed { detail: detail.into() }
}

fn settled(j: &Judgement) -> Option<&Final> {
    match j {
        Judgement::Settled { final_state, .. } => Some(final_state),
        _ => None,
    }
}

fn text(j: &Judgement) -> &str {
    match j {
        Judgement::Settled { how, .. } | Judgement::Commit { how } => how,
        Judgement::Undecided { why } => why,
    }
}

#[test]
fn old_system_after_the_timer_fired_is_rolled_back_only_when_it_verifies() {
    let j = judge(&record(), &view(OLD, TimerView::Fired, ActivationView::Gone), t(950));
    assert_eq!(settled(&j), Some(&Final::RolledBack));
    assert!(text(&j).contains("by the host's dead-man timer") && text(&j).contains("which verifies"), "{j:?}");
    // The same with a health check failing: the rollback does not verify.
    let mut v = view(OLD, TimerView::Fired, ActivationView::Gone);
    v.observed.health[0].passed = false;
    v.observed.health[0].detail = "ActiveState=failed".into();
    let j = judge(&record(), &v, t(950));
    assert_eq!(settled(&j), Some(&Final::RollbackFailed));
    assert!(text(&j).contains("health check unit nginx.service active failed"), "{j:?}");
    // A unit failed that had not before the deployment.
    let mut v = view(OLD, TimerView::Fired, ActivationView::Gone);
    v.observed.failed_units.insert("sshd.service".into());
    assert_eq!(settled(&judge(&record(), &v, t(950))), Some(&Final::RollbackFailed));
}

#[test]
fn a_timer_gone_after_its_deadline_has_run_its_course() {
    // A fired timer whose service succeeded is unloaded: gone, and past its time.
    let j = judge(&record(), &view(OLD, TimerView::Gone, ActivationView::Gone), t(901));
    assert_eq!(settled(&j), Some(&Final::RolledBack));
    assert!(text(&j).contains("due at"), "{j:?}");
    // Exactly at the deadline counts as due.
    assert_eq!(
        settled(&judge(&record(), &view(OLD, TimerView::Gone, ActivationView::Gone), t(900))),
        Some(&Final::RolledBack)
    );
}

#[test]
fn old_system_after_a_failed_activation_is_verified_as_a_rollback() {
    let v = view(OLD, TimerView::Armed, failed("exit status 1"));
    let j = judge(&record(), &v, t(100));
    assert_eq!(settled(&j), Some(&Final::RolledBack));
    assert!(text(&j).contains("the activation failed (exit status 1)"), "{j:?}");
    // The failed activation unit itself is not a new failed unit of the host.
    let mut v = view(OLD, TimerView::Armed, failed("exit status 1"));
    v.observed.failed_units.insert("macha-deploy-d42.service".into());
    assert_eq!(settled(&judge(&record(), &v, t(100))), Some(&Final::RolledBack));
    // But another deployment's is.
    v.observed.failed_units.insert("macha-deploy-e99.service".into());
    assert_eq!(settled(&judge(&record(), &v, t(100))), Some(&Final::RollbackFailed));
}

#[test]
fn old_system_without_evidence_stays_unknown() {
    // Timer still armed, activation left no trace: judged again after the timer.
    let j = judge(&record(), &view(OLD, TimerView::Armed, ActivationView::Gone), t(100));
    assert!(matches!(&j, Judgement::Undecided { why } if why.contains("still armed")), "{j:?}");
    // Timer gone before its time: someone else acted.
    let j = judge(&record(), &view(OLD, TimerView::Gone, ActivationView::Gone), t(899));
    assert!(matches!(&j, Judgement::Undecided { why } if why.contains("someone else acted")), "{j:?}");
    // An activation that exited well while the host runs the old system: not provable either.
    let j = judge(&record(), &view(OLD, TimerView::Armed, ActivationView::Succeeded), t(100));
    assert!(matches!(j, Judgement::Undecided { .. }), "{j:?}");
}

#[test]
fn new_system_with_the_timer_armed_in_time_is_committed_after_verification() {
    let j = judge(&record(), &view(NEW, TimerView::Armed, ActivationView::Gone), t(100));
    assert!(matches!(&j, Judgement::Commit { how } if how.contains("verifies")), "{j:?}");
    // The activation unit that exited 4 (kept) does not change that.
    let j = judge(&record(), &view(NEW, TimerView::Armed, ActivationView::Succeeded), t(100));
    assert!(matches!(j, Judgement::Commit { .. }), "{j:?}");
    // Within the margin of the deadline: too late to race the timer.
    let j = judge(&record(), &view(NEW, TimerView::Armed, ActivationView::Gone), t(871));
    assert!(matches!(&j, Judgement::Undecided { why } if why.contains("too late")), "{j:?}");
    let j = judge(&record(), &view(NEW, TimerView::Armed, ActivationView::Gone), t(869));
    assert!(matches!(j, Judgement::Commit { .. }), "{j:?}");
}

#[test]
fn new_system_that_does_not_verify_is_left_to_the_timer() {
    let mut v = view(NEW, TimerView::Armed, ActivationView::Gone);
    v.observed.failed_units.insert("nginx.service".into());
    let j = judge(&record(), &v, t(100));
    assert!(
        matches!(&j, Judgement::Undecided { why } if why.contains("does not verify") && why.contains("nginx.service")),
        "{j:?}"
    );
}

#[test]
fn new_system_after_the_timer_fired_is_a_failed_rollback() {
    let j = judge(&record(), &view(NEW, TimerView::Fired, ActivationView::Gone), t(950));
    assert_eq!(settled(&j), Some(&Final::RollbackFailed));
}

#[test]
fn new_system_with_the_timer_gone_unconfirmed_stays_unknown() {
    for now in [t(100), t(950)] {
        let j = judge(&record(), &view(NEW, TimerView::Gone, ActivationView::Gone), now);
        assert!(matches!(&j, Judgement::Undecided { why } if why.contains("someone else acted")), "{j:?}");
    }
}

#[test]
fn a_running_activation_or_a_third_system_stays_unknown() {
    let j = judge(&record(), &view(NEW, TimerView::Armed, ActivationView::Running), t(100));
    assert!(matches!(&j, Judgement::Undecided { why } if why.contains("still running")), "{j:?}");
    let j = judge(&record(), &view(OTHER, TimerView::Gone, ActivationView::Gone), t(950));
    assert!(matches!(&j, Judgement::Undecided { why } if why.contains("neither")), "{j:?}");
}

#[test]
fn a_reboot_is_said_and_what_the_host_runs_is_judged() {
    let rebooted = |system: &str| {
        let mut v = view(system, TimerView::Gone, ActivationView::Gone);
        v.observed.boot_id = "b2".into();
        v
    };
    let j = judge(&record(), &rebooted(OLD), t(100));
    assert_eq!(settled(&j), Some(&Final::RolledBack));
    assert!(text(&j).contains("rebooted") && text(&j).contains("b1 became b2"), "{j:?}");
    let mut v = rebooted(OLD);
    v.observed.failed_units.insert("nginx.service".into());
    assert_eq!(settled(&judge(&record(), &v, t(100))), Some(&Final::RollbackFailed));
    let j = judge(&record(), &rebooted(NEW), t(100));
    assert!(matches!(&j, Judgement::Undecided { why } if why.contains("rebooted")), "{j:?}");
    let j = judge(&record(), &rebooted(OTHER), t(100));
    assert!(matches!(&j, Judgement::Undecided { why } if why.contains("neither")), "{j:?}");
}

#[test]
fn only_unknown_or_unfinished_records_wait_for_reconciliation() {
    let mut r = record();
    assert!(r.unsettled());
    r.final_state = Some(Final::Unknown);
    assert!(r.unsettled());
    for f in [Final::Succeeded, Final::RolledBack, Final::RollbackFailed, Final::Refused { reason: "x".into() }] {
        r.final_state = Some(f);
        assert!(!r.unsettled());
    }
    assert_eq!(r.timer_due(), t(900));
}

#[test]
fn the_record_survives_a_round_trip_through_json() {
    let r = record();
    let back: DeployRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}
