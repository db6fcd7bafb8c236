//! The batch completer: finished attempts are settled many at a time, in one store call
//! ([`JobStore::settle_many`](crate::storage::JobStore::settle_many)), as River's batch completer does.
//!
//! A worker hands its settlement over and its slot is free at once; the completer takes the first settlement
//! waiting, gathers more until the batch is full or [`FLUSH_AFTER`] has passed, and writes the batch in one
//! atomic call (one commit, one flush). While a batch is being written, the next one gathers. At shutdown the
//! channel closes once every worker has handed over its last settlement, and the completer writes what is left
//! before it ends.
//!
//! Delivery stays at least once: a crash after a handler succeeded but before its batch committed leaves the
//! job running under its lease; once the lease expires it is rescued and runs again.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::TechHub;
use crate::events::EventKind;
use crate::jobs::telemetry;
use crate::model::{Job, JobState, Settlement};
use crate::storage::{Conflict, StoreError};

/// The most settlements one batch writes.
pub(super) const MAX_BATCH: usize = 256;

/// How long a batch waits for more settlements before it is written.
const FLUSH_AFTER: Duration = Duration::from_millis(2);

/// How many settlements may wait for the completer: a worker that finds it full waits (keeping its slot), so a
/// store that settles slower than jobs finish slows the claims instead of letting leases run out in a backlog.
pub(super) const BACKLOG: usize = 4 * MAX_BATCH;

/// A finished attempt waiting to be settled.
pub(super) struct Finished {
    /// What to write.
    pub(super) settlement: Settlement,
    /// When the attempt started (for the run-time metric).
    pub(super) started: Instant,
}

/// Settles batches until every sender is gone, then writes what is left and returns.
pub(super) async fn run(hub: TechHub, mut finished: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while finished.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let deadline = Instant::now() + FLUSH_AFTER;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, finished.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        settle(&hub, std::mem::take(&mut batch)).await;
    }
}

/// Writes one batch, then reports every attempt (events and metrics only once the outcome is stored).
async fn settle(hub: &TechHub, batch: Vec<Finished>) {
    let (settlements, started): (Vec<Settlement>, Vec<Instant>) =
        batch.into_iter().map(|finished| (finished.settlement, finished.started)).unzip();
    let kinds: Vec<SettlementKind> = settlements.iter().map(SettlementKind::of).collect();
    match hub.storage().settle_many(settlements, hub.now()).await {
        Ok(outcomes) => {
            for ((outcome, kind), started) in outcomes.into_iter().zip(kinds).zip(started) {
                match outcome {
                    Ok(job) => {
                        crate::jobs::handler::discard_finished_payload(hub, &job).await;
                        let (label, event) = kind.report(&job);
                        telemetry::attempt_finished(hub, &job, label, started.elapsed(), Some(event));
                    }
                    Err(StoreError::Conflict(Conflict::LeaseLost)) => {
                        tracing::warn!("the lease expired before the attempt was recorded; the job will run again");
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "recording a finished attempt failed; the lease will expire and the job run again");
                    }
                }
            }
        }
        Err(error) => {
            tracing::error!(error = %error, attempts = kinds.len(), "recording a batch of finished attempts failed; their leases will expire and the jobs run again");
        }
    }
}

/// Which settlement an outcome answers, for its report.
#[derive(Debug, Clone, Copy)]
enum SettlementKind {
    Complete,
    Fail,
    Release,
    AcknowledgeCancel,
}

impl SettlementKind {
    fn of(settlement: &Settlement) -> Self {
        match settlement {
            Settlement::Complete { .. } => Self::Complete,
            Settlement::Fail { .. } => Self::Fail,
            Settlement::Release { .. } => Self::Release,
            Settlement::AcknowledgeCancel { .. } => Self::AcknowledgeCancel,
        }
    }

    /// The outcome label and event of the stored job.
    fn report(self, job: &Job) -> (&'static str, EventKind) {
        match self {
            Self::Complete => ("succeeded", EventKind::JobSucceeded),
            Self::Fail if job.state == JobState::Queued => ("retrying", EventKind::JobRetrying),
            Self::Fail => ("failed", EventKind::JobFailed),
            Self::Release => ("released", EventKind::JobQueued),
            Self::AcknowledgeCancel => ("cancelled", EventKind::JobCancelled),
        }
    }
}
