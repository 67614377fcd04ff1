//! What runs on a remote host: the host as Macha addresses it ([`Target`]), the programs found on
//! it ([`RemoteTools`]), and one command ([`RemoteCommand`]): an absolute program plus argv, with
//! an optional `sudo -n` prefix, always wrapped in `timeout -k` so that the remote process dies on
//! its own when its time is up, whatever happens to the connection. The `sudo -n` prefix takes the
//! policy's [`Permit`]: only the exact command the permit covers, and only on its hosts.

use crate::error::SshError;
use crate::quote;
use macha_core::HostName;
use macha_core::command::{Command, Tools};
use macha_core::policy::Permit;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A host as the SSH layer reaches it. The name is the registry's (and the `HostKeyAlias`); the
/// address is what `ssh` connects to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    pub name: HostName,
    pub address: String,
    pub port: u16,
    /// The login user; `None` for the pool's default.
    pub user: Option<String>,
}

impl Target {
    /// A target whose address is its name, on port 22.
    pub fn named(name: HostName) -> Target {
        Target { address: name.as_str().to_owned(), name, port: 22, user: None }
    }

    /// Checks the parts that end up on `ssh`'s command line: no leading `-`, no whitespace or
    /// control characters, a plain user name.
    pub fn validate(&self) -> Result<(), SshError> {
        let a = &self.address;
        if a.is_empty() || a.starts_with('-') || a.chars().any(|c| c.is_whitespace() || c.is_control()) || a.len() > 253
        {
            return Err(SshError::Invalid(format!("{}: address {a:?} is not a host name or address", self.name)));
        }
        if self.name.is_local() {
            return Err(SshError::Invalid("\"local\" is this host, not a remote one".into()));
        }
        if self.port == 0 {
            return Err(SshError::Invalid(format!("{}: port 0", self.name)));
        }
        if let Some(u) = &self.user {
            valid_user(u)?;
        }
        Ok(())
    }
}

/// A login name: letters, digits, `.`, `_`, `-`; not starting with `-`.
pub fn valid_user(u: &str) -> Result<(), SshError> {
    if u.is_empty()
        || u.len() > 32
        || u.starts_with('-')
        || !u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(SshError::Invalid(format!("{u:?} is not a user name")));
    }
    Ok(())
}

/// Every program Macha may run on a remote host, by name.
pub const REMOTE_TOOLS: [&str; 18] = [
    "timeout",
    "sudo",
    "grep",
    "df",
    "ps",
    "ls",
    "uname",
    "systemctl",
    "journalctl",
    "macha",
    "nix-collect-garbage",
    "nix-store",
    "nix-env",
    "ip",
    "ss",
    "systemd-run",
    "readlink",
    "nix",
];

/// Where remote programs are looked for, in order. `/run/wrappers/bin` holds NixOS's setuid
/// wrappers (`sudo`); `/run/current-system/sw/bin` is NixOS's system profile.
pub const SEARCH_DIRS: [&str; 7] =
    ["/run/wrappers/bin", "/run/current-system/sw/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"];

/// The absolute paths of the programs found on one host (resolved once per connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoteTools {
    paths: BTreeMap<String, String>,
    #[serde(skip)]
    host: String,
}

impl RemoteTools {
    /// From `(name, absolute path)` pairs; unknown names and relative paths are dropped.
    pub fn new<I: IntoIterator<Item = (String, String)>>(host: &HostName, found: I) -> RemoteTools {
        let paths = found
            .into_iter()
            .filter(|(n, p)| {
                REMOTE_TOOLS.contains(&n.as_str()) && p.starts_with('/') && !p.contains(char::is_whitespace)
            })
            .collect();
        RemoteTools { paths, host: host.as_str().to_owned() }
    }

    /// The path of `name`, or why there is none.
    pub fn path(&self, name: &str) -> Result<&str, SshError> {
        self.paths.get(name).map(String::as_str).ok_or_else(|| SshError::ToolMissing {
            host: self.host.clone(),
            tool: name.to_owned(),
            dirs: SEARCH_DIRS.join(":"),
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.paths.contains_key(name)
    }

    /// A command for the remote program `name`.
    pub fn command(&self, name: &str) -> Result<Command, SshError> {
        Command::new(self.path(name)?).map_err(|e| SshError::Invalid(e.to_string()))
    }

    /// The same paths as the core's tool table, so that `macha_core::command::command_for` builds
    /// an action's command with this host's paths.
    pub fn core_tools(&self) -> Tools {
        self.paths.iter().fold(Tools::new(), |t, (n, p)| t.with(n, p))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.paths.iter().map(|(n, p)| (n.as_str(), p.as_str()))
    }
}

/// One remote command: an absolute program and argv, optionally under `sudo -n`, with its time
/// limit. Built from the core's [`Command`] (typed values only); quoted for the remote shell here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteCommand {
    command: Command,
    /// Under `sudo -n`: the hosts the permit names.
    sudo: Option<Vec<HostName>>,
    /// `sudo -n -l`: asks whether sudo would run the command, running nothing.
    sudo_list: bool,
    timeout: Duration,
    /// The most standard output kept (`None`: the pool's `output_max`). The rest is read and
    /// discarded, so the remote side never blocks.
    output_max: Option<usize>,
}

/// Seconds for `timeout(1)`, with millisecond precision.
fn secs(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{}.{:03}s", ms / 1000, ms % 1000) }
}

impl RemoteCommand {
    pub fn new(command: Command, timeout: Duration) -> RemoteCommand {
        RemoteCommand { command, sudo: None, sudo_list: false, timeout, output_max: None }
    }

    /// Keeps at most `max` bytes of standard output (what the parser of this command needs).
    pub fn output_max(mut self, max: usize) -> RemoteCommand {
        self.output_max = Some(max);
        self
    }

    /// The cap set with [`RemoteCommand::output_max`], if any.
    pub fn output_cap(&self) -> Option<usize> {
        self.output_max
    }

    /// Runs the program as root through `sudo -n` (never prompts: without a NOPASSWD rule it fails),
    /// if `permit` covers exactly this command (`Permit::authorises`); it then runs only on the
    /// permit's hosts ([`RemoteCommand::may_run_on`]). Anything else is refused.
    pub fn sudo(mut self, permit: &Permit) -> Result<RemoteCommand, SshError> {
        if !permit.authorises(&self.command) {
            return Err(SshError::Invalid(format!(
                "the permit for {} does not cover `sudo -n {}`; nothing was sent",
                permit.action().describe(),
                self.command.display()
            )));
        }
        self.sudo = Some(permit.action().hosts().as_slice().to_vec());
        Ok(self)
    }

    /// Asks the host's sudo whether it would run exactly this command as root without a password
    /// (`sudo -n -l -- PROGRAM ARGS…`, which exits 0 only then), running nothing: how a deployment
    /// proves, before anything changes, that every privileged step it will take is allowed. The
    /// permit must cover the command as for [`RemoteCommand::sudo`].
    pub fn sudo_check(self, permit: &Permit) -> Result<RemoteCommand, SshError> {
        let mut rc = self.sudo(permit)?;
        rc.sudo_list = true;
        Ok(rc)
    }

    /// Whether this command may be sent to `host`: any host for an unprivileged command, only the
    /// permit's hosts under `sudo`.
    pub fn may_run_on(&self, host: &HostName) -> bool {
        self.sudo.as_ref().is_none_or(|hosts| hosts.contains(host))
    }

    pub fn with_timeout(mut self, timeout: Duration) -> RemoteCommand {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    pub fn is_sudo(&self) -> bool {
        self.sudo.is_some()
    }
    pub fn inner(&self) -> &Command {
        &self.command
    }

    /// The full remote argv: `timeout -k KILL SECS [sudo -n --] PROGRAM ARGS…`. `timeout` sends
    /// SIGTERM to its process group at `SECS` and SIGKILL `KILL` later; under `sudo`, sudo relays
    /// the SIGTERM to the program.
    pub fn argv(&self, tools: &RemoteTools, kill_after: Duration) -> Result<Vec<String>, SshError> {
        let mut argv = vec![tools.path("timeout")?.to_owned(), "-k".into(), secs(kill_after), secs(self.timeout)];
        if self.sudo.is_some() {
            argv.extend([tools.path("sudo")?.to_owned(), "-n".into()]);
            if self.sudo_list {
                argv.push("-l".into());
            }
            argv.push("--".into());
        }
        argv.push(self.command.program().to_owned());
        argv.extend(self.command.argv().iter().cloned());
        Ok(argv)
    }

    /// The quoted line `sshd` hands to the remote shell.
    pub fn line(&self, tools: &RemoteTools, kill_after: Duration) -> Result<String, SshError> {
        quote::command_line(&self.argv(tools, kill_after)?)
    }

    /// For logs and audit records.
    pub fn display(&self) -> String {
        let prefix = match (self.sudo.is_some(), self.sudo_list) {
            (true, true) => "sudo -n -l ",
            (true, false) => "sudo -n ",
            (false, _) => "",
        };
        format!("{prefix}{}", self.command.display())
    }
}

/// Exit codes of `timeout(1)` that mean the limit was hit (124: TERM sent; 137: KILL).
pub fn is_timeout_status(code: Option<i32>) -> bool {
    matches!(code, Some(124 | 137))
}

/// How a remote command ended, from its exit status and how long it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself with this code.
    Exited(i32),
    /// Its time limit was hit: `timeout` exited 124 or 137, or the process was killed by a signal
    /// once the limit had passed. `timeout -k` sends SIGKILL to its whole process group, itself
    /// included, so a command that ignored SIGTERM ends without any exit code at all.
    TimedOut,
    /// Killed by a signal before its limit (the OOM killer, a person).
    Killed,
}

/// Classifies an exit status (`None`: killed by a signal) of a command limited to `limit` that
/// ran for `elapsed`.
pub fn ending(status: Option<i32>, elapsed: Duration, limit: Duration) -> Ending {
    match status {
        s if is_timeout_status(s) => Ending::TimedOut,
        Some(code) => Ending::Exited(code),
        None if elapsed >= limit => Ending::TimedOut,
        None => Ending::Killed,
    }
}

/// An exit status for people: "exit status 3", or "killed by a signal".
pub fn describe_status(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HostName {
        HostName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tools() -> RemoteTools {
        RemoteTools::new(
            &h("c1"),
            [
                ("timeout".to_owned(), "/usr/bin/timeout".to_owned()),
                ("sudo".to_owned(), "/usr/bin/sudo".to_owned()),
                ("systemctl".to_owned(), "/usr/bin/systemctl".to_owned()),
                ("sh".to_owned(), "/bin/sh".to_owned()),
                ("grep".to_owned(), "grep".to_owned()),
            ],
        )
    }

    #[test]
    fn wraps_in_timeout_and_sudo() {
        let t = tools();
        assert!(!t.has("sh"), "unknown tools are dropped");
        assert!(!t.has("grep"), "relative paths are dropped");
        let cmd = t.command("systemctl").unwrap_or_else(|e| panic!("{e}")).args([
            "--no-ask-password",
            "restart",
            "--",
            "lab-demo.service",
        ]);
        let rc = RemoteCommand::new(cmd, Duration::from_millis(30_500))
            .sudo(&restart_permit("lab-demo", "c1"))
            .unwrap_or_else(|e| panic!("{e}"));
        let argv = rc.argv(&t, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            argv,
            [
                "/usr/bin/timeout",
                "-k",
                "5s",
                "30.500s",
                "/usr/bin/sudo",
                "-n",
                "--",
                "/usr/bin/systemctl",
                "--no-ask-password",
                "restart",
                "--",
                "lab-demo.service"
            ]
        );
        assert_eq!(rc.display(), "sudo -n /usr/bin/systemctl --no-ask-password restart -- lab-demo.service");
        // The same command, asked about instead of run: `sudo -n -l`, under the same permit.
        let check = RemoteCommand::new(rc.inner().clone(), Duration::from_secs(5))
            .sudo_check(&restart_permit("lab-demo", "c1"))
            .unwrap_or_else(|e| panic!("{e}"));
        let listed = check.argv(&t, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed[4..8], ["/usr/bin/sudo", "-n", "-l", "--"], "{listed:?}");
        assert_eq!(listed[8..], argv[7..]);
        assert!(check.display().starts_with("sudo -n -l /usr/bin/systemctl"));
        assert!(
            RemoteCommand::new(rc.inner().clone(), Duration::from_secs(5))
                .sudo_check(&restart_permit("other", "c1"))
                .is_err(),
            "a check needs the permit as a run does"
        );
        let line = rc.line(&t, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line, argv.join(" "));
        assert!(matches!(t.command("journalctl"), Err(SshError::ToolMissing { .. })));
        let no_timeout = RemoteTools::new(&h("c1"), [("systemctl".to_owned(), "/bin/systemctl".to_owned())]);
        assert!(rc.argv(&no_timeout, Duration::from_secs(1)).is_err(), "never runs without the timeout wrapper");
        assert!(is_timeout_status(Some(124)) && is_timeout_status(Some(137)) && !is_timeout_status(Some(1)));
    }

    /// A permit from the real policy gate for a restart of `unit` on `host`.
    fn restart_permit(unit: &str, host: &str) -> Permit {
        use macha_core::policy::{Autonomy, PolicyInputs, ProtectedUnits, Ruling, decide};
        let action = macha_core::Action::RestartUnit {
            host: macha_core::action::Hosts::One(h(host)),
            unit: macha_core::UnitName::parse(unit).unwrap_or_else(|e| panic!("{e}")),
            reason: "test".into(),
        };
        let mut inputs = PolicyInputs::new(Autonomy::AutoSafe, ProtectedUnits::new::<&str>(&[]));
        inputs.known_hosts.insert(h(host));
        let now = macha_core::Now::new(macha_core::Timestamp(0), macha_core::Mono(0));
        match decide(&action, &macha_core::action::Origin::Person { uid: 0 }, &inputs.context(), now) {
            Ruling::Execute(p) => p,
            other => panic!("{:?}", other.decision()),
        }
    }

    /// Finding: privileged SSH needed no permit. `sudo` takes the permit, refuses any command it
    /// does not cover, and the command runs only on the permit's hosts.
    #[test]
    fn sudo_needs_the_permit_for_exactly_this_command() {
        let t = tools();
        let systemctl = |args: &[&str]| {
            t.command("systemctl").unwrap_or_else(|e| panic!("{e}")).args(args.iter().map(|s| (*s).to_owned()))
        };
        let permit = restart_permit("lab-demo", "c1");
        let ok = RemoteCommand::new(
            systemctl(&["--no-ask-password", "restart", "--", "lab-demo.service"]),
            Duration::from_secs(5),
        )
        .sudo(&permit)
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(ok.is_sudo() && ok.may_run_on(&h("c1")) && !ok.may_run_on(&h("c2")));
        for args in [
            &["--no-ask-password", "stop", "--", "lab-demo.service"][..],
            &["--no-ask-password", "restart", "--", "sshd.service"][..],
            &["reboot"][..],
        ] {
            let refused = RemoteCommand::new(systemctl(args), Duration::from_secs(5)).sudo(&permit);
            assert!(matches!(refused, Err(SshError::Invalid(_))), "{args:?}");
        }
        let plain = RemoteCommand::new(systemctl(&["show", "--", "x.service"]), Duration::from_secs(5));
        assert!(!plain.is_sudo() && plain.may_run_on(&h("c2")));
    }

    #[test]
    fn a_command_killed_at_its_limit_is_a_timeout() {
        let limit = Duration::from_secs(2);
        let (short, long) = (Duration::from_millis(300), Duration::from_millis(2_100));
        assert_eq!(ending(Some(0), short, limit), Ending::Exited(0));
        assert_eq!(ending(Some(3), long, limit), Ending::Exited(3));
        assert_eq!(ending(Some(124), long, limit), Ending::TimedOut);
        assert_eq!(ending(Some(137), long, limit), Ending::TimedOut);
        // `timeout -k` kills its own process group: no exit code, past the limit.
        assert_eq!(ending(None, long, limit), Ending::TimedOut);
        assert_eq!(ending(None, short, limit), Ending::Killed);
        assert_eq!(describe_status(None), "killed by a signal");
        assert_eq!(describe_status(Some(2)), "exit status 2");
    }

    #[test]
    fn targets_validate() {
        let ok = Target { name: h("c1"), address: "10.231.0.31".into(), port: 22, user: Some("macha".into()) };
        assert!(ok.validate().is_ok());
        for (address, user) in
            [("-oProxyCommand=id", None), ("a b", None), ("", None), ("c1", Some("-x")), ("c1", Some("a b"))]
        {
            let t = Target { name: h("c1"), address: address.into(), port: 22, user: user.map(str::to_owned) };
            assert!(t.validate().is_err(), "{address:?} {user:?}");
        }
        assert!(Target::named(HostName::local()).validate().is_err());
    }
}
