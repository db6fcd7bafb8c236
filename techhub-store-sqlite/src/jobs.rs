//! Jobs. A claim is one `UPDATE ... RETURNING` over the claim-order index; other transitions load the job,
//! apply the same rules as every store, and write it back, all inside the writer's transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;
use techhub_core::clock;
use techhub_core::model::{
    Artifact, Job, JobFailure, JobFilter, JobId, JobState, Lease, Page, PageRequest, Progress, QueueCounts,
    QueueStarts, RateLimit, Settlement, WorkerId,
};
use techhub_core::storage::{Conflict, JobStore, StoreError, StoreResult, decisions};

use crate::CachedStatements;
use crate::job_counts::CountChanges;
use crate::rows::{JOB_COLUMNS, job_columns, micros, to_json};
use crate::{Sql, SqliteStore, rows};

pub(crate) fn load_job(connection: &Connection, id: JobId) -> StoreResult<Option<Job>> {
    connection
        .prepare_cached(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1"))
        .sql()?
        .query_row([id.as_bytes()], rows::job)
        .optional()
        .sql()
}

pub(crate) fn live_with_key(connection: &Connection, key: &str) -> StoreResult<Option<Job>> {
    connection
        .prepare_cached(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE unique_key = ?1 AND state IN ('queued', 'running')"
        ))
        .sql()?
        .query_row([key], rows::job)
        .optional()
        .sql()
}

/// Stores jobs as [`JobStore::enqueue_many`] says and counts them; the caller's transaction makes the
/// batch atomic.
pub(crate) fn insert_jobs(connection: &Connection, jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
    let mut counts = CountChanges::default();
    let stored = insert_counted(connection, jobs, &mut counts)?;
    counts.apply(connection)?;
    Ok(stored)
}

/// [`insert_jobs`], leaving the count changes in `counts` (the writer writes a batch's changes once).
fn insert_counted(connection: &Connection, jobs: Vec<Job>, counts: &mut CountChanges) -> StoreResult<Vec<Job>> {
    let mut stored = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(key) = &job.unique_key
            && let Some(existing) = live_with_key(connection, key)?
        {
            stored.push(existing);
            continue;
        }
        let (content_type, file_name, size) = artifact_columns(&job);
        // A stored id is a duplicate: the insert then changes nothing (one index probe, not a lookup first).
        let inserted = connection
            .prepare_cached(concat!(
                "INSERT INTO jobs (",
                job_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, \
                 ?21, ?22, ?23, ?24) ON CONFLICT (id) DO NOTHING"
            ))
            .sql()?
            .execute(params![
                job.id.as_bytes(),
                job.queue,
                job.kind,
                to_json(&job.payload)?,
                job.state.as_str(),
                job.priority,
                job.attempt,
                job.max_attempts,
                micros(job.run_at),
                micros(job.created_at),
                job.started_at.map(micros),
                job.finished_at.map(micros),
                job.progress.percent,
                job.progress.message,
                job.last_error,
                job.result.as_ref().map(to_json).transpose()?,
                content_type,
                file_name,
                size,
                job.created_by.map(|user| user.as_bytes().to_vec()),
                job.unique_key,
                job.lease_holder.as_ref().map(|worker| worker.as_str().to_owned()),
                job.lease_until.map(micros),
                job.cancel_requested,
            ])
            .sql()?;
        if inserted == 0 {
            return Err(Conflict::Duplicate.into());
        }
        counts.add(&job.queue, job.state, 1);
        stored.push(job);
    }
    Ok(stored)
}

/// The artifact description's columns: content type, file name, size.
fn artifact_columns(job: &Job) -> (Option<&str>, Option<&str>, Option<i64>) {
    let info = job.artifact.as_ref();
    (
        info.map(|info| info.content_type.as_str()),
        info.and_then(|info| info.file_name.as_deref()),
        info.map(|info| i64::try_from(info.size).unwrap_or(i64::MAX)),
    )
}

/// Writes back every column a transition can change, and notes the move from state `from` in `counts`.
fn save(connection: &Connection, job: &Job, from: JobState, counts: &mut CountChanges) -> StoreResult<()> {
    counts.moved(&job.queue, from, job.state);
    let (content_type, file_name, size) = artifact_columns(job);
    connection
        .prepare_cached(
            "UPDATE jobs SET state = ?2, attempt = ?3, run_at = ?4, started_at = ?5, finished_at = ?6, progress_percent = ?7, \
             progress_message = ?8, last_error = ?9, result = ?10, artifact_content_type = ?11, artifact_file_name = ?12, \
             artifact_size = ?13, lease_holder = ?14, lease_until = ?15, cancel_requested = ?16 WHERE id = ?1",
        )
        .sql()?
        .execute(params![
            job.id.as_bytes(),
            job.state.as_str(),
            job.attempt,
            micros(job.run_at),
            job.started_at.map(micros),
            job.finished_at.map(micros),
            job.progress.percent,
            job.progress.message,
            job.last_error,
            job.result.as_ref().map(to_json).transpose()?,
            content_type,
            file_name,
            size,
            job.lease_holder.as_ref().map(|worker| worker.as_str().to_owned()),
            job.lease_until.map(micros),
            job.cancel_requested,
        ])
        .sql()?;
    Ok(())
}

/// Replaces the payload of job `id` with `null`.
fn discard_payload(connection: &Connection, id: JobId) -> StoreResult<()> {
    connection
        .prepare_cached("UPDATE jobs SET payload = ?2 WHERE id = ?1")
        .sql()?
        .execute(params![id.as_bytes(), to_json(&Value::Null)?])
        .sql()?;
    Ok(())
}

/// The job running under `lease`, or why not.
fn leased(connection: &Connection, lease: &Lease) -> StoreResult<Job> {
    let job = load_job(connection, lease.job_id)?.ok_or(StoreError::NotFound)?;
    if job.is_leased_by(lease) { Ok(job) } else { Err(Conflict::LeaseLost.into()) }
}

/// How many finished jobs one pruning write deletes.
const PRUNE_SLICE: i64 = 2_000;

/// The first job of a queue in claim order: what a claim compares across queues.
struct ClaimHead {
    priority: i64,
    run_at: i64,
    id: Vec<u8>,
}

impl ClaimHead {
    /// Whether this job is claimed before `other`: higher priority, then older `run_at`, then lower id.
    fn precedes(&self, other: &Self) -> bool {
        (-self.priority, self.run_at, &self.id) < (-other.priority, other.run_at, &other.id)
    }
}

/// The head of each priority of `queue`'s waiting jobs, highest priority first, until `stop` says so.
///
/// The claim index orders a queue's jobs by priority, then `run_at`. Within one priority the first entry is
/// the oldest, so this visits priorities from the highest, one index probe each (a skip scan): the cost grows
/// with the number of distinct priorities waiting, not with the jobs.
fn priority_heads(
    connection: &Connection,
    queue: &str,
    mut stop: impl FnMut(&ClaimHead) -> bool,
) -> StoreResult<Option<ClaimHead>> {
    let mut next_priority = connection
        .prepare_cached(
            "SELECT priority FROM jobs INDEXED BY jobs_claim WHERE queue = ?1 AND state = 'queued' AND priority < ?2 \
             ORDER BY priority DESC LIMIT 1",
        )
        .sql()?;
    let mut oldest = connection
        .prepare_cached(
            "SELECT run_at, id FROM jobs INDEXED BY jobs_claim WHERE queue = ?1 AND state = 'queued' AND priority = ?2 \
             ORDER BY run_at, id LIMIT 1",
        )
        .sql()?;
    let mut below = i64::MAX;
    while let Some(priority) =
        next_priority.query_row(params![queue, below], |row| row.get::<_, i64>(0)).optional().sql()?
    {
        let (run_at, id) = oldest
            .query_row(params![queue, priority], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))
            .sql()?;
        let head = ClaimHead { priority, run_at, id };
        if stop(&head) {
            return Ok(Some(head));
        }
        below = priority;
    }
    Ok(None)
}

/// The next due job of `queue`, found in time independent of how many jobs wait: within one priority the
/// oldest job is due or none is (a plain `ORDER BY ... LIMIT 1` with `run_at <= now` would instead walk every
/// delayed job).
fn due_head(connection: &Connection, queue: &str, now: i64) -> StoreResult<Option<ClaimHead>> {
    priority_heads(connection, queue, |head| head.run_at <= now)
}

/// The oldest `run_at` among `queue`'s waiting jobs, due or not, from the claim index (no scan).
fn oldest_queued_run_at(connection: &Connection, queue: &str) -> StoreResult<Option<i64>> {
    let mut oldest: Option<i64> = None;
    priority_heads(connection, queue, |head| {
        oldest = Some(oldest.map_or(head.run_at, |oldest| oldest.min(head.run_at)));
        false
    })?;
    Ok(oldest)
}

/// A claim's parameters, as the writer needs them.
struct ClaimRequest {
    queues: Vec<String>,
    worker: String,
    now: i64,
    lease_until: i64,
}

impl ClaimRequest {
    fn new(queues: &[String], worker: &WorkerId, now: DateTime<Utc>, lease: Duration) -> Self {
        Self {
            queues: queues.to_vec(),
            worker: worker.as_str().to_owned(),
            now: micros(now),
            lease_until: micros(clock::add(now, lease)),
        }
    }

    /// Claims the next due job (inside the writer's transaction).
    fn next(&self, connection: &Connection) -> StoreResult<Option<Job>> {
        let mut best: Option<ClaimHead> = None;
        for queue in &self.queues {
            if let Some(head) = due_head(connection, queue, self.now)?
                && best.as_ref().is_none_or(|best| head.precedes(best))
            {
                best = Some(head);
            }
        }
        let Some(head) = best else { return Ok(None) };
        connection
            .prepare_cached(concat!(
                "UPDATE jobs SET state = 'running', attempt = attempt + 1, started_at = ?2, lease_holder = ?3, \
                 lease_until = ?4 WHERE id = ?1 RETURNING ",
                job_columns!()
            ))
            .sql()?
            .query_row(params![head.id, self.now, self.worker, self.lease_until], rows::job)
            .optional()
            .sql()
    }

    /// Claims up to `max` due jobs in claim order (inside the writer's transaction).
    ///
    /// With one queue, single claims would take every due job of the highest waiting priority in
    /// `(run_at, id)` order before any job of a lower one; so the due jobs of that priority are claimed
    /// together, by one statement, and sorted back into that order. Across several queues the heads are
    /// compared claim by claim.
    fn next_many(&self, connection: &Connection, max: usize) -> StoreResult<Vec<Job>> {
        let mut claimed = Vec::new();
        let [queue] = self.queues.as_slice() else {
            while claimed.len() < max {
                let Some(job) = self.next(connection)? else { break };
                claimed.push(job);
            }
            return Ok(claimed);
        };
        while claimed.len() < max {
            let Some(head) = due_head(connection, queue, self.now)? else { break };
            let wanted = i64::try_from(max - claimed.len()).unwrap_or(i64::MAX);
            // `OR FAIL`: a statement changing several rows that could abort half-way makes SQLite keep a
            // statement journal of every page it touches, to undo its own part. A claim breaks no constraint,
            // and if it failed anyway the writer undoes the whole write (its savepoint, or the batch).
            let mut jobs = connection
                .prepare_cached(concat!(
                    "UPDATE OR FAIL jobs SET state = 'running', attempt = attempt + 1, started_at = ?3, lease_holder = ?4, \
                     lease_until = ?5 WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_claim WHERE queue = ?1 AND \
                     state = 'queued' AND priority = ?2 AND run_at <= ?3 ORDER BY run_at, id LIMIT ?6) RETURNING ",
                    job_columns!()
                ))
                .sql()?
                .query_map(params![queue, head.priority, self.now, self.worker, self.lease_until, wanted], rows::job)
                .sql()?
                .collect::<rusqlite::Result<Vec<Job>>>()
                .sql()?;
            if jobs.is_empty() {
                break;
            }
            // `RETURNING` gives no order.
            jobs.sort_unstable_by_key(|job| (job.run_at, job.id));
            claimed.append(&mut jobs);
        }
        Ok(claimed)
    }
}

/// Moves the claimed `jobs` from `queued` to `running` in `counts`.
fn count_claimed(jobs: &[Job], counts: &mut CountChanges) {
    for job in jobs {
        counts.moved(&job.queue, JobState::Queued, JobState::Running);
    }
}

/// Stores a completion's artifact beside its job (replacing an older one).
fn store_artifact(connection: &Connection, id: JobId, artifact: &Artifact) -> StoreResult<()> {
    connection
        .cached_execute(
            "INSERT OR REPLACE INTO job_artifacts (job_id, content_type, file_name, bytes) VALUES (?1, ?2, ?3, ?4)",
            params![id.as_bytes(), artifact.content_type, artifact.file_name, artifact.bytes],
        )
        .sql()?;
    Ok(())
}

impl SqliteStore {
    /// Applies `change` to the job running under `lease` and stores it.
    async fn settle(
        &self,
        lease: &Lease,
        change: impl FnOnce(&Connection, &mut Job) -> StoreResult<()> + Send + 'static,
    ) -> StoreResult<Job> {
        let lease = lease.clone();
        // Refused (lease lost, no such job) before anything is written.
        self.engine
            .write_counting_checked_first(move |connection, counts| {
                let mut job = leased(connection, &lease)?;
                change(connection, &mut job)?;
                save(connection, &job, JobState::Running, counts)?;
                Ok(job)
            })
            .await
    }
}

/// Records `tick` as the last fired tick of `schedule` if it is later than the one recorded (or none is),
/// inside the caller's transaction, and says whether it did.
fn record_cron_tick(connection: &Connection, schedule: &str, tick: DateTime<Utc>) -> StoreResult<bool> {
    let changed = connection
        .prepare_cached(
            "INSERT INTO cron_ticks (schedule, last_tick) VALUES (?1, ?2) \
             ON CONFLICT (schedule) DO UPDATE SET last_tick = excluded.last_tick WHERE excluded.last_tick > last_tick",
        )
        .sql()?
        .execute(params![schedule, micros(tick)])
        .sql()?;
    Ok(changed == 1)
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue(&self, job: Job) -> StoreResult<Job> {
        // One job: its checks come before its one insert.
        self.engine
            .write_counting_checked_first(move |connection, counts| {
                Ok(insert_counted(connection, vec![job], counts)?.remove(0))
            })
            .await
    }

    async fn enqueue_many(&self, jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
        if jobs.len() <= 1 {
            return self
                .engine
                .write_counting_checked_first(move |connection, counts| insert_counted(connection, jobs, counts))
                .await;
        }
        // A later job may be refused after earlier ones were inserted: the savepoint undoes them.
        self.engine.write_counting(move |connection, counts| insert_counted(connection, jobs, counts)).await
    }

    async fn enqueue_cron_tick(&self, schedule: &str, tick: DateTime<Utc>, job: Job) -> StoreResult<Option<Job>> {
        let schedule = schedule.to_owned();
        self.engine
            .write(move |connection| {
                if !record_cron_tick(connection, &schedule, tick)? {
                    return Ok(None);
                }
                // A failed insert fails the write, and the tick's record goes with it.
                Ok(insert_jobs(connection, vec![job])?.pop())
            })
            .await
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.engine.read(move |connection| load_job(connection, id)).await
    }

    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        let after = decisions::start_after(page)?;
        let filter = filter.clone();
        let limit = page.limit;
        self.engine
            .read(move |connection| {
                // Only the filters given become conditions, so SQLite can use the index that fits them (an
                // `?n IS NULL OR ...` condition would hide every index and scan the table).
                let mut conditions = Vec::new();
                let mut values: Vec<SqlValue> = Vec::new();
                let mut condition = |column: &str, value: SqlValue| {
                    values.push(value);
                    conditions.push(format!("{column} ?{}", values.len()));
                };
                if let Some(after) = after {
                    condition("id >", SqlValue::Blob(after.as_bytes().to_vec()));
                }
                if let Some(queue) = filter.queue {
                    condition("queue =", SqlValue::Text(queue));
                }
                if let Some(state) = filter.state {
                    condition("state =", SqlValue::Text(state.as_str().to_owned()));
                }
                if let Some(kind) = filter.kind {
                    condition("kind =", SqlValue::Text(kind));
                }
                if let Some(user) = filter.created_by {
                    condition("created_by =", SqlValue::Blob(user.as_bytes().to_vec()));
                }
                let filters =
                    if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
                values.push(SqlValue::Integer(i64::try_from(limit + 1).unwrap_or(i64::MAX)));
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs {filters} ORDER BY id LIMIT ?{}", values.len());
                let items = connection
                    .prepare_cached(&sql)
                    .sql()?
                    .query_map(params_from_iter(values), rows::job)
                    .sql()?
                    .collect::<rusqlite::Result<Vec<Job>>>()
                    .sql()?;
                Ok(Page::from_overfetch(items, limit, |job| job.id.into()))
            })
            .await
    }

    async fn claim(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Option<Job>> {
        if queues.is_empty() {
            return Ok(None);
        }
        let claim = ClaimRequest::new(queues, worker, now, lease);
        // A claim refuses nothing; it only fails on an I/O error.
        self.engine
            .write_counting_checked_first(move |connection, counts| {
                let job = claim.next(connection)?;
                count_claimed(job.as_slice(), counts);
                Ok(job)
            })
            .await
    }

    async fn claim_many(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<Job>> {
        if queues.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let claim = ClaimRequest::new(queues, worker, now, lease);
        // Inside the writer's transaction, so the batch commits (and is durable) once; it refuses nothing.
        self.engine
            .write_counting_checked_first(move |connection, counts| {
                let jobs = claim.next_many(connection, max)?;
                count_claimed(&jobs, counts);
                Ok(jobs)
            })
            .await
    }

    async fn heartbeat(&self, lease: &Lease, now: DateTime<Utc>, extend: Duration) -> StoreResult<Job> {
        self.settle(lease, move |_, job| {
            job.lease_until = Some(clock::add(now, extend));
            Ok(())
        })
        .await
    }

    async fn report_progress(&self, lease: &Lease, progress: Progress, _now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, move |_, job| {
            job.progress = progress;
            Ok(())
        })
        .await
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: Value,
        artifact: Option<Artifact>,
        now: DateTime<Utc>,
    ) -> StoreResult<Job> {
        self.settle(lease, move |connection, job| {
            job.succeed(result, artifact.as_ref().map(Artifact::info), now);
            if let Some(artifact) = &artifact {
                store_artifact(connection, job.id, artifact)?;
            }
            Ok(())
        })
        .await
    }

    async fn fail(&self, lease: &Lease, failure: JobFailure, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, move |_, job| {
            job.fail_attempt(failure, now);
            Ok(())
        })
        .await
    }

    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, move |_, job| {
            job.release(now);
            Ok(())
        })
        .await
    }

    async fn settle_many(
        &self,
        settlements: Vec<Settlement>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        // Refusals are per settlement and come before its writes; any other error is an I/O failure.
        self.engine
            .write_counting_checked_first(move |connection, counts| {
                let mut outcomes = Vec::with_capacity(settlements.len());
                for settlement in settlements {
                    // A lost lease or a missing job refuses this settlement alone (it wrote nothing yet); any
                    // other error fails the write, and the writer rolls back what it wrote.
                    let mut job = match leased(connection, settlement.lease()) {
                        Ok(job) => job,
                        Err(refused @ (StoreError::Conflict(_) | StoreError::NotFound)) => {
                            outcomes.push(Err(refused));
                            continue;
                        }
                        Err(error) => return Err(error),
                    };
                    settlement.apply(&mut job, now);
                    if let Some(artifact) = settlement.artifact() {
                        store_artifact(connection, job.id, artifact)?;
                    }
                    save(connection, &job, JobState::Running, counts)?;
                    if settlement.discards_payload(&job) {
                        discard_payload(connection, job.id)?;
                    }
                    for record in settlement.deliveries() {
                        crate::notifications::record_delivery(connection, record, now)?;
                    }
                    outcomes.push(Ok(job));
                }
                Ok(outcomes)
            })
            .await
    }

    /// In process memory ([`LocalRateBuckets`]): one process owns the database, so every caller is in it (a bucket that starts full again after a restart at most allows one burst early).
    async fn take_queue_starts(
        &self,
        queue: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
        want: u32,
    ) -> StoreResult<QueueStarts> {
        Ok(self.rate_buckets.take(queue, limit, now, want))
    }

    async fn return_queue_starts(
        &self,
        queue: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
        count: u32,
    ) -> StoreResult<()> {
        self.rate_buckets.give_back(queue, limit, now, count);
        Ok(())
    }

    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        self.engine
            .write_checked_first(move |connection| {
                let mut job = load_job(connection, id)?.ok_or(StoreError::NotFound)?;
                let from = job.state;
                match job.state {
                    JobState::Queued => job.finish(JobState::Cancelled, now),
                    JobState::Running => job.cancel_requested = true,
                    JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                        return Err(Conflict::InvalidState.into());
                    }
                }
                let mut counts = CountChanges::default();
                save(connection, &job, from, &mut counts)?;
                counts.apply(connection)?;
                Ok(job)
            })
            .await
    }

    async fn acknowledge_cancel(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, move |_, job| {
            job.finish(JobState::Cancelled, now);
            Ok(())
        })
        .await
    }

    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        self.engine
            .write_checked_first(move |connection| {
                let mut job = load_job(connection, id)?.ok_or(StoreError::NotFound)?;
                decisions::check_retry(&job, |key| Ok::<_, StoreError>(live_with_key(connection, key)?.is_some()))??;
                let from = job.state;
                job.restart(now);
                let mut counts = CountChanges::default();
                save(connection, &job, from, &mut counts)?;
                counts.apply(connection)?;
                Ok(job)
            })
            .await
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        self.engine
            .write_checked_first(move |connection| {
                let expired = connection
                    .prepare_cached(concat!(
                        "SELECT ",
                        job_columns!(),
                        " FROM jobs WHERE state = 'running' AND lease_until < ?1 ORDER BY id"
                    ))
                    .sql()?
                    .query_map([micros(now)], rows::job)
                    .sql()?
                    .collect::<rusqlite::Result<Vec<Job>>>()
                    .sql()?;
                let mut rescued = Vec::with_capacity(expired.len());
                let mut counts = CountChanges::default();
                for mut job in expired {
                    job.rescue(now);
                    save(connection, &job, JobState::Running, &mut counts)?;
                    rescued.push(job);
                }
                counts.apply(connection)?;
                Ok(rescued)
            })
            .await
    }

    async fn queue_counts(&self) -> StoreResult<Vec<QueueCounts>> {
        self.engine
            .read(|connection| {
                let mut counts: BTreeMap<String, QueueCounts> = BTreeMap::new();
                let mut statement =
                    connection.prepare_cached("SELECT queue, state, count FROM job_counts WHERE count > 0").sql()?;
                let rows = statement
                    .query_map([], |row| {
                        Ok((row.get::<_, String>(0)?, rows::parsed::<JobState>(row, 1)?, row.get::<_, i64>(2)?))
                    })
                    .sql()?;
                for row in rows {
                    let (queue, state, count) = row.sql()?;
                    let entry =
                        counts.entry(queue.clone()).or_insert_with(|| QueueCounts { queue, ..QueueCounts::default() });
                    *entry.get_mut(state) = u64::try_from(count).unwrap_or_default();
                }
                for entry in counts.values_mut().filter(|entry| entry.queued > 0) {
                    let run_at = oldest_queued_run_at(connection, &entry.queue)?;
                    entry.oldest_queued_run_at = run_at.and_then(DateTime::from_timestamp_micros);
                }
                Ok(counts.into_values().collect())
            })
            .await
    }

    async fn get_artifact(&self, id: JobId) -> StoreResult<Option<Artifact>> {
        self.engine
            .read(move |connection| {
                connection
                    .cached_row(
                        "SELECT content_type, file_name, bytes FROM job_artifacts WHERE job_id = ?1",
                        [id.as_bytes()],
                        |row| Ok(Artifact { content_type: row.get(0)?, file_name: row.get(1)?, bytes: row.get(2)? }),
                    )
                    .optional()
                    .sql()
            })
            .await
    }

    async fn discard_job_payload(&self, id: JobId) -> StoreResult<()> {
        self.engine
            .write(move |connection| {
                let job = load_job(connection, id)?.ok_or(StoreError::NotFound)?;
                if !job.state.is_finished() {
                    return Err(Conflict::InvalidState.into());
                }
                discard_payload(connection, id)
            })
            .await
    }

    async fn prune_jobs(&self, states: &[JobState], finished_before: DateTime<Utc>) -> StoreResult<u64> {
        let finished_before = micros(finished_before);
        let mut pruned = 0;
        for state in states.iter().copied().filter(|state| state.is_finished()) {
            // In slices, each its own write: a retention pass over a million jobs must not hold the writer
            // (and every caller waiting on it) for seconds.
            loop {
                let deleted = self
                    .engine
                    .write(move |connection| {
                        let queues = connection
                            .prepare_cached(
                                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = ?1 AND finished_at < ?2 \
                                 LIMIT ?3) RETURNING queue",
                            )
                            .sql()?
                            .query_map(params![state.as_str(), finished_before, PRUNE_SLICE], |row| row.get::<_, String>(0))
                            .sql()?
                            .collect::<rusqlite::Result<Vec<String>>>()
                            .sql()?;
                        let mut counts = CountChanges::default();
                        for queue in &queues {
                            counts.add(queue, state, -1);
                        }
                        counts.apply(connection)?;
                        Ok(queues.len() as u64)
                    })
                    .await?;
                pruned += deleted;
                if deleted < PRUNE_SLICE as u64 {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}
