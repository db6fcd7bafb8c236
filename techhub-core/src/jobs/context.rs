//! What a handler gets: the job, progress reporting, cancellation, a log, and the hub.

use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::JobError;
use super::held_events::HeldEvent;
use crate::TechHub;
use crate::events::EventKind;
use crate::model::{Artifact, Job, JobId, Progress, SideWrite, UserId};

/// The context of one attempt. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    job: Job,
    hub: TechHub,
    cancel: CancellationToken,
    progress: Mutex<Option<Progress>>,
    artifact: Mutex<Option<Artifact>>,
    side_writes: Mutex<Vec<SideWrite>>,
    held_events: Mutex<Vec<HeldEvent>>,
}

impl JobContext {
    pub(crate) fn new(job: Job, hub: TechHub, cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                job,
                hub,
                cancel,
                progress: Mutex::new(None),
                artifact: Mutex::new(None),
                side_writes: Mutex::new(Vec::new()),
                held_events: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.inner.job.id
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.inner.job.kind
    }

    /// The queue it runs on.
    pub fn queue(&self) -> &str {
        &self.inner.job.queue
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.job.attempt
    }

    /// How many attempts the job has in all.
    pub fn max_attempts(&self) -> u32 {
        self.inner.job.max_attempts
    }

    /// Who enqueued the job.
    pub fn created_by(&self) -> Option<UserId> {
        self.inner.job.created_by
    }

    /// The raw payload.
    pub fn payload(&self) -> &Value {
        &self.inner.job.payload
    }

    /// The payload decoded into `T`; a payload that does not decode is a permanent failure.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        T::deserialize(&self.inner.job.payload)
            .map_err(|error| JobError::permanent(format!("the payload of a {} job is invalid: {error}", self.kind())))
    }

    /// A key that is the same for every attempt of this job (its unique key, or its id): use it to make side
    /// effects idempotent (an `Idempotency-Key` header, a dedup column).
    pub fn idempotency_key(&self) -> String {
        self.inner.job.unique_key.clone().unwrap_or_else(|| self.inner.job.id.to_string())
    }

    /// Reports progress. Cheap: it only records the latest value; the runtime writes it to storage and
    /// publishes it at a bounded rate, so calling it in a tight loop costs no write per call.
    pub fn progress(&self, percent: u8, message: impl Into<String>) {
        let message = message.into();
        let progress = Progress::new(percent, (!message.is_empty()).then_some(message));
        *self.inner.progress.lock().unwrap_or_else(PoisonError::into_inner) = Some(progress);
    }

    /// Whether the job was asked to stop (cancelled, timed out, or the runtime is shutting down).
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when the job is asked to stop: `select!` on it around long awaits.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }

    /// The cancellation token itself, to hand to code that takes one.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Writes a line to the job's log: traced with the job's id and published as a `job.log` event.
    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        let job = &self.inner.job;
        tracing::info!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, "{line}");
        self.inner.hub.events().publish(
            self.inner.hub.now(),
            EventKind::JobLog,
            job.id,
            job.created_by,
            json!({ "job_id": job.id, "line": line }),
        );
    }

    /// Attaches a file to the job's result (an export); stored when the attempt succeeds.
    pub fn set_artifact(&self, artifact: Artifact) {
        *self.inner.artifact.lock().unwrap_or_else(PoisonError::into_inner) = Some(artifact);
    }

    /// Adds `write` to this attempt's settle: it is stored in the same atomic write as the attempt's outcome
    /// (whatever that outcome is), and only if the attempt's lease still holds then. A write that must not be
    /// lost with a lost lease, nor stored without the attempt's outcome, belongs here rather than in a store
    /// call of the handler's own.
    pub fn settle_with(&self, write: SideWrite) {
        self.inner.side_writes.lock().unwrap_or_else(PoisonError::into_inner).push(write);
    }

    /// Publishes an event once this attempt's settle is stored (news of a [`JobContext::settle_with`] write);
    /// it is dropped if the settle is refused.
    pub(crate) fn publish_when_settled(
        &self,
        kind: EventKind,
        subject: impl Into<uuid::Uuid>,
        owner: Option<UserId>,
        data: Value,
    ) {
        let event = HeldEvent { kind, subject: subject.into(), owner, data };
        self.inner.held_events.lock().unwrap_or_else(PoisonError::into_inner).push(event);
    }

    /// The hub, for handlers that call services.
    pub fn hub(&self) -> &TechHub {
        &self.inner.hub
    }

    /// The progress reported since the last call, if any.
    pub(crate) fn take_progress(&self) -> Option<Progress> {
        self.inner.progress.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// The writes the handler added to the settle.
    pub(crate) fn take_side_writes(&self) -> Vec<SideWrite> {
        std::mem::take(&mut *self.inner.side_writes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The events to publish once the settle is stored.
    pub(crate) fn take_held_events(&self) -> Vec<HeldEvent> {
        std::mem::take(&mut *self.inner.held_events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The artifact the handler attached, if any.
    pub(crate) fn take_artifact(&self) -> Option<Artifact> {
        self.inner.artifact.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let job = &self.inner.job;
        f.debug_struct("JobContext")
            .field("job_id", &job.id)
            .field("kind", &job.kind)
            .field("attempt", &job.attempt)
            .finish_non_exhaustive()
    }
}
