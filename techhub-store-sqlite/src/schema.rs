//! The schema, as versioned migrations applied at open (`PRAGMA user_version`), each in one transaction.

use rusqlite::Connection;
use techhub_core::storage::{StoreError, StoreResult};

use crate::engine::sql_error;

/// Each entry takes the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
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
CREATE INDEX users_active_admins ON users(role, active);

CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id BLOB NOT NULL,
    family BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    family_created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    consumed_at INTEGER
) WITHOUT ROWID;
CREATE INDEX tokens_family ON tokens(family);
CREATE INDEX tokens_user ON tokens(user_id, kind);
CREATE INDEX tokens_expiry ON tokens(expires_at);

CREATE TABLE jobs (
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
CREATE INDEX jobs_claim ON jobs(queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_queued_by_time ON jobs(queue, run_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs(lease_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs(state, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_created_by ON jobs(created_by, id) WHERE created_by IS NOT NULL;
-- At most one live job per unique key, also across processes.
CREATE UNIQUE INDEX jobs_live_unique_key ON jobs(unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');

CREATE TABLE job_artifacts (
    job_id BLOB PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    content_type TEXT NOT NULL,
    file_name TEXT,
    bytes BLOB NOT NULL
) WITHOUT ROWID;

-- Counts by queue and state, kept by triggers so reading them never scans the jobs.
CREATE TABLE job_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (queue, state, count) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER jobs_counted_on_update AFTER UPDATE OF state ON jobs WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET count = count - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO job_counts (queue, state, count) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER jobs_counted_on_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET count = count - 1 WHERE queue = OLD.queue AND state = OLD.state;
END;

CREATE TABLE builds (
    id BLOB PRIMARY KEY,
    project TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by BLOB,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX builds_project ON builds(project, id);

CREATE TABLE build_logs (
    build_id BLOB NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (build_id, seq)
) WITHOUT ROWID;

CREATE TABLE notifications (
    id BLOB PRIMARY KEY,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX notifications_channel_status ON notifications(channel, status);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN user_agent TEXT;
ALTER TABLE tokens ADD COLUMN ip TEXT;
"#,
    r#"
CREATE TABLE audit (
    id BLOB PRIMARY KEY,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor_id BLOB,
    user_id BLOB,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_user ON audit(user_id, id);
CREATE INDEX audit_actor ON audit(actor_id, id);
"#,
];

/// The schema version this code writes.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`CURRENT_VERSION`]. A database newer than the code is refused: this code would
/// misread it.
pub(crate) fn migrate(connection: &Connection) -> StoreResult<()> {
    let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(sql_error)?;
    if version > CURRENT_VERSION {
        return Err(StoreError::corrupt(std::io::Error::other(format!(
            "the database has schema version {version}, newer than this TechHub understands ({CURRENT_VERSION}); upgrade TechHub"
        ))));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0)) {
        let next = index + 1;
        // One transaction per migration: a failure leaves the schema as it was.
        connection
            .execute_batch(&format!("BEGIN IMMEDIATE; {migration}\nPRAGMA user_version = {next}; COMMIT;"))
            .map_err(|error| {
                let _ = connection.execute_batch("ROLLBACK");
                sql_error(error)
            })?;
        tracing::info!(version = next, "SQLite schema migrated");
    }
    Ok(())
}
