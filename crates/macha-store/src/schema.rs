//! The schema, as an ordered list of migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each migration runs in its own
//! transaction together with the bump of `user_version`, so a crash leaves the schema at a whole
//! version. Migrations are append-only: a shipped entry is never edited, a change is a new entry.
//!
//! Invariants kept by the schema itself (so that a person with `sqlite3` cannot break them by
//! accident either):
//! - `audit` is append-only: triggers abort every `UPDATE`, and every `DELETE` of a record newer
//!   than the last export anchor (`audit_anchors`, written only by [`crate::Store::prune_audit`]).
//!   Every record carries its place in the hash chain (`prev_hash`, `hash`); an insert without
//!   them is refused.
//! - `prompts` is append-only except for rows older than the retention horizon recorded in
//!   `retention`, which only moves forward: a stray `DELETE FROM prompts` removes nothing that
//!   retention would not remove anyway.
//! - `approvals`, `issues` and `actions` are never deleted, their identifying columns never change,
//!   and their `state` only moves along the legal transitions.
//! - At most one issue per fingerprint is open, acting or resolved (a partial unique index).
//! - Ids come from `AUTOINCREMENT`, so they are never reused, even after the highest row is gone.

/// Migration `n` (0-based) takes the schema from version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    V1,
    V2_AGENT,
    V3_FLEET,
    V4_RETENTION,
    V5_KNOWLEDGE_BASE,
    V6_CONFIGS,
    V7_EMBEDDINGS,
    V8_QUESTLOG,
    V9_METRICS,
    V10_NOTIFY,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = r#"
CREATE TABLE issues (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    check_name  TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    severity    TEXT    NOT NULL CHECK (severity IN ('info', 'notice', 'warning', 'error', 'critical')),
    summary     TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('open', 'acting', 'resolved', 'closed', 'archived')),
    since       INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    recurrences INTEGER NOT NULL DEFAULT 0 CHECK (recurrences >= 0),
    resolution  TEXT,
    details     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(details))
) STRICT;
CREATE UNIQUE INDEX issues_one_active ON issues (fingerprint) WHERE state IN ('open', 'acting', 'resolved');
CREATE INDEX issues_fingerprint ON issues (fingerprint, id);
CREATE INDEX issues_state ON issues (state, last_seen);
CREATE INDEX issues_host ON issues (host, state);
CREATE TRIGGER issues_no_delete BEFORE DELETE ON issues
BEGIN SELECT RAISE(ABORT, 'issues are never deleted; archive them'); END;
CREATE TRIGGER issues_identity BEFORE UPDATE OF id, fingerprint, host, check_name, subject, first_seen ON issues
BEGIN SELECT RAISE(ABORT, 'the identity of an issue never changes'); END;
CREATE TRIGGER issues_no_reopen BEFORE UPDATE OF state ON issues
WHEN (OLD.state = 'closed' AND NEW.state NOT IN ('closed', 'archived'))
  OR (OLD.state = 'archived' AND NEW.state <> 'archived')
BEGIN SELECT RAISE(ABORT, 'a closed issue is never reopened; open a new one'); END;

CREATE TABLE approvals (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    host           TEXT    NOT NULL,
    action         TEXT    NOT NULL CHECK (json_valid(action)),
    decision       TEXT    NOT NULL CHECK (json_valid(decision)),
    reason         TEXT    NOT NULL,
    state          TEXT    NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'approved', 'rejected', 'expired', 'executed', 'failed')),
    requested_by   TEXT    NOT NULL,
    requested_at   INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL CHECK (expires_at > requested_at),
    decided_by     TEXT,
    decided_at     INTEGER,
    decision_note  TEXT,
    finished_by    TEXT,
    finished_at    INTEGER,
    result         TEXT,
    correlation_id TEXT    NOT NULL,
    issue_id       INTEGER REFERENCES issues (id),
    CHECK ((state = 'pending') = (decided_at IS NULL)),
    CHECK ((state IN ('executed', 'failed')) = (finished_at IS NOT NULL))
) STRICT;
CREATE INDEX approvals_state ON approvals (state, expires_at);
CREATE INDEX approvals_issue ON approvals (issue_id) WHERE issue_id IS NOT NULL;
CREATE TRIGGER approvals_no_delete BEFORE DELETE ON approvals
BEGIN SELECT RAISE(ABORT, 'approvals are never deleted'); END;
CREATE TRIGGER approvals_identity BEFORE UPDATE OF id, host, action, decision, reason, requested_by, requested_at,
    expires_at, correlation_id, issue_id ON approvals
BEGIN SELECT RAISE(ABORT, 'a requested approval never changes what it asks for'); END;
CREATE TRIGGER approvals_transition BEFORE UPDATE OF state ON approvals
WHEN NOT ((OLD.state = 'pending' AND NEW.state IN ('approved', 'rejected', 'expired'))
       OR (OLD.state = 'approved' AND NEW.state IN ('executed', 'failed')))
BEGIN SELECT RAISE(ABORT, 'illegal approval state transition'); END;

CREATE TABLE actions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    correlation_id TEXT    NOT NULL,
    ts_started     INTEGER NOT NULL,
    ts_finished    INTEGER,
    host           TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    approval_id    INTEGER REFERENCES approvals (id),
    issue_id       INTEGER REFERENCES issues (id),
    state          TEXT    NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'succeeded', 'failed')),
    detail         TEXT,
    CHECK ((state = 'running') = (ts_finished IS NULL))
) STRICT;
CREATE INDEX actions_target ON actions (target, ts_started);
CREATE INDEX actions_started ON actions (ts_started);
CREATE INDEX actions_running ON actions (id) WHERE state = 'running';
CREATE TRIGGER actions_no_delete BEFORE DELETE ON actions
BEGIN SELECT RAISE(ABORT, 'the action log is never deleted'); END;
CREATE TRIGGER actions_identity BEFORE UPDATE OF id, correlation_id, ts_started, host, kind, target, approval_id,
    issue_id ON actions
BEGIN SELECT RAISE(ABORT, 'a logged action never changes what it did'); END;
CREATE TRIGGER actions_transition BEFORE UPDATE OF state ON actions
WHEN NOT (OLD.state = 'running' AND NEW.state IN ('succeeded', 'failed'))
BEGIN SELECT RAISE(ABORT, 'illegal action state transition'); END;

CREATE TABLE audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    ts             INTEGER NOT NULL,
    correlation_id TEXT,
    kind           TEXT    NOT NULL CHECK (kind IN ('snapshot', 'finding', 'decision', 'action', 'outcome',
                       'approval', 'issue', 'auth_denied', 'alert', 'config', 'daemon')),
    severity       TEXT    NOT NULL CHECK (severity IN ('info', 'notice', 'warning', 'error', 'critical')),
    host           TEXT    NOT NULL,
    subject        TEXT,
    summary        TEXT    NOT NULL,
    payload        TEXT    NOT NULL DEFAULT 'null' CHECK (json_valid(payload)),
    approval_id    INTEGER REFERENCES approvals (id),
    issue_id       INTEGER REFERENCES issues (id),
    action_id      INTEGER REFERENCES actions (id),
    new_state      TEXT
) STRICT;
CREATE INDEX audit_ts ON audit (ts);
CREATE INDEX audit_host_ts ON audit (host, ts);
CREATE INDEX audit_kind_ts ON audit (kind, ts);
CREATE INDEX audit_correlation ON audit (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX audit_subject ON audit (subject) WHERE subject IS NOT NULL;
CREATE INDEX audit_approval ON audit (approval_id) WHERE approval_id IS NOT NULL;
CREATE INDEX audit_issue ON audit (issue_id) WHERE issue_id IS NOT NULL;
CREATE INDEX audit_action ON audit (action_id) WHERE action_id IS NOT NULL;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;

CREATE TABLE kv (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE hosts (
    name       TEXT    PRIMARY KEY NOT NULL,
    address    TEXT,
    port       INTEGER CHECK (port BETWEEN 1 AND 65535),
    user       TEXT,
    state      TEXT    NOT NULL
               CHECK (state IN ('configured', 'discovered', 'admitted', 'trusted', 'forgotten')),
    host_key   TEXT,
    os         TEXT,
    profile    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(profile)),
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
"#;

/// The agent: requests to the model, the prompt log (append-only), cached tool outputs,
/// conversations and learnings.
const V2_AGENT: &str = r#"
CREATE TABLE agent_requests (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT    NOT NULL CHECK (kind IN ('analysis', 'chat', 'ask', 'discuss', 'learning')),
    priority       TEXT    NOT NULL CHECK (priority IN ('interactive', 'autonomous', 'batch')),
    requested_by   TEXT    NOT NULL,
    correlation_id TEXT,
    issue_ids      TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(issue_ids)),
    approval_id    INTEGER REFERENCES approvals (id),
    conversation   TEXT,
    state          TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    created_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    model          TEXT,
    result         TEXT,
    error          TEXT
) STRICT;
CREATE INDEX agent_requests_state ON agent_requests (state) WHERE state IN ('queued', 'running');
CREATE TRIGGER agent_requests_no_delete BEFORE DELETE ON agent_requests
BEGIN SELECT RAISE(ABORT, 'agent requests are never deleted'); END;

CREATE TABLE prompts (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id        INTEGER NOT NULL REFERENCES agent_requests (id),
    seq               INTEGER NOT NULL,
    ts                INTEGER NOT NULL,
    purpose           TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    backend           TEXT    NOT NULL,
    request           TEXT    NOT NULL CHECK (json_valid(request)),
    estimated_tokens  INTEGER NOT NULL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    response          TEXT    CHECK (response IS NULL OR json_valid(response)),
    error             TEXT
) STRICT;
CREATE INDEX prompts_request ON prompts (request_id, seq);
CREATE TRIGGER prompts_no_update BEFORE UPDATE ON prompts
BEGIN SELECT RAISE(ABORT, 'the prompt log is append-only'); END;
CREATE TRIGGER prompts_no_delete BEFORE DELETE ON prompts
BEGIN SELECT RAISE(ABORT, 'the prompt log is append-only'); END;

CREATE TABLE output_cache (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id INTEGER REFERENCES agent_requests (id),
    ts         INTEGER NOT NULL,
    tool       TEXT    NOT NULL,
    content    TEXT    NOT NULL
) STRICT;
CREATE INDEX output_cache_ts ON output_cache (ts);

CREATE TABLE conversations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT    NOT NULL,
    approval_id  INTEGER REFERENCES approvals (id),
    ts           INTEGER NOT NULL,
    role         TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content      TEXT    NOT NULL,
    who          TEXT
) STRICT;
CREATE INDEX conversations_key ON conversations (conversation, id);

CREATE TABLE knowledge (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    category   TEXT    NOT NULL CHECK (category IN ('command', 'pattern', 'troubleshooting', 'performance', 'general')),
    confidence REAL    NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    source     TEXT,
    created_at INTEGER NOT NULL
) STRICT;
"#;

/// The fleet: where a registered host came from (`config`, `journal`, `admin`) and its last
/// contact (`status`: ok or the classified failure, as JSON).
const V3_FLEET: &str = r#"
ALTER TABLE hosts ADD COLUMN source TEXT NOT NULL DEFAULT 'config' CHECK (source IN ('config', 'journal', 'admin'));
ALTER TABLE hosts ADD COLUMN status TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(status));
"#;

/// Bounded history and a tamper-evident audit trail (docs/decisions/0005): per-host snapshot
/// summaries leave the audit trail for `history`; audit records get their hash chain (the
/// existing rows are chained by [`crate::chain::backfill`], run by the migration between this
/// script and [`V4_AFTER_BACKFILL`]); `audit_anchors` records sanctioned prunes; the prompt log
/// gets a retention horizon and size-cut columns.
const V4_RETENTION: &str = r#"
ALTER TABLE audit ADD COLUMN prev_hash BLOB;
ALTER TABLE audit ADD COLUMN hash BLOB;
DROP TRIGGER audit_no_update;
DROP TRIGGER audit_no_delete;

CREATE TABLE history (
    id             INTEGER PRIMARY KEY,
    host           TEXT    NOT NULL,
    ts             INTEGER NOT NULL,
    span_ms        INTEGER NOT NULL DEFAULT 0 CHECK (span_ms >= 0),
    samples        INTEGER NOT NULL DEFAULT 1 CHECK (samples >= 1),
    status         TEXT    NOT NULL CHECK (status IN ('healthy', 'unknown', 'warning', 'critical')),
    findings       INTEGER NOT NULL CHECK (findings >= 0),
    unavailable    TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(unavailable)),
    unknown_checks TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(unknown_checks)),
    collect_micros INTEGER NOT NULL CHECK (collect_micros >= 0),
    metrics        TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metrics))
) STRICT;
CREATE INDEX history_host_ts ON history (host, ts);
CREATE INDEX history_ts ON history (ts);
CREATE INDEX history_raw ON history (ts) WHERE span_ms = 0;

CREATE TABLE retention (
    name    TEXT    PRIMARY KEY NOT NULL CHECK (name IN ('prompts')),
    horizon INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO retention (name, horizon) VALUES ('prompts', 0);
CREATE TRIGGER retention_forward BEFORE UPDATE ON retention
WHEN NEW.name <> OLD.name OR NEW.horizon < OLD.horizon
BEGIN SELECT RAISE(ABORT, 'a retention horizon only moves forward'); END;
CREATE TRIGGER retention_no_delete BEFORE DELETE ON retention
BEGIN SELECT RAISE(ABORT, 'retention horizons are never deleted'); END;

ALTER TABLE prompts ADD COLUMN cut INTEGER NOT NULL DEFAULT 0 CHECK (cut IN (0, 1));
ALTER TABLE prompts ADD COLUMN request_bytes INTEGER;
ALTER TABLE prompts ADD COLUMN response_bytes INTEGER;
CREATE INDEX prompts_ts ON prompts (ts);
DROP TRIGGER prompts_no_delete;
CREATE TRIGGER prompts_no_delete BEFORE DELETE ON prompts
WHEN OLD.ts >= coalesce((SELECT horizon FROM retention WHERE name = 'prompts'), -9223372036854775808)
BEGIN SELECT RAISE(ABORT, 'the prompt log is append-only: only prompts older than the retention horizon are deleted'); END;

ALTER TABLE output_cache ADD COLUMN original_bytes INTEGER;
ALTER TABLE conversations ADD COLUMN original_bytes INTEGER;
"#;

/// The rest of [`V4_RETENTION`], after the existing audit records were chained.
pub(crate) const V4_AFTER_BACKFILL: &str = r#"
CREATE TABLE audit_anchors (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    upto_id INTEGER NOT NULL,
    hash    BLOB    NOT NULL CHECK (length(hash) = 32),
    ts      INTEGER NOT NULL,
    by      TEXT    NOT NULL CHECK (length(trim(by)) > 0)
) STRICT;
CREATE TRIGGER audit_anchors_forward BEFORE INSERT ON audit_anchors
WHEN NEW.upto_id <= coalesce((SELECT max(upto_id) FROM audit_anchors), 0)
  OR NOT EXISTS (SELECT 1 FROM audit WHERE id = NEW.upto_id AND hash = NEW.hash)
BEGIN SELECT RAISE(ABORT, 'an audit anchor names a newer record than the last anchor, by its stored hash'); END;
CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only'); END;
CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only'); END;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN OLD.id > coalesce((SELECT max(upto_id) FROM audit_anchors), 0)
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: only records up to an export anchor are deleted (macha logs prune)'); END;
CREATE TRIGGER audit_chained BEFORE INSERT ON audit
WHEN NEW.hash IS NULL OR length(NEW.hash) <> 32 OR NEW.prev_hash IS NULL OR length(NEW.prev_hash) <> 32
BEGIN SELECT RAISE(ABORT, 'audit records are appended by the store, with their chain hash'); END;
"#;

/// The knowledge base that learns and forgets (docs/decisions/0016): provenance, a "use when" line,
/// when an entry last changed and how often it was used, helped and failed; an FTS5 index over
/// topic, content and "use when"; which entries an issue used (`knowledge_uses`); and an FTS5 index
/// over the issues' check, subject and summary for the memory of incidents. Both indexes are
/// external-content tables kept in step by triggers. The learnings stored before this version came
/// only from verified remediations: they become `learned`.
const V5_KNOWLEDGE_BASE: &str = r#"
ALTER TABLE knowledge ADD COLUMN provenance TEXT NOT NULL DEFAULT 'learned' CHECK (provenance IN ('seeded', 'person', 'learned'));
ALTER TABLE knowledge ADD COLUMN added_by TEXT;
ALTER TABLE knowledge ADD COLUMN issue_id INTEGER;
ALTER TABLE knowledge ADD COLUMN use_when TEXT NOT NULL DEFAULT '';
ALTER TABLE knowledge ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE knowledge ADD COLUMN used INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0);
ALTER TABLE knowledge ADD COLUMN helped INTEGER NOT NULL DEFAULT 0 CHECK (helped >= 0);
ALTER TABLE knowledge ADD COLUMN failed INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0);
UPDATE knowledge SET updated_at = created_at;
CREATE UNIQUE INDEX knowledge_seeded_topic ON knowledge (topic) WHERE provenance = 'seeded';
CREATE INDEX knowledge_topic ON knowledge (lower(topic));

CREATE VIRTUAL TABLE knowledge_fts USING fts5(
    topic, content, use_when, content = 'knowledge', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO knowledge_fts (knowledge_fts) VALUES ('rebuild');
CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge BEGIN
    INSERT INTO knowledge_fts (rowid, topic, content, use_when) VALUES (new.id, new.topic, new.content, new.use_when);
END;
CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, topic, content, use_when)
        VALUES ('delete', old.id, old.topic, old.content, old.use_when);
END;
CREATE TRIGGER knowledge_fts_update AFTER UPDATE OF topic, content, use_when ON knowledge BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, topic, content, use_when)
        VALUES ('delete', old.id, old.topic, old.content, old.use_when);
    INSERT INTO knowledge_fts (rowid, topic, content, use_when) VALUES (new.id, new.topic, new.content, new.use_when);
END;

CREATE TABLE knowledge_uses (
    knowledge_id INTEGER NOT NULL REFERENCES knowledge (id) ON DELETE CASCADE,
    issue_id     INTEGER NOT NULL,
    ts           INTEGER NOT NULL,
    outcome      TEXT    CHECK (outcome IN ('helped', 'failed')),
    PRIMARY KEY (knowledge_id, issue_id)
) STRICT;
CREATE INDEX knowledge_uses_issue ON knowledge_uses (issue_id);

CREATE VIRTUAL TABLE issues_fts USING fts5(
    check_name, subject, summary, content = 'issues', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO issues_fts (issues_fts) VALUES ('rebuild');
CREATE TRIGGER issues_fts_insert AFTER INSERT ON issues BEGIN
    INSERT INTO issues_fts (rowid, check_name, subject, summary) VALUES (new.id, new.check_name, new.subject, new.summary);
END;
CREATE TRIGGER issues_fts_update AFTER UPDATE OF summary ON issues BEGIN
    INSERT INTO issues_fts (issues_fts, rowid, check_name, subject, summary)
        VALUES ('delete', old.id, old.check_name, old.subject, old.summary);
    INSERT INTO issues_fts (rowid, check_name, subject, summary) VALUES (new.id, new.check_name, new.subject, new.summary);
END;
"#;

/// The configuration index (`macha-knowledge`): the fleet flake's `.nix` files, their chunks by
/// attribute path, which hosts use each file, and an FTS5 index over the chunks. Derived data: it
/// can be dropped and rebuilt from the flake at any time, so it carries no audit records.
const V6_CONFIGS: &str = r#"
CREATE TABLE config_files (
    path       TEXT    PRIMARY KEY NOT NULL CHECK (length(path) > 0),
    hash       TEXT    NOT NULL,
    git_head   TEXT,
    indexed_at INTEGER NOT NULL,
    category   TEXT    NOT NULL,
    error      TEXT
) STRICT, WITHOUT ROWID;
CREATE TABLE config_chunks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    file       TEXT    NOT NULL REFERENCES config_files (path) ON DELETE CASCADE,
    attr_path  TEXT    NOT NULL,
    line_start INTEGER NOT NULL CHECK (line_start >= 1),
    line_end   INTEGER NOT NULL CHECK (line_end >= line_start),
    category   TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    words      TEXT    NOT NULL
) STRICT;
CREATE INDEX config_chunks_file ON config_chunks (file);
CREATE TABLE config_file_hosts (
    file TEXT NOT NULL REFERENCES config_files (path) ON DELETE CASCADE,
    host TEXT NOT NULL,
    PRIMARY KEY (file, host)
) STRICT, WITHOUT ROWID;
CREATE INDEX config_file_hosts_host ON config_file_hosts (host);
CREATE VIRTUAL TABLE config_fts USING fts5 (
    attr_path, text, words,
    content = 'config_chunks', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER config_chunks_fts_insert AFTER INSERT ON config_chunks BEGIN
    INSERT INTO config_fts (rowid, attr_path, text, words) VALUES (NEW.id, NEW.attr_path, NEW.text, NEW.words);
END;
CREATE TRIGGER config_chunks_fts_delete AFTER DELETE ON config_chunks BEGIN
    INSERT INTO config_fts (config_fts, rowid, attr_path, text, words)
    VALUES ('delete', OLD.id, OLD.attr_path, OLD.text, OLD.words);
END;
CREATE TRIGGER config_chunks_no_update BEFORE UPDATE ON config_chunks
BEGIN SELECT RAISE(ABORT, 'configuration chunks are replaced, never updated'); END;
"#;

/// Embeddings of configuration chunks and knowledge entries for hybrid search
/// (`macha-knowledge`, decision 0017): one vector per item, little-endian `f32`, with the model
/// that made it and its dimension. Derived data like the configuration index: vectors of another
/// model are dropped and recomputed, never compared; a vector whose item is deleted goes with it.
const V7_EMBEDDINGS: &str = r#"
CREATE TABLE embeddings (
    kind      TEXT    NOT NULL CHECK (kind IN ('chunk', 'entry')),
    item_id   INTEGER NOT NULL,
    model     TEXT    NOT NULL CHECK (length(model) > 0),
    dimension INTEGER NOT NULL CHECK (dimension > 0),
    text_hash TEXT    NOT NULL,
    vector    BLOB    NOT NULL CHECK (length(vector) = 4 * dimension),
    PRIMARY KEY (kind, item_id)
) STRICT;
CREATE TRIGGER config_chunks_embedding_delete AFTER DELETE ON config_chunks BEGIN
    DELETE FROM embeddings WHERE kind = 'chunk' AND item_id = OLD.id;
END;
CREATE TRIGGER knowledge_embedding_delete AFTER DELETE ON knowledge BEGIN
    DELETE FROM embeddings WHERE kind = 'entry' AND item_id = OLD.id;
END;
"#;

/// The quest log (`macha logs search`): an FTS5 index over the audit trail's subject, summary and
/// payload text, an external-content table kept in step by triggers (records are only inserted,
/// and deleted by the sanctioned prune), filled from the records already there.
const V8_QUESTLOG: &str = r#"
CREATE VIRTUAL TABLE audit_fts USING fts5 (
    subject, summary, payload,
    content = 'audit', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO audit_fts (audit_fts) VALUES ('rebuild');
CREATE TRIGGER audit_fts_insert AFTER INSERT ON audit BEGIN
    INSERT INTO audit_fts (rowid, subject, summary, payload) VALUES (NEW.id, NEW.subject, NEW.summary, NEW.payload);
END;
CREATE TRIGGER audit_fts_delete AFTER DELETE ON audit BEGIN
    INSERT INTO audit_fts (audit_fts, rowid, subject, summary, payload)
    VALUES ('delete', OLD.id, OLD.subject, OLD.summary, OLD.payload);
END;
CREATE INDEX actions_host_started ON actions (host, ts_started);
"#;

/// Metric history (`metrics.rs`, decision 0023): names and hosts interned, one row per host,
/// tier and timestamp (seconds) with every metric of that moment packed in a blob. Derived,
/// bounded data: `Store::maintain` folds raw rows into 5-minute and 1-hour buckets and deletes
/// the oldest.
const V9_METRICS: &str = r#"
CREATE TABLE metric_names (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128)
) STRICT;
CREATE TABLE metric_hosts (
    id   INTEGER PRIMARY KEY,
    host TEXT    NOT NULL UNIQUE CHECK (length(host) BETWEEN 1 AND 253)
) STRICT;
CREATE TABLE metric_samples (
    id      INTEGER PRIMARY KEY,
    host_id INTEGER NOT NULL,
    tier    INTEGER NOT NULL CHECK (tier IN (0, 300, 3600)),
    ts      INTEGER NOT NULL,
    data    BLOB    NOT NULL CHECK (length(data) >= 1),
    UNIQUE (host_id, tier, ts)
) STRICT;
CREATE INDEX metric_samples_age ON metric_samples (tier, ts);
"#;

/// Notifications (`macha-notify`, decision 0021): the outbox every message goes through before it
/// leaves the daemon, and the silences people set. A message is unique per channel by its
/// `message_id`, so enqueueing the same message twice keeps one row, and a receiver can drop a
/// resend by that id. `sending` is only ever seen inside the delivering process: at start the
/// deliverer puts such rows back to `queued`.
const V10_NOTIFY: &str = r#"
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL CHECK (length(message_id) > 0),
    channel      TEXT    NOT NULL CHECK (length(channel) > 0),
    created      INTEGER NOT NULL,
    payload      TEXT    NOT NULL CHECK (json_valid(payload)),
    state        TEXT    NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt INTEGER NOT NULL,
    last_error   TEXT,
    sent_at      INTEGER,
    UNIQUE (channel, message_id),
    CHECK ((state = 'sent') = (sent_at IS NOT NULL))
) STRICT;
CREATE INDEX outbox_pending ON outbox (channel, id) WHERE state IN ('queued', 'sending', 'failed');
CREATE INDEX outbox_state ON outbox (state, id);

CREATE TABLE silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    matcher    TEXT    NOT NULL CHECK (length(matcher) > 0),
    until      INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    created_by TEXT    NOT NULL CHECK (length(created_by) > 0),
    created    INTEGER NOT NULL,
    CHECK (until > created)
) STRICT;
CREATE INDEX silences_until ON silences (until);
"#;
