//! Configuration search figures on the sample fleet flake (`tests/fixtures/fleet-flake`): a full
//! index into a fresh database file, an incremental re-index after one file changes, keyword
//! query latency over the evaluation set, and the process's peak RSS. Prints a table
//! (docs/performance.md, "Configuration search").
//!
//! With the `embed-local` feature and `MACHA_EMBED_MODEL_DIR` (the all-MiniLM-L6-v2 files), also
//! the embedding figures: model load, embedding throughput (texts per second), the full index
//! with embeddings, a re-index with embeddings after one change, the brute-force cosine scan,
//! and hybrid query latency. The peak RSS is then that of the whole run, model included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use macha_knowledge::index::index_flake;
use macha_knowledge::search::{SearchRequest, search};
use macha_store::Store;
use std::path::Path;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
const QUERY_ROUNDS: usize = 20;

fn main() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fleet-flake");
    let flake = tempfile::tempdir().unwrap();
    copy_dir(&fixture, flake.path());
    let dir = tempfile::tempdir().unwrap();

    let mut full = Vec::new();
    let mut incremental = Vec::new();
    let mut files = 0;
    let mut chunks = 0;
    for round in 0..ROUNDS {
        let db = dir.path().join(format!("bench-{round}.db"));
        let mut store = Store::open(&db).unwrap();
        let t = Instant::now();
        let r = index_flake(&mut store, flake.path(), 1, &mut |_| {}).unwrap();
        full.push(t.elapsed());
        files = r.files;
        chunks = r.chunks_written;
        let target = flake.path().join("apps/redis.nix");
        let text = std::fs::read_to_string(&target).unwrap();
        std::fs::write(&target, format!("{text}\n# round {round}\n")).unwrap();
        let t = Instant::now();
        let r = index_flake(&mut store, flake.path(), 2, &mut |_| {}).unwrap();
        incremental.push(t.elapsed());
        assert_eq!(r.indexed, 1);
    }

    let store = Store::open(dir.path().join("bench-0.db")).unwrap();
    let queries: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("../fleet-flake-queries.json")).unwrap()).unwrap();
    let mut latencies = Vec::new();
    for _ in 0..QUERY_ROUNDS {
        for q in &queries {
            let req =
                SearchRequest { query: q["query"].as_str().unwrap().to_owned(), host: None, category: None, limit: 10 };
            let t = Instant::now();
            let r = search(&store, &req, None).unwrap();
            latencies.push(t.elapsed());
            assert!(!r.hits.is_empty());
        }
    }
    latencies.sort();
    full.sort();
    incremental.sort();

    println!("configuration search, sample flake: {files} .nix files, {chunks} chunks");
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12}", format!("full index, fresh database (median of {ROUNDS})"), ms(full[ROUNDS / 2]));
    println!("{:<44} {:>12}", "full index, slowest", ms(full[ROUNDS - 1]));
    println!("{:<44} {:>12}", format!("re-index after one change (median of {ROUNDS})"), ms(incremental[ROUNDS / 2]));
    println!(
        "{:<44} {:>12}",
        format!("keyword query p50 ({} queries)", latencies.len()),
        us(percentile(&latencies, 50))
    );
    println!("{:<44} {:>12}", "keyword query p99", us(percentile(&latencies, 99)));
    #[cfg(feature = "embed-local")]
    if let Some(model) = std::env::var_os("MACHA_EMBED_MODEL_DIR") {
        embeddings(Path::new(&model), flake.path(), dir.path(), &queries);
    }
    println!("{:<44} {:>12}", "peak RSS of this process", peak_rss());
}

#[cfg(feature = "embed-local")]
fn embeddings(model: &Path, flake: &Path, dir: &Path, queries: &[serde_json::Value]) {
    use macha_knowledge::embed::{StoreVectors, embed_pending, nearest};
    use macha_knowledge::search::VectorSearch;
    use macha_store::EmbedKind;
    let t = Instant::now();
    let embedder = macha_knowledge::local::LocalEmbedder::load(model).unwrap();
    let load = t.elapsed();
    let db = dir.join("bench-embed.db");
    let mut store = Store::open(&db).unwrap();
    let t = Instant::now();
    index_flake(&mut store, flake, 1, &mut |_| {}).unwrap();
    let r = embed_pending(&mut store, &embedder, &mut |_, _| {}).unwrap();
    let full = t.elapsed();
    let embedded = r.chunks_embedded + r.entries_embedded;
    let embed_secs = Duration::from_millis(r.elapsed_ms).as_secs_f64();
    let target = flake.join("apps/redis.nix");
    let text = std::fs::read_to_string(&target).unwrap();
    std::fs::write(&target, format!("{text}\n# embedding round\n")).unwrap();
    let t = Instant::now();
    index_flake(&mut store, flake, 2, &mut |_| {}).unwrap();
    let r2 = embed_pending(&mut store, &embedder, &mut |_, _| {}).unwrap();
    let incremental = t.elapsed();
    // The scan alone: one query vector against every stored chunk vector.
    let stored = store.embeddings(EmbedKind::Chunk, embedder_id(&embedder), 384).unwrap();
    let q = stored[0].1.clone();
    let mut scans = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        std::hint::black_box(nearest(&q, &stored, 30));
        scans.push(t.elapsed());
    }
    scans.sort();
    let vectors = StoreVectors::new(&store, &embedder, EmbedKind::Chunk);
    let mut latencies = Vec::new();
    for _ in 0..3 {
        for q in queries {
            let req =
                SearchRequest { query: q["query"].as_str().unwrap().to_owned(), host: None, category: None, limit: 10 };
            let t = Instant::now();
            let r = search(&store, &req, Some(&vectors as &dyn VectorSearch)).unwrap();
            latencies.push(t.elapsed());
            assert!(!r.hits.is_empty());
        }
    }
    latencies.sort();
    println!("{:<44} {:>12}", format!("embedding model load ({})", embedder_id(&embedder)), ms(load));
    println!(
        "{:<44} {:>12}",
        format!("embedding throughput ({embedded} texts)"),
        format!("{:.0} docs/s", embedded as f64 / embed_secs)
    );
    println!("{:<44} {:>12}", "full index with embeddings, fresh database", ms(full));
    println!(
        "{:<44} {:>12}",
        format!("re-index + embed after one change ({} texts)", r2.chunks_embedded),
        ms(incremental)
    );
    println!("{:<44} {:>12}", format!("cosine scan of {} vectors (p50)", stored.len()), us(percentile(&scans, 50)));
    println!(
        "{:<44} {:>12}",
        format!("hybrid query p50 ({} queries)", latencies.len()),
        ms(percentile(&latencies, 50))
    );
    println!("{:<44} {:>12}", "hybrid query p99", ms(percentile(&latencies, 99)));
}

#[cfg(feature = "embed-local")]
fn embedder_id(e: &macha_knowledge::local::LocalEmbedder) -> &str {
    macha_knowledge::embed::Embedder::model_id(e)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l["VmHWM:".len()..].trim().to_owned()))
        .unwrap_or_else(|| "unknown".into())
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
