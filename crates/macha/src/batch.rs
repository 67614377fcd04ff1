//! BATCH work in the daemon: jobs that run only while this host is idle (docs/knowledge.md,
//! decision 0019). The first job re-indexes `knowledge.flake` into the daemon's own database when
//! the flake changed, so that `macha configs` (and later the model) can search it.
//!
//! A task looks every [`LOOK_EVERY`]: it fingerprints the flake (its git HEAD and every `.nix`
//! file's path, size and modification time; no file is read), and when that changed since the
//! last run it asks [`macha_core::idle::should_run`] with the host's PSI and load. A run happens on
//! a thread of its own at the lowest CPU priority (nice 19), with its own connection to the
//! database (the index is derived data, written in one transaction; SQLite serialises it with the
//! engine's writes); the CPU time it used spaces the next run out (the CPU budget). The same task
//! resolves the configured hosts' names for the fleet map's observed relations.

use crate::api::reply::JobView;
use crate::config::Config;
use macha_core::HostName;
use macha_core::idle::{Decision, HostPressure, IdleLimits, LastRun, should_run};
use macha_core::time::Timestamp;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the scheduler looks (the first look is [`FIRST_LOOK`] after the start).
pub const LOOK_EVERY: Duration = Duration::from_secs(30);
/// The first look, soon after the start (the daemon's own start is not slowed by it).
pub const FIRST_LOOK: Duration = Duration::from_secs(1);
/// The niceness of a run's thread.
pub const NICE: i32 = 19;
/// The name of the re-indexing job.
pub const REINDEX: &str = "reindex-flake";
/// Files fingerprinted at most (as the index itself: `macha_knowledge::index::FILES_MAX`).
const FINGERPRINT_FILES_MAX: usize = macha_knowledge::index::FILES_MAX;

/// What the scheduler shares with the loop (status) and the socket (the fleet map).
#[derive(Debug, Default)]
pub struct Batch {
    job: Mutex<Job>,
    resolved: Mutex<BTreeMap<HostName, Vec<IpAddr>>>,
}

#[derive(Debug, Default)]
struct Job {
    view: JobView,
    last: Option<LastRun>,
    /// The fingerprint of the flake the last successful run indexed.
    indexed: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Batch {
    /// Starts the scheduler task.
    pub fn start(config: &Config, tracker: &TaskTracker, stop: CancellationToken) -> Arc<Batch> {
        let limits = &config.knowledge_idle;
        tracing::debug!(
            max_cpu_pressure = limits.max_cpu_pressure,
            max_memory_pressure = limits.max_memory_pressure,
            max_load_per_cpu = limits.max_load_per_cpu,
            "BATCH work runs only below these limits"
        );
        let batch = Arc::new(Batch::default());
        lock(&batch.job).view = JobView { name: REINDEX.to_owned(), state: "idle".to_owned(), ..JobView::default() };
        let b = Arc::clone(&batch);
        let config = config.clone();
        tracker.spawn(async move {
            let mut wait = FIRST_LOOK;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = LOOK_EVERY;
                b.resolve(&config).await;
                b.look(&config).await;
            }
        });
        batch
    }

    /// The jobs, for `macha status`.
    pub fn views(&self) -> Vec<JobView> {
        vec![lock(&self.job).view.clone()]
    }

    /// The configured hosts' addresses: IP literals as they are, names as they last resolved.
    pub fn addresses(&self) -> BTreeMap<HostName, Vec<IpAddr>> {
        lock(&self.resolved).clone()
    }

    async fn resolve(&self, config: &Config) {
        let mut out = BTreeMap::new();
        for h in &config.hosts {
            let ips = match h.address.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => {
                    let lookup = tokio::net::lookup_host((h.address.as_str(), h.port));
                    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                        _ => Vec::new(),
                    }
                }
            };
            out.insert(h.name.clone(), ips);
        }
        *lock(&self.resolved) = out;
    }

    /// Whether the job runs now (its view updated either way).
    fn due(&self, config: &Config, now: Timestamp, fp: Option<u64>) -> bool {
        let mut job = lock(&self.job);
        job.view.next_check = Some(now.plus(LOOK_EVERY));
        let Some(fp) = fp else {
            job.view.state = "idle".to_owned();
            job.view.deferred = None;
            job.view.last_result =
                Some(format!("{} is not a directory: nothing to index", config.knowledge_flake.display()));
            return false;
        };
        if job.indexed == Some(fp) {
            job.view.state = "idle".to_owned();
            job.view.deferred = None;
            return false;
        }
        let pressure = host_pressure();
        let decision = should_run(now, &pressure, job.last.as_ref(), &config.knowledge_idle);
        if let Decision::Defer(why) = decision {
            tracing::debug!(job = REINDEX, "deferred: {why}");
            job.view.state = "pending".to_owned();
            job.view.deferred = Some(why.to_string());
            return false;
        }
        job.view.state = "running".to_owned();
        job.view.deferred = None;
        true
    }

    async fn look(&self, config: &Config) {
        let now = crate::now();
        let flake = config.knowledge_flake.clone();
        let fp = tokio::task::spawn_blocking(move || fingerprint(&flake)).await.unwrap_or(None);
        if !self.due(config, now, fp) {
            return;
        }
        let Some(fp) = fp else { return };
        let (db, root) = (config.database.clone(), config.knowledge_flake.clone());
        let outcome = run_niced(move || reindex(&db, &root)).await;
        let ended = crate::now();
        let mut job = lock(&self.job);
        job.view.runs += 1;
        job.view.last_run = Some(ended);
        match outcome {
            Ok((summary, cpu_ms)) => {
                tracing::info!(job = REINDEX, cpu_ms, "{summary}");
                job.indexed = Some(fp);
                job.last = Some(LastRun { ended_at: ended, cpu_ms });
                job.view.state = "idle".to_owned();
                job.view.last_result = Some(summary);
            }
            Err(e) => {
                tracing::warn!(job = REINDEX, "failed: {e}");
                job.last = Some(LastRun { ended_at: ended, cpu_ms: 0 });
                job.view.state = "failed".to_owned();
                job.view.last_result = Some(e);
            }
        }
        job.view.next_check = Some(next(ended, job.last.as_ref(), &config.knowledge_idle));
    }
}

fn next(ended: Timestamp, last: Option<&LastRun>, limits: &IdleLimits) -> Timestamp {
    let look = ended.plus(LOOK_EVERY);
    last.map_or(look, |l| macha_core::idle::next_allowed(l, limits).max(look))
}

/// This host's PSI and load now (what cannot be read is `None`).
fn host_pressure() -> HostPressure {
    let proc_root = Path::new("/proc");
    let psi = macha_observe::procfs::read_pressure(proc_root).ok();
    HostPressure {
        cpu_some_avg10: psi.as_ref().map(|p| p.cpu_some.avg10),
        memory_some_avg10: psi.as_ref().map(|p| p.memory_some.avg10),
        load_one: macha_observe::procfs::read_loadavg(proc_root).ok().map(|l| l.one),
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
    }
}

/// Runs `work` on a thread of its own at nice [`NICE`] (a thread's niceness cannot be lowered
/// again without privileges, so the thread ends with the work), and returns its result with the
/// CPU time the thread used.
async fn run_niced<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<(T, u64), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("macha-batch".to_owned()).spawn(move || {
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
            tracing::debug!("cannot lower the batch thread's priority: {e}");
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err("the job panicked".to_owned()));
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let cpu_ms = u64::try_from(t.tv_sec).unwrap_or(0) * 1000 + u64::try_from(t.tv_nsec / 1_000_000).unwrap_or(0);
        let _ = tx.send(result.map(|r| (r, cpu_ms)));
    });
    if let Err(e) = spawned {
        return Err(format!("cannot start the batch thread: {e}"));
    }
    rx.await.unwrap_or_else(|_| Err("the batch thread ended without an answer".to_owned()))
}

/// One re-index of the flake into the daemon's database.
fn reindex(db: &Path, root: &Path) -> Result<String, String> {
    let mut store = macha_store::Store::open(db).map_err(|e| format!("opening {}: {e}", db.display()))?;
    let report = macha_knowledge::index::index_flake(&mut store, root, crate::now().millis(), &mut |_| {})
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "indexed {}: {} files ({} new or changed, {} removed), {} chunks written, {} errors, in {} ms",
        root.display(),
        report.files,
        report.indexed,
        report.removed,
        report.chunks_written,
        report.errors.len(),
        report.elapsed_ms
    ))
}

/// The flake's fingerprint without reading a file: its git HEAD (the ref file's content) and every
/// `.nix` file's path, size and modification time, walked as the index walks (hidden directories
/// and links skipped). `None` when the flake is not a directory.
pub fn fingerprint(root: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    if !root.is_dir() {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let head = std::fs::read_to_string(root.join(".git/HEAD")).unwrap_or_default();
    head.hash(&mut h);
    if let Some(r) = head.trim().strip_prefix("ref: ") {
        std::fs::read_to_string(root.join(".git").join(r)).unwrap_or_default().hash(&mut h);
    }
    let mut files: Vec<(PathBuf, u64, Option<std::time::SystemTime>)> = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if meta.is_dir() && depth < 32 {
                dirs.push((e.path(), depth + 1));
            } else if meta.is_file()
                && e.path().extension().is_some_and(|x| x == "nix")
                && files.len() < FINGERPRINT_FILES_MAX
            {
                files.push((e.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    files.sort();
    files.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_a_file_and_not_without() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("hosts")).unwrap();
        std::fs::write(dir.path().join("flake.nix"), "{ }").unwrap();
        std::fs::write(dir.path().join("hosts/a.nix"), "{ }").unwrap();
        std::fs::write(dir.path().join("README.md"), "x").unwrap();
        let first = fingerprint(dir.path()).unwrap();
        assert_eq!(fingerprint(dir.path()), Some(first));
        std::fs::write(dir.path().join("README.md"), "not a nix file").unwrap();
        assert_eq!(fingerprint(dir.path()), Some(first), "only .nix files count");
        std::fs::write(dir.path().join("hosts/a.nix"), "{ networking.hostName = \"a\"; }").unwrap();
        assert_ne!(fingerprint(dir.path()), Some(first));
        assert_eq!(fingerprint(&dir.path().join("missing")), None);
    }

    #[tokio::test]
    async fn a_run_happens_on_a_niced_thread_and_reports_its_cpu_time() {
        // The thread's own niceness (Linux keeps it per thread).
        let (own, _) = run_niced(|| {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).map_err(|e| e.to_string())
        })
        .await
        .unwrap();
        assert_eq!(own, NICE);
        let (_, cpu_ms) = run_niced(|| {
            let mut x = 0u64;
            for i in 0..30_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            Ok(std::hint::black_box(x))
        })
        .await
        .unwrap();
        assert!(cpu_ms > 0, "the busy loop used CPU time");
    }
}
