//! User queries into safe FTS5 match expressions, and reciprocal-rank fusion (pure).
//!
//! Any text becomes either `None` (nothing to search for) or an expression FTS5 accepts: every
//! token is double-quoted, so operators, column filters, `NEAR`, `^`, `:` and parentheses in the
//! input are only words. What a user can still say:
//! - `"exact phrase"` (an unbalanced quote runs to the end of the input);
//! - `-word` excludes chunks with the word (only next to at least one positive term);
//! - `word*` is a prefix search;
//! - an identifier with dots, dashes or slashes (`services.nginx.enable`, `nginx.service`,
//!   `prometheus-node-exporter`) is a phrase of its parts, so it matches exactly that sequence.
//!
//! Terms are joined with `OR` and ranked by BM25, so a chunk that matches more of them ranks
//! higher; common English words are dropped unless they are all the query has.

/// Input beyond this many bytes is ignored.
pub const QUERY_BYTES_MAX: usize = 1024;
/// At most this many terms reach FTS5.
pub const TERMS_MAX: usize = 32;

/// Reciprocal-rank fusion's constant.
pub const RRF_K: f64 = 60.0;

const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "by",
    "do",
    "does",
    "for",
    "from",
    "how",
    "i",
    "in",
    "is",
    "it",
    "of",
    "on",
    "or",
    "set",
    "that",
    "the",
    "this",
    "to",
    "what",
    "where",
    "which",
    "who",
    "with",
    "we",
    "our",
    "my",
    "its",
    "configured",
    "config",
    "configuration",
    "defined",
    "setting",
    "settings",
    "host",
    "hosts",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    tokens: Vec<String>,
    prefix: bool,
    negative: bool,
    quoted: bool,
}

/// The FTS5 match expression for a user query, or `None` when it has nothing to search for.
pub fn to_fts5(input: &str) -> Option<String> {
    let terms = parse_terms(cut(input, QUERY_BYTES_MAX));
    let meaningful: Vec<&Term> = terms
        .iter()
        .filter(|t| !t.negative)
        .filter(|t| t.quoted || t.prefix || t.tokens.len() > 1 || !is_stopword(&t.tokens[0]))
        .collect();
    let positives: Vec<&Term> =
        if meaningful.is_empty() { terms.iter().filter(|t| !t.negative).collect() } else { meaningful };
    if positives.is_empty() {
        return None;
    }
    let mut out = String::from("(");
    for (i, t) in positives.iter().take(TERMS_MAX).enumerate() {
        if i > 0 {
            out.push_str(" OR ");
        }
        out.push_str(&render(t));
    }
    out.push(')');
    for t in terms.iter().filter(|t| t.negative).take(TERMS_MAX) {
        out.push_str(" NOT ");
        out.push_str(&render(t));
    }
    Some(out)
}

fn is_stopword(t: &str) -> bool {
    STOPWORDS.contains(&t)
}

fn render(t: &Term) -> String {
    let joined = t.tokens.join(" ").replace('"', "\"\"");
    if t.prefix { format!("\"{joined}\"*") } else { format!("\"{joined}\"") }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The tokens FTS5's `unicode61` tokenizer would make of a word: runs of letters and digits.
fn tokens(word: &str) -> Vec<String> {
    word.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

fn parse_terms(input: &str) -> Vec<Term> {
    let mut terms = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let negative_quote = rest.starts_with("-\"");
        if rest.starts_with('"') || negative_quote {
            let body = &rest[if negative_quote { 2 } else { 1 }..];
            let (phrase, after) = match body.find('"') {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (body, ""),
            };
            let toks = tokens(phrase);
            if !toks.is_empty() {
                terms.push(Term { tokens: toks, prefix: false, negative: negative_quote, quoted: true });
            }
            rest = after;
            continue;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '"').unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        let negative = word.len() > 1 && word.starts_with('-');
        let word = if negative { &word[1..] } else { word };
        let prefix = word.ends_with('*');
        let toks = tokens(word);
        if toks.is_empty() {
            continue;
        }
        terms.push(Term { tokens: toks, prefix, negative, quoted: false });
    }
    terms
}

/// Reciprocal-rank fusion: each list ranks ids best first; an id scores the sum of
/// `1 / (k + rank)` over the lists it appears in (rank from 1). Best first, ties by id.
pub fn fuse_rrf(lists: &[Vec<i64>], k: f64) -> Vec<(i64, f64)> {
    let mut scores: std::collections::BTreeMap<i64, f64> = std::collections::BTreeMap::new();
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            let r = f64::from(u32::try_from(rank).unwrap_or(u32::MAX)) + 1.0;
            *scores.entry(*id).or_insert(0.0) += 1.0 / (k + r);
        }
    }
    let mut out: Vec<(i64, f64)> = scores.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(to_fts5("nginx").as_deref(), Some("(\"nginx\")"));
        assert_eq!(to_fts5("services.nginx.enable").as_deref(), Some("(\"services nginx enable\")"));
        assert_eq!(to_fts5("\"max connections\" postgres*").as_deref(), Some("(\"max connections\" OR \"postgres\"*)"));
        assert_eq!(to_fts5("nginx -acme").as_deref(), Some("(\"nginx\") NOT \"acme\""));
        assert_eq!(to_fts5("where is the nginx").as_deref(), Some("(\"nginx\")"));
        assert_eq!(to_fts5("the").as_deref(), Some("(\"the\")"));
        assert_eq!(to_fts5("a NEAR b").as_deref(), Some("(\"near\" OR \"b\")"));
        assert_eq!(to_fts5("-only"), None);
        assert_eq!(to_fts5(""), None);
        assert_eq!(to_fts5("\"unbalanced phrase").as_deref(), Some("(\"unbalanced phrase\")"));
    }

    #[test]
    fn rrf_rewards_agreement() {
        let fused = fuse_rrf(&[vec![1, 2, 3], vec![3, 1, 4]], RRF_K);
        assert_eq!(fused[0].0, 1);
        assert_eq!(fused[1].0, 3);
        assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
        assert_eq!(fused.len(), 4);
    }
}
