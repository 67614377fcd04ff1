//! The pages, rendered from `macha-api` types with maud: every interpolated value is escaped,
//! links are made only from `http`/`https` URLs, and nothing carries an inline script, style or
//! event handler. Rendering is pure (data in, markup out), so the benchmarks and the tests call
//! these functions directly.

use crate::User;
use crate::assets::HTMX_CONFIG;
use macha_api::Tier;
use macha_api::knowledge::{KnowledgeAnswer, KnowledgeEntry, RunbookView};
use macha_api::metrics::MetricPointView;
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
    /// The host's latest anomaly rate (`anomaly.rate_percent`), when known.
    pub anomaly_rate: Option<f64>,
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
            anomaly_rate: None,
        }
    }
}

fn is_open(i: &IssueView) -> bool {
    !matches!(i.state.as_str(), "resolved" | "closed" | "archived")
}

/// The fleet: this host's last report (with its anomaly rate, when known), then every
/// registered host.
pub fn fleet(
    user: Option<&User>,
    local: Option<(&CheckReport, Option<f64>)>,
    rows: &[FleetRow],
    pending: usize,
) -> Markup {
    page(
        "Fleet",
        user,
        html! {
            h1 { "Fleet" }
            @if pending > 0 {
                div.notice { a href="/approvals" { (pending) " approval" @if pending != 1 { "s" } " waiting for a person" } }
            }
            @if let Some((r, rate)) = local {
                div.card {
                    strong { a href={ "/hosts/" (r.host.as_str()) } { (r.host.as_str()) } }
                    " (this host) " (badge(r.status.as_str()))
                    span.muted { " · observed " (r.taken_at_text) " · " (r.findings.len()) " findings" }
                    @if let Some(rate) = rate { span.muted { " · anomaly rate " (percent(rate)) } }
                }
            }
            div.scroll { table {
                thead { tr { th { "host" } th { "status" } th { "standing" } th { "last contact" } th { "open issues" } th { "last deployment" } th { "anomaly rate" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={ "/hosts/" (r.name) } { (r.name) } }
                            td { (badge(&r.status)) }
                            td { (r.standing) }
                            td { @match r.last_contact { Some(t) => (when(t)), None => span.muted { "never" } } }
                            td { @if r.open_issues > 0 { a href={ "/issues?host=" (r.name) } { (r.open_issues) } } @else { "0" } }
                            td { @match &r.last_deployment { Some(d) => (d), None => span.muted { "none" } } }
                            td { @match r.anomaly_rate { Some(a) => (percent(a)), None => span.muted { "—" } } }
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

/// One host: its last report's sections and findings, its metric charts (with the anomaly rate
/// and the open `anomaly`/`fill_up` issues), its issues and records.
pub fn host(
    user: Option<&User>,
    name: &str,
    detail: Option<&HostDetail>,
    report: Option<&CheckReport>,
    metrics: Option<&HostMetrics>,
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
            (metrics_section(metrics, issues))
            h2 { "Issues" }
            (issue_table(issues))
            @if let Some(d) = detail {
                h2 { "Events and deployments" }
                (audit_list(&d.audit))
            }
        },
    )
}

/// The time ranges of the host page's charts (`?range=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Range {
    #[default]
    H6,
    H24,
    D7,
    D30,
}

impl Range {
    pub const ALL: [Range; 4] = [Range::H6, Range::H24, Range::D7, Range::D30];

    /// `6h`, `24h`, `7d` or `30d`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Range> {
        Range::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Range::H6 => "6h",
            Range::H24 => "24h",
            Range::D7 => "7d",
            Range::D30 => "30d",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Range::H6 => "6 h",
            Range::H24 => "24 h",
            Range::D7 => "7 d",
            Range::D30 => "30 d",
        }
    }

    pub fn secs(self) -> u64 {
        match self {
            Range::H6 => 6 * 3600,
            Range::H24 => 24 * 3600,
            Range::D7 => 7 * 86_400,
            Range::D30 => 30 * 86_400,
        }
    }
}

/// The metric holding a host's anomaly rate.
pub const ANOMALY_RATE: &str = "anomaly.rate_percent";
/// Filesystems charted at most on the host page.
pub const CHARTED_FILESYSTEMS_MAX: usize = 12;
/// Time columns a chart line has at most (longer series are averaged into them).
const CHART_COLUMNS: usize = 300;

/// One line of a chart: its label, the metric it draws, and the points read.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartSeries {
    pub label: String,
    pub metric: String,
    pub points: Vec<MetricPointView>,
}

/// One chart: a title, whether its values are percentages, a fixed top of the scale (100 for a
/// share; none to scale to the largest value), and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub percent: bool,
    pub top: Option<f64>,
    pub series: Vec<ChartSeries>,
}

impl Chart {
    /// Drops the lines without points, and the charts left without lines.
    pub fn drop_empty(charts: &mut Vec<Chart>) {
        charts.retain_mut(|c| {
            c.series.retain(|s| !s.points.is_empty());
            !c.series.is_empty()
        });
    }
}

/// What the host page shows of a host's metric history.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMetrics {
    pub range: Range,
    pub since: Timestamp,
    pub until: Timestamp,
    pub charts: Vec<Chart>,
}

impl HostMetrics {
    /// The newest anomaly rate among the points read.
    pub fn anomaly_rate(&self) -> Option<f64> {
        self.charts
            .iter()
            .flat_map(|c| &c.series)
            .filter(|s| s.metric == ANOMALY_RATE)
            .filter_map(|s| s.points.iter().filter(|p| p.mean.is_finite()).max_by_key(|p| p.ts))
            .map(|p| p.mean)
            .next()
    }
}

/// The charts of a host with these metric names (their points still to be read): CPU, memory
/// used, load, pressure and the anomaly rate always (the names are those of the newest rows,
/// and a metric missing from one sample may still have history), and each named filesystem's
/// used share (at most [`CHARTED_FILESYSTEMS_MAX`]). Lines without points are dropped once read
/// ([`Chart::drop_empty`]).
pub fn chart_plan(names: &[String]) -> Vec<Chart> {
    let chart = |title: String, percent: bool, top: Option<f64>, lines: &[(&str, &str)]| -> Chart {
        let series: Vec<ChartSeries> = lines
            .iter()
            .map(|(l, m)| ChartSeries { label: (*l).to_owned(), metric: (*m).to_owned(), points: Vec::new() })
            .collect();
        Chart { title, percent, top, series }
    };
    let mut out = vec![
        chart("CPU".into(), true, Some(100.0), &[("busy", "cpu.usage_percent")]),
        chart("Memory used".into(), true, Some(100.0), &[("used", "mem.used_percent")]),
        chart("Load".into(), false, None, &[("1 min", "load.1"), ("5 min", "load.5"), ("15 min", "load.15")]),
        chart(
            "Pressure stall (some, avg60)".into(),
            true,
            None,
            &[("cpu", "psi.cpu_some"), ("memory", "psi.memory_some"), ("io", "psi.io_some")],
        ),
    ];
    for n in names.iter().filter(|n| n.starts_with("fs.used_percent:")).take(CHARTED_FILESYSTEMS_MAX) {
        let mount = n.split_once(':').map_or("", |(_, m)| m);
        out.push(chart(format!("Filesystem {mount}: used"), true, Some(100.0), &[("used", n)]));
    }
    out.push(chart("Anomaly rate".into(), true, None, &[("anomalous metrics", ANOMALY_RATE)]));
    out
}

fn percent(v: f64) -> String {
    format!("{v:.1} %")
}

fn value_text(v: f64, percent_unit: bool) -> String {
    if percent_unit { percent(v) } else { format!("{v:.2}") }
}

/// The smallest of 1, 2, 5 × a power of ten at least `v` (1 for nothing to show).
fn nice_top(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|t| *t >= v).unwrap_or(10.0 * mag)
}

/// `03-01 12:00` (UTC).
fn short_when(t: Timestamp) -> String {
    let s = t.to_string();
    match (s.get(5..10), s.get(11..16)) {
        (Some(d), Some(h)) => format!("{d} {h}"),
        _ => s,
    }
}

/// A series' points in `[t0, t1]` (milliseconds), finite means only, averaged into at most
/// [`CHART_COLUMNS`] time columns: `(column, time, value)`, in time order.
fn columns(points: &[MetricPointView], t0: f64, t1: f64) -> Vec<(usize, f64, f64)> {
    let mut sums: Vec<(f64, f64, u32)> = vec![(0.0, 0.0, 0); CHART_COLUMNS];
    let width = (t1 - t0).max(1.0);
    for p in points {
        let t = p.ts.millis() as f64;
        if !p.mean.is_finite() || t < t0 || t > t1 {
            continue;
        }
        let col = (((t - t0) / width) * CHART_COLUMNS as f64) as usize;
        let c = &mut sums[col.min(CHART_COLUMNS - 1)];
        c.0 += t;
        c.1 += p.mean;
        c.2 += 1;
    }
    sums.into_iter()
        .enumerate()
        .filter(|(_, c)| c.2 > 0)
        .map(|(i, c)| (i, c.0 / f64::from(c.2), c.1 / f64::from(c.2)))
        .collect()
}

/// Splits columns into runs without a gap: a gap is more than three times the usual distance
/// between neighbouring columns (and more than two columns).
fn runs(cols: &[(usize, f64, f64)]) -> Vec<&[(usize, f64, f64)]> {
    let mut steps: Vec<usize> = cols.windows(2).map(|w| w[1].0 - w[0].0).collect();
    steps.sort_unstable();
    let usual = steps.get(steps.len() / 2).copied().unwrap_or(1);
    let gap = (usual * 3).max(2);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..cols.len() {
        if cols[i].0 - cols[i - 1].0 > gap {
            out.push(&cols[start..i]);
            start = i;
        }
    }
    if start < cols.len() {
        out.push(&cols[start..]);
    }
    out
}

/// One chart as inline SVG: lines by class (the stylesheet colours them), presentation
/// attributes only, every number formatted by the console (nothing read becomes markup).
pub fn chart_svg(c: &Chart, since: Timestamp, until: Timestamp) -> Markup {
    const LEFT: f64 = 46.0;
    const RIGHT: f64 = 632.0;
    const TOP: f64 = 8.0;
    const BOTTOM: f64 = 140.0;
    let t0 = since.millis() as f64;
    let t1 = (until.millis() as f64).max(t0 + 1.0);
    let lines: Vec<Vec<(usize, f64, f64)>> = c.series.iter().map(|s| columns(&s.points, t0, t1)).collect();
    let largest = lines.iter().flatten().map(|p| p.2).fold(0.0, f64::max);
    let top = c.top.unwrap_or_else(|| nice_top(largest));
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v / top).clamp(0.0, 1.0) * (BOTTOM - TOP);
    html! {
        svg.chart.metric viewBox="0 0 640 176" role="img" aria-label=(c.title) {
            line.axis x1=(LEFT) y1=(BOTTOM) x2=(RIGHT) y2=(BOTTOM) stroke-width="1" {}
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(BOTTOM) stroke-width="1" {}
            line.grid x1=(LEFT) y1=(TOP) x2=(RIGHT) y2=(TOP) stroke-width="1" {}
            text x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" { (value_text(top, c.percent)) }
            text x=(LEFT - 4.0) y=(BOTTOM) text-anchor="end" { "0" }
            text x=(LEFT) y="156" { (short_when(since)) }
            text x=(RIGHT) y="156" text-anchor="end" { (short_when(until)) " UTC" }
            @for (i, cols) in lines.iter().enumerate() {
                @for run in runs(cols) {
                    @if let [only] = run {
                        circle class=(format!("dot s{i}")) cx=(format!("{:.1}", x(only.1))) cy=(format!("{:.1}", y(only.2))) r="2" {}
                    } @else {
                        path class=(format!("line s{i}")) fill="none" stroke-width="1.5" d=(path_data(run, &x, &y)) {}
                    }
                }
            }
            @for (i, s) in c.series.iter().enumerate() {
                @if c.series.len() > 1 {
                    text class=(format!("legend s{i}")) x=(LEFT + 110.0 * i as f64) y="172" { "▬ " (s.label) }
                }
            }
        }
    }
}

fn path_data(run: &[(usize, f64, f64)], x: &impl Fn(f64) -> f64, y: &impl Fn(f64) -> f64) -> String {
    let mut d = String::with_capacity(run.len() * 14);
    for (i, p) in run.iter().enumerate() {
        d.push(if i == 0 { 'M' } else { 'L' });
        d.push_str(&format!("{:.1},{:.1}", x(p.1), y(p.2)));
    }
    d
}

/// The host page's metric section: the range links, the anomaly rate, the open `anomaly` and
/// `fill_up` issues, and the charts; a placeholder for a host without history.
fn metrics_section(metrics: Option<&HostMetrics>, issues: &[IssueView]) -> Markup {
    let over_time: Vec<IssueView> = issues
        .iter()
        .filter(|i| is_open(i) && matches!(i.check_name.as_str(), "anomaly" | "fill_up"))
        .cloned()
        .collect();
    html! {
        @if !over_time.is_empty() {
            h3 { "Open anomaly and fill-up issues" }
            (issue_table(&over_time))
        }
        @match metrics.filter(|m| !m.charts.is_empty()) {
            None => p.empty { "No metric history yet." },
            Some(m) => {
                p.ranges {
                    "last "
                    @for (i, r) in Range::ALL.iter().enumerate() {
                        @if i > 0 { " · " }
                        @if *r == m.range { strong { (r.label()) } }
                        @else { a href={ "?range=" (r.as_str()) } { (r.label()) } }
                    }
                }
                p { "anomaly rate: " @match m.anomaly_rate() { Some(a) => strong { (percent(a)) }, None => span.muted { "unknown" } } }
                @for c in &m.charts {
                    figure.chart {
                        figcaption {
                            (c.title)
                            @if let Some(p) = c.series.first().and_then(|s| s.points.iter().filter(|p| p.mean.is_finite()).max_by_key(|p| p.ts)) {
                                span.muted { " · " (value_text(p.mean, c.percent)) " at " (short_when(p.ts)) }
                            }
                        }
                        (chart_svg(c, m.since, m.until))
                    }
                }
            }
        }
    }
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
    use macha_core::issue::IssueState;

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

    fn points(from: i64, step: i64, values: &[f64]) -> Vec<MetricPointView> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| MetricPointView {
                ts: Timestamp::from_secs(from + i as i64 * step),
                span_secs: 0,
                min: *v,
                max: *v,
                mean: *v,
                count: 1,
            })
            .collect()
    }

    #[test]
    fn ranges_are_the_four_offered_and_nothing_else() {
        assert_eq!(Range::ALL.map(|r| Range::parse(r.as_str())), Range::ALL.map(Some));
        assert_eq!(Range::parse("24h").map(Range::secs), Some(86_400));
        for bad in ["", "1h", "6H", "7d;", "<script>", "30d "] {
            assert_eq!(Range::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Range::default(), Range::H6);
    }

    #[test]
    fn the_plan_charts_what_the_host_has() {
        let mut names: Vec<String> =
            ["cpu.usage_percent", "load.1", "load.15", "psi.io_some", ANOMALY_RATE, "net.rx_bytes:eth0"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        names.extend((0..20).map(|i| format!("fs.used_percent:/m{i:02}")));
        let mut plan = chart_plan(&names);
        let titles: Vec<&str> = plan.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(&titles[..4], ["CPU", "Memory used", "Load", "Pressure stall (some, avg60)"]);
        assert_eq!(titles.last(), Some(&"Anomaly rate"));
        assert_eq!(titles.iter().filter(|t| t.starts_with("Filesystem")).count(), CHARTED_FILESYSTEMS_MAX);
        assert!(!titles.iter().any(|t| t.contains("eth0")), "network is not charted");
        // Once read, what has no points goes: here everything but load.1, load.15 and the
        // first filesystem.
        for s in plan.iter_mut().flat_map(|c| c.series.iter_mut()) {
            if ["load.1", "load.15", "fs.used_percent:/m00"].contains(&s.metric.as_str()) {
                s.points = points(1_790_000_000, 60, &[1.0]);
            }
        }
        Chart::drop_empty(&mut plan);
        let left: Vec<Vec<&str>> = plan.iter().map(|c| c.series.iter().map(|s| s.metric.as_str()).collect()).collect();
        assert_eq!(left, [vec!["load.1", "load.15"], vec!["fs.used_percent:/m00"]]);
    }

    #[test]
    fn a_chart_is_a_path_of_formatted_numbers_with_gaps_and_no_inline_style() {
        let since = Timestamp::from_secs(1_790_000_000);
        let until = Timestamp::from_secs(1_790_000_000 + 6 * 3600);
        // A sample a minute for two hours, nothing for two hours, then a minute again; one
        // value is not a number and one is infinite: neither is drawn.
        let mut pts = points(1_790_000_000, 60, &[10.0; 120]);
        pts.extend(points(1_790_000_000 + 4 * 3600, 60, &[50.0; 60]));
        pts[5].mean = f64::NAN;
        pts[6].mean = f64::INFINITY;
        let chart = Chart {
            title: "Filesystem /<script>alert(1)</script>: used".into(),
            percent: true,
            top: Some(100.0),
            series: vec![ChartSeries { label: "used".into(), metric: "fs.used_percent:/x".into(), points: pts }],
        };
        let svg = chart_svg(&chart, since, until).into_string();
        assert_eq!(svg.matches("<path").count(), 2, "the gap splits the line: {svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(!svg.contains("<script"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "the title is escaped: {svg}");
        assert!(!svg.contains("style="), "{svg}");
        let d = svg.split(" d=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        assert!(d.starts_with('M') && d.contains('L'), "{d}");
        assert!(d.chars().all(|c| c.is_ascii_digit() || "ML.,".contains(c)), "only numbers: {d}");
        // 10 % of a 0-100 scale sits near the bottom, 50 % in the middle.
        assert!(d.starts_with("M46.") && d.contains(",126.8L"), "{d}");
        let second = svg.split(" d=\"").nth(2).unwrap();
        assert!(second.contains(",74.0L"), "{second}");
        // One lonely point is a dot, not an empty path.
        let lonely = Chart {
            series: vec![ChartSeries { points: points(1_790_000_000 + 3600, 60, &[1.0]), ..chart.series[0].clone() }],
            ..chart
        };
        let svg = chart_svg(&lonely, since, until).into_string();
        assert_eq!((svg.matches("<path").count(), svg.matches("<circle").count()), (0, 1), "{svg}");
    }

    #[test]
    fn the_host_page_shows_charts_the_rate_and_over_time_issues_or_the_placeholder() {
        let since = Timestamp::from_secs(1_790_000_000);
        let until = Timestamp::from_secs(1_790_000_000 + 6 * 3600);
        let mut charts = chart_plan(&[]);
        for s in charts.iter_mut().flat_map(|c| c.series.iter_mut()) {
            match s.metric.as_str() {
                "cpu.usage_percent" => s.points = points(1_790_000_000, 60, &[20.0, 30.0, 25.0]),
                ANOMALY_RATE => s.points = points(1_790_000_000, 60, &[1.0, 2.0, 3.5]),
                _ => {}
            }
        }
        Chart::drop_empty(&mut charts);
        assert_eq!(charts.len(), 2);
        let m = HostMetrics { range: Range::H24, since, until, charts };
        assert_eq!(m.anomaly_rate(), Some(3.5));
        let issue = |id: i64, check: &str, state: IssueState| IssueView {
            id,
            host: "web1".into(),
            check_name: check.into(),
            subject: "/var".into(),
            severity: macha_api::reply::Severity::Warning,
            summary: format!("{check} issue {id}"),
            state,
            since,
            first_seen: since,
            last_seen: since,
            recurrences: 0,
            resolution: None,
        };
        let issues = [
            issue(1, "fill_up", IssueState::Open),
            issue(2, "anomaly", IssueState::Resolved),
            issue(3, "unit_failed", IssueState::Open),
        ];
        let page = host(None, "web1", None, None, Some(&m), &issues).into_string();
        assert!(page.contains("<svg class=\"chart metric\""), "{page}");
        assert!(page.contains("anomaly rate: <strong>3.5 %</strong>"), "{page}");
        assert!(page.contains("<strong>24 h</strong>") && page.contains("href=\"?range=7d\""), "{page}");
        let over_time = page.split("Open anomaly and fill-up issues").nth(1).unwrap();
        let over_time = over_time.split("</table>").next().unwrap();
        assert!(over_time.contains("fill_up issue 1"), "{over_time}");
        assert!(!over_time.contains("issue 2") && !over_time.contains("issue 3"), "{over_time}");
        assert!(!page.contains("No metric history yet."));
        let empty = host(None, "web1", None, None, None, &[]).into_string();
        assert!(empty.contains("No metric history yet.") && !empty.contains("<svg"), "{empty}");
    }

    #[test]
    fn the_fleet_shows_each_hosts_anomaly_rate_or_a_dash() {
        let row = |name: &str, rate: Option<f64>| FleetRow {
            name: name.into(),
            standing: "trusted".into(),
            status: "ok".into(),
            last_contact: None,
            open_issues: 0,
            last_deployment: None,
            anomaly_rate: rate,
        };
        let page = fleet(None, None, &[row("web1", Some(12.345)), row("db1", None)], 0).into_string();
        assert!(page.contains("<th>anomaly rate</th>"), "{page}");
        assert!(page.contains("<td>12.3 %</td>"), "{page}");
        assert!(page.contains("<span class=\"muted\">—</span>"), "{page}");
    }
}
