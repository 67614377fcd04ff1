//! The web console in the daemon (`macha-web`, docs/web.md): started when `web.enable` is set,
//! on a Unix socket (peer credentials, the socket's tiers) or on TCP. Its requests come back to
//! the loop as [`ApiCall::Web`] and are answered by the same functions as the socket's, on the
//! engine thread, with the tier the console established; what needs IO of its own (a new cycle,
//! key scans, deployment preparation) and the streamed model requests are not offered there.

use super::engine_thread::EngineHandle;
use super::server::{self, ApiCall, Peer};
use super::{Shared, lock, requests};
use crate::api::{ErrorCode, Request, Response, ops};
use crate::config::Config;
use macha_api::Tier;
use macha_store::{AuditKind, NewAudit, Severity};
use macha_web::{AuditEvent, BoxFuture, Console, Listen, User};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The console's way into the daemon.
struct Bridge {
    api: mpsc::Sender<ApiCall>,
    engine: EngineHandle,
    admin_gid: Option<u32>,
    viewer_gid: Option<u32>,
}

impl macha_web::Daemon for Bridge {
    fn call(&self, user: &User, request: Request) -> BoxFuture<Response> {
        let api = self.api.clone();
        let user = user.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            if api.send(ApiCall::Web { request, user, reply }).await.is_err() {
                return Response::err(ErrorCode::Unavailable, "the daemon is shutting down");
            }
            answer.await.unwrap_or_else(|_| Response::err(ErrorCode::Unavailable, "the daemon is shutting down"))
        })
    }

    fn local_user(&self, uid: u32, gid: u32) -> User {
        let peer = Peer { uid, gid, pid: None };
        User { name: server::peer_name(peer), tier: server::access(peer, self.admin_gid, self.viewer_gid) }
    }

    fn audit(&self, event: AuditEvent) {
        let (kind, severity, summary, payload) = match event {
            AuditEvent::Login { user, how } => (
                AuditKind::Daemon,
                Severity::Notice,
                format!("web console login: {user} with {how}"),
                serde_json::json!({"web": "login", "user": user}),
            ),
            AuditEvent::Refused { who, what, why } => (
                AuditKind::AuthDenied,
                Severity::Warning,
                format!("web console refused {what} from {who}: {why}"),
                serde_json::json!({"web": "refused", "who": who}),
            ),
            AuditEvent::Decision { user, approval_id, verdict, note } => (
                AuditKind::Approval,
                Severity::Notice,
                format!("web console: {user} asks that approval {approval_id} be {verdict}"),
                serde_json::json!({"web": "decision", "user": user, "approval_id": approval_id, "note": note}),
            ),
        };
        self.engine.post("web audit", move |e| {
            let audit = NewAudit::new(crate::now(), kind, severity, "local", summary).with_payload(payload);
            if let Err(err) = e.store_mut().append_audit(&audit) {
                tracing::error!("cannot audit a web console event: {err}");
            }
        });
    }
}

/// Starts the console when it is enabled; `None` when it is off.
pub(super) async fn start(
    config: &Config,
    api: &mpsc::Sender<ApiCall>,
    engine: &EngineHandle,
    gids: (Option<u32>, Option<u32>),
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Arc<Console>>> {
    let Some(web) = &config.web else { return Ok(None) };
    let settings = web.settings()?;
    let bridge = Bridge { api: api.clone(), engine: engine.clone(), admin_gid: gids.0, viewer_gid: gids.1 };
    let console = Console::new(Arc::new(bridge), settings.clone())?;
    match &settings.listen {
        Listen::Unix(path) => {
            let listener = server::bind(path)?;
            tracing::info!(socket = %path.display(), "web console listening");
            tracker.spawn(macha_web::serve_unix(Arc::clone(&console), listener, stop.clone()));
        }
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::format_err!("web.listen: cannot bind {addr}: {e}"))?;
            tracing::info!(address = %listener.local_addr().unwrap_or(*addr), "web console listening");
            tracker.spawn(macha_web::serve_tcp(Arc::clone(&console), listener, stop.clone()));
        }
    }
    Ok(Some(console))
}

/// Answers one console request: the socket's answer for the console's user, or a refusal.
pub(super) fn on_call(
    shared: &Arc<Shared>,
    engine: &EngineHandle,
    request: Request,
    user: User,
    reply: oneshot::Sender<Response>,
) {
    match request {
        Request::Status => {
            let _ = reply.send(shared.status());
        }
        // A page never starts a cycle (GET changes nothing): readers get the last report.
        Request::RunCheck if user.tier >= Tier::Viewer => {
            let last = lock(&shared.last_report).clone();
            let _ = reply.send(match last {
                Some(report) => Response::reply::<ops::RunCheck>(&report),
                None => Response::err(ErrorCode::Unavailable, "no cycle has finished yet"),
            });
        }
        request
            if request.is_streamed()
                || super::Fleet::is_deferred(&request)
                || matches!(request, Request::PrepareDeploy(_)) =>
        {
            let _ = reply.send(Response::err(
                ErrorCode::BadRequest,
                format!("{} is not offered by the web console; use the CLI", request.op()),
            ));
        }
        request => {
            let s = Arc::clone(shared);
            engine.post("web request", move |e| {
                let answer = if user.tier < request.tier() {
                    let payload = serde_json::json!({"web": true, "tier": user.tier.as_str()});
                    requests::deny_as(e, &request, &user.name, payload)
                } else {
                    requests::answer_as(e, &s, request, &user.name)
                };
                let _ = reply.send(answer);
            });
        }
    }
}
