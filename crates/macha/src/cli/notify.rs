//! `macha notify` (also `macha-notify`) and `macha silence`: send a message through Macha's
//! channels, test a channel, read the delivery log, and silence what should not be sent for a
//! while (docs/notifications.md). Everything goes through the daemon: sending, testing and
//! silencing need an admin and are audited; the log and the silences need a viewer.

use super::commands::write_client;
use super::{ClientOpts, CmdResult, EXIT_UNAVAILABLE, EXIT_USAGE, fail, render, term};
use crate::api::notify::{
    NotifyAnswer, NotifyChange, NotifyLogEntry, NotifyQuery, NotifyRead, NotifyWrite, SilenceView,
};
use clap::{Args, Subcommand};
use std::time::Duration;

/// `macha notify [--priority N] [--channel C] TITLE MESSAGE`, or one of its subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct NotifyArgs {
    #[command(subcommand)]
    pub cmd: Option<NotifyCmd>,
    #[command(flatten)]
    pub client: ClientOpts,
    /// 0-10 (as Gotify counts): 8 and above is critical, 4-7 a warning, below that information
    /// (default 5).
    #[arg(long, short = 'p', value_parser = clap::value_parser!(u8).range(0..=10))]
    pub priority: Option<u8>,
    /// Only this channel (`gotify`, `ntfy`, `webhook` or `journal`; default: every channel).
    #[arg(long, short = 'c')]
    pub channel: Option<String>,
    /// The message's title.
    #[arg(required = true)]
    pub title: Option<String>,
    /// The message (Markdown).
    #[arg(required = true)]
    pub message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Sends a test message on one channel now (past the outbox) and prints what it answered.
    Test {
        channel: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The delivery log, newest first: each message's state, attempts, last error and why it was
    /// sent.
    Log {
        #[command(flatten)]
        client: ClientOpts,
        /// Only messages that failed at least once or were given up.
        #[arg(long)]
        failed: bool,
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        #[arg(long, short = 'n')]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SilenceCmd {
    /// Silences a host, an issue or a matcher for a while (admin). Held-back incidents are sent
    /// when the silence ends if they are still open.
    Add {
        #[command(flatten)]
        client: ClientOpts,
        /// Everything about this host (a glob: `web*`).
        #[arg(long, group = "what")]
        host: Option<String>,
        /// The incident of this issue.
        #[arg(long, group = "what")]
        issue: Option<i64>,
        /// A matcher: `host=GLOB,group=GLOB,kind=GLOB` (any of the three), or a glob over the
        /// incident's group key (`issue:*`, `deploy:web1`).
        #[arg(long = "match", group = "what")]
        matcher: Option<String>,
        /// How long (`30m`, `2h`, `1d`).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why (kept with the silence and in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// The silences in force (with `--all`, ended ones too).
    List {
        #[command(flatten)]
        client: ClientOpts,
        #[arg(long)]
        all: bool,
    },
    /// Ends a silence now (admin).
    Remove {
        id: i64,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// The matcher of `silence add`'s choice.
pub fn matcher(host: Option<&str>, issue: Option<i64>, raw: Option<&str>) -> Result<String, String> {
    match (host, issue, raw) {
        (Some(h), None, None) => Ok(format!("host={h}")),
        (None, Some(i), None) => Ok(format!("group=issue:{i}")),
        (None, None, Some(m)) if m.contains('=') => Ok(m.to_owned()),
        (None, None, Some(m)) => Ok(format!("group={m}")),
        _ => Err("give one of --host, --issue or --match".to_owned()),
    }
}

fn read(client: &ClientOpts, query: NotifyQuery) -> Result<NotifyAnswer, super::Failure> {
    if client.db.is_some() {
        return Err(fail(EXIT_USAGE, anyhow::format_err!("notifications are read through the daemon (no --db)")));
    }
    Ok(write_client(client)?.call(NotifyRead { query })?)
}

fn write(client: &ClientOpts, change: NotifyChange) -> Result<NotifyAnswer, super::Failure> {
    Ok(write_client(client)?.call(NotifyWrite { change })?)
}

pub fn run(args: NotifyArgs) -> CmdResult {
    match args.cmd {
        Some(NotifyCmd::Test { channel, client }) => {
            let answer = write(&client, NotifyChange::Test { channel })?;
            print(&answer, client.json)
        }
        Some(NotifyCmd::Log { client, failed, channel, limit }) => {
            let answer = read(&client, NotifyQuery::Log { failed, channel, limit })?;
            print(&answer, client.json)
        }
        None => {
            let (Some(title), Some(message)) = (args.title, args.message) else {
                return Err(fail(EXIT_USAGE, anyhow::format_err!("give a TITLE and a MESSAGE")));
            };
            let change = NotifyChange::Send { title, message, priority: args.priority, channel: args.channel };
            print(&write(&args.client, change)?, args.client.json)
        }
    }
}

pub fn silence(cmd: SilenceCmd) -> CmdResult {
    match cmd {
        SilenceCmd::Add { client, host, issue, matcher: raw, duration, reason } => {
            let matcher = matcher(host.as_deref(), issue, raw.as_deref())
                .map_err(|e| fail(EXIT_USAGE, anyhow::format_err!(e)))?;
            let until = crate::now().plus(duration);
            print(&write(&client, NotifyChange::SilenceAdd { matcher, until, reason })?, client.json)
        }
        SilenceCmd::List { client, all } => print(&read(&client, NotifyQuery::Silences { all })?, client.json),
        SilenceCmd::Remove { id, client } => print(&write(&client, NotifyChange::SilenceRemove { id })?, client.json),
    }
}

fn print(answer: &NotifyAnswer, json: bool) -> CmdResult {
    if json {
        render::print_json(answer)?;
        return Ok(match answer {
            NotifyAnswer::Tested { delivered: false, .. } => EXIT_UNAVAILABLE,
            _ => 0,
        });
    }
    match answer {
        NotifyAnswer::Log { entries, pending } => {
            let entries = term::scrub(entries.clone())?;
            log_text(&entries, *pending);
        }
        NotifyAnswer::Silences { silences } => {
            let silences = term::scrub(silences.clone())?;
            silences_text(&silences);
        }
        NotifyAnswer::Queued { audit_id, channels } => {
            println!("queued (audit record {audit_id}) for {}", channels.join(", "));
        }
        NotifyAnswer::Tested { channel, delivered, answer } => {
            let answer = term::clean(answer);
            if *delivered {
                println!("{channel}: delivered ({answer})");
            } else {
                println!("{channel}: NOT delivered: {answer}");
                return Ok(EXIT_UNAVAILABLE);
            }
        }
        NotifyAnswer::SilenceAdded { id } => println!("silence {id} added"),
        NotifyAnswer::SilenceRemoved { id, existed: true } => println!("silence {id} removed"),
        NotifyAnswer::SilenceRemoved { id, existed: false } => println!("no silence {id}"),
    }
    Ok(0)
}

fn log_text(entries: &[NotifyLogEntry], pending: u64) {
    if entries.is_empty() {
        println!("no notifications ({pending} pending)");
        return;
    }
    for e in entries {
        let when = match (e.state.as_str(), e.sent_at) {
            ("sent", Some(at)) => format!("sent {at}"),
            ("failed", _) => format!("next attempt {}", e.next_attempt),
            _ => format!("created {}", e.created),
        };
        println!(
            "{:>5}  {:<7} {:<8} {:<8} {:<20} {}  [{} attempt(s), {when}]",
            e.id, e.state, e.channel, e.severity, e.kind, e.title, e.attempts
        );
        if !e.why.is_empty() {
            println!("       why: {}", e.why);
        }
        if let Some(err) = &e.last_error {
            println!("       last error: {err}");
        }
    }
    println!("{pending} pending");
}

fn silences_text(silences: &[SilenceView]) {
    if silences.is_empty() {
        println!("no silences");
        return;
    }
    for s in silences {
        let state = if s.active { "until" } else { "ended" };
        println!("{:>4}  {:<30} {state} {}  by {}: {}", s.id, s.matcher, s.until, s.created_by, s.reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_matchers() {
        assert_eq!(matcher(Some("web*"), None, None), Ok("host=web*".to_owned()));
        assert_eq!(matcher(None, Some(7), None), Ok("group=issue:7".to_owned()));
        assert_eq!(matcher(None, None, Some("deploy:*")), Ok("group=deploy:*".to_owned()));
        assert_eq!(
            matcher(None, None, Some("host=db*,kind=issue_opened")),
            Ok("host=db*,kind=issue_opened".to_owned())
        );
        assert!(matcher(None, None, None).is_err());
        for m in ["host=web*", "group=issue:7", "group=deploy:*"] {
            assert!(macha_notify::Matcher::parse(m).is_ok(), "{m}");
        }
    }
}
