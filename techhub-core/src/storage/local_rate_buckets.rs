//! Queue rate buckets in process memory, for the stores one process owns (memory, SQLite, sled): every
//! caller of such a store is in this process, so one map under a lock is one bucket per queue for all of
//! them. A store that processes share (PostgreSQL) keeps the buckets in its database instead.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::model::{QueueStarts, RateBucket, RateLimit};

/// The token bucket of every queue, as [`JobStore::take_queue_starts`](super::JobStore::take_queue_starts)
/// describes them.
#[derive(Debug, Default)]
pub struct LocalRateBuckets {
    buckets: Mutex<HashMap<String, RateBucket>>,
}

impl LocalRateBuckets {
    /// Takes up to `want` starts of `queue` (see [`RateBucket::take`]).
    pub fn take(&self, queue: &str, limit: RateLimit, now: DateTime<Utc>, want: u32) -> QueueStarts {
        if want == 0 {
            return QueueStarts { granted: 0, next_in: None };
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(queue.to_owned()).or_insert_with(|| RateBucket::full(&limit, now));
        bucket.take(&limit, now, want)
    }

    /// Gives back `count` unused starts of `queue` (see [`RateBucket::give_back`]).
    pub fn give_back(&self, queue: &str, limit: RateLimit, now: DateTime<Utc>, count: u32) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(queue.to_owned()).or_insert_with(|| RateBucket::full(&limit, now));
        bucket.give_back(&limit, now, count);
    }
}
