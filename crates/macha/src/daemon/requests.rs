//! Answers to socket requests, computed on the engine thread from the store and the engine.
//!
//! Authorisation is by the peer's kernel-reported credentials: a request that changes state needs
//! root or the admin group, and every refusal is audited.

use super::Shared;
use super::server::{self, Peer};
use crate::api::reply::{ApprovalDetail, ApproveResult, IssueDetail, RejectResult};
use crate::api::{ErrorCode, Request, Response, ops};
use crate::engine::Engine;
use crate::wire;
use macha_store::{AuditKind, NewAudit, Severity};

/// Answers one request on the engine thread. `Status`, `RunCheck`, key scans and the streamed
/// requests are dispatched by the loop before they get here. Each answer is built with
/// `Response::reply::<Op>`, so its type is the one the client decodes.
pub(super) fn answer(engine: &mut Engine, shared: &Shared, request: Request, peer: Peer) -> Response {
    let tier = server::access(peer, shared.admin_gid, shared.viewer_gid);
    if tier < request.tier() {
        return deny(engine, &request, peer);
    }
    answer_as(engine, shared, request, &server::peer_name(peer))
}

/// Answers a request whose caller's tier has been checked; `who` names the caller in records.
pub(super) fn answer_as(engine: &mut Engine, shared: &Shared, request: Request, who: &str) -> Response {
    let now = crate::now();
    let who = who.to_owned();
    let result: anyhow::Result<Response> = (|| match request {
        Request::Status | Request::RunCheck => {
            Err(BadRequest(format!("{} is answered by the loop", request.op())).into())
        }
        Request::ListIssues(ops::ListIssues { states, host, limit }) => {
            let limit = Some(page(limit));
            let issues = engine.store().list_issues(&macha_store::IssueQuery { states, host, limit })?;
            Ok(Response::reply::<ops::ListIssues>(&issues.iter().map(wire::issue).collect()))
        }
        Request::ShowIssue(ops::ShowIssue { id }) => {
            let issue = engine.store().get_issue(id)?.ok_or_else(|| NotFound(format!("issue {id} does not exist")))?;
            let audit =
                engine.store().query_audit(&macha_store::AuditQuery { issue_id: Some(id), ..Default::default() })?;
            Ok(Response::reply::<ops::ShowIssue>(&IssueDetail {
                issue: wire::issue(&issue),
                audit: wire::audit_entries(&audit),
                similar: crate::knowledge::similar(engine.store(), id, now),
                recent_changes: crate::changes::issue_lines(engine.store(), engine.config(), &issue),
                citations: crate::changes::citations(engine.store(), id),
            }))
        }
        Request::ResolveIssue(ops::ResolveIssue { id, note }) => Ok(Response::reply::<ops::ResolveIssue>(
            &wire::issue(&engine.manual_issue(id, false, &who, note.as_deref(), now)?),
        )),
        Request::CloseIssue(ops::CloseIssue { id, note }) => Ok(Response::reply::<ops::CloseIssue>(&wire::issue(
            &engine.manual_issue(id, true, &who, note.as_deref(), now)?,
        ))),
        Request::ListApprovals(ops::ListApprovals { states, limit }) => {
            let limit = Some(page(limit));
            let approvals = engine.store().list_approvals(&states, limit)?;
            Ok(Response::reply::<ops::ListApprovals>(&approvals.iter().map(wire::approval).collect()))
        }
        Request::ShowApproval(ops::ShowApproval { id }) => {
            let a =
                engine.store().get_approval(id)?.ok_or_else(|| NotFound(format!("approval {id} does not exist")))?;
            let audit =
                engine.store().query_audit(&macha_store::AuditQuery { approval_id: Some(id), ..Default::default() })?;
            Ok(Response::reply::<ops::ShowApproval>(&ApprovalDetail {
                approval: wire::approval(&a),
                audit: wire::audit_entries(&audit),
            }))
        }
        Request::Approve(ops::Approve { id, note }) => {
            let (decision, work) = engine.approve(id, &who, note.as_deref(), now)?;
            let action_id = work.as_ref().map(|w| w.ticket.action_id);
            shared.spawn_work(work.into_iter().collect());
            Ok(Response::reply::<ops::Approve>(&ApproveResult { approval_id: id, decision, action_id }))
        }
        Request::Reject(ops::Reject { id, note }) => {
            engine.reject(id, &who, note.as_deref(), now)?;
            Ok(Response::reply::<ops::Reject>(&RejectResult {
                approval_id: id,
                state: macha_core::approval::ApprovalState::Rejected,
            }))
        }
        Request::QueryAudit(ops::QueryAudit { mut filter }) => {
            // Paged by the daemon: at most `LIST_MAX` records an answer; follow with `after_id`.
            filter.limit = Some(page(filter.limit));
            let records = engine.store().query_audit(&wire::audit_query(&filter))?;
            Ok(Response::reply::<ops::QueryAudit>(&wire::audit_entries(&records)))
        }
        Request::SearchAudit(q) => {
            let records = engine.store().search_audit(&wire::log_search(&q, page(q.limit)))?;
            Ok(Response::reply::<crate::api::questlog::SearchAudit>(&wire::audit_entries(&records)))
        }
        Request::LogStats(crate::api::questlog::LogStats { since }) => {
            let stats = engine.store().log_stats(since)?;
            Ok(Response::reply::<crate::api::questlog::LogStats>(&wire::log_stats(&stats)))
        }
        Request::CommandRuns(crate::api::questlog::CommandRuns { host, since, limit }) => {
            let runs = engine.store().command_runs(host.as_deref(), since, page(limit))?;
            Ok(Response::reply::<crate::api::questlog::CommandRuns>(&wire::command_runs(&runs)))
        }
        Request::PruneAudit(ops::PruneAudit { upto_id, hash }) => {
            let summary = engine.store_mut().prune_audit(upto_id, &hash, &who, now)?;
            Ok(Response::reply::<ops::PruneAudit>(&wire::prune_result(&summary)))
        }
        Request::DeployProgress => {
            Ok(Response::reply::<ops::DeployProgress>(&wire::deploy_progress(&macha_exec::deploy::in_progress())))
        }
        Request::ListPrompts(r) => Ok(Response::reply::<ops::ListPrompts>(&crate::agent::list_prompts(engine, &r)?)),
        Request::ListHosts
        | Request::HostReports(_)
        | Request::ShowHost(_)
        | Request::AdmitHost(_)
        | Request::ForgetHost(_) => shared.fleet.api(engine, request, &who),
        Request::FleetGraph => Ok(Response::reply::<ops::FleetGraph>(&crate::fleet_map::answer(
            engine.store(),
            &shared.config,
            &shared.fleet.connections(),
            &shared.batch.addresses(),
        )?)),
        Request::ScanHost(_) | Request::TrustHost(_) | Request::PrepareDeploy(_) => {
            Err(BadRequest(format!("{} is answered after a key scan", request.op())).into())
        }
        Request::Ask(_) | Request::Chat(_) | Request::Discuss(_) => {
            Err(BadRequest(format!("{} is answered as a stream", request.op())).into())
        }
        Request::WebLogin => {
            let Some(console) = &shared.web else {
                return Err(BadRequest("the web console is off (web.enable)".into()).into());
            };
            // Only admins may ask (the request's tier): the session is an admin's.
            let user = macha_web::User { name: format!("{who} via web"), tier: macha_api::Tier::Admin };
            match console.login_url(user)? {
                Some(url) => Ok(Response::reply::<ops::WebLogin>(&crate::api::reply::WebLoginLink {
                    url,
                    expires_in_secs: macha_web::auth::LOGIN_TOKEN_TTL.as_secs(),
                })),
                None => Err(BadRequest(
                    "the web console listens on a Unix socket, where the kernel says who you are: no login needed"
                        .into(),
                )
                .into()),
            }
        }
        Request::KnowledgeRead(r) => {
            crate::knowledge::read(engine.store(), &r.query, now, &engine.config().knowledge_runbooks)
                .map(|a| Response::reply::<crate::api::knowledge::KnowledgeRead>(&a))
                .map_err(refused)
        }
        Request::KnowledgeWrite(w) => crate::knowledge::write(engine.store_mut(), w.change, &who, now)
            .map(|a| Response::reply::<crate::api::knowledge::KnowledgeWrite>(&a))
            .map_err(refused),
        Request::MetricsRead(q) => match crate::metrics::answer(engine.store(), &q, now) {
            Ok(a) => Ok(Response::reply::<crate::api::metrics::MetricsRead>(&a)),
            Err(crate::metrics::MetricsError::BadRequest(m)) => Err(BadRequest(m).into()),
            Err(crate::metrics::MetricsError::Store(e)) => Err(e.into()),
        },
        Request::NotifyRead(r) => crate::notify::read(engine.store(), &r.query, now)
            .map(|a| Response::reply::<crate::api::notify::NotifyRead>(&a)),
        Request::NotifyWrite(w) => {
            crate::notify::write(engine.store_mut(), &shared.config.notifications, w.change, &who, now)
                .map(|a| Response::reply::<crate::api::notify::NotifyWrite>(&a))
                .map_err(refused)
        }
    })();
    match result {
        Ok(response) => response,
        Err(e) => {
            let code = if e.downcast_ref::<NotFound>().is_some() {
                ErrorCode::NotFound
            } else if let Some(se) = e.downcast_ref::<macha_store::StoreError>() {
                match se {
                    macha_store::StoreError::NotFound { .. } => ErrorCode::NotFound,
                    macha_store::StoreError::Conflict { .. }
                    | macha_store::StoreError::IllegalTransition { .. }
                    | macha_store::StoreError::ApprovalExpired { .. } => ErrorCode::Conflict,
                    macha_store::StoreError::Invalid { .. } => ErrorCode::BadRequest,
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

/// Answers a knowledge search whose query the daemon embedded first (`vector`, or why the search
/// is keyword-only); the loop checked the peer's tier.
pub(super) fn knowledge_search(
    engine: &Engine,
    read: &crate::api::knowledge::KnowledgeRead,
    vector: &crate::hybrid::QueryVector,
) -> Response {
    match crate::knowledge::read_daemon(engine.store(), &read.query, crate::now(), vector) {
        Ok(a) => Response::reply::<crate::api::knowledge::KnowledgeRead>(&a),
        Err(e) => match refused(e) {
            e if e.downcast_ref::<BadRequest>().is_some() => Response::err(ErrorCode::BadRequest, format!("{e:#}")),
            e => Response::err(ErrorCode::Internal, format!("{e:#}")),
        },
    }
}

/// A knowledge operation's refusal (bad input, no such entry) is a bad request.
fn refused(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<crate::knowledge::Refused>() {
        Ok(r) => BadRequest(r.0).into(),
        Err(e) => match e.downcast::<crate::notify::Refused>() {
            Ok(r) => BadRequest(r.0).into(),
            Err(e) => e,
        },
    }
}

/// Refuses a request that needs an admin, and audits the refusal.
/// The most records one list answer carries (the default when none is asked: 100). Larger
/// results are paged: audit queries with `after_id`, the others by state and host.
pub(super) const LIST_MAX: u32 = 500;

fn page(limit: Option<u32>) -> u32 {
    limit.unwrap_or(100).clamp(1, LIST_MAX)
}

/// Whom a tier names, for refusals.
fn who_may(tier: macha_api::Tier) -> &'static str {
    match tier {
        macha_api::Tier::Anyone => "anyone",
        macha_api::Tier::Viewer => "root, the admin group or the viewer group",
        macha_api::Tier::Admin => "root or the admin group",
    }
}

pub(super) fn deny(engine: &mut Engine, request: &Request, peer: Peer) -> Response {
    let who = server::peer_name(peer);
    tracing::warn!(uid = peer.uid, "denied {} to {who}", request.op());
    deny_as(engine, request, &who, serde_json::json!({"uid": peer.uid, "gid": peer.gid, "pid": peer.pid}))
}

/// Refuses a request to `who` (described further by `payload`), and audits the refusal.
pub(super) fn deny_as(engine: &mut Engine, request: &Request, who: &str, mut payload: serde_json::Value) -> Response {
    let needs = who_may(request.tier());
    let summary = format!("denied {} to {who}: it needs {needs}", request.op());
    if let Some(o) = payload.as_object_mut() {
        o.insert("request".to_owned(), serde_json::to_value(request).unwrap_or_default());
    }
    let audit = NewAudit::new(crate::now(), AuditKind::AuthDenied, Severity::Warning, "local", summary.clone())
        .with_payload(payload);
    if let Err(e) = engine.store_mut().append_audit(&audit) {
        tracing::error!("cannot audit a denial: {e}");
    }
    Response::err(ErrorCode::Denied, format!("permission denied: {} needs {needs}", request.op()))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadRequest(String);
