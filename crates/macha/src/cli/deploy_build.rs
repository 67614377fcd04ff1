//! The build side of `macha deploy --flake`, on the controller and as the person running the
//! command: the lock update of `--update-input` (computed, shown, never written), the pre-deploy
//! checks (`deploy.checks`, in order, before anything is prepared or approved) and each host's
//! build with the configured engine (`deploy.engine`: `nix build` or `nh os build`, which only
//! builds). Every command comes from `macha_core::command::flake_command`; each phase is timed.
//! Decision 0013 says why nh never activates and why the checks run before the approval.

use super::{EXIT_DATAERR, EXIT_UNAVAILABLE, EXIT_USAGE, Failure, fail};
use crate::config::{Config, DeployEngine, PreDeployCheck};
use macha_core::HostName;
use macha_core::command::{Command, FlakeStep, InputPin, Tools, flake_command};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Exit code of a deployment refused before anything changed (docs/deploy.md).
pub const EXIT_REFUSED: u8 = 3;
/// The lines of a failed command's output a refusal quotes.
const TAIL_LINES: usize = 20;
/// The nh options Macha passes (`nh os build --help` must list each).
const NH_OPTIONS: [&str; 5] = ["--hostname", "--out-link", "--no-nom", "--diff", "--bypass-root-check"];

/// The programs of the build side: `nix`, and `nh` when it is the engine.
#[derive(Debug, Clone)]
pub struct Builder {
    tools: Tools,
    engine: DeployEngine,
    /// `PATH` of the processes started here: the directory of the `nix` used first, so that nh
    /// runs the same Nix.
    path: String,
    /// nh's path, when nh is the engine.
    nh: Option<String>,
    /// nh's version line, when nh is the engine.
    pub nh_version: Option<String>,
}

/// Seconds with millisecond precision, for the output.
fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

fn resolve(config: &Config, tool: &'static str) -> Option<String> {
    config.tools.get(tool).cloned().or_else(|| which::which(tool).ok().map(|p| p.display().to_string()))
}

impl Builder {
    /// Finds `nix` (and `nh` with `deploy.engine = "nh"`, checking that it has the options Macha
    /// passes); a missing or unusable tool is an error that says what to do, never a fallback.
    pub fn new(config: &Config) -> Result<Builder, Failure> {
        let nix = resolve(config, "nix").ok_or_else(|| {
            fail(
                EXIT_UNAVAILABLE,
                anyhow::format_err!("nix is not installed on this machine (not on PATH, no tools.nix)"),
            )
        })?;
        let dir = Path::new(&nix).parent().map(|p| p.display().to_string()).unwrap_or_default();
        let base = macha_core::command::SPAWN_ENV.iter().find(|(k, _)| *k == "PATH").map_or("", |(_, v)| *v);
        let path = if dir.is_empty() { base.to_owned() } else { format!("{dir}:{base}") };
        let mut b = Builder {
            tools: Tools::new().with("nix", &nix),
            engine: config.deploy.engine,
            path,
            nh: None,
            nh_version: None,
        };
        if b.engine == DeployEngine::Nh {
            let nh = resolve(config, "nh").ok_or_else(|| {
                fail(
                    EXIT_UNAVAILABLE,
                    anyhow::format_err!(
                        "deploy.engine = \"nh\", but nh is not installed on this machine (not on PATH, no tools.nh). \
                         Install nh (NixOS: programs.nh.enable = true; elsewhere: nix profile install nixpkgs#nh, \
                         or cargo install nh) or set deploy.engine = \"nix\" in the configuration"
                    ),
                )
            })?;
            b.tools = b.tools.with("nh", &nh);
            b.nh = Some(nh.clone());
            b.nh_version = Some(b.nh_usable(&nh)?);
        }
        Ok(b)
    }

    /// `nh --version`, and `nh os build --help` listing every option Macha passes.
    fn nh_usable(&self, nh: &str) -> Result<String, Failure> {
        let run = |args: &[&str]| -> Result<String, Failure> {
            let c = Command::new(nh).map_err(|e| fail(EXIT_UNAVAILABLE, anyhow::format_err!("tools.nh: {e}")))?;
            let out = self.spawn(&c.args(args.iter().copied()))?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let version = run(&["--version"])?.lines().next().unwrap_or_default().trim().to_owned();
        let help = run(&["os", "build", "--help"])?;
        let missing: Vec<&str> = NH_OPTIONS.iter().copied().filter(|o| !help.contains(o)).collect();
        let wrong = match (version.is_empty(), missing.is_empty()) {
            (true, _) => Some("`nh --version` printed nothing".to_owned()),
            (false, false) => Some(format!("{version}: `nh os build` lacks {}", missing.join(", "))),
            (false, true) => None,
        };
        if let Some(wrong) = wrong {
            return Err(fail(
                EXIT_UNAVAILABLE,
                anyhow::format_err!(
                    "deploy.engine = \"nh\", but {nh} cannot be used ({wrong}). Macha needs nh 4 or later; \
                     update nh or set deploy.engine = \"nix\""
                ),
            ));
        }
        Ok(version)
    }

    /// Runs `cmd` with the person's home and Nix settings and nothing else of the environment.
    /// nh also gets the flake features in `NIX_CONFIG` (for the Nix commands it runs itself) and
    /// the person's `NH_NO_CHECKS`, if they set it: Macha never sets it on its own.
    fn spawn(&self, cmd: &Command) -> Result<std::process::Output, Failure> {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        let mut nix_config = std::env::var("NIX_CONFIG").unwrap_or_default();
        let nh = self.nh.as_deref() == Some(cmd.program());
        let mut c = std::process::Command::new(cmd.program());
        c.args(cmd.argv()).env_clear().envs(macha_core::command::SPAWN_ENV).env("PATH", &self.path).env("HOME", home);
        if nh {
            nix_config.push_str("\nextra-experimental-features = nix-command flakes");
            c.env("NO_COLOR", "1");
            if let Some(v) = std::env::var_os("NH_NO_CHECKS") {
                c.env("NH_NO_CHECKS", v);
            }
        }
        c.env("NIX_CONFIG", nix_config)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| fail(EXIT_UNAVAILABLE, anyhow::format_err!("cannot run {}: {e}", cmd.program())))
    }

    fn command(&self, step: &FlakeStep<'_>, flake: &str, pin: Option<&InputPin<'_>>) -> Result<Command, Failure> {
        flake_command(step, flake, pin, &self.tools).map_err(|e| fail(EXIT_USAGE, anyhow::format_err!("{e}")))
    }
}

/// The last lines of a failed command's output (Nix's build-user noise and terminal colours left
/// out).
fn tail(out: &std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let text = strip_ansi(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("nixbld") && !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// What nh's failure means, when Macha knows (appended to the refusal).
fn nh_hint(output: &str) -> Option<&'static str> {
    output.contains("'config' is not a recognised command").then_some(
        "nh checks Nix's features with `nix config show experimental-features`, which this Nix does not have \
         (Nix 2.8 has `nix show-config`). Use a newer Nix, set deploy.engine = \"nix\", or run with NH_NO_CHECKS=1 \
         (nh then skips its own checks; Macha still checks the built path)",
    )
}

/// `[{"drvPath": …, "outputs": {"out": PATH}}]`, what `nix build --json` prints
/// (`--print-out-paths` needs Nix 2.9).
fn built_path(stdout: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Built {
        outputs: BTreeMap<String, String>,
    }
    let built: Vec<Built> = serde_json::from_slice(stdout).ok()?;
    built.into_iter().next().and_then(|b| b.outputs.into_values().next())
}

/// One pre-deploy check that passed, and its time.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub passed: bool,
    pub seconds: f64,
}

/// Runs `deploy.checks` in order on the flake (with the pinned input, if any); the first failure
/// refuses the deployment with the check's name, its time and the last lines of its output.
pub fn run_checks(
    b: &Builder,
    checks: &[PreDeployCheck],
    flake: &str,
    pin: Option<&InputPin<'_>>,
) -> Result<Vec<CheckReport>, Failure> {
    let mut reports = Vec::with_capacity(checks.len());
    for check in checks {
        let name = check.name();
        let step = match check {
            PreDeployCheck::FlakeCheck { no_build } => FlakeStep::FlakeCheck { no_build: *no_build },
            PreDeployCheck::Attr(attr) => FlakeStep::BuildAttr { attr },
        };
        let cmd = b.command(&step, flake, pin)?;
        eprintln!("pre-deploy check: {name}");
        let start = Instant::now();
        let out = b.spawn(&cmd)?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(fail(
                EXIT_REFUSED,
                anyhow::format_err!(
                    "refused: pre-deploy check {name} failed after {:.1} s (nothing was prepared, copied or \
                     approved):\n{}",
                    secs(took),
                    tail(&out)
                ),
            ));
        }
        eprintln!("pre-deploy check: {name} passed in {:.1} s", secs(took));
        reports.push(CheckReport { name, passed: true, seconds: secs(took) });
    }
    Ok(reports)
}

/// One host's build: the engine, the attribute, the path and its time.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub engine: &'static str,
    pub attr: String,
    pub system: String,
    pub seconds: f64,
}

/// Builds `host`'s system from `flake` with the configured engine. With nh the out-link goes into
/// `links` (a directory that lives as long as the command, so the system stays a GC root while it
/// is deployed) and the built path is its target.
pub fn build_system(
    b: &Builder,
    flake: &str,
    host: &str,
    pin: Option<&InputPin<'_>>,
    links: &Path,
) -> Result<BuildReport, Failure> {
    let name = HostName::parse(host).map_err(|e| fail(EXIT_USAGE, anyhow::format_err!("{host}: {e}")))?;
    let attr = format!("{flake}#{}", macha_core::command::system_attr(&name));
    let link = links.join(format!("system-{}", name.as_str())).display().to_string();
    let step = match b.engine {
        DeployEngine::Nix => FlakeStep::BuildSystem { host: &name },
        DeployEngine::Nh => FlakeStep::NhBuildSystem { host: &name, out_link: &link },
    };
    let cmd = b.command(&step, flake, pin)?;
    eprintln!("building {attr} with {}", b.engine.as_str());
    let start = Instant::now();
    let out = b.spawn(&cmd)?;
    let took = start.elapsed();
    if !out.status.success() {
        let last = tail(&out);
        let hint = nh_hint(&last).map(|h| format!("\n{h}")).unwrap_or_default();
        return Err(fail(
            EXIT_DATAERR,
            anyhow::format_err!(
                "building {attr} with {} failed after {:.1} s:\n{last}{hint}",
                b.engine.as_str(),
                secs(took)
            ),
        ));
    }
    let path = match b.engine {
        DeployEngine::Nix => built_path(&out.stdout).unwrap_or_default(),
        DeployEngine::Nh => std::fs::read_link(&link).map(|p| p.display().to_string()).unwrap_or_default(),
    };
    macha_core::StorePath::parse(&path).map_err(|e| {
        fail(EXIT_DATAERR, anyhow::format_err!("{attr}: {} built no system path ({path:?}): {e}", b.engine.as_str()))
    })?;
    eprintln!("built {path} in {:.1} s", secs(took));
    Ok(BuildReport { engine: b.engine.as_str(), attr, system: path, seconds: secs(took) })
}

/// An input's locked state, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Locked {
    /// The locked reference (`git+file:///src/dep?ref=main&rev=…`).
    pub url: String,
    pub rev: Option<String>,
    pub nar_hash: Option<String>,
    pub last_modified: Option<i64>,
}

/// `--update-input`: the input's locked state before and after the update (the "lock diff"), the
/// time it took, and the reference every build and check of this deployment is pinned to.
#[derive(Debug, Clone, Serialize)]
pub struct LockChange {
    pub input: String,
    /// `None`: the flake's lock did not have the input yet.
    pub old: Option<Locked>,
    pub new: Locked,
    pub changed: bool,
    pub seconds: f64,
}

impl LockChange {
    pub fn pin(&self) -> InputPin<'_> {
        InputPin { input: &self.input, locked: &self.new.url }
    }

    /// The text shown before the closure diff.
    pub fn render(&self) -> String {
        let short = |l: &Locked| match (&l.rev, &l.nar_hash) {
            (Some(rev), _) => format!("rev {}", &rev[..rev.len().min(12)]),
            (None, Some(h)) => format!("narHash {h}"),
            (None, None) => l.url.clone(),
        };
        let old = self.old.as_ref().map_or_else(|| "(not locked)".to_owned(), short);
        let mut s = format!("lock: {}  {} → {}", self.input, old, short(&self.new));
        if !self.changed {
            s.push_str("  (unchanged)");
        }
        for (label, l) in [("old", self.old.as_ref()), ("new", Some(&self.new))] {
            if let Some(l) = l {
                s.push_str(&format!("\n  {label}: {}", l.url));
                if let Some(h) = &l.nar_hash {
                    s.push_str(&format!("  narHash {h}"));
                }
            }
        }
        s
    }
}

/// Percent-encodes a query value (what Nix's own URLs encode).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A flake lock (`flake.lock`, or the `locks` of `nix flake metadata --json`), version 7.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Lock {
    #[serde(default)]
    nodes: BTreeMap<String, LockNode>,
    #[serde(default = "root_name")]
    root: String,
}

fn root_name() -> String {
    "root".to_owned()
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
struct LockNode {
    #[serde(default)]
    inputs: BTreeMap<String, InputRef>,
    locked: Option<LockedAttrs>,
}

/// An input of a node: another node's name, or a `follows` path of input names from the root.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum InputRef {
    Node(String),
    Follows(Vec<String>),
}

/// The `locked` attributes of a node (the ones Macha reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedAttrs {
    #[serde(rename = "type", default)]
    kind: String,
    url: Option<String>,
    path: Option<String>,
    owner: Option<String>,
    repo: Option<String>,
    host: Option<String>,
    dir: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    rev: Option<String>,
    nar_hash: Option<String>,
    last_modified: Option<i64>,
    submodules: Option<bool>,
    shallow: Option<bool>,
    all_refs: Option<bool>,
}

/// The locked reference of one lock-file node's `locked` attributes: what `--override-input`
/// takes to build with exactly this revision. Only the input types whose reference pins the
/// content (a git revision, a forge revision, a path's NAR hash) are taken; others are refused.
pub fn locked_url(l: &LockedAttrs) -> Result<String, String> {
    let mut query: Vec<(&str, String)> = Vec::new();
    let url = match l.kind.as_str() {
        "git" => {
            let (Some(url), Some(rev)) = (&l.url, &l.rev) else {
                return Err("a git input locked without url and rev".to_owned());
            };
            if url.contains('?') || url.contains('#') {
                return Err(format!("a git input whose url has a query ({url})"));
            }
            if let Some(r) = &l.git_ref {
                query.push(("ref", query_value(r)));
            }
            query.push(("rev", query_value(rev)));
            for (flag, on) in [("submodules", l.submodules), ("shallow", l.shallow), ("allRefs", l.all_refs)] {
                if on == Some(true) {
                    query.push((flag, "1".to_owned()));
                }
            }
            format!("git+{url}")
        }
        "path" => {
            let (Some(path), Some(nar)) = (&l.path, &l.nar_hash) else {
                return Err("a path input locked without path and narHash".to_owned());
            };
            query.push(("narHash", query_value(nar)));
            format!("path:{path}")
        }
        kind @ ("github" | "gitlab" | "sourcehut") => {
            let (Some(owner), Some(repo), Some(rev)) = (&l.owner, &l.repo, &l.rev) else {
                return Err(format!("a {kind} input locked without owner, repo and rev"));
            };
            if let Some(h) = &l.host {
                query.push(("host", query_value(h)));
            }
            format!("{kind}:{owner}/{repo}/{rev}")
        }
        other => {
            return Err(format!(
                "an input of type {other:?} (Macha pins git, path, github, gitlab and sourcehut inputs)"
            ));
        }
    };
    if let Some(dir) = &l.dir {
        query.push(("dir", query_value(dir)));
    }
    let q: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let full = if q.is_empty() { url } else { format!("{url}?{}", q.join("&")) };
    if !macha_core::command::valid_locked_ref(&full) {
        return Err(format!("a locked reference Macha cannot pass on ({full})"));
    }
    Ok(full)
}

impl Lock {
    /// The `locked` attributes of `input` (`a` or `a/b`, through `follows`), if it is locked.
    fn locked(&self, input: &str) -> Option<&LockedAttrs> {
        self.node(input, 0)?.locked.as_ref()
    }

    fn node(&self, input: &str, depth: usize) -> Option<&LockNode> {
        if depth > 16 {
            return None;
        }
        let mut node = self.nodes.get(&self.root)?;
        for part in input.split('/') {
            node = match node.inputs.get(part)? {
                InputRef::Node(name) => self.nodes.get(name)?,
                InputRef::Follows(path) => self.node(&path.join("/"), depth + 1)?,
            };
        }
        Some(node)
    }
}

fn locked_of(lock: &Lock, input: &str) -> Result<Option<Locked>, String> {
    let Some(l) = lock.locked(input) else { return Ok(None) };
    Ok(Some(Locked {
        url: locked_url(l)?,
        rev: l.rev.clone(),
        nar_hash: l.nar_hash.clone(),
        last_modified: l.last_modified,
    }))
}

/// What `nix flake metadata --json` prints that Macha reads.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Metadata {
    #[serde(default)]
    locks: Lock,
}

/// Reads the flake's lock as it is and as it would be with `input` updated (`nix flake metadata
/// --no-write-lock-file`, twice: the user's lock file is never written) and returns the change.
pub fn update_input(b: &Builder, flake: &str, input: &str) -> Result<LockChange, Failure> {
    if !macha_core::command::valid_input_path(input) {
        return Err(fail(EXIT_USAGE, anyhow::format_err!("--update-input {input:?} is not a flake input name")));
    }
    let start = Instant::now();
    let read = |update: Option<&str>| -> Result<Lock, Failure> {
        let cmd = b.command(&FlakeStep::Metadata { update_input: update }, flake, None)?;
        let out = b.spawn(&cmd)?;
        if !out.status.success() {
            return Err(fail(EXIT_DATAERR, anyhow::format_err!("reading the lock of {flake} failed:\n{}", tail(&out))));
        }
        let m: Metadata = serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(EXIT_DATAERR, anyhow::format_err!("nix flake metadata printed no lock: {e}")))?;
        Ok(m.locks)
    };
    eprintln!("updating input {input} of {flake} (the lock file is not written)");
    let before = read(None)?;
    let after = read(Some(input))?;
    let unpinnable = |e: String| {
        fail(
            EXIT_DATAERR,
            anyhow::format_err!(
                "--update-input {input}: {e}; Macha cannot build exactly the revision it shows. Update the lock \
                 yourself (nix flake lock --update-input {input}) and deploy without --update-input"
            ),
        )
    };
    let old = locked_of(&before, input).map_err(unpinnable)?;
    let new = locked_of(&after, input).map_err(unpinnable)?.ok_or_else(|| {
        fail(EXIT_USAGE, anyhow::format_err!("--update-input {input}: the flake {flake} has no input {input}"))
    })?;
    let changed = old.as_ref() != Some(&new);
    Ok(LockChange { input: input.to_owned(), old, new, changed, seconds: secs(start.elapsed()) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: serde_json::Value) -> LockedAttrs {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn locked_references_pin_the_revision_or_the_content() {
        let git = attrs(
            json!({"type": "git", "url": "file:///src/dep", "ref": "main", "rev": "d90611d6", "narHash": "sha256-x", "lastModified": 1}),
        );
        assert_eq!(locked_url(&git).unwrap(), "git+file:///src/dep?ref=main&rev=d90611d6");
        let sub = attrs(
            json!({"type": "git", "url": "https://example.org/r.git", "rev": "ab", "submodules": true, "dir": "sub/flake"}),
        );
        assert_eq!(locked_url(&sub).unwrap(), "git+https://example.org/r.git?rev=ab&submodules=1&dir=sub%2Fflake");
        let path = attrs(json!({"type": "path", "path": "/src/p", "narHash": "sha256-ZGU0+/qU="}));
        assert_eq!(locked_url(&path).unwrap(), "path:/src/p?narHash=sha256-ZGU0%2B%2FqU%3D");
        let gh = attrs(json!({"type": "github", "owner": "NixOS", "repo": "nixpkgs", "rev": "0123abcd"}));
        assert_eq!(locked_url(&gh).unwrap(), "github:NixOS/nixpkgs/0123abcd");
        let tarball = attrs(json!({"type": "tarball", "url": "https://example.org/x.tar.gz", "narHash": "sha256-x"}));
        assert!(locked_url(&tarball).unwrap_err().contains("\"tarball\""));
        assert!(locked_url(&attrs(json!({"type": "git", "url": "file:///x"}))).is_err(), "no rev: nothing pinned");
        let hostile = attrs(json!({"type": "git", "url": "file:///x y", "rev": "ab"}));
        assert!(locked_url(&hostile).is_err(), "a space never reaches an argument");
    }

    #[test]
    fn inputs_are_found_through_nesting_and_follows() {
        let lock: Lock = serde_json::from_value(json!({
            "root": "root",
            "nodes": {
                "root": {"inputs": {"a": "a_2", "b": ["a", "c"]}},
                "a_2": {"inputs": {"c": "c"}, "locked": {"type": "path", "path": "/a", "narHash": "sha256-a"}},
                "c": {"locked": {"type": "path", "path": "/c", "narHash": "sha256-c"}}
            }
        }))
        .unwrap();
        let path = |i: &str| lock.locked(i).and_then(|l| l.path.as_deref());
        assert_eq!(path("a"), Some("/a"));
        assert_eq!(path("a/c"), Some("/c"));
        assert_eq!(path("b"), Some("/c"), "b follows a/c");
        assert_eq!(path("nope"), None);
    }

    #[test]
    fn a_failure_quotes_its_last_lines_without_colours() {
        use std::os::unix::process::ExitStatusExt;
        let mut err = String::from("\u{1b}[33m!\u{1b}[0m Warning: old Nix\nError:\n");
        for i in 0..30 {
            err.push_str(&format!("line {i}\n"));
        }
        err.push_str("   0: \u{1b}[91mnix config show experimental-features failed\u{1b}[0m\n");
        err.push_str("      error: 'config' is not a recognised command\n");
        let out = std::process::Output {
            status: std::process::ExitStatus::from_raw(256),
            stdout: Vec::new(),
            stderr: err.into_bytes(),
        };
        let t = tail(&out);
        assert_eq!(t.lines().count(), TAIL_LINES, "{t}");
        assert!(!t.contains('\u{1b}') && t.contains("0: nix config show experimental-features failed"), "{t}");
        assert!(!t.contains("line 11\n") && t.contains("line 12"), "only the last lines: {t}");
        assert!(nh_hint(&t).is_some_and(|h| h.contains("NH_NO_CHECKS=1") && h.contains("deploy.engine")));
        assert_eq!(nh_hint("error: attribute 'c9' missing"), None);
    }

    #[test]
    fn the_lock_diff_names_both_revisions() {
        let l = |rev: &str| Locked {
            url: format!("git+file:///d?rev={rev}"),
            rev: Some(rev.to_owned()),
            nar_hash: Some(format!("sha256-{rev}")),
            last_modified: None,
        };
        let c = LockChange {
            input: "dep".into(),
            old: Some(l("aaaaaaaaaaaaaaaa")),
            new: l("bbbbbbbbbbbbbbbb"),
            changed: true,
            seconds: 0.1,
        };
        let text = c.render();
        assert!(text.starts_with("lock: dep  rev aaaaaaaaaaaa → rev bbbbbbbbbbbb"), "{text}");
        assert!(text.contains("narHash sha256-aaaaaaaaaaaaaaaa") && text.contains("narHash sha256-bbbbbbbbbbbbbbbb"));
        assert_eq!(c.pin(), InputPin { input: "dep", locked: "git+file:///d?rev=bbbbbbbbbbbbbbbb" });
    }
}
