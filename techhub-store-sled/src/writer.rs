//! The writer: one thread that runs every write of the store, many calls per sled transaction, and flushes once
//! per round (group commit).
//!
//! sled 0.34 makes each transaction expensive in fixed costs (it runs under a process-wide lock and writes out
//! its IO buffer twice), and a flush blocks every transaction while it waits for the disk. So the writer takes
//! every call waiting, runs them one after the other (each in its own savepoint, [`Tx`]: a call that fails
//! leaves no trace and does not sink the others), commits what they wrote in one transaction over the trees
//! they touched ([`Pending`]), flushes once if the policy asks, and only then answers them all. Calls that
//! arrive meanwhile make the next round.
//!
//! Being the only thread that writes, the writer can read before a transaction and rely on what it read:
//! claims pick their jobs from the ready index just before their round's transaction (see
//! [`claims`](crate::claims)), and calls that must scan an index (revocations, rescues, pruning) scan and then
//! write with nothing in between.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use sled::Db;
use sled::transaction::ConflictableTransactionError;
use techhub_core::storage::{StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::claims::{Claim, ClaimRequest, Claimed, choose};
use crate::engine::{Trees, sled_error};
use crate::tx::{Pending, Tx, TxResult, run_call};

/// The most calls one round takes.
const MAX_ROUND: usize = 1_024;

/// Answers a call once its round is durable; gets the flush's error, if the flush failed.
pub(crate) type Finish = Box<dyn FnOnce(Option<&sled::Error>) + Send>;

/// A call that runs in a round.
trait Call: Send {
    /// Runs the call in its own savepoint: a failure of the call is kept as its outcome; a failure of the
    /// round itself (a sled error) is returned.
    fn apply(&self, trees: &Trees, pending: &mut Pending) -> TxResult<()>;

    /// The answer to give once the round is flushed; `failed` if the round's transaction failed.
    fn finish(self: Box<Self>, failed: Option<&sled::Error>) -> Finish;
}

/// Runs `body` in a savepoint of the round. Its own failure (a conflict, or even a panic) becomes its outcome
/// and discards its writes; a failure of the round (a sled error) is returned, to end the round.
pub(crate) fn in_savepoint<T>(
    trees: &Trees,
    pending: &mut Pending,
    body: impl FnOnce(&Tx<'_>) -> TxResult<T>,
) -> TxResult<StoreResult<T>> {
    // Unwind safety: a call's writes live in its savepoint until they join the round's, which happens only
    // after the body returned, so a panicking body leaves nothing half-written; the savepoint is dropped.
    match catch_unwind(AssertUnwindSafe(|| run_call(trees, pending, body))) {
        Ok(Ok(value)) => Ok(Ok(value)),
        Ok(Err(ConflictableTransactionError::Abort(error))) => Ok(Err(error)),
        Ok(Err(other)) => Err(other),
        Err(_) => {
            tracing::error!("a sled store write panicked; it is answered with an error and changed nothing");
            Ok(Err(StoreError::backend(std::io::Error::other("the write panicked"))))
        }
    }
}

/// What a caller asked for: `body` runs in a savepoint of the round; the outcome waits in a slot until the
/// round is committed.
struct Write<T, F> {
    body: F,
    outcome: RefCell<Option<StoreResult<T>>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Call for Write<T, F>
where
    T: Send + 'static,
    F: Fn(&Tx<'_>) -> TxResult<T> + Send,
{
    fn apply(&self, trees: &Trees, pending: &mut Pending) -> TxResult<()> {
        *self.outcome.borrow_mut() = Some(in_savepoint(trees, pending, |tx| (self.body)(tx))?);
        Ok(())
    }

    fn finish(self: Box<Self>, failed: Option<&sled::Error>) -> Finish {
        let Write { outcome, reply, .. } = *self;
        let outcome = match failed {
            Some(error) => Err(sled_error(error.clone())),
            None => outcome.into_inner().unwrap_or_else(|| Err(not_run())),
        };
        answer_after_flush(reply, outcome)
    }
}

/// Work that needs the writer to itself: it scans, then writes in a transaction of its own.
type Alone = Box<dyn FnOnce(&Trees) -> Finish + Send>;

enum Request {
    Write(Box<dyn Call>),
    Claim(Box<Claim>),
    Alone(Alone),
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Write(_) => "Write",
            Request::Claim(_) => "Claim",
            Request::Alone(_) => "Alone",
        })
    }
}

/// Sends a call's outcome once its round's flush is done (a failed flush fails the calls that succeeded).
pub(crate) fn answer_after_flush<T: Send + 'static>(
    reply: oneshot::Sender<StoreResult<T>>,
    outcome: StoreResult<T>,
) -> Finish {
    Box::new(move |flush_error| {
        let outcome = match (outcome, flush_error) {
            (Ok(_), Some(error)) => Err(StoreError::unavailable(FlushFailed(error.clone()))),
            (outcome, _) => outcome,
        };
        // A caller that stopped waiting (its future was dropped) needs no answer.
        let _ = reply.send(outcome);
    })
}

pub(crate) fn not_run() -> StoreError {
    StoreError::backend(std::io::Error::other("the writer did not run the call"))
}

fn closed() -> StoreError {
    StoreError::unavailable(std::io::Error::other("the sled store is closed"))
}

/// A flush failed, so the writes it covered may not be durable.
#[derive(Debug)]
struct FlushFailed(sled::Error);

impl std::fmt::Display for FlushFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flushing the write to disk failed: {}", self.0)
    }
}

impl std::error::Error for FlushFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The handle the store writes through.
#[derive(Debug)]
pub(crate) struct Writer {
    sender: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread; with `flush_every_round`, each round is flushed before it is answered.
    pub(crate) fn start(db: Db, trees: Trees, flush_every_round: bool) -> StoreResult<Self> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("techhub-sled-writer".to_owned())
            .spawn(move || write_loop(&db, &trees, flush_every_round, &receiver))
            .map_err(StoreError::backend)?;
        Ok(Self { sender: Some(sender), thread: Some(thread) })
    }

    fn send(&self, request: Request) -> StoreResult<()> {
        self.sender.as_ref().ok_or_else(closed)?.send(request).map_err(|_| closed())
    }

    /// Runs `body` in the next round's transaction; answers once the round is committed (and flushed).
    pub(crate) async fn write<T>(&self, body: impl Fn(&Tx<'_>) -> TxResult<T> + Send + 'static) -> StoreResult<T>
    where
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write(Box::new(Write { body, outcome: RefCell::new(None), reply })))?;
        answer.await.map_err(|_| closed())?
    }

    /// Claims in the next round: answers the claimed job's new row, or `None` if nothing is due.
    pub(crate) async fn claim(&self, request: ClaimRequest) -> StoreResult<Claimed> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Claim(Box::new(Claim::new(request, reply))))?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `work` on the writer between rounds, with nothing else writing: it may scan, then call
    /// [`transaction`](crate::tx::transaction).
    pub(crate) async fn alone<T>(&self, work: impl FnOnce(&Trees) -> StoreResult<T> + Send + 'static) -> StoreResult<T>
    where
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let alone: Alone = Box::new(move |trees| {
            // A panic fails this call alone (its transaction, if it got that far, did not commit).
            let outcome = catch_unwind(AssertUnwindSafe(|| work(trees))).unwrap_or_else(|_| {
                tracing::error!("a sled store write panicked; it is answered with an error");
                Err(StoreError::backend(std::io::Error::other("the write panicked")))
            });
            answer_after_flush(reply, outcome)
        });
        self.send(Request::Alone(alone))?;
        answer.await.map_err(|_| closed())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the loop once the calls already sent are answered. Joining releases the
        // thread's handles on the database before the store's own go, so the directory is unlocked when the
        // store is gone (reopening right after a drop works).
        drop(self.sender.take());
        if let Some(thread) = self.thread.take()
            && crate::off_the_runtime(|| thread.join()).is_err()
        {
            tracing::error!("the sled writer thread panicked");
        }
    }
}

/// Calls collected for one transaction.
#[derive(Default)]
struct Round {
    claims: Vec<Claim>,
    writes: Vec<Box<dyn Call>>,
}

impl Round {
    fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.writes.is_empty()
    }

    /// Runs the round's calls, claims first (they picked their jobs from the state before the round), commits
    /// their writes in one transaction, and queues their answers.
    fn commit(&mut self, trees: &Trees, pending: &mut Pending, finishes: &mut Vec<Finish>) {
        if self.is_empty() {
            return;
        }
        let mut claims = std::mem::take(&mut self.claims);
        let writes = std::mem::take(&mut self.writes);
        if let Err(error) = choose(trees, &mut claims) {
            let message = error.to_string();
            finishes.extend(claims.drain(..).map(|claim| claim.fail(&message)));
        }
        let ran = claims
            .iter()
            .try_for_each(|claim| claim.apply(trees, pending))
            .and_then(|()| writes.iter().try_for_each(|write| write.apply(trees, pending)));
        let failed = match ran {
            Ok(()) => pending.commit(trees).err(),
            Err(error) => {
                pending.clear();
                Some(match error {
                    ConflictableTransactionError::Storage(error) => error,
                    // Calls keep their own aborts; a conflict is not raised by any call.
                    other => sled::Error::ReportableBug(format!("a store call failed its round: {other:?}")),
                })
            }
        };
        if let Some(error) = &failed {
            tracing::error!(error = %error, calls = claims.len() + writes.len(), "a sled write transaction failed");
        }
        finishes.extend(claims.into_iter().map(|claim| claim.finish(failed.as_ref())));
        finishes.extend(writes.into_iter().map(|write| write.finish(failed.as_ref())));
    }
}

/// Takes every call waiting, runs them in rounds, flushes, answers; until the store is dropped.
fn write_loop(db: &Db, trees: &Trees, flush_every_round: bool, requests: &Receiver<Request>) {
    let mut pending = Pending::default();
    while let Ok(first) = requests.recv() {
        let mut round = Round::default();
        let mut finishes: Vec<Finish> = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(request) = next {
            match request {
                Request::Write(write) => round.writes.push(write),
                Request::Claim(claim) => round.claims.push(*claim),
                Request::Alone(alone) => {
                    // What came before it commits first, so it sees the state its callers expect.
                    round.commit(trees, &mut pending, &mut finishes);
                    finishes.push(alone(trees));
                }
            }
            taken += 1;
            next = if taken < MAX_ROUND { requests.try_recv().ok() } else { None };
        }
        round.commit(trees, &mut pending, &mut finishes);
        let flush_error = if flush_every_round { db.flush().err() } else { None };
        if let Some(error) = &flush_error {
            tracing::error!(error = %error, "flushing the sled database failed; the round's callers are told so");
        }
        for finish in finishes {
            finish(flush_error.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::engine::TreeId;
    use crate::tx::abort;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_call_fails_alone_and_the_writer_goes_on() {
        let db = sled::Config::new().temporary(true).open().expect("opens");
        let trees = Trees::open(&db).expect("trees");
        let writer = Arc::new(Writer::start(db, trees.clone(), true).expect("starts"));
        let mut calls = Vec::new();
        for n in 0u8..24 {
            let writer = writer.clone();
            calls.push(tokio::spawn(async move {
                writer
                    .write(move |tx| {
                        tx.tree(TreeId::Users).insert([n].as_slice(), [n].as_slice())?;
                        match n % 3 {
                            0 => Ok(n),
                            1 => Err(abort(techhub_core::storage::Conflict::Duplicate)),
                            _ => panic!("a bug in call {n}"),
                        }
                    })
                    .await
            }));
        }
        for (n, call) in calls.into_iter().enumerate() {
            let outcome = call.await.expect("ran");
            let stored = trees[TreeId::Users].get([n as u8]).expect("reads");
            match n % 3 {
                0 => assert_eq!((outcome.expect("succeeds"), stored.is_some()), (n as u8, true)),
                1 => assert!(matches!(outcome, Err(StoreError::Conflict(_))) && stored.is_none()),
                _ => assert!(matches!(outcome, Err(StoreError::Backend(_))) && stored.is_none()),
            }
        }
        assert_eq!(writer.write(|_| Ok(7)).await.expect("still serving"), 7);
    }
}
