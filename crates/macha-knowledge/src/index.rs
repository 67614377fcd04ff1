//! Indexing a flake into the store (the IO edge): walk the checkout, read and hash each `.nix`
//! file, parse it ([`crate::chunk`]), and write the changes in one transaction.
//!
//! Incremental: a file whose SHA-256 matches the stored one keeps its chunks (it is still read
//! and parsed for its `imports`, because which hosts use a file depends on every file); files
//! that are gone, or now count as secrets, are dropped. Never read: hidden directories (`.git`),
//! symbolic links (followed nowhere, so nothing outside the flake), files over
//! [`FILE_BYTES_MAX`], secrets by path or content ([`crate::layout`]).

use crate::chunk::{identifier_words, parse_nix};
use crate::layout::{self, Category, FileLinks};
use crate::{KnowledgeError, Result};
use macha_store::{ConfigFile, ConfigIndexChanges, NewConfigChunk, Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Larger `.nix` files are recorded as errors, not read.
pub const FILE_BYTES_MAX: u64 = 1024 * 1024;
/// At most this many files are indexed from one flake.
pub const FILES_MAX: usize = 20_000;
/// Directories deeper than this are not entered.
const DEPTH_MAX: usize = 32;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexReport {
    /// `.nix` files found (secrets included).
    pub files: usize,
    /// Files (re)written because they are new or changed.
    pub indexed: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub chunks_written: usize,
    /// Files never read or never indexed, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Files that did not parse (or could not be read), with the reason; the rest is indexed.
    pub errors: Vec<(String, String)>,
    /// Hosts found in `nixosConfigurations`.
    pub hosts: Vec<String>,
    pub git_head: Option<String>,
    pub elapsed_ms: u64,
}

/// Progress of a run, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `done` of `total` files read.
    Reading {
        done: usize,
        total: usize,
    },
    Writing {
        files: usize,
    },
}

/// Indexes the flake at `root` into `store`; `now_ms` stamps the files written.
pub fn index_flake(
    store: &mut Store,
    root: &Path,
    now_ms: i64,
    progress: &mut dyn FnMut(Progress),
) -> Result<IndexReport> {
    let started = Instant::now();
    let meta = std::fs::metadata(root).map_err(|source| KnowledgeError::Io { path: root.to_path_buf(), source })?;
    if !meta.is_dir() {
        return Err(KnowledgeError::Invalid(format!("{} is not a directory", root.display())));
    }
    let mut found = Vec::new();
    walk(root, "", 0, &mut found)?;
    found.sort();
    let stored = store.config_file_hashes()?;
    let git_head = git_head(root);
    let mut report = IndexReport { files: found.len(), git_head: git_head.clone(), ..IndexReport::default() };
    let mut links: BTreeMap<String, FileLinks> = BTreeMap::new();
    let mut changes = ConfigIndexChanges::default();
    let total = found.len();
    for (i, (rel, abs)) in found.iter().enumerate() {
        if i % 16 == 0 {
            progress(Progress::Reading { done: i, total });
        }
        if let Some(reason) = layout::secret_path_reason(rel) {
            report.skipped.push((rel.clone(), reason.to_owned()));
            continue;
        }
        let file = FileInput::read(abs);
        let (bytes, read_error) = match file {
            FileInput::Bytes(b) => (b, None),
            FileInput::Failed(e) => (Vec::new(), Some(e)),
        };
        let hash = hex(&Sha256::digest(&bytes));
        let text = match (read_error, String::from_utf8(bytes)) {
            (Some(e), _) => Err(e),
            (None, Ok(t)) => Ok(t),
            (None, Err(_)) => Err("not UTF-8 text".to_owned()),
        };
        if let Ok(t) = &text
            && let Some(reason) = layout::secret_content_reason(t)
        {
            report.skipped.push((rel.clone(), reason.to_owned()));
            continue;
        }
        let file_category = layout::file_category(rel);
        let parsed = match &text {
            Ok(t) => parse_nix(t),
            Err(e) => crate::chunk::ParsedFile { error: Some(e.clone()), ..Default::default() },
        };
        links.insert(rel.clone(), parsed.links.clone());
        if let Some(e) = &parsed.error {
            report.errors.push((rel.clone(), e.clone()));
        }
        if stored.get(rel) == Some(&hash) {
            report.unchanged += 1;
            continue;
        }
        let chunks: Vec<NewConfigChunk> = parsed
            .chunks
            .iter()
            .map(|c| NewConfigChunk {
                attr_path: c.attr_path.clone(),
                line_start: c.line_start,
                line_end: c.line_end,
                category: layout::chunk_category(file_category, &c.attr_path).as_str().to_owned(),
                words: identifier_words(&format!("{} {}", c.attr_path, c.text)),
                text: c.text.clone(),
            })
            .collect();
        report.indexed += 1;
        report.chunks_written += chunks.len();
        changes.upserts.push((
            ConfigFile {
                path: rel.clone(),
                hash,
                git_head: git_head.clone(),
                indexed_at: now_ms,
                category: file_category.unwrap_or(Category::Other).as_str().to_owned(),
                error: parsed.error.clone(),
            },
            chunks,
        ));
    }
    progress(Progress::Reading { done: total, total });
    changes.removals = stored.keys().filter(|p| !links.contains_key(*p)).cloned().collect();
    report.removed = changes.removals.len();
    let hosts = layout::resolve_hosts(&links);
    for (file, hs) in &hosts {
        for h in hs {
            changes.hosts.push((file.clone(), h.clone()));
        }
    }
    let mut all_hosts: Vec<String> = links.values().flat_map(|l| l.hosts.iter().cloned()).collect();
    all_hosts.sort();
    all_hosts.dedup();
    report.hosts = all_hosts;
    progress(Progress::Writing { files: changes.upserts.len() });
    store.apply_config_index(&changes)?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        files = report.files,
        indexed = report.indexed,
        unchanged = report.unchanged,
        removed = report.removed,
        errors = report.errors.len(),
        ms = report.elapsed_ms,
        "configuration index updated"
    );
    Ok(report)
}

enum FileInput {
    Bytes(Vec<u8>),
    Failed(String),
}

impl FileInput {
    fn read(path: &Path) -> FileInput {
        use std::io::Read;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return FileInput::Failed(format!("cannot read: {e}")),
        };
        let mut buf = Vec::new();
        match file.take(FILE_BYTES_MAX + 1).read_to_end(&mut buf) {
            Ok(_) if buf.len() as u64 > FILE_BYTES_MAX => {
                FileInput::Failed(format!("larger than {FILE_BYTES_MAX} bytes, not indexed"))
            }
            Ok(_) => FileInput::Bytes(buf),
            Err(e) => FileInput::Failed(format!("cannot read: {e}")),
        }
    }
}

/// Collects `(relative path, absolute path)` of every `.nix` file, without following links.
fn walk(dir: &Path, rel: &str, depth: usize, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    if depth > DEPTH_MAX {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| KnowledgeError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else { continue };
        let child_rel = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
        if kind.is_dir() {
            walk(&entry.path(), &child_rel, depth + 1, out)?;
        } else if kind.is_file() && name.ends_with(".nix") {
            if out.len() >= FILES_MAX {
                return Ok(());
            }
            out.push((child_rel, entry.path()));
        }
    }
    Ok(())
}

/// The checkout's HEAD commit, read from `.git` without running git; `None` if not a plain
/// git checkout.
pub fn git_head(root: &Path) -> Option<String> {
    let git = root.join(".git");
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let commit = match head.strip_prefix("ref: ") {
        None => head.to_owned(),
        Some(r) => {
            if r.contains("..") {
                return None;
            }
            match std::fs::read_to_string(git.join(r)) {
                Ok(c) => c.trim().to_owned(),
                Err(_) => {
                    let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
                    packed.lines().find_map(|l| l.strip_suffix(r).map(|c| c.trim().to_owned()))?
                }
            }
        }
    };
    (commit.len() >= 40 && commit.chars().all(|c| c.is_ascii_hexdigit())).then_some(commit)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
