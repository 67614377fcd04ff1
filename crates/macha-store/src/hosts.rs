//! The host registry's record types: which hosts Macha knows and how far it trusts them. They are
//! written and read only through the guarded, audited functions in `registry.rs`.

use macha_core::Timestamp;
use serde::{Deserialize, Serialize};

/// How far along a host is, from named in the configuration to trusted with actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Named in the configuration, not contacted yet.
    Configured,
    /// Reached and probed; its host key is known but not admitted.
    Discovered,
    /// A person admitted its host key; observation only.
    Admitted,
    /// Actions may run on it.
    Trusted,
    /// Removed; kept so that its history stays readable.
    Forgotten,
}

impl HostState {
    pub const ALL: [HostState; 5] =
        [HostState::Configured, HostState::Discovered, HostState::Admitted, HostState::Trusted, HostState::Forgotten];

    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Configured => "configured",
            HostState::Discovered => "discovered",
            HostState::Admitted => "admitted",
            HostState::Trusted => "trusted",
            HostState::Forgotten => "forgotten",
        }
    }

    pub fn parse(s: &str) -> Option<HostState> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub state: HostState,
    pub host_key: Option<String>,
    pub os: Option<String>,
    /// What discovery found out (hardware, services, role), as JSON.
    pub profile: serde_json::Value,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for state in HostState::ALL {
            assert_eq!(HostState::parse(state.as_str()), Some(state));
        }
        assert_eq!(HostState::parse("root"), None);
    }
}
