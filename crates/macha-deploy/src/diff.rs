//! The closure diff a person reads before approving a deploy.
//!
//! [`parse_diff_closures`] reads the output of `nix store diff-closures OLD NEW` (Nix 2.8 and
//! later). Nix prints one line per package name whose versions or size changed, sorted by name:
//!
//! ```text
//! firefox: 95.0 → 96.0, +1536.0 KiB      (Nix before 2.20: sizes always in KiB, signed)
//! firefox: 95.0 → 96.0, 1.5 MiB          (later Nix: the unit scales, no '+' sign)
//! foo: ∅ → 1.2, +3.0 KiB                 (added)
//! bar: 1.0 → ∅, -2.0 MiB                 (removed)
//! linux: 5.15.80 → 6.1.2                 (versions only)
//! glibc: +12.3 KiB                       (size only)
//! a: 1.0, 1.1 → 1.2                      (several versions; `ε` is the empty version)
//! ```
//!
//! A size is printed only when it moved by 8 KiB or more, so the total is a lower bound of small
//! moves. Sizes may be wrapped in ANSI colour sequences; those and every other control character
//! are removed. The text comes from a host and is untrusted: it is bounded ([`MAX_BYTES`],
//! [`MAX_LINES`]), a line that does not read is an error naming the line (a diff read in part is
//! not shown as if it were whole), and nothing here panics.
//!
//! [`ClosureDiff::render`] is the plain-text summary; [`ClosureDiff::notable`] calls out the
//! changes that matter beyond their size (kernel, systemd, bootloader, glibc, Nix) and says why.

use crate::version;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt::Write as _;

/// The most text [`parse_diff_closures`] reads.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
/// The most lines [`parse_diff_closures`] reads.
pub const MAX_LINES: usize = 100_000;
/// Longest package name or version kept; anything longer is refused.
const MAX_FIELD: usize = 256;
/// The smallest size change Nix prints.
const NIX_SIZE_THRESHOLD: i64 = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    #[error("the closure diff is {bytes} bytes, more than the {max} this reads", max = MAX_BYTES)]
    TooLarge { bytes: usize },
    #[error("the closure diff has more than {max} lines", max = MAX_LINES)]
    TooManyLines,
    #[error("line {line} of the closure diff does not read: {reason}")]
    Line { line: usize, reason: String },
    #[error("{path} is not a store path: {reason}")]
    StorePath { path: String, reason: String },
}

/// How a package changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Not in the old closure.
    Added,
    /// Not in the new closure.
    Removed,
    /// Every new version is newer than every old one (in Nix's order).
    Upgraded,
    /// Every new version is older than every old one.
    Downgraded,
    /// The same versions with another size, or a mix of newer and older versions.
    Changed,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Upgraded => "upgraded",
            ChangeKind::Downgraded => "downgraded",
            ChangeKind::Changed => "changed",
        }
    }

    fn mark(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Upgraded => '↑',
            ChangeKind::Downgraded => '↓',
            ChangeKind::Changed => '~',
        }
    }

    const ALL: [ChangeKind; 5] =
        [ChangeKind::Upgraded, ChangeKind::Downgraded, ChangeKind::Added, ChangeKind::Removed, ChangeKind::Changed];
}

/// One line of the diff: a package name, its versions before and after (only those that differ; an
/// empty string is Nix's empty version `ε`), and its size change when Nix printed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageChange {
    pub name: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub size_delta_bytes: Option<i64>,
    pub kind: ChangeKind,
}

/// The whole diff, in Nix's order (by name), with the sum of the printed size changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosureDiff {
    pub changes: Vec<PackageChange>,
    pub size_delta_bytes: i64,
}

/// Why a change is called out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotableKind {
    Kernel,
    Firmware,
    Systemd,
    Bootloader,
    Glibc,
    Nix,
}

impl NotableKind {
    /// What the change means for the host, in a sentence.
    pub fn why(self) -> &'static str {
        match self {
            NotableKind::Kernel => {
                "the kernel: it takes effect only after a reboot (the switch keeps the running kernel), and until \
                 then modules of the new kernel may not load"
            }
            NotableKind::Firmware => "device firmware: loaded when drivers start, so in practice at the next boot",
            NotableKind::Systemd => {
                "the service manager: the switch re-executes PID 1, a fault here can stop every service, and some \
                 changes need a reboot"
            }
            NotableKind::Bootloader => {
                "the bootloader: installed when the deploy is committed; a broken one can leave the host unable to \
                 boot, which no live rollback repairs"
            }
            NotableKind::Glibc => {
                "the C library every program links: running programs keep the old one until they restart"
            }
            NotableKind::Nix => {
                "Nix itself: its daemon on the host restarts, and later copies and deploys go through the new version"
            }
        }
    }

    /// The kind of change a package name stands for, if it is one worth calling out.
    pub fn of(name: &str) -> Option<NotableKind> {
        const NOT_THE_KERNEL: &[&str] = &["linux-pam", "linux-headers", "linux-firmware"];
        match name {
            "linux-firmware" => Some(NotableKind::Firmware),
            "linux" => Some(NotableKind::Kernel),
            n if n.starts_with("linux-") && !NOT_THE_KERNEL.contains(&n) => Some(NotableKind::Kernel),
            "systemd" | "systemd-minimal" => Some(NotableKind::Systemd),
            n if n.starts_with("systemd-boot") || n.starts_with("grub") => Some(NotableKind::Bootloader),
            "refind" | "limine" | "install-grub.sh" => Some(NotableKind::Bootloader),
            "glibc" => Some(NotableKind::Glibc),
            "nix" | "lix" => Some(NotableKind::Nix),
            _ => None,
        }
    }
}

/// A change called out before the rest, with why it matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notable {
    pub kind: NotableKind,
    pub name: String,
    pub change: ChangeKind,
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub why: String,
}

/// Whether a deploy changes nothing: the new system is the same store path as the running one.
pub fn no_change(old: &str, new: &str) -> bool {
    old == new
}

/// Parses the output of `nix store diff-closures OLD NEW` (see the module documentation).
pub fn parse_diff_closures(text: &str) -> Result<ClosureDiff, DiffError> {
    if text.len() > MAX_BYTES {
        return Err(DiffError::TooLarge { bytes: text.len() });
    }
    let mut changes = Vec::new();
    let mut total: i64 = 0;
    for (i, raw) in text.lines().enumerate() {
        if i >= MAX_LINES {
            return Err(DiffError::TooManyLines);
        }
        let line = clean(raw);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let change = parse_line(line).map_err(|reason| DiffError::Line { line: i + 1, reason })?;
        total = total.saturating_add(change.size_delta_bytes.unwrap_or(0));
        changes.push(change);
    }
    Ok(ClosureDiff { changes, size_delta_bytes: total })
}

/// Removes ANSI escape sequences (CSI `ESC [ … final`, and any other `ESC x` pair) and every other
/// control character.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, up to and including the final byte (@ to ~).
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out
}

fn parse_line(line: &str) -> Result<PackageChange, String> {
    let (name, rest) = line.split_once(": ").ok_or("no \"name: \" at its start")?;
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_FIELD || name.contains(char::is_whitespace) {
        return Err(format!("{:?} is not a package name", shorten(name)));
    }
    let rest = rest.trim();
    let (before, after, size) = match rest.split_once(" → ") {
        Some((left, right)) => {
            let before = versions(left)?;
            let mut pieces: Vec<&str> = right.split(", ").collect();
            let size = match pieces.last().map(|p| parse_size(p)) {
                Some(Some(n)) if pieces.len() > 1 => {
                    pieces.pop();
                    Some(n)
                }
                _ => None,
            };
            let after = versions(&pieces.join(", "))?;
            if before.is_empty() && after.is_empty() {
                return Err("∅ → ∅ is not a change".to_owned());
            }
            (before, after, size)
        }
        None => {
            let size = parse_size(rest).ok_or_else(|| format!("{:?} is neither versions nor a size", shorten(rest)))?;
            (Vec::new(), Vec::new(), Some(size))
        }
    };
    let kind = kind_of(&before, &after);
    Ok(PackageChange { name: name.to_owned(), before, after, size_delta_bytes: size, kind })
}

/// One side of `→`: `∅` (none), or versions separated by `, ` with `ε` for the empty version.
fn versions(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    if s == "∅" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for v in s.split(", ") {
        let v = v.trim();
        if v.is_empty() || v == "∅" || v.len() > MAX_FIELD || v.contains(char::is_whitespace) || v.contains('→') {
            return Err(format!("{:?} is not a list of versions", shorten(s)));
        }
        out.push(if v == "ε" { String::new() } else { v.to_owned() });
    }
    Ok(out)
}

/// A size as Nix prints it: an optional sign, a decimal number, a space and a binary unit from KiB
/// up (Nix shows bytes as fractions of a KiB). Returns bytes.
fn parse_size(s: &str) -> Option<i64> {
    let (number, unit) = s.trim().split_once(' ')?;
    let power = match unit {
        "KiB" => 1,
        "MiB" => 2,
        "GiB" => 3,
        "TiB" => 4,
        "PiB" => 5,
        "EiB" => 6,
        "ZiB" => 7,
        "YiB" => 8,
        _ => return None,
    };
    let (negative, digits) = match number.as_bytes().first()? {
        b'+' => (false, number.get(1..)?),
        b'-' => (true, number.get(1..)?),
        _ => (false, number),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 24 || frac.len() > 6 || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let value: f64 = digits.parse().ok()?;
    let bytes = (value * 1024f64.powi(power)).round();
    // `as` saturates at the ends of i64, which is what a size this large should do.
    let bytes = bytes as i64;
    Some(if negative { bytes.saturating_neg() } else { bytes })
}

fn kind_of(before: &[String], after: &[String]) -> ChangeKind {
    match (before.is_empty(), after.is_empty()) {
        (true, false) => ChangeKind::Added,
        (false, true) => ChangeKind::Removed,
        (true, true) => ChangeKind::Changed,
        (false, false) => {
            let all = |want: Ordering| after.iter().all(|a| before.iter().all(|b| version::compare(a, b) == want));
            if all(Ordering::Greater) {
                ChangeKind::Upgraded
            } else if all(Ordering::Less) {
                ChangeKind::Downgraded
            } else {
                ChangeKind::Changed
            }
        }
    }
}

impl ClosureDiff {
    /// No package changed (as far as Nix prints: versions, or a size by 8 KiB or more).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes of each kind.
    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }

    /// The changes worth calling out, kernel first, with why each matters.
    pub fn notable(&self) -> Vec<Notable> {
        let mut out: Vec<Notable> = self
            .changes
            .iter()
            .filter_map(|c| {
                let kind = NotableKind::of(&c.name)?;
                Some(Notable {
                    kind,
                    name: c.name.clone(),
                    change: c.kind,
                    before: c.before.clone(),
                    after: c.after.clone(),
                    why: kind.why().to_owned(),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        out
    }

    /// The plain-text summary a person reads: counts by kind and the size change, the notable
    /// changes with why they matter, then every change sorted by name. An empty diff says that no
    /// package changed; whether the system itself is unchanged is [`no_change`]'s question, which
    /// [`ClosureDiff::render_between`] asks.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            out.push_str(
                "no package changed: no version changed and no package's size moved by 8 KiB or more \
                 (smaller changes, such as configuration files, are not listed)\n",
            );
            return out;
        }
        let counts: Vec<String> = ChangeKind::ALL
            .iter()
            .filter_map(|&k| match self.count(k) {
                0 => None,
                n => Some(format!("{n} {}", k.as_str())),
            })
            .collect();
        let n = self.changes.len();
        let _ = writeln!(
            out,
            "{n} package{} changed ({}), closure size {}",
            if n == 1 { "" } else { "s" },
            counts.join(", "),
            human_size(self.size_delta_bytes)
        );
        let notable = self.notable();
        if !notable.is_empty() {
            out.push_str("\nnotable:\n");
            for x in &notable {
                let _ = writeln!(
                    out,
                    "  ! {} {} → {} ({}): {}",
                    x.name,
                    show_versions(&x.before),
                    show_versions(&x.after),
                    x.change.as_str(),
                    x.why
                );
            }
        }
        out.push_str("\nchanges:\n");
        let mut sorted: Vec<&PackageChange> = self.changes.iter().collect();
        sorted.sort_by(|a, b| (&a.name, &a.before, &a.after).cmp(&(&b.name, &b.before, &b.after)));
        for c in sorted {
            let _ = write!(out, "  {} {}", c.kind.mark(), c.name);
            if !c.before.is_empty() || !c.after.is_empty() {
                let _ = write!(out, " {} → {}", show_versions(&c.before), show_versions(&c.after));
            }
            if let Some(d) = c.size_delta_bytes {
                let _ = write!(out, " ({})", human_size(d));
            }
            out.push('\n');
        }
        out
    }

    /// [`ClosureDiff::render`] for a deploy from `old` to `new`: when they are the same path, the
    /// plain statement that nothing changes.
    pub fn render_between(&self, old: &str, new: &str) -> String {
        if no_change(old, new) {
            return "no change: the new system is the running one\n".to_owned();
        }
        format!("{old}\n→ {new}\n\n{}", self.render())
    }
}

/// Nix's way of showing one side: `∅` for none, `ε` for the empty version.
fn show_versions(v: &[String]) -> String {
    if v.is_empty() {
        return "∅".to_owned();
    }
    v.iter().map(|s| if s.is_empty() { "ε" } else { s.as_str() }).collect::<Vec<_>>().join(", ")
}

/// A signed size in binary units with one decimal (`+1.5 MiB`, `-512 B`, `0 B`).
pub fn human_size(bytes: i64) -> String {
    let sign = match bytes.cmp(&0) {
        Ordering::Less => "-",
        Ordering::Equal => "",
        Ordering::Greater => "+",
    };
    let abs = bytes.unsigned_abs();
    if abs < 1024 {
        return format!("{sign}{abs} B");
    }
    let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = abs as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{sign}{value:.1} {}", units[unit])
}

/// Shortens hostile input before it is echoed in an error.
fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Splits a store path's name into package name and version the way Nix does (`DrvName`): the
/// version starts after the first `-` that is followed by something other than a letter.
pub fn split_name(name: &str) -> (&str, &str) {
    let b = name.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

/// One closure as `nix path-info --json --recursive` prints it: each path with its NAR size.
/// Untrusted (it may come from the host): bounded like [`parse_diff_closures`], every path checked.
pub fn parse_path_infos(json: &str) -> Result<Vec<(crate::binding::StorePath, u64)>, DiffError> {
    if json.len() > MAX_BYTES {
        return Err(DiffError::TooLarge { bytes: json.len() });
    }
    #[derive(Deserialize)]
    struct Info {
        path: String,
        #[serde(rename = "narSize", default)]
        nar_size: u64,
    }
    let infos: Vec<Info> =
        serde_json::from_str(json).map_err(|e| DiffError::Line { line: e.line(), reason: e.to_string() })?;
    if infos.len() > MAX_LINES {
        return Err(DiffError::TooManyLines);
    }
    infos.into_iter().map(|i| Ok((crate::binding::parse_store_path(&i.path)?, i.nar_size))).collect()
}

/// The closure diff of two closures, computed as `nix store diff-closures` computes it: paths
/// grouped by package name, the sets of versions compared, NAR sizes summed; a package appears
/// when its versions differ or its size moved by at least 8 KiB (Nix's threshold). Used when the old
/// closure is only on the host (its path-infos read there), so the diff is known before the copy.
pub fn diff_closures(
    old: &[(crate::binding::StorePath, u64)],
    new: &[(crate::binding::StorePath, u64)],
) -> ClosureDiff {
    use std::collections::{BTreeMap, BTreeSet};
    type Side = BTreeMap<String, (BTreeSet<String>, u64)>;
    let group = |closure: &[(crate::binding::StorePath, u64)]| {
        let mut out: Side = BTreeMap::new();
        for (path, size) in closure {
            let (name, version) = split_name(path.name());
            let e = out.entry(name.to_owned()).or_default();
            e.0.insert(version.to_owned());
            e.1 = e.1.saturating_add(*size);
        }
        out
    };
    let (a, b) = (group(old), group(new));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut changes = Vec::new();
    let mut total: i64 = 0;
    for name in names {
        let empty = (BTreeSet::new(), 0);
        let (va, sa) = a.get(name).unwrap_or(&empty);
        let (vb, sb) = b.get(name).unwrap_or(&empty);
        let delta = i64::try_from(*sb).unwrap_or(i64::MAX).saturating_sub(i64::try_from(*sa).unwrap_or(i64::MAX));
        total = total.saturating_add(delta);
        // Nix removes the versions present on both sides before showing them.
        let before: Vec<String> = va.difference(vb).cloned().collect();
        let after: Vec<String> = vb.difference(va).cloned().collect();
        if before.is_empty() && after.is_empty() && !nix_prints_size(delta) {
            continue;
        }
        let kind = kind_of(&before, &after);
        let size = nix_prints_size(delta).then_some(delta);
        changes.push(PackageChange { name: name.clone(), before, after, size_delta_bytes: size, kind });
    }
    ClosureDiff { changes, size_delta_bytes: total }
}

/// Whether a size change is one Nix would print (used by tests and callers that build diffs).
pub fn nix_prints_size(delta: i64) -> bool {
    delta.unsigned_abs() >= NIX_SIZE_THRESHOLD.unsigned_abs()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[test]
    fn the_diff_of_two_closures_is_nix_s() {
        use crate::binding::parse_store_path;
        assert_eq!(split_name("nixos-system-c1-26.05.2"), ("nixos-system-c1", "26.05.2"));
        assert_eq!(split_name("linux-6.1.2"), ("linux", "6.1.2"));
        assert_eq!(split_name("hello"), ("hello", ""));
        assert_eq!(split_name("foo-bar-1.0-man"), ("foo-bar", "1.0-man"));
        let p = |hash: char, name: &str| {
            parse_store_path(&format!("/nix/store/{}-{name}", hash.to_string().repeat(32))).unwrap()
        };
        let old = [(p('a', "linux-6.1.1"), 100 << 20), (p('b', "hello-2.12"), 4096), (p('c', "gone-1.0"), 50_000)];
        let new = [(p('d', "linux-6.1.2"), 101 << 20), (p('b', "hello-2.12"), 4096), (p('f', "fresh-0.1"), 20_000)];
        let d = diff_closures(&old, &new);
        let got: Vec<(&str, ChangeKind, Vec<String>, Vec<String>)> =
            d.changes.iter().map(|c| (c.name.as_str(), c.kind, c.before.clone(), c.after.clone())).collect();
        assert_eq!(
            got,
            [
                ("fresh", ChangeKind::Added, vec![], vec!["0.1".to_owned()]),
                ("gone", ChangeKind::Removed, vec!["1.0".to_owned()], vec![]),
                ("linux", ChangeKind::Upgraded, vec!["6.1.1".to_owned()], vec!["6.1.2".to_owned()]),
            ]
        );
        assert_eq!(d.changes[2].size_delta_bytes, Some(1 << 20));
        assert!(d.notable().iter().any(|n| n.name == "linux"));
        assert!(diff_closures(&old, &old).is_empty());
        // The path-info JSON Nix prints, hostile input refused with a reason.
        let json =
            r#"[{"path":"/nix/store/jz2595sfad0cvijzambji7v04rjkamxf-linux-6.1.1","narSize":128,"references":[]}]"#;
        assert_eq!(parse_path_infos(json).unwrap()[0].1, 128);
        assert!(parse_path_infos(r#"[{"path":"/etc/passwd","narSize":1}]"#).is_err());
        assert!(parse_path_infos("not json").is_err());
    }
    use super::*;

    fn one(line: &str) -> PackageChange {
        let d = parse_diff_closures(line).unwrap();
        assert_eq!(d.changes.len(), 1, "{line}");
        d.changes.into_iter().next().unwrap()
    }

    #[test]
    fn reads_every_line_shape() {
        let c = one("firefox: 95.0 → 96.0, +1.5 MiB");
        assert_eq!(
            (c.name.as_str(), c.before.clone(), c.after.clone()),
            ("firefox", vec!["95.0".into()], vec!["96.0".into()])
        );
        assert_eq!(c.size_delta_bytes, Some(1_572_864));
        assert_eq!(c.kind, ChangeKind::Upgraded);

        let c = one("foo: ∅ → 1.2, +3.0 KiB");
        assert_eq!(
            (c.before.len(), c.after.clone(), c.size_delta_bytes, c.kind),
            (0, vec!["1.2".into()], Some(3072), ChangeKind::Added)
        );

        let c = one("bar: 1.0 → ∅, -2.0 MiB");
        assert_eq!((c.after.len(), c.size_delta_bytes, c.kind), (0, Some(-2_097_152), ChangeKind::Removed));

        let c = one("linux: 5.15.80 → 6.1.2");
        assert_eq!((c.size_delta_bytes, c.kind), (None, ChangeKind::Upgraded));

        let c = one("glibc: +12.3 KiB");
        assert_eq!((c.before.len(), c.after.len(), c.kind), (0, 0, ChangeKind::Changed));
        assert_eq!(c.size_delta_bytes, Some(12_595));

        let c = one("a: 1.0, 1.1 → 1.2");
        assert_eq!(
            (c.before.clone(), c.after.clone(), c.kind),
            (vec!["1.0".into(), "1.1".into()], vec!["1.2".into()], ChangeKind::Upgraded)
        );

        let c = one("zlib: ε → 1.3");
        assert_eq!((c.before.clone(), c.kind), (vec![String::new()], ChangeKind::Upgraded));

        let c = one("openssl: 3.0.8 → 1.1.1t, -1.2 MiB");
        assert_eq!(c.kind, ChangeKind::Downgraded);

        let c = one("python3: 3.10.9, 3.11.1 → 3.10.8, 3.12.0, 64.0 KiB");
        assert_eq!(
            (c.kind, c.size_delta_bytes),
            (ChangeKind::Changed, Some(65_536)),
            "mixed versions; newer Nix prints no '+'"
        );
    }

    #[test]
    fn reads_the_example_of_the_nix_manual_and_sums_sizes() {
        let text = "acpi-call: 2020-04-07-5.8.16 → 2020-04-07-5.8.18\n\
                    baloo-widgets: 20.08.1 → 20.08.2\n\
                    bluez-qt: +12.6 KiB\n\
                    dolphin: 20.08.1 → 20.08.2, +13.9 KiB\n\
                    kdeconnect: 20.08.2 → ∅, -6597.8 KiB\n\
                    kdeconnect-kde: ∅ → 20.08.2, +6599.7 KiB\n";
        let d = parse_diff_closures(text).unwrap();
        assert_eq!(d.changes.len(), 6);
        let kinds: Vec<ChangeKind> = d.changes.iter().map(|c| c.kind).collect();
        use ChangeKind::*;
        assert_eq!(kinds, [Upgraded, Upgraded, Changed, Upgraded, Removed, Added]);
        let want: i64 = [12.6f64, 13.9, -6597.8, 6599.7].iter().map(|k| (k * 1024.0).round() as i64).sum();
        assert_eq!(d.size_delta_bytes, want);
    }

    #[test]
    fn ansi_colours_and_control_characters_are_removed() {
        let c = one("gl\u{7}ibc: \u{1b}[31;1m+12.3 KiB\u{1b}[0m");
        assert_eq!(c.name, "glibc");
        assert_eq!(c.size_delta_bytes, Some(12_595));
        let c = one("ev\u{1b}]il\u{0}: 1 → 2\r");
        assert!(c.name.chars().all(|ch| !ch.is_control()), "{:?}", c.name);
    }

    #[test]
    fn bad_lines_are_errors_that_name_the_line() {
        for bad in [
            "no colon here",
            ": 1 → 2",
            "x: ",
            "x: 1 →",
            "x: ∅ → ∅",
            "x: 1 → 2, +3 XiB",
            "x: 12.3 XiB",
            "x: +.5 KiB",
            "x: 1, , 2 → 3",
            "x y: 1 → 2",
            "x: ++1.0 KiB",
        ] {
            let err = parse_diff_closures(&format!("ok: 1 → 2\n{bad}\n")).unwrap_err();
            assert!(matches!(err, DiffError::Line { line: 2, .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn input_is_bounded() {
        let big = "a".repeat(MAX_BYTES + 1);
        assert_eq!(parse_diff_closures(&big), Err(DiffError::TooLarge { bytes: MAX_BYTES + 1 }));
        let many = "\n".repeat(MAX_LINES + 1);
        assert_eq!(parse_diff_closures(&many), Err(DiffError::TooManyLines));
        let fine = "x: +8.0 KiB\n".repeat(1000);
        assert_eq!(parse_diff_closures(&fine).unwrap().size_delta_bytes, 1000 * 8192);
        // Absurd sizes saturate instead of overflowing.
        let d = parse_diff_closures("x: +999999999999999999999.9 YiB\ny: +1.0 YiB\n").unwrap();
        assert_eq!(d.size_delta_bytes, i64::MAX);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and many byte mutations of a real diff.
        let base = "firefox: 95.0 → 96.0, +1.5 MiB\nfoo: ∅ → ε, -3.0 KiB\nglibc: \u{1b}[32m-9.0 KiB\u{1b}[0m\n";
        for end in 0..=base.len() {
            if let Some(prefix) = base.get(..end) {
                let _ = parse_diff_closures(prefix);
            }
        }
        let bytes = base.as_bytes();
        let mut seed: u32 = 7;
        for _ in 0..5000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let mut b = bytes.to_vec();
            let at = (seed as usize >> 8) % b.len();
            b[at] = (seed >> 3) as u8;
            let text = String::from_utf8_lossy(&b);
            if let Ok(d) = parse_diff_closures(&text) {
                let _ = d.render();
            }
        }
    }

    #[test]
    fn notable_changes_are_called_out_with_why() {
        let text = "glibc: 2.35 → 2.37\nlinux: 5.15.80 → 6.1.2, +20.0 MiB\nlinux-pam: 1.5.2 → 1.5.3\n\
                    systemd: 252.4 → 253.1\ngrub: 2.06 → 2.12\nnix: 2.13.3 → 2.18.1\nfirefox: 1 → 2\n\
                    linux-firmware: 20230117 → 20230210\n";
        let d = parse_diff_closures(text).unwrap();
        let n = d.notable();
        let kinds: Vec<(NotableKind, &str)> = n.iter().map(|x| (x.kind, x.name.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (NotableKind::Kernel, "linux"),
                (NotableKind::Firmware, "linux-firmware"),
                (NotableKind::Systemd, "systemd"),
                (NotableKind::Bootloader, "grub"),
                (NotableKind::Glibc, "glibc"),
                (NotableKind::Nix, "nix"),
            ]
        );
        assert!(n[0].why.contains("reboot"));
        for name in ["systemd-boot", "refind", "limine", "linux-rt", "lix"] {
            assert!(NotableKind::of(name).is_some(), "{name}");
        }
        assert_eq!(NotableKind::of("linux-pam"), None);
        assert_eq!(NotableKind::of("linuxconsoletools"), None);
    }

    #[test]
    fn render_is_deterministic_and_puts_notable_changes_first() {
        let d = parse_diff_closures("zsh: 5.8 → 5.9\nlinux: 6.1.1 → 6.1.2, +1.0 MiB\nabc: ∅ → 1, +8.0 KiB\n").unwrap();
        let text = d.render();
        assert_eq!(text, d.clone().render());
        assert!(text.starts_with("3 packages changed (2 upgraded, 1 added), closure size +1.0 MiB\n"), "{text}");
        let notable = text.find("notable:").unwrap();
        let changes = text.find("changes:").unwrap();
        assert!(notable < changes);
        assert!(text.contains("  ! linux 6.1.1 → 6.1.2 (upgraded): the kernel"));
        let abc = text.find("  + abc ∅ → 1 (+8.0 KiB)").unwrap();
        let zsh = text.find("  ↑ zsh 5.8 → 5.9").unwrap();
        assert!(changes < abc && abc < zsh, "{text}");
    }

    #[test]
    fn empty_and_unchanged_say_so_plainly() {
        let d = parse_diff_closures("\n\n").unwrap();
        assert!(d.is_empty());
        assert!(d.render().starts_with("no package changed"));
        let p = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixos-system-a";
        let q = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-a";
        assert!(no_change(p, p));
        assert!(!no_change(p, q));
        assert_eq!(d.render_between(p, p), "no change: the new system is the running one\n");
        assert!(d.render_between(p, q).contains("no package changed"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(-512), "-512 B");
        assert_eq!(human_size(1536), "+1.5 KiB");
        assert_eq!(human_size(-3 * 1024 * 1024 * 1024), "-3.0 GiB");
        assert_eq!(human_size(i64::MIN), "-8.0 EiB");
        assert!(nix_prints_size(8192) && !nix_prints_size(-8191));
    }
}
