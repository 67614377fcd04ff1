//! Reading one file of the flake (the IO edge of `macha configs read`): only regular files
//! inside the flake, never a secret, at most [`READ_BYTES_MAX`], with secrets in the text masked.
//!
//! Refused: empty paths, any `..` component, absolute paths outside the flake, paths whose real
//! location (symbolic links resolved) is outside the flake, and paths the indexer never reads
//! as secrets ([`crate::layout::secret_path_reason`]).

use crate::layout;
use crate::redact::redact_text;
use crate::{KnowledgeError, Result};
use std::path::{Component, Path, PathBuf};

/// Larger files are refused.
pub const READ_BYTES_MAX: u64 = 1024 * 1024;

/// A file's lines, numbered from `first`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileText {
    /// The path relative to the flake.
    pub path: String,
    pub first: u32,
    pub lines: Vec<String>,
    pub total_lines: u32,
}

/// Parses `A:B`, `A:`, `:B` or `A` (1-based, inclusive).
pub fn parse_lines(spec: &str) -> Result<(u32, u32)> {
    let bad = || KnowledgeError::Invalid(format!("--lines wants A:B (1-based, inclusive), not {spec:?}"));
    let num = |s: &str, default: u32| -> Result<u32> {
        if s.is_empty() { Ok(default) } else { s.trim().parse::<u32>().map_err(|_| bad()) }
    };
    let (a, b) = match spec.split_once(':') {
        Some((a, b)) => (num(a, 1)?, num(b, u32::MAX)?),
        None => {
            let n = num(spec, 0)?;
            (n, n)
        }
    };
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// The relative path inside `root` that `requested` names, or why it is refused.
pub fn resolve_inside(root: &Path, requested: &str) -> Result<(String, PathBuf)> {
    let refuse = |why: &str| KnowledgeError::Refused(format!("{requested:?}: {why}"));
    if requested.is_empty() || requested.contains('\0') {
        return Err(refuse("an empty path"));
    }
    let root_real =
        std::fs::canonicalize(root).map_err(|source| KnowledgeError::Io { path: root.to_path_buf(), source })?;
    let asked = Path::new(requested);
    if asked.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refuse("`..` is not allowed"));
    }
    let relative: PathBuf = if asked.is_absolute() {
        let stripped = asked.strip_prefix(&root_real).or_else(|_| asked.strip_prefix(root));
        match stripped {
            Ok(r) => r.to_path_buf(),
            Err(_) => return Err(refuse("outside the flake")),
        }
    } else {
        asked.components().filter(|c| !matches!(c, Component::CurDir)).collect()
    };
    let rel = relative.to_str().ok_or_else(|| refuse("not UTF-8"))?.to_owned();
    if rel.is_empty() {
        return Err(refuse("names the flake itself, not a file"));
    }
    if let Some(why) = layout::secret_path_reason(&rel) {
        return Err(refuse(&format!("a secret ({why}), never shown")));
    }
    let real = std::fs::canonicalize(root_real.join(&relative))
        .map_err(|source| KnowledgeError::Io { path: PathBuf::from(&rel), source })?;
    if !real.starts_with(&root_real) {
        return Err(refuse("its real location is outside the flake"));
    }
    let meta = std::fs::metadata(&real).map_err(|source| KnowledgeError::Io { path: real.clone(), source })?;
    if !meta.is_file() {
        return Err(refuse("not a regular file"));
    }
    if meta.len() > READ_BYTES_MAX {
        return Err(refuse(&format!("larger than {READ_BYTES_MAX} bytes")));
    }
    Ok((rel, real))
}

/// Reads `requested` inside the flake at `root`, the whole file or `lines`.
pub fn read_config(root: &Path, requested: &str, lines: Option<(u32, u32)>) -> Result<FileText> {
    let (rel, real) = resolve_inside(root, requested)?;
    let bytes = std::fs::read(&real).map_err(|source| KnowledgeError::Io { path: real.clone(), source })?;
    let text = String::from_utf8(bytes).map_err(|_| KnowledgeError::Refused(format!("{rel}: not UTF-8 text")))?;
    if let Some(why) = layout::secret_content_reason(&text) {
        return Err(KnowledgeError::Refused(format!("{rel}: a secret ({why}), never shown")));
    }
    let redacted = redact_text(&text);
    let all: Vec<&str> = redacted.lines().collect();
    let total = u32::try_from(all.len()).unwrap_or(u32::MAX);
    let (a, b) = lines.unwrap_or((1, total.max(1)));
    let from = usize::try_from(a.saturating_sub(1)).unwrap_or(usize::MAX);
    let to = usize::try_from(b).unwrap_or(usize::MAX).min(all.len());
    let picked = if from < to { all[from..to].iter().map(|s| (*s).to_owned()).collect() } else { Vec::new() };
    Ok(FileText { path: rel, first: a, lines: picked, total_lines: total })
}
