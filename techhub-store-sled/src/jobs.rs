//! Jobs. Every transition is one call on the writer: load the row, apply the same rules as every store, and
//! let [`JobTx`] move the index entries and counters that changed. The writer answers the new row, which the
//! caller turns back into a [`Job`] on its own thread (parsing the payload is the caller's work, not the
//! writer's).
//!
//! A claim is picked by the writer from the ready indexes just before its round's transaction (the writer is
//! the only thread that writes, so what it read still holds) and moved to running in that transaction.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sled::IVec;
use techhub_core::clock;
use techhub_core::model::{
    Artifact, Job, JobFailure, JobFilter, JobId, JobState, Lease, Page, PageRequest, Progress, QueueCounts,
    QueueStarts, RateLimit, Settlement, WorkerId,
};
use techhub_core::storage::{Conflict, JobStore, StoreError, StoreResult, decisions};

use crate::SledStore;
use crate::claims::ClaimRequest;
use crate::codec::corrupt;
use crate::engine::{Sled, TreeId, Trees};
use crate::job_index::{JobTx, NewJob, decode_counts};
use crate::keys::{self, QueueKeys};
use crate::paging::{page_of, trailing_id};
use crate::queues::oldest_queued;
use crate::rows::{decode_artifact, decode_job, encode_artifact};
use crate::tx::{OrAbort, TxResult, abort, transaction};

/// How many jobs one rescue or pruning transaction handles.
const BATCH: usize = 256;

/// Rows the writer answered, as jobs.
fn decode_rows(rows: Vec<(JobId, IVec)>) -> StoreResult<Vec<Job>> {
    rows.into_iter().map(|(id, row)| decode_job(id, &row)).collect()
}

impl SledStore {
    /// Stores new jobs in one call (`enqueue_many`'s rules).
    async fn insert_jobs(&self, jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
        let prepared = NewJob::prepare_all(&jobs)?;
        let existing = self.writer.write(move |tx| JobTx::new(tx).insert(&prepared)).await?;
        jobs.into_iter()
            .zip(existing)
            .map(|(job, existing)| match existing {
                None => Ok(job),
                Some((id, row)) => decode_job(id, &row),
            })
            .collect()
    }

    /// Applies `change` to the job running under `lease`; jobs entering the queue are due from `now`.
    async fn settle(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        change: impl Fn(&JobTx<'_>, &mut Job) -> TxResult<()> + Send + 'static,
    ) -> StoreResult<Job> {
        let lease = lease.clone();
        let id = lease.job_id;
        let row = self
            .writer
            .write(move |tx| {
                let jobs = JobTx::new(tx);
                let loaded = jobs.require(lease.job_id)?;
                if !loaded.job.is_leased_by(&lease) {
                    return Err(abort(Conflict::LeaseLost));
                }
                let mut job = loaded.job.clone();
                change(&jobs, &mut job)?;
                jobs.transition(&loaded, &job, now)
            })
            .await?;
        decode_job(id, &row)
    }

    /// Changes the job `id` (whatever its state; `change` checks).
    async fn change(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        change: impl Fn(&JobTx<'_>, &mut Job) -> TxResult<()> + Send + 'static,
    ) -> StoreResult<Job> {
        let row = self
            .writer
            .write(move |tx| {
                let jobs = JobTx::new(tx);
                let loaded = jobs.require(id)?;
                let mut job = loaded.job.clone();
                change(&jobs, &mut job)?;
                jobs.transition(&loaded, &job, now)
            })
            .await?;
        decode_job(id, &row)
    }
}

/// Rescues expired leases (on the writer, which may scan and then write).
fn rescue(trees: &Trees, now: DateTime<Utc>) -> StoreResult<Vec<(JobId, IVec)>> {
    let end = keys::lease_expiry_end(now);
    let mut from = Bound::Unbounded;
    let mut rescued = Vec::new();
    loop {
        let expired: Vec<IVec> = trees[TreeId::JobsByLease]
            .range((from.clone(), Bound::Excluded(end.clone())))
            .take(BATCH)
            .map(|entry| entry.sled().map(|(key, _)| key))
            .collect::<StoreResult<_>>()?;
        let Some(last) = expired.last().cloned() else { break };
        let batch = transaction(trees, |tx| {
            let jobs = JobTx::new(tx);
            let mut changed = Vec::new();
            for key in &expired {
                let (until, id) = keys::decode_time_id(key).or_abort()?;
                let Some(loaded) = jobs.load(id)? else { continue };
                if loaded.job.state != JobState::Running || loaded.job.lease_until != Some(until) {
                    continue;
                }
                let mut job = loaded.job.clone();
                job.rescue(now);
                changed.push((id, jobs.transition(&loaded, &job, now)?));
            }
            Ok(changed)
        })?;
        rescued.extend(batch);
        if expired.len() < BATCH {
            break;
        }
        from = Bound::Excluded(last.to_vec());
    }
    Ok(rescued)
}

/// Deletes finished jobs of `states` that finished before `before` (on the writer).
fn prune(trees: &Trees, states: &BTreeSet<JobState>, before: DateTime<Utc>) -> StoreResult<u64> {
    let mut pruned = 0;
    for &state in states {
        let (start, end) = keys::finished_before(state, before);
        let mut from = Bound::Included(start);
        loop {
            let batch: Vec<IVec> = trees[TreeId::JobsFinished]
                .range((from.clone(), Bound::Excluded(end.clone())))
                .take(BATCH)
                .map(|entry| entry.sled().map(|(key, _)| key))
                .collect::<StoreResult<_>>()?;
            let Some(last) = batch.last().cloned() else { break };
            pruned += transaction(trees, |tx| {
                let jobs = JobTx::new(tx);
                let mut deleted = 0;
                for key in &batch {
                    let Some(loaded) = jobs.load(keys::finished_id(key).or_abort()?)? else { continue };
                    let job = &loaded.job;
                    if job.state == state && job.finished_at.is_some_and(|at| at < before) {
                        jobs.delete(job)?;
                        deleted += 1;
                    }
                }
                Ok(deleted)
            })?;
            if batch.len() < BATCH {
                break;
            }
            from = Bound::Excluded(last.to_vec());
        }
    }
    Ok(pruned)
}

#[async_trait]
impl JobStore for SledStore {
    async fn enqueue(&self, job: Job) -> StoreResult<Job> {
        self.insert_jobs(vec![job]).await?.pop().ok_or_else(|| corrupt("an enqueue stored nothing"))
    }

    async fn enqueue_many(&self, jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
        self.insert_jobs(jobs).await
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.read(move |trees| {
            let Some(row) = trees[TreeId::Jobs].get(id.as_bytes()).sled()? else { return Ok(None) };
            decode_job(id, &row).map(Some)
        })
        .await
    }

    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |trees| {
            let id_of = |job: &Job| job.id.into();
            let keep = |job: &Job| filter.matches(job);
            let rows = &trees[TreeId::Jobs];
            match filter.created_by {
                // A user's jobs come from the by-creator index, not a scan of every job.
                Some(user) => {
                    let load = |key: &IVec, _: &IVec| {
                        let id = JobId::from_uuid(trailing_id(key)?);
                        rows.get(id.as_bytes()).sled()?.map(|row| decode_job(id, &row)).transpose()
                    };
                    page_of(&trees[TreeId::JobsByCreator], user.as_bytes(), &page, load, keep, id_of)
                }
                None => {
                    let load = |key: &IVec, row: &IVec| decode_job(JobId::from_uuid(trailing_id(key)?), row).map(Some);
                    page_of(rows, &[], &page, load, keep, id_of)
                }
            }
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
        let names: BTreeSet<&str> = queues.iter().map(String::as_str).collect();
        // A name too long for a key cannot have been enqueued to.
        let queues: Vec<QueueKeys> = names.into_iter().filter_map(QueueKeys::new).collect();
        if queues.is_empty() {
            return Ok(None);
        }
        let request = ClaimRequest { queues, worker: worker.clone(), now, lease_until: clock::add(now, lease), max: 1 };
        self.writer.claim(request).await?.into_iter().next().map(|(id, row)| decode_job(id, &row)).transpose()
    }

    async fn claim_many(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<Job>> {
        let names: BTreeSet<&str> = queues.iter().map(String::as_str).collect();
        let queues: Vec<QueueKeys> = names.into_iter().filter_map(QueueKeys::new).collect();
        if queues.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let request = ClaimRequest { queues, worker: worker.clone(), now, lease_until: clock::add(now, lease), max };
        decode_rows(self.writer.claim(request).await?)
    }

    async fn heartbeat(&self, lease: &Lease, now: DateTime<Utc>, extend: Duration) -> StoreResult<Job> {
        self.settle(lease, now, move |_, job| {
            job.lease_until = Some(clock::add(now, extend));
            Ok(())
        })
        .await
    }

    async fn report_progress(&self, lease: &Lease, progress: Progress, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, now, move |_, job| {
            job.progress = progress.clone();
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
        let info = artifact.as_ref().map(Artifact::info);
        let artifact_row: Option<IVec> = artifact.as_ref().map(|artifact| encode_artifact(artifact).into());
        self.settle(lease, now, move |jobs, job| {
            job.succeed(result.clone(), info.clone(), now);
            if let Some(row) = &artifact_row {
                jobs.artifacts.insert(job.id.as_bytes().as_slice(), row.clone())?;
            }
            Ok(())
        })
        .await
    }

    async fn fail(&self, lease: &Lease, failure: JobFailure, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, now, move |_, job| {
            job.fail_attempt(failure.clone(), now);
            Ok(())
        })
        .await
    }

    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, now, move |_, job| {
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
        let ids: Vec<JobId> = settlements.iter().map(|settlement| settlement.lease().job_id).collect();
        let artifact_rows: Vec<Option<IVec>> =
            settlements.iter().map(|settlement| settlement.artifact().map(|a| encode_artifact(a).into())).collect();
        // One call on the writer: the whole batch lands in one round's transaction and one flush.
        let rows = self
            .writer
            .write(move |tx| {
                let jobs = JobTx::new(tx);
                let mut rows = Vec::with_capacity(settlements.len());
                for (settlement, artifact_row) in settlements.iter().zip(&artifact_rows) {
                    // A lost lease or a missing job refuses this settlement alone, before it wrote anything.
                    let loaded = match jobs.load(settlement.lease().job_id)? {
                        None => {
                            rows.push(Err(StoreError::NotFound));
                            continue;
                        }
                        Some(loaded) if !loaded.job.is_leased_by(settlement.lease()) => {
                            rows.push(Err(Conflict::LeaseLost.into()));
                            continue;
                        }
                        Some(loaded) => loaded,
                    };
                    let mut job = loaded.job.clone();
                    settlement.apply(&mut job, now);
                    if let Some(row) = artifact_row {
                        jobs.artifacts.insert(job.id.as_bytes().as_slice(), row.clone())?;
                    }
                    let row = if settlement.discards_payload(&job) {
                        jobs.transition_with_payload(&loaded, &job, now, b"null")?
                    } else {
                        jobs.transition(&loaded, &job, now)?
                    };
                    for record in settlement.deliveries() {
                        crate::notifications::record_delivery(tx, record, now)?;
                    }
                    rows.push(Ok(row));
                }
                Ok(rows)
            })
            .await?;
        Ok(ids.into_iter().zip(rows).map(|(id, row)| row.and_then(|row| decode_job(id, &row))).collect())
    }

    /// In process memory ([`LocalRateBuckets`]): sled lets one process open the database, so every caller is in it (a bucket that starts full again after a restart at most allows one burst early).
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
        self.change(id, now, move |_, job| {
            match job.state {
                JobState::Queued => job.finish(JobState::Cancelled, now),
                JobState::Running => job.cancel_requested = true,
                JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                    return Err(abort(Conflict::InvalidState));
                }
            }
            Ok(())
        })
        .await
    }

    async fn acknowledge_cancel(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, now, move |_, job| {
            job.finish(JobState::Cancelled, now);
            Ok(())
        })
        .await
    }

    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        self.change(id, now, move |jobs, job| {
            decisions::check_retry(job, |key| jobs.unique_holder(key).map(|holder| holder.is_some()))?
                .map_err(abort)?;
            job.restart(now);
            Ok(())
        })
        .await
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        let mut rescued = decode_rows(self.writer.alone(move |trees| rescue(trees, now)).await?)?;
        rescued.sort_by_key(|job| job.id);
        Ok(rescued)
    }

    async fn queue_counts(&self) -> StoreResult<Vec<QueueCounts>> {
        self.read(|trees| {
            let mut all = Vec::new();
            for entry in trees[TreeId::JobCounts].iter() {
                let (queue, counts) = entry.sled()?;
                let counts = decode_counts(&counts)?;
                let queue = String::from_utf8(queue.to_vec()).map_err(|_| corrupt("a queue name is not UTF-8"))?;
                let mut row = QueueCounts { queue, ..QueueCounts::default() };
                for state in JobState::ALL {
                    *row.get_mut(state) = counts[state.index()];
                }
                if row.queued > 0
                    && let Some(keys) = QueueKeys::new(&row.queue)
                {
                    row.oldest_queued_run_at = oldest_queued(trees, &keys)?;
                }
                all.push(row);
            }
            Ok(all)
        })
        .await
    }

    async fn get_artifact(&self, id: JobId) -> StoreResult<Option<Artifact>> {
        self.read(move |trees| {
            trees[TreeId::JobArtifacts].get(id.as_bytes()).sled()?.map(|row| decode_artifact(&row)).transpose()
        })
        .await
    }

    async fn discard_job_payload(&self, id: JobId) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                let jobs = JobTx::new(tx);
                let loaded = jobs.require(id)?;
                if !loaded.job.state.is_finished() {
                    return Err(abort(Conflict::InvalidState));
                }
                jobs.replace_payload(&loaded, b"null")
            })
            .await?;
        Ok(())
    }

    async fn prune_jobs(&self, states: &[JobState], finished_before: DateTime<Utc>) -> StoreResult<u64> {
        let states: BTreeSet<JobState> = states.iter().copied().filter(|state| state.is_finished()).collect();
        if states.is_empty() {
            return Ok(0);
        }
        self.writer.alone(move |trees| prune(trees, &states, finished_before)).await
    }

    async fn enqueue_cron_tick(&self, schedule: &str, tick: DateTime<Utc>, job: Job) -> StoreResult<Option<Job>> {
        let prepared = NewJob::prepare_all(std::slice::from_ref(&job))?;
        let schedule = schedule.as_bytes().to_vec();
        let tick_micros = tick.timestamp_micros();
        let fired = self
            .writer
            .write(move |tx| {
                let ticks = tx.tree(TreeId::CronTicks);
                if let Some(last) = ticks.get(&schedule)? {
                    let last: [u8; 8] = last.as_ref().try_into().map_err(|_| abort(corrupt("a cron tick")))?;
                    if tick_micros <= i64::from_be_bytes(last) {
                        return Ok(None);
                    }
                }
                // The tick is recorded in the same call as the job: a failed insert aborts both.
                let existing = JobTx::new(tx).insert(&prepared)?;
                ticks.insert(schedule.clone(), tick_micros.to_be_bytes().to_vec())?;
                Ok(Some(existing))
            })
            .await?;
        let Some(mut existing) = fired else { return Ok(None) };
        match existing.pop().flatten() {
            None => Ok(Some(job)),
            Some((id, row)) => decode_job(id, &row).map(Some),
        }
    }
}
