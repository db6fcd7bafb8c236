//! One worker: claim a job, run its handler under supervision, settle the attempt, repeat.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::{Instant, interval_at, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::Settings;
use crate::TechHub;
use crate::events::EventKind;
use crate::jobs::telemetry;
use crate::jobs::{JobContext, JobError};
use crate::model::{Job, JobFailure, JobState, Lease, RateLimit, Retry, WorkerId};
use crate::storage::{Conflict, StoreError};

pub(super) struct Worker {
    pub(super) hub: TechHub,
    pub(super) id: WorkerId,
    pub(super) queues: Vec<String>,
    /// The queue's start rate, enforced by the store (one bucket for every process sharing it).
    pub(super) rate_limit: Option<RateLimit>,
    pub(super) settings: Arc<Settings>,
    pub(super) stop: CancellationToken,
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

impl Worker {
    pub(super) async fn run(self) {
        let wake = self.hub.signals().queue(&self.queues[0]);
        // A job claimed while the previous one was being recorded (see `claim_ahead`).
        let mut next: Option<Job> = None;
        while !self.stop.is_cancelled() {
            if let Some(job) = next.take() {
                next = self.run_job(job).await;
                continue;
            }
            if !self.wait_for_rate_limit().await {
                break;
            }
            match self.hub.storage().claim(&self.queues, &self.id, self.hub.now(), self.settings.lease).await {
                Ok(Some(job)) => next = self.run_job(job).await,
                Ok(None) => {
                    self.return_start().await;
                    tokio::select! {
                        () = wake.notified() => {}
                        () = sleep(self.settings.poll_interval) => {}
                        () = self.stop.cancelled() => break,
                    }
                }
                Err(error) => {
                    tracing::warn!(worker = %self.id, error = %error, "claiming a job failed; retrying after the poll interval");
                    tokio::select! {
                        () = sleep(self.settings.poll_interval) => {}
                        () = self.stop.cancelled() => break,
                    }
                }
            }
        }
        if let Some(job) = next {
            self.give_back(&job).await;
        }
    }

    /// Claims the next job while the finished one is being recorded, so that a store committing concurrent
    /// calls together (SQLite, sled) records one and claims the other in one commit: one round trip per job
    /// instead of two. Only when the runtime is not stopping and the queue's rate allows a start now.
    async fn claim_ahead(&self) -> Option<Job> {
        if self.stop.is_cancelled() {
            return None;
        }
        if self.rate_limit.is_some() && self.take_start().await != Some(None) {
            return None;
        }
        let claimed = self.hub.storage().claim(&self.queues, &self.id, self.hub.now(), self.settings.lease).await;
        let job = claimed.ok().flatten();
        if job.is_none() {
            self.return_start().await;
        }
        job
    }

    /// Returns a job claimed ahead but not started (the runtime is stopping) without charging an attempt.
    async fn give_back(&self, job: &Job) {
        let Some(lease) = job.lease() else { return };
        if let Err(error) = self.hub.storage().release(&lease, self.hub.now()).await {
            tracing::warn!(job_id = %job.id, error = %error, "giving back an unstarted job failed; its lease will expire");
        }
    }

    /// Takes one start from the queue's rate limit: `Some(None)` if granted, `Some(Some(wait))` if not (and
    /// how long until one may be), `None` if the store could not be asked (or the queue is not limited).
    async fn take_start(&self) -> Option<Option<Duration>> {
        let limit = self.rate_limit?;
        let queue = &self.queues[0];
        match self.hub.storage().take_queue_starts(queue, limit, self.hub.now(), 1).await {
            Ok(starts) if starts.granted > 0 => Some(None),
            // Never zero: a zero wait would spin while the store's clock stands still.
            Ok(starts) => Some(Some(starts.next_in.unwrap_or_default().max(Duration::from_millis(1)))),
            Err(error) => {
                tracing::warn!(worker = %self.id, error = %error, "taking a start from the queue's rate limit failed");
                None
            }
        }
    }

    /// Gives back a start taken for a claim that found no job.
    async fn return_start(&self) {
        let Some(limit) = self.rate_limit else { return };
        if let Err(error) = self.hub.storage().return_queue_starts(&self.queues[0], limit, self.hub.now(), 1).await {
            tracing::warn!(worker = %self.id, error = %error, "giving back an unused start failed");
        }
    }

    /// Waits until the queue's rate limit allows a start; `false` if the runtime stopped meanwhile.
    async fn wait_for_rate_limit(&self) -> bool {
        if self.rate_limit.is_none() {
            return true;
        }
        loop {
            let wait = match self.take_start().await {
                Some(None) => return true,
                Some(Some(wait)) => wait,
                None => self.settings.poll_interval,
            };
            tokio::select! {
                () = sleep(wait) => {}
                () = self.stop.cancelled() => return false,
            }
        }
    }

    /// Runs one job to its end and records it; returns the job claimed ahead meanwhile, if any.
    async fn run_job(&self, job: Job) -> Option<Job> {
        let lease = job.lease()?;
        let started = Instant::now();
        // Registered before anyone hears the job started, so a cancel sent on that news reaches the handler
        // at once. (One sent in the instant between the claim and this line reaches it at the next heartbeat.)
        let token = CancellationToken::new();
        self.hub.signals().started(job.id, token.clone());
        telemetry::job_event(&self.hub, EventKind::JobStarted, &job);
        let Some(registered) = self.hub.handlers().get(&job.kind).cloned() else {
            self.hub.signals().finished(job.id);
            let error = format!("no handler for job kind {:?} is registered in this process", job.kind);
            self.fail(&lease, &job, JobError::Permanent(error), started).await;
            return None;
        };
        let timeout = registered.options.timeout.unwrap_or(self.settings.job_timeout);
        let ctx = JobContext::new(job.clone(), self.hub.clone(), token.clone());
        let handler = registered.handler.clone();
        let handler_ctx = ctx.clone();
        let mut task = AbortOnDrop(tokio::spawn(async move { handler.run(handler_ctx).await }));

        let (ending, stop_reason) = self.supervise(&mut task, &ctx, &lease, &token, started + timeout).await;
        self.hub.signals().finished(job.id);
        let ((), next) =
            tokio::join!(self.settle(&lease, &job, &ctx, ending, stop_reason, timeout, started), self.claim_ahead());
        next
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

    /// Records how the attempt ended.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        lease: &Lease,
        job: &Job,
        ctx: &JobContext,
        ending: Ending,
        stop_reason: Option<StopReason>,
        timeout: Duration,
        started: Instant,
    ) {
        let storage = self.hub.storage();
        let now = self.hub.now();
        match (ending, stop_reason) {
            (_, Some(StopReason::LeaseLost)) => {
                tracing::warn!(job_id = %job.id, attempt = job.attempt, "lease lost to another worker; this attempt's result is discarded");
            }
            (Ending::Done(value), _) => {
                let settled = storage.complete(lease, value, ctx.take_artifact(), now).await;
                self.discard_payload(&settled).await;
                self.report(settled, "succeeded", Some(EventKind::JobSucceeded), started);
            }
            (Ending::Panicked(message), _) => {
                self.fail(lease, job, JobError::Retry(format!("the handler panicked: {message}")), started).await;
            }
            (Ending::Failed(error), None) => self.fail(lease, job, error, started).await,
            (Ending::Failed(_) | Ending::Aborted, Some(StopReason::Cancelled)) => {
                let settled = storage.acknowledge_cancel(lease, now).await;
                self.discard_payload(&settled).await;
                self.report(settled, "cancelled", Some(EventKind::JobCancelled), started);
            }
            (Ending::Failed(_) | Ending::Aborted, Some(StopReason::TimedOut)) => {
                let error = format!("timed out after {} s", timeout.as_secs_f64());
                self.fail(lease, job, JobError::Retry(error), started).await;
            }
            (Ending::Failed(_) | Ending::Aborted, Some(StopReason::Shutdown)) => {
                let settled = storage.release(lease, now).await;
                self.report(settled, "released", Some(EventKind::JobQueued), started);
            }
            (Ending::Aborted, None) => {
                self.fail(lease, job, JobError::Retry("the handler was aborted".to_owned()), started).await;
            }
        }
    }

    async fn fail(&self, lease: &Lease, job: &Job, error: JobError, started: Instant) {
        let retry = match &error {
            JobError::Retry(_) => Retry::After(self.settings.backoff.delay(job.attempt)),
            JobError::RetryAfter(delay, _) => Retry::After(*delay),
            JobError::Permanent(_) => Retry::Never,
        };
        let settled =
            self.hub.storage().fail(lease, JobFailure { error: error.to_string(), retry }, self.hub.now()).await;
        self.discard_payload(&settled).await;
        match settled {
            Ok(job) if job.state == JobState::Queued => {
                self.report(Ok(job), "retrying", Some(EventKind::JobRetrying), started)
            }
            other => self.report(other, "failed", Some(EventKind::JobFailed), started),
        }
    }

    /// Discards a finished job's payload when its handler asks for it.
    async fn discard_payload(&self, settled: &Result<Job, StoreError>) {
        if let Ok(job) = settled {
            crate::jobs::handler::discard_finished_payload(&self.hub, job).await;
        }
    }

    fn report(
        &self,
        settled: Result<Job, StoreError>,
        outcome: &'static str,
        event: Option<EventKind>,
        started: Instant,
    ) {
        match settled {
            Ok(job) => telemetry::attempt_finished(&self.hub, &job, outcome, started.elapsed(), event),
            Err(StoreError::Conflict(Conflict::LeaseLost)) => {
                tracing::warn!(worker = %self.id, "the lease expired before the attempt was recorded; the job will run again");
            }
            Err(error) => {
                tracing::error!(worker = %self.id, error = %error, "recording a finished attempt failed; the lease will expire and the job run again");
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned())
}
