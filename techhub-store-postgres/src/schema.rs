//! The schema, as numbered migrations applied at connect under an advisory lock.
//!
//! Text that is ordered (queue and project names) uses the `"C"` collation, so the database orders it as Rust
//! orders strings, whatever locale the cluster was created with. JSON is kept as `text`: it reads back
//! exactly as written (the stores never query inside it).

use techhub_core::storage::{StoreError, StoreResult};

use crate::db::{Client, Db};

/// The advisory lock key that serialises migrations (and only them): "techhub" in ASCII.
const MIGRATION_LOCK: i64 = 0x0074_6563_6868_7562;

/// Each entry takes the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL CONSTRAINT users_email_key UNIQUE,
    name text NOT NULL,
    role text NOT NULL,
    active boolean NOT NULL,
    email_verified boolean NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    password_hash text,
    failed_logins integer NOT NULL DEFAULT 0,
    last_failed_login_at timestamptz
);
-- The last-admin guard counts active admins from this index alone.
CREATE INDEX users_active_admins ON users (id) WHERE role = 'admin' AND active;

-- Counts of users kept by triggers (one row, changed by deltas), so counting never scans.
CREATE TABLE user_count_deltas (
    total bigint NOT NULL,
    active bigint NOT NULL,
    admins bigint NOT NULL
);
CREATE FUNCTION techhub_count_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO user_count_deltas SELECT -count(*), -count(*) FILTER (WHERE active), -count(*) FILTER (WHERE role = 'admin') FROM old_rows;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO user_count_deltas SELECT count(*), count(*) FILTER (WHERE active), count(*) FILTER (WHERE role = 'admin') FROM new_rows;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER users_counted_on_insert AFTER INSERT ON users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION techhub_count_users();
CREATE TRIGGER users_counted_on_update AFTER UPDATE ON users REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION techhub_count_users();
CREATE TRIGGER users_counted_on_delete AFTER DELETE ON users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION techhub_count_users();

CREATE TABLE tokens (
    hash bytea PRIMARY KEY,
    kind text NOT NULL,
    user_id uuid NOT NULL,
    family uuid NOT NULL,
    created_at timestamptz NOT NULL,
    family_created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    consumed_at timestamptz,
    user_agent text,
    ip text
);
CREATE INDEX tokens_family ON tokens (family);
CREATE INDEX tokens_user ON tokens (user_id, kind);
CREATE INDEX tokens_expiry ON tokens (expires_at);

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    queue text COLLATE "C" NOT NULL,
    kind text NOT NULL,
    payload text NOT NULL,
    state text NOT NULL,
    priority integer NOT NULL,
    attempt integer NOT NULL,
    max_attempts integer NOT NULL,
    run_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    progress_percent smallint NOT NULL,
    progress_message text,
    last_error text,
    result text,
    artifact_content_type text,
    artifact_file_name text,
    artifact_size bigint,
    created_by uuid,
    unique_key text,
    lease_holder text,
    lease_until timestamptz,
    cancel_requested boolean NOT NULL,
    -- Bumped by every write: a transition computed from a read is written only if nothing changed since.
    revision bigint NOT NULL DEFAULT 0
);
-- Claims walk this index in claim order (FOR UPDATE SKIP LOCKED) and stop at the first due rows.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_queued_by_time ON jobs (queue, run_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_created_by ON jobs (created_by, id) WHERE created_by IS NOT NULL;
-- At most one live job per unique key, across every instance.
CREATE UNIQUE INDEX jobs_live_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');

CREATE TABLE job_artifacts (
    job_id uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    content_type text NOT NULL,
    file_name text,
    bytes bytea NOT NULL
);

-- Counts by queue and state: every statement that changes jobs appends its net change here (insert only,
-- so concurrent writers never wait on a shared counter row); reading folds the changes into job_counts.
-- (Replaced by counts per server session in migration 6.)
CREATE TABLE job_counts (
    queue text COLLATE "C" NOT NULL,
    state text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
CREATE TABLE job_count_deltas (
    queue text COLLATE "C" NOT NULL,
    state text NOT NULL,
    delta bigint NOT NULL
);
CREATE FUNCTION techhub_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_count_deltas SELECT queue, state, count(*) FROM new_rows GROUP BY queue, state;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_count_deltas SELECT queue, state, -count(*) FROM old_rows GROUP BY queue, state;
    ELSE
        INSERT INTO job_count_deltas
            SELECT queue, state, sum(delta) FROM (
                SELECT queue, state, -1 AS delta FROM old_rows
                UNION ALL SELECT queue, state, 1 FROM new_rows
            ) AS changes GROUP BY queue, state HAVING sum(delta) <> 0;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION techhub_count_jobs();
CREATE TRIGGER jobs_counted_on_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION techhub_count_jobs();
CREATE TRIGGER jobs_counted_on_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION techhub_count_jobs();

CREATE TABLE builds (
    id uuid PRIMARY KEY,
    project text COLLATE "C" NOT NULL,
    status text NOT NULL,
    created_by uuid,
    version bigint NOT NULL,
    record text NOT NULL
);
CREATE INDEX builds_project ON builds (project, id);
CREATE INDEX builds_status ON builds (status);

CREATE TABLE build_logs (
    build_id uuid NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    line text NOT NULL,
    PRIMARY KEY (build_id, seq)
);

CREATE TABLE build_outcomes (
    build_id uuid PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    project text COLLATE "C" NOT NULL,
    finished_at timestamptz NOT NULL,
    record text NOT NULL
);
CREATE INDEX build_outcomes_project ON build_outcomes (project, finished_at);
CREATE INDEX build_outcomes_finished ON build_outcomes (finished_at);

CREATE TABLE notifications (
    id uuid PRIMARY KEY,
    channel text NOT NULL,
    status text NOT NULL,
    version bigint NOT NULL,
    record text NOT NULL
);
CREATE INDEX notifications_channel_status ON notifications (channel, status);

CREATE TABLE audit (
    id uuid PRIMARY KEY,
    at timestamptz NOT NULL,
    action text NOT NULL,
    actor_id uuid,
    user_id uuid,
    record text NOT NULL
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_user ON audit (user_id, id);
CREATE INDEX audit_actor ON audit (actor_id, id);

-- Events too large for a notification, sent to the other instances by id; kept a few minutes.
CREATE TABLE peer_events (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    payload text NOT NULL
);
CREATE INDEX peer_events_created ON peer_events (created_at);
"#,
    r#"
-- Notification endpoints (webhook and Slack targets): a small collection, read by id or listed whole.
CREATE TABLE endpoints (
    id uuid PRIMARY KEY,
    version bigint NOT NULL,
    record text NOT NULL
);
"#,
    r#"
-- Cron: the last tick each schedule fired, written with the tick's job so a tick is enqueued once across
-- every instance, even after its job finished.
CREATE TABLE cron_ticks (
    schedule text PRIMARY KEY,
    last_tick timestamptz NOT NULL
);
"#,
    r#"
-- Each rate-limited queue's token bucket, shared by every instance (see `JobStore::take_queue_starts`).
CREATE TABLE queue_rate_buckets (
    queue text COLLATE "C" PRIMARY KEY,
    tokens double precision NOT NULL,
    updated_at timestamptz NOT NULL
);
"#,
    r#"
-- The instances listening for each other's signals, so that one alone sends none (see the peers module).
CREATE TABLE peer_instances (
    id uuid PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
"#,
    r#"
-- Job counts kept per server session: each statement adds its net change to the rows of its own session
-- (`pg_backend_pid()`), which no other session writes, so concurrent writers never wait on a shared counter
-- and reading them is a sum over a few rows, never a write (the appended deltas, folded by the reader, made
-- every read a write). The rows of sessions that ended are folded into session 0 (see `jobs::FOLD_COUNTS`).
ALTER TABLE job_counts ADD COLUMN backend integer NOT NULL DEFAULT 0;
ALTER TABLE job_counts DROP CONSTRAINT job_counts_pkey;
ALTER TABLE job_counts ADD PRIMARY KEY (queue, state, backend);
INSERT INTO job_counts (queue, state, backend, count)
    SELECT queue, state, 0, sum(delta) FROM job_count_deltas GROUP BY queue, state
    ON CONFLICT (queue, state, backend) DO UPDATE SET count = job_counts.count + excluded.count;
DROP TABLE job_count_deltas;
-- Rows in (queue, state) order: two statements of one session never lock its rows crosswise with a fold.
CREATE OR REPLACE FUNCTION techhub_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_counts (queue, state, backend, count)
            SELECT queue, state, pg_backend_pid(), count(*) FROM new_rows GROUP BY queue, state ORDER BY queue, state
            ON CONFLICT (queue, state, backend) DO UPDATE SET count = job_counts.count + excluded.count;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_counts (queue, state, backend, count)
            SELECT queue, state, pg_backend_pid(), -count(*) FROM old_rows GROUP BY queue, state ORDER BY queue, state
            ON CONFLICT (queue, state, backend) DO UPDATE SET count = job_counts.count + excluded.count;
    ELSE
        INSERT INTO job_counts (queue, state, backend, count)
            SELECT queue, state, pg_backend_pid(), sum(delta) FROM (
                SELECT queue, state, -1 AS delta FROM old_rows
                UNION ALL SELECT queue, state, 1 FROM new_rows
            ) AS changes GROUP BY queue, state HAVING sum(delta) <> 0 ORDER BY queue, state
            ON CONFLICT (queue, state, backend) DO UPDATE SET count = job_counts.count + excluded.count;
    END IF;
    RETURN NULL;
END $$;
"#,
    r#"
-- Vacuum of the job tables tuned for a queue's churn (per table: other tables keep the server's settings).
-- Every claim and settle replaces a job's row (its state is in index predicates, so the update is never
-- HOT), and the old row's entry stays in the claim index until a vacuum removes it: claims walk the entries
-- of every job claimed since the last vacuum before reaching a queued one, so a claim slows down as jobs
-- go through, until vacuum runs. By default that is once a fifth of the table changed (a million jobs:
-- 200,000 claims later); here, once a hundredth did (plus a thousand rows), at the server's next look at
-- the database (`autovacuum_naptime`, a minute by default, is server-wide). `fillfactor` leaves room on
-- each page so that progress reports (which change no indexed column) stay on their page (HOT) and add
-- no index entry. `job_counts` is a few rows rewritten by every job statement: vacuumed every thousand
-- changes, whatever its size.
ALTER TABLE jobs SET (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE job_counts SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
"#,
];

/// The schema version this code writes.
pub(crate) const CURRENT_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database to [`CURRENT_VERSION`], in one transaction that holds an advisory lock: instances
/// starting together take turns, and each sees what the one before it committed, so a migration never runs
/// twice. A database newer than the code is refused: this code would misread it.
pub(crate) async fn migrate(client: &mut Client) -> StoreResult<()> {
    let transaction = client.transaction().await.db()?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.db()?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS techhub_schema (version integer NOT NULL);
             INSERT INTO techhub_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM techhub_schema);",
        )
        .await
        .db()?;
    let version: i32 = transaction.query_one("SELECT version FROM techhub_schema", &[]).await.db()?.get(0);
    if version > CURRENT_VERSION {
        return Err(newer_schema(version));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(usize::MAX)) {
        transaction.batch_execute(migration).await.db()?;
        tracing::info!(version = index + 1, "PostgreSQL schema migrated");
    }
    if version < CURRENT_VERSION {
        transaction.execute("UPDATE techhub_schema SET version = $1", &[&CURRENT_VERSION]).await.db()?;
    }
    transaction.commit().await.db()
}

fn newer_schema(version: i32) -> StoreError {
    StoreError::corrupt(std::io::Error::other(format!(
        "the database has schema version {version}, newer than this TechHub understands ({CURRENT_VERSION}); upgrade TechHub"
    )))
}
