//! The real `macha daemon` binary with the language model enabled, systemd and the journal
//! follower off, a private state directory and socket; its CLI and database as a person uses them.

use macha_store::{AuditKind, AuditQuery, AuditRecord, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Daemon {
    /// Starts a daemon whose `[llm]` section is `llm` (TOML lines) and whose top-level settings
    /// are `top`. The check interval is an hour: cycles run when a test asks (`macha check`).
    pub fn start(top: &str, llm: &str) -> Daemon {
        Daemon::start_with("enable = false", top, llm)
    }

    /// [`Daemon::start`] with the `[systemd]` section given (the lab's bus).
    pub fn start_with(systemd: &str, top: &str, llm: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("macha.toml");
        std::fs::write(
            &config,
            format!(
                "check_interval = \"1h\"\n{top}\n[paths]\nstate_dir = \"{}\"\nsocket = \"{}\"\n[systemd]\n{systemd}\n[journal]\nenable = false\n[executor]\nverify_delay = \"1s\"\ntimeout = \"20s\"\n[llm]\nenable = true\n{llm}\n",
                dir.path().join("state").display(),
                dir.path().join("macha.sock").display(),
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_macha"))
            .args(["daemon", "--config"])
            .arg(&config)
            .env("MACHA_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let d = Daemon { child, dir };
        wait_for("the daemon's socket", Duration::from_secs(30), || d.socket().exists() && d.db().exists());
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("macha.sock")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("state/macha.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the CLI under `argv0` (an applet name, e.g. `macha-ask`) against this daemon.
    pub fn cli_as(&self, argv0: &str, args: &[&str], stdin: &str) -> Output {
        let link = self.dir.path().join(argv0);
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

    /// The snapshot history rows, oldest first (one per host and cycle).
    pub fn history(&self) -> Vec<macha_store::HistoryRecord> {
        self.store().query_history(&macha_store::HistoryQuery::default()).unwrap_or_default()
    }

    pub fn audit(&self, kind: AuditKind) -> Vec<AuditRecord> {
        self.store().query_audit(&AuditQuery { kinds: vec![kind], ..AuditQuery::default() }).unwrap_or_default()
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

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
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
