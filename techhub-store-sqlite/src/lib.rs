//! # TechHub on SQLite
//!
//! [`SqliteStore`] keeps everything in one SQLite database: the durable default of the example server and
//! of desktop apps. It passes TechHub's whole storage conformance suite.
//!
//! - **Writes** go to one writer thread that takes every write waiting, runs them in one transaction (each
//!   in its own savepoint, so one failure does not sink the others) and commits once: group commit. A caller
//!   is answered only after the commit, so an acknowledged write is durable ([`Durability`]).
//! - **Reads** run on a small pool of read-only connections, on blocking threads (WAL lets them run beside
//!   the writer). No SQLite call runs on an async worker thread.
//! - **Claims** are one `UPDATE ... RETURNING` over an index in claim order; several processes sharing the
//!   file never claim the same job (SQLite serialises writers). Counts by queue and state come from a table
//!   that each write keeps in its own transaction, never a scan.
//! - **Schema** changes are numbered migrations applied at open (`PRAGMA user_version`), each in one
//!   transaction; a database newer than the code is refused.
//! - Every value is bound as a parameter; substring searches escape `LIKE` wildcards.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use techhub_core::storage::Storage;
//! let dir = tempfile::tempdir()?;
//! let store = techhub_store_sqlite::SqliteStore::open(dir.path().join("techhub.db"))?;
//! store.health().await?;
//! # Ok(())
//! # }
//! ```

mod audit;
mod builds;
mod endpoints;
mod engine;
mod job_counts;
mod jobs;
mod notifications;
mod rows;
mod schema;
mod sessions;
mod tokens;
mod users;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use engine::{Durability, SqliteOptions};
use techhub_core::model::{DatabaseInfo, TokenFamilyId, User, UserId};
use techhub_core::storage::{LocalRateBuckets, Storage, StoreResult};

/// TechHub storage in a SQLite database.
pub struct SqliteStore {
    engine: engine::Engine,
    sessions: sessions::SessionCache,
    path: Option<PathBuf>,
    /// The queues' rate buckets: one process owns the database, so they are kept in its memory.
    rate_buckets: LocalRateBuckets,
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the database at `path` with the default options.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        Self::open_with(path, &SqliteOptions::default())
    }

    /// Opens the database at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: &SqliteOptions) -> StoreResult<Self> {
        let path = path.as_ref();
        Ok(Self {
            engine: engine::Engine::open(path, options)?,
            sessions: sessions::SessionCache::default(),
            path: Some(path.to_owned()),
            rate_buckets: LocalRateBuckets::default(),
        })
    }

    /// A private in-memory database (tests, trials). Nothing survives the process.
    pub fn in_memory() -> StoreResult<Self> {
        Ok(Self {
            engine: engine::Engine::in_memory()?,
            sessions: sessions::SessionCache::default(),
            path: None,
            rate_buckets: LocalRateBuckets::default(),
        })
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

#[async_trait]
impl Storage for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn session_user(
        &self,
        family: TokenFamilyId,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        // This runs for every authenticated request: answered from the session cache when it can be, else
        // both reads in one trip to a reader.
        if let Some(user) = self.sessions.get(family, user_id, now) {
            return Ok(Some(user));
        }
        let generation = self.sessions.generation();
        let found = self
            .engine
            .read(move |connection| {
                let Some(live_until) = tokens::family_live_until(connection, family, now)? else { return Ok(None) };
                Ok(users::load_user(connection, user_id)?.map(|user| (user, live_until)))
            })
            .await?;
        Ok(found.map(|(user, live_until)| {
            self.sessions.store(family, &user, live_until, generation);
            user
        }))
    }

    /// Probes what a request needs: a reader that reads a real table, and the writer taking the write lock
    /// (its round opens `BEGIN IMMEDIATE`). A `SELECT 1` on a pooled reader would answer while every write
    /// waits on a lock another process holds.
    async fn health(&self) -> StoreResult<()> {
        let probe = |connection: &rusqlite::Connection| {
            connection.cached_row("SELECT COUNT(*) FROM job_counts WHERE queue = ''", [], |_| Ok(())).sql()
        };
        self.engine.read(probe).await?;
        self.engine.write(probe).await
    }

    /// The schema version (`PRAGMA user_version`), the pages and the files: the database, and its WAL.
    async fn database_info(&self) -> StoreResult<DatabaseInfo> {
        let pragmas = self
            .engine
            .read(|connection| {
                let pragma = |name: &str| connection.pragma_query_value(None, name, |row| row.get::<_, i64>(0)).sql();
                Ok([pragma("user_version")?, pragma("page_size")?, pragma("page_count")?, pragma("freelist_count")?])
            })
            .await?;
        let [user_version, page_size, page_count, freelist_count] =
            pragmas.map(|value| u64::try_from(value).unwrap_or(0));
        let mut info = DatabaseInfo::new(self.backend());
        info.schema_version = Some(user_version);
        info.details.insert("page_size".into(), page_size.into());
        info.details.insert("page_count".into(), page_count.into());
        info.details.insert("freelist_count".into(), freelist_count.into());
        info.details.insert("latest_schema_version".into(), schema::CURRENT_VERSION.into());
        let Some(path) = &self.path else {
            info.size_bytes = Some(page_size * page_count);
            info.details.insert("file".into(), ":memory:".into());
            return Ok(info);
        };
        let file_size = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(name).map_or(0, |metadata| metadata.len())
        };
        let (database, wal) = (file_size(""), file_size("-wal"));
        info.size_bytes = Some(database + wal);
        info.details.insert("file".into(), path.display().to_string().into());
        info.details.insert("file_bytes".into(), database.into());
        info.details.insert("wal_bytes".into(), wal.into());
        Ok(info)
    }
}

/// Statements through the connection's statement cache: SQLite parses each text once per connection, not
/// on every call (parsing showed as a tenth of a point read's time).
pub(crate) trait CachedStatements {
    /// `query_row` with a cached statement.
    fn cached_row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;

    /// `execute` with a cached statement.
    fn cached_execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl CachedStatements for rusqlite::Connection {
    fn cached_row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, row)
    }

    fn cached_execute<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// `?` for rusqlite results inside store operations.
pub(crate) trait Sql<T> {
    fn sql(self) -> StoreResult<T>;
}

impl<T> Sql<T> for rusqlite::Result<T> {
    fn sql(self) -> StoreResult<T> {
        self.map_err(rows::store_error)
    }
}

impl SqliteStore {
    /// A write to users or tokens: once it is done (whatever its outcome), cached sessions read before it
    /// no longer answer.
    pub(crate) async fn write_sessions<T: Send + 'static>(
        &self,
        op: impl FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let result = self.engine.write(op).await;
        self.sessions.invalidate();
        result
    }
}

/// Escapes `LIKE` wildcards in user text, for `... LIKE ?1 ESCAPE '\'`.
pub(crate) fn like_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}
