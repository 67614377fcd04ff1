//! Logging: native journald fields when running under systemd, human-readable text on a terminal,
//! JSON lines otherwise. `MACHA_LOG` (or `RUST_LOG`) sets the filter.

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// How the CLI wants its logs: the daemon logs at info, one-shot commands only warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Daemon,
    Cli,
}

pub fn init(mode: Mode) {
    let default = match mode {
        Mode::Daemon => "info",
        Mode::Cli => "warn",
    };
    let filter = std::env::var("MACHA_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some() && mode == Mode::Daemon;
    let journald = under_systemd
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|l| l.with_syslog_identifier("macha".into()).with_field_prefix(Some("MACHA".into())));
    let use_journald = journald.is_some();
    let text = (!use_journald).then(|| {
        if mode == Mode::Daemon && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed()
        } else {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).boxed()
        }
    });
    let _ = tracing_subscriber::registry().with(filter).with(journald).with(text).try_init();
}
