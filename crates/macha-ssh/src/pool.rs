//! The session pool: one multiplexed master connection per host, reused across cycles, and every
//! remote command and file read of Macha going through it.
//!
//! Masters are started by Macha itself (`ssh -M -f -N`, the absolute `ssh` path, a cleared
//! environment, `-F /dev/null` so no user or system `ssh_config` applies) with strict host keys
//! against Macha's known_hosts and the registry name as `HostKeyAlias`; commands then go over the
//! master's control socket with the OpenSSH mux protocol (`openssh` native mux: no process per
//! command). At most `max_sessions` channels are open per host at once (sshd's `MaxSessions` is
//! 10 by default). Every command runs under `timeout -k` on the remote side and under a slightly
//! longer local deadline, so a hung command is killed on the host before Macha stops waiting.

use crate::error::{SshError, classify_connect_failure};
use crate::remote::{Ending, REMOTE_TOOLS, RemoteCommand, RemoteTools, SEARCH_DIRS, Target, ending};
use macha_core::HostName;
use openssh::Session;
use openssh_sftp_client::{Sftp, SftpOptions};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;

/// How the pool connects. [`SshSettings::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshSettings {
    /// Absolute path of the OpenSSH client.
    pub ssh: PathBuf,
    /// The login user unless a target names another.
    pub user: String,
    /// The private key (only this key is offered: `IdentitiesOnly`, no agent).
    pub key: PathBuf,
    /// Macha's known_hosts (the only one consulted).
    pub known_hosts: PathBuf,
    /// Where control sockets live. Keep it short: a socket path has at most 107 bytes.
    pub control_dir: PathBuf,
    /// `ConnectTimeout`; the whole connection attempt is given this plus 5 s.
    pub connect_timeout: Duration,
    /// The default time limit of a command.
    pub command_timeout: Duration,
    /// `timeout -k`: how long after SIGTERM the remote side sends SIGKILL.
    pub kill_after: Duration,
    pub server_alive_interval: Duration,
    pub server_alive_count_max: u32,
    /// Channels open at once per host.
    pub max_sessions: usize,
    /// `ControlPersist`: an idle master exits after this long (a safety net for masters a crashed
    /// daemon left behind; the pool itself closes its masters).
    pub persist: Duration,
    /// The most standard output kept of one command whose own cap is not set
    /// (`RemoteCommand::output_max`; the observation commands all set theirs).
    pub output_max: usize,
}

impl SshSettings {
    pub fn new(ssh: PathBuf, user: &str, key: PathBuf, known_hosts: PathBuf, control_dir: PathBuf) -> SshSettings {
        SshSettings {
            ssh,
            user: user.to_owned(),
            key,
            known_hosts,
            control_dir,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            kill_after: Duration::from_secs(5),
            server_alive_interval: Duration::from_secs(15),
            server_alive_count_max: 3,
            max_sessions: 8,
            persist: Duration::from_secs(600),
            output_max: 1024 * 1024,
        }
    }

    /// The `ssh` arguments of a master for `target`, in order (the destination last, after `--`).
    pub fn master_args(&self, target: &Target, ctl: &Path, log: &Path) -> Vec<String> {
        let secs = |d: Duration| d.as_secs().max(1).to_string();
        let mut a: Vec<String> = vec![
            "-E".into(),
            log.display().to_string(),
            "-S".into(),
            ctl.display().to_string(),
            "-M".into(),
            "-f".into(),
            "-N".into(),
            "-F".into(),
            "/dev/null".into(),
        ];
        let options = [
            format!("ControlPersist={}", secs(self.persist)),
            "BatchMode=yes".into(),
            "StrictHostKeyChecking=yes".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            format!("HostKeyAlias={}", target.name),
            "CheckHostIP=no".into(),
            "UpdateHostKeys=no".into(),
            "HashKnownHosts=no".into(),
            format!("ConnectTimeout={}", secs(self.connect_timeout)),
            format!("ServerAliveInterval={}", secs(self.server_alive_interval)),
            format!("ServerAliveCountMax={}", self.server_alive_count_max.max(1)),
            "IdentitiesOnly=yes".into(),
            format!("IdentityFile={}", self.key.display()),
            "IdentityAgent=none".into(),
            "PasswordAuthentication=no".into(),
            "KbdInteractiveAuthentication=no".into(),
            "ForwardAgent=no".into(),
            "ForwardX11=no".into(),
            "ClearAllForwardings=yes".into(),
            "RequestTTY=no".into(),
            "LogLevel=ERROR".into(),
        ];
        for o in options {
            a.push("-o".into());
            a.push(o);
        }
        a.extend([
            "-p".into(),
            target.port.to_string(),
            "-l".into(),
            target.user.clone().unwrap_or_else(|| self.user.clone()),
        ]);
        a.push("--".into());
        a.push(target.address.clone());
        a
    }
}

/// How Nix reaches a host for `nix copy` (see [`SshPool::nix_transport`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixTransport {
    /// `ssh-ng://user@address`.
    pub uri: String,
    /// `NIX_SSHOPTS`.
    pub sshopts: String,
    /// The directory of the `ssh` Macha uses, to put first in Nix's `PATH`.
    pub ssh_dir: PathBuf,
}

impl SshSettings {
    /// The transport for `target` through the master whose control socket is `ctl`.
    pub fn nix_transport(&self, target: &Target, ctl: &Path) -> Result<NixTransport, SshError> {
        let log = Path::new("/dev/null");
        let mut opts: Vec<String> = Vec::new();
        let args = self.master_args(target, ctl, log);
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            match a.as_str() {
                // The master's own switches: a client neither logs there nor becomes a master.
                "-E" | "-S" | "-F" => {
                    it.next();
                }
                "-M" | "-f" | "-N" => {}
                "--" => break,
                "-l" => {
                    it.next();
                }
                _ => opts.push(a.clone()),
            }
        }
        opts.extend(["-o".into(), format!("ControlPath={}", ctl.display()), "-o".into(), "ControlMaster=no".into()]);
        if let Some(bad) = opts.iter().find(|o| o.chars().any(char::is_whitespace)) {
            return Err(SshError::Invalid(format!("{bad:?} holds whitespace, which NIX_SSHOPTS cannot carry")));
        }
        let user = target.user.clone().unwrap_or_else(|| self.user.clone());
        let ssh_dir = self.ssh.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/usr/bin"));
        Ok(NixTransport { uri: format!("ssh-ng://{user}@{}", target.address), sshopts: opts.join(" "), ssh_dir })
    }
}

/// What one remote command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteOutput {
    /// The exit code; `None` when the process was killed by a signal.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Standard output beyond the command's cap was discarded.
    pub truncated: bool,
    #[serde(serialize_with = "ser_millis")]
    pub elapsed: Duration,
}

fn ser_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RemoteOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr, trimmed and cut to one readable line, for reasons.
    pub fn stderr_line(&self) -> String {
        let t: String = String::from_utf8_lossy(&self.stderr)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        t.chars().filter(|c| !c.is_control()).take(300).collect()
    }
}

/// A live master connection.
#[derive(Debug)]
struct Conn {
    session: Arc<Session>,
    dir: PathBuf,
    ctl: PathBuf,
    master_pid: Option<u32>,
    target: Target,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = openssh_mux_client::shutdown_mux_master(&self.ctl);
        if let Some(pid) = self.master_pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Per-host state.
#[derive(Debug)]
struct Slot {
    sessions: Arc<Semaphore>,
    conn: tokio::sync::Mutex<Option<(Arc<Conn>, RemoteTools)>>,
    connects: AtomicU64,
}

/// Connection counts, for status output and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Master connections opened since the pool started.
    pub connects: u64,
    /// Hosts with a master right now.
    pub connected: usize,
    pub per_host: BTreeMap<String, u64>,
}

/// The pool. Cheap to share (`Arc<SshPool>`); every method takes `&self`.
#[derive(Debug)]
pub struct SshPool {
    settings: SshSettings,
    slots: Mutex<HashMap<HostName, Arc<Slot>>>,
    counter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SshPool {
    /// Creates the control directory (mode 0700). Nothing connects until a command needs it.
    pub fn new(settings: SshSettings) -> Result<SshPool, SshError> {
        use std::os::unix::fs::PermissionsExt;
        if !settings.ssh.is_absolute() {
            return Err(SshError::Invalid(format!("ssh program {} is not an absolute path", settings.ssh.display())));
        }
        crate::remote::valid_user(&settings.user)?;
        // `ssh -o Option=VALUE` splits values at whitespace (UserKnownHostsFile takes a list).
        for (what, p) in [("ssh.key", &settings.key), ("ssh.known_hosts", &settings.known_hosts)] {
            if p.to_string_lossy().chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(SshError::Invalid(format!(
                    "{what} {} contains whitespace, which ssh cannot take",
                    p.display()
                )));
            }
        }
        let dir = &settings.control_dir;
        // Room for "<dir>/<pid>-<n>/s" within sun_path.
        if dir.as_os_str().len() > 80 {
            return Err(SshError::Invalid(format!(
                "control directory {} is too long for a socket path",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| SshError::local(format!("creating {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| SshError::local(format!("chmod {}", dir.display()), e))?;
        Ok(SshPool { settings, slots: Mutex::new(HashMap::new()), counter: AtomicU64::new(0) })
    }

    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    fn slot(&self, name: &HostName) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        Arc::clone(slots.entry(name.clone()).or_insert_with(|| {
            Arc::new(Slot {
                sessions: Arc::new(Semaphore::new(self.settings.max_sessions.max(1))),
                conn: tokio::sync::Mutex::new(None),
                connects: AtomicU64::new(0),
            })
        }))
    }

    /// Starts a master for `target` and waits until it is authenticated (or refused).
    async fn connect(&self, target: &Target) -> Result<Conn, SshError> {
        target.validate()?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self.settings.control_dir.join(format!("{:x}-{n:x}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| SshError::local(format!("creating {}", dir.display()), e))?;
        let (ctl, log) = (dir.join("s"), dir.join("log"));
        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(&self.settings.ssh);
        cmd.args(self.settings.master_args(target, &ctl, &log))
            .env_clear()
            .envs(macha_core::command::SPAWN_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let limit = self.settings.connect_timeout + Duration::from_secs(5);
        let fail = |e: SshError| {
            let _ = std::fs::remove_dir_all(&dir);
            e
        };
        let status = match tokio::time::timeout(limit, cmd.status()).await {
            Err(_) => {
                return Err(fail(SshError::ConnectTimeout {
                    host: target.name.to_string(),
                    after: limit,
                    detail: "ssh did not finish connecting".into(),
                }));
            }
            Ok(Err(e)) => return Err(fail(SshError::local(format!("starting {}", self.settings.ssh.display()), e))),
            Ok(Ok(s)) => s,
        };
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(fail(classify_connect_failure(target.name.as_str(), &text, started.elapsed())));
        }
        let master_pid = match openssh_mux_client::Connection::connect(&ctl).await {
            Ok(mut c) => c.send_alive_check().await.ok().map(|p| p.get()),
            Err(_) => None,
        };
        let session = Session::resume_mux(ctl.clone().into_boxed_path(), Some(log.into_boxed_path()));
        tracing::debug!(host = %target.name, ms = started.elapsed().as_millis() as u64, "ssh master connected");
        Ok(Conn { session: Arc::new(session), dir, ctl, master_pid, target: target.clone() })
    }

    /// The live connection to `target` and its tools, connecting (and resolving the tools) if
    /// needed. A master that died or a target that changed address is replaced.
    async fn ensure(&self, target: &Target, slot: &Slot) -> Result<(Arc<Conn>, RemoteTools), SshError> {
        let mut guard = slot.conn.lock().await;
        if let Some((conn, tools)) = guard.as_ref() {
            if conn.target == *target && conn.session.check().await.is_ok() {
                return Ok((Arc::clone(conn), tools.clone()));
            }
            tracing::info!(host = %target.name, "ssh master gone or target changed; reconnecting");
            *guard = None;
        }
        let conn = Arc::new(self.connect(target).await?);
        slot.connects.fetch_add(1, Ordering::Relaxed);
        let tools = {
            let _permit = slot.sessions.acquire().await.map_err(|e| SshError::local("session limit", e))?;
            resolve_tools(&conn, &target.name).await?
        };
        *guard = Some((Arc::clone(&conn), tools.clone()));
        Ok((conn, tools))
    }

    /// Makes sure a master to `target` is up (connecting if needed).
    pub async fn connect_host(&self, target: &Target) -> Result<RemoteTools, SshError> {
        let slot = self.slot(&target.name);
        self.ensure(target, &slot).await.map(|(_, t)| t)
    }

    /// The programs found on `target` (connecting if needed).
    pub async fn tools(&self, target: &Target) -> Result<RemoteTools, SshError> {
        self.connect_host(target).await
    }

    /// Runs `cmd` on `target`. Waits for a free session slot (at most `max_sessions` per host),
    /// connects if needed, and gives up locally `kill_after + 2 s` after the command's own limit
    /// (by when the remote `timeout` has killed it). A timed-out command is `CommandTimeout`.
    /// Standard output is kept up to the command's cap (`RemoteCommand::output_max`, else the
    /// pool's `output_max`); the rest is read and discarded (`truncated`).
    pub async fn run(&self, target: &Target, cmd: &RemoteCommand) -> Result<RemoteOutput, SshError> {
        let max = cmd.output_cap().unwrap_or(self.settings.output_max);
        let mut kept: Vec<u8> = Vec::new();
        let mut truncated = false;
        let result = {
            let mut sink = |chunk: &[u8]| {
                let room = max.saturating_sub(kept.len());
                truncated |= chunk.len() > room;
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            };
            self.run_streaming(target, cmd, &mut sink).await
        };
        let mut out = result?;
        out.stdout = kept;
        out.truncated |= truncated;
        Ok(out)
    }

    /// Runs `cmd` on `target` like [`SshPool::run`], handing its standard output to `sink` chunk
    /// by chunk as it arrives instead of keeping it: a parser that reads line by line holds only
    /// what it needs, whatever the size of the output. The returned output has no `stdout`.
    pub async fn run_streaming(
        &self,
        target: &Target,
        cmd: &RemoteCommand,
        sink: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<RemoteOutput, SshError> {
        // A privileged command (`sudo -n`) runs only on a host its permit names; anywhere else
        // nothing is sent.
        if !cmd.may_run_on(&target.name) {
            return Err(SshError::Invalid(format!(
                "{} is permitted on other hosts than {}; nothing was sent",
                cmd.display(),
                target.name
            )));
        }
        let slot = self.slot(&target.name);
        let (conn, tools) = self.ensure(target, &slot).await?;
        let line = cmd.line(&tools, self.settings.kill_after)?;
        let _permit = slot.sessions.acquire().await.map_err(|e| SshError::local("session limit", e))?;
        let started = Instant::now();
        let deadline = cmd.timeout() + self.settings.kill_after + Duration::from_secs(2);
        let timed_out =
            || SshError::CommandTimeout { host: target.name.to_string(), command: cmd.display(), after: cmd.timeout() };
        // A channel refused at open (sshd still counting a session that is just closing, or
        // another client's channels) never started the command: open again, briefly.
        let attempts = async {
            let mut attempt = 0u32;
            loop {
                match exec(&conn, &line, &mut *sink).await {
                    Err(ExecError::Open(e)) if attempt < 8 && conn.session.check().await.is_ok() => {
                        attempt += 1;
                        tracing::debug!(host = %target.name, attempt, "channel refused ({e}); opening again");
                        tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
                    }
                    other => return other,
                }
            }
        };
        let result = tokio::time::timeout(deadline, attempts).await;
        match result {
            Err(_) => {
                // The remote `timeout` should have ended it by now: the connection is not
                // delivering (a host that froze, a link that went dark). Drop it; the next call
                // reconnects, bounded by ConnectTimeout, instead of waiting on it again.
                self.drop_conn(&slot, &conn).await;
                Err(timed_out())
            }
            Ok(Err(ExecError::Ssh(e) | ExecError::Open(e))) => {
                // A dead master shows up here; find out and drop it so the next call reconnects.
                let alive = conn.session.check().await.is_ok();
                if !alive {
                    self.drop_conn(&slot, &conn).await;
                }
                Err(SshError::Disconnected {
                    host: target.name.to_string(),
                    detail: if alive { e.to_string() } else { format!("{e}; the master connection is gone") },
                })
            }
            Ok(Err(ExecError::Terminated)) => {
                if conn.session.check().await.is_err() {
                    self.drop_conn(&slot, &conn).await;
                    return Err(SshError::Disconnected {
                        host: target.name.to_string(),
                        detail: "the connection dropped while the command ran".into(),
                    });
                }
                let elapsed = started.elapsed();
                if ending(None, elapsed, cmd.timeout()) == Ending::TimedOut {
                    return Err(timed_out());
                }
                Ok(RemoteOutput { status: None, stdout: vec![], stderr: vec![], truncated: false, elapsed })
            }
            Ok(Ok(mut out)) => {
                out.elapsed = started.elapsed();
                if ending(out.status, out.elapsed, cmd.timeout()) == Ending::TimedOut {
                    return Err(timed_out());
                }
                Ok(out)
            }
        }
    }

    async fn drop_conn(&self, slot: &Slot, conn: &Arc<Conn>) {
        let mut guard = slot.conn.lock().await;
        if guard.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, conn)) {
            *guard = None;
        }
    }

    /// Reads a file over sftp, at most `max` bytes (more is an error).
    pub async fn read_file(&self, target: &Target, path: &str, max: usize) -> Result<Vec<u8>, SshError> {
        let slot = self.slot(&target.name);
        let (conn, _) = self.ensure(target, &slot).await?;
        let _permit = slot.sessions.acquire().await.map_err(|e| SshError::local("session limit", e))?;
        let sftp_err = |e: &dyn std::fmt::Display| SshError::Sftp {
            host: target.name.to_string(),
            detail: format!("{path}: {e}"),
        };
        let limit = self.settings.command_timeout;
        let read = async {
            let sftp = Sftp::from_clonable_session(Arc::clone(&conn.session), SftpOptions::default())
                .await
                .map_err(|e| sftp_err(&e))?;
            let result = async {
                let mut file = sftp.open(path).await.map_err(|e| sftp_err(&e))?;
                let mut data = Vec::new();
                loop {
                    let chunk = file.read(32 * 1024, bytes::BytesMut::new()).await.map_err(|e| sftp_err(&e))?;
                    match chunk {
                        None => break,
                        Some(b) => {
                            data.extend_from_slice(&b);
                            if data.len() > max {
                                return Err(sftp_err(&format!("larger than {max} bytes")));
                            }
                        }
                    }
                }
                Ok(data)
            }
            .await;
            let _ = sftp.close().await;
            result
        };
        tokio::time::timeout(limit, read).await.map_err(|_| sftp_err(&"timed out"))?
    }

    /// How `nix copy --to ssh-ng://…` reaches `target` through this pool: the store URI and the
    /// environment for Nix's own `ssh` — `NIX_SSHOPTS` with every option of Macha's master (the
    /// pinned host key, the key, the user and port) plus the live master's `ControlPath`, so the
    /// copy rides the connection Macha already authenticated and never trusts another host key.
    /// Connects first if needed. Refused when a path in the options holds whitespace (Nix splits
    /// `NIX_SSHOPTS` at spaces).
    pub async fn nix_transport(&self, target: &Target) -> Result<NixTransport, SshError> {
        let slot = self.slot(&target.name);
        let (conn, _) = self.ensure(target, &slot).await?;
        self.settings.nix_transport(target, &conn.ctl)
    }

    /// Closes the master of `name`, if any (the next command reconnects).
    pub async fn disconnect(&self, name: &HostName) {
        let slot = lock(&self.slots).get(name).cloned();
        if let Some(slot) = slot {
            *slot.conn.lock().await = None;
        }
    }

    /// Closes every master.
    pub async fn shutdown(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        for slot in slots {
            *slot.conn.lock().await = None;
        }
    }

    pub fn stats(&self) -> PoolStats {
        let slots = lock(&self.slots);
        let mut stats = PoolStats::default();
        for (name, slot) in slots.iter() {
            let n = slot.connects.load(Ordering::Relaxed);
            stats.connects += n;
            stats.per_host.insert(name.to_string(), n);
            if slot.conn.try_lock().is_ok_and(|g| g.is_some()) {
                stats.connected += 1;
            }
        }
        stats
    }

    /// Master connections opened to `name` so far.
    pub fn connects(&self, name: &HostName) -> u64 {
        lock(&self.slots).get(name).map_or(0, |s| s.connects.load(Ordering::Relaxed))
    }
}

impl Drop for SshPool {
    fn drop(&mut self) {
        // Conn's own Drop stops each master and removes its directory; then the control
        // directory goes too, if nothing else is in it.
        lock(&self.slots).clear();
        let _ = std::fs::remove_dir(&self.settings.control_dir);
    }
}

enum ExecError {
    /// The channel could not be opened: the command did not start.
    Open(openssh::Error),
    Ssh(openssh::Error),
    Terminated,
}

/// The most standard error kept per command (it only becomes a one-line reason).
pub const STDERR_MAX: usize = 16 * 1024;

/// Runs one line over the master: standard output goes to `sink` as it arrives, standard error
/// is kept up to [`STDERR_MAX`].
async fn exec(conn: &Conn, line: &str, sink: &mut (dyn FnMut(&[u8]) + Send)) -> Result<RemoteOutput, ExecError> {
    let mut child = conn
        .session
        .raw_command(line)
        .stdin(openssh::Stdio::null())
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped())
        .spawn()
        .await
        .map_err(ExecError::Open)?;
    let mut stdout = child.stdout().take();
    let mut stderr = child.stderr().take();
    let mut err = Vec::new();
    let mut keep_err = |chunk: &[u8]| {
        let room = STDERR_MAX.saturating_sub(err.len());
        err.extend_from_slice(&chunk[..chunk.len().min(room)]);
    };
    tokio::join!(drain(stdout.as_mut(), sink), drain(stderr.as_mut(), &mut keep_err));
    drop((stdout, stderr));
    let status = match child.wait().await {
        Ok(s) => s.code(),
        Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(127),
        Err(openssh::Error::RemoteProcessTerminated) => return Err(ExecError::Terminated),
        Err(e) => return Err(ExecError::Ssh(e)),
    };
    Ok(RemoteOutput { status, stdout: Vec::new(), stderr: err, truncated: false, elapsed: Duration::ZERO })
}

/// Reads a stream to its end, handing every chunk to `sink` (which keeps what it needs: the
/// stream is always read to the end, so the remote side never blocks on a full channel).
async fn drain<R: AsyncRead + Unpin>(stream: Option<&mut R>, sink: &mut (dyn FnMut(&[u8]) + Send)) {
    let Some(stream) = stream else { return };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => sink(&buf[..n]),
        }
    }
}

/// Finds the absolute path of every program of [`REMOTE_TOOLS`] on the host, over one sftp
/// channel: all `stat`s are sent at once; for each tool the first directory of [`SEARCH_DIRS`]
/// holding an executable file wins.
async fn resolve_tools(conn: &Conn, name: &HostName) -> Result<RemoteTools, SshError> {
    let sftp_err = |e: &dyn std::fmt::Display| SshError::Sftp {
        host: name.to_string(),
        detail: format!("resolving programs (is the sftp subsystem enabled?): {e}"),
    };
    let sftp = Sftp::from_clonable_session(Arc::clone(&conn.session), SftpOptions::default())
        .await
        .map_err(|e| sftp_err(&e))?;
    let candidates: Vec<(&str, String)> =
        REMOTE_TOOLS.iter().flat_map(|t| SEARCH_DIRS.iter().map(move |d| (*t, format!("{d}/{t}")))).collect();
    let checks = candidates.iter().map(|(_, path)| {
        let mut fs = sftp.fs();
        async move {
            match fs.metadata(path).await {
                Ok(m) => {
                    let exec = m
                        .permissions()
                        .is_some_and(|p| p.execute_by_owner() || p.execute_by_group() || p.execute_by_other());
                    let file = m.file_type().is_some_and(|t| t.is_file());
                    exec && file
                }
                Err(_) => false,
            }
        }
    });
    let found = futures_util::future::join_all(checks).await;
    let _ = sftp.close().await;
    let mut paths: Vec<(String, String)> = Vec::new();
    for ((tool, path), ok) in candidates.iter().zip(found) {
        if ok && !paths.iter().any(|(t, _)| t == tool) {
            paths.push(((*tool).to_owned(), path.clone()));
        }
    }
    let tools = RemoteTools::new(name, paths);
    // Without `timeout` no command may run (the wrapper is not optional).
    tools.path("timeout")?;
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> SshSettings {
        SshSettings::new(
            PathBuf::from("/usr/bin/ssh"),
            "macha",
            dir.join("id_ed25519"),
            dir.join("known_hosts"),
            dir.join("ssh"),
        )
    }

    #[test]
    fn masters_are_strict_and_the_destination_comes_last() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = settings(dir.path());
        let t = Target {
            name: HostName::parse("web1.example.org").unwrap_or_else(|e| panic!("{e}")),
            address: "10.0.0.7".into(),
            port: 2222,
            user: None,
        };
        let args = s.master_args(&t, Path::new("/run/m/s"), Path::new("/run/m/log"));
        for want in [
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=/dev/null",
            "HostKeyAlias=web1.example.org",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "ServerAliveCountMax=3",
            "ConnectTimeout=10",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
        }
        let kh = format!("UserKnownHostsFile={}", dir.path().join("known_hosts").display());
        assert!(args.contains(&kh));
        assert!(!args.iter().any(|a| a.contains("accept-new") || a.contains("StrictHostKeyChecking=no")));
        assert_eq!(&args[args.len() - 6..], ["-p", "2222", "-l", "macha", "--", "10.0.0.7"]);
        assert_eq!(&args[7..9], ["-F", "/dev/null"]);
    }

    #[test]
    fn settings_are_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ok = SshPool::new(settings(dir.path()));
        assert!(ok.is_ok());
        drop(ok);
        assert!(!dir.path().join("ssh").exists(), "an unused control directory is removed with the pool");
        let relative = SshSettings { ssh: PathBuf::from("ssh"), ..settings(dir.path()) };
        assert!(SshPool::new(relative).is_err());
        let spaced = SshSettings { known_hosts: dir.path().join("known hosts"), ..settings(dir.path()) };
        assert!(SshPool::new(spaced).is_err());
        let user = SshSettings { user: "-oProxyCommand=x".into(), ..settings(dir.path()) };
        assert!(SshPool::new(user).is_err());
        let long = SshSettings { control_dir: dir.path().join("x".repeat(90)), ..settings(dir.path()) };
        assert!(SshPool::new(long).is_err());
    }
}
