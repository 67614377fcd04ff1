//! Answers to socket requests, computed on the engine thread from the store and the engine.
//!
//! Authorisation is by the peer's kernel-reported credentials: a request that changes state needs
//! root or the admin group, and every refusal is audited.

use super::Shared;
use super::server::{self, Peer};
use crate::api::{ErrorCode, Request, Response};
use crate::engine::Engine;
use macha_store::{AuditKind, NewAudit, Severity};

/// Answers one request on the engine thread. `Status`, `RunCheck`, key scans and the streamed
/// requests are dispatched by the loop before they get here.
pub(super) fn answer(engine: &mut Engine, shared: &Shared, request: Request, peer: Peer) -> Response {
    let now = crate::now();
    let who = server::peer_name(peer);
    if request.is_write() && !server::is_admin(peer, shared.admin_gid) {
        return deny(engine, &request, peer);
    }
    let result: anyhow::Result<serde_json::Value> = (|| match request {
        Request::Status | Request::RunCheck => {
            Err(BadRequest(format!("{} is answered by the loop", request.op())).into())
        }
        Request::ListIssues { states, host, limit } => {
            let states = parse_list(&states, macha_core::issue::IssueState::parse)?;
            Ok(v(&engine.store().list_issues(&macha_store::IssueQuery { states, host, limit })?))
        }
        Request::ShowIssue { id } => {
            let issue = engine.store().get_issue(id)?.ok_or_else(|| NotFound(format!("issue {id} does not exist")))?;
            let audit =
                engine.store().query_audit(&macha_store::AuditQuery { issue_id: Some(id), ..Default::default() })?;
            Ok(serde_json::json!({"issue": issue, "audit": audit}))
        }
        Request::ResolveIssue { id, note } => Ok(v(&engine.manual_issue(id, false, &who, note.as_deref(), now)?)),
        Request::CloseIssue { id, note } => Ok(v(&engine.manual_issue(id, true, &who, note.as_deref(), now)?)),
        Request::ListApprovals { states, limit } => {
            let states = parse_list(&states, macha_core::approval::ApprovalState::parse)?;
            Ok(v(&engine.store().list_approvals(&states, limit)?))
        }
        Request::ShowApproval { id } => {
            let a =
                engine.store().get_approval(id)?.ok_or_else(|| NotFound(format!("approval {id} does not exist")))?;
            let audit =
                engine.store().query_audit(&macha_store::AuditQuery { approval_id: Some(id), ..Default::default() })?;
            Ok(serde_json::json!({"approval": a, "audit": audit}))
        }
        Request::Approve { id, note } => {
            let (decision, work) = engine.approve(id, &who, note.as_deref(), now)?;
            let action_id = work.as_ref().map(|w| w.ticket.action_id);
            shared.spawn_work(work.into_iter().collect());
            Ok(serde_json::json!({"approval_id": id, "decision": decision, "action_id": action_id}))
        }
        Request::Reject { id, note } => {
            engine.reject(id, &who, note.as_deref(), now)?;
            Ok(serde_json::json!({"approval_id": id, "state": "rejected"}))
        }
        Request::QueryAudit { query } => Ok(v(&engine.store().query_audit(&query)?)),
        Request::ListPrompts { request_id, limit } => crate::agent::list_prompts(engine, request_id, limit),
        Request::ListHosts | Request::ShowHost { .. } | Request::AdmitHost { .. } | Request::ForgetHost { .. } => {
            shared.fleet.api(engine, request, &who)
        }
        Request::ScanHost { .. } | Request::TrustHost { .. } => {
            Err(BadRequest(format!("{} is answered after a key scan", request.op())).into())
        }
        Request::Ask { .. } | Request::Chat { .. } | Request::Discuss { .. } => {
            Err(BadRequest(format!("{} is answered as a stream", request.op())).into())
        }
    })();
    match result {
        Ok(data) => Response::ok(data),
        Err(e) => {
            let code = if e.downcast_ref::<NotFound>().is_some() {
                ErrorCode::NotFound
            } else if let Some(se) = e.downcast_ref::<macha_store::StoreError>() {
                match se {
                    macha_store::StoreError::NotFound { .. } => ErrorCode::NotFound,
                    macha_store::StoreError::Conflict { .. }
                    | macha_store::StoreError::IllegalTransition { .. }
                    | macha_store::StoreError::ApprovalExpired { .. } => ErrorCode::Conflict,
                    _ => ErrorCode::Internal,
                }
            } else if e.downcast_ref::<BadRequest>().is_some() {
                ErrorCode::BadRequest
            } else {
                ErrorCode::Internal
            };
            Response::err(code, format!("{e:#}"))
        }
    }
}

/// Refuses a request that needs an admin, and audits the refusal.
pub(super) fn deny(engine: &mut Engine, request: &Request, peer: Peer) -> Response {
    let who = server::peer_name(peer);
    let summary = format!("denied {} to {who}: not root and not in the admin group", request.op());
    let audit = NewAudit::new(crate::now(), AuditKind::AuthDenied, Severity::Warning, "local", summary.clone())
        .with_payload(serde_json::json!({"uid": peer.uid, "gid": peer.gid, "pid": peer.pid, "request": request}));
    if let Err(e) = engine.store_mut().append_audit(&audit) {
        tracing::error!("cannot audit a denial: {e}");
    }
    tracing::warn!(uid = peer.uid, "{summary}");
    Response::err(ErrorCode::Denied, format!("permission denied: {} needs root or the admin group", request.op()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadRequest(String);

fn parse_list<T>(items: &[String], parse: impl Fn(&str) -> Option<T>) -> anyhow::Result<Vec<T>> {
    items.iter().map(|s| parse(s).ok_or_else(|| BadRequest(format!("unknown state {s:?}")).into())).collect()
}

fn v<T: serde::Serialize>(x: &T) -> serde_json::Value {
    serde_json::to_value(x).unwrap_or(serde_json::Value::Null)
}
