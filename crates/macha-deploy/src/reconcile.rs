//! Settling a deployment Macha could not finish: its final state was `unknown` (the host was not
//! reached after the activation), or Macha itself stopped while the deployment was in flight (the
//! daemon restarted, which is what deploying the host Macha runs on does when the new system
//! changes Macha's own unit).
//!
//! When the host is reached again, the caller reads what it shows now ([`HostView`]: the running
//! system, the boot id, the failed units, the health checks, the dead-man timer and the activation
//! unit) and [`judge`] decides, from that and the [`DeployRecord`] written when the timer was armed,
//! with the clock passed in:
//!
//! - The host runs the recorded old system and its dead-man timer fired, or was due and is gone, or
//!   the activation unit failed: `rolled back`, but only when the old system verifies against the
//!   baseline (failed units ⊆ the baseline's, every health check passes), else `rollback failed`.
//! - The host runs the new system, the timer is still armed and its deadline is far enough: the new
//!   system is verified as the deployment would have; when it passes the caller may disarm and
//!   commit ([`Judgement::Commit`]), which is the only change a reconciliation ever makes.
//! - The host runs the new system and the timer is gone without Macha's confirmation: someone else
//!   acted; the deployment stays `unknown` with that note. A timer that fired while the new system
//!   still runs is `rollback failed`.
//! - The boot id changed: the host rebooted; the note says so and what it runs is judged (the
//!   activation never touched the boot entry, so the old system is what it should boot).
//! - Anything else (a third system, an activation still running, a timer about to fire) stays
//!   `unknown`, never guessed ([`Judgement::Undecided`]).

use crate::binding::StorePath;
use crate::machine::{Baseline, DeployId, Final, Observed, verify};
use macha_core::{HostName, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What Macha records about a deployment when it arms the host's dead-man timer, and updates when
/// the deployment ends or is reconciled. It outlives the daemon: a restarted Macha reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub deploy: DeployId,
    pub host: HostName,
    /// The approval the deployment carries out.
    pub approval_id: Option<i64>,
    pub old: StorePath,
    pub new: StorePath,
    /// What preflight read before anything changed.
    pub baseline: Baseline,
    /// When the dead-man timer was armed.
    pub armed_at: Timestamp,
    /// How long after arming the timer fires.
    pub dead_man: Duration,
    /// Which run of the daemon carries the deployment out (a record of another run that never got a
    /// final state was cut off by a restart).
    pub run: String,
    /// The final state, once there is one (`unknown` included).
    pub final_state: Option<Final>,
    /// What happened along the way, in sentences.
    pub notes: Vec<String>,
    /// How a reconciliation settled it, if one did.
    pub reconciled: Option<Reconciled>,
}

impl DeployRecord {
    /// When the host's timer fires.
    pub fn timer_due(&self) -> Timestamp {
        self.armed_at.plus(self.dead_man)
    }

    /// Whether the record waits for a reconciliation: no final state, or `unknown`, and not settled
    /// by one already.
    pub fn unsettled(&self) -> bool {
        matches!(self.final_state, None | Some(Final::Unknown))
    }
}

/// A reconciliation that settled a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    pub at: Timestamp,
    /// How the final state was reached, in a sentence.
    pub how: String,
}

/// The dead-man timer as the host shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerView {
    /// The timer is loaded and active: it has not fired.
    Armed,
    /// Its service started: the timer fired (a service that succeeded is unloaded by systemd, so
    /// this is seen when the re-activation failed or still runs).
    Fired,
    /// Neither the timer nor its service is loaded: it was stopped, or it fired and its service
    /// succeeded, or the host rebooted.
    Gone,
}

/// The activation unit as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "activation", rename_all = "snake_case")]
pub enum ActivationView {
    Running,
    /// Exited with 0 or 4 (live; a unit that succeeded is usually unloaded, so this is rare).
    Succeeded,
    /// Exited with another status or was killed.
    Failed {
        detail: String,
    },
    /// Not loaded: it succeeded and was unloaded, never ran, or was forgotten.
    Gone,
}

/// What the host shows when it is reached again (every read over one fresh connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub observed: Observed,
    pub timer: TimerView,
    pub activation: ActivationView,
}

/// What a reconciliation decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "judgement", rename_all = "snake_case")]
pub enum Judgement {
    /// The deployment ended here; `how` says how it got there.
    Settled { final_state: Final, how: String },
    /// The new system runs and verifies, and the timer is still armed with time to spare: disarm
    /// (acknowledged) and commit as the deployment would have; only then is it `succeeded`.
    Commit { how: String },
    /// Nothing more can be proven; the deployment stays `unknown` with this note.
    Undecided { why: String },
}

/// How long before the timer's deadline a commit is no longer started (the disarm must not race the
/// timer).
pub const COMMIT_MARGIN: Duration = Duration::from_secs(30);

/// Judges a deployment from its record and what the host shows `now`. Pure: every branch has a
/// unit test with a simulated clock.
pub fn judge(record: &DeployRecord, host: &HostView, now: Timestamp) -> Judgement {
    let seen = &host.observed;
    let on_old = seen.current_system == record.old;
    let on_new = seen.current_system == record.new;
    let due = record.timer_due();
    let rebooted = seen.boot_id != record.baseline.boot_id;
    if rebooted {
        let why = format!(
            "the host rebooted since the deployment (boot id {} became {})",
            record.baseline.boot_id, seen.boot_id
        );
        // The activation (`test`) never touched the boot entry: the old system is what it boots
        // unless the commit had been made.
        if on_old {
            return verified_old(record, seen, &format!("{why}; it booted the recorded old system"));
        }
        if on_new {
            return Judgement::Undecided {
                why: format!(
                    "{why} and runs the new system: the boot entry was moved, by this deployment's commit or by \
                     someone else, which cannot be told apart"
                ),
            };
        }
        return Judgement::Undecided { why: format!("{why} and runs {}, neither system", seen.current_system) };
    }
    if host.activation == ActivationView::Running {
        return Judgement::Undecided { why: "the activation is still running on the host".to_owned() };
    }
    if on_new {
        return match host.timer {
            TimerView::Armed if now.plus(COMMIT_MARGIN) < due => {
                match verify(&record.baseline, &own(record, seen), &record.new) {
                    Ok(()) => Judgement::Commit {
                        how: "the host runs the new system, which verifies, and its dead-man timer was still armed"
                            .to_owned(),
                    },
                    Err(problems) => Judgement::Undecided {
                        why: format!(
                            "the host runs the new system but it does not verify ({}); its dead-man timer rolls it back \
                         at {due}",
                            problems.join("; ")
                        ),
                    },
                }
            }
            TimerView::Armed => Judgement::Undecided {
                why: format!("the host runs the new system and its dead-man timer fires at {due}: too late to commit"),
            },
            TimerView::Fired => Judgement::Settled {
                final_state: Final::RollbackFailed,
                how: "the host's dead-man timer fired, but the host still runs the new system".to_owned(),
            },
            TimerView::Gone => Judgement::Undecided {
                why: "the host runs the new system, but its dead-man timer is gone without Macha's confirmation: \
                      someone else acted"
                    .to_owned(),
            },
        };
    }
    if on_old {
        let by = match (&host.timer, &host.activation) {
            (TimerView::Fired, _) => Some("rolled back by the host's dead-man timer".to_owned()),
            (TimerView::Gone, _) if now >= due => {
                Some(format!("rolled back by the host's dead-man timer (due at {due}, and run)"))
            }
            (_, ActivationView::Failed { detail }) => {
                Some(format!("the activation failed ({detail}) and the host is back on the recorded old system"))
            }
            _ => None,
        };
        return match by {
            Some(by) => verified_old(record, seen, &by),
            None if host.timer == TimerView::Armed => Judgement::Undecided {
                why: format!(
                    "the host runs the old system and nothing shows the activation ran; its dead-man timer is still \
                     armed (due at {due}) and it is judged again after that"
                ),
            },
            None => Judgement::Undecided {
                why: "the host runs the old system, but its dead-man timer is gone before its time without Macha's \
                      confirmation: someone else acted"
                    .to_owned(),
            },
        };
    }
    Judgement::Undecided { why: format!("the host runs {}, neither the old nor the new system", seen.current_system) }
}

/// The observation without this deployment's own units among the failed ones (a failed activation
/// unit stays loaded, and a reconciliation does not change the host to forget it).
fn own(record: &DeployRecord, seen: &Observed) -> Observed {
    let prefix = format!("macha-deploy-{}", record.deploy.as_str());
    let mut seen = seen.clone();
    seen.failed_units.retain(|u| !u.starts_with(&prefix));
    seen
}

/// `RolledBack` when the old system verifies against the baseline (its boot id is not compared: a
/// reboot is said in `how`), else `RollbackFailed`.
fn verified_old(record: &DeployRecord, seen: &Observed, how: &str) -> Judgement {
    let baseline = Baseline { boot_id: seen.boot_id.clone(), ..record.baseline.clone() };
    match verify(&baseline, &own(record, seen), &record.old) {
        Ok(()) => Judgement::Settled { final_state: Final::RolledBack, how: format!("{how}, which verifies") },
        Err(problems) => Judgement::Settled {
            final_state: Final::RollbackFailed,
            how: format!("{how}, which does not verify: {}", problems.join("; ")),
        },
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
