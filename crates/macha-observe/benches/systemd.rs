//! systemd adapter benchmark on the lab user manager (`tests/lab/systemd-user.sh up`):
//!
//! - `list_units` latency over 200 calls, with 50 extra running services loaded so that the
//!   per-service `NRestarts`/`Result` reads have something to cost;
//! - how long a unit entering `failed` takes to arrive as a [`UnitEvent`]: from the unit's own
//!   `InactiveEnterTimestamp` (CLOCK_REALTIME, µs, set by systemd when it entered `failed`) to the
//!   moment the event is in hand, over 50 failures.
//!
//! Without the lab it prints "lab systemd not available" and exits 0. The lab is found like the
//! lab tests find it: `MACHA_LAB_SDUSER`, default `/run/macha-lab/sduser`.

use macha_core::action::{Action, Hosts, Origin};
use macha_core::flap::FlapGuard;
use macha_core::policy::{Autonomy, Permit, PolicyInputs, ProtectedUnits, Ruling, decide};
use macha_core::{Mono, Now, Timestamp, UnitName};
use macha_observe::systemd::{Bus, Systemd, UnitEvents};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

/// A row of `Manager.ListUnits`.
type UnitRow = (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

const LIST_CALLS: usize = 200;
const FAILURES: usize = 50;
const EXTRA_SERVICES: usize = 50;

fn main() {
    let dir = PathBuf::from(std::env::var("MACHA_LAB_SDUSER").unwrap_or_else(|_| "/run/macha-lab/sduser".into()));
    let socket = dir.join("xdg/bus");
    if !socket.exists() {
        println!("lab systemd not available ({} missing)", socket.display());
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(&dir, &format!("unix:path={}", socket.display()))) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

type Error = Box<dyn std::error::Error>;

async fn run(dir: &Path, bus: &str) -> Result<(), Error> {
    let sd = match Systemd::connect(Bus::Address(bus.to_owned())).await {
        Ok(sd) => sd,
        Err(e) => {
            println!("lab systemd not available ({e})");
            return Ok(());
        }
    };
    let raw = zbus::connection::Builder::address(bus).build().await?;
    let unit_dir = dir.join("home/.config/systemd/user");
    std::fs::create_dir_all(&unit_dir)?;
    let tag = std::process::id();
    let mut files = Vec::new();

    // Load: extra running services.
    let mut load = Vec::new();
    for i in 0..EXTRA_SERVICES {
        let name = format!("mlabb-load-{tag}-{i}.service");
        let file = unit_dir.join(&name);
        std::fs::write(&file, "[Service]\nExecStart=/bin/sleep infinity\n")?;
        files.push(file);
        load.push(name);
    }
    // The unit that fails on every start.
    let flag = dir.join("home").join(format!("mlabb-fail-{tag}.flag"));
    std::fs::write(&flag, b"")?;
    let failing = format!("mlabb-fail-{tag}.service");
    let file = unit_dir.join(&failing);
    std::fs::write(
        &file,
        format!(
            "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStartPre=/usr/bin/test ! -e {}\nExecStart=/bin/sleep infinity\n",
            flag.display()
        ),
    )?;
    files.push(file);
    manager(&raw, "Reload", &()).await?;
    for name in &load {
        manager(&raw, "StartUnit", &(name.as_str(), "replace")).await?;
    }

    let result = measure(&sd, &raw, &failing).await;

    for name in load.iter().chain([&failing]) {
        let _ = manager(&raw, "StopUnit", &(name.as_str(), "replace")).await;
        let _ = manager(&raw, "ResetFailedUnit", &(name.as_str(),)).await;
    }
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(&flag);
    let _ = manager(&raw, "Reload", &()).await;
    result
}

async fn measure(sd: &Systemd, raw: &Connection, failing: &str) -> Result<(), Error> {
    // Let the load services settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut list = Vec::with_capacity(LIST_CALLS);
    let mut units = None;
    for _ in 0..LIST_CALLS {
        let t0 = Instant::now();
        let u = sd.list_units().await?;
        list.push(t0.elapsed().as_secs_f64() * 1e6);
        units = Some(u);
    }
    let (total, notable) = units.map_or((0, 0), |u| (u.total, u.notable.len()));
    // The floor: the ListUnits call alone, for comparison with what list_units adds.
    let mut bare = Vec::with_capacity(LIST_CALLS);
    for _ in 0..LIST_CALLS {
        let t0 = Instant::now();
        let reply = raw
            .call_method(
                Some("org.freedesktop.systemd1"),
                "/org/freedesktop/systemd1",
                Some("org.freedesktop.systemd1.Manager"),
                "ListUnits",
                &(),
            )
            .await?;
        let rows: Vec<UnitRow> = reply.body().deserialize()?;
        std::hint::black_box(rows);
        bare.push(t0.elapsed().as_secs_f64() * 1e6);
    }

    let unit = UnitName::parse(failing)?;
    let mut events = sd.subscribe().await?;
    let mut failed = Vec::with_capacity(FAILURES);
    let mut job_returned = Vec::with_capacity(FAILURES);
    for _ in 0..FAILURES {
        let permit = restart(&unit)?;
        let t0 = Instant::now();
        let (job, received) =
            tokio::join!(sd.execute_unit_action(&permit, Duration::from_secs(10)), wait_failed(&mut events, failing));
        let job = job?;
        job_returned.push(t0.elapsed().as_secs_f64() * 1e6);
        let received = received?;
        let entered = u64::try_from(property(raw, failing, "InactiveEnterTimestamp").await?)?;
        failed.push(received.saturating_sub(entered) as f64);
        if job.result.as_str() != "failed" {
            return Err(format!("restart of {failing} ended {}, expected failed", job.result).into());
        }
    }

    println!();
    println!(
        "systemd adapter on the lab user manager (systemd {}), {total} units loaded, {notable} notable",
        sd.version()
    );
    println!();
    println!("| measurement | n | median | p99 | max |");
    println!("|---|---|---|---|---|");
    row(&format!("list_units ({total} units; NRestarts of every non-inactive service)"), &mut list);
    row("bare ListUnits call, for comparison", &mut bare);
    row("unit enters failed → UnitEvent in hand (from InactiveEnterTimestamp)", &mut failed);
    row("execute_unit_action(restart) → JobRemoved `failed` (whole call)", &mut job_returned);
    println!();
    Ok(())
}

/// Waits for `unit`'s next `failed` event; returns the CLOCK_REALTIME µs at which it arrived.
async fn wait_failed(events: &mut UnitEvents, unit: &str) -> Result<u64, Error> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next()).await??;
        if ev.unit == unit && ev.is_failed() {
            return Ok(now_usec());
        }
    }
}

fn now_usec() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn restart(unit: &UnitName) -> Result<Permit, Error> {
    let protected = ProtectedUnits::new::<&str>(&[]);
    let flap = FlapGuard::new(3, Duration::from_secs(1800));
    let hosts = BTreeSet::new();
    let inputs = PolicyInputs { flap, known_hosts: hosts, ..PolicyInputs::new(Autonomy::AutoSafe, protected) };
    let ctx = inputs.context();
    let action = Action::RestartUnit { host: Hosts::default(), unit: unit.clone(), reason: "benchmark".into() };
    match decide(&action, &Origin::Person { uid: 0 }, &ctx, Now::new(Timestamp::from_secs(1_800_000_000), Mono(0))) {
        Ruling::Execute(p) => Ok(p),
        other => Err(format!("not permitted: {:?}", other.decision()).into()),
    }
}

async fn manager<B>(conn: &Connection, method: &str, body: &B) -> Result<(), Error>
where
    B: serde::Serialize + zbus::DynamicType,
{
    conn.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        method,
        body,
    )
    .await?;
    Ok(())
}

async fn property(conn: &Connection, unit: &str, name: &str) -> Result<OwnedVariant, Error> {
    let path: OwnedObjectPath = conn
        .call_method(
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            Some("org.freedesktop.systemd1.Manager"),
            "LoadUnit",
            &(unit,),
        )
        .await?
        .body()
        .deserialize()?;
    let v: OwnedVariant = conn
        .call_method(
            Some("org.freedesktop.systemd1"),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.freedesktop.systemd1.Unit", name),
        )
        .await?
        .body()
        .deserialize()?;
    Ok(v)
}

fn row(what: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(f64::NAN)
    };
    let fmt = |us: f64| if us >= 1000.0 { format!("{:.2} ms", us / 1000.0) } else { format!("{us:.0} µs") };
    println!(
        "| {what} | {} | {} | {} | {} |",
        samples.len(),
        fmt(pick(0.5)),
        fmt(pick(0.99)),
        fmt(samples.last().copied().unwrap_or(f64::NAN))
    );
}
