//! Turning a person's (or a model's) search words into an FTS5 `MATCH` expression that never
//! fails to parse.
//!
//! FTS5 has its own query language (`AND`, `OR`, `NOT`, `NEAR(…)`, `column:`, `^`, `*`, quotes,
//! parentheses, `+`); text typed into `macha knowledge search` is not meant as that language, and a
//! syntax error would be a useless answer. So every word becomes one quoted string (a phrase of the
//! tokens FTS5 finds in it: `nginx.service` is the phrase `nginx service`), a trailing `*` stays a
//! prefix search, and the phrases are joined with `OR`: BM25 ranks the rows that match more (and
//! rarer) words first. Operators typed by the user are searched for as plain words.

/// At most this many words of a query are used (the rest are ignored).
pub const MAX_TERMS: usize = 32;

/// At most this many characters of one word are used.
const MAX_TERM_CHARS: usize = 64;

/// The `MATCH` expression for `query`, or `None` when no word is left to search for (a query of
/// only punctuation, say), in which case there are no hits.
pub fn match_expression(query: &str) -> Option<String> {
    let mut phrases: Vec<String> = Vec::new();
    // Words are runs of letters, digits and the characters of identifiers (`nginx.service`,
    // `/nix/store`, `user@host`); everything else (quotes, parentheses, `^`, `+`, `{`) separates
    // them. A `*` right after a word makes it a prefix search.
    let mut rest = query;
    while !rest.is_empty() && phrases.len() < MAX_TERMS {
        let start = rest.find(is_word_char).unwrap_or(rest.len());
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
        let (word, after) = rest.split_at(end);
        let prefix = after.starts_with('*');
        rest = after;
        let word: String = word.chars().take(MAX_TERM_CHARS).collect();
        if !word.chars().any(char::is_alphanumeric) {
            continue;
        }
        let phrase = if prefix { format!("\"{word}\"*") } else { format!("\"{word}\"") };
        if !phrases.contains(&phrase) {
            phrases.push(phrase);
        }
    }
    if phrases.is_empty() { None } else { Some(phrases.join(" OR ")) }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':' | '@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_quoted_phrases_joined_by_or() {
        assert_eq!(match_expression("nginx restart").as_deref(), Some("\"nginx\" OR \"restart\""));
        assert_eq!(match_expression("nginx.service").as_deref(), Some("\"nginx.service\""));
        assert_eq!(match_expression("nix-coll*").as_deref(), Some("\"nix-coll\"*"));
    }

    #[test]
    fn operators_and_quotes_are_plain_words() {
        assert_eq!(match_expression("\"a\" NEAR(b c)").as_deref(), Some("\"a\" OR \"NEAR\" OR \"b\" OR \"c\""));
        assert_eq!(
            match_expression("-disk AND NOT full").as_deref(),
            Some("\"-disk\" OR \"AND\" OR \"NOT\" OR \"full\"")
        );
        assert_eq!(match_expression("topic:nginx ^start").as_deref(), Some("\"topic:nginx\" OR \"start\""));
    }

    #[test]
    fn nothing_to_search_for_is_none() {
        for q in ["", "   ", "\"\"", "***", "-", "()", "\u{0}\u{7}", "(", "^", "\"*\""] {
            assert_eq!(match_expression(q), None, "{q:?}");
        }
    }

    #[test]
    fn long_queries_are_bounded() {
        let q = (0..100).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let m = match_expression(&q).unwrap();
        assert_eq!(m.matches(" OR ").count(), MAX_TERMS - 1);
        let long = "x".repeat(10_000);
        assert!(match_expression(&long).unwrap().len() <= MAX_TERM_CHARS + 2);
    }
}
