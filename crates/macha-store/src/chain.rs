//! The audit trail's hash chain: every record carries `hash` = SHA-256 over the previous record's
//! hash followed by a canonical, length-prefixed encoding of every field of the record, computed in
//! the transaction that inserts it. Also the chain's verification, its export to compressed JSON
//! lines, and the sanctioned prune of exported records.
//!
//! The chain makes edits, insertions and deletions inside the trail visible to
//! [`Store::verify_audit`]; it cannot by itself reveal records cut off at the end by someone who
//! can write the file. The defence against that is outside the file: the last id and hash that
//! `macha logs export` prints (and the export itself) vouch for everything up to there.
//!
//! Layout of one hashed record (all integers big-endian): the domain tag `macha-audit-v1`, the
//! 32-byte previous hash, then each field in column order (`id`, `ts`, `correlation_id`, `kind`,
//! `severity`, `host`, `subject`, `summary`, `payload`, `approval_id`, `issue_id`, `action_id`,
//! `new_state`), each as a tag byte (`n` null, `i` integer, `s` text) followed by the 8-byte integer
//! or by the 8-byte length and the UTF-8 bytes of the text exactly as stored.

use crate::db::Store;
use crate::error::{Result, StoreError};
use crate::row::ts_col;
use macha_core::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The "previous hash" of the very first record.
pub const GENESIS: Hash = [0u8; 32];

/// The version of the export format (the header's `version`).
pub const EXPORT_VERSION: u32 = 1;

/// The header's `format`.
pub const EXPORT_FORMAT: &str = "macha-audit-export";

/// Rows deleted per transaction by a prune.
const PRUNE_BATCH: i64 = 10_000;

/// Batches a prune deletes at once; [`Store::maintain`] deletes the rest, a few batches a call, so
/// that pruning years of records never holds the writer for long.
const PRUNE_BATCHES_AT_ONCE: u64 = 20;

/// The fields of one record as stored, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub id: i64,
    pub ts: i64,
    pub correlation_id: Option<&'a str>,
    pub kind: &'a str,
    pub severity: &'a str,
    pub host: &'a str,
    pub subject: Option<&'a str>,
    pub summary: &'a str,
    pub payload: &'a str,
    pub approval_id: Option<i64>,
    pub issue_id: Option<i64>,
    pub action_id: Option<i64>,
    pub new_state: Option<&'a str>,
}

/// The hash of a record whose predecessor has hash `prev`.
pub(crate) fn record_hash(prev: &Hash, f: &Fields<'_>) -> Hash {
    fn int(h: &mut Sha256, v: i64) {
        h.update([b'i']);
        h.update(v.to_be_bytes());
    }
    fn opt_int(h: &mut Sha256, v: Option<i64>) {
        match v {
            Some(v) => int(h, v),
            None => h.update([b'n']),
        }
    }
    fn text(h: &mut Sha256, s: &str) {
        h.update([b's']);
        h.update(u64::try_from(s.len()).unwrap_or(u64::MAX).to_be_bytes());
        h.update(s.as_bytes());
    }
    fn opt_text(h: &mut Sha256, s: Option<&str>) {
        match s {
            Some(s) => text(h, s),
            None => h.update([b'n']),
        }
    }
    let mut h = Sha256::new();
    h.update(b"macha-audit-v1");
    h.update(prev);
    int(&mut h, f.id);
    int(&mut h, f.ts);
    opt_text(&mut h, f.correlation_id);
    text(&mut h, f.kind);
    text(&mut h, f.severity);
    text(&mut h, f.host);
    opt_text(&mut h, f.subject);
    text(&mut h, f.summary);
    text(&mut h, f.payload);
    opt_int(&mut h, f.approval_id);
    opt_int(&mut h, f.issue_id);
    opt_int(&mut h, f.action_id);
    opt_text(&mut h, f.new_state);
    h.finalize().into()
}

/// Lower-case hexadecimal.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Parses 64 hexadecimal digits (either case).
pub fn parse_hash(s: &str) -> Option<Hash> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn blob_hash(v: Option<Vec<u8>>) -> Option<Hash> {
    v.and_then(|b| <Hash>::try_from(b.as_slice()).ok())
}

/// The newest anchor: records up to `upto_id` were exported and may have been pruned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    pub upto_id: i64,
    /// The hash of record `upto_id`, hexadecimal.
    pub hash: String,
    pub ts: Timestamp,
    pub by: String,
}

pub(crate) fn latest_anchor(conn: &Connection) -> Result<Option<(AuditAnchor, Hash)>> {
    let row = conn
        .prepare_cached("SELECT upto_id, hash, ts, by FROM audit_anchors ORDER BY upto_id DESC LIMIT 1")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?, ts_col(row, 2)?, row.get::<_, String>(3)?))
        })
        .optional()?;
    Ok(row.and_then(|(upto_id, hash, ts, by)| {
        let h = blob_hash(Some(hash))?;
        Some((AuditAnchor { upto_id, hash: to_hex(&h), ts, by }, h))
    }))
}

/// The id and previous hash the next appended record gets, inside the caller's write transaction.
pub(crate) fn next_link(conn: &Connection) -> Result<(i64, Hash)> {
    let seq: i64 = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")?
        .query_row([], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let tip = conn
        .prepare_cached("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Option<Vec<u8>>>(1)?)))
        .optional()?;
    let last = tip.as_ref().map_or(0, |(id, _)| *id);
    let prev = match tip {
        Some((_, hash)) => blob_hash(hash).unwrap_or(GENESIS),
        None => latest_anchor(conn)?.map_or(GENESIS, |(_, h)| h),
    };
    Ok((seq.max(last) + 1, prev))
}

/// Chains the records of a database from before the chain existed, in id order (run once, by
/// the migration that adds the chain, inside its transaction).
pub(crate) fn backfill(conn: &Connection) -> rusqlite::Result<()> {
    let mut read = conn.prepare(
        "SELECT id, ts, correlation_id, kind, severity, host, subject, summary, payload, approval_id, issue_id, \
         action_id, new_state FROM audit ORDER BY id",
    )?;
    let mut write = conn.prepare("UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE id = ?1")?;
    let mut rows = read.query([])?;
    let mut prev = GENESIS;
    while let Some(row) = rows.next()? {
        let stored = StoredRow::from_row(row, false)?;
        let hash = record_hash(&prev, &stored.fields());
        write.execute(params![stored.id, prev.as_slice(), hash.as_slice()])?;
        prev = hash;
    }
    Ok(())
}

/// One record as read back, owned, with its chain columns.
#[derive(Debug, Clone)]
struct StoredRow {
    id: i64,
    ts: i64,
    correlation_id: Option<String>,
    kind: String,
    severity: String,
    host: String,
    subject: Option<String>,
    summary: String,
    payload: String,
    approval_id: Option<i64>,
    issue_id: Option<i64>,
    action_id: Option<i64>,
    new_state: Option<String>,
    prev_hash: Option<Hash>,
    hash: Option<Hash>,
}

const CHAIN_COLUMNS: &str = "id, ts, correlation_id, kind, severity, host, subject, summary, payload, approval_id, \
    issue_id, action_id, new_state, prev_hash, hash";

impl StoredRow {
    fn from_row(row: &rusqlite::Row<'_>, with_chain: bool) -> rusqlite::Result<StoredRow> {
        Ok(StoredRow {
            id: row.get(0)?,
            ts: row.get(1)?,
            correlation_id: row.get(2)?,
            kind: row.get(3)?,
            severity: row.get(4)?,
            host: row.get(5)?,
            subject: row.get(6)?,
            summary: row.get(7)?,
            payload: row.get(8)?,
            approval_id: row.get(9)?,
            issue_id: row.get(10)?,
            action_id: row.get(11)?,
            new_state: row.get(12)?,
            prev_hash: if with_chain { blob_hash(row.get(13)?) } else { None },
            hash: if with_chain { blob_hash(row.get(14)?) } else { None },
        })
    }

    fn fields(&self) -> Fields<'_> {
        Fields {
            id: self.id,
            ts: self.ts,
            correlation_id: self.correlation_id.as_deref(),
            kind: &self.kind,
            severity: &self.severity,
            host: &self.host,
            subject: self.subject.as_deref(),
            summary: &self.summary,
            payload: &self.payload,
            approval_id: self.approval_id,
            issue_id: self.issue_id,
            action_id: self.action_id,
            new_state: self.new_state.as_deref(),
        }
    }
}

/// Something wrong with the chain, naming the records concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainProblem {
    /// The record's fields do not match its hash: it was edited after it was written.
    Edited { id: i64 },
    /// The record does not follow the one before it: that one was replaced (re-hashed), or this
    /// one was inserted or re-linked.
    Relinked { id: i64, previous_id: Option<i64> },
    /// Records `from_id..=to_id` are missing: deleted between `after_id` and `before_id` (`None`:
    /// at the start or at the end of the trail).
    Missing { from_id: i64, to_id: i64, after_id: Option<i64>, before_id: Option<i64> },
    /// The record has no (or a malformed) chain hash.
    Unchained { id: i64 },
    /// An export's header disagrees with its records.
    Header { reason: String },
    /// An exported record is not what the database holds under its id.
    Differs { id: i64 },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::Edited { id } => {
                write!(f, "record {id} was edited: its fields do not match its hash")
            }
            ChainProblem::Relinked { id, previous_id: Some(p) } => write!(
                f,
                "record {id} does not follow record {p}: record {p} was replaced, or record {id} was inserted or re-linked"
            ),
            ChainProblem::Relinked { id, previous_id: None } => {
                write!(f, "record {id} does not follow the start of the chain: it was inserted or re-linked")
            }
            ChainProblem::Missing { from_id, to_id, after_id, before_id } => {
                let what = if from_id == to_id {
                    format!("record {from_id} is missing")
                } else {
                    format!("records {from_id} to {to_id} are missing")
                };
                match (after_id, before_id) {
                    (Some(a), Some(b)) => write!(f, "{what}: deleted between records {a} and {b}"),
                    (None, Some(b)) => write!(f, "{what}: deleted before record {b}, at the start of the trail"),
                    (Some(a), None) => write!(f, "{what}: deleted after record {a}, at the end of the trail"),
                    (None, None) => write!(f, "{what}: the trail is empty"),
                }
            }
            ChainProblem::Unchained { id } => write!(f, "record {id} has no chain hash"),
            ChainProblem::Header { reason } => write!(f, "export header: {reason}"),
            ChainProblem::Differs { id } => {
                write!(f, "record {id} of the export differs from record {id} of the database")
            }
        }
    }
}

/// What [`Store::verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Records checked.
    pub records: u64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    /// The hash of the last record checked, hexadecimal.
    pub last_hash: Option<String>,
    /// Where the check started: the newest prune anchor, if any.
    pub anchor: Option<AuditAnchor>,
    /// Records at or below the anchor still waiting to be deleted (an interrupted prune; the
    /// next maintenance removes them).
    pub awaiting_deletion: u64,
    pub problems: Vec<ChainProblem>,
}

impl ChainReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks records one by one, in id order.
#[derive(Debug)]
struct Walker {
    expected_id: i64,
    expected_prev: Hash,
    last_id: Option<i64>,
    first_id: Option<i64>,
    records: u64,
    problems: Vec<ChainProblem>,
}

impl Walker {
    fn new(start_after: i64, prev: Hash) -> Walker {
        Walker {
            expected_id: start_after + 1,
            expected_prev: prev,
            last_id: (start_after > 0).then_some(start_after),
            first_id: None,
            records: 0,
            problems: Vec::new(),
        }
    }

    fn step(&mut self, row: &StoredRow) {
        self.records += 1;
        self.first_id.get_or_insert(row.id);
        let gap = row.id != self.expected_id;
        if gap {
            self.problems.push(ChainProblem::Missing {
                from_id: self.expected_id,
                to_id: row.id - 1,
                after_id: self.last_id,
                before_id: Some(row.id),
            });
        }
        match (row.prev_hash, row.hash) {
            (Some(prev), Some(hash)) => {
                if prev != self.expected_prev && !gap {
                    self.problems.push(ChainProblem::Relinked { id: row.id, previous_id: self.last_id });
                }
                if record_hash(&prev, &row.fields()) != hash {
                    self.problems.push(ChainProblem::Edited { id: row.id });
                }
                self.expected_prev = hash;
            }
            _ => {
                self.problems.push(ChainProblem::Unchained { id: row.id });
                self.expected_prev = record_hash(&self.expected_prev, &row.fields());
            }
        }
        self.last_id = Some(row.id);
        self.expected_id = row.id + 1;
    }
}

impl Store {
    /// Walks the audit chain from the newest prune anchor (or the first record) to the last record
    /// and reports every problem: edited records (by id), broken links (inserted, replaced or
    /// re-linked records), and missing ranges (deleted records, named by the ids around them).
    pub fn verify_audit(&self) -> Result<ChainReport> {
        let tx = self.conn.unchecked_transaction()?;
        let anchor = latest_anchor(&tx)?;
        let (start, prev) = anchor.as_ref().map_or((0, GENESIS), |(a, h)| (a.upto_id, *h));
        let awaiting: i64 = tx.query_row("SELECT count(*) FROM audit WHERE id <= ?1", [start], |r| r.get(0))?;
        let mut walker = Walker::new(start, prev);
        {
            let mut stmt = tx.prepare(&format!("SELECT {CHAIN_COLUMNS} FROM audit WHERE id > ?1 ORDER BY id"))?;
            let mut rows = stmt.query([start])?;
            while let Some(row) = rows.next()? {
                walker.step(&StoredRow::from_row(row, true)?);
            }
        }
        // Records cut off at the end still left their ids in the AUTOINCREMENT counter.
        let seq: i64 = tx
            .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'audit'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if seq >= walker.expected_id {
            walker.problems.push(ChainProblem::Missing {
                from_id: walker.expected_id,
                to_id: seq,
                after_id: walker.last_id,
                before_id: None,
            });
        }
        let last_hash = (walker.records > 0).then(|| to_hex(&walker.expected_prev));
        tx.finish()?;
        Ok(ChainReport {
            records: walker.records,
            first_id: walker.first_id,
            last_id: if walker.records > 0 { walker.last_id } else { None },
            last_hash,
            anchor: anchor.map(|(a, _)| a),
            awaiting_deletion: u64::try_from(awaiting).unwrap_or(0),
            problems: walker.problems,
        })
    }

    /// The newest prune anchor, if the trail was ever pruned.
    pub fn audit_anchor(&self) -> Result<Option<AuditAnchor>> {
        Ok(latest_anchor(&self.conn)?.map(|(a, _)| a))
    }

    /// Writes the audit records after the newest anchor up to `upto_id` (default: the last one) to
    /// `writer` as gzip-compressed JSON lines: a header line (format, version, first and last id,
    /// count, the hash before the first record), then one line per record with every field and
    /// its `prev_hash` and `hash`. The whole export reads one consistent snapshot.
    pub fn export_audit<W: Write>(&self, upto_id: Option<i64>, writer: W) -> Result<ExportSummary> {
        self.export_audit_with_progress(upto_id, writer, |_, _| {})
    }

    /// [`Store::export_audit`], calling `progress(done, total)` every 10,000 records.
    pub fn export_audit_with_progress<W: Write>(
        &self,
        upto_id: Option<i64>,
        writer: W,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ExportSummary> {
        let tx = self.conn.unchecked_transaction()?;
        let anchor = latest_anchor(&tx)?;
        let start = anchor.as_ref().map_or(0, |(a, _)| a.upto_id);
        let upto = upto_id.unwrap_or(i64::MAX);
        let (first_id, last_id, count): (Option<i64>, Option<i64>, i64) = tx.query_row(
            "SELECT min(id), max(id), count(*) FROM audit WHERE id > ?1 AND id <= ?2",
            [start, upto],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if let Some(u) = upto_id
            && last_id != Some(u)
        {
            return Err(StoreError::NotFound { entity: "audit record", id: u });
        }
        let prev_hash: Option<Vec<u8>> = match first_id {
            Some(id) => tx.query_row("SELECT prev_hash FROM audit WHERE id = ?1", [id], |r| r.get(0))?,
            None => None,
        };
        let prev_hash = blob_hash(prev_hash).unwrap_or(GENESIS);
        let total = u64::try_from(count).unwrap_or(0);
        let header = ExportHeader {
            format: EXPORT_FORMAT.to_owned(),
            version: EXPORT_VERSION,
            first_id,
            last_id,
            count: total,
            prev_hash: to_hex(&prev_hash),
        };
        let io = |source: std::io::Error| StoreError::Io { path: "the export".into(), source };
        let mut out = flate2::write::GzEncoder::new(std::io::BufWriter::new(writer), flate2::Compression::fast());
        let json = |what: &'static str, e: serde_json::Error| StoreError::Json { what, source: e };
        serde_json::to_writer(&mut out, &header).map_err(|e| json("export header", e))?;
        out.write_all(b"\n").map_err(io)?;
        let mut last_hash = None;
        let mut done = 0u64;
        {
            let mut stmt =
                tx.prepare(&format!("SELECT {CHAIN_COLUMNS} FROM audit WHERE id > ?1 AND id <= ?2 ORDER BY id"))?;
            let mut rows = stmt.query([start, upto])?;
            while let Some(row) = rows.next()? {
                let r = StoredRow::from_row(row, true)?;
                let line = ExportLine::from_stored(&r).map_err(|e| json("export record", e))?;
                serde_json::to_writer(&mut out, &line).map_err(|e| json("export record", e))?;
                out.write_all(b"\n").map_err(io)?;
                last_hash = Some(line.hash);
                done += 1;
                if done.is_multiple_of(10_000) {
                    progress(done, total);
                }
            }
        }
        let buffered = out.finish().map_err(io)?;
        buffered.into_inner().map_err(|e| io(e.into_error()))?.flush().map_err(io)?;
        tx.finish()?;
        progress(done, total);
        Ok(ExportSummary { first_id, last_id, count: done, prev_hash: header.prev_hash, last_hash })
    }

    /// Deletes the audit records with `id <= upto_id`, but only if `expected_hash` (hexadecimal) is
    /// the stored hash of record `upto_id`: proof that the caller exported up to there (the chain
    /// vouches for every earlier record). Records an anchor (`upto_id`, its hash, when, by whom)
    /// from which [`Store::verify_audit`] starts afterwards, and appends the prune itself to the
    /// trail, in one transaction; the records then go in batches of 10,000, at most 200,000 now
    /// and the rest by [`Store::maintain`].
    pub fn prune_audit(&mut self, upto_id: i64, expected_hash: &str, by: &str, now: Timestamp) -> Result<PruneSummary> {
        crate::audit::check_actor(by)?;
        let expected = parse_hash(expected_hash).ok_or_else(|| StoreError::Invalid {
            what: "audit hash",
            reason: format!("{expected_hash:?} is not 64 hexadecimal digits"),
        })?;
        let tx = self.write_txn()?;
        let stored: Option<Option<Vec<u8>>> =
            tx.query_row("SELECT hash FROM audit WHERE id = ?1", [upto_id], |r| r.get(0)).optional()?;
        let Some(stored) = stored else {
            return Err(StoreError::NotFound { entity: "audit record", id: upto_id });
        };
        if blob_hash(stored) != Some(expected) {
            return Err(StoreError::Invalid {
                what: "audit hash",
                reason: format!(
                    "{expected_hash} is not the hash of audit record {upto_id}; nothing was pruned (export first: `macha logs export`)"
                ),
            });
        }
        let count: i64 = tx.query_row("SELECT count(*) FROM audit WHERE id <= ?1", [upto_id], |r| r.get(0))?;
        tx.execute(
            "INSERT INTO audit_anchors (upto_id, hash, ts, by) VALUES (?1, ?2, ?3, ?4)",
            params![upto_id, expected.as_slice(), now.millis(), by],
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Invalid {
                what: "audit prune",
                reason: format!("records up to {upto_id} are already pruned"),
            },
            _ => StoreError::Sqlite(e),
        })?;
        let hex = to_hex(&expected);
        let record = crate::audit::NewAudit::new(
            now,
            crate::audit::AuditKind::Daemon,
            crate::audit::Severity::Notice,
            "local",
            format!("audit records up to {upto_id} pruned by {by} after export (hash {hex})"),
        )
        .with_subject("audit")
        .with_payload(serde_json::json!({"upto_id": upto_id, "hash": hex, "records": count, "by": by}));
        let audit_id = crate::audit::insert_audit(&tx, &record, &crate::audit::Link::default())?;
        tx.commit()?;
        let deleted = self.delete_pruned(PRUNE_BATCHES_AT_ONCE)?;
        Ok(PruneSummary { upto_id, hash: hex, records: u64::try_from(count).unwrap_or(0), deleted, audit_id })
    }

    /// Deletes up to `max_batches` batches of records at or below the newest anchor. Returns how
    /// many were deleted.
    pub(crate) fn delete_pruned(&mut self, max_batches: u64) -> Result<u64> {
        let Some((anchor, _)) = latest_anchor(&self.conn)? else { return Ok(0) };
        let mut deleted = 0u64;
        for _ in 0..max_batches {
            let tx = self.write_txn()?;
            let n = tx.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE id <= ?1 ORDER BY id LIMIT ?2)",
                [anchor.upto_id, PRUNE_BATCH],
            )?;
            tx.commit()?;
            deleted += u64::try_from(n).unwrap_or(0);
            if i64::try_from(n).unwrap_or(0) < PRUNE_BATCH {
                break;
            }
        }
        Ok(deleted)
    }
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    pub version: u32,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub count: u64,
    /// The hash before the first record: the anchor's, or all zeros at the start of the trail.
    pub prev_hash: String,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub count: u64,
    pub prev_hash: String,
    /// The hash of the last record: what `macha logs prune --hash` wants.
    pub last_hash: Option<String>,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneSummary {
    pub upto_id: i64,
    pub hash: String,
    /// Records at or below `upto_id` when the anchor was written.
    pub records: u64,
    /// Records deleted now: up to 200,000; the rest go with the next maintenance calls.
    pub deleted: u64,
    /// The audit record of the prune.
    pub audit_id: i64,
}

/// One exported record: every column, the payload exactly as stored.
#[derive(Debug, Serialize, Deserialize)]
struct ExportLine {
    id: i64,
    ts: i64,
    correlation_id: Option<String>,
    kind: String,
    severity: String,
    host: String,
    subject: Option<String>,
    summary: String,
    payload: Box<serde_json::value::RawValue>,
    approval_id: Option<i64>,
    issue_id: Option<i64>,
    action_id: Option<i64>,
    new_state: Option<String>,
    prev_hash: String,
    hash: String,
}

impl ExportLine {
    fn from_stored(r: &StoredRow) -> serde_json::Result<ExportLine> {
        Ok(ExportLine {
            id: r.id,
            ts: r.ts,
            correlation_id: r.correlation_id.clone(),
            kind: r.kind.clone(),
            severity: r.severity.clone(),
            host: r.host.clone(),
            subject: r.subject.clone(),
            summary: r.summary.clone(),
            payload: serde_json::value::RawValue::from_string(r.payload.clone())?,
            approval_id: r.approval_id,
            issue_id: r.issue_id,
            action_id: r.action_id,
            new_state: r.new_state.clone(),
            prev_hash: r.prev_hash.map(|h| to_hex(&h)).unwrap_or_default(),
            hash: r.hash.map(|h| to_hex(&h)).unwrap_or_default(),
        })
    }

    fn into_stored(self) -> StoredRow {
        StoredRow {
            id: self.id,
            ts: self.ts,
            correlation_id: self.correlation_id,
            kind: self.kind,
            severity: self.severity,
            host: self.host,
            subject: self.subject,
            summary: self.summary,
            payload: self.payload.get().to_owned(),
            approval_id: self.approval_id,
            issue_id: self.issue_id,
            action_id: self.action_id,
            new_state: self.new_state,
            prev_hash: parse_hash(&self.prev_hash),
            hash: parse_hash(&self.hash),
        }
    }
}

/// What [`verify_export`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportReport {
    pub header: ExportHeader,
    pub records: u64,
    pub last_hash: Option<String>,
    /// Records compared with the database (when one was given) and found identical.
    pub matched_in_database: u64,
    /// Records no longer in the database (pruned); the anchor's hash is compared when it falls
    /// inside the export.
    pub pruned_in_database: u64,
    pub problems: Vec<ChainProblem>,
}

impl ExportReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Why an export could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line} of the export is not a valid record: {source}")]
    Line { line: u64, source: serde_json::Error },
    #[error("the export is empty (no header line)")]
    Empty,
    #[error("not a Macha audit export: format {format:?} version {version}")]
    Format { format: String, version: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks an export (gzip-compressed JSON lines) against itself — every record's hash, the links,
/// no gaps, the header's first and last id, count and starting hash — and, with `store`, against
/// the database: every exported record still there must have the same hash, and a prune anchor
/// inside the export's range must carry the exported record's hash.
pub fn verify_export<R: std::io::Read>(reader: R, store: Option<&Store>) -> Result<ExportReport, ExportError> {
    let mut lines = std::io::BufReader::new(flate2::read::GzDecoder::new(reader)).lines();
    let header_line = lines.next().ok_or(ExportError::Empty)??;
    let header: ExportHeader =
        serde_json::from_str(&header_line).map_err(|source| ExportError::Line { line: 1, source })?;
    if header.format != EXPORT_FORMAT || header.version != EXPORT_VERSION {
        return Err(ExportError::Format { format: header.format, version: header.version });
    }
    let start_prev = parse_hash(&header.prev_hash);
    let mut walker = Walker::new(header.first_id.map_or(0, |f| f - 1), start_prev.unwrap_or(GENESIS));
    let mut problems = Vec::new();
    if start_prev.is_none() {
        problems.push(ChainProblem::Header { reason: format!("prev_hash {:?} is not a hash", header.prev_hash) });
    }
    let anchor = match store {
        Some(s) => latest_anchor(&s.conn)?,
        None => None,
    };
    let mut lookup = match store {
        Some(s) => Some(s.conn.prepare("SELECT hash FROM audit WHERE id = ?1").map_err(StoreError::from)?),
        None => None,
    };
    let (mut matched, mut pruned) = (0u64, 0u64);
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let number = u64::try_from(n).unwrap_or(u64::MAX).saturating_add(2);
        let record: ExportLine =
            serde_json::from_str(&line).map_err(|source| ExportError::Line { line: number, source })?;
        let row = record.into_stored();
        walker.step(&row);
        if let Some(stmt) = lookup.as_mut() {
            let in_db: Option<Option<Vec<u8>>> =
                stmt.query_row([row.id], |r| r.get(0)).optional().map_err(StoreError::from)?;
            match in_db.map(blob_hash) {
                Some(h) if h == row.hash && h.is_some() => matched += 1,
                Some(_) => problems.push(ChainProblem::Differs { id: row.id }),
                None => {
                    pruned += 1;
                    if let Some((a, h)) = &anchor
                        && a.upto_id == row.id
                        && row.hash != Some(*h)
                    {
                        problems.push(ChainProblem::Differs { id: row.id });
                    }
                }
            }
        }
    }
    if walker.first_id != header.first_id || walker.last_id.filter(|_| walker.records > 0) != header.last_id {
        problems.push(ChainProblem::Header {
            reason: format!(
                "it announces records {:?} to {:?}, the file holds {:?} to {:?}",
                header.first_id,
                header.last_id,
                walker.first_id,
                walker.last_id.filter(|_| walker.records > 0)
            ),
        });
    }
    if walker.records != header.count {
        problems.push(ChainProblem::Header {
            reason: format!("it announces {} records, the file holds {}", header.count, walker.records),
        });
    }
    let mut all = walker.problems;
    all.extend(problems);
    Ok(ExportReport {
        records: walker.records,
        last_hash: (walker.records > 0).then(|| to_hex(&walker.expected_prev)),
        header,
        matched_in_database: matched,
        pruned_in_database: pruned,
        problems: all,
    })
}
