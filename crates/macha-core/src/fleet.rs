//! Fleet rules, without IO: which operating system a host runs (from `/etc/os-release` and
//! `uname`), what it is for (its services, capabilities and role), and the discovery name rules —
//! completing short names, matching allowed-domain patterns, and whether Macha may contact a host.
//!
//! Architecture invariant: a host name that came from a log is never contacted because of the log
//! alone. [`admission`] says `Discovered` (never contacted) unless the name matches an allowed
//! domain pattern of the configuration; a person can admit it later. Names are validated
//! [`HostName`]s, so nothing that reaches `ssh` can start with `-`.

use crate::names::{HostName, NameError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The operating systems Macha tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OsFamily {
    Nixos,
    Ubuntu,
    Debian,
    Arch,
    Fedora,
    Rhel,
    Alpine,
    Macos,
    Freebsd,
    /// A Linux kernel without a recognised distribution.
    Linux,
}

impl OsFamily {
    pub const ALL: [OsFamily; 10] = [
        OsFamily::Nixos,
        OsFamily::Ubuntu,
        OsFamily::Debian,
        OsFamily::Arch,
        OsFamily::Fedora,
        OsFamily::Rhel,
        OsFamily::Alpine,
        OsFamily::Macos,
        OsFamily::Freebsd,
        OsFamily::Linux,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Nixos => "nixos",
            OsFamily::Ubuntu => "ubuntu",
            OsFamily::Debian => "debian",
            OsFamily::Arch => "arch",
            OsFamily::Fedora => "fedora",
            OsFamily::Rhel => "rhel",
            OsFamily::Alpine => "alpine",
            OsFamily::Macos => "macos",
            OsFamily::Freebsd => "freebsd",
            OsFamily::Linux => "linux",
        }
    }

    pub fn parse(s: &str) -> Option<OsFamily> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    fn from_id(id: &str) -> Option<OsFamily> {
        Some(match id {
            "nixos" => OsFamily::Nixos,
            "ubuntu" => OsFamily::Ubuntu,
            "debian" => OsFamily::Debian,
            "arch" | "archarm" => OsFamily::Arch,
            "fedora" => OsFamily::Fedora,
            "rhel" | "centos" | "rocky" | "almalinux" | "ol" => OsFamily::Rhel,
            "alpine" => OsFamily::Alpine,
            _ => return None,
        })
    }
}

impl std::fmt::Display for OsFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What Macha knows about a host's operating system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    pub family: OsFamily,
    /// `PRETTY_NAME` of os-release, else `NAME VERSION`, else the kernel name.
    pub name: String,
    /// `VERSION_ID`, or the kernel release without os-release.
    pub version: Option<String>,
    /// `uname -s -r` (kernel name and release), if known.
    pub kernel: Option<String>,
    /// `uname -m`, if known.
    pub arch: Option<String>,
}

/// The most text read from one os-release value.
const OS_VALUE_MAX: usize = 128;

/// Parses os-release (`KEY=value`, values optionally quoted with `"` or `'`, `\` escapes inside
/// double quotes). Comments, blank and malformed lines are skipped; values are sanitised and cut.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else { continue };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            continue;
        }
        let value = unquote(raw.trim());
        let clean: String =
            value.chars().filter(|c| !c.is_control()).take(OS_VALUE_MAX).collect::<String>().trim().to_owned();
        out.insert(key.to_owned(), clean);
    }
    out
}

fn unquote(raw: &str) -> String {
    let bytes = raw.as_bytes();
    match bytes.first() {
        Some(q @ (b'"' | b'\'')) if raw.len() >= 2 && bytes.last() == Some(q) => {
            let inner = &raw[1..raw.len() - 1];
            if *q == b'\'' {
                return inner.to_owned();
            }
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => raw.to_owned(),
    }
}

/// Detects the operating system from the text of `/etc/os-release` (if the host has one) and the
/// output of `uname -s -r -m` (if it could be run). os-release decides when it names a known
/// distribution (by `ID`, then `ID_LIKE`); otherwise the kernel name does (`Darwin` is macOS,
/// `FreeBSD` is FreeBSD); anything else is generic Linux.
pub fn detect_os(os_release: Option<&str>, uname: Option<&str>) -> OsInfo {
    let fields = os_release.map(parse_os_release).unwrap_or_default();
    let mut uname_parts = uname.unwrap_or_default().split_whitespace().map(|s| clean_word(s, 64));
    let (kernel_name, kernel_release, arch) = (uname_parts.next(), uname_parts.next(), uname_parts.next());
    let kernel = match (&kernel_name, &kernel_release) {
        (Some(n), Some(r)) => Some(format!("{n} {r}")),
        (Some(n), None) => Some(n.clone()),
        _ => None,
    };
    let id = fields.get("ID").map(|s| s.to_ascii_lowercase()).unwrap_or_default();
    let like = fields.get("ID_LIKE").map(|s| s.to_ascii_lowercase()).unwrap_or_default();
    let from_release = OsFamily::from_id(&id).or_else(|| {
        // ID_LIKE lists the closest first ("rhel centos fedora", "ubuntu debian").
        like.split_whitespace().find_map(OsFamily::from_id)
    });
    let from_kernel = match kernel_name.as_deref() {
        Some("Darwin") => Some(OsFamily::Macos),
        Some("FreeBSD") => Some(OsFamily::Freebsd),
        _ => None,
    };
    let family = from_release.or(from_kernel).unwrap_or(OsFamily::Linux);
    let name = fields
        .get("PRETTY_NAME")
        .filter(|s| !s.is_empty())
        .cloned()
        .or_else(|| {
            fields.get("NAME").map(|n| match fields.get("VERSION") {
                Some(v) => format!("{n} {v}"),
                None => n.clone(),
            })
        })
        .unwrap_or_else(|| match family {
            OsFamily::Macos => "macOS".to_owned(),
            OsFamily::Freebsd => "FreeBSD".to_owned(),
            _ => kernel_name.clone().unwrap_or_else(|| "Linux".to_owned()),
        });
    let version = fields
        .get("VERSION_ID")
        .filter(|s| !s.is_empty())
        .cloned()
        .or_else(|| if fields.is_empty() { kernel_release.clone() } else { None });
    OsInfo { family, name, version, kernel, arch }
}

fn clean_word(s: &str, max: usize) -> String {
    s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect()
}

/// What a host can do, from the services that run on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Containers,
    WebServer,
    Database,
    RemoteAccess,
    AiInference,
    Desktop,
    Monitoring,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Containers,
        Capability::WebServer,
        Capability::Database,
        Capability::RemoteAccess,
        Capability::AiInference,
        Capability::Desktop,
        Capability::Monitoring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Containers => "containers",
            Capability::WebServer => "web-server",
            Capability::Database => "database",
            Capability::RemoteAccess => "remote-access",
            Capability::AiInference => "ai-inference",
            Capability::Desktop => "desktop",
            Capability::Monitoring => "monitoring",
        }
    }

    /// Service stems that give the capability (a trailing `*` is a prefix match).
    pub fn services(self) -> &'static [&'static str] {
        match self {
            Capability::Containers => {
                &["docker", "containerd", "podman", "lxc", "lxd", "incus", "crio", "k3s", "systemd-nspawn@*"]
            }
            Capability::WebServer => &["nginx", "apache2", "httpd", "caddy", "traefik", "haproxy", "lighttpd"],
            Capability::Database => &[
                "postgresql",
                "postgresql@*",
                "mysql",
                "mysqld",
                "mariadb",
                "mongod",
                "mongodb",
                "redis",
                "redis-*",
                "influxdb",
                "clickhouse-server",
                "cassandra",
            ],
            Capability::RemoteAccess => &["ssh", "sshd", "xrdp", "x11vnc", "wayvnc", "guacd", "teleport"],
            Capability::AiInference => {
                &["ollama", "llama-cpp", "llama-server", "vllm", "localai", "text-generation-inference"]
            }
            Capability::Desktop => &["display-manager", "gdm", "sddm", "lightdm", "greetd"],
            Capability::Monitoring => &[
                "prometheus",
                "grafana",
                "grafana-server",
                "prometheus-node-exporter",
                "node-exporter",
                "netdata",
                "zabbix-agent",
                "telegraf",
            ],
        }
    }
}

/// What a host is for, from its capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    AiWorkstation,
    Server,
    Workstation,
    Minimal,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::AiWorkstation => "ai-workstation",
            Role::Server => "server",
            Role::Workstation => "workstation",
            Role::Minimal => "minimal",
        }
    }
}

/// The profile of a host, recorded on first contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub os: OsInfo,
    /// Running services (unit names), sorted.
    pub services: Vec<String>,
    pub cpu_cores: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub gpus: u32,
    pub capabilities: BTreeSet<Capability>,
    pub role: Role,
}

/// The stem of a service unit name (`nginx.service` → `nginx`); `None` for other unit types.
fn service_stem(unit: &str) -> Option<&str> {
    unit.strip_suffix(".service")
}

fn stem_matches(pattern: &str, stem: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => stem.starts_with(prefix),
        None => pattern == stem,
    }
}

/// The capabilities the running services give.
pub fn capabilities<S: AsRef<str>>(running_services: &[S]) -> BTreeSet<Capability> {
    let stems: Vec<&str> = running_services.iter().filter_map(|s| service_stem(s.as_ref())).collect();
    Capability::ALL
        .into_iter()
        .filter(|c| c.services().iter().any(|p| stems.iter().any(|s| stem_matches(p, s))))
        .collect()
}

/// The role, from the capabilities (first rule that applies): model inference → `ai-workstation`;
/// a desktop → `workstation`; a web server, database or containers → `server`; else `minimal`.
pub fn role(capabilities: &BTreeSet<Capability>, gpus: u32) -> Role {
    let has = |c| capabilities.contains(&c);
    if has(Capability::AiInference) || (gpus > 0 && has(Capability::Desktop)) {
        Role::AiWorkstation
    } else if has(Capability::Desktop) {
        Role::Workstation
    } else if has(Capability::WebServer) || has(Capability::Database) || has(Capability::Containers) {
        Role::Server
    } else {
        Role::Minimal
    }
}

/// Builds the profile from what the first contact observed.
pub fn profile<S: AsRef<str>>(
    os: OsInfo,
    running_services: &[S],
    cpu_cores: Option<u32>,
    memory_bytes: Option<u64>,
    gpus: u32,
) -> Profile {
    let mut services: Vec<String> = running_services.iter().map(|s| s.as_ref().to_owned()).collect();
    services.sort();
    services.dedup();
    let capabilities = capabilities(&services);
    let role = role(&capabilities, gpus);
    Profile { os, services, cpu_cores, memory_bytes, gpus, capabilities, role }
}

/// An allowed-domain pattern of the configuration: `example.org` allows every name under
/// `example.org` at any depth (`web1.example.org`, `a.b.example.org`); `*.example.org` allows one
/// label under it only (`web1.example.org`, not `a.b.example.org`). Neither allows the bare domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainPattern {
    domain: HostName,
    one_label: bool,
}

impl DomainPattern {
    pub fn parse(raw: &str) -> Result<DomainPattern, NameError> {
        let (one_label, rest) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let domain = HostName::parse(rest)?;
        if domain.is_local() {
            return Err(NameError::HostMalformed(raw.to_owned()));
        }
        Ok(DomainPattern { domain, one_label })
    }

    pub fn matches(&self, name: &HostName) -> bool {
        let Some(prefix) = name.as_str().strip_suffix(self.domain.as_str()) else { return false };
        let Some(labels) = prefix.strip_suffix('.') else { return false };
        !labels.is_empty() && (!self.one_label || !labels.contains('.'))
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.one_label { write!(f, "*.{}", self.domain) } else { write!(f, "{}", self.domain) }
    }
}
impl TryFrom<String> for DomainPattern {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DomainPattern::parse(&s)
    }
}
impl From<DomainPattern> for String {
    fn from(p: DomainPattern) -> String {
        p.to_string()
    }
}

/// Completes a host name: a single label (`web1`) gets the configured domain (`web1.example.org`);
/// a dotted name stays as it is. Validates the result.
pub fn complete_name(raw: &str, domain: Option<&HostName>) -> Result<HostName, NameError> {
    let name = HostName::parse(raw)?;
    match domain {
        Some(d) if !name.as_str().contains('.') && !name.is_local() => {
            HostName::parse(&format!("{}.{}", name.as_str(), d.as_str()))
        }
        _ => Ok(name),
    }
}

/// How far Macha trusts a registered host (the registry's states, as the rules see them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Named in the configuration: contacted, observed; actions once its key is pinned and trusted.
    Configured,
    /// Named by a log only: never contacted.
    Discovered,
    /// Allowed by a domain pattern or admitted by a person: contacted (if its host key is pinned)
    /// and observed; no actions.
    Admitted,
    /// Its host key was pinned by a person (or the configuration): observed, and actions may run.
    Trusted,
    /// Removed by a person: never contacted again, history kept.
    Forgotten,
}

impl Standing {
    /// Whether Macha may open an SSH connection to the host at all.
    pub fn may_connect(self) -> bool {
        matches!(self, Standing::Configured | Standing::Admitted | Standing::Trusted)
    }
    /// Whether actions may target the host (the policy's `known_hosts`).
    pub fn may_act(self) -> bool {
        self == Standing::Trusted
    }
}

/// What discovery makes of one `_HOSTNAME` seen in the remote journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Not a host name Macha registers (invalid, `localhost`, this host), with the reason.
    Ignored(String),
    /// Register as discovered: never contacted until a person admits it.
    Discovered(HostName),
    /// Register as admitted: the name matches this allowed-domain pattern.
    Admitted(HostName, DomainPattern),
}

/// The discovery rule for one raw `_HOSTNAME`: validate, complete with `domain`, skip this host's
/// own names and the names of hosts already registered (`registered`: their full names; a short
/// name or a trailing-dot form of one of them is that host, not a new one), and admit only names
/// matching an allowed-domain pattern.
pub fn admission(
    raw: &str,
    domain: Option<&HostName>,
    allowed: &[DomainPattern],
    own_names: &[&str],
    registered: &[&str],
) -> Admission {
    let trimmed = raw.trim();
    let name = match complete_name(trimmed, domain) {
        Ok(n) => n,
        Err(e) => return Admission::Ignored(e.to_string()),
    };
    let bare = trimmed.trim_end_matches('.');
    let short_raw = !bare.contains('.');
    if let Some(r) = registered.iter().find(|r| {
        r.eq_ignore_ascii_case(name.as_str())
            || r.eq_ignore_ascii_case(bare)
            || (short_raw && r.split('.').next().is_some_and(|s| s.eq_ignore_ascii_case(bare)))
    }) {
        return Admission::Ignored(format!("{trimmed} names the registered host {r}"));
    }
    let short = name.as_str().split('.').next().unwrap_or_default();
    if name.is_local() || short == "localhost" {
        return Admission::Ignored(format!("{name} is a local name"));
    }
    if own_names.iter().any(|o| o.eq_ignore_ascii_case(name.as_str()) || o.eq_ignore_ascii_case(trimmed)) {
        return Admission::Ignored(format!("{name} is this host"));
    }
    match allowed.iter().find(|p| p.matches(&name)) {
        Some(p) => Admission::Admitted(name, p.clone()),
        None => Admission::Discovered(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> HostName {
        HostName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const DEBIAN: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";

    #[test]
    fn os_release_parsing() {
        let f = parse_os_release(
            "# c\nID=nixos\nNAME='Nix OS'\nPRETTY_NAME=\"a \\\"b\\\"\"\nbad line\nlower=x\nX=\"\x07bell\"\n",
        );
        assert_eq!(f.get("ID").map(String::as_str), Some("nixos"));
        assert_eq!(f.get("NAME").map(String::as_str), Some("Nix OS"));
        assert_eq!(f.get("PRETTY_NAME").map(String::as_str), Some("a \"b\""));
        assert_eq!(f.get("X").map(String::as_str), Some("bell"));
        assert!(!f.contains_key("lower"));
        let long = format!("NAME={}", "x".repeat(1000));
        assert_eq!(parse_os_release(&long).get("NAME").map(String::len), Some(OS_VALUE_MAX));
    }

    #[test]
    fn detects_every_family() {
        let cases: &[(&str, Option<&str>, OsFamily)] = &[
            ("ID=nixos\nVERSION_ID=\"25.11\"\nPRETTY_NAME=\"NixOS 25.11 (Xantusia)\"", None, OsFamily::Nixos),
            ("ID=ubuntu\nID_LIKE=debian", None, OsFamily::Ubuntu),
            (DEBIAN, None, OsFamily::Debian),
            ("ID=linuxmint\nID_LIKE=\"ubuntu debian\"", None, OsFamily::Ubuntu),
            ("ID=arch", None, OsFamily::Arch),
            ("ID=manjaro\nID_LIKE=arch", None, OsFamily::Arch),
            ("ID=fedora", None, OsFamily::Fedora),
            ("ID=\"rhel\"", None, OsFamily::Rhel),
            ("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"", None, OsFamily::Rhel),
            ("ID=\"almalinux\"", None, OsFamily::Rhel),
            ("ID=alpine", None, OsFamily::Alpine),
            ("ID=gentoo", Some("Linux 6.1.0 x86_64"), OsFamily::Linux),
            ("", Some("Darwin 23.1.0 arm64"), OsFamily::Macos),
            ("", Some("FreeBSD 14.0-RELEASE amd64"), OsFamily::Freebsd),
            ("", Some("Linux 6.18.44 x86_64"), OsFamily::Linux),
            ("", None, OsFamily::Linux),
        ];
        for (release, uname, want) in cases {
            let release = (!release.is_empty()).then_some(*release);
            assert_eq!(detect_os(release, *uname).family, *want, "{release:?} {uname:?}");
        }
        let d = detect_os(Some(DEBIAN), Some("Linux 6.18.44-fc x86_64"));
        assert_eq!(d.name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(d.version.as_deref(), Some("12"));
        assert_eq!(d.kernel.as_deref(), Some("Linux 6.18.44-fc"));
        assert_eq!(d.arch.as_deref(), Some("x86_64"));
        let mac = detect_os(None, Some("Darwin 23.1.0 arm64"));
        assert_eq!((mac.name.as_str(), mac.version.as_deref()), ("macOS", Some("23.1.0")));
        for f in OsFamily::ALL {
            assert_eq!(OsFamily::parse(f.as_str()), Some(f));
        }
    }

    #[test]
    fn capabilities_and_roles() {
        let p = profile(
            detect_os(Some(DEBIAN), None),
            &["ssh.service", "nginx.service", "postgresql@15-main.service", "cron.service", "docker.socket"],
            Some(4),
            Some(8 << 30),
            0,
        );
        assert_eq!(
            p.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            ["web-server", "database", "remote-access"]
        );
        assert_eq!(p.role, Role::Server);
        assert_eq!(p.services[0], "cron.service");
        let minimal = profile(detect_os(None, None), &["ssh.service", "lab-demo.service"], None, None, 0);
        assert_eq!(minimal.role, Role::Minimal);
        assert_eq!(minimal.capabilities.into_iter().collect::<Vec<_>>(), [Capability::RemoteAccess]);
        let ai = capabilities(&["ollama.service", "display-manager.service"]);
        assert_eq!(role(&ai, 1), Role::AiWorkstation);
        let desk = capabilities(&["display-manager.service"]);
        assert_eq!(role(&desk, 0), Role::Workstation);
        assert_eq!(role(&desk, 1), Role::AiWorkstation);
        assert_eq!(role(&capabilities(&["docker.service"]), 0), Role::Server);
        // Only services count, and only whole stems.
        assert!(capabilities(&["nginx.socket", "nginxish.service", "sshd-keygen.service"]).is_empty());
    }

    #[test]
    fn domain_patterns() {
        let any = DomainPattern::parse("lab.test").unwrap_or_else(|e| panic!("{e}"));
        let one = DomainPattern::parse("*.lab.test").unwrap_or_else(|e| panic!("{e}"));
        assert!(any.matches(&h("c1.lab.test")) && any.matches(&h("a.b.lab.test")));
        assert!(one.matches(&h("c1.lab.test")) && !one.matches(&h("a.b.lab.test")));
        for p in [&any, &one] {
            assert!(!p.matches(&h("lab.test")));
            assert!(!p.matches(&h("evillab.test")));
            assert!(!p.matches(&h("c1.lab.test.evil.org")));
            assert!(!p.matches(&h("local")));
        }
        assert_eq!(one.to_string(), "*.lab.test");
        for bad in ["", "*", "*.", "-x.org", "a b", "local", "*.*.org", "a..b"] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_registered_hosts_short_name_or_trailing_dot_is_that_host_not_a_new_one() {
        let d = h("lab.test");
        let allowed = vec![DomainPattern::parse("*.lab.test").unwrap_or_else(|e| panic!("{e}"))];
        let registered = ["web1.prod.example", "c2.lab.test"];
        for raw in ["web1", "WEB1", "web1.", "web1.prod.example.", "c2", "c2.lab.test.", "C2.LAB.TEST"] {
            let a = admission(raw, Some(&d), &allowed, &[], &registered);
            assert!(matches!(&a, Admission::Ignored(why) if why.contains("registered host")), "{raw}: {a:?}");
        }
        // A different name in the allowed domain is still a new host, and a dotted name that only
        // shares a first label is not the registered one.
        assert!(matches!(admission("c3", Some(&d), &allowed, &[], &registered), Admission::Admitted(..)));
        assert!(matches!(admission("web1.evil.test", Some(&d), &allowed, &[], &registered), Admission::Discovered(_)));
    }

    #[test]
    fn names_complete_and_admission() {
        let d = h("lab.test");
        assert_eq!(complete_name("c1", Some(&d)), Ok(h("c1.lab.test")));
        assert_eq!(complete_name("C1.Other.Org.", Some(&d)), Ok(h("c1.other.org")));
        assert_eq!(complete_name("c1", None), Ok(h("c1")));
        let allowed = [DomainPattern::parse("*.lab.test").unwrap_or_else(|e| panic!("{e}"))];
        assert_eq!(
            admission("c2", Some(&d), &allowed, &["macha"], &[]),
            Admission::Admitted(h("c2.lab.test"), allowed[0].clone())
        );
        assert_eq!(
            admission("evil.attacker.org", Some(&d), &allowed, &[], &[]),
            Admission::Discovered(h("evil.attacker.org"))
        );
        for raw in [
            "-oProxyCommand=id",
            "a b",
            "x;id",
            "",
            "localhost",
            "localhost.lab.test",
            "local",
            "MACHA",
            "macha.lab.test",
        ] {
            assert!(
                matches!(admission(raw, Some(&d), &allowed, &["macha", "macha.lab.test"], &[]), Admission::Ignored(_)),
                "{raw:?}"
            );
        }
        assert!(Standing::Trusted.may_act() && !Standing::Admitted.may_act());
        assert!(!Standing::Discovered.may_connect() && !Standing::Forgotten.may_connect());
        assert!(Standing::Configured.may_connect() && Standing::Admitted.may_connect());
    }
}
