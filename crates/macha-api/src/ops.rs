//! One type per operation, each tied to the type of its answer by [`Call`].
//!
//! The client sends an operation with `Client::call(op)` and gets `op`'s `Reply`; the daemon
//! answers with `Response::reply::<Op>(&reply)`, which only accepts that same type. So a change of
//! an answer's type is a compile error at both ends, not a key that silently goes missing.

use crate::reply::{
    ApprovalDetail, ApprovalView, ApproveResult, AuditEntry, AuditKind, ChatAnswer, CheckReport, DeployPlan,
    DeployProgressView, HostChange, HostDetail, HostView, IssueDetail, IssueView, KeyScan, PromptLog, PruneResult,
    RejectResult, Severity, StatusInfo, TrustResult,
};
use crate::request::Request;
use macha_core::Timestamp;
use macha_core::approval::ApprovalState;
use macha_core::issue::IssueState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A request whose answer has the type `Reply`.
pub trait Call {
    /// What a successful answer's `data` holds.
    type Reply: DeserializeOwned + Serialize;
    /// The request as it goes on the wire.
    fn into_request(self) -> Request;
}

macro_rules! call {
    ($op:ident, unit, $reply:ty) => {
        impl Call for $op {
            type Reply = $reply;
            fn into_request(self) -> Request {
                Request::$op
            }
        }
    };
    ($op:ident, $reply:ty) => {
        impl Call for $op {
            type Reply = $reply;
            fn into_request(self) -> Request {
                Request::$op(self)
            }
        }
    };
}

/// Daemon status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status;
call!(Status, unit, StatusInfo);

/// One cycle now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCheck;
call!(RunCheck, unit, CheckReport);

/// The last reports of remote hosts (`macha check --host H`, `--all`): every registered host that
/// is observed when `hosts` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReports {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only hosts with this configured tag.
    #[serde(default)]
    pub tag: Option<String>,
}
call!(HostReports, Vec<CheckReport>);

/// Issues in these states (all when empty), of one host, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListIssues {
    #[serde(default)]
    pub states: Vec<IssueState>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}
call!(ListIssues, Vec<IssueView>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowIssue {
    pub id: i64,
}
call!(ShowIssue, IssueDetail);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveIssue {
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
}
call!(ResolveIssue, IssueView);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseIssue {
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
}
call!(CloseIssue, IssueView);

/// Approval requests in these states (all when empty), at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListApprovals {
    #[serde(default)]
    pub states: Vec<ApprovalState>,
    #[serde(default)]
    pub limit: Option<u32>,
}
call!(ListApprovals, Vec<ApprovalView>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowApproval {
    pub id: i64,
}
call!(ShowApproval, ApprovalDetail);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
}
call!(Approve, ApproveResult);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reject {
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
}
call!(Reject, RejectResult);

/// The order of audit records in an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    OldestFirst,
    NewestFirst,
}

/// Which audit records to return. Every `None` or empty field matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditFilter {
    /// Records with `ts >= since`.
    pub since: Option<Timestamp>,
    pub host: Option<String>,
    /// Any of these kinds.
    pub kinds: Vec<AuditKind>,
    /// This severity or a higher one.
    pub min_severity: Option<Severity>,
    /// Records with `id > after_id`, in commit order: to follow the trail, poll with the last id
    /// of the previous answer.
    pub after_id: Option<i64>,
    pub limit: Option<u32>,
    pub order: Order,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryAudit {
    pub filter: AuditFilter,
}
call!(QueryAudit, Vec<AuditEntry>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    pub question: String,
}
call!(Ask, ChatAnswer);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chat {
    #[serde(default)]
    pub conversation: Option<String>,
    pub message: String,
}
call!(Chat, ChatAnswer);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discuss {
    pub id: i64,
    pub message: String,
}
call!(Discuss, ChatAnswer);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListPrompts {
    #[serde(default)]
    pub request_id: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
}
call!(ListPrompts, PromptLog);

/// Prepares a NixOS deployment of `system`, a closure built on the controller, to each host: what
/// the host runs now (read there), the closure diff, and — unless `diff_only` — an approval bound
/// to exactly (host, running system, `system`). Nothing changes on any host. Admin only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareDeploy {
    pub hosts: Vec<String>,
    pub system: String,
    /// Where `system` was built from, recorded with the approval.
    #[serde(default)]
    pub flake: Option<String>,
    #[serde(default)]
    pub diff_only: bool,
}
call!(PrepareDeploy, Vec<DeployPlan>);

/// The deployments this daemon runs now, each with its phase and step (`macha deploy --wait`
/// shows them live). Viewers may read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeployProgress;
call!(DeployProgress, unit, Vec<DeployProgressView>);

/// A one-time login link for the web console (`macha web login`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebLogin;
call!(WebLogin, unit, crate::reply::WebLoginLink);

/// The host registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListHosts;
call!(ListHosts, unit, Vec<HostView>);

/// The fleet map: hosts and their declared and observed relations (`macha systems graph`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetGraph;
call!(FleetGraph, unit, macha_core::fleet_map::FleetMap);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowHost {
    pub name: String,
}
call!(ShowHost, HostDetail);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanHost {
    pub name: String,
}
call!(ScanHost, KeyScan);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustHost {
    pub name: String,
    pub fingerprints: Vec<String>,
}
call!(TrustHost, TrustResult);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmitHost {
    pub name: String,
}
call!(AdmitHost, HostChange);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetHost {
    pub name: String,
}
call!(ForgetHost, HostChange);

/// Deletes the audit records up to `upto_id`, if `hash` is the stored hash of that record (proof
/// of an export; `macha logs prune`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneAudit {
    pub upto_id: i64,
    pub hash: String,
}
call!(PruneAudit, PruneResult);
