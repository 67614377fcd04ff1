//! Embeddings and hybrid search with a deterministic embedder (hashed words, a few synonyms):
//! only new or changed items are embedded, a new model or dimension re-embeds everything and
//! never mixes, and hybrid search finds a chunk that shares no word with the query.

use macha_knowledge::embed::{EmbedError, Embedder, StoreVectors, embed_pending};
use macha_knowledge::index::index_flake;
use macha_knowledge::search::{Retrieval, SearchRequest, search, search_entries};
use macha_store::{EmbedKind, Store};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Words hashed into `dim` buckets; "webserver" counts as "nginx" (a synonym no FTS5 query knows).
struct Fake {
    id: String,
    dim: usize,
    texts: Cell<usize>,
}

impl Fake {
    fn new(id: &str, dim: usize) -> Fake {
        Fake { id: id.to_owned(), dim, texts: Cell::new(0) }
    }
}

impl Embedder for Fake {
    fn model_id(&self) -> &str {
        &self.id
    }
    fn dimension(&self) -> usize {
        self.dim
    }
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.texts.set(self.texts.get() + texts.len());
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; self.dim];
                for w in t.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                    let w = w.to_lowercase();
                    let w = if w == "webserver" { "nginx".to_owned() } else { w };
                    let h =
                        w.bytes().fold(1469598103934665603u64, |h, b| (h ^ u64::from(b)).wrapping_mul(1099511628211));
                    v[usize::try_from(h % self.dim as u64).unwrap()] += 1.0;
                }
                v
            })
            .collect())
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fleet-flake")
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn count(store: &Store, kind: EmbedKind) -> usize {
    store.stored_vectors(kind).unwrap().len()
}

#[test]
fn only_new_and_changed_items_are_embedded() {
    let flake = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), flake.path());
    let (_dir, mut store) = crate::store();
    index_flake(&mut store, flake.path(), 1_000, &mut |_| {}).unwrap();
    macha_knowledge::kb::seed(&mut store, macha_core::Timestamp::from_millis(1_000)).unwrap();
    let chunks = store.embed_items(EmbedKind::Chunk).unwrap().len();
    let entries = store.embed_items(EmbedKind::Entry).unwrap().len();
    assert!(chunks > 300 && entries >= 40, "{chunks} {entries}");

    let fake = Fake::new("fake-a", 64);
    let mut calls = Vec::new();
    let first = embed_pending(&mut store, &fake, &mut |done, total| calls.push((done, total))).unwrap();
    assert_eq!((first.chunks_embedded, first.entries_embedded, first.unchanged), (chunks, entries, 0));
    assert_eq!(calls.last(), Some(&(chunks + entries, chunks + entries)));
    assert_eq!(count(&store, EmbedKind::Chunk), chunks);

    let again = embed_pending(&mut store, &fake, &mut |_, _| {}).unwrap();
    assert_eq!((again.chunks_embedded, again.entries_embedded, again.unchanged), (0, 0, chunks + entries));

    // One file changes: only its chunks are embedded again; the old chunks' vectors are gone.
    let file = flake.path().join("apps/nginx.nix");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen('{', "{\n  # The front proxy.\n", 1)).unwrap();
    index_flake(&mut store, flake.path(), 2_000, &mut |_| {}).unwrap();
    let in_file = store
        .search_config_chunks(&macha_store::ConfigSearch { fts_match: "nginx", host: None, category: None, limit: 200 })
        .unwrap()
        .iter()
        .filter(|h| h.file == "apps/nginx.nix")
        .count();
    let before = fake.texts.get();
    let after_edit = embed_pending(&mut store, &fake, &mut |_, _| {}).unwrap();
    assert!(after_edit.chunks_embedded >= in_file && after_edit.chunks_embedded > 0, "{after_edit:?} {in_file}");
    assert!(after_edit.chunks_embedded < chunks / 10, "{after_edit:?}");
    assert_eq!(after_edit.entries_embedded, 0);
    assert_eq!(fake.texts.get() - before, after_edit.chunks_embedded);
    assert_eq!(count(&store, EmbedKind::Chunk), store.embed_items(EmbedKind::Chunk).unwrap().len());

    // An edited entry is embedded again; a forgotten one loses its vector.
    let e = store.kb_list(None, None, 1).unwrap().remove(0);
    let mut fields = e.fields.clone();
    fields.content.push_str(" Also check the journal.");
    store.kb_update(e.id, &fields, macha_core::Timestamp::from_millis(3_000), None).unwrap();
    let r = embed_pending(&mut store, &fake, &mut |_, _| {}).unwrap();
    assert_eq!((r.chunks_embedded, r.entries_embedded), (0, 1));
    store.kb_forget(e.id, None).unwrap();
    assert_eq!(count(&store, EmbedKind::Entry), entries - 1);
}

#[test]
fn a_new_model_or_dimension_re_embeds_and_never_mixes() {
    let (_dir, mut store) = crate::store();
    index_flake(&mut store, &fixture(), 1_000, &mut |_| {}).unwrap();
    let chunks = store.embed_items(EmbedKind::Chunk).unwrap().len();
    let a = Fake::new("fake-a", 64);
    embed_pending(&mut store, &a, &mut |_, _| {}).unwrap();
    assert_eq!(store.embeddings(EmbedKind::Chunk, "fake-a", 64).unwrap().len(), chunks);

    let b = Fake::new("fake-b", 64);
    let r = embed_pending(&mut store, &b, &mut |_, _| {}).unwrap();
    assert_eq!((r.dropped, r.chunks_embedded, r.unchanged), (chunks, chunks, 0));
    assert!(store.embeddings(EmbedKind::Chunk, "fake-a", 64).unwrap().is_empty());
    assert_eq!(store.embeddings(EmbedKind::Chunk, "fake-b", 64).unwrap().len(), chunks);

    // Same id, another dimension: also re-embedded, and the old vectors are never compared.
    let b32 = Fake::new("fake-b", 32);
    let r = embed_pending(&mut store, &b32, &mut |_, _| {}).unwrap();
    assert_eq!((r.dropped, r.chunks_embedded), (chunks, chunks));
    assert!(store.embeddings(EmbedKind::Chunk, "fake-b", 64).unwrap().is_empty());
    assert!(store.embeddings(EmbedKind::Chunk, "fake-b", 32).unwrap().iter().all(|(_, v)| v.len() == 32));

    // Searching with a model whose vectors are not stored yet finds only keyword hits.
    let c = Fake::new("fake-c", 32);
    let vectors = StoreVectors::new(&store, &c, EmbedKind::Chunk);
    let req = SearchRequest { query: "nginx webserver".into(), host: None, category: None, limit: 10 };
    let res = search(&store, &req, Some(&vectors)).unwrap();
    assert_eq!(res.retrieval, Retrieval::Hybrid { model: "fake-c".into() });
    let keyword: Vec<i64> = search(&store, &req, None).unwrap().hits.iter().map(|h| h.chunk_id).collect();
    assert!(!keyword.is_empty());
    assert_eq!(res.hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), keyword);
}

#[test]
fn hybrid_search_finds_what_keywords_miss_and_says_so() {
    let (_dir, mut store) = crate::store();
    index_flake(&mut store, &fixture(), 1_000, &mut |_| {}).unwrap();
    macha_knowledge::kb::seed(&mut store, macha_core::Timestamp::from_millis(1_000)).unwrap();
    let fake = Fake::new("fake-a", 256);
    embed_pending(&mut store, &fake, &mut |_, _| {}).unwrap();
    let req = SearchRequest { query: "webserver".into(), host: None, category: None, limit: 10 };
    let keyword = search(&store, &req, None).unwrap();
    assert_eq!(keyword.retrieval, Retrieval::KeywordOnly);
    assert_eq!(keyword.retrieval.describe(), "keyword-only (no embedder)");
    assert!(!keyword.hits.iter().any(|h| h.attr_path.contains("nginx")), "{:?}", keyword.hits);
    let vectors = StoreVectors::new(&store, &fake, EmbedKind::Chunk);
    let hybrid = search(&store, &req, Some(&vectors)).unwrap();
    assert_eq!(hybrid.retrieval.describe(), "hybrid (fake-a)");
    assert!(hybrid.hits.iter().any(|h| h.attr_path.contains("nginx")), "{:?}", hybrid.hits);
    // Host and category filters hold for hits found only by their vectors.
    let web = SearchRequest { host: Some("db1".into()), ..req.clone() };
    let on_db1 = search(&store, &web, Some(&vectors)).unwrap();
    for h in &on_db1.hits {
        assert!(store.config_file_hosts(&h.file).unwrap().contains(&"db1".to_owned()), "{h:?}");
    }

    // The knowledge base: the same fusion, entries found by meaning too.
    let now = macha_core::Timestamp::from_millis(2_000);
    let entry_vectors = StoreVectors::new(&store, &fake, EmbedKind::Entry);
    let (mode, hits) = search_entries(&store, "webserver", 5, Some(&entry_vectors), now).unwrap();
    assert_eq!(mode, Retrieval::Hybrid { model: "fake-a".into() });
    assert!(!hits.is_empty());
    assert!(hits.iter().any(|h| h.entry.fields.content.to_lowercase().contains("nginx")), "{hits:?}");
    let (mode, _) = search_entries(&store, "webserver", 5, None, now).unwrap();
    assert_eq!(mode, Retrieval::KeywordOnly);
}

#[test]
fn a_run_stopped_at_a_batch_boundary_resumes_where_it_stopped() {
    use macha_knowledge::embed::{BATCH, embed_pending_within};
    let flake = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), flake.path());
    let (_dir, mut store) = crate::store();
    index_flake(&mut store, flake.path(), 1_000, &mut |_| {}).unwrap();
    let total = store.embed_items(EmbedKind::Chunk).unwrap().len();
    let fake = Fake::new("fake-a", 32);
    // The caller lets two batches through, then stops the run.
    let mut asked = 0;
    let mut stop = || {
        asked += 1;
        (asked > 2).then(|| "over the memory budget".to_owned())
    };
    let first = embed_pending_within(&mut store, &fake, &mut |_, _| {}, &mut stop).unwrap();
    assert_eq!(first.chunks_embedded, 3 * BATCH, "{first:?}");
    assert_eq!(first.stopped.as_deref(), Some("over the memory budget"));
    assert_eq!(first.left, total - 3 * BATCH);
    assert_eq!(count(&store, EmbedKind::Chunk), 3 * BATCH, "what was embedded is kept");
    // The next run embeds only what is left.
    let before = fake.texts.get();
    let second = embed_pending_within(&mut store, &fake, &mut |_, _| {}, &mut || None).unwrap();
    assert_eq!((second.chunks_embedded, second.unchanged, second.left), (total - 3 * BATCH, 3 * BATCH, 0));
    assert_eq!(second.stopped, None);
    assert_eq!(fake.texts.get() - before, total - 3 * BATCH);
    assert_eq!(count(&store, EmbedKind::Chunk), total);
}
