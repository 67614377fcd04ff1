//! What an approval is bound to, and the validated store path every other piece passes around.
//!
//! A person approves one change of one host: from the exact system path running there to the exact
//! path built. [`approval_binding`] is the SHA-256 of an unambiguous encoding of those three, so a
//! changed host (another old path) or a rebuilt closure (another new path) needs a new approval.
//!
//! [`StorePath`] is a top-level Nix store path, `/nix/store/<hash>-<name>`: 32 characters of Nix's
//! base32 alphabet, a name of at most 211 characters from Nix's set, nothing below it (no `/`), no
//! `..`, no trailing slash. It is parsed once at the boundary; deserialising validates too.

use crate::diff::DiffError;
use sha2::{Digest, Sha256};

/// The store directory every path must be directly inside.
pub const STORE_DIR: &str = "/nix/store/";
/// Nix's base32 alphabet (no `e`, `o`, `t`, `u`).
pub const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";
/// Length of the hash part of a store path.
pub const HASH_LEN: usize = 32;
/// Longest name part Nix accepts.
pub const NAME_MAX: usize = 211;

/// The approval binding: SHA-256, in lower-case hex, over `host`, `old_system` and `new_system`,
/// each encoded as its length in bytes (8 bytes, big-endian) followed by its bytes, after a domain
/// tag. No two different triples encode alike, whatever bytes they hold.
pub fn approval_binding(host: &str, old_system: &str, new_system: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"macha-deploy-approval-v1\0");
    for part in [host, old_system, new_system] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A validated top-level store path: the core's type, so that an action, the state machine and
/// the commands pass the same value around.
pub use macha_core::StorePath;

/// Parses and validates a store path (see the module documentation for the rules).
pub fn parse_store_path(s: &str) -> Result<StorePath, DiffError> {
    StorePath::parse(s).map_err(|e| DiffError::StorePath { path: shorten(s), reason: e.to_string() })
}

/// Shortens hostile input before it is echoed in an error, with control characters escaped.
fn shorten(s: &str) -> String {
    let cut: String = s.chars().take(120).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const OLD: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixos-system-web1-24.05";
    const NEW: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-web1-24.11";

    #[test]
    fn parses_a_system_path_and_its_parts() {
        let p = parse_store_path(OLD).unwrap();
        assert_eq!(p.hash_part(), "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r");
        assert_eq!(p.name(), "nixos-system-web1-24.05");
        assert_eq!(p.to_string(), OLD);
        assert_eq!(OLD.parse::<StorePath>().unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<StorePath>(&json).unwrap(), p);
    }

    #[test]
    fn refuses_what_is_not_a_top_level_store_path() {
        let hash = "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r";
        let long = "a".repeat(212);
        let refused = [
            String::new(),
            "/nix/store/".to_owned(),
            format!("/nix/store/{hash}"),
            format!("/nix/store/{hash}-"),
            format!("/nix/store/{hash}-foo/"),
            format!("/nix/store/{hash}-foo/bin/sh"),
            format!("/nix/store/{hash}-.."),
            format!("/nix/store/{hash}-a..b"),
            format!("/nix/store/{hash}-.hidden"),
            format!("/nix/store/{hash}-foo bar"),
            format!("/nix/store/{hash}-foo\nbar"),
            format!("/nix/store/{hash}-{long}"),
            format!("/nix/store/{hash}_foo"),
            // `e`, `o`, `t` and `u` are not in Nix's base32.
            "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-foo".to_owned(),
            "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5-foo".to_owned(),
            format!("/nix//store/{hash}-foo"),
            format!("nix/store/{hash}-foo"),
            format!("/nix/store/../store/{hash}-foo"),
            "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4qé-foo".to_owned(),
        ];
        for s in refused {
            assert!(parse_store_path(&s).is_err(), "{s:?} was accepted");
            assert!(serde_json::from_str::<StorePath>(&serde_json::to_string(&s).unwrap()).is_err());
        }
        let longest = format!("/nix/store/{hash}-{}", "a".repeat(211));
        assert!(parse_store_path(&longest).is_ok());
        assert!(parse_store_path(&format!("/nix/store/{hash}-a+b-1.0_x?=y")).is_ok());
    }

    #[test]
    fn the_binding_changes_with_each_part_and_is_unambiguous() {
        let b = approval_binding("web1", OLD, NEW);
        assert_eq!(b.len(), 64);
        assert!(b.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(b, approval_binding("web1", OLD, NEW), "deterministic");
        assert_ne!(b, approval_binding("web2", OLD, NEW));
        assert_ne!(b, approval_binding("web1", NEW, NEW));
        assert_ne!(b, approval_binding("web1", OLD, OLD));
        // Moving bytes between fields changes the binding (length prefixes).
        assert_ne!(approval_binding("ab", "c", "d"), approval_binding("a", "bc", "d"));
        assert_ne!(approval_binding("a", "", "b"), approval_binding("a", "b", ""));
    }

    #[test]
    fn the_binding_is_sha256_of_the_documented_encoding() {
        let mut bytes = b"macha-deploy-approval-v1\0".to_vec();
        for part in ["h", "o", "n"] {
            bytes.extend_from_slice(&1u64.to_be_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
        let want: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(approval_binding("h", "o", "n"), want);
    }
}
