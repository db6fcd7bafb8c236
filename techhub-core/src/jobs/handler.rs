//! Job handlers: the code that runs a kind of job, registered on the builder.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::JobContext;
use crate::{Error, ErrorKind};

/// How an attempt failed, and whether to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A transient failure: retry after the runtime's exponential backoff, while attempts are left.
    #[error("{0}")]
    Retry(String),
    /// A transient failure with a known wait (a rate limit's `Retry-After`), while attempts are left.
    #[error("{1}")]
    RetryAfter(Duration, String),
    /// Retrying cannot help (bad payload, missing user): the job fails now.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    /// A transient failure.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::Retry(message.into())
    }

    /// A transient failure to retry after `delay`.
    pub fn retry_after(delay: Duration, message: impl Into<String>) -> Self {
        Self::RetryAfter(delay, message.into())
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }
}

impl From<Error> for JobError {
    /// Service errors keep their meaning: bad input, missing or forbidden things are permanent; storage
    /// trouble and rate limits are worth retrying.
    fn from(error: Error) -> Self {
        match error.kind() {
            ErrorKind::Unavailable | ErrorKind::Internal | ErrorKind::RateLimited | ErrorKind::Conflict => {
                Self::Retry(error.to_string())
            }
            ErrorKind::InvalidInput | ErrorKind::Unauthenticated | ErrorKind::Forbidden | ErrorKind::NotFound => {
                Self::Permanent(error.to_string())
            }
        }
    }
}

/// Runs jobs of one kind. Return the job's result (any JSON) or a [`JobError`].
///
/// Handlers are told the attempt number ([`JobContext::attempt`]) and an idempotency key: a job runs at least
/// once, and again after a crash, so side effects should be safe to repeat. A panic is a failed attempt.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one attempt.
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError>;
}

/// A handler with a typed payload and result: the runtime decodes and encodes the JSON.
#[async_trait]
pub trait TypedJobHandler: Send + Sync + 'static {
    /// The payload, decoded from the job's JSON (a payload that does not decode fails the job permanently).
    type Payload: DeserializeOwned + Send + 'static;
    /// The result, stored as JSON.
    type Output: Serialize + Send + 'static;

    /// Runs one attempt.
    async fn run(&self, payload: Self::Payload, ctx: JobContext) -> Result<Self::Output, JobError>;
}

/// Adapts a [`TypedJobHandler`] into a [`JobHandler`].
#[derive(Debug, Clone, Copy)]
pub struct Typed<H>(pub H);

#[async_trait]
impl<H: TypedJobHandler> JobHandler for Typed<H> {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let payload: H::Payload = ctx.payload_as()?;
        let output = self.0.run(payload, ctx).await?;
        serde_json::to_value(output).map_err(|error| JobError::permanent(format!("result does not serialize: {error}")))
    }
}

/// A handler from an async closure: `handler_fn(|ctx| async move { Ok(json!({})) })`.
pub fn handler_fn<F, Fut>(run: F) -> impl JobHandler
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
{
    FnHandler(run)
}

struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> JobHandler for FnHandler<F>
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
{
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        (self.0)(ctx).await
    }
}

/// Defaults a handler gives the jobs of its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerOptions {
    /// The queue its jobs go to unless the enqueuer names one.
    pub queue: Option<String>,
    /// Attempts unless the enqueuer names a number.
    pub max_attempts: Option<u32>,
    /// How long one attempt may run (else the runtime's default).
    pub timeout: Option<Duration>,
    /// Whether a job's payload is replaced with `null` once the job finished (succeeded, failed for good or
    /// cancelled): for payloads holding user data that must not stay at rest (an import's rows).
    pub discard_payload_when_finished: bool,
}

impl HandlerOptions {
    /// Jobs go to `queue` by default.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Jobs get `max_attempts` by default.
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// One attempt may run for `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A job's payload is discarded once the job finished (see
    /// [`HandlerOptions::discard_payload_when_finished`]).
    #[must_use]
    pub fn discard_payload_when_finished(mut self) -> Self {
        self.discard_payload_when_finished = true;
        self
    }
}

/// Discards the payload of `job` if it finished and its handler asks for it; a failure is logged (the
/// payload then stays until the job is pruned).
pub(crate) async fn discard_finished_payload(hub: &crate::TechHub, job: &crate::model::Job) {
    let wanted =
        hub.handlers().get(&job.kind).is_some_and(|registered| registered.options.discard_payload_when_finished);
    if !wanted || !job.state.is_finished() {
        return;
    }
    if let Err(error) = hub.storage().discard_job_payload(job.id).await {
        tracing::warn!(job_id = %job.id, %error, "discarding a finished job's payload failed");
    }
}

/// A registered handler and its options.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) handler: Arc<dyn JobHandler>,
    pub(crate) options: HandlerOptions,
}

/// Handlers by kind.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    handlers: HashMap<String, Registered>,
}

impl Registry {
    pub(crate) fn insert(&mut self, kind: String, handler: Arc<dyn JobHandler>, options: HandlerOptions) {
        self.handlers.insert(kind, Registered { handler, options });
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Registered> {
        self.handlers.get(kind)
    }

    pub(crate) fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<&str> = self.kinds().collect();
        kinds.sort_unstable();
        f.debug_struct("Registry").field("kinds", &kinds).finish()
    }
}
