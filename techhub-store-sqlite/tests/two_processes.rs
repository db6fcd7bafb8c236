//! Two OS processes claiming from one database file never get the same job (the shared check in
//! `techhub_core::storage::conformance::two_processes`).

use std::sync::Arc;

use techhub_store_sqlite::SqliteStore;

fn main() {
    techhub_core::storage::conformance::two_processes::main(|path| Ok(Arc::new(SqliteStore::open(path)?)));
}
