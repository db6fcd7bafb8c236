//! Group commit for [`FlushPolicy::EveryWrite`](crate::FlushPolicy::EveryWrite).
//!
//! A writer that committed takes a ticket (a number, in commit order) and waits until a flush covering it has
//! completed. A dedicated flusher thread (never an async worker: a flush blocks on the disk) takes every ticket
//! issued so far, runs one sled flush, and publishes the highest ticket it covered. A flush covers every ticket
//! taken before it started, because sled flushes everything written up to that moment; so writes that arrive
//! while a flush runs share the next one, and one flush answers many writers.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use techhub_core::storage::{StoreError, StoreResult};
use tokio::sync::watch;

/// What writes wait for before they are answered.
#[derive(Debug)]
pub(crate) struct Durability {
    group: Option<GroupCommit>,
}

#[derive(Debug)]
struct GroupCommit {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    tickets: Mutex<Tickets>,
    wake: Condvar,
    flushed: watch::Sender<Flushed>,
}

#[derive(Debug, Default)]
struct Tickets {
    /// The last ticket handed to a writer.
    issued: u64,
    /// The last ticket a flush has started for.
    taken: u64,
    closed: bool,
}

/// What the flusher has done so far.
#[derive(Debug, Clone, Default)]
struct Flushed {
    /// Every ticket up to this one is durable.
    through: u64,
    /// The latest failed flush: the tickets up to `.0` it was meant to cover, and why it failed.
    failed: Option<(u64, Arc<sled::Error>)>,
}

fn lock(tickets: &Mutex<Tickets>) -> MutexGuard<'_, Tickets> {
    // The counters are plain integers updated in one step each: a panic cannot leave them half-written.
    tickets.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Durability {
    /// Writes are answered once committed: durability is left to sled's background flusher (or, for a
    /// temporary store, there is none to have).
    pub(crate) fn background() -> Self {
        Self { group: None }
    }

    /// Writes wait for a flush of `db` that covers them.
    pub(crate) fn every_write(db: sled::Db) -> StoreResult<Self> {
        let shared = Arc::new(Shared {
            tickets: Mutex::new(Tickets::default()),
            wake: Condvar::new(),
            flushed: watch::Sender::new(Flushed::default()),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("techhub-sled-flusher".to_owned())
                .spawn(move || flush_loop(&db, &shared))
                .map_err(StoreError::backend)?
        };
        Ok(Self { group: Some(GroupCommit { shared, flusher: Some(flusher) }) })
    }

    /// Returns once everything this caller committed before the call is as durable as the policy promises.
    pub(crate) async fn committed(&self) -> StoreResult<()> {
        let Some(group) = &self.group else { return Ok(()) };
        let shared = &group.shared;
        // Subscribe before taking the ticket, so that no publication can slip between the two.
        let mut flushed = shared.flushed.subscribe();
        let ticket = {
            let mut tickets = lock(&shared.tickets);
            if tickets.closed {
                return Err(closed());
            }
            tickets.issued += 1;
            tickets.issued
        };
        shared.wake.notify_one();
        let outcome = flushed
            .wait_for(|state| state.through >= ticket || state.failed.as_ref().is_some_and(|(upto, _)| *upto >= ticket))
            .await
            .map_err(|_| closed())?;
        if outcome.through >= ticket {
            return Ok(());
        }
        let error = outcome.failed.as_ref().map(|(_, error)| error.clone());
        drop(outcome);
        Err(match error {
            Some(error) => StoreError::unavailable(FlushFailed(error)),
            None => closed(),
        })
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        let Some(group) = &mut self.group else { return };
        lock(&group.shared.tickets).closed = true;
        group.shared.wake.notify_all();
        // Joining releases the flusher's handle on the database before the store's own handles go, so the
        // files are unlocked when the store is gone (a reopen right after a drop must succeed). It waits at
        // most for one running flush: no writer can be waiting, as writers borrow the store.
        if let Some(flusher) = group.flusher.take()
            && flusher.join().is_err()
        {
            tracing::error!("the sled flusher thread panicked");
        }
    }
}

fn flush_loop(db: &sled::Db, shared: &Shared) {
    loop {
        let target = {
            let mut tickets = lock(&shared.tickets);
            while tickets.taken == tickets.issued && !tickets.closed {
                tickets = shared.wake.wait(tickets).unwrap_or_else(PoisonError::into_inner);
            }
            if tickets.taken == tickets.issued {
                return;
            }
            tickets.taken = tickets.issued;
            tickets.taken
        };
        match db.flush() {
            Ok(_) => shared.flushed.send_modify(|state| state.through = state.through.max(target)),
            Err(error) => {
                tracing::error!(error = %error, "flushing the sled database failed; waiting writes are told so");
                shared.flushed.send_modify(|state| state.failed = Some((target, Arc::new(error))));
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::unavailable(std::io::Error::other("the sled store is closed"))
}

/// A flush failed, so the writes it covered may not be durable (they may still be, or become so later).
#[derive(Debug)]
struct FlushFailed(Arc<sled::Error>);

impl std::fmt::Display for FlushFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flushing the write to disk failed: {}", self.0)
    }
}

impl std::error::Error for FlushFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes_and_all_return() {
        let db = sled::Config::new().temporary(true).open().expect("opens");
        let durability = Arc::new(Durability::every_write(db.clone()).expect("starts"));
        let mut tasks = Vec::new();
        for n in 0u64..64 {
            let (db, durability) = (db.clone(), durability.clone());
            tasks.push(tokio::spawn(async move {
                db.insert(n.to_be_bytes(), &b"v"[..]).expect("inserts");
                durability.committed().await
            }));
        }
        for task in tasks {
            task.await.expect("ran").expect("durable");
        }
        let tickets = lock(&durability.group.as_ref().expect("grouped").shared.tickets).issued;
        assert_eq!(tickets, 64);
    }
}
