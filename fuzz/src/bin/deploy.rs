//! Fuzz target: what a deployment reads from outside (`macha_deploy::diff`): the output of
//! `nix store diff-closures`, and two closures' `nix path-info --json --recursive` output (the old
//! one comes from the host), diffed as Nix groups them. The input holds the diff text, the old
//! closure and the new one, separated by form feeds. Every diff must render, and a diff of a
//! closure with itself must be empty.

use macha_deploy::diff::{diff_closures, parse_diff_closures, parse_path_infos};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let p = macha_fuzz::parts(data, 3);
        let text = |i: usize| p[i].map(macha_fuzz::text).unwrap_or_default();
        if let Ok(d) = parse_diff_closures(&text(0)) {
            let _ = d.render();
            let _ = d.notable();
        }
        let (old, new) = (parse_path_infos(&text(1)), parse_path_infos(&text(2)));
        if let (Ok(old), Ok(new)) = (&old, &new) {
            let d = diff_closures(old, new);
            let _ = d.render();
            assert!(diff_closures(old, old).is_empty(), "a closure differs from itself");
        }
    });
}
