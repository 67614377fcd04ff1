//! The one command builder: a program given by absolute path plus an argv vector.
//!
//! Architecture invariant: there is no shell anywhere in Macha. Every command the executor runs
//! (locally, and later over SSH, where the SSH module quotes this argv for the remote side) is built
//! here from typed actions. Text from logs, files, the model or config never becomes a command line;
//! typed values (validated unit names, bounded integers) become single argv elements, after a `--`
//! where the tool supports it.

use crate::action::{Action, DiagnosticArgs, DiagnosticName};
use crate::{StorePath, UnitName};
use serde::Serialize;
use std::collections::BTreeMap;

/// A program path plus arguments. Never interpreted by a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    program: String,
    args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{tool} is not available on this host (not found when Macha started)")]
    ToolMissing { tool: &'static str },
    #[error("program path {0:?} is not absolute")]
    NotAbsolute(String),
    #[error("{0} is not executed as a command")]
    NotACommand(&'static str),
}

impl Command {
    /// A command for an absolute program path.
    pub fn new(program: &str) -> Result<Command, CommandError> {
        if !program.starts_with('/') || program.contains('\0') {
            return Err(CommandError::NotAbsolute(program.to_owned()));
        }
        Ok(Command { program: program.to_owned(), args: Vec::new() })
    }
    pub fn arg(mut self, a: impl Into<String>) -> Command {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, it: I) -> Command {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }
    pub fn program(&self) -> &str {
        &self.program
    }
    pub fn argv(&self) -> &[String] {
        &self.args
    }
    /// For display and audit only; never executed.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }
}

/// The whole environment of every process Macha starts: spawners call `env_clear()` and then set
/// exactly these (nothing of the daemon's own environment is inherited).
pub const SPAWN_ENV: [(&str, &str); 3] =
    [("PATH", "/run/current-system/sw/bin:/usr/bin:/bin"), ("LC_ALL", "C"), ("SYSTEMD_PAGER", "")];

/// External tools by name → absolute path, resolved once by the daemon at start (on NixOS, store
/// paths from the module), plus the journal directory every `journalctl` reads (`journal.directory`).
/// The core only looks them up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tools {
    paths: BTreeMap<&'static str, String>,
    journal_directory: Option<String>,
}

/// Every external program Macha may run.
pub const TOOL_NAMES: [&str; 13] = [
    "systemctl",
    "journalctl",
    "nix-collect-garbage",
    "nix-store",
    "nix-env",
    "df",
    "ip",
    "ss",
    "systemd-run",
    "readlink",
    "nix",
    "nh",
    "git",
];

impl Tools {
    pub fn new() -> Tools {
        Tools::default()
    }
    /// Registers `name` at `path`; ignored unless `name` is one of [`TOOL_NAMES`] and `path` is absolute.
    pub fn with(mut self, name: &str, path: &str) -> Tools {
        if let Some(n) = TOOL_NAMES.iter().find(|n| **n == name)
            && path.starts_with('/')
        {
            self.paths.insert(n, path.to_owned());
        }
        self
    }
    /// Every `journalctl` built here reads this directory instead of the system journal; ignored
    /// unless absolute.
    pub fn with_journal_directory(mut self, dir: &str) -> Tools {
        if dir.starts_with('/') && !dir.contains('\0') {
            self.journal_directory = Some(dir.to_owned());
        }
        self
    }
    pub fn journal_directory(&self) -> Option<&str> {
        self.journal_directory.as_deref()
    }
    /// `journalctl` with `--directory=` when one is configured.
    fn journalctl(&self) -> Result<Command, CommandError> {
        let c = self.get("journalctl")?;
        Ok(match &self.journal_directory {
            Some(d) => c.arg(format!("--directory={d}")),
            None => c,
        })
    }
    pub fn get(&self, name: &'static str) -> Result<Command, CommandError> {
        match self.paths.get(name) {
            Some(p) => Command::new(p),
            None => Err(CommandError::ToolMissing { tool: name }),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.paths.iter().map(|(k, v)| (*k, v.as_str()))
    }
}

/// The `--format` of [`git_log`]: a record separator, then hash, author, author time (Unix
/// seconds) and subject separated by unit separators; `--name-only` lists the files after it.
pub const GIT_LOG_FORMAT: &str = "--format=%x1e%H%x1f%an%x1f%at%x1f%s";

/// `git -C DIR -c core.fsmonitor=false -c core.quotepath=off log --since=@SECONDS --max-count=N
/// --name-only --no-renames --no-color --format=…`: the commits of the fleet's flake since a time,
/// for "what changed". `dir` must be absolute; `since_unix` and `max` are numbers, so nothing but
/// the directory comes from configuration, and it is one argument.
pub fn git_log(tools: &Tools, dir: &str, since_unix: i64, max: u32) -> Result<Command, CommandError> {
    if !dir.starts_with('/') || dir.contains('\0') {
        return Err(CommandError::NotAbsolute(dir.to_owned()));
    }
    Ok(tools
        .get("git")?
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.fsmonitor=false", "-c", "core.quotepath=off", "log"])
        .arg(format!("--since=@{}", since_unix.max(0)))
        .arg(format!("--max-count={}", max.clamp(1, 500)))
        .args(["--name-only", "--no-renames", "--no-color", GIT_LOG_FORMAT]))
}

/// A read of recent journal lines (the model's `read_logs`), from typed, bounded values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub unit: Option<UnitName>,
    /// This syslog priority (0 emerg … 7 debug) or more severe.
    pub priority: Option<u8>,
    /// Most lines (clamped to 1-1000).
    pub lines: u32,
    /// How far back (clamped to 1-10080 minutes).
    pub since_minutes: u32,
}

/// `journalctl --no-pager --output=short-iso --quiet [--directory=…] --lines=N --since=-Nmin
/// [--priority=P] [--unit=U]`: the one argv of the model's log reads.
pub fn read_logs(q: &LogQuery, tools: &Tools) -> Result<Command, CommandError> {
    let mut c = tools
        .journalctl()?
        .args(["--no-pager", "--output=short-iso", "--quiet"])
        .arg(format!("--lines={}", q.lines.clamp(1, 1000)))
        .arg(format!("--since=-{}min", q.since_minutes.clamp(1, 10080)));
    if let Some(p) = q.priority {
        c = c.arg(format!("--priority={}", p.min(7)));
    }
    if let Some(u) = &q.unit {
        c = c.arg(format!("--unit={}", u.as_str()));
    }
    Ok(c)
}

/// The command for an action that runs as a process. Unit actions go over D-Bus, config changes and
/// deployments are not commands: those return [`CommandError::NotACommand`].
pub fn command_for(action: &Action, tools: &Tools) -> Result<Command, CommandError> {
    match action {
        Action::JournalVacuum { max_age_days, .. } => {
            Ok(tools.get("journalctl")?.arg(format!("--vacuum-time={max_age_days}d")))
        }
        Action::CollectGarbage { older_than_days, .. } => {
            Ok(tools.get("nix-collect-garbage")?.arg("--delete-older-than").arg(format!("{older_than_days}d")))
        }
        Action::StoreVerify { .. } => Ok(tools.get("nix-store")?.args(["--verify", "--check-contents"])),
        Action::StoreRepair { .. } => Ok(tools.get("nix-store")?.args(["--verify", "--check-contents", "--repair"])),
        Action::Diagnostic { name, args, .. } => diagnostic_command(*name, args, tools),
        Action::RestartUnit { .. }
        | Action::StartUnit { .. }
        | Action::StopUnit { .. }
        | Action::ResetFailed { .. } => Err(CommandError::NotACommand("a unit action (it goes over D-Bus)")),
        Action::Reboot { .. } => Err(CommandError::NotACommand("a reboot (it goes over D-Bus)")),
        Action::ConfigChange { .. } => Err(CommandError::NotACommand("a config change")),
        Action::NixosSwitch { .. } => Err(CommandError::NotACommand("a deployment")),
    }
}

/// The longest age, in days, a clean-up unit's instance may name (the action schema's bound).
pub const CLEANUP_DAYS_MAX: u32 = 3650;

/// Why [`cleanup_unit`] names no unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleanupUnitError {
    #[error("{0} has no fixed clean-up unit")]
    NotACleanup(&'static str),
    #[error("an age of {0} days is outside 1-{CLEANUP_DAYS_MAX}; no clean-up unit is started for it")]
    DaysOutOfRange(u32),
}

/// The fixed root unit that carries out a clean-up action where Macha runs without root: the
/// NixOS module's `macha-journal-vacuum@<days>.service`, `macha-collect-garbage@<days>.service`,
/// `macha-store-verify.service` and `macha-store-repair.service` (docs/actions.md). The instance is
/// the number of days in decimal, 1 to [`CLEANUP_DAYS_MAX`], and nothing else: the polkit rule
/// that lets Macha's user start these units checks the same shape.
pub fn cleanup_unit(action: &Action) -> Result<UnitName, CleanupUnitError> {
    let days =
        |d: u32| if (1..=CLEANUP_DAYS_MAX).contains(&d) { Ok(d) } else { Err(CleanupUnitError::DaysOutOfRange(d)) };
    let name = match action {
        Action::JournalVacuum { max_age_days, .. } => format!("macha-journal-vacuum@{}.service", days(*max_age_days)?),
        Action::CollectGarbage { older_than_days, .. } => {
            format!("macha-collect-garbage@{}.service", days(*older_than_days)?)
        }
        Action::StoreVerify { .. } => "macha-store-verify.service".to_owned(),
        Action::StoreRepair { .. } => "macha-store-repair.service".to_owned(),
        Action::Diagnostic { .. } => return Err(CleanupUnitError::NotACleanup("a diagnostic")),
        Action::RestartUnit { .. }
        | Action::StartUnit { .. }
        | Action::StopUnit { .. }
        | Action::ResetFailed { .. } => return Err(CleanupUnitError::NotACleanup("a unit action")),
        Action::Reboot { .. } => return Err(CleanupUnitError::NotACleanup("a reboot")),
        Action::ConfigChange { .. } => return Err(CleanupUnitError::NotACleanup("a config change")),
        Action::NixosSwitch { .. } => return Err(CleanupUnitError::NotACleanup("a deployment")),
    };
    // The names above are valid unit names by construction; a failure here would be a bug, reported
    // as "no unit" rather than a panic.
    UnitName::parse(&name).map_err(|_| CleanupUnitError::NotACleanup("an unnameable clean-up"))
}

/// Where a deployment's GC roots live on the host: the old and the new system of each deployment,
/// so that neither the system being activated nor the rollback target can be collected.
pub const DEPLOY_GCROOTS: &str = "/nix/var/nix/gcroots/macha";
/// The system profile a committed deployment becomes the newest generation of.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// One step of a NixOS deployment on a host (docs/deploy.md), each a fixed command built here:
/// store paths and the deployment's id (hexadecimal, from the permit) are single arguments, the
/// activations run in transient units named after the deployment so that a dropped connection
/// neither kills them nor lets them run twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployStep<'a> {
    /// `readlink -e /run/current-system` (read-only).
    CurrentSystem,
    /// The failed units, one per line (read-only).
    FailedUnits,
    /// Transient units of any deployment, and NixOS's own switch unit, while active (read-only).
    Switching,
    /// Free space of the filesystem holding `path` (read-only).
    FreeSpace { path: &'a str },
    /// Whether a store path is valid on the host (read-only).
    Valid { path: &'a StorePath },
    /// A unit's state, for a declared health check (read-only).
    UnitActive { unit: &'a UnitName },
    /// A GC root for `path` under [`DEPLOY_GCROOTS`] (`<id>-old`, `<id>-new`).
    PinRoot { id: &'a str, role: &'static str, path: &'a StorePath },
    /// The dead-man switch: `macha-deploy-<id>-deadman.timer`, which activates `previous` after
    /// `secs` unless it is disarmed (stopped) first.
    Arm { id: &'a str, previous: &'a StorePath, secs: u64 },
    /// The timer's and its service's state (read-only): a disarm is acknowledged when the timer is
    /// gone and its service never started.
    ArmState { id: &'a str },
    /// Disarms the dead-man switch.
    Disarm { id: &'a str },
    /// `switch-to-configuration test` of `system` in the transient unit `macha-deploy-<id>`,
    /// waited for up to `secs`. A unit that failed stays loaded with its exit status (what a
    /// reconnect reads) until [`DeployStep::Forget`]; one that succeeded is gone once it exits
    /// (`systemd-run --wait` never returns for a unit that remains after exit).
    Activate { id: &'a str, system: &'a StorePath, previous: &'a StorePath, secs: u64 },
    /// The activation unit's state and result (read-only): what a reconnect reads instead of
    /// activating again.
    ActivationState { id: &'a str },
    /// `switch-to-configuration test` of `previous`, now, in `macha-deploy-<id>-rollback`.
    Rollback { id: &'a str, previous: &'a StorePath, secs: u64 },
    /// The system profile's new generation.
    SetProfile { system: &'a StorePath },
    /// `switch-to-configuration boot` of `system` (the boot entry), in the transient unit
    /// `macha-deploy-<id>-boot`, waited for.
    Boot { id: &'a str, system: &'a StorePath },
    /// Stops the activation unit (if it still runs).
    Cleanup { id: &'a str },
    /// Forgets a failed activation unit (`reset-failed`), so that it is not a failed unit of the
    /// host when the rollback is verified.
    Forget { id: &'a str },
}

impl DeployStep<'_> {
    /// Whether the step changes the host (it runs with privileges, under the deployment's permit).
    pub fn changes_the_host(&self) -> bool {
        !matches!(
            self,
            DeployStep::CurrentSystem
                | DeployStep::FailedUnits
                | DeployStep::Switching
                | DeployStep::FreeSpace { .. }
                | DeployStep::Valid { .. }
                | DeployStep::UnitActive { .. }
                | DeployStep::ArmState { .. }
                | DeployStep::ActivationState { .. }
        )
    }
}

/// `nix copy --no-check-sigs --to URI PATH`, run on the controller: copies a system's closure to a
/// host whose login user the host's Nix trusts (`trusted-users`; a user it does not trust cannot
/// add unsigned paths, and the copy fails before anything is activated). `uri` must be
/// `ssh-ng://user@address`.
pub fn nix_copy_command(tools: &Tools, uri: &str, path: &StorePath) -> Result<Command, CommandError> {
    let ok = uri.strip_prefix("ssh-ng://").is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('-')
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"@.-_:[]".contains(&b))
    });
    if !ok {
        return Err(CommandError::NotACommand("a copy to something that is not an ssh-ng:// store"));
    }
    Ok(tools.get("nix")?.args([
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--no-check-sigs",
        "--to",
        uri,
        path.as_str(),
    ]))
}

/// `nix path-info --json --recursive PATH` (read-only): the closure with each path's size, what the
/// closure diff is computed from.
pub fn nix_closure_command(tools: &Tools, path: &StorePath) -> Result<Command, CommandError> {
    Ok(tools.get("nix")?.args([
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--json",
        "--recursive",
        path.as_str(),
    ]))
}

/// Whether `id` can be a deployment id: 1-32 lowercase hexadecimal characters.
pub fn valid_deploy_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The command of one deployment step.
///
/// No argument of a privileged step contains a space (no `--description`: systemd describes a
/// transient unit by its command line). A managed host's sudo rules (modules/deploy-sudo.nix)
/// match the arguments joined by spaces against a regular expression, and arguments without
/// spaces can be split back only one way, so the rule admits exactly these argv.
pub fn deploy_command(step: &DeployStep<'_>, tools: &Tools) -> Result<Command, CommandError> {
    let id_ok = |id: &str| {
        if valid_deploy_id(id) {
            Ok(())
        } else {
            Err(CommandError::NotACommand("a deployment id that is not hexadecimal"))
        }
    };
    let secs = |s: u64| s.clamp(1, 86_400);
    let switch = |p: &StorePath| p.join("bin/switch-to-configuration");
    Ok(match step {
        DeployStep::CurrentSystem => tools.get("readlink")?.args(["-e", "--", "/run/current-system"]),
        DeployStep::FailedUnits => tools.get("systemctl")?.args([
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
            "--full",
        ]),
        DeployStep::Switching => tools.get("systemctl")?.args([
            "list-units",
            "--state=active,activating",
            "--plain",
            "--no-legend",
            "--no-pager",
            "--full",
            "--",
            "macha-deploy-*",
            "nixos-rebuild-switch-to-configuration.service",
        ]),
        DeployStep::FreeSpace { path } => {
            if !path.starts_with('/') || path.contains("..") {
                return Err(CommandError::NotAbsolute((*path).to_owned()));
            }
            tools.get("df")?.args(["-B1", "--output=avail", "--", path])
        }
        DeployStep::Valid { path } => tools.get("nix-store")?.args(["--check-validity", path.as_str()]),
        DeployStep::UnitActive { unit } => {
            tools.get("systemctl")?.args(["show", "--property=ActiveState", "--value", "--", unit.as_str()])
        }
        DeployStep::PinRoot { id, role, path } => {
            id_ok(id)?;
            tools.get("nix-store")?.args([
                "--realise".to_owned(),
                "--add-root".to_owned(),
                format!("{DEPLOY_GCROOTS}/{id}-{role}"),
                path.as_str().to_owned(),
            ])
        }
        DeployStep::Arm { id, previous, secs: s } => {
            id_ok(id)?;
            tools.get("systemd-run")?.args([
                format!("--unit=macha-deploy-{id}-deadman"),
                format!("--on-active={}s", secs(*s)),
                "--timer-property=AccuracySec=1s".to_owned(),
                "--property=Type=oneshot".to_owned(),
                "--quiet".to_owned(),
                "--".to_owned(),
                switch(previous),
                "test".to_owned(),
            ])
        }
        DeployStep::ArmState { id } => {
            id_ok(id)?;
            tools.get("systemctl")?.args([
                "show".to_owned(),
                "--property=Id,LoadState,ActiveState,ExecMainStartTimestampMonotonic".to_owned(),
                "--".to_owned(),
                format!("macha-deploy-{id}-deadman.timer"),
                format!("macha-deploy-{id}-deadman.service"),
            ])
        }
        DeployStep::Disarm { id } => {
            id_ok(id)?;
            tools.get("systemctl")?.args([
                "stop".to_owned(),
                "--".to_owned(),
                format!("macha-deploy-{id}-deadman.timer"),
            ])
        }
        DeployStep::Activate { id, system, secs: s, .. } => {
            id_ok(id)?;
            tools.get("systemd-run")?.args([
                format!("--unit=macha-deploy-{id}"),
                "--wait".to_owned(),
                "--quiet".to_owned(),
                "--property=Type=oneshot".to_owned(),
                format!("--property=TimeoutStartSec={}", secs(*s)),
                "--".to_owned(),
                switch(system),
                "test".to_owned(),
            ])
        }
        DeployStep::ActivationState { id } => {
            id_ok(id)?;
            tools.get("systemctl")?.args([
                "show".to_owned(),
                "--property=LoadState,ActiveState,SubState,Result,ExecMainStatus".to_owned(),
                "--".to_owned(),
                format!("macha-deploy-{id}.service"),
            ])
        }
        DeployStep::Rollback { id, previous, secs: s } => {
            id_ok(id)?;
            tools.get("systemd-run")?.args([
                format!("--unit=macha-deploy-{id}-rollback"),
                "--wait".to_owned(),
                "--quiet".to_owned(),
                "--collect".to_owned(),
                "--property=Type=oneshot".to_owned(),
                format!("--property=TimeoutStartSec={}", secs(*s)),
                "--".to_owned(),
                switch(previous),
                "test".to_owned(),
            ])
        }
        DeployStep::SetProfile { system } => {
            tools.get("nix-env")?.args(["--profile", SYSTEM_PROFILE, "--set", system.as_str()])
        }
        DeployStep::Boot { id, system } => {
            id_ok(id)?;
            tools.get("systemd-run")?.args([
                format!("--unit=macha-deploy-{id}-boot"),
                "--wait".to_owned(),
                "--quiet".to_owned(),
                "--collect".to_owned(),
                "--property=Type=oneshot".to_owned(),
                "--".to_owned(),
                switch(system),
                "boot".to_owned(),
            ])
        }
        DeployStep::Cleanup { id } => {
            id_ok(id)?;
            tools.get("systemctl")?.args(["stop".to_owned(), "--".to_owned(), format!("macha-deploy-{id}.service")])
        }
        DeployStep::Forget { id } => {
            id_ok(id)?;
            tools.get("systemctl")?.args([
                "reset-failed".to_owned(),
                "--".to_owned(),
                format!("macha-deploy-{id}.service"),
                format!("macha-deploy-{id}-deadman.service"),
            ])
        }
    })
}

/// Whether `flake` is a plain flake reference Macha may pass to Nix: no `#attribute` (Macha adds
/// the attribute), no leading dash, only the characters of paths, URLs and their queries.
pub fn valid_flake_ref(flake: &str) -> bool {
    !flake.is_empty()
        && flake.len() <= 1024
        && !flake.starts_with('-')
        && !flake.contains('#')
        && flake.bytes().all(|b| b.is_ascii_alphanumeric() || b"/:.?=&_+-~@%,".contains(&b))
}

/// Whether `attr` is an attribute path of a flake's outputs (`checks.x86_64-linux.unit`): dotted
/// names of letters, digits, `_`, `-` and `'`, none empty, none starting with a dash.
pub fn valid_attr_path(attr: &str) -> bool {
    attr.len() <= 256
        && attr.split('.').all(|part| {
            !part.is_empty()
                && !part.starts_with('-')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-'".contains(&b))
        })
}

/// Whether `input` is a flake input path (`nixpkgs`, `home-manager/nixpkgs`).
pub fn valid_input_path(input: &str) -> bool {
    input.len() <= 256
        && input.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('-')
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        })
}

/// The schemes of the locked flake references Macha pins an input to (docs/deploy.md).
pub const PINNABLE_SCHEMES: [&str; 5] = ["git+", "path:", "github:", "gitlab:", "sourcehut:"];

/// Whether `url` is a locked flake reference Macha may pass as one argument: one of
/// [`PINNABLE_SCHEMES`], printable ASCII without spaces, quotes or backslashes.
pub fn valid_locked_ref(url: &str) -> bool {
    PINNABLE_SCHEMES.iter().any(|s| url.starts_with(s))
        && url.len() <= 2048
        && url.bytes().all(|b| b.is_ascii_graphic() && !b"\"'`\\$;|<>".contains(&b))
}

/// One flake input pinned for a build: `--override-input INPUT LOCKED`, so that the build uses
/// exactly the locked revision that was shown, without writing the flake's lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPin<'a> {
    pub input: &'a str,
    pub locked: &'a str,
}

/// What Macha runs with a flake on the controller before a deployment (docs/deploy.md): builds a
/// host's system, runs a pre-deploy check, or reads the flake's lock. Nothing here activates
/// anything; Macha's own deployment protocol copies and activates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlakeStep<'a> {
    /// `nix build --no-link --json FLAKE#nixosConfigurations.HOST.config.system.build.toplevel`.
    BuildSystem { host: &'a crate::HostName },
    /// `nh os build FLAKE --hostname HOST --out-link OUT`: nh's build of the same attribute, with
    /// no nix-output-monitor, no diff against this machine's system and no activation (`os build`
    /// never activates); the built path is the out-link's target.
    NhBuildSystem { host: &'a crate::HostName, out_link: &'a str },
    /// `nix flake check [--no-build] FLAKE`.
    FlakeCheck { no_build: bool },
    /// `nix build --no-link --json FLAKE#ATTR`: one check attribute built.
    BuildAttr { attr: &'a str },
    /// `nix flake metadata --json --no-write-lock-file [--update-input INPUT] FLAKE`: the flake's
    /// lock as it is, or as it would be with `INPUT` updated, never written.
    Metadata { update_input: Option<&'a str> },
}

/// The experimental features every flake command of Macha's enables (Nix 2.8 and later).
const FLAKE_FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// `nixosConfigurations.HOST.config.system.build.toplevel`, the host's name quoted when it has dots.
pub fn system_attr(host: &crate::HostName) -> String {
    let h = host.as_str();
    if h.contains('.') {
        format!("nixosConfigurations.\"{h}\".config.system.build.toplevel")
    } else {
        format!("nixosConfigurations.{h}.config.system.build.toplevel")
    }
}

/// The command of one flake step on `flake`, with `pin` applied to builds and checks (a
/// [`FlakeStep::Metadata`] takes no pin). Every value is checked and passed as one argument.
pub fn flake_command(
    step: &FlakeStep<'_>,
    flake: &str,
    pin: Option<&InputPin<'_>>,
    tools: &Tools,
) -> Result<Command, CommandError> {
    if !valid_flake_ref(flake) {
        return Err(CommandError::NotACommand("a flake reference that is not plain (no #attribute, no options)"));
    }
    let pin_args = match pin {
        Some(p) if !valid_input_path(p.input) => {
            return Err(CommandError::NotACommand("a flake input name that is not an input path"));
        }
        Some(p) if !valid_locked_ref(p.locked) => {
            return Err(CommandError::NotACommand("a locked input reference Macha cannot pin"));
        }
        Some(_) if matches!(step, FlakeStep::Metadata { .. }) => {
            return Err(CommandError::NotACommand("a pinned input on a lock read"));
        }
        Some(p) => vec!["--override-input".to_owned(), p.input.to_owned(), p.locked.to_owned()],
        None => Vec::new(),
    };
    Ok(match step {
        FlakeStep::BuildSystem { host } => tools
            .get("nix")?
            .args(FLAKE_FEATURES)
            .args(["build", "--no-link", "--json"])
            .args(pin_args)
            .arg(format!("{flake}#{}", system_attr(host))),
        FlakeStep::NhBuildSystem { host, out_link } => {
            if !out_link.starts_with('/') || out_link.contains('\0') {
                return Err(CommandError::NotAbsolute((*out_link).to_owned()));
            }
            // After `--`: the arguments of nh's own `nix build`.
            tools
                .get("nh")?
                .args(["os", "build", flake])
                .args(["--hostname", host.as_str(), "--out-link", out_link])
                .args(["--no-nom", "--diff", "never", "--bypass-root-check", "--"])
                .args(FLAKE_FEATURES)
                .args(pin_args)
        }
        FlakeStep::FlakeCheck { no_build } => {
            let c = tools.get("nix")?.args(FLAKE_FEATURES).args(["flake", "check"]);
            let c = if *no_build { c.arg("--no-build") } else { c };
            c.args(pin_args).arg(flake)
        }
        FlakeStep::BuildAttr { attr } => {
            if !valid_attr_path(attr) {
                return Err(CommandError::NotACommand("an attribute path that is not plain"));
            }
            tools
                .get("nix")?
                .args(FLAKE_FEATURES)
                .args(["build", "--no-link", "--json"])
                .args(pin_args)
                .arg(format!("{flake}#{attr}"))
        }
        FlakeStep::Metadata { update_input } => {
            let c =
                tools.get("nix")?.args(FLAKE_FEATURES).args(["flake", "metadata", "--json", "--no-write-lock-file"]);
            let c = match update_input {
                Some(i) if !valid_input_path(i) => {
                    return Err(CommandError::NotACommand("a flake input name that is not an input path"));
                }
                Some(i) => c.args(["--update-input", i]),
                None => c,
            };
            c.arg(flake)
        }
    })
}

fn diagnostic_command(name: DiagnosticName, args: &DiagnosticArgs, tools: &Tools) -> Result<Command, CommandError> {
    let lines = args.lines.unwrap_or(200).clamp(1, 1000).to_string();
    let since = format!("-{}min", args.since_minutes.unwrap_or(60).clamp(1, 10080));
    let unit = args.unit.as_ref().map(|u| u.as_str().to_owned()).unwrap_or_default();
    Ok(match name {
        DiagnosticName::UnitStatus => {
            tools.get("systemctl")?.args(["status", "--no-pager", "--full", "--lines=20", "--"]).arg(unit)
        }
        DiagnosticName::UnitLogs => tools
            .journalctl()?
            .args(["--no-pager", "--output=short-iso", "--lines", &lines, "--since", &since, "--unit"])
            .arg(unit),
        DiagnosticName::FailedUnits => {
            tools.get("systemctl")?.args(["list-units", "--failed", "--no-pager", "--plain"])
        }
        DiagnosticName::JournalErrors => tools.journalctl()?.args([
            "--no-pager",
            "--output=short-iso",
            "--priority=err",
            "--lines",
            &lines,
            "--since",
            &since,
        ]),
        DiagnosticName::DiskUsage => tools.get("df")?.args(["-P", "-h", "-x", "tmpfs", "-x", "devtmpfs"]),
        DiagnosticName::NetworkAddresses => tools.get("ip")?.args(["-brief", "address"]),
        DiagnosticName::ListeningSockets => tools.get("ss")?.args(["-H", "-tulpn"]),
        DiagnosticName::ListTimers => tools.get("systemctl")?.args(["list-timers", "--all", "--no-pager"]),
        DiagnosticName::NixGenerations => {
            tools.get("nix-env")?.args(["--list-generations", "--profile", "/nix/var/nix/profiles/system"])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Hosts;

    fn tools() -> Tools {
        TOOL_NAMES.iter().fold(Tools::new(), |t, n| t.with(n, &format!("/usr/bin/{n}")))
    }

    #[test]
    fn unit_arguments_are_single_argv_elements_after_double_dash() {
        let a = Action::from_json(r#"{"kind":"diagnostic","name":"unit_status","args":{"unit":"nginx"},"reason":""}"#);
        let c =
            a.and_then(|a| command_for(&a, &tools()).map_err(|e| crate::action::ActionError::Invalid(e.to_string())));
        let c = c.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.program(), "/usr/bin/systemctl");
        assert_eq!(c.argv().last().map(String::as_str), Some("nginx.service"));
        assert_eq!(c.argv()[c.argv().len() - 2], "--");
    }

    #[test]
    fn every_diagnostic_builds_with_absolute_program() {
        for name in DiagnosticName::ALL {
            let args = DiagnosticArgs {
                unit: matches!(name, DiagnosticName::UnitStatus | DiagnosticName::UnitLogs)
                    .then(|| crate::UnitName::parse("x").unwrap_or_else(|e| panic!("{e}"))),
                ..Default::default()
            };
            let a = Action::Diagnostic { host: Hosts::default(), name, args, reason: String::new() };
            let c = command_for(&a, &tools()).unwrap_or_else(|e| panic!("{e}"));
            assert!(c.program().starts_with('/'));
            assert!(c.argv().iter().all(|a| !a.contains(['|', ';', '&', '`', '$', '>', '<', '\n'])));
        }
    }

    #[test]
    fn journal_reads_take_the_configured_directory() {
        let unit = crate::UnitName::parse("nginx").unwrap_or_else(|e| panic!("{e}"));
        let args = DiagnosticArgs { unit: Some(unit.clone()), ..Default::default() };
        let logs = Action::Diagnostic {
            host: Hosts::default(),
            name: DiagnosticName::UnitLogs,
            args: args.clone(),
            reason: String::new(),
        };
        let with_dir = tools().with_journal_directory("/var/log/journal-remote");
        let c = command_for(&logs, &with_dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.argv().contains(&"--directory=/var/log/journal-remote".to_owned()), "{}", c.display());
        let c = command_for(&logs, &tools()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.argv().iter().any(|a| a.starts_with("--directory")), "{}", c.display());
        assert!(tools().with_journal_directory("relative").journal_directory().is_none());
        // The model's reads: typed values only, bounded, the directory included.
        let q = LogQuery { unit: Some(unit), priority: Some(9), lines: 100_000, since_minutes: 0 };
        let c = read_logs(&q, &with_dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.program(), "/usr/bin/journalctl");
        assert_eq!(
            c.argv(),
            [
                "--directory=/var/log/journal-remote",
                "--no-pager",
                "--output=short-iso",
                "--quiet",
                "--lines=1000",
                "--since=-1min",
                "--priority=7",
                "--unit=nginx.service"
            ]
        );
        assert_eq!(read_logs(&q, &Tools::new()), Err(CommandError::ToolMissing { tool: "journalctl" }));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn git_log_takes_the_directory_as_one_argument() {
        let t = Tools::new().with("git", "/run/current-system/sw/bin/git");
        let c = git_log(&t, "/etc/nixos flake; rm -rf /", 1_700_000_000, 20).unwrap();
        assert_eq!(c.program(), "/run/current-system/sw/bin/git");
        assert_eq!(c.argv()[..2], ["-C".to_owned(), "/etc/nixos flake; rm -rf /".to_owned()]);
        assert!(c.argv().contains(&"--since=@1700000000".to_owned()));
        assert!(c.argv().contains(&"--max-count=20".to_owned()));
        assert!(c.argv().contains(&"core.fsmonitor=false".to_owned()));
        assert_eq!(c.argv().last().map(String::as_str), Some(GIT_LOG_FORMAT));
        assert!(matches!(git_log(&t, "etc/nixos", 0, 1), Err(CommandError::NotAbsolute(_))));
        assert!(matches!(git_log(&Tools::new(), "/etc/nixos", 0, 1), Err(CommandError::ToolMissing { tool: "git" })));
        assert!(git_log(&t, "/x", -5, 0).unwrap().argv().contains(&"--since=@0".to_owned()));
    }

    #[test]
    fn missing_tools_and_relative_paths() {
        let a = Action::JournalVacuum { host: Hosts::default(), max_age_days: 7, reason: String::new() };
        assert_eq!(command_for(&a, &Tools::new()), Err(CommandError::ToolMissing { tool: "journalctl" }));
        assert_eq!(
            Tools::new().with("journalctl", "journalctl").get("journalctl").err(),
            Some(CommandError::ToolMissing { tool: "journalctl" })
        );
        assert!(Tools::new().with("sh", "/bin/sh").iter().next().is_none(), "unknown tool names are ignored");
        let c = command_for(&a, &tools()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.argv(), ["--vacuum-time=7d"]);
    }

    /// The sudo rules of a managed host match a step's arguments joined by spaces; that is exact
    /// only while no argument of a privileged step contains whitespace.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn privileged_deploy_steps_have_no_argument_with_a_space() {
        let sys = StorePath::parse("/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixos-system-c1-26.05.2").unwrap();
        let old = StorePath::parse("/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-nixos-system-c1-26.05.1").unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let steps = [
            DeployStep::PinRoot { id, role: "old", path: &old },
            DeployStep::PinRoot { id, role: "new", path: &sys },
            DeployStep::Arm { id, previous: &old, secs: 900 },
            DeployStep::Disarm { id },
            DeployStep::Activate { id, system: &sys, previous: &old, secs: 300 },
            DeployStep::Rollback { id, previous: &old, secs: 300 },
            DeployStep::SetProfile { system: &sys },
            DeployStep::Boot { id, system: &sys },
            DeployStep::Cleanup { id },
            DeployStep::Forget { id },
        ];
        for step in &steps {
            assert!(step.changes_the_host(), "{step:?}");
            let c = deploy_command(step, &tools()).unwrap();
            assert!(c.program().starts_with('/'), "{step:?}");
            assert!(c.argv().iter().all(|a| !a.is_empty() && !a.contains(char::is_whitespace)), "{:?}", c.argv());
        }
        // Boot runs in its own transient unit, like every activation.
        let boot = deploy_command(&DeployStep::Boot { id, system: &sys }, &tools()).unwrap();
        assert_eq!(boot.program(), "/usr/bin/systemd-run");
        assert_eq!(boot.argv().last().map(String::as_str), Some("boot"));
        assert!(deploy_command(&DeployStep::Boot { id: "not-hex", system: &sys }, &tools()).is_err());
    }

    #[test]
    fn cleanup_units_are_fixed_names_with_days_as_the_only_instance() {
        let h = Hosts::default;
        let vacuum = |d| Action::JournalVacuum { host: h(), max_age_days: d, reason: String::new() };
        let gc = |d| Action::CollectGarbage { host: h(), older_than_days: d, reason: String::new() };
        let name = |a: &Action| cleanup_unit(a).map(|u| u.as_str().to_owned());
        assert_eq!(name(&vacuum(1)), Ok("macha-journal-vacuum@1.service".to_owned()));
        assert_eq!(name(&vacuum(30)), Ok("macha-journal-vacuum@30.service".to_owned()));
        assert_eq!(name(&gc(3650)), Ok("macha-collect-garbage@3650.service".to_owned()));
        assert_eq!(name(&vacuum(0)), Err(CleanupUnitError::DaysOutOfRange(0)));
        assert_eq!(name(&gc(3651)), Err(CleanupUnitError::DaysOutOfRange(3651)));
        assert_eq!(name(&gc(u32::MAX)), Err(CleanupUnitError::DaysOutOfRange(u32::MAX)));
        assert_eq!(
            name(&Action::StoreVerify { host: h(), reason: String::new() }),
            Ok("macha-store-verify.service".to_owned())
        );
        assert_eq!(
            name(&Action::StoreRepair { host: h(), reason: String::new() }),
            Ok("macha-store-repair.service".to_owned())
        );
        let restart = Action::RestartUnit {
            host: h(),
            unit: crate::UnitName::parse("macha-store-verify").unwrap_or_else(|e| panic!("{e}")),
            reason: String::new(),
        };
        assert_eq!(name(&restart), Err(CleanupUnitError::NotACleanup("a unit action")));
        // Every accepted instance has the shape the polkit rule allows: ^[1-9][0-9]{0,3}$.
        for d in 1..=CLEANUP_DAYS_MAX {
            let n = name(&vacuum(d)).unwrap_or_else(|e| panic!("{e}"));
            let instance = n.trim_start_matches("macha-journal-vacuum@").trim_end_matches(".service");
            assert!(
                (1..=4).contains(&instance.len())
                    && !instance.starts_with('0')
                    && instance.bytes().all(|b| b.is_ascii_digit()),
                "{n}"
            );
        }
    }

    #[test]
    fn flake_commands_build_only_and_take_each_value_as_one_argument() {
        let t = tools();
        let host = crate::HostName::parse("web1").unwrap_or_else(|e| panic!("{e}"));
        let fqdn = crate::HostName::parse("db1.example.org").unwrap_or_else(|e| panic!("{e}"));
        let pin = InputPin { input: "nixpkgs", locked: "git+file:///src/nixpkgs?ref=main&rev=0123abcd" };
        let argv = |step: &FlakeStep<'_>, pin: Option<&InputPin<'_>>| {
            flake_command(step, "path:/etc/nixos", pin, &t).unwrap_or_else(|e| panic!("{e}"))
        };
        let nix = argv(&FlakeStep::BuildSystem { host: &host }, Some(&pin));
        assert_eq!(nix.program(), "/usr/bin/nix");
        assert_eq!(
            nix.argv(),
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                "--no-link",
                "--json",
                "--override-input",
                "nixpkgs",
                "git+file:///src/nixpkgs?ref=main&rev=0123abcd",
                "path:/etc/nixos#nixosConfigurations.web1.config.system.build.toplevel"
            ]
        );
        let quoted = argv(&FlakeStep::BuildSystem { host: &fqdn }, None);
        assert_eq!(
            quoted.argv().last().map(String::as_str),
            Some("path:/etc/nixos#nixosConfigurations.\"db1.example.org\".config.system.build.toplevel")
        );
        // nh: `os build` (never switch, boot or test), the host and the out-link Macha reads, no
        // nom, no diff against this machine; the pin goes to nh's own `nix build` after `--`.
        let nh = argv(&FlakeStep::NhBuildSystem { host: &host, out_link: "/tmp/x/system-web1" }, Some(&pin));
        assert_eq!(nh.program(), "/usr/bin/nh");
        assert_eq!(
            nh.argv(),
            [
                "os",
                "build",
                "path:/etc/nixos",
                "--hostname",
                "web1",
                "--out-link",
                "/tmp/x/system-web1",
                "--no-nom",
                "--diff",
                "never",
                "--bypass-root-check",
                "--",
                "--extra-experimental-features",
                "nix-command flakes",
                "--override-input",
                "nixpkgs",
                "git+file:///src/nixpkgs?ref=main&rev=0123abcd"
            ]
        );
        assert!(!nh.argv().iter().any(|a| ["switch", "boot", "test"].contains(&a.as_str())));
        let relative =
            flake_command(&FlakeStep::NhBuildSystem { host: &host, out_link: "result" }, "path:/x", None, &t);
        assert_eq!(relative, Err(CommandError::NotAbsolute("result".into())));
        assert_eq!(
            flake_command(&FlakeStep::NhBuildSystem { host: &host, out_link: "/o" }, "path:/x", None, &Tools::new()),
            Err(CommandError::ToolMissing { tool: "nh" })
        );
        // The checks and the lock reads.
        let check = argv(&FlakeStep::FlakeCheck { no_build: true }, None);
        assert_eq!(check.argv()[2..], ["flake", "check", "--no-build", "path:/etc/nixos"]);
        let attr = argv(&FlakeStep::BuildAttr { attr: "checks.x86_64-linux.vm-test" }, Some(&pin));
        assert_eq!(attr.argv().last().map(String::as_str), Some("path:/etc/nixos#checks.x86_64-linux.vm-test"));
        assert!(attr.argv().contains(&"--override-input".to_owned()));
        let meta = argv(&FlakeStep::Metadata { update_input: Some("home-manager/nixpkgs") }, None);
        assert_eq!(
            meta.argv()[2..],
            [
                "flake",
                "metadata",
                "--json",
                "--no-write-lock-file",
                "--update-input",
                "home-manager/nixpkgs",
                "path:/etc/nixos"
            ]
        );
        assert!(
            !meta.argv().iter().any(|a| a == "--commit-lock-file" || a == "lock"),
            "the lock file is never written"
        );
    }

    #[test]
    fn flake_values_that_could_be_options_or_attributes_are_refused() {
        let t = tools();
        let host = crate::HostName::parse("web1").unwrap_or_else(|e| panic!("{e}"));
        let step = FlakeStep::BuildSystem { host: &host };
        for flake in ["", "-L", ".#web2", "path:/x y", "path:/x;rm", "github:o/r\n"] {
            assert!(flake_command(&step, flake, None, &t).is_err(), "{flake:?}");
        }
        for attr in ["", "-x", "checks..x", "checks.x y", "checks.\"x\"", "a.b#c"] {
            assert!(flake_command(&FlakeStep::BuildAttr { attr }, ".", None, &t).is_err(), "{attr:?}");
        }
        for input in ["", "-x", "a//b", "a b", "a.b"] {
            let pin = InputPin { input, locked: "path:/x?narHash=sha256-x" };
            assert!(flake_command(&step, ".", Some(&pin), &t).is_err(), "{input:?}");
            assert!(flake_command(&FlakeStep::Metadata { update_input: Some(input) }, ".", None, &t).is_err());
        }
        for locked in ["-L", "tarball+https://x/y.tar.gz", "git+file:///x y", "path:/x?a=$(b)"] {
            let pin = InputPin { input: "dep", locked };
            assert!(flake_command(&step, ".", Some(&pin), &t).is_err(), "{locked:?}");
        }
        let pin = InputPin { input: "dep", locked: "path:/x?narHash=sha256-x" };
        assert!(flake_command(&step, ".", Some(&pin), &t).is_ok());
        assert!(
            flake_command(&FlakeStep::Metadata { update_input: None }, ".", Some(&pin), &t).is_err(),
            "a lock read takes no pin"
        );
    }
}
