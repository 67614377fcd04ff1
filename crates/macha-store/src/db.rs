//! Opening the database: file creation, connection settings, header sanity checks and migrations.

use crate::error::{Result, StoreError};
use crate::schema::{MIGRATIONS, SCHEMA_VERSION};
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection waits for a lock held by another connection before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL is truncated back to this size after a checkpoint, so it cannot grow without bound.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The Macha database: one SQLite file in WAL mode.
///
/// Reads take `&self`; writes take `&mut self` and each runs in one `BEGIN IMMEDIATE` transaction, so
/// a write either happened completely (including its audit record) or not at all.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    path: PathBuf,
    /// Size caps and retention periods ([`Store::set_limits`]).
    pub(crate) limits: crate::retention::Limits,
}

impl Store {
    /// Opens the database at `path` for reading and writing, creating the file (mode 0600) if it does
    /// not exist and migrating the schema to [`SCHEMA_VERSION`]. The parent directory must exist.
    ///
    /// Settings: `journal_mode=WAL`, `synchronous=FULL` (a returned commit survives a power cut),
    /// `foreign_keys=ON`, a busy timeout of [`BUSY_TIMEOUT`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(StoreError::MissingDirectory { path, dir });
        }
        // Create the file ourselves so that it never exists with looser permissions; SQLite gives
        // the -wal and -shm files the mode of the database file.
        let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
        let fresh = match created {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        // An existing file of 0 bytes is not "a new database": it was a database once (truncated by
        // accident, a full disk, a bad restore) or something else's file. Never start over it.
        if !fresh && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == 0 {
            return Err(StoreError::NotADatabase {
                path,
                reason: "the file exists but is empty (0 bytes); Macha does not start a new database over an \
                         existing file: restore it from a backup, or remove it to start with an empty history"
                    .to_owned(),
            });
        }
        check_header(&path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        configure(&conn).map_err(|e| classify(&path, e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| classify(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid {
                what: "journal mode",
                reason: format!("{} stayed in journal mode {mode} instead of wal", path.display()),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| classify(&path, e))?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT).map_err(|e| classify(&path, e))?;
        check_application(&conn, &path)?;
        migrate(&mut conn, &path)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID).map_err(|e| classify(&path, e))?;
        Ok(Store { conn, path, limits: crate::retention::Limits::default() })
    }

    /// Opens an existing database read-only, for CLIs and inspection. Never creates, migrates or
    /// writes; write calls on the returned store fail. The schema must be exactly
    /// [`SCHEMA_VERSION`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        check_header(&path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        configure(&conn).map_err(|e| classify(&path, e))?;
        conn.pragma_update(None, "query_only", true).map_err(|e| classify(&path, e))?;
        let found = user_version(&conn).map_err(|e| classify(&path, e))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path, found, supported: SCHEMA_VERSION });
        }
        if found < SCHEMA_VERSION {
            return Err(StoreError::OutdatedSchema { path, found, supported: SCHEMA_VERSION });
        }
        Ok(Store { conn, path, limits: crate::retention::Limits::default() })
    }

    /// A private in-memory database with the full schema, for tests of other crates.
    pub fn open_in_memory() -> Result<Store> {
        let path = PathBuf::from(":memory:");
        let mut conn = Connection::open_in_memory()?;
        configure(&conn)?;
        migrate(&mut conn, &path)?;
        Ok(Store { conn, path, limits: crate::retention::Limits::default() })
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(user_version(&self.conn)?)
    }

    /// Runs `PRAGMA integrity_check` and `PRAGMA foreign_key_check`. Returns the problems found;
    /// empty means the database is sound. Reads the whole file, so it takes a while on a big one.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        for row in rows {
            let line = row?;
            if line != "ok" {
                problems.push(line);
            }
        }
        let mut stmt = self.conn.prepare("PRAGMA foreign_key_check")?;
        let rows = stmt.query_map([], |row| {
            Ok(format!(
                "foreign key violation: {} row {} references {}",
                row.get::<_, String>(0)?,
                row.get::<_, Option<i64>>(1)?.unwrap_or_default(),
                row.get::<_, String>(2)?
            ))
        })?;
        for row in rows {
            problems.push(row?);
        }
        Ok(problems)
    }

    /// Runs `PRAGMA quick_check`: every page and record is read and checked for consistency (not
    /// the indexes' contents), which finds overwritten or torn pages in a fraction of the time of
    /// [`Store::integrity_check`]. Returns the problems found; empty means sound. The daemon runs
    /// it at every start.
    pub fn quick_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut problems = Vec::new();
        for row in rows {
            let line = row?;
            if line != "ok" {
                problems.push(line);
            }
        }
        Ok(problems)
    }

    /// Starts a write transaction that takes the write lock at once, so that it cannot fail half-way
    /// with `SQLITE_BUSY` on lock upgrade.
    pub(crate) fn write_txn(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }
}

/// Settings shared by every connection.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // The schema's triggers and checks call only built-in functions.
    conn.pragma_update(None, "trusted_schema", false)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies the missing migrations, each in its own transaction together with the version bump.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    loop {
        let found = user_version(conn).map_err(|e| classify(path, e))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path: path.to_path_buf(), found, supported: SCHEMA_VERSION });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| classify(path, e))?;
        // Another process may have migrated between the read above and taking the lock.
        let version = user_version(&tx).map_err(|e| classify(path, e))?;
        if version != found {
            continue;
        }
        let Some(sql) = usize::try_from(version).ok().and_then(|i| MIGRATIONS.get(i)) else {
            return Err(StoreError::Invalid {
                what: "schema version",
                reason: format!("{} has schema version {version}", path.display()),
            });
        };
        let next = version + 1;
        let migration_error = |source| StoreError::Migration { path: path.to_path_buf(), version: next, source };
        tx.execute_batch(sql).map_err(migration_error)?;
        if next == 4 {
            crate::chain::backfill(&tx).map_err(migration_error)?;
            tx.execute_batch(crate::schema::V4_AFTER_BACKFILL).map_err(migration_error)?;
        }
        tx.pragma_update(None, "user_version", next).map_err(migration_error)?;
        tx.commit().map_err(migration_error)?;
    }
}

/// Turns the SQLite errors that mean "this file is not a usable database" into errors naming it.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path: path.to_path_buf(), reason: e.to_string() },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt { path: path.to_path_buf(), source: e },
        Some(ErrorCode::CannotOpen) => StoreError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
        },
        _ => StoreError::Sqlite(e),
    }
}

/// Checks the 100-byte SQLite header before SQLite sees the file, to give a clear error for a file
/// that is not a database at all or that was cut short (a partial copy, a full disk).
///
/// The length check is skipped while a write-ahead log holds data: then the main file may
/// legitimately lag behind the header until the next checkpoint.
/// `PRAGMA application_id` of a Macha database ("MACH"): tells it apart from any other SQLite file.
pub const APPLICATION_ID: i32 = 0x4D41_4348;

/// Refuses an SQLite file that belongs to something else: another application id, or (for files
/// from before the id was set) tables but no Macha schema version.
fn check_application(conn: &Connection, path: &Path) -> Result<()> {
    let foreign = |reason: String| StoreError::NotADatabase { path: path.to_path_buf(), reason };
    let id: i32 = conn.pragma_query_value(None, "application_id", |row| row.get(0)).map_err(|e| classify(path, e))?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    if id != 0 {
        return Err(foreign(format!("it is the SQLite database of another application (application_id {id:#x})")));
    }
    let version = user_version(conn).map_err(|e| classify(path, e))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |row| row.get(0))
        .map_err(|e| classify(path, e))?;
    if version == 0 && tables > 0 {
        return Err(foreign(format!(
            "it is an SQLite database with {tables} tables but no Macha schema; refusing to add Macha's tables to it"
        )));
    }
    Ok(())
}

fn check_header(path: &Path) -> Result<()> {
    let io_error = |source| StoreError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    if len == 0 {
        return Ok(()); // A new, empty database.
    }
    let not_a_database = |reason: String| StoreError::NotADatabase { path: path.to_path_buf(), reason };
    if len < 100 {
        return Err(not_a_database(format!("the file has {len} bytes, fewer than an SQLite header")));
    }
    let mut header = [0u8; 100];
    file.read_exact(&mut header).map_err(io_error)?;
    if &header[..16] != b"SQLite format 3\0" {
        return Err(not_a_database("the file does not start with the SQLite header".to_owned()));
    }
    let be32 = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let (change_counter, pages, valid_for) = (be32(24), be32(28), be32(92));
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if pages != 0 && change_counter == valid_for && wal_len == 0 {
        let expected = u64::from(pages) * page_size;
        if len < expected {
            return Err(StoreError::Truncated { path: path.to_path_buf(), expected, actual: len });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{audit, new_approval, temp_store};
    use crate::{ApprovalState, AuditKind, AuditQuery, Severity};
    use macha_core::Timestamp;
    use std::os::unix::fs::PermissionsExt;

    fn pragma_i64(store: &Store, name: &str) -> i64 {
        store.conn.pragma_query_value(None, name, |row| row.get(0)).unwrap()
    }

    #[test]
    fn an_existing_empty_file_is_refused_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("macha.db");
        // A database truncated to nothing (a bad restore, `: > macha.db`).
        std::fs::write(&path, b"").unwrap();
        let err = Store::open(&path).unwrap_err().to_string();
        assert!(err.contains("empty (0 bytes)"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the file must be left as it was");
        assert!(Store::open_read_only(&path).is_err());
    }

    #[test]
    fn another_applications_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Someone else's SQLite file with tables, no Macha schema.
        let other = dir.path().join("other.db");
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch(
            "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO photos VALUES (1, 'x');",
        )
        .unwrap();
        drop(conn);
        let err = Store::open(&other).unwrap_err().to_string();
        assert!(err.contains("no Macha schema"), "{err}");
        let conn = Connection::open(&other).unwrap();
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE type='table'", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 1, "no Macha table was added");
        drop(conn);
        // An SQLite file that says it belongs to another application.
        let tagged = dir.path().join("tagged.db");
        let conn = Connection::open(&tagged).unwrap();
        conn.pragma_update(None, "application_id", 0x1234).unwrap();
        drop(conn);
        let err = Store::open(&tagged).unwrap_err().to_string();
        assert!(err.contains("another application"), "{err}");
        // Macha's own database is marked, and opens again.
        let ours = dir.path().join("macha.db");
        drop(Store::open(&ours).unwrap());
        let store = Store::open(&ours).unwrap();
        assert_eq!(pragma_i64(&store, "application_id"), i64::from(APPLICATION_ID));
    }

    #[test]
    fn open_creates_a_private_durable_wal_database() {
        let (dir, store) = temp_store();
        let path = dir.path().join("macha.db");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let journal: String = store.conn.pragma_query_value(None, "journal_mode", |row| row.get(0)).unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(pragma_i64(&store, "synchronous"), 2, "synchronous=FULL");
        assert_eq!(pragma_i64(&store, "foreign_keys"), 1);
        assert_eq!(pragma_i64(&store, "busy_timeout"), 5_000);
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.path(), path);
        assert_eq!(store.integrity_check().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn existing_file_permissions_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("macha.db");
        drop(Store::open(&path).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        Store::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/macha.db");
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::MissingDirectory { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().join("no/such/dir").display().to_string()), "{msg}");
        assert!(msg.contains("macha.db"), "{msg}");
        assert!(!dir.path().join("no").exists());
    }

    #[test]
    fn migrations_are_idempotent_on_reopen() {
        let (dir, mut store) = temp_store();
        let path = dir.path().join("macha.db");
        store.append_audit(&audit(1, AuditKind::Daemon, Severity::Info)).unwrap();
        drop(store);
        for _ in 0..3 {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            assert_eq!(store.query_audit(&AuditQuery::default()).unwrap().len(), 1);
        }
        let read_only = Store::open_read_only(&path).unwrap();
        assert_eq!(read_only.query_audit(&AuditQuery::default()).unwrap().len(), 1);
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let (dir, store) = temp_store();
        let path = dir.path().join("macha.db");
        store.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(store);
        let before = std::fs::read(&path).unwrap();
        for res in [Store::open(&path), Store::open_read_only(&path)] {
            match res {
                Err(StoreError::NewerSchema { found, supported, .. }) => {
                    assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
                }
                other => panic!("expected NewerSchema, got {other:?}"),
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn garbage_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("short", b"{\"queue\": [".to_vec()),
            ("json", br#"[{"action": "restart", "unit": "nginx"}, {"action": "res"#.repeat(20)),
            ("zeros", vec![0u8; 8192]),
            ("magic-then-noise", {
                let mut v = b"SQLite format 3\0".to_vec();
                v.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
                v
            }),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            for res in [Store::open(&path), Store::open_read_only(&path)] {
                let err = res.unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains(&path.display().to_string()), "{name}: {msg}");
                assert!(!msg.ends_with('.'), "{name}: {msg}");
            }
            // The file was not touched.
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
        }
    }

    #[test]
    fn truncated_database_gives_a_clear_error() {
        let (dir, mut store) = temp_store();
        let path = dir.path().join("macha.db");
        let big = serde_json::json!({"blob": "x".repeat(2_000)});
        let batch: Vec<_> =
            (0..200).map(|i| audit(i, AuditKind::Snapshot, Severity::Info).with_payload(big.clone())).collect();
        store.append_audit_batch(&batch).unwrap();
        drop(store); // The last connection checkpoints and removes the WAL.
        let full = std::fs::read(&path).unwrap();
        assert!(full.len() > 100_000);
        for keep in [full.len() / 2, 4096, 99, 1] {
            let cut = dir.path().join(format!("cut-{keep}.db"));
            std::fs::write(&cut, &full[..keep]).unwrap();
            let err = Store::open(&cut).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, StoreError::Truncated { .. } | StoreError::NotADatabase { .. }), "{keep}: {err:?}");
            assert!(msg.contains(&cut.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn read_only_store() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Store::open_read_only(dir.path().join("absent.db")).unwrap_err();
        assert!(matches!(missing, StoreError::Io { .. }), "{missing:?}");
        assert!(!dir.path().join("absent.db").exists());

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        let outdated = Store::open_read_only(&empty).unwrap_err();
        assert!(matches!(outdated, StoreError::OutdatedSchema { found: 0, .. }), "{outdated:?}");

        let path = dir.path().join("macha.db");
        let mut writer = Store::open(&path).unwrap();
        writer
            .create_approval(&new_approval(1_000, 5_000), &audit(1_000, AuditKind::Approval, Severity::Notice))
            .unwrap();
        let mut reader = Store::open_read_only(&path).unwrap();
        assert_eq!(reader.list_approvals(&[ApprovalState::Pending], None).unwrap().len(), 1);
        assert!(reader.append_audit(&audit(1, AuditKind::Daemon, Severity::Info)).is_err());
        // The reader sees what the writer commits later.
        writer.append_audit(&audit(2, AuditKind::Daemon, Severity::Info)).unwrap();
        assert_eq!(reader.query_audit(&AuditQuery::default()).unwrap().len(), 2);
    }

    #[test]
    fn in_memory_store_has_the_schema() {
        let mut store = Store::open_in_memory().unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.append_audit(&audit(1, AuditKind::Daemon, Severity::Info)).unwrap();
        assert_eq!(store.last_audit_id().unwrap(), 1);
    }

    #[test]
    fn racing_deciders_cannot_both_win() {
        let (dir, mut store) = temp_store();
        let path = dir.path().join("macha.db");
        let note = audit(1_000, AuditKind::Approval, Severity::Notice);
        let ids: Vec<i64> =
            (0..20).map(|_| store.create_approval(&new_approval(1_000, 60_000), &note).unwrap().id).collect();
        let barrier = std::sync::Barrier::new(2);
        let outcomes: Vec<Vec<bool>> = std::thread::scope(|s| {
            let handles: Vec<_> = [ApprovalState::Approved, ApprovalState::Rejected]
                .into_iter()
                .map(|to| {
                    let (path, ids, barrier, note) = (&path, &ids, &barrier, &note);
                    s.spawn(move || {
                        let mut store = Store::open(path).unwrap();
                        barrier.wait();
                        ids.iter()
                            .map(|&id| {
                                let res = store.transition_approval(
                                    id,
                                    ApprovalState::Pending,
                                    to,
                                    "person",
                                    None,
                                    Timestamp(2_000),
                                    note,
                                );
                                match res {
                                    Ok(_) => true,
                                    Err(StoreError::Conflict { .. }) => false,
                                    Err(e) => panic!("unexpected error: {e}"),
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, id) in ids.iter().enumerate() {
            assert!(outcomes[0][i] ^ outcomes[1][i], "approval {id}: exactly one decider wins");
            let history = store.query_audit(&AuditQuery { approval_id: Some(*id), ..Default::default() }).unwrap();
            assert_eq!(history.len(), 2);
        }
    }

    #[test]
    fn error_messages_do_not_end_with_a_period() {
        let errors = [
            StoreError::Conflict { entity: "approval", id: 7, expected: "pending".into(), actual: "approved".into() },
            StoreError::NotFound { entity: "issue", id: 3 },
            StoreError::IllegalTransition { entity: "approval", id: 1, from: "pending".into(), to: "executed".into() },
            StoreError::ApprovalExpired { id: 2, expires_at: Timestamp(0) },
            StoreError::NewerSchema { path: "/x.db".into(), found: 9, supported: 1 },
        ];
        for e in errors {
            assert!(!e.to_string().ends_with('.'), "{e}");
        }
        let conflict =
            StoreError::Conflict { entity: "approval", id: 7, expected: "pending".into(), actual: "approved".into() };
        assert_eq!(conflict.to_string(), "approval 7 is approved, not pending as expected; nothing changed");
    }
}
