//! The shared storage conformance suite against sled: a database in a fresh temporary directory per test (so
//! the group-commit flusher is exercised), and a temporary database.

use std::sync::Arc;

use techhub_core::storage::conformance::{Fixture, Harness};
use techhub_store_sled::SledStore;

struct File;

#[async_trait::async_trait]
impl Harness for File {
    async fn fresh(&self) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SledStore::open(dir.path().join("techhub")).expect("opens");
        Fixture::with_guard(Arc::new(store), dir)
    }
}

struct Temporary;

#[async_trait::async_trait]
impl Harness for Temporary {
    async fn fresh(&self) -> Fixture {
        Fixture::new(Arc::new(SledStore::temporary().expect("opens")))
    }
}

mod file {
    techhub_core::conformance_tests!(super::File);
}

mod temporary {
    techhub_core::conformance_tests!(super::Temporary);
}
