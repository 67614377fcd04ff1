//! The flake's layout, without evaluation (pure): which files are never read, each file's and
//! chunk's category, and which hosts use each file.
//!
//! Categories (docs/knowledge.md): the directory decides first — the first component of the
//! file's path that names a known directory (`apps`, `systems`/`hosts`/`machines`,
//! `osconfigs`/`modules`/`profiles`, `users`/`home`); `flake.nix` at the root is `systems`. A file
//! in no known directory takes its category from each chunk's attribute path (`services.*` →
//! apps, `users.*` → users, `networking.*`/`boot.*`/… → osconfigs), else `other`.
//!
//! Hosts: the flake's `nixosConfigurations.<host>` give the host names; each host's `modules`
//! list, where it holds literal paths, gives its root files; every literal path in an `imports`
//! list is followed from there (a directory means its `default.nix`). Files under
//! `hosts/<host>/` (or `systems/`, `machines/`) belong to that host even when the flake builds
//! its module list with a function, and `flake.nix` belongs to every host.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The category of a file or chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Apps,
    Systems,
    OsConfigs,
    Users,
    Other,
}

impl Category {
    pub const ALL: [Category; 5] =
        [Category::Apps, Category::Systems, Category::OsConfigs, Category::Users, Category::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Apps => "apps",
            Category::Systems => "systems",
            Category::OsConfigs => "osconfigs",
            Category::Users => "users",
            Category::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Directories that name a category.
fn dir_category(component: &str) -> Option<Category> {
    match component.to_ascii_lowercase().as_str() {
        "apps" | "applications" | "services" => Some(Category::Apps),
        "systems" | "hosts" | "machines" | "nodes" => Some(Category::Systems),
        "osconfigs" | "modules" | "profiles" | "common" | "roles" => Some(Category::OsConfigs),
        "users" | "home" | "homes" => Some(Category::Users),
        _ => None,
    }
}

/// Directories whose subdirectories are named after hosts.
const HOST_DIRS: &[&str] = &["hosts", "systems", "machines", "nodes"];

/// The category a file's path gives, if any.
pub fn file_category(rel: &str) -> Option<Category> {
    if rel == "flake.nix" {
        return Some(Category::Systems);
    }
    let mut parts: Vec<&str> = rel.split('/').collect();
    parts.pop();
    parts.into_iter().find_map(dir_category)
}

/// A chunk's category: its file's, else from the attribute path's first component.
pub fn chunk_category(file: Option<Category>, attr_path: &str) -> Category {
    if let Some(c) = file {
        return c;
    }
    let first = attr_path.split('.').next().unwrap_or("");
    match first {
        "users" | "home-manager" | "home" => Category::Users,
        "services" | "systemd" | "virtualisation" | "containers" | "oci-containers" => Category::Apps,
        "nixosConfigurations" | "outputs" | "deploy" | "colmena" => Category::Systems,
        "networking" | "boot" | "fileSystems" | "hardware" | "nix" | "nixpkgs" | "security" | "i18n" | "time"
        | "console" | "programs" | "environment" | "swapDevices" | "powerManagement" | "zramSwap" | "system"
        | "imports" | "documentation" | "fonts" | "location" | "sound" | "xdg" => Category::OsConfigs,
        _ => Category::Other,
    }
}

/// Why a file is never read: it is where people keep secrets.
pub fn secret_path_reason(rel: &str) -> Option<&'static str> {
    let lower = rel.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let (dirs, name) = parts.split_at(parts.len().saturating_sub(1));
    let name = name.first().copied().unwrap_or("");
    if dirs.iter().any(|d| matches!(*d, "secrets" | ".secrets" | "secret" | "sops" | "agenix" | "vault")) {
        return Some("under a secrets directory");
    }
    if name.ends_with(".age") {
        return Some("an age-encrypted file");
    }
    if name.contains(".sops.") || name.starts_with("secrets.") || name.starts_with("sops.") {
        return Some("a sops or agenix secrets file");
    }
    None
}

/// Why a file's content is never indexed: it is encrypted or holds a private key.
pub fn secret_content_reason(text: &str) -> Option<&'static str> {
    if text.contains("-----BEGIN AGE ENCRYPTED FILE-----") || text.starts_with("age-encryption.org/") {
        return Some("age-encrypted content");
    }
    if text.contains("ENC[AES256_GCM,") || text.contains("\"sops\": {") || text.contains("\nsops:\n") {
        return Some("sops-encrypted content");
    }
    if text.contains("PRIVATE KEY-----") {
        return Some("a private key");
    }
    None
}

/// Joins a literal Nix path to the directory of the file it appears in, normalised; `None` for
/// paths that are absolute, search paths (`<nixpkgs>`), interpolated, or leave the flake.
pub fn join_relative(file: &str, raw: &str) -> Option<String> {
    if raw.starts_with('/') || raw.starts_with('<') || raw.starts_with('~') || raw.contains("${") {
        return None;
    }
    let mut parts: Vec<&str> = file.split('/').collect();
    parts.pop();
    for p in raw.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() { None } else { Some(parts.join("/")) }
}

/// What a file says about other files and hosts (from [`crate::chunk::ParsedFile`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileLinks {
    /// Literal paths of `imports` lists, as written.
    pub imports: Vec<String>,
    /// `nixosConfigurations.<host>` names defined in this file.
    pub hosts: Vec<String>,
    /// Literal paths of each host's `modules` list, as written.
    pub host_modules: Vec<(String, Vec<String>)>,
}

/// Resolves a literal path to an indexed file: the file itself, or a directory's `default.nix`.
fn resolve(files: &BTreeMap<String, FileLinks>, from: &str, raw: &str) -> Option<String> {
    let joined = join_relative(from, raw)?;
    if files.contains_key(&joined) {
        return Some(joined);
    }
    let dir = format!("{joined}/default.nix");
    files.contains_key(&dir).then_some(dir)
}

/// Which hosts use each file (files no host uses are absent).
pub fn resolve_hosts(files: &BTreeMap<String, FileLinks>) -> BTreeMap<String, BTreeSet<String>> {
    let mut roots: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, links) in files {
        for host in &links.hosts {
            roots.entry(host.clone()).or_default().insert(path.clone());
        }
        for (host, modules) in &links.host_modules {
            let entry = roots.entry(host.clone()).or_default();
            for raw in modules {
                if let Some(target) = resolve(files, path, raw) {
                    entry.insert(target);
                }
            }
        }
    }
    // Files under hosts/<host>/ (or hosts/<host>.nix) belong to that host.
    let hosts: Vec<String> = roots.keys().cloned().collect();
    for path in files.keys() {
        let parts: Vec<&str> = path.split('/').collect();
        for w in parts.windows(2) {
            if let [dir, name] = w
                && HOST_DIRS.contains(dir)
            {
                let name = name.strip_suffix(".nix").unwrap_or(name);
                if let Some(h) = hosts.iter().find(|h| h.as_str() == name) {
                    roots.entry(h.clone()).or_default().insert(path.clone());
                }
            }
        }
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (host, start) in roots {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut queue: Vec<String> = start.into_iter().collect();
        while let Some(f) = queue.pop() {
            if !seen.insert(f.clone()) {
                continue;
            }
            if let Some(links) = files.get(&f) {
                for raw in &links.imports {
                    if let Some(t) = resolve(files, &f, raw)
                        && !seen.contains(&t)
                    {
                        queue.push(t);
                    }
                }
            }
        }
        for f in seen {
            out.entry(f).or_default().insert(host.clone());
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn categories_by_directory_then_attribute() {
        assert_eq!(file_category("apps/web/nginx.nix"), Some(Category::Apps));
        assert_eq!(file_category("systems/web1/default.nix"), Some(Category::Systems));
        assert_eq!(file_category("osconfigs/base.nix"), Some(Category::OsConfigs));
        assert_eq!(file_category("users/alice.nix"), Some(Category::Users));
        assert_eq!(file_category("flake.nix"), Some(Category::Systems));
        assert_eq!(file_category("lib/helpers.nix"), None);
        assert_eq!(chunk_category(None, "services.nginx"), Category::Apps);
        assert_eq!(chunk_category(None, "users.users.alice"), Category::Users);
        assert_eq!(chunk_category(None, "boot.loader"), Category::OsConfigs);
        assert_eq!(chunk_category(None, "foo"), Category::Other);
        assert_eq!(chunk_category(Some(Category::Users), "services.nginx"), Category::Users);
    }

    #[test]
    fn secret_paths() {
        assert!(secret_path_reason("secrets/db.nix").is_some());
        assert!(secret_path_reason("hosts/web1/secrets/x.nix").is_some());
        assert!(secret_path_reason("keys/wg.age").is_some());
        assert!(secret_path_reason("hosts/db/db.sops.yaml").is_some());
        assert!(secret_path_reason("secrets.nix").is_some());
        assert!(secret_path_reason("apps/nginx.nix").is_none());
        assert!(secret_content_reason("-----BEGIN AGE ENCRYPTED FILE-----\nxx").is_some());
        assert!(secret_content_reason("{ a = 1; }").is_none());
    }

    #[test]
    fn relative_paths() {
        assert_eq!(join_relative("hosts/web1/default.nix", "../../apps/nginx.nix").as_deref(), Some("apps/nginx.nix"));
        assert_eq!(join_relative("flake.nix", "./hosts/web1").as_deref(), Some("hosts/web1"));
        assert_eq!(join_relative("flake.nix", "../outside.nix"), None);
        assert_eq!(join_relative("a.nix", "/etc/nixos/x.nix"), None);
        assert_eq!(join_relative("a.nix", "<nixpkgs/nixos>"), None);
    }

    #[test]
    fn hosts_follow_modules_and_imports() {
        let mut files = BTreeMap::new();
        files.insert(
            "flake.nix".to_owned(),
            FileLinks {
                imports: vec![],
                hosts: vec!["web1".into(), "db1".into()],
                host_modules: vec![("web1".into(), vec!["./hosts/web1".into()])],
            },
        );
        files.insert(
            "hosts/web1/default.nix".to_owned(),
            FileLinks { imports: vec!["../../apps/nginx.nix".into(), "./hw.nix".into()], ..Default::default() },
        );
        files.insert("hosts/web1/hw.nix".to_owned(), FileLinks::default());
        files.insert(
            "apps/nginx.nix".to_owned(),
            FileLinks { imports: vec!["../osconfigs/base.nix".into()], ..Default::default() },
        );
        files.insert("osconfigs/base.nix".to_owned(), FileLinks::default());
        files.insert("hosts/db1/default.nix".to_owned(), FileLinks::default());
        files.insert("apps/unused.nix".to_owned(), FileLinks::default());
        let map = resolve_hosts(&files);
        let hosts = |f: &str| map.get(f).map(|s| s.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(hosts("apps/nginx.nix"), ["web1"]);
        assert_eq!(hosts("osconfigs/base.nix"), ["web1"]);
        assert_eq!(hosts("hosts/web1/hw.nix"), ["web1"]);
        assert_eq!(hosts("hosts/db1/default.nix"), ["db1"], "by its directory");
        assert_eq!(hosts("flake.nix"), ["db1", "web1"]);
        assert!(hosts("apps/unused.nix").is_empty());
    }
}
