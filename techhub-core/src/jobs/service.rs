//! [`JobService`]: enqueue, query, cancel and retry jobs, with the caller's rights checked here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::telemetry;
use crate::actor::Actor;
use crate::events::EventKind;
use crate::model::{Artifact, Job, JobFilter, JobId, JobState, NewJob, Page, PageRequest, QueueCounts};
use crate::{Error, Result, TechHub};

/// Jobs as callers see them. Get one with [`TechHub::jobs`].
///
/// The policy: users see, read the artifacts of, and cancel only the jobs they enqueued (other jobs are
/// `NotFound` to them, so ids cannot be probed); admins and [`Actor::System`] see everything. Only admins and
/// the system enqueue, retry or read queue statistics: handlers run with the system's rights, so letting a
/// user pick a job kind would let it act as the system.
#[derive(Debug, Clone)]
pub struct JobService {
    hub: TechHub,
}

/// One queue's numbers: the store's counts, the oldest due job's wait, and this process's workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Jobs per state, and the earliest `run_at` among queued jobs.
    #[serde(flatten)]
    pub counts: QueueCounts,
    /// How long the oldest due job has waited, in seconds (0 when none is due).
    pub oldest_queued_age_s: f64,
    /// Workers this process runs for the queue.
    pub workers: usize,
}

impl JobService {
    pub(crate) fn new(hub: TechHub) -> Self {
        Self { hub }
    }

    /// Enqueues a job. The kind must have a registered handler (else `InvalidInput`); the queue and attempt
    /// count default to the handler's. With a live `unique_key` the existing job is returned.
    pub async fn enqueue(&self, actor: &Actor, spec: NewJob) -> Result<Job> {
        Ok(self.enqueue_many(actor, vec![spec]).await?.remove(0))
    }

    /// Enqueues a job whose payload is `payload` serialized.
    pub async fn enqueue_typed<P: Serialize + Sync>(&self, actor: &Actor, kind: &str, payload: &P) -> Result<Job> {
        self.enqueue(actor, NewJob::typed(kind, payload)?).await
    }

    /// Enqueues several jobs in one atomic write: all or none.
    pub async fn enqueue_many(&self, actor: &Actor, specs: Vec<NewJob>) -> Result<Vec<Job>> {
        if !actor.is_privileged() {
            return Err(Error::forbidden("only admins may enqueue jobs directly"));
        }
        let jobs = specs.into_iter().map(|spec| self.prepare(actor, spec)).collect::<Result<Vec<Job>>>()?;
        let ids: Vec<JobId> = jobs.iter().map(|job| job.id).collect();
        let stored = self.hub.storage().enqueue_many(jobs).await?;
        self.announce(stored.iter().filter(|job| ids.contains(&job.id)));
        Ok(stored)
    }

    /// Enqueues the job of tick `tick` of the cron schedule `schedule` as the system, once whatever the number
    /// of runtimes sharing the store (see [`JobStore::enqueue_cron_tick`](crate::storage::JobStore::enqueue_cron_tick)):
    /// `None` when the tick fired already.
    pub(crate) async fn enqueue_cron_tick(
        &self,
        schedule: &str,
        tick: chrono::DateTime<chrono::Utc>,
        spec: NewJob,
    ) -> Result<Option<Job>> {
        let job = self.prepare(&Actor::System, spec)?;
        let id = job.id;
        let stored = self.hub.storage().enqueue_cron_tick(schedule, tick, job).await?;
        self.announce(stored.iter().filter(|job| job.id == id));
        Ok(stored)
    }

    /// Checks a spec and fills in the handler's defaults.
    pub(crate) fn prepare(&self, actor: &Actor, mut spec: NewJob) -> Result<Job> {
        let Some(registered) = self.hub.handlers().get(&spec.kind) else {
            return Err(Error::invalid_field("kind", format!("no handler is registered for job kind {:?}", spec.kind)));
        };
        if spec.queue.is_none() {
            spec.queue = registered.options.queue.clone();
        }
        if spec.max_attempts.is_none() {
            spec.max_attempts = registered.options.max_attempts;
        }
        if spec.created_by.is_none() {
            spec.created_by = actor.user_id();
        }
        Job::new(spec, self.hub.now())
    }

    /// Publishes and wakes workers for jobs that were just stored.
    pub(crate) fn announce<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        for job in jobs {
            telemetry::enqueued(&self.hub, job);
            self.hub.signals().wake(&job.queue);
        }
    }

    /// A job the actor may see.
    pub async fn get(&self, actor: &Actor, id: JobId) -> Result<Job> {
        match self.hub.storage().get_job(id).await? {
            Some(job) if actor.may_access(job.created_by) => Ok(job),
            _ => Err(Error::not_found("no such job")),
        }
    }

    /// A page of the jobs the actor may see that pass `filter`. For a user, the filter is narrowed to its
    /// own jobs whatever `created_by` it asked for.
    pub async fn list(&self, actor: &Actor, mut filter: JobFilter, page: &PageRequest) -> Result<Page<Job>> {
        if !actor.is_privileged() {
            filter.created_by = actor.user_id();
        }
        Ok(self.hub.storage().list_jobs(&filter, page).await?)
    }

    /// Cancels a job: a queued one at once, a running one as soon as its handler notices (in this process
    /// immediately; in another at its next heartbeat). A finished job is a `Conflict`.
    pub async fn cancel(&self, actor: &Actor, id: JobId) -> Result<Job> {
        self.get(actor, id).await?;
        let job = self.hub.storage().cancel(id, self.hub.now()).await.map_err(|error| {
            if error.conflict().is_some() { Error::conflict("the job has already finished") } else { error.into() }
        })?;
        match job.state {
            JobState::Cancelled => {
                super::handler::discard_finished_payload(&self.hub, &job).await;
                telemetry::job_event(&self.hub, EventKind::JobCancelled, &job);
            }
            _ => self.hub.signals().cancel_running(job.id),
        }
        Ok(job)
    }

    /// Queues a failed or cancelled job again with a fresh attempt budget (admins and the system only).
    pub async fn retry(&self, actor: &Actor, id: JobId) -> Result<Job> {
        self.get(actor, id).await?;
        if !actor.is_privileged() {
            return Err(Error::forbidden("only admins may retry jobs"));
        }
        let job = self.hub.storage().retry(id, self.hub.now()).await.map_err(|error| match error.conflict() {
            Some(_) => Error::conflict(
                "only failed or cancelled jobs can be retried, and not while another job holds their unique key",
            ),
            None => error.into(),
        })?;
        self.announce([&job]);
        Ok(job)
    }

    /// The artifact of a succeeded job the actor may see; `NotFound` until the job succeeded with one.
    pub async fn artifact(&self, actor: &Actor, id: JobId) -> Result<Artifact> {
        let job = self.get(actor, id).await?;
        if job.state != JobState::Succeeded {
            return Err(Error::not_found("the job has no artifact (yet)"));
        }
        self.hub.storage().get_artifact(id).await?.ok_or_else(|| Error::not_found("the job has no artifact"))
    }

    /// Per-queue numbers (admins and the system only).
    pub async fn stats(&self, actor: &Actor) -> Result<Vec<QueueStats>> {
        if !actor.is_privileged() {
            return Err(Error::forbidden("only admins may read queue statistics"));
        }
        let now = self.hub.now();
        let mut counts = self.hub.storage().queue_counts().await?;
        // Queues served here but empty so far are listed too (with zero counts), in queue-name order.
        for queue in self.hub.signals().served_queues() {
            if !counts.iter().any(|known| known.queue == queue) {
                counts.push(QueueCounts { queue, ..QueueCounts::default() });
            }
        }
        counts.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(counts.into_iter().map(|counts| self.stats_of(counts, now)).collect())
    }

    fn stats_of(&self, counts: QueueCounts, now: chrono::DateTime<chrono::Utc>) -> QueueStats {
        let oldest_queued_age_s = counts
            .oldest_queued_run_at
            .and_then(|run_at| (now - run_at).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        QueueStats { workers: self.hub.signals().workers(&counts.queue), counts, oldest_queued_age_s }
    }
}
