//! The one daemon harness: the real `macha daemon` binary in a private directory (its state, its
//! socket, its configuration and its log), built with [`TestDaemon::builder`], and its CLI and
//! database as a person uses them.
//!
//! By default the daemon runs at the configuration's default autonomy with systemd, the journal
//! follower and the language model off, a one-hour check interval (cycles run when a test asks,
//! `macha check`, after the first one at start), a short executor timeout and verification delay;
//! `start` returns once the socket and the database exist.

use super::lab::Lab;
use macha_store::{AuditKind, AuditQuery, AuditRecord, Store};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What [`Builder::start`] waits for before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// The socket and the database exist.
    Socket,
    /// The first cycle is in the audit trail.
    FirstCycle,
    /// Nothing: the test watches the start itself.
    Nothing,
}

type Prepare = Box<dyn FnOnce(&Path)>;
type ConfigText = Box<dyn FnOnce(&Path) -> String>;

/// How to start a [`TestDaemon`].
pub struct Builder {
    autonomy: Option<String>,
    interval: String,
    top: String,
    tables: String,
    bus: Option<String>,
    llm: Option<String>,
    log: String,
    env: Vec<(OsString, OsString)>,
    ready: Ready,
    prepare: Option<Prepare>,
    config: Option<ConfigText>,
    binary: PathBuf,
}

impl Builder {
    /// The whole configuration file, written by `text` from the daemon's directory (its socket
    /// must be `<dir>/macha.sock` and its state `<dir>/state`), instead of the one the builder
    /// writes: for tests whose configuration is their subject (the fleet lab).
    pub fn config(mut self, text: impl FnOnce(&Path) -> String + 'static) -> Builder {
        self.config = Some(Box::new(text));
        self
    }

    /// `autonomy = "…"` (observe, suggest, auto-safe, auto-full); the configuration's default if
    /// not set.
    pub fn autonomy(mut self, autonomy: &str) -> Builder {
        self.autonomy = Some(autonomy.to_owned());
        self
    }

    /// `check_interval`, one hour unless set.
    pub fn interval(mut self, interval: &str) -> Builder {
        self.interval = interval.to_owned();
        self
    }

    /// TOML placed before the harness's own tables: top-level keys, and whole tables of their
    /// own (such as `[thresholds]` or `[tools]`).
    pub fn top(mut self, toml: &str) -> Builder {
        self.top.push_str(toml);
        self.top.push('\n');
        self
    }

    /// Whole tables placed after the harness's own (such as `[flap]`).
    pub fn tables(mut self, toml: &str) -> Builder {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }

    /// Systemd on the lab's bus (`tests/lab/systemd-user.sh up`).
    pub fn lab(self, lab: &Lab) -> Builder {
        self.bus(Some(&lab.address))
    }

    /// Systemd on the bus at `address`, or off (`None`, the default).
    pub fn bus(mut self, address: Option<&str>) -> Builder {
        self.bus = address.map(str::to_owned);
        self
    }

    /// The language model on, with these lines in `[llm]` (url, models, timeouts, …).
    pub fn llm(mut self, lines: &str) -> Builder {
        self.llm = Some(lines.to_owned());
        self
    }

    /// `MACHA_LOG` of the daemon (`warn` unless set); its log goes to `daemon.log` in its directory.
    pub fn log(mut self, level: &str) -> Builder {
        self.log = level.to_owned();
        self
    }

    /// An environment variable for the daemon process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Builder {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs `prepare` on the daemon's directory before it starts (the state directory is
    /// `state/` inside it; the database `state/macha.db`).
    pub fn prepare(mut self, prepare: impl FnOnce(&Path) + 'static) -> Builder {
        self.prepare = Some(Box::new(prepare));
        self
    }

    /// The `macha` binary to run as the daemon (another build, such as an older commit's, for a
    /// comparison); the one cargo builds unless set.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Builder {
        self.binary = path.into();
        self
    }

    /// `start` returns once the daemon's first cycle is in the audit trail.
    pub fn wait_for_first_cycle(mut self) -> Builder {
        self.ready = Ready::FirstCycle;
        self
    }

    /// `start` returns as soon as the process is spawned.
    pub fn no_wait(mut self) -> Builder {
        self.ready = Ready::Nothing;
        self
    }

    fn config_text(&self, dir: &Path) -> String {
        let mut text = String::new();
        if let Some(a) = &self.autonomy {
            text.push_str(&format!("autonomy = \"{a}\"\n"));
        }
        text.push_str(&format!("check_interval = \"{}\"\n", self.interval));
        text.push_str(&self.top);
        text.push_str(&format!(
            "[paths]\nstate_dir = \"{}\"\nsocket = \"{}\"\n",
            dir.join("state").display(),
            dir.join("macha.sock").display()
        ));
        match &self.bus {
            Some(address) => text.push_str(&format!("[systemd]\nbus = \"{address}\"\n")),
            None => text.push_str("[systemd]\nenable = false\n"),
        }
        text.push_str("[journal]\nenable = false\n[executor]\nverify_delay = \"1s\"\ntimeout = \"20s\"\n");
        if let Some(llm) = &self.llm {
            text.push_str(&format!("[llm]\nenable = true\n{llm}\n"));
        }
        text.push_str(&self.tables);
        text
    }

    /// Writes the configuration and starts the daemon.
    pub fn start(mut self) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        if let Some(prepare) = self.prepare.take() {
            prepare(dir.path());
        }
        let config = dir.path().join("macha.toml");
        let text = match self.config.take() {
            Some(text) => text(dir.path()),
            None => self.config_text(dir.path()),
        };
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        let mut d = TestDaemon { child: None, dir, log: self.log, env: self.env, binary: self.binary };
        d.spawn();
        match self.ready {
            Ready::Socket => {
                wait_for("the daemon's socket", Duration::from_secs(30), || d.socket().exists() && d.db().exists());
            }
            Ready::FirstCycle => {
                wait_for("the daemon's first cycle", Duration::from_secs(40), || !d.history().is_empty());
            }
            Ready::Nothing => {}
        }
        d
    }
}

/// A running `macha daemon`, stopped with SIGTERM when dropped (its log's tail is printed then if
/// the test failed).
pub struct TestDaemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log: String,
    env: Vec<(OsString, OsString)>,
    binary: PathBuf,
}

impl TestDaemon {
    pub fn builder() -> Builder {
        Builder {
            autonomy: None,
            interval: "1h".into(),
            top: String::new(),
            tables: String::new(),
            bus: None,
            llm: None,
            log: "warn".into(),
            env: Vec::new(),
            ready: Ready::Socket,
            prepare: None,
            config: None,
            binary: PathBuf::from(env!("CARGO_BIN_EXE_macha")),
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(&self.binary)
            .args(["daemon", "--config"])
            .arg(self.path("macha.toml"))
            .env("MACHA_LOG", &self.log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        self.child = Some(child);
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops the daemon with SIGTERM and returns how it exited.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("the daemon is not running"));
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        child.wait().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and starts it again on the same
    /// configuration and state.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// Starts the daemon again (after [`TestDaemon::stop`]) on the same configuration file, which
    /// the test may have changed meanwhile, and state; returns once it is spawned.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    pub fn socket(&self) -> PathBuf {
        self.path("macha.sock")
    }

    pub fn db(&self) -> PathBuf {
        self.path("state/macha.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the CLI under `argv0` (an applet name, e.g. `macha-ask`) against this daemon.
    pub fn cli_as(&self, argv0: &str, args: &[&str], stdin: &str) -> Output {
        let link = self.path(argv0);
        if !link.exists() {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_macha"), &link).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut child = Command::new(&link)
            .args(args)
            .env("MACHA_SOCKET", self.socket())
            .env("MACHA_LOG", "error")
            .env_remove("MACHA_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(mut s) = child.stdin.take() {
            use std::io::Write;
            let _ = s.write_all(stdin.as_bytes());
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as("macha", args, "")
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    pub fn store(&self) -> Store {
        Store::open_read_only(self.db()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The snapshot history rows, oldest first (one per host and cycle); none while the database
    /// does not exist yet.
    pub fn history(&self) -> Vec<macha_store::HistoryRecord> {
        match Store::open_read_only(self.db()) {
            Ok(s) => s.query_history(&macha_store::HistoryQuery::default()).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The audit records of `kind`; none while the database does not exist yet.
    pub fn audit(&self, kind: AuditKind) -> Vec<AuditRecord> {
        match Store::open_read_only(self.db()) {
            Ok(s) => s.query_audit(&AuditQuery { kinds: vec![kind], ..AuditQuery::default() }).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Every prompt recorded, as text.
    pub fn prompt_log(&self) -> String {
        let prompts = self.store().prompts(None, 10_000).unwrap_or_default();
        serde_json::to_string(&prompts).unwrap_or_default()
    }

    /// The agent request `id` once it finished.
    pub fn finished_request(&self, id: i64, timeout: Duration) -> macha_store::AgentRequestRecord {
        let mut rec = None;
        wait_for(&format!("agent request {id} to finish"), timeout, || {
            rec = self
                .store()
                .get_agent_request(id)
                .ok()
                .flatten()
                .filter(|r| r.state == "succeeded" || r.state == "failed");
            rec.is_some()
        });
        rec.unwrap_or_else(|| panic!("request {id}"))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- daemon log (last lines, newest first):\n{}", tail.join("\n"));
        }
    }
}

/// A program that prints `file` (a stand-in for journalctl in tests; Macha spawns it directly).
pub fn fake_journalctl(dir: &Path, file: &Path) -> PathBuf {
    let p = dir.join("journalctl");
    std::fs::write(&p, format!("#!/bin/sh\nexec cat {}\n", file.display())).unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("{e}"));
    p
}
