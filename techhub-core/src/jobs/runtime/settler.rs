//! Recording finished attempts in batches, one [`JobStore::settle_many`] call per batch: group commit with no
//! timer, and no hand-off between tasks when the runtime is idle or the store is fast.
//!
//! A worker whose attempt ended adds its settlement to the pile. If no batch is being written, it writes the
//! pile itself and then goes on to its next job; if a write is under way, it leaves its settlement for that
//! writer and goes on at once. A worker that finds the pile refilled when its own write ends hands the writing
//! to the settler task, which writes batch after batch (each one whatever finished during the previous write,
//! up to [`MAX_BATCH`]) until the pile is empty. So an attempt on an idle runtime is recorded at once, in its
//! worker's task; on a fast store (memory) each worker records its own jobs, as cheaply as a single write;
//! and under load on a slow store the batches grow with the store's write time while no worker waits on
//! writes but the ones it starts (and a worker that starts a write waits for it, its batch's reports included).
//!
//! The settler task ends once every worker has ended and the pile is written, which is what graceful shutdown
//! waits for. A crash loses the pile: those jobs' leases expire and they run again (jobs run at least once).
//!
//! [`JobStore::settle_many`]: crate::storage::JobStore::settle_many

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use crate::TechHub;
use crate::events::EventKind;
use crate::jobs::telemetry;
use crate::model::{Job, JobId, JobState, Settlement};
use crate::storage::{Conflict, StoreError};

/// The most attempts recorded in one write.
pub(super) const MAX_BATCH: usize = 512;

/// One finished attempt, waiting for its batch.
pub(super) struct Finished {
    /// How to record it.
    pub(super) settlement: Settlement,
    /// The job's id.
    pub(super) job_id: JobId,
    /// When the attempt started, for the run-time metric.
    pub(super) started: Instant,
    /// The queue's bound on claimed but unrecorded jobs, freed once the batch is written.
    pub(super) held: OwnedSemaphorePermit,
}

/// Where workers record their finished attempts; shared by every worker of a runtime.
pub(super) struct Settler {
    pile: Arc<Pile>,
    /// Hands the writing to the settler task. Dropped with the last worker, which ends that task.
    handoff: mpsc::UnboundedSender<()>,
}

/// Settlements not yet written, and whether someone is writing.
struct Pile {
    hub: TechHub,
    state: Mutex<PileState>,
}

struct PileState {
    finished: Vec<Finished>,
    /// A worker or the settler task is writing a batch. A worker writes one and hands what piled up meanwhile to
    /// the settler task; the task writes until the pile is empty.
    writing: bool,
}

impl Settler {
    /// Records a finished attempt: writes it now (with whatever else waits) if nobody is writing, else leaves it
    /// to the writer. If the settler task is gone (the runtime was dropped, as in a crash), the attempt may stay
    /// unrecorded and its job runs again after its lease.
    pub(super) async fn settle(&self, finished: Finished) {
        {
            let mut state = self.pile.lock();
            state.finished.push(finished);
            if state.writing {
                return;
            }
            state.writing = true;
        }
        let writing = Writing(self);
        write(&writing.0.pile.hub, self.pile.take()).await;
    }
}

/// A worker's write under way: ends it when dropped, also if the write panicked, handing what piled up
/// meanwhile to the settler task (so `writing` never stays set with nobody writing).
struct Writing<'a>(&'a Settler);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let Settler { pile, handoff } = self.0;
        if !pile.end_write() && handoff.send(()).is_err() {
            tracing::warn!("the runtime stopped before finished attempts were recorded; their jobs will run again");
        }
    }
}

impl Pile {
    fn lock(&self) -> MutexGuard<'_, PileState> {
        // Nothing panics while holding the lock, and a pile is valid at every instant.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest settlements waiting, at most [`MAX_BATCH`].
    fn take(&self) -> Vec<Finished> {
        let mut state = self.lock();
        if state.finished.len() <= MAX_BATCH {
            std::mem::take(&mut state.finished)
        } else {
            state.finished.drain(..MAX_BATCH).collect()
        }
    }

    /// Ends a write: `true` if the pile is empty and the writing stops, `false` if it was refilled meanwhile
    /// (the writer keeps the role and must write again, or hand it on).
    fn end_write(&self) -> bool {
        let mut state = self.lock();
        state.writing = !state.finished.is_empty();
        !state.writing
    }

    /// Writes batch after batch until the pile is empty.
    async fn write_until_empty(&self) {
        loop {
            let batch = self.take();
            write(&self.hub, batch).await;
            if self.end_write() {
                return;
            }
        }
    }
}

/// A settler and the task that writes for the workers under load (to spawn with the runtime's tasks).
pub(super) fn settler(hub: TechHub) -> (Settler, impl Future<Output = ()> + Send + 'static) {
    let (handoff, handoffs) = mpsc::unbounded_channel();
    let pile = Arc::new(Pile { hub, state: Mutex::new(PileState { finished: Vec::new(), writing: false }) });
    (Settler { pile: pile.clone(), handoff }, run(pile, handoffs))
}

async fn run(pile: Arc<Pile>, mut handoffs: mpsc::UnboundedReceiver<()>) {
    while handoffs.recv().await.is_some() {
        pile.write_until_empty().await;
    }
    // Every worker has ended, each after its own write or a hand-off received above: nothing should be left,
    // but a pile is written before the runtime ends, whatever happened.
    if !pile.lock().finished.is_empty() {
        pile.write_until_empty().await;
    }
}

/// Writes one batch, then publishes each job's outcome and discards the payloads handlers asked to discard.
async fn write(hub: &TechHub, batch: Vec<Finished>) {
    let (settlements, waiting): (Vec<Settlement>, Vec<Waiting>) = batch
        .into_iter()
        .map(|finished| {
            let ending = Ending::of(&finished.settlement);
            let Finished { settlement, job_id, started, held } = finished;
            (settlement, Waiting { ending, job_id, started, held })
        })
        .unzip();
    let count = settlements.len();
    match hub.storage().settle_many(settlements, hub.now()).await {
        Ok(results) => {
            for (settled, waiting) in results.into_iter().zip(waiting) {
                report(hub, settled, waiting.ending, waiting.job_id, waiting.started).await;
                drop(waiting.held);
            }
        }
        Err(error) => {
            tracing::error!(attempts = count, %error, "recording finished attempts failed; their leases will expire and the jobs run again");
        }
    }
}

/// A finished attempt while its batch is written: all but its settlement.
struct Waiting {
    ending: Ending,
    job_id: JobId,
    started: Instant,
    held: OwnedSemaphorePermit,
}

/// Which kind of end a settlement records.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Succeeded,
    Failed,
    Released,
    Cancelled,
}

impl Ending {
    fn of(settlement: &Settlement) -> Self {
        match settlement {
            Settlement::Complete { .. } => Self::Succeeded,
            Settlement::Fail { .. } => Self::Failed,
            Settlement::Release { .. } => Self::Released,
            Settlement::AcknowledgeCancel { .. } => Self::Cancelled,
        }
    }
}

/// Publishes one recorded attempt (event, trace line, metrics), or says why it was not recorded.
async fn report(hub: &TechHub, settled: Result<Job, StoreError>, ending: Ending, job_id: JobId, started: Instant) {
    let job = match settled {
        Ok(job) => job,
        Err(StoreError::Conflict(Conflict::LeaseLost)) => {
            tracing::warn!(%job_id, "the lease expired before the attempt was recorded; the job will run again");
            return;
        }
        Err(error) => {
            tracing::error!(%job_id, %error, "recording a finished attempt failed; the lease will expire and the job run again");
            return;
        }
    };
    crate::jobs::handler::discard_finished_payload(hub, &job).await;
    let (outcome, event) = match ending {
        Ending::Succeeded => ("succeeded", EventKind::JobSucceeded),
        Ending::Failed if job.state == JobState::Queued => ("retrying", EventKind::JobRetrying),
        Ending::Failed => ("failed", EventKind::JobFailed),
        Ending::Released => ("released", EventKind::JobQueued),
        Ending::Cancelled => ("cancelled", EventKind::JobCancelled),
    };
    telemetry::attempt_finished(hub, &job, outcome, started.elapsed(), Some(event));
}
