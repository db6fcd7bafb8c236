//! TechHub's benchmarks. The criterion suites live in `benches/` (`cargo bench -p techhub-benches`), the
//! bench binaries in `src/bin/`; this library holds what the binaries share: choosing and opening a store.

use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;
use techhub_core::storage::DynStorage;
use techhub_store_memory::MemoryStore;
use techhub_store_sled::{FlushPolicy, SledOptions, SledStore};
use techhub_store_sqlite::{Durability, SqliteOptions, SqliteStore};

/// The store a bench runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// `techhub-store-memory`.
    Memory,
    /// `techhub-store-sqlite`, a file.
    Sqlite,
    /// `techhub-store-sled`, a directory.
    Sled,
}

impl StoreKind {
    /// The name printed in output lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Sled => "sled",
        }
    }
}

/// How durable an acknowledged write must be, where the store offers a choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// The store's default (SQLite: WAL, `synchronous = NORMAL`; sled: a flush per write round): an
    /// acknowledged write survives a process crash.
    #[default]
    Normal,
    /// The strongest (SQLite: `synchronous = FULL`: survives a power loss; sled: as `normal`).
    Full,
}

/// What "acknowledged" means for `kind` under `durability`, for output lines.
pub fn durability_label(kind: StoreKind, durability: DurabilityArg) -> &'static str {
    match (kind, durability) {
        (StoreKind::Memory, _) => "none",
        (StoreKind::Sqlite, DurabilityArg::Normal) => "wal-synchronous-normal",
        (StoreKind::Sqlite, DurabilityArg::Full) => "wal-synchronous-full",
        (StoreKind::Sled, _) => "flush-every-write",
    }
}

/// A fresh store of `kind` named `name` in `dir` (files of an earlier run with that name are removed).
///
/// # Panics
///
/// If the store cannot be opened: a bench has no way on.
pub fn open_store(kind: StoreKind, dir: &Path, name: &str, durability: DurabilityArg) -> DynStorage {
    match kind {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Sqlite => {
            std::fs::create_dir_all(dir).expect("the store's directory exists");
            let path = dir.join(format!("{name}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            let durability = match durability {
                DurabilityArg::Normal => Durability::Normal,
                DurabilityArg::Full => Durability::Full,
            };
            let options = SqliteOptions { durability, ..SqliteOptions::default() };
            Arc::new(SqliteStore::open_with(&path, &options).expect("opens the SQLite store"))
        }
        StoreKind::Sled => {
            let path = dir.join(format!("{name}.sled"));
            let _ = std::fs::remove_dir_all(&path);
            let options = SledOptions { flush: FlushPolicy::EveryWrite, ..SledOptions::default() };
            Arc::new(SledStore::open_with(&path, &options).expect("opens the sled store"))
        }
    }
}
