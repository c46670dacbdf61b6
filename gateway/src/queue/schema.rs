//! The database file: opening it, its PRAGMAs and its versioned migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. `setup` applies the
//! missing ones; `start` refuses a missing file or one from a newer gateway.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// Each entry moves the schema one version up. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    prefix      TEXT NOT NULL UNIQUE,
    key_hash    TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('ADMIN', 'USER', 'NODE')),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    owner_key_id     TEXT NOT NULL,
    model            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
                       ('queued', 'processing', 'completed', 'failed', 'cancelled', 'expired')),
    priority         INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 5),
    request_payload  TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    idempotency_key  TEXT,
    request_id       TEXT,
    result_payload   TEXT,
    error_payload    TEXT,
    error_status     INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_id         TEXT,
    lease_expires_at INTEGER,
    locked_by        TEXT,
    locked_at        INTEGER,
    not_before       INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    expires_at       INTEGER NOT NULL
);
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_by_queue_order ON jobs (status, model, priority, seq);
CREATE INDEX jobs_by_owner ON jobs (owner_key_id, seq);
CREATE INDEX jobs_by_lease_expiry ON jobs (lease_expires_at) WHERE status = 'processing';
CREATE INDEX jobs_by_expiry ON jobs (expires_at) WHERE status = 'queued';
CREATE UNIQUE INDEX jobs_by_lease ON jobs (lease_id) WHERE lease_id IS NOT NULL;

CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    key_id        TEXT NOT NULL,
    models        TEXT NOT NULL,
    capacity      INTEGER NOT NULL DEFAULT 0,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
",
    r"
-- The age of the oldest queued job, for the metrics, without scanning the queue.
CREATE INDEX jobs_queued_by_age ON jobs (created_at) WHERE status = 'queued';
",
    r"
-- A counter that every change to a key moves, whoever makes it (the gateway or the CLI in
-- another process), so the gateway can cache key rows and still notice a revocation.
CREATE TABLE api_key_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO api_key_generation VALUES (1, 0);
CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
    BEGIN UPDATE api_key_generation SET generation = generation + 1; END;
CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys
    BEGIN UPDATE api_key_generation SET generation = generation + 1; END;
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
    BEGIN UPDATE api_key_generation SET generation = generation + 1; END;
",
    r"
-- The lease whose outcome (a result, a failure, a hand-back) is stored, so that a retried
-- submit is told `duplicate` and a late one from a lapsed lease can still be accepted.
ALTER TABLE jobs ADD COLUMN result_lease_id TEXT;
-- A completed job's result came from its last lease: a submit retried across the upgrade is
-- still told `duplicate`.
UPDATE jobs SET result_lease_id = lease_id WHERE status = 'completed';
-- Retries held back by backoff, by due time: the reaper finds those that became due.
CREATE INDEX jobs_by_not_before ON jobs (not_before)
    WHERE status = 'queued' AND not_before IS NOT NULL;
",
    r"
-- The store records how a job ended, not the HTTP status a client gets for it: the column
-- keeps the upstream's status, when an upstream answered. The statuses the gateway picked
-- (409, 410, 502) are dropped; an upstream's 4xx is the one that was kept.
ALTER TABLE jobs RENAME COLUMN error_status TO upstream_status;
UPDATE jobs SET upstream_status = NULL
    WHERE status IN ('cancelled', 'expired') OR upstream_status NOT BETWEEN 400 AND 499;
",
    r"
-- Files of `/v1/files`: the metadata only; the bytes live in `files/<id>` beside the
-- database. A row is inserted only after its file is complete, fsynced and renamed.
-- Times are Unix ms, as in `jobs`.
CREATE TABLE files (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    owner_key_id    TEXT NOT NULL,
    purpose         TEXT NOT NULL CHECK (purpose IN ('batch', 'batch_output')),
    filename        TEXT NOT NULL,
    bytes           INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER
);
CREATE UNIQUE INDEX files_by_idempotency_key ON files (owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX files_by_owner ON files (owner_key_id, seq);
CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;
",
    r"
-- Batches of `/v1/batches`. Their request counts are not stored: they are counted from the
-- line jobs on every read. Times are Unix ms.
CREATE TABLE batches (
    seq                  INTEGER PRIMARY KEY,
    id                   TEXT NOT NULL UNIQUE,
    owner_key_id         TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('validating', 'failed', 'in_progress',
                           'finalizing', 'completed', 'expired', 'cancelling', 'cancelled')),
    endpoint             TEXT NOT NULL,
    model                TEXT,
    input_file_id        TEXT NOT NULL,
    completion_window    TEXT NOT NULL,
    metadata             TEXT,
    output_expires_after INTEGER,
    errors               TEXT,
    output_file_id       TEXT,
    error_file_id        TEXT,
    usage                TEXT,
    idempotency_key      TEXT,
    request_hash         TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    in_progress_at       INTEGER,
    finalizing_at        INTEGER,
    completed_at         INTEGER,
    failed_at            INTEGER,
    expired_at           INTEGER,
    cancelling_at        INTEGER,
    cancelled_at         INTEGER
);
CREATE UNIQUE INDEX batches_by_idempotency_key ON batches (owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX batches_by_owner ON batches (owner_key_id, seq);
-- What the runner has to do, without scanning finished batches.
CREATE INDEX batches_active ON batches (status)
    WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');
-- Each line of a batch is a job, keyed by batch and line number (never by `custom_id`, which
-- only the user's file makes unique), so enqueueing again after a crash adds nothing.
ALTER TABLE jobs ADD COLUMN batch_id TEXT;
ALTER TABLE jobs ADD COLUMN custom_id TEXT;
ALTER TABLE jobs ADD COLUMN line INTEGER;
CREATE UNIQUE INDEX jobs_by_batch_line ON jobs (batch_id, line) WHERE batch_id IS NOT NULL;
-- The live request counts: a covering index, counted without reading the rows.
CREATE INDEX jobs_by_batch_status ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
",
    r"
-- A batch's line counts, moved in the same transaction as each line's enqueue and ending,
-- so a read costs one row instead of a count over the batch's lines (4 ms at 50,000).
ALTER TABLE batches ADD COLUMN lines_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN lines_completed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN lines_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN lines_expired INTEGER NOT NULL DEFAULT 0;
UPDATE batches SET
    lines_total = (SELECT COUNT(*) FROM jobs WHERE jobs.batch_id = batches.id),
    lines_completed = (SELECT COUNT(*) FROM jobs
        WHERE jobs.batch_id = batches.id AND jobs.status = 'completed'),
    lines_failed = (SELECT COUNT(*) FROM jobs
        WHERE jobs.batch_id = batches.id AND jobs.status IN ('failed', 'cancelled', 'expired')),
    lines_expired = (SELECT COUNT(*) FROM jobs
        WHERE jobs.batch_id = batches.id AND jobs.status = 'expired');
",
    r"
-- The endpoint a job was submitted to, which its node calls on the upstream. Every job
-- before this was a chat completion. `/v1/responses` is allowed ahead of its routes.
ALTER TABLE jobs ADD COLUMN endpoint TEXT NOT NULL DEFAULT '/v1/chat/completions'
    CHECK (endpoint IN ('/v1/chat/completions', '/v1/embeddings', '/v1/completions',
                        '/v1/responses'));
-- A node that serves some endpoints only leases in queue order among theirs, without
-- reading past the others' jobs. Partial, so only queued jobs cost a write here.
CREATE INDEX jobs_queued_by_endpoint ON jobs (endpoint, model, priority, seq)
    WHERE status = 'queued';
",
    r"
-- Fair share: one key's queued jobs of one model and endpoint in one priority band, in
-- queue order, which the fair lease reads; and each key's share, its weight.
CREATE INDEX jobs_queued_by_owner ON jobs (owner_key_id, model, endpoint, priority, seq)
    WHERE status = 'queued';
-- The fair lease reads a key's lanes through the index above; only its rare fallback reads
-- in plain queue order, which `jobs_by_queue_order` serves. One index fewer to write.
DROP INDEX jobs_queued_by_endpoint;
-- A job's estimated tokens (input and most output), charged to its key's tokens_per_minute
-- when it is leased and corrected from its usage.
ALTER TABLE jobs ADD COLUMN est_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN weight INTEGER NOT NULL DEFAULT 1
    CHECK (weight BETWEEN 1 AND 1000);
-- A key's limits (NULL: none), stored with it: the generation trigger tells every
-- gateway of a change.
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER CHECK (requests_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN tokens_per_minute INTEGER CHECK (tokens_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN max_queued_jobs INTEGER CHECK (max_queued_jobs >= 0);
ALTER TABLE api_keys ADD COLUMN max_concurrent_jobs INTEGER CHECK (max_concurrent_jobs > 0);
ALTER TABLE api_keys ADD COLUMN max_priority INTEGER CHECK (max_priority BETWEEN 1 AND 5);
ALTER TABLE api_keys ADD COLUMN default_priority INTEGER CHECK (default_priority BETWEEN 1 AND 5);
ALTER TABLE api_keys ADD COLUMN metrics_label TEXT;
",
    r"
-- Live relay (issue 18): whether a job's node streams its chunks through the gateway, and
-- when the first chunk of its current run reached a client. A run that relayed a chunk is
-- never retried: a retry would repeat tokens a client already has.
ALTER TABLE jobs ADD COLUMN relay INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN first_relayed_at INTEGER;
",
    r"
-- Operations (issue 21): what operators did to a job (a JSON list: retries, priority
-- changes), and nodes an admin drained.
ALTER TABLE jobs ADD COLUMN events TEXT;
-- The time to live a job was submitted with, in ms, which a retry gives it again (jobs
-- stored before this, and batch lines, whose batch's window bounds them, have none).
ALTER TABLE jobs ADD COLUMN ttl_ms INTEGER;
ALTER TABLE nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
-- What the node's last heartbeat said of it: the drain reached it.
ALTER TABLE nodes ADD COLUMN draining_reported INTEGER NOT NULL DEFAULT 0;
-- The dashboard's job table pages newest first by status or by model: without these a
-- rare status (failed among a million completed) is a scan of the whole table.
CREATE INDEX jobs_by_status ON jobs (status, seq);
CREATE INDEX jobs_by_model ON jobs (model, seq);
",
];

/// The schema version this gateway reads and writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Prepared statements kept per connection.
pub const STATEMENT_CACHE: usize = 128;

/// PRAGMAs every connection gets. WAL lets readers run beside the single writer, and
/// `synchronous=FULL` makes a commit durable before it returns, which a 202 relies on.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // rusqlite keeps 16 prepared statements by default; the writer alone uses more, and an
    // evicted statement is parsed again on its next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;",
    )
}

/// Opens (creating it and its directory if needed) and migrates the database: `setup`.
pub fn open_and_migrate(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::DataDir {
            path: dir.display().to_string(),
            source: std::sync::Arc::new(e),
        })?;
    }
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens an existing database for serving: `start`. Older schemas are migrated forward,
/// so upgrading the binary is enough; newer ones are refused.
pub fn open_existing(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing(path.display().to_string()));
    }
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "applied migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_is_idempotent_and_start_refuses_missing_or_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/queue.db");
        assert!(matches!(open_existing(&path), Err(StoreError::Missing(_))));
        let conn = open_and_migrate(&path).unwrap();
        conn.execute(
            "INSERT INTO nodes (id, key_id, models, capacity, first_seen_at, last_seen_at)
             VALUES ('n', 'k', '[]', 0, 1, 1)",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open_and_migrate(&path).unwrap();
        let nodes: i64 = conn
            .query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(nodes, 1, "a second setup keeps the data");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = open_existing(&path).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn migration_5_keeps_the_upstreams_statuses_and_drops_the_ones_the_gateway_picked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        for (id, status, error_status) in [
            ("a", "failed", 429),
            ("b", "failed", 502),
            ("c", "cancelled", 409),
            ("d", "expired", 410),
        ] {
            conn.execute(
                "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                     request_hash, max_attempts, created_at, updated_at, expires_at, error_status)
                 VALUES (?1, 'k', 'm', ?2, 3, '{}', '', 3, 0, 0, 0, ?3)",
                rusqlite::params![id, status, error_status],
            )
            .unwrap();
        }
        drop(conn);
        let conn = open_existing(&path).unwrap();
        let kept: Vec<Option<u16>> = conn
            .prepare("SELECT upstream_status FROM jobs ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kept, [Some(429), None, None, None]);
    }

    #[test]
    fn migration_9_makes_every_earlier_job_a_chat_completion_and_refuses_unknown_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let conn = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 8).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                 request_hash, max_attempts, created_at, updated_at, expires_at)
             VALUES ('old', 'k', 'm', 'queued', 3, '{}', '', 3, 0, 0, 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open_existing(&path).unwrap();
        let endpoint: String = conn
            .query_row("SELECT endpoint FROM jobs WHERE id = 'old'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(endpoint, "/v1/chat/completions");
        let refused = conn.execute(
            "INSERT INTO jobs (id, owner_key_id, model, status, priority, request_payload,
                 request_hash, max_attempts, created_at, updated_at, expires_at, endpoint)
             VALUES ('new', 'k', 'm', 'queued', 3, '{}', '', 3, 0, 0, 0, '/v1/images')",
            [],
        );
        assert!(refused.is_err(), "an unknown endpoint is refused");
    }
}
