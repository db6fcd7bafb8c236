//! Endpoints (JSON records by id: a small collection, listed whole).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use techhub_core::model::{Endpoint, EndpointId};
use techhub_core::storage::{Conflict, EndpointStore, StoreError, StoreResult, decisions};

use crate::rows::to_json;
use crate::{CachedStatements, Sql, SqliteStore, rows};

fn load(connection: &Connection, id: EndpointId) -> StoreResult<Option<Endpoint>> {
    connection
        .cached_row("SELECT record FROM endpoints WHERE id = ?1", [id.as_bytes()], |row| rows::from_json(row, 0))
        .optional()
        .sql()
}

fn version(endpoint: &Endpoint) -> i64 {
    i64::try_from(endpoint.version).unwrap_or(i64::MAX)
}

#[async_trait]
impl EndpointStore for SqliteStore {
    async fn insert_endpoint(&self, mut endpoint: Endpoint) -> StoreResult<Endpoint> {
        self.engine
            .write(move |connection| {
                endpoint.version = 1;
                let inserted = connection
                    .cached_execute(
                        "INSERT INTO endpoints (id, version, record) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
                        params![endpoint.id.as_bytes(), version(&endpoint), to_json(&endpoint)?],
                    )
                    .sql()?;
                if inserted == 0 {
                    return Err(Conflict::Duplicate.into());
                }
                Ok(endpoint)
            })
            .await
    }

    async fn get_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        self.engine.read(move |connection| load(connection, id)).await
    }

    async fn update_endpoint(&self, endpoint: Endpoint, expected_version: u64) -> StoreResult<Endpoint> {
        self.engine
            .write(move |connection| {
                let stored = load(connection, endpoint.id)?.ok_or(StoreError::NotFound)?;
                let next = decisions::merge_endpoint_update(&stored, endpoint, expected_version)?;
                connection
                    .cached_execute(
                        "UPDATE endpoints SET version = ?2, record = ?3 WHERE id = ?1",
                        params![next.id.as_bytes(), version(&next), to_json(&next)?],
                    )
                    .sql()?;
                Ok(next)
            })
            .await
    }

    async fn delete_endpoint(&self, id: EndpointId) -> StoreResult<()> {
        self.engine
            .write(move |connection| {
                match connection.cached_execute("DELETE FROM endpoints WHERE id = ?1", [id.as_bytes()]).sql()? {
                    0 => Err(StoreError::NotFound),
                    _ => Ok(()),
                }
            })
            .await
    }

    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>> {
        self.engine
            .read(|connection| {
                let mut statement = connection.prepare_cached("SELECT record FROM endpoints ORDER BY id").sql()?;
                statement
                    .query_map([], |row| rows::from_json::<Endpoint>(row, 0))
                    .sql()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .sql()
            })
            .await
    }
}
