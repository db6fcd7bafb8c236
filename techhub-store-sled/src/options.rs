//! How a store is opened: its flush policy (what an acknowledged write promises) and sled's cache size.

use std::time::Duration;

/// When writes reach the disk, and so what an acknowledged write survives.
///
/// Whatever the policy, a crash never tears a write: each store call commits in one sled transaction, and
/// recovery keeps a prefix of the committed transactions, each whole (an index is never out of step with its
/// rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// A write is answered only after a sled flush that began after it committed has completed. Concurrent
    /// writers share flushes (group commit): the writer commits every call waiting in one transaction, then
    /// flushes once for all of them.
    ///
    /// An acknowledged write survives a crash of the process (SIGKILL included): its bytes are in the
    /// operating system's hands. It survives a power loss as far as sled's flush guarantees: on Linux sled 0.34
    /// makes the written range durable with `sync_file_range`, which neither flushes a volatile drive cache nor
    /// file metadata; sled's own background thread runs a full `fsync` every 500 ms, which closes that gap.
    /// The default.
    #[default]
    EveryWrite,
    /// Writes are answered once committed in memory; sled's background thread writes and syncs them every
    /// interval (at least 1 ms; sled also writes its buffers out as they fill). A crash of the process or a
    /// power loss may lose the writes acknowledged in the last interval (a little more while a flush is
    /// running), never part of one. Faster: no write waits for the disk.
    Every(Duration),
}

/// Options for [`SledStore::open_with`](crate::SledStore::open_with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledOptions {
    /// When writes reach the disk (default [`FlushPolicy::EveryWrite`]).
    pub flush: FlushPolicy,
    /// The most memory sled's page cache may use, in bytes (default 256 MiB).
    pub cache_capacity: u64,
    /// How long opening waits for the directory's lock (default 2 s). A store of this process that was just
    /// dropped releases it a moment later, once sled's IO threads have finished; a directory another process
    /// holds fails with [`StoreError::Unavailable`](techhub_core::storage::StoreError::Unavailable) after this.
    pub lock_wait: Duration,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self { flush: FlushPolicy::EveryWrite, cache_capacity: 256 * 1024 * 1024, lock_wait: Duration::from_secs(2) }
    }
}

/// sled's background flush interval for `policy`, in milliseconds.
pub(crate) fn background_flush_ms(policy: FlushPolicy) -> u64 {
    match policy {
        // Every write is flushed by the store; sled's thread still runs its full fsync and space reclamation.
        FlushPolicy::EveryWrite => 500,
        FlushPolicy::Every(interval) => u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1),
    }
}
