//! Endpoints: JSON records by id (a small collection, listed whole).

use async_trait::async_trait;
use techhub_core::model::{Endpoint, EndpointId};
use techhub_core::storage::{Conflict, EndpointStore, StoreError, StoreResult, decisions};

use crate::SledStore;
use crate::engine::{Sled, TreeId};
use crate::rows::{from_json, to_json};
use crate::tx::{OrAbort, abort};

#[async_trait]
impl EndpointStore for SledStore {
    async fn insert_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint> {
        let stored = Endpoint { version: 1, ..endpoint };
        let row = to_json(&stored)?;
        self.writer
            .write(move |tx| {
                let rows = tx.tree(TreeId::Endpoints);
                if rows.get(stored.id.as_bytes())?.is_some() {
                    return Err(abort(Conflict::Duplicate));
                }
                rows.insert(stored.id.as_bytes().as_slice(), row.as_slice())?;
                Ok(stored.clone())
            })
            .await
    }

    async fn get_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>> {
        self.read(move |trees| {
            trees[TreeId::Endpoints].get(id.as_bytes()).sled()?.map(|row| from_json(&row)).transpose()
        })
        .await
    }

    async fn update_endpoint(&self, endpoint: Endpoint, expected_version: u64) -> StoreResult<Endpoint> {
        self.writer
            .write(move |tx| {
                let rows = tx.tree(TreeId::Endpoints);
                let row = rows.get(endpoint.id.as_bytes())?.ok_or_else(|| abort(StoreError::NotFound))?;
                let stored: Endpoint = from_json(&row).or_abort()?;
                let next =
                    decisions::merge_endpoint_update(&stored, endpoint.clone(), expected_version).map_err(abort)?;
                rows.insert(next.id.as_bytes().as_slice(), to_json(&next).or_abort()?)?;
                Ok(next)
            })
            .await
    }

    async fn delete_endpoint(&self, id: EndpointId) -> StoreResult<()> {
        self.writer
            .write(move |tx| {
                let rows = tx.tree(TreeId::Endpoints);
                if rows.get(id.as_bytes())?.is_none() {
                    return Err(abort(StoreError::NotFound));
                }
                rows.remove(id.as_bytes().as_slice())
            })
            .await
    }

    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>> {
        self.read(|trees| {
            trees[TreeId::Endpoints]
                .iter()
                .map(|entry| {
                    let (_, row) = entry.sled()?;
                    from_json(&row)
                })
                .collect()
        })
        .await
    }
}
