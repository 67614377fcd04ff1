//! BATCH work in the daemon: jobs that run only while this host is idle (docs/knowledge.md,
//! decision 0019). Two jobs, in this order within one run: `reindex-flake` re-indexes
//! `knowledge.flake` into the daemon's own database when the flake changed, so that `macha
//! configs` and the model can search it; `embed` (when `knowledge.embedder` names a model) then
//! embeds the chunks and knowledge entries that have no current vector of that model, so that the
//! searches the daemon answers are hybrid (`crate::hybrid`).
//!
//! A task looks every [`LOOK_EVERY`]: it fingerprints the flake (its git HEAD and every `.nix`
//! file's path, size and modification time; no file is read), and when that changed since the
//! last run — or embedding work may wait: at the start, after a re-index, after a run that stopped
//! early, and every [`EMBED_RECHECK`] for changed knowledge entries — it asks
//! [`macha_core::idle::should_run`] with the host's PSI and load. A run happens on a thread of its
//! own at the lowest CPU priority (nice 19), with its own connection to the database (the index
//! and the vectors are derived data; SQLite serialises their writes with the engine's); the CPU
//! time it used spaces the next run out (the CPU budget). Its memory is bounded too: the daemon's
//! resident memory (`VmRSS` in `/proc/self/status`) may grow by at most `knowledge.idle.memory_max_mib` during
//! a run ([`macha_core::idle::memory_over`]), looked at each embedding batch boundary; a run over
//! it stops there, says why in `macha status`, and the next run goes on where it stopped.
//!
//! The embedding model is loaded by the first embedding run and kept: the daemon's searches embed
//! their queries with it ([`Batch::embed_query`]). A model that cannot be loaded or fails makes
//! the job fail loudly (its state, its result, a warning in the log), and the searches say they
//! are keyword-only because of it. The same task resolves the configured hosts' names for the
//! fleet map's observed relations.

use crate::api::reply::JobView;
use crate::config::{Config, EmbedderConfig};
use crate::embedder::SharedEmbedder;
use crate::hybrid::QueryVector;
use macha_core::HostName;
use macha_core::idle::{Decision, HostPressure, IdleLimits, LastRun, should_run};
use macha_core::time::Timestamp;
use macha_knowledge::embed::{EmbedReport, embed_pending_within};
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
/// The name of the embedding job.
pub const EMBED: &str = "embed";
/// Without a re-index, the embedding job still looks this often for new or changed knowledge
/// entries (people and learnings change them), and retries a model that failed.
pub const EMBED_RECHECK: Duration = Duration::from_secs(600);
/// Files fingerprinted at most (as the index itself: `macha_knowledge::index::FILES_MAX`).
const FINGERPRINT_FILES_MAX: usize = macha_knowledge::index::FILES_MAX;

/// Reads the daemon's resident memory in bytes (`None` when it cannot be read).
type RssReader = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// What the scheduler shares with the loop (status), the socket (the fleet map, searches) and the
/// agent (searches).
pub struct Batch {
    jobs: Mutex<Jobs>,
    resolved: Mutex<BTreeMap<HostName, Vec<IpAddr>>>,
    model: Mutex<Model>,
    rss: RssReader,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("jobs", &self.views()).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Jobs {
    reindex: JobView,
    /// The fingerprint of the flake the last successful run indexed.
    indexed: Option<u64>,
    /// The embedding job; `None` without an embedding model.
    embed: Option<EmbedJob>,
    /// The last run, of either job: the CPU budget is shared.
    last: Option<LastRun>,
}

#[derive(Debug, Default)]
struct EmbedJob {
    view: JobView,
    /// Work may be waiting: at the start, after a re-index, after a run that stopped early.
    pending: bool,
    /// When the job last ran.
    ran_at: Option<Timestamp>,
}

/// The embedding model of the daemon's searches.
enum Model {
    NotConfigured,
    NotLoaded,
    Ready(Arc<SharedEmbedder>),
    Failed(String),
}

/// What one run does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Plan {
    /// Re-index the flake of this fingerprint.
    reindex: Option<u64>,
    embed: bool,
}

/// What one run did.
#[derive(Debug, Default)]
struct Outcome {
    reindex: Option<Result<String, String>>,
    embed: Option<Result<EmbedReport, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The daemon's resident memory, from `VmRSS` in `/proc/self/status` (in KiB there).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

impl Batch {
    /// The jobs' state before the first look.
    pub fn new(config: &Config) -> Batch {
        let idle = |name: &str| JobView { name: name.to_owned(), state: "idle".to_owned(), ..JobView::default() };
        let configured = !matches!(config.knowledge_embedder, EmbedderConfig::None);
        let jobs = Jobs {
            reindex: idle(REINDEX),
            embed: configured.then(|| EmbedJob { view: idle(EMBED), pending: true, ran_at: None }),
            ..Jobs::default()
        };
        Batch {
            jobs: Mutex::new(jobs),
            resolved: Mutex::new(BTreeMap::new()),
            model: Mutex::new(if configured { Model::NotLoaded } else { Model::NotConfigured }),
            rss: Box::new(resident_bytes),
        }
    }

    /// Starts the scheduler task.
    pub fn start(config: &Config, tracker: &TaskTracker, stop: CancellationToken) -> Arc<Batch> {
        let limits = &config.knowledge_idle;
        tracing::debug!(
            max_cpu_pressure = limits.max_cpu_pressure,
            max_memory_pressure = limits.max_memory_pressure,
            max_load_per_cpu = limits.max_load_per_cpu,
            memory_max_mib = limits.memory_max_mib,
            "BATCH work runs only below these limits"
        );
        let batch = Arc::new(Batch::new(config));
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
        let jobs = lock(&self.jobs);
        let mut out = vec![jobs.reindex.clone()];
        out.extend(jobs.embed.as_ref().map(|e| e.view.clone()));
        out
    }

    /// The configured hosts' addresses: IP literals as they are, names as they last resolved.
    pub fn addresses(&self) -> BTreeMap<HostName, Vec<IpAddr>> {
        lock(&self.resolved).clone()
    }

    /// The vector of a search's text by the configured model (embedded off the async threads), or
    /// why the search is keyword-only: no model configured, not loaded yet, failed.
    pub async fn embed_query(&self, text: &str) -> QueryVector {
        let embedder = match &*lock(&self.model) {
            Model::NotConfigured => return QueryVector::no_embedder(),
            Model::NotLoaded => {
                return QueryVector::Unavailable("the embedding model is not loaded yet".to_owned());
            }
            Model::Failed(why) => return QueryVector::Unavailable(format!("the embedder failed: {why}")),
            Model::Ready(e) => Arc::clone(e),
        };
        let text = text.to_owned();
        let embedded = tokio::task::spawn_blocking(move || {
            let v = embedder.embed(&[text]);
            (embedder.model_id().to_owned(), embedder.dimension(), v)
        })
        .await;
        match embedded {
            Ok((model, dim, Ok(mut v))) if v.len() == 1 && v[0].len() == dim => match u32::try_from(dim) {
                Ok(dimension) => QueryVector::Ready { model, dimension, vector: v.remove(0) },
                Err(_) => QueryVector::Unavailable(format!("the embedding dimension {dim} is not usable")),
            },
            Ok((_, _, Err(e))) => QueryVector::Unavailable(format!("the query could not be embedded: {e}")),
            Ok(_) => QueryVector::Unavailable("the embedder returned no usable vector for the query".to_owned()),
            Err(e) => QueryVector::Unavailable(format!("the query could not be embedded: {e}")),
        }
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

    /// Which jobs have work: the fingerprint of a flake to re-index, and whether embedding may
    /// have some (their views updated).
    fn wanted(&self, config: &Config, now: Timestamp, fp: Option<u64>) -> (Option<u64>, bool) {
        let mut guard = lock(&self.jobs);
        let jobs = &mut *guard;
        let look = Some(now.plus(LOOK_EVERY));
        jobs.reindex.next_check = look;
        let reindex = match fp {
            None => {
                jobs.reindex.state = "idle".to_owned();
                jobs.reindex.deferred = None;
                jobs.reindex.last_result =
                    Some(format!("{} is not a directory: nothing to index", config.knowledge_flake.display()));
                None
            }
            Some(fp) if jobs.indexed == Some(fp) => {
                jobs.reindex.state = "idle".to_owned();
                jobs.reindex.deferred = None;
                None
            }
            Some(fp) => Some(fp),
        };
        let embed = match &mut jobs.embed {
            None => false,
            Some(e) => {
                e.view.next_check = look;
                let recheck = e.ran_at.is_none_or(|t| now >= t.plus(EMBED_RECHECK));
                let due = e.pending || reindex.is_some() || recheck;
                if !due {
                    e.view.deferred = None;
                    if e.view.state != "failed" {
                        e.view.state = "idle".to_owned();
                    }
                }
                due
            }
        };
        (reindex, embed)
    }

    /// Which jobs run now, if any (their views updated either way).
    fn plan(&self, config: &Config, now: Timestamp, fp: Option<u64>) -> Option<Plan> {
        let (reindex, embed) = self.wanted(config, now, fp);
        if reindex.is_none() && !embed {
            return None;
        }
        let pressure = host_pressure();
        let mut jobs = lock(&self.jobs);
        let decision = should_run(now, &pressure, jobs.last.as_ref(), &config.knowledge_idle);
        let (state, deferred) = match &decision {
            Decision::Defer(why) => {
                tracing::debug!("BATCH work deferred: {why}");
                ("pending", Some(why.to_string()))
            }
            Decision::Run => ("running", None),
        };
        if reindex.is_some() {
            jobs.reindex.state = state.to_owned();
            jobs.reindex.deferred.clone_from(&deferred);
        }
        if let Some(e) = jobs.embed.as_mut().filter(|_| embed) {
            // Embedding waits for the re-index of the same run.
            e.view.state = if reindex.is_some() { "pending" } else { state }.to_owned();
            e.view.deferred = deferred;
        }
        (decision == Decision::Run).then_some(Plan { reindex, embed })
    }

    async fn look(self: &Arc<Self>, config: &Config) {
        let now = crate::now();
        let flake = config.knowledge_flake.clone();
        let fp = tokio::task::spawn_blocking(move || fingerprint(&flake)).await.unwrap_or(None);
        if let Some(plan) = self.plan(config, now, fp) {
            self.run_now(config, plan).await;
        }
    }

    /// Runs `plan` on a thread of its own at nice [`NICE`] and records what it did.
    async fn run_now(self: &Arc<Self>, config: &Config, plan: Plan) {
        let (this, cfg) = (Arc::clone(self), config.clone());
        // A remote embedding model's client runs on the daemon's runtime.
        let runtime = tokio::runtime::Handle::current();
        let outcome = run_niced(move || {
            let _entered = runtime.enter();
            Ok(this.run(&cfg, plan))
        })
        .await;
        self.finish(config, plan, outcome);
    }

    /// One run, on the batch thread.
    fn run(&self, config: &Config, plan: Plan) -> Outcome {
        let base = (self.rss)();
        let mut out = Outcome::default();
        if plan.reindex.is_some() {
            out.reindex = Some(reindex(&config.database, &config.knowledge_flake));
        }
        if plan.embed {
            if let Some(e) = &mut lock(&self.jobs).embed {
                e.view.state = "running".to_owned();
            }
            out.embed = Some(self.embed(config, base));
        }
        out
    }

    /// The loaded model, or the configured one loaded now (its memory, kept for the searches, is
    /// not counted to the run: `base` moves by it).
    fn embedder(&self, config: &Config, base: &mut Option<u64>) -> Result<Arc<SharedEmbedder>, String> {
        if let Model::Ready(e) = &*lock(&self.model) {
            return Ok(Arc::clone(e));
        }
        let before = (self.rss)();
        let loaded = crate::embedder::from_config(config)
            .map_err(|e| format!("{e:#}"))
            .and_then(|e| e.ok_or_else(|| "no embedding model is configured".to_owned()));
        match loaded {
            Ok(e) => {
                let e: Arc<SharedEmbedder> = Arc::from(e);
                if let (Some(b), Some(before), Some(after)) = (base.as_mut(), before, (self.rss)()) {
                    *b = b.saturating_add(after.saturating_sub(before));
                }
                tracing::info!(job = EMBED, model = e.model_id(), dimension = e.dimension(), "embedding model loaded");
                *lock(&self.model) = Model::Ready(Arc::clone(&e));
                Ok(e)
            }
            Err(why) => {
                *lock(&self.model) = Model::Failed(why.clone());
                Err(why)
            }
        }
    }

    /// The embedding job: what has no current vector of the model, until done or over the
    /// memory budget.
    fn embed(&self, config: &Config, base: Option<u64>) -> Result<EmbedReport, String> {
        let mut base = base;
        let embedder = self.embedder(config, &mut base)?;
        let db = &config.database;
        let mut store = macha_store::Store::open(db).map_err(|e| format!("opening {}: {e}", db.display()))?;
        let model = embedder.model_id().to_owned();
        let mut progress = |done: usize, total: usize| {
            if let Some(e) = &mut lock(&self.jobs).embed {
                e.view.progress = Some(format!("embedding {done}/{total} with {model}"));
            }
        };
        let limits = config.knowledge_idle;
        let mut stop = || {
            let over = macha_core::idle::memory_over(base?, (self.rss)()?, &limits)?;
            Some(format!("{over} (knowledge.idle.memory_max_mib)"))
        };
        embed_pending_within(&mut store, embedder.as_ref(), &mut progress, &mut stop).map_err(|e| {
            let why = e.to_string();
            *lock(&self.model) = Model::Failed(why.clone());
            why
        })
    }

    /// Records a run's outcome in the jobs' views and the log.
    fn finish(&self, config: &Config, plan: Plan, outcome: Result<(Outcome, u64), String>) {
        let ended = crate::now();
        let mut guard = lock(&self.jobs);
        let jobs = &mut *guard;
        let (out, cpu_ms) = match outcome {
            Ok(o) => o,
            Err(e) => {
                // The thread could not start or the run panicked: every job it had is failed.
                let failed = Outcome {
                    reindex: plan.reindex.map(|_| Err(e.clone())),
                    embed: plan.embed.then(|| Err(e.clone())),
                };
                if plan.embed {
                    *lock(&self.model) = Model::Failed(e);
                }
                (failed, 0)
            }
        };
        jobs.last = Some(LastRun { ended_at: ended, cpu_ms });
        let next = Some(next(ended, jobs.last.as_ref(), &config.knowledge_idle));
        if let Some(result) = out.reindex {
            let view = &mut jobs.reindex;
            view.runs += 1;
            view.last_run = Some(ended);
            match result {
                Ok(summary) => {
                    tracing::info!(job = REINDEX, cpu_ms, "{summary}");
                    jobs.indexed = plan.reindex;
                    view.state = "idle".to_owned();
                    view.last_result = Some(summary);
                }
                Err(e) => {
                    tracing::warn!(job = REINDEX, "failed: {e}");
                    view.state = "failed".to_owned();
                    view.last_result = Some(e);
                }
            }
        }
        jobs.reindex.next_check = next;
        if let Some(job) = &mut jobs.embed {
            job.view.next_check = next;
            if let Some(result) = out.embed {
                job.view.runs += 1;
                job.view.last_run = Some(ended);
                job.view.progress = None;
                job.ran_at = Some(ended);
                match result {
                    Ok(r) => {
                        let summary = embed_summary(&r);
                        tracing::info!(job = EMBED, cpu_ms, "{summary}");
                        job.pending = r.stopped.is_some();
                        job.view.state = if job.pending { "pending" } else { "idle" }.to_owned();
                        job.view.last_result = Some(summary);
                    }
                    Err(e) => {
                        tracing::warn!(job = EMBED, "failed: {e}; searches are keyword-only");
                        job.pending = false;
                        job.view.state = "failed".to_owned();
                        job.view.last_result = Some(format!("failed: {e}"));
                    }
                }
            }
        }
    }
}

/// What an embedding run did, in one line.
fn embed_summary(r: &EmbedReport) -> String {
    let mut s = format!(
        "embedded {} chunks and {} entries with {} ({} dimensions), {} unchanged, {} dropped, in {} ms",
        r.chunks_embedded, r.entries_embedded, r.model, r.dimension, r.unchanged, r.dropped, r.elapsed_ms
    );
    if let Some(why) = &r.stopped {
        s.push_str(&format!("; stopped at a batch boundary: {why}; {} left for the next run", r.left));
    }
    s
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

    impl Batch {
        /// A batch whose model is `embedder` (already loaded) and whose memory is read by `rss`.
        fn with(config: &Config, embedder: Option<Arc<SharedEmbedder>>, rss: RssReader) -> Batch {
            let b = Batch { rss, ..Batch::new(config) };
            if let Some(e) = embedder {
                *lock(&b.model) = Model::Ready(e);
            }
            b
        }
    }

    /// Embeds every text as its length; keeps `keep` bytes of touched memory per call.
    struct Lengths {
        keep: usize,
        kept: Mutex<Vec<Vec<u8>>>,
    }

    impl macha_knowledge::embed::Embedder for Lengths {
        fn model_id(&self) -> &str {
            "test:lengths"
        }
        fn dimension(&self) -> usize {
            2
        }
        fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, macha_knowledge::embed::EmbedError> {
            if self.keep > 0 {
                lock(&self.kept).push(vec![7u8; self.keep]);
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
    }

    fn lengths(keep: usize) -> Arc<SharedEmbedder> {
        Arc::new(Lengths { keep, kept: Mutex::new(Vec::new()) })
    }

    fn config(dir: &Path, extra: &str) -> Config {
        let flake = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fleet-flake");
        let text = format!(
            "[paths]\nstate_dir = \"{d}\"\ndatabase = \"{d}/m.db\"\nsocket = \"{d}/m.sock\"\n\
             [knowledge]\nflake = \"{f}\"\nembedder = \"ollama\"\nembed_model = \"m\"\n{extra}",
            d = dir.display(),
            f = flake.canonicalize().unwrap().display()
        );
        Config::parse(&text, crate::config::Scope::User).unwrap().1
    }

    fn embed_view(b: &Batch) -> JobView {
        b.views().into_iter().find(|v| v.name == EMBED).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_over_its_memory_budget_stops_at_a_batch_boundary_and_the_next_goes_on() {
        use std::sync::atomic::{AtomicU64, Ordering};
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "[knowledge.idle]\nmemory_max_mib = 2\n");
        // Each reading of the memory finds `step` more than the one before.
        let (read, step) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(MIB)));
        let (r, st) = (Arc::clone(&read), Arc::clone(&step));
        let rss: RssReader = Box::new(move || Some(r.fetch_add(st.load(Ordering::SeqCst), Ordering::SeqCst)));
        let b = Arc::new(Batch::with(&config, Some(lengths(0)), rss));
        assert_eq!(embed_view(&b).state, "idle");

        // Re-index, then embed: the memory grows 1 MiB per batch, the budget is 2 MiB.
        b.run_now(&config, Plan { reindex: Some(1), embed: true }).await;
        let store = macha_store::Store::open(&config.database).unwrap();
        let chunks = store.embed_items(macha_store::EmbedKind::Chunk).unwrap().len();
        assert!(chunks > 100, "the run indexed the flake first: {chunks}");
        let view = embed_view(&b);
        assert_eq!(view.state, "pending", "{view:?}");
        let result = view.last_result.unwrap();
        assert!(
            result.contains("embedded 48 chunks")
                && result.contains(
                    "stopped at a batch boundary: memory grew by 3.0 MiB during the run, over its budget of 2.0 MiB"
                )
                && result.contains(&format!("{} left for the next run", chunks - 48)),
            "{result}"
        );
        assert_eq!(store.stored_vectors(macha_store::EmbedKind::Chunk).unwrap().len(), 48, "what was done is kept");
        // The searches are hybrid already, over what has vectors.
        let query = b.embed_query("nginx").await;
        assert!(matches!(&query, crate::hybrid::QueryVector::Ready { model, .. } if model == "test:lengths"));
        let v = crate::hybrid::vectors(&store, macha_store::EmbedKind::Chunk, &query);
        assert_eq!(crate::hybrid::describe(&v), "hybrid (test:lengths)");

        // The next look wants the rest, and the next run (memory flat) embeds only that.
        let now = crate::now();
        let later = Timestamp(now.millis() + 3_600_000);
        lock(&b.jobs).indexed = Some(1);
        assert_eq!(b.wanted(&config, later, Some(1)), (None, true));
        step.store(0, Ordering::SeqCst);
        b.run_now(&config, Plan { reindex: None, embed: true }).await;
        let view = embed_view(&b);
        assert_eq!((view.state.as_str(), view.runs), ("idle", 2), "{view:?}");
        let result = view.last_result.unwrap();
        assert!(
            result.contains(&format!("embedded {} chunks", chunks - 48)) && result.contains("48 unchanged"),
            "{result}"
        );
        assert!(!result.contains("stopped"), "{result}");
        assert_eq!(store.stored_vectors(macha_store::EmbedKind::Chunk).unwrap().len(), chunks);
        // Nothing is pending now until the periodic look.
        assert_eq!(b.wanted(&config, crate::now(), Some(1)), (None, false));
        assert_eq!(b.wanted(&config, Timestamp(crate::now().millis() + 601_000), Some(1)), (None, true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_real_resident_memory_stops_a_run_with_a_tiny_budget() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "[knowledge.idle]\nmemory_max_mib = 1\n");
        // The embedder keeps 16 MiB of touched memory per batch: the process's resident memory
        // grows past the 1 MiB budget with the first batch.
        let b = Arc::new(Batch::with(&config, Some(lengths(16 * 1024 * 1024)), Box::new(resident_bytes)));
        assert!(resident_bytes().is_some_and(|r| r > 1024 * 1024));
        b.run_now(&config, Plan { reindex: Some(1), embed: true }).await;
        let view = embed_view(&b);
        let result = view.last_result.unwrap_or_default();
        assert_eq!(view.state, "pending", "{result}");
        assert!(result.contains("embedded 16 chunks") && result.contains("over its budget of 1.0 MiB"), "{result}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_that_cannot_be_loaded_fails_the_job_and_searches_say_keyword_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "[llm]\nurl = \"http://127.0.0.1:9\"\ntimeout = \"2s\"\n");
        let b = Arc::new(Batch::new(&config));
        let before = b.embed_query("nginx").await;
        assert_eq!(before, crate::hybrid::QueryVector::Unavailable("the embedding model is not loaded yet".into()));
        b.run_now(&config, Plan { reindex: None, embed: true }).await;
        let view = embed_view(&b);
        assert_eq!((view.state.as_str(), view.runs), ("failed", 1), "{view:?}");
        let result = view.last_result.unwrap_or_default();
        assert!(result.starts_with("failed: ") && result.contains("127.0.0.1:9"), "{result}");
        let crate::hybrid::QueryVector::Unavailable(why) = b.embed_query("nginx").await else {
            panic!("a failed model embedded a query")
        };
        assert!(why.starts_with("the embedder failed: ") && why.contains("127.0.0.1:9"), "{why}");
        // A failed job stays failed (not idle) until it runs again, and it retries later.
        assert_eq!(b.wanted(&config, crate::now(), None), (None, false));
        assert_eq!(embed_view(&b).state, "failed");
        assert_eq!(b.wanted(&config, Timestamp(crate::now().millis() + 601_000), None), (None, true));
        // Without an embedder there is no embedding job, and searches say so as the CLI does.
        let none = Config::parse("", crate::config::Scope::User).unwrap().1;
        let plain = Batch::new(&none);
        assert_eq!(plain.views().len(), 1);
        assert_eq!(plain.embed_query("x").await, crate::hybrid::QueryVector::no_embedder());
    }
}
