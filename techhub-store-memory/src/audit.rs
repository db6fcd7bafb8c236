//! The audit log: a map by id (ids are time-ordered).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{AuditEntry, AuditFilter, AuditId, Page, PageRequest};
use techhub_core::storage::{AuditStore, Conflict, StoreResult};

use crate::{MemoryStore, paging, read, write};

#[derive(Debug, Default)]
pub(crate) struct AuditTable {
    by_id: BTreeMap<AuditId, AuditEntry>,
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let mut table = write(&self.audit);
        if table.by_id.contains_key(&entry.id) {
            return Err(Conflict::Duplicate.into());
        }
        table.by_id.insert(entry.id, entry);
        Ok(())
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        paging::page_of(&read(&self.audit).by_id, page, |entry| filter.matches(entry), |entry| entry.id.into())
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut table = write(&self.audit);
        let count = table.by_id.len();
        table.by_id.retain(|_, entry| entry.at >= before);
        Ok((count - table.by_id.len()) as u64)
    }
}
