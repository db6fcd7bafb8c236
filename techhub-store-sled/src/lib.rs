//! # TechHub on sled
//!
//! [`SledStore`] keeps everything in a sled 0.34 database: pure Rust, embedded, one process at a time (sled
//! locks its directory). It passes TechHub's whole storage conformance suite.
//!
//! - **Trees.** One tree per aggregate (users, tokens, jobs, job artifacts, builds, build logs, notifications,
//!   endpoints) plus index trees: email → user id; tokens by user, by family and by expiry; queued jobs that are due, in
//!   claim order; queued jobs not yet due, in `run_at` order; running jobs by lease end; finished jobs by state
//!   and end; live jobs by unique key; jobs by creator; builds by project; and counters (jobs per queue and
//!   state, active admins, notifications per channel and status).
//! - **Atomic writes.** Every store call that changes several trees does it in one sled transaction, so a crash
//!   never leaves an index out of step with its rows, and a user lands with its follow-up jobs or not at all.
//! - **One writer.** Writes run on a dedicated thread that takes every call waiting and runs them one after
//!   the other, each call in its own savepoint (a call that fails leaves no trace and does not sink the
//!   others), commits what they wrote in one sled transaction over the trees they touched (one write per key),
//!   then flushes once for all of them (group commit). sled 0.34 makes each transaction costly in fixed work
//!   and per key written, and blocks transactions while it flushes, so sharing both is what makes concurrent
//!   writers fast. Reads run on Tokio's blocking threads (a sled read may wait for the disk); opening, which
//!   may wait for the directory's lock, and dropping, which joins the writer, hand a multi-threaded runtime's
//!   worker over first, so no async worker thread waits on sled.
//! - **Claims stay flat.** The writer picks a claim's job as the first key of each named queue's ready index,
//!   whose order is the claim order (priority, then `run_at`, then id), skipping jobs that earlier claims of the
//!   same round took, and moves it to running in the round's transaction: a few seeks, whatever the number of
//!   queued jobs. Jobs not yet due wait in a separate index that a claim only
//!   checks for newly due jobs (moving each once), so delayed jobs are never scanned past. Counts by queue and
//!   state are counters updated in the same transactions.
//! - **Keys cannot be forged.** Key parts are fixed-width (ids, hashes, big-endian times and priorities) except
//!   at most one name, which leads the key behind its length, so no queue or project name can spell another
//!   key or fall in another's prefix.
//! - **Durability** follows the [`FlushPolicy`]: by default a write is answered only once the flush of its round
//!   has completed, so an acknowledged write survives a crash of the process; [`FlushPolicy::Every`] leaves
//!   flushing to sled's background thread and may lose the last interval's writes on a crash. See the policy's
//!   docs for the exact promises.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::json;
//! use techhub_core::model::{Job, NewJob, WorkerId};
//! use techhub_core::storage::{JobStore, Storage};
//! use techhub_store_sled::SledStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path().join("techhub"))?;
//! store.health().await?;
//!
//! let now = chrono::Utc::now();
//! let job = store.enqueue(Job::new(NewJob::new("email.welcome", json!({ "to": "ada@example.com" })), now)?).await?;
//! let queues = ["default".to_owned()];
//! let claimed = store.claim(&queues, &WorkerId::new("worker-1"), now, std::time::Duration::from_secs(30)).await?;
//! assert_eq!(claimed.map(|claimed| claimed.id), Some(job.id));
//! # Ok(())
//! # }
//! ```

mod audit;
mod builds;
mod claims;
mod codec;
mod endpoints;
mod engine;
mod job_index;
mod jobs;
mod keys;
mod notifications;
mod options;
mod paging;
mod queues;
mod rows;
mod tokens;
mod tx;
mod users;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use options::{FlushPolicy, SledOptions};
use techhub_core::model::{DatabaseInfo, TokenFamilyId, User, UserId};
use techhub_core::storage::{LocalRateBuckets, Storage, StoreError, StoreResult};

use crate::engine::{Sled, Trees};
use crate::writer::Writer;

/// TechHub storage in a sled database.
pub struct SledStore {
    // Dropped first: it finishes the calls sent and joins the writer thread, which holds handles on the database.
    writer: Writer,
    /// For reads, which run on blocking threads (see [`SledStore::read`]).
    trees: Arc<Trees>,
    db: sled::Db,
    path: Option<PathBuf>,
    flush: Option<FlushPolicy>,
    /// The queues' rate buckets: one process opens the database, so they are kept in its memory.
    rate_buckets: LocalRateBuckets,
}

impl SledStore {
    /// Opens (creating if needed) the database in the directory `path`, with the default options.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, &SledOptions::default())
    }

    /// Opens (creating if needed) the database in the directory `path` with `options`.
    ///
    /// A directory another process has open fails with [`StoreError::Unavailable`] (after
    /// [`SledOptions::lock_wait`]); one written by a newer layout of this crate with [`StoreError::Corrupt`].
    pub fn open_with(path: impl AsRef<Path>, options: &SledOptions) -> StoreResult<Self> {
        let path = path.as_ref();
        let deadline = Instant::now() + options.lock_wait;
        // Waiting for the lock sleeps: inside a multi-threaded Tokio runtime, the worker's other tasks move
        // elsewhere meanwhile.
        let db = off_the_runtime(|| {
            loop {
                let opened = sled::Config::new()
                    .path(path)
                    .cache_capacity(options.cache_capacity)
                    .flush_every_ms(Some(options::background_flush_ms(options.flush)))
                    .open();
                match opened {
                    Err(sled::Error::Io(error)) if is_lock_held(&error) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    opened => break opened.sled(),
                }
            }
        })?;
        let trees = Trees::open(&db)?;
        users::backfill_counts(&trees)?;
        let writer = Writer::start(db.clone(), trees.clone(), options.flush == FlushPolicy::EveryWrite)?;
        tracing::debug!(path = %path.display(), recovered = db.was_recovered(), "sled store opened");
        Ok(Self {
            writer,
            trees: Arc::new(trees),
            db,
            path: Some(path.to_owned()),
            flush: Some(options.flush),
            rate_buckets: LocalRateBuckets::default(),
        })
    }

    /// A private database in a temporary file, deleted when the store is dropped (tests, trials). Nothing
    /// survives the store, so writes never wait for the disk.
    pub fn temporary() -> StoreResult<Self> {
        let db = sled::Config::new().temporary(true).open().sled()?;
        let trees = Trees::open(&db)?;
        let writer = Writer::start(db.clone(), trees.clone(), false)?;
        Ok(Self {
            writer,
            trees: Arc::new(trees),
            db,
            path: None,
            flush: None,
            rate_buckets: LocalRateBuckets::default(),
        })
    }
}

/// Runs blocking `work` (a lock wait, a thread join) from synchronous code that may be called on a Tokio
/// worker thread: in a multi-threaded runtime the worker hands its other tasks over first
/// (`block_in_place`); elsewhere (no runtime, or a current-thread one, where that is not possible) it just
/// runs.
pub(crate) fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

impl SledStore {
    /// Runs `read` on a blocking thread: any sled read may wait for the disk (a page not in the cache), and no
    /// async worker thread may wait for a disk.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Trees) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || read(&trees))
            .await
            .map_err(|_| StoreError::unavailable(std::io::Error::other("a sled read did not finish")))?
    }
}

/// Whether opening failed because the directory is locked (sled words it so; the OS error is inside the text).
fn is_lock_held(error: &std::io::Error) -> bool {
    error.to_string().starts_with("could not acquire lock")
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("path", &self.path).field("flush", &self.flush).finish_non_exhaustive()
    }
}

#[async_trait]
impl Storage for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn health(&self) -> StoreResult<()> {
        // A read that goes through sled's page cache; any failure means the store cannot serve now.
        let db = self.db.clone();
        self.read(move |_| db.get(b"health").map(drop).map_err(StoreError::unavailable)).await
    }

    /// The layout (format) version, the size on disk and the directory.
    async fn database_info(&self) -> StoreResult<DatabaseInfo> {
        let db = self.db.clone();
        let size = self.read(move |_| db.size_on_disk().map_err(StoreError::unavailable)).await?;
        let mut info = DatabaseInfo::new(self.backend());
        info.schema_version = Some(u64::from(engine::FORMAT_VERSION));
        info.size_bytes = Some(size);
        info.details.insert("directory".into(), self.path.as_ref().map(|path| path.display().to_string()).into());
        info.details.insert("recovered".into(), self.db.was_recovered().into());
        Ok(info)
    }

    async fn session_user(
        &self,
        family: TokenFamilyId,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        // Every authenticated request asks this: both reads in one trip to a blocking thread.
        self.read(move |trees| {
            if !tokens::family_is_live(trees, family, now)? {
                return Ok(None);
            }
            users::load_user(trees, user_id)
        })
        .await
    }
}
