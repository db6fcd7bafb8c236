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
    r#"
-- Jobs, cheaper per job: the store's writes keep job_counts themselves, in their own transaction, one change
-- per queue and state a write touches (the triggers fired per row and made every statement that fired them
-- keep a statement journal). The counts the triggers kept are exact and stay as they are. The oldest
-- waiting job of a queue is found from jobs_claim, one probe per priority, so jobs_queued_by_time (written
-- at every enqueue and claim) goes.
DROP TRIGGER IF EXISTS jobs_counted_on_insert;
DROP TRIGGER IF EXISTS jobs_counted_on_update;
DROP TRIGGER IF EXISTS jobs_counted_on_delete;
DROP INDEX IF EXISTS jobs_queued_by_time;
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use rusqlite::{Connection, params};
    use serde_json::json;
    use techhub_core::model::{Job, JobState, NewJob, QueueCounts, Settlement, WorkerId};
    use techhub_core::storage::JobStore;

    use super::MIGRATIONS;
    use crate::SqliteStore;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid time")
    }

    /// Inserts a job the way version 6 did: a row, which its triggers counted.
    fn insert_v6(connection: &Connection, id: u128, queue: &str, state: &str, run_at: i64) {
        connection
            .execute(
                "INSERT INTO jobs (id, queue, kind, payload, state, priority, attempt, max_attempts, run_at, created_at, \
                 progress_percent, cancel_requested) VALUES (?1, ?2, 'old', '{}', ?3, 0, 0, 3, ?4, ?4, 0, 0)",
                params![uuid::Uuid::from_u128(id).as_bytes(), queue, state, run_at],
            )
            .expect("a version 6 job is inserted");
    }

    fn counts_of(counts: &[QueueCounts], queue: &str) -> (u64, u64, u64, Option<DateTime<Utc>>) {
        let counts = counts.iter().find(|counts| counts.queue == queue).expect("the queue is counted");
        (counts.queued, counts.running, counts.succeeded, counts.oldest_queued_run_at)
    }

    /// A version 6 database kept its job counts by triggers; after the migration the store keeps them, starting
    /// from the counts the triggers left, and the triggers and the index the claim index replaces are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_kept_by_triggers_carry_over_to_the_store() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("v6.db");
        {
            let connection = Connection::open(&path).expect("opens");
            for migration in &MIGRATIONS[..6] {
                connection.execute_batch(migration).expect("an old migration runs");
            }
            connection.pragma_update(None, "user_version", 6).expect("version 6");
            insert_v6(&connection, 1, "mail", "queued", at(5).timestamp_micros());
            insert_v6(&connection, 2, "mail", "queued", at(3).timestamp_micros());
            insert_v6(&connection, 3, "mail", "succeeded", at(1).timestamp_micros());
            insert_v6(&connection, 4, "video", "queued", at(2).timestamp_micros());
        }

        let store = SqliteStore::open(&path).expect("the version 6 database opens and migrates");
        let counts = store.queue_counts().await.expect("counts");
        assert_eq!(counts_of(&counts, "mail"), (2, 0, 1, Some(at(3))));
        assert_eq!(counts_of(&counts, "video"), (1, 0, 0, Some(at(2))));

        // From now on the store's writes keep them: an enqueue, a claim, a batched settle.
        let job = Job::new(NewJob::new("new", json!({})).queue("mail").run_at(at(4)), at(4)).expect("a valid job");
        store.enqueue(job).await.expect("enqueues");
        let worker = WorkerId::new("w");
        let claimed = store
            .claim_many(&["mail".to_owned()], &worker, at(10), std::time::Duration::from_secs(60), 2)
            .await
            .expect("claims");
        assert_eq!(claimed.len(), 2);
        let counts = store.queue_counts().await.expect("counts");
        assert_eq!(counts_of(&counts, "mail"), (1, 2, 1, Some(at(5))));
        let lease = claimed[0].lease().expect("a claimed job has a lease");
        let settled = store
            .settle_many(
                vec![Settlement::Complete { lease, result: json!(null), artifact: None, side_writes: Vec::new() }],
                at(11),
            )
            .await
            .expect("settles");
        assert_eq!(settled[0].as_ref().map(|job| job.state).ok(), Some(JobState::Succeeded));
        let counts = store.queue_counts().await.expect("counts");
        assert_eq!(counts_of(&counts, "mail"), (1, 1, 2, Some(at(5))));

        let connection = Connection::open(&path).expect("opens beside the store");
        let leftovers: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' OR name = 'jobs_queued_by_time'",
                [],
                |row| row.get(0),
            )
            .expect("reads the schema");
        assert_eq!(leftovers, 0);
    }
}
