//! The build side of `macha deploy --flake`, for real on this machine (no lab): the pre-deploy
//! checks (`deploy.checks`) run in order before the daemon prepares anything, a failing one
//! refuses with its name and the last lines of its output; `--update-input` shows the input's old
//! and new revision, builds and checks with the new one and leaves the flake's lock file as it
//! was; `deploy.engine = "nh"` without nh is a clear error. Each phase's time is reported (text
//! and `--json`).
//!
//! Needs `nix` and `git` (Debian/Ubuntu: `apt-get install --no-install-recommends nix-bin git`;
//! `.ci/run` installs nix-bin): without them these tests fail with that message. The stand-in
//! flake is `tests/lab/deploy/flake.nix` (its systems and checks build with `/bin/sh`, offline,
//! without nixpkgs). The daemon knows the host `c1` without a pinned key, so every preparation
//! ends refused ("not trusted") — after the build side, which is what is tested here.

use super::support::daemon::TestDaemon;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Nix's settings for these tests: no build users, no sandbox, no binary cache (offline).
const NIX_CONFIG: &str =
    "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command flakes";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|e| panic!("{e}"))
}

fn need(tool: &str) {
    assert!(
        which::which(tool).is_ok(),
        "{tool} not found: these tests build real flakes. Install it (Debian/Ubuntu: `apt-get install \
         --no-install-recommends nix-bin git`)"
    );
}

/// A copy of the lab's stand-in fleet flake with `variants` as its variants.json.
fn fleet_flake(variants: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for f in ["flake.nix", "systems.nix", "switch-to-configuration.sh"] {
        std::fs::copy(root().join("tests/lab/deploy").join(f), dir.path().join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    std::fs::write(dir.path().join("variants.json"), variants).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// A daemon that knows `c1` (no pinned key: every preparation is refused, nothing is deployed).
fn daemon() -> TestDaemon {
    TestDaemon::builder().tables("[hosts.c1]\naddress = \"127.0.0.1\"\n").start()
}

/// `macha deploy ARGS` with a client configuration holding `deploy` (the `[deploy]` table's
/// lines), against `d`, with Nix's test settings and a private home.
fn deploy(d: &TestDaemon, deploy: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    need("nix");
    let config = d.path("client.toml");
    std::fs::write(&config, format!("[paths]\nsocket = \"{}\"\n[deploy]\n{deploy}\n", d.socket().display()))
        .unwrap_or_else(|e| panic!("{e}"));
    let home = d.path("home");
    std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("{e}"));
    Command::new(env!("CARGO_BIN_EXE_macha"))
        .arg("deploy")
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("MACHA_LOG", "error")
        .env_remove("MACHA_CONFIG")
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("HOME", &home)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn pre_deploy_checks_run_in_order_and_a_failure_refuses_before_anything_is_prepared() {
    let d = daemon();
    let flake = fleet_flake(r#"{"failing_check": true}"#);
    let flake_ref = format!("path:{}", flake.path().display());
    let checks = "checks = [ { attr = \"checks.x86_64-linux.passes\" }, { flake_check = true }, \
                  { attr = \"checks.x86_64-linux.passes\" } ]";
    let out = deploy(&d, checks, &["c1", "--flake", &flake_ref], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "refused, nothing changed\n{stdout}\n{stderr}");
    // The first check passed (timed), the second failed with its name and its output's last
    // lines; the third never ran, nothing was built, nothing was prepared.
    assert!(stderr.contains("pre-deploy check: checks.x86_64-linux.passes passed in"), "{stderr}");
    assert!(stderr.contains("refused: pre-deploy check nix flake check failed after"), "{stderr}");
    assert!(stderr.contains("stand-in check: test 2 FAILED: expected 200, got 503"), "{stderr}");
    // The first check's two lines; the third (the same attribute) never started.
    assert_eq!(stderr.matches("pre-deploy check: checks.x86_64-linux.passes").count(), 2, "{stderr}");
    assert!(!stderr.contains("#nixosConfigurations"), "no build after a failed check: {stderr}");
    let listed = d.json(&["deploy", "list", "--json"]);
    assert_eq!(listed, Value::Array(Vec::new()), "no approval was asked for");

    // The same checks on the flake without the failing one: all pass, then the build, then the
    // daemon's preparation (refused: c1 is not trusted), with each time in the JSON.
    std::fs::write(flake.path().join("variants.json"), "{}").unwrap_or_else(|e| panic!("{e}"));
    let out = deploy(&d, checks, &["c1", "--flake", &flake_ref, "--json"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let plan = &v[0];
    assert_eq!(plan["host"], "c1", "{v}");
    assert!(plan["refused"].as_str().is_some_and(|r| r.contains("not trusted")), "{v}");
    let names: Vec<&str> = plan["checks"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["checks.x86_64-linux.passes", "nix flake check", "checks.x86_64-linux.passes"], "{v}");
    assert!(plan["checks"].as_array().into_iter().flatten().all(|c| c["seconds"].as_f64().is_some()), "{v}");
    assert_eq!(plan["build"]["engine"], "nix", "{v}");
    assert!(plan["build"]["system"].as_str().is_some_and(|s| s.ends_with("-nixos-system-c1-26.05.7")), "{v}");
    let build = plan["build"]["seconds"].as_f64().unwrap_or(-1.0);
    let phase = plan["build_phase_seconds"].as_f64().unwrap_or(-1.0);
    assert!(build >= 0.0 && phase >= build, "the phase includes the build: {v}");
}

#[test]
fn the_text_output_shows_each_check_and_build_with_its_time() {
    let d = daemon();
    let flake = fleet_flake("{}");
    let flake_ref = format!("path:{}", flake.path().display());
    let out = deploy(&d, "checks = [ { flake_check = true, no_build = true } ]", &["c1", "--flake", &flake_ref], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let line = |prefix: &str| stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_owned();
    let check = line("check  nix flake check --no-build");
    assert!(check.contains("passed") && check.ends_with(" s"), "{stdout}");
    let build = line("build  c1");
    assert!(build.contains("nix") && build.ends_with(" s"), "{stdout}");
    assert!(stdout.contains("build phase (lock, checks, builds): "), "{stdout}");
    assert!(stdout.contains("not deployed: ") && stdout.contains("not trusted"), "{stdout}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("git: {e}"));
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A flake with one git input `dep` whose `version` the host's stand-in system contains; its
/// check passes only when `dep` is at version 2.
fn write_top(top: &Path, dep: &Path) {
    let flake = format!(
        r#"{{
  inputs.dep.url = "git+file://{}";
  outputs = {{ self, dep }}:
    let sh = name: script: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; }};
    in {{
      nixosConfigurations.c1.config.system.build.toplevel = sh "nixos-system-c1-dep-${{dep.version}}" "echo ${{dep.version}} > $out";
      checks.x86_64-linux.dep-is-new = sh "dep-is-new" "test ${{dep.version}} = 2 || {{ echo 'dep is version ${{dep.version}}, not 2'; exit 1; }}; echo ok > $out";
    }};
}}"#,
        dep.display()
    );
    std::fs::write(top.join("flake.nix"), flake).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn update_input_shows_the_lock_change_builds_the_new_revision_and_writes_no_lock_file() {
    need("git");
    need("nix");
    let d = daemon();
    let base = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (dep, top) = (base.path().join("dep"), base.path().join("top"));
    std::fs::create_dir_all(&dep).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&top).unwrap_or_else(|e| panic!("{e}"));
    git(&dep, &["init", "-q"]);
    let dep_flake = |v: u32| format!("{{ outputs = {{ self }}: {{ version = \"{v}\"; }}; }}\n");
    std::fs::write(dep.join("flake.nix"), dep_flake(1)).unwrap_or_else(|e| panic!("{e}"));
    git(&dep, &["add", "flake.nix"]);
    git(&dep, &["commit", "-q", "-m", "one"]);
    let old_rev = git(&dep, &["rev-parse", "HEAD"]);
    write_top(&top, &dep);
    let top_ref = format!("path:{}", top.display());
    let lock = Command::new("nix")
        .args(["flake", "lock", &top_ref])
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("HOME", base.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lock.status.success(), "nix flake lock: {}", String::from_utf8_lossy(&lock.stderr));
    let lock_before = std::fs::read(top.join("flake.lock")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dep.join("flake.nix"), dep_flake(2)).unwrap_or_else(|e| panic!("{e}"));
    git(&dep, &["commit", "-q", "-a", "-m", "two"]);
    let new_rev = git(&dep, &["rev-parse", "HEAD"]);

    let checks = "checks = [ { attr = \"checks.x86_64-linux.dep-is-new\" } ]";
    // Without the update the check sees the locked version 1 and refuses.
    let out = deploy(&d, checks, &["c1", "--flake", &top_ref], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("dep is version 1, not 2"), "{stderr}");

    // With it: the lock diff first, the check and the build on the new revision.
    let out = deploy(&d, checks, &["c1", "--flake", &top_ref, "--update-input", "dep"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "prepared, refused (c1 is not trusted)\n{stdout}\n{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(first, format!("lock: dep  rev {} → rev {}", &old_rev[..12], &new_rev[..12]), "{stdout}");
    assert!(stdout.contains(&format!("rev={new_rev}")), "the pinned reference is shown: {stdout}");
    assert!(stderr.contains("pre-deploy check: checks.x86_64-linux.dep-is-new passed"), "{stderr}");
    let built = stderr
        .lines()
        .find_map(|l| l.strip_prefix("built ").and_then(|r| r.split_whitespace().next()))
        .unwrap_or_else(|| panic!("no built path: {stderr}"));
    assert!(built.ends_with("-nixos-system-c1-dep-2"), "{built}");
    assert_eq!(std::fs::read_to_string(built).unwrap_or_default().trim(), "2");
    assert_eq!(
        std::fs::read(top.join("flake.lock")).unwrap_or_default(),
        lock_before,
        "the flake's lock file is not written"
    );

    // The same in JSON: the change, with both revisions, on each host's entry.
    let out = deploy(&d, checks, &["c1", "--flake", &top_ref, "--update-input", "dep", "--json"], &[]);
    let (stdout, stderr) = text(&out);
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let lock = &v[0]["lock"];
    assert_eq!((lock["old"]["rev"].as_str(), lock["new"]["rev"].as_str()), (Some(&*old_rev), Some(&*new_rev)), "{v}");
    assert_eq!(lock["changed"], true, "{v}");
    assert!(lock["new"]["nar_hash"].as_str().is_some_and(|h| h.starts_with("sha256-")), "{v}");

    // An input the flake does not have is named.
    let out = deploy(&d, "", &["c1", "--flake", &top_ref, "--update-input", "nope"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("has no input nope"), "{stderr}");
}

#[test]
fn the_nh_engine_without_nh_is_an_error_that_names_the_setting() {
    let d = daemon();
    let flake = fleet_flake("{}");
    let flake_ref = format!("path:{}", flake.path().display());
    // A PATH with nix but not nh.
    let nix = which::which("nix").unwrap_or_else(|e| panic!("nix: {e}"));
    let bin = d.path("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&nix, bin.join("nix")).unwrap_or_else(|e| panic!("{e}"));
    let path = bin.display().to_string();
    let out = deploy(&d, "engine = \"nh\"", &["c1", "--flake", &flake_ref], &[("PATH", &path)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(69), "{stdout}\n{stderr}");
    assert!(stderr.contains("deploy.engine = \"nh\", but nh is not installed"), "{stderr}");
    assert!(stderr.contains("programs.nh.enable") && stderr.contains("deploy.engine = \"nix\""), "{stderr}");
    assert!(!stderr.contains("#nixosConfigurations"), "never built with nix instead: {stderr}");
}

/// The directory holding a real `nh` (tests/run.sh installs nh 4.4.0 from crates.io into a cache
/// and sets `MACHA_TEST_NH`); a lab-tier test without it fails, it never passes silently.
fn nh_dir() -> PathBuf {
    let dir = std::env::var("MACHA_TEST_NH")
        .unwrap_or_else(|_| panic!("MACHA_TEST_NH is not set: tests/run.sh installs nh and sets it"));
    let dir = PathBuf::from(dir);
    assert!(dir.join("nh").is_file(), "no nh in {}", dir.display());
    dir
}

#[test]
#[ignore = "lab: needs a real nh (MACHA_TEST_NH, set by tests/run.sh)"]
fn lab_the_nh_engine_builds_what_nix_builds_and_refuses_plainly_when_nh_cannot_run() {
    let d = daemon();
    let flake = fleet_flake("{}");
    let flake_ref = format!("path:{}", flake.path().display());
    // A PATH with nix and the real nh.
    let nix = which::which("nix").unwrap_or_else(|e| panic!("nix: {e}"));
    let bin = d.path("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&nix, bin.join("nix")).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(nh_dir().join("nh"), bin.join("nh")).unwrap_or_else(|e| panic!("{e}"));
    let path = format!("{}:/usr/bin:/bin", bin.display());
    // nh 4.4 asks `nix config show`, which Nix 2.8 lacks: Macha refuses, quoting nh, and never
    // falls back to nix by itself.
    let out = deploy(&d, "engine = \"nh\"", &["c1", "--flake", &flake_ref], &[("PATH", &path)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(65), "{stdout}\n{stderr}");
    assert!(stderr.contains("'config' is not a recognised command"), "{stderr}");
    assert!(stderr.contains("with nh") && !stderr.contains("with nix"), "never built with nix instead: {stderr}");
    // With nh's own checks off (the person's choice), nh builds, and exactly what nix builds.
    let by_nh = deploy(
        &d,
        "engine = \"nh\"",
        &["c1", "--flake", &flake_ref, "--json"],
        &[("PATH", &path), ("NH_NO_CHECKS", "1")],
    );
    let by_nix = deploy(&d, "engine = \"nix\"", &["c1", "--flake", &flake_ref, "--json"], &[("PATH", &path)]);
    let system = |out: &Output| {
        let (stdout, stderr) = text(out);
        let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        (
            v[0]["build"]["engine"].as_str().unwrap_or("?").to_owned(),
            v[0]["build"]["system"].as_str().unwrap_or("?").to_owned(),
        )
    };
    let (nh_engine, nh_system) = system(&by_nh);
    let (nix_engine, nix_system) = system(&by_nix);
    assert_eq!((nh_engine.as_str(), nix_engine.as_str()), ("nh", "nix"));
    assert!(nh_system.ends_with("-nixos-system-c1-26.05.7"), "{nh_system}");
    assert_eq!(nh_system, nix_system, "nh and nix built different systems");
}
