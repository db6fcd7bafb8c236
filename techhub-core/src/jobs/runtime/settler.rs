//! The settler: records finished attempts in batches, one [`JobStore::settle_many`] call per batch, instead of
//! one store write per job.
//!
//! A batch is written as soon as the previous write has ended; whatever finished meanwhile forms the next one
//! (up to [`MAX_BATCH`]). An attempt finishing on an idle runtime is therefore recorded at once, with no wait
//! for others, while under load the batches grow by themselves with the store's write time: group commit
//! without a timer to tune. The settler ends once every producer has ended and the last batch is written, which
//! is what graceful shutdown waits for. A crash loses the batch being gathered: those jobs' leases expire and
//! they run again (jobs run at least once).
//!
//! [`JobStore::settle_many`]: crate::storage::JobStore::settle_many

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

/// Where attempts hand their settlements. Cheap to clone.
#[derive(Clone)]
pub(super) struct SettlerHandle(mpsc::UnboundedSender<Finished>);

impl SettlerHandle {
    /// Queues a finished attempt for the next batch. If the settler is gone (the runtime was dropped, as in a
    /// crash), the attempt stays unrecorded and its job runs again after its lease.
    pub(super) fn send(&self, finished: Finished) {
        if self.0.send(finished).is_err() {
            tracing::warn!("the runtime stopped before a finished attempt was recorded; the job will run again");
        }
    }
}

/// A settler and the future that runs it (to spawn with the runtime's tasks).
pub(super) fn settler(hub: TechHub) -> (SettlerHandle, impl Future<Output = ()> + Send + 'static) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (SettlerHandle(sender), run(hub, receiver))
}

async fn run(hub: TechHub, mut receiver: mpsc::UnboundedReceiver<Finished>) {
    let mut batch = Vec::new();
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write(&hub, std::mem::take(&mut batch)).await;
    }
}

/// Writes one batch (each settlement with its side writes), then publishes each job's outcome.
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
            waiting.iter().for_each(|waiting| hub.held_events().settled(hub, waiting.job_id, false));
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
    hub.held_events().settled(hub, job_id, settled.is_ok());
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
    let (outcome, event) = match ending {
        Ending::Succeeded => ("succeeded", EventKind::JobSucceeded),
        Ending::Failed if job.state == JobState::Queued => ("retrying", EventKind::JobRetrying),
        Ending::Failed => ("failed", EventKind::JobFailed),
        Ending::Released => ("released", EventKind::JobQueued),
        Ending::Cancelled => ("cancelled", EventKind::JobCancelled),
    };
    telemetry::attempt_finished(hub, &job, outcome, started.elapsed(), Some(event));
}
