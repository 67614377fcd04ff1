//! systemd over D-Bus: the units section of a snapshot, unit state on demand, an event stream
//! that reports a unit entering `failed` within milliseconds, and unit control behind a permit.
//!
//! Hand-written proxies for the few `org.freedesktop.systemd1` calls Macha needs (zbus 6, tokio).
//! They are private: the only ways this crate starts, stops, restarts or resets a unit are
//! [`Systemd::execute_unit_action`] and [`Systemd::run_cleanup_unit`] (a clean-up action's fixed
//! unit), which take a [`Permit`], and a permit can only come from [`macha_core::policy::decide`].
//!
//! Events are pushed, never polled: [`Systemd::subscribe`] calls `Manager.Subscribe()` (systemd
//! emits unit signals only while some client is subscribed) and adds one match rule for
//! `PropertiesChanged` under `/org/freedesktop/systemd1/unit` and one for `JobRemoved`. It runs on
//! a connection of its own, so a consumer that stops reading events can never stall queries or
//! unit control, and reads that connection as one stream, so events keep systemd's order (the
//! type interface's `Result`, then the unit's new state, then the end of the job).
//!
//! Signals are checked against the bus name's current owner: a D-Bus peer can send a signal that
//! looks like systemd's straight to Macha's connection (unicast signals bypass match rules), so
//! every signal whose sender is not the unique name that owns `org.freedesktop.systemd1` is
//! dropped and counted. The owner is tracked through the bus's own `NameOwnerChanged` (a third,
//! sender-checked match rule), so a `daemon-reexec` does not break the stream.
//!
//! `NRestarts` is read for every loaded service that is not `inactive` (concurrently, at most
//! [`PROPERTY_READS_IN_FLIGHT`] at a time), not for every service: an inactive service is not
//! restarting. `Result` is read only for the units that turn out notable. The cost is one
//! pipelined round trip per such service: about 1.5 ms for 55 running services on the lab's user
//! manager, on top of 0.3-0.5 ms for `ListUnits` itself (see the `systemd` bench). A service that
//! restarted and is now `inactive` is not reported by [`Systemd::list_units`]; the event stream
//! sees every restart as it happens.

use futures_util::stream::StreamExt;
use macha_core::action::Action;
use macha_core::policy::Permit;
use macha_core::snapshot::{UnitState, Units};
use macha_core::{HostName, UnitName};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;
use tracing::{Instrument, debug, info, info_span, warn};
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_IFACE: &str = "org.freedesktop.systemd1.Manager";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";
const DBUS_NAME: &str = "org.freedesktop.DBus";
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

/// Longest wait for the reply to any one D-Bus call (libdbus's default).
const METHOD_TIMEOUT: Duration = Duration::from_secs(25);
/// Most concurrent property reads [`Systemd::list_units`] keeps in flight.
pub const PROPERTY_READS_IN_FLIGHT: usize = 32;
/// Units whose last state a [`UnitEvents`] stream remembers (for de-duplication and for the state
/// reported with a job's end); beyond it, the memory is cleared and starts over.
const EVENT_MEMORY_UNITS: usize = 8192;
/// Queue of each match rule's stream.
const SIGNAL_QUEUE: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// The row `Manager.ListUnits` returns per unit.
type UnitRow = (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn list_units(&self) -> zbus::Result<Vec<UnitRow>>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(property)]
    fn system_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// The one logind call Macha makes: reading the inhibitor locks before a reboot.
#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Login {
    /// `(what, who, why, mode, uid, pid)` per lock.
    fn list_inhibitors(&self) -> zbus::Result<Vec<(String, String, String, String, u32, u32)>>;
}

/// The unit a reboot starts, and how (`systemctl reboot` does the same through logind).
pub const REBOOT_TARGET: &str = "reboot.target";
const REBOOT_MODE: &str = "replace-irreversibly";

/// Whether inhibitor locks forbid a reboot now: a `block` lock on `shutdown` does (a `delay` lock
/// only delays). `Err` names who holds it and why. Pure: the locks come from logind.
pub fn reboot_blocked(locks: &[(String, String, String, String, u32, u32)]) -> Result<(), String> {
    let blocking: Vec<String> = locks
        .iter()
        .filter(|(what, _, _, mode, _, _)| mode == "block" && what.split(':').any(|w| w == "shutdown"))
        .map(|(_, who, why, _, _, pid)| {
            format!(
                "{} (pid {pid}): {}",
                macha_core::journal::sanitize(who, 64),
                macha_core::journal::sanitize(why, 200)
            )
        })
        .collect();
    if blocking.is_empty() { Ok(()) } else { Err(format!("a shutdown is inhibited by {}", blocking.join("; "))) }
}

/// Which bus the systemd manager is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else `/var/run/dbus/system_bus_socket`): PID 1.
    System,
    /// The session bus (`DBUS_SESSION_BUS_ADDRESS`, else `$XDG_RUNTIME_DIR/bus`): a user manager.
    Session,
    /// An explicit D-Bus address such as `unix:path=/run/macha-lab/sduser/xdg/bus`.
    Address(String),
}

impl Bus {
    fn kind(&self) -> &'static str {
        match self {
            Bus::System => "system",
            Bus::Session => "session",
            Bus::Address(_) => "D-Bus",
        }
    }

    /// The address this bus resolves to, from the environment where the D-Bus spec says so.
    fn address(&self) -> String {
        match self {
            Bus::System => std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap_or_else(|_| DEFAULT_SYSTEM_BUS.to_owned()),
            Bus::Session => std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_else(|_| {
                let runtime = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "$XDG_RUNTIME_DIR".to_owned());
                format!("unix:path={runtime}/bus")
            }),
            Bus::Address(a) => a.clone(),
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bus at {}", self.kind(), self.address())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("no {kind} bus at {address}: is this a systemd host? ({source})")]
    NoBus {
        kind: &'static str,
        address: String,
        #[source]
        source: zbus::Error,
    },
    #[error("no systemd manager ({SYSTEMD}) on the {kind} bus at {address}: is this a systemd host? ({source})")]
    NoManager {
        kind: &'static str,
        address: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd call {call} failed: {source}")]
    Call {
        call: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd call {call} returned something unexpected: {detail}")]
    Decode { call: String, detail: String },
    /// The permit is not for something this adapter executes; nothing was sent.
    #[error("refused: {0}")]
    Refused(String),
    #[error("{unit}: job {job} did not finish within {}", humanize(*timeout))]
    JobTimeout { unit: String, job: String, timeout: Duration },
    #[error("the connection to systemd ({bus}) was lost: {detail}")]
    Disconnected { bus: String, detail: String },
}

fn humanize(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn call_err(call: impl Into<String>) -> impl FnOnce(zbus::Error) -> SystemdError {
    let call = call.into();
    move |source| SystemdError::Call { call, source }
}

/// A connection to one systemd manager.
#[derive(Debug, Clone)]
pub struct Systemd {
    bus: Bus,
    conn: Connection,
    manager: ManagerProxy<'static>,
    version: String,
}

/// A unit's primary name and every name it is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalUnit {
    /// The primary name (`Id`): `ssh.service` for `sshd.service` on Debian.
    pub id: String,
    /// Every name of the unit (`Names`), the primary one included. Protection must be checked
    /// against each of them.
    pub names: Vec<String>,
    /// `loaded`, `not-found`, `masked`, …: a unit that is `not-found` has no other names to know.
    pub load_state: String,
}

/// How a unit job ended, as `JobRemoved` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobResult {
    Done,
    Canceled,
    Timeout,
    Failed,
    Dependency,
    Skipped,
    /// A result this version does not know (`invalid`, `assert`, `unsupported`, …).
    Other(String),
}

impl JobResult {
    pub fn parse(s: &str) -> JobResult {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Other(s) => s,
        }
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Systemd::run_cleanup_unit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupRun {
    /// The unit is not loaded here (`LoadState` `not-found` when the host is not under the NixOS
    /// module, or `masked`, `error`, …): nothing was started.
    NotLoaded { unit: String, load_state: String },
    /// The start job ended; the unit's `Result` (`success`, `exit-code`, `timeout`, …) and
    /// `ExecMainStatus` read after it.
    Ran { unit: String, job: JobOutcome, result: String, exec_main_status: i32 },
}

/// What [`Systemd::execute_unit_action`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub unit: String,
    /// The job's object path; `None` for `ResetFailedUnit`, which runs no job.
    pub job: Option<String>,
    pub result: JobResult,
}

impl JobOutcome {
    pub fn succeeded(&self) -> bool {
        self.result == JobResult::Done
    }
}

/// The unit call a permit authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitCall {
    Start,
    Stop,
    Restart,
    ResetFailed,
}

impl UnitCall {
    fn method(self) -> &'static str {
        match self {
            UnitCall::Start => "StartUnit",
            UnitCall::Stop => "StopUnit",
            UnitCall::Restart => "RestartUnit",
            UnitCall::ResetFailed => "ResetFailedUnit",
        }
    }
}

/// The call and unit of a permitted action, or why this adapter does not execute it. Pure: it runs
/// before anything is sent.
fn unit_call(action: &Action) -> Result<(UnitCall, &UnitName), SystemdError> {
    let (call, unit) = match action {
        Action::RestartUnit { unit, .. } => (UnitCall::Restart, unit),
        Action::StartUnit { unit, .. } => (UnitCall::Start, unit),
        Action::StopUnit { unit, .. } => (UnitCall::Stop, unit),
        Action::ResetFailed { unit, .. } => (UnitCall::ResetFailed, unit),
        other => {
            return Err(SystemdError::Refused(format!("{} is not a unit action", other.kind())));
        }
    };
    let hosts = action.hosts().as_slice();
    if hosts.len() != 1 || hosts.iter().any(|h| !h.is_local()) {
        return Err(SystemdError::Refused(format!(
            "{} is not for this host; the local systemd adapter only acts on host local",
            action.describe()
        )));
    }
    Ok((call, unit))
}

impl Systemd {
    /// Connects to the systemd manager on `bus` and checks that it answers.
    pub async fn connect(bus: Bus) -> Result<Systemd, SystemdError> {
        let conn = open(&bus).await?;
        let manager = manager_proxy(&conn, &bus).await?;
        let version = manager.version().await.map_err(|source| SystemdError::NoManager {
            kind: bus.kind(),
            address: bus.address(),
            source,
        })?;
        debug!(%bus, %version, "connected to systemd");
        Ok(Systemd { bus, conn, manager, version })
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The manager's `Version` (`252.39-1~deb12u2`, …).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Reboots this host for a permitted `reboot` of host `local`: `StartUnit("reboot.target",
    /// "replace-irreversibly")`, and nothing else. On the system bus logind's inhibitor locks are
    /// read first and a `block` lock on shutdown refuses the reboot (an unreadable lock list
    /// refuses too: fail closed); a user manager (a session or explicit bus) has no logind to ask.
    /// Returns the job's path once systemd queued it: its end is the host going down, so it is not
    /// waited for.
    pub async fn reboot(&self, permit: &Permit, timeout: Duration) -> Result<String, SystemdError> {
        let action = permit.action();
        let local = action.hosts().as_slice().iter().all(HostName::is_local) && action.hosts().as_slice().len() == 1;
        if !matches!(action, Action::Reboot { .. }) || !local {
            return Err(SystemdError::Refused(format!("{} is not a reboot of this host", action.describe())));
        }
        let within = |what: &'static str| {
            move |_| SystemdError::Refused(format!("{what} did not answer within {}s", timeout.as_secs()))
        };
        if self.bus == Bus::System {
            let login = LoginProxy::builder(&self.conn)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
                .map_err(call_err("logind proxy"))?;
            let locks = tokio::time::timeout(timeout, login.list_inhibitors())
                .await
                .map_err(within("logind"))?
                .map_err(call_err("ListInhibitors (needed before a reboot)"))?;
            reboot_blocked(&locks).map_err(SystemdError::Refused)?;
        }
        let job = tokio::time::timeout(timeout, self.manager.start_unit(REBOOT_TARGET, REBOOT_MODE))
            .await
            .map_err(within("systemd"))?
            .map_err(call_err(format!("StartUnit({REBOOT_TARGET}, {REBOOT_MODE})")))?;
        info!(job = job.as_str(), "reboot queued");
        Ok(job.as_str().to_owned())
    }

    /// The units section: `ListUnits` once, `SystemState`, and for the notable units (every failed
    /// unit, every service with `NRestarts` > 0) their `Result` and `NRestarts`. See the module
    /// docs for which services `NRestarts` is read from.
    pub async fn list_units(&self) -> Result<Units, SystemdError> {
        let span = info_span!("list_units", units = tracing::field::Empty, notable = tracing::field::Empty);
        async {
            let (rows, system_state) = futures_util::try_join!(
                async { self.manager.list_units().await.map_err(call_err("ListUnits")) },
                async { self.manager.system_state().await.map_err(call_err("Get SystemState")) },
            )?;
            let failed: Vec<String> = rows.iter().filter(|r| r.3 == "failed").map(|r| r.0.clone()).collect();
            let candidates: Vec<&UnitRow> =
                rows.iter().filter(|r| r.3 == "failed" || (r.0.ends_with(".service") && r.3 != "inactive")).collect();
            // In batches of `PROPERTY_READS_IN_FLIGHT`, with no closure held across an await (the
            // future stays `Send`, so snapshots can be collected in a task).
            let mut notable: Vec<UnitState> = Vec::new();
            for batch in candidates.chunks(PROPERTY_READS_IN_FLIGHT) {
                let reads: Vec<_> = batch.iter().map(|row| self.notable_state(row)).collect();
                notable.extend(futures_util::future::join_all(reads).await.into_iter().flatten());
            }
            tracing::Span::current().record("units", rows.len()).record("notable", notable.len());
            Ok(Units { system_state, total: u32::try_from(rows.len()).unwrap_or(u32::MAX), notable, failed })
        }
        .instrument(span)
        .await
    }

    /// `Some(state)` if the unit of `row` is notable.
    async fn notable_state(&self, row: &UnitRow) -> Option<UnitState> {
        let (name, description, load_state, active_state, sub_state, _, path, ..) = row;
        let failed = active_state == "failed";
        // A unit can go away between ListUnits and these reads (a transient unit ending, garbage
        // collection): its properties are then unknown, which must not fail the whole section.
        let (result, n_restarts) = if name.ends_with(".service") {
            // NRestarts first; Result only for the few that turn out notable.
            let n = match self.get::<u32>(path, SERVICE_IFACE, "NRestarts").await {
                Ok(n) => Some(n),
                Err(e) => {
                    debug!(unit = %name, error = %e, "NRestarts unreadable");
                    None
                }
            };
            if !failed && n.unwrap_or(0) == 0 {
                return None;
            }
            (self.get::<String>(path, SERVICE_IFACE, "Result").await.ok(), n)
        } else {
            // Every failed unit type but target/device/slice has a `Result` on its own interface.
            let iface = type_interface(name);
            let r = match iface {
                Some(iface) => self.get::<String>(path, &iface, "Result").await.ok(),
                None => None,
            };
            (r, None)
        };
        let notable = failed || n_restarts.is_some_and(|n| n > 0);
        notable.then(|| UnitState {
            name: name.clone(),
            description: description.clone(),
            load_state: load_state.clone(),
            active_state: active_state.clone(),
            sub_state: sub_state.clone(),
            result,
            n_restarts,
        })
    }

    /// The state of one unit (loading it if systemd had not: a name systemd does not know comes
    /// back with `load_state` `not-found`). `name` is the unit's primary name.
    pub async fn unit_state(&self, unit: &UnitName) -> Result<UnitState, SystemdError> {
        let path = self.load(unit).await?;
        let (name, description, load_state, active_state, sub_state) = futures_util::try_join!(
            self.get::<String>(&path, UNIT_IFACE, "Id"),
            self.get::<String>(&path, UNIT_IFACE, "Description"),
            self.get::<String>(&path, UNIT_IFACE, "LoadState"),
            self.get::<String>(&path, UNIT_IFACE, "ActiveState"),
            self.get::<String>(&path, UNIT_IFACE, "SubState"),
        )?;
        let (result, n_restarts) = if name.ends_with(".service") && load_state != "not-found" {
            let (r, n) = futures_util::try_join!(
                self.get::<String>(&path, SERVICE_IFACE, "Result"),
                self.get::<u32>(&path, SERVICE_IFACE, "NRestarts"),
            )?;
            (Some(r), Some(n))
        } else {
            (None, None)
        };
        Ok(UnitState { name, description, load_state, active_state, sub_state, result, n_restarts })
    }

    /// Resolves `unit` to its primary name and all its names (`LoadUnit` + `Id` + `Names`):
    /// `sshd.service` is `ssh.service` on Debian. Check protection against every name.
    pub async fn canonical_name(&self, unit: &UnitName) -> Result<CanonicalUnit, SystemdError> {
        let path = self.load(unit).await?;
        let (id, names, load_state) = futures_util::try_join!(
            self.get::<String>(&path, UNIT_IFACE, "Id"),
            self.get::<Vec<String>>(&path, UNIT_IFACE, "Names"),
            self.get::<String>(&path, UNIT_IFACE, "LoadState"),
        )?;
        Ok(CanonicalUnit { id, names, load_state })
    }

    /// The units named by list properties of `unit` (such as `ConsistsOf`, `BoundBy`,
    /// `RequiredBy`): what a job on it pulls along. A name systemd does not know has none.
    pub async fn related_units(&self, unit: &UnitName, properties: &[&str]) -> Result<Vec<String>, SystemdError> {
        let path = self.load(unit).await?;
        let mut names = Vec::new();
        for p in properties {
            names.extend(self.get::<Vec<String>>(&path, UNIT_IFACE, p).await?);
        }
        Ok(names)
    }

    /// Starts the event stream: `Manager.Subscribe()` plus the match rules, on a connection of its
    /// own. Events arrive as systemd emits them; nothing is polled.
    pub async fn subscribe(&self) -> Result<UnitEvents, SystemdError> {
        let conn = open(&self.bus).await?;
        UnitEvents::start(conn, self.bus.to_string()).await
    }

    /// Executes a permitted unit action: `RestartUnit`/`StartUnit`/`StopUnit` (mode `replace`),
    /// then waits up to `timeout` for the job's `JobRemoved` and returns its result;
    /// `ResetFailedUnit` runs no job and returns `done` once systemd accepted it.
    ///
    /// The `JobRemoved` match rule is in place before the call is sent, so a job that ends at once
    /// is not missed. A permit for anything but a unit action on host `local` is refused before
    /// anything is sent.
    pub async fn execute_unit_action(&self, permit: &Permit, timeout: Duration) -> Result<JobOutcome, SystemdError> {
        let (call, unit) = unit_call(permit.action())?;
        let unit = unit.as_str().to_owned();
        let span = info_span!("unit_action", unit = %unit, call = call.method(), job = tracing::field::Empty);
        self.run_unit_call(call, &unit, tokio::time::Instant::now() + timeout, timeout).instrument(span).await
    }

    async fn run_unit_call(
        &self,
        call: UnitCall,
        unit: &str,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<JobOutcome, SystemdError> {
        let what = || format!("{}({unit})", call.method());
        let timed_out = |job: &str| SystemdError::JobTimeout { unit: unit.to_owned(), job: job.to_owned(), timeout };
        if call == UnitCall::ResetFailed {
            tokio::time::timeout_at(deadline, self.manager.reset_failed_unit(unit))
                .await
                .map_err(|_| timed_out("(none)"))?
                .map_err(call_err(what()))?;
            return Ok(JobOutcome { unit: unit.to_owned(), job: None, result: JobResult::Done });
        }
        let owner = name_owner(&self.conn).await?;
        let rule = job_removed_rule().map_err(call_err("AddMatch JobRemoved"))?;
        let mut jobs = MessageStream::for_match_rule(rule, &self.conn, Some(SIGNAL_QUEUE))
            .await
            .map_err(call_err("AddMatch JobRemoved"))?;
        let send = async {
            match call {
                UnitCall::Start => self.manager.start_unit(unit, "replace").await,
                UnitCall::Stop => self.manager.stop_unit(unit, "replace").await,
                UnitCall::Restart => self.manager.restart_unit(unit, "replace").await,
                UnitCall::ResetFailed => Err(zbus::Error::Failure("ResetFailedUnit runs no job".into())),
            }
        };
        tokio::pin!(send);
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        // Keep draining signals while the call is in flight, so a burst of other jobs ending
        // cannot fill the queue and stall the connection. The signals drained before the reply is
        // taken are kept and looked at first: systemd sends the reply before the job can end, but
        // when both have arrived, which of the two `select!` takes first is not defined — dropping
        // those signals lost the end of a fast job (a unit failing at once) and waited for nothing.
        let mut early: Vec<zbus::Message> = Vec::new();
        let job = loop {
            tokio::select! {
                r = &mut send => break r.map_err(call_err(what()))?,
                m = jobs.next() => match m {
                    Some(Ok(msg)) => {
                        if early.len() < EARLY_SIGNALS_MAX {
                            early.push(msg);
                        }
                    }
                    Some(Err(_)) => {}
                    None => return Err(self.disconnected(format!("stream ended during {}", what()))),
                },
                () = &mut sleep => return Err(timed_out("(no reply yet)")),
            }
        };
        let job = job.as_str().to_owned();
        tracing::Span::current().record("job", job.as_str());
        debug!("job queued");
        let mut early = early.into_iter();
        loop {
            let msg = match early.next() {
                Some(msg) => msg,
                None => tokio::select! {
                    m = jobs.next() => match m {
                        Some(Ok(msg)) => msg,
                        Some(Err(_)) => continue,
                        None => return Err(self.disconnected(format!("stream ended waiting for job {job}"))),
                    },
                    () = &mut sleep => return Err(timed_out(&job)),
                },
            };
            if !sent_by(&msg, owner.as_deref()) {
                warn!(sender = ?msg.header().sender().map(|s| s.as_str()), "dropped a JobRemoved not sent by systemd");
                continue;
            }
            let Ok((_id, path, job_unit, result)) = msg.body().deserialize::<(u32, OwnedObjectPath, String, String)>()
            else {
                continue;
            };
            if path.as_str() == job {
                let result = JobResult::parse(&result);
                debug!(%result, "job removed");
                return Ok(JobOutcome { unit: job_unit, job: Some(job), result });
            }
        }
    }

    /// Runs a permitted clean-up action (journal vacuum, garbage collection, store verify or
    /// repair) of host `local` through its fixed root unit
    /// ([`macha_core::command::cleanup_unit`]): reads the unit's `LoadState` (a unit that is not
    /// `loaded` is not started), starts it (mode `replace`), waits up to `timeout` for the job, and
    /// reads the unit's `Result` and `ExecMainStatus` after it. Anything else is refused before
    /// anything is sent.
    pub async fn run_cleanup_unit(&self, permit: &Permit, timeout: Duration) -> Result<CleanupRun, SystemdError> {
        let action = permit.action();
        let hosts = action.hosts().as_slice();
        if hosts.len() != 1 || hosts.iter().any(|h| !h.is_local()) {
            return Err(SystemdError::Refused(format!(
                "{} is not for this host; a clean-up unit only runs on host local",
                action.describe()
            )));
        }
        let unit = macha_core::command::cleanup_unit(action).map_err(|e| SystemdError::Refused(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let span = info_span!("cleanup_unit", unit = %unit, job = tracing::field::Empty);
        async {
            let path = self.load(&unit).await?;
            let load_state = self.get::<String>(&path, UNIT_IFACE, "LoadState").await?;
            if load_state != "loaded" {
                return Ok(CleanupRun::NotLoaded { unit: unit.as_str().to_owned(), load_state });
            }
            let job = self.run_unit_call(UnitCall::Start, unit.as_str(), deadline, timeout).await?;
            let (result, exec_main_status) = futures_util::try_join!(
                self.get::<String>(&path, SERVICE_IFACE, "Result"),
                self.get::<i32>(&path, SERVICE_IFACE, "ExecMainStatus"),
            )?;
            Ok(CleanupRun::Ran { unit: unit.as_str().to_owned(), job, result, exec_main_status })
        }
        .instrument(span)
        .await
    }

    fn disconnected(&self, detail: String) -> SystemdError {
        SystemdError::Disconnected { bus: self.bus.to_string(), detail }
    }

    async fn load(&self, unit: &UnitName) -> Result<OwnedObjectPath, SystemdError> {
        self.manager.load_unit(unit.as_str()).await.map_err(call_err(format!("LoadUnit({unit})")))
    }

    /// One property, by `Properties.Get`.
    async fn get<T>(&self, path: &OwnedObjectPath, iface: &str, name: &str) -> Result<T, SystemdError>
    where
        T: TryFrom<OwnedVariant>,
        <T as TryFrom<OwnedVariant>>::Error: fmt::Display,
    {
        let what = || format!("Get {iface}.{name} of {}", path.as_str());
        let reply = self
            .conn
            .call_method(Some(SYSTEMD), path.as_str(), Some(PROPERTIES_IFACE), "Get", &(iface, name))
            .await
            .map_err(call_err(what()))?;
        let value: OwnedVariant =
            reply.body().deserialize().map_err(|e| SystemdError::Decode { call: what(), detail: e.to_string() })?;
        T::try_from(value).map_err(|e| SystemdError::Decode { call: what(), detail: e.to_string() })
    }
}

async fn open(bus: &Bus) -> Result<Connection, SystemdError> {
    let address = bus.address();
    // Never wait forever on a manager that does not answer.
    let builder = zbus::connection::Builder::address(address.as_str()).method_timeout(METHOD_TIMEOUT);
    builder.build().await.map_err(|source| SystemdError::NoBus { kind: bus.kind(), address, source })
}

async fn manager_proxy(conn: &Connection, bus: &Bus) -> Result<ManagerProxy<'static>, SystemdError> {
    ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|source| SystemdError::NoManager { kind: bus.kind(), address: bus.address(), source })
}

/// The unique name that owns `org.freedesktop.systemd1` now, if any.
async fn name_owner(conn: &Connection) -> Result<Option<String>, SystemdError> {
    match conn.call_method(Some(DBUS_NAME), "/org/freedesktop/DBus", Some(DBUS_NAME), "GetNameOwner", &(SYSTEMD,)).await
    {
        Ok(reply) => reply
            .body()
            .deserialize::<String>()
            .map(Some)
            .map_err(|e| SystemdError::Decode { call: "GetNameOwner".into(), detail: e.to_string() }),
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" => {
            Ok(None)
        }
        Err(e) => Err(SystemdError::Call { call: "GetNameOwner".into(), source: e }),
    }
}

/// Whether `msg` was sent by `owner` (the current unique name of systemd). With no known owner,
/// nothing is trusted.
fn sent_by(msg: &Message, owner: Option<&str>) -> bool {
    let header = msg.header();
    match (header.sender(), owner) {
        (Some(s), Some(o)) => s.as_str() == o,
        _ => false,
    }
}

/// The most `JobRemoved` signals kept while a job's reply is awaited (ours cannot end before its
/// reply is sent, so this only bounds what other jobs' ends can make us hold).
const EARLY_SIGNALS_MAX: usize = 1024;

fn job_removed_rule() -> zbus::Result<MatchRule<'static>> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SYSTEMD)
        .interface(MANAGER_IFACE)
        .member("JobRemoved")
        .path(MANAGER_PATH)
        .build()
}

fn properties_changed_rule() -> zbus::Result<MatchRule<'static>> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SYSTEMD)
        .interface(PROPERTIES_IFACE)
        .member("PropertiesChanged")
        .path_namespace("/org/freedesktop/systemd1/unit")
        .build()
}

fn owner_changed_rule() -> zbus::Result<MatchRule<'static>> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(DBUS_NAME)
        .interface(DBUS_NAME)
        .member("NameOwnerChanged")
        .arg(0, SYSTEMD)
        .build()
}

/// The D-Bus interface of a unit's own type (`org.freedesktop.systemd1.Socket` for
/// `x.socket`), for the types that have a `Result` property.
fn type_interface(unit: &str) -> Option<String> {
    let ty = unit.rsplit_once('.')?.1;
    let name = match ty {
        "service" => "Service",
        "socket" => "Socket",
        "mount" => "Mount",
        "automount" => "Automount",
        "swap" => "Swap",
        "timer" => "Timer",
        "path" => "Path",
        "scope" => "Scope",
        _ => return None,
    };
    Some(format!("org.freedesktop.systemd1.{name}"))
}

/// Decodes the unit name from a unit's object path: systemd escapes every byte outside
/// `[A-Za-z0-9]` as `_xx` (lower-case hex), so `/org/freedesktop/systemd1/unit/nginx_2eservice` is
/// `nginx.service`. `None` for paths outside the unit namespace or with a bad escape.
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?;
    if label.is_empty() || label.contains('/') {
        return None;
    }
    // A lone `_` is systemd's escape of the empty string.
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// One change systemd reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEvent {
    /// The unit's primary name.
    pub unit: String,
    /// `ActiveState` after the change (`failed`, `active`, …). For a job's end, the last state this
    /// stream saw for the unit, if it saw one.
    pub active_state: Option<String>,
    pub sub_state: Option<String>,
    /// The `Result` of the unit's type (`exit-code`, `signal`, `start-limit-hit`, …), for the
    /// types that have one, as last reported.
    pub result: Option<String>,
    /// Set when the event is a job's end (`JobRemoved`): `done`, `failed`, `timeout`, …
    pub job_result: Option<String>,
}

impl UnitEvent {
    /// The unit entered `failed`: a state change, not a job's end (a job's end carries the state
    /// last seen, which may be `failed` too).
    pub fn is_failed(&self) -> bool {
        self.job_result.is_none() && self.active_state.as_deref() == Some("failed")
    }
}

/// The last state a stream reported for one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    active_state: Option<String>,
    sub_state: Option<String>,
    result: Option<String>,
}

/// Unit events as systemd pushes them. Read it continuously with [`UnitEvents::next`]: unread
/// events queue up (to a bound) and then hold back only this stream's own connection.
pub struct UnitEvents {
    bus: String,
    // Kept so the subscription lives as long as the stream.
    conn: Connection,
    /// Every message of the connection, in the order they arrived.
    stream: MessageStream,
    /// Signals that arrived while the subscription was being set up.
    pending: VecDeque<Message>,
    owner: Option<String>,
    seen: HashMap<String, Seen>,
    spoofed: u64,
}

impl fmt::Debug for UnitEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitEvents")
            .field("bus", &self.bus)
            .field("owner", &self.owner)
            .field("units_seen", &self.seen.len())
            .field("spoofed", &self.spoofed)
            .finish_non_exhaustive()
    }
}

impl UnitEvents {
    async fn start(mut conn: Connection, bus: String) -> Result<UnitEvents, SystemdError> {
        conn.set_max_queued(SIGNAL_QUEUE);
        // One stream for everything the connection receives: the match rules are registered with
        // the bus directly, so systemd's signals come out in the order systemd sent them (a job's
        // end after the unit's state change), which separate streams per rule would not keep.
        let mut stream = MessageStream::from(&conn);
        let setup_conn = conn.clone();
        let setup = async move {
            let conn = setup_conn;
            for (what, rule) in [
                ("AddMatch PropertiesChanged", properties_changed_rule()),
                ("AddMatch JobRemoved", job_removed_rule()),
                ("AddMatch NameOwnerChanged", owner_changed_rule()),
            ] {
                let rule = rule.map_err(call_err(what))?;
                conn.call_method(
                    Some(DBUS_NAME),
                    "/org/freedesktop/DBus",
                    Some(DBUS_NAME),
                    "AddMatch",
                    &(rule.to_string(),),
                )
                .await
                .map_err(call_err(what))?;
            }
            let manager = ManagerProxy::builder(&conn)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
                .map_err(call_err("Manager proxy"))?;
            match manager.subscribe().await {
                Ok(()) => {}
                // Harmless: this connection is already subscribed.
                Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with(".AlreadySubscribed") => {}
                Err(e) => return Err(SystemdError::Call { call: "Subscribe".into(), source: e }),
            }
            name_owner(&conn).await
        };
        tokio::pin!(setup);
        // Drain while setting up: a full queue would hold back the replies setup waits for.
        let mut pending = VecDeque::new();
        let owner = loop {
            tokio::select! {
                r = &mut setup => break r?,
                m = stream.next() => match m {
                    Some(Ok(m)) if m.message_type() == MessageType::Signal => pending.push_back(m),
                    Some(_) => {}
                    None => return Err(SystemdError::Disconnected { bus, detail: "the bus closed the connection during Subscribe".into() }),
                },
            }
        };
        debug!(%bus, owner = ?owner, "subscribed to unit events");
        Ok(UnitEvents { bus, conn, stream, pending, owner, seen: HashMap::new(), spoofed: 0 })
    }

    /// The unique bus name of this stream's own connection.
    pub fn bus_name(&self) -> Option<String> {
        self.conn.unique_name().map(|n| n.to_string())
    }

    /// The next event. An error when the connection to the bus is gone (the stream cannot recover:
    /// subscribe again). Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Result<UnitEvent, SystemdError> {
        while let Some(msg) = self.pending.pop_front() {
            if let Some(event) = self.handle(&msg) {
                return Ok(event);
            }
        }
        loop {
            let msg = match self.stream.next().await {
                Some(Ok(msg)) if msg.message_type() == MessageType::Signal => msg,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    debug!(error = %e, "undecodable message on the event connection");
                    continue;
                }
                None => {
                    return Err(SystemdError::Disconnected {
                        bus: self.bus.clone(),
                        detail: "the bus closed the connection".into(),
                    });
                }
            };
            if let Some(event) = self.handle(&msg) {
                return Ok(event);
            }
        }
    }

    /// Signals dropped because their sender was not systemd.
    pub fn dropped_spoofed(&self) -> u64 {
        self.spoofed
    }

    fn handle(&mut self, msg: &Message) -> Option<UnitEvent> {
        let header = msg.header();
        let member = header.member()?.as_str().to_owned();
        let interface = header.interface()?.as_str().to_owned();
        match (interface.as_str(), member.as_str()) {
            (PROPERTIES_IFACE, "PropertiesChanged")
            | (MANAGER_IFACE, "JobRemoved")
            | (DBUS_NAME, "NameOwnerChanged") => {}
            // The bus's own NameAcquired and whatever else reaches the connection.
            _ => return None,
        }
        if member == "NameOwnerChanged" {
            // Only the bus itself may say who owns a name.
            if header.sender().map(|s| s.as_str()) != Some(DBUS_NAME) {
                self.spoofed += 1;
                return None;
            }
            let (name, _old, new) = msg.body().deserialize::<(String, String, String)>().ok()?;
            if name == SYSTEMD {
                debug!(old = ?self.owner, new = %new, "systemd changed its bus name");
                self.owner = (!new.is_empty()).then_some(new);
            }
            return None;
        }
        if !sent_by(msg, self.owner.as_deref()) {
            self.spoofed += 1;
            warn!(sender = ?header.sender().map(|s| s.as_str()), member, "dropped a signal not sent by systemd");
            return None;
        }
        if self.seen.len() > EVENT_MEMORY_UNITS {
            self.seen.clear();
        }
        match member.as_str() {
            "PropertiesChanged" => {
                let unit = unit_name_from_path(header.path()?.as_str())?;
                let (iface, changed, _invalidated) =
                    msg.body().deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>().ok()?;
                let text = |k: &str| changed.get(k).and_then(|v| <&str>::try_from(v).ok()).map(str::to_owned);
                if iface == UNIT_IFACE {
                    let active_state = text("ActiveState")?;
                    let sub_state = text("SubState");
                    let seen = self.seen.entry(unit.clone()).or_default();
                    let now = Seen { active_state: Some(active_state), sub_state, result: seen.result.clone() };
                    if *seen == now {
                        return None; // the same state again (a job attached or detached)
                    }
                    *seen = now.clone();
                    Some(UnitEvent {
                        unit,
                        active_state: now.active_state,
                        sub_state: now.sub_state,
                        result: now.result,
                        job_result: None,
                    })
                } else {
                    // The type's interface comes first, then `…Unit` (systemd keeps this order), so
                    // the result is current when the state change is reported.
                    if let Some(result) = text("Result") {
                        self.seen.entry(unit).or_default().result = Some(result);
                    }
                    None
                }
            }
            "JobRemoved" => {
                let (_id, _job, unit, result) =
                    msg.body().deserialize::<(u32, OwnedObjectPath, String, String)>().ok()?;
                let seen = self.seen.get(&unit).cloned().unwrap_or_default();
                Some(UnitEvent {
                    unit,
                    active_state: seen.active_state,
                    sub_state: seen.sub_state,
                    result: seen.result,
                    job_result: Some(result),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use macha_core::HostName;
    use macha_core::action::{DiagnosticArgs, DiagnosticName, Hosts};

    #[test]
    fn decodes_unit_paths() {
        let p = |s: &str| unit_name_from_path(&format!("{UNIT_PATH_PREFIX}{s}"));
        assert_eq!(p("nginx_2eservice").as_deref(), Some("nginx.service"));
        assert_eq!(p("lab_2ddemo_2eservice").as_deref(), Some("lab-demo.service"));
        assert_eq!(p("getty_40tty1_2eservice").as_deref(), Some("getty@tty1.service"));
        assert_eq!(p("_2d_2emount").as_deref(), Some("-.mount"));
        assert_eq!(p("dev_2dsda1_2edevice").as_deref(), Some("dev-sda1.device"));
        assert_eq!(
            p("sys_2ddevices_2dvirtual_2dnet_2dlo_2edevice").as_deref(),
            Some("sys-devices-virtual-net-lo.device")
        );
        assert_eq!(
            p("systemd_2dfsck_40dev_2ddisk_2dby_5cx2duuid_2eservice").as_deref(),
            Some("systemd-fsck@dev-disk-by\\x2duuid.service")
        );
        assert_eq!(p("a_5fb_2eservice").as_deref(), Some("a_b.service"));
        assert_eq!(p("UPPER9_2eservice").as_deref(), Some("UPPER9.service"));
        assert_eq!(p("_").as_deref(), Some(""));
        // Bad escapes and paths outside the namespace.
        assert_eq!(p("bad_2"), None);
        assert_eq!(p("bad_zz"), None);
        assert_eq!(p("a-b"), None);
        assert_eq!(p("a/b"), None);
        assert_eq!(p(""), None);
        assert_eq!(unit_name_from_path("/org/freedesktop/systemd1/job/42"), None);
        assert_eq!(unit_name_from_path("/org/freedesktop/systemd1"), None);
        // Non-UTF-8 bytes decode lossily instead of failing.
        assert_eq!(p("x_ff").as_deref(), Some("x\u{fffd}"));
    }

    fn unit(s: &str) -> UnitName {
        UnitName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn only_local_unit_actions_map_to_calls() {
        let local = Hosts::One(HostName::local());
        let r = String::new;
        let ok = [
            (Action::RestartUnit { host: local.clone(), unit: unit("a"), reason: r() }, UnitCall::Restart),
            (Action::StartUnit { host: local.clone(), unit: unit("a"), reason: r() }, UnitCall::Start),
            (Action::StopUnit { host: local.clone(), unit: unit("a"), reason: r() }, UnitCall::Stop),
            (Action::ResetFailed { host: local.clone(), unit: unit("a"), reason: r() }, UnitCall::ResetFailed),
        ];
        for (action, want) in ok {
            let got = unit_call(&action).map(|(c, u)| (c, u.as_str().to_owned()));
            assert_eq!(got.ok(), Some((want, "a.service".to_owned())), "{}", action.describe());
        }
        let remote = Hosts::One(HostName::parse("web1.lan").unwrap_or_else(|e| panic!("{e}")));
        let refused = [
            Action::RestartUnit { host: remote, unit: unit("a"), reason: r() },
            Action::RestartUnit {
                host: Hosts::Many(vec![HostName::local(), HostName::local()]),
                unit: unit("a"),
                reason: r(),
            },
            Action::Diagnostic {
                host: local.clone(),
                name: DiagnosticName::UnitStatus,
                args: DiagnosticArgs { unit: Some(unit("a")), ..Default::default() },
                reason: r(),
            },
            Action::Reboot { host: local.clone(), reason: r() },
            Action::JournalVacuum { host: local, max_age_days: 3, reason: r() },
        ];
        for action in refused {
            assert!(matches!(unit_call(&action), Err(SystemdError::Refused(_))), "{}", action.describe());
        }
    }

    #[test]
    fn only_a_block_lock_on_shutdown_stops_a_reboot() {
        let lock = |what: &str, mode: &str| {
            (what.to_owned(), "fwupd".to_owned(), "updating \u{1b}[2Jfirmware".to_owned(), mode.to_owned(), 0, 42)
        };
        assert!(reboot_blocked(&[]).is_ok());
        assert!(
            reboot_blocked(&[
                lock("shutdown", "delay"),
                lock("sleep", "block"),
                lock("idle:handle-lid-switch", "block")
            ])
            .is_ok()
        );
        let why = reboot_blocked(&[lock("sleep:shutdown", "block")]).err().unwrap_or_default();
        assert_eq!(why, "a shutdown is inhibited by fwupd (pid 42): updating firmware");
    }

    #[test]
    fn job_results_round_trip() {
        for s in ["done", "canceled", "timeout", "failed", "dependency", "skipped", "assert"] {
            assert_eq!(JobResult::parse(s).as_str(), s);
        }
        assert_eq!(JobResult::parse("assert"), JobResult::Other("assert".into()));
    }

    #[test]
    fn bus_addresses() {
        assert_eq!(Bus::Address("unix:path=/x".into()).address(), "unix:path=/x");
        assert!(Bus::System.to_string().starts_with("system bus at unix:"));
    }

    #[test]
    fn match_rules_build() {
        let pc = properties_changed_rule().map(|r| r.to_string()).unwrap_or_default();
        assert!(pc.contains("path_namespace='/org/freedesktop/systemd1/unit'"), "{pc}");
        assert!(pc.contains("sender='org.freedesktop.systemd1'"), "{pc}");
        let jr = job_removed_rule().map(|r| r.to_string()).unwrap_or_default();
        assert!(jr.contains("member='JobRemoved'"), "{jr}");
        let oc = owner_changed_rule().map(|r| r.to_string()).unwrap_or_default();
        assert!(oc.contains("arg0='org.freedesktop.systemd1'"), "{oc}");
    }
}

/// The current connection to systemd, or why there is none. The daemon's signal task replaces it
/// when the connection is lost and when it comes back; everyone else (snapshots, the executor)
/// only reads it.
#[derive(Debug)]
pub struct SystemdLink {
    current: std::sync::RwLock<Result<std::sync::Arc<Systemd>, String>>,
}

impl SystemdLink {
    pub fn new(current: Result<std::sync::Arc<Systemd>, String>) -> std::sync::Arc<SystemdLink> {
        std::sync::Arc::new(SystemdLink { current: std::sync::RwLock::new(current) })
    }

    pub fn get(&self) -> Result<std::sync::Arc<Systemd>, String> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(_) => Err("systemd link poisoned".into()),
        }
    }

    pub fn set(&self, value: Result<std::sync::Arc<Systemd>, String>) {
        if let Ok(mut c) = self.current.write() {
            *c = value;
        }
    }
}
