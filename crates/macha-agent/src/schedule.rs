//! The request scheduler's queue: priorities, deadlines, cancellation and a concurrency limit per
//! backend. Pure: time is a millisecond parameter; the daemon's scheduler task drives it.
//!
//! Order: INTERACTIVE (chat, ask, discuss) before AUTONOMOUS (incident analysis) before BATCH
//! (summaries, learning); first come, first served within a priority. A request whose deadline
//! passes while it waits is never started: it comes back expired, to be answered with an error.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// A person is waiting: chat, ask, discuss.
    Interactive,
    /// Incident analysis.
    Autonomous,
    /// Summaries, learning.
    Batch,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Autonomous => "autonomous",
            Priority::Batch => "batch",
        }
    }
}

struct Entry<T> {
    id: u64,
    priority: Priority,
    seq: u64,
    deadline_ms: Option<u64>,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        self.priority == o.priority && self.seq == o.seq
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    // BinaryHeap is a max-heap: the "greatest" entry is the most urgent (highest priority, oldest).
    fn cmp(&self, o: &Self) -> Ordering {
        o.priority.cmp(&self.priority).then(o.seq.cmp(&self.seq))
    }
}

/// What [`Queue::next`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// Start this request (a slot is now taken; give it back with [`Queue::finish`]).
    Run { id: u64, priority: Priority, item: T },
    /// This request's deadline passed while it waited.
    Expired { id: u64, item: T },
    /// Nothing to start now (empty, or every slot busy).
    Idle,
}

/// The queue of one backend.
pub struct Queue<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
    running: usize,
    limit: usize,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("queued", &self.heap.len())
            .field("running", &self.running)
            .field("limit", &self.limit)
            .finish()
    }
}

impl<T> Queue<T> {
    /// A queue that runs at most `limit` requests at once (at least one).
    pub fn new(limit: usize) -> Queue<T> {
        Queue { heap: BinaryHeap::new(), seq: 0, running: 0, limit: limit.max(1) }
    }

    pub fn push(&mut self, id: u64, priority: Priority, deadline_ms: Option<u64>, item: T) {
        self.seq += 1;
        self.heap.push(Entry { id, priority, seq: self.seq, deadline_ms, item });
    }

    /// Removes a waiting request. `None` if it is not waiting (running, finished, unknown).
    pub fn cancel(&mut self, id: u64) -> Option<T> {
        let entries = std::mem::take(&mut self.heap).into_vec();
        let mut found = None;
        let mut keep = Vec::with_capacity(entries.len());
        for e in entries {
            if e.id == id && found.is_none() {
                found = Some(e.item);
            } else {
                keep.push(e);
            }
        }
        self.heap = BinaryHeap::from(keep);
        found
    }

    /// The next thing to do at `now_ms`. Expired requests come out first, whatever the slots.
    pub fn next(&mut self, now_ms: u64) -> Next<T> {
        let expired = self.heap.iter().filter(|e| e.deadline_ms.is_some_and(|d| d <= now_ms)).map(|e| e.id).next();
        if let Some(id) = expired
            && let Some(item) = self.cancel(id)
        {
            return Next::Expired { id, item };
        }
        if self.running >= self.limit {
            return Next::Idle;
        }
        match self.heap.pop() {
            Some(e) => {
                self.running += 1;
                Next::Run { id: e.id, priority: e.priority, item: e.item }
            }
            None => Next::Idle,
        }
    }

    /// A started request ended (however): its slot is free again.
    pub fn finish(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    pub fn queued(&self) -> usize {
        self.heap.len()
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// How many waiting requests start before `id` (0 = next), if it is waiting.
    pub fn position(&self, id: u64) -> Option<usize> {
        let me = self.heap.iter().find(|e| e.id == id)?;
        Some(self.heap.iter().filter(|e| (*e).cmp(me) == Ordering::Greater).count())
    }

    /// The earliest deadline among waiting requests (to wake up for it).
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.iter().filter_map(|e| e.deadline_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(n: Next<T>) -> (u64, T) {
        match n {
            Next::Run { id, item, .. } => (id, item),
            Next::Expired { id, .. } => panic!("{id} expired"),
            Next::Idle => panic!("idle"),
        }
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = Queue::new(1);
        q.push(1, Priority::Batch, None, "summary");
        q.push(2, Priority::Autonomous, None, "analysis a");
        q.push(3, Priority::Autonomous, None, "analysis b");
        q.push(4, Priority::Interactive, None, "chat");
        assert_eq!(q.position(4), Some(0));
        assert_eq!(q.position(1), Some(3));
        assert_eq!(run(q.next(0)), (4, "chat"));
        assert_eq!(q.next(0), Next::Idle, "one slot");
        q.finish();
        assert_eq!(run(q.next(0)).0, 2);
        q.finish();
        q.push(5, Priority::Interactive, None, "ask");
        assert_eq!(run(q.next(0)).0, 5, "a new interactive request overtakes queued autonomous work");
        q.finish();
        assert_eq!(run(q.next(0)).0, 3);
        q.finish();
        assert_eq!(run(q.next(0)).0, 1);
        q.finish();
        assert_eq!(q.next(0), Next::Idle);
    }

    #[test]
    fn deadlines_and_cancellation() {
        let mut q = Queue::new(2);
        q.push(1, Priority::Autonomous, Some(100), "a");
        q.push(2, Priority::Autonomous, Some(1_000), "b");
        q.push(3, Priority::Batch, None, "c");
        assert_eq!(q.next_deadline(), Some(100));
        assert_eq!(q.cancel(3), Some("c"));
        assert_eq!(q.cancel(3), None);
        assert_eq!(q.next(500), Next::Expired { id: 1, item: "a" });
        assert_eq!(run(q.next(500)).0, 2);
        assert_eq!(q.running(), 1);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn concurrency_limit() {
        let mut q = Queue::new(2);
        for i in 0..4 {
            q.push(i, Priority::Batch, None, i);
        }
        run(q.next(0));
        run(q.next(0));
        assert_eq!(q.next(0), Next::Idle);
        q.finish();
        assert_eq!(run(q.next(0)).0, 2);
    }
}
