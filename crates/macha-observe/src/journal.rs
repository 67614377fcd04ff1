//! The journal follower: a supervised `journalctl --output=json --follow` child whose lines become
//! [`JournalEvent`]s on a tokio channel.
//!
//! Why a child process: D-Bus has no journal API, and `journalctl` always matches the installed
//! systemd (compression, journal namespaces, file rotation). It is spawned with argv only, never
//! through a shell, and killed when the follower goes away.
//!
//! Supervision: when the child exits (or cannot be started), the follower reports
//! [`JournalEvent::Unavailable`] with the reason, waits (exponential backoff, capped) and starts it
//! again, resuming after the last cursor it delivered (`--after-cursor`), so nothing is reported
//! twice. Without a cursor it starts from `--since=-<window>`. [`JournalFollower::last_cursor`] is
//! what the daemon persists to resume across restarts.
//!
//! Data is not instructions: journal text comes from anything running on the host. Every line is
//! read with a size cap (longer lines are skipped without being buffered) and parsed defensively by
//! [`macha_parse::journal::parse_entry`]. A line that cannot be used is skipped and counted by
//! reason ([`JournalStats`]); it never stops the follower.

use macha_core::journal::sanitize;
use macha_parse::journal::parse_entry;
/// The entry and the skip reasons are [`macha_parse::journal`]'s; they are part of this module's
/// events and counters.
pub use macha_parse::journal::{JournalEntry, SkipReason};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Longest line read from journalctl; the rest of a longer line is skipped.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
/// How much of the child's stderr is kept for the `Unavailable` reason.
const STDERR_LINES: usize = 8;
/// A child that ran this long or delivered an entry resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long journalctl must run without exiting before the follower reports [`JournalEvent::Following`].
pub const FOLLOWING_AFTER: Duration = Duration::from_secs(2);
/// The fields requested from journalctl (`__CURSOR` and `__REALTIME_TIMESTAMP` always come).
const OUTPUT_FIELDS: &str = "MESSAGE,PRIORITY,_SYSTEMD_UNIT,UNIT,SYSLOG_IDENTIFIER,_HOSTNAME";

/// What to follow and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The journalctl to run: an absolute path from the configuration, or a bare name looked up
    /// in `PATH`.
    pub journalctl: PathBuf,
    /// Read the journal files in this directory (`--directory`), e.g. those journal-remote
    /// writes, instead of the system journal.
    pub directory: Option<PathBuf>,
    /// Highest priority followed: 3 (`err`) follows 0-3 (emerg, alert, crit, err).
    pub max_priority: u8,
    /// Without a cursor, start this far back (`--since=-<secs>s`).
    pub since: Duration,
    /// Resume after this cursor (`--after-cursor`), as persisted from [`JournalFollower::last_cursor`].
    pub cursor: Option<String>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_line_bytes: usize,
    pub channel_capacity: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            journalctl: PathBuf::from("journalctl"),
            directory: None,
            max_priority: 3,
            since: Duration::from_secs(3600),
            cursor: None,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            channel_capacity: 1024,
        }
    }
}

impl JournalConfig {
    /// The arguments journalctl is started with, resuming after `cursor` if there is one.
    pub fn args(&self, cursor: Option<&str>) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--output=json".into(),
            "--follow".into(),
            "--no-pager".into(),
            // --follow alone starts with the last 10 lines; the cursor or --since decides instead.
            "--no-tail".into(),
            format!("--priority={}", self.max_priority.min(7)).into(),
            format!("--output-fields={OUTPUT_FIELDS}").into(),
        ];
        if let Some(dir) = &self.directory {
            let mut a = OsString::from("--directory=");
            a.push(dir.as_os_str());
            args.push(a);
        }
        match cursor {
            Some(c) => args.push(format!("--after-cursor={c}").into()),
            None => args.push(format!("--since=-{}s", self.since.as_secs().max(1)).into()),
        }
        args
    }
}

/// What the follower sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEvent {
    /// journalctl has been running for [`FOLLOWING_AFTER`] without exiting: the journal is being
    /// followed (even if no entry matched yet). Sent once per run of journalctl.
    Following,
    Entry(JournalEntry),
    /// journalctl could not be started or exited; it will be started again after a backoff.
    Unavailable(String),
}

/// Counters of what the follower did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub entries: u64,
    /// Times journalctl was started.
    pub starts: u64,
    pub oversized: u64,
    pub invalid_json: u64,
    pub bad_cursor: u64,
    pub bad_timestamp: u64,
    pub bad_priority: u64,
    pub above_priority: u64,
}

impl JournalStats {
    fn count(&mut self, reason: SkipReason) {
        let c = match reason {
            SkipReason::Oversized => &mut self.oversized,
            SkipReason::InvalidJson => &mut self.invalid_json,
            SkipReason::BadCursor => &mut self.bad_cursor,
            SkipReason::BadTimestamp => &mut self.bad_timestamp,
            SkipReason::BadPriority => &mut self.bad_priority,
            SkipReason::AbovePriority => &mut self.above_priority,
        };
        *c += 1;
    }

    /// Lines skipped for any reason.
    pub fn skipped(&self) -> u64 {
        self.oversized
            + self.invalid_json
            + self.bad_cursor
            + self.bad_timestamp
            + self.bad_priority
            + self.above_priority
    }
}

#[derive(Debug, Default)]
struct Shared {
    cursor: Option<String>,
    stats: JournalStats,
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running follower. Dropping it stops the task and kills journalctl.
#[derive(Debug)]
pub struct JournalFollower {
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl JournalFollower {
    /// Starts following on the current tokio runtime. The task ends (and journalctl is killed)
    /// when the receiver is dropped or the follower is.
    pub fn spawn(config: JournalConfig) -> (JournalFollower, mpsc::Receiver<JournalEvent>) {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let shared = Arc::new(Mutex::new(Shared { cursor: config.cursor.clone(), stats: JournalStats::default() }));
        let task = tokio::spawn(supervise(config, tx, Arc::clone(&shared)));
        (JournalFollower { shared, task }, rx)
    }

    /// The cursor of the last entry delivered (or the configured one before any): persist it and
    /// pass it back as [`JournalConfig::cursor`] to resume without gaps or duplicates.
    pub fn last_cursor(&self) -> Option<String> {
        lock(&self.shared).cursor.clone()
    }

    pub fn stats(&self) -> JournalStats {
        lock(&self.shared).stats.clone()
    }
}

impl Drop for JournalFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The supervision loop: run journalctl, read it, report its end, back off, run it again.
async fn supervise(config: JournalConfig, tx: mpsc::Sender<JournalEvent>, shared: Arc<Mutex<Shared>>) {
    let mut backoff = config.backoff_initial;
    loop {
        if tx.is_closed() {
            return;
        }
        let started = tokio::time::Instant::now();
        let (delivered, reason) = match run_once(&config, &tx, &shared).await {
            Ok(Some(run)) => run,
            // The receiver is gone: nobody is listening any more.
            Ok(None) => return,
            Err(reason) => (0, reason),
        };
        if delivered > 0 || started.elapsed() >= HEALTHY_RUN {
            backoff = config.backoff_initial;
        }
        warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "journal unavailable");
        if tx.send(JournalEvent::Unavailable(reason)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.backoff_max).max(config.backoff_initial);
    }
}

/// Checks that the journal has at least one entry (of any priority): a journal with none means no
/// journal files are there (journald is not running, or the directory is empty), and reading it
/// would silently report nothing. `Err` says why.
pub async fn probe(config: &JournalConfig) -> Result<(), String> {
    let program = config.journalctl.display().to_string();
    let mut cmd = Command::new(&config.journalctl);
    cmd.args(["--lines=1", "--output=json", "--no-pager", "--output-fields=MESSAGE"])
        .env_clear()
        .envs(macha_core::command::SPAWN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &config.directory {
        let mut a = OsString::from("--directory=");
        a.push(dir.as_os_str());
        cmd.arg(a);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .map_err(|_| format!("{program} did not answer within 20 s"))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program} not found: {e}"),
            _ => format!("cannot start {program}: {e}"),
        })?;
    let stderr = sanitize(&String::from_utf8_lossy(&out.stderr), 300);
    if !out.status.success() {
        return Err(format!("{program} failed ({}): {stderr}", out.status));
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        let place = match &config.directory {
            Some(d) => format!("in {}", d.display()),
            None => "on this host (is journald running?)".to_owned(),
        };
        return Err(format!("no journal entries {place}"));
    }
    Ok(())
}

/// One run of journalctl. `Ok(Some((entries delivered, why it ended)))`, `Ok(None)` when the
/// receiver went away, `Err(reason)` when it could not be started.
async fn run_once(
    config: &JournalConfig,
    tx: &mpsc::Sender<JournalEvent>,
    shared: &Mutex<Shared>,
) -> Result<Option<(u64, String)>, String> {
    // `journalctl --follow` on a machine without journal files runs forever and prints nothing,
    // which would look exactly like "no errors". Make sure there is a journal first.
    probe(config).await?;
    let cursor = lock(shared).cursor.clone();
    let args = config.args(cursor.as_deref());
    let program = config.journalctl.display().to_string();
    let mut child = Command::new(&config.journalctl)
        .args(&args)
        .env_clear()
        .envs(macha_core::command::SPAWN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program} not found: {e}"),
            _ => format!("cannot start {program}: {e}"),
        })?;
    lock(shared).stats.starts += 1;
    info!(pid = child.id(), resume = cursor.is_some(), "journalctl started");
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("{program}: no pipes to the child"));
    };
    let stderr_task = tokio::spawn(stderr_tail(BufReader::new(stderr)));
    // Reports `Following` once journalctl has stayed up for a while; `ended` (set under the same
    // lock before this run's end is reported) keeps it from arriving after `Unavailable`.
    let ended = Arc::new(Mutex::new(false));
    let following = {
        let (ended, tx) = (Arc::clone(&ended), tx.clone());
        tokio::spawn(async move {
            tokio::time::sleep(FOLLOWING_AFTER).await;
            let ended = lock(&ended);
            if !*ended {
                let _ = tx.try_send(JournalEvent::Following);
            }
        })
    };
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut delivered = 0u64;
    let end = loop {
        match read_capped_line(&mut reader, &mut buf, config.max_line_bytes).await {
            Ok(None) => break None,
            Ok(Some(LineRead::Oversized(n))) => {
                debug!(bytes = n, "skipped an oversized journal line");
                lock(shared).stats.count(SkipReason::Oversized);
            }
            Ok(Some(LineRead::Line)) => match parse_entry(&buf, config.max_priority) {
                Ok(entry) => {
                    let cursor = entry.cursor.clone();
                    if tx.send(JournalEvent::Entry(entry)).await.is_err() {
                        return Ok(None);
                    }
                    delivered += 1;
                    let mut s = lock(shared);
                    s.cursor = Some(cursor);
                    s.stats.entries += 1;
                }
                Err(reason) => {
                    debug!(reason = reason.as_str(), "skipped a journal line");
                    lock(shared).stats.count(reason);
                }
            },
            Err(e) => break Some(format!("reading {program}: {e}")),
        }
    };
    let status = child.wait().await;
    *lock(&ended) = true;
    following.abort();
    let tail = stderr_task.await.unwrap_or_default();
    let mut reason = match (end, status) {
        (Some(read_error), _) => read_error,
        (None, Ok(status)) => format!("{program} exited ({status})"),
        (None, Err(e)) => format!("{program}: {e}"),
    };
    if !tail.is_empty() {
        reason.push_str(": ");
        reason.push_str(&tail);
    }
    // A cursor journalctl cannot seek to (a vacuumed or foreign journal) would fail every restart:
    // fall back to --since.
    if cursor.is_some() && delivered == 0 && tail.contains("cursor") {
        lock(shared).cursor = None;
        reason.push_str(" (resuming from --since instead of the stored cursor)");
    }
    Ok(Some((delivered, reason)))
}

/// The last few lines of the child's stderr, sanitised, joined with `; `.
async fn stderr_tail<R: AsyncBufRead + Unpin>(mut reader: R) -> String {
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut buf = Vec::new();
    while let Ok(Some(read)) = read_capped_line(&mut reader, &mut buf, 1024).await {
        if let LineRead::Line = read {
            let line = sanitize(&String::from_utf8_lossy(&buf), 300);
            if !line.is_empty() {
                lines.push_back(line);
            }
            if lines.len() > STDERR_LINES {
                lines.pop_front();
            }
        }
    }
    lines.into_iter().collect::<Vec<_>>().join("; ")
}

/// What [`read_capped_line`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// A line (without its newline) is in the buffer. The last line may lack a newline.
    Line,
    /// A line longer than the cap, of this many bytes, was skipped; the buffer is empty.
    Oversized(usize),
}

/// Reads one line into `buf` (cleared first), keeping at most `max` bytes of it in memory: a
/// longer line is consumed to its end and reported as [`LineRead::Oversized`]. `Ok(None)` at the
/// end of input.
pub async fn read_capped_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<LineRead>> {
    buf.clear();
    let mut total = 0usize;
    let mut oversized = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (total, oversized) {
                (0, _) => None,
                (n, true) => Some(LineRead::Oversized(n)),
                (_, false) => Some(LineRead::Line),
            });
        }
        let (part, done) = match memchr_newline(chunk) {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        total = total.saturating_add(part.len());
        if !oversized {
            if buf.len() + part.len() > max {
                oversized = true;
                buf.clear();
                buf.shrink_to(max.min(64 * 1024));
            } else {
                buf.extend_from_slice(part);
            }
        }
        let found_newline = done > part.len();
        reader.consume(done);
        if found_newline {
            return Ok(Some(if oversized { LineRead::Oversized(total) } else { LineRead::Line }));
        }
    }
}

fn memchr_newline(s: &[u8]) -> Option<usize> {
    s.iter().position(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "s=2d87a39ef1b24ab3b6ef31bd1e9928c7;i=1;b=0123;m=3e8;t=660cee9d5f54c;x=890b3c91d46f6221";

    async fn lines(input: &[u8], max: usize) -> Vec<Result<String, usize>> {
        let mut reader = BufReader::with_capacity(7, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Ok(Some(r)) = read_capped_line(&mut reader, &mut buf, max).await {
            out.push(match r {
                LineRead::Line => Ok(String::from_utf8_lossy(&buf).into_owned()),
                LineRead::Oversized(n) => Err(n),
            });
        }
        out
    }

    #[tokio::test]
    async fn lines_are_capped() {
        let out = lines(b"short\nexactly10!\n0123456789A\n\nlast", 10).await;
        assert_eq!(out, [Ok("short".into()), Ok("exactly10!".into()), Err(11), Ok(String::new()), Ok("last".into())]);
        assert!(lines(b"", 10).await.is_empty());
    }

    #[tokio::test]
    async fn a_ten_megabyte_line_is_skipped_in_bounded_memory() {
        let mut input = Vec::with_capacity(11 << 20);
        input.extend_from_slice(b"{\"a\":1}\n");
        input.extend(std::iter::repeat_n(b'x', 10 << 20));
        input.extend_from_slice(b"\nafter\n");
        let mut reader = BufReader::new(input.as_slice());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Ok(Some(r)) = read_capped_line(&mut reader, &mut buf, DEFAULT_MAX_LINE_BYTES).await {
            assert!(buf.capacity() <= 2 * DEFAULT_MAX_LINE_BYTES, "buffer grew to {}", buf.capacity());
            got.push((r, buf.len()));
        }
        assert_eq!(got, [(LineRead::Line, 7), (LineRead::Oversized(10 << 20), 0), (LineRead::Line, 5)]);
    }

    #[test]
    fn arguments() {
        let mut c = JournalConfig { directory: Some("/var/log/journal/remote".into()), ..JournalConfig::default() };
        let s = |v: Vec<OsString>| v.into_iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>();
        let fresh = s(c.args(None));
        assert_eq!(
            fresh,
            [
                "--output=json",
                "--follow",
                "--no-pager",
                "--no-tail",
                "--priority=3",
                "--output-fields=MESSAGE,PRIORITY,_SYSTEMD_UNIT,UNIT,SYSLOG_IDENTIFIER,_HOSTNAME",
                "--directory=/var/log/journal/remote",
                "--since=-3600s",
            ]
        );
        c.directory = None;
        c.max_priority = 200;
        let resumed = s(c.args(Some(C)));
        assert_eq!(resumed.last().map(String::as_str), Some(format!("--after-cursor={C}").as_str()));
        assert!(resumed.contains(&"--priority=7".to_owned()));
        assert!(!resumed.iter().any(|a| a.starts_with("--since") || a.starts_with("--directory")));
    }
}
