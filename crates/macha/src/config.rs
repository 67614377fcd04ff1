//! Configuration: a TOML file, validated in two stages.
//!
//! Stage one ([`FileConfig`]) is the file as written: every table denies unknown keys, so a typo is
//! an error naming the key, not a silently ignored option. Stage two ([`Config`]) resolves it into
//! what the daemon uses (absolute paths, parsed durations, the protected set) without touching the
//! system, so `macha check-config` can validate a file anywhere, including at NixOS build time.

use anyhow::{Context, bail};
use macha_core::checks::Thresholds;
use macha_core::policy::{Autonomy, ProtectedUnits};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon looks when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/macha/macha.toml";
/// The system daemon's state directory.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/macha";
/// The system daemon's socket.
pub const SYSTEM_SOCKET: &str = "/run/macha/macha.sock";

/// Every key the configuration file accepts, as dotted paths. The NixOS module's options map onto
/// these; a test keeps the two lists equal.
pub const CONFIG_KEYS: &[&str] = &[
    "autonomy",
    "check_interval",
    "protected_units",
    "admin_group",
    "viewer_group",
    "paths.state_dir",
    "paths.database",
    "paths.socket",
    "systemd.enable",
    "systemd.bus",
    "journal.enable",
    "journal.journalctl",
    "journal.directory",
    "journal.window",
    "flap.limit",
    "flap.window",
    "policy.cleanup_min_age_days",
    "approvals.expiry",
    "executor.timeout",
    "executor.verify_delay",
    "deploy.activate_timeout",
    "deploy.reconnect_timeout",
    "deploy.verify_timeout",
    "deploy.retry",
    "deploy.dead_man",
    "deploy.min_free_mib",
    "deploy.engine",
    "deploy.checks",
    "issues.close_after",
    "issues.archive_after",
    "history.raw_retention",
    "history.downsample",
    "history.retention",
    "history.prompts_retention",
    "thresholds",
    "tools",
    "ssh.user",
    "ssh.key",
    "ssh.known_hosts",
    "ssh.connect_timeout",
    "ssh.command_timeout",
    "ssh.max_sessions",
    "ssh.parallelism",
    "hosts.<name>.address",
    "hosts.<name>.user",
    "hosts.<name>.port",
    "hosts.<name>.host_key",
    "hosts.<name>.tags",
    "hosts.<name>.health",
    "hosts.<name>.depends_on",
    "discovery.enable",
    "discovery.allowed_domains",
    "discovery.domain",
    "discovery.window",
    "knowledge.flake",
    "knowledge.idle.max_cpu_pressure",
    "knowledge.idle.max_memory_pressure",
    "knowledge.idle.max_load_per_cpu",
    "knowledge.idle.memory_max_mib",
    "llm.enable",
    "llm.backend",
    "llm.url",
    "llm.api_key_file",
    "llm.timeout",
    "llm.context_tokens",
    "llm.models.triage",
    "llm.models.analysis",
    "llm.tool_mode",
    "llm.concurrency",
    "llm.redact_patterns",
    "llm.readable_paths",
    "llm.answer_max_bytes",
    "llm.may_execute",
    "llm.check_ports",
    "llm.cache_ttl",
    "knowledge.runbooks",
    "knowledge.change_window",
    "knowledge.embedder",
    "knowledge.model_dir",
    "knowledge.embed_model",
    "web.enable",
    "web.listen",
    "web.trusted_proxies",
    "web.proxy_user_header",
    "web.proxy_admins",
    "web.proxy_viewers",
    "web.session_idle",
    "web.session_max",
    "web.secure_cookies",
    "web.two_person",
    "prometheus.enable",
    "prometheus.listen",
    "prometheus.textfile",
    "prometheus.max_hosts",
    "prometheus.max_mounts",
    "anomaly.enable",
    "anomaly.z_threshold",
    "anomaly.persist",
    "anomaly.host_rate",
    "fillup.free_below_percent",
    "fillup.horizon",
    "fillup.window",
    "fillup.old_generation_days",
    "notifications.link_base",
    "notifications.group_wait",
    "notifications.group_interval",
    "notifications.repeat_interval",
    "notifications.critical_group_wait",
    "notifications.flap_opens",
    "notifications.flap_window",
    "notifications.stable_after",
    "notifications.retry_max",
    "notifications.model_may_send",
    "notifications.model_per_hour",
    "notifications.gotify.url",
    "notifications.gotify.token_file",
    "notifications.gotify.min_severity",
    "notifications.gotify.kinds",
    "notifications.ntfy.url",
    "notifications.ntfy.topic",
    "notifications.ntfy.token_file",
    "notifications.ntfy.min_severity",
    "notifications.ntfy.kinds",
    "notifications.webhook.url",
    "notifications.webhook.secret_file",
    "notifications.webhook.min_severity",
    "notifications.webhook.kinds",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `observe`, `suggest`, `auto-safe` or `auto-full`.
    pub autonomy: Option<String>,
    /// How often the periodic cycle runs (e.g. `60s`, `5m`).
    pub check_interval: Option<String>,
    /// Units added to the built-in protected list (which cannot be shortened).
    pub protected_units: Vec<String>,
    /// Members of this group (and root) may approve, reject, resolve and close.
    pub admin_group: Option<String>,
    /// Members of this group may read issues, approvals, the audit trail, hosts and the last
    /// report, and ask the model (its proposals queued for an admin). Default: the admin group.
    pub viewer_group: Option<String>,
    pub paths: PathsSection,
    pub systemd: SystemdSection,
    pub journal: JournalSection,
    pub flap: FlapSection,
    pub policy: PolicySection,
    pub approvals: ApprovalsSection,
    pub executor: ExecutorSection,
    pub deploy: DeploySection,
    pub issues: IssuesSection,
    pub history: HistorySection,
    pub thresholds: Option<Thresholds>,
    /// Absolute paths of external programs (`journalctl = "/run/current-system/sw/bin/journalctl"`).
    pub tools: std::collections::BTreeMap<String, String>,
    pub ssh: SshSection,
    /// Managed hosts by name.
    pub hosts: std::collections::BTreeMap<String, HostSection>,
    pub discovery: DiscoverySection,
    pub llm: LlmSection,
    pub knowledge: KnowledgeSection,
    pub web: WebSection,
    pub prometheus: PrometheusSection,
    pub anomaly: AnomalySection,
    pub fillup: FillupSection,
    pub notifications: NotificationsSection,
}

/// The web console (docs/web.md), as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSection {
    pub enable: Option<bool>,
    /// `unix:/run/macha/web.sock` (the default: beside the API socket) or `127.0.0.1:8470`.
    pub listen: Option<String>,
    pub trusted_proxies: Vec<String>,
    pub proxy_user_header: Option<String>,
    pub proxy_admins: Vec<String>,
    pub proxy_viewers: Vec<String>,
    pub session_idle: Option<String>,
    pub session_max: Option<String>,
    pub secure_cookies: Option<bool>,
    pub two_person: Option<bool>,
}

/// The web console, resolved: `None` when it is off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebConfig {
    /// Where it listens, as written (`unix:<path>` or an address).
    pub listen: String,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub proxy_user_header: Option<String>,
    pub proxy_admins: Vec<String>,
    pub proxy_viewers: Vec<String>,
    #[serde(with = "humantime_serde_compat")]
    pub session_idle: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub session_max: Duration,
    pub secure_cookies: bool,
    pub two_person: bool,
}

impl WebConfig {
    /// The console's settings.
    pub fn settings(&self) -> anyhow::Result<macha_web::Settings> {
        let listen = macha_web::Listen::parse(&self.listen).map_err(anyhow::Error::msg)?;
        let mut s = macha_web::Settings::new(listen);
        s.trusted_proxies.clone_from(&self.trusted_proxies);
        s.proxy_user_header.clone_from(&self.proxy_user_header);
        s.proxy_admins.clone_from(&self.proxy_admins);
        s.proxy_viewers.clone_from(&self.proxy_viewers);
        s.session_idle = self.session_idle;
        s.session_max = self.session_max;
        s.secure_cookies = self.secure_cookies;
        s.two_person = self.two_person;
        Ok(s)
    }
}

/// Resolves `[web]`; the socket path gives the default place of the console's socket.
fn web_config(f: &FileConfig, socket: &std::path::Path) -> anyhow::Result<Option<WebConfig>> {
    let enable = f.web.enable.unwrap_or(false);
    if !enable {
        return Ok(None);
    }
    let listen = match &f.web.listen {
        Some(l) => l.clone(),
        None => format!("unix:{}", socket.with_file_name("web.sock").display()),
    };
    macha_web::Listen::parse(&listen).map_err(anyhow::Error::msg)?;
    let trusted_proxies = f
        .web
        .trusted_proxies
        .iter()
        .map(|a| a.parse().with_context(|| format!("web.trusted_proxies: {a:?} is not an IP address")))
        .collect::<anyhow::Result<Vec<std::net::IpAddr>>>()?;
    let proxy_user_header = f.web.proxy_user_header.clone().filter(|h| !h.trim().is_empty());
    if let Some(h) = &proxy_user_header
        && !header_name_ok(h)
    {
        bail!("web.proxy_user_header = {h:?} is not a header name");
    }
    if proxy_user_header.is_some() && trusted_proxies.is_empty() {
        bail!("web.proxy_user_header needs web.trusted_proxies (the proxies whose header is believed)");
    }
    let s = Duration::from_secs;
    let session_idle = duration("web.session_idle", &f.web.session_idle, s(30 * 60), s(60))?;
    let session_max = duration("web.session_max", &f.web.session_max, s(12 * 3600), s(60))?;
    if session_idle > session_max {
        bail!("web.session_idle must not be longer than web.session_max");
    }
    Ok(Some(WebConfig {
        listen,
        trusted_proxies,
        proxy_user_header,
        proxy_admins: f.web.proxy_admins.clone(),
        proxy_viewers: f.web.proxy_viewers.clone(),
        session_idle,
        session_max,
        secure_cookies: f.web.secure_cookies.unwrap_or(false),
        two_person: f.web.two_person.unwrap_or(false),
    }))
}

/// Whether `h` is a plain header name (letters, digits and `-`).
fn header_name_ok(h: &str) -> bool {
    !h.is_empty() && h.len() <= 64 && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Anomaly detection over the metric history (docs/metrics.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalySection {
    /// Whether anomalies become findings (default true; the history is kept either way).
    pub enable: Option<bool>,
    /// Deviation, in spreads, at which baselines agree on an anomaly (default 3.5).
    pub z_threshold: Option<f64>,
    /// How long an anomaly lasts before it is a finding (default `15m`).
    pub persist: Option<String>,
    /// Share of a host's metrics unusual at once that makes the host unusual (default 0.25).
    pub host_rate: Option<f64>,
}

/// Fill-up prediction (docs/metrics.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FillupSection {
    /// Free share, percent, below which a falling trend is a finding (default 40).
    pub free_below_percent: Option<f64>,
    /// How soon the trend must reach zero to be a finding (default `24h`).
    pub horizon: Option<String>,
    /// The window the trend is fitted over (default `6h`).
    pub window: Option<String>,
    /// System generations older than this many days count as reclaimable (default 14).
    pub old_generation_days: Option<u32>,
}

/// Metrics over time, resolved (`anomaly.*`, `fillup.*`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsConfig {
    pub anomaly_enable: bool,
    pub z_threshold: f64,
    #[serde(with = "humantime_serde_compat")]
    pub persist: Duration,
    pub host_rate: f64,
    pub free_below_percent: f64,
    #[serde(with = "humantime_serde_compat")]
    pub horizon: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
    pub old_generation_days: u32,
}

/// `[notifications]`: what is sent where, and when (docs/notifications.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSection {
    /// The web console's address; messages then link to `<link_base>/approvals/<id>` and
    /// `<link_base>/issues/<id>`.
    pub link_base: Option<String>,
    /// How long the first event of an incident waits for others to group with (default 30 s).
    pub group_wait: Option<String>,
    /// How long after a message a group sends the events that joined it since (default 5 m).
    pub group_interval: Option<String>,
    /// How long before a still-open incident is sent again (default 4 h).
    pub repeat_interval: Option<String>,
    /// The group wait of critical events (default 0 s: at once).
    pub critical_group_wait: Option<String>,
    /// Openings of one incident within `flap_window` that make it flapping (default 3).
    pub flap_opens: Option<u32>,
    /// The window of `flap_opens` (default 1 h).
    pub flap_window: Option<String>,
    /// How long a flapping incident must stay quiet before "stable again" (default 30 m).
    pub stable_after: Option<String>,
    /// The longest wait between two delivery attempts of one message (default 1 h).
    pub retry_max: Option<String>,
    /// Whether the model is offered the `send_notification` tool (default false).
    pub model_may_send: Option<bool>,
    /// The model's messages per hour at most (default 3).
    pub model_per_hour: Option<u32>,
    pub gotify: GotifySection,
    pub ntfy: NtfySection,
    pub webhook: WebhookSection,
}

/// `[notifications.gotify]`: a Gotify server (`POST /message`, the token in `X-Gotify-Key`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GotifySection {
    pub url: Option<String>,
    /// The application token's file (read when a message is sent; never in this file).
    pub token_file: Option<PathBuf>,
    /// `info`, `warning` (default) or `critical`.
    pub min_severity: Option<String>,
    /// The event kinds sent (default: all).
    pub kinds: Option<Vec<String>>,
}

/// `[notifications.ntfy]`: an ntfy server (`POST /<topic>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NtfySection {
    pub url: Option<String>,
    pub topic: Option<String>,
    /// An access token's file (optional: a public topic needs none).
    pub token_file: Option<PathBuf>,
    pub min_severity: Option<String>,
    pub kinds: Option<Vec<String>>,
}

/// `[notifications.webhook]`: a generic webhook (JSON body, HMAC-SHA256 signature).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSection {
    pub url: Option<String>,
    /// The HMAC key's file.
    pub secret_file: Option<PathBuf>,
    pub min_severity: Option<String>,
    pub kinds: Option<Vec<String>>,
}

/// The notification event kinds, as configuration and `macha notify log` name them.
pub const NOTIFY_KINDS: &[&str] = &[
    "issue_opened",
    "issue_resolved",
    "approval_pending",
    "remediation_done",
    "remediation_failed",
    "deployment",
    "host_discovered",
    "security",
    "analysis_unavailable",
    "self_health",
    "manual",
    "model",
];

/// The notification severities, lowest first.
pub const NOTIFY_SEVERITIES: &[&str] = &["info", "warning", "critical"];

/// Notifications, resolved (the channels that are configured, and the router's times).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notifications {
    pub link_base: Option<String>,
    #[serde(with = "humantime_serde_compat")]
    pub group_wait: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub group_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub repeat_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub critical_group_wait: Duration,
    pub flap_opens: u32,
    #[serde(with = "humantime_serde_compat")]
    pub flap_window: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub stable_after: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub retry_max: Duration,
    pub model_may_send: bool,
    pub model_per_hour: u32,
    /// The configured channels (the journal channel is always on and not listed).
    pub channels: Vec<NotifyChannel>,
}

/// Which service a channel speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyService {
    Gotify,
    Ntfy,
    Webhook,
}

impl NotifyService {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyService::Gotify => "gotify",
            NotifyService::Ntfy => "ntfy",
            NotifyService::Webhook => "webhook",
        }
    }
}

/// One configured channel. The secret stays in its file; only the path is here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotifyChannel {
    pub service: NotifyService,
    pub url: String,
    pub topic: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub min_severity: String,
    pub kinds: Vec<String>,
}

/// The keys of one channel as written, before validation.
struct ChannelKeys<'a> {
    service: NotifyService,
    url: Option<&'a str>,
    topic: Option<&'a str>,
    secret_file: Option<&'a PathBuf>,
    min_severity: Option<&'a str>,
    kinds: Option<&'a [String]>,
}

/// Validates one channel's keys: `None` when it has no URL (and nothing else set).
fn notify_channel(k: ChannelKeys<'_>) -> anyhow::Result<Option<NotifyChannel>> {
    let name = k.service.as_str();
    let Some(url) = k.url else {
        if k.topic.is_some() || k.secret_file.is_some() || k.min_severity.is_some() || k.kinds.is_some() {
            bail!("notifications.{name}: the channel has settings but no url");
        }
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.chars().any(char::is_whitespace) {
        bail!("notifications.{name}.url = {url:?} must start with http:// or https://");
    }
    if url.contains('?') || url.contains('@') {
        bail!("notifications.{name}.url = {url:?} must carry no query and no credentials: the secret goes in a file");
    }
    let secret_key = if k.service == NotifyService::Webhook { "secret_file" } else { "token_file" };
    match k.secret_file {
        Some(p) if !p.is_absolute() => bail!("notifications.{name}.{secret_key} must be an absolute path"),
        None if k.service != NotifyService::Ntfy => {
            bail!("notifications.{name}.url is set but notifications.{name}.{secret_key} is not")
        }
        _ => {}
    }
    let topic = match (k.service, k.topic) {
        (NotifyService::Ntfy, Some(t))
            if (1..=64).contains(&t.len())
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(t.to_owned())
        }
        (NotifyService::Ntfy, Some(t)) => {
            bail!("notifications.ntfy.topic = {t:?} must be 1-64 letters, digits, '-' or '_'")
        }
        (NotifyService::Ntfy, None) => bail!("notifications.ntfy.url is set but notifications.ntfy.topic is not"),
        (_, _) => None,
    };
    let min_severity = k.min_severity.unwrap_or("warning");
    if !NOTIFY_SEVERITIES.contains(&min_severity) {
        bail!("notifications.{name}.min_severity = {min_severity:?}: use {}", NOTIFY_SEVERITIES.join(", "));
    }
    let kinds = match k.kinds {
        None => NOTIFY_KINDS.iter().map(|s| (*s).to_owned()).collect(),
        Some(kinds) => {
            if let Some(bad) = kinds.iter().find(|x| !NOTIFY_KINDS.contains(&x.as_str())) {
                bail!("notifications.{name}.kinds: {bad:?} is not an event kind (kinds: {})", NOTIFY_KINDS.join(", "));
            }
            kinds.to_vec()
        }
    };
    Ok(Some(NotifyChannel {
        service: k.service,
        url: url.trim_end_matches('/').to_owned(),
        topic,
        secret_file: k.secret_file.cloned(),
        min_severity: min_severity.to_owned(),
        kinds,
    }))
}

/// What Macha knows beyond its checks (docs/knowledge.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeSection {
    /// The directory of people's runbooks (`*.md` with front matter; default /etc/macha/runbooks).
    pub runbooks: Option<PathBuf>,
    /// The fleet's flake: `/etc/nixos` or any checkout of it (default `/etc/nixos`).
    pub flake: Option<PathBuf>,
    /// How long before an issue opened a commit or deployment counts as a recent change
    /// (default 2 h).
    pub change_window: Option<String>,
    /// When BATCH work (re-indexing the flake) may run.
    pub idle: IdleSection,
    /// The embedding model of hybrid search: `none` (default: keyword-only), `local` (the model
    /// files in `model_dir`), `ollama` or `openai` (the server at `llm.url`, model `embed_model`).
    pub embedder: Option<String>,
    /// The local model's directory: `config.json`, `tokenizer.json`, `model.safetensors`.
    pub model_dir: Option<PathBuf>,
    /// The remote embedding model's name (e.g. `nomic-embed-text`, `all-minilm`).
    pub embed_model: Option<String>,
}

/// `knowledge.idle`: the limits under which the daemon's BATCH work runs (docs/knowledge.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleSection {
    /// CPU pressure (PSI `some avg10`, percent) above which work waits (default 10).
    pub max_cpu_pressure: Option<f64>,
    /// Memory pressure (PSI `some avg10`, percent) above which work waits (default 5).
    pub max_memory_pressure: Option<f64>,
    /// The 1-minute load per CPU above which work waits (default 0.7).
    pub max_load_per_cpu: Option<f64>,
    /// How much the daemon's resident memory may grow during one run, in MiB (default 256); a
    /// run over it stops at its next batch boundary and goes on at the next run.
    pub memory_max_mib: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshSection {
    pub user: Option<String>,
    pub key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub connect_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub max_sessions: Option<u32>,
    pub parallelism: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    pub address: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// The pinned host key (`ssh-ed25519 AAAA…`).
    pub host_key: Option<String>,
    pub tags: Vec<String>,
    /// What must hold after a deployment: `{ unit = "nginx.service" }`, `{ tcp = 443 }`,
    /// `{ http = 8080, path = "/healthz", status = 200 }`.
    pub health: Vec<HealthSection>,
    /// Managed hosts this host depends on (declared relations of the fleet map).
    pub depends_on: Vec<String>,
}

/// One declared health check (exactly one of `unit`, `tcp`, `http`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    pub unit: Option<String>,
    pub tcp: Option<u16>,
    pub http: Option<u16>,
    pub path: Option<String>,
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySection {
    pub enable: Option<bool>,
    pub allowed_domains: Vec<String>,
    pub domain: Option<String>,
    pub window: Option<String>,
}

/// Prometheus metrics (docs/metrics.md): off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusSection {
    pub enable: Option<bool>,
    /// The address `/metrics` is served on, or `"off"` for the textfile only.
    pub listen: Option<String>,
    /// node_exporter's textfile-collector directory: `macha.prom` is written there after each cycle.
    pub textfile: Option<PathBuf>,
    pub max_hosts: Option<usize>,
    pub max_mounts: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSection {
    pub enable: Option<bool>,
    /// `ollama` or `openai` (an OpenAI-compatible server: llama.cpp, vLLM).
    pub backend: Option<String>,
    pub url: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub timeout: Option<String>,
    pub context_tokens: Option<u32>,
    pub models: ModelsSection,
    /// `native` (the server's tool calling) or `json` (schema-constrained JSON turns).
    pub tool_mode: Option<String>,
    /// Requests to the model server at once.
    pub concurrency: Option<u32>,
    /// Extra regular expressions whose matches are redacted before anything reaches the model.
    pub redact_patterns: Vec<String>,
    /// Files (or directories, ending in `/`) the model's `read_file` tool may read.
    pub readable_paths: Option<Vec<String>>,
    /// The largest model answer (and prompt, conversation turn) stored; longer ones are cut.
    pub answer_max_bytes: Option<u64>,
    /// The action kinds a model's proposal may execute without a person (within the autonomy
    /// level); default `["diagnostic"]`.
    pub may_execute: Option<Vec<String>>,
    /// The TCP ports the model's `check_network` may probe, by host (`local` or a configured
    /// host); a configured host's SSH port is always allowed.
    pub check_ports: std::collections::BTreeMap<String, Vec<u16>>,
    /// How long an incident analysis answers new issues with the same evidence (default 24 h;
    /// "0s" turns the answer cache off).
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSection {
    pub triage: Option<String>,
    pub analysis: Option<String>,
}

/// SSH settings, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SshConfig {
    pub user: String,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub command_timeout: Duration,
    pub max_sessions: u32,
    pub parallelism: u32,
}

/// One declared health check, validated.
fn health_check(h: &HealthSection) -> anyhow::Result<macha_deploy::HealthCheck> {
    Ok(match (&h.unit, h.tcp, h.http) {
        (Some(u), None, None) if h.path.is_none() && h.status.is_none() => macha_deploy::HealthCheck::UnitActive(
            macha_core::UnitName::parse(u).map_err(|e| anyhow::format_err!("{e}"))?,
        ),
        (None, Some(port), None) if h.path.is_none() && h.status.is_none() => macha_deploy::HealthCheck::Tcp { port },
        (None, None, Some(port)) => {
            let path = h.path.clone().unwrap_or_else(|| "/".to_owned());
            if !path.starts_with('/') || path.len() > 256 || !path.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("path {path:?} must start with '/' and be printable ASCII without spaces (at most 256 bytes)");
            }
            let status = h.status.unwrap_or(200);
            if !(100..=599).contains(&status) {
                bail!("status {status} is not an HTTP status");
            }
            macha_deploy::HealthCheck::Http { port, path, status }
        }
        _ => bail!(
            "a health check is exactly one of {{ unit = … }}, {{ tcp = PORT }}, {{ http = PORT, path = …, status = … }}"
        ),
    })
}

/// A host tag: what `macha check --tag` and `macha-systems list --tag` select by.
pub fn valid_tag(t: &str) -> bool {
    (1..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One configured host, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostConfig {
    pub name: macha_core::HostName,
    pub address: String,
    pub user: Option<String>,
    pub port: u16,
    pub host_key: Option<String>,
    pub tags: Vec<String>,
    pub health: Vec<macha_deploy::HealthCheck>,
    /// Managed hosts this host depends on (`hosts.<name>.depends_on`), checked against `hosts`.
    pub depends_on: Vec<macha_core::HostName>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveryConfig {
    pub enable: bool,
    pub allowed_domains: Vec<String>,
    pub domain: Option<String>,
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
}

/// Prometheus metrics, resolved (`prometheus.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrometheusConfig {
    pub enable: bool,
    /// Where `/metrics` is served; `None` with `listen = "off"`.
    pub listen: Option<std::net::SocketAddr>,
    /// The textfile-collector directory, if any.
    pub textfile: Option<PathBuf>,
    pub max_hosts: usize,
    pub max_mounts: usize,
}

/// The default of `prometheus.listen`: loopback only, on a port of the exporters' range.
pub const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:9469";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmBackend {
    Ollama,
    Openai,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmConfig {
    pub enable: bool,
    pub backend: LlmBackend,
    pub url: String,
    pub api_key_file: Option<PathBuf>,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    pub context_tokens: u32,
    pub triage_model: String,
    pub analysis_model: String,
    pub tool_mode: String,
    pub concurrency: u32,
    pub redact_patterns: Vec<String>,
    pub readable_paths: Vec<String>,
    pub answer_max_bytes: u64,
    /// The kinds a model's proposal may execute without a person.
    pub may_execute: Vec<macha_core::ActionKind>,
    pub check_ports: std::collections::BTreeMap<String, Vec<u16>>,
    /// How long an analysis answers new issues with the same evidence (zero: never).
    #[serde(with = "humantime_serde_compat")]
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsSection {
    pub state_dir: Option<PathBuf>,
    pub database: Option<PathBuf>,
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemdSection {
    pub enable: Option<bool>,
    /// `system` (default), `session`, or a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`.
    pub bus: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSection {
    pub enable: Option<bool>,
    pub journalctl: Option<PathBuf>,
    /// Read journal files from this directory instead of the system journal.
    pub directory: Option<PathBuf>,
    /// The error-burst window (default `10m`).
    pub window: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlapSection {
    pub limit: Option<u32>,
    pub window: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySection {
    /// Journal vacuums and garbage collections of anything younger than this many days need a
    /// person (default 7).
    pub cleanup_min_age_days: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsSection {
    pub expiry: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorSection {
    pub timeout: Option<String>,
    pub verify_delay: Option<String>,
}

/// How a NixOS deployment waits, how `--flake` builds, and what must pass first, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployConfig {
    #[serde(with = "humantime_serde_compat")]
    pub activate_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub reconnect_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub verify_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub retry: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub dead_man: Duration,
    pub min_free_mib: u64,
    /// What builds each host's system for `macha deploy --flake`.
    pub engine: DeployEngine,
    /// What must pass on the controller before anything is prepared (in this order).
    pub checks: Vec<PreDeployCheck>,
}

/// What builds a host's system from a flake (`deploy.engine`). Either only builds: Macha's own
/// protocol copies and activates (decision 0013).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployEngine {
    /// `nix build` (the default).
    Nix,
    /// `nh os build` (nh must be installed on the controller).
    Nh,
}

impl DeployEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployEngine::Nix => "nix",
            DeployEngine::Nh => "nh",
        }
    }
}

/// A check that must pass on the controller before a `--flake` deployment is prepared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreDeployCheck {
    /// `nix flake check FLAKE` (`--no-build`: evaluate only).
    FlakeCheck { no_build: bool },
    /// `nix build FLAKE#ATTR`.
    Attr(String),
}

impl PreDeployCheck {
    /// How the check is named in the output and in a refusal.
    pub fn name(&self) -> String {
        match self {
            PreDeployCheck::FlakeCheck { no_build: false } => "nix flake check".to_owned(),
            PreDeployCheck::FlakeCheck { no_build: true } => "nix flake check --no-build".to_owned(),
            PreDeployCheck::Attr(a) => a.clone(),
        }
    }
}

/// One entry of `deploy.checks` as written: `{ flake_check = true }` (with `no_build = true` to
/// evaluate only) or `{ attr = "checks.x86_64-linux.foo" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckSection {
    pub flake_check: Option<bool>,
    pub no_build: Option<bool>,
    pub attr: Option<String>,
}

fn pre_deploy_checks(checks: &[CheckSection]) -> anyhow::Result<Vec<PreDeployCheck>> {
    let mut out = Vec::with_capacity(checks.len());
    for (i, c) in checks.iter().enumerate() {
        let check = match (c.flake_check, &c.attr) {
            (Some(true), None) => PreDeployCheck::FlakeCheck { no_build: c.no_build.unwrap_or(false) },
            (None, Some(attr)) if c.no_build.is_none() => {
                if !macha_core::command::valid_attr_path(attr) {
                    bail!(
                        "deploy.checks[{i}].attr = {attr:?} is not an attribute path of the flake's outputs \
                         (dotted names such as \"checks.x86_64-linux.vm-test\")"
                    );
                }
                PreDeployCheck::Attr(attr.clone())
            }
            (Some(false), None) => bail!("deploy.checks[{i}]: flake_check = false checks nothing; remove the entry"),
            _ => bail!(
                "deploy.checks[{i}]: give either {{ flake_check = true }} (optionally with no_build = true) or \
                 {{ attr = \"checks.SYSTEM.NAME\" }}"
            ),
        };
        out.push(check);
    }
    if out.len() > 32 {
        bail!("deploy.checks has {} entries; at most 32", out.len());
    }
    Ok(out)
}

fn deploy_engine(engine: &Option<String>) -> anyhow::Result<DeployEngine> {
    Ok(match engine.as_deref() {
        None | Some("nix") => DeployEngine::Nix,
        Some("nh") => DeployEngine::Nh,
        Some(other) => bail!("deploy.engine = {other:?}: use \"nix\" or \"nh\""),
    })
}

/// How a NixOS deployment waits (docs/deploy.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploySection {
    pub activate_timeout: Option<String>,
    pub reconnect_timeout: Option<String>,
    pub verify_timeout: Option<String>,
    pub retry: Option<String>,
    /// From arming to the dead-man timer re-activating the old system on the host.
    pub dead_man: Option<String>,
    /// Free space `/nix` must have at preflight, in MiB.
    pub min_free_mib: Option<u64>,
    /// `"nix"` (default) or `"nh"`: what builds each host's system for `macha deploy --flake`.
    pub engine: Option<String>,
    /// Checks that must pass on the controller before a `--flake` deployment is prepared.
    pub checks: Vec<CheckSection>,
}

/// How long per-host snapshot history and the agent's records are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    pub raw_retention: Option<String>,
    pub downsample: Option<String>,
    pub retention: Option<String>,
    pub prompts_retention: Option<String>,
}

/// History and agent-record retention, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryConfig {
    #[serde(with = "humantime_serde_compat")]
    pub raw_retention: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub downsample: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub prompts_retention: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuesSection {
    pub close_after: Option<String>,
    pub archive_after: Option<String>,
}

/// Which bus the systemd manager is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BusChoice {
    System,
    Session,
    Address(String),
}

/// The resolved configuration the daemon and CLI use. No `Default`: it always comes from
/// [`Config::resolve`], with the defaults written there once.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub autonomy: Autonomy,
    #[serde(with = "humantime_serde_compat")]
    pub check_interval: Duration,
    pub protected_extra: Vec<String>,
    pub admin_group: Option<String>,
    /// The viewer group (the admin group when not set).
    pub viewer_group: Option<String>,
    pub state_dir: PathBuf,
    pub database: PathBuf,
    pub socket: PathBuf,
    pub systemd_enable: bool,
    pub bus: BusChoice,
    pub journal_enable: bool,
    pub journalctl: Option<PathBuf>,
    pub journal_directory: Option<PathBuf>,
    #[serde(with = "humantime_serde_compat")]
    pub journal_window: Duration,
    pub flap_limit: u32,
    #[serde(with = "humantime_serde_compat")]
    pub flap_window: Duration,
    pub cleanup_min_age_days: u32,
    #[serde(with = "humantime_serde_compat")]
    pub approval_expiry: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub executor_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub verify_delay: Duration,
    /// What a deployment waits for, and the space it needs.
    pub deploy: DeployConfig,
    #[serde(with = "humantime_serde_compat")]
    pub close_after: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub archive_after: Duration,
    pub history: HistoryConfig,
    pub thresholds: Thresholds,
    pub tools: std::collections::BTreeMap<String, String>,
    pub ssh: SshConfig,
    pub hosts: Vec<HostConfig>,
    pub discovery: DiscoveryConfig,
    pub llm: LlmConfig,
    /// Prometheus metrics (`prometheus.*`).
    pub prometheus: PrometheusConfig,
    /// The directory of people's runbooks (`knowledge.runbooks`).
    pub knowledge_runbooks: PathBuf,
    /// The fleet's flake that `macha configs` indexes (`knowledge.flake`).
    pub knowledge_flake: PathBuf,
    /// How long before an issue a change counts as recent (`knowledge.change_window`).
    #[serde(with = "humantime_serde_compat")]
    pub knowledge_change_window: Duration,
    /// When the daemon's BATCH work may run (`knowledge.idle.*`).
    pub knowledge_idle: macha_core::idle::IdleLimits,
    /// The embedding model of hybrid search (`knowledge.embedder` and its keys).
    pub knowledge_embedder: EmbedderConfig,
    /// The web console (`web.*`); `None` when it is off.
    pub web: Option<WebConfig>,
    /// Metrics over time: anomaly detection and fill-up prediction (`anomaly.*`, `fillup.*`).
    pub metrics: MetricsConfig,
    /// `[notifications]`: channels, routing times, the model's tool.
    pub notifications: Notifications,
}

/// Which embedding model hybrid search uses (decision 0017).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "embedder", rename_all = "snake_case")]
pub enum EmbedderConfig {
    /// Keyword search only.
    #[default]
    None,
    /// all-MiniLM-L6-v2 (or another BERT sentence model) loaded from files with candle.
    Local { model_dir: PathBuf },
    /// The Ollama server at `llm.url` (`/api/embed`).
    Ollama { model: String },
    /// The OpenAI-compatible server at `llm.url` (`/v1/embeddings`).
    Openai { model: String },
}

fn embedder_config(
    embedder: Option<&str>,
    model_dir: Option<&PathBuf>,
    embed_model: Option<&str>,
) -> anyhow::Result<EmbedderConfig> {
    let model = || match embed_model.map(str::trim) {
        Some(m) if !m.is_empty() => Ok(m.to_owned()),
        _ => Err(anyhow::format_err!("knowledge.embedder = {:?} needs knowledge.embed_model", embedder.unwrap_or(""))),
    };
    Ok(match embedder.unwrap_or("none") {
        "none" => EmbedderConfig::None,
        "local" => match model_dir {
            Some(d) if d.is_absolute() => EmbedderConfig::Local { model_dir: d.clone() },
            Some(d) => bail!("knowledge.model_dir = {:?} must be an absolute path", d.display()),
            None => bail!("knowledge.embedder = \"local\" needs knowledge.model_dir"),
        },
        "ollama" => EmbedderConfig::Ollama { model: model()? },
        "openai" => EmbedderConfig::Openai { model: model()? },
        other => bail!("knowledge.embedder = {other:?}: use none, local, ollama or openai"),
    })
}

/// `anomaly.*` and `fillup.*`, with the defaults of `macha-metrics`.
fn metrics_config(f: &FileConfig) -> anyhow::Result<MetricsConfig> {
    let dd = macha_metrics::DetectConfig::default();
    let fd = macha_metrics::FillConfig::default();
    let s = Duration::from_secs;
    let anomaly_enable = f.anomaly.enable.unwrap_or(true);
    let z_threshold = f.anomaly.z_threshold.unwrap_or(dd.z_threshold);
    let persist = duration("anomaly.persist", &f.anomaly.persist, dd.persist, s(60))?;
    let host_rate = f.anomaly.host_rate.unwrap_or(dd.host_rate);
    let free_below_percent = f.fillup.free_below_percent.unwrap_or(fd.free_below_percent);
    let horizon = duration("fillup.horizon", &f.fillup.horizon, fd.horizon, s(3600))?;
    let window = duration("fillup.window", &f.fillup.window, fd.window, s(3600))?;
    let old_generation_days = f.fillup.old_generation_days.unwrap_or(fd.old_generation_days);
    let m = MetricsConfig {
        anomaly_enable,
        z_threshold,
        persist,
        host_rate,
        free_below_percent,
        horizon,
        window,
        old_generation_days,
    };
    let (detect, fill) = m.track();
    detect.validate().map_err(|e| anyhow::format_err!("anomaly: {e}"))?;
    fill.validate().map_err(|e| anyhow::format_err!("fillup: {e}"))?;
    Ok(m)
}

impl MetricsConfig {
    /// The detector's and the fill-up prediction's settings.
    pub fn track(&self) -> (macha_metrics::DetectConfig, macha_metrics::FillConfig) {
        let detect = macha_metrics::DetectConfig {
            z_threshold: self.z_threshold,
            persist: self.persist,
            host_rate: self.host_rate,
            ..macha_metrics::DetectConfig::default()
        };
        let fill = macha_metrics::FillConfig {
            free_below_percent: self.free_below_percent,
            horizon: self.horizon,
            window: self.window,
            old_generation_days: self.old_generation_days,
            min_span: macha_metrics::FillConfig::default().min_span.min(self.window),
        };
        (detect, fill)
    }
}

/// The default of `knowledge.flake`.
pub const DEFAULT_FLAKE: &str = "/etc/nixos";

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

fn duration(key: &str, v: &Option<String>, default: Duration, min: Duration) -> anyhow::Result<Duration> {
    let Some(s) = v else { return Ok(default) };
    let d = humantime::parse_duration(s)
        .with_context(|| format!("{key} = {s:?} is not a duration (examples: \"30s\", \"5m\", \"24h\")"))?;
    if d < min {
        bail!("{key} = {s:?} is shorter than the minimum {}", humantime::format_duration(min));
    }
    Ok(d)
}

/// Where things live: the system daemon's paths, or a user's own for a standalone `macha check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    System,
    User,
}

/// The state directory of a standalone (non-daemon) run: `$XDG_STATE_HOME/macha` or
/// `~/.local/state/macha`; as root with no home, the system state directory.
pub fn user_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("macha");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/macha"),
        None => PathBuf::from(SYSTEM_STATE_DIR),
    }
}

/// The largest configuration file read (far above any real one).
pub const CONFIG_MAX: usize = 1024 * 1024;

/// A parser error without a quoted line longer than a terminal line: the TOML parser quotes the
/// offending line, which may be kilobytes (or a secret) long.
fn short_error(e: &str) -> String {
    e.lines()
        .map(|l| {
            if l.chars().count() > 200 {
                format!("{}… ({} characters)", l.chars().take(120).collect::<String>(), l.chars().count())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Parses a TOML document (stage one) and resolves it (stage two).
    pub fn from_toml(text: &str, scope: Scope) -> anyhow::Result<Config> {
        Config::parse(text, scope).map(|(_, config)| config)
    }

    /// The file as written (normalised: comments and defaults left out) and what it resolves to.
    /// `toml::to_string` of the first reads back to the same configuration (`check-config`).
    pub fn parse(text: &str, scope: Scope) -> anyhow::Result<(FileConfig, Config)> {
        if text.len() > CONFIG_MAX {
            bail!("the configuration is {} bytes; the limit is {CONFIG_MAX}", text.len());
        }
        let file: FileConfig =
            toml::from_str(text).map_err(|e| anyhow::format_err!("{}", short_error(&e.to_string())))?;
        let config = Config::resolve(file.clone(), scope)?;
        Ok((file, config))
    }

    /// Reads `path`; a missing file is an error naming it.
    pub fn load(path: &Path, scope: Scope) -> anyhow::Result<Config> {
        Config::load_file(path, scope).map(|(_, config)| config)
    }

    /// [`Config::parse`] of the file at `path`, read up to the size limit.
    pub fn load_file(path: &Path, scope: Scope) -> anyhow::Result<(FileConfig, Config)> {
        use std::io::Read;
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        // Bounded: a huge file is refused after reading one byte past the limit, never loaded whole.
        let mut text = String::new();
        file.take(CONFIG_MAX as u64 + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Config::parse(&text, scope).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// The embedded defaults (no file).
    pub fn defaults(scope: Scope) -> anyhow::Result<Config> {
        Config::resolve(FileConfig::default(), scope)
    }

    pub fn resolve(f: FileConfig, scope: Scope) -> anyhow::Result<Config> {
        let autonomy = match &f.autonomy {
            None => Autonomy::Suggest,
            Some(s) => Autonomy::parse(s)
                .with_context(|| format!("autonomy = {s:?} is not one of observe, suggest, auto-safe, auto-full"))?,
        };
        let state_dir = f.paths.state_dir.clone().unwrap_or_else(|| match scope {
            Scope::System => PathBuf::from(SYSTEM_STATE_DIR),
            Scope::User => user_state_dir(),
        });
        let database = f.paths.database.clone().unwrap_or_else(|| state_dir.join("macha.db"));
        let socket = f.paths.socket.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_SOCKET));
        for (k, p) in [("paths.state_dir", &state_dir), ("paths.database", &database), ("paths.socket", &socket)] {
            if !p.is_absolute() {
                bail!("{k} = {:?} must be an absolute path", p.display());
            }
        }
        let bus = match f.systemd.bus.as_deref() {
            None | Some("system") => BusChoice::System,
            Some("session") => BusChoice::Session,
            Some(a) if a.starts_with("unix:") => BusChoice::Address(a.to_owned()),
            Some(other) => bail!("systemd.bus = {other:?}: use \"system\", \"session\" or a \"unix:path=…\" address"),
        };
        for (k, p) in [("journal.journalctl", &f.journal.journalctl), ("journal.directory", &f.journal.directory)] {
            if let Some(p) = p
                && !p.is_absolute()
            {
                bail!("{k} = {:?} must be an absolute path", p.display());
            }
        }
        for (name, path) in &f.tools {
            if !macha_core::command::TOOL_NAMES.contains(&name.as_str()) {
                bail!("tools.{name}: unknown tool (known: {})", macha_core::command::TOOL_NAMES.join(", "));
            }
            if !path.starts_with('/') {
                bail!("tools.{name} = {path:?} must be an absolute path");
            }
        }
        for u in &f.protected_units {
            let stem = u.strip_suffix('*').unwrap_or(u);
            if stem.is_empty() || macha_core::UnitName::parse(stem).is_err() {
                bail!("protected_units: {u:?} is not a unit name or a prefix pattern such as \"postgresql*\"");
            }
        }
        if let Some(g) = &f.admin_group
            && (g.is_empty() || g.contains(['/', ':', '\n']))
        {
            bail!("admin_group = {g:?} is not a group name");
        }
        if let Some(g) = &f.viewer_group
            && (g.is_empty() || g.contains(['/', ':', '\n']))
        {
            bail!("viewer_group = {g:?} is not a group name");
        }
        let thresholds = f.thresholds.clone().unwrap_or_default();
        thresholds.validate().map_err(|e| anyhow::format_err!("thresholds: {e}"))?;
        let flap_limit = f.flap.limit.unwrap_or(macha_core::flap::DEFAULT_LIMIT);
        if flap_limit == 0 {
            bail!("flap.limit must be at least 1");
        }
        let s = Duration::from_secs;
        let ssh = SshConfig {
            user: f.ssh.user.clone().unwrap_or_else(|| "macha".into()),
            key: f.ssh.key.clone().unwrap_or_else(|| state_dir.join(".ssh/id_ed25519")),
            known_hosts: f.ssh.known_hosts.clone().unwrap_or_else(|| state_dir.join("known_hosts")),
            connect_timeout: duration("ssh.connect_timeout", &f.ssh.connect_timeout, s(10), s(1))?,
            command_timeout: duration("ssh.command_timeout", &f.ssh.command_timeout, s(60), s(1))?,
            max_sessions: f.ssh.max_sessions.unwrap_or(8),
            parallelism: f.ssh.parallelism.unwrap_or(16),
        };
        if ssh.user.is_empty()
            || ssh.user.starts_with('-')
            || !ssh.user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            bail!("ssh.user = {:?} is not a user name", ssh.user);
        }
        for (k, p) in [("ssh.key", &ssh.key), ("ssh.known_hosts", &ssh.known_hosts)] {
            if !p.is_absolute() {
                bail!("{k} = {:?} must be an absolute path", p.display());
            }
        }
        if !(1..=64).contains(&ssh.max_sessions) || !(1..=1024).contains(&ssh.parallelism) {
            bail!("ssh.max_sessions must be 1-64 and ssh.parallelism 1-1024");
        }
        let mut hosts = Vec::new();
        for (name, h) in &f.hosts {
            let host = macha_core::HostName::parse(name).map_err(|e| anyhow::format_err!("hosts.{name}: {e}"))?;
            if host.is_local() {
                bail!("hosts.local: \"local\" is this host and cannot be configured as a managed host");
            }
            let address = h.address.clone().unwrap_or_else(|| name.clone());
            if address.is_empty()
                || address.starts_with('-')
                || address.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                bail!("hosts.{name}.address = {address:?} is not a host name or address");
            }
            if let Some(u) = &h.user
                && (u.is_empty()
                    || u.starts_with('-')
                    || !u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
            {
                bail!("hosts.{name}.user = {u:?} is not a user name");
            }
            if let Some(k) = &h.host_key
                && (k.split_whitespace().count() < 2 || k.contains('\n'))
            {
                bail!("hosts.{name}.host_key must look like \"ssh-ed25519 AAAA…\"");
            }
            if let Some(t) = h.tags.iter().find(|t| !valid_tag(t)) {
                bail!("hosts.{name}.tags: {t:?} is not a tag (1-64 letters, digits, '-', '_' or '.')");
            }
            hosts.push(HostConfig {
                name: host,
                address,
                user: h.user.clone(),
                port: h.port.unwrap_or(22),
                host_key: h.host_key.clone(),
                tags: h.tags.clone(),
                health: h
                    .health
                    .iter()
                    .map(health_check)
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("hosts.{name}.health"))?,
                depends_on: h
                    .depends_on
                    .iter()
                    .map(|d| {
                        macha_core::HostName::parse(d)
                            .map_err(|e| anyhow::format_err!("hosts.{name}.depends_on: {d:?}: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
            });
        }
        for h in &hosts {
            if let Some(d) = h.depends_on.iter().find(|d| d.is_local() || !hosts.iter().any(|o| &o.name == *d)) {
                bail!("hosts.{}.depends_on: {d} is not a configured host", h.name);
            }
            if h.depends_on.contains(&h.name) {
                bail!("hosts.{}.depends_on: a host cannot depend on itself", h.name);
            }
        }
        for d in &f.discovery.allowed_domains {
            let pattern = d.strip_prefix("*.").unwrap_or(d);
            if macha_core::HostName::parse(pattern).is_err() {
                bail!("discovery.allowed_domains: {d:?} is not a domain or a \"*.domain\" pattern");
            }
        }
        if let Some(d) = &f.discovery.domain
            && macha_core::HostName::parse(d).is_err()
        {
            bail!("discovery.domain = {d:?} is not a domain");
        }
        let prometheus = PrometheusConfig {
            enable: f.prometheus.enable.unwrap_or(false),
            listen: match f.prometheus.listen.as_deref().unwrap_or(DEFAULT_PROMETHEUS_LISTEN) {
                "off" => None,
                a => Some(a.parse().with_context(|| {
                    format!(
                        "prometheus.listen = {a:?} is not an address and port (such as \"127.0.0.1:9469\") or \"off\""
                    )
                })?),
            },
            textfile: match &f.prometheus.textfile {
                Some(d) if !d.is_absolute() => {
                    bail!("prometheus.textfile = {:?} must be an absolute path", d.display())
                }
                d => d.clone(),
            },
            max_hosts: match f.prometheus.max_hosts.unwrap_or(1000) {
                n @ 1..=100_000 => n,
                n => bail!("prometheus.max_hosts = {n} is outside 1-100000"),
            },
            max_mounts: match f.prometheus.max_mounts.unwrap_or(32) {
                n @ 1..=1000 => n,
                n => bail!("prometheus.max_mounts = {n} is outside 1-1000"),
            },
        };
        let discovery = DiscoveryConfig {
            enable: f.discovery.enable.unwrap_or(false),
            allowed_domains: f.discovery.allowed_domains.clone(),
            domain: f.discovery.domain.clone(),
            window: duration("discovery.window", &f.discovery.window, s(600), s(60))?,
        };
        let backend = match f.llm.backend.as_deref() {
            None | Some("ollama") => LlmBackend::Ollama,
            Some("openai") => LlmBackend::Openai,
            Some(other) => bail!("llm.backend = {other:?}: use \"ollama\" or \"openai\""),
        };
        let url = f.llm.url.clone().unwrap_or_else(|| match backend {
            LlmBackend::Ollama => "http://127.0.0.1:11434".into(),
            LlmBackend::Openai => "http://127.0.0.1:8080/v1".into(),
        });
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("llm.url = {url:?} must start with http:// or https://");
        }
        if let Some(p) = &f.llm.api_key_file
            && !p.is_absolute()
        {
            bail!("llm.api_key_file must be an absolute path");
        }
        let context_tokens = f.llm.context_tokens.unwrap_or(8192);
        if !(512..=1_048_576).contains(&context_tokens) {
            bail!("llm.context_tokens = {context_tokens} is outside 512-1048576");
        }
        let model = |m: &Option<String>, default: &str| m.clone().unwrap_or_else(|| default.to_owned());
        let tool_mode = f.llm.tool_mode.clone().unwrap_or_else(|| "native".into());
        if macha_agent::runner::ToolMode::parse(&tool_mode).is_none() {
            bail!("llm.tool_mode = {tool_mode:?}: use \"native\" or \"json\"");
        }
        let concurrency = f.llm.concurrency.unwrap_or(1);
        if !(1..=16).contains(&concurrency) {
            bail!("llm.concurrency = {concurrency} is outside 1-16");
        }
        macha_agent::Redactor::check_patterns(&f.llm.redact_patterns)
            .map_err(|e| anyhow::format_err!("llm.redact_patterns: {e}"))?;
        let readable_paths = f
            .llm
            .readable_paths
            .clone()
            .unwrap_or_else(|| macha_agent::tools::DEFAULT_READABLE.iter().map(|s| (*s).to_owned()).collect());
        if let Some(p) = readable_paths.iter().find(|p| !p.starts_with('/') || p.contains("..")) {
            bail!("llm.readable_paths: {p:?} must be an absolute path without '..'");
        }
        let answer_max_bytes = f.llm.answer_max_bytes.unwrap_or(256 * 1024);
        if !(4096..=64 * 1024 * 1024).contains(&answer_max_bytes) {
            bail!("llm.answer_max_bytes = {answer_max_bytes} is outside 4096-67108864");
        }
        let may_execute = match &f.llm.may_execute {
            None => macha_core::policy::DEFAULT_MODEL_MAY_EXECUTE.to_vec(),
            Some(kinds) => kinds
                .iter()
                .map(|k| {
                    macha_core::ActionKind::parse(k).with_context(|| {
                        format!(
                            "llm.may_execute: {k:?} is not an action kind (kinds: {})",
                            macha_core::ActionKind::ALL.map(|k| k.as_str()).join(", ")
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        };
        let default_floor = macha_core::policy::DEFAULT_CLEANUP_MIN_AGE_DAYS;
        let cleanup_min_age_days = f.policy.cleanup_min_age_days.unwrap_or(default_floor);
        if !(1..=3650).contains(&cleanup_min_age_days) {
            bail!("policy.cleanup_min_age_days = {cleanup_min_age_days} is outside 1-3650");
        }
        for (host, ports) in &f.llm.check_ports {
            if host != "local" && !hosts.iter().any(|h| h.name.as_str() == host) {
                bail!("llm.check_ports.{host}: not \"local\" and not a configured host");
            }
            if ports.contains(&0) {
                bail!("llm.check_ports.{host}: port 0 is not a port");
            }
        }
        let llm = LlmConfig {
            answer_max_bytes,
            enable: f.llm.enable.unwrap_or(false),
            backend,
            url,
            api_key_file: f.llm.api_key_file.clone(),
            timeout: duration("llm.timeout", &f.llm.timeout, s(120), s(1))?,
            context_tokens,
            triage_model: model(&f.llm.models.triage, "qwen2.5:3b"),
            analysis_model: model(&f.llm.models.analysis, "qwen2.5:14b"),
            tool_mode,
            concurrency,
            redact_patterns: f.llm.redact_patterns.clone(),
            readable_paths,
            may_execute,
            check_ports: f.llm.check_ports.clone(),
            cache_ttl: duration("llm.cache_ttl", &f.llm.cache_ttl, s(86_400), s(0))?,
        };
        let day = s(86_400);
        let prompts_retention = duration("history.prompts_retention", &f.history.prompts_retention, 30 * day, day)?;
        let history = HistoryConfig {
            raw_retention: duration("history.raw_retention", &f.history.raw_retention, day, s(3600))?,
            downsample: duration("history.downsample", &f.history.downsample, s(3600), s(60))?,
            retention: duration("history.retention", &f.history.retention, 30 * day, day)?,
            prompts_retention,
        };
        if history.retention < history.raw_retention {
            bail!("history.retention must not be shorter than history.raw_retention");
        }
        if history.downsample > history.retention {
            bail!("history.downsample must not be longer than history.retention");
        }
        let knowledge_flake = f.knowledge.flake.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_FLAKE));
        if !knowledge_flake.is_absolute() {
            bail!("knowledge.flake = {:?} must be an absolute path", knowledge_flake.display());
        }
        let d = macha_core::idle::IdleLimits::default();
        // Pressures are percentages; the load per CPU is at most 64.
        let lim = |key: &str, v: Option<f64>| -> anyhow::Result<f64> {
            let (default, max) = match key {
                "max_cpu_pressure" => (d.max_cpu_pressure, 100.0),
                "max_memory_pressure" => (d.max_memory_pressure, 100.0),
                _ => (d.max_load_per_cpu, 64.0),
            };
            match v {
                None => Ok(default),
                Some(x) if x.is_finite() && x > 0.0 && x <= max => Ok(x),
                Some(x) => bail!("knowledge.idle.{key} = {x} must be above 0 and at most {max}"),
            }
        };
        let knowledge_idle = macha_core::idle::IdleLimits {
            max_cpu_pressure: lim("max_cpu_pressure", f.knowledge.idle.max_cpu_pressure)?,
            max_memory_pressure: lim("max_memory_pressure", f.knowledge.idle.max_memory_pressure)?,
            max_load_per_cpu: lim("max_load_per_cpu", f.knowledge.idle.max_load_per_cpu)?,
            memory_max_mib: match f.knowledge.idle.memory_max_mib {
                None => d.memory_max_mib,
                Some(m) if (1..=1024 * 1024).contains(&m) => m,
                Some(m) => bail!("knowledge.idle.memory_max_mib = {m} must be 1-1048576"),
            },
            ..d
        };
        // The three `knowledge.embed*` keys land in one field (each named on a line that assigns it).
        let knowledge_embedder = (f.knowledge.embedder.as_deref(), f.knowledge.model_dir.as_ref());
        let knowledge_embedder = (knowledge_embedder, f.knowledge.embed_model.as_deref());
        let knowledge_embedder = embedder_config(knowledge_embedder.0.0, knowledge_embedder.0.1, knowledge_embedder.1)?;
        let gotify = notify_channel(ChannelKeys {
            service: NotifyService::Gotify,
            url: f.notifications.gotify.url.as_deref(),
            topic: None,
            secret_file: f.notifications.gotify.token_file.as_ref(),
            min_severity: f.notifications.gotify.min_severity.as_deref(),
            kinds: f.notifications.gotify.kinds.as_deref(),
        })?;
        let ntfy = notify_channel(ChannelKeys {
            service: NotifyService::Ntfy,
            url: f.notifications.ntfy.url.as_deref(),
            topic: f.notifications.ntfy.topic.as_deref(),
            secret_file: f.notifications.ntfy.token_file.as_ref(),
            min_severity: f.notifications.ntfy.min_severity.as_deref(),
            kinds: f.notifications.ntfy.kinds.as_deref(),
        })?;
        let webhook = notify_channel(ChannelKeys {
            service: NotifyService::Webhook,
            url: f.notifications.webhook.url.as_deref(),
            topic: None,
            secret_file: f.notifications.webhook.secret_file.as_ref(),
            min_severity: f.notifications.webhook.min_severity.as_deref(),
            kinds: f.notifications.webhook.kinds.as_deref(),
        })?;
        if let Some(base) = &f.notifications.link_base
            && (!(base.starts_with("http://") || base.starts_with("https://")) || base.chars().any(char::is_whitespace))
        {
            bail!("notifications.link_base = {base:?} must start with http:// or https://");
        }
        let model_per_hour = f.notifications.model_per_hour.unwrap_or(3);
        if !(1..=60).contains(&model_per_hour) {
            bail!("notifications.model_per_hour = {model_per_hour} is outside 1-60");
        }
        let flap_opens = f.notifications.flap_opens.unwrap_or(3);
        if !(2..=100).contains(&flap_opens) {
            bail!("notifications.flap_opens = {flap_opens} is outside 2-100");
        }
        let key = "notifications.repeat_interval";
        let repeat_interval = duration(key, &f.notifications.repeat_interval, s(14_400), s(60))?;
        let key = "notifications.critical_group_wait";
        let critical_group_wait = duration(key, &f.notifications.critical_group_wait, s(0), s(0))?;
        let notifications = Notifications {
            link_base: f.notifications.link_base.as_ref().map(|b| b.trim_end_matches('/').to_owned()),
            group_wait: duration("notifications.group_wait", &f.notifications.group_wait, s(30), s(0))?,
            group_interval: duration("notifications.group_interval", &f.notifications.group_interval, s(300), s(1))?,
            repeat_interval,
            critical_group_wait,
            flap_opens,
            flap_window: duration("notifications.flap_window", &f.notifications.flap_window, s(3600), s(1))?,
            stable_after: duration("notifications.stable_after", &f.notifications.stable_after, s(1800), s(1))?,
            retry_max: duration("notifications.retry_max", &f.notifications.retry_max, s(3600), s(1))?,
            model_may_send: f.notifications.model_may_send.unwrap_or(false),
            model_per_hour,
            channels: [gotify, ntfy, webhook].into_iter().flatten().collect(),
        };
        let metrics = metrics_config(&f)?;
        Ok(Config {
            web: web_config(&f, &socket)?,
            metrics,
            notifications,
            knowledge_idle,
            knowledge_runbooks: f.knowledge.runbooks.clone().unwrap_or_else(|| PathBuf::from("/etc/macha/runbooks")),
            history,
            ssh,
            hosts,
            discovery,
            llm,
            prometheus,
            knowledge_flake,
            knowledge_change_window: duration("knowledge.change_window", &f.knowledge.change_window, s(7_200), s(60))?,
            knowledge_embedder,
            autonomy,
            check_interval: duration("check_interval", &f.check_interval, s(60), s(5))?,
            protected_extra: f.protected_units.clone(),
            admin_group: f.admin_group.clone(),
            viewer_group: f.viewer_group.clone().or_else(|| f.admin_group.clone()),
            state_dir,
            database,
            socket,
            systemd_enable: f.systemd.enable.unwrap_or(true),
            bus,
            journal_enable: f.journal.enable.unwrap_or(true),
            journalctl: f.journal.journalctl.clone(),
            journal_directory: f.journal.directory.clone(),
            journal_window: duration("journal.window", &f.journal.window, s(600), s(60))?,
            flap_limit,
            flap_window: duration("flap.window", &f.flap.window, macha_core::flap::DEFAULT_WINDOW, s(60))?,
            cleanup_min_age_days,
            approval_expiry: duration("approvals.expiry", &f.approvals.expiry, s(24 * 3600), s(60))?,
            deploy: {
                let d = DeployConfig {
                    activate_timeout: duration("deploy.activate_timeout", &f.deploy.activate_timeout, s(300), s(1))?,
                    reconnect_timeout: duration("deploy.reconnect_timeout", &f.deploy.reconnect_timeout, s(120), s(1))?,
                    verify_timeout: duration("deploy.verify_timeout", &f.deploy.verify_timeout, s(120), s(1))?,
                    retry: duration("deploy.retry", &f.deploy.retry, s(5), s(1))?,
                    dead_man: duration("deploy.dead_man", &f.deploy.dead_man, s(900), s(10))?,
                    min_free_mib: f.deploy.min_free_mib.unwrap_or(512),
                    engine: deploy_engine(&f.deploy.engine)?,
                    checks: pre_deploy_checks(&f.deploy.checks)?,
                };
                // The dead-man timer must fire only after Macha stopped waiting (macha-deploy).
                let busy = d.activate_timeout + d.reconnect_timeout + d.verify_timeout + d.retry;
                if d.dead_man <= busy {
                    bail!(
                        "deploy.dead_man ({}) must be longer than activate_timeout + reconnect_timeout + \
                         verify_timeout + retry ({})",
                        humantime::format_duration(d.dead_man),
                        humantime::format_duration(busy)
                    );
                }
                if d.min_free_mib > 1024 * 1024 {
                    bail!("deploy.min_free_mib = {} is more than 1 TiB", d.min_free_mib);
                }
                d
            },
            executor_timeout: duration("executor.timeout", &f.executor.timeout, s(90), s(1))?,
            verify_delay: duration("executor.verify_delay", &f.executor.verify_delay, s(3), Duration::ZERO)?,
            close_after: duration("issues.close_after", &f.issues.close_after, s(24 * 3600), s(60))?,
            archive_after: duration("issues.archive_after", &f.issues.archive_after, s(30 * 86_400), s(3600))?,
            thresholds,
            tools: f.tools.clone(),
        })
    }

    pub fn protected(&self) -> ProtectedUnits {
        ProtectedUnits::new(&self.protected_extra)
    }

    /// The store's retention periods and size caps.
    pub fn store_limits(&self) -> macha_store::Limits {
        macha_store::Limits {
            raw_retention: self.history.raw_retention,
            downsample: self.history.downsample,
            history_retention: self.history.retention,
            prompts_retention: self.history.prompts_retention,
            answer_max_bytes: usize::try_from(self.llm.answer_max_bytes).unwrap_or(usize::MAX),
            ..macha_store::Limits::default()
        }
    }

    /// The limits that depend on the proposer and the arguments.
    pub fn policy_limits(&self) -> macha_core::policy::PolicyLimits {
        macha_core::policy::PolicyLimits {
            model_may_execute: self.llm.may_execute.iter().copied().collect(),
            cleanup_min_age_days: self.cleanup_min_age_days,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let c = Config::defaults(Scope::System).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.autonomy, Autonomy::Suggest);
        assert_eq!(c.check_interval, Duration::from_secs(60));
        assert_eq!(c.database, PathBuf::from("/var/lib/macha/macha.db"));
        assert_eq!(c.bus, BusChoice::System);
        assert_eq!(c.store_limits(), macha_store::Limits::default());
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
autonomy = "auto-safe"
check_interval = "30s"
protected_units = ["postgresql", "custom-*"]
admin_group = "wheel"
[paths]
state_dir = "/tmp/m"
socket = "/tmp/m/s.sock"
[systemd]
bus = "session"
[journal]
window = "5m"
directory = "/var/log/journal/remote"
[flap]
limit = 2
window = "10m"
[policy]
cleanup_min_age_days = 10
[llm]
may_execute = ["diagnostic", "restart_unit"]
[approvals]
expiry = "1h"
[executor]
timeout = "30s"
verify_delay = "1s"
[issues]
close_after = "1h"
archive_after = "7d"
[history]
raw_retention = "2d"
downsample = "30m"
retention = "90d"
prompts_retention = "7d"
[thresholds]
disk_warn_percent = 80.0
[tools]
journalctl = "/run/current-system/sw/bin/journalctl"
"#;
        let (file, c) = Config::parse(text, Scope::System).unwrap_or_else(|e| panic!("{e:#}"));
        // What `check-config` prints reads back to the same configuration.
        let printed = toml::to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let again = Config::from_toml(&printed, Scope::System).unwrap_or_else(|e| panic!("{e:#}\n{printed}"));
        assert_eq!(serde_json::to_value(&again).ok(), serde_json::to_value(&c).ok(), "{printed}");
        assert_eq!(c.autonomy, Autonomy::AutoSafe);
        assert_eq!(c.database, PathBuf::from("/tmp/m/macha.db"));
        let limits = c.store_limits();
        assert_eq!(limits.raw_retention, Duration::from_secs(2 * 86_400));
        assert_eq!(limits.downsample, Duration::from_secs(1800));
        assert_eq!(limits.history_retention, Duration::from_secs(90 * 86_400));
        assert_eq!(limits.prompts_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(limits.answer_max_bytes, 256 * 1024);
        let limits = c.policy_limits();
        assert_eq!(limits.cleanup_min_age_days, 10);
        assert_eq!(
            limits.model_may_execute,
            [macha_core::ActionKind::Diagnostic, macha_core::ActionKind::RestartUnit].into_iter().collect()
        );
        let d = Config::defaults(Scope::System).unwrap_or_else(|e| panic!("{e:#}")).policy_limits();
        assert_eq!(d, macha_core::policy::PolicyLimits::default());
        assert_eq!(c.thresholds.disk_warn_percent, 80.0);
        assert_eq!(c.thresholds.disk_critical_percent, 95.0);
        assert!(
            c.protected()
                .protecting(&macha_core::UnitName::parse("custom-x").unwrap_or_else(|e| panic!("{e}")))
                .is_some()
        );
    }

    #[test]
    fn notification_channels_resolve() {
        let text = r#"
[notifications]
link_base = "https://macha.example/"
critical_group_wait = "2s"
retry_max = "5s"
model_may_send = true
[notifications.gotify]
url = "https://gotify.example/"
token_file = "/run/credentials/macha.service/notify-gotify"
[notifications.ntfy]
url = "https://ntfy.sh"
topic = "macha-alerts"
min_severity = "critical"
kinds = ["issue_opened", "security"]
"#;
        let c = Config::from_toml(text, Scope::System).unwrap_or_else(|e| panic!("{e:#}"));
        let n = &c.notifications;
        assert_eq!(n.link_base.as_deref(), Some("https://macha.example"));
        assert_eq!(n.critical_group_wait, Duration::from_secs(2));
        assert_eq!(n.group_wait, Duration::from_secs(30));
        assert_eq!(n.retry_max, Duration::from_secs(5));
        assert!(n.model_may_send);
        assert_eq!(n.model_per_hour, 3);
        assert_eq!(n.channels.len(), 2);
        assert_eq!(n.channels[0].service, NotifyService::Gotify);
        assert_eq!(n.channels[0].url, "https://gotify.example");
        assert_eq!(n.channels[0].min_severity, "warning");
        assert_eq!(n.channels[0].kinds.len(), NOTIFY_KINDS.len());
        assert_eq!(n.channels[1].topic.as_deref(), Some("macha-alerts"));
        assert_eq!(n.channels[1].secret_file, None);
        assert_eq!(n.channels[1].kinds, vec!["issue_opened".to_owned(), "security".to_owned()]);
        let defaults = Config::defaults(Scope::System).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(defaults.notifications.channels.is_empty());
        assert!(!defaults.notifications.model_may_send);
    }

    #[test]
    fn wrong_configs_are_clear_errors() {
        for (text, needle) in [
            ("autonomy = \"yolo\"", "not one of"),
            ("autonmy = \"suggest\"", "unknown field"),
            ("check_interval = \"soon\"", "not a duration"),
            ("check_interval = \"1s\"", "shorter than the minimum"),
            ("[paths]\nstate_dir = \"relative\"", "absolute"),
            ("[systemd]\nbus = \"tcp:host=x\"", "systemd.bus"),
            ("[thresholds]\ndisk_warn_percent = 99.0", "disk_warn_percent"),
            ("[thresholds]\ndisk_warning = 1.0", "unknown field"),
            ("[tools]\nsh = \"/bin/sh\"", "unknown tool"),
            ("[tools]\njournalctl = \"journalctl\"", "absolute"),
            ("protected_units = [\"a;b\"]", "protected_units"),
            ("[hosts.web1]\ntags = [\"a b\"]", "is not a tag"),
            ("[hosts.web1]\ntags = [\"\"]", "is not a tag"),
            ("[hosts.web1]\ndepends_on = [\"db9\"]", "is not a configured host"),
            ("[hosts.web1]\ndepends_on = [\"web1\"]", "cannot depend on itself"),
            ("[knowledge.idle]\nmax_load_per_cpu = 0.0", "must be above 0"),
            ("[knowledge.idle]\nmemory_max_mib = 0", "knowledge.idle.memory_max_mib = 0 must be 1-1048576"),
            ("[notifications.gotify]\nurl = \"https://g\"", "notifications.gotify.token_file is not"),
            ("[notifications.gotify]\nurl = \"https://g?token=x\"\ntoken_file = \"/t\"", "no query"),
            ("[notifications.gotify]\ntopic = \"x\"", "unknown field"),
            ("[notifications.ntfy]\nurl = \"https://n\"", "notifications.ntfy.topic is not"),
            ("[notifications.ntfy]\nurl = \"https://n\"\ntopic = \"a/b\"", "notifications.ntfy.topic"),
            ("[notifications.webhook]\nurl = \"https://w\"", "notifications.webhook.secret_file is not"),
            ("[notifications.webhook]\nurl = \"https://w\"\nsecret_file = \"rel\"", "absolute path"),
            ("[notifications.ntfy]\ntopic = \"t\"", "has settings but no url"),
            ("[notifications.ntfy]\nurl = \"https://n\"\ntopic = \"t\"\nmin_severity = \"loud\"", "min_severity"),
            ("[notifications.ntfy]\nurl = \"https://n\"\ntopic = \"t\"\nkinds = [\"everything\"]", "not an event kind"),
            ("[notifications]\nlink_base = \"console\"", "notifications.link_base"),
            ("[notifications]\nmodel_per_hour = 0", "notifications.model_per_hour"),
            ("[llm.models]\nembedding = \"x\"", "unknown field"),
            ("[flap]\nlimit = 0", "flap.limit"),
            ("[history]\nretention = \"1d\"\nraw_retention = \"2d\"", "history.retention"),
            ("[history]\ndownsample = \"10s\"", "history.downsample"),
            ("[llm]\nanswer_max_bytes = 10", "llm.answer_max_bytes"),
            ("[llm]\nmay_execute = [\"run_shell\"]", "llm.may_execute"),
            ("[policy]\ncleanup_min_age_days = 0", "policy.cleanup_min_age_days"),
            ("autonomy = ", "TOML parse error"),
        ] {
            let err = match Config::from_toml(text, Scope::System) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
    #[test]
    fn deploy_engine_and_checks_resolve_and_bad_ones_are_named() {
        let c = Config::defaults(Scope::System).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((c.deploy.engine, c.deploy.checks.len()), (DeployEngine::Nix, 0), "nix, no checks by default");
        let text = r#"
[deploy]
engine = "nh"
checks = [ { flake_check = true }, { flake_check = true, no_build = true }, { attr = "checks.x86_64-linux.vm-test" } ]
"#;
        let (_, c) = Config::parse(text, Scope::System).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.deploy.engine, DeployEngine::Nh);
        assert_eq!(
            c.deploy.checks,
            [
                PreDeployCheck::FlakeCheck { no_build: false },
                PreDeployCheck::FlakeCheck { no_build: true },
                PreDeployCheck::Attr("checks.x86_64-linux.vm-test".into())
            ]
        );
        let names: Vec<String> = c.deploy.checks.iter().map(PreDeployCheck::name).collect();
        assert_eq!(names, ["nix flake check", "nix flake check --no-build", "checks.x86_64-linux.vm-test"]);
        for (bad, says) in [
            ("engine = \"colmena\"", "deploy.engine = \"colmena\""),
            ("checks = [ { flake_check = false } ]", "checks nothing"),
            ("checks = [ { attr = \"a\", flake_check = true } ]", "deploy.checks[0]: give either"),
            ("checks = [ { attr = \"a\", no_build = true } ]", "deploy.checks[0]: give either"),
            ("checks = [ { } ]", "deploy.checks[0]: give either"),
            ("checks = [ { attr = \"checks.x; rm -rf\" } ]", "not an attribute path"),
            ("checks = [ { attr = \"-L\" } ]", "not an attribute path"),
            ("checks = [ { command = \"make test\" } ]", "unknown field"),
        ] {
            let err = Config::parse(&format!("[deploy]\n{bad}\n"), Scope::System).err().map(|e| format!("{e:#}"));
            assert!(err.as_deref().is_some_and(|e| e.contains(says)), "{bad}: {err:?}");
        }
    }
}
