//! Validated names: systemd unit names (with normalisation and aliases) and host names.
//!
//! Both are parsed once at the boundary and carried as types afterwards, so that nothing downstream
//! has to wonder whether a unit name could be `; rm -rf /` or a host name could be `-oProxyCommand=…`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest unit name systemd accepts (`UNIT_NAME_MAX`).
pub const UNIT_NAME_MAX: usize = 255;
/// Longest DNS name.
pub const HOST_NAME_MAX: usize = 253;

/// Unit types systemd knows. A name without one of these suffixes is a `.service`.
pub const UNIT_TYPES: &[&str] =
    &["service", "socket", "target", "device", "mount", "automount", "swap", "timer", "path", "slice", "scope"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("unit name is empty")]
    EmptyUnit,
    #[error("unit name is longer than {UNIT_NAME_MAX} bytes")]
    UnitTooLong,
    #[error("unit name {0:?} contains a character systemd does not allow (allowed: A-Z a-z 0-9 : _ . \\ @ -)")]
    UnitBadChar(String),
    #[error("unit name {0:?} is not a valid unit name")]
    UnitMalformed(String),
    #[error("host name is empty")]
    EmptyHost,
    #[error("host name is longer than {HOST_NAME_MAX} bytes")]
    HostTooLong,
    #[error("host name {0:?} is not a valid DNS name (letters, digits, '-' and '.', labels of 1-63, no leading '-')")]
    HostMalformed(String),
    #[error("{0:?} is not a Nix store path (/nix/store/<32 base-32 characters>-<name>)")]
    StorePathMalformed(String),
}

/// A normalised systemd unit name: always carries its type suffix (`ssh` becomes `ssh.service`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName(String);

impl UnitName {
    /// Parses and normalises a unit name. Rejects anything systemd itself would reject, plus path
    /// separators and leading dashes (which could be read as options by a command-line tool).
    pub fn parse(raw: &str) -> Result<UnitName, NameError> {
        if raw.is_empty() {
            return Err(NameError::EmptyUnit);
        }
        if raw.len() > UNIT_NAME_MAX {
            return Err(NameError::UnitTooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'\\' | b'@' | b'-')) {
            return Err(NameError::UnitBadChar(truncate(raw)));
        }
        // A trailing dot is refused too: `foo.` would become `foo..service`, a name this function
        // itself refuses, so it could not be read back from the store or the wire.
        if raw.starts_with('-') && raw != "-.mount" || raw.starts_with('.') || raw.ends_with('.') || raw.contains("..")
        {
            return Err(NameError::UnitMalformed(truncate(raw)));
        }
        let has_type = raw.rsplit_once('.').is_some_and(|(stem, ty)| !stem.is_empty() && UNIT_TYPES.contains(&ty));
        let name = if has_type { raw.to_owned() } else { format!("{raw}.service") };
        if name.len() > UNIT_NAME_MAX {
            return Err(NameError::UnitTooLong);
        }
        // Template instances need a non-empty prefix; a bare template (`foo@.service`) cannot run.
        let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
        if stem.starts_with('@') || stem.matches('@').count() > 1 {
            return Err(NameError::UnitMalformed(truncate(raw)));
        }
        Ok(UnitName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name without its type suffix (`nginx.service` → `nginx`).
    pub fn stem(&self) -> &str {
        self.0.rsplit_once('.').map_or(&self.0, |(s, _)| s)
    }

    /// The type suffix (`service`, `socket`, …).
    pub fn unit_type(&self) -> &str {
        self.0.rsplit_once('.').map_or("service", |(_, t)| t)
    }

    /// For a template instance `getty@tty1.service`, the template `getty@.service`.
    pub fn template(&self) -> Option<String> {
        let (prefix, _) = self.stem().split_once('@')?;
        Some(format!("{prefix}@.{}", self.unit_type()))
    }
}

impl TryFrom<String> for UnitName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UnitName::parse(&s)
    }
}
impl From<UnitName> for String {
    fn from(u: UnitName) -> String {
        u.0
    }
}
impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl schemars::JsonSchema for UnitName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UnitName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": UNIT_NAME_MAX,
            "pattern": "^[A-Za-z0-9:_.\\\\@-]+$",
            "description": "A systemd unit name; without a type suffix it means a .service (\"nginx\" = \"nginx.service\")."
        })
    }
}

/// A path in the Nix store, exactly `/nix/store/<hash>-<name>`: 32 characters of Nix's base-32
/// alphabet, then a name of 1-211 characters from Nix's store path alphabet, not starting with
/// `.`, nothing after it (no subpath, no trailing slash). What deployments pass around: the system
/// to activate and the one to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StorePath(String);

/// Nix's base-32 alphabet (no `e`, `o`, `u`, `t`).
const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

impl StorePath {
    pub fn parse(raw: &str) -> Result<StorePath, NameError> {
        let bad = || NameError::StorePathMalformed(raw.chars().take(300).collect());
        let rest = raw.strip_prefix("/nix/store/").ok_or_else(bad)?;
        let (hash, name) = rest.split_at_checked(32).ok_or_else(bad)?;
        let name = name.strip_prefix('-').ok_or_else(bad)?;
        let name_ok = (1..=211).contains(&name.len())
            && !name.starts_with('.')
            && !name.contains("..")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
        if hash.bytes().all(|b| NIX_BASE32.contains(&b)) && name_ok {
            Ok(StorePath(raw.to_owned()))
        } else {
            Err(bad())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        self.0.get(11..43).unwrap_or_default()
    }
    /// The part after the hash (`nixos-system-web1-25.11`).
    pub fn name(&self) -> &str {
        self.0.get(44..).unwrap_or_default()
    }
    /// A path inside it (`bin/switch-to-configuration`), for commands.
    pub fn join(&self, sub: &str) -> String {
        format!("{}/{sub}", self.0)
    }
}
impl std::str::FromStr for StorePath {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::parse(s)
    }
}
impl TryFrom<String> for StorePath {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StorePath::parse(&s)
    }
}
impl From<StorePath> for String {
    fn from(p: StorePath) -> String {
        p.0
    }
}
impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl schemars::JsonSchema for StorePath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StorePath".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^/nix/store/[0-9abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+._?=-]{1,211}$",
            "description": "A Nix store path, /nix/store/<hash>-<name>."
        })
    }
}

/// A host an action or observation refers to: `local` (the host Macha runs on) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    pub const LOCAL: &'static str = "local";

    pub fn local() -> HostName {
        HostName(Self::LOCAL.to_owned())
    }

    /// Parses a host name: lower-cased, RFC 1123 labels, never starting with `-` (so it cannot be
    /// mistaken for an option by `ssh`).
    pub fn parse(raw: &str) -> Result<HostName, NameError> {
        let s = raw.trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return Err(NameError::EmptyHost);
        }
        if s.len() > HOST_NAME_MAX {
            return Err(NameError::HostTooLong);
        }
        let ok = s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !ok {
            return Err(NameError::HostMalformed(truncate(raw)));
        }
        Ok(HostName(s))
    }

    pub fn is_local(&self) -> bool {
        self.0 == Self::LOCAL
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        HostName::parse(&s)
    }
}
impl From<HostName> for String {
    fn from(h: HostName) -> String {
        h.0
    }
}
impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl schemars::JsonSchema for HostName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HostName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": HOST_NAME_MAX,
            "pattern": "^[A-Za-z0-9][A-Za-z0-9.-]*$",
            "description": "\"local\" for the host Macha runs on, or the name of a registered host."
        })
    }
}

/// Shortens hostile input before it is echoed in an error message.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_normalise() {
        assert_eq!(UnitName::parse("ssh").map(String::from), Ok("ssh.service".into()));
        assert_eq!(UnitName::parse("nginx.service").map(String::from), Ok("nginx.service".into()));
        assert_eq!(UnitName::parse("sshd.socket").map(String::from), Ok("sshd.socket".into()));
        assert_eq!(UnitName::parse("getty@tty1").map(String::from), Ok("getty@tty1.service".into()));
        assert_eq!(UnitName::parse("foo.bar").map(String::from), Ok("foo.bar.service".into()));
        assert_eq!(UnitName::parse("-.mount").map(String::from), Ok("-.mount".into()));
        let g = UnitName::parse("getty@tty1").ok();
        assert_eq!(g.and_then(|u| u.template()), Some("getty@.service".into()));
    }

    #[test]
    fn hostile_units_rejected() {
        for bad in [
            "",
            "a;rm -rf /",
            "$(reboot)",
            "`id`",
            "a b",
            "../../etc/passwd",
            "/etc/passwd",
            "nginx|sh",
            "nginx&&reboot",
            "-nginx",
            "--help",
            ".service",
            "@.service",
            "a@b@c.service",
            "nginx\n",
            " nginx",
            "nginx\0",
            "ünicode",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(UnitName::parse(&"a".repeat(300)), Err(NameError::UnitTooLong));
    }

    #[test]
    fn store_paths_are_exactly_a_hash_and_a_name() {
        let good = "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-nixos-system-c1-26.05.2";
        let p = StorePath::parse(good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.name(), p.join("bin/switch-to-configuration").as_str()),
            (
                "nixos-system-c1-26.05.2",
                "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-nixos-system-c1-26.05.2/bin/switch-to-configuration"
            )
        );
        for bad in [
            "",
            "/nix/store/",
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq",
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-",
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhe-x", // 'e' is not base-32
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-a/bin",
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-a/",
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-.hidden",
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-a b",
            "/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-a;reboot",
            "/tmp/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-a",
            "/nix/store/../swm3r5144vp5rp8mdlh26if2j7sgjq-a",
            "/nix/store/ünicode5144vp5rp8mdlh26if2j7sgjqhq-a",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("/nix/store/swm3r5144vp5rp8mdlh26if2j7sgjqhq-{}", "a".repeat(212));
        assert!(StorePath::parse(&long).is_err());
    }

    /// Found by the `action` fuzz target: `backup@daily.` was accepted as `backup@daily..service`,
    /// which does not parse again.
    #[test]
    fn a_trailing_dot_is_refused_and_every_accepted_name_parses_again() {
        for bad in ["backup@daily.", "nginx.", "a.b.", "x@y.1.", "-.mount."] {
            assert!(matches!(UnitName::parse(bad), Err(NameError::UnitMalformed(_))), "{bad:?} accepted");
        }
        for good in ["ssh", "nginx.service", "getty@tty1", "foo.bar", "-.mount", "backup@daily.1.timer", "a.b.c"] {
            let first = UnitName::parse(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
            assert_eq!(UnitName::parse(first.as_str()), Ok(first.clone()), "{good:?} does not parse again");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(HostName::parse("Web1.Example.org.").map(String::from), Ok("web1.example.org".into()));
        assert!(HostName::parse("local").is_ok_and(|h| h.is_local()));
        for bad in ["", "-oProxyCommand=x", "a b", "a_b", "a..b", "host;id", "a/b", "x-.y", "ä"] {
            assert!(HostName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(HostName::parse(&"a.".repeat(200)), Err(NameError::HostTooLong));
    }
}
