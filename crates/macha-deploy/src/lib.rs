//! The sans-IO core of Macha's NixOS deployments.
//!
//! Everything a deployment decides lives here, with no SSH, no processes, no store and no runtime:
//! the version order Nix uses ([`version::compare`]), the closure diff a person reads before
//! approving ([`diff`]), what an approval is bound to and the validated store path every other piece
//! passes around ([`binding`]), the per-host state machine that turns events into the next commands
//! and ends in one truthful [`machine::Final`] state ([`machine`]), and the fleet scheduler with its
//! summary table ([`fleet`]), and the judgement that settles a deployment Macha could not finish from
//! what the host shows later ([`reconcile`]). The daemon wires these to SSH, the lab and the CLI; time is always a
//! parameter ([`macha_core::Timestamp`]), so every rule is a plain unit test. The protocol and its
//! reasons are in `docs/decisions/0011-deployments.md`.

pub mod binding;
pub mod diff;
pub mod fleet;
pub mod machine;
pub mod reconcile;
pub mod version;

pub use binding::{StorePath, approval_binding, parse_store_path};
pub use diff::{
    ChangeKind, ClosureDiff, DiffError, Notable, NotableKind, PackageChange, no_change, parse_diff_closures,
};
pub use fleet::{FleetError, FleetPlan, FleetSummary, Scheduler, SummaryRow};
pub use machine::{
    Baseline, Command, DeployId, DeploySpec, DisarmAck, DisarmToken, Event, Final, HealthCheck, HealthResult,
    HostDeploy, HostRecord, MachineError, Observed, Phase, PhaseTiming, RecordState, Timeouts, UnitState, verify,
};
pub use reconcile::{ActivationView, DeployRecord, HostView, Judgement, Reconciled, TimerView, judge};
