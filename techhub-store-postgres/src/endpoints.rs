//! Endpoints (JSON records by id: a small collection, listed whole).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use techhub_core::model::{Endpoint, EndpointId};
use techhub_core::storage::{Conflict, EndpointStore, StoreError, StoreResult, decisions};

use crate::PostgresStore;
use crate::db::{Db, execute, query, query_opt};
use crate::rows::{self, big, to_json};

async fn load<C: GenericClient + Sync>(client: &C, id: EndpointId, lock: bool) -> StoreResult<Option<Endpoint>> {
    let sql = if lock {
        "SELECT record FROM endpoints WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT record FROM endpoints WHERE id = $1"
    };
    query_opt(client, sql, &[id.as_uuid()]).await?.map(|row| rows::record(&row, 0)).transpose()
}

#[async_trait]
impl EndpointStore for PostgresStore {
    async fn insert_endpoint(&self, mut endpoint: Endpoint) -> StoreResult<Endpoint> {
        endpoint.version = 1;
        let inserted = execute(
            &self.client().await?,
            "INSERT INTO endpoints (id, version, record) VALUES ($1, 1, $2) ON CONFLICT (id) DO NOTHING",
            &[endpoint.id.as_uuid(), &to_json(&endpoint)?],
        )
        .await?;
        if inserted == 0 { Err(Conflict::Duplicate.into()) } else { Ok(endpoint) }
    }

    async fn get_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        load(&self.client().await?, id, false).await
    }

    async fn update_endpoint(&self, endpoint: Endpoint, expected_version: u64) -> StoreResult<Endpoint> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        let stored = load(&transaction, endpoint.id, true).await?.ok_or(StoreError::NotFound)?;
        let next = decisions::merge_endpoint_update(&stored, endpoint, expected_version)?;
        execute(
            &transaction,
            "UPDATE endpoints SET version = $2, record = $3 WHERE id = $1",
            &[next.id.as_uuid(), &big(next.version), &to_json(&next)?],
        )
        .await?;
        transaction.commit().await.db()?;
        Ok(next)
    }

    async fn delete_endpoint(&self, id: EndpointId) -> StoreResult<()> {
        match execute(&self.client().await?, "DELETE FROM endpoints WHERE id = $1", &[id.as_uuid()]).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>> {
        let found = query(&self.client().await?, "SELECT record FROM endpoints ORDER BY id", &[]).await?;
        rows::all(&found, |row| rows::record::<Endpoint>(row, 0))
    }
}
