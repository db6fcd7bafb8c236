//! The job trees inside a transaction: rows, and the indexes and counters kept in step with them.
//!
//! Every change of a stored job goes through [`JobTx::reindex`], which compares the job before and after and
//! moves only the index entries that differ (a heartbeat touches the lease index alone; a claim moves the job
//! from the ready index to the lease index and shifts one counter). A queued job sits in exactly one of two
//! indexes: `ready` (due, in claim order) or `delayed` (not yet due, in `run_at` order); claims promote due
//! delayed jobs, so they never scan past jobs that are not due.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sled::IVec;
use techhub_core::model::{Job, JobId, JobState};
use techhub_core::storage::{Conflict, StoreError, StoreResult};

use crate::codec::corrupt;
use crate::engine::TreeId;
use crate::keys::{self, QueueKeys};
use crate::rows::{decode_job_head, encode_job, to_json};
use crate::tx::{OrAbort, Tx, TxResult, TxTree, abort};

/// A job ready to be inserted: its row is encoded before it reaches the writer (whose transaction may run more
/// than once); the writer keeps the job without its payload, for the indexes.
#[derive(Debug)]
pub(crate) struct NewJob {
    head: Job,
    row: IVec,
}

impl NewJob {
    pub(crate) fn prepare(job: &Job) -> StoreResult<Self> {
        if QueueKeys::new(&job.queue).is_none() {
            return Err(StoreError::InvalidInput("the queue name is longer than 65,535 bytes".to_owned()));
        }
        let payload = to_json(&job.payload)?;
        let row = encode_job(job, &payload)?;
        let head = Job { payload: Value::Null, ..job.clone() };
        Ok(Self { head, row })
    }

    pub(crate) fn prepare_all(jobs: &[Job]) -> StoreResult<Vec<Self>> {
        jobs.iter().map(Self::prepare).collect()
    }
}

/// A job read inside a transaction (payload not parsed), with its row, whose payload bytes the next version
/// reuses.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) job: Job,
    row: IVec,
    payload_at: usize,
}

impl Loaded {
    fn payload(&self) -> &[u8] {
        &self.row[self.payload_at..]
    }
}

/// The job trees as one call sees them.
pub(crate) struct JobTx<'a> {
    rows: TxTree<'a>,
    pub(crate) artifacts: TxTree<'a>,
    ready: TxTree<'a>,
    delayed: TxTree<'a>,
    leases: TxTree<'a>,
    finished: TxTree<'a>,
    unique: TxTree<'a>,
    by_creator: TxTree<'a>,
    counts: TxTree<'a>,
}

/// Jobs per state of one queue, indexed by [`JobState::index`].
pub(crate) type StateCounts = [u64; 5];

pub(crate) fn decode_counts(bytes: &[u8]) -> StoreResult<StateCounts> {
    if bytes.len() != 40 {
        return Err(corrupt("a job counter row is not 40 bytes"));
    }
    let mut counts = [0; 5];
    for (count, chunk) in counts.iter_mut().zip(bytes.chunks_exact(8)) {
        *count = u64::from_be_bytes(chunk.try_into().map_err(|_| corrupt("a job counter"))?);
    }
    Ok(counts)
}

fn encode_counts(counts: &StateCounts) -> Vec<u8> {
    counts.iter().flat_map(|count| count.to_be_bytes()).collect()
}

fn is_live(job: &Job) -> bool {
    !job.state.is_finished()
}

fn id_bytes(id: JobId) -> [u8; 16] {
    *id.as_bytes()
}

/// Where a queued job sits in its queue's index: `(queue, priority, run_at)`.
fn queue_place(job: &Job) -> Option<(&str, i32, DateTime<Utc>)> {
    (job.state == JobState::Queued).then_some((job.queue.as_str(), job.priority, job.run_at))
}

fn lease_end(job: &Job) -> Option<DateTime<Utc>> {
    (job.state == JobState::Running).then_some(job.lease_until).flatten()
}

fn end(job: &Job) -> Option<(JobState, DateTime<Utc>)> {
    job.state.is_finished().then_some(job.finished_at.map(|at| (job.state, at))).flatten()
}

/// The unique key a job holds: only while it is live.
fn held_key(job: &Job) -> Option<&str> {
    is_live(job).then_some(job.unique_key.as_deref()).flatten()
}

/// The counter a job counts in.
fn slot(job: &Job) -> (&str, JobState) {
    (job.queue.as_str(), job.state)
}

impl<'a> JobTx<'a> {
    pub(crate) fn new(tx: &'a Tx<'a>) -> Self {
        Self {
            rows: tx.tree(TreeId::Jobs),
            artifacts: tx.tree(TreeId::JobArtifacts),
            ready: tx.tree(TreeId::JobsReady),
            delayed: tx.tree(TreeId::JobsDelayed),
            leases: tx.tree(TreeId::JobsByLease),
            finished: tx.tree(TreeId::JobsFinished),
            unique: tx.tree(TreeId::JobsByUniqueKey),
            by_creator: tx.tree(TreeId::JobsByCreator),
            counts: tx.tree(TreeId::JobCounts),
        }
    }

    pub(crate) fn load(&self, id: JobId) -> TxResult<Option<Loaded>> {
        let Some(row) = self.rows.get(id.as_bytes())? else { return Ok(None) };
        let (job, payload_at) = decode_job_head(id, &row).or_abort()?;
        Ok(Some(Loaded { job, row, payload_at }))
    }

    /// The job, or `NotFound`.
    pub(crate) fn require(&self, id: JobId) -> TxResult<Loaded> {
        self.load(id)?.ok_or_else(|| abort(StoreError::NotFound))
    }

    /// Applies a transition: `loaded` becomes `after`, indexes and counters follow. A job entering the queue
    /// is ready if its `run_at` is not after `due_at`. Returns the new row.
    pub(crate) fn transition(&self, loaded: &Loaded, after: &Job, due_at: DateTime<Utc>) -> TxResult<IVec> {
        self.reindex(Some(&loaded.job), Some(after), due_at, None)?;
        self.rewrite(loaded, after)
    }

    /// [`transition`](Self::transition), with the row's payload replaced by `payload` (JSON bytes): a settle
    /// that discards it.
    pub(crate) fn transition_with_payload(
        &self,
        loaded: &Loaded,
        after: &Job,
        due_at: DateTime<Utc>,
        payload: &[u8],
    ) -> TxResult<IVec> {
        self.reindex(Some(&loaded.job), Some(after), due_at, None)?;
        let row = encode_job(after, payload).or_abort()?;
        self.rows.insert(&id_bytes(after.id), row.clone())?;
        Ok(row)
    }

    /// [`transition`](Self::transition) of a queued job known to sit in the ready index under `ready_key` (a
    /// claim's pick), which is removed without being looked up.
    pub(crate) fn transition_from_ready(
        &self,
        loaded: &Loaded,
        after: &Job,
        ready_key: &IVec,
        due_at: DateTime<Utc>,
    ) -> TxResult<IVec> {
        self.reindex(Some(&loaded.job), Some(after), due_at, Some(ready_key))?;
        self.rewrite(loaded, after)
    }

    fn rewrite(&self, loaded: &Loaded, after: &Job) -> TxResult<IVec> {
        let row = encode_job(after, loaded.payload()).or_abort()?;
        self.rows.insert(&id_bytes(after.id), row.clone())?;
        Ok(row)
    }

    /// Rewrites the loaded job's row with `payload` (JSON bytes) instead of its own; nothing indexed changes.
    pub(crate) fn replace_payload(&self, loaded: &Loaded, payload: &[u8]) -> TxResult<IVec> {
        let row = encode_job(&loaded.job, payload).or_abort()?;
        self.rows.insert(&id_bytes(loaded.job.id), row.clone())?;
        Ok(row)
    }

    /// Stores new jobs as [`JobStore::enqueue_many`](techhub_core::storage::JobStore::enqueue_many) says:
    /// a job whose unique key is live (also earlier in this batch) yields the live job, a known id is a
    /// `Duplicate`. Answers, per job, `None` if it was stored, or the live job holding its key (id and row).
    pub(crate) fn insert(&self, jobs: &[NewJob]) -> TxResult<Vec<Option<(JobId, IVec)>>> {
        let mut stored = Vec::with_capacity(jobs.len());
        for new in jobs {
            let job = &new.head;
            if let Some(key) = &job.unique_key
                && let Some(holder) = self.unique.get(key.as_bytes())?
            {
                let holder = uuid::Uuid::from_slice(&holder).map_err(|_| abort(corrupt("a unique key's job id")))?;
                let existing = self.load(holder.into())?.ok_or_else(|| abort(corrupt("a unique key names no job")))?;
                stored.push(Some((existing.job.id, existing.row)));
                continue;
            }
            if self.rows.get(job.id.as_bytes())?.is_some() {
                return Err(abort(Conflict::Duplicate));
            }
            self.rows.insert(&id_bytes(job.id), new.row.clone())?;
            // A job runs at once when it was made due (`run_at` not after its creation); else it waits.
            self.reindex(None, Some(job), job.created_at, None)?;
            stored.push(None);
        }
        Ok(stored)
    }

    /// Deletes a job, its artifact and its index entries.
    pub(crate) fn delete(&self, job: &Job) -> TxResult<()> {
        self.reindex(Some(job), None, DateTime::<Utc>::MIN_UTC, None)?;
        self.rows.remove(&id_bytes(job.id))?;
        if job.artifact.is_some() {
            self.artifacts.remove(&id_bytes(job.id))?;
        }
        Ok(())
    }

    /// The live job holding `key`, if any.
    pub(crate) fn unique_holder(&self, key: &str) -> TxResult<Option<IVec>> {
        self.unique.get(key.as_bytes())
    }

    /// Moves a due delayed job to the ready index; false if it is no longer delayed.
    pub(crate) fn promote(&self, keys: &QueueKeys, delayed_key: &[u8], priority: i32) -> TxResult<bool> {
        if self.delayed.get(delayed_key)?.is_none() {
            return Ok(false);
        }
        let entry = keys.decode_delayed(delayed_key).or_abort()?;
        self.delayed.remove(delayed_key)?;
        self.ready.insert(keys.ready(priority, entry.run_at, entry.id), IVec::default())?;
        Ok(true)
    }

    /// Moves the index entries and counters of a job from what `before` says to what `after` says (`None`:
    /// the job does not exist on that side). `ready_key`, if given, is where `before` sits in the ready index.
    fn reindex(
        &self,
        before: Option<&Job>,
        after: Option<&Job>,
        due_at: DateTime<Utc>,
        ready_key: Option<&IVec>,
    ) -> TxResult<()> {
        self.recount(before, after)?;
        self.requeue(before, after, due_at, ready_key)?;
        let (old, new) = (before.and_then(lease_end), after.and_then(lease_end));
        if old != new {
            if let (Some(until), Some(job)) = (old, before) {
                self.leases.remove(keys::lease(until, job.id))?;
            }
            if let (Some(until), Some(job)) = (new, after) {
                self.leases.insert(keys::lease(until, job.id), IVec::default())?;
            }
        }
        let (old, new) = (before.and_then(end), after.and_then(end));
        if old != new {
            if let (Some((state, at)), Some(job)) = (old, before) {
                self.finished.remove(keys::finished(state, at, job.id))?;
            }
            if let (Some((state, at)), Some(job)) = (new, after) {
                self.finished.insert(keys::finished(state, at, job.id), IVec::default())?;
            }
        }
        let (old, new) = (before.and_then(held_key), after.and_then(held_key));
        if old != new {
            if let (Some(key), Some(job)) = (old, before)
                && self.unique.get(key.as_bytes())?.is_some_and(|holder| holder == job.id.as_bytes())
            {
                self.unique.remove(key.as_bytes())?;
            }
            if let (Some(key), Some(job)) = (new, after) {
                self.unique.insert(key.as_bytes(), &id_bytes(job.id))?;
            }
        }
        let creator = |job: &Job| job.created_by.map(|user| (user, job.id));
        let (old, new) = (before.and_then(creator), after.and_then(creator));
        if old != new {
            if let Some((user, id)) = old {
                self.by_creator.remove(keys::owned(user.as_uuid(), id.as_bytes()))?;
            }
            if let Some((user, id)) = new {
                self.by_creator.insert(keys::owned(user.as_uuid(), id.as_bytes()), IVec::default())?;
            }
        }
        Ok(())
    }

    /// Keeps the ready and delayed indexes in step with the job's queued state.
    fn requeue(
        &self,
        before: Option<&Job>,
        after: Option<&Job>,
        due_at: DateTime<Utc>,
        ready_key: Option<&IVec>,
    ) -> TxResult<()> {
        let (old, new) = (before.and_then(queue_place), after.and_then(queue_place));
        if old == new {
            return Ok(());
        }
        if let (Some(_), Some(key)) = (old, ready_key) {
            self.ready.remove(key.clone())?;
        } else if let (Some((queue, priority, run_at)), Some(job)) = (old, before) {
            let keys = QueueKeys::new(queue).ok_or_else(|| abort(corrupt("a stored queue name is too long")))?;
            let ready = keys.ready(priority, run_at, job.id);
            if self.ready.get(&ready)?.is_some() {
                self.ready.remove(ready)?;
            } else {
                self.delayed.remove(keys.delayed(run_at, job.id))?;
            }
        }
        if let (Some((queue, priority, run_at)), Some(job)) = (new, after) {
            let keys = QueueKeys::new(queue).ok_or_else(|| abort(corrupt("a queue name is too long")))?;
            if run_at <= due_at {
                self.ready.insert(keys.ready(priority, run_at, job.id), IVec::default())?;
            } else {
                self.delayed.insert(keys.delayed(run_at, job.id), &keys::priority_value(priority))?;
            }
        }
        Ok(())
    }

    /// Moves one count from the job's old queue and state to its new ones.
    fn recount(&self, before: Option<&Job>, after: Option<&Job>) -> TxResult<()> {
        match (before.map(slot), after.map(slot)) {
            (Some(old), Some(new)) if old == new => Ok(()),
            (Some((old_queue, old_state)), Some((new_queue, new_state))) if old_queue == new_queue => {
                self.shift(old_queue, &[(old_state, -1), (new_state, 1)])
            }
            (old, new) => {
                if let Some((queue, state)) = old {
                    self.shift(queue, &[(state, -1)])?;
                }
                if let Some((queue, state)) = new {
                    self.shift(queue, &[(state, 1)])?;
                }
                Ok(())
            }
        }
    }

    fn shift(&self, queue: &str, changes: &[(JobState, i64)]) -> TxResult<()> {
        let mut counts = match self.counts.get(queue.as_bytes())? {
            Some(bytes) => decode_counts(&bytes).or_abort()?,
            None => [0; 5],
        };
        for (state, change) in changes {
            let count = &mut counts[state.index()];
            *count =
                count.checked_add_signed(*change).ok_or_else(|| abort(corrupt("a job counter went below zero")))?;
        }
        if counts.iter().all(|count| *count == 0) {
            self.counts.remove(queue.as_bytes())?;
        } else {
            self.counts.insert(queue.as_bytes(), encode_counts(&counts))?;
        }
        Ok(())
    }
}
