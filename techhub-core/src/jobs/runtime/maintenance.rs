//! The runtime's background duties: rescue jobs of dead workers, fire cron schedules, prune old jobs.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::interval;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::events::EventKind;
use crate::jobs::telemetry::{self, names};
use crate::model::{JobState, NewJob};
use crate::{Error, Result, TechHub};

/// How long finished jobs are kept before they are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Succeeded jobs (default 24 h).
    pub succeeded: Duration,
    /// Cancelled jobs (default 24 h).
    pub cancelled: Duration,
    /// Failed jobs, kept longer for inspection (default 7 days).
    pub failed: Duration,
    /// How often pruning runs (default 10 min).
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const HOUR: u64 = 3600;
        Self {
            succeeded: Duration::from_secs(24 * HOUR),
            cancelled: Duration::from_secs(24 * HOUR),
            failed: Duration::from_secs(7 * 24 * HOUR),
            interval: Duration::from_secs(600),
        }
    }
}

/// A periodic job: a cron expression and the job to enqueue at each tick.
///
/// Each tick is enqueued ahead of time as a delayed job (with the unique key `cron:<name>:<tick>`), through
/// [`JobStore::enqueue_cron_tick`](crate::storage::JobStore::enqueue_cron_tick): the store records the
/// schedule's last fired tick in the same write, so several runtimes sharing a store enqueue each tick once,
/// even a runtime that comes late, after the tick's job has finished.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    expression: cron::Schedule,
    job: NewJob,
}

impl Schedule {
    /// A schedule called `name` (unique among schedules) that enqueues `job` at every tick of `expression`.
    ///
    /// `expression` is a cron expression with seconds (`sec min hour day-of-month month day-of-week [year]`,
    /// e.g. `"0 */5 * * * *"`); a classic five-field expression (`"*/5 * * * *"`) fires at second 0.
    pub fn new(name: impl Into<String>, expression: &str, job: NewJob) -> Result<Self> {
        let fields = expression.split_whitespace().count();
        let full = if fields == 5 { format!("0 {expression}") } else { expression.to_owned() };
        let expression = cron::Schedule::from_str(&full).map_err(|error| {
            Error::invalid_field("schedule", format!("invalid cron expression {expression:?}: {error}"))
        })?;
        Ok(Self { name: name.into(), expression, job })
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Debug)]
pub(super) struct Maintenance {
    retention: Option<Retention>,
    schedules: Vec<Schedule>,
    rescue_interval: Duration,
    schedule_interval: Duration,
}

impl Maintenance {
    pub(super) fn new(
        retention: Option<Retention>,
        schedules: Vec<Schedule>,
        rescue_interval: Duration,
        schedule_interval: Duration,
    ) -> Self {
        Self { retention, schedules, rescue_interval, schedule_interval }
    }

    pub(super) async fn run(self: Arc<Self>, hub: TechHub, stop: CancellationToken) {
        let mut rescue = interval(self.rescue_interval);
        let mut schedules = interval(self.schedule_interval);
        let mut prune = interval(self.retention.map_or(Duration::from_secs(3600), |retention| retention.interval));
        loop {
            let pass = tokio::select! {
                () = stop.cancelled() => break,
                _ = rescue.tick() => self.rescue(&hub).await,
                _ = schedules.tick() => self.fire_schedules(&hub).await,
                _ = prune.tick() => self.prune(&hub).await,
            };
            if let Err(error) = pass {
                tracing::warn!(error = %error, "job maintenance failed; it runs again at its next tick");
            }
        }
    }

    /// One pass of every duty, now.
    pub(super) async fn run_once(&self, hub: &TechHub) -> Result<()> {
        self.rescue(hub).await?;
        self.fire_schedules(hub).await?;
        self.prune(hub).await
    }

    /// Queues again (or fails, when out of attempts) every running job whose lease ran out, and refreshes the
    /// queue gauges.
    async fn rescue(&self, hub: &TechHub) -> Result<()> {
        let rescued = hub.storage().requeue_expired(hub.now()).await?;
        for job in &rescued {
            tracing::warn!(job_id = %job.id, queue = %job.queue, attempt = job.attempt, "lease expired; job rescued");
            metrics::counter!(names::RESCUED, "queue" => job.queue.clone()).increment(1);
            let kind = if job.state == JobState::Queued { EventKind::JobRescued } else { EventKind::JobFailed };
            crate::jobs::handler::discard_finished_payload(hub, job).await;
            telemetry::job_event(hub, kind, job);
        }
        if !rescued.is_empty() {
            hub.signals().wake_all();
        }
        let now = hub.now();
        for counts in hub.storage().queue_counts().await? {
            let age = counts.oldest_queued_run_at.and_then(|at| (now - at).to_std().ok()).unwrap_or_default();
            metrics::gauge!(names::QUEUE_DEPTH, "queue" => counts.queue.clone()).set(counts.queued as f64);
            metrics::gauge!(names::OLDEST_AGE_SECONDS, "queue" => counts.queue).set(age.as_secs_f64());
        }
        Ok(())
    }

    /// Enqueues each schedule's next tick (once: the store refuses a tick at or before the last one fired).
    async fn fire_schedules(&self, hub: &TechHub) -> Result<()> {
        let now = hub.now();
        for schedule in &self.schedules {
            let Some(tick) = schedule.expression.after(&now).next() else { continue };
            let key = format!("cron:{}:{}", schedule.name, tick.timestamp());
            let spec = schedule.job.clone().run_at(tick).unique_key(key);
            hub.jobs().enqueue_cron_tick(&schedule.name, tick, spec).await?;
        }
        Ok(())
    }

    /// Prunes audit entries past their retention, expired tokens, and finished jobs past their retention
    /// (when there is one).
    async fn prune(&self, hub: &TechHub) -> Result<()> {
        let audit = hub.audit().prune().await?;
        if audit > 0 {
            tracing::info!(entries = audit, "pruned old audit entries");
        }
        let now = hub.now();
        let storage = hub.storage();
        // Tokens go whatever the job retention: turning job pruning off must not keep dead tokens forever.
        let tokens = storage.prune_tokens(now).await?;
        let mut pruned = 0;
        if let Some(retention) = self.retention {
            for (states, keep) in [
                (&[JobState::Succeeded][..], retention.succeeded),
                (&[JobState::Cancelled][..], retention.cancelled),
                (&[JobState::Failed][..], retention.failed),
            ] {
                pruned += storage.prune_jobs(states, clock::sub(now, keep)).await?;
            }
        }
        if pruned + tokens > 0 {
            tracing::info!(jobs = pruned, tokens, "pruned finished jobs and expired tokens");
        }
        Ok(())
    }
}
