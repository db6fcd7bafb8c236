//! Jobs.
//!
//! - **Enqueue** inserts a whole batch in one statement (`unnest` over column arrays, `ON CONFLICT DO
//!   NOTHING`): the live unique-key index decides which keyed jobs are new, also against concurrent
//!   enqueues on other instances; the rest are answered with the live job (or refused as duplicates).
//! - **Claims** lock due rows in claim order with `FOR UPDATE SKIP LOCKED` over the partial index of queued
//!   jobs and mark them running in the same statement.
//! - **Transitions** read the job, apply the model's rule, and write the row back only if its revision is
//!   still the one read (else read again): one round trip each way, no transaction held open in between.
//! - **Settling a batch** locks and reads all its jobs in one statement (the transaction's `BEGIN` sent with
//!   it), applies each settlement under its own lease, and writes every changed job back in one statement
//!   over `unnest` arrays, sent with the `COMMIT`: two round trips whatever the batch's size.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use techhub_core::clock;
use techhub_core::model::{
    Artifact, Job, JobFailure, JobFilter, JobId, JobState, Lease, Notification, NotificationId, Page, PageRequest,
    Progress, QueueCounts, QueueStarts, RateBucket, RateLimit, Settlement, WorkerId,
};
use techhub_core::storage::{Conflict, JobStore, StoreError, StoreResult, decisions};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::PostgresStore;
use crate::db::{Db, KEYED_PLANS, Pipelined, execute, query, query_one, query_opt};
use crate::notifications::{LOCK_NOTIFICATIONS, NotificationUpdate, UPDATE_NOTIFICATIONS};
use crate::rows::{self, JOB_COLUMNS, big, to_json};

/// Folds the job count rows of server sessions that ended into session 0's, so they do not pile up as
/// connections come and go (in (queue, state) order, as the triggers lock them). A session's own rows are
/// written only by that session while it lives, and sums move whole: a count is never lost or doubled.
pub(crate) const FOLD_COUNTS: &str = "WITH gone AS (DELETE FROM job_counts WHERE backend <> 0 \
     AND backend NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL) RETURNING queue, state, count) \
     INSERT INTO job_counts (queue, state, backend, count) \
     SELECT queue, state, 0, sum(count) FROM gone GROUP BY queue, state ORDER BY queue, state \
     ON CONFLICT (queue, state, backend) DO UPDATE SET count = job_counts.count + excluded.count";

/// How many finished jobs one pruning statement deletes.
const PRUNE_SLICE: i64 = 2_000;

/// Claims of up to this many jobs from one queue have their limit written into the statement (see
/// `claim_up_to`): each connection prepares at most this many such claim statements.
const LITERAL_CLAIM_LIMITS: usize = 64;

async fn load<C: GenericClient + Sync>(client: &C, id: JobId, lock: bool) -> StoreResult<Option<(Job, i64)>> {
    let sql = if lock {
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")
    };
    query_opt(client, &sql, &[id.as_uuid()]).await?.as_ref().map(rows::job_at_revision).transpose()
}

async fn live_with_key<C: GenericClient + Sync>(client: &C, key: &str) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE unique_key = $1 AND state IN ('queued', 'running')");
    query_opt(client, &sql, &[&key]).await?.as_ref().map(rows::job).transpose()
}

/// Stores jobs as [`JobStore::enqueue_many`] says; the caller's transaction makes the batch atomic. Returns
/// the stored (or existing live) job for each, in order.
pub(crate) async fn insert_jobs<C: GenericClient + Sync>(client: &C, jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut inserted = insert_rows(client, &jobs, true).await?;
    let mut stored = Vec::with_capacity(jobs.len());
    for job in jobs {
        // Taken out once used: a batch that names one id twice inserted it once, and the second is a duplicate.
        if inserted.remove(job.id.as_uuid()) {
            stored.push(job);
            continue;
        }
        // Not inserted: its key is live, or its id exists. The key is asked first. A key whose holder finished
        // between the insert and this read is free again: insert once more.
        loop {
            if let Some(key) = &job.unique_key
                && let Some(existing) = live_with_key(client, key).await?
            {
                stored.push(existing);
                break;
            }
            if load(client, job.id, false).await?.is_some() {
                return Err(Conflict::Duplicate.into());
            }
            if insert_rows(client, std::slice::from_ref(&job), true).await?.contains(job.id.as_uuid()) {
                stored.push(job);
                break;
            }
        }
    }
    Ok(stored)
}

/// Inserts the rows in one statement and returns the ids inserted. With `skip_conflicts`, rows that conflict
/// (a live key, an existing id) are skipped; without, any conflict fails the statement ([`Conflict::Duplicate`])
/// and nothing is inserted.
pub(crate) async fn insert_rows<C: GenericClient + Sync>(
    client: &C,
    jobs: &[Job],
    skip_conflicts: bool,
) -> StoreResult<HashSet<Uuid>> {
    let ids: Vec<Uuid> = jobs.iter().map(|job| *job.id.as_uuid()).collect();
    let queues: Vec<&str> = jobs.iter().map(|job| job.queue.as_str()).collect();
    let kinds: Vec<&str> = jobs.iter().map(|job| job.kind.as_str()).collect();
    let payloads: Vec<String> = jobs.iter().map(|job| to_json(&job.payload)).collect::<StoreResult<_>>()?;
    let states: Vec<&str> = jobs.iter().map(|job| job.state.as_str()).collect();
    let priorities: Vec<i32> = jobs.iter().map(|job| job.priority).collect();
    let attempts: Vec<i32> = jobs.iter().map(|job| small(job.attempt)).collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|job| small(job.max_attempts)).collect();
    let run_at: Vec<DateTime<Utc>> = jobs.iter().map(|job| job.run_at).collect();
    let created_at: Vec<DateTime<Utc>> = jobs.iter().map(|job| job.created_at).collect();
    let started_at: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|job| job.started_at).collect();
    let finished_at: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|job| job.finished_at).collect();
    let percents: Vec<i16> = jobs.iter().map(|job| i16::from(job.progress.percent)).collect();
    let messages: Vec<Option<&str>> = jobs.iter().map(|job| job.progress.message.as_deref()).collect();
    let errors: Vec<Option<&str>> = jobs.iter().map(|job| job.last_error.as_deref()).collect();
    let results: Vec<Option<String>> =
        jobs.iter().map(|job| job.result.as_ref().map(to_json).transpose()).collect::<StoreResult<_>>()?;
    let content_types: Vec<Option<&str>> =
        jobs.iter().map(|job| job.artifact.as_ref().map(|info| info.content_type.as_str())).collect();
    let file_names: Vec<Option<&str>> =
        jobs.iter().map(|job| job.artifact.as_ref().and_then(|info| info.file_name.as_deref())).collect();
    let sizes: Vec<Option<i64>> = jobs.iter().map(|job| job.artifact.as_ref().map(|info| big(info.size))).collect();
    let created_by: Vec<Option<Uuid>> = jobs.iter().map(|job| job.created_by.map(|user| *user.as_uuid())).collect();
    let keys: Vec<Option<&str>> = jobs.iter().map(|job| job.unique_key.as_deref()).collect();
    let holders: Vec<Option<&str>> = jobs.iter().map(|job| job.lease_holder.as_ref().map(WorkerId::as_str)).collect();
    let lease_until: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|job| job.lease_until).collect();
    let cancels: Vec<bool> = jobs.iter().map(|job| job.cancel_requested).collect();
    let params: [&(dyn ToSql + Sync); 24] = [
        &ids,
        &queues,
        &kinds,
        &payloads,
        &states,
        &priorities,
        &attempts,
        &max_attempts,
        &run_at,
        &created_at,
        &started_at,
        &finished_at,
        &percents,
        &messages,
        &errors,
        &results,
        &content_types,
        &file_names,
        &sizes,
        &created_by,
        &keys,
        &holders,
        &lease_until,
        &cancels,
    ];
    let columns = JOB_COLUMNS.trim_end_matches(", revision");
    let sql = format!(
        "INSERT INTO jobs ({columns}) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::integer[], $7::integer[], $8::integer[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], \
         $12::timestamptz[], $13::smallint[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
         $19::bigint[], $20::uuid[], $21::text[], $22::text[], $23::timestamptz[], $24::boolean[]) {} RETURNING id",
        if skip_conflicts { "ON CONFLICT DO NOTHING" } else { "" }
    );
    let inserted = query(client, &sql, &params).await?;
    inserted.iter().map(|row| rows::get::<Uuid>(row, 0)).collect()
}

fn small(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Writes back every column a transition can change, if the row is still at `revision` (`None`: the caller
/// holds the row's lock). Returns whether it was written.
async fn save<C: GenericClient + Sync>(client: &C, job: &Job, revision: Option<i64>) -> StoreResult<bool> {
    let info = job.artifact.as_ref();
    let written = execute(
        client,
        "UPDATE jobs SET state = $3, attempt = $4, run_at = $5, started_at = $6, finished_at = $7, \
         progress_percent = $8, progress_message = $9, last_error = $10, result = $11, artifact_content_type = $12, \
         artifact_file_name = $13, artifact_size = $14, lease_holder = $15, lease_until = $16, cancel_requested = $17, \
         revision = revision + 1 WHERE id = $1 AND ($2::bigint IS NULL OR revision = $2)",
        &[
            job.id.as_uuid(),
            &revision,
            &job.state.as_str(),
            &small(job.attempt),
            &job.run_at,
            &job.started_at,
            &job.finished_at,
            &i16::from(job.progress.percent),
            &job.progress.message,
            &job.last_error,
            &job.result.as_ref().map(to_json).transpose()?,
            &info.map(|info| info.content_type.as_str()),
            &info.and_then(|info| info.file_name.as_deref()),
            &info.map(|info| big(info.size)),
            &job.lease_holder.as_ref().map(WorkerId::as_str),
            &job.lease_until,
            &job.cancel_requested,
        ],
    )
    .await?;
    Ok(written == 1)
}

/// Stores a completion's artifact beside its job (replacing an older one).
const STORE_ARTIFACT: &str = "INSERT INTO job_artifacts (job_id, content_type, file_name, bytes) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (job_id) DO UPDATE SET content_type = excluded.content_type, file_name = excluded.file_name, \
     bytes = excluded.bytes";

/// The parameters of [`STORE_ARTIFACT`] for one artifact.
struct ArtifactRow<'a> {
    job_id: Uuid,
    artifact: &'a Artifact,
}

impl<'a> ArtifactRow<'a> {
    fn of(job_id: JobId, artifact: &'a Artifact) -> Self {
        Self { job_id: *job_id.as_uuid(), artifact }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.job_id, &self.artifact.content_type, &self.artifact.file_name, &self.artifact.bytes]
    }
}

/// Writes back every column a transition can change, for many jobs in one statement (the caller holds
/// their row locks).
const UPDATE_JOBS: &str = "UPDATE jobs SET state = u.state, attempt = u.attempt, run_at = u.run_at, \
     started_at = u.started_at, finished_at = u.finished_at, progress_percent = u.percent, \
     progress_message = u.message, last_error = u.last_error, result = u.result, \
     artifact_content_type = u.content_type, artifact_file_name = u.file_name, artifact_size = u.size, \
     lease_holder = u.holder, lease_until = u.lease_until, cancel_requested = u.cancel, \
     revision = jobs.revision + 1 \
     FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], \
     $7::smallint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[], \
     $15::timestamptz[], $16::boolean[]) AS u (id, state, attempt, run_at, started_at, finished_at, percent, \
     message, last_error, result, content_type, file_name, size, holder, lease_until, cancel) \
     WHERE jobs.id = u.id";

/// The columns of [`UPDATE_JOBS`] for some jobs, as arrays.
struct JobUpdate<'a> {
    ids: Vec<Uuid>,
    states: Vec<&'static str>,
    attempts: Vec<i32>,
    run_at: Vec<DateTime<Utc>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    percents: Vec<i16>,
    messages: Vec<Option<&'a str>>,
    errors: Vec<Option<&'a str>>,
    results: Vec<Option<String>>,
    content_types: Vec<Option<&'a str>>,
    file_names: Vec<Option<&'a str>>,
    sizes: Vec<Option<i64>>,
    holders: Vec<Option<&'a str>>,
    lease_until: Vec<Option<DateTime<Utc>>>,
    cancels: Vec<bool>,
}

impl<'a> JobUpdate<'a> {
    fn of(jobs: &[&'a Job]) -> StoreResult<Self> {
        Ok(Self {
            ids: jobs.iter().map(|job| *job.id.as_uuid()).collect(),
            states: jobs.iter().map(|job| job.state.as_str()).collect(),
            attempts: jobs.iter().map(|job| small(job.attempt)).collect(),
            run_at: jobs.iter().map(|job| job.run_at).collect(),
            started_at: jobs.iter().map(|job| job.started_at).collect(),
            finished_at: jobs.iter().map(|job| job.finished_at).collect(),
            percents: jobs.iter().map(|job| i16::from(job.progress.percent)).collect(),
            messages: jobs.iter().map(|job| job.progress.message.as_deref()).collect(),
            errors: jobs.iter().map(|job| job.last_error.as_deref()).collect(),
            results: jobs.iter().map(|job| job.result.as_ref().map(to_json).transpose()).collect::<StoreResult<_>>()?,
            content_types: jobs
                .iter()
                .map(|job| job.artifact.as_ref().map(|info| info.content_type.as_str()))
                .collect(),
            file_names: jobs
                .iter()
                .map(|job| job.artifact.as_ref().and_then(|info| info.file_name.as_deref()))
                .collect(),
            sizes: jobs.iter().map(|job| job.artifact.as_ref().map(|info| big(info.size))).collect(),
            holders: jobs.iter().map(|job| job.lease_holder.as_ref().map(WorkerId::as_str)).collect(),
            lease_until: jobs.iter().map(|job| job.lease_until).collect(),
            cancels: jobs.iter().map(|job| job.cancel_requested).collect(),
        })
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.ids,
            &self.states,
            &self.attempts,
            &self.run_at,
            &self.started_at,
            &self.finished_at,
            &self.percents,
            &self.messages,
            &self.errors,
            &self.results,
            &self.content_types,
            &self.file_names,
            &self.sizes,
            &self.holders,
            &self.lease_until,
            &self.cancels,
        ]
    }
}

/// The claim-order key of a job: highest priority, then oldest `run_at`, then lowest id.
fn claim_order(job: &Job) -> (std::cmp::Reverse<i32>, DateTime<Utc>, JobId) {
    (std::cmp::Reverse(job.priority), job.run_at, job.id)
}

impl PostgresStore {
    /// Applies `change` to the job running under `lease` and stores it (see the module docs).
    async fn transition(&self, lease: &Lease, change: impl Fn(&mut Job)) -> StoreResult<Job> {
        let client = self.client().await?;
        loop {
            let (mut job, revision) = load(&client, lease.job_id, false).await?.ok_or(StoreError::NotFound)?;
            if !job.is_leased_by(lease) {
                return Err(Conflict::LeaseLost.into());
            }
            change(&mut job);
            if save(&client, &job, Some(revision)).await? {
                return Ok(job);
            }
        }
    }

    /// Applies `change` to job `id` (whatever its state: `change` decides) and stores it; with `retry_check`,
    /// only if [`JobStore::retry`]'s rules allow it.
    async fn change_job(
        &self,
        id: JobId,
        change: impl Fn(&mut Job) -> StoreResult<()>,
        retry_check: bool,
    ) -> StoreResult<Job> {
        let client = self.client().await?;
        loop {
            let (mut job, revision) = load(&client, id, false).await?.ok_or(StoreError::NotFound)?;
            if retry_check {
                let held = match &job.unique_key {
                    Some(key) => live_with_key(&client, key).await?.is_some_and(|live| live.id != job.id),
                    None => false,
                };
                decisions::check_retry(&job, |_| Ok::<_, StoreError>(held))??;
            }
            change(&mut job)?;
            if save(&client, &job, Some(revision)).await? {
                return Ok(job);
            }
        }
    }

    /// Applies `change` to `queue`'s token bucket with its row locked, so that every instance takes its turn
    /// on the one bucket: the upsert creates a full bucket for a queue never seen, and either way locks the
    /// row and answers what it holds.
    async fn change_bucket<T>(
        &self,
        queue: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut RateBucket) -> T,
    ) -> StoreResult<T> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        let full = RateBucket::full(&limit, now);
        let row = query_one(
            &transaction,
            "INSERT INTO queue_rate_buckets (queue, tokens, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (queue) DO UPDATE SET queue = excluded.queue RETURNING tokens, updated_at",
            &[&queue, &full.tokens, &full.updated_at],
        )
        .await?;
        let mut bucket = RateBucket { tokens: rows::get(&row, 0)?, updated_at: rows::get(&row, 1)? };
        let answer = change(&mut bucket);
        execute(
            &transaction,
            "UPDATE queue_rate_buckets SET tokens = $2, updated_at = $3 WHERE queue = $1",
            &[&queue, &bucket.tokens, &bucket.updated_at],
        )
        .await?;
        transaction.commit().await.db()?;
        Ok(answer)
    }

    /// Wakes the other instances' workers for the queued jobs among `jobs`.
    pub(crate) fn announce(&self, jobs: &[Job]) {
        let mut queues: Vec<&str> =
            jobs.iter().filter(|job| job.state == JobState::Queued).map(|job| job.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        self.jobs_due(queues);
    }

    async fn claim_up_to(
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
        let client = self.client().await?;
        let lease_until = clock::add(now, lease);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        // One queue (what a worker asks): the claim index yields its jobs in claim order, so the scan stops
        // after `max` due rows. Several queues: the due rows of all of them are ordered together.
        let (picked, first): (&str, &(dyn ToSql + Sync)) =
            if let [queue] = queues { ("queue = $1", queue) } else { ("queue = ANY($1)", &queues) };
        // One queue: the limit is written into the statement (one prepared statement per limit) up to
        // `LITERAL_CLAIM_LIMITS`, and the server then plans it once, for good: a walk of the claim index that
        // stops after `max` rows is the cheapest plan at any table size. With `LIMIT $5` its generic plan is
        // costed for a tenth of the queued rows, which makes a plan for the value at hand always look
        // cheaper, so most claims were planned again (planning cost as much as the claim itself). Several
        // queues keep `$5`: their rows are sorted across queues, and a plan kept from the statistics of an
        // empty table could sort them all.
        let literal = queues.len() == 1 && max <= LITERAL_CLAIM_LIMITS;
        let sql = format!(
            "WITH picked AS (SELECT id FROM jobs WHERE state = 'queued' AND {picked} AND run_at <= $2 \
             ORDER BY priority DESC, run_at, id LIMIT {} FOR UPDATE SKIP LOCKED) \
             UPDATE jobs SET state = 'running', attempt = attempt + 1, started_at = $2, lease_holder = $3, \
             lease_until = $4, revision = revision + 1 FROM picked WHERE jobs.id = picked.id RETURNING {}",
            if literal { max.to_string() } else { "$5".to_owned() },
            JOB_COLUMNS.split(", ").map(|column| format!("jobs.{column}")).collect::<Vec<_>>().join(", ")
        );
        let holder = worker.as_str();
        let params: [&(dyn ToSql + Sync); 5] = [first, &now, &holder, &lease_until, &limit];
        let claimed = query(&client, &sql, if literal { &params[..4] } else { &params }).await?;
        let mut jobs = rows::all(&claimed, rows::job)?;
        jobs.sort_by_key(claim_order);
        Ok(jobs)
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    /// Committed together with the other enqueues waiting at the same time (see the `enqueues` module).
    async fn enqueue(&self, job: Job) -> StoreResult<Job> {
        let job = self.enqueues.enqueue(job).await?;
        self.announce(std::slice::from_ref(&job));
        Ok(job)
    }

    /// One job (what `JobService::enqueue` asks for) is an `enqueue`, committed with the others waiting.
    async fn enqueue_many(&self, mut jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
        if jobs.len() == 1
            && let Some(job) = jobs.pop()
        {
            return Ok(vec![self.enqueue(job).await?]);
        }
        if jobs.iter().all(|job| job.unique_key.is_none()) {
            // Without keys only an id can conflict, and a conflicting id fails the one statement as a whole:
            // the batch is atomic without a transaction around it (one round trip).
            let client = self.client().await?;
            let inserted = insert_rows(&client, &jobs, false).await?;
            debug_assert_eq!(inserted.len(), jobs.len());
            self.announce(&jobs);
            return Ok(jobs);
        }
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        let stored = insert_jobs(&transaction, jobs).await?;
        transaction.commit().await.db()?;
        self.announce(&stored);
        Ok(stored)
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        Ok(load(&self.client().await?, id, false).await?.map(|(job, _)| job))
    }

    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        let after = decisions::start_after(page)?;
        // Only the filters given become conditions, so the planner can use the index that fits them.
        let mut conditions = Vec::new();
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut condition = |column: &str, value: Box<dyn ToSql + Sync + Send>| {
            values.push(value);
            conditions.push(format!("{column} ${}", values.len()));
        };
        if let Some(after) = after {
            condition("id >", Box::new(after));
        }
        if let Some(queue) = &filter.queue {
            condition("queue =", Box::new(queue.clone()));
        }
        if let Some(state) = filter.state {
            condition("state =", Box::new(state.as_str()));
        }
        if let Some(kind) = &filter.kind {
            condition("kind =", Box::new(kind.clone()));
        }
        if let Some(user) = filter.created_by {
            condition("created_by =", Box::new(*user.as_uuid()));
        }
        let filters = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        values.push(Box::new(i64::try_from(page.limit + 1).unwrap_or(i64::MAX)));
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs {filters} ORDER BY id LIMIT ${}", values.len());
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|value| &**value as &(dyn ToSql + Sync)).collect();
        let found = query(&self.client().await?, &sql, &params).await?;
        Ok(Page::from_overfetch(rows::all(&found, rows::job)?, page.limit, |job| job.id.into()))
    }

    async fn claim(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Option<Job>> {
        Ok(self.claim_up_to(queues, worker, now, lease, 1).await?.pop())
    }

    async fn claim_many(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<Job>> {
        self.claim_up_to(queues, worker, now, lease, max).await
    }

    async fn heartbeat(&self, lease: &Lease, now: DateTime<Utc>, extend: Duration) -> StoreResult<Job> {
        self.transition(lease, |job| job.lease_until = Some(clock::add(now, extend))).await
    }

    async fn report_progress(&self, lease: &Lease, progress: Progress, _now: DateTime<Utc>) -> StoreResult<Job> {
        self.transition(lease, |job| job.progress = progress.clone()).await
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: Value,
        artifact: Option<Artifact>,
        now: DateTime<Utc>,
    ) -> StoreResult<Job> {
        let Some(artifact) = artifact else {
            return self.transition(lease, |job| job.succeed(result.clone(), None, now)).await;
        };
        // With a file: the job and its artifact in one transaction, the row locked while both are written.
        let settled = self
            .settle_many(
                vec![Settlement::Complete {
                    lease: lease.clone(),
                    result,
                    artifact: Some(artifact),
                    side_writes: Vec::new(),
                }],
                now,
            )
            .await?;
        settled.into_iter().next().unwrap_or(Err(StoreError::NotFound))
    }

    async fn fail(&self, lease: &Lease, failure: JobFailure, now: DateTime<Utc>) -> StoreResult<Job> {
        self.transition(lease, |job| job.fail_attempt(failure.clone(), now)).await
    }

    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        let job = self.transition(lease, |job| job.release(now)).await?;
        self.announce(std::slice::from_ref(&job));
        Ok(job)
    }

    async fn settle_many(
        &self,
        settlements: Vec<Settlement>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip locks and reads every job (`BEGIN` with it), one writes them all back and commits.
        let ids: Vec<Uuid> = settlements.iter().map(|settlement| *settlement.lease().job_id.as_uuid()).collect();
        // The notifications the batch records deliveries on are locked and read in the same round trip, after
        // the jobs (the order every settle takes its locks in).
        let mut notification_ids: Vec<Uuid> = Vec::new();
        for record in settlements.iter().flat_map(Settlement::deliveries) {
            if !notification_ids.contains(record.notification_id.as_uuid()) {
                notification_ids.push(*record.notification_id.as_uuid());
            }
        }
        let mut transaction = Pipelined::new(self.client().await?);
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE");
        let read = if notification_ids.is_empty() {
            transaction.query(&sql, &[&ids]).await.map(|rows| (rows, Vec::new()))
        } else {
            transaction.query_two((&sql, &[&ids]), (LOCK_NOTIFICATIONS, &[&notification_ids])).await
        };
        let (rows, notification_rows) = match read {
            Ok(read) => read,
            Err(error) => {
                transaction.rollback().await;
                return Err(error);
            }
        };
        let mut current: HashMap<JobId, Job> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let job = rows::job(row)?;
            current.insert(job.id, job);
        }
        let mut notifications: HashMap<NotificationId, Notification> = HashMap::with_capacity(notification_rows.len());
        for row in &notification_rows {
            let notification: Notification = rows::record(row, 0)?;
            notifications.insert(notification.id, notification);
        }
        let mut recorded: Vec<NotificationId> = Vec::new();
        let mut discarded: Vec<Uuid> = Vec::new();
        let mut outcomes = Vec::with_capacity(settlements.len());
        let mut changed: Vec<JobId> = Vec::with_capacity(settlements.len());
        for settlement in &settlements {
            let lease = settlement.lease();
            // A lost lease or a missing job refuses this settlement alone (nothing is written for it); any
            // other error fails the whole write, which rolls back. A job settled twice in one batch is seen
            // the second time as the first left it.
            let Some(job) = current.get_mut(&lease.job_id) else {
                outcomes.push(Err(StoreError::NotFound));
                continue;
            };
            if !job.is_leased_by(lease) {
                outcomes.push(Err(Conflict::LeaseLost.into()));
                continue;
            }
            settlement.apply(job, now);
            if settlement.discards_payload(job) {
                discarded.push(*job.id.as_uuid());
            }
            // A notification that does not exist was not read: its record is skipped.
            for record in settlement.deliveries() {
                if let Some(notification) = notifications.get_mut(&record.notification_id) {
                    notification.record_delivery(record, now);
                    if !recorded.contains(&notification.id) {
                        recorded.push(notification.id);
                    }
                }
            }
            outcomes.push(Ok(job.clone()));
            if !changed.contains(&job.id) {
                changed.push(job.id);
            }
        }
        let written: Vec<&Job> = changed.iter().filter_map(|id| current.get(id)).collect();
        let update = JobUpdate::of(&written)?;
        let artifacts: Vec<ArtifactRow<'_>> = settlements
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .filter_map(|(settlement, _)| {
                settlement.artifact().map(|artifact| ArtifactRow::of(settlement.lease().job_id, artifact))
            })
            .collect();
        let recorded: Vec<&Notification> = recorded.iter().filter_map(|id| notifications.get(id)).collect();
        let notification_update = NotificationUpdate::of(&recorded)?;
        let mut writes: Vec<(&str, &[&(dyn ToSql + Sync)])> = Vec::with_capacity(3 + artifacts.len());
        let params = update.params();
        if !written.is_empty() {
            writes.push((UPDATE_JOBS, &params));
        }
        let discard_params: [&(dyn ToSql + Sync); 1] = [&discarded];
        if !discarded.is_empty() {
            writes.push(("UPDATE jobs SET payload = 'null' WHERE id = ANY($1)", &discard_params));
        }
        let notification_params = notification_update.params();
        if !recorded.is_empty() {
            writes.push((UPDATE_NOTIFICATIONS, &notification_params));
        }
        let artifact_params: Vec<[&(dyn ToSql + Sync); 4]> = artifacts.iter().map(ArtifactRow::params).collect();
        for params in &artifact_params {
            writes.push((STORE_ARTIFACT, params));
        }
        transaction.commit_with(&writes).await?;
        let requeued: Vec<Job> = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok().cloned()).collect();
        self.announce(&requeued);
        Ok(outcomes)
    }

    /// In the database (`queue_rate_buckets`), each take a transaction holding the queue's row lock: the
    /// instances sharing the database draw on one bucket.
    async fn take_queue_starts(
        &self,
        queue: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
        want: u32,
    ) -> StoreResult<QueueStarts> {
        if want == 0 {
            return Ok(QueueStarts { granted: 0, next_in: None });
        }
        self.change_bucket(queue, limit, now, |bucket| bucket.take(&limit, now, want)).await
    }

    async fn return_queue_starts(
        &self,
        queue: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
        count: u32,
    ) -> StoreResult<()> {
        if count == 0 {
            return Ok(());
        }
        self.change_bucket(queue, limit, now, |bucket| bucket.give_back(&limit, now, count)).await
    }

    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        self.change_job(
            id,
            |job| {
                match job.state {
                    JobState::Queued => job.finish(JobState::Cancelled, now),
                    JobState::Running => job.cancel_requested = true,
                    JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                        return Err(Conflict::InvalidState.into());
                    }
                }
                Ok(())
            },
            false,
        )
        .await
    }

    async fn acknowledge_cancel(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.transition(lease, |job| job.finish(JobState::Cancelled, now)).await
    }

    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        let job = self
            .change_job(
                id,
                |job| {
                    job.restart(now);
                    Ok(())
                },
                true,
            )
            .await?;
        self.announce(std::slice::from_ref(&job));
        Ok(job)
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        // `UPDATE_JOBS` is also the settle's statement, which runs under these settings.
        transaction.batch_execute(KEYED_PLANS).await.db()?;
        // Rows another instance is rescuing right now are skipped: it rescues them.
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_until < $1 ORDER BY id \
             FOR UPDATE SKIP LOCKED"
        );
        let expired = query(&transaction, &sql, &[&now]).await?;
        let mut rescued = rows::all(&expired, rows::job)?;
        for job in &mut rescued {
            job.rescue(now);
        }
        if !rescued.is_empty() {
            let written: Vec<&Job> = rescued.iter().collect();
            execute(&transaction, UPDATE_JOBS, &JobUpdate::of(&written)?.params()).await?;
        }
        transaction.commit().await.db()?;
        self.announce(&rescued);
        Ok(rescued)
    }

    async fn queue_counts(&self) -> StoreResult<Vec<QueueCounts>> {
        // Read only: the sums of the sessions' rows (a few per queue and state), and the oldest due time of
        // each queue with queued jobs from the claim index.
        let counted = query(
            &self.client().await?,
            "SELECT counts.queue, counts.state, counts.total, CASE WHEN counts.state = 'queued' THEN \
             (SELECT min(run_at) FROM jobs WHERE jobs.queue = counts.queue AND jobs.state = 'queued') END \
             FROM (SELECT queue, state, sum(count)::bigint AS total FROM job_counts GROUP BY queue, state \
             HAVING sum(count) > 0) AS counts",
            &[],
        )
        .await?;
        let mut counts: BTreeMap<String, QueueCounts> = BTreeMap::new();
        for row in &counted {
            let queue: String = rows::get(row, 0)?;
            let state: JobState =
                rows::get::<&str>(row, 1)?.parse().map_err(|_| rows::corrupt("unknown job state in the counts"))?;
            let count: i64 = rows::get(row, 2)?;
            let entry = counts.entry(queue.clone()).or_insert_with(|| QueueCounts { queue, ..QueueCounts::default() });
            *entry.get_mut(state) = rows::unsigned(count);
            if state == JobState::Queued {
                entry.oldest_queued_run_at = rows::get(row, 3)?;
            }
        }
        Ok(counts.into_values().collect())
    }

    async fn get_artifact(&self, id: JobId) -> StoreResult<Option<Artifact>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT content_type, file_name, bytes FROM job_artifacts WHERE job_id = $1",
            &[id.as_uuid()],
        )
        .await?;
        row.map(|row| {
            Ok(Artifact {
                content_type: rows::get(&row, 0)?,
                file_name: rows::get(&row, 1)?,
                bytes: rows::get(&row, 2)?,
            })
        })
        .transpose()
    }

    async fn discard_job_payload(&self, id: JobId) -> StoreResult<()> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE jobs SET payload = 'null', revision = revision + 1 WHERE id = $1 \
             AND state IN ('succeeded', 'failed', 'cancelled')",
            &[id.as_uuid()],
        )
        .await?;
        if changed == 1 {
            return Ok(());
        }
        match load(&client, id, false).await? {
            Some(_) => Err(Conflict::InvalidState.into()),
            None => Err(StoreError::NotFound),
        }
    }

    async fn prune_jobs(&self, states: &[JobState], finished_before: DateTime<Utc>) -> StoreResult<u64> {
        let client = self.client().await?;
        // A maintenance pass: the count rows of sessions that ended are folded too.
        execute(&client, FOLD_COUNTS, &[]).await?;
        let mut pruned = 0;
        for state in states.iter().copied().filter(|state| state.is_finished()) {
            // In slices, each its own statement: a retention pass over a million jobs holds no long lock.
            loop {
                let deleted = execute(
                    &client,
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = $1 AND finished_at < $2 LIMIT $3)",
                    &[&state.as_str(), &finished_before, &PRUNE_SLICE],
                )
                .await?;
                pruned += deleted;
                if deleted < PRUNE_SLICE as u64 {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    async fn enqueue_cron_tick(&self, schedule: &str, tick: DateTime<Utc>, job: Job) -> StoreResult<Option<Job>> {
        self.fire_cron_tick(schedule, tick, job).await
    }
}
