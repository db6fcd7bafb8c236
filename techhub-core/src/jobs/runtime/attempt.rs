//! One attempt of one claimed job: run its handler under supervision (progress, heartbeats, cancel, timeout,
//! shutdown) and record how it ended, as a settlement written with others in one batch.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::{Instant, interval_at, sleep_until};
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::settler::{Finished, Settler};
use crate::TechHub;
use crate::events::EventKind;
use crate::jobs::telemetry;
use crate::jobs::{JobContext, JobError};
use crate::model::{Job, JobFailure, Lease, Retry, Settlement};
use crate::storage::StoreError;

/// What an attempt needs besides its job; shared by every attempt of one queue.
pub(super) struct Attempts {
    pub(super) hub: TechHub,
    pub(super) settings: Arc<Settings>,
    pub(super) stop: CancellationToken,
    pub(super) settler: Settler,
}
/// Why a running handler was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancelled,
    TimedOut,
    Shutdown,
    LeaseLost,
}

/// The first reason a handler was asked to stop, and when it will be aborted if it does not.
struct Stopping {
    reason: Option<StopReason>,
    abort_at: Option<Instant>,
}

impl Stopping {
    fn ask(&mut self, reason: StopReason, token: &CancellationToken, grace: Duration) {
        if self.reason.is_none() {
            self.reason = Some(reason);
            token.cancel();
            self.abort_at = Some(Instant::now() + grace);
        }
    }
}

/// How the handler's task ended.
enum Ending {
    Done(Value),
    Failed(JobError),
    Panicked(String),
    Aborted,
}

/// Aborts the handler's task if supervision is dropped (the runtime was dropped: a simulated crash).
struct AbortOnDrop(JoinHandle<Result<Value, JobError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Attempts {
    /// Runs one claimed job's attempt to its end and records its settlement: in a batch this worker writes
    /// now if nobody else is writing, else in the running writer's next batch, without waiting for it. `held`
    /// bounds the jobs claimed but not yet recorded and travels with the settlement until its batch is written.
    pub(super) async fn run(&self, job: Job, held: OwnedSemaphorePermit) {
        let Some(lease) = job.lease() else { return };
        let started = Instant::now();
        if let Some(settlement) = self.attempt(job, &lease, started).await {
            self.settler.settle(Finished { settlement, job_id: lease.job_id, started, held }).await;
        }
    }

    /// Runs the handler and says how to record the attempt (`None`: the lease was lost, nothing to record).
    async fn attempt(&self, job: Job, lease: &Lease, started: Instant) -> Option<Settlement> {
        // Registered before anyone hears the job started, so a cancel sent on that news reaches the handler
        // at once. (One sent in the instant between the claim and this line reaches it at the next heartbeat.)
        let token = CancellationToken::new();
        self.hub.signals().started(job.id, token.clone());
        telemetry::job_event(&self.hub, EventKind::JobStarted, &job);
        let Some(registered) = self.hub.handlers().get(&job.kind).cloned() else {
            self.hub.signals().finished(job.id);
            let error = format!("no handler for job kind {:?} is registered in this process", job.kind);
            return Some(self.failure(lease, job.attempt, JobError::Permanent(error)));
        };
        let timeout = registered.options.timeout.unwrap_or(self.settings.job_timeout);
        let (id, attempt) = (job.id, job.attempt);
        // The context owns the job from here: the settlement needs only its id and attempt.
        let ctx = JobContext::new(job, self.hub.clone(), token.clone());
        let handler = registered.handler.clone();
        let handler_ctx = ctx.clone();
        let mut task = AbortOnDrop(tokio::spawn(async move { handler.run(handler_ctx).await }));

        let (ending, stop_reason) = self.supervise(&mut task, &ctx, lease, &token, started + timeout).await;
        self.hub.signals().finished(id);
        self.settlement(lease, attempt, &ctx, ending, stop_reason, timeout)
    }

    /// Waits for the handler while flushing progress, heartbeating, and enforcing cancel, timeout and shutdown.
    async fn supervise(
        &self,
        task: &mut AbortOnDrop,
        ctx: &JobContext,
        lease: &Lease,
        token: &CancellationToken,
        timeout_at: Instant,
    ) -> (Ending, Option<StopReason>) {
        let settings = &self.settings;
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut progress = interval_at(Instant::now() + settings.progress_interval, settings.progress_interval);
        let mut heartbeat = interval_at(Instant::now() + settings.heartbeat_interval, settings.heartbeat_interval);
        let mut stopping = Stopping { reason: None, abort_at: None };
        let mut shutdown_at: Option<Instant> = None;
        loop {
            tokio::select! {
                joined = &mut task.0 => {
                    let ending = match joined {
                        Ok(Ok(value)) => Ending::Done(value),
                        Ok(Err(error)) => Ending::Failed(error),
                        Err(error) if error.is_panic() => Ending::Panicked(panic_message(error.into_panic())),
                        Err(_) => Ending::Aborted,
                    };
                    // A handler that stopped on a local cancel may finish before the cancel branch below ran:
                    // its token tells.
                    let reason = stopping.reason.or_else(|| token.is_cancelled().then_some(StopReason::Cancelled));
                    return (ending, reason);
                }
                _ = progress.tick() => {
                    if let Err(reason) = self.flush_progress(ctx, lease).await {
                        stopping.ask(reason, token, settings.stop_grace);
                    }
                }
                _ = heartbeat.tick() => {
                    match self.hub.storage().heartbeat(lease, self.hub.now(), settings.lease).await {
                        Ok(current) if current.cancel_requested => stopping.ask(StopReason::Cancelled, token, settings.stop_grace),
                        Ok(_) => {}
                        Err(StoreError::Conflict(_) | StoreError::NotFound) => {
                            stopping.ask(StopReason::LeaseLost, token, settings.stop_grace);
                        }
                        Err(error) => tracing::warn!(job_id = %lease.job_id, error = %error, "heartbeat failed"),
                    }
                }
                // A local cancel through the job service cancels the token directly.
                () = token.cancelled(), if stopping.reason.is_none() => {
                    stopping.ask(StopReason::Cancelled, token, settings.stop_grace);
                }
                () = sleep_until(timeout_at), if stopping.reason.is_none() => {
                    stopping.ask(StopReason::TimedOut, token, settings.stop_grace);
                }
                () = self.stop.cancelled(), if shutdown_at.is_none() => {
                    shutdown_at = Some(Instant::now() + settings.shutdown_grace);
                }
                () = sleep_until(shutdown_at.unwrap_or(far)), if shutdown_at.is_some() && stopping.reason.is_none() => {
                    stopping.ask(StopReason::Shutdown, token, settings.stop_grace);
                }
                () = sleep_until(stopping.abort_at.unwrap_or(far)), if stopping.abort_at.is_some() => {
                    task.0.abort();
                    return (Ending::Aborted, stopping.reason);
                }
            }
        }
    }

    /// Writes and publishes the latest progress, if the handler reported any since the last flush.
    async fn flush_progress(&self, ctx: &JobContext, lease: &Lease) -> Result<(), StopReason> {
        let Some(progress) = ctx.take_progress() else { return Ok(()) };
        match self.hub.storage().report_progress(lease, progress, self.hub.now()).await {
            Ok(job) => {
                telemetry::progress_event(&self.hub, &job);
                Ok(())
            }
            Err(StoreError::Conflict(_) | StoreError::NotFound) => Err(StopReason::LeaseLost),
            Err(error) => {
                tracing::warn!(job_id = %lease.job_id, error = %error, "writing progress failed");
                Ok(())
            }
        }
    }

    /// How the attempt is recorded, given how the handler ended and why it was asked to stop.
    fn settlement(
        &self,
        lease: &Lease,
        attempt: u32,
        ctx: &JobContext,
        ending: Ending,
        stop_reason: Option<StopReason>,
        timeout: Duration,
    ) -> Option<Settlement> {
        let lease = lease.clone();
        let settlement = match (ending, stop_reason) {
            (_, Some(StopReason::LeaseLost)) => {
                tracing::warn!(job_id = %lease.job_id, attempt, "lease lost to another worker; this attempt's result is discarded");
                return None;
            }
            (Ending::Done(result), _) => Settlement::Complete { lease, result, artifact: ctx.take_artifact() },
            (Ending::Panicked(message), _) => {
                self.failure(&lease, attempt, JobError::Retry(format!("the handler panicked: {message}")))
            }
            (Ending::Failed(error), None) => self.failure(&lease, attempt, error),
            (Ending::Failed(_) | Ending::Aborted, Some(StopReason::Cancelled)) => {
                Settlement::AcknowledgeCancel { lease }
            }
            (Ending::Failed(_) | Ending::Aborted, Some(StopReason::TimedOut)) => {
                let error = format!("timed out after {} s", timeout.as_secs_f64());
                self.failure(&lease, attempt, JobError::Retry(error))
            }
            (Ending::Failed(_) | Ending::Aborted, Some(StopReason::Shutdown)) => Settlement::Release { lease },
            (Ending::Aborted, None) => {
                self.failure(&lease, attempt, JobError::Retry("the handler was aborted".to_owned()))
            }
        };
        Some(settlement)
    }

    /// A failed attempt, retried after the backoff (or the handler's own delay) unless it is permanent.
    fn failure(&self, lease: &Lease, attempt: u32, error: JobError) -> Settlement {
        let retry = match &error {
            JobError::Retry(_) => Retry::After(self.settings.backoff.delay(attempt)),
            JobError::RetryAfter(delay, _) => Retry::After(*delay),
            JobError::Permanent(_) => Retry::Never,
        };
        Settlement::Fail { lease: lease.clone(), failure: JobFailure { error: error.to_string(), retry } }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned())
}
