//! The pages, rendered from `macha-api` types with maud: every interpolated value is escaped,
//! links are made only from `http`/`https` URLs, and nothing carries an inline script, style or
//! event handler. Rendering is pure (data in, markup out), so the benchmarks and the tests call
//! these functions directly.

use crate::User;
use crate::assets::HTMX_CONFIG;
use macha_api::Tier;
use macha_api::knowledge::{KnowledgeAnswer, KnowledgeEntry, RunbookView};
use macha_api::reply::{
    ApprovalDetail, ApprovalView, AuditEntry, CheckReport, DeployProgressView, HostDetail, HostView, IssueDetail,
    IssueView, SectionState,
};
use macha_core::Timestamp;
use macha_core::approval::ApprovalState;
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The whole page around `body`.
pub fn page(title: &str, user: Option<&User>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                meta name="referrer" content="same-origin";
                title { (title) " · Macha" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/htmx.min.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Macha" }
                    nav {
                        a href="/" { "Fleet" }
                        a href="/issues" { "Issues" }
                        a href="/approvals" { "Approvals" }
                        a href="/deployments" { "Deployments" }
                        a href="/logs" { "Quest log" }
                        a href="/knowledge" { "Knowledge" }
                    }
                    @if let Some(u) = user {
                        span.who { (u.name) " · " (u.tier.as_str()) }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page that only says something (a refusal, a result), with the HTTP status it goes with.
pub fn message(title: &str, user: Option<&User>, text: &str, bad: bool) -> Markup {
    page(
        title,
        user,
        html! {
            h1 { (title) }
            div.notice.bad[bad] { p { (text) } }
            p { a href="/approvals" { "Approvals" } " · " a href="/" { "Fleet" } }
        },
    )
}

/// `2026-03-01 12:00:00 UTC` (to the second).
pub fn when(t: Timestamp) -> String {
    let s = t.to_string();
    match (s.get(..10), s.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h} UTC"),
        _ => s,
    }
}

/// An `href` only for absolute `http` and `https` URLs; anything else (`javascript:`, `data:`,
/// relative tricks) is not a link.
pub fn safe_href(url: &str) -> Option<&str> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let ok = (lower.starts_with("http://") || lower.starts_with("https://"))
        && !url.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '<' || c == '>');
    ok.then_some(url)
}

/// Text from hosts, logs, the model or people: escaped, with `http(s)` URLs as links.
pub fn text(t: &str) -> Markup {
    html! {
        @for (i, word) in t.split(' ').enumerate() {
            @if i > 0 { " " }
            @match safe_href(word) {
                Some(href) => a href=(href) rel="noreferrer noopener" { (word) },
                None => (word),
            }
        }
    }
}

fn tier_at_least(user: Option<&User>, tier: Tier) -> bool {
    user.is_some_and(|u| u.tier >= tier)
}

fn state_class(word: &str) -> &'static str {
    match word {
        "ok" | "healthy" | "resolved" | "closed" | "executed" | "approved" | "trusted" => "ok",
        "degraded" | "warning" | "pending" | "open" | "acting" | "unknown" => "warn",
        _ => "bad",
    }
}

fn badge(word: &str) -> Markup {
    html! { span class=(format!("badge {}", state_class(word))) { (word) } }
}

/// One row of the fleet page.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    pub name: String,
    pub standing: String,
    pub status: String,
    pub last_contact: Option<Timestamp>,
    pub open_issues: usize,
    pub last_deployment: Option<String>,
}

impl FleetRow {
    /// A registered host's row: its contact state, the open issues on it, its last deployment.
    pub fn of(host: &HostView, issues: &[IssueView], last_deployment: Option<String>) -> FleetRow {
        let status = match &host.status {
            Some(s) => s.kind.clone(),
            None if host.contacted => "unknown".to_owned(),
            None => "not contacted".to_owned(),
        };
        FleetRow {
            name: host.name.clone(),
            standing: host.state_str().to_owned(),
            status,
            last_contact: host.status.as_ref().and_then(|s| s.at.or(s.last_ok)),
            open_issues: issues.iter().filter(|i| i.host == host.name && is_open(i)).count(),
            last_deployment,
        }
    }
}

fn is_open(i: &IssueView) -> bool {
    !matches!(i.state.as_str(), "resolved" | "closed" | "archived")
}

/// The fleet: this host's last report, then every registered host.
pub fn fleet(user: Option<&User>, local: Option<&CheckReport>, rows: &[FleetRow], pending: usize) -> Markup {
    page(
        "Fleet",
        user,
        html! {
            h1 { "Fleet" }
            @if pending > 0 {
                div.notice { a href="/approvals" { (pending) " approval" @if pending != 1 { "s" } " waiting for a person" } }
            }
            @if let Some(r) = local {
                div.card {
                    strong { a href={ "/hosts/" (r.host.as_str()) } { (r.host.as_str()) } }
                    " (this host) " (badge(r.status.as_str()))
                    span.muted { " · observed " (r.taken_at_text) " · " (r.findings.len()) " findings" }
                }
            }
            div.scroll { table {
                thead { tr { th { "host" } th { "status" } th { "standing" } th { "last contact" } th { "open issues" } th { "last deployment" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={ "/hosts/" (r.name) } { (r.name) } }
                            td { (badge(&r.status)) }
                            td { (r.standing) }
                            td { @match r.last_contact { Some(t) => (when(t)), None => span.muted { "never" } } }
                            td { @if r.open_issues > 0 { a href={ "/issues?host=" (r.name) } { (r.open_issues) } } @else { "0" } }
                            td { @match &r.last_deployment { Some(d) => (d), None => span.muted { "none" } } }
                        }
                    }
                }
            } }
            @if rows.is_empty() { p.empty { "No other hosts are registered." } }
        },
    )
}

/// The bar chart of open issues by severity, as inline SVG (presentation by classes only).
pub fn severity_chart(issues: &[IssueView]) -> Markup {
    let counts: Vec<(&str, usize)> = macha_api::reply::Severity::ALL
        .iter()
        .map(|s| (s.as_str(), issues.iter().filter(|i| i.severity == *s && is_open(i)).count()))
        .collect();
    let max = counts.iter().map(|c| c.1).max().unwrap_or(0).max(1);
    html! {
        svg.chart viewBox="0 0 320 110" role="img" aria-label="open issues by severity" {
            @for (i, (name, n)) in counts.iter().enumerate() {
                @let h = n * 80 / max;
                @let x = 10 + i * 62;
                rect class=(match *name { "info" | "notice" => "bar-ok", "warning" => "bar-warn", _ => "bar-bad" })
                    x=(x) y=(90 - h) width="44" height=(h) {}
                text x=(x) y="104" { (name) }
                text x=(x + 16) y=(86 - h) { (n) }
            }
        }
    }
}

fn section_rows(r: &CheckReport) -> Markup {
    let s = &r.sections;
    let all = [
        ("cpu", &s.cpu),
        ("memory", &s.memory),
        ("load", &s.load),
        ("pressure", &s.pressure),
        ("filesystems", &s.filesystems),
        ("network", &s.network),
        ("processes", &s.processes),
        ("units", &s.units),
        ("journal", &s.journal),
        ("nix", &s.nix),
        ("hardware", &s.hardware),
    ];
    html! {
        table { tbody {
            @for (name, state) in all {
                tr { td { (name) } td { @match state {
                    SectionState::Ok => (badge("ok")),
                    SectionState::Unavailable { reason } => { (badge("unavailable")) " " (text(reason)) }
                } } }
            }
        } }
    }
}

fn audit_list(trail: &[AuditEntry]) -> Markup {
    html! {
        @if trail.is_empty() { p.empty { "Nothing recorded." } }
        ol.timeline {
            @for a in trail {
                li {
                    div.when { (when(a.ts)) " · " (a.kind.as_str()) " · " (a.severity.as_str()) " · " (a.host) }
                    div { (text(&a.summary)) }
                    @if let Some(analysis) = analysis_text(&a.payload) {
                        pre { (analysis) }
                    }
                }
            }
        }
    }
}

/// The model's analysis in an audit record's payload, if it carries one.
fn analysis_text(payload: &serde_json::Value) -> Option<String> {
    ["analysis", "diagnosis", "explanation", "diff"]
        .iter()
        .find_map(|k| payload.get(*k))
        .map(|v| v.as_str().map_or_else(|| serde_json::to_string_pretty(v).unwrap_or_default(), str::to_owned))
}

/// One host: its last report's sections and findings, its issues and records.
pub fn host(
    user: Option<&User>,
    name: &str,
    detail: Option<&HostDetail>,
    report: Option<&CheckReport>,
    issues: &[IssueView],
) -> Markup {
    page(
        name,
        user,
        html! {
            h1 { (name) }
            @if let Some(d) = detail {
                div.card { dl {
                    dt { "standing" } dd { (d.host.state_str()) }
                    dt { "address" } dd { (d.host.user) "@" (d.host.address) ":" (d.host.port) }
                    dt { "os" } dd { (d.host.os.as_deref().unwrap_or("unknown")) }
                    dt { "tags" } dd { (d.host.tags.join(", ")) }
                    dt { "status" } dd { @match &d.host.status { Some(s) => { (badge(&s.kind)) @if let Some(r) = &s.reason { " " (text(r)) } }, None => "not contacted yet" } }
                    dt { "first seen" } dd { (when(d.host.first_seen)) }
                    dt { "last seen" } dd { (when(d.host.last_seen)) }
                } }
            }
            h2 { "Last report" }
            @match report {
                Some(r) => {
                    p { (badge(r.status.as_str())) " observed " (r.taken_at_text) @if let Some(s) = &r.stale { " (stale: " (s) ")" } }
                    (section_rows(r))
                    h2 { "Findings" }
                    @if r.findings.is_empty() { p.empty { "No findings." } }
                    ul { @for f in &r.findings { li { (f.check.as_str()) " · " (f.subject) ": " (text(&f.summary)) } } }
                }
                None => p.empty { "No report for this host yet." },
            }
            h2 { "Metrics" }
            // Metric history is recorded by the daemon but not yet served on the socket; the
            // charts come here when it is.
            p.empty { "No metric history yet." }
            h2 { "Issues" }
            (issue_table(issues))
            @if let Some(d) = detail {
                h2 { "Events and deployments" }
                (audit_list(&d.audit))
            }
        },
    )
}

fn issue_table(issues: &[IssueView]) -> Markup {
    html! {
        @if issues.is_empty() { p.empty { "No issues." } }
        @else {
            div.scroll { table {
                thead { tr { th { "id" } th { "state" } th { "severity" } th { "host" } th { "last seen" } th { "summary" } } }
                tbody { @for i in issues {
                    tr {
                        td { a href={ "/issues/" (i.id) } { (i.id) } }
                        td { (badge(i.state.as_str())) }
                        td { (i.severity.as_str()) }
                        td { a href={ "/hosts/" (i.host) } { (i.host) } }
                        td { (when(i.last_seen)) }
                        td { (text(&i.summary)) }
                    }
                } }
            } }
        }
    }
}

/// The filters of the issue list, as the query string gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct IssueFilter {
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
}

/// The issue list with its filters.
pub fn issues(user: Option<&User>, filter: &IssueFilter, issues: &[IssueView]) -> Markup {
    let shown: Vec<IssueView> = issues
        .iter()
        .filter(|i| filter.severity.as_deref().is_none_or(|s| s.is_empty() || i.severity.as_str() == s))
        .cloned()
        .collect();
    page(
        "Issues",
        user,
        html! {
            h1 { "Issues" }
            (severity_chart(issues))
            form.filters method="get" action="/issues" {
                label { "state " select name="state" {
                    @for s in ["", "open", "acting", "resolved", "closed", "archived"] {
                        option value=(s) selected[filter.state.as_deref() == Some(s)] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                } }
                label { "host " input type="text" name="host" value=(filter.host.as_deref().unwrap_or("")); }
                label { "severity " select name="severity" {
                    @for s in ["", "info", "notice", "warning", "error", "critical"] {
                        option value=(s) selected[filter.severity.as_deref() == Some(s)] { @if s.is_empty() { "any" } @else { (s) } }
                    }
                } }
                button type="submit" { "Filter" }
            }
            (issue_table(&shown))
        },
    )
}

/// One issue: what it is, its timeline (with the model's analysis), what it cited, what changed,
/// and similar past issues.
pub fn issue(user: Option<&User>, d: &IssueDetail) -> Markup {
    let i = &d.issue;
    page(
        &format!("Issue {}", i.id),
        user,
        html! {
            h1 { "Issue " (i.id) " " (badge(i.state.as_str())) }
            div.card {
                p { (text(&i.summary)) }
                dl {
                    dt { "host" } dd { a href={ "/hosts/" (i.host) } { (i.host) } }
                    dt { "check" } dd { (i.check_name) " · " (i.subject) }
                    dt { "severity" } dd { (i.severity.as_str()) }
                    dt { "first seen" } dd { (when(i.first_seen)) }
                    dt { "last seen" } dd { (when(i.last_seen)) }
                    dt { "came back" } dd { (i.recurrences) " times" }
                    @if let Some(r) = &i.resolution { dt { "resolution" } dd { (text(r)) } }
                }
            }
            h2 { "Timeline and analysis" }
            (audit_list(&d.audit))
            h2 { "Cited knowledge" }
            @if d.citations.is_empty() { p.empty { "The analysis cited nothing." } }
            ul { @for c in &d.citations { li { (text(c)) } } }
            h2 { "What changed" }
            @if d.recent_changes.is_empty() { p.empty { "No recent changes found for this host." } }
            ul { @for c in &d.recent_changes { li { code { (c) } } } }
            h2 { "Similar past issues" }
            @if d.similar.is_empty() { p.empty { "None." } }
            ul { @for s in &d.similar {
                li {
                    a href={ "/issues/" (s.id) } { "issue " (s.id) } " on " (s.host) ": " (text(&s.summary))
                    span.muted { " (" (s.why) @if s.verified { "; verified resolution" } ")" }
                }
            } }
        },
    )
}

fn describe(action: &serde_json::Value) -> String {
    serde_json::from_value::<macha_core::Action>(action.clone())
        .map(|a| a.describe())
        .unwrap_or_else(|_| "an action this version cannot read".to_owned())
}

/// The approvals: waiting first, then the recent decisions.
pub fn approvals(user: Option<&User>, list: &[ApprovalView]) -> Markup {
    page(
        "Approvals",
        user,
        html! {
            h1 { "Approvals" }
            @if list.is_empty() { p.empty { "No approval requests." } }
            @else {
                div.scroll { table {
                    thead { tr { th { "id" } th { "state" } th { "host" } th { "risk" } th { "action" } th { "expires" } } }
                    tbody { @for a in list {
                        tr {
                            td { a href={ "/approvals/" (a.id) } { (a.id) } }
                            td { (badge(a.state.as_str())) }
                            td { (a.host) }
                            td { (a.decision.risk.map_or("?", |r| r.as_str())) }
                            td { a href={ "/approvals/" (a.id) } { (describe(&a.action)) } }
                            td { (when(a.expires_at)) }
                        }
                    } }
                } }
            }
        },
    )
}

/// Who proposed an action, in words: a rule, the model, or a person.
pub fn proposer(requested_by: &str) -> &'static str {
    // The engine's own reading of `requested_by` (`rule:<check>`, `uid:<n>`, anything else is
    // the model).
    if requested_by.starts_with("rule:") {
        "a rule"
    } else if requested_by.strip_prefix("uid:").is_some_and(|u| u.parse::<u32>().is_ok()) {
        "a person"
    } else {
        "the model"
    }
}

/// What the console knows of a decision taken earlier, shown on the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstApproval {
    pub by: String,
    pub at: Timestamp,
}

/// The approval card: everything a person needs to decide, and the two forms that decide.
/// `issue` is the issue the request came from (its page's answer), when there is one.
pub fn approval_card(
    user: Option<&User>,
    d: &ApprovalDetail,
    issue: Option<&IssueDetail>,
    csrf: &str,
    now: Timestamp,
    first: Option<&FirstApproval>,
) -> Markup {
    let a = &d.approval;
    let digest = macha_core::policy::action_digest(&a.action);
    let expired = a.state == ApprovalState::Expired || (a.state == ApprovalState::Pending && a.expires_at <= now);
    let may_decide = a.state == ApprovalState::Pending && !expired && tier_at_least(user, Tier::Admin);
    let action_json = serde_json::to_string_pretty(&a.action).unwrap_or_default();
    page(
        &format!("Approval {}", a.id),
        user,
        html! {
            h1 { "Approval " (a.id) " " (badge(if expired { "expired" } else { a.state.as_str() })) }
            div.card {
                h2 { (describe(&a.action)) }
                dl {
                    dt { "host" } dd { a href={ "/hosts/" (a.host) } { (a.host) } }
                    @if let Some(id) = a.issue_id {
                        dt { "issue" } dd {
                            a href={ "/issues/" (id) } { "issue " (id) }
                            @if let Some(i) = issue { " " (badge(i.issue.state.as_str())) " " (text(&i.issue.summary)) }
                        }
                    }
                    dt { "exact action" } dd { pre { (action_json) } }
                    dt { "why it needs a person" } dd {
                        (text(a.decision.reason.as_deref().unwrap_or("?")))
                        " (risk " strong { (a.decision.risk.map_or("?", |r| r.as_str())) } ")"
                    }
                    dt { "why it was proposed" } dd { (text(&a.reason)) }
                    dt { "proposed by" } dd { (proposer(&a.requested_by)) ": " (a.requested_by) " at " (when(a.requested_at)) }
                    dt { "expires" } dd { (when(a.expires_at)) }
                    dt { "if rejected" } dd { "Nothing runs. The request becomes rejected (final), the issue it came from stays open and watched, and your reason is kept on the request, in the audit trail and in the model's discussion of the request, which it reads before proposing for the issue again." }
                    dt { "action digest" } dd { code { (digest) } }
                    @if let (Some(by), Some(at)) = (&a.decided_by, a.decided_at) {
                        dt { "decided" } dd { (a.state.as_str()) " by " (by) " at " (when(at)) @if let Some(n) = &a.decision_note { ": " (text(n)) } }
                    }
                    @if let Some(r) = &a.result { dt { "result" } dd { (text(r)) } }
                    @if let Some(f) = first { dt { "first approval" } dd { (f.by) " at " (when(f.at)) "; a second admin must approve" } }
                }
                @if may_decide {
                    form.decide method="post" action={ "/approvals/" (a.id) "/approve" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="digest" value=(digest);
                        label { "note (optional)" input type="text" name="note" maxlength="500"; }
                        button.approve type="submit" { "Approve" }
                    }
                    form.decide method="post" action={ "/approvals/" (a.id) "/reject" } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="digest" value=(digest);
                        label { "reason (optional)" input type="text" name="note" maxlength="500"; }
                        button.reject type="submit" { "Reject" }
                    }
                } @else if a.state == ApprovalState::Pending && !expired {
                    p.muted { "Only an admin may decide." }
                }
            }
            @if let Some(i) = issue { (issue_analysis(i)) }
            h2 { "Evidence and trail" }
            (audit_list(&d.audit))
        },
    )
}

/// The issue behind an approval, on its card: the model's analyses of it and what they cited.
fn issue_analysis(d: &IssueDetail) -> Markup {
    let analyses: Vec<AuditEntry> = d.audit.iter().filter(|a| analysis_text(&a.payload).is_some()).cloned().collect();
    html! {
        h2 { "The issue's analysis" }
        @if analyses.is_empty() { p.empty { "The model has not analysed " a href={ "/issues/" (d.issue.id) } { "issue " (d.issue.id) } "." } }
        @else { (audit_list(&analyses)) }
        h3 { "Cited" }
        @if d.citations.is_empty() { p.empty { "The analysis cited nothing." } }
        ul { @for c in &d.citations { li { (text(c)) } } }
    }
}

/// The deployments under way, refreshed by htmx every two seconds (the page itself works
/// without it: reload).
pub fn deployments(user: Option<&User>, progress: &[DeployProgressView], recent: &[ApprovalView]) -> Markup {
    page(
        "Deployments",
        user,
        html! {
            h1 { "Deployments" }
            h2 { "Under way" }
            div hx-get="/deployments/progress" hx-trigger="every 2s" hx-swap="innerHTML" {
                (progress_table(progress))
            }
            h2 { "Recent" }
            @if recent.is_empty() { p.empty { "No deployments requested." } }
            ul { @for a in recent {
                li { a href={ "/deployments/" (a.id) } { (describe(&a.action)) } " · " (badge(a.state.as_str())) " · " (when(a.requested_at)) }
            } }
        },
    )
}

/// The table of deployments under way (also the htmx fragment).
pub fn progress_table(progress: &[DeployProgressView]) -> Markup {
    html! {
        @if progress.is_empty() { p.empty { "No deployment is under way." } }
        @else {
            div.scroll { table {
                thead { tr { th { "deployment" } th { "host" } th { "phase" } th { "step" } th { "since" } } }
                tbody { @for p in progress {
                    tr { td { code { (p.deploy) } } td { (p.host) } td { (p.phase) } td { (p.step) } td { (when(p.step_started)) } }
                } }
            } }
        }
    }
}

/// One deployment: its approval (the closure diff is in its trail), progress, and final state.
pub fn deployment(user: Option<&User>, d: &ApprovalDetail, progress: &[DeployProgressView]) -> Markup {
    let a = &d.approval;
    let mine: Vec<DeployProgressView> = progress.iter().filter(|p| p.host == a.host).cloned().collect();
    page(
        &format!("Deployment {}", a.id),
        user,
        html! {
            h1 { "Deployment " (a.id) " " (badge(a.state.as_str())) }
            div.card { dl {
                dt { "host" } dd { (a.host) }
                dt { "what" } dd { (describe(&a.action)) }
                dt { "approval" } dd { a href={ "/approvals/" (a.id) } { "the approval card" } }
                @if let Some(r) = &a.result { dt { "final state" } dd { (text(r)) } }
            } }
            h2 { "Progress" }
            div hx-get="/deployments/progress" hx-trigger="every 2s" hx-swap="innerHTML" { (progress_table(&mine)) }
            h2 { "Closure diff and trail" }
            (audit_list(&d.audit))
        },
    )
}

/// The quest log: the audit trail, searched.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct LogFilter {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

pub fn logs(user: Option<&User>, filter: &LogFilter, records: &[AuditEntry]) -> Markup {
    let q = filter.q.as_deref().unwrap_or("").to_lowercase();
    let shown: Vec<AuditEntry> =
        records.iter().filter(|r| q.is_empty() || r.summary.to_lowercase().contains(&q)).cloned().collect();
    page(
        "Quest log",
        user,
        html! {
            h1 { "Quest log" }
            form.filters method="get" action="/logs" {
                label { "search " input type="search" name="q" value=(filter.q.as_deref().unwrap_or("")); }
                label { "host " input type="text" name="host" value=(filter.host.as_deref().unwrap_or("")); }
                button type="submit" { "Search" }
            }
            (audit_list(&shown))
        },
    )
}

/// The knowledge base: search and entries, and the runbook catalog (`runbooks`, the daemon's
/// answer to the catalog query; `None` when it could not be read).
pub fn knowledge(
    user: Option<&User>,
    q: &str,
    answer: Option<&KnowledgeAnswer>,
    runbooks: Option<&KnowledgeAnswer>,
) -> Markup {
    let (catalog, skipped): (&[RunbookView], &[String]) = match runbooks {
        Some(KnowledgeAnswer::Runbooks { runbooks, skipped }) => (runbooks, skipped),
        _ => (&[], &[]),
    };
    let entries: &[KnowledgeEntry] = match answer {
        Some(KnowledgeAnswer::Entries { entries, .. }) => entries,
        _ => &[],
    };
    page(
        "Knowledge",
        user,
        html! {
            h1 { "Knowledge" }
            form.filters method="get" action="/knowledge" {
                label { "search " input type="search" name="q" value=(q); }
                button type="submit" { "Search" }
            }
            @if entries.is_empty() { p.empty { "No entries." } }
            @for e in entries {
                div.card {
                    strong { (e.topic) } " " span.muted { (e.category) " · " (e.provenance) " · confidence " (format!("{:.2}", e.confidence)) }
                    p { (text(&e.content)) }
                    @if !e.use_when.is_empty() { p.muted { "use when: " (text(&e.use_when)) } }
                }
            }
            h2 { "Runbooks" }
            @if catalog.is_empty() { p.empty { "No runbooks." } }
            @else {
                div.scroll { table {
                    thead { tr { th { "runbook" } th { "use when" } th { "updated" } } }
                    tbody { @for r in catalog {
                        tr {
                            td { code { (r.id) } br; (r.title) " " span.muted { "(" (r.origin) ")" } }
                            td { (text(&r.use_when)) }
                            td { (r.updated) }
                        }
                    } }
                } }
                p.muted { "The whole text: " code { "macha knowledge runbooks show ID" } "." }
            }
            @for s in skipped { p.muted { "skipped " (s) } }
        },
    )
}

/// Marks a fragment as already escaped (for the htmx fragment answers).
pub fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_become_links() {
        assert_eq!(safe_href("https://nixos.org/manual"), Some("https://nixos.org/manual"));
        assert_eq!(safe_href("javascript:alert(1)"), None);
        assert_eq!(safe_href("JaVaScRiPt:alert(1)"), None);
        assert_eq!(safe_href("data:text/html,<script>"), None);
        assert_eq!(safe_href("//evil.example"), None);
        assert_eq!(safe_href("http://x\"onmouseover=1"), None);
    }

    #[test]
    fn hostile_text_is_escaped_and_inert() {
        let t = text("<script>alert(1)</script> <img src=x onerror=alert(2)> javascript:alert(3) https://ok.example/a")
            .into_string();
        assert!(!t.contains("<script"), "{t}");
        assert!(!t.contains("<img"), "{t}");
        assert!(t.contains("&lt;script&gt;"), "{t}");
        assert!(!t.contains("href=\"javascript"), "{t}");
        assert!(t.contains("<a href=\"https://ok.example/a\""), "{t}");
    }

    #[test]
    fn pages_carry_no_inline_script_or_style() {
        let p = page("t", None, html! { p { "x" } }).into_string();
        assert!(p.contains("<script src=\"/assets/htmx.min.js\""));
        assert_eq!(p.matches("<script").count(), 1, "{p}");
        assert!(!p.contains("style="), "{p}");
        assert!(!p.contains("<style"), "{p}");
    }

    #[test]
    fn proposers_are_named() {
        assert_eq!(proposer("model:qwen3"), "the model");
        assert_eq!(proposer("rule:unit_failed"), "a rule");
        assert_eq!(proposer("uid:1000"), "a person");
    }
}
