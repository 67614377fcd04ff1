//! Small key/value state that must survive restarts: the journal cursor, the previous CPU ticks.

use crate::db::Store;
use crate::error::Result;
use crate::row::non_empty;
use rusqlite::OptionalExtension;

impl Store {
    /// The value stored under `key`.
    pub fn get_kv(&self, key: &str) -> Result<Option<String>> {
        let mut stmt = self.conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?;
        Ok(stmt.query_row([key], |row| row.get(0)).optional()?)
    }

    /// Removes `key` (nothing if it is not there).
    pub fn delete_kv(&mut self, key: &str) -> Result<()> {
        self.conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([key])?;
        Ok(())
    }

    /// Stores `value` under `key`, replacing any previous value, durably.
    pub fn set_kv(&mut self, key: &str, value: &str) -> Result<()> {
        non_empty("kv key", key)?;
        self.conn
            .prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([key, value])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::temp_store;

    #[test]
    fn set_get_replace() {
        let (dir, mut store) = temp_store();
        assert_eq!(store.get_kv("journal.cursor").unwrap(), None);
        store.set_kv("journal.cursor", "s=abc;i=1").unwrap();
        store.set_kv("journal.cursor", "s=abc;i=2").unwrap();
        store.set_kv("cpu.ticks", "").unwrap();
        assert!(store.set_kv("", "x").is_err());
        drop(store);
        let store = crate::Store::open(dir.path().join("macha.db")).unwrap();
        assert_eq!(store.get_kv("journal.cursor").unwrap().as_deref(), Some("s=abc;i=2"));
        assert_eq!(store.get_kv("cpu.ticks").unwrap().as_deref(), Some(""));
    }
}
