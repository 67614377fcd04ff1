//! What changed for a host, at the daemon's edge: runs `git log` on the fleet's flake through the
//! one command builder (a cleared environment, a deadline, bounded output), asks the store for
//! the files the host uses and its last deployment, and leaves the rules to
//! `macha_knowledge::changes`. A flake that is not a git checkout is said plainly, never an error.

use crate::config::Config;
use macha_core::Timestamp;
use macha_knowledge::changes::{self, Deployment, RecentChanges};
use macha_store::{IssueRecord, Store};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long one `git log` may take.
const GIT_DEADLINE: Duration = Duration::from_secs(5);
/// Most bytes of `git log` output read.
const GIT_OUTPUT_MAX: u64 = 1024 * 1024;
/// How far back the model's `recent_changes` looks.
pub const TOOL_LOOKBACK_MS: i64 = 7 * 24 * 3_600_000;

/// The name the flake gives the host: a configured host's own name, and for `local` this
/// machine's host name.
fn flake_host_name(host: &str) -> String {
    if host != "local" {
        return host.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| host.to_owned())
}

/// Runs `git log` in `flake` for commits since `since_unix`.
fn git_log(config: &Config, flake: &Path, since_unix: i64) -> Result<String, String> {
    let git = config
        .tools
        .get("git")
        .cloned()
        .or_else(|| which::which("git").ok().map(|p| p.display().to_string()))
        .ok_or_else(|| "git is not installed (tools.git names it)".to_owned())?;
    let tools = macha_core::command::Tools::new().with("git", &git);
    let flake = flake.to_str().ok_or_else(|| "the flake's path is not UTF-8".to_owned())?;
    let cmd = macha_core::command::git_log(&tools, flake, since_unix, changes::COMMITS_MAX as u32)
        .map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(cmd.program())
        .args(cmd.argv())
        .env_clear()
        .envs(macha_core::command::SPAWN_ENV)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| "git has no output".to_owned())?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(GIT_OUTPUT_MAX).read_to_end(&mut out);
        out
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > GIT_DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("git did not finish within {} s", GIT_DEADLINE.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("git: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = (&mut e).take(4096).read_to_string(&mut err);
        }
        return Err(format!("git log failed: {}", err.trim().lines().next().unwrap_or("no message")));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// What changed for `host` from `since` on: the flake's commits touching the host's files and
/// its last deployment.
pub fn recent(store: &Store, config: &Config, host: &str, since: Timestamp) -> RecentChanges {
    let mut rc = RecentChanges { host: host.to_owned(), ..RecentChanges::default() };
    match store.deployments_of_host(host, 1) {
        Ok(d) => {
            rc.deployment = d.into_iter().next().map(|d| Deployment {
                approval_id: d.approval_id,
                at: d.at,
                state: d.state,
                by: d.decided_by,
            });
        }
        Err(e) => tracing::warn!("deployments of {host}: {e}"),
    }
    let flake = &config.knowledge_flake;
    if !flake.join(".git").exists() {
        rc.notes.push(format!("the flake at {} is not a git checkout: no commit history", flake.display()));
        return rc;
    }
    match git_log(config, flake, since.millis().div_euclid(1000)) {
        Ok(out) => {
            let name = flake_host_name(host);
            let files = store.config_files_of_host(&name).unwrap_or_default();
            let (kept, note) = changes::for_host(changes::parse_git_log(&out), &name, &files);
            rc.commits = kept;
            rc.notes.extend(note);
        }
        Err(e) => rc.notes.push(format!("the flake's history could not be read: {e}")),
    }
    rc
}

/// What changed for an issue's host within `knowledge.change_window` before it opened.
pub fn for_issue(store: &Store, config: &Config, issue: &IssueRecord) -> RecentChanges {
    let window = i64::try_from(config.knowledge_change_window.as_millis()).unwrap_or(i64::MAX);
    let since = Timestamp(issue.first_seen.millis().saturating_sub(window));
    changes::within_window(&recent(store, config, &issue.host, since), issue.first_seen, window)
}

/// The lines `macha issues show` prints under "Recent changes" (empty when nothing changed).
pub fn issue_lines(store: &Store, config: &Config, issue: &IssueRecord) -> Vec<String> {
    let rc = for_issue(store, config, issue);
    if rc.is_empty() && rc.notes.is_empty() { Vec::new() } else { rc.lines() }
}

/// The ids the model's analyses of issue `id` cited, newest analysis first, without duplicates.
pub fn citations(store: &Store, id: i64) -> Vec<String> {
    let q = macha_store::AuditQuery { issue_id: Some(id), ..Default::default() };
    let mut out: Vec<String> = Vec::new();
    for a in store.query_audit(&q).unwrap_or_default().iter().rev() {
        let cited = a.payload["diagnosis"]["citations"].as_array().cloned().unwrap_or_default();
        for c in cited.iter().filter_map(|c| c.as_str()) {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_owned());
            }
        }
    }
    out
}
