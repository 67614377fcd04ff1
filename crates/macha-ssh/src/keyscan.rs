//! `ssh-keyscan`: what keys a host presents, for `macha-systems trust` to show (as fingerprints)
//! before a person pins one. The scan itself trusts nothing and pins nothing.

use crate::error::SshError;
use crate::known_hosts::HostKey;
use crate::remote::Target;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Runs `ssh-keyscan -T <secs> -p <port> -t ed25519,ecdsa,rsa -- <address>` (the absolute path
/// given) and returns the keys found, sorted, without duplicates.
pub async fn scan(keyscan: &Path, target: &Target, timeout: Duration) -> Result<Vec<HostKey>, SshError> {
    target.validate()?;
    if !keyscan.is_absolute() {
        return Err(SshError::Invalid(format!("{} is not an absolute path", keyscan.display())));
    }
    let secs = timeout.as_secs().max(1);
    let mut cmd = tokio::process::Command::new(keyscan);
    cmd.args(["-T", &secs.to_string(), "-p", &target.port.to_string(), "-t", "ed25519,ecdsa,rsa", "--"])
        .arg(&target.address)
        .env_clear()
        .envs(macha_core::command::SPAWN_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout + Duration::from_secs(5), cmd.output())
        .await
        .map_err(|_| SshError::ConnectTimeout {
            host: target.name.to_string(),
            after: timeout,
            detail: "ssh-keyscan did not finish".into(),
        })?
        .map_err(|e| SshError::local(format!("running {}", keyscan.display()), e))?;
    let keys = parse(&String::from_utf8_lossy(&out.stdout));
    if keys.is_empty() {
        let err: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(SshError::Unreachable {
            host: target.name.to_string(),
            detail: if err.trim().is_empty() {
                "no host key was offered".into()
            } else {
                err.chars().take(300).collect()
            },
        });
    }
    Ok(keys)
}

/// Parses keyscan output (`host alg blob` lines; comments start with `#`).
pub fn parse(text: &str) -> Vec<HostKey> {
    let mut keys: Vec<HostKey> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (_host, alg, blob) = (it.next()?, it.next()?, it.next()?);
            HostKey::new(alg, blob).ok()
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keyscan_lines() {
        let text = "# 10.231.0.31:22 SSH-2.0-OpenSSH_9.2p1\n10.231.0.31 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE0qsxSh/2W4bH/LeviKgKg5rlzbNPwOFvkYjqv70mR\n[10.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE0qsxSh/2W4bH/LeviKgKg5rlzbNPwOFvkYjqv70mR\n10.231.0.31 ssh-rsa garbage\n";
        let keys = parse(text);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].fingerprint(), "SHA256:bzpIzhnyb0gUT0E3NCH/eNzkgzek9GnTHjztQG7CGc4");
    }
}
