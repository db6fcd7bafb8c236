//! Endpoints: a map by id (a small collection, listed whole).

use std::collections::BTreeMap;

use async_trait::async_trait;
use techhub_core::model::{Endpoint, EndpointId};
use techhub_core::storage::{Conflict, EndpointStore, StoreError, StoreResult, decisions};

use crate::{MemoryStore, read, write};

/// Endpoints by id.
pub(crate) type EndpointTable = BTreeMap<EndpointId, Endpoint>;

#[async_trait]
impl EndpointStore for MemoryStore {
    async fn insert_endpoint(&self, mut endpoint: Endpoint) -> StoreResult<Endpoint> {
        let mut table = write(&self.endpoints);
        if table.contains_key(&endpoint.id) {
            return Err(Conflict::Duplicate.into());
        }
        endpoint.version = 1;
        table.insert(endpoint.id, endpoint.clone());
        Ok(endpoint)
    }

    async fn get_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        Ok(read(&self.endpoints).get(&id).cloned())
    }

    async fn update_endpoint(&self, endpoint: Endpoint, expected_version: u64) -> StoreResult<Endpoint> {
        let mut table = write(&self.endpoints);
        let stored = table.get(&endpoint.id).ok_or(StoreError::NotFound)?;
        let next = decisions::merge_endpoint_update(stored, endpoint, expected_version)?;
        table.insert(next.id, next.clone());
        Ok(next)
    }

    async fn delete_endpoint(&self, id: EndpointId) -> StoreResult<()> {
        write(&self.endpoints).remove(&id).map(drop).ok_or(StoreError::NotFound)
    }

    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>> {
        Ok(read(&self.endpoints).values().cloned().collect())
    }
}
