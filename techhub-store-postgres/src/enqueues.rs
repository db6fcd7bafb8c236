//! Single-job enqueues committed together.
//!
//! Each [`JobStore::enqueue`](techhub_core::storage::JobStore::enqueue) call is one job, and many callers
//! enqueue at once (request handlers, handlers enqueuing follow-ups). Committed one by one, each is a
//! statement, a run of the counting trigger and a commit. Instead, every call hands its job to one committer
//! task, which inserts all the jobs waiting in one statement (one commit) and answers each call once that
//! commit is done: every enqueue is still committed before it is acknowledged, and while one statement runs
//! the next calls gather for the following one, so a busy store commits many jobs per statement and an idle
//! one answers a lone call at once.
//!
//! The statement skips the rows that conflict (`ON CONFLICT DO NOTHING`); each job not inserted, and every
//! job of a statement that failed as a whole, is then enqueued on its own with the full rules of
//! [`insert_jobs`], so one call's duplicate id or live unique key never affects another call.

use std::sync::{Mutex, PoisonError};

use deadpool_postgres::Pool;
use techhub_core::model::Job;
use techhub_core::storage::{StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

use crate::db;
use crate::jobs::{insert_jobs, insert_rows};

/// Jobs one statement inserts at most.
const MAX_BATCH: usize = 512;

/// A call waiting for its job to be committed.
struct Request {
    job: Job,
    answer: oneshot::Sender<StoreResult<Job>>,
}

/// Hands single-job enqueues to the committer task (started on first use, and again on the caller's runtime
/// if the runtime it ran on has ended).
pub(crate) struct Enqueues {
    pool: Pool,
    committer: Mutex<Option<mpsc::UnboundedSender<Request>>>,
}

impl Enqueues {
    pub(crate) fn new(pool: Pool) -> Self {
        Self { pool, committer: Mutex::new(None) }
    }

    /// Stores `job` as `JobStore::enqueue` says, once committed.
    pub(crate) async fn enqueue(&self, job: Job) -> StoreResult<Job> {
        let (answer, answered) = oneshot::channel();
        let Some(request) = self.hand_over(Request { job, answer }) else {
            return answered.await.unwrap_or_else(|_| Err(outcome_unknown()));
        };
        // No runtime to run the committer on: on its own, on this connection.
        let client = db::client(&self.pool).await?;
        let mut stored = insert_jobs(&client, vec![request.job]).await?;
        stored.pop().ok_or(StoreError::NotFound)
    }

    /// Queues the request for the committer; gives it back if no committer can run.
    fn hand_over(&self, request: Request) -> Option<Request> {
        let mut committer = self.committer.lock().unwrap_or_else(PoisonError::into_inner);
        let request = match committer.as_ref() {
            Some(sender) => match sender.send(request) {
                Ok(()) => return None,
                Err(mpsc::error::SendError(request)) => request,
            },
            None => request,
        };
        // None yet, or its runtime ended (which dropped its receiver): one on the caller's runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return Some(request) };
        let (sender, pending) = mpsc::unbounded_channel();
        runtime.spawn(commit(self.pool.clone(), pending));
        let handed = sender.send(request);
        *committer = Some(sender);
        handed.err().map(|mpsc::error::SendError(request)| request)
    }
}

/// The committer: one statement for everything waiting, then the next round, until the store is dropped.
async fn commit(pool: Pool, mut pending: mpsc::UnboundedReceiver<Request>) {
    let mut round = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut round, MAX_BATCH).await > 0 {
        commit_round(&pool, std::mem::take(&mut round)).await;
    }
}

async fn commit_round(pool: &Pool, round: Vec<Request>) {
    let client = match db::client(pool).await {
        Ok(client) => client,
        Err(error) => {
            let message = error.to_string();
            for request in round {
                let _ = request.answer.send(Err(StoreError::unavailable(std::io::Error::other(message.clone()))));
            }
            return;
        }
    };
    let jobs: Vec<Job> = round.iter().map(|request| request.job.clone()).collect();
    // A statement that fails as a whole (a value the server refuses) leaves every job to be tried alone.
    let mut inserted = insert_rows(&client, &jobs, true).await.unwrap_or_default();
    for request in round {
        // Taken out once answered: of two calls with one id, the second is a duplicate.
        let outcome = if inserted.remove(request.job.id.as_uuid()) {
            Ok(request.job)
        } else {
            insert_jobs(&client, vec![request.job])
                .await
                .and_then(|mut stored| stored.pop().ok_or(StoreError::NotFound))
        };
        let _ = request.answer.send(outcome);
    }
}

/// The committer ended (its runtime shut down) before answering: the job may or may not be stored.
fn outcome_unknown() -> StoreError {
    StoreError::unavailable(std::io::Error::other("the enqueue's outcome is unknown: its committer stopped"))
}
