//! One `.nix` file into chunks by attribute path (pure: text in, chunks out), with `rnix`.
//!
//! The walk follows attribute sets through what wraps them in modules — function bodies
//! (`{ config, ... }: { … }`), `let … in`, `with …;`, parentheses, applications whose argument is
//! a set or a list of sets (`lib.mkIf cond { … }`, `lib.mkMerge [ … ]`, `nixosSystem { … }`) and
//! `//`. Every binding whose value is not such a set is a leaf. Leaves are grouped by the path of
//! the set they configure: `services.nginx.virtualHosts."a.org".forceSSL = true` and
//! `services.nginx.virtualHosts."a.org" = { root = …; }` both land in the chunk
//! `services.nginx.virtualHosts."a.org"` (the most specific set a leaf configures); a leaf with a
//! one-name path at a file's top level (`imports = [ … ]`) is its own chunk. A chunk is at most [`CHUNK_TEXT_MAX`] bytes; more leaves start another chunk with
//! the same path. Values of attributes named like secrets are replaced by
//! [`crate::redact::MASK`], and free text is passed through [`crate::redact::redact_text`].

use crate::layout::FileLinks;
use crate::redact;
use rnix::ast::{self, HasEntry, InterpolPart};
use rowan::ast::AstNode;
use std::collections::HashMap;

/// The most text one chunk carries.
pub const CHUNK_TEXT_MAX: usize = 4096;

/// How deep the walk goes into nested expressions (a guard against pathological files).
const DEPTH_MAX: usize = 64;

/// One chunk: the leaves that configure one attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The attribute path (`services.nginx.virtualHosts."a.org"`), empty for the top level.
    pub attr_path: String,
    /// 1-based, inclusive.
    pub line_start: u32,
    pub line_end: u32,
    /// The leaves' source text, redacted.
    pub text: String,
}

/// A parsed file: its chunks and what it says about other files and hosts, or why it did not
/// parse (then it has no chunks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFile {
    pub chunks: Vec<Chunk>,
    pub links: FileLinks,
    pub error: Option<String>,
}

/// Parses a file's text into chunks.
pub fn parse_nix(text: &str) -> ParsedFile {
    let parse = rnix::Root::parse(text);
    let line_starts = line_starts(text);
    if let Some(e) = parse.errors().first() {
        let at = error_offset(e).map(|o| format!("line {}: ", line_of(&line_starts, o)));
        let more = parse.errors().len().saturating_sub(1);
        let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
        return ParsedFile { error: Some(format!("{}{e}{more}", at.unwrap_or_default())), ..ParsedFile::default() };
    }
    let mut w =
        Walker { line_starts, groups: Vec::new(), open: HashMap::new(), links: FileLinks::default(), leaves: 0 };
    if let Some(expr) = parse.tree().expr() {
        w.expr(expr, &[], 0);
    }
    let chunks = w
        .groups
        .into_iter()
        .map(|g| Chunk { attr_path: g.path, line_start: g.start, line_end: g.end, text: g.text })
        .collect();
    ParsedFile { chunks, links: w.links, error: None }
}

/// Words for the index from identifiers: `virtualHosts` → `virtual hosts`,
/// `allowedTCPPorts` → `allowed tcp ports`; only identifiers that split are listed.
pub fn identifier_words(text: &str) -> String {
    let mut out = String::new();
    for ident in text.split(|c: char| !c.is_alphanumeric()) {
        let split = split_camel(ident);
        if split.len() > 1 {
            for w in split {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&w.to_lowercase());
            }
        }
    }
    out
}

fn split_camel(ident: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = ident.char_indices().collect();
    let mut cuts = vec![0];
    for i in 1..chars.len() {
        let (at, c) = chars[i];
        let prev = chars[i - 1].1;
        let next_lower = chars.get(i + 1).is_some_and(|(_, n)| n.is_lowercase());
        let boundary = (c.is_uppercase() && prev.is_lowercase())
            || (c.is_uppercase() && prev.is_uppercase() && next_lower)
            || (c.is_ascii_digit() && prev.is_alphabetic())
            || (c.is_alphabetic() && prev.is_ascii_digit());
        if boundary {
            cuts.push(at);
        }
    }
    cuts.push(ident.len());
    cuts.windows(2).filter_map(|w| ident.get(w[0]..w[1])).filter(|s| !s.is_empty()).collect()
}

struct Group {
    path: String,
    start: u32,
    end: u32,
    text: String,
}

struct Walker {
    line_starts: Vec<usize>,
    groups: Vec<Group>,
    /// The group each path currently appends to.
    open: HashMap<String, usize>,
    links: FileLinks,
    /// Leaves seen so far.
    leaves: usize,
}

impl Walker {
    fn expr(&mut self, e: ast::Expr, path: &[String], depth: usize) {
        if depth > DEPTH_MAX {
            return;
        }
        let d = depth + 1;
        match e {
            ast::Expr::AttrSet(set) => {
                for entry in set.entries() {
                    self.entry(entry, path, d);
                }
            }
            ast::Expr::LetIn(l) => {
                for entry in l.entries() {
                    self.entry(entry, path, d);
                }
                if let Some(body) = l.body() {
                    self.expr(body, path, d);
                }
            }
            ast::Expr::Lambda(l) => {
                if let Some(body) = l.body() {
                    self.expr(body, path, d);
                }
            }
            ast::Expr::With(w) => {
                if let Some(body) = w.body() {
                    self.expr(body, path, d);
                }
            }
            ast::Expr::Paren(p) => {
                if let Some(inner) = p.expr() {
                    self.expr(inner, path, d);
                }
            }
            ast::Expr::Apply(a) => {
                if let Some(arg) = a.argument() {
                    self.expr(arg, path, d);
                }
            }
            ast::Expr::List(l) => {
                for item in l.items() {
                    if is_container(&item, 0) {
                        self.expr(item, path, d);
                    }
                }
            }
            ast::Expr::BinOp(b) => {
                if let Some(l) = b.lhs() {
                    self.expr(l, path, d);
                }
                if let Some(r) = b.rhs() {
                    self.expr(r, path, d);
                }
            }
            ast::Expr::IfElse(i) => {
                if let Some(b) = i.body() {
                    self.expr(b, path, d);
                }
                if let Some(b) = i.else_body() {
                    self.expr(b, path, d);
                }
            }
            _ => {}
        }
    }

    fn entry(&mut self, entry: ast::Entry, path: &[String], depth: usize) {
        match entry {
            ast::Entry::AttrpathValue(apv) => self.binding(apv, path, depth),
            ast::Entry::Inherit(inh) => {
                let text = inh.syntax().text().to_string();
                let range = inh.syntax().text_range();
                self.leaf(path.join("."), range, &text);
            }
        }
    }

    fn binding(&mut self, apv: ast::AttrpathValue, path: &[String], depth: usize) {
        let Some(attrpath) = apv.attrpath() else { return };
        let names: Vec<String> = attrpath.attrs().map(|a| attr_name(&a)).collect();
        if names.is_empty() {
            return;
        }
        let mut full: Vec<String> = path.to_vec();
        full.extend(names.iter().cloned());
        let Some(value) = apv.value() else { return };
        self.note_links(&full, &value);
        if is_container(&value, 0) && !redact::is_secret_path(&full) {
            let before = self.leaves;
            self.expr(value.clone(), &full, depth);
            if self.leaves > before {
                return;
            }
            // A set with nothing in it (`callPackage ./x.nix { }`) is a leaf after all.
        }
        let range = apv.syntax().text_range();
        let text = if redact::is_secret_path(&full) {
            format!("{} = {};", attrpath.syntax().text(), redact::MASK)
        } else {
            redact::redact_text(&apv.syntax().text().to_string()).into_owned()
        };
        // The most specific set this leaf configures; a top-level leaf is its own chunk.
        let group = if full.len() > 1 { full[..full.len() - 1].to_vec() } else { full.clone() };
        self.leaf(group.join("."), range, &text);
    }

    /// Records `imports`, `nixosConfigurations.<host>` and their `modules`.
    fn note_links(&mut self, full: &[String], value: &ast::Expr) {
        if full.last().is_some_and(|n| n == "imports") {
            self.links.imports.extend(literal_paths(value));
        }
        if let Some(i) = full.iter().position(|n| n == "nixosConfigurations")
            && let Some(host) = full.get(i + 1)
        {
            let host = host.trim_matches('"').to_owned();
            if !self.links.hosts.contains(&host) {
                self.links.hosts.push(host.clone());
            }
            if full.len() == i + 3 && full[i + 2] == "modules" {
                let paths = literal_paths(value);
                if !paths.is_empty() {
                    self.links.host_modules.push((host, paths));
                }
            }
        }
    }

    fn leaf(&mut self, path: String, range: rnix::TextRange, text: &str) {
        self.leaves += 1;
        let start = line_of(&self.line_starts, usize::from(range.start()));
        let end = line_of(&self.line_starts, usize::from(range.end()).saturating_sub(1)).max(start);
        let idx = match self.open.get(&path) {
            Some(&i) if self.groups[i].text.len() + text.len() < CHUNK_TEXT_MAX => i,
            _ => {
                self.groups.push(Group { path: path.clone(), start, end, text: String::new() });
                let i = self.groups.len() - 1;
                self.open.insert(path, i);
                i
            }
        };
        let g = &mut self.groups[idx];
        g.start = g.start.min(start);
        g.end = g.end.max(end);
        if !g.text.is_empty() {
            g.text.push('\n');
        }
        let room = CHUNK_TEXT_MAX.saturating_sub(g.text.len());
        g.text.push_str(truncate(text, room));
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// True when a value is (or wraps) an attribute set the walk should enter.
fn is_container(e: &ast::Expr, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    match e {
        ast::Expr::AttrSet(_) => true,
        ast::Expr::LetIn(l) => l.body().is_some_and(|b| is_container(&b, depth + 1)),
        ast::Expr::Lambda(l) => l.body().is_some_and(|b| is_container(&b, depth + 1)),
        ast::Expr::With(w) => w.body().is_some_and(|b| is_container(&b, depth + 1)),
        ast::Expr::Paren(p) => p.expr().is_some_and(|b| is_container(&b, depth + 1)),
        ast::Expr::Apply(a) => a.argument().is_some_and(|arg| match arg {
            ast::Expr::List(l) => l.items().any(|i| is_container(&i, depth + 1)),
            other => is_container(&other, depth + 1),
        }),
        ast::Expr::BinOp(b) => {
            b.operator() == Some(ast::BinOpKind::Update)
                && (b.lhs().is_some_and(|x| is_container(&x, depth + 1))
                    || b.rhs().is_some_and(|x| is_container(&x, depth + 1)))
        }
        _ => false,
    }
}

/// The literal paths in a list (`[ ./a.nix ../b ]`), also behind `with`/parentheses.
fn literal_paths(value: &ast::Expr) -> Vec<String> {
    let list = match value {
        ast::Expr::List(l) => Some(l.clone()),
        ast::Expr::Paren(p) => match p.expr() {
            Some(ast::Expr::List(l)) => Some(l),
            _ => None,
        },
        ast::Expr::With(w) => match w.body() {
            Some(ast::Expr::List(l)) => Some(l),
            _ => None,
        },
        _ => None,
    };
    let Some(list) = list else { return Vec::new() };
    list.items()
        .filter_map(|i| match i {
            ast::Expr::Path(p) => {
                let t = p.syntax().text().to_string();
                (!t.contains("${")).then_some(t)
            }
            _ => None,
        })
        .collect()
}

/// An attribute name as written in a path: bare when it is an identifier, quoted otherwise,
/// `${…}` for interpolation.
fn attr_name(a: &ast::Attr) -> String {
    match a {
        ast::Attr::Ident(i) => i.syntax().text().to_string(),
        ast::Attr::Dynamic(d) => d.syntax().text().to_string(),
        ast::Attr::Str(s) => {
            let mut lit = String::new();
            for part in s.normalized_parts() {
                match part {
                    InterpolPart::Literal(l) => lit.push_str(&l),
                    InterpolPart::Interpolation(_) => return s.syntax().text().to_string(),
                }
            }
            let ident = lit.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && lit.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '\''));
            if ident { lit } else { format!("\"{}\"", lit.replace('\\', "\\\\").replace('"', "\\\"")) }
        }
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    v
}

fn line_of(starts: &[usize], offset: usize) -> u32 {
    let line = match starts.binary_search(&offset) {
        Ok(i) => i + 1,
        Err(i) => i,
    };
    u32::try_from(line).unwrap_or(u32::MAX).max(1)
}

fn error_offset(e: &rnix::parser::ParseError) -> Option<usize> {
    use rnix::parser::ParseError as P;
    match e {
        P::Unexpected(r) | P::UnexpectedExtra(r) | P::UnexpectedDoubleBind(r) | P::DuplicatedArgs(r, _) => {
            Some(usize::from(r.start()))
        }
        P::UnexpectedWanted(_, r, _) => Some(usize::from(r.start())),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MODULE: &str = r#"{ config, lib, pkgs, ... }:
let
  domain = "a.org";
in
{
  imports = [ ./hardware.nix ../../apps/nginx.nix ];

  services.nginx.enable = true;
  services.nginx.virtualHosts."a.org" = {
    forceSSL = true;
    locations."/".proxyPass = "http://127.0.0.1:3000";
  };
  services.postgresql = lib.mkIf config.services.nginx.enable {
    enable = true;
    settings.max_connections = 200;
  };
  users.users.alice.hashedPassword = "$6$abcdefgh$secretsecret";
  services.grafana.settings.security = { admin_password = "hunter2"; admin_user = "admin"; };
  networking.firewall.allowedTCPPorts = [ 80 443 ];
}
"#;

    fn find<'a>(p: &'a ParsedFile, path: &str) -> &'a Chunk {
        p.chunks.iter().find(|c| c.attr_path == path).unwrap_or_else(|| panic!("no chunk {path}: {:#?}", p.chunks))
    }

    #[test]
    fn chunks_by_attribute_path_with_lines() {
        let p = parse_nix(MODULE);
        assert_eq!(p.error, None);
        let vh = find(&p, "services.nginx.virtualHosts.\"a.org\"");
        assert_eq!((vh.line_start, vh.line_end), (10, 10));
        assert!(vh.text.contains("forceSSL"));
        let loc = find(&p, "services.nginx.virtualHosts.\"a.org\".locations.\"/\"");
        assert_eq!((loc.line_start, loc.line_end), (11, 11));
        assert!(loc.text.contains("proxyPass"));
        let nginx = find(&p, "services.nginx");
        assert_eq!((nginx.line_start, nginx.line_end), (8, 8));
        let pg = find(&p, "services.postgresql");
        assert!(pg.text.contains("enable = true"), "through mkIf");
        assert!(find(&p, "services.postgresql.settings").text.contains("max_connections"));
        assert_eq!(find(&p, "imports").line_start, 6);
        assert!(find(&p, "domain").text.contains("a.org"), "let bindings at the top level");
        assert!(find(&p, "networking.firewall").text.contains("443"));
        assert_eq!(p.links.imports, ["./hardware.nix", "../../apps/nginx.nix"]);
    }

    #[test]
    fn secrets_are_redacted() {
        let p = parse_nix(MODULE);
        let all: String = p.chunks.iter().map(|c| c.text.as_str()).collect();
        assert!(!all.contains("hunter2"), "{all}");
        assert!(!all.contains("secretsecret"), "{all}");
        assert!(all.contains("admin_user = \"admin\""));
        assert!(find(&p, "users.users.alice").text.contains(redact::MASK));
    }

    #[test]
    fn flake_hosts_and_modules() {
        let flake = r#"{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
  outputs = { self, nixpkgs, ... }: {
    nixosConfigurations.web1 = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [ ./hosts/web1 ./osconfigs/base.nix ];
    };
    nixosConfigurations."db-1" = nixpkgs.lib.nixosSystem { modules = [ ./hosts/db-1/default.nix ]; };
    nixosConfigurations.gen = mkHost "gen";
  };
}"#;
        let p = parse_nix(flake);
        assert_eq!(p.error, None);
        assert_eq!(p.links.hosts, ["web1", "db-1", "gen"]);
        assert_eq!(
            p.links.host_modules,
            [
                ("web1".to_owned(), vec!["./hosts/web1".to_owned(), "./osconfigs/base.nix".to_owned()]),
                ("db-1".to_owned(), vec!["./hosts/db-1/default.nix".to_owned()])
            ]
        );
        assert!(p.chunks.iter().any(|c| c.attr_path == "outputs.nixosConfigurations.web1"));
    }

    #[test]
    fn a_broken_file_is_an_error_with_its_line() {
        let p = parse_nix("{\n  a = 1;\n  b = ;\n}\n");
        let e = p.error.expect("an error");
        assert!(e.starts_with("line 3"), "{e}");
        assert!(p.chunks.is_empty());
    }

    #[test]
    fn hostile_input_never_panics() {
        for t in ["", "{", "}", "''", "${", "{ a.${b} = 1; }", "let in", "x: y: z", "{ \"\" = 1; }", "[[[[[[", "\u{0}"]
        {
            let _ = parse_nix(t);
        }
        let deep = "{ a = ".repeat(500) + "1" + &"; }".repeat(500);
        let _ = parse_nix(&deep);
    }

    #[test]
    fn long_groups_are_split() {
        let mut t = String::from("{\n");
        for i in 0..400 {
            t.push_str(&format!("  services.big.opt{i} = \"value number {i} with some padding\";\n"));
        }
        t.push('}');
        let p = parse_nix(&t);
        let big: Vec<_> = p.chunks.iter().filter(|c| c.attr_path == "services.big").collect();
        assert!(big.len() > 1);
        assert!(big.iter().all(|c| c.text.len() <= CHUNK_TEXT_MAX));
    }

    #[test]
    fn words_from_identifiers() {
        assert_eq!(identifier_words("virtualHosts allowedTCPPorts enable"), "virtual hosts allowed tcp ports");
        assert_eq!(identifier_words("http2 x"), "http 2");
    }
}
