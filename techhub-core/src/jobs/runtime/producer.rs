//! A queue's producer: claims as many due jobs as the queue has free worker slots, in one
//! [`JobStore::claim_many`] call, and starts an attempt for each.
//!
//! Two bounds per queue: `workers` handlers run at once (a slot is freed when its handler ends), and at most
//! twice that many jobs are claimed but not yet recorded (freed when the settler has written the job's batch),
//! so that a slow store slows claiming down instead of piling up leases.
//!
//! [`JobStore::claim_many`]: crate::storage::JobStore::claim_many

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::sleep;

use super::QueueConfig;
use super::attempt::Attempts;
use crate::model::{Job, WorkerId};

/// How many claimed jobs a queue may hold per worker slot: one running, one waiting for its batch.
const HELD_PER_WORKER: usize = 2;

pub(super) struct Producer {
    /// Names this process's claims of the queue in leases.
    pub(super) id: WorkerId,
    pub(super) queue: QueueConfig,
    pub(super) attempts: Arc<Attempts>,
}

/// A slot to run one job: a worker slot and a place among the claimed but unrecorded jobs.
struct Slot {
    running: OwnedSemaphorePermit,
    held: OwnedSemaphorePermit,
}

/// What the producer does after a claim.
enum Next {
    /// Claim again as soon as slots are free.
    Claim,
    /// Wait for a wake-up (a local enqueue, a rescue) or the poll interval.
    Idle,
    /// Wait this long (the queue's rate limit, or a failed store call).
    Pause(Duration),
}

impl Producer {
    pub(super) async fn run(self) {
        let hub = &self.attempts.hub;
        let stop = &self.attempts.stop;
        let wake = hub.signals().queue(&self.queue.name);
        let running = Arc::new(Semaphore::new(self.queue.workers));
        let held = Arc::new(Semaphore::new(self.queue.workers * HELD_PER_WORKER));
        let mut attempts = JoinSet::new();
        while !stop.is_cancelled() {
            // Ended attempts are reaped as we go, so the set holds only live ones.
            while attempts.try_join_next().is_some() {}
            let slots = tokio::select! {
                slots = free_slots(&running, &held) => slots,
                () = stop.cancelled() => break,
            };
            let next = match self.claim(slots).await {
                Ok((jobs, slots, next)) => {
                    for (job, slot) in jobs.into_iter().zip(slots) {
                        let attempt = self.attempts.clone();
                        attempts.spawn(async move { attempt.run(job, slot.running, slot.held).await });
                    }
                    next
                }
                Err(next) => next,
            };
            if !self.pause(next, &wake).await {
                break;
            }
        }
        // Graceful shutdown: the attempts under way end (within their grace) and hand in their settlements.
        while attempts.join_next().await.is_some() {}
    }

    /// Claims up to one job per slot (as many as the rate limit grants) and returns them with the slots they
    /// take (the slots not used are freed) and what to do next: claim again at once if every slot granted
    /// found a job (more may be due), else wait to be woken. `Err` says how long to wait before trying again.
    async fn claim(&self, mut slots: Vec<Slot>) -> Result<(Vec<Job>, Vec<Slot>, Next), Next> {
        let hub = &self.attempts.hub;
        let granted = self.take_starts(slots.len()).await?;
        slots.truncate(granted);
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
        slots.truncate(jobs.len());
        Ok((jobs, slots, next))
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

/// Waits for at least one free slot, then takes every slot free now.
async fn free_slots(running: &Arc<Semaphore>, held: &Arc<Semaphore>) -> Vec<Slot> {
    // The semaphores are never closed, so acquiring only waits.
    let (Ok(first_running), Ok(first_held)) =
        (running.clone().acquire_owned().await, held.clone().acquire_owned().await)
    else {
        return Vec::new();
    };
    let mut slots = vec![Slot { running: first_running, held: first_held }];
    // The producer is the only one taking permits, so those counted free stay free until taken.
    while let (Ok(running), Ok(held)) = (running.clone().try_acquire_owned(), held.clone().try_acquire_owned()) {
        slots.push(Slot { running, held });
    }
    slots
}
