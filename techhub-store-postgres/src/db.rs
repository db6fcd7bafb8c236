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
