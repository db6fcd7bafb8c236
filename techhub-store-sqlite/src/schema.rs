//! The schema, as versioned migrations applied at open (`PRAGMA user_version`), each in one transaction.

use rusqlite::Connection;
use techhub_core::storage::{StoreError, StoreResult};

use crate::engine::sql_error;

/// Each entry takes the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE IF NOT EXISTS users (
    id BLOB PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    active INTEGER NOT NULL,
    email_verified INTEGER NOT NULL,
    version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    password_hash TEXT,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    last_failed_login_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_active_admins ON users(role, active);

CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id BLOB NOT NULL,
    family BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    family_created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_family ON tokens(family);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_id, kind);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens(expires_at);

CREATE TABLE IF NOT EXISTS jobs (
    id BLOB PRIMARY KEY,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    progress_percent INTEGER NOT NULL,
    progress_message TEXT,
    last_error TEXT,
    result TEXT,
    artifact_content_type TEXT,
    artifact_file_name TEXT,
    artifact_size INTEGER,
    created_by BLOB,
    unique_key TEXT,
    lease_holder TEXT,
    lease_until INTEGER,
    cancel_requested INTEGER NOT NULL
) WITHOUT ROWID;
-- Claims read this index in claim order and stop at the first due row.
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_queued_by_time ON jobs(queue, run_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs(lease_until) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_created_by ON jobs(created_by, id) WHERE created_by IS NOT NULL;
-- At most one live job per unique key, also across processes.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_live_unique_key ON jobs(unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');

CREATE TABLE IF NOT EXISTS job_artifacts (
    job_id BLOB PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    content_type TEXT NOT NULL,
    file_name TEXT,
    bytes BLOB NOT NULL
) WITHOUT ROWID;

-- Counts by queue and state, kept by triggers so reading them never scans the jobs.
CREATE TABLE IF NOT EXISTS job_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS jobs_counted_on_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (queue, state, count) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS jobs_counted_on_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET count = count - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO job_counts (queue, state, count) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS jobs_counted_on_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET count = count - 1 WHERE queue = OLD.queue AND state = OLD.state;
END;

CREATE TABLE IF NOT EXISTS builds (
    id BLOB PRIMARY KEY,
    project TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by BLOB,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS builds_project ON builds(project, id);

CREATE TABLE IF NOT EXISTS build_logs (
    build_id BLOB NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS notifications (
    id BLOB PRIMARY KEY,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notifications_channel_status ON notifications(channel, status);
"#,
    r#"
-- Builds: counts by status from an index, and the outcomes of finished builds that statistics read.
CREATE INDEX IF NOT EXISTS builds_status ON builds(status);
CREATE TABLE IF NOT EXISTS build_outcomes (
    build_id BLOB PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
    project TEXT NOT NULL,
    finished_at INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS build_outcomes_project ON build_outcomes(project, finished_at);
CREATE INDEX IF NOT EXISTS build_outcomes_finished ON build_outcomes(finished_at);
"#,
    r#"
-- Sessions: the client (user agent, address) that began each token's family. ALTER TABLE has no IF NOT
-- EXISTS: this runs once, inside the migration's write transaction.
ALTER TABLE tokens ADD COLUMN user_agent TEXT;
ALTER TABLE tokens ADD COLUMN ip TEXT;
"#,
    r#"
-- The audit log: append-only, filtered by account, action and time, pruned by time.
CREATE TABLE IF NOT EXISTS audit (
    id BLOB PRIMARY KEY,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor_id BLOB,
    user_id BLOB,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_user ON audit(user_id, id);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor_id, id);
"#,
    r#"
-- Notification endpoints (webhook and Slack targets): a small collection, read by id or listed whole.
CREATE TABLE IF NOT EXISTS endpoints (
    id BLOB PRIMARY KEY,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Cron: the last tick each schedule fired, written with the tick's job so a tick is enqueued once.
CREATE TABLE IF NOT EXISTS cron_ticks (
    schedule TEXT PRIMARY KEY,
    last_tick INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

/// The schema version this code writes.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`CURRENT_VERSION`]. A database newer than the code is refused: this code would
/// misread it.
///
/// Each step reads the version inside its own `BEGIN IMMEDIATE` transaction, which holds the database's write
/// lock: processes opening one file together take turns, and each sees what the one before it committed, so a
/// migration never runs twice. (The statements are idempotent besides, as a second line of defence.)
pub(crate) fn migrate(connection: &Connection) -> StoreResult<()> {
    loop {
        connection.execute_batch("BEGIN IMMEDIATE").map_err(sql_error)?;
        match migrate_one_step(connection) {
            Ok(Some(version)) => {
                connection.execute_batch("COMMIT").map_err(|error| rollback(connection, error))?;
                tracing::info!(version, "SQLite schema migrated");
            }
            Ok(None) => {
                connection.execute_batch("COMMIT").map_err(|error| rollback(connection, error))?;
                return Ok(());
            }
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                return Err(error);
            }
        }
    }
}

/// Inside a write transaction: applies the migration after the stored version and returns the new version,
/// or `None` when the schema is current.
fn migrate_one_step(connection: &Connection) -> StoreResult<Option<i64>> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(sql_error)?;
    if version > CURRENT_VERSION {
        return Err(StoreError::corrupt(std::io::Error::other(format!(
            "the database has schema version {version}, newer than this TechHub understands ({CURRENT_VERSION}); upgrade TechHub"
        ))));
    }
    let Some(migration) = MIGRATIONS.get(usize::try_from(version).unwrap_or(usize::MAX)) else { return Ok(None) };
    let next = version + 1;
    connection.execute_batch(&format!("{migration}\nPRAGMA user_version = {next};")).map_err(sql_error)?;
    Ok(Some(next))
}

fn rollback(connection: &Connection, error: rusqlite::Error) -> StoreError {
    let _ = connection.execute_batch("ROLLBACK");
    sql_error(error)
}
