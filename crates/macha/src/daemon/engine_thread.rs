//! The engine on a thread of its own: it owns the engine (and so the database) and runs the jobs
//! the event loop and its tasks send it, one at a time, in order.
//!
//! Nothing on the event loop ever waits for SQLite: a store write waits for `fsync`
//! (`synchronous=FULL`), so every engine use is a job posted here. A job that panics is caught and
//! logged; the engine goes on with the next (the store's transactions keep it consistent), and
//! whoever awaited that job's answer gets an error instead. The thread enters the runtime, so a job
//! may spawn tasks (executions, observations) but never awaits one.

use crate::engine::Engine;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A job that takes longer than this is logged with what it was.
const SLOW_JOB: Duration = Duration::from_millis(500);

type Job = Box<dyn FnOnce(&mut Engine) + Send>;

enum Msg {
    Job { what: &'static str, job: Job },
    Stop,
}

/// A handle on the engine thread: cheap to clone, usable from the loop and from any task.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

/// The engine thread ended (the daemon is stopping), or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the engine did not answer ({0})")]
pub struct EngineGone(&'static str);

impl EngineHandle {
    /// Starts the thread. It runs until [`EngineHandle::stop`], then hands the engine back. After
    /// every job it notifies `wake` (the notification task, which follows the audit trail).
    pub fn start(
        mut engine: Engine,
        runtime: tokio::runtime::Handle,
        wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    ) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<Engine>)> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let thread = std::thread::Builder::new().name("macha-engine".into()).spawn(move || {
            let _runtime = runtime.enter();
            while let Some(msg) = rx.blocking_recv() {
                let (what, job) = match msg {
                    Msg::Job { what, job } => (what, job),
                    Msg::Stop => break,
                };
                let started = Instant::now();
                if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut engine))) {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(job = what, "an engine job panicked: {message}; the engine goes on");
                }
                if let Some(w) = &wake {
                    w.notify_one();
                }
                let took = started.elapsed();
                if took > SLOW_JOB {
                    tracing::warn!(job = what, millis = took.as_millis(), "a slow engine job");
                }
            }
            engine
        })?;
        Ok((EngineHandle { tx }, thread))
    }

    /// Runs `job` on the engine thread without waiting for it.
    pub fn post(&self, what: &'static str, job: impl FnOnce(&mut Engine) + Send + 'static) {
        if self.tx.send(Msg::Job { what, job: Box::new(job) }).is_err() {
            tracing::debug!(job = what, "the engine thread has stopped; a job was dropped");
        }
    }

    /// Runs `job` on the engine thread and waits (as a task, never on the loop) for its answer.
    pub async fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        job: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Result<T, EngineGone> {
        let (reply, answer) = oneshot::channel();
        self.post(what, move |engine| {
            let _ = reply.send(job(engine));
        });
        answer.await.map_err(|_| EngineGone(what))
    }

    /// Asks the thread to end after the jobs already sent.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
