//! # TechHub in-memory store
//!
//! [`MemoryStore`] keeps everything in process memory: the default for tests, quick trials and apps that need
//! no persistence. It honours every rule of TechHub's storage contract (it passes the whole conformance suite),
//! with these structures:
//!
//! - jobs in a `DashMap` by id (reads take no global lock), plus one mutex-guarded index of ordered sets per
//!   queue: claims take the head of `(priority desc, run_at, id)` in O(log n), never scanning jobs, and
//!   counts by queue and state are kept as counters (O(1));
//! - users, tokens, builds, notifications and endpoints in maps behind short-held locks, which also make the writes that
//!   touch several aggregates (a user and its follow-up jobs) atomic.
//!
//! Locks are always taken in one order (users, tokens, builds, notifications, then the job index, then a job's
//! map entry) and never held across an `.await`.
//!
//! ```
//! use std::sync::Arc;
//! use techhub_core::storage::{DynStorage, Storage};
//! use techhub_store_memory::MemoryStore;
//!
//! let store: DynStorage = Arc::new(MemoryStore::new());
//! assert_eq!(store.backend(), "memory");
//! ```

mod audit;
mod builds;
mod endpoints;
mod jobs;
mod notifications;
mod paging;
mod tokens;
mod users;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use techhub_core::model::DatabaseInfo;
use techhub_core::storage::{LocalRateBuckets, Storage, StoreResult};

/// TechHub storage in process memory. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    users: RwLock<users::UserTables>,
    tokens: Mutex<tokens::TokenTables>,
    builds: RwLock<builds::BuildTables>,
    notifications: RwLock<notifications::NotificationTables>,
    endpoints: RwLock<endpoints::EndpointTable>,
    jobs: jobs::JobTables,
    audit: RwLock<audit::AuditTable>,
    rate_buckets: LocalRateBuckets,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Storage for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn health(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Nothing on disk: no schema version and no size.
    async fn database_info(&self) -> StoreResult<DatabaseInfo> {
        let mut info = DatabaseInfo::new(self.backend());
        info.details.insert("persistent".into(), false.into());
        Ok(info)
    }
}

// A panic inside a critical section cannot leave these tables half-written: every write validates first and
// then applies infallible steps. So a poisoned lock is safe to keep using.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
