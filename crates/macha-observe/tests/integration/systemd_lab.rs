//! The systemd adapter against a real systemd: the user manager of `tests/lab/systemd-user.sh up`
//! (systemd 252 in a private mount+PID namespace, reachable over its own user bus).
//!
//! The lab is found through `MACHA_LAB_SDUSER` (default `/run/macha-lab/sduser`): the bus is
//! `unix:path=$MACHA_LAB_SDUSER/xdg/bus`, unit files go to
//! `$MACHA_LAB_SDUSER/home/.config/systemd/user/`. Without the lab these tests fail and say how to
//! start it; they never pass silently. Every test makes its own units with unique names (tests run
//! in parallel) and can break them without a shell: `ExecStartPre=/usr/bin/test ! -e FLAG`.
//!
//! The last tests need only `dbus-daemon`: a private bus with a stand-in `systemd1` name, to check
//! the connection errors and what happens when the bus goes away.

use macha_core::action::{Action, DiagnosticArgs, DiagnosticName, Hosts, Origin};
use macha_core::flap::FlapGuard;
use macha_core::policy::{Autonomy, Permit, PolicyInputs, ProtectedUnits, Ruling, decide};
use macha_core::{HostName, Mono, Now, Timestamp, UnitName};
use macha_observe::systemd::{Bus, CleanupRun, JobResult, Systemd, SystemdError, UnitEvent, UnitEvents};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

const JOB_TIMEOUT: Duration = Duration::from_secs(20);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

struct Lab {
    dir: PathBuf,
    bus: String,
}

fn lab() -> Lab {
    let dir = PathBuf::from(std::env::var("MACHA_LAB_SDUSER").unwrap_or_else(|_| "/run/macha-lab/sduser".into()));
    let socket = dir.join("xdg/bus");
    assert!(
        socket.exists(),
        "the lab systemd is not running: {} does not exist. Start it with `tests/lab/systemd-user.sh up` \
         (or point MACHA_LAB_SDUSER at a running one).",
        socket.display()
    );
    Lab { bus: format!("unix:path={}", socket.display()), dir }
}

impl Lab {
    async fn systemd(&self) -> Systemd {
        match Systemd::connect(Bus::Address(self.bus.clone())).await {
            Ok(s) => s,
            Err(e) => panic!("cannot reach the lab systemd at {}: {e}", self.bus),
        }
    }

    async fn raw(&self) -> Connection {
        match zbus::connection::Builder::address(self.bus.as_str()).build().await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to {}: {e}", self.bus),
        }
    }

    fn unit_dir(&self) -> PathBuf {
        self.dir.join("home/.config/systemd/user")
    }
}

/// Calls a Manager method directly: test setup and cleanup only (`Reload`, `StopUnit`).
async fn manager_call<B>(conn: &Connection, method: &str, body: &B)
where
    B: serde::Serialize + zbus::DynamicType,
{
    if let Err(e) = conn
        .call_method(
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            method,
            body,
        )
        .await
    {
        panic!("Manager.{method}: {e}");
    }
}

async fn unit_property(conn: &Connection, unit: &str, iface: &str, name: &str) -> OwnedVariant {
    let path = match conn
        .call_method(
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "LoadUnit",
            &(unit,),
        )
        .await
        .and_then(|m| m.body().deserialize::<OwnedObjectPath>())
    {
        Ok(p) => p,
        Err(e) => panic!("LoadUnit({unit}): {e}"),
    };
    match conn
        .call_method(
            Some("org.freedesktop.systemd1"),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(iface, name),
        )
        .await
        .and_then(|m| m.body().deserialize::<OwnedVariant>())
    {
        Ok(v) => v,
        Err(e) => panic!("Get {iface}.{name} of {unit}: {e}"),
    }
}

async fn active_state(conn: &Connection, unit: &str) -> String {
    let v = unit_property(conn, unit, "org.freedesktop.systemd1.Unit", "ActiveState").await;
    String::try_from(v).unwrap_or_else(|e| panic!("ActiveState: {e}"))
}

/// A unit of this test only: `ExecStartPre` fails while `flag` exists, else it runs forever.
/// Stopped and removed by [`TestUnit::cleanup`], or, when a test fails before that, on drop.
struct TestUnit {
    name: String,
    file: PathBuf,
    flag: PathBuf,
    raw: Connection,
    bus: String,
    cleaned: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(label: &str) -> String {
    format!("mlabt-{label}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

impl TestUnit {
    /// Writes the unit (plus `extra` lines in `[Service]`) and reloads the manager.
    async fn new(lab: &Lab, label: &str, extra: &str) -> TestUnit {
        let stem = unique(label);
        let name = format!("{stem}.service");
        let dir = lab.unit_dir();
        let flag = lab.dir.join("home").join(format!("{stem}.fail"));
        let file = dir.join(&name);
        let text = format!(
            "[Unit]\nDescription=Macha lab test unit {stem}\nStartLimitIntervalSec=0\n\
             [Service]\nExecStartPre=/usr/bin/test ! -e {flag}\nExecStart=/bin/sleep infinity\n{extra}\n",
            flag = flag.display()
        );
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, text)) {
            panic!("cannot write {}: {e}", file.display());
        }
        let raw = lab.raw().await;
        manager_call(&raw, "Reload", &()).await;
        TestUnit { name, file, flag, raw, bus: lab.bus.clone(), cleaned: false }
    }

    fn unit_name(&self) -> UnitName {
        UnitName::parse(&self.name).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    fn break_it(&self) {
        std::fs::write(&self.flag, b"").unwrap_or_else(|e| panic!("{}: {e}", self.flag.display()));
    }

    fn repair(&self) {
        let _ = std::fs::remove_file(&self.flag);
    }

    async fn state(&self) -> String {
        active_state(&self.raw, &self.name).await
    }

    /// Stops the unit and removes its files.
    async fn cleanup(mut self) {
        self.cleaned = true;
        manager_call(&self.raw, "StopUnit", &(self.name.as_str(), "replace")).await;
        let _ = self
            .raw
            .call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "ResetFailedUnit",
                &(self.name.as_str(),),
            )
            .await;
        self.repair();
        let _ = std::fs::remove_file(&self.file);
    }
}

impl Drop for TestUnit {
    /// A failed test must not leave a broken or running unit behind for the next one: stop it
    /// synchronously with busctl (no runtime to await on here).
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let m = ["org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"];
        for args in
            [vec!["StopUnit", "ss", self.name.as_str(), "replace"], vec!["ResetFailedUnit", "s", self.name.as_str()]]
        {
            let _ = std::process::Command::new("busctl")
                .arg(format!("--address={}", self.bus))
                .arg("call")
                .args(m)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        self.repair();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// A permit from the real policy gate at `auto-safe`, with nothing protected beyond the built-ins.
fn permit(action: Action, known_hosts: &[&str]) -> Permit {
    let protected = ProtectedUnits::new::<&str>(&[]);
    let flap = FlapGuard::new(3, Duration::from_secs(1800));
    let hosts: BTreeSet<HostName> =
        known_hosts.iter().map(|h| HostName::parse(h).unwrap_or_else(|e| panic!("{h}: {e}"))).collect();
    let inputs = PolicyInputs { flap, known_hosts: hosts, ..PolicyInputs::new(Autonomy::AutoSafe, protected) };
    let ctx = inputs.context();
    match decide(&action, &Origin::Person { uid: 0 }, &ctx, Now::new(Timestamp::from_secs(1_800_000_000), Mono(0))) {
        Ruling::Execute(p) => p,
        other => panic!("the policy did not permit {}: {:?}", action.describe(), other.decision()),
    }
}

fn restart(unit: &TestUnit) -> Permit {
    permit(Action::RestartUnit { host: Hosts::default(), unit: unit.unit_name(), reason: "lab test".into() }, &[])
}

fn reset_failed(unit: &TestUnit) -> Permit {
    permit(Action::ResetFailed { host: Hosts::default(), unit: unit.unit_name(), reason: "lab test".into() }, &[])
}

/// The next event for `unit` that satisfies `want`, within `EVENT_TIMEOUT`.
async fn wait_event(events: &mut UnitEvents, unit: &str, want: impl Fn(&UnitEvent) -> bool) -> UnitEvent {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Ok(ev)) if ev.unit == unit && want(&ev) => return ev,
            Ok(Ok(ev)) => seen.push(ev),
            Ok(Err(e)) => panic!("event stream failed: {e}"),
            Err(_) => panic!("no matching event for {unit} within {EVENT_TIMEOUT:?}; saw {seen:#?} {events:?}"),
        }
    }
}

#[tokio::test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
async fn list_units_reports_running_failed_and_restarting_units() {
    let lab = lab();
    let sd = lab.systemd().await;
    assert!(sd.version().starts_with("25"), "version {}", sd.version());
    let ok = TestUnit::new(&lab, "ok", "").await;
    let broken = TestUnit::new(&lab, "broken", "").await;
    // Exits at once and is restarted every 50 ms: NRestarts climbs.
    let flappy = TestUnit::new(&lab, "flappy", "ExecStartPre=/bin/sleep 0.05\nRestart=always\nRestartSec=50ms").await;
    std::fs::write(&flappy.flag, b"").unwrap_or_else(|e| panic!("{e}"));

    let r = sd.execute_unit_action(&restart(&ok), JOB_TIMEOUT).await;
    assert_eq!(r.as_ref().map(|o| &o.result).ok(), Some(&JobResult::Done), "{r:?}");
    broken.break_it();
    let r = sd.execute_unit_action(&restart(&broken), JOB_TIMEOUT).await;
    assert_eq!(r.as_ref().map(|o| &o.result).ok(), Some(&JobResult::Failed), "{r:?}");
    let _ = sd.execute_unit_action(&restart(&flappy), JOB_TIMEOUT).await;
    // Let it go round a few times.
    let t0 = Instant::now();
    loop {
        let s = sd.unit_state(&flappy.unit_name()).await.unwrap_or_else(|e| panic!("{e}"));
        if s.n_restarts.unwrap_or(0) >= 2 {
            break;
        }
        assert!(t0.elapsed() < EVENT_TIMEOUT, "flappy never restarted: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let units = sd.list_units().await.unwrap_or_else(|e| panic!("list_units: {e}"));
    assert!(units.total >= 3, "{units:?}");
    assert_eq!(units.system_state, "degraded", "a failed unit makes the manager degraded");
    assert!(units.failed.contains(&broken.name), "{:?}", units.failed);
    assert!(!units.failed.contains(&ok.name));
    let by_name: HashMap<&str, _> = units.notable.iter().map(|u| (u.name.as_str(), u)).collect();
    let b = by_name.get(broken.name.as_str()).unwrap_or_else(|| panic!("{} not notable: {units:#?}", broken.name));
    assert_eq!((b.load_state.as_str(), b.active_state.as_str(), b.sub_state.as_str()), ("loaded", "failed", "failed"));
    assert_eq!(b.result.as_deref(), Some("exit-code"));
    assert_eq!(b.n_restarts, Some(0));
    assert!(b.description.contains("Macha lab test unit"), "{b:?}");
    assert!(!by_name.contains_key(ok.name.as_str()), "a healthy unit is not notable");
    let f = by_name.get(flappy.name.as_str()).unwrap_or_else(|| panic!("{} not notable: {units:#?}", flappy.name));
    assert!(f.n_restarts.unwrap_or(0) >= 2, "{f:?}");

    let s = sd.unit_state(&ok.unit_name()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.active_state.as_str(), s.sub_state.as_str()), ("active", "running"));
    assert_eq!((s.result.as_deref(), s.n_restarts), (Some("success"), Some(0)));
    let missing = UnitName::parse("mlabt-does-not-exist").unwrap_or_else(|e| panic!("{e}"));
    let s = sd.unit_state(&missing).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.load_state.as_str(), s.active_state.as_str(), s.result), ("not-found", "inactive", None));

    for u in [ok, broken, flappy] {
        u.cleanup().await;
    }
}

#[tokio::test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
async fn a_failing_unit_is_reported_by_signal() {
    let lab = lab();
    let sd = lab.systemd().await;
    let unit = TestUnit::new(&lab, "fails", "").await;
    let mut events = sd.subscribe().await.unwrap_or_else(|e| panic!("subscribe: {e}"));

    let r = sd.execute_unit_action(&restart(&unit), JOB_TIMEOUT).await;
    assert!(r.as_ref().is_ok_and(|o| o.succeeded()), "{r:?}");
    let running = wait_event(&mut events, &unit.name, |e| e.active_state.as_deref() == Some("active")).await;
    assert_eq!(running.sub_state.as_deref(), Some("running"));
    assert_eq!(running.result.as_deref(), Some("success"));

    unit.break_it();
    let again = restart(&unit);
    let t0 = Instant::now();
    // The restart and the wait for the event run side by side: the event is not read from the
    // job's result, it arrives as systemd's PropertiesChanged signal.
    let (r, failed) = tokio::join!(
        sd.execute_unit_action(&again, JOB_TIMEOUT),
        wait_event(&mut events, &unit.name, UnitEvent::is_failed),
    );
    let latency = t0.elapsed();
    assert_eq!(r.as_ref().map(|o| &o.result).ok(), Some(&JobResult::Failed), "{r:?}");
    assert_eq!(failed.sub_state.as_deref(), Some("failed"));
    assert_eq!(failed.result.as_deref(), Some("exit-code"));
    assert_eq!(failed.job_result, None);
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    // The job's end follows as its own event, with the state the stream saw last.
    let job = wait_event(&mut events, &unit.name, |e| e.job_result.is_some()).await;
    assert_eq!(job.job_result.as_deref(), Some("failed"));
    assert_eq!(job.active_state.as_deref(), Some("failed"), "{job:?}");
    assert!(!job.is_failed(), "a job's end is not a second failure");
    assert_eq!(events.dropped_spoofed(), 0);
    unit.cleanup().await;
}

#[tokio::test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
async fn restart_reports_the_job_result() {
    let lab = lab();
    let sd = lab.systemd().await;
    let unit = TestUnit::new(&lab, "restart", "").await;

    unit.break_it();
    let out = sd.execute_unit_action(&restart(&unit), JOB_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.result, JobResult::Failed);
    assert!(!out.succeeded());
    assert_eq!(out.unit, unit.name);
    assert!(out.job.as_deref().is_some_and(|j| j.starts_with("/org/freedesktop/systemd1/job/")), "{out:?}");
    assert_eq!(unit.state().await, "failed");

    // Still broken: failed again (no start limit on these units).
    let out = sd.execute_unit_action(&restart(&unit), JOB_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.result, JobResult::Failed);

    // reset-failed runs no job and clears the state.
    let out = sd.execute_unit_action(&reset_failed(&unit), JOB_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((out.result, out.job), (JobResult::Done, None));
    assert_eq!(unit.state().await, "inactive");

    unit.repair();
    let out = sd.execute_unit_action(&restart(&unit), JOB_TIMEOUT).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.result, JobResult::Done);
    assert!(out.succeeded());
    assert_eq!(unit.state().await, "active");
    let s = sd.unit_state(&unit.unit_name()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (s.active_state.as_str(), s.sub_state.as_str(), s.result.as_deref()),
        ("active", "running", Some("success"))
    );

    // A job that cannot finish in time is a timeout error, not a result.
    let slow = TestUnit::new(&lab, "slow", "ExecStartPre=/bin/sleep 3").await;
    let r = sd.execute_unit_action(&restart(&slow), Duration::from_millis(300)).await;
    assert!(
        matches!(&r, Err(SystemdError::JobTimeout { job, .. }) if job.starts_with("/org/freedesktop/systemd1/job/")),
        "{r:?}"
    );
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("did not finish within 0.3 s"), "{msg}");

    unit.cleanup().await;
    slow.cleanup().await;
}

#[tokio::test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
async fn canonical_name_resolves_an_alias() {
    let lab = lab();
    let sd = lab.systemd().await;
    let unit = TestUnit::new(&lab, "real", "").await;
    let alias = format!("{}.service", unique("alias"));
    let link = lab.unit_dir().join(&alias);
    std::os::unix::fs::symlink(&unit.file, &link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
    manager_call(&unit.raw, "Reload", &()).await;

    let alias_name = UnitName::parse(&alias).unwrap_or_else(|e| panic!("{e}"));
    let c = sd.canonical_name(&alias_name).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.id, unit.name);
    assert_eq!(c.load_state, "loaded");
    assert!(c.names.contains(&alias) && c.names.contains(&unit.name), "{c:?}");
    let direct = sd.canonical_name(&unit.unit_name()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(direct.id, unit.name);
    assert!(direct.names.contains(&alias), "{direct:?}");
    // State through the alias is the unit's, under its primary name.
    let s = sd.unit_state(&alias_name).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.name, unit.name);

    let missing = UnitName::parse("mlabt-no-such-unit").unwrap_or_else(|e| panic!("{e}"));
    let c = sd.canonical_name(&missing).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.id.as_str(), c.load_state.as_str()), ("mlabt-no-such-unit.service", "not-found"));

    let _ = std::fs::remove_file(&link);
    unit.cleanup().await;
}

#[tokio::test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
async fn permits_for_other_things_are_refused_without_a_call() {
    let lab = lab();
    let sd = lab.systemd().await;
    let unit = TestUnit::new(&lab, "refuse", "").await;
    let mut events = sd.subscribe().await.unwrap_or_else(|e| panic!("subscribe: {e}"));

    let diagnostic = permit(
        Action::Diagnostic {
            host: Hosts::default(),
            name: DiagnosticName::UnitStatus,
            args: DiagnosticArgs { unit: Some(unit.unit_name()), ..Default::default() },
            reason: "lab test".into(),
        },
        &[],
    );
    let remote = permit(
        Action::RestartUnit {
            host: Hosts::One(HostName::parse("web1.lan").unwrap_or_else(|e| panic!("{e}"))),
            unit: unit.unit_name(),
            reason: "lab test".into(),
        },
        &["web1.lan"],
    );
    let vacuum =
        permit(Action::JournalVacuum { host: Hosts::default(), max_age_days: 30, reason: "lab test".into() }, &[]);
    for p in [&diagnostic, &remote, &vacuum] {
        let r = sd.execute_unit_action(p, JOB_TIMEOUT).await;
        assert!(matches!(r, Err(SystemdError::Refused(_))), "{}: {r:?}", p.action().describe());
    }
    // Nothing reached systemd: the unit never moved, and no event about it arrived.
    assert_eq!(unit.state().await, "inactive");
    let quiet = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match events.next().await {
                Ok(ev) if ev.unit == unit.name => return ev,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "unexpected event {quiet:?}");
    unit.cleanup().await;
}

#[tokio::test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
async fn signals_not_from_systemd_are_dropped() {
    let lab = lab();
    let sd = lab.systemd().await;
    let unit = TestUnit::new(&lab, "spoof", "").await;
    let mut events = sd.subscribe().await.unwrap_or_else(|e| panic!("subscribe: {e}"));

    // Another peer on the bus sends systemd-shaped signals straight to the event connection:
    // unicast signals pass no match rule, so only the sender check can stop them.
    let attacker = lab.raw().await;
    let fake_unit = "/org/freedesktop/systemd1/unit/mlabt_2dspoofed_2eservice";
    let mut changed: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
    changed.insert("ActiveState", zbus::Variant::from("failed"));
    changed.insert("SubState", zbus::Variant::from("failed"));
    let target = events.bus_name().unwrap_or_else(|| panic!("the event connection has no bus name"));
    for dest in [&target] {
        let sent = attacker
            .emit_signal(
                Some(dest.as_str()),
                fake_unit,
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                &("org.freedesktop.systemd1.Unit", &changed, Vec::<String>::new()),
            )
            .await;
        assert!(sent.is_ok(), "{sent:?}");
        let job = zbus::ObjectPath::try_from("/org/freedesktop/systemd1/job/1").unwrap_or_else(|e| panic!("{e}"));
        let sent = attacker
            .emit_signal(
                Some(dest.as_str()),
                "/org/freedesktop/systemd1",
                "org.freedesktop.systemd1.Manager",
                "JobRemoved",
                &(1u32, job, "mlabt-spoofed.service", "failed"),
            )
            .await;
        assert!(sent.is_ok(), "{sent:?}");
    }
    // A real failure afterwards is the first event about a failure that comes out.
    unit.break_it();
    let again = restart(&unit);
    let (_, ev) = tokio::join!(sd.execute_unit_action(&again, JOB_TIMEOUT), async {
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, events.next()).await {
                Ok(Ok(ev)) if ev.is_failed() || ev.job_result.is_some() => return ev,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => panic!("no failure event"),
            }
        }
    });
    assert_eq!(ev.unit, unit.name, "a spoofed signal got through: {ev:?}");
    assert!(events.dropped_spoofed() >= 2, "{events:?}");
    unit.cleanup().await;
}

/// A private `dbus-daemon` (killed on drop).
struct PrivateBus {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    fn start() -> PrivateBus {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        let child = std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", &format!("--address={address}")])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("dbus-daemon (apt-get install dbus-daemon): {e}"));
        let t0 = Instant::now();
        while !socket.exists() {
            assert!(t0.elapsed() < Duration::from_secs(5), "dbus-daemon did not create {}", socket.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        PrivateBus { child, address, _dir: dir }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Answers the few calls `connect` and `subscribe` make, as a stand-in `org.freedesktop.systemd1`.
async fn fake_systemd(address: &str) -> Connection {
    use futures_util::StreamExt;
    let conn = zbus::connection::Builder::address(address).build().await.unwrap_or_else(|e| panic!("{e}"));
    conn.request_name("org.freedesktop.systemd1").await.unwrap_or_else(|e| panic!("{e}"));
    let server = conn.clone();
    tokio::spawn(async move {
        let mut calls = zbus::MessageStream::from(&server);
        while let Some(Ok(msg)) = calls.next().await {
            let header = msg.header();
            if msg.message_type() != zbus::message::Type::MethodCall {
                continue;
            }
            let _ = match header.member().map(|m| m.as_str()) {
                Some("Get") => server.reply(&header, &zbus::Variant::from("252-fake")).await,
                Some("Subscribe") => server.reply(&header, &()).await,
                _ => server.reply_error(&header, "org.freedesktop.DBus.Error.UnknownMethod", &"no").await,
            };
        }
    });
    conn
}

#[tokio::test]
#[ignore = "lab: needs dbus-daemon"]
async fn connect_errors_say_what_is_missing() {
    let r = Systemd::connect(Bus::Address("unix:path=/nonexistent/macha/bus".into())).await;
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.starts_with("no D-Bus bus at unix:path=/nonexistent/macha/bus: is this a systemd host?"), "{msg}");

    let bus = PrivateBus::start();
    let r = Systemd::connect(Bus::Address(bus.address.clone())).await;
    assert!(matches!(r, Err(SystemdError::NoManager { .. })), "{r:?}");
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("no systemd manager (org.freedesktop.systemd1)") && msg.contains("is this a systemd host?"),
        "{msg}"
    );
}

#[tokio::test]
#[ignore = "lab: needs dbus-daemon"]
async fn the_event_stream_ends_with_an_error_when_the_bus_goes_away() {
    let mut bus = PrivateBus::start();
    let _fake = fake_systemd(&bus.address).await;
    let sd = Systemd::connect(Bus::Address(bus.address.clone())).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sd.version(), "252-fake");
    let mut events = sd.subscribe().await.unwrap_or_else(|e| panic!("{e}"));
    let _ = bus.child.kill();
    let _ = bus.child.wait();
    let r = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
    assert!(matches!(r, Ok(Err(SystemdError::Disconnected { .. }))), "{r:?}");
    let msg = r.ok().and_then(|r| r.err()).map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("was lost"), "{msg}");
}

#[tokio::test]
#[ignore = "lab: needs tests/lab/systemd-user.sh up"]
async fn a_cleanup_runs_through_its_fixed_unit_and_reports_its_result() {
    let lab = lab();
    let sd = lab.systemd().await;
    let vacuum = |days| {
        permit(Action::JournalVacuum { host: Hosts::default(), max_age_days: days, reason: "lab test".into() }, &[])
    };
    // The template stands in for the module's unit: it succeeds for instance 30 only.
    let file = lab.unit_dir().join("macha-journal-vacuum@.service");
    let raw = lab.raw().await;
    let _ = std::fs::remove_file(&file);
    manager_call(&raw, "Reload", &()).await;

    let missing = sd.run_cleanup_unit(&vacuum(30), JOB_TIMEOUT).await;
    assert!(
        matches!(&missing, Ok(CleanupRun::NotLoaded { unit, load_state })
            if unit == "macha-journal-vacuum@30.service" && load_state == "not-found"),
        "{missing:?}"
    );

    let text = "[Unit]\nDescription=Macha lab test clean-up unit %i\n\
                [Service]\nType=oneshot\nExecStart=/usr/bin/test %i = 30\n";
    if let Err(e) = std::fs::create_dir_all(lab.unit_dir()).and_then(|()| std::fs::write(&file, text)) {
        panic!("cannot write {}: {e}", file.display());
    }
    manager_call(&raw, "Reload", &()).await;

    let ran = sd.run_cleanup_unit(&vacuum(30), JOB_TIMEOUT).await;
    let failed = sd.run_cleanup_unit(&vacuum(31), JOB_TIMEOUT).await;
    let _ = std::fs::remove_file(&file);
    manager_call(&raw, "Reload", &()).await;

    match ran {
        Ok(CleanupRun::Ran { unit, job, result, exec_main_status }) => {
            assert_eq!(unit, "macha-journal-vacuum@30.service");
            assert_eq!(job.result, JobResult::Done);
            assert_eq!((result.as_str(), exec_main_status), ("success", 0));
        }
        other => panic!("{other:?}"),
    }
    match failed {
        Ok(CleanupRun::Ran { job, result, exec_main_status, .. }) => {
            assert_eq!(job.result, JobResult::Failed);
            assert_eq!((result.as_str(), exec_main_status), ("exit-code", 1));
        }
        other => panic!("{other:?}"),
    }
    // A permit for anything but a clean-up is refused before anything is sent.
    let diagnostic = permit(
        Action::Diagnostic {
            host: Hosts::default(),
            name: DiagnosticName::FailedUnits,
            args: DiagnosticArgs::default(),
            reason: "lab test".into(),
        },
        &[],
    );
    assert!(matches!(sd.run_cleanup_unit(&diagnostic, JOB_TIMEOUT).await, Err(SystemdError::Refused(_))));
}
