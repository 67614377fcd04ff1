//! The fleet map at the daemon's edge: the inputs of [`macha_core::fleet_map::build`] gathered
//! from the registry (which hosts, their profiles), the configuration (`depends_on`, addresses)
//! and the hosts' last snapshots (their TCP connections). docs/fleet.md, "The fleet map".

use crate::config::Config;
use macha_core::HostName;
use macha_core::fleet_map::{FleetMap, HostInput, build};
use macha_core::snapshot::Connections;
use macha_store::{HostState, Store};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The map of the hosts Macha observes (configured, admitted and trusted ones).
pub fn answer(
    store: &Store,
    config: &Config,
    connections: &BTreeMap<HostName, Connections>,
    resolved: &BTreeMap<HostName, Vec<IpAddr>>,
) -> anyhow::Result<FleetMap> {
    let registry = store.list_fleet_hosts()?;
    let mut inputs = Vec::new();
    for h in &registry {
        if matches!(h.record.state, HostState::Discovered | HostState::Forgotten) {
            continue;
        }
        let Ok(name) = HostName::parse(&h.record.name) else { continue };
        let configured = config.hosts.iter().find(|c| c.name == name);
        let mut addresses: Vec<IpAddr> = resolved.get(&name).cloned().unwrap_or_default();
        for a in [configured.map(|c| c.address.as_str()), h.record.address.as_deref()].into_iter().flatten() {
            if let Ok(ip) = a.parse::<IpAddr>()
                && !addresses.contains(&ip)
            {
                addresses.push(ip);
            }
        }
        inputs.push(HostInput {
            addresses,
            depends_on: configured.map(|c| c.depends_on.iter().map(ToString::to_string).collect()).unwrap_or_default(),
            role: h.record.profile.get("role").and_then(|r| r.as_str()).map(str::to_owned),
            os: h.record.os.clone(),
            connections: connections.get(&name).cloned(),
            name: Some(name),
        });
    }
    Ok(build(&inputs))
}
