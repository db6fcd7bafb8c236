//! Crash safety: a child process killed with SIGKILL at random moments loses nothing it acknowledged
//! (the shared check in `techhub_core::storage::conformance::crash`), on a SQLite file with the default
//! durability.

use std::sync::Arc;

use techhub_store_sqlite::SqliteStore;

fn main() {
    techhub_core::storage::conformance::crash::main(|path| Ok(Arc::new(SqliteStore::open(path)?)));
}
