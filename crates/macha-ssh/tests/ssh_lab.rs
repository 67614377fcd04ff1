//! The SSH layer against real sshds: the netns hosts of `tests/lab/netns-sshd.sh up 4` (h1..h4,
//! each a real OpenSSH sshd in its own network namespace, default `MaxSessions 10`, logins as root
//! with the lab key).
//!
//! The lab is found through `MACHA_LAB_NETNS` (default `/run/macha-lab/netns`, where `up` writes
//! its `inventory`) and the lab key through `MACHA_LAB` (default `/var/cache/macha-lab`). Without
//! them these tests fail with instructions; they never pass silently. They are `#[ignore]`d so a
//! plain `cargo test` needs no lab; `tests/run.sh` runs them with the lab up, one at a time.

use macha_core::HostName;
use macha_core::command::Command;
use macha_ssh::probe::{self, HostMemory, ProbeSpec};
use macha_ssh::{HostKey, KnownHosts, RemoteCommand, SshError, SshPool, SshSettings, Target};
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Lab {
    run: PathBuf,
    key: PathBuf,
    hosts: Vec<(String, String, HostKey)>,
}

fn lab() -> Lab {
    let run = PathBuf::from(std::env::var("MACHA_LAB_NETNS").unwrap_or_else(|_| "/run/macha-lab/netns".into()));
    let cache = PathBuf::from(std::env::var("MACHA_LAB").unwrap_or_else(|_| "/var/cache/macha-lab".into()));
    let inventory = std::fs::read_to_string(run.join("inventory")).unwrap_or_else(|e| {
        panic!(
            "the netns lab is not up ({}: {e}): start it with `tests/lab/netns-sshd.sh up 4` (as root)",
            run.join("inventory").display()
        )
    });
    let hosts: Vec<(String, String, HostKey)> = inventory
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let (name, addr, key) = (it.next()?, it.next()?, it.next()?);
            Some((name.to_owned(), addr.to_owned(), HostKey::parse(key).ok()?))
        })
        .collect();
    assert!(
        hosts.len() >= 4,
        "the netns lab has {} hosts; these tests need 4: `tests/lab/netns-sshd.sh up 4`",
        hosts.len()
    );
    Lab { run, key: cache.join("keys/id_ed25519"), hosts }
}

fn h(s: &str) -> HostName {
    HostName::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

impl Lab {
    fn target(&self, name: &str) -> Target {
        let (_, addr, _) = self.hosts.iter().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no {name}"));
        Target { name: h(name), address: addr.clone(), port: 22, user: Some("root".into()) }
    }

    /// A pool with its own known_hosts, pinning the lab keys of `pinned` (as `name → key of`).
    fn pool(&self, dir: &tempfile::TempDir, pinned: &[(&str, &str)]) -> SshPool {
        let kh_path = dir.path().join("known_hosts");
        let mut kh = KnownHosts::load(&kh_path).unwrap_or_else(|e| panic!("{e}"));
        for (name, key_of) in pinned {
            let key = self.hosts.iter().find(|(n, _, _)| n == key_of).map(|(_, _, k)| k.clone());
            kh.pin(&h(name), &[key.unwrap_or_else(|| panic!("no {key_of}"))]);
        }
        kh.save().unwrap_or_else(|e| panic!("{e}"));
        let ssh = PathBuf::from("/usr/bin/ssh");
        // Short: a control socket path has at most 107 bytes.
        let control = dir.path().join("s");
        let mut s = SshSettings::new(ssh, "root", self.key.clone(), kh_path, control);
        s.connect_timeout = Duration::from_secs(2);
        SshPool::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn netns(&self, args: &[&str]) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/lab/netns-sshd.sh");
        let out = std::process::Command::new(script)
            .args(args)
            .env("MACHA_LAB_RUN", &self.run)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "netns-sshd.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Undoes a fault on drop, so a failing test leaves the lab usable.
struct Fault<'a> {
    lab: &'a Lab,
    undo: [&'a str; 2],
}
impl Drop for Fault<'_> {
    fn drop(&mut self) {
        self.lab.netns(&self.undo);
    }
}

fn command(program: &str, args: &[&str]) -> Command {
    Command::new(program).unwrap_or_else(|e| panic!("{e}")).args(args.iter().copied())
}

/// Processes on this machine (the netns hosts share its PID namespace) whose command line
/// contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && !text.contains("ssh_lab") {
                found.push(text);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "lab: needs tests/lab/netns-sshd.sh up 4"]
async fn lab_argv_arrives_literally_and_the_master_is_reused() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = lab.pool(&dir, &[("h1", "h1")]);
    let t = lab.target("h1");
    let hostile =
        ["a b", "x; touch /tmp/pwned", "$(touch /tmp/pwned)", "`id`", "it's", "*", "~root", "", "-n", "a|b>c"];
    let mut args = vec!["%s\\n"];
    args.extend(hostile);
    let out = pool
        .run(&t, &RemoteCommand::new(command("/usr/bin/printf", &args), Duration::from_secs(10)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success(), "{out:?}");
    let lines: Vec<String> = out.stdout_text().lines().map(str::to_owned).collect();
    assert_eq!(lines, hostile, "every argument arrives as one literal argument");
    let pwned = pool
        .run(&t, &RemoteCommand::new(command("/usr/bin/test", &["-e", "/tmp/pwned"]), Duration::from_secs(5)))
        .await;
    assert_eq!(pwned.map(|o| o.status).ok(), Some(Some(1)), "nothing was executed by the remote shell");
    for _ in 0..20 {
        let o = pool.run(&t, &RemoteCommand::new(command("/usr/bin/true", &[]), Duration::from_secs(5))).await;
        assert!(o.is_ok_and(|o| o.success()));
    }
    assert_eq!(pool.connects(&h("h1")), 1, "one master connection for every command");
    // sftp over the same master.
    let remote = pool.read_file(&t, "/etc/os-release", 65_536).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(remote, std::fs::read("/etc/os-release").unwrap_or_default());
    assert!(pool.read_file(&t, "/etc/os-release", 10).await.is_err(), "the size limit holds");
    assert_eq!(pool.connects(&h("h1")), 1);
    // sudo -n fails cleanly without a rule (root has none to need here: sudo is not even asked to
    // prompt), and a missing program is exit 127.
    let missing = pool.run(&t, &RemoteCommand::new(command("/nonexistent/prog", &[]), Duration::from_secs(5))).await;
    assert_eq!(missing.map(|o| o.status).ok(), Some(Some(127)));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "lab: needs tests/lab/netns-sshd.sh up 4"]
async fn lab_at_most_eight_channels_per_host() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = lab.pool(&dir, &[("h2", "h2")]);
    let t = lab.target("h2");
    pool.connect_host(&t).await.unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    // 25 at once against sshd's MaxSessions 10: without the cap, channels beyond 10 are refused.
    let runs =
        (0..25).map(|_| {
            let (pool, t) = (&pool, &t);
            async move {
                pool.run(t, &RemoteCommand::new(command("/usr/bin/sleep", &["0.5"]), Duration::from_secs(20))).await
            }
        });
    let results = futures_util::future::join_all(runs).await;
    let failed: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().map(ToString::to_string)).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(macha_ssh::RemoteOutput::success)));
    // 25 / 8 = 4 waves of 0.5 s.
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}: not capped", started.elapsed());
    assert_eq!(pool.connects(&h("h2")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "lab: needs tests/lab/netns-sshd.sh up 4"]
async fn lab_a_hung_command_is_killed_on_the_host() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = lab.pool(&dir, &[("h1", "h1")]);
    let t = lab.target("h1");
    let marker = format!("3{}.{}", std::process::id() % 1000, 77);
    let started = Instant::now();
    let r = pool.run(&t, &RemoteCommand::new(command("/usr/bin/sleep", &[&marker]), Duration::from_secs(2))).await;
    let took = started.elapsed();
    assert!(matches!(r, Err(SshError::CommandTimeout { .. })), "{r:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(processes_with(&format!("sleep {marker}")).is_empty(), "the remote sleep survived");
    // The connection is still good afterwards.
    let ok = pool.run(&t, &RemoteCommand::new(command("/usr/bin/true", &[]), Duration::from_secs(5))).await;
    assert!(ok.is_ok_and(|o| o.success()));
    assert_eq!(pool.connects(&h("h1")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "lab: needs tests/lab/netns-sshd.sh up 4"]
async fn lab_a_command_that_ignores_sigterm_is_killed_and_reads_as_a_timeout() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = lab.pool(&dir, &[("h2", "h2")]);
    let t = lab.target("h2");
    // `timeout -k 5s 1s`: SIGTERM is ignored, so 5 s later SIGKILL goes to the whole process
    // group, `timeout` included: the session ends without an exit code.
    let marker = format!("4{}.{}", std::process::id() % 1000, 11);
    // A process that ignores SIGTERM (perl, not a shell: nothing in this tree spawns a shell).
    let script = format!("$SIG{{TERM}} = 'IGNORE'; exec 'sleep', '{marker}'");
    let started = Instant::now();
    let r = pool.run(&t, &RemoteCommand::new(command("/usr/bin/perl", &["-e", &script]), Duration::from_secs(1))).await;
    let took = started.elapsed();
    assert!(matches!(r, Err(SshError::CommandTimeout { .. })), "{r:?}");
    let text = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("did not finish within 1000 ms"), "{text}");
    // Ended by the remote SIGKILL (after 1 + 5 s), not by the local deadline (1 + 5 + 2 s).
    assert!(took >= Duration::from_secs(6) && took < Duration::from_millis(7_500), "{took:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(processes_with(&format!("sleep {marker}")).is_empty(), "the remote sleep survived");
    assert_eq!(pool.connects(&h("h2")), 1, "the connection stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "lab: needs tests/lab/netns-sshd.sh up 4"]
async fn lab_unknown_and_changed_host_keys_are_refused() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // h3 is not pinned at all; under the name h1, the key of h2 is pinned (h1's key "changed").
    let pool = lab.pool(&dir, &[("h1", "h2")]);
    let r =
        pool.run(&lab.target("h3"), &RemoteCommand::new(command("/usr/bin/true", &[]), Duration::from_secs(5))).await;
    assert!(matches!(r, Err(SshError::HostKeyUnknown { .. })), "{r:?}");
    let r =
        pool.run(&lab.target("h1"), &RemoteCommand::new(command("/usr/bin/true", &[]), Duration::from_secs(5))).await;
    assert!(matches!(r, Err(SshError::HostKeyChanged { .. })), "{r:?}");
    assert_eq!(pool.stats().connected, 0);
    // ssh-keyscan shows the real key, whose fingerprint a person compares before pinning it.
    let keys = macha_ssh::keyscan::scan(
        std::path::Path::new("/usr/bin/ssh-keyscan"),
        &lab.target("h1"),
        Duration::from_secs(3),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let real = &lab.hosts.iter().find(|(n, _, _)| n == "h1").map(|(_, _, k)| k.clone()).unwrap_or_else(|| panic!());
    assert!(keys.iter().any(|k| k.fingerprint() == real.fingerprint()), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "lab: needs tests/lab/netns-sshd.sh up 4"]
async fn lab_black_holed_and_hung_hosts_do_not_delay_the_others() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = lab.pool(&dir, &[("h1", "h1"), ("h2", "h2"), ("h3", "h3"), ("h4", "h4")]);
    let spec =
        ProbeSpec { timeout: Duration::from_secs(3), journal_window: Duration::from_secs(600), prefer_macha: false };
    // Connect everyone first (a steady-state cycle), then break h3 and h4.
    for n in ["h1", "h2", "h3", "h4"] {
        pool.connect_host(&lab.target(n)).await.unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    pool.disconnect(&h("h4")).await;
    lab.netns(&["block", "h4"]);
    let _unblock = Fault { lab: &lab, undo: ["unblock", "h4"] };
    lab.netns(&["hang", "h3"]);
    let _unhang = Fault { lab: &lab, undo: ["unhang", "h3"] };
    let started = Instant::now();
    let deadline = Duration::from_secs(12);
    let observe = |name: &'static str| {
        let (pool, spec, t) = (&pool, &spec, lab.target(name));
        async move {
            let mut memory = HostMemory::default();
            let r =
                tokio::time::timeout(deadline, probe::observe(pool, &t, spec, &mut memory, macha_core::Timestamp(0)))
                    .await;
            (name, started.elapsed(), r)
        }
    };
    let results = futures_util::future::join_all(["h1", "h2", "h3", "h4"].map(observe)).await;
    for (name, at, r) in &results {
        match *name {
            "h1" | "h2" => {
                let snap = r.as_ref().ok().and_then(|r| r.as_ref().ok()).unwrap_or_else(|| panic!("{name}: {r:?}"));
                assert!(
                    snap.cpu.data().is_some() && snap.memory.data().is_some(),
                    "{name}: {:?}",
                    snap.unavailable_sections()
                );
                assert!(*at < Duration::from_secs(2), "{name} took {at:?}: delayed by the broken hosts");
            }
            "h3" => {
                let snap = r.as_ref().ok().and_then(|r| r.as_ref().ok()).unwrap_or_else(|| panic!("h3: {r:?}"));
                let reason = snap.load.unavailable_reason().unwrap_or_default();
                assert!(reason.contains("did not finish"), "h3 load: {reason}");
                assert!(snap.units.unavailable_reason().is_some(), "no systemd in a netns host");
                assert!(*at < Duration::from_secs(3 + 5 + 3), "h3 took {at:?}");
            }
            _ => {
                let err = r.as_ref().ok().and_then(|r| r.as_ref().err()).unwrap_or_else(|| panic!("h4: {r:?}"));
                assert!(err.is_unreachable(), "h4: {err}");
                assert!(*at < Duration::from_secs(2 + 5 + 1), "h4 took {at:?}");
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let left = processes_with("/proc/loadavg");
    assert!(left.is_empty(), "hung remote processes survived: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "lab: needs tests/lab/netns-sshd.sh up 4"]
async fn lab_identify_and_observe_a_netns_host() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pool = lab.pool(&dir, &[("h2", "h2")]);
    let t = lab.target("h2");
    let id = probe::identify(&pool, &t, Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("{e}"));
    // The netns hosts are this machine: Debian, with its CPU.
    let local = macha_core::fleet::detect_os(std::fs::read_to_string("/etc/os-release").ok().as_deref(), None);
    assert_eq!(id.os.family, local.family);
    assert!(id.os.kernel.as_deref().is_some_and(|k| k.starts_with("Linux ")), "{:?}", id.os);
    assert_eq!(id.hardware.logical_cpus as usize, std::thread::available_parallelism().map_or(0, |n| n.get()));
    assert!(id.running_services.is_err(), "no systemd in a netns host");
    let spec =
        ProbeSpec { timeout: Duration::from_secs(5), journal_window: Duration::from_secs(600), prefer_macha: false };
    let mut memory =
        HostMemory { hardware: Some(id.hardware.clone()), os: Some(id.os.family), ..HostMemory::default() };
    let first = probe::observe(&pool, &t, &spec, &mut memory, macha_core::Timestamp(1_000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = first.unavailable_sections().iter().map(|(n, _)| *n).collect();
    assert!(names.contains(&"units"), "{names:?}");
    for s in ["cpu", "memory", "load", "pressure", "network", "processes", "filesystems", "hardware"] {
        assert!(!names.contains(&s), "{s}: {:?}", first.unavailable_sections());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = probe::observe(&pool, &t, &spec, &mut memory, macha_core::Timestamp(2_200))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(second.cpu.data().and_then(|c| c.usage_percent).is_some(), "a rate from two probes");
    assert_eq!(pool.connects(&h("h2")), 1);
}
