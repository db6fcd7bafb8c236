//! Jobs. Every transition is one transaction over the job trees: load the row, apply the same rules as every
//! store, and let [`JobTx`] move the index entries and counters that changed.
//!
//! A claim reads the head of each named queue's ready index outside a transaction (sled transactions cannot
//! scan), then in one transaction checks that the head is still in the index and moves the job to running. Claims
//! of one store take turns under a mutex, so concurrent claimers do not all race for the same head (sled runs
//! transactions one at a time anyway); a head that vanished meanwhile (a cancel) just means looking again.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::PoisonError;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use techhub_core::clock;
use techhub_core::model::{
    Artifact, Job, JobFailure, JobFilter, JobId, JobState, Lease, Page, PageRequest, Progress, QueueCounts, Retry,
    WorkerId,
};
use techhub_core::storage::{Conflict, JobStore, StoreResult};

use crate::codec::corrupt;
use crate::engine::{OrAbort, Sled, TxResult, abort, transaction};
use crate::job_index::{JobTx, NewJob, decode_counts};
use crate::keys::{self, QueueKeys};
use crate::paging::{page_of, trailing_id};
use crate::rows::{decode_artifact, decode_job, encode_artifact};
use crate::{SledStore, queues::Head};

/// How many jobs one rescue or pruning transaction handles.
const BATCH: usize = 256;

/// Ends the job at `now` in a final `state`.
fn finish(job: &mut Job, state: JobState, now: DateTime<Utc>) {
    job.state = state;
    job.finished_at = Some(now);
    job.lease_holder = None;
    job.lease_until = None;
}

/// Puts the job back in the queue at `run_at`.
fn requeue(job: &mut Job, run_at: DateTime<Utc>) {
    job.state = JobState::Queued;
    job.run_at = run_at;
    job.lease_holder = None;
    job.lease_until = None;
}

impl SledStore {
    /// Stores new jobs in one transaction, then waits for durability.
    async fn insert_jobs(&self, jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
        let jobs = NewJob::prepare_all(jobs)?;
        let stored = transaction(&self.trees.jobs.all(), |views| JobTx::new(views)?.insert(&jobs))?;
        self.durability.committed().await?;
        Ok(stored)
    }

    /// Applies `change` to the job running under `lease` in one transaction; jobs entering the queue are due
    /// from `now`.
    async fn settle(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        change: impl Fn(&JobTx<'_>, &mut Job) -> TxResult<()>,
    ) -> StoreResult<Job> {
        let job = transaction(&self.trees.jobs.all(), |views| {
            let jobs = JobTx::new(views)?;
            let loaded = jobs.require(lease.job_id)?;
            if !loaded.job.is_leased_by(lease) {
                return Err(abort(Conflict::LeaseLost));
            }
            let mut job = loaded.job.clone();
            change(&jobs, &mut job)?;
            jobs.transition(&loaded, &job, now)?;
            Ok(job)
        })?;
        self.durability.committed().await?;
        Ok(job)
    }

    /// Changes the job `id` (whatever its state; `change` checks) in one transaction.
    async fn change(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        change: impl Fn(&JobTx<'_>, &mut Job) -> TxResult<()>,
    ) -> StoreResult<Job> {
        let job = transaction(&self.trees.jobs.all(), |views| {
            let jobs = JobTx::new(views)?;
            let loaded = jobs.require(id)?;
            let mut job = loaded.job.clone();
            change(&jobs, &mut job)?;
            jobs.transition(&loaded, &job, now)?;
            Ok(job)
        })?;
        self.durability.committed().await?;
        Ok(job)
    }

    /// Claims without waiting for durability (the caller waits if a job was claimed).
    fn claim_now(
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
        let lease_until = clock::add(now, lease);
        // No `.await` while this is held: claims take turns, and each turn is a few seeks and one transaction.
        let _turn = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        for keys in &queues {
            self.promote_due(keys, now)?;
        }
        loop {
            let mut best: Option<Head> = None;
            for keys in &queues {
                if let Some(head) = self.head(keys, now)?
                    && best.as_ref().is_none_or(|best| head.entry < best.entry)
                {
                    best = Some(head);
                }
            }
            let Some(head) = best else { return Ok(None) };
            let claimed = transaction(&self.trees.jobs.all(), |views| {
                let jobs = JobTx::new(views)?;
                if !jobs.is_ready(&head.key)? {
                    return Ok(None);
                }
                let loaded = jobs.load(head.entry.id)?.ok_or_else(|| abort(corrupt("a ready job has no row")))?;
                if loaded.job.state != JobState::Queued {
                    return Err(abort(corrupt("a ready job is not queued")));
                }
                let mut job = loaded.job.clone();
                job.state = JobState::Running;
                job.attempt += 1;
                job.started_at = Some(now);
                job.lease_holder = Some(worker.clone());
                job.lease_until = Some(lease_until);
                jobs.transition(&loaded, &job, now)?;
                Ok(Some(job))
            })?;
            if claimed.is_some() {
                return Ok(claimed);
            }
            // The head left the index between the read and the transaction (a cancel): look again.
        }
    }

    /// Running jobs whose lease ended before `now`, in lease order, after `after` (a lease key).
    fn expired_leases(&self, now: DateTime<Utc>, after: Option<&[u8]>) -> StoreResult<Vec<Vec<u8>>> {
        let end = keys::lease_expiry_end(now);
        let start = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.to_vec()));
        self.trees
            .jobs
            .leases
            .range((start, Bound::Excluded(end)))
            .take(BATCH)
            .map(|entry| entry.sled().map(|(key, _)| key.to_vec()))
            .collect()
    }
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
        let Some(row) = self.trees.jobs.rows.get(id.as_bytes()).sled()? else { return Ok(None) };
        Ok(Some(decode_job(id, &row)?.0))
    }

    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        let id_of = |job: &Job| job.id.into();
        let keep = |job: &Job| filter.matches(job);
        match filter.created_by {
            // A user's jobs come from the by-creator index, not a scan of every job.
            Some(user) => {
                let load = |key: &sled::IVec, _: &sled::IVec| {
                    let id = JobId::from_uuid(trailing_id(key)?);
                    let Some(row) = self.trees.jobs.rows.get(id.as_bytes()).sled()? else { return Ok(None) };
                    Ok(Some(decode_job(id, &row)?.0))
                };
                page_of(&self.trees.jobs.by_creator, user.as_bytes(), page, load, keep, id_of)
            }
            None => {
                let load = |key: &sled::IVec, row: &sled::IVec| {
                    Ok(Some(decode_job(JobId::from_uuid(trailing_id(key)?), row)?.0))
                };
                page_of(&self.trees.jobs.rows, &[], page, load, keep, id_of)
            }
        }
    }

    async fn claim(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Option<Job>> {
        let claimed = self.claim_now(queues, worker, now, lease)?;
        if claimed.is_some() {
            self.durability.committed().await?;
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, now: DateTime<Utc>, extend: Duration) -> StoreResult<Job> {
        self.settle(lease, now, |_, job| {
            job.lease_until = Some(clock::add(now, extend));
            Ok(())
        })
        .await
    }

    async fn report_progress(&self, lease: &Lease, progress: Progress, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, now, |_, job| {
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
        let artifact_row: Option<sled::IVec> = artifact.as_ref().map(|artifact| encode_artifact(artifact).into());
        self.settle(lease, now, |jobs, job| {
            finish(job, JobState::Succeeded, now);
            job.result = Some(result.clone());
            job.progress.percent = 100;
            job.artifact = info.clone();
            if let Some(row) = &artifact_row {
                jobs.artifacts.insert(job.id.as_bytes(), row.clone())?;
            }
            Ok(())
        })
        .await
    }

    async fn fail(&self, lease: &Lease, failure: JobFailure, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, now, |_, job| {
            job.last_error = Some(failure.error.clone());
            match failure.retry {
                Retry::After(delay) if job.has_attempts_left() => requeue(job, clock::add(now, delay)),
                Retry::After(_) | Retry::Never => finish(job, JobState::Failed, now),
            }
            Ok(())
        })
        .await
    }

    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.settle(lease, now, |_, job| {
            job.attempt = job.attempt.saturating_sub(1);
            requeue(job, now);
            Ok(())
        })
        .await
    }

    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        self.change(id, now, |_, job| {
            match job.state {
                JobState::Queued => finish(job, JobState::Cancelled, now),
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
        self.settle(lease, now, |_, job| {
            finish(job, JobState::Cancelled, now);
            Ok(())
        })
        .await
    }

    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        self.change(id, now, |jobs, job| {
            if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
                return Err(abort(Conflict::InvalidState));
            }
            // The job is finished, so a holder of its key is another, live job.
            if let Some(key) = &job.unique_key
                && jobs.unique_holder(key)?.is_some()
            {
                return Err(abort(Conflict::Duplicate));
            }
            requeue(job, now);
            job.attempt = 0;
            job.finished_at = None;
            job.started_at = None;
            job.cancel_requested = false;
            job.result = None;
            job.progress = Progress::default();
            Ok(())
        })
        .await
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        let mut rescued = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let expired = self.expired_leases(now, after.as_deref())?;
            let Some(last) = expired.last().cloned() else { break };
            let batch = transaction(&self.trees.jobs.all(), |views| {
                let jobs = JobTx::new(views)?;
                let mut changed = Vec::new();
                for key in &expired {
                    let (until, id) = keys::decode_time_id(key).or_abort()?;
                    // Skip a job whose lease moved since the scan (a heartbeat, a finish).
                    let Some(loaded) = jobs.load(id)? else { continue };
                    if loaded.job.state != JobState::Running || loaded.job.lease_until != Some(until) {
                        continue;
                    }
                    let mut job = loaded.job.clone();
                    if job.has_attempts_left() {
                        requeue(&mut job, now);
                    } else {
                        job.last_error = Some("lease expired".to_owned());
                        finish(&mut job, JobState::Failed, now);
                    }
                    jobs.transition(&loaded, &job, now)?;
                    changed.push(job);
                }
                Ok(changed)
            })?;
            rescued.extend(batch);
            if expired.len() < BATCH {
                break;
            }
            after = Some(last);
        }
        if !rescued.is_empty() {
            self.durability.committed().await?;
        }
        rescued.sort_by_key(|job| job.id);
        Ok(rescued)
    }

    async fn queue_counts(&self) -> StoreResult<Vec<QueueCounts>> {
        let mut all = Vec::new();
        for entry in self.trees.jobs.counts.iter() {
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
                row.oldest_queued_run_at = self.oldest_queued(&keys)?;
            }
            all.push(row);
        }
        Ok(all)
    }

    async fn get_artifact(&self, id: JobId) -> StoreResult<Option<Artifact>> {
        self.trees.jobs.artifacts.get(id.as_bytes()).sled()?.map(|row| decode_artifact(&row)).transpose()
    }

    async fn prune_jobs(&self, states: &[JobState], finished_before: DateTime<Utc>) -> StoreResult<u64> {
        let states: BTreeSet<JobState> = states.iter().copied().filter(|state| state.is_finished()).collect();
        let mut pruned = 0;
        for state in states {
            let (start, end) = keys::finished_before(state, finished_before);
            let mut from = Bound::Included(start);
            loop {
                let batch: Vec<Vec<u8>> = self
                    .trees
                    .jobs
                    .finished
                    .range((from.clone(), Bound::Excluded(end.clone())))
                    .take(BATCH)
                    .map(|entry| entry.sled().map(|(key, _)| key.to_vec()))
                    .collect::<StoreResult<_>>()?;
                let Some(last) = batch.last().cloned() else { break };
                pruned += transaction(&self.trees.jobs.all(), |views| {
                    let jobs = JobTx::new(views)?;
                    let mut deleted = 0;
                    for key in &batch {
                        let id = keys::finished_id(key).or_abort()?;
                        let Some(loaded) = jobs.load(id)? else { continue };
                        let job = &loaded.job;
                        if job.state == state && job.finished_at.is_some_and(|at| at < finished_before) {
                            jobs.delete(job)?;
                            deleted += 1;
                        }
                    }
                    Ok(deleted)
                })?;
                if batch.len() < BATCH {
                    break;
                }
                from = Bound::Excluded(last);
            }
        }
        if pruned > 0 {
            self.durability.committed().await?;
        }
        Ok(pruned)
    }
}
