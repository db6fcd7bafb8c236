//! Every job transition in one place: an event on the bus, a trace line, and metrics.

use std::time::Duration;

use serde_json::json;

use crate::TechHub;
use crate::events::EventKind;
use crate::model::Job;

/// Metric names, so dashboards and tests agree.
pub mod names {
    /// Counter: jobs enqueued, by `queue`.
    pub const ENQUEUED: &str = "techhub_jobs_enqueued_total";
    /// Counter: finished attempts, by `queue` and `outcome` (succeeded, retrying, failed, cancelled, released).
    pub const ATTEMPTS: &str = "techhub_job_attempts_total";
    /// Histogram: seconds an attempt ran, by `queue`.
    pub const RUN_SECONDS: &str = "techhub_job_run_seconds";
    /// Gauge: queued jobs, by `queue`.
    pub const QUEUE_DEPTH: &str = "techhub_queue_depth";
    /// Gauge: seconds the oldest due job of a queue has waited, by `queue`.
    pub const OLDEST_AGE_SECONDS: &str = "techhub_queue_oldest_age_seconds";
    /// Counter: jobs rescued after their lease expired, by `queue`.
    pub const RESCUED: &str = "techhub_jobs_rescued_total";
}

/// Publishes `kind` for `job` (public fields only: the payload may hold user data and stays out).
///
/// The details are built only when someone subscribes: with nobody listening, building and dropping them
/// was the largest single cost of a job on the memory store (callgrind: 42 % of its instructions).
pub(crate) fn job_event(hub: &TechHub, kind: EventKind, job: &Job) {
    hub.events().publish_with(hub.now(), kind, job.id, job.created_by, || {
        json!({
            "job_id": job.id,
            "queue": job.queue,
            "kind": job.kind,
            "state": job.state,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "run_at": job.run_at,
            "last_error": job.last_error,
        })
    });
}

/// Publishes a progress event.
pub(crate) fn progress_event(hub: &TechHub, job: &Job) {
    hub.events().publish_with(
        hub.now(),
        EventKind::JobProgress,
        job.id,
        job.created_by,
        || json!({ "job_id": job.id, "percent": job.progress.percent, "message": job.progress.message }),
    );
}

pub(crate) fn enqueued(hub: &TechHub, job: &Job) {
    tracing::debug!(job_id = %job.id, queue = %job.queue, kind = %job.kind, "job queued");
    metrics::counter!(names::ENQUEUED, "queue" => job.queue.clone()).increment(1);
    job_event(hub, EventKind::JobQueued, job);
}

/// Records how an attempt ended.
pub(crate) fn attempt_finished(
    hub: &TechHub,
    job: &Job,
    outcome: &'static str,
    ran: Duration,
    kind: Option<EventKind>,
) {
    tracing::info!(
        job_id = %job.id, queue = %job.queue, kind = %job.kind, attempt = job.attempt, outcome,
        ran_ms = ran.as_millis() as u64, error = job.last_error.as_deref().unwrap_or(""),
        "job attempt finished"
    );
    metrics::counter!(names::ATTEMPTS, "queue" => job.queue.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!(names::RUN_SECONDS, "queue" => job.queue.clone()).record(ran.as_secs_f64());
    if let Some(kind) = kind {
        job_event(hub, kind, job);
    }
}
