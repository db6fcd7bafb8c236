//! The connection pool and how its failures become store errors.

use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use techhub_core::storage::{Conflict, StoreError, StoreResult};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::PostgresOptions;
use crate::tls::Connector;

/// A pooled connection.
pub(crate) type Client = Object;

/// The pool every store call takes a connection from.
pub(crate) fn pool(
    config: tokio_postgres::Config,
    connector: Connector,
    options: &PostgresOptions,
) -> StoreResult<Pool> {
    // `Fast` hands a pooled connection out again unless it is closed: its connection task notices at once when
    // the server drops it (a restart closes the socket), so a dead connection is replaced without a probe.
    // (`Verified` ran a query before every hand-out: one more round trip per store call, a third of a job's.)
    // A connection lost in the instant between that check and the caller's statement fails the statement as
    // `Unavailable`, as a server going away mid-statement does anyway; nothing acknowledged is lost.
    let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match connector {
        Connector::Plain(tls) => Manager::from_config(config, tls, manager_config),
        #[cfg(feature = "tls")]
        Connector::Rustls(tls) => Manager::from_config(config, *tls, manager_config),
    };
    let timeouts = Timeouts {
        wait: Some(options.acquire_timeout),
        create: Some(options.connect_timeout),
        recycle: Some(options.connect_timeout),
    };
    Pool::builder(manager)
        .max_size(options.max_connections.max(1))
        .runtime(Runtime::Tokio1)
        .timeouts(timeouts)
        .build()
        .map_err(StoreError::backend)
}

/// A connection from the pool, or [`StoreError::Unavailable`] when none can be had in time.
pub(crate) async fn client(pool: &Pool) -> StoreResult<Client> {
    pool.get().await.map_err(pool_error)
}

fn pool_error(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => db_error(error),
        other => StoreError::unavailable(other),
    }
}

/// A failed statement as a store error: a lost or refused connection is `Unavailable` (the call may succeed
/// later), a value that does not convert `Corrupt`, a broken rule the schema enforces `Conflict`, anything
/// else a backend failure.
pub(crate) fn db_error(error: tokio_postgres::Error) -> StoreError {
    if error.is_closed() {
        return StoreError::unavailable(error);
    }
    let Some(code) = error.code() else {
        // No server error code: the connection failed (I/O) or a value did not convert.
        let text = error.to_string();
        return if text.contains("error deserializing") || text.contains("error serializing") {
            StoreError::corrupt(error)
        } else {
            StoreError::unavailable(error)
        };
    };
    if *code == SqlState::UNIQUE_VIOLATION {
        return StoreError::Conflict(Conflict::Duplicate);
    }
    if [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_FAILURE,
        SqlState::CONNECTION_DOES_NOT_EXIST,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ]
    .contains(code)
    {
        return StoreError::unavailable(error);
    }
    StoreError::backend(error)
}

/// `?` for tokio-postgres results inside store operations.
pub(crate) trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for Result<T, tokio_postgres::Error> {
    fn db(self) -> StoreResult<T> {
        self.map_err(db_error)
    }
}

/// Whether a failed statement names the unique constraint `constraint`.
pub(crate) fn violates(error: &tokio_postgres::Error, constraint: &str) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && error.as_db_error().and_then(|db| db.constraint()).is_some_and(|name| name == constraint)
}

/// How long a health probe may take before the store counts as unavailable.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The rows of `sql` (prepared once per connection and kept in its statement cache).
pub(crate) async fn query<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let statement = client.prepare_cached(sql).await.db()?;
    client.query(&statement, params).await.db()
}

/// The row of `sql`, if any.
pub(crate) async fn query_opt<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let statement = client.prepare_cached(sql).await.db()?;
    client.query_opt(&statement, params).await.db()
}

/// The one row of `sql`.
pub(crate) async fn query_one<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Row> {
    let statement = client.prepare_cached(sql).await.db()?;
    client.query_one(&statement, params).await.db()
}

/// Runs `sql` and returns how many rows it changed.
pub(crate) async fn execute<C: GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<u64> {
    let statement = client.prepare_cached(sql).await.db()?;
    client.execute(&statement, params).await.db()
}

/// A transaction whose `BEGIN` travels with its first statement and whose `COMMIT` with its last, so that
/// a read-then-write transaction costs two round trips, not four. (tokio-postgres sends requests in the
/// order their futures are first polled, and the server answers them in that order.)
///
/// If it is dropped before [`Pipelined::commit_with`] or [`Pipelined::rollback`] (an error, or the caller's future
/// cancelled), its connection is taken out of the pool and closed, which rolls the transaction back: a
/// pooled connection is never handed out again inside a stale transaction.
pub(crate) struct Pipelined {
    client: Option<Client>,
    begun: bool,
}

/// Settings for a transaction whose statements find their rows by primary key (a batch of job ids): each
/// statement is planned once per connection, and that plan looks the rows up by key whatever the table's
/// statistics say.
///
/// Left to itself, PostgreSQL plans such a statement anew at most executions (a plan for the values at hand
/// always looks cheaper than the generic one for `id = ANY($1)` over a batch shorter than its default guess
/// of ten; planning cost more than running it), and when it does use its generic plan, that plan was built
/// against the statistics of its first executions: on a new or emptied table, a sequential scan with a hash
/// join, kept while the table grows, so each batch read the whole table. With sequential scans, hash and
/// merge joins off, the only plans left are index lookups, right at any size. `SET LOCAL` ends with the
/// transaction; every statement run under these settings must always run under them, since the plan built
/// first is kept for the statement's text on that connection.
pub(crate) const KEYED_PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

impl Pipelined {
    /// A transaction on `client` whose statements run under [`KEYED_PLANS`]: only for statements that find
    /// their rows by primary key. Nothing is sent until the first statement.
    pub(crate) fn new(client: Client) -> Self {
        Self { client: Some(client), begun: false }
    }

    fn client(&self) -> StoreResult<&Client> {
        // Only `finish` takes the client out, and it consumes `self`.
        self.client.as_ref().ok_or_else(|| StoreError::backend(std::io::Error::other("transaction already ended")))
    }

    /// The rows of `sql`, run inside the transaction (its `BEGIN` sent just before, the first time).
    pub(crate) async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.client()?;
        let statement = client.prepare_cached(sql).await.db()?;
        if self.begun {
            return client.query(&statement, params).await.db();
        }
        // Polled in order the first time: `BEGIN` is sent first.
        let begin = format!("BEGIN; {KEYED_PLANS}");
        let (begun, rows) = tokio::join!(biased; client.batch_execute(&begin), client.query(&statement, params));
        begun.db()?;
        self.begun = true;
        rows.db()
    }

    /// The rows of two statements, run in order inside the transaction in one round trip (its `BEGIN` sent
    /// just before, the first time).
    pub(crate) async fn query_two(
        &mut self,
        first: (&str, &[&(dyn ToSql + Sync)]),
        second: (&str, &[&(dyn ToSql + Sync)]),
    ) -> StoreResult<(Vec<Row>, Vec<Row>)> {
        let client = self.client()?;
        let first_statement = client.prepare_cached(first.0).await.db()?;
        let second_statement = client.prepare_cached(second.0).await.db()?;
        let (begun, first_rows, second_rows) = if self.begun {
            let (first_rows, second_rows) = tokio::join!(biased;
                client.query(&first_statement, first.1), client.query(&second_statement, second.1));
            (Ok(()), first_rows, second_rows)
        } else {
            // Polled in order the first time: `BEGIN` is sent first, then the statements in their order.
            tokio::join!(biased;
                client.batch_execute("BEGIN"),
                client.query(&first_statement, first.1),
                client.query(&second_statement, second.1))
        };
        begun.db()?;
        self.begun = true;
        Ok((first_rows.db()?, second_rows.db()?))
    }

    /// Runs `writes` (statements and their parameters, in order) inside the transaction and commits with them,
    /// all in one round trip; returns how many rows each changed. Any failure rolls the whole transaction back.
    pub(crate) async fn commit_with(self, writes: &[(&str, &[&(dyn ToSql + Sync)])]) -> StoreResult<Vec<u64>> {
        let client = self.client()?;
        // Prepared first (from the cache, or one round trip the first time on this connection): a statement
        // still being prepared when `COMMIT` is sent would run after it, outside the transaction.
        let mut statements = Vec::with_capacity(writes.len());
        for (sql, _) in writes {
            statements.push(client.prepare_cached(sql).await.db()?);
        }
        let executions =
            statements.iter().zip(writes).map(|(statement, (_, params))| client.execute(statement, params));
        // Polled in order the first time, so the statements are sent in order, `COMMIT` last.
        let (written, committed) =
            tokio::join!(biased; futures_util::future::join_all(executions), client.batch_execute("COMMIT"));
        // A statement that failed aborted the transaction, and the server then answers `COMMIT` with a
        // rollback: both results are needed to know whether anything was stored.
        let outcome = written.into_iter().collect::<Result<Vec<u64>, _>>().db().and_then(|changed| {
            committed.db()?;
            Ok(changed)
        });
        self.finish(outcome.is_ok()).await;
        outcome
    }

    /// Rolls back (nothing of it was written yet, or all of it is given up).
    pub(crate) async fn rollback(self) {
        self.finish(false).await;
    }

    async fn finish(mut self, committed: bool) {
        if let Some(client) = self.client.take()
            && !committed
            && self.begun
            && client.batch_execute("ROLLBACK").await.is_err()
        {
            // The connection is broken: it is not put back.
            drop(Object::take(client));
        }
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && self.begun
        {
            drop(Object::take(client));
        }
    }
}
