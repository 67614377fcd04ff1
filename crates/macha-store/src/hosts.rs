//! The host registry, for the fleet feature: which hosts Macha knows and how far it trusts them.

use crate::db::Store;
use crate::error::Result;
use crate::row::{enum_col, json_col, non_empty, to_json, ts_col};
use macha_core::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
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

const HOST_COLUMNS: &str = "name, address, port, user, state, host_key, os, profile, first_seen, last_seen";

fn host_from_row(row: &Row<'_>) -> rusqlite::Result<HostRecord> {
    Ok(HostRecord {
        name: row.get(0)?,
        address: row.get(1)?,
        port: row.get(2)?,
        user: row.get(3)?,
        state: enum_col(row, 4, HostState::parse)?,
        host_key: row.get(5)?,
        os: row.get(6)?,
        profile: json_col(row, 7)?,
        first_seen: ts_col(row, 8)?,
        last_seen: ts_col(row, 9)?,
    })
}

impl Store {
    /// Inserts `host` or replaces the stored one with the same name, keeping the earlier
    /// `first_seen`. Returns what is stored now.
    pub fn upsert_host(&mut self, host: &HostRecord) -> Result<HostRecord> {
        non_empty("host name", &host.name)?;
        let profile = to_json("host profile", &host.profile)?;
        let tx = self.write_txn()?;
        tx.prepare_cached(
            "INSERT INTO hosts (name, address, port, user, state, host_key, os, profile, first_seen, last_seen) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, port = excluded.port, \
             user = excluded.user, state = excluded.state, host_key = excluded.host_key, os = excluded.os, \
             profile = excluded.profile, first_seen = min(first_seen, excluded.first_seen), \
             last_seen = excluded.last_seen",
        )?
        .execute(params![
            host.name,
            host.address,
            host.port,
            host.user,
            host.state.as_str(),
            host.host_key,
            host.os,
            profile,
            host.first_seen.millis(),
            host.last_seen.millis(),
        ])?;
        let stored = tx
            .prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = ?1"))?
            .query_row([&host.name], host_from_row)?;
        tx.commit()?;
        Ok(stored)
    }

    /// The host with this name.
    pub fn get_host(&self, name: &str) -> Result<Option<HostRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = ?1"))?;
        Ok(stmt.query_row([name], host_from_row).optional()?)
    }

    /// All hosts, by name.
    pub fn list_hosts(&self) -> Result<Vec<HostRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name"))?;
        let rows = stmt.query_map([], host_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;

    fn host(name: &str, state: HostState, seen: i64) -> HostRecord {
        HostRecord {
            name: name.to_owned(),
            address: Some("192.0.2.10".to_owned()),
            port: Some(22),
            user: Some("macha".to_owned()),
            state,
            host_key: None,
            os: None,
            profile: serde_json::json!({}),
            first_seen: Timestamp(seen),
            last_seen: Timestamp(seen),
        }
    }

    #[test]
    fn upsert_get_list() {
        let (_dir, mut store) = temp_store();
        let web = store.upsert_host(&host("web1", HostState::Configured, 1_000)).unwrap();
        assert_eq!(web, host("web1", HostState::Configured, 1_000));
        let updated = HostRecord {
            host_key: Some("ssh-ed25519 AAAA".into()),
            os: Some("NixOS 26.05".into()),
            profile: serde_json::json!({"cores": 4}),
            ..host("web1", HostState::Discovered, 2_000)
        };
        let web = store.upsert_host(&updated).unwrap();
        assert_eq!(
            (web.state, web.first_seen, web.last_seen),
            (HostState::Discovered, Timestamp(1_000), Timestamp(2_000))
        );
        assert_eq!(web.profile["cores"], 4);
        store.upsert_host(&host("db1", HostState::Trusted, 3_000)).unwrap();
        assert_eq!(store.get_host("web1").unwrap(), Some(web));
        assert_eq!(store.get_host("nope").unwrap(), None);
        assert_eq!(
            store.list_hosts().unwrap().iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            vec!["db1", "web1"]
        );
        for state in HostState::ALL {
            store.upsert_host(&host("x", state, 1)).unwrap();
            assert_eq!(HostState::parse(state.as_str()), Some(state));
        }
        assert!(store.upsert_host(&HostRecord { port: Some(0), ..host("y", HostState::Configured, 1) }).is_err());
        let json = serde_json::to_value(store.get_host("db1").unwrap().unwrap()).unwrap();
        assert_eq!(json["state"], "trusted");
        assert_eq!(json["port"], 22);
    }
}
