//! The audit log: one tree, entry id → entry (JSON). Ids are time-ordered, so key order is the log's order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{AuditEntry, AuditFilter, Page, PageRequest};
use techhub_core::storage::{AuditStore, Conflict, StoreResult};

use crate::SledStore;
use crate::engine::{Sled, TreeId};
use crate::paging::page_of;
use crate::rows::{from_json, to_json};
use crate::tx::abort;

#[async_trait]
impl AuditStore for SledStore {
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let row = to_json(&entry)?;
        let id = entry.id;
        self.writer
            .write(move |tx| {
                let audit = tx.tree(TreeId::Audit);
                if audit.get(id.as_bytes())?.is_some() {
                    return Err(abort(Conflict::Duplicate));
                }
                audit.insert(id.as_bytes().as_slice(), row.as_slice())?;
                Ok(())
            })
            .await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let load = |_: &sled::IVec, row: &sled::IVec| from_json(row).map(Some);
        page_of(&self.trees[TreeId::Audit], &[], page, load, |entry| filter.matches(entry), |entry| entry.id.into())
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.writer
            .alone(move |trees| {
                let audit = &trees[TreeId::Audit];
                let mut pruned = 0;
                for entry in audit.iter() {
                    let (key, row) = entry.sled()?;
                    let entry: AuditEntry = from_json(&row)?;
                    if entry.at < before {
                        audit.remove(key).sled()?;
                        pruned += 1;
                    }
                }
                Ok(pruned)
            })
            .await
    }
}
