//! Nix profile names: which links of `/nix/var/nix/profiles` are system generations, read the same
//! way from a local directory listing and from `ls -l` on another host.

/// `system-42-link` → 42.
pub fn generation_number(file_name: &str) -> Option<u32> {
    let digits = file_name.strip_prefix("system-")?.strip_suffix("-link")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generation_numbers() {
        assert_eq!(generation_number("system-1-link"), Some(1));
        assert_eq!(generation_number("system-1234-link"), Some(1234));
        assert_eq!(generation_number("system"), None);
        assert_eq!(generation_number("system--link"), None);
        assert_eq!(generation_number("system-+1-link"), None);
        assert_eq!(generation_number("default-3-link"), None);
    }
}
