//! The multicall command line: `macha <command>`, or the same commands under their own names
//! (`macha-check`, `macha-approve`, `macha-logs`, `macha-issues`, `macha-knowledge`, `macha-configs`, …) through links
//! to the binary.
//!
//! Exit codes (also in `docs/cli.md`): 0 success; for `check` 1 warning, 2 critical, 3 unknown
//! (some sources could not be observed, nothing found); 64 usage error; 65 invalid input;
//! 69 daemon unreachable; 76 the daemon speaks another protocol version; 77 permission denied;
//! 70 any other failure.

mod audit;
mod chat;
mod check;
mod commands;
mod configs;
mod deploy;
mod deploy_build;
pub mod knowledge;
pub mod metrics;
mod questlog;
mod render;
pub mod systems;
pub mod term;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

pub const EXIT_USAGE: u8 = 64;
pub const EXIT_DATAERR: u8 = 65;
pub const EXIT_UNAVAILABLE: u8 = 69;
pub const EXIT_SOFTWARE: u8 = 70;
/// The daemon speaks another protocol version (`EX_PROTOCOL`).
pub const EXIT_PROTOCOL: u8 = 76;
pub const EXIT_NOPERM: u8 = 77;

#[derive(Debug, Parser)]
#[command(multicall = true)]
pub enum Applet {
    /// Macha, an AI system administrator for NixOS fleets.
    #[command(name = "macha", version, about = "Macha: an AI system administrator for NixOS fleets")]
    Macha {
        #[command(subcommand)]
        cmd: Cmd,
    },
    /// Run one check cycle now.
    #[command(name = "macha-check", version)]
    Check(CheckArgs),
    /// List, inspect, approve and reject actions waiting for a person.
    #[command(name = "macha-approve", version)]
    Approve {
        #[command(subcommand)]
        cmd: ApproveCmd,
    },
    /// Read Macha's records: decisions, actions, the audit trail, the service log.
    #[command(name = "macha-logs", version)]
    Logs {
        #[command(subcommand)]
        cmd: LogsCmd,
    },
    /// List, inspect, resolve and close issues.
    #[command(name = "macha-issues", version)]
    Issues {
        #[command(subcommand)]
        cmd: IssuesCmd,
    },
    /// Talk with Macha's model about this host (interactive; shows tool calls).
    #[command(name = "macha-chat", version)]
    Chat(ChatArgs),
    /// Ask Macha's model one question.
    #[command(name = "macha-ask", version)]
    Ask(AskArgs),
    /// The host registry: list, show, trust, admit and forget managed hosts.
    #[command(name = "macha-systems", version)]
    Systems {
        #[command(subcommand)]
        cmd: systems::SystemsCmd,
    },
    /// The knowledge base and the runbooks.
    #[command(name = "macha-knowledge", version)]
    Knowledge {
        #[command(subcommand)]
        cmd: knowledge::KnowledgeCmd,
    },
    /// Search the fleet's flake by attribute path, option, unit name or text.
    #[command(name = "macha-configs", version)]
    Configs(configs::ConfigsArgs),
    /// Print a file of the fleet's flake (only inside it).
    #[command(name = "macha-configs-read", version)]
    ConfigsRead(configs::ReadApplet),
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Continue an earlier conversation (its id is in `macha-logs prompts`).
    #[arg(long)]
    pub conversation: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AskArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// The question (several words are joined; options may come before or after it).
    #[arg(required = true, num_args = 1..)]
    pub question: Vec<String>,
}

/// `macha web …`.
#[derive(Debug, Subcommand)]
pub enum WebCmd {
    /// Print a one-time login link for the console on TCP (admins; good once, for five minutes).
    Login {
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one check cycle now (through the daemon if it runs, else standalone).
    Check(CheckArgs),
    /// Deploy a built NixOS system to other hosts: closure diff, approval, dead-man switch,
    /// verification, commit or rollback (docs/deploy.md).
    Deploy(deploy::DeployArgs),
    /// The daemon's status: autonomy, uptime, database, systemd and SSH (anyone may ask).
    Status {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Run the daemon (what macha.service starts).
    Daemon(DaemonArgs),
    /// Search, read and index the fleet's flake (docs/knowledge.md).
    Configs(configs::ConfigsArgs),
    /// Validate a configuration file and print it resolved.
    CheckConfig(CheckConfigArgs),
    /// The policy table and the policy gate.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// JSON Schemas of Macha's formats.
    Schema {
        #[command(subcommand)]
        cmd: SchemaCmd,
    },
    /// Actions waiting for a person (same as `macha-approve`).
    Approve {
        #[command(subcommand)]
        cmd: ApproveCmd,
    },
    /// Macha's records (same as `macha-logs`).
    Logs {
        #[command(subcommand)]
        cmd: LogsCmd,
    },
    /// Issues (same as `macha-issues`).
    Issues {
        #[command(subcommand)]
        cmd: IssuesCmd,
    },
    /// Talk with Macha's model (same as `macha-chat`).
    Chat(ChatArgs),
    /// Ask Macha's model one question (same as `macha-ask`).
    Ask(AskArgs),
    /// Print shell completions for every command name.
    Completions {
        shell: clap_complete::Shell,
        /// Write one file per command name into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write man pages for every command into a directory.
    Man { dir: PathBuf },
    /// The host registry (same as `macha-systems`).
    Systems {
        #[command(subcommand)]
        cmd: systems::SystemsCmd,
    },
    /// The knowledge base and the runbooks (same as `macha-knowledge`).
    Knowledge {
        #[command(subcommand)]
        cmd: knowledge::KnowledgeCmd,
    },
    /// The web console (docs/web.md).
    Web {
        #[command(subcommand)]
        cmd: WebCmd,
    },
    /// Print this host's snapshot as JSON, for the Macha that observes it over SSH.
    Probe(systems::ProbeArgs),
    /// A host's metric history: its metrics, or one metric as a sparkline (docs/metrics.md).
    Metrics(metrics::MetricsArgs),
    /// The anomaly detector over a series of one's own (docs/metrics.md).
    Anomaly {
        #[command(subcommand)]
        cmd: metrics::AnomalyCmd,
    },
    /// Print the names the binary answers to, one a line (the package links each to `macha`).
    #[command(hide = true)]
    Applets,
    /// Exit 0 if Macha's policy could ever act on this unit (a managed unit type that no
    /// protected pattern of the configuration covers), 1 if not. The NixOS module's polkit rule
    /// runs it to decide which units the macha user may start, stop, restart and reset.
    #[command(hide = true)]
    UnitAllowed {
        /// Configuration whose protected units apply (default: the built-in list only).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The unit's full name, as systemd reports it (`nginx.service`).
        unit: String,
    },
}

/// Options every client command shares.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Configuration file (default /etc/macha/macha.toml if present).
    #[arg(long, env = "MACHA_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's socket (default from the configuration, /run/macha/macha.sock).
    #[arg(long, env = "MACHA_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Read this database directly instead of asking the daemon (read-only).
    #[arg(long, global = true)]
    pub db: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print text exactly as received: control characters and escape sequences from logs, hosts
    /// or the model are kept (by default they are removed before they reach the terminal).
    #[arg(long, global = true)]
    pub raw: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Never ask the daemon; observe and record in the standalone store.
    #[arg(long, conflicts_with_all = ["host", "all", "tag"])]
    pub standalone: bool,
    /// Report this host instead of the local one (repeatable; `local` is this host). Remote hosts
    /// are observed by the daemon: their last report, `unknown` when it is stale.
    #[arg(long, value_name = "HOST")]
    pub host: Vec<String>,
    /// Report this host and every observed remote host; the exit code is the worst status.
    #[arg(long, conflicts_with = "host")]
    pub all: bool,
    /// Only remote hosts with this configured tag (`hosts.<name>.tags`); with `--host`, those of
    /// them that have it.
    #[arg(long, value_name = "TAG", conflicts_with = "all")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Configuration file (default /etc/macha/macha.toml; embedded defaults if it does not exist).
    #[arg(long, env = "MACHA_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// The file to check (default /etc/macha/macha.toml).
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AutonomyArg {
    Observe,
    Suggest,
    AutoSafe,
    AutoFull,
}

impl From<AutonomyArg> for macha_core::policy::Autonomy {
    fn from(a: AutonomyArg) -> Self {
        use macha_core::policy::Autonomy;
        match a {
            AutonomyArg::Observe => Autonomy::Observe,
            AutonomyArg::Suggest => Autonomy::Suggest,
            AutonomyArg::AutoSafe => Autonomy::AutoSafe,
            AutonomyArg::AutoFull => Autonomy::AutoFull,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Print the policy table: every action kind, its risk, and the verdict at each autonomy level.
    Show {
        #[arg(long)]
        json: bool,
        /// Configuration whose protected units to list.
        #[arg(long, env = "MACHA_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Read a proposed action (JSON) on stdin and print the verdict the daemon would give, without
    /// executing anything: the same configuration, trusted hosts and flap history (from the
    /// daemon's database, read-only).
    Check {
        /// Decide at this autonomy level instead of the configured one.
        #[arg(long, value_enum)]
        autonomy: Option<AutonomyArg>,
        /// Who proposes it: a rule, a person, or the model (whose proposals execute only what
        /// `llm.may_execute` lists).
        #[arg(long, value_enum, default_value = "person")]
        origin: OriginArg,
        #[arg(long)]
        json: bool,
        /// Configuration whose protected units and limits apply.
        #[arg(long, env = "MACHA_CONFIG")]
        config: Option<PathBuf>,
        /// The daemon's database (default: the configured one of the system daemon).
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

/// Who proposes an action to `macha policy check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OriginArg {
    Rule,
    Person,
    Model,
}

impl OriginArg {
    /// The origin as the engine records it (a rule without a check name is `rule:cli`).
    pub fn origin(self) -> macha_core::action::Origin {
        use macha_core::action::Origin;
        match self {
            OriginArg::Rule => Origin::Rule { check: "cli".into() },
            OriginArg::Person => Origin::Person { uid: nix::unistd::getuid().as_raw() },
            OriginArg::Model => Origin::Model,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SchemaCmd {
    /// The JSON Schema of a proposed action.
    Action,
}

#[derive(Debug, Subcommand)]
pub enum ApproveCmd {
    /// Pending requests (all states with --all).
    List {
        #[command(flatten)]
        client: ClientOpts,
        #[arg(long)]
        all: bool,
    },
    /// One request in full.
    Show {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Approve a request: the policy re-decides it and the daemon executes it.
    Approve {
        id: i64,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Reject a request.
    Reject {
        id: i64,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Ask Macha's model about a pending request; type `approve` or `reject` to decide.
    Discuss {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Clone, Args)]
pub struct LogFilter {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Only records newer than this (e.g. `1h`, `2d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records about this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only records of this severity or higher (info, notice, warning, error, critical).
    #[arg(long)]
    pub severity: Option<String>,
    /// At most this many records (default 100).
    #[arg(long, short = 'n')]
    pub limit: Option<u32>,
    /// Keep printing new records as they are written.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Records after this id, oldest first (page through the trail: pass the last id shown).
    #[arg(long)]
    pub after_id: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum LogsCmd {
    /// Policy decisions.
    Decisions(LogFilter),
    /// Executed actions and their outcomes.
    Actions(LogFilter),
    /// Exactly what was sent to the model (redacted), per request.
    Prompts {
        /// Only the prompts of this agent request.
        #[arg(long)]
        request: Option<i64>,
        /// At most this many prompts (default 20).
        #[arg(long, short = 'n')]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The whole audit trail.
    Audit(LogFilter),
    /// Check the audit trail's hash chain (read-only): OK with the count and range, or each
    /// edited, inserted or deleted record. Exit code 1 when the chain is broken.
    Verify {
        /// Check this export file instead: against itself and against the database.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Write the audit trail (after the last prune) to a gzip-compressed JSON-lines file and
    /// print the last id and hash, which `prune` wants (read-only).
    Export {
        /// The file to create (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Export up to this record id (default: the last one).
        #[arg(long, value_name = "ID")]
        upto: Option<i64>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete exported audit records up to ID, proven by the hash `export` printed for it. Goes
    /// through the daemon; with --db, opens a database no daemon holds.
    Prune {
        #[arg(long, value_name = "ID")]
        upto: i64,
        /// The hash of record ID, as `macha logs export` printed it.
        #[arg(long, value_name = "HEX")]
        hash: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Full-text search of the audit trail (summaries, subjects and details such as command
    /// output), best match first. Any text is searched as words.
    Search {
        text: String,
        /// Only records about this host.
        #[arg(long)]
        host: Option<String>,
        /// Only records of this kind (finding, decision, action, outcome, approval, issue, alert, …);
        /// repeat for several.
        #[arg(long)]
        kind: Vec<String>,
        /// Only records newer than this (e.g. `6h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many records (default 50).
        #[arg(long, short = 'n')]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// What happened over a period: actions by kind and outcome, issues by check and host, time
    /// to resolve (median and p90), the most flapping subjects, the model's usage.
    Stats {
        /// The period (default 30d).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Everything about one host in order: findings, decisions, actions and outcomes,
    /// approvals and deployments, issues, alerts.
    Timeline {
        host: String,
        /// The period (default 24h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many records (default 500).
        #[arg(long, short = 'n')]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Every command and unit job Macha ran: exit status, duration and (redacted) output.
    Commands {
        /// Only commands run on this host.
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        since: Option<String>,
        /// At most this many (default 50).
        #[arg(long, short = 'n')]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The daemon's own log (from the journal).
    Service {
        #[arg(long)]
        since: Option<String>,
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long, short = 'n')]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IssuesCmd {
    /// Open, acting and resolved issues (all with --all).
    List {
        #[command(flatten)]
        client: ClientOpts,
        #[arg(long)]
        all: bool,
        /// Only these states (comma-separated: open,acting,resolved,closed,archived).
        #[arg(long, value_delimiter = ',')]
        state: Vec<String>,
        #[arg(long)]
        host: Option<String>,
    },
    /// One issue with its history.
    Show {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Mark an issue resolved by hand.
    Resolve {
        id: i64,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Close an issue by hand.
    Close {
        id: i64,
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// A command failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        use crate::api::{ClientError, ErrorCode};
        let code = match error.downcast_ref::<ClientError>() {
            Some(ClientError::Connect { .. }) => EXIT_UNAVAILABLE,
            Some(ClientError::VersionMismatch { .. })
            | Some(ClientError::Remote { code: ErrorCode::VersionMismatch, .. }) => EXIT_PROTOCOL,
            Some(ClientError::Remote { code: ErrorCode::Denied, .. }) => EXIT_NOPERM,
            Some(ClientError::Remote { code: ErrorCode::BadRequest, .. }) => EXIT_DATAERR,
            Some(ClientError::Remote { code: ErrorCode::Unavailable, .. }) => EXIT_UNAVAILABLE,
            _ => EXIT_SOFTWARE,
        };
        Failure { code, error }
    }
}

pub fn fail(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}

pub type CmdResult = Result<u8, Failure>;

/// A client command whose output goes into a closed pipe (`macha logs audit | head`) ends quietly,
/// as Unix tools do, instead of panicking in `println!`. Not for the daemon, where a closed peer is
/// an error to handle.
fn restore_default_sigpipe() {
    // SAFETY: called at the start of `main`, before any other thread exists; SIG_DFL is a valid
    // disposition and no handler code runs.
    #[allow(unsafe_code)]
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
}

pub fn main() -> ExitCode {
    let applet = match Applet::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let daemon = matches!(applet, Applet::Macha { cmd: Cmd::Daemon(_) });
    if !daemon {
        restore_default_sigpipe();
    }
    crate::logging::init(if daemon { crate::logging::Mode::Daemon } else { crate::logging::Mode::Cli });
    // `--raw` (a global flag of the client commands, validated by the parser above): before `--`.
    term::set_raw(std::env::args_os().take_while(|a| a != "--").any(|a| a == "--raw"));
    match dispatch(applet) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("macha: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(applet: Applet) -> CmdResult {
    match applet {
        Applet::Macha { cmd } => match cmd {
            Cmd::Check(a) => check::run(&a),
            Cmd::Deploy(a) => deploy::run(&a),
            Cmd::Status { client } => commands::status(&client),
            Cmd::Daemon(a) => commands::daemon(&a),
            Cmd::Configs(a) => configs::run(&a),
            Cmd::CheckConfig(a) => commands::check_config(&a),
            Cmd::Policy { cmd } => commands::policy(cmd),
            Cmd::Schema { cmd: SchemaCmd::Action } => commands::schema_action(),
            Cmd::Approve { cmd } => commands::approve(cmd),
            Cmd::Logs { cmd } => commands::logs(cmd),
            Cmd::Issues { cmd } => commands::issues(cmd),
            Cmd::Chat(a) => chat::chat(&a),
            Cmd::Ask(a) => chat::ask(&a),
            Cmd::Completions { shell, dir } => completions(shell, dir),
            Cmd::Man { dir } => man(&dir),
            Cmd::Systems { cmd } => systems::run(cmd),
            Cmd::Web { cmd: WebCmd::Login { client } } => commands::web_login(&client),
            Cmd::Probe(a) => systems::probe(&a),
            Cmd::Knowledge { cmd } => knowledge::run(cmd),
            Cmd::Metrics(a) => metrics::metrics(&a),
            Cmd::Anomaly { cmd } => metrics::anomaly(cmd),
            Cmd::Applets => {
                applet_names().iter().for_each(|n| println!("{n}"));
                Ok(0)
            }
            Cmd::UnitAllowed { config, unit } => unit_allowed(config.as_deref(), &unit),
        },
        Applet::Check(a) => check::run(&a),
        Applet::Approve { cmd } => commands::approve(cmd),
        Applet::Logs { cmd } => commands::logs(cmd),
        Applet::Issues { cmd } => commands::issues(cmd),
        Applet::Chat(a) => chat::chat(&a),
        Applet::Ask(a) => chat::ask(&a),
        Applet::Systems { cmd } => systems::run(cmd),
        Applet::Knowledge { cmd } => knowledge::run(cmd),
        Applet::Configs(a) => configs::run(&a),
        Applet::ConfigsRead(a) => configs::read_applet(&a),
    }
}

/// The names the binary answers to.
pub fn applet_names() -> Vec<String> {
    Applet::command().get_subcommands().map(|s| s.get_name().to_owned()).collect()
}

/// The polkit helper: the same unit rules as `policy::decide` (parse, managed type, protected).
fn unit_allowed(config: Option<&std::path::Path>, unit: &str) -> CmdResult {
    let protected = match config {
        Some(p) => {
            crate::config::Config::load(p, crate::config::Scope::System).map_err(|e| fail(EXIT_DATAERR, e))?.protected()
        }
        None => macha_core::policy::ProtectedUnits::new::<&str>(&[]),
    };
    let verdict = match macha_core::UnitName::parse(unit) {
        Err(e) => Err(format!("not a unit name: {e}")),
        // Only systemd's own full name: no normalisation (`ssh` → `ssh.service`) at this gate.
        Ok(name) if name.as_str() != unit => Err(format!("not a full unit name (did you mean {name}?)")),
        Ok(name) if !macha_core::policy::MANAGED_UNIT_TYPES.contains(&name.unit_type()) => {
            Err(format!("{} units are never managed", name.unit_type()))
        }
        Ok(name) => match protected.protection(&name) {
            Some(p) => Err(format!("protected ({p})")),
            None => Ok(()),
        },
    };
    match verdict {
        Ok(()) => {
            println!("{unit}: allowed");
            Ok(0)
        }
        Err(reason) => {
            println!("{unit}: denied: {reason}");
            Ok(1)
        }
    }
}

fn completions(shell: clap_complete::Shell, dir: Option<PathBuf>) -> CmdResult {
    let root = Applet::command();
    for sub in root.get_subcommands() {
        let mut cmd = sub.clone();
        let name = sub.get_name().to_owned();
        match &dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                clap_complete::generate_to(shell, &mut cmd, name, d)?;
            }
            None => clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout()),
        }
    }
    Ok(0)
}

fn man(dir: &std::path::Path) -> CmdResult {
    std::fs::create_dir_all(dir)?;
    let root = Applet::command();
    for sub in root.get_subcommands() {
        write_man(dir, sub, sub.get_name())?;
        if sub.get_name() == "macha" {
            for inner in sub.get_subcommands() {
                write_man(dir, inner, &format!("macha-{}", inner.get_name()))?;
            }
        }
    }
    Ok(0)
}

fn write_man(dir: &std::path::Path, cmd: &clap::Command, name: &str) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let cmd = cmd.clone().name(name.to_owned().leak() as &'static str);
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.1")), buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Applet::command().debug_assert();
        assert_eq!(
            applet_names(),
            [
                "macha",
                "macha-check",
                "macha-approve",
                "macha-logs",
                "macha-issues",
                "macha-chat",
                "macha-ask",
                "macha-systems",
                "macha-knowledge",
                "macha-configs",
                "macha-configs-read"
            ]
        );
    }

    #[test]
    fn multicall_names_parse() {
        for argv in [
            vec!["macha", "check", "--json"],
            vec!["macha-check", "--standalone"],
            vec!["/usr/bin/macha-approve", "approve", "4", "--note", "ok"],
            vec!["macha-logs", "decisions", "--since", "1h", "--follow"],
            vec!["macha-issues", "list", "--state", "open,acting"],
            vec!["macha-ask", "why", "did", "nginx", "fail?"],
            vec!["macha-chat", "--conversation", "chat-1"],
            vec!["macha-approve", "discuss", "7"],
            vec!["macha-logs", "prompts", "--request", "3", "--json"],
            vec!["macha", "policy", "check", "--autonomy", "auto-safe", "--json"],
            vec!["macha-systems", "list", "--json"],
            vec!["macha-knowledge", "search", "-", "NEAR(", "--json"],
            vec!["macha", "knowledge", "runbooks", "show", "unit-restart-loop"],
            vec!["macha-systems", "trust", "c1", "--fingerprint", "SHA256:x", "--fingerprint", "SHA256:y"],
            vec!["macha", "systems", "admit", "web1.example.org"],
            vec!["macha", "probe", "--json"],
            vec!["macha-logs", "verify", "--db", "/tmp/x.db", "--json"],
            vec!["macha", "logs", "verify", "--export", "/tmp/a.jsonl.gz"],
            vec!["macha-logs", "export", "--out", "/tmp/a.jsonl.gz", "--upto", "7"],
            vec!["macha", "logs", "prune", "--upto", "7", "--hash", "ab", "--json"],
            vec!["macha", "logs", "search", "address in use", "--host", "web1", "--kind", "outcome", "--since", "6h"],
            vec!["macha-logs", "search", "nginx", "--kind", "issue", "--kind", "finding", "-n", "5", "--json"],
            vec!["macha", "logs", "stats", "--since", "30d", "--json", "--db", "/tmp/x.db"],
            vec!["macha-logs", "timeline", "web1", "--since", "6h"],
            vec!["macha", "logs", "commands", "--host", "web1", "-n", "10", "--json"],
            vec!["macha", "configs", "services.nginx", "--host", "web1", "--category", "apps", "--json"],
            vec!["macha", "configs", "nginx -acme", "\"max connections\""],
            vec!["macha", "configs", "--", "nginx", "-acme"],
            vec!["macha-configs", "postgres", "-n", "3"],
            vec!["macha", "configs", "read", "apps/nginx.nix", "--lines", "3:9"],
            vec!["macha", "configs", "index", "--json", "--flake", "/tmp/f"],
            vec!["macha-configs", "index"],
            vec!["macha-configs-read", "flake.nix", "--json"],
        ] {
            assert!(Applet::try_parse_from(&argv).is_ok(), "{argv:?}");
        }
        assert!(Applet::try_parse_from(["macha", "policy", "check", "--autonomy", "yolo"]).is_err());
        assert!(Applet::try_parse_from(["macha", "logs", "prune", "--upto", "7"]).is_err(), "prune needs the hash");
        assert!(Applet::try_parse_from(["macha", "logs", "search"]).is_err(), "search needs the text");
        assert!(Applet::try_parse_from(["macha", "logs", "timeline"]).is_err(), "timeline needs the host");
        assert!(Applet::try_parse_from(["macha", "logs", "export"]).is_err(), "export needs --out");
        assert!(Applet::try_parse_from(["macha", "configs"]).is_err(), "configs needs a query");
        assert!(Applet::try_parse_from(["macha-configs-read"]).is_err(), "read needs a path");
    }
}
