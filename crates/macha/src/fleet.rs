//! The fleet in the daemon: the host registry, observation of every contactable host over SSH,
//! discovery from the remote journal, trust, and remote execution.
//!
//! - Registry: the `hosts` table (through `macha-store`), fed by the configuration
//!   (`[hosts.<name>]`, synchronised at start), by discovery and by people (`macha-systems`).
//!   Standings follow `macha_core::fleet::Standing`: discovered and forgotten hosts are never
//!   contacted; configured and admitted hosts are observed; trusted hosts (key pinned by a person
//!   or the configuration) may also be acted on — only they are the policy's `known_hosts`.
//! - Observation: at every tick, one task per contactable host (at most `ssh.parallelism` at
//!   once), each with its own deadline. Each result comes back to the loop as an event and goes
//!   through the same `Engine::cycle` as the local snapshot, as soon as it arrives: a slow, hung
//!   or black-holed host never delays another host's result. A host still being observed when the
//!   next tick comes is skipped, not observed twice.
//! - Discovery: `_HOSTNAME`s of the journal within `discovery.window` (`journalctl --merge`, or
//!   `--directory=<journal.directory>`), each through `macha_core::fleet::admission`.
//! - Trust: `ssh-keyscan` runs in a task; the key whose fingerprint the person confirmed is
//!   pinned in Macha's known_hosts (`macha_ssh::KnownHosts`).
//! - The targets the executor (`macha_exec::Remote`) may reach, kept in step with the registry.

use crate::api::reply::{CheckMode, CheckReport, CheckStatus, HostChange, KeyScan, TrustResult};
use crate::api::{ErrorCode, Request, Response, ops};
use crate::config::Config;
use crate::engine::{Engine, Work};
use anyhow::Context;
use macha_core::checks::Visibility;
use macha_core::fleet::{self as rules, Admission, DomainPattern, Standing};
use macha_core::snapshot::Snapshot;
use macha_core::{HostName, Timestamp};
use macha_exec::Remote;
use macha_ssh::probe::{self, HostMemory, Identity, ProbeSpec};
use macha_ssh::{HostKey, KnownHosts, SshError, SshPool, SshSettings, Target};
use macha_store::{
    AuditKind, AuditQuery, FleetHost, HostRecord, HostSource, HostState, NewAudit, Order, Severity, StoreError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// The most distinct host names one discovery pass keeps: the newest ones (the journal is read
/// newest entry first), so old junk never hides a name seen since.
pub const DISCOVERY_NAMES_MAX: usize = 10_000;
/// The most hosts registered as discovered (outside the allowed domains, never admitted): beyond
/// it, the least recently seen ones are deleted from the registry (their audit records stay).
pub const DISCOVERED_MAX: usize = 1_000;
/// The most names one discovery pass admits by an allowed domain (the rest wait for a later pass).
pub const ADMITTED_PER_PASS: usize = 100;
/// The longest a failing host waits between attempts (or one check interval, if that is longer).
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// The wait before the next attempt on a host that failed `failures` times in a row, with
/// `interval` between ticks: none after the first failure (it is tried at the next tick, in the
/// suspect slots), then 1, 3, 7, 15… intervals, at most [`BACKOFF_MAX`] (or one interval).
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let cap = BACKOFF_MAX.max(interval);
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX).saturating_sub(1);
    interval.saturating_mul(factor).min(cap)
}

/// How many suspect hosts (failing, backed off, or hung last time) are observed at once, beside
/// the `ssh.parallelism` slots of the healthy ones: a quarter of those, at least one.
pub fn suspect_slots(parallelism: usize) -> usize {
    (parallelism / 4).max(1)
}

/// The standing the rules see for a registry state.
pub fn standing(state: HostState) -> Standing {
    match state {
        HostState::Configured => Standing::Configured,
        HostState::Discovered => Standing::Discovered,
        HostState::Admitted => Standing::Admitted,
        HostState::Trusted => Standing::Trusted,
        HostState::Forgotten => Standing::Forgotten,
    }
}

/// What fleet tasks send back to the loop.
#[derive(Debug)]
pub enum FleetEvent {
    Observed(Box<Observed>),
    Discovered(Result<Vec<String>, String>),
    Scanned(Box<Scanned>),
    /// A deployment's preparation, read from its hosts (`deploy.rs`).
    Prepared(Box<deploy::Prepared>),
}

mod deploy;

/// The result of observing one host.
#[derive(Debug)]
pub struct Observed {
    pub host: HostName,
    pub result: Result<Snapshot, SshError>,
    pub identity: Option<Identity>,
    pub memory: HostMemory,
    /// From the tick to the observation's start (waiting for a slot).
    pub queued: Duration,
    pub elapsed: Duration,
}

/// The keys a host presented, for `macha-systems trust` (scan, or pin).
#[derive(Debug)]
pub struct Scanned {
    request: Request,
    who: String,
    target: Target,
    keys: Result<Vec<HostKey>, String>,
    reply: oneshot::Sender<Response>,
}

/// Redacts what a remote host's journal samples say, as this host's entries are redacted when they
/// arrive: the samples reach issues, reports (`macha check --host`, which viewers may read) and the
/// model.
pub fn redact_remote_journal(event: &mut FleetEvent, redact: impl Fn(&str) -> String) {
    if let FleetEvent::Observed(o) = event
        && let Ok(snapshot) = &mut o.result
        && let macha_core::snapshot::Section::Ok { data } = &mut snapshot.journal
    {
        for sample in &mut data.samples {
            *sample = redact(sample);
        }
    }
}

/// Whether actions may run on a registered host now: trusted, its key pinned, and not presenting
/// a changed key. The policy's known hosts and the `actions` of `macha-systems list` are these.
pub fn actionable(h: &FleetHost, pinned: bool) -> bool {
    let key_changed = h.status.get("kind").and_then(|k| k.as_str()) == Some("host_key_changed");
    standing(h.record.state).may_act() && pinned && !key_changed
}

/// How a host is reached, from its registry record.
pub fn target_of(h: &FleetHost, default_user: &str) -> Result<Target, String> {
    let name = HostName::parse(&h.record.name).map_err(|e| e.to_string())?;
    let target = Target {
        address: h.record.address.clone().unwrap_or_else(|| name.as_str().to_owned()),
        port: h.record.port.unwrap_or(22),
        user: Some(h.record.user.clone().unwrap_or_else(|| default_user.to_owned())),
        name,
    };
    target.validate().map_err(|e| e.to_string())?;
    Ok(target)
}

#[derive(Debug)]
struct Settings {
    spec: ProbeSpec,
    connect_timeout: Duration,
    kill_after: Duration,
    known_hosts: PathBuf,
    user: String,
    discovery_enable: bool,
    allowed: Vec<DomainPattern>,
    domain: Option<HostName>,
    window: Duration,
    journal_directory: Option<PathBuf>,
    own_names: Vec<String>,
    interval: Duration,
    /// The daemon's database (named in the hosts' reports).
    database: PathBuf,
    /// Configured tags by host.
    tags: BTreeMap<HostName, Vec<String>>,
}

impl Settings {
    /// The deadline of one host's observation: connecting, then the commands (each limited
    /// remotely by `spec.timeout` and killed `kill_after` later), plus the first contact.
    fn deadline(&self, identify: bool) -> Duration {
        let commands = self.spec.timeout + self.kill_after + Duration::from_secs(2);
        let connect = self.connect_timeout + Duration::from_secs(5);
        connect + commands + if identify { commands } else { Duration::ZERO }
    }
}

/// How a host fared lately, for scheduling: hosts that failed (or hung) are suspect, observed in
/// their own slots and backed off.
#[derive(Debug, Clone, Copy)]
struct Health {
    /// Failed observations in a row.
    failures: u32,
    /// Not tried again before this.
    retry_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    in_flight: BTreeSet<HostName>,
    health: BTreeMap<HostName, Health>,
    memory: BTreeMap<HostName, HostMemory>,
    identified: BTreeSet<HostName>,
    discovering: bool,
    discovery_error: Option<String>,
    /// Each remote host's last report (`macha check --host`), as its last cycle produced it.
    reports: BTreeMap<HostName, CheckReport>,
}

/// The daemon's fleet: registry, observation scheduling, discovery and trust.
#[derive(Debug)]
pub struct Fleet {
    pool: Result<Arc<SshPool>, String>,
    keyscan: Result<PathBuf, String>,
    journalctl: Option<PathBuf>,
    /// The controller's `nix` (a deployment reads the built system's closure with it).
    nix: Option<PathBuf>,
    settings: Settings,
    targets: Arc<RwLock<BTreeMap<HostName, Target>>>,
    parallel: Arc<Semaphore>,
    suspect: Arc<Semaphore>,
    remote: Option<Remote>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Where the control sockets of the SSH masters live: next to the daemon's socket (short, and
/// private to the daemon).
pub fn control_dir(config: &Config) -> PathBuf {
    config.socket.parent().map_or_else(|| config.state_dir.join("ssh"), |p| p.join("ssh"))
}

/// The SSH settings of the configuration (the `ssh` program given).
pub fn ssh_settings(config: &Config, ssh: PathBuf) -> SshSettings {
    let mut s = SshSettings::new(
        ssh,
        &config.ssh.user,
        config.ssh.key.clone(),
        config.ssh.known_hosts.clone(),
        control_dir(config),
    );
    s.connect_timeout = config.ssh.connect_timeout;
    s.command_timeout = config.ssh.command_timeout;
    s.max_sessions = usize::try_from(config.ssh.max_sessions).unwrap_or(8);
    s.persist = (config.check_interval * 3).max(Duration::from_secs(600));
    s
}

impl Fleet {
    /// Sets up the fleet: the SSH pool (if `ssh` is installed), the configured hosts in the
    /// registry and their configured keys in the known_hosts file, and the policy's trusted hosts.
    pub fn start(config: &Config, engine: &mut Engine, now: Timestamp) -> anyhow::Result<Fleet> {
        let resolve = |name: &str| which::which(name).map_err(|e| format!("{name} not found: {e}"));
        let pool = resolve("ssh")
            .and_then(|ssh| SshPool::new(ssh_settings(config, ssh)).map(Arc::new).map_err(|e| e.to_string()));
        let own = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        let mut own_names = vec![HostName::LOCAL.to_owned()];
        if !own.is_empty() {
            own_names.push(own.clone());
            if let Some(d) = &config.discovery.domain {
                own_names.push(format!("{own}.{d}"));
            }
        }
        // Observation commands get half a cycle at most, so that cycles do not pile up.
        let probe_timeout = config.ssh.command_timeout.min(config.check_interval / 2).max(Duration::from_secs(1));
        let settings = Settings {
            spec: ProbeSpec { timeout: probe_timeout, journal_window: config.journal_window, prefer_macha: true },
            connect_timeout: config.ssh.connect_timeout,
            kill_after: Duration::from_secs(5),
            known_hosts: config.ssh.known_hosts.clone(),
            user: config.ssh.user.clone(),
            discovery_enable: config.discovery.enable,
            allowed: config.discovery.allowed_domains.iter().filter_map(|d| DomainPattern::parse(d).ok()).collect(),
            domain: config.discovery.domain.as_deref().and_then(|d| HostName::parse(d).ok()),
            window: config.discovery.window,
            journal_directory: config.journal_directory.clone(),
            own_names,
            interval: config.check_interval,
            database: config.database.clone(),
            tags: config.hosts.iter().map(|h| (h.name.clone(), h.tags.clone())).collect(),
        };
        let targets = Arc::new(RwLock::new(BTreeMap::new()));
        let parallelism = usize::try_from(config.ssh.parallelism).unwrap_or(16).max(1);
        let remote =
            pool.as_ref().ok().map(|p| Remote::new(Arc::clone(p), Arc::clone(&targets), config.ssh.command_timeout));
        let fleet = Fleet {
            keyscan: resolve("ssh-keyscan"),
            journalctl: crate::observe::journalctl_path(config).ok(),
            nix: config.tools.get("nix").map(PathBuf::from).or_else(|| which::which("nix").ok()),
            parallel: Arc::new(Semaphore::new(parallelism)),
            suspect: Arc::new(Semaphore::new(suspect_slots(parallelism))),
            pool,
            settings,
            targets,
            remote,
            state: Mutex::new(State::default()),
        };
        if let Err(reason) = &fleet.pool
            && !config.hosts.is_empty()
        {
            engine.alert(
                now,
                &format!("managed hosts are configured but SSH is not available: {reason}"),
                serde_json::Value::Null,
            )?;
        }
        fleet.sync_config(config, engine, now)?;
        fleet.reload(engine)?;
        Ok(fleet)
    }

    /// For the executor: actions on other hosts.
    pub fn remote(&self) -> Option<Remote> {
        self.remote.clone()
    }

    /// The pool's connection counts (status output, the benchmark).
    pub fn stats(&self) -> Option<macha_ssh::PoolStats> {
        self.pool.as_ref().ok().map(|p| p.stats())
    }

    fn known_hosts(&self) -> anyhow::Result<KnownHosts> {
        KnownHosts::load(&self.settings.known_hosts).map_err(|e| anyhow::format_err!("{e}"))
    }

    /// Brings the configured hosts into the registry: new ones registered, changed ones updated,
    /// `host_key` settings pinned, hosts removed from the configuration forgotten.
    fn sync_config(&self, config: &Config, engine: &mut Engine, now: Timestamp) -> anyhow::Result<()> {
        let mut kh = self.known_hosts()?;
        let mut kh_changed = false;
        let store_hosts = engine.store().list_fleet_hosts()?;
        for hc in &config.hosts {
            let name = hc.name.as_str();
            let existing = store_hosts.iter().find(|h| h.record.name == name);
            let key = match hc.host_key.as_deref().map(HostKey::parse) {
                Some(Ok(k)) => Some(k),
                Some(Err(e)) => {
                    engine.alert(now, &format!("hosts.{name}.host_key is not usable: {e}"), serde_json::Value::Null)?;
                    None
                }
                None => None,
            };
            if let Some(k) = &key
                && kh.pin(&hc.name, std::slice::from_ref(k))
            {
                kh_changed = true;
                tracing::info!(host = name, fingerprint = %k.fingerprint(), "pinned the host key from the configuration");
            }
            let pinned = !kh.keys_for(&hc.name).is_empty();
            let state = if key.is_some() || (existing.is_some_and(|h| h.record.state == HostState::Trusted) && pinned) {
                HostState::Trusted
            } else {
                HostState::Configured
            };
            let record = HostRecord {
                name: name.to_owned(),
                address: Some(hc.address.clone()),
                port: Some(hc.port),
                user: hc.user.clone(),
                state,
                host_key: key.as_ref().map(HostKey::line).or_else(|| existing.and_then(|h| h.record.host_key.clone())),
                os: existing.and_then(|h| h.record.os.clone()),
                profile: existing.map_or_else(|| serde_json::json!({}), |h| h.record.profile.clone()),
                first_seen: existing.map_or(now, |h| h.record.first_seen),
                last_seen: existing.map_or(now, |h| h.record.last_seen),
            };
            let unchanged = existing.is_some_and(|h| {
                h.source == HostSource::Config
                    && h.record.state == record.state
                    && h.record.address == record.address
                    && h.record.port == record.port
                    && h.record.user == record.user
                    && h.record.host_key == record.host_key
            });
            if unchanged {
                continue;
            }
            let what = match (existing, state) {
                (None, HostState::Trusted) => {
                    "added from the configuration, trusted (host key pinned there)".to_owned()
                }
                (None, _) => "added from the configuration; not trusted until its host key is pinned".to_owned(),
                (Some(h), s) => format!("updated from the configuration ({} → {s})", h.record.state),
            };
            let audit = NewAudit::new(now, AuditKind::Config, Severity::Notice, name, format!("host {name} {what}"))
                .with_subject("host")
                .with_payload(serde_json::json!({"host": hc, "fingerprints": key.iter().map(HostKey::fingerprint).collect::<Vec<_>>()}));
            engine.store_mut().put_fleet_host(&record, HostSource::Config, existing.map(|h| h.record.state), &audit)?;
        }
        for h in store_hosts.iter().filter(|h| h.source == HostSource::Config && h.record.state != HostState::Forgotten)
        {
            if config.hosts.iter().any(|c| c.name.as_str() == h.record.name) {
                continue;
            }
            let mut record = h.record.clone();
            record.state = HostState::Forgotten;
            if let Ok(n) = HostName::parse(&h.record.name) {
                kh_changed |= kh.remove(&n);
            }
            let audit = NewAudit::new(
                now,
                AuditKind::Config,
                Severity::Notice,
                &h.record.name,
                format!("host {} forgotten: it is no longer in the configuration", h.record.name),
            )
            .with_subject("host");
            engine.store_mut().put_fleet_host(&record, HostSource::Config, Some(h.record.state), &audit)?;
        }
        if kh_changed {
            kh.save().map_err(|e| anyhow::format_err!("{e}"))?;
        }
        Ok(())
    }

    /// Re-reads the registry: the targets the executor may reach, and the policy's trusted hosts
    /// (trusted, and not currently presenting a changed key).
    fn reload(&self, engine: &mut Engine) -> anyhow::Result<()> {
        let hosts = engine.store().list_fleet_hosts()?;
        let kh = self.known_hosts()?;
        let mut targets = BTreeMap::new();
        // The hosts actions may target: trusted, key pinned, key not changed.
        let mut trusted = BTreeSet::new();
        for h in &hosts {
            let Ok(t) = target_of(h, &self.settings.user) else { continue };
            if standing(h.record.state).may_connect() {
                targets.insert(t.name.clone(), t.clone());
            }
            if actionable(h, !kh.keys_for(&t.name).is_empty()) {
                trusted.insert(t.name);
            }
        }
        // A host that may no longer be contacted (forgotten, or gone from the registry) keeps no
        // metric detectors in memory.
        engine.forget_metrics_except(|h| targets.contains_key(h));
        if let Ok(mut t) = self.targets.write() {
            *t = targets;
        }
        engine.set_known_hosts(trusted);
        Ok(())
    }

    /// One tick: an observation task for every contactable host not still being observed, and a
    /// discovery pass if enabled. Healthy hosts share the `ssh.parallelism` slots; suspect hosts
    /// (whose last observation failed or hung) have their own few slots and wait out their
    /// backoff, so they never hold a healthy host's slot. A host without a pinned key cannot be
    /// connected to (strict host keys) and is not tried: its status says so once.
    pub fn tick(&self, engine: &Engine, tx: &mpsc::Sender<FleetEvent>, tracker: &TaskTracker) {
        if self.settings.discovery_enable {
            self.start_discovery(tx, tracker);
        }
        let Ok(pool) = &self.pool else { return };
        let hosts = match engine.store().list_fleet_hosts() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("reading the host registry: {e}");
                return;
            }
        };
        let kh = match self.known_hosts() {
            Ok(kh) => Some(kh),
            Err(e) => {
                tracing::error!("reading the known hosts: {e:#}");
                None
            }
        };
        let now = Instant::now();
        for h in hosts.iter().filter(|h| standing(h.record.state).may_connect()) {
            let target = match target_of(h, &self.settings.user) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(host = %h.record.name, "not observed: {e}");
                    continue;
                }
            };
            if kh.as_ref().is_some_and(|kh| kh.keys_for(&target.name).is_empty()) {
                // Reported once (the status stays until a key is pinned), never contacted.
                if h.status.get("kind").and_then(|k| k.as_str()) != Some("host_key_unknown")
                    && lock(&self.state).in_flight.insert(target.name.clone())
                {
                    let (tx, name) = (tx.clone(), target.name.clone());
                    tracker.spawn(async move {
                        let observed = Observed {
                            result: Err(SshError::HostKeyUnknown { host: name.to_string() }),
                            host: name,
                            identity: None,
                            memory: HostMemory::default(),
                            queued: Duration::ZERO,
                            elapsed: Duration::ZERO,
                        };
                        let _ = tx.send(FleetEvent::Observed(Box::new(observed))).await;
                    });
                }
                continue;
            }
            let (memory, identify, suspect) = {
                let mut st = lock(&self.state);
                let health = st.health.get(&target.name).copied();
                if health.is_some_and(|hl| now < hl.retry_at) {
                    tracing::debug!(host = %target.name, "backed off; skipped this tick");
                    continue;
                }
                if !st.in_flight.insert(target.name.clone()) {
                    tracing::debug!(host = %target.name, "still being observed; skipped this tick");
                    continue;
                }
                (
                    st.memory.remove(&target.name).unwrap_or_default(),
                    !st.identified.contains(&target.name),
                    health.is_some_and(|hl| hl.failures > 0),
                )
            };
            let deadline = self.settings.deadline(identify);
            let slots = if suspect { &self.suspect } else { &self.parallel };
            let (pool, spec, tx, slots) = (Arc::clone(pool), self.settings.spec.clone(), tx.clone(), Arc::clone(slots));
            let spawned = Instant::now();
            tracker.spawn(async move {
                let permit = slots.acquire_owned().await;
                let started = Instant::now();
                let queued = started.duration_since(spawned);
                let shared = Arc::new(Mutex::new(memory));
                let work = observe_host(&pool, &target, &spec, Arc::clone(&shared), identify);
                let (result, identity) = match tokio::time::timeout(deadline, work).await {
                    Ok(r) => r,
                    Err(_) => (
                        Err(SshError::CommandTimeout {
                            host: target.name.to_string(),
                            command: "observation".into(),
                            after: deadline,
                        }),
                        None,
                    ),
                };
                // The slot is free once the host is observed, whether or not the loop has taken
                // the result yet.
                drop(permit);
                let memory = std::mem::take(&mut *lock(&shared));
                let observed =
                    Observed { host: target.name, result, identity, memory, queued, elapsed: started.elapsed() };
                let _ = tx.send(FleetEvent::Observed(Box::new(observed))).await;
            });
        }
    }

    fn start_discovery(&self, tx: &mpsc::Sender<FleetEvent>, tracker: &TaskTracker) {
        {
            let mut st = lock(&self.state);
            if st.discovering {
                return;
            }
            st.discovering = true;
        }
        let journalctl = self.journalctl.clone();
        let (dir, window, tx) = (self.settings.journal_directory.clone(), self.settings.window, tx.clone());
        tracker.spawn(async move {
            let result = match journalctl {
                Some(j) => discover(&j, dir.as_deref(), window).await,
                None => Err("journalctl not found".into()),
            };
            let _ = tx.send(FleetEvent::Discovered(result)).await;
        });
    }

    /// Handles one fleet event in the loop; returns the work the engine permitted.
    pub fn handle(&self, engine: &mut Engine, event: FleetEvent) -> anyhow::Result<Vec<Work>> {
        match event {
            FleetEvent::Observed(o) => self.observed(engine, *o),
            FleetEvent::Discovered(r) => {
                lock(&self.state).discovering = false;
                self.discovered(engine, r)?;
                Ok(Vec::new())
            }
            FleetEvent::Prepared(p) => {
                self.prepared(engine, *p)?;
                Ok(Vec::new())
            }
            FleetEvent::Scanned(s) => {
                let Scanned { request, who, target, keys, reply } = *s;
                let response = match self.scanned(engine, &request, &who, &target, keys) {
                    Ok(r) => r,
                    Err(e) => {
                        let code = match e.downcast_ref::<StoreError>() {
                            Some(StoreError::Conflict { .. }) => ErrorCode::Conflict,
                            Some(StoreError::NotFound { .. }) => ErrorCode::NotFound,
                            _ => ErrorCode::Internal,
                        };
                        Response::err(code, format!("{e:#}"))
                    }
                };
                let _ = reply.send(response);
                Ok(Vec::new())
            }
        }
    }

    fn observed(&self, engine: &mut Engine, o: Observed) -> anyhow::Result<Vec<Work>> {
        let failed = o.result.is_err() || o.memory.timed_out > 0;
        let health = {
            let mut st = lock(&self.state);
            st.in_flight.remove(&o.host);
            let timed_out = o.memory.timed_out;
            st.memory.insert(o.host.clone(), o.memory);
            if o.identity.is_some() {
                st.identified.insert(o.host.clone());
            }
            if matches!(o.result, Err(SshError::HostKeyUnknown { .. })) && o.elapsed.is_zero() {
                // Not contacted (no pinned key): nothing to schedule.
                None
            } else if failed {
                let failures = st.health.get(&o.host).map_or(0, |h| h.failures).saturating_add(1);
                let wait = backoff(failures, self.settings.interval);
                st.health.insert(o.host.clone(), Health { failures, retry_at: Instant::now() + wait });
                tracing::debug!(host = %o.host, failures, timed_out, wait_s = wait.as_secs(), "suspect host backed off");
                Some((failures, wait))
            } else {
                st.health.remove(&o.host);
                None
            }
        };
        let Some(host) = engine.store().get_fleet_host(o.host.as_str())? else { return Ok(Vec::new()) };
        if !standing(host.record.state).may_connect() {
            return Ok(Vec::new());
        }
        // One time for everything this observation causes: when its data was complete (the
        // snapshot's stamp), so that records, issues and actions come after the probe result.
        let now = match &o.result {
            Ok(snapshot) => snapshot.taken_at.min(crate::now()),
            Err(_) => crate::now(),
        };
        if let Some(id) = &o.identity {
            self.record_identity(engine, &host, id, o.result.as_ref().ok(), now)?;
        }
        let previous = host.status.get("kind").and_then(|k| k.as_str()).map(str::to_owned);
        let elapsed_ms = u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX);
        let queued_ms = u64::try_from(o.queued.as_millis()).unwrap_or(u64::MAX);
        let connects = self.pool.as_ref().map_or(0, |p| p.connects(&o.host));
        let backoff_doc =
            health.map(|(failures, wait)| serde_json::json!({"failures": failures, "retry_at": now.plus(wait)}));
        let name = o.host.as_str();
        let snapshot = match o.result {
            Ok(snapshot) => {
                // Reached is not observed: a probe whose commands timed out or that saw little of
                // the host leaves it degraded or unknown, at once, with an alert (and, through the
                // observation check, an issue).
                let visibility = macha_core::checks::visibility(&snapshot);
                let kind = visibility.word();
                let reason = match &visibility {
                    Visibility::Degraded { reason } | Visibility::Blind { reason } => Some(reason.clone()),
                    Visibility::Complete | Visibility::Partial { .. } => None,
                };
                let status = serde_json::json!({
                    "ok": kind == "ok", "kind": kind, "reason": reason, "at": now,
                    "last_ok": if kind == "ok" { json(&now) } else { host.status.get("last_ok").cloned().unwrap_or_default() },
                    "elapsed_ms": elapsed_ms, "queued_ms": queued_ms,
                    "connects": connects, "unavailable_sections": snapshot.unavailable_sections().len(),
                    "backoff": backoff_doc,
                });
                engine.store_mut().set_host_status(name, &status, Some(now))?;
                if previous.as_deref() != Some(kind) {
                    let (severity, summary) = match &reason {
                        Some(reason) => (Severity::Warning, format!("{name} is {kind}: {reason}")),
                        None if previous.is_some() => {
                            (Severity::Notice, format!("{name} is reachable and observed again"))
                        }
                        None => (Severity::Info, String::new()),
                    };
                    if !summary.is_empty() {
                        engine.store_mut().append_audit(
                            &NewAudit::new(now, AuditKind::Alert, severity, name, summary)
                                .with_subject("host")
                                .with_payload(serde_json::json!({"kind": kind, "reason": reason})),
                        )?;
                    }
                    if previous.as_deref().is_some_and(|p| p != "ok" && p != "degraded" && p != "unknown") {
                        self.reload(engine)?;
                    }
                }
                snapshot
            }
            Err(e) => {
                let status = serde_json::json!({
                    "ok": false, "kind": e.kind(), "reason": e.to_string(), "at": now,
                    "last_ok": host.status.get("last_ok"), "elapsed_ms": elapsed_ms, "queued_ms": queued_ms,
                    "connects": connects,
                    "backoff": backoff_doc,
                });
                engine.store_mut().set_host_status(name, &status, None)?;
                if previous.as_deref() != Some(e.kind()) {
                    let (severity, summary) = match &e {
                        SshError::HostKeyChanged { .. } => (
                            Severity::Critical,
                            format!(
                                "the host key of {name} changed: the connection was refused and nothing was sent; \
                                 if the change is expected, check the new fingerprint and run `macha-systems trust {name}`"
                            ),
                        ),
                        SshError::HostKeyUnknown { .. } => (
                            Severity::Warning,
                            format!(
                                "{name} is not observed: no host key is pinned (check it, then `macha-systems trust {name}`)"
                            ),
                        ),
                        other => (Severity::Warning, format!("{name} could not be observed: {other}")),
                    };
                    engine.store_mut().append_audit(
                        &NewAudit::new(now, AuditKind::Alert, severity, name, summary)
                            .with_subject("host")
                            .with_payload(serde_json::json!({"kind": e.kind(), "reason": e.to_string()})),
                    )?;
                    tracing::warn!(host = name, kind = e.kind(), "{e}");
                    if matches!(e, SshError::HostKeyChanged { .. }) || previous.as_deref() == Some("host_key_changed") {
                        self.reload(engine)?;
                    }
                }
                Snapshot::all_unavailable(o.host.clone(), now, &e.to_string())
            }
        };
        let correlation_id = crate::correlation_id();
        let (report, work) = engine.cycle(&snapshot, &correlation_id)?;
        let check = crate::wire::check_report(
            &snapshot,
            &report,
            engine.autonomy(),
            CheckMode::Fleet,
            &self.settings.database,
            None,
        );
        lock(&self.state).reports.insert(o.host.clone(), check);
        tracing::debug!(
            host = name,
            correlation_id = %correlation_id,
            findings = report.findings.len(),
            unavailable = snapshot.unavailable_sections().len(),
            ms = elapsed_ms,
            "remote cycle done"
        );
        Ok(work)
    }

    /// Records what the first contact found, with an audit record when it is new or changed.
    fn record_identity(
        &self,
        engine: &mut Engine,
        host: &FleetHost,
        id: &Identity,
        snapshot: Option<&Snapshot>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let services = id.running_services.clone().unwrap_or_default();
        let cores = Some(id.hardware.logical_cpus)
            .filter(|n| *n > 0)
            .or_else(|| snapshot.and_then(|s| s.cpu.data()).map(|c| c.logical_cpus));
        let memory = snapshot.and_then(|s| s.memory.data()).map(|m| m.total_bytes);
        let profile = rules::profile(id.os.clone(), &services, cores, memory, 0);
        let mut doc = json(&profile);
        doc["cpu_model"] = json(&id.hardware.cpu_model);
        doc["probe"] = json(&if id.tools.has("macha") { "macha probe" } else { "commands" });
        if let Err(e) = &id.running_services {
            doc["services_unavailable"] = json(e);
        }
        let before = &host.record.profile;
        let same = host.record.os.as_deref() == Some(profile.os.name.as_str())
            && before.get("role") == doc.get("role")
            && before.get("capabilities") == doc.get("capabilities")
            && before.get("os") == doc.get("os");
        if same {
            return Ok(());
        }
        let name = host.record.name.as_str();
        let caps: Vec<&str> = profile.capabilities.iter().map(|c| c.as_str()).collect();
        let summary = format!(
            "{} {name}: {} ({}), {} CPUs, {} memory, role {}, capabilities {}",
            if host.record.os.is_none() { "first contact with" } else { "profile changed on" },
            profile.os.name,
            profile.os.family,
            cores.map_or_else(|| "?".to_owned(), |c| c.to_string()),
            memory.map_or_else(|| "?".to_owned(), macha_core::checks::human_bytes),
            profile.role.as_str(),
            if caps.is_empty() { "none".to_owned() } else { caps.join(", ") },
        );
        let audit = NewAudit::new(now, AuditKind::Config, Severity::Notice, name, summary)
            .with_subject("host-profile")
            .with_payload(doc.clone());
        engine.store_mut().set_host_profile(name, &profile.os.name, &doc, Some(&audit))?;
        Ok(())
    }

    fn discovered(&self, engine: &mut Engine, result: Result<Vec<String>, String>) -> anyhow::Result<()> {
        let names = match result {
            Ok(n) => {
                lock(&self.state).discovery_error = None;
                n
            }
            Err(reason) => {
                let changed =
                    lock(&self.state).discovery_error.replace(reason.clone()).as_deref() != Some(reason.as_str());
                if changed {
                    engine.alert(crate::now(), &format!("host discovery failed: {reason}"), serde_json::Value::Null)?;
                }
                return Ok(());
            }
        };
        let now = crate::now();
        let own: Vec<&str> = self.settings.own_names.iter().map(String::as_str).collect();
        // Hosts already known (other than by a log): a short name or a trailing-dot form of one of
        // them in a log is that host, never a new one to register or contact.
        let known: Vec<String> = engine
            .store()
            .list_fleet_hosts()?
            .into_iter()
            .filter(|h| !matches!(standing(h.record.state), Standing::Discovered | Standing::Forgotten))
            .map(|h| h.record.name)
            .collect();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        // Newest first (as read): the first DISCOVERED_MAX names outside the allowed domains, and
        // up to ADMITTED_PER_PASS new names inside them, are this pass's.
        let mut outside: Vec<(HostName, &str)> = Vec::new();
        let mut inside: Vec<(HostName, &str, String)> = Vec::new();
        let mut seen = BTreeSet::new();
        for raw in &names {
            match rules::admission(raw, self.settings.domain.as_ref(), &self.settings.allowed, &own, &known) {
                Admission::Ignored(reason) => tracing::debug!(raw = %raw, "discovery ignores this name: {reason}"),
                Admission::Discovered(n) => {
                    if outside.len() < DISCOVERED_MAX && seen.insert(n.clone()) {
                        outside.push((n, raw));
                    }
                }
                Admission::Admitted(n, p) => {
                    if seen.insert(n.clone()) {
                        inside.push((n, raw, p.to_string()));
                    }
                }
            }
        }
        let mut changed = false;
        let mut admitted = 0usize;
        for (name, raw, pattern) in &inside {
            if admitted >= ADMITTED_PER_PASS {
                tracing::info!(
                    "discovery: more than {ADMITTED_PER_PASS} new names in the allowed domains; the rest wait"
                );
                break;
            }
            let existing = engine.store().get_fleet_host(name.as_str())?;
            let (expected, summary) = match &existing {
                None => (
                    None,
                    format!(
                        "discovered {name} in the journal: admitted by the allowed domain {pattern}; observed once its host key is pinned"
                    ),
                ),
                Some(h) if h.record.state == HostState::Discovered => {
                    (Some(HostState::Discovered), format!("{name} admitted by the allowed domain {pattern}"))
                }
                Some(_) => continue,
            };
            let record = HostRecord { state: HostState::Admitted, ..discovered_record(name, now) };
            let audit = NewAudit::new(now, AuditKind::Config, Severity::Notice, name.as_str(), summary)
                .with_subject("host")
                .with_payload(
                    serde_json::json!({"raw_hostname": raw, "state": HostState::Admitted, "source": "journal"}),
                );
            match engine.store_mut().put_fleet_host(&record, HostSource::Journal, expected, &audit) {
                Ok(_) => {
                    changed = true;
                    admitted += 1;
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut again = Vec::new();
        let mut new = Vec::new();
        for (name, raw) in &outside {
            match engine.store().get_fleet_host(name.as_str())? {
                Some(h) if h.record.state == HostState::Discovered => again.push(name.as_str().to_owned()),
                Some(_) => {}
                None => {
                    let summary = format!(
                        "discovered {name} in the journal: registered as untrusted; Macha will not contact it \
                         unless a person admits it (`macha-systems admit {name}`)"
                    );
                    let audit = NewAudit::new(now, AuditKind::Config, Severity::Warning, name.as_str(), summary)
                        .with_subject("host")
                        .with_payload(
                            serde_json::json!({"raw_hostname": raw, "state": HostState::Discovered, "source": "journal"}),
                        );
                    new.push((discovered_record(name, now), audit));
                }
            }
        }
        if !again.is_empty() || !new.is_empty() {
            let evicted = |gone: &[String]| {
                NewAudit::new(
                    now,
                    AuditKind::Config,
                    Severity::Notice,
                    "local",
                    format!(
                        "{} discovered host name(s) removed from the registry (at most {DISCOVERED_MAX} are kept; the least recently seen go first): {}",
                        gone.len(),
                        gone.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
                .with_subject("discovery")
                .with_payload(serde_json::json!({"evicted": gone}))
            };
            let c = engine.store_mut().register_discovered(&again, &new, now, DISCOVERED_MAX, evicted)?;
            changed |= !c.added.is_empty() || !c.evicted.is_empty();
        }
        if changed {
            self.reload(engine)?;
        }
        Ok(())
    }

    /// Requests answered after a task (a key scan contacts the host): not in the loop.
    pub fn is_deferred(request: &Request) -> bool {
        matches!(request, Request::ScanHost(_) | Request::TrustHost(_))
    }

    /// Starts the key scan of a deferred request; the answer goes to `reply` when it is done.
    pub fn defer(
        &self,
        engine: &Engine,
        request: Request,
        who: String,
        reply: oneshot::Sender<Response>,
        tx: &mpsc::Sender<FleetEvent>,
        tracker: &TaskTracker,
    ) {
        let name = match &request {
            Request::ScanHost(ops::ScanHost { name }) | Request::TrustHost(ops::TrustHost { name, .. }) => name.clone(),
            _ => String::new(),
        };
        let host = match self.lookup(engine, &name) {
            Ok(h) => h,
            Err(e) => {
                let _ = reply.send(Response::err(ErrorCode::NotFound, format!("{e:#}")));
                return;
            }
        };
        let target = match target_of(&host, &self.settings.user) {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Response::err(ErrorCode::BadRequest, e));
                return;
            }
        };
        let keyscan = match &self.keyscan {
            Ok(k) => k.clone(),
            Err(e) => {
                let _ = reply.send(Response::err(ErrorCode::Internal, e.clone()));
                return;
            }
        };
        let (tx, timeout) = (tx.clone(), self.settings.connect_timeout);
        tracker.spawn(async move {
            let keys = macha_ssh::keyscan::scan(&keyscan, &target, timeout).await.map_err(|e| e.to_string());
            let scanned = Scanned { request, who, target, keys, reply };
            let _ = tx.send(FleetEvent::Scanned(Box::new(scanned))).await;
        });
    }

    fn lookup(&self, engine: &Engine, raw: &str) -> anyhow::Result<FleetHost> {
        let name = rules::complete_name(raw, None).map_err(|e| anyhow::format_err!("{raw:?}: {e}"))?;
        if let Some(h) = engine.store().get_fleet_host(name.as_str())? {
            return Ok(h);
        }
        if let Ok(full) = rules::complete_name(raw, self.settings.domain.as_ref())
            && let Some(h) = engine.store().get_fleet_host(full.as_str())?
        {
            return Ok(h);
        }
        Err(StoreError::NotFound { entity: "host", id: 0 }).with_context(|| {
            format!("{name} is not a registered host (add it to the configuration, or `macha-systems admit {name}`)")
        })
    }

    fn scanned(
        &self,
        engine: &mut Engine,
        request: &Request,
        who: &str,
        target: &Target,
        keys: Result<Vec<HostKey>, String>,
    ) -> anyhow::Result<Response> {
        let keys = keys.map_err(|e| anyhow::format_err!("scanning the host keys of {}: {e}", target.name))?;
        let kh = self.known_hosts()?;
        let pinned = kh.keys_for(&target.name);
        match request {
            Request::TrustHost(ops::TrustHost { fingerprints, .. }) => {
                let chosen: Vec<HostKey> =
                    keys.iter().filter(|k| fingerprints.contains(&k.fingerprint())).cloned().collect();
                if chosen.is_empty() || fingerprints.iter().any(|f| !keys.iter().any(|k| &k.fingerprint() == f)) {
                    return Err(StoreError::Conflict {
                        entity: "host key",
                        id: 0,
                        expected: fingerprints.join(", "),
                        actual: keys.iter().map(HostKey::fingerprint).collect::<Vec<_>>().join(", "),
                    })
                    .with_context(|| {
                        format!("{} does not present the key(s) confirmed; nothing was pinned", target.name)
                    });
                }
                self.trust(engine, who, &target.name, &chosen)?;
                Ok(Response::reply::<ops::TrustHost>(&TrustResult {
                    name: target.name.as_str().to_owned(),
                    state: Standing::Trusted,
                    pinned: chosen.iter().map(crate::wire::key).collect(),
                }))
            }
            _ => Ok(Response::reply::<ops::ScanHost>(&KeyScan {
                name: target.name.as_str().to_owned(),
                address: target.address.clone(),
                port: target.port,
                keys: keys.iter().map(crate::wire::key).collect(),
                pinned: pinned.iter().map(crate::wire::key).collect(),
                matches_pinned: !pinned.is_empty() && keys.iter().any(|k| pinned.contains(k)),
            })),
        }
    }

    /// Pins `keys` for `name` and makes it trusted, in the known_hosts file and the registry.
    fn trust(&self, engine: &mut Engine, who: &str, name: &HostName, keys: &[HostKey]) -> anyhow::Result<()> {
        let host = engine
            .store()
            .get_fleet_host(name.as_str())?
            .ok_or_else(|| anyhow::format_err!("{name} is not registered"))?;
        let mut kh = self.known_hosts()?;
        kh.pin(name, keys);
        kh.save().map_err(|e| anyhow::format_err!("{e}"))?;
        let now = crate::now();
        let mut record = host.record.clone();
        record.state = HostState::Trusted;
        record.host_key = keys.first().map(HostKey::line);
        let fps: Vec<String> = keys.iter().map(HostKey::fingerprint).collect();
        let audit = NewAudit::new(
            now,
            AuditKind::Config,
            Severity::Notice,
            name.as_str(),
            format!(
                "host key of {name} pinned by {who} ({}); {name} is trusted: observed, and actions may run",
                fps.join(", ")
            ),
        )
        .with_subject("host")
        .with_payload(serde_json::json!({"fingerprints": fps, "previous_state": host.record.state}));
        engine.store_mut().put_fleet_host(&record, host.source, Some(host.record.state), &audit)?;
        // A status of a changed or unknown key no longer holds.
        engine.store_mut().set_host_status(name.as_str(), &serde_json::json!({}), None)?;
        self.forget_connection(name);
        self.reload(engine)?;
        Ok(())
    }

    /// A host's last report: as its last cycle made it; `unknown` and marked stale when that is
    /// older than three intervals (plus one observation's deadline); `unknown` with the contact's
    /// reason when the daemon has not observed it since it started.
    fn report(&self, engine: &Engine, h: &FleetHost, now: Timestamp) -> CheckReport {
        let name = match HostName::parse(&h.record.name) {
            Ok(n) => n,
            Err(_) => HostName::local(),
        };
        let contact = h.status.get("reason").and_then(|r| r.as_str()).map(str::to_owned);
        let last = lock(&self.state).reports.get(&name).cloned();
        let Some(mut report) = last else {
            let reason = match contact {
                Some(r) => format!("not observed since the daemon started: {r}"),
                None => "not observed since the daemon started".to_owned(),
            };
            let snapshot = Snapshot::all_unavailable(name, now, &reason);
            let empty = crate::engine::CycleReport::default();
            let mut report = crate::wire::check_report(
                &snapshot,
                &empty,
                engine.autonomy(),
                CheckMode::Fleet,
                &self.settings.database,
                None,
            );
            report.stale = Some(reason);
            return report;
        };
        let stale_after = self.settings.interval * 3 + self.settings.deadline(false);
        let age =
            Duration::from_millis(u64::try_from(now.millis().saturating_sub(report.taken_at.millis())).unwrap_or(0));
        if age > stale_after {
            report.status = CheckStatus::Unknown;
            let ago = humantime::format_duration(Duration::from_secs(age.as_secs()));
            report.stale = Some(match contact {
                Some(r) => format!("last observed {ago} ago; not since: {r}"),
                None => format!("last observed {ago} ago; not since"),
            });
        }
        report
    }

    /// Drops what Macha holds for a host's connection (the next contact starts afresh).
    fn forget_connection(&self, name: &HostName) {
        {
            let mut st = lock(&self.state);
            st.identified.remove(name);
            st.memory.remove(name);
            st.health.remove(name);
            st.reports.remove(name);
        }
        if let Ok(pool) = &self.pool {
            let (pool, name) = (Arc::clone(pool), name.clone());
            tokio::spawn(async move { pool.disconnect(&name).await });
        }
    }

    /// Each remote host's last observed TCP connections (for the fleet map).
    pub fn connections(&self) -> BTreeMap<HostName, macha_core::snapshot::Connections> {
        let st = lock(&self.state);
        st.reports.iter().filter_map(|(n, r)| r.snapshot.connections.data().map(|c| (n.clone(), c.clone()))).collect()
    }

    /// The registry requests answered in the loop.
    pub fn api(&self, engine: &mut Engine, request: Request, who: &str) -> anyhow::Result<Response> {
        let now = crate::now();
        match request {
            Request::ListHosts => {
                let kh = self.known_hosts()?;
                let hosts = engine.store().list_fleet_hosts()?;
                Ok(Response::reply::<ops::ListHosts>(&hosts.iter().map(|h| self.summary(h, &kh)).collect()))
            }
            Request::HostReports(ops::HostReports { hosts, tag }) => {
                let mut hosts = if hosts.is_empty() {
                    let all = engine.store().list_fleet_hosts()?;
                    all.into_iter().filter(|h| standing(h.record.state).may_connect()).collect()
                } else {
                    hosts.iter().map(|n| self.lookup(engine, n)).collect::<anyhow::Result<Vec<_>>>()?
                };
                if let Some(tag) = &tag {
                    hosts.retain(|h| {
                        HostName::parse(&h.record.name)
                            .ok()
                            .and_then(|n| self.settings.tags.get(&n))
                            .is_some_and(|t| t.contains(tag))
                    });
                    if hosts.is_empty() {
                        return Err(StoreError::NotFound { entity: "host", id: 0 })
                            .with_context(|| format!("no observed host has the tag {tag:?}"));
                    }
                }
                let reports: Vec<CheckReport> = hosts.iter().map(|h| self.report(engine, h, now)).collect();
                Ok(Response::reply::<ops::HostReports>(&reports))
            }
            Request::ShowHost(ops::ShowHost { name }) => {
                let h = self.lookup(engine, &name)?;
                let kh = self.known_hosts()?;
                let audit = engine.store().query_audit(&AuditQuery {
                    host: Some(h.record.name.clone()),
                    limit: Some(30),
                    order: Order::NewestFirst,
                    ..AuditQuery::default()
                })?;
                Ok(Response::reply::<ops::ShowHost>(&crate::wire::host_detail(self.summary(&h, &kh), &h, &audit)))
            }
            Request::AdmitHost(ops::AdmitHost { name }) => {
                let full = rules::complete_name(&name, self.settings.domain.as_ref())
                    .map_err(|e| anyhow::format_err!("{name:?}: {e}"))?;
                if full.is_local() {
                    anyhow::bail!("\"local\" is this host");
                }
                let existing = engine.store().get_fleet_host(full.as_str())?;
                let (mut record, source, expected) = match &existing {
                    Some(h) if matches!(h.record.state, HostState::Discovered | HostState::Forgotten) => {
                        (h.record.clone(), h.source, Some(h.record.state))
                    }
                    Some(h) => {
                        return Ok(Response::reply::<ops::AdmitHost>(&HostChange {
                            name: full.as_str().to_owned(),
                            state: standing(h.record.state),
                            changed: false,
                        }));
                    }
                    None => (
                        HostRecord {
                            name: full.as_str().to_owned(),
                            address: None,
                            port: None,
                            user: None,
                            state: HostState::Admitted,
                            host_key: None,
                            os: None,
                            profile: serde_json::json!({}),
                            first_seen: now,
                            last_seen: now,
                        },
                        HostSource::Admin,
                        None,
                    ),
                };
                let source = if source == HostSource::Config { HostSource::Admin } else { source };
                record.state = HostState::Admitted;
                let audit = NewAudit::new(
                    now,
                    AuditKind::Config,
                    Severity::Notice,
                    full.as_str(),
                    format!("{full} admitted by {who}: Macha may contact it (observation only until it is trusted)"),
                )
                .with_subject("host");
                engine.store_mut().put_fleet_host(&record, source, expected, &audit)?;
                self.reload(engine)?;
                Ok(Response::reply::<ops::AdmitHost>(&HostChange {
                    name: full.as_str().to_owned(),
                    state: Standing::Admitted,
                    changed: true,
                }))
            }
            Request::ForgetHost(ops::ForgetHost { name }) => {
                let h = self.lookup(engine, &name)?;
                if h.source == HostSource::Config && h.record.state != HostState::Forgotten {
                    return Err(StoreError::Conflict {
                        entity: "host",
                        id: 0,
                        expected: "a host not in the configuration".into(),
                        actual: "configured".into(),
                    })
                    .with_context(|| {
                        format!(
                            "{} is in the configuration: remove [hosts.{}] to forget it",
                            h.record.name, h.record.name
                        )
                    });
                }
                let host_name = HostName::parse(&h.record.name).map_err(|e| anyhow::format_err!("{e}"))?;
                let mut kh = self.known_hosts()?;
                if kh.remove(&host_name) {
                    kh.save().map_err(|e| anyhow::format_err!("{e}"))?;
                }
                let mut record = h.record.clone();
                record.state = HostState::Forgotten;
                let audit = NewAudit::new(
                    now,
                    AuditKind::Config,
                    Severity::Notice,
                    &h.record.name,
                    format!(
                        "{} forgotten by {who}: never contacted again, its pinned keys removed; its history stays",
                        h.record.name
                    ),
                )
                .with_subject("host");
                engine.store_mut().put_fleet_host(&record, h.source, Some(h.record.state), &audit)?;
                self.forget_connection(&host_name);
                self.reload(engine)?;
                Ok(Response::reply::<ops::ForgetHost>(&HostChange {
                    name: h.record.name.clone(),
                    state: Standing::Forgotten,
                    changed: h.record.state != HostState::Forgotten,
                }))
            }
            other => anyhow::bail!("{} is not a fleet request", other.op()),
        }
    }

    fn summary(&self, h: &FleetHost, kh: &KnownHosts) -> crate::api::reply::HostView {
        let name = HostName::parse(&h.record.name).ok();
        let pinned: Vec<String> =
            name.as_ref().map(|n| kh.keys_for(n).iter().map(HostKey::fingerprint).collect()).unwrap_or_default();
        let connects = match (&self.pool, &name) {
            (Ok(p), Some(n)) => p.connects(n),
            _ => 0,
        };
        let tags = name.as_ref().and_then(|n| self.settings.tags.get(n)).cloned().unwrap_or_default();
        crate::wire::host(h, pinned, tags, &self.settings.user, connects)
    }

    /// Closes every SSH master.
    pub async fn shutdown(&self) {
        if let Ok(pool) = &self.pool {
            pool.shutdown().await;
        }
    }
}

/// A host first seen in the journal: only its name.
fn discovered_record(name: &HostName, now: Timestamp) -> HostRecord {
    HostRecord {
        name: name.as_str().to_owned(),
        address: None,
        port: None,
        user: None,
        state: HostState::Discovered,
        host_key: None,
        os: None,
        profile: serde_json::json!({}),
        first_seen: now,
        last_seen: now,
    }
}

/// One host's observation: the first contact if it is due, then the probe.
async fn observe_host(
    pool: &SshPool,
    target: &Target,
    spec: &ProbeSpec,
    memory: Arc<Mutex<HostMemory>>,
    identify: bool,
) -> (Result<Snapshot, SshError>, Option<Identity>) {
    let mut identity = None;
    let mut mem = lock(&memory).clone();
    if identify {
        match probe::identify(pool, target, spec.timeout).await {
            Ok(id) => {
                mem.os = Some(id.os.family);
                mem.hardware = Some(id.hardware.clone());
                *lock(&memory) = mem.clone();
                identity = Some(id);
            }
            Err(e) => return (Err(e), None),
        }
    }
    let result = probe::observe(pool, target, spec, &mut mem, crate::now()).await;
    *lock(&memory) = mem;
    (result, identity)
}

/// The `_HOSTNAME`s of the journal entries within `window`, newest first (distinct, at most
/// [`DISCOVERY_NAMES_MAX`]): `journalctl --reverse --output=json --output-fields=_HOSTNAME
/// --since=-<window>`, over `--directory=<dir>` if given, else `--merge` (every journal on this
/// host, the remote ones included). Reading stops once the cap is reached.
pub async fn discover(
    journalctl: &std::path::Path,
    dir: Option<&std::path::Path>,
    window: Duration,
) -> Result<Vec<String>, String> {
    let mut cmd = tokio::process::Command::new(journalctl);
    cmd.args(["--reverse", "--output=json", "--output-fields=_HOSTNAME", "--no-pager", "--quiet"])
        .arg(format!("--since=-{}s", window.as_secs().max(1)));
    match dir {
        Some(d) => cmd.arg(format!("--directory={}", d.display())),
        None => cmd.arg("--merge"),
    };
    cmd.env_clear()
        .envs(macha_core::command::SPAWN_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", journalctl.display()))?;
    let Some(stdout) = child.stdout.take() else { return Err("journalctl: no output".into()) };
    let read = async {
        let mut names = NewestNames::new(DISCOVERY_NAMES_MAX);
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(h) = v.get("_HOSTNAME").and_then(|h| h.as_str())
                && !names.add(h)
            {
                break;
            }
        }
        names
    };
    let names = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .map_err(|_| "journalctl did not finish within 60 s".to_owned())?;
    if names.full() {
        // Enough names: the older entries are not needed.
        let _ = child.kill().await;
        return Ok(names.into_vec());
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut err).await;
        }
        // No journal files at all is "nothing seen", not a failure.
        if !err.contains("No journal files") {
            return Err(format!("journalctl exited with {status}: {}", err.trim()));
        }
    }
    Ok(names.into_vec())
}

/// Distinct host names in the order first met (newest first when the journal is read in
/// reverse), at most `max`.
#[derive(Debug)]
struct NewestNames {
    order: Vec<String>,
    seen: std::collections::HashSet<String>,
    max: usize,
}

impl NewestNames {
    fn new(max: usize) -> NewestNames {
        NewestNames { order: Vec::new(), seen: std::collections::HashSet::new(), max }
    }

    /// Adds a name (too long ones are skipped); false once the cap is reached.
    fn add(&mut self, name: &str) -> bool {
        if self.full() {
            return false;
        }
        if name.len() <= macha_core::names::HOST_NAME_MAX && !self.seen.contains(name) {
            self.seen.insert(name.to_owned());
            self.order.push(name.to_owned());
        }
        !self.full()
    }

    fn full(&self) -> bool {
        self.order.len() >= self.max
    }

    fn into_vec(self) -> Vec<String> {
        self.order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scope;
    use macha_core::action::{Hosts, Origin};
    use macha_core::{Action, UnitName};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE0qsxSh/2W4bH/LeviKgKg5rlzbNPwOFvkYjqv70mR c1";

    fn config(dir: &std::path::Path, hosts: &str) -> Config {
        let text = format!(
            "autonomy = \"auto-safe\"\n[paths]\nstate_dir = \"{d}\"\nsocket = \"{d}/m.sock\"\n\
             [discovery]\nenable = true\nallowed_domains = [\"*.lab.test\"]\ndomain = \"lab.test\"\n{hosts}",
            d = dir.display()
        );
        Config::from_toml(&text, Scope::System).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn rule(engine: &mut Engine, host: &str) -> String {
        let action = Action::RestartUnit {
            host: Hosts::One(HostName::parse(host).unwrap_or_else(|e| panic!("{e}"))),
            unit: UnitName::parse("nginx").unwrap_or_else(|e| panic!("{e}")),
            reason: "test".into(),
        };
        let (r, _work) = engine
            .propose(action, Origin::Person { uid: 0 }, None, crate::now(), "c")
            .unwrap_or_else(|e| panic!("{e:#}"));
        r.decision.rule
    }

    fn state(engine: &Engine, name: &str) -> Option<HostState> {
        engine.store().get_fleet_host(name).ok().flatten().map(|h| h.record.state)
    }

    #[tokio::test]
    async fn registry_from_configuration_discovery_and_people() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hosts =
            format!("[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n[hosts.c2]\naddress = \"10.0.0.2\"\n");
        let cfg = config(dir.path(), &hosts);
        let store = macha_store::Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let now = crate::now();
        let mut engine = Engine::new(store, cfg.clone(), true, now).unwrap_or_else(|e| panic!("{e:#}"));
        let fleet = Fleet::start(&cfg, &mut engine, now).unwrap_or_else(|e| panic!("{e:#}"));
        // A configured key pins the host (trusted); without one it is only configured.
        assert_eq!(state(&engine, "c1"), Some(HostState::Trusted));
        assert_eq!(state(&engine, "c2"), Some(HostState::Configured));
        let kh = KnownHosts::load(&cfg.ssh.known_hosts).unwrap_or_else(|e| panic!("{e}"));
        let c1 = HostName::parse("c1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kh.keys_for(&c1).len(), 1);
        // Only trusted hosts are the policy's known hosts.
        assert_ne!(rule(&mut engine, "c1"), "unknown-host");
        assert_eq!(rule(&mut engine, "c2"), "unknown-host");
        assert_eq!(rule(&mut engine, "nowhere.example.org"), "unknown-host");

        // Discovery: validated names only; allowed domain → admitted; anything else → discovered.
        let seen = ["web1", "evil.example.org", "-oProxyCommand=id", "localhost", "a;b", "C1"];
        fleet
            .discovered(&mut engine, Ok(seen.iter().map(|s| (*s).to_owned()).collect()))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(state(&engine, "web1.lab.test"), Some(HostState::Admitted));
        assert_eq!(state(&engine, "evil.example.org"), Some(HostState::Discovered));
        // "C1" is the configured host c1 (a short name of a registered host), not a new c1.lab.test.
        assert_eq!(state(&engine, "c1.lab.test"), None, "a registered host's short name is that host");
        assert_eq!(state(&engine, "c1"), Some(HostState::Trusted), "a configured host is not touched");
        let names: Vec<String> =
            engine.store().list_fleet_hosts().unwrap_or_default().into_iter().map(|h| h.record.name).collect();
        assert_eq!(names, ["c1", "c2", "evil.example.org", "web1.lab.test"]);
        assert!(
            fleet
                .targets
                .read()
                .is_ok_and(|t| !t.contains_key(&HostName::parse("evil.example.org").unwrap_or_else(|e| panic!("{e}"))))
        );
        // Neither an admitted nor a discovered host may be acted on.
        assert_eq!(rule(&mut engine, "web1.lab.test"), "unknown-host");
        // Seen again: nothing changes, no second record.
        fleet.discovered(&mut engine, Ok(vec!["evil.example.org".into()])).unwrap_or_else(|e| panic!("{e:#}"));
        let trail = engine
            .store()
            .query_audit(&AuditQuery { host: Some("evil.example.org".into()), ..AuditQuery::default() })
            .unwrap_or_default();
        assert_eq!(trail.len(), 1, "{trail:?}");
        assert!(trail[0].summary.contains("will not contact it"));

        // People: admit, forget; a configured host is forgotten by removing it from the configuration.
        let v = fleet
            .api(&mut engine, Request::AdmitHost(ops::AdmitHost { name: "evil.example.org".into() }), "root")
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_reply::<ops::AdmitHost>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((v.state, v.changed), (Standing::Admitted, true));
        assert_eq!(state(&engine, "evil.example.org"), Some(HostState::Admitted));
        fleet
            .api(&mut engine, Request::ForgetHost(ops::ForgetHost { name: "evil.example.org".into() }), "root")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(state(&engine, "evil.example.org"), Some(HostState::Forgotten));
        let refused = fleet.api(&mut engine, Request::ForgetHost(ops::ForgetHost { name: "c1".into() }), "root");
        assert!(refused.is_err_and(|e| format!("{e:#}").contains("remove [hosts.c1]")));
        let list = fleet
            .api(&mut engine, Request::ListHosts, "root")
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_reply::<ops::ListHosts>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let c1v = list.iter().find(|h| h.name == "c1").unwrap_or_else(|| panic!("{list:?}"));
        assert_eq!(
            (c1v.actions, c1v.pinned.first().map(String::as_str)),
            (true, Some("SHA256:bzpIzhnyb0gUT0E3NCH/eNzkgzek9GnTHjztQG7CGc4"))
        );
        let admitted_new = fleet
            .api(&mut engine, Request::AdmitHost(ops::AdmitHost { name: "db9".into() }), "root")
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_reply::<ops::AdmitHost>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(admitted_new.name, "db9.lab.test");

        // c2 leaves the configuration: forgotten, history kept.
        let cfg2 = config(dir.path(), &format!("[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n"));
        let fleet2 = Fleet::start(&cfg2, &mut engine, crate::now()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(state(&engine, "c2"), Some(HostState::Forgotten));
        assert_eq!(state(&engine, "c1"), Some(HostState::Trusted));
        fleet2.shutdown().await;
    }

    fn engine_and_fleet(dir: &std::path::Path, hosts: &str) -> (Config, Engine, Fleet) {
        let cfg = config(dir, hosts);
        let store = macha_store::Store::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let now = crate::now();
        let mut engine = Engine::new(store, cfg.clone(), true, now).unwrap_or_else(|e| panic!("{e:#}"));
        let fleet = Fleet::start(&cfg, &mut engine, now).unwrap_or_else(|e| panic!("{e:#}"));
        (cfg, engine, fleet)
    }

    fn h(name: &str) -> HostName {
        HostName::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn observed(host: &str, result: Result<Snapshot, SshError>, timed_out: usize) -> FleetEvent {
        FleetEvent::Observed(Box::new(Observed {
            host: h(host),
            result,
            identity: None,
            memory: HostMemory { timed_out, ..HostMemory::default() },
            queued: Duration::ZERO,
            elapsed: Duration::from_secs(1),
        }))
    }

    #[tokio::test]
    async fn a_host_leaving_the_fleet_leaves_no_metric_detectors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let both = format!(
            "[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n[hosts.c2]\naddress = \"10.0.0.2\"\nhost_key = \"{KEY}\"\n"
        );
        let (_, mut engine, fleet) = engine_and_fleet(dir.path(), &both);
        fleet
            .api(&mut engine, Request::AdmitHost(ops::AdmitHost { name: "db9.lab.test".into() }), "root")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let now = crate::now();
        for name in ["local", "c1", "c2", "db9.lab.test"] {
            let host = if name == "local" { HostName::local() } else { h(name) };
            engine.cycle(&Snapshot::all_unavailable(host, now, "test"), "c").unwrap_or_else(|e| panic!("{e:#}"));
        }
        let tracked = |engine: &Engine| -> Vec<bool> {
            [HostName::local(), h("c1"), h("c2"), h("db9.lab.test")]
                .iter()
                .map(|n| engine.tracks_metrics_of(n))
                .collect()
        };
        assert_eq!(tracked(&engine), [true, true, true, true]);

        // A person forgets a host: its detectors go with it.
        fleet
            .api(&mut engine, Request::ForgetHost(ops::ForgetHost { name: "db9.lab.test".into() }), "root")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(tracked(&engine), [true, true, true, false]);

        // A host removed from the configuration: the same; this host and c1 keep theirs.
        let only_c1 = format!("[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n");
        let cfg2 = config(dir.path(), &only_c1);
        let fleet2 = Fleet::start(&cfg2, &mut engine, crate::now()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(state(&engine, "c2"), Some(HostState::Forgotten));
        assert_eq!(tracked(&engine), [true, true, false, false]);
        fleet.shutdown().await;
        fleet2.shutdown().await;
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let i = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n, i).as_secs()).collect();
        assert_eq!(waits, [0, 60, 180, 420, 600, 600]);
        assert_eq!(backoff(u32::MAX, i), BACKOFF_MAX);
        assert_eq!(
            backoff(9, Duration::from_secs(3600)),
            Duration::from_secs(3600),
            "at most one interval when longer"
        );
        assert_eq!((suspect_slots(16), suspect_slots(2), suspect_slots(1)), (4, 1, 1));
    }

    #[tokio::test]
    async fn failing_and_hung_hosts_are_suspect_and_backed_off_per_host() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hosts = format!(
            "[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n[hosts.c2]\naddress = \"10.0.0.2\"\nhost_key = \"{KEY}\"\n"
        );
        let (_cfg, mut engine, fleet) = engine_and_fleet(dir.path(), &hosts);
        let down =
            || Err(SshError::ConnectTimeout { host: "c1".into(), after: Duration::from_secs(15), detail: "x".into() });
        let health = |f: &Fleet, n: &str| lock(&f.state).health.get(&h(n)).map(|hl| hl.failures);
        for _ in 0..3 {
            fleet.handle(&mut engine, observed("c1", down(), 0)).unwrap_or_else(|e| panic!("{e:#}"));
        }
        assert_eq!(health(&fleet, "c1"), Some(3));
        let wait =
            lock(&fleet.state).health.get(&h("c1")).map(|hl| hl.retry_at.saturating_duration_since(Instant::now()));
        let interval = fleet.settings.interval;
        assert!(wait.is_some_and(|w| w > interval * 2 && w <= interval * 3), "{wait:?}");
        let status = engine.store().get_fleet_host("c1").ok().flatten().map(|h| h.status).unwrap_or_default();
        assert_eq!(status["backoff"]["failures"], 3, "{status}");
        // A host that answers but whose commands hung is suspect too; c1 is not affected by c2.
        let snap = Snapshot::all_unavailable(h("c2"), crate::now(), "did not finish");
        fleet.handle(&mut engine, observed("c2", Ok(snap.clone()), 2)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((health(&fleet, "c2"), health(&fleet, "c1")), (Some(1), Some(3)));
        // A good observation clears it.
        let ok = Snapshot::all_unavailable(h("c2"), crate::now(), "test");
        fleet.handle(&mut engine, observed("c2", Ok(ok), 0)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(health(&fleet, "c2"), None);
        fleet.shutdown().await;
    }

    /// A snapshot of `host` with six of eleven sections observed (units, load, network,
    /// filesystems, journal, processes): partial, never degraded by itself.
    fn mostly_seen(host: &str) -> Snapshot {
        use macha_core::snapshot::{JournalSummary, Load, Processes, Section, Units};
        let mut s = Snapshot::all_unavailable(h(host), crate::now(), "not in this test");
        s.units =
            Section::ok(Units { system_state: "running".into(), total: 3, notable: Vec::new(), failed: Vec::new() });
        s.load = Section::ok(Load { one: 0.0, five: 0.0, fifteen: 0.0, runnable: 1, processes: 3 });
        s.network = Section::ok(Vec::new());
        s.filesystems = Section::ok(Vec::new());
        s.processes = Section::ok(Processes { total: 3, top_cpu: Vec::new(), top_rss: Vec::new() });
        s.journal =
            Section::ok(JournalSummary { window_secs: 600, errors_total: 0, by_unit: Vec::new(), samples: Vec::new() });
        s
    }

    #[tokio::test]
    async fn a_host_that_answers_but_is_not_observed_is_degraded_at_once_with_an_alert_and_an_issue() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hosts = format!("[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n");
        let (_cfg, mut engine, fleet) = engine_and_fleet(dir.path(), &hosts);
        let kind = |e: &Engine| {
            let st = e.store().get_fleet_host("c1").ok().flatten().map(|h| h.status).unwrap_or_default();
            st["kind"].as_str().unwrap_or_default().to_owned()
        };
        let open_observation = |e: &Engine| {
            e.store()
                .list_issues(&macha_store::IssueQuery::default())
                .unwrap_or_default()
                .into_iter()
                .filter(|i| {
                    i.check_name == "observation" && i.host == "c1" && i.state == macha_core::issue::IssueState::Open
                })
                .count()
        };
        let alerts = |e: &Engine| {
            e.store()
                .query_audit(&AuditQuery { host: Some("c1".into()), ..AuditQuery::default() })
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.kind == AuditKind::Alert)
                .map(|a| a.summary)
                .collect::<Vec<_>>()
        };
        let reports = |f: &Fleet, e: &mut Engine| {
            let r = f
                .api(e, Request::HostReports(ops::HostReports { hosts: vec!["c1".into()], tag: None }), "test")
                .unwrap_or_else(|e| panic!("{e:#}"));
            let v = r.into_reply::<ops::HostReports>().unwrap_or_else(|e| panic!("{e:?}"));
            v.into_iter().map(|r| r.status).collect::<Vec<_>>()
        };
        // Before any observation the report says so, as unknown.
        assert_eq!(reports(&fleet, &mut engine), [CheckStatus::Unknown]);

        // Every command timed out, yet the connection worked: unknown at once, not "ok".
        let blind = Snapshot { timed_out: 9, ..Snapshot::all_unavailable(h("c1"), crate::now(), "command timed out") };
        fleet.handle(&mut engine, observed("c1", Ok(blind), 9)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(kind(&engine), "unknown");
        assert_eq!(open_observation(&engine), 1);
        assert!(
            alerts(&engine).iter().any(|a| a.starts_with("c1 is unknown: nothing on c1 could be observed")),
            "{:?}",
            alerts(&engine)
        );
        assert_eq!(reports(&fleet, &mut engine), [CheckStatus::Unknown]);

        // One command timed out among answers: degraded, the issue stays open.
        let slow = Snapshot { timed_out: 1, ..mostly_seen("c1") };
        fleet.handle(&mut engine, observed("c1", Ok(slow), 1)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(kind(&engine), "degraded");
        assert_eq!(open_observation(&engine), 1);
        assert!(
            alerts(&engine).iter().any(|a| a.starts_with("c1 is degraded: 1 command timed out on c1")),
            "{:?}",
            alerts(&engine)
        );

        // Observed again: ok, the issue resolved by its own check, an alert saying so.
        fleet.handle(&mut engine, observed("c1", Ok(mostly_seen("c1")), 0)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(kind(&engine), "ok");
        assert_eq!(open_observation(&engine), 0);
        assert!(alerts(&engine).iter().any(|a| a == "c1 is reachable and observed again"), "{:?}", alerts(&engine));
        // Partly seen (no Nix, no GPUs) is unknown in the report, never healthy.
        assert_eq!(reports(&fleet, &mut engine), [CheckStatus::Unknown]);
        fleet.shutdown().await;
    }

    #[test]
    fn a_remote_hosts_journal_samples_are_redacted_on_arrival() {
        use macha_core::snapshot::{JournalSummary, Section};
        let mut snap = Snapshot::all_unavailable(h("c1"), crate::now(), "test");
        let secret = "backup.service: login with password=hunter2hunter2 failed".to_owned();
        snap.journal = Section::ok(JournalSummary {
            window_secs: 600,
            errors_total: 1,
            by_unit: Vec::new(),
            samples: vec![secret.clone()],
        });
        let mut event = observed("c1", Ok(snap), 0);
        let redactor = macha_agent::Redactor::builtin();
        redact_remote_journal(&mut event, |t| redactor.apply(t));
        let FleetEvent::Observed(o) = event else { panic!("not an observation") };
        let samples = o.result.ok().and_then(|s| s.journal.data().map(|j| j.samples.clone())).unwrap_or_default();
        assert_eq!(samples.len(), 1);
        assert!(!samples[0].contains("hunter2"), "{samples:?}");
        assert!(samples[0].starts_with("backup.service: login with"), "{samples:?}");
    }

    #[tokio::test]
    async fn tags_select_hosts_for_reports_and_views() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hosts = format!(
            "[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\ntags = [\"web\", \"eu\"]\n\
             [hosts.c2]\naddress = \"10.0.0.2\"\nhost_key = \"{KEY}\"\ntags = [\"db\"]\n"
        );
        let (_cfg, mut engine, fleet) = engine_and_fleet(dir.path(), &hosts);
        let names = |f: &Fleet, e: &mut Engine, tag: &str| {
            f.api(e, Request::HostReports(ops::HostReports { hosts: Vec::new(), tag: Some(tag.into()) }), "test")
                .map(|r| {
                    r.into_reply::<ops::HostReports>()
                        .unwrap_or_else(|e| panic!("{e:?}"))
                        .into_iter()
                        .map(|r| r.host.as_str().to_owned())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(names(&fleet, &mut engine, "web"), Ok(vec!["c1".to_owned()]));
        assert_eq!(names(&fleet, &mut engine, "db"), Ok(vec!["c2".to_owned()]));
        let none = names(&fleet, &mut engine, "nope").err().unwrap_or_default();
        assert!(none.contains("no observed host has the tag \"nope\""), "{none}");
        let views = fleet
            .api(&mut engine, Request::ListHosts, "test")
            .unwrap_or_else(|e| panic!("{e:#}"))
            .into_reply::<ops::ListHosts>()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let c1 = views.iter().find(|v| v.name == "c1").map(|v| v.tags.clone());
        assert_eq!(c1, Some(vec!["web".to_owned(), "eu".to_owned()]));
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn actions_only_where_the_host_can_be_acted_on() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hosts = format!(
            "[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n[hosts.c2]\naddress = \"10.0.0.2\"\nhost_key = \"{KEY}\"\n"
        );
        let (cfg, mut engine, fleet) = engine_and_fleet(dir.path(), &hosts);
        let actions = |engine: &mut Engine, name: &str| {
            let list = fleet.api(engine, Request::ListHosts, "root").unwrap_or_else(|e| panic!("{e:#}"));
            let hosts = list.into_reply::<crate::api::ops::ListHosts>().unwrap_or_else(|e| panic!("{e:?}"));
            hosts.iter().find(|h| h.name == name).map(|h| serde_json::json!(h.actions))
        };
        assert_eq!(actions(&mut engine, "c1"), Some(serde_json::json!(true)));
        // c1 presents another key: refused, not acted on, and the list says so.
        let changed = SshError::HostKeyChanged { host: "c1".into(), detail: "x".into() };
        fleet.handle(&mut engine, observed("c1", Err(changed), 0)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(actions(&mut engine, "c1"), Some(serde_json::json!(false)));
        assert_eq!(rule(&mut engine, "c1"), "unknown-host");
        // c2's pinned key is removed from the known_hosts file: it cannot be contacted at all.
        let mut kh = KnownHosts::load(&cfg.ssh.known_hosts).unwrap_or_else(|e| panic!("{e}"));
        kh.remove(&h("c2"));
        kh.save().unwrap_or_else(|e| panic!("{e}"));
        fleet.reload(&mut engine).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(actions(&mut engine, "c2"), Some(serde_json::json!(false)));
        assert_eq!(rule(&mut engine, "c2"), "unknown-host");
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn the_records_of_a_remote_observation_are_in_time_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hosts = format!("[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n");
        let (_cfg, mut engine, fleet) = engine_and_fleet(dir.path(), &hosts);
        // The probe's data was complete 3 s ago (the loop was busy since): a failed unit.
        let taken_at = crate::now().minus(Duration::from_secs(3));
        let mut snap = Snapshot::all_unavailable(h("c1"), taken_at, "test");
        snap.units = macha_core::snapshot::Section::ok(macha_core::snapshot::Units {
            system_state: "degraded".into(),
            total: 1,
            notable: vec![macha_core::snapshot::UnitState {
                name: "lab-demo.service".into(),
                description: "demo".into(),
                load_state: "loaded".into(),
                active_state: "failed".into(),
                sub_state: "failed".into(),
                result: Some("exit-code".into()),
                n_restarts: Some(0),
            }],
            failed: vec!["lab-demo.service".into()],
        });
        let identity = Identity {
            os: macha_core::fleet::detect_os(Some("ID=debian\nPRETTY_NAME=\"Debian 12\"\n"), None),
            hardware: macha_core::snapshot::Hardware {
                cpu_model: "x".into(),
                physical_cores: 1,
                logical_cpus: 1,
                gpus: vec![],
                gpu_notes: vec![],
                usb: vec![],
                block_devices: vec![],
            },
            running_services: Ok(vec!["ssh.service".into()]),
            tools: macha_ssh::RemoteTools::default(),
        };
        let event = FleetEvent::Observed(Box::new(Observed {
            host: h("c1"),
            result: Ok(snap),
            identity: Some(identity),
            memory: HostMemory::default(),
            queued: Duration::ZERO,
            elapsed: Duration::from_secs(2),
        }));
        let work = fleet.handle(&mut engine, event).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(work.len(), 1, "a restart of the failed unit at auto-safe");
        let trail = engine
            .store()
            .query_audit(&AuditQuery { host: Some("c1".into()), ..AuditQuery::default() })
            .unwrap_or_default();
        let kinds: Vec<AuditKind> = trail.iter().map(|r| r.kind).collect();
        assert!(kinds.contains(&AuditKind::Action), "{kinds:?}");
        // In the order written, time never goes backwards: first contact, finding, decision,
        // action (the snapshot itself is a history row, checked below).
        for pair in trail.windows(2) {
            assert!(
                pair[0].ts <= pair[1].ts,
                "{} at {} before {} at {}",
                pair[0].summary,
                pair[0].ts,
                pair[1].summary,
                pair[1].ts
            );
        }
        let history = engine.store().query_history(&macha_store::HistoryQuery::default()).unwrap_or_default();
        let snapshot_at = history.iter().find(|r| r.entry.host == "c1").map_or(Timestamp(i64::MAX), |r| r.entry.ts);
        assert!(trail.iter().all(|r| r.ts >= snapshot_at), "a record before the snapshot it came from");
        let actions = engine.store().actions_since(Timestamp(0)).unwrap_or_default();
        assert!(actions.iter().all(|a| a.ts_started >= snapshot_at), "{actions:?}");
        let status = engine.store().get_fleet_host("c1").ok().flatten().map(|h| h.status).unwrap_or_default();
        assert!(status["at"].as_i64().is_some_and(|at| at <= actions[0].ts_started.millis()), "{status}");
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn discovery_is_newest_first_and_the_discovered_hosts_are_capped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hosts = format!("[hosts.c1]\naddress = \"10.0.0.1\"\nhost_key = \"{KEY}\"\n");
        let (_cfg, mut engine, fleet) = engine_and_fleet(dir.path(), &hosts);
        // The journal read in reverse: the newest names first, then a flood of older junk.
        let mut names = NewestNames::new(DISCOVERY_NAMES_MAX);
        for n in ["web9", "fresh.example.org", "c1"] {
            assert!(names.add(n));
        }
        for i in 0..(DISCOVERY_NAMES_MAX * 2) {
            if !names.add(&format!("junk{i}.example.net")) {
                break;
            }
        }
        assert!(names.full());
        let names = names.into_vec();
        assert_eq!(names.len(), DISCOVERY_NAMES_MAX);
        assert_eq!(&names[..3], ["web9", "fresh.example.org", "c1"]);
        fleet.discovered(&mut engine, Ok(names)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(state(&engine, "web9.lab.test"), Some(HostState::Admitted), "admitted despite the flood");
        assert_eq!(state(&engine, "fresh.example.org"), Some(HostState::Discovered), "the newest kept");
        assert_eq!(state(&engine, "c1"), Some(HostState::Trusted));
        assert_eq!(engine.store().count_discovered().unwrap_or(0), DISCOVERED_MAX);
        // A later pass with newer junk: the least recently seen discovered names go, never the
        // configured, admitted or trusted hosts; a name seen again stays.
        let later: Vec<String> = std::iter::once("fresh.example.org".to_owned())
            .chain((0..500).map(|i| format!("newer{i}.example.net")))
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        fleet.discovered(&mut engine, Ok(later)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(engine.store().count_discovered().unwrap_or(0), DISCOVERED_MAX);
        assert_eq!(state(&engine, "fresh.example.org"), Some(HostState::Discovered));
        assert_eq!(state(&engine, "newer499.example.net"), Some(HostState::Discovered));
        assert_eq!(state(&engine, "web9.lab.test"), Some(HostState::Admitted));
        assert_eq!(state(&engine, "c1"), Some(HostState::Trusted));
        // The first pass registered "fresh" and junk0..junk998; the oldest 500 of those went.
        let evicted =
            (0..DISCOVERED_MAX - 1).filter(|i| state(&engine, &format!("junk{i}.example.net")).is_none()).count();
        assert_eq!(evicted, 500);
        fleet.shutdown().await;
    }

    #[test]
    fn targets_and_properties() {
        let rec = |name: &str, address: Option<&str>| FleetHost {
            record: HostRecord {
                name: name.into(),
                address: address.map(str::to_owned),
                port: None,
                user: None,
                state: HostState::Admitted,
                host_key: None,
                os: None,
                profile: serde_json::json!({}),
                first_seen: Timestamp(0),
                last_seen: Timestamp(0),
            },
            source: HostSource::Journal,
            status: serde_json::json!({}),
        };
        let t = target_of(&rec("web1.lab.test", None), "macha").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.address.as_str(), t.port, t.user.as_deref()), ("web1.lab.test", 22, Some("macha")));
        assert!(target_of(&rec("x", Some("-oProxyCommand=id")), "macha").is_err());
        assert!(target_of(&rec("bad name", None), "macha").is_err());
        for s in HostState::ALL {
            assert_eq!(
                standing(s).may_connect(),
                matches!(s, HostState::Configured | HostState::Admitted | HostState::Trusted)
            );
        }
    }
}
