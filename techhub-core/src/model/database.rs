//! What a store tells about the database behind it, for operators (`GET /api/v1/system/database`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The database behind a store: its kind, its schema version and its size. Never a password, nor a connection
/// string with credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// The backend, as [`Storage::backend`](crate::storage::Storage::backend) names it.
    pub kind: String,
    /// The version of the layout the store wrote (SQLite: `PRAGMA user_version`; sled: the format version);
    /// `None` for a store that keeps nothing on disk.
    pub schema_version: Option<u64>,
    /// Bytes the database takes on disk, when the store can tell.
    pub size_bytes: Option<u64>,
    /// Backend-specific facts (SQLite: the file, WAL and page sizes), as flat JSON values.
    pub details: Map<String, Value>,
}

impl DatabaseInfo {
    /// Facts about a `kind` database with no schema version, size or details yet.
    pub fn new(kind: impl Into<String>) -> Self {
        Self { kind: kind.into(), schema_version: None, size_bytes: None, details: Map::new() }
    }
}
