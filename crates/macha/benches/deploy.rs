//! Deployment benchmark, printed as a table (not timed tests), against the Nix containers of
//! `MACHA_LAB_NIX=1 tests/lab/nspawn.sh up 10` (c1..c10: systemd, sshd, Debian's Nix daemon) and the
//! lab's stand-in systems (tests/lab/deploy/systems.nix, built here with Debian's Nix: NixOS itself
//! cannot be built on this machine).
//!
//! 1. One host: `macha deploy c1 --system S --approve`, `MACHA_BENCH_ROUNDS` times (default 3),
//!    each to a new generation: the wall time of the command and each phase's time as the
//!    executor reports it (preflight, copy, pin, arm, activate, verify, commit).
//! 2. The same change done bare on the same kind of closure: `nix copy --to ssh-ng://` plus
//!    `ssh … switch-to-configuration test` (what `nh os switch --target-host` does, without its
//!    build): Macha's overhead is the ratio of the two, in the same run.
//! 3. Three hosts, then every container up to ten, at once (`--parallel N`): the command's wall time
//!    and the slowest host's phases.
//!
//! Before each one-host round the build (`nix-build` of the stand-in) and the diff
//! (`macha deploy --diff-only`: the host's running closure read over SSH and diffed) are timed too.
//!
//! `MACHA_LAB_NSPAWN` (default `/run/macha-lab/nspawn`) and `MACHA_LAB` (default
//! `/var/cache/macha-lab`) find the lab.

#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::daemon::TestDaemon;

const NIX_CONFIG: &str =
    "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command flakes";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_macha") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default().join("macha")
}

fn build(host: &str, generation: u32) -> String {
    let out = Command::new("nix-build")
        .arg(root().join("tests/lab/deploy/systems.nix"))
        .args(["--argstr", "host", host, "--arg", "generation", &generation.to_string(), "--no-out-link"])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap_or_else(|e| panic!("nix-build: {e}"));
    assert!(out.status.success(), "nix-build: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The bare way: copy, then `switch-to-configuration test` over SSH. Returns the wall time.
fn bare(ssh_config: &Path, host: &str, system: &str) -> Duration {
    let started = Instant::now();
    let copy = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--no-check-sigs",
            "--to",
            &format!("ssh-ng://root@{host}"),
            system,
        ])
        .env("NIX_SSHOPTS", format!("-F {}", ssh_config.display()))
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap_or_else(|e| panic!("nix copy: {e}"));
    assert!(copy.status.success(), "nix copy: {}", String::from_utf8_lossy(&copy.stderr));
    let switch = Command::new("ssh")
        .arg("-F")
        .arg(ssh_config)
        .args([host, &format!("{system}/bin/switch-to-configuration"), "test"])
        .output()
        .unwrap_or_else(|e| panic!("ssh: {e}"));
    assert!(switch.status.success(), "switch: {}", String::from_utf8_lossy(&switch.stderr));
    started.elapsed()
}

/// `(name, address, key)` of the containers.
fn inventory(run: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(run.join("inventory")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (n, a) = (f.next()?, f.next()?);
            Some((n.to_owned(), a.to_owned(), f.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The phases of an executor's outcome detail: `(preflight 58 ms, copy 95 ms, …)`.
fn phases(detail: &str) -> Vec<(String, u64)> {
    let Some(inner) = detail.split_once(" (").and_then(|(_, r)| r.split_once(')')).map(|(p, _)| p) else {
        return Vec::new();
    };
    inner
        .split(", ")
        .filter_map(|p| {
            let (name, ms) =
                p.rsplit_once(' ').and_then(|(rest, unit)| (unit == "ms").then_some(rest))?.rsplit_once(' ')?;
            Some((name.to_owned(), ms.parse().ok()?))
        })
        .collect()
}

fn main() {
    let run = PathBuf::from(std::env::var("MACHA_LAB_NSPAWN").unwrap_or_else(|_| "/run/macha-lab/nspawn".into()));
    let key = PathBuf::from(std::env::var("MACHA_LAB").unwrap_or_else(|_| "/var/cache/macha-lab".into()))
        .join("keys/id_ed25519");
    let hosts = inventory(&run);
    if hosts.len() < 3 {
        eprintln!("deploy bench: the Nix containers are not up (MACHA_LAB_NIX=1 tests/lab/nspawn.sh up 10)");
        std::process::exit(2);
    }
    let rounds: u32 = std::env::var("MACHA_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let ssh_config = run.join("ssh_config");
    let base = 1000 + (std::process::id() % 1000) * 10;
    // Every host starts from its own first generation.
    for (n, _, _) in &hosts {
        let g = build(n, base);
        bare(&ssh_config, n, &g);
    }
    let tables: String =
        hosts.iter().map(|(n, a, k)| format!("[hosts.{n}]\naddress = \"{a}\"\nhost_key = \"{k}\"\n")).collect();
    let d = TestDaemon::builder()
        .binary(binary())
        .config(move |dir| {
            format!(
                "autonomy = \"suggest\"\ncheck_interval = \"60s\"\n[paths]\nstate_dir = \"{}\"\nsocket = \"{}\"\n[systemd]\nenable = false\n[journal]\nenable = false\n[ssh]\nuser = \"root\"\nkey = \"{}\"\n[deploy]\nmin_free_mib = 1\n{tables}",
                dir.join("state").display(),
                dir.join("macha.sock").display(),
                key.display()
            )
        })
        .no_wait()
        .start();
    std::thread::sleep(Duration::from_secs(3));
    let deploy = |hosts: &[&str], system: &str| -> (Duration, serde_json::Value) {
        let started = Instant::now();
        let mut args = vec!["deploy"];
        args.extend_from_slice(hosts);
        let parallel = hosts.len().to_string();
        args.extend_from_slice(&["--system", system, "--approve", "--json", "--parallel", &parallel]);
        let out = d.cli(&args);
        let elapsed = started.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (elapsed, v)
    };

    println!("== one host (c1), {rounds} rounds");
    println!(
        "{:<6} {:>6} {:>6} {:>9} {:>9} {:>6} {:>6} {:>6} {:>9} {:>7} {:>7} {:>11}",
        "round",
        "build",
        "diff",
        "macha ms",
        "preflight",
        "copy",
        "pin",
        "arm",
        "activate",
        "verify",
        "commit",
        "bare ms"
    );
    let (mut macha_total, mut bare_total) = (Duration::ZERO, Duration::ZERO);
    for i in 0..rounds {
        let built = Instant::now();
        let system = build("c1", base + 1 + i * 2);
        let build_ms = built.elapsed().as_millis();
        let diffed = Instant::now();
        let plan = d.cli(&["deploy", "c1", "--system", &system, "--diff-only", "--json"]);
        assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
        let diff_ms = diffed.elapsed().as_millis();
        let (took, v) = deploy(&["c1"], &system);
        let state = v[0]["final_state"]["state"].as_str().unwrap_or("?");
        assert_eq!(state, "succeeded", "{v}");
        let p: std::collections::BTreeMap<String, u64> =
            phases(v[0]["detail"].as_str().unwrap_or_default()).into_iter().collect();
        let get = |k: &str| p.get(k).copied().unwrap_or(0);
        // The bare way, to a closure of the same shape (a new generation, so the copy is real).
        let other = build("c1", base + 2 + i * 2);
        let bare_took = bare(&ssh_config, "c1", &other);
        macha_total += took;
        bare_total += bare_took;
        println!(
            "{:<6} {:>6} {:>6} {:>9} {:>9} {:>6} {:>6} {:>6} {:>9} {:>7} {:>7} {:>11}",
            i + 1,
            build_ms,
            diff_ms,
            took.as_millis(),
            get("preflight"),
            get("copy"),
            get("pin"),
            get("arm"),
            get("activate"),
            get("verify"),
            get("commit"),
            bare_took.as_millis()
        );
    }
    let ratio = macha_total.as_secs_f64() / bare_total.as_secs_f64().max(1e-9);
    println!(
        "mean: macha {} ms, bare {} ms, ratio {ratio:.1}",
        macha_total.as_millis() / u128::from(rounds.max(1)),
        bare_total.as_millis() / u128::from(rounds.max(1))
    );

    let mut sizes = vec![3.min(hosts.len())];
    if hosts.len() > 3 {
        sizes.push(hosts.len().min(10));
    }
    for (round, n) in sizes.into_iter().enumerate() {
        println!("== {n} hosts at once (--parallel {n})");
        let names: Vec<&str> = hosts.iter().map(|(n, _, _)| n.as_str()).take(n).collect();
        let system = build("fleet", base + 9 + u32::try_from(round).unwrap_or(0));
        let (took, v) = deploy(&names, &system);
        let mut slowest = 0u64;
        for r in v.as_array().cloned().unwrap_or_default() {
            let total: u64 = phases(r["detail"].as_str().unwrap_or_default()).iter().map(|(_, ms)| ms).sum();
            slowest = slowest.max(total);
            println!(
                "{:<6} {:<10} phases {:>5} ms",
                r["host"].as_str().unwrap_or("?"),
                r["final_state"]["state"].as_str().unwrap_or("?"),
                total
            );
        }
        println!("command wall {} ms, slowest host's phases {slowest} ms", took.as_millis());
    }
}
