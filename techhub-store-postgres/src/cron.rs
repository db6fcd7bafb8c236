//! Cron ticks: the last tick of each schedule, upserted only forward in the transaction that enqueues the
//! tick's job. Concurrent instances firing one tick queue on the schedule's row; the first commits, and the
//! others see its tick and store nothing.

use chrono::{DateTime, Utc};
use techhub_core::model::Job;
use techhub_core::storage::StoreResult;

use crate::PostgresStore;
use crate::db::{Db, query_opt};
use crate::jobs::insert_jobs;

impl PostgresStore {
    /// [`JobStore::enqueue_cron_tick`](techhub_core::storage::JobStore::enqueue_cron_tick).
    pub(crate) async fn fire_cron_tick(
        &self,
        schedule: &str,
        tick: DateTime<Utc>,
        job: Job,
    ) -> StoreResult<Option<Job>> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        // Under READ COMMITTED a conflicting upsert waits for the row's holder, then tests the condition
        // against the committed tick: of concurrent callers of one tick exactly one gets a row back.
        let recorded = query_opt(
            &transaction,
            "INSERT INTO cron_ticks (schedule, last_tick) VALUES ($1, $2) ON CONFLICT (schedule) \
             DO UPDATE SET last_tick = EXCLUDED.last_tick WHERE EXCLUDED.last_tick > cron_ticks.last_tick \
             RETURNING schedule",
            &[&schedule, &tick],
        )
        .await?;
        if recorded.is_none() {
            return Ok(None);
        }
        let stored = insert_jobs(&transaction, vec![job]).await?;
        transaction.commit().await.db()?;
        self.announce(&stored);
        Ok(stored.into_iter().next())
    }
}
