//! The fleet map: hosts (with what their profiles say) and the relations between them —
//! declared in the configuration (`hosts.<name>.depends_on`), observed as established TCP
//! connections between managed hosts, or both — built by one pure function ([`build`]), rendered
//! as text or Graphviz DOT, and asked which failures a host that is down explains
//! ([`explained_by`], what notification inhibition will use).
//!
//! API boundary: [`FleetMap`] is the JSON of `macha systems graph --json` and of the socket.

use crate::HostName;
use crate::snapshot::{Connections, Direction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;

/// How a relation is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// Only in the configuration.
    Declared,
    /// Only seen on the wire.
    Observed,
    /// Declared and seen.
    Both,
}

impl RelationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RelationKind::Declared => "declared",
            RelationKind::Observed => "observed",
            RelationKind::Both => "both",
        }
    }
}

/// `from` depends on `to` (a client on its server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub from: HostName,
    pub to: HostName,
    pub kind: RelationKind,
    /// The server ports the connections went to (observed relations), sorted.
    pub ports: Vec<u16>,
    /// Established connections seen (0 for a declared-only relation).
    pub connections: u32,
}

/// One host on the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: HostName,
    /// The profile's role and operating system, when a first contact recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Whether this host's connections were observed (its last snapshot had them).
    pub observed: bool,
}

/// Hosts and relations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetMap {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Declared dependencies on hosts Macha does not manage (`host → name`), kept so that a
    /// typo is visible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<(HostName, String)>,
}

/// What [`build`] knows of one host.
#[derive(Debug, Clone, Default)]
pub struct HostInput {
    pub name: Option<HostName>,
    /// The addresses its peers see it at (the configured address when it is an IP literal, and
    /// what it resolved to).
    pub addresses: Vec<IpAddr>,
    pub depends_on: Vec<String>,
    pub role: Option<String>,
    pub os: Option<String>,
    /// Its last snapshot's connections, if any.
    pub connections: Option<Connections>,
}

/// Builds the map. Observed relations come from both ends: an outbound connection of A to B's
/// address is A → B on B's port; an inbound connection to A from B's address is B → A on A's port.
/// Connections to or from addresses of no managed host, and of a host to itself, are left out.
pub fn build(hosts: &[HostInput]) -> FleetMap {
    let names: BTreeSet<HostName> = hosts.iter().filter_map(|h| h.name.clone()).collect();
    let mut by_address: BTreeMap<IpAddr, HostName> = BTreeMap::new();
    for h in hosts {
        if let Some(n) = &h.name {
            for a in &h.addresses {
                by_address.entry(*a).or_insert_with(|| n.clone());
            }
        }
    }
    // (from, to) → (declared, ports, connections)
    let mut rel: BTreeMap<(HostName, HostName), (bool, BTreeSet<u16>, u32)> = BTreeMap::new();
    let mut unknown = Vec::new();
    for h in hosts {
        let Some(from) = &h.name else { continue };
        for d in &h.depends_on {
            match HostName::parse(d).ok().filter(|n| names.contains(n)) {
                Some(to) if &to != from => rel.entry((from.clone(), to)).or_default().0 = true,
                Some(_) => {}
                None => unknown.push((from.clone(), d.clone())),
            }
        }
        let Some(c) = &h.connections else { continue };
        for p in &c.peers {
            let Some(peer) = by_address.get(&p.peer) else { continue };
            if peer == from {
                continue;
            }
            let key = match p.direction {
                Direction::Outbound => (from.clone(), peer.clone()),
                Direction::Inbound => (peer.clone(), from.clone()),
            };
            let e = rel.entry(key).or_default();
            e.1.insert(p.port);
            // Both ends may report the same connections: count the larger side once.
            e.2 = e.2.max(p.count);
        }
    }
    let nodes = names
        .iter()
        .map(|n| {
            let h = hosts.iter().find(|h| h.name.as_ref() == Some(n));
            Node {
                name: n.clone(),
                role: h.and_then(|h| h.role.clone()),
                os: h.and_then(|h| h.os.clone()),
                observed: h.is_some_and(|h| h.connections.is_some()),
            }
        })
        .collect();
    let edges = rel
        .into_iter()
        .map(|((from, to), (declared, ports, connections))| {
            let kind = match (declared, ports.is_empty()) {
                (true, true) => RelationKind::Declared,
                (true, false) => RelationKind::Both,
                (false, _) => RelationKind::Observed,
            };
            Edge { from, to, kind, ports: ports.into_iter().collect(), connections }
        })
        .collect();
    FleetMap { nodes, edges, unknown }
}

/// The hosts whose failures `down` explains: every host that depends on it, directly or through
/// other hosts (a database down explains its application servers' failures and those of the web
/// servers in front of them), by any kind of relation. Sorted; `down` itself is not in it.
///
/// This is what notification inhibition needs: while `down` is down, alerts of these hosts are
/// consequences, not causes.
pub fn explained_by(map: &FleetMap, down: &HostName) -> Vec<HostName> {
    let mut seen: BTreeSet<HostName> = BTreeSet::new();
    let mut queue: VecDeque<&HostName> = VecDeque::from([down]);
    while let Some(h) = queue.pop_front() {
        for e in map.edges.iter().filter(|e| &e.to == h) {
            if &e.from != down && seen.insert(e.from.clone()) {
                queue.push_back(&e.from);
            }
        }
    }
    seen.into_iter().collect()
}

/// The map as text: each host with its role, then what it depends on.
pub fn render_text(map: &FleetMap) -> String {
    let mut out = String::new();
    for n in &map.nodes {
        let what: Vec<&str> = [n.role.as_deref(), n.os.as_deref()].into_iter().flatten().collect();
        let _ = write!(out, "{}", n.name);
        if !what.is_empty() {
            let _ = write!(out, " ({})", what.join(", "));
        }
        if !n.observed {
            out.push_str("  [connections not observed]");
        }
        out.push('\n');
        let deps: Vec<&Edge> = map.edges.iter().filter(|e| e.from == n.name).collect();
        if deps.is_empty() {
            out.push_str("  → (nothing)\n");
        }
        for e in deps {
            let _ = write!(out, "  → {}  {}", e.to, e.kind.as_str());
            if !e.ports.is_empty() {
                let ports: Vec<String> = e.ports.iter().map(u16::to_string).collect();
                let _ = write!(out, "  port {}", ports.join(","));
            }
            if e.connections > 0 {
                let _ = write!(out, "  ({} connections)", e.connections);
            }
            out.push('\n');
        }
    }
    for (h, name) in &map.unknown {
        let _ = writeln!(out, "{h}: depends_on {name:?} is not a managed host");
    }
    out
}

/// The map as Graphviz DOT: declared-only relations dashed, observed-only dotted, both solid;
/// ports as labels.
pub fn render_dot(map: &FleetMap) -> String {
    let mut out = String::from("digraph fleet {\n  rankdir=LR;\n  node [shape=box];\n");
    for n in &map.nodes {
        let label = match &n.role {
            Some(r) => format!("{}\\n{}", n.name, dot_escape(r)),
            None => n.name.to_string(),
        };
        let _ = writeln!(out, "  \"{}\" [label=\"{}\"];", n.name, label);
    }
    for e in &map.edges {
        let style = match e.kind {
            RelationKind::Declared => "dashed",
            RelationKind::Observed => "dotted",
            RelationKind::Both => "solid",
        };
        let ports: Vec<String> = e.ports.iter().map(u16::to_string).collect();
        let _ = writeln!(out, "  \"{}\" -> \"{}\" [style={style}, label=\"{}\"];", e.from, e.to, ports.join(","));
    }
    out.push_str("}\n");
    out
}

fn dot_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| if matches!(c, '"' | '\\') { vec!['\\', c] } else { vec![c] })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::snapshot::PeerConnections;

    fn n(s: &str) -> HostName {
        HostName::parse(s).unwrap()
    }

    fn host(name: &str, ip: &str, deps: &[&str], peers: Option<&[(&str, u16, Direction, u32)]>) -> HostInput {
        HostInput {
            name: Some(n(name)),
            addresses: vec![ip.parse().unwrap()],
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            role: Some("server".to_owned()),
            os: None,
            connections: peers.map(|ps| Connections {
                peers: ps
                    .iter()
                    .map(|(ip, port, direction, count)| PeerConnections {
                        peer: ip.parse().unwrap(),
                        port: *port,
                        direction: *direction,
                        count: *count,
                    })
                    .collect(),
                ..Connections::default()
            }),
        }
    }

    fn fleet() -> FleetMap {
        use Direction::*;
        build(&[
            // web1 declares app1; it is seen talking to app1 on 8080 (outbound) and to an
            // outside address.
            host(
                "web1",
                "10.0.0.1",
                &["app1"],
                Some(&[("10.0.0.2", 8080, Outbound, 3), ("192.0.2.9", 443, Outbound, 1)]),
            ),
            // app1 declares nothing; db1 sees it connect (inbound on 5432).
            host("app1", "10.0.0.2", &[], Some(&[("10.0.0.1", 8080, Inbound, 3)])),
            host("db1", "10.0.0.3", &[], Some(&[("10.0.0.2", 5432, Inbound, 7), ("10.0.0.3", 22, Inbound, 1)])),
            // cache1 is declared by nobody and observed by nobody; mon1 declares a typo.
            host("cache1", "10.0.0.4", &[], None),
            host("mon1", "10.0.0.5", &["db1", "dbl"], None),
        ])
    }

    #[test]
    fn relations_are_declared_observed_or_both() {
        let map = fleet();
        let edges: Vec<(&str, &str, RelationKind, Vec<u16>, u32)> = map
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str(), e.kind, e.ports.clone(), e.connections))
            .collect();
        assert_eq!(
            edges,
            [
                ("app1", "db1", RelationKind::Observed, vec![5432], 7),
                ("mon1", "db1", RelationKind::Declared, vec![], 0),
                ("web1", "app1", RelationKind::Both, vec![8080], 3),
            ]
        );
        assert_eq!(map.unknown, [(n("mon1"), "dbl".to_owned())]);
        let observed: Vec<bool> = map.nodes.iter().map(|n| n.observed).collect();
        // Sorted by name: app1, cache1, db1, mon1, web1.
        assert_eq!(observed, [true, false, true, false, true]);
    }

    #[test]
    fn a_down_host_explains_its_dependents_transitively() {
        let map = fleet();
        assert_eq!(explained_by(&map, &n("db1")), [n("app1"), n("mon1"), n("web1")]);
        assert_eq!(explained_by(&map, &n("app1")), [n("web1")]);
        assert!(explained_by(&map, &n("web1")).is_empty());
        assert!(explained_by(&map, &n("cache1")).is_empty());
    }

    #[test]
    fn cycles_end_and_never_name_the_down_host() {
        let map = build(&[host("a", "10.0.0.1", &["b"], None), host("b", "10.0.0.2", &["a"], None)]);
        assert_eq!(explained_by(&map, &n("a")), [n("b")]);
        assert_eq!(explained_by(&map, &n("b")), [n("a")]);
    }

    #[test]
    fn text_and_dot_show_kinds_and_ports() {
        let map = fleet();
        let text = render_text(&map);
        assert!(text.contains("web1 (server)\n  → app1  both  port 8080  (3 connections)\n"), "{text}");
        assert!(text.contains("cache1 (server)  [connections not observed]\n  → (nothing)\n"), "{text}");
        assert!(text.contains("mon1: depends_on \"dbl\" is not a managed host"), "{text}");
        let dot = render_dot(&map);
        assert!(dot.starts_with("digraph fleet {"), "{dot}");
        assert!(dot.contains("\"app1\" -> \"db1\" [style=dotted, label=\"5432\"];"), "{dot}");
        assert!(dot.contains("\"mon1\" -> \"db1\" [style=dashed, label=\"\"];"), "{dot}");
        assert!(dot.contains("\"web1\" -> \"app1\" [style=solid, label=\"8080\"];"), "{dot}");
    }
}
