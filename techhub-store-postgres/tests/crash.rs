//! Crash safety: a child process killed with SIGKILL at random moments loses nothing it acknowledged
//! (the shared check in `techhub_core::storage::conformance::crash`), on a PostgreSQL database.
//!
//! The parent creates the database on the test server and writes its URL at the store path the check hands
//! out; every child (and every reopening) reads it from there.

use std::path::PathBuf;
use std::sync::Arc;

use techhub_core::storage::{DynStorage, StoreError, StoreResult};
use techhub_store_postgres::test_server::{TestDatabase, TestServer};
use techhub_store_postgres::{PostgresOptions, PostgresStore};

/// The parent's database lives as long as the test process (the server removes it with itself).
static DATABASE: std::sync::OnceLock<TestDatabase> = std::sync::OnceLock::new();

async fn open(path: PathBuf) -> StoreResult<DynStorage> {
    let url = match std::fs::read_to_string(&path) {
        Ok(url) => url,
        Err(_) => {
            let database = TestServer::shared().database().await;
            let url = database.url().to_owned();
            std::fs::write(&path, &url).map_err(StoreError::backend)?;
            let _ = DATABASE.set(database);
            url
        }
    };
    Ok(Arc::new(PostgresStore::connect(&url, PostgresOptions::default()).await?))
}

fn main() {
    techhub_core::storage::conformance::crash::main_async(|path| Box::pin(open(path)));
}
