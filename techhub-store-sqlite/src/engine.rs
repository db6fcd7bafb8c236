//! The connections: one writer thread that commits concurrent writes together (group commit), and a small pool
//! of read-only connections used from blocking threads. No rusqlite call ever runs on an async worker thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use techhub_core::storage::{StoreError, StoreResult};
use tokio::sync::{Semaphore, oneshot};

use crate::CachedStatements;
use crate::schema;

/// A write's outcome, delivered once the batch it was part of committed (or failed to).
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;
/// A write: runs inside the batch's transaction (in a savepoint of its own) and says whether it succeeded.
type Work = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// The largest number of writes committed in one transaction.
const MAX_BATCH: usize = 1_024;

/// After this many commits the writer asks the checkpointer to copy the WAL into the database file.
const COMMITS_PER_CHECKPOINT: u32 = 64;

/// The WAL size (pages) at which the writer checkpoints by itself: a backstop for when the checkpointer
/// cannot finish under sustained writes, so the WAL stays bounded.
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// How durable a commit is once acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = NORMAL` in WAL mode: an acknowledged write survives a crash of the process; a power
    /// loss may lose the last commits (never corrupts). The default.
    #[default]
    Normal,
    /// `synchronous = FULL`: an acknowledged write survives a power loss too, at the cost of an fsync per commit.
    Full,
}

/// How the store opens its database.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Commit durability.
    pub durability: Durability,
    /// How long a write waits for another process's lock before failing as unavailable (default 5 s).
    pub busy_timeout: Duration,
    /// Read-only connections for queries (default 4; an in-memory database reads through the writer).
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { durability: Durability::Normal, busy_timeout: Duration::from_secs(5), readers: 4 }
    }
}

pub(crate) struct Engine {
    writer: Mutex<Sender<Work>>,
    readers: Option<ReaderPool>,
}

struct ReaderPool {
    connections: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

pub(crate) fn sql_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::unavailable(error),
        _ => StoreError::backend(error),
    }
}

fn configure(connection: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    connection.busy_timeout(options.busy_timeout)?;
    connection.set_prepared_statement_cache_capacity(128);
    connection.pragma_update(None, "foreign_keys", "ON")?;
    let synchronous = match options.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    connection.pragma_update(None, "synchronous", synchronous)?;
    // A page cache big enough for the hot indexes (64 MiB) and memory-mapped reads (up to 1 GiB) keep claims and lookups
    // off the read(2) path; savepoint journals stay in memory.
    connection.pragma_update(None, "cache_size", -65_536)?;
    connection.pragma_update(None, "mmap_size", 1_073_741_824)?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // Deleted and overwritten content is zeroed, so a discarded payload or a revoked token does not linger in
    // the file's free space.
    connection.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// Puts the database in WAL mode. Another process opening the same new file at once may hold the lock this
/// needs for a moment, and SQLite answers that switch with "busy" without waiting (its busy handler is not
/// asked), so it is tried again until the busy timeout has passed.
fn switch_to_wal(connection: &Connection, busy_timeout: Duration) -> StoreResult<()> {
    let deadline = Instant::now() + busy_timeout;
    loop {
        match connection.pragma_update(None, "journal_mode", "WAL") {
            Err(error)
                if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result.map_err(sql_error),
        }
    }
}

impl Engine {
    /// Opens (creating if needed) the database at `path`, migrating it, with WAL and a reader pool.
    pub(crate) fn open(path: &Path, options: &SqliteOptions) -> StoreResult<Self> {
        let writer = Connection::open(path).map_err(sql_error)?;
        configure(&writer, options).map_err(sql_error)?;
        switch_to_wal(&writer, options.busy_timeout)?;
        schema::migrate(&writer)?;
        writer.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES).map_err(sql_error)?;
        writer.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024).map_err(sql_error)?;
        let checkpoints = spawn_checkpointer(path, options)?;
        let mut readers = Vec::with_capacity(options.readers);
        for _ in 0..options.readers {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
            let reader = Connection::open_with_flags(path, flags).map_err(sql_error)?;
            configure(&reader, options).map_err(sql_error)?;
            readers.push(reader);
        }
        let pool = (!readers.is_empty()).then(|| ReaderPool {
            permits: Arc::new(Semaphore::new(readers.len())),
            connections: Arc::new(Mutex::new(readers)),
        });
        Ok(Self { writer: Mutex::new(spawn_writer(writer, Some(checkpoints))?), readers: pool })
    }

    /// A private in-memory database: reads go through the writer (there is only one connection).
    pub(crate) fn in_memory() -> StoreResult<Self> {
        let writer = Connection::open_in_memory().map_err(sql_error)?;
        configure(&writer, &SqliteOptions::default()).map_err(sql_error)?;
        schema::migrate(&writer)?;
        Ok(Self { writer: Mutex::new(spawn_writer(writer, None)?), readers: None })
    }

    /// Runs `op` in the writer's next batch; answers once that batch is committed. If `op` fails, its
    /// changes are rolled back and the rest of the batch is unaffected.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |connection| {
            let result = op(connection);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |commit_error| {
                let outcome = match commit_error {
                    Some(message) => Err(StoreError::unavailable(std::io::Error::other(message.to_owned()))),
                    None => result,
                };
                let _ = reply.send(outcome);
            });
            (ok, finish)
        });
        let sender = self.writer.lock().unwrap_or_else(PoisonError::into_inner).clone();
        sender.send(work).map_err(|_| closed())?;
        // No answer at all: the writer could not start a transaction (another process held the lock past the
        // busy timeout) or the write panicked; either way nothing of it was written.
        answer.await.map_err(|_| not_written())?
    }

    /// Runs a query on a reader connection (on a blocking thread), or through the writer without readers.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let Some(pool) = &self.readers else { return self.write(op).await };
        let _permit = pool.permits.acquire().await.map_err(|_| closed())?;
        let connections = pool.connections.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connections.lock().unwrap_or_else(PoisonError::into_inner).pop().ok_or_else(closed)?;
            let result = op(&connection);
            connections.lock().unwrap_or_else(PoisonError::into_inner).push(connection);
            result
        })
        .await
        .map_err(|_| closed())?
    }
}

fn not_written() -> StoreError {
    StoreError::unavailable(std::io::Error::other(
        "the SQLite store could not take the write (the database was locked, or the write failed); nothing was written",
    ))
}

fn closed() -> StoreError {
    StoreError::unavailable(std::io::Error::other("the SQLite store is closed"))
}

fn spawn_writer(connection: Connection, checkpoints: Option<SyncSender<()>>) -> StoreResult<Sender<Work>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("techhub-sqlite-writer".to_owned())
        .spawn(move || write_loop(&connection, &receiver, checkpoints.as_ref()))
        .map_err(StoreError::backend)?;
    Ok(sender)
}

/// Copies committed WAL frames back into the database file on a thread of its own when nudged, so the
/// writer does not pause for it (a passive checkpoint never blocks the writer or readers). It ends when the
/// writer does (the nudging side is dropped).
fn spawn_checkpointer(path: &Path, options: &SqliteOptions) -> StoreResult<SyncSender<()>> {
    let connection = Connection::open(path).map_err(sql_error)?;
    configure(&connection, options).map_err(sql_error)?;
    let (nudge, nudged) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("techhub-sqlite-checkpoint".to_owned())
        .spawn(move || {
            while nudged.recv().is_ok() {
                if let Err(error) = connection.cached_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %error, "a passive checkpoint did not run");
                }
            }
        })
        .map_err(StoreError::backend)?;
    Ok(nudge)
}

/// Takes whatever writes are waiting, runs them in one transaction, commits once, then answers them all.
fn write_loop(connection: &Connection, receiver: &Receiver<Work>, checkpoints: Option<&SyncSender<()>>) {
    let mut commits = 0_u32;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(work) => batch.push(work),
                Err(_) => break,
            }
        }
        if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
            // Another process held the lock past the busy timeout: dropping the writes drops their replies,
            // so each caller is told the store is unavailable and nothing was written.
            tracing::warn!(error = %error, writes = batch.len(), "could not begin a write transaction");
            drop(batch);
            continue;
        }
        let mut finishes = Vec::with_capacity(batch.len());
        for work in batch {
            if run_statement(connection, "SAVEPOINT write").is_err() {
                continue;
            }
            // A panicking write drops its reply (its caller sees the store as unavailable) and is rolled back.
            let (ok, finish) =
                catch_unwind(AssertUnwindSafe(|| work(connection))).unwrap_or_else(|_| (false, noop_finish()));
            let closed = if ok {
                run_statement(connection, "RELEASE write")
            } else {
                run_statement(connection, "ROLLBACK TO write").and_then(|()| run_statement(connection, "RELEASE write"))
            };
            if let Err(error) = closed {
                tracing::error!(error = %error, "closing a savepoint failed");
            }
            finishes.push(finish);
        }
        let commit_error = connection.execute_batch("COMMIT").err().map(|error| {
            let _ = connection.execute_batch("ROLLBACK");
            error.to_string()
        });
        for finish in finishes {
            finish(commit_error.as_deref());
        }
        commits += 1;
        if commits >= COMMITS_PER_CHECKPOINT
            && let Some(checkpoints) = checkpoints
        {
            // Full means a checkpoint is already pending: nothing to add.
            let _ = checkpoints.try_send(());
            commits = 0;
        }
    }
}

/// Runs one cached statement (the savepoint statements run for every write; parsing them each time shows).
fn run_statement(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

fn noop_finish() -> Finish {
    Box::new(|_| {})
}
