//! Version order exactly as Nix's `builtins.compareVersions` (and `nix-env -u`) defines it.
//!
//! A version is split into components: separators (`.` and `-`) are skipped, then a component is
//! either the longest run of ASCII digits or the longest run of anything else that is not a digit or
//! a separator. Components are compared pairwise, a missing component being the empty string:
//!
//! - two numbers compare numerically (a run of digits that does not fit a C `int` is not a number,
//!   as in Nix, and compares as text);
//! - the empty component is older than a number;
//! - `pre` is older than everything else (`1.0pre1` < `1.0`);
//! - otherwise a number is newer than text (`2.3a` < `2.3.1`);
//! - two texts compare byte-wise (`""` < `"a"`, so `2.3` < `2.3a`).
//!
//! The closure diff uses this order to call a change an upgrade or a downgrade.

use std::cmp::Ordering;

/// Compares two versions the way Nix does (`builtins.compareVersions a b`): `Less` when `a` is older.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut pa, mut pb) = (a.as_bytes(), b.as_bytes());
    while !pa.is_empty() || !pb.is_empty() {
        let ca = next_component(&mut pa);
        let cb = next_component(&mut pb);
        if component_less(ca, cb) {
            return Ordering::Less;
        }
        if component_less(cb, ca) {
            return Ordering::Greater;
        }
    }
    Ordering::Equal
}

/// Skips separators and takes the next component off the front of `rest`.
fn next_component<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let s = *rest;
    let start = s.iter().position(|&c| c != b'.' && c != b'-').unwrap_or(s.len());
    let s = &s[start..];
    let Some(&first) = s.first() else {
        *rest = s;
        return s;
    };
    let len = if first.is_ascii_digit() {
        s.iter().position(|c| !c.is_ascii_digit()).unwrap_or(s.len())
    } else {
        s.iter().position(|&c| c.is_ascii_digit() || c == b'.' || c == b'-').unwrap_or(s.len())
    };
    let (component, tail) = s.split_at(len);
    *rest = tail;
    component
}

/// A component as Nix reads it into a C `int`: digits only, within `i32`.
fn number(c: &[u8]) -> Option<i32> {
    if c.is_empty() || !c.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(c).ok()?.parse::<i32>().ok()
}

fn component_less(c1: &[u8], c2: &[u8]) -> bool {
    let (n1, n2) = (number(c1), number(c2));
    match (n1, n2) {
        (Some(x), Some(y)) => x < y,
        _ if c1.is_empty() && n2.is_some() => true,
        _ if c1 == b"pre" && c2 != b"pre" => true,
        _ if c2 == b"pre" => false,
        (_, Some(_)) => true,
        (Some(_), _) => false,
        _ => c1 < c2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn the_examples_of_the_nix_manual() {
        // The table of the Nix manual's "Versions" section (nix-env), all against or around 2.3.
        let cases = [
            ("1.0", "2.3", Less),
            ("2.1", "2.3", Less),
            ("2.3", "2.3", Equal),
            ("2.5", "2.3", Greater),
            ("3.1", "2.3", Greater),
            ("2.3.1", "2.3", Greater),
            ("2.3.1", "2.3a", Greater),
            ("2.3pre1", "2.3", Less),
            ("2.3pre3", "2.3pre12", Less),
            ("2.3a", "2.3c", Less),
            ("2.3pre1", "2.3c", Less),
            ("2.3pre1", "2.3q", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn tricky_ones() {
        assert_eq!(compare("1.0pre1", "1.0"), Less);
        assert_eq!(compare("2.3a", "2.3"), Greater, "text is newer than nothing");
        assert_eq!(compare("6.1.0", "6.1"), Greater, "a longer version wins on an equal prefix");
        assert_eq!(compare("1.0", "1.00"), Equal, "numbers compare numerically");
        assert_eq!(compare("1.0", "1-0"), Equal, "both separators are the same");
        assert_eq!(compare("1..0", "1.0"), Equal, "runs of separators are skipped");
        assert_eq!(compare("", "0"), Less, "the empty version is older");
        assert_eq!(compare("", ""), Equal);
        assert_eq!(compare("pre", ""), Less, "pre is older than even the empty component");
        assert_eq!(compare("1.0rc1", "1.0"), Greater, "only pre is special; rc is text");
        assert_eq!(compare("5.15.80", "6.1.2"), Less);
        assert_eq!(compare("2023-01-17", "2022-12-31"), Greater);
        assert_eq!(compare("unstable-2023-01-01", "unstable-2022-01-01"), Greater);
        assert_eq!(compare("1.2a", "1.2b"), Less);
        assert_eq!(compare("1.2.3", "1.2a"), Greater, "a number is newer than text");
    }

    #[test]
    fn numbers_too_large_for_an_int_compare_as_text() {
        // 99999999999 does not fit a C int, so Nix compares it as text with the text rules:
        // against a number, text is older.
        assert_eq!(compare("99999999999", "1"), Less);
        assert_eq!(compare("2147483647", "2147483646"), Greater);
    }

    #[test]
    fn the_order_is_antisymmetric_on_a_sample() {
        let sample = ["", "0", "1", "1.0", "1.0pre", "1.0a", "1.0.1", "pre", "a", "1-rc2", "20230117", "ε"];
        for a in sample {
            assert_eq!(compare(a, a), Equal);
            for b in sample {
                assert_eq!(compare(a, b), compare(b, a).reverse(), "{a:?} vs {b:?}");
            }
        }
    }
}
