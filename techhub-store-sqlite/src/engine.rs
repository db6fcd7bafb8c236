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
/// What a write runs inside the batch's transaction; it says whether it succeeded.
type Run = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// A write, and whether it runs in a savepoint of its own.
struct Work {
    run: Run,
    /// A savepoint lets a write fail after changing something and leave no trace. A write without one must
    /// refuse before its first change; if it fails later anyway, the writer rolls back its batch so far.
    savepoint: bool,
}

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
    // Plans must not depend on bound values: otherwise a cached statement whose plan looked at a parameter
    // (the claim's `LIMIT ?`, a `LIKE ?` pattern) is compiled again at each execution, which was a third of
    // all of SQLite's instructions once the runtime claimed in batches.
    connection.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
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
        self.submit(op, true).await
    }

    /// [`write`](Self::write) without a savepoint of its own, for a write whose every refusal comes before
    /// its first change (checks, then changes): then a failure has nothing to undo, and the savepoint's two
    /// statements and page journal per write are saved. If such a write fails after a change anyway (an I/O
    /// error half-way), the writer rolls back the batch so far, answers those writes as not written, and runs
    /// the rest of the batch in a new transaction: nothing partial is ever committed.
    pub(crate) async fn write_checked_first<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.submit(op, false).await
    }

    async fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
        savepoint: bool,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let run: Run = Box::new(move |connection| {
            let result = op(connection);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |commit_error| {
                // A write that failed wrote nothing either way, so it keeps its own error.
                let outcome = match (result, commit_error) {
                    (Ok(_), Some(message)) => Err(StoreError::unavailable(std::io::Error::other(message.to_owned()))),
                    (result, _) => result,
                };
                let _ = reply.send(outcome);
            });
            (ok, finish)
        });
        let work = Work { run, savepoint };
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
        let mut waiting = batch.into_iter();
        // Usually one pass; another only after a write without a savepoint failed half-way.
        loop {
            if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
                // Another process held the lock past the busy timeout: dropping the writes drops their replies,
                // so each caller is told the store is unavailable and nothing was written.
                tracing::warn!(error = %error, writes = waiting.len(), "could not begin a write transaction");
                break;
            }
            let mut finishes = Vec::new();
            let mut spoiled = None;
            for work in waiting.by_ref() {
                match run_work(connection, work) {
                    Ran::Whole(finish) => finishes.push(finish),
                    Ran::HalfWay(finish) => {
                        spoiled = Some(finish);
                        break;
                    }
                }
            }
            if let Some(spoiled) = spoiled {
                tracing::error!(writes = finishes.len(), "a write failed half-way; its batch so far is rolled back");
                let _ = connection.execute_batch("ROLLBACK");
                spoiled(None);
                for finish in finishes {
                    finish(Some("rolled back with a write of the same batch that failed half-way"));
                }
                continue;
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
            break;
        }
    }
}

/// How a write went, inside the batch's transaction.
enum Ran {
    /// It succeeded, or it failed and left nothing behind: the batch goes on.
    Whole(Finish),
    /// It failed after changing something, with no savepoint to undo it: the batch so far must be rolled back.
    HalfWay(Finish),
}

/// Runs one write in the batch's transaction, in a savepoint if it asks for one.
fn run_work(connection: &Connection, work: Work) -> Ran {
    let Work { run, savepoint } = work;
    if savepoint && run_statement(connection, "SAVEPOINT write").is_err() {
        // Dropping the write drops its reply: its caller is told nothing was written.
        return Ran::Whole(noop_finish());
    }
    let changes_before = connection.total_changes();
    // A panicking write drops its reply (its caller sees the store as unavailable) and is rolled back.
    let (ok, finish) = catch_unwind(AssertUnwindSafe(|| run(connection))).unwrap_or_else(|_| (false, noop_finish()));
    if !savepoint {
        let changed = connection.total_changes() != changes_before;
        return if ok || !changed { Ran::Whole(finish) } else { Ran::HalfWay(finish) };
    }
    let closed = if ok {
        run_statement(connection, "RELEASE write")
    } else {
        run_statement(connection, "ROLLBACK TO write").and_then(|()| run_statement(connection, "RELEASE write"))
    };
    if let Err(error) = closed {
        tracing::error!(error = %error, "closing a savepoint failed");
    }
    Ran::Whole(finish)
}

/// Runs one cached statement (the savepoint statements run for every write; parsing them each time shows).
fn run_statement(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection.prepare_cached(sql)?.execute([]).map(drop)
}

fn noop_finish() -> Finish {
    Box::new(|_| {})
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use futures_util::FutureExt;
    use techhub_core::storage::StoreError;

    use super::Engine;

    /// The rows of the scratch table, sorted.
    async fn rows(engine: &Engine) -> Vec<i64> {
        engine
            .read(|connection| {
                let mut statement = connection.prepare("SELECT n FROM scratch ORDER BY n").map_err(super::sql_error)?;
                let rows = statement.query_map([], |row| row.get(0)).map_err(super::sql_error)?;
                rows.collect::<rusqlite::Result<Vec<i64>>>().map_err(super::sql_error)
            })
            .await
            .expect("reads")
    }

    fn insert(connection: &rusqlite::Connection, n: i64) -> Result<(), StoreError> {
        connection.execute("INSERT INTO scratch (n) VALUES (?1)", [n]).map(drop).map_err(super::sql_error)
    }

    fn refused() -> StoreError {
        StoreError::Conflict(techhub_core::storage::Conflict::Duplicate)
    }

    /// Holds the writer in a write of its own until the returned sender is dropped, so that the writes sent
    /// meanwhile make one batch together.
    async fn hold_writer(engine: &std::sync::Arc<Engine>) -> (tokio::task::JoinHandle<()>, std_mpsc::Sender<()>) {
        let (release, released) = std_mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let holder = engine.clone();
        let held = tokio::spawn(async move {
            holder
                .write(move |_| {
                    let _ = started.send(());
                    let _ = released.recv();
                    Ok(())
                })
                .await
                .expect("the holding write commits");
        });
        running.await.expect("the writer took the holding write");
        (held, release)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_without_a_savepoint_never_leave_half_of_a_failed_write() {
        let engine = std::sync::Arc::new(Engine::in_memory().expect("opens"));
        engine
            .write(|connection| connection.execute_batch("CREATE TABLE scratch (n INTEGER)").map_err(super::sql_error))
            .await
            .expect("creates");

        let (held, release) = hold_writer(&engine).await;
        // One batch: a write refused before changing anything, then writes around one that fails half-way.
        let mut batch = vec![
            engine.write_checked_first(|connection| insert(connection, 1)).boxed(),
            engine.write_checked_first(|_| Err::<(), _>(refused())).boxed(),
            engine.write(|connection| insert(connection, 2)).boxed(),
            engine
                .write_checked_first(|connection| {
                    insert(connection, 3)?;
                    Err(refused())
                })
                .boxed(),
            engine.write_checked_first(|connection| insert(connection, 4)).boxed(),
        ];
        // A first poll hands each write to the writer, in this order.
        for write in &mut batch {
            assert!(write.as_mut().now_or_never().is_none(), "the writer is held");
        }
        drop(release);
        held.await.expect("the holding write ends");
        let mut outcomes = Vec::new();
        for write in batch {
            outcomes.push(write.await);
        }
        // Before the half-way failure: rolled back with it, and answered as not written.
        assert!(matches!(outcomes[0], Err(StoreError::Unavailable(_))), "{:?}", outcomes[0]);
        assert!(matches!(outcomes[1], Err(StoreError::Conflict(_))), "{:?}", outcomes[1]);
        assert!(matches!(outcomes[2], Err(StoreError::Unavailable(_))), "{:?}", outcomes[2]);
        // The write that failed half-way keeps its own error; the one after it commits in a new transaction.
        assert!(matches!(outcomes[3], Err(StoreError::Conflict(_))), "{:?}", outcomes[3]);
        assert!(outcomes[4].is_ok(), "{:?}", outcomes[4]);
        assert_eq!(rows(&engine).await, vec![4]);

        // A refusal before any change spoils nothing: the rest of its batch commits.
        let (held, release) = hold_writer(&engine).await;
        let mut batch = vec![
            engine.write_checked_first(|connection| insert(connection, 5)).boxed(),
            engine.write_checked_first(|_| Err::<(), _>(refused())).boxed(),
            engine.write_checked_first(|connection| insert(connection, 6)).boxed(),
        ];
        for write in &mut batch {
            assert!(write.as_mut().now_or_never().is_none(), "the writer is held");
        }
        drop(release);
        held.await.expect("the holding write ends");
        let outcomes: Vec<_> = futures_util::future::join_all(batch).await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(StoreError::Conflict(_))), "{:?}", outcomes[1]);
        assert_eq!(rows(&engine).await, vec![4, 5, 6]);
    }
}
