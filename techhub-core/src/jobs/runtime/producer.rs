//! A queue's producer and workers: the producer claims as many due jobs as the queue has idle workers, in one
//! [`JobStore::claim_many`] call, and hands one to each; a worker runs its job's attempt, then says it is
//! idle again.
//!
//! Two bounds per queue: `workers` handlers run at once (a worker is idle again as soon as its handler ended
//! and the settlement is handed to the settler), and at most twice that many jobs are claimed but not yet
//! recorded (freed when the settler has written the job's batch), so that a slow store slows claiming down
//! instead of piling up leases. The workers are long-lived tasks: a job costs two channel messages, not a task.
//!
//! [`JobStore::claim_many`]: crate::storage::JobStore::claim_many

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::sleep;

use super::QueueConfig;
use super::attempt::Attempts;
use crate::model::{Job, WorkerId};

/// How many claimed jobs a queue may hold per worker: one running, one waiting for its batch.
const HELD_PER_WORKER: usize = 2;

pub(super) struct Producer {
    /// Names this process's claims of the queue in leases.
    pub(super) id: WorkerId,
    pub(super) queue: QueueConfig,
    pub(super) attempts: Arc<Attempts>,
}

/// A claimed job on its way to a worker, with its place among the claimed but unrecorded jobs.
type Assignment = (Job, OwnedSemaphorePermit);

/// What the producer does after a claim.
enum Next {
    /// Claim again as soon as a worker is idle.
    Claim,
    /// Wait for a wake-up (a local enqueue, a rescue) or the poll interval.
    Idle,
    /// Wait this long (the queue's rate limit, or a failed store call).
    Pause(Duration),
}

impl Producer {
    pub(super) async fn run(self) {
        let stop = self.attempts.stop.clone();
        let wake = self.attempts.hub.signals().queue(&self.queue.name);
        let (idle_sender, mut idle_receiver) = mpsc::unbounded_channel();
        let mut workers = JoinSet::new();
        let mut inboxes = Vec::with_capacity(self.queue.workers);
        for worker in 0..self.queue.workers {
            let (inbox, assignments) = mpsc::unbounded_channel();
            inboxes.push(inbox);
            workers.spawn(work(worker, assignments, idle_sender.clone(), self.attempts.clone()));
        }
        drop(idle_sender);
        let mut idle: Vec<usize> = (0..self.queue.workers).collect();
        let held = Arc::new(Semaphore::new(self.queue.workers * HELD_PER_WORKER));
        loop {
            let mut places = tokio::select! {
                places = free_places(&mut idle, &mut idle_receiver, &held) => places,
                () = stop.cancelled() => break,
            };
            let next = match self.claim(places.len()).await {
                Ok((jobs, next)) => {
                    // At most one job per place, and at most one place per idle worker.
                    for (job, place) in jobs.into_iter().zip(places.drain(..)) {
                        let Some(worker) = idle.pop() else { break };
                        // A worker ends only once its inbox is dropped, below: the send cannot fail.
                        let _ = inboxes[worker].send((job, place));
                    }
                    next
                }
                Err(next) => next,
            };
            // Places not used are given back here; idle workers not used stay in `idle`.
            drop(places);
            if !self.pause(next, &wake).await {
                break;
            }
        }
        // Graceful shutdown: each worker finishes its attempt (within its grace), hands in the settlement, and
        // ends when it finds its inbox closed.
        drop(inboxes);
        while workers.join_next().await.is_some() {}
    }

    /// Claims up to `want` jobs (as many as the rate limit grants) and returns them with what to do next:
    /// claim again at once if every start granted found a job (more may be due), else wait to be woken. `Err`
    /// says how long to wait before trying again.
    async fn claim(&self, want: usize) -> Result<(Vec<Job>, Next), Next> {
        let hub = &self.attempts.hub;
        let granted = self.take_starts(want).await?;
        let settings = &self.attempts.settings;
        let claimed = hub
            .storage()
            .claim_many(std::slice::from_ref(&self.queue.name), &self.id, hub.now(), settings.lease, granted)
            .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(queue = %self.queue.name, %error, "claiming jobs failed; retrying after the poll interval");
                self.return_starts(granted).await;
                return Err(Next::Pause(settings.poll_interval));
            }
        };
        self.return_starts(granted - jobs.len()).await;
        let next = if jobs.len() < granted { Next::Idle } else { Next::Claim };
        Ok((jobs, next))
    }

    /// Takes up to `want` starts from the queue's rate limit (all of them if it has none); `Err` if none is
    /// granted now, with how long to wait.
    async fn take_starts(&self, want: usize) -> Result<usize, Next> {
        let Some(limit) = self.queue.rate_limit else { return Ok(want) };
        let hub = &self.attempts.hub;
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        match hub.storage().take_queue_starts(&self.queue.name, limit, hub.now(), want).await {
            Ok(starts) if starts.granted > 0 => Ok(starts.granted as usize),
            // Never zero: a zero wait would spin while the store's clock stands still.
            Ok(starts) => Err(Next::Pause(starts.next_in.unwrap_or_default().max(Duration::from_millis(1)))),
            Err(error) => {
                tracing::warn!(queue = %self.queue.name, %error, "taking starts from the queue's rate limit failed");
                Err(Next::Pause(self.attempts.settings.poll_interval))
            }
        }
    }

    /// Gives back starts taken for claims that found no job.
    async fn return_starts(&self, unused: usize) {
        let Some(limit) = self.queue.rate_limit else { return };
        if unused == 0 {
            return;
        }
        let hub = &self.attempts.hub;
        let count = u32::try_from(unused).unwrap_or(u32::MAX);
        if let Err(error) = hub.storage().return_queue_starts(&self.queue.name, limit, hub.now(), count).await {
            tracing::warn!(queue = %self.queue.name, %error, "giving back unused starts failed");
        }
    }

    /// Waits as `next` says; `false` if the runtime stopped meanwhile.
    async fn pause(&self, next: Next, wake: &Notify) -> bool {
        let stop = &self.attempts.stop;
        let wait = match next {
            Next::Claim => return true,
            Next::Idle => self.attempts.settings.poll_interval,
            Next::Pause(wait) => wait,
        };
        tokio::select! {
            () = wake.notified(), if matches!(next, Next::Idle) => true,
            () = sleep(wait) => true,
            () = stop.cancelled() => false,
        }
    }
}

/// Waits for at least one idle worker and one free place among the held jobs, then gathers the workers idle
/// now into `idle` and takes as many places as there are idle workers, if free.
async fn free_places(
    idle: &mut Vec<usize>,
    idle_receiver: &mut mpsc::UnboundedReceiver<usize>,
    held: &Arc<Semaphore>,
) -> Vec<OwnedSemaphorePermit> {
    if idle.is_empty() {
        // The producer holds no sender: `None` only once every worker ended, which happens after it stopped.
        match idle_receiver.recv().await {
            Some(worker) => idle.push(worker),
            None => return std::future::pending().await,
        }
    }
    while let Ok(worker) = idle_receiver.try_recv() {
        idle.push(worker);
    }
    // The semaphore is never closed, so acquiring only waits.
    let Ok(first) = held.clone().acquire_owned().await else { return std::future::pending().await };
    let mut permits = vec![first];
    while permits.len() < idle.len() {
        // The producer is the only one taking permits, so those counted free stay free until taken.
        let Ok(permit) = held.clone().try_acquire_owned() else { break };
        permits.push(permit);
    }
    permits
}

/// A worker: runs the attempts of the jobs it is handed, one at a time, saying when it is idle again.
async fn work(
    worker: usize,
    mut assignments: mpsc::UnboundedReceiver<Assignment>,
    idle: mpsc::UnboundedSender<usize>,
    attempts: Arc<Attempts>,
) {
    while let Some((job, held)) = assignments.recv().await {
        attempts.run(job, held).await;
        // The producer stopped listening only if it is shutting down; then this worker ends with its inbox.
        let _ = idle.send(worker);
    }
}
