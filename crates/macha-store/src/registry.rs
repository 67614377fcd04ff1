//! The fleet registry on top of the `hosts` table: where each host came from, its standing changes
//! (each one guarded by the state it moves from and committed together with its audit record), and
//! the status of the last contact.

use crate::NewAudit;
use crate::audit::{Link, insert_audit};
use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::hosts::{HostRecord, HostState};
use crate::row::{enum_col, json_col, non_empty, to_json, ts_col};
use macha_core::Timestamp;
use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

/// Where a host entered the registry from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostSource {
    /// `[hosts.<name>]` in the configuration.
    Config,
    /// A `_HOSTNAME` in the remote journal (discovery).
    Journal,
    /// A person (`macha-systems admit`).
    Admin,
}

impl HostSource {
    pub const ALL: [HostSource; 3] = [HostSource::Config, HostSource::Journal, HostSource::Admin];
    pub fn as_str(self) -> &'static str {
        match self {
            HostSource::Config => "config",
            HostSource::Journal => "journal",
            HostSource::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<HostSource> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A registered host with its source and last-contact status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetHost {
    #[serde(flatten)]
    pub record: HostRecord,
    pub source: HostSource,
    /// `{}` before the first contact; then `{"ok": bool, "kind", "reason", "at", "last_ok", …}`.
    pub status: serde_json::Value,
}

/// What [`Store::register_discovered`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryChanges {
    /// Names newly registered.
    pub added: Vec<String>,
    /// Names deleted to keep the discovered hosts within the cap (least recently seen first).
    pub evicted: Vec<String>,
}

const COLUMNS: &str = "name, address, port, user, state, host_key, os, profile, first_seen, last_seen, source, status";

fn fleet_host_from_row(row: &Row<'_>) -> rusqlite::Result<FleetHost> {
    Ok(FleetHost {
        record: HostRecord {
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
        },
        source: enum_col(row, 10, HostSource::parse)?,
        status: json_col(row, 11)?,
    })
}

impl Store {
    /// The registered host `name`, with source and status.
    pub fn get_fleet_host(&self, name: &str) -> Result<Option<FleetHost>> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {COLUMNS} FROM hosts WHERE name = ?1"))?;
        Ok(stmt.query_row([name], fleet_host_from_row).optional()?)
    }

    /// Every registered host, by name.
    pub fn list_fleet_hosts(&self) -> Result<Vec<FleetHost>> {
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {COLUMNS} FROM hosts ORDER BY name"))?;
        let rows = stmt.query_map([], fleet_host_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Writes `host` (inserting or replacing everything but `first_seen`, which keeps the
    /// earliest, and `status`, which keeps its value) if the stored state is still `expected`
    /// (`None`: the host must not exist yet), and appends `audit` in the same transaction. A state
    /// moved meanwhile is a [`StoreError::Conflict`].
    pub fn put_fleet_host(
        &mut self,
        host: &HostRecord,
        source: HostSource,
        expected: Option<HostState>,
        audit: &NewAudit,
    ) -> Result<FleetHost> {
        non_empty("host name", &host.name)?;
        let profile = to_json("host profile", &host.profile)?;
        let tx = self.write_txn()?;
        let current: Option<String> =
            tx.query_row("SELECT state FROM hosts WHERE name = ?1", [&host.name], |r| r.get(0)).optional()?;
        if current.as_deref() != expected.map(HostState::as_str) {
            return Err(StoreError::Conflict {
                entity: "host",
                id: 0,
                expected: expected.map_or("absent", HostState::as_str).to_owned(),
                actual: current.unwrap_or_else(|| "absent".into()),
            });
        }
        tx.prepare_cached(
            "INSERT INTO hosts (name, address, port, user, state, host_key, os, profile, first_seen, last_seen, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, port = excluded.port, \
             user = excluded.user, state = excluded.state, host_key = excluded.host_key, os = excluded.os, \
             profile = excluded.profile, first_seen = min(first_seen, excluded.first_seen), \
             last_seen = max(last_seen, excluded.last_seen), source = excluded.source",
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
            source.as_str(),
        ])?;
        insert_audit(&tx, audit, &Link::default())?;
        let stored = tx
            .prepare_cached(&format!("SELECT {COLUMNS} FROM hosts WHERE name = ?1"))?
            .query_row([&host.name], fleet_host_from_row)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Registers what one discovery pass saw of the names outside the allowed domains, in one
    /// transaction: `seen` names already registered as discovered get `last_seen = now`; each of
    /// `new` (state discovered, source journal) is inserted with its audit record unless its name
    /// is registered already; then, while more than `cap` hosts are discovered, the least recently
    /// seen discovered hosts that came from the journal are deleted (never a configured, admitted,
    /// trusted or forgotten one: a person's decisions and the history of contacted hosts stay),
    /// with one audit record `evicted` (given the evicted names) for them all.
    pub fn register_discovered(
        &mut self,
        seen: &[String],
        new: &[(HostRecord, NewAudit)],
        now: Timestamp,
        cap: usize,
        evicted: impl FnOnce(&[String]) -> NewAudit,
    ) -> Result<DiscoveryChanges> {
        let tx = self.write_txn()?;
        {
            let mut touch = tx.prepare_cached(
                "UPDATE hosts SET last_seen = max(last_seen, ?2) WHERE name = ?1 AND state = 'discovered'",
            )?;
            for name in seen {
                touch.execute(params![name, now.millis()])?;
            }
        }
        let mut added = Vec::new();
        for (host, audit) in new {
            non_empty("host name", &host.name)?;
            if host.state != HostState::Discovered {
                return Err(StoreError::Invalid {
                    what: "host state",
                    reason: format!("{}: only discovered hosts are registered here", host.name),
                });
            }
            let profile = to_json("host profile", &host.profile)?;
            let n = tx
                .prepare_cached(
                    "INSERT INTO hosts (name, address, port, user, state, host_key, os, profile, first_seen, last_seen, source) \
                     VALUES (?1, ?2, ?3, ?4, 'discovered', ?5, ?6, ?7, ?8, ?9, 'journal') ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![
                    host.name,
                    host.address,
                    host.port,
                    host.user,
                    host.host_key,
                    host.os,
                    profile,
                    host.first_seen.millis(),
                    host.last_seen.millis(),
                ])?;
            if n == 1 {
                insert_audit(&tx, audit, &Link::default())?;
                added.push(host.name.clone());
            }
        }
        let count: i64 = tx.query_row("SELECT count(*) FROM hosts WHERE state = 'discovered'", [], |r| r.get(0))?;
        let excess = usize::try_from(count).unwrap_or(0).saturating_sub(cap);
        let mut gone = Vec::new();
        if excess > 0 {
            let mut oldest = tx.prepare_cached(
                "SELECT name FROM hosts WHERE state = 'discovered' AND source = 'journal' \
                 ORDER BY last_seen, first_seen, name LIMIT ?1",
            )?;
            gone = oldest
                .query_map([i64::try_from(excess).unwrap_or(i64::MAX)], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut delete =
                tx.prepare_cached("DELETE FROM hosts WHERE name = ?1 AND state = 'discovered' AND source = 'journal'")?;
            for name in &gone {
                delete.execute([name])?;
            }
        }
        if !gone.is_empty() {
            insert_audit(&tx, &evicted(&gone), &Link::default())?;
        }
        tx.commit()?;
        Ok(DiscoveryChanges { added, evicted: gone })
    }

    /// How many hosts are registered as discovered.
    pub fn count_discovered(&self) -> Result<usize> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM hosts WHERE state = 'discovered'", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Records the outcome of a contact: the status, and (when the host answered) `last_seen`.
    /// No audit record: this happens every cycle; changes worth reading are audited by the caller.
    pub fn set_host_status(&mut self, name: &str, status: &serde_json::Value, seen: Option<Timestamp>) -> Result<()> {
        let status = to_json("host status", status)?;
        let tx = self.write_txn()?;
        let n = tx
            .prepare_cached(
                "UPDATE hosts SET status = ?2, last_seen = max(last_seen, coalesce(?3, last_seen)) WHERE name = ?1",
            )?
            .execute(params![name, status, seen.map(Timestamp::millis)])?;
        if n == 0 {
            return Err(StoreError::NotFound { entity: "host", id: 0 });
        }
        tx.commit()?;
        Ok(())
    }

    /// Records what the first contact found (operating system and profile), with its audit record.
    pub fn set_host_profile(
        &mut self,
        name: &str,
        os: &str,
        profile: &serde_json::Value,
        audit: Option<&NewAudit>,
    ) -> Result<()> {
        let profile = to_json("host profile", profile)?;
        let tx = self.write_txn()?;
        let n = tx
            .prepare_cached("UPDATE hosts SET os = ?2, profile = ?3 WHERE name = ?1")?
            .execute(params![name, os, profile])?;
        if n == 0 {
            return Err(StoreError::NotFound { entity: "host", id: 0 });
        }
        if let Some(a) = audit {
            insert_audit(&tx, a, &Link::default())?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::temp_store;
    use crate::{AuditKind, AuditQuery, Severity};

    fn host(name: &str, state: HostState) -> HostRecord {
        HostRecord {
            name: name.to_owned(),
            address: Some("10.0.0.1".into()),
            port: Some(22),
            user: None,
            state,
            host_key: None,
            os: None,
            profile: serde_json::json!({}),
            first_seen: Timestamp(1),
            last_seen: Timestamp(1),
        }
    }

    fn audit(s: &str) -> NewAudit {
        NewAudit::new(Timestamp(5), AuditKind::Config, Severity::Notice, "web1", s)
    }

    #[test]
    fn guarded_transitions_with_audit() {
        let (_dir, mut store) = temp_store();
        let h = store
            .put_fleet_host(&host("web1", HostState::Discovered), HostSource::Journal, None, &audit("discovered"))
            .unwrap();
        assert_eq!(
            (h.record.state, h.source, h.status.clone()),
            (HostState::Discovered, HostSource::Journal, serde_json::json!({}))
        );
        // A second "new" registration of the same name conflicts.
        let again = store.put_fleet_host(&host("web1", HostState::Discovered), HostSource::Journal, None, &audit("x"));
        assert!(matches!(again, Err(StoreError::Conflict { .. })), "{again:?}");
        // Admit from discovered; the guard is the state moved from.
        let h = store
            .put_fleet_host(
                &host("web1", HostState::Admitted),
                HostSource::Journal,
                Some(HostState::Discovered),
                &audit("admitted"),
            )
            .unwrap();
        assert_eq!(h.record.state, HostState::Admitted);
        let stale = store.put_fleet_host(
            &host("web1", HostState::Trusted),
            HostSource::Admin,
            Some(HostState::Discovered),
            &audit("y"),
        );
        assert!(matches!(stale, Err(StoreError::Conflict { .. })));
        store.set_host_status("web1", &serde_json::json!({"ok": true}), Some(Timestamp(9))).unwrap();
        store
            .set_host_profile("web1", "Debian 12", &serde_json::json!({"role": "minimal"}), Some(&audit("identified")))
            .unwrap();
        let h = store.get_fleet_host("web1").unwrap().unwrap();
        assert_eq!(
            (h.status["ok"].as_bool(), h.record.last_seen, h.record.os.as_deref()),
            (Some(true), Timestamp(9), Some("Debian 12"))
        );
        assert_eq!(store.list_fleet_hosts().unwrap().len(), 1);
        assert!(store.set_host_status("nope", &serde_json::json!({}), None).is_err());
        let trail = store.query_audit(&AuditQuery { host: Some("web1".into()), ..AuditQuery::default() }).unwrap();
        assert_eq!(
            trail.iter().map(|a| a.summary.as_str()).collect::<Vec<_>>(),
            ["discovered", "admitted", "identified"]
        );
        // The table's own checks hold: a port of 0 is refused, nothing is written.
        let bad = HostRecord { port: Some(0), ..host("db1", HostState::Configured) };
        assert!(store.put_fleet_host(&bad, HostSource::Config, None, &audit("z")).is_err());
        assert!(store.get_fleet_host("db1").unwrap().is_none());
        let json = serde_json::to_value(store.get_fleet_host("web1").unwrap().unwrap()).unwrap();
        assert_eq!((json["state"].as_str(), json["port"].as_u64()), (Some("admitted"), Some(22)));
    }

    #[test]
    fn discovered_hosts_are_capped_evicting_the_least_recently_seen() {
        let (_dir, mut store) = temp_store();
        // People's and the configuration's hosts, which are never evicted.
        store
            .put_fleet_host(&host("kept-config", HostState::Configured), HostSource::Config, None, &audit("c"))
            .unwrap();
        store
            .put_fleet_host(&host("kept-admitted", HostState::Admitted), HostSource::Journal, None, &audit("a"))
            .unwrap();
        let at = |name: &str, t: i64| {
            let h =
                HostRecord { first_seen: Timestamp(t), last_seen: Timestamp(t), ..host(name, HostState::Discovered) };
            (h, audit(&format!("discovered {name}")))
        };
        let bye = |names: &[String]| audit(&format!("evicted {}", names.join(",")));
        let first: Vec<_> = (0..5).map(|i| at(&format!("junk{i}"), 10 + i)).collect();
        let c = store.register_discovered(&[], &first, Timestamp(20), 4, bye).unwrap();
        assert_eq!((c.added.len(), c.evicted.as_slice()), (5, &["junk0".to_owned()][..]));
        // junk1 is seen again (it becomes the most recent); two new names push out junk2 and junk3.
        let again = [at("junk1", 30), at("new1", 30), at("new2", 31)];
        let c = store.register_discovered(&["junk1".to_owned()], &again, Timestamp(30), 4, bye).unwrap();
        assert_eq!(c.added, ["new1", "new2"]);
        assert_eq!(c.evicted, ["junk2", "junk3"]);
        let mut names: Vec<String> = store.list_fleet_hosts().unwrap().into_iter().map(|h| h.record.name).collect();
        names.sort();
        assert_eq!(names, ["junk1", "junk4", "kept-admitted", "kept-config", "new1", "new2"]);
        assert_eq!(store.count_discovered().unwrap(), 4);
        // A name registered in another state is left alone; not a second record either.
        let c = store.register_discovered(&[], &[at("kept-config", 40)], Timestamp(40), 4, bye).unwrap();
        assert_eq!(c, DiscoveryChanges::default());
        assert_eq!(store.get_fleet_host("kept-config").unwrap().unwrap().record.state, HostState::Configured);
        let trail = store.query_audit(&AuditQuery::default()).unwrap();
        assert_eq!(trail.iter().filter(|a| a.summary.starts_with("evicted")).count(), 2);
    }
}
