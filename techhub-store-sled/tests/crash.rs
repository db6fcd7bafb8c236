//! Crash safety: a child process killed with SIGKILL at random moments loses nothing it acknowledged
//! (the shared check in `techhub_core::storage::conformance::crash`), with the default flush policy.

use std::sync::Arc;

use techhub_store_sled::SledStore;

fn main() {
    techhub_core::storage::conformance::crash::main(|path| Ok(Arc::new(SledStore::open(path)?)));
}
