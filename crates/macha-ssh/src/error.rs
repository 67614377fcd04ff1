//! What can go wrong talking to a host, classified so that the registry, the alerts and the
//! people reading them can tell a changed host key from a host that is down.

use std::time::Duration;

/// One failure of the SSH layer. Every variant names the host it is about (when there is one) and
/// keeps the detail `ssh` gave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// The host presented a key other than the pinned one: refused before authentication, nothing
    /// was sent.
    #[error("{host}: the host key changed (it does not match the pinned key); refused, nothing was sent: {detail}")]
    HostKeyChanged { host: String, detail: String },
    /// No key is pinned for the host: refused (Macha never accepts an unknown key by itself).
    #[error("{host}: no host key is pinned; check the fingerprint and run `macha-systems trust {host}`")]
    HostKeyUnknown { host: String },
    #[error("{host}: authentication failed: {detail}")]
    AuthFailed { host: String, detail: String },
    #[error("{host}: unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("{host}: no connection within {} ms: {detail}", after.as_millis())]
    ConnectTimeout { host: String, after: Duration, detail: String },
    #[error("{host}: `{command}` did not finish within {} ms and was killed on both ends", after.as_millis())]
    CommandTimeout { host: String, command: String, after: Duration },
    #[error("{host}: the connection was lost: {detail}")]
    Disconnected { host: String, detail: String },
    #[error("{host}: {tool} was not found on the host (searched {dirs})")]
    ToolMissing { host: String, tool: String, dirs: String },
    #[error("{host}: sftp: {detail}")]
    Sftp { host: String, detail: String },
    /// A local problem: the ssh binary, the control directory, the known_hosts file.
    #[error("{what}: {detail}")]
    Local { what: String, detail: String },
    #[error("invalid: {0}")]
    Invalid(String),
}

impl SshError {
    /// A stable word for machines (registry status, JSON, tests).
    pub fn kind(&self) -> &'static str {
        match self {
            SshError::HostKeyChanged { .. } => "host_key_changed",
            SshError::HostKeyUnknown { .. } => "host_key_unknown",
            SshError::AuthFailed { .. } => "auth_failed",
            SshError::Unreachable { .. } => "unreachable",
            SshError::ConnectTimeout { .. } => "connect_timeout",
            SshError::CommandTimeout { .. } => "timed_out",
            SshError::Disconnected { .. } => "disconnected",
            SshError::ToolMissing { .. } => "tool_missing",
            SshError::Sftp { .. } => "sftp",
            SshError::Local { .. } => "local",
            SshError::Invalid(_) => "invalid",
        }
    }

    /// Whether the failure says the host cannot be reached right now (as opposed to a refusal).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SshError::Unreachable { .. } | SshError::ConnectTimeout { .. } | SshError::Disconnected { .. })
    }

    pub(crate) fn local(what: impl Into<String>, detail: impl std::fmt::Display) -> SshError {
        SshError::Local { what: what.into(), detail: detail.to_string() }
    }
}

/// Reads the log of a failed `ssh` master and says what happened. `ssh` reports everything as
/// text; these are the messages OpenSSH 8-10 prints.
pub fn classify_connect_failure(host: &str, log: &str, after: Duration) -> SshError {
    let detail = summary(log);
    let host = host.to_owned();
    if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || (log.contains("Host key for") && log.contains("has changed"))
    {
        return SshError::HostKeyChanged { host, detail };
    }
    if log.contains("host key is known for") || log.contains("Host key verification failed") {
        return SshError::HostKeyUnknown { host };
    }
    if log.contains("Permission denied") || log.contains("Too many authentication failures") {
        return SshError::AuthFailed { host, detail };
    }
    if log.contains("timed out") || log.contains("Connection timed out") {
        return SshError::ConnectTimeout { host, after, detail };
    }
    SshError::Unreachable { host, detail }
}

/// The last few meaningful lines of an `ssh` log, on one line.
fn summary(log: &str) -> String {
    let lines: Vec<&str> =
        log.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("@@@") && !l.starts_with("@ ")).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    let text = tail.join(" / ");
    let text: String = text.chars().filter(|c| !c.is_control()).take(400).collect();
    if text.is_empty() { "ssh exited without a message".to_owned() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGED: &str = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\nHost key for c3 has changed and you have requested strict checking.\nHost key verification failed.\n";

    #[test]
    fn classifies_what_ssh_prints() {
        let s = Duration::from_secs(3);
        assert_eq!(classify_connect_failure("c3", CHANGED, s).kind(), "host_key_changed");
        let unknown = "No ED25519 host key is known for c1 and you have requested strict checking.\nHost key verification failed.\n";
        assert_eq!(classify_connect_failure("c1", unknown, s).kind(), "host_key_unknown");
        assert_eq!(
            classify_connect_failure("c1", "macha@10.0.0.1: Permission denied (publickey).", s).kind(),
            "auth_failed"
        );
        assert_eq!(
            classify_connect_failure("h", "ssh: connect to host 10.231.0.12 port 22: Connection timed out", s).kind(),
            "connect_timeout"
        );
        let refused = classify_connect_failure("h", "ssh: connect to host 10.231.0.12 port 22: Connection refused", s);
        assert_eq!(refused.kind(), "unreachable");
        assert!(refused.to_string().contains("Connection refused"), "{refused}");
        assert_eq!(classify_connect_failure("h", "", s).to_string(), "h: unreachable: ssh exited without a message");
        assert!(classify_connect_failure("c3", CHANGED, s).to_string().contains("Host key for c3 has changed"));
    }
}
