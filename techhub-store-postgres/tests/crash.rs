//! Crash safety: a child process killed with SIGKILL at random moments loses nothing it acknowledged
//! (the shared check in `techhub_core::storage::conformance::crash`), on a PostgreSQL database.
//!
//! The parent creates the database on the test server and writes its URL at the store path the check hands
//! out; every child (and every reopening) reads it from there.

use std::path::PathBuf;
use std::sync::Arc;

use techhub_core::storage::{DynStorage, StoreError, StoreResult};
use techhub_store_postgres::test_server::database_url_at;
use techhub_store_postgres::{PostgresOptions, PostgresStore};

async fn open(path: PathBuf) -> StoreResult<DynStorage> {
    let url = database_url_at(&path).await.map_err(StoreError::backend)?;
    Ok(Arc::new(PostgresStore::connect(&url, PostgresOptions::default()).await?))
}

fn main() {
    techhub_core::storage::conformance::crash::main_async(|path| Box::pin(open(path)));
}
