//! # TechHub on PostgreSQL
//!
//! [`PostgresStore`] keeps everything in one PostgreSQL database, so several app instances (processes,
//! machines) can share it: the store for scaling out. It passes TechHub's whole storage conformance suite.
//!
//! - **Client.** [`tokio-postgres`](tokio_postgres) with a [`deadpool-postgres`](deadpool_postgres) pool: a
//!   plain async client with no build-time database access (no macros that connect to a server while
//!   compiling, unlike `sqlx`'s checked queries) and few dependencies; the pool replaces connections the server
//!   dropped, so the store recovers by itself after a database restart. TLS is rustls (feature `tls`, on by
//!   default) and used when [`PostgresOptions::tls_root_certificates`] names the roots to trust.
//! - **Schema** changes are numbered migrations applied at connect in one transaction under an advisory
//!   lock, so instances starting together do not race; a database newer than the code is refused.
//! - **Enqueues** of single jobs made at the same time are committed together, in one statement, each
//!   acknowledged once committed (see the `enqueues` module).
//! - **Claims** are one `UPDATE ... WHERE id IN (SELECT ... ORDER BY priority DESC, run_at, id FOR UPDATE
//!   SKIP LOCKED LIMIT n)` over a partial index of queued jobs: concurrent claimers on any instance skip each
//!   other's rows instead of waiting, and never get the same job.
//! - **Other job transitions** read the job, apply the same rules as every store (the model's methods), and
//!   write it back only if the row's revision did not move in between (else they read again).
//! - **Counts** by queue and state are kept by statement triggers in rows of the writing server session (no
//!   shared counter row that every writer would wait on) and summed when read, a read-only statement; counts
//!   of users as appended deltas folded when read. Never a scan of the jobs.
//! - **Invariants across instances** are the database's: unique email and live unique-key indexes, row
//!   locks, and an advisory lock around changes that could remove the last active admin.
//! - **Across instances** ([`Peers`](techhub_core::storage::Peers)): enqueues wake idle workers of every
//!   instance through `LISTEN/NOTIFY`, and events published on one instance's bus reach every other
//!   instance's subscribers (see the `peers` module docs).
//! - Nothing about sessions or users is cached in process memory: a logout, revocation, disable or role change
//!   made through any instance is what the next request on every instance reads.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use techhub_core::storage::Storage;
//! use techhub_store_postgres::{PostgresOptions, PostgresStore};
//! let store = PostgresStore::connect("postgres://techhub@127.0.0.1/techhub", PostgresOptions::default()).await?;
//! store.health().await?;
//! # Ok(())
//! # }
//! ```

mod audit;
mod builds;
mod cron;
mod db;
mod endpoints;
mod enqueues;
mod jobs;
mod notifications;
mod peers;
mod rows;
mod schema;
#[cfg(feature = "test-server")]
pub mod test_server;
mod tls;
mod tokens;
mod users;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use techhub_core::model::{DatabaseInfo, TokenFamilyId, User, UserId};
use techhub_core::storage::{Peers, Storage, StoreError, StoreResult};

use crate::db::Db;

/// How the store connects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Pooled connections at most (default 16).
    pub max_connections: usize,
    /// How long making a connection may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long a call waits for a free pooled connection before failing as unavailable (default 10 s).
    pub acquire_timeout: Duration,
    /// Whether enqueues wake other instances' workers and bus events are shared with them through
    /// `LISTEN/NOTIFY` (default `true`). Off, each instance works alone on the shared data (other instances
    /// then pick jobs up at their poll interval).
    pub share_between_instances: bool,
    /// A PEM file of root certificates: connections then use TLS (rustls) and verify the server against
    /// them, as the URL's `sslmode` asks (`require` to refuse a server without TLS). Without it, connections
    /// are plain TCP and a URL that requires TLS fails to connect. Needs the `tls` feature.
    pub tls_root_certificates: Option<PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            share_between_instances: true,
            tls_root_certificates: None,
        }
    }
}

impl PostgresOptions {
    /// Sets [`PostgresOptions::max_connections`].
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`PostgresOptions::share_between_instances`].
    #[must_use]
    pub fn share_between_instances(mut self, share: bool) -> Self {
        self.share_between_instances = share;
        self
    }

    /// Sets [`PostgresOptions::tls_root_certificates`].
    #[must_use]
    pub fn tls_root_certificates(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_root_certificates = Some(path.into());
        self
    }

    /// Sets [`PostgresOptions::connect_timeout`] and [`PostgresOptions::acquire_timeout`].
    #[must_use]
    pub fn timeouts(mut self, connect: Duration, acquire: Duration) -> Self {
        self.connect_timeout = connect;
        self.acquire_timeout = acquire;
        self
    }
}

/// TechHub storage in a PostgreSQL database, shareable by several app instances.
pub struct PostgresStore {
    pool: Pool,
    enqueues: enqueues::Enqueues,
    peers: Option<Arc<peers::PgPeers>>,
    /// The server and database, for `Debug` and logs (never the password).
    target: String,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database?sslmode=...`, or the
    /// `key=value` form), migrating its schema as needed, and starts listening to the other instances.
    ///
    /// Fails with [`StoreError::InvalidInput`] for an unreadable URL, [`StoreError::Unavailable`] when the
    /// server cannot be reached, and [`StoreError::Corrupt`] for a schema newer than this code.
    pub async fn connect(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|_| StoreError::InvalidInput("not a PostgreSQL connection URL".to_owned()))?;
        let target = describe(&config);
        let connector = tls::Connector::for_options(&options)?;
        let pool = db::pool(config.clone(), connector.clone(), &options)?;
        let mut client = db::client(&pool).await?;
        schema::migrate(&mut client).await?;
        db::execute(&client, jobs::FOLD_COUNTS, &[]).await?;
        drop(client);
        let peers = if options.share_between_instances {
            Some(peers::PgPeers::start(config, connector, pool.clone(), options.connect_timeout).await)
        } else {
            None
        };
        tracing::info!(target = %target, "PostgreSQL store connected");
        Ok(Self { enqueues: enqueues::Enqueues::new(pool.clone()), pool, peers, target })
    }

    pub(crate) async fn client(&self) -> StoreResult<db::Client> {
        db::client(&self.pool).await
    }

    /// Tells the other instances that jobs of `queues` may be due now (after a commit that queued them).
    pub(crate) fn jobs_due<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        if let Some(peers) = &self.peers {
            for queue in queues {
                peers.jobs_due(queue);
            }
        }
    }
}

/// `host:port/database`, without the user or password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("target", &self.target).finish_non_exhaustive()
    }
}

#[async_trait]
impl Storage for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// A read of a real table on a pooled connection, within [`db::HEALTH_TIMEOUT`]: a lost server fails it
    /// at once (the pool checks a connection before handing it out), a server back up passes it again.
    async fn health(&self) -> StoreResult<()> {
        let probe = async {
            let client = self.client().await?;
            client.query_one("SELECT count(*) FROM techhub_schema", &[]).await.db()?;
            Ok(())
        };
        match tokio::time::timeout(db::HEALTH_TIMEOUT, probe).await {
            Ok(result) => result,
            Err(elapsed) => Err(StoreError::unavailable(elapsed)),
        }
    }

    /// The schema version from `techhub_schema`, the database's size from `pg_database_size`, and the
    /// server's version and the pool's state as details (never the URL: it may hold a password).
    async fn database_info(&self) -> StoreResult<DatabaseInfo> {
        let client = self.client().await?;
        let row = db::query_one(
            &client,
            "SELECT (SELECT version FROM techhub_schema), pg_database_size(current_database()), \
             current_setting('server_version'), current_database()",
            &[],
        )
        .await?;
        let mut info = DatabaseInfo::new(self.backend());
        info.schema_version = Some(u64::try_from(rows::get::<i32>(&row, 0)?).unwrap_or_default());
        info.size_bytes = Some(rows::unsigned(rows::get(&row, 1)?));
        info.details.insert("server_version".into(), rows::get::<String>(&row, 2)?.into());
        info.details.insert("database".into(), rows::get::<String>(&row, 3)?.into());
        info.details.insert("latest_schema_version".into(), schema::CURRENT_VERSION.into());
        let status = self.pool.status();
        info.details.insert("pool_size".into(), status.size.into());
        info.details.insert("pool_max_size".into(), status.max_size.into());
        info.details.insert("shares_between_instances".into(), self.peers.is_some().into());
        Ok(info)
    }

    /// Both reads in one statement: a request's authentication is one round trip, and nothing is cached, so a
    /// session ended or a user changed through another instance is seen at once.
    async fn session_user(
        &self,
        family: TokenFamilyId,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {} FROM users WHERE id = $1 AND EXISTS (SELECT 1 FROM tokens WHERE family = $2 \
             AND consumed_at IS NULL AND expires_at > $3)",
            rows::USER_COLUMNS
        );
        let statement = client.prepare_cached(&sql).await.db()?;
        let row = client.query_opt(&statement, &[user_id.as_uuid(), family.as_uuid(), &now]).await.db()?;
        row.as_ref().map(rows::user).transpose()
    }

    fn peers(&self) -> Option<Arc<dyn Peers>> {
        self.peers.clone().map(|peers| peers as Arc<dyn Peers>)
    }
}
