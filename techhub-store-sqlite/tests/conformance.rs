//! The shared storage conformance suite against SQLite: a database file in a fresh temporary directory per
//! test (so the reader pool and WAL are exercised), and a private in-memory database.

use std::sync::Arc;

use techhub_core::storage::conformance::{Fixture, Harness};
use techhub_store_sqlite::SqliteStore;

struct File;

#[async_trait::async_trait]
impl Harness for File {
    async fn fresh(&self) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("techhub.db")).expect("opens");
        Fixture::with_guard(Arc::new(store), dir)
    }
}

struct Memory;

#[async_trait::async_trait]
impl Harness for Memory {
    async fn fresh(&self) -> Fixture {
        Fixture::new(Arc::new(SqliteStore::in_memory().expect("opens")))
    }
}

mod file {
    techhub_core::conformance_tests!(super::File);
}

mod memory {
    techhub_core::conformance_tests!(super::Memory);
}
