//! `/proc/net/tcp` and `/proc/net/tcp6`, read line by line into a bounded [`Connections`]: the
//! listening ports and the established connections grouped by peer, server port and direction.
//!
//! Addresses are printed by the kernel as the hexadecimal of each 32-bit word in the host's byte
//! order; this parser reads them as little-endian, which every host Macha manages (x86-64,
//! AArch64) is. The direction of a connection comes from the listening ports: a connection whose
//! local port is one this host listens on is inbound, any other is outbound (to the peer's port).
//! The kernel lists listening sockets before established ones in each file, so the decision is
//! made as a line arrives and nothing per connection is kept.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use macha_core::snapshot::{Connections, Direction, PeerConnections};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many listening ports are kept.
pub const LISTENING_MAX: usize = 256;
/// At most this many (peer, port, direction) groups are kept; connections in further groups are
/// only counted.
pub const PEERS_MAX: usize = 256;

/// The kernel's TCP states this parser uses (`include/net/tcp_states.h`).
const ESTABLISHED: &str = "01";
const LISTEN: &str = "0A";

/// The accumulator: feed it each line of either file ([`TcpTable::line`]), then [`TcpTable::finish`].
#[derive(Debug, Clone, Default)]
pub struct TcpTable {
    listening: BTreeSet<u16>,
    groups: BTreeMap<(IpAddr, u16, Direction), u32>,
    established: u32,
    unlisted: u32,
    /// Lines that were neither a header nor a socket.
    pub bad_lines: u32,
}

impl TcpTable {
    /// Takes one line of `/proc/net/tcp` or `tcp6` (the header line is skipped).
    pub fn line(&mut self, line: &str) {
        let mut fields = line.split_ascii_whitespace();
        let (Some(slot), Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            if !line.trim().is_empty() {
                self.bad_lines += 1;
            }
            return;
        };
        if slot == "sl" {
            return;
        }
        let (Some((_, local_port)), Some((remote_ip, remote_port))) = (endpoint(local), endpoint(remote)) else {
            self.bad_lines += 1;
            return;
        };
        match state {
            LISTEN if self.listening.len() < LISTENING_MAX => {
                self.listening.insert(local_port);
            }
            ESTABLISHED => {
                if remote_ip.is_loopback() || remote_ip.is_unspecified() {
                    return;
                }
                self.established = self.established.saturating_add(1);
                let key = if self.listening.contains(&local_port) {
                    (remote_ip, local_port, Direction::Inbound)
                } else {
                    (remote_ip, remote_port, Direction::Outbound)
                };
                if let Some(n) = self.groups.get_mut(&key) {
                    *n = n.saturating_add(1);
                } else if self.groups.len() < PEERS_MAX {
                    self.groups.insert(key, 1);
                } else {
                    self.unlisted = self.unlisted.saturating_add(1);
                }
            }
            _ => {}
        }
    }

    /// The connections seen, the largest groups first.
    pub fn finish(self) -> Connections {
        let mut peers: Vec<PeerConnections> = self
            .groups
            .into_iter()
            .map(|((peer, port, direction), count)| PeerConnections { peer, port, direction, count })
            .collect();
        peers.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (a.peer, a.port).cmp(&(b.peer, b.port))));
        Connections {
            listening: self.listening.into_iter().collect(),
            peers,
            established: self.established,
            unlisted: self.unlisted,
        }
    }

    /// Whole texts, for the local observer and tests.
    pub fn from_texts(texts: &[&str]) -> Connections {
        let mut t = TcpTable::default();
        texts.iter().flat_map(|t| t.lines()).for_each(|l| t.line(l));
        t.finish()
    }
}

/// `0100007F:0016` or a 32-digit IPv6 address and a port; IPv4-mapped IPv6 becomes IPv4.
fn endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
}

/// One 32-bit word as the kernel prints it (`%08X` of the network-order bytes read on a
/// little-endian host) back into its network-order bytes.
fn word(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(u32::to_le_bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000    71        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0B00000A:1538 0C00000A:D431 01 00000000:00000000 02:000A7B1B 00000000    71        0 3 2 0000000000000000 20 4 30 10 -1
   3: 0B00000A:1538 0C00000A:D432 01 00000000:00000000 02:000A7B1B 00000000    71        0 4 2 0000000000000000 20 4 30 10 -1
   4: 0B00000A:A1B2 0D00000A:1F90 01 00000000:00000000 02:000A7B1B 00000000  1000        0 5 2 0000000000000000 20 4 30 10 -1
   5: 0100007F:A1B3 0100007F:0277 01 00000000:00000000 02:000A7B1B 00000000  1000        0 6 2 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000B00000A:0016 0000000000000000FFFF00000E00000A:C350 01 00000000:00000000 02:00000000 00000000     0        0 8 1 0000000000000000 100 0 0 10 0
   2: B80D012000000000000000000B000000:C351 B80D012000000000000000000F000000:0050 01 00000000:00000000 02:00000000 00000000     0        0 9 1 0000000000000000 100 0 0 10 0
";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn established_connections_are_grouped_by_peer_port_and_direction() {
        let c = TcpTable::from_texts(&[TCP, TCP6]);
        assert_eq!(c.listening, [22, 631, 5432]);
        // Loopback is left out; 3 IPv4 connections plus 2 IPv6 ones remain.
        assert_eq!(c.established, 5);
        assert_eq!(c.unlisted, 0);
        assert_eq!(
            c.peers[0],
            PeerConnections { peer: ip("10.0.0.12"), port: 5432, direction: Direction::Inbound, count: 2 }
        );
        let rest: Vec<(IpAddr, u16, Direction, u32)> =
            c.peers[1..].iter().map(|p| (p.peer, p.port, p.direction, p.count)).collect();
        assert_eq!(
            rest,
            [
                (ip("10.0.0.13"), 8080, Direction::Outbound, 1),
                (ip("10.0.0.14"), 22, Direction::Inbound, 1),
                (ip("2001:db8::f"), 80, Direction::Outbound, 1),
            ]
        );
    }

    #[test]
    fn groups_beyond_the_bound_are_counted_not_kept() {
        let mut t = TcpTable::default();
        for i in 0..(PEERS_MAX as u32 + 10) {
            let peer = u32::from(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)).swap_bytes();
            t.line(&format!("1: 0B00000A:C000 {peer:08X}:0050 01 0 0 0 0"));
        }
        t.line("garbage that is no socket");
        let c = t.finish();
        assert_eq!(c.peers.len(), PEERS_MAX);
        assert_eq!(c.established, PEERS_MAX as u32 + 10);
        assert_eq!(c.unlisted, 10);
        assert!(c.peers.iter().all(|p| p.direction == Direction::Outbound && p.port == 80));
    }

    #[test]
    fn hostile_lines_are_skipped() {
        let c = TcpTable::from_texts(&["1: ZZ:1 00:00 01", "2: 0B00000A:GGGG 0C00000A:0050 01", "\u{0}\u{1}"]);
        assert_eq!(c, Connections::default());
    }
}
