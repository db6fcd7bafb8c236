//! Two OS processes claiming from one PostgreSQL database never get the same job (the shared check in
//! `techhub_core::storage::conformance::two_processes`).
//!
//! The parent creates the database on the test server and writes its URL at the store path the check hands
//! out; both claimers read it from there.

use std::path::PathBuf;
use std::sync::Arc;

use techhub_core::storage::{DynStorage, StoreError, StoreResult};
use techhub_store_postgres::test_server::database_url_at;
use techhub_store_postgres::{PostgresOptions, PostgresStore};

async fn open(path: PathBuf) -> StoreResult<DynStorage> {
    let url = database_url_at(&path).await.map_err(StoreError::backend)?;
    // Plain claims: no wake-ups or events between the processes, only the database's locks.
    let options = PostgresOptions::default().share_between_instances(false);
    Ok(Arc::new(PostgresStore::connect(&url, options).await?))
}

fn main() {
    techhub_core::storage::conformance::two_processes::main_async(|path| Box::pin(open(path)));
}
