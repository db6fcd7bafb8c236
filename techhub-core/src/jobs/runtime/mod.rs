//! The worker runtime: [`WorkerConfig`], [`TechHub::start_workers`] and the [`WorkerHandle`] it returns.
//!
//! A queue's workers claim for each other: one at a time claims, for itself and every worker idle at that
//! moment, in one store call. Finished attempts are recorded in batches: a worker writes its settlement
//! together with whatever finished meanwhile, or leaves it to the write under way. A job thus costs the store a
//! share of one claim and one settle write, and on a fast store no hand-off between tasks (see the `workers`
//! and `settler` modules for the bounds and the batching rules).

mod attempt;
mod maintenance;
mod settler;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::maintenance::{Retention, Schedule};
use super::Backoff;
pub use crate::model::RateLimit;
use crate::model::WorkerId;
use crate::{Error, Result, TechHub};

/// One queue the runtime serves.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// The queue's name.
    pub name: String,
    /// How many jobs of it run at once in this process (its worker slots; it claims at most this many at
    /// once).
    pub workers: usize,
    /// How fast its jobs may start, if limited: enforced by the store
    /// ([`JobStore::take_queue_starts`](crate::storage::JobStore::take_queue_starts)), so the limit holds for
    /// the queue as a whole, however many processes serve it, and on the hub's clock.
    pub rate_limit: Option<RateLimit>,
}

/// How the runtime behaves. Durations are real time; job times (`run_at`, leases) come from the hub's clock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The queues served and their workers.
    pub queues: Vec<QueueConfig>,
    /// Names this process in leases, as `<name>:<queue>` (default: pid and a random tag).
    pub name: String,
    /// How long a claim holds a job before others may rescue it (default 30 s).
    pub lease: Duration,
    /// How often a running job's lease is extended (and its cancel flag read; default 10 s).
    pub heartbeat_interval: Duration,
    /// How often an idle queue's claimer looks for work enqueued by other processes or come due (default 1 s).
    pub poll_interval: Duration,
    /// How often expired leases are rescued (default 5 s).
    pub rescue_interval: Duration,
    /// How often a job's latest progress is written and published (default 250 ms).
    pub progress_interval: Duration,
    /// How long one attempt may run unless its handler says otherwise (default 5 min).
    pub job_timeout: Duration,
    /// On shutdown, how long running jobs may finish before they are asked to stop (default 10 s).
    pub shutdown_grace: Duration,
    /// After a handler is asked to stop, how long before it is aborted (default 5 s).
    pub stop_grace: Duration,
    /// Retry delays.
    pub backoff: Backoff,
    /// Pruning of finished jobs (on by default; `None` keeps them forever).
    pub retention: Option<Retention>,
    /// Periodic jobs.
    pub schedules: Vec<Schedule>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            name: format!("pid{}-{:08x}", std::process::id(), rand::random::<u32>()),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            rescue_interval: Duration::from_secs(5),
            progress_interval: Duration::from_millis(250),
            job_timeout: Duration::from_secs(5 * 60),
            shutdown_grace: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
            backoff: Backoff::default(),
            retention: Some(Retention::default()),
            schedules: Vec::new(),
        }
    }
}

impl WorkerConfig {
    /// Serves `queue` with `workers` workers.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>, workers: usize) -> Self {
        self.queues.push(QueueConfig { name: queue.into(), workers, rate_limit: None });
        self
    }

    /// Serves `queue` with `workers` workers, starting at most `limit` jobs.
    #[must_use]
    pub fn rate_limited_queue(mut self, queue: impl Into<String>, workers: usize, limit: RateLimit) -> Self {
        self.queues.push(QueueConfig { name: queue.into(), workers, rate_limit: Some(limit) });
        self
    }

    /// Adds a periodic job.
    #[must_use]
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    fn check(&self) -> Result<()> {
        if self.queues.is_empty() {
            return Err(Error::invalid_field("queues", "the runtime needs at least one queue"));
        }
        for queue in &self.queues {
            if queue.workers == 0 {
                return Err(Error::invalid_field(
                    "queues",
                    format!("queue {:?} needs at least one worker", queue.name),
                ));
            }
            if let Some(limit) = queue.rate_limit
                && !(limit.per_second.is_finite() && limit.per_second > 0.0)
            {
                return Err(Error::invalid_field(
                    "rate_limit",
                    format!("queue {:?}: the rate must be > 0", queue.name),
                ));
            }
        }
        let positive = [
            ("lease", self.lease),
            ("heartbeat_interval", self.heartbeat_interval),
            ("poll_interval", self.poll_interval),
            ("rescue_interval", self.rescue_interval),
            ("progress_interval", self.progress_interval),
            ("job_timeout", self.job_timeout),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| value.is_zero()) {
            return Err(Error::invalid_field(*field, format!("{field} must be longer than zero")));
        }
        if self.heartbeat_interval >= self.lease {
            return Err(Error::invalid_field(
                "heartbeat_interval",
                "heartbeats must come more often than the lease lasts",
            ));
        }
        Ok(())
    }
}

/// Settings every worker task reads.
#[derive(Debug)]
pub(super) struct Settings {
    lease: Duration,
    heartbeat_interval: Duration,
    poll_interval: Duration,
    progress_interval: Duration,
    job_timeout: Duration,
    shutdown_grace: Duration,
    stop_grace: Duration,
    backoff: Backoff,
}

/// The running runtime. [`WorkerHandle::shutdown`] stops it gracefully; dropping it stops every task at once,
/// as a crash would, leaving leases to expire and be rescued elsewhere.
#[derive(Debug)]
pub struct WorkerHandle {
    hub: TechHub,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    maintenance: Arc<maintenance::Maintenance>,
    queues: Vec<QueueConfig>,
}

impl WorkerHandle {
    /// Stops claiming, lets running jobs finish within the grace period, then asks the rest to stop and gives
    /// their jobs back to the queue without charging an attempt. Returns when every task has ended.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Wakes every queue's claimer now (claimers also wake on local enqueues and every poll interval).
    pub fn wake(&self) {
        self.hub.signals().wake_all();
    }

    /// Runs one maintenance pass now: rescue expired leases, fire due schedules, prune old jobs. The runtime
    /// does this on its own timers; tests that move a manual clock call it to act at once.
    pub async fn run_maintenance(&self) -> Result<()> {
        self.maintenance.run_once(&self.hub).await
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        for queue in &self.queues {
            self.hub.signals().add_workers(&queue.name, -(queue.workers as isize));
        }
    }
}

impl TechHub {
    /// Starts the worker runtime on the current tokio runtime. Fails with `InvalidInput` on an unusable
    /// configuration (no queue, zero workers, a lease shorter than the heartbeat, a zero rate).
    pub fn start_workers(&self, config: WorkerConfig) -> Result<WorkerHandle> {
        config.check()?;
        let settings = Arc::new(Settings {
            lease: config.lease,
            heartbeat_interval: config.heartbeat_interval,
            poll_interval: config.poll_interval,
            progress_interval: config.progress_interval,
            job_timeout: config.job_timeout,
            shutdown_grace: config.shutdown_grace,
            stop_grace: config.stop_grace,
            backoff: config.backoff,
        });
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (settler, settling) = settler::settler(self.clone());
        let attempts = Arc::new(attempt::Attempts { hub: self.clone(), settings, stop: stop.clone(), settler });
        for queue in &config.queues {
            self.signals().add_workers(&queue.name, queue.workers as isize);
            let id = WorkerId::new(format!("{}:{}", config.name, queue.name));
            tasks.spawn(workers::QueueWorkers::new(id, queue.clone(), attempts.clone()).run());
        }
        // The workers hold the only other handles to the settler: its task ends after them, the pile written.
        drop(attempts);
        tasks.spawn(settling);
        let maintenance = Arc::new(maintenance::Maintenance::new(
            config.retention,
            config.schedules,
            config.rescue_interval,
            config.poll_interval,
        ));
        tasks.spawn(maintenance.clone().run(self.clone(), stop.clone()));
        // A hub built outside a tokio runtime starts its notification rules here (else they already run).
        self.start_rules();
        tracing::info!(name = %config.name, queues = config.queues.len(), "job runtime started");
        Ok(WorkerHandle { hub: self.clone(), stop, tasks, maintenance, queues: config.queues })
    }
}
