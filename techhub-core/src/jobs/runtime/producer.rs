//! A queue's producer: claims as many due jobs as the queue has free worker slots, in one store call
//! ([`JobStore::claim_many`](crate::storage::JobStore::claim_many)), and starts an attempt for each.
//!
//! The slots are the queue's concurrency limit (a semaphore of `workers` permits): an attempt holds its slot
//! until its settlement is handed to the completer. The queue's rate limit is asked for as many starts as
//! there are free slots; starts it grants that find no job are given back. An idle producer waits for a local
//! enqueue (which wakes it at once), the poll interval (work from other processes), or the shutdown.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use super::rate_limit::TokenBucket;
use super::worker::Worker;
use crate::model::{Job, Settlement};

/// One queue's claimer.
pub(super) struct Producer {
    pub(super) worker: Arc<Worker>,
    pub(super) queue: String,
    pub(super) slots: usize,
    pub(super) limiter: Option<Arc<TokenBucket>>,
}

impl Producer {
    /// Claims and starts jobs until the runtime stops, then waits for the attempts it started.
    pub(super) async fn run(self) {
        let hub = &self.worker.hub;
        let stop = &self.worker.stop;
        let settings = &self.worker.settings;
        let wake = hub.signals().queue(&self.queue);
        let queues = [self.queue.clone()];
        let slots = Arc::new(Semaphore::new(self.slots));
        // Attempts are tasks of this set, so dropping the runtime (a crash) aborts them with the producer.
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                () = stop.cancelled() => break,
            };
            let Ok(first) = first else { break };
            let mut free: Vec<OwnedSemaphorePermit> = vec![first];
            if slots.available_permits() + 1 < self.slots {
                // Busy: let the attempts that are about to finish free their slots, so one claim fills several.
                // (An idle queue has every slot free and claims at once.)
                tokio::task::yield_now().await;
            }
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                free.push(permit);
            }
            let Some(starts) = self.take_starts(free.len()).await else { break };
            let claimed = hub.storage().claim_many(&queues, &self.worker.id, hub.now(), settings.lease, starts).await;
            match claimed {
                Ok(jobs) => {
                    let found = jobs.len();
                    self.refund(starts - found);
                    if stop.is_cancelled() {
                        // Claimed while the runtime began to stop: give them back unstarted and uncharged.
                        self.give_back(jobs).await;
                        break;
                    }
                    for (job, slot) in jobs.into_iter().zip(free.drain(..)) {
                        running.spawn(self.worker.clone().run(job, slot));
                    }
                    drop(free);
                    if found < starts {
                        // The queue ran dry: wait for news of work (a local enqueue wakes this at once).
                        tokio::select! {
                            () = wake.notified() => {}
                            () = sleep(settings.poll_interval) => {}
                            () = stop.cancelled() => break,
                        }
                    }
                }
                Err(error) => {
                    self.refund(starts);
                    drop(free);
                    tracing::warn!(worker = %self.worker.id, error = %error, "claiming jobs failed; retrying after the poll interval");
                    tokio::select! {
                        () = sleep(settings.poll_interval) => {}
                        () = stop.cancelled() => break,
                    }
                }
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Waits until the rate limit grants at least one start, and takes up to `wanted`; `None` if the runtime
    /// stopped meanwhile.
    async fn take_starts(&self, wanted: usize) -> Option<usize> {
        let Some(limiter) = &self.limiter else { return Some(wanted) };
        loop {
            let mut granted = 0;
            let mut wait = None;
            while granted < wanted {
                match limiter.take() {
                    None => granted += 1,
                    Some(until_next) => {
                        wait = Some(until_next);
                        break;
                    }
                }
            }
            if granted > 0 {
                return Some(granted);
            }
            let wait = wait.unwrap_or_default();
            tokio::select! {
                () = sleep(wait) => {}
                () = self.worker.stop.cancelled() => return None,
            }
        }
    }

    /// Gives back starts the claim did not use.
    fn refund(&self, unused: usize) {
        if let Some(limiter) = &self.limiter {
            for _ in 0..unused {
                limiter.refund();
            }
        }
    }

    /// Returns jobs claimed but not started without charging an attempt.
    async fn give_back(&self, jobs: Vec<Job>) {
        let started = Instant::now();
        for lease in jobs.iter().filter_map(Job::lease) {
            self.worker.hand_over(Settlement::Release { lease }, started).await;
        }
    }
}
