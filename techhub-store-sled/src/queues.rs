//! Reading the queue indexes: promoting due delayed jobs, finding the next job to claim, and a queue's oldest
//! queued `run_at`. Each is a few seeks, whatever the number of jobs: a claim reads the first key of each named
//! queue's ready index (plus one seek into its delayed index to see whether anything became due), never the
//! jobs themselves, and delayed jobs live in their own index so a claim never steps over them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sled::IVec;
use techhub_core::storage::StoreResult;

use crate::engine::{Sled, TreeId, Trees};
use crate::job_index::JobTx;
use crate::keys::{QueueKeys, ReadyEntry, priority_from_value};
use crate::tx::transaction;

/// How many delayed jobs one promotion transaction moves.
const PROMOTION_BATCH: usize = 512;

/// A job to claim: its ready key and what the key says.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) key: IVec,
    pub(crate) entry: ReadyEntry,
}

/// Moves every job of the queue that is due at `now` from the delayed to the ready index (on the writer).
///
/// The cost is one seek when nothing is due, and a constant per job promoted: each job is promoted once.
pub(crate) fn promote_due(trees: &Trees, keys: &QueueKeys, now: DateTime<Utc>) -> StoreResult<()> {
    let end = keys.delayed_due_end(now);
    loop {
        let mut due = Vec::new();
        for entry in trees[TreeId::JobsDelayed].range(keys.prefix()..end.as_slice()).take(PROMOTION_BATCH) {
            let (key, priority) = entry.sled()?;
            due.push((key, priority_from_value(&priority)?));
        }
        if due.is_empty() {
            return Ok(());
        }
        transaction(trees, |tx| {
            let jobs = JobTx::new(tx);
            for (key, priority) in &due {
                jobs.promote(keys, key, *priority)?;
            }
            Ok(())
        })?;
        if due.len() < PROMOTION_BATCH {
            return Ok(());
        }
    }
}

/// The jobs of one queue that are due at `now` and not in `taken`, in claim order, read from the ready index as
/// they are asked for: taking several jobs of a queue is one pass over its first keys, not a new search per job.
///
/// The ready index holds jobs that were due when they entered it, so its keys are normally due in order. Only
/// when `now` is behind the time a job was queued at (one caller's clock behind another's) can a key of a
/// priority level be not yet due; then the rest of that level is later still, and the cursor jumps to the next
/// level.
pub(crate) struct ReadyCursor<'a> {
    trees: &'a Trees,
    keys: &'a QueueKeys,
    now: DateTime<Utc>,
    keys_left: sled::Iter,
}

impl<'a> ReadyCursor<'a> {
    pub(crate) fn new(trees: &'a Trees, keys: &'a QueueKeys, now: DateTime<Utc>) -> Self {
        let keys_left = trees[TreeId::JobsReady].range(keys.prefix()..);
        Self { trees, keys, now, keys_left }
    }

    /// The next due job not in `taken`, or `None` when the queue has no more.
    pub(crate) fn next_due(&mut self, taken: &HashSet<IVec>) -> StoreResult<Option<Head>> {
        while let Some(entry) = self.keys_left.next() {
            let (key, _) = entry.sled()?;
            if !key.starts_with(self.keys.prefix()) {
                return Ok(None);
            }
            if taken.contains(&key) {
                continue;
            }
            let entry = self.keys.decode_ready(&key)?;
            if entry.run_at <= self.now {
                return Ok(Some(Head { key, entry }));
            }
            let Some(next) = self.keys.next_level(entry.priority_key) else { return Ok(None) };
            self.keys_left = self.trees[TreeId::JobsReady].range(next..);
        }
        Ok(None)
    }
}

/// The earliest `run_at` among the queue's queued jobs: the first delayed one, or the first of each priority
/// level of the ready index (one seek per level present).
pub(crate) fn oldest_queued(trees: &Trees, keys: &QueueKeys) -> StoreResult<Option<DateTime<Utc>>> {
    let mut oldest = match trees[TreeId::JobsDelayed].scan_prefix(keys.prefix()).next() {
        Some(entry) => Some(keys.decode_delayed(&entry.sled()?.0)?.run_at),
        None => None,
    };
    let mut from = keys.prefix().to_vec();
    while let Some(first) = trees[TreeId::JobsReady].range(from.as_slice()..).next() {
        let (key, _) = first.sled()?;
        if !key.starts_with(keys.prefix()) {
            break;
        }
        let entry = keys.decode_ready(&key)?;
        oldest = Some(oldest.map_or(entry.run_at, |known: DateTime<Utc>| known.min(entry.run_at)));
        match keys.next_level(entry.priority_key) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(oldest)
}
