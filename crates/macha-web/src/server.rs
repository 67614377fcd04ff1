//! The HTTP side: the router, who is asking (peer credentials, a login session or a trusted
//! proxy's header), the security headers on every answer, and the decisions.
//!
//! GET handlers only read (through the daemon's read requests). Every POST passes, in this
//! order: a same-origin `Origin`, a live session from the cookie, its CSRF token, and only then
//! is it acted on; a decision also carries the digest of the exact action the person saw.

use crate::auth::{self, Auth, NoRandomness};
use crate::pages::{self, FirstApproval, HostMetrics, IssueFilter, LogFilter, Range};
use crate::{AuditEvent, Daemon, Listen, Settings, User};
use axum::Router;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use macha_api::knowledge::{KnowledgeQuery, KnowledgeRead};
use macha_api::metrics::MetricsRead;
use macha_api::ops::{self, Call};
use macha_api::reply::{ApprovalDetail, ApprovalView};
use macha_api::{ErrorCode, Refusal, Tier};
use macha_core::Timestamp;
use macha_core::approval::ApprovalState;
use macha_core::issue::IssueState;
use macha_core::policy::Risk;
use maud::Markup;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// The policy every answer carries: scripts and styles only from the console itself, no inline
/// code, no frames, forms only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest form body accepted.
const BODY_MAX: usize = 16 * 1024;

/// The console: the daemon it asks, its secrets and sessions, its settings.
pub struct Console {
    daemon: Arc<dyn Daemon>,
    auth: Auth,
    settings: Settings,
    /// First approvals of critical actions under the two-person rule: approval id → who, when.
    first: Mutex<HashMap<i64, FirstApproval>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Console {
    /// A console over `daemon`, with a fresh CSRF key.
    pub fn new(daemon: Arc<dyn Daemon>, settings: Settings) -> Result<Arc<Console>, NoRandomness> {
        let auth = Auth::new(settings.session_idle, settings.session_max)?;
        Ok(Arc::new(Console { daemon, auth, settings, first: Mutex::new(HashMap::new()) }))
    }

    /// A single-use login link for `user` (`macha web login`), good for five minutes; `None`
    /// when the console does not listen on TCP (on the Unix socket nobody logs in: the kernel
    /// names the peer).
    pub fn login_url(&self, user: User) -> Result<Option<String>, NoRandomness> {
        match self.settings.listen {
            Listen::Tcp(addr) => {
                let token = self.auth.mint(user, Instant::now())?;
                Ok(Some(format!("http://{addr}/login?token={token}")))
            }
            Listen::Unix(_) => Ok(None),
        }
    }

    /// The router, for [`serve_unix`], [`serve_tcp`] and the benchmarks.
    pub fn router(self: &Arc<Console>) -> Router {
        Router::new()
            .route("/", get(fleet))
            .route("/hosts/{name}", get(host))
            .route("/issues", get(issues))
            .route("/issues/{id}", get(issue))
            .route("/approvals", get(approvals))
            .route("/approvals/{id}", get(approval))
            .route("/approvals/{id}/approve", post(approve))
            .route("/approvals/{id}/reject", post(reject))
            .route("/deployments", get(deployments))
            .route("/deployments/progress", get(progress))
            .route("/deployments/{id}", get(deployment))
            .route("/logs", get(logs))
            .route("/knowledge", get(knowledge))
            .route("/login", get(login_page).post(login))
            .route("/logout", post(logout))
            .route("/assets/htmx.min.js", get(htmx))
            .route("/assets/style.css", get(style))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(BODY_MAX))
            .layer(middleware::from_fn(headers))
            .with_state(Arc::clone(self))
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// A Unix socket peer, by the kernel's credentials.
    Unix { uid: u32, gid: u32 },
    /// A TCP peer.
    Tcp(SocketAddr),
    /// The kernel would not say: nobody.
    Unknown,
}

impl Connected<IncomingStream<'_, UnixListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Conn {
        match stream.io().peer_cred() {
            Ok(c) => Conn::Unix { uid: c.uid(), gid: c.gid() },
            Err(e) => {
                tracing::warn!("cannot read a web peer's credentials: {e}");
                Conn::Unknown
            }
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Conn {
        Conn::Tcp(*stream.remote_addr())
    }
}

/// Serves the console on a Unix socket until `stop`.
pub async fn serve_unix(console: Arc<Console>, listener: UnixListener, stop: CancellationToken) {
    let app = console.router().into_make_service_with_connect_info::<Conn>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!("the web console stopped: {e}");
    }
}

/// Serves the console on TCP until `stop`.
pub async fn serve_tcp(console: Arc<Console>, listener: TcpListener, stop: CancellationToken) {
    let app = console.router().into_make_service_with_connect_info::<Conn>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!("the web console stopped: {e}");
    }
}

/// The security headers of every answer.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

type St = State<Arc<Console>>;

/// An answer: status, page, and the session cookie to set.
struct Page {
    status: StatusCode,
    body: Markup,
    cookie: Option<String>,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = (self.status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], self.body.into_string())
            .into_response();
        if let Some(c) = self.cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        r
    }
}

fn refusal(status: StatusCode, user: Option<&User>, title: &str, text: &str) -> Page {
    Page { status, body: pages::message(title, user, text, true), cookie: None }
}

/// Who asks, and in which session.
struct Ctx {
    user: Option<User>,
    session: String,
    cookie: Option<String>,
}

impl Console {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp::from_millis(ms)
    }

    /// The identity of a request: peer credentials on the Unix socket; on TCP a trusted proxy's
    /// header or the session's login. A proxy header from any other peer is refused.
    fn identify(&self, conn: Conn, headers: &HeaderMap, session_user: Option<User>) -> Result<Option<User>, Page> {
        match conn {
            Conn::Unix { uid, gid } => {
                let mut u = self.daemon.local_user(uid, gid);
                u.name.push_str(" via web");
                Ok(Some(u))
            }
            Conn::Unknown => Ok(None),
            Conn::Tcp(peer) => {
                let proxied = self.settings.proxy_user_header.as_deref().and_then(|h| headers.get(h));
                match proxied {
                    Some(value) => {
                        if !self.settings.trusted_proxies.contains(&peer.ip()) {
                            self.daemon.audit(AuditEvent::Refused {
                                who: peer.to_string(),
                                what: "web request".into(),
                                why: "a proxy user header from a peer that is not a trusted proxy".into(),
                            });
                            return Err(refusal(
                                StatusCode::FORBIDDEN,
                                None,
                                "Refused",
                                "A proxy user header is accepted only from a trusted proxy.",
                            ));
                        }
                        let name = value.to_str().unwrap_or("").trim();
                        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                            return Err(refusal(StatusCode::FORBIDDEN, None, "Refused", "The proxy named no user."));
                        }
                        let tier = if self.settings.proxy_admins.iter().any(|a| a == name) {
                            Tier::Admin
                        } else if self.settings.proxy_viewers.iter().any(|v| v == name) {
                            Tier::Viewer
                        } else {
                            Tier::Anyone
                        };
                        Ok(Some(User { name: format!("{name} via proxy"), tier }))
                    }
                    None => Ok(session_user),
                }
            }
        }
    }

    /// The context of a GET: the session (a new anonymous one when there is none) and the user.
    fn read_ctx(&self, conn: Conn, headers: &HeaderMap) -> Result<Ctx, Page> {
        let now = Instant::now();
        let existing = cookie_of(headers).and_then(|id| self.auth.session(id, now).map(|u| (id.to_owned(), u)));
        let (session, session_user, cookie) = match existing {
            Some((id, u)) => (id, u, None),
            None => {
                let id = self.auth.open(None, now).map_err(internal)?;
                let c = auth::set_cookie(&id, self.settings.secure_cookies);
                (id, None, Some(c))
            }
        };
        let user = self.identify(conn, headers, session_user)?;
        Ok(Ctx { user, session, cookie })
    }

    /// The context of a POST: same origin, an existing session, its CSRF token.
    fn write_ctx(&self, conn: Conn, headers: &HeaderMap, csrf: &str, what: &str) -> Result<Ctx, Page> {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let who = || match conn {
            Conn::Unix { uid, .. } => format!("uid {uid}"),
            Conn::Tcp(a) => a.to_string(),
            Conn::Unknown => "unknown".to_owned(),
        };
        if !auth::same_origin(origin, host) {
            self.daemon.audit(AuditEvent::Refused {
                who: who(),
                what: what.to_owned(),
                why: format!("origin {:?} is not this console ({:?})", origin.unwrap_or("missing"), host.unwrap_or("")),
            });
            return Err(refusal(StatusCode::FORBIDDEN, None, "Refused", "This request did not come from the console."));
        }
        let now = Instant::now();
        let Some((session, session_user)) =
            cookie_of(headers).and_then(|id| self.auth.session(id, now).map(|u| (id.to_owned(), u)))
        else {
            self.daemon.audit(AuditEvent::Refused { who: who(), what: what.to_owned(), why: "no live session".into() });
            return Err(refusal(StatusCode::FORBIDDEN, None, "Refused", "Your session has ended; reload the page."));
        };
        if !self.auth.csrf_ok(&session, csrf) {
            self.daemon.audit(AuditEvent::Refused {
                who: who(),
                what: what.to_owned(),
                why: "a missing or wrong CSRF token".into(),
            });
            return Err(refusal(StatusCode::FORBIDDEN, None, "Refused", "The form's token is not this session's."));
        }
        let user = self.identify(conn, headers, session_user)?;
        Ok(Ctx { user, session, cookie: None })
    }

    async fn ask<C: Call>(&self, user: &User, op: C) -> Result<C::Reply, Refusal> {
        self.daemon.call(user, op.into_request()).await.into_reply::<C>()
    }
}

fn internal(e: impl std::fmt::Display) -> Page {
    refusal(StatusCode::INTERNAL_SERVER_ERROR, None, "Error", &e.to_string())
}

fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|h| auth::cookie(h, auth::COOKIE))
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Denied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::BadRequest | ErrorCode::VersionMismatch => StatusCode::BAD_REQUEST,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refused(user: Option<&User>, r: &Refusal) -> Page {
    refusal(status_of(r.code), user, "Refused", &r.message)
}

/// A reader: at least a viewer, or the page that says how to get in.
fn reader(c: &Console, ctx: &Ctx) -> Result<User, Page> {
    match &ctx.user {
        Some(u) if u.tier >= Tier::Viewer => Ok(u.clone()),
        Some(u) => Err(Page {
            status: StatusCode::FORBIDDEN,
            body: pages::message("Refused", Some(u), "Reading needs root, the admin group or the viewer group.", true),
            cookie: ctx.cookie.clone(),
        }),
        None => {
            let how = match c.settings.listen {
                Listen::Tcp(_) => "Log in: run `macha web login` on the daemon's host and open the link it prints.",
                Listen::Unix(_) => "The kernel did not name you.",
            };
            Err(Page {
                status: StatusCode::UNAUTHORIZED,
                body: pages::message("Log in", None, how, true),
                cookie: ctx.cookie.clone(),
            })
        }
    }
}

/// Runs a GET page: context, reader check, then `render`.
async fn read_page<F, Fut>(c: &Arc<Console>, conn: Conn, headers: &HeaderMap, render: F) -> Page
where
    F: FnOnce(Arc<Console>, User, String) -> Fut,
    Fut: std::future::Future<Output = Result<Markup, Page>>,
{
    let ctx = match c.read_ctx(conn, headers) {
        Ok(ctx) => ctx,
        Err(p) => return p,
    };
    let user = match reader(c, &ctx) {
        Ok(u) => u,
        Err(p) => return p,
    };
    let csrf = c.auth.csrf(&ctx.session);
    match render(Arc::clone(c), user, csrf).await {
        Ok(body) => Page { status: StatusCode::OK, body, cookie: ctx.cookie },
        Err(mut p) => {
            p.cookie = ctx.cookie;
            p
        }
    }
}

const OPEN: [IssueState; 2] = [IssueState::Open, IssueState::Acting];

async fn fleet(State(c): St, ConnectInfo(conn): ConnectInfo<Conn>, headers: HeaderMap) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let hosts = c.ask(&user, ops::ListHosts).await.map_err(|r| refused(u, &r))?;
        let open = c
            .ask(&user, ops::ListIssues { states: OPEN.to_vec(), host: None, limit: Some(500) })
            .await
            .map_err(|r| refused(u, &r))?;
        let approvals =
            c.ask(&user, ops::ListApprovals { states: vec![], limit: Some(500) }).await.map_err(|r| refused(u, &r))?;
        let local = c.ask(&user, ops::RunCheck).await.ok();
        let mut rows: Vec<pages::FleetRow> =
            hosts.iter().map(|h| pages::FleetRow::of(h, &open, last_deployment(&approvals, &h.name))).collect();
        // One bounded read per host: its newest anomaly rate.
        for (row, h) in rows.iter_mut().zip(&hosts) {
            row.anomaly_rate = c.latest_anomaly_rate(&user, &h.name).await;
        }
        let local_rate = match &local {
            Some(r) => c.latest_anomaly_rate(&user, r.host.as_str()).await,
            None => None,
        };
        let pending = approvals.iter().filter(|a| a.state == ApprovalState::Pending).count();
        Ok(pages::fleet(u, local.as_ref().map(|r| (r, local_rate)), &rows, pending))
    })
    .await
}

fn is_deployment(a: &ApprovalView) -> bool {
    a.action.get("kind").and_then(|k| k.as_str()) == Some("nixos_switch")
}

/// The newest deployment of `host` among the approvals, in words.
fn last_deployment(approvals: &[ApprovalView], host: &str) -> Option<String> {
    approvals
        .iter()
        .filter(|a| is_deployment(a) && a.host == host)
        .max_by_key(|a| a.requested_at)
        .map(|a| format!("{} ({})", a.state.as_str(), pages::when(a.requested_at)))
}

/// An anomaly rate older than this is not shown on the fleet page.
const RATE_FRESH_SECS: u64 = 3600;

impl Console {
    /// The newest anomaly rate of `host` within [`RATE_FRESH_SECS`]: one bounded read (the
    /// newest raw sample only).
    async fn latest_anomaly_rate(&self, user: &User, host: &str) -> Option<f64> {
        let q = MetricsRead {
            host: host.to_owned(),
            metric: Some(pages::ANOMALY_RATE.to_owned()),
            since_secs: RATE_FRESH_SECS,
            latest: true,
        };
        self.ask(user, q).await.ok()?.points.last().map(|p| p.mean).filter(|v| v.is_finite())
    }

    /// The host page's charts over `range`, through the same `metrics_read` requests as
    /// `macha metrics`; `None` when the host has no history (or it cannot be read).
    async fn host_metrics(&self, user: &User, host: &str, range: Range) -> Option<HostMetrics> {
        let read = |metric: Option<String>| MetricsRead {
            host: host.to_owned(),
            metric,
            since_secs: range.secs(),
            latest: false,
        };
        let index = self.ask(user, read(None)).await.ok()?;
        if index.names.is_empty() {
            return None;
        }
        let mut charts = pages::chart_plan(&index.names);
        for series in charts.iter_mut().flat_map(|c| c.series.iter_mut()) {
            match self.ask(user, read(Some(series.metric.clone()))).await {
                Ok(v) => series.points = v.points,
                Err(r) => tracing::debug!(host, metric = %series.metric, "metric not read: {}", r.message),
            }
        }
        pages::Chart::drop_empty(&mut charts);
        Some(HostMetrics { range, since: index.since, until: index.until, charts })
    }
}

/// The host page's query: the charts' time range.
#[derive(Debug, Default, serde::Deserialize)]
struct HostQuery {
    #[serde(default)]
    range: Option<String>,
}

async fn host(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<HostQuery>,
) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let range = match q.range.as_deref() {
            None | Some("") => Range::default(),
            Some(r) => match Range::parse(r) {
                Some(r) => r,
                None => {
                    return Err(refusal(
                        StatusCode::BAD_REQUEST,
                        u,
                        "Bad range",
                        "The range is one of 6h, 24h, 7d, 30d.",
                    ));
                }
            },
        };
        let detail = c.ask(&user, ops::ShowHost { name: name.clone() }).await.ok();
        let local = c.ask(&user, ops::RunCheck).await.ok().filter(|r| r.host.as_str() == name);
        let report = match local {
            Some(r) => Some(r),
            None => c
                .ask(&user, ops::HostReports { hosts: vec![name.clone()], tag: None })
                .await
                .ok()
                .and_then(|mut v| v.pop()),
        };
        if detail.is_none() && report.is_none() {
            return Err(refusal(StatusCode::NOT_FOUND, u, "Not found", &format!("no host named {name}")));
        }
        let issues = c
            .ask(&user, ops::ListIssues { states: vec![], host: Some(name.clone()), limit: Some(100) })
            .await
            .map_err(|r| refused(u, &r))?;
        let metrics = c.host_metrics(&user, &name, range).await;
        Ok(pages::host(u, &name, detail.as_ref(), report.as_ref(), metrics.as_ref(), &issues))
    })
    .await
}

async fn issues(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Query(filter): Query<IssueFilter>,
) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let states = match filter.state.as_deref() {
            None | Some("") => vec![],
            Some(s) => match IssueState::ALL.iter().find(|k| k.as_str() == s) {
                Some(k) => vec![*k],
                None => return Err(refusal(StatusCode::BAD_REQUEST, u, "Bad filter", "no such issue state")),
            },
        };
        let host = filter.host.clone().filter(|h| !h.is_empty());
        let list =
            c.ask(&user, ops::ListIssues { states, host, limit: Some(500) }).await.map_err(|r| refused(u, &r))?;
        Ok(pages::issues(u, &filter, &list))
    })
    .await
}

async fn issue(State(c): St, ConnectInfo(conn): ConnectInfo<Conn>, headers: HeaderMap, Path(id): Path<i64>) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let d = c.ask(&user, ops::ShowIssue { id }).await.map_err(|r| refused(u, &r))?;
        Ok(pages::issue(u, &d))
    })
    .await
}

async fn approvals(State(c): St, ConnectInfo(conn): ConnectInfo<Conn>, headers: HeaderMap) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let mut list =
            c.ask(&user, ops::ListApprovals { states: vec![], limit: Some(200) }).await.map_err(|r| refused(u, &r))?;
        // Waiting first, then newest first.
        list.sort_by_key(|a| (a.state != ApprovalState::Pending, std::cmp::Reverse(a.requested_at)));
        Ok(pages::approvals(u, &list))
    })
    .await
}

async fn approval(State(c): St, ConnectInfo(conn): ConnectInfo<Conn>, headers: HeaderMap, Path(id): Path<i64>) -> Page {
    read_page(&c, conn, &headers, |c, user, csrf| async move {
        let u = Some(&user);
        let d = c.ask(&user, ops::ShowApproval { id }).await.map_err(|r| refused(u, &r))?;
        // The issue it came from, asked as the issue page asks; the card stands without it.
        let issue = match d.approval.issue_id {
            Some(issue) => c.ask(&user, ops::ShowIssue { id: issue }).await.ok(),
            None => None,
        };
        let first = c.first_of(id);
        Ok(pages::approval_card(u, &d, issue.as_ref(), &csrf, c.now(), first.as_ref()))
    })
    .await
}

/// The fields of a decision form. All optional, so that a missing token is a 403, not a 422.
#[derive(Debug, Default, serde::Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Approve => "approved",
            Verdict::Reject => "rejected",
        }
    }
}

async fn approve(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<DecideForm>,
) -> Page {
    decide(&c, conn, &headers, id, f, Verdict::Approve).await
}

async fn reject(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<DecideForm>,
) -> Page {
    decide(&c, conn, &headers, id, f, Verdict::Reject).await
}

impl Console {
    fn first_of(&self, id: i64) -> Option<FirstApproval> {
        self.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()
    }
}

/// A decision: checked (origin, session, CSRF, tier, the action's digest, expiry, state), then
/// handed to the daemon's `approve`/`reject` — the same engine function as `macha approve`.
async fn decide(c: &Console, conn: Conn, headers: &HeaderMap, id: i64, f: DecideForm, verdict: Verdict) -> Page {
    let what = format!("web {} of approval {id}", verdict.word());
    let ctx = match c.write_ctx(conn, headers, &f.csrf, &what) {
        Ok(ctx) => ctx,
        Err(p) => return p,
    };
    let Some(user) = ctx.user else {
        return refusal(StatusCode::UNAUTHORIZED, None, "Log in", "Log in first.");
    };
    let u = Some(&user);
    let note = Some(f.note.trim().to_owned()).filter(|n| !n.is_empty());
    if note.as_ref().is_some_and(|n| n.len() > 500) {
        return refusal(StatusCode::BAD_REQUEST, u, "Refused", "The note is longer than 500 bytes.");
    }
    if user.tier < Tier::Admin {
        // The daemon refuses and audits it, exactly as on the socket.
        let r = match verdict {
            Verdict::Approve => c.ask(&user, ops::Approve { id, note }).await.map(|_| ()),
            Verdict::Reject => c.ask(&user, ops::Reject { id, note }).await.map(|_| ()),
        };
        return match r {
            Err(r) => refused(u, &r),
            Ok(()) => refusal(StatusCode::FORBIDDEN, u, "Refused", "Deciding needs root or the admin group."),
        };
    }
    let detail: ApprovalDetail = match c.ask(&user, ops::ShowApproval { id }).await {
        Ok(d) => d,
        Err(r) => return refused(u, &r),
    };
    let a = &detail.approval;
    let now = c.now();
    // A second submit of the same decision by the same person says what happened, and does
    // nothing again.
    if let (Some(by), Some(at)) = (&a.decided_by, a.decided_at)
        && *by == user.name
    {
        let same = match verdict {
            Verdict::Approve => {
                matches!(a.state, ApprovalState::Approved | ApprovalState::Executed | ApprovalState::Failed)
            }
            Verdict::Reject => a.state == ApprovalState::Rejected,
        };
        if same {
            let text = format!("Already {} by you at {}; now {}.", verdict.word(), pages::when(at), a.state.as_str());
            return Page {
                status: StatusCode::OK,
                body: pages::message("Already decided", u, &text, false),
                cookie: None,
            };
        }
    }
    if a.state == ApprovalState::Expired || (a.state == ApprovalState::Pending && a.expires_at <= now) {
        return refusal(
            StatusCode::GONE,
            u,
            "Expired",
            &format!("Approval {id} expired at {}.", pages::when(a.expires_at)),
        );
    }
    if a.state != ApprovalState::Pending {
        let by = a.decided_by.as_deref().unwrap_or("someone");
        return refusal(
            StatusCode::CONFLICT,
            u,
            "Already decided",
            &format!("Approval {id} is {} (by {by}); nothing was done.", a.state.as_str()),
        );
    }
    if f.digest != macha_core::policy::action_digest(&a.action) {
        return refusal(
            StatusCode::CONFLICT,
            u,
            "Changed",
            "The action is not the one you were shown; nothing was done. Reload the card.",
        );
    }
    c.daemon.audit(AuditEvent::Decision {
        user: user.name.clone(),
        approval_id: id,
        verdict: verdict.word().to_owned(),
        note: note.clone(),
    });
    match verdict {
        Verdict::Reject => match c.ask(&user, ops::Reject { id, note }).await {
            Ok(_) => {
                c.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                Page {
                    status: StatusCode::OK,
                    body: pages::message("Rejected", u, &format!("Approval {id} rejected; nothing runs."), false),
                    cookie: None,
                }
            }
            Err(r) => refused(u, &r),
        },
        Verdict::Approve => {
            if c.settings.two_person && a.decision.risk == Some(Risk::Critical) {
                let mut first = c.first.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match first.get(&id) {
                    None => {
                        first.insert(id, FirstApproval { by: user.name.clone(), at: now });
                        let text = format!(
                            "Approval {id} is critical: your approval is recorded; a second admin must approve it too."
                        );
                        return Page {
                            status: StatusCode::ACCEPTED,
                            body: pages::message("First approval", u, &text, false),
                            cookie: None,
                        };
                    }
                    Some(f) if f.by == user.name => {
                        let text = format!(
                            "Already approved by you at {}; a second admin must approve it too.",
                            pages::when(f.at)
                        );
                        return Page {
                            status: StatusCode::OK,
                            body: pages::message("Already decided", u, &text, false),
                            cookie: None,
                        };
                    }
                    Some(_) => {
                        first.remove(&id);
                    }
                }
            }
            match c.ask(&user, ops::Approve { id, note }).await {
                Ok(r) => {
                    let text = match r.action_id {
                        Some(action) => {
                            format!("Approval {id} approved; action {action} started ({}).", r.decision.reason)
                        }
                        None => format!(
                            "Approval {id} approved, but the policy refused it at execution: {}.",
                            r.decision.reason
                        ),
                    };
                    Page { status: StatusCode::OK, body: pages::message("Approved", u, &text, false), cookie: None }
                }
                Err(r) => refused(u, &r),
            }
        }
    }
}

async fn deployments(State(c): St, ConnectInfo(conn): ConnectInfo<Conn>, headers: HeaderMap) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let progress = c.ask(&user, ops::DeployProgress).await.map_err(|r| refused(u, &r))?;
        let list =
            c.ask(&user, ops::ListApprovals { states: vec![], limit: Some(500) }).await.map_err(|r| refused(u, &r))?;
        let mut recent: Vec<ApprovalView> = list.into_iter().filter(is_deployment).collect();
        recent.sort_by_key(|a| std::cmp::Reverse(a.requested_at));
        recent.truncate(50);
        Ok(pages::deployments(u, &progress, &recent))
    })
    .await
}

async fn progress(State(c): St, ConnectInfo(conn): ConnectInfo<Conn>, headers: HeaderMap) -> Response {
    let ctx = match c.read_ctx(conn, &headers) {
        Ok(ctx) => ctx,
        Err(p) => return p.into_response(),
    };
    let user = match reader(&c, &ctx) {
        Ok(u) => u,
        Err(p) => return p.into_response(),
    };
    match c.ask(&user, ops::DeployProgress).await {
        Ok(p) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], pages::progress_table(&p).into_string())
            .into_response(),
        Err(r) => refused(Some(&user), &r).into_response(),
    }
}

async fn deployment(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let d = c.ask(&user, ops::ShowApproval { id }).await.map_err(|r| refused(u, &r))?;
        let progress = c.ask(&user, ops::DeployProgress).await.unwrap_or_default();
        Ok(pages::deployment(u, &d, &progress))
    })
    .await
}

async fn logs(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Query(filter): Query<LogFilter>,
) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let f = macha_api::ops::AuditFilter {
            host: filter.host.clone().filter(|h| !h.is_empty()),
            order: ops::Order::NewestFirst,
            limit: Some(500),
            ..Default::default()
        };
        let records = c.ask(&user, ops::QueryAudit { filter: f }).await.map_err(|r| refused(u, &r))?;
        Ok(pages::logs(u, &filter, &records))
    })
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
struct KnowledgeForm {
    #[serde(default)]
    q: String,
}

async fn knowledge(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Query(form): Query<KnowledgeForm>,
) -> Page {
    read_page(&c, conn, &headers, |c, user, _| async move {
        let u = Some(&user);
        let q = form.q.trim().to_owned();
        let query = if q.is_empty() {
            KnowledgeQuery::List { category: None, provenance: None, limit: Some(50) }
        } else {
            KnowledgeQuery::Search { query: q.clone(), limit: Some(50) }
        };
        let answer = c.ask(&user, KnowledgeRead { query }).await.map_err(|r| refused(u, &r))?;
        let runbooks = c.ask(&user, KnowledgeRead { query: KnowledgeQuery::Runbooks }).await.ok();
        Ok(pages::knowledge(u, &q, Some(&answer), runbooks.as_ref()))
    })
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// The login link's page: a button that posts the token (GET itself changes nothing).
async fn login_page(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Query(form): Query<LoginForm>,
) -> Page {
    let ctx = match c.read_ctx(conn, &headers) {
        Ok(ctx) => ctx,
        Err(p) => return p,
    };
    let csrf = c.auth.csrf(&ctx.session);
    let body = pages::page(
        "Log in",
        None,
        maud::html! {
            h1 { "Log in" }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="token" value=(form.token);
                button.approve type="submit" { "Log in" }
            }
        },
    );
    Page { status: StatusCode::OK, body, cookie: ctx.cookie }
}

/// Redeems a login token: a new session (a new id, so no one can plant one) with its user.
async fn login(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Page {
    let ctx = match c.write_ctx(conn, &headers, &form.csrf, "web login") {
        Ok(ctx) => ctx,
        Err(p) => return p,
    };
    let now = Instant::now();
    let Some(user) = c.auth.redeem(form.token.trim(), now) else {
        c.daemon.audit(AuditEvent::Refused {
            who: format!("{conn:?}"),
            what: "web login".into(),
            why: "an unknown, used or expired token".into(),
        });
        return refusal(StatusCode::FORBIDDEN, None, "Refused", "This login link is unknown, used or expired.");
    };
    c.auth.close(&ctx.session);
    let session = match c.auth.open(Some(user.clone()), now) {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    c.daemon.audit(AuditEvent::Login { user: user.name.clone(), how: "a one-time token".into() });
    let body = pages::message("Logged in", Some(&user), &format!("Logged in as {}.", user.name), false);
    Page { status: StatusCode::OK, body, cookie: Some(auth::set_cookie(&session, c.settings.secure_cookies)) }
}

#[derive(Debug, Default, serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): St,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Page {
    let ctx = match c.write_ctx(conn, &headers, &form.csrf, "web logout") {
        Ok(ctx) => ctx,
        Err(p) => return p,
    };
    c.auth.close(&ctx.session);
    Page { status: StatusCode::OK, body: pages::message("Logged out", None, "Logged out.", false), cookie: None }
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", crate::assets::HTMX_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", crate::assets::STYLE_CSS)
}

async fn not_found(method: Method) -> Page {
    let _ = method;
    refusal(StatusCode::NOT_FOUND, None, "Not found", "There is no such page.")
}
