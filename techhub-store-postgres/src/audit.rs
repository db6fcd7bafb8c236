//! The audit log: one row per entry (the entry as JSON), with its time, action and accounts as columns to
//! filter and prune on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{AuditEntry, AuditFilter, Page, PageRequest};
use techhub_core::storage::{AuditStore, Conflict, StoreResult, decisions};

use crate::PostgresStore;
use crate::db::{execute, query};
use crate::rows::{self, to_json};

/// Rows deleted per statement when pruning, so a long retention pass never holds many locks at once.
const PRUNE_SLICE: i64 = 2_000;

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let inserted = execute(
            &self.client().await?,
            "INSERT INTO audit (id, at, action, actor_id, user_id, record) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING",
            &[
                entry.id.as_uuid(),
                &entry.at,
                &entry.action.as_str(),
                &entry.actor_id.map(|id| *id.as_uuid()),
                &entry.user_id.map(|id| *id.as_uuid()),
                &to_json(&entry)?,
            ],
        )
        .await?;
        if inserted == 0 { Err(Conflict::Duplicate.into()) } else { Ok(()) }
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let after = decisions::start_after(page)?;
        let limit = i64::try_from(page.limit + 1).unwrap_or(i64::MAX);
        let found = query(
            &self.client().await?,
            "SELECT record FROM audit WHERE ($1::uuid IS NULL OR id > $1) \
             AND ($2::uuid IS NULL OR user_id = $2 OR actor_id = $2) AND ($3::text IS NULL OR action = $3) \
             AND ($4::timestamptz IS NULL OR at >= $4) ORDER BY id LIMIT $5",
            &[
                &after,
                &filter.user_id.map(|id| *id.as_uuid()),
                &filter.action.map(|action| action.as_str()),
                &filter.since,
                &limit,
            ],
        )
        .await?;
        let items = rows::all(&found, |row| rows::record::<AuditEntry>(row, 0))?;
        Ok(Page::from_overfetch(items, page.limit, |item| item.id.into()))
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let client = self.client().await?;
        let mut pruned = 0;
        loop {
            let deleted = execute(
                &client,
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < $1 LIMIT $2)",
                &[&before, &PRUNE_SLICE],
            )
            .await?;
            pruned += deleted;
            if deleted < PRUNE_SLICE as u64 {
                return Ok(pruned);
            }
        }
    }
}
