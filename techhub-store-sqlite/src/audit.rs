//! The audit log: one row per entry (the entry as JSON), with its time, action and accounts as columns to
//! filter and prune on.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::params;
use techhub_core::model::{AuditEntry, AuditFilter, Page, PageRequest};
use techhub_core::storage::{AuditStore, Conflict, StoreResult, decisions};

use crate::CachedStatements;
use crate::rows::{micros, to_json};
use crate::{Sql, SqliteStore, rows};

/// Rows deleted per write when pruning, so a long retention pass never holds the writer for long.
const PRUNE_SLICE: i64 = 2_000;

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let record = to_json(&entry)?;
        self.engine
            .write(move |connection| {
                let inserted = connection
                    .cached_execute(
                        "INSERT INTO audit (id, at, action, actor_id, user_id, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (id) DO NOTHING",
                        params![
                            entry.id.as_bytes(),
                            micros(entry.at),
                            entry.action.as_str(),
                            entry.actor_id.map(|id| id.as_bytes().to_vec()),
                            entry.user_id.map(|id| id.as_bytes().to_vec()),
                            record,
                        ],
                    )
                    .sql()?;
                if inserted == 0 {
                    return Err(Conflict::Duplicate.into());
                }
                Ok(())
            })
            .await
    }

    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let after = decisions::start_after(page)?;
        let filter = filter.clone();
        let limit = page.limit;
        self.engine
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(
                        "SELECT record FROM audit WHERE (?1 IS NULL OR id > ?1) \
                         AND (?2 IS NULL OR user_id = ?2 OR actor_id = ?2) AND (?3 IS NULL OR action = ?3) \
                         AND (?4 IS NULL OR at >= ?4) ORDER BY id LIMIT ?5",
                    )
                    .sql()?;
                let items = statement
                    .query_map(
                        params![
                            after.map(|id| id.as_bytes().to_vec()),
                            filter.user_id.map(|id| id.as_bytes().to_vec()),
                            filter.action.map(|action| action.as_str()),
                            filter.since.map(micros),
                            i64::try_from(limit + 1).unwrap_or(i64::MAX),
                        ],
                        |row| rows::from_json::<AuditEntry>(row, 0),
                    )
                    .sql()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .sql()?;
                Ok(Page::from_overfetch(items, limit, |item| item.id.into()))
            })
            .await
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before = micros(before);
        let mut pruned = 0;
        loop {
            let deleted = self
                .engine
                .write(move |connection| {
                    let deleted = connection
                        .prepare_cached("DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1 LIMIT ?2)")
                        .sql()?
                        .execute(params![before, PRUNE_SLICE])
                        .sql()?;
                    Ok(deleted as u64)
                })
                .await?;
            pruned += deleted;
            if deleted < PRUNE_SLICE as u64 {
                return Ok(pruned);
            }
        }
    }
}
