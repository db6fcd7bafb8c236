//! Background jobs: what is stored, the lease a worker holds, and how an attempt ends.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DeliveryRecord, JobId, UserId};
use crate::Error;

/// The queue a job goes to when none is named.
pub const DEFAULT_QUEUE: &str = "default";
/// How many attempts a job gets when none is named.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The longest queue, kind or unique-key name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Where a job is in its life. `Succeeded`, `Failed` and `Cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for `run_at` and a free worker.
    Queued,
    /// Leased by a worker.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Out of attempts, or failed permanently; the last error is kept.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [Self; 5] = [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::Cancelled];

    /// Whether the job is done for good.
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// `"queued"`, `"running"`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state's position in [`JobState::ALL`], for per-state arrays of counters.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| Error::invalid_field("state", format!("unknown job state {s:?}")))
    }
}

/// How far a running job got, as its handler last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    /// What the handler is doing, for people watching.
    pub message: Option<String>,
}

impl Progress {
    /// Progress at `percent` (clamped to 100) with an optional message.
    pub fn new(percent: u8, message: Option<String>) -> Self {
        Self { percent: percent.min(100), message }
    }
}

/// Names the worker that holds a lease (for example `host:pid:queue:n`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    /// A worker id from any name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({:?})", self.0)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fencing token of one attempt: the job, the worker that claimed it, and the attempt number.
///
/// Every write a worker makes to a running job presents its lease; the store refuses it with
/// [`Conflict::LeaseLost`](crate::storage::Conflict::LeaseLost) once the job has moved on (requeued after the
/// lease expired, claimed by another worker, or claimed again by the same worker in a later attempt).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The leased job.
    pub job_id: JobId,
    /// The worker holding it.
    pub worker: WorkerId,
    /// The attempt the lease belongs to.
    pub attempt: u32,
}

/// A file a job produced (an export), stored beside the job.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its media type (`text/csv`).
    pub content_type: String,
    /// A suggested file name for downloads.
    pub file_name: Option<String>,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Artifact {
    /// What a job record keeps about this artifact.
    pub fn info(&self) -> ArtifactInfo {
        ArtifactInfo {
            content_type: self.content_type.clone(),
            file_name: self.file_name.clone(),
            size: self.bytes.len() as u64,
        }
    }
}

impl fmt::Debug for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exports hold user data: show the shape, not the content.
        f.debug_struct("Artifact")
            .field("content_type", &self.content_type)
            .field("file_name", &self.file_name)
            .field("size", &self.bytes.len())
            .finish()
    }
}

/// What a job record says about its artifact; the bytes are fetched separately, so listing jobs never
/// copies files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    /// Its media type.
    pub content_type: String,
    /// A suggested file name.
    pub file_name: Option<String>,
    /// Its size in bytes.
    pub size: u64,
}

/// A background job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The queue it runs on (workers subscribe to queues).
    pub queue: String,
    /// Which handler runs it (`email.welcome`, `users.import`).
    pub kind: String,
    /// The handler's input.
    pub payload: Value,
    /// Where it is in its life.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started so far (the running attempt included).
    pub attempt: u32,
    /// Attempts allowed before it fails for good.
    pub max_attempts: u32,
    /// Not claimable before this time.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// What its handler last reported.
    pub progress: Progress,
    /// The error of the latest failed attempt.
    pub last_error: Option<String>,
    /// The handler's result, once succeeded.
    pub result: Option<Value>,
    /// The file it produced, if any.
    pub artifact: Option<ArtifactInfo>,
    /// Who enqueued it (`None` for the system).
    pub created_by: Option<UserId>,
    /// While a job with this key is queued or running, enqueueing another with it returns the first.
    pub unique_key: Option<String>,
    /// The worker holding the lease, while running.
    pub lease_holder: Option<WorkerId>,
    /// When the lease runs out, while running.
    pub lease_until: Option<DateTime<Utc>>,
    /// Set when a running job was asked to stop; its handler sees it and the runtime marks it cancelled.
    pub cancel_requested: bool,
}

impl Job {
    /// A queued job made from `spec` at `now`, after checking it.
    pub fn new(spec: NewJob, now: DateTime<Utc>) -> Result<Self, Error> {
        let queue = spec.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        let max_attempts = spec.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        check_name("queue", &queue)?;
        check_name("kind", &spec.kind)?;
        if let Some(key) = &spec.unique_key {
            check_name("unique_key", key)?;
        }
        if max_attempts == 0 {
            return Err(Error::invalid_field("max_attempts", "a job needs at least one attempt"));
        }
        Ok(Self {
            id: JobId::new(),
            queue,
            kind: spec.kind,
            payload: spec.payload,
            state: JobState::Queued,
            priority: spec.priority,
            attempt: 0,
            max_attempts,
            run_at: spec.run_at.unwrap_or(now),
            created_at: now,
            started_at: None,
            finished_at: None,
            progress: Progress::default(),
            last_error: None,
            result: None,
            artifact: None,
            created_by: spec.created_by,
            unique_key: spec.unique_key,
            lease_holder: None,
            lease_until: None,
            cancel_requested: false,
        })
    }

    /// The lease of the running attempt, if the job is running.
    pub fn lease(&self) -> Option<Lease> {
        match (&self.state, &self.lease_holder) {
            (JobState::Running, Some(worker)) => {
                Some(Lease { job_id: self.id, worker: worker.clone(), attempt: self.attempt })
            }
            _ => None,
        }
    }

    /// Whether `lease` is the one this job is running under.
    pub fn is_leased_by(&self, lease: &Lease) -> bool {
        self.state == JobState::Running
            && self.id == lease.job_id
            && self.attempt == lease.attempt
            && self.lease_holder.as_ref() == Some(&lease.worker)
    }

    /// Whether the job has attempts left after the current one.
    pub fn has_attempts_left(&self) -> bool {
        self.attempt < self.max_attempts
    }
}

/// The state transitions of the storage contract ([`JobStore`](crate::storage::JobStore)), the same for every
/// store: a store checks the lease or state, applies one of these, and writes the job back (with its indexes).
impl Job {
    /// Ends the job in the final `state` at `now`, dropping its lease.
    pub fn finish(&mut self, state: JobState, now: DateTime<Utc>) {
        self.state = state;
        self.finished_at = Some(now);
        self.lease_holder = None;
        self.lease_until = None;
    }

    /// Puts the job back in its queue, due at `run_at`, dropping its lease.
    pub fn requeue(&mut self, run_at: DateTime<Utc>) {
        self.state = JobState::Queued;
        self.run_at = run_at;
        self.lease_holder = None;
        self.lease_until = None;
    }

    /// The attempt succeeded with `result` (and the described artifact).
    pub fn succeed(&mut self, result: Value, artifact: Option<ArtifactInfo>, now: DateTime<Utc>) {
        self.finish(JobState::Succeeded, now);
        self.result = Some(result);
        self.progress.percent = 100;
        self.artifact = artifact;
    }

    /// The attempt failed: queued again after the delay while attempts are left and a retry is allowed, else
    /// failed for good; the error is kept either way.
    pub fn fail_attempt(&mut self, failure: JobFailure, now: DateTime<Utc>) {
        self.last_error = Some(failure.error);
        match failure.retry {
            Retry::After(delay) if self.has_attempts_left() => self.requeue(crate::clock::add(now, delay)),
            Retry::After(_) | Retry::Never => self.finish(JobState::Failed, now),
        }
    }

    /// The attempt is given back without being charged (a graceful shutdown).
    pub fn release(&mut self, now: DateTime<Utc>) {
        self.attempt = self.attempt.saturating_sub(1);
        self.requeue(now);
    }

    /// Its worker vanished and the lease ran out: queued again while attempts are left, else failed.
    pub fn rescue(&mut self, now: DateTime<Utc>) {
        if self.has_attempts_left() {
            self.requeue(now);
        } else {
            self.last_error = Some("lease expired".to_owned());
            self.finish(JobState::Failed, now);
        }
    }

    /// A failed or cancelled job queued again with a fresh attempt budget, as if new.
    pub fn restart(&mut self, now: DateTime<Utc>) {
        self.requeue(now);
        self.attempt = 0;
        self.finished_at = None;
        self.started_at = None;
        self.cancel_requested = false;
        self.result = None;
        self.progress = Progress::default();
    }
}

/// How one attempt ends, in a batched settle ([`JobStore::settle_many`](crate::storage::JobStore::settle_many)):
/// each carries the lease it is fenced by, and the [`SideWrite`]s stored with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// As [`JobStore::complete`](crate::storage::JobStore::complete).
    Complete {
        /// The attempt's lease.
        lease: Lease,
        /// The handler's result.
        result: Value,
        /// The file it produced, if any.
        artifact: Option<Artifact>,
        /// What else this settle writes.
        side_writes: Vec<SideWrite>,
    },
    /// As [`JobStore::fail`](crate::storage::JobStore::fail).
    Fail {
        /// The attempt's lease.
        lease: Lease,
        /// The error and whether to retry.
        failure: JobFailure,
        /// What else this settle writes.
        side_writes: Vec<SideWrite>,
    },
    /// As [`JobStore::release`](crate::storage::JobStore::release).
    Release {
        /// The attempt's lease.
        lease: Lease,
        /// What else this settle writes.
        side_writes: Vec<SideWrite>,
    },
    /// As [`JobStore::acknowledge_cancel`](crate::storage::JobStore::acknowledge_cancel).
    AcknowledgeCancel {
        /// The attempt's lease.
        lease: Lease,
        /// What else this settle writes.
        side_writes: Vec<SideWrite>,
    },
}

/// What else a settle writes besides its job's new state: stored in the same atomic write, under the same lease
/// fence, so a settle refused for a stale lease writes none of them. A closed set, so that every store can
/// apply each one inside its own transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum SideWrite {
    /// The job's payload becomes `null` if the settle finishes the job (succeeded, failed for good, cancelled),
    /// as [`JobStore::discard_job_payload`](crate::storage::JobStore::discard_job_payload) would; a job queued
    /// again keeps it, since its next attempt needs it.
    DiscardPayload,
    /// A notification's delivery attempt and the status it leads to
    /// ([`Notification::record_delivery`](super::Notification::record_delivery)).
    RecordDelivery(DeliveryRecord),
}

impl Settlement {
    /// The lease this settlement is fenced by.
    pub fn lease(&self) -> &Lease {
        match self {
            Self::Complete { lease, .. }
            | Self::Fail { lease, .. }
            | Self::Release { lease, .. }
            | Self::AcknowledgeCancel { lease, .. } => lease,
        }
    }

    /// The artifact a completion stores beside the job, if any.
    pub fn artifact(&self) -> Option<&Artifact> {
        match self {
            Self::Complete { artifact, .. } => artifact.as_ref(),
            Self::Fail { .. } | Self::Release { .. } | Self::AcknowledgeCancel { .. } => None,
        }
    }

    /// What else this settle writes.
    pub fn side_writes(&self) -> &[SideWrite] {
        match self {
            Self::Complete { side_writes, .. }
            | Self::Fail { side_writes, .. }
            | Self::Release { side_writes, .. }
            | Self::AcknowledgeCancel { side_writes, .. } => side_writes,
        }
    }

    /// Adds `write` to what this settle writes.
    #[must_use]
    pub fn with_side_write(mut self, write: SideWrite) -> Self {
        match &mut self {
            Self::Complete { side_writes, .. }
            | Self::Fail { side_writes, .. }
            | Self::Release { side_writes, .. }
            | Self::AcknowledgeCancel { side_writes, .. } => side_writes.push(write),
        }
        self
    }

    /// The delivery records this settle writes on notifications.
    pub fn deliveries(&self) -> impl Iterator<Item = &DeliveryRecord> {
        self.side_writes().iter().filter_map(|write| match write {
            SideWrite::RecordDelivery(record) => Some(record),
            SideWrite::DiscardPayload => None,
        })
    }

    /// Whether this settle discards the payload of `settled`, the job as [`Settlement::apply`] left it.
    pub fn discards_payload(&self, settled: &Job) -> bool {
        settled.state.is_finished() && self.side_writes().contains(&SideWrite::DiscardPayload)
    }

    /// Applies the transition the single-job method of the same name applies to `job` (whose lease the
    /// store has checked) at `now`, and the [`SideWrite::DiscardPayload`] this settle carries.
    pub fn apply(&self, job: &mut Job, now: DateTime<Utc>) {
        match self {
            Self::Complete { result, artifact, .. } => {
                job.succeed(result.clone(), artifact.as_ref().map(Artifact::info), now);
            }
            Self::Fail { failure, .. } => job.fail_attempt(failure.clone(), now),
            Self::Release { .. } => job.release(now),
            Self::AcknowledgeCancel { .. } => job.finish(JobState::Cancelled, now),
        }
        if self.discards_payload(job) {
            job.payload = Value::Null;
        }
    }
}

fn check_name(field: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid_field(field, format!("{field} must not be empty")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_field(field, format!("{field} is longer than {MAX_NAME_BYTES} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_field(field, format!("{field} must not contain control characters")));
    }
    Ok(())
}

/// What to enqueue: a builder for [`Job::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The queue; `None` for the handler's queue, else [`DEFAULT_QUEUE`].
    pub queue: Option<String>,
    /// The handler's kind.
    pub kind: String,
    /// The handler's input.
    pub payload: Value,
    /// Higher runs first (default 0).
    pub priority: i32,
    /// Not before this time (default: now).
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts allowed; `None` for the handler's default, else [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: Option<u32>,
    /// Deduplication key while a job with it is unfinished.
    pub unique_key: Option<String>,
    /// Who asked for it.
    pub created_by: Option<UserId>,
}

impl NewJob {
    /// A job of `kind` whose payload is `payload` serialized to JSON.
    pub fn typed<P: Serialize>(kind: impl Into<String>, payload: &P) -> Result<Self, Error> {
        let payload = serde_json::to_value(payload)
            .map_err(|error| Error::invalid_field("payload", format!("the payload does not serialize: {error}")))?;
        Ok(Self::new(kind, payload))
    }

    /// A job of `kind` with `payload`, on its handler's queue (or the default queue).
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            queue: None,
            kind: kind.into(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: None,
            unique_key: None,
            created_by: None,
        }
    }

    /// On `queue`.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// With `priority` (higher first).
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Not before `run_at`.
    #[must_use]
    pub fn run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }

    /// With `max_attempts` attempts.
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Deduplicated by `key`.
    #[must_use]
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Enqueued by `user`.
    #[must_use]
    pub fn created_by(mut self, user: UserId) -> Self {
        self.created_by = Some(user);
        self
    }
}

/// How a failed attempt ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// The error, kept as the job's `last_error`.
    pub error: String,
    /// Whether to try again.
    pub retry: Retry,
}

/// Whether a failed attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Requeue at `now + delay` if attempts are left; otherwise the job fails.
    After(Duration),
    /// Fail now, whatever attempts are left.
    Never,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs enqueued by this user.
    pub created_by: Option<UserId>,
}

impl JobFilter {
    /// Whether `job` passes the filter.
    pub fn matches(&self, job: &Job) -> bool {
        self.queue.as_ref().is_none_or(|queue| *queue == job.queue)
            && self.state.is_none_or(|state| state == job.state)
            && self.kind.as_ref().is_none_or(|kind| *kind == job.kind)
            && self.created_by.is_none_or(|user| Some(user) == job.created_by)
    }
}

/// How many jobs of one queue are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// The queue.
    pub queue: String,
    /// Jobs waiting.
    pub queued: u64,
    /// Jobs leased.
    pub running: u64,
    /// Jobs finished with a result (not yet pruned).
    pub succeeded: u64,
    /// Jobs failed for good (not yet pruned).
    pub failed: u64,
    /// Jobs cancelled (not yet pruned).
    pub cancelled: u64,
    /// The earliest `run_at` among queued jobs: how long the oldest has waited, given a clock.
    pub oldest_queued_run_at: Option<DateTime<Utc>>,
}

impl QueueCounts {
    /// The count for `state`.
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Succeeded => self.succeeded,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
        }
    }

    /// Mutable access to the count for `state`, for stores that keep counters.
    pub fn get_mut(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_job_refuses_bad_names_and_zero_attempts() {
        let now = DateTime::<Utc>::default();
        assert!(Job::new(NewJob::new("", Value::Null), now).is_err());
        assert!(Job::new(NewJob::new("k", Value::Null).queue(" "), now).is_err());
        assert!(Job::new(NewJob::new("k", Value::Null).max_attempts(0), now).is_err());
        assert!(Job::new(NewJob::new("k", Value::Null).unique_key("a\nb"), now).is_err());
        assert!(Job::new(NewJob::new("k".repeat(MAX_NAME_BYTES + 1), Value::Null), now).is_err());
        let job = Job::new(NewJob::new("k", Value::Null), now).expect("valid");
        assert_eq!((job.state, job.attempt, job.run_at, job.queue.as_str()), (JobState::Queued, 0, now, DEFAULT_QUEUE));
    }

    #[test]
    fn job_states_parse_and_print() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().expect("parses"), state);
            assert_eq!(JobState::ALL[state.index()], state);
        }
    }
}
