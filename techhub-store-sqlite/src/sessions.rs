//! What authenticating a request reads (a live session's user), kept for a moment so that a busy API does
//! not go to a reader thread on every request.
//!
//! Every write of this store to users or tokens moves a generation counter, and an entry is used only while
//! the generation it was read under is current: in this process, a logout, a password change or a disabled
//! user takes effect at once. Changes made by another process sharing the database file are seen within
//! [`MAX_AGE`]. An entry also ends when the session's last live token expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use techhub_core::model::{TokenFamilyId, User, UserId};

/// How long an entry may answer for changes made by other processes.
pub(crate) const MAX_AGE: Duration = Duration::from_millis(250);
/// Entries kept at most; past this the cache starts over (it only ever saves a read).
const CAPACITY: usize = 4_096;

struct Entry {
    user: User,
    live_until: DateTime<Utc>,
    generation: u64,
    read_at: Instant,
}

/// The cache. See the module docs.
#[derive(Default)]
pub(crate) struct SessionCache {
    generation: AtomicU64,
    entries: Mutex<HashMap<(TokenFamilyId, UserId), Entry>>,
}

impl SessionCache {
    /// The generation to read under: take it before reading, pass it to [`SessionCache::store`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Called after every write to users or tokens (committed or not): entries read before are dropped.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The user of a live session `family`, if an entry still vouches for it at `now`.
    pub(crate) fn get(&self, family: TokenFamilyId, user_id: UserId, now: DateTime<Utc>) -> Option<User> {
        let generation = self.generation();
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(&(family, user_id))?;
        let fresh = entry.generation == generation && entry.read_at.elapsed() < MAX_AGE && now < entry.live_until;
        fresh.then(|| entry.user.clone())
    }

    /// Remembers what a read under `generation` found: the session lives until `live_until` with `user`.
    pub(crate) fn store(&self, family: TokenFamilyId, user: &User, live_until: DateTime<Utc>, generation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        let entry = Entry { user: user.clone(), live_until, generation, read_at: Instant::now() };
        entries.insert((family, user.id), entry);
    }
}
