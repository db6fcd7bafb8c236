//! The shared storage conformance suite against a real PostgreSQL server: one server for this test binary
//! (`TECHHUB_TEST_POSTGRES_URL`, or one started in a temporary directory), a fresh database per test.

use std::sync::Arc;

use techhub_core::storage::conformance::{Fixture, Harness};
use techhub_store_postgres::test_server::TestServer;
use techhub_store_postgres::{PostgresOptions, PostgresStore};

struct Postgres;

#[async_trait::async_trait]
impl Harness for Postgres {
    async fn fresh(&self) -> Fixture {
        let database = TestServer::shared().database().await;
        let store = PostgresStore::connect(database.url(), PostgresOptions::default().max_connections(8))
            .await
            .expect("the store connects");
        Fixture::with_guard(Arc::new(store), database)
    }
}

techhub_core::conformance_tests!(Postgres);
