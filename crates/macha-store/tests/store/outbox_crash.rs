//! The outbox under kill -9: a child process enqueues, re-enqueues (idempotently), claims and
//! "delivers" notifications as fast as it can and is killed with SIGKILL at a random instant,
//! round after round, on one database file. Its receiver is a file the child appends each
//! message id to before marking the row sent, as a real receiver would have it before the answer
//! came back. After every kill the parent reopens the database, puts `sending` rows back, and
//! checks: nothing enqueued is lost, nothing is there twice, every row marked sent was received,
//! no row is left in `sending`, and the rows the child did not live to report are at most one.
//!
//! Knobs: `MACHA_OUTBOX_CRASH_SEED` and `MACHA_OUTBOX_CRASH_ROUNDS` (default 40).

use macha_core::Timestamp;
use macha_store::{NewOutboxMessage, OutboxFilter, OutboxState, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_DB: &str = "MACHA_OUTBOX_CRASH_CHILD_DB";
const CHILD_SEED: &str = "MACHA_OUTBOX_CRASH_CHILD_SEED";
const CHILD_ROUND: &str = "MACHA_OUTBOX_CRASH_CHILD_ROUND";
const CHANNELS: [&str; 2] = ["gotify", "ntfy"];

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn receiver_path(db: &Path) -> std::path::PathBuf {
    db.with_extension("received")
}

#[test]
fn outbox_child_process_entry_point() {
    let Ok(db) = std::env::var(CHILD_DB) else { return };
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let db = Path::new(&db);
    let mut rng = Rng(seed);
    let mut store = Store::open(db).unwrap();
    store.outbox_recover().unwrap();
    let mut receiver = std::fs::OpenOptions::new().create(true).append(true).open(receiver_path(db)).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut mine: Vec<(String, String)> = Vec::new();
    let start = std::time::Instant::now();
    for n in 0u64.. {
        // A child the parent failed to kill must not run forever.
        assert!(start.elapsed() < Duration::from_secs(60), "not killed");
        let now = Timestamp(1_700_000_000_000 + (round * 1_000_000 + n) as i64);
        match rng.below(5) {
            0..=1 => {
                let channel = CHANNELS[rng.below(2) as usize].to_owned();
                let id = format!("m-{round}-{n}");
                let msg = NewOutboxMessage {
                    message_id: id.clone(),
                    channel: channel.clone(),
                    created: now,
                    payload: serde_json::json!({"title": id, "host": "web1"}),
                };
                let e = store.outbox_enqueue(&msg).unwrap();
                assert!(e.new);
                writeln!(out, "enq {channel} {id}").unwrap();
                mine.push((channel, id));
            }
            2 => {
                if mine.is_empty() {
                    continue;
                }
                let (channel, id) = mine[rng.below(mine.len() as u64) as usize].clone();
                let msg = NewOutboxMessage {
                    message_id: id,
                    channel,
                    created: now,
                    payload: serde_json::json!({"again": true}),
                };
                assert!(!store.outbox_enqueue(&msg).unwrap().new, "a second enqueue is a no-op");
            }
            _ => {
                let due = store.outbox_due(Timestamp(i64::MAX), 3).unwrap();
                let Some(row) = due.first() else { continue };
                store.outbox_mark_sending(row.id).unwrap();
                writeln!(receiver, "{} {}", row.channel, row.message_id).unwrap();
                if rng.below(4) == 0 {
                    store.outbox_mark_retry(row.id, now, "503 Service Unavailable").unwrap();
                } else {
                    store.outbox_mark_sent(row.id, now).unwrap();
                    writeln!(out, "sent {} {}", row.channel, row.message_id).unwrap();
                }
            }
        }
        out.flush().unwrap();
    }
}

fn run_child(db: &Path, seed: u64, round: u64, rng: &mut Rng) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["outbox_crash::outbox_child_process_entry_point", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, db)
        .env(CHILD_SEED, seed.to_string())
        .env(CHILD_ROUND, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints "test <name> ... " on the line the child's first output continues.
            if line.ends_with("ready") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    // Wait for the child to open the database, then let it work for 5 to 80 ms.
    let _ = rx.recv_timeout(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(5 + rng.below(75)));
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn kill_nine_loses_and_duplicates_no_notification() {
    let seed = std::env::var("MACHA_OUTBOX_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x6f75_7462_6f78);
    let rounds: u64 = std::env::var("MACHA_OUTBOX_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    println!("outbox kill -9 test: seed {seed}, {rounds} rounds");
    let (_dir, db) = crate::temp_db();
    let mut rng = Rng(seed);
    let mut enqueued: BTreeSet<(String, String)> = BTreeSet::new();
    let mut sent: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unreported = 0;
    for round in 0..rounds {
        let lines = run_child(&db, rng.next(), round, &mut rng);
        for line in &lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["enq", ch, id] => assert!(enqueued.insert(((*ch).to_owned(), (*id).to_owned())), "{line}"),
                ["sent", ch, id] => {
                    sent.insert(((*ch).to_owned(), (*id).to_owned()));
                }
                _ => {}
            }
        }
        let mut store = Store::open(&db).unwrap();
        store.outbox_recover().unwrap();
        let rows = store.outbox_log(&OutboxFilter { limit: 1_000_000, ..OutboxFilter::default() }).unwrap();
        let mut by_key: BTreeMap<(String, String), OutboxState> = BTreeMap::new();
        for r in &rows {
            assert_ne!(r.state, OutboxState::Sending, "recovered rows are queued again");
            let dup = by_key.insert((r.channel.clone(), r.message_id.clone()), r.state);
            assert!(dup.is_none(), "{} {} is in the outbox twice", r.channel, r.message_id);
        }
        // Nothing reported is lost.
        for key in &enqueued {
            assert!(by_key.contains_key(key), "round {round}: {key:?} was enqueued and is gone");
        }
        for key in &sent {
            assert_eq!(by_key.get(key), Some(&OutboxState::Sent), "round {round}: {key:?} was marked sent");
        }
        // At most the one commit the child made after its last line.
        let extra: Vec<_> = by_key.keys().filter(|k| !enqueued.contains(*k)).cloned().collect();
        assert!(extra.len() <= 1, "round {round}: unreported rows {extra:?}");
        for key in extra {
            unreported += 1;
            enqueued.insert(key);
        }
        // Every row marked sent reached the receiver (before it was marked).
        let received: BTreeSet<(String, String)> = std::fs::read_to_string(receiver_path(&db))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(c, m)| (c.to_owned(), m.to_owned())))
            .collect();
        for (key, state) in &by_key {
            if *state == OutboxState::Sent {
                assert!(received.contains(key), "{key:?} is marked sent but never reached the receiver");
            }
        }
    }
    let store = Store::open(&db).unwrap();
    let pending = store.outbox_pending_count().unwrap();
    println!(
        "{rounds} rounds: {} messages enqueued ({unreported} committed after the last report), {} reported sent, {pending} pending",
        enqueued.len(),
        sent.len()
    );
    assert!(enqueued.len() as u64 > rounds, "the children did work");
}
