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

/// The first job in claim order of the queue that is due at `now` and not in `taken`.
///
/// The ready index holds jobs that were due when they entered it, so its first key is normally the answer.
/// Only when `now` is behind the time a job was queued at (one caller's clock behind another's) can the first
/// key of a priority level be not yet due; then the rest of that level is later still, and the search jumps to
/// the next level.
pub(crate) fn head(
    trees: &Trees,
    keys: &QueueKeys,
    now: DateTime<Utc>,
    taken: &HashSet<IVec>,
) -> StoreResult<Option<Head>> {
    let ready = &trees[TreeId::JobsReady];
    let mut from = keys.prefix().to_vec();
    'levels: loop {
        for entry in ready.range(from.as_slice()..) {
            let (key, _) = entry.sled()?;
            if !key.starts_with(keys.prefix()) {
                return Ok(None);
            }
            if taken.contains(&key) {
                continue;
            }
            let entry = keys.decode_ready(&key)?;
            if entry.run_at <= now {
                return Ok(Some(Head { key, entry }));
            }
            match keys.next_level(entry.priority_key) {
                Some(next) => {
                    from = next;
                    continue 'levels;
                }
                None => return Ok(None),
            }
        }
        return Ok(None);
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
