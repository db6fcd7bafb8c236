//! Jobs: records in a `DashMap`, and one index (under a mutex) of what claims, counts and pruning need.
//!
//! Every change of a job's state happens with the index locked and the job's map entry held, through
//! [`JobIndex::leave`] (the job's old state leaves the index) and [`JobIndex::enter`] (its new state enters).
//! Heartbeats and progress change no state, so they take only the entry: the hot reporting path never
//! touches the global lock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use dashmap::mapref::one::RefMut;
use serde_json::Value;
use techhub_core::clock;
use techhub_core::model::{
    Artifact, Job, JobFailure, JobFilter, JobId, JobState, Lease, Page, PageRequest, Progress, QueueCounts,
    QueueStarts, RateLimit, Settlement, WorkerId,
};
use techhub_core::storage::{Conflict, JobStore, StoreError, StoreResult, decisions};

use crate::{MemoryStore, paging, write};

#[derive(Debug)]
struct StoredJob {
    job: Job,
    artifact: Option<Artifact>,
}

/// The job records and their index.
#[derive(Debug, Default)]
pub(crate) struct JobTables {
    records: DashMap<JobId, StoredJob>,
    index: Mutex<JobIndex>,
}

/// Queued jobs of one queue, ordered two ways.
#[derive(Debug, Default)]
struct QueueIndex {
    /// Every queued job by `(run_at, id)`, with its priority: the source of due jobs and the oldest age.
    by_time: BTreeSet<(DateTime<Utc>, JobId, i32)>,
    /// Due queued jobs in claim order: priority (highest first), then run_at, then id.
    ready: BTreeSet<(Reverse<i32>, DateTime<Utc>, JobId)>,
    /// Everything in `by_time` up to and including this key is also in `ready`.
    promoted_through: Option<(DateTime<Utc>, JobId, i32)>,
    /// Jobs per state, indexed by [`JobState::index`].
    counts: [u64; 5],
}

impl QueueIndex {
    /// Moves every queued job due at `now` into `ready`.
    fn promote_due(&mut self, now: DateTime<Utc>) {
        let start = self.promoted_through.map_or(Bound::Unbounded, Bound::Excluded);
        for &(run_at, id, priority) in self.by_time.range((start, Bound::Unbounded)) {
            if run_at > now {
                break;
            }
            self.ready.insert((Reverse(priority), run_at, id));
            self.promoted_through = Some((run_at, id, priority));
        }
    }

    fn is_empty(&self) -> bool {
        self.counts.iter().all(|&count| count == 0)
    }
}

/// What claims, counts, listing, rescue and pruning need, kept in step with the records.
#[derive(Debug, Default)]
pub(crate) struct JobIndex {
    queues: BTreeMap<String, QueueIndex>,
    /// Live (queued or running) jobs by unique key.
    unique: HashMap<String, JobId>,
    /// Every job, for id-ordered listing.
    all: BTreeSet<JobId>,
    /// Running jobs, for lease rescue (as many as there are workers).
    running: HashSet<JobId>,
    /// Finished jobs by `(finished_at, id)`, for pruning.
    finished: BTreeSet<(DateTime<Utc>, JobId)>,
    /// The last fired tick of each cron schedule, kept beside the jobs so one lock covers both.
    fired_ticks: HashMap<String, DateTime<Utc>>,
}

impl JobIndex {
    /// Takes `job` (in its current state) out of the index.
    fn leave(&mut self, job: &Job) {
        if let Some(queue) = self.queues.get_mut(&job.queue) {
            queue.counts[job.state.index()] -= 1;
            if job.state == JobState::Queued {
                queue.by_time.remove(&(job.run_at, job.id, job.priority));
                queue.ready.remove(&(Reverse(job.priority), job.run_at, job.id));
            }
        }
        match job.state {
            JobState::Queued | JobState::Running => {
                if let Some(key) = &job.unique_key {
                    self.unique.remove(key);
                }
                self.running.remove(&job.id);
            }
            JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                if let Some(finished_at) = job.finished_at {
                    self.finished.remove(&(finished_at, job.id));
                }
            }
        }
    }

    /// Puts `job` (in its current state) into the index.
    fn enter(&mut self, job: &Job) {
        // Look up before inserting: `entry` would allocate the queue's name on every transition.
        if !self.queues.contains_key(&job.queue) {
            self.queues.insert(job.queue.clone(), QueueIndex::default());
        }
        let Some(queue) = self.queues.get_mut(&job.queue) else { return };
        queue.counts[job.state.index()] += 1;
        match job.state {
            JobState::Queued => {
                let key = (job.run_at, job.id, job.priority);
                queue.by_time.insert(key);
                // Behind the promotion mark: `promote_due` will not look here again, so it is due already.
                if queue.promoted_through.is_some_and(|mark| key <= mark) {
                    queue.ready.insert((Reverse(job.priority), job.run_at, job.id));
                }
            }
            JobState::Running => {
                self.running.insert(job.id);
            }
            JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                if let Some(finished_at) = job.finished_at {
                    self.finished.insert((finished_at, job.id));
                }
            }
        }
        if !job.state.is_finished()
            && let Some(key) = &job.unique_key
        {
            self.unique.insert(key.clone(), job.id);
        }
    }

    /// Whether a live (queued or running) job holds `key`.
    pub(crate) fn holds_key(&self, key: &str) -> bool {
        self.unique.contains_key(key)
    }

    /// Checks that `jobs` can be inserted, in order: a job whose unique key is live (stored, or taken by an
    /// earlier job of the batch) will yield the live job and needs no check; any other job's id must be new
    /// (not stored, not earlier in the batch).
    pub(crate) fn check_new(&self, tables: &JobTables, jobs: &[Job]) -> StoreResult<()> {
        let mut ids = HashSet::with_capacity(jobs.len());
        let mut keys = HashSet::new();
        for job in jobs {
            if let Some(key) = &job.unique_key
                && (self.unique.contains_key(key) || !keys.insert(key))
            {
                continue;
            }
            if !ids.insert(job.id) || tables.records.contains_key(&job.id) {
                return Err(Conflict::Duplicate.into());
            }
        }
        Ok(())
    }

    /// Inserts jobs that passed [`JobIndex::check_new`]; a job whose unique key is live (also earlier in
    /// this batch) yields the live job instead.
    pub(crate) fn insert_checked(&mut self, tables: &JobTables, jobs: Vec<Job>) -> Vec<Job> {
        jobs.into_iter()
            .map(|job| {
                if let Some(existing) = job.unique_key.as_ref().and_then(|key| self.unique.get(key))
                    && let Some(stored) = tables.records.get(existing)
                {
                    return stored.job.clone();
                }
                self.enter(&job);
                self.all.insert(job.id);
                tables.records.insert(job.id, StoredJob { job: job.clone(), artifact: None });
                job
            })
            .collect()
    }
}

impl JobTables {
    pub(crate) fn lock_index(&self) -> MutexGuard<'_, JobIndex> {
        crate::lock(&self.index)
    }

    /// The entry of the job running under `lease`, or why not.
    fn leased(&self, lease: &Lease) -> StoreResult<RefMut<'_, JobId, StoredJob>> {
        let entry = self.records.get_mut(&lease.job_id).ok_or(StoreError::NotFound)?;
        if entry.job.is_leased_by(lease) { Ok(entry) } else { Err(Conflict::LeaseLost.into()) }
    }

    /// Claims the next due job of `queues` (the caller holds the index lock, so claims never overlap).
    fn claim_next(
        &self,
        index: &mut JobIndex,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Option<Job>> {
        let mut best: Option<(Reverse<i32>, DateTime<Utc>, JobId)> = None;
        for name in queues {
            let Some(queue) = index.queues.get_mut(name) else { continue };
            queue.promote_due(now);
            // `ready` holds only due jobs unless the clock went backwards; skip any that are not due now.
            if let Some(head) = queue.ready.iter().find(|(_, run_at, _)| *run_at <= now)
                && best.is_none_or(|best| *head < best)
            {
                best = Some(*head);
            }
        }
        let Some((_, _, id)) = best else { return Ok(None) };
        let Some(mut entry) = self.records.get_mut(&id) else {
            // The index and the records change together under the index lock, so this cannot happen.
            return Err(StoreError::corrupt(std::io::Error::other("job index out of step with its records")));
        };
        let job = &mut entry.job;
        index.leave(job);
        job.state = JobState::Running;
        job.attempt += 1;
        job.started_at = Some(now);
        job.lease_holder = Some(worker.clone());
        job.lease_until = Some(clock::add(now, lease));
        index.enter(job);
        Ok(Some(job.clone()))
    }

    /// Applies a state change to the job running under `lease`, keeping the index in step.
    fn finish_attempt(&self, lease: &Lease, change: impl FnOnce(&mut StoredJob)) -> StoreResult<Job> {
        let mut index = self.lock_index();
        let mut entry = self.leased(lease)?;
        index.leave(&entry.job);
        change(&mut entry);
        index.enter(&entry.job);
        Ok(entry.job.clone())
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn enqueue(&self, job: Job) -> StoreResult<Job> {
        let mut index = self.jobs.lock_index();
        index.check_new(&self.jobs, std::slice::from_ref(&job))?;
        Ok(index.insert_checked(&self.jobs, vec![job]).remove(0))
    }

    async fn enqueue_many(&self, jobs: Vec<Job>) -> StoreResult<Vec<Job>> {
        let mut index = self.jobs.lock_index();
        index.check_new(&self.jobs, &jobs)?;
        Ok(index.insert_checked(&self.jobs, jobs))
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        Ok(self.jobs.records.get(&id).map(|stored| stored.job.clone()))
    }

    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>> {
        let start = paging::after::<JobId>(decisions::start_after(page)?);
        let index = self.jobs.lock_index();
        let items: Vec<Job> = index
            .all
            .range(start)
            .filter_map(|id| self.jobs.records.get(id))
            .filter(|stored| filter.matches(&stored.job))
            .take(page.limit + 1)
            .map(|stored| stored.job.clone())
            .collect();
        Ok(Page::from_overfetch(items, page.limit, |job| job.id.into()))
    }

    async fn claim(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Option<Job>> {
        let mut index = self.jobs.lock_index();
        self.jobs.claim_next(&mut index, queues, worker, now, lease)
    }

    async fn claim_many(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<Job>> {
        let mut index = self.jobs.lock_index();
        let mut claimed = Vec::new();
        while claimed.len() < max {
            let Some(job) = self.jobs.claim_next(&mut index, queues, worker, now, lease)? else { break };
            claimed.push(job);
        }
        Ok(claimed)
    }

    async fn heartbeat(&self, lease: &Lease, now: DateTime<Utc>, extend: Duration) -> StoreResult<Job> {
        let mut entry = self.jobs.leased(lease)?;
        entry.job.lease_until = Some(clock::add(now, extend));
        Ok(entry.job.clone())
    }

    async fn report_progress(&self, lease: &Lease, progress: Progress, _now: DateTime<Utc>) -> StoreResult<Job> {
        let mut entry = self.jobs.leased(lease)?;
        entry.job.progress = progress;
        Ok(entry.job.clone())
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: Value,
        artifact: Option<Artifact>,
        now: DateTime<Utc>,
    ) -> StoreResult<Job> {
        self.jobs.finish_attempt(lease, |stored| {
            stored.job.succeed(result, artifact.as_ref().map(Artifact::info), now);
            stored.artifact = artifact;
        })
    }

    async fn fail(&self, lease: &Lease, failure: JobFailure, now: DateTime<Utc>) -> StoreResult<Job> {
        self.jobs.finish_attempt(lease, |stored| {
            stored.job.fail_attempt(failure, now);
        })
    }

    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.jobs.finish_attempt(lease, |stored| {
            stored.job.release(now);
        })
    }

    async fn settle_many(
        &self,
        settlements: Vec<Settlement>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        // The notifications' lock (taken before the index's, as everywhere) only for a batch that records
        // deliveries, then one index lock for the whole batch: no claim or other transition sees it half applied.
        let mut notifications = settlements
            .iter()
            .any(|settlement| settlement.deliveries().next().is_some())
            .then(|| write(&self.notifications));
        let mut index = self.jobs.lock_index();
        Ok(settlements
            .into_iter()
            .map(|settlement| {
                let mut entry = self.jobs.leased(settlement.lease())?;
                index.leave(&entry.job);
                settlement.apply(&mut entry.job, now);
                index.enter(&entry.job);
                if let Some(notifications) = notifications.as_mut() {
                    for record in settlement.deliveries() {
                        notifications.record_delivery(record, now);
                    }
                }
                if let Settlement::Complete { artifact, .. } = settlement {
                    entry.artifact = artifact;
                }
                Ok(entry.job.clone())
            })
            .collect())
    }

    /// In process memory ([`LocalRateBuckets`]): nothing outlives this process, and every caller is in it.
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
        let mut index = self.jobs.lock_index();
        let mut entry = self.jobs.records.get_mut(&id).ok_or(StoreError::NotFound)?;
        let job = &mut entry.job;
        match job.state {
            JobState::Queued => {
                index.leave(job);
                job.finish(JobState::Cancelled, now);
                index.enter(job);
            }
            JobState::Running => job.cancel_requested = true,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                return Err(Conflict::InvalidState.into());
            }
        }
        Ok(job.clone())
    }

    async fn acknowledge_cancel(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job> {
        self.jobs.finish_attempt(lease, |stored| stored.job.finish(JobState::Cancelled, now))
    }

    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job> {
        let mut index = self.jobs.lock_index();
        let mut entry = self.jobs.records.get_mut(&id).ok_or(StoreError::NotFound)?;
        let job = &mut entry.job;
        decisions::check_retry(job, |key| Ok::<_, StoreError>(index.unique.contains_key(key)))??;
        index.leave(job);
        job.restart(now);
        index.enter(job);
        Ok(job.clone())
    }

    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>> {
        let mut index = self.jobs.lock_index();
        let running: Vec<JobId> = index.running.iter().copied().collect();
        let mut rescued = Vec::new();
        for id in running {
            let Some(mut entry) = self.jobs.records.get_mut(&id) else { continue };
            let job = &mut entry.job;
            if job.lease_until.is_none_or(|until| until >= now) {
                continue;
            }
            index.leave(job);
            job.rescue(now);
            index.enter(job);
            rescued.push(job.clone());
        }
        rescued.sort_by_key(|job| job.id);
        Ok(rescued)
    }

    async fn queue_counts(&self) -> StoreResult<Vec<QueueCounts>> {
        let index = self.jobs.lock_index();
        Ok(index
            .queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(name, queue)| {
                let mut counts = QueueCounts { queue: name.clone(), ..QueueCounts::default() };
                for state in JobState::ALL {
                    *counts.get_mut(state) = queue.counts[state.index()];
                }
                counts.oldest_queued_run_at = queue.by_time.first().map(|(run_at, _, _)| *run_at);
                counts
            })
            .collect())
    }

    async fn get_artifact(&self, id: JobId) -> StoreResult<Option<Artifact>> {
        Ok(self.jobs.records.get(&id).and_then(|stored| stored.artifact.clone()))
    }

    async fn discard_job_payload(&self, id: JobId) -> StoreResult<()> {
        let mut entry = self.jobs.records.get_mut(&id).ok_or(StoreError::NotFound)?;
        if !entry.job.state.is_finished() {
            return Err(Conflict::InvalidState.into());
        }
        entry.job.payload = Value::Null;
        Ok(())
    }

    async fn prune_jobs(&self, states: &[JobState], finished_before: DateTime<Utc>) -> StoreResult<u64> {
        let mut index = self.jobs.lock_index();
        let candidates: Vec<JobId> =
            index.finished.range(..(finished_before, JobId::from_uuid(uuid::Uuid::nil()))).map(|(_, id)| *id).collect();
        let mut pruned = 0;
        for id in candidates {
            let prune = self.jobs.records.get(&id).is_some_and(|stored| states.contains(&stored.job.state));
            if !prune {
                continue;
            }
            if let Some((_, stored)) = self.jobs.records.remove(&id) {
                index.leave(&stored.job);
                index.all.remove(&id);
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    async fn enqueue_cron_tick(&self, schedule: &str, tick: DateTime<Utc>, job: Job) -> StoreResult<Option<Job>> {
        let mut index = self.jobs.lock_index();
        if index.fired_ticks.get(schedule).is_some_and(|last| tick <= *last) {
            return Ok(None);
        }
        index.check_new(&self.jobs, std::slice::from_ref(&job))?;
        let stored = index.insert_checked(&self.jobs, vec![job]).remove(0);
        index.fired_ticks.insert(schedule.to_owned(), tick);
        Ok(Some(stored))
    }
}
