//! Claims on the writer. Just before a round's transaction, the writer picks each claim's jobs (up to its
//! `max`): it promotes the named queues' due delayed jobs, then takes the first due jobs in claim order across
//! the queues that no earlier claim of the round took. The transaction then runs the claims first, so what they picked is exactly
//! the state they run on (the writer is the only thread that writes).

use std::cell::RefCell;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sled::IVec;
use techhub_core::model::{JobId, JobState, WorkerId};
use techhub_core::storage::{StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::codec::corrupt;
use crate::engine::{Trees, sled_error};
use crate::job_index::JobTx;
use crate::keys::QueueKeys;
use crate::queues::{Head, ReadyCursor, promote_due};
use crate::tx::{Pending, Tx, TxResult, abort};
use crate::writer::{Finish, answer_after_flush, in_savepoint, not_run};

/// A claim: the writer picks its job before the round's transaction, which then moves it to running.
pub(crate) struct ClaimRequest {
    pub(crate) queues: Vec<QueueKeys>,
    pub(crate) worker: WorkerId,
    pub(crate) now: DateTime<Utc>,
    pub(crate) lease_until: DateTime<Utc>,
    /// How many jobs to claim at most.
    pub(crate) max: usize,
}

/// What a claim answers: the claimed jobs' ids and new rows, in claim order (empty if nothing is due).
pub(crate) type Claimed = Vec<(JobId, IVec)>;

/// A claim waiting in a round.
pub(crate) struct Claim {
    request: ClaimRequest,
    choice: Vec<Head>,
    outcome: RefCell<Option<StoreResult<Claimed>>>,
    reply: oneshot::Sender<StoreResult<Claimed>>,
}

impl Claim {
    pub(crate) fn new(request: ClaimRequest, reply: oneshot::Sender<StoreResult<Claimed>>) -> Self {
        Self { request, choice: Vec::new(), outcome: RefCell::new(None), reply }
    }

    /// Moves the chosen jobs to running; answers their ids and new rows.
    fn claim(&self, tx: &Tx<'_>) -> TxResult<Claimed> {
        let jobs = JobTx::new(tx);
        let mut claimed = Vec::with_capacity(self.choice.len());
        for head in &self.choice {
            // The writer chose `head.key` from the ready index just before the round, claims run first in their
            // round, and `choose` gave each key to one claim: the key is still in the index (nothing else
            // writes), so it is removed without being looked up again.
            let loaded = jobs.load(head.entry.id)?.ok_or_else(|| abort(corrupt("a ready job has no row")))?;
            if loaded.job.state != JobState::Queued {
                return Err(abort(corrupt("a ready job is not queued")));
            }
            let mut job = loaded.job.clone();
            job.state = JobState::Running;
            job.attempt += 1;
            job.started_at = Some(self.request.now);
            job.lease_holder = Some(self.request.worker.clone());
            job.lease_until = Some(self.request.lease_until);
            claimed.push((job.id, jobs.transition_from_ready(&loaded, &job, &head.key, self.request.now)?));
        }
        Ok(claimed)
    }

    /// Runs the claim in its own savepoint of the round (see `writer::Call::apply`).
    pub(crate) fn apply(&self, trees: &Trees, pending: &mut Pending) -> TxResult<()> {
        *self.outcome.borrow_mut() = Some(in_savepoint(trees, pending, |tx| self.claim(tx))?);
        Ok(())
    }

    /// The answer to give once the round is flushed; `failed` if the round's transaction failed.
    pub(crate) fn finish(self, failed: Option<&sled::Error>) -> Finish {
        let Claim { outcome, reply, .. } = self;
        let outcome = match failed {
            Some(error) => Err(sled_error(error.clone())),
            None => outcome.into_inner().unwrap_or_else(|| Err(not_run())),
        };
        answer_after_flush(reply, outcome)
    }

    /// The answer when the round could not pick jobs (a read failed).
    pub(crate) fn fail(self, why: &str) -> Finish {
        answer_after_flush(self.reply, Err(StoreError::backend(std::io::Error::other(why.to_owned()))))
    }
}

/// Picks each claim's jobs (see the module docs): a cursor per named queue, and the first of their next due
/// jobs in claim order, until the claim has its `max`.
pub(crate) fn choose(trees: &Trees, claims: &mut [Claim]) -> StoreResult<()> {
    let mut taken = HashSet::new();
    for claim in claims {
        let request = &claim.request;
        for keys in &request.queues {
            promote_due(trees, keys, request.now)?;
        }
        let mut cursors = Vec::with_capacity(request.queues.len());
        for keys in &request.queues {
            let mut cursor = ReadyCursor::new(trees, keys, request.now);
            let next = cursor.next_due(&taken)?;
            cursors.push((cursor, next));
        }
        let mut choice = Vec::new();
        while choice.len() < request.max {
            let best = cursors
                .iter_mut()
                .filter(|(_, next)| next.is_some())
                .min_by_key(|(_, next)| next.as_ref().map(|head| head.entry));
            let Some((cursor, next)) = best else { break };
            let Some(head) = next.take() else { break };
            taken.insert(head.key.clone());
            choice.push(head);
            *next = cursor.next_due(&taken)?;
        }
        claim.choice = choice;
    }
    Ok(())
}
