//! Notifications (JSON records with their filter columns beside them).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use techhub_core::model::{
    Channel, Job, Notification, NotificationCount, NotificationFilter, NotificationId, NotificationStatus, Page,
    PageRequest,
};
use techhub_core::storage::{Conflict, NotificationStore, StoreError, StoreResult, decisions};

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::PostgresStore;
use crate::db::{Db, execute, query, query_opt};
use crate::jobs::insert_rows;
use crate::rows::{self, big, to_json, word};

async fn load<C: GenericClient + Sync>(
    client: &C,
    id: NotificationId,
    lock: bool,
) -> StoreResult<Option<Notification>> {
    let sql = if lock {
        "SELECT record FROM notifications WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT record FROM notifications WHERE id = $1"
    };
    query_opt(client, sql, &[id.as_uuid()]).await?.map(|row| rows::record(&row, 0)).transpose()
}

/// Locks and reads the notifications a batch of settles records deliveries on.
pub(crate) const LOCK_NOTIFICATIONS: &str =
    "SELECT record FROM notifications WHERE id = ANY($1) ORDER BY id FOR UPDATE";

/// Writes back the notifications a batch of settles recorded deliveries on, from [`NotificationUpdate`]'s arrays.
pub(crate) const UPDATE_NOTIFICATIONS: &str = "UPDATE notifications SET status = u.status, version = u.version, \
     record = u.record FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[]) AS u (id, status, version, record) \
     WHERE notifications.id = u.id";

/// The columns of [`UPDATE_NOTIFICATIONS`] for some notifications, as arrays.
pub(crate) struct NotificationUpdate {
    ids: Vec<Uuid>,
    statuses: Vec<String>,
    versions: Vec<i64>,
    records: Vec<String>,
}

impl NotificationUpdate {
    pub(crate) fn of(notifications: &[&Notification]) -> StoreResult<Self> {
        Ok(Self {
            ids: notifications.iter().map(|notification| *notification.id.as_uuid()).collect(),
            statuses: notifications
                .iter()
                .map(|notification| word(&notification.status))
                .collect::<StoreResult<_>>()?,
            versions: notifications.iter().map(|notification| big(notification.version)).collect(),
            records: notifications.iter().map(to_json).collect::<StoreResult<_>>()?,
        })
    }

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 4] {
        [&self.ids, &self.statuses, &self.versions, &self.records]
    }
}

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn insert_notification(&self, mut notification: Notification) -> StoreResult<Notification> {
        notification.version = 1;
        let inserted = execute(
            &self.client().await?,
            "INSERT INTO notifications (id, channel, status, version, record) VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT DO NOTHING",
            &[
                notification.id.as_uuid(),
                &word(&notification.channel)?,
                &word(&notification.status)?,
                &to_json(&notification)?,
            ],
        )
        .await?;
        if inserted == 0 { Err(Conflict::Duplicate.into()) } else { Ok(notification) }
    }

    async fn queue_notification(
        &self,
        mut notification: Notification,
        expected_version: Option<u64>,
        job: Job,
    ) -> StoreResult<(Notification, Job)> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        match expected_version {
            None => notification.version = 1,
            Some(version) => {
                let stored = load(&transaction, notification.id, true).await?.ok_or(StoreError::NotFound)?;
                if stored.version != version {
                    return Err(Conflict::VersionMismatch.into());
                }
                notification.version = version + 1;
                notification.created_at = stored.created_at;
            }
        }
        let sql = if expected_version.is_none() {
            "INSERT INTO notifications (id, channel, status, version, record) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING"
        } else {
            "UPDATE notifications SET channel = $2, status = $3, version = $4, record = $5 WHERE id = $1"
        };
        let written = execute(
            &transaction,
            sql,
            &[
                notification.id.as_uuid(),
                &word(&notification.channel)?,
                &word(&notification.status)?,
                &big(notification.version),
                &to_json(&notification)?,
            ],
        )
        .await?;
        if written == 0 {
            return Err(Conflict::Duplicate.into());
        }
        // Without skipping conflicts, a job id that exists or a unique key a live job holds fails the
        // statement with `Duplicate`; the transaction is dropped uncommitted, so the notification goes too.
        insert_rows(&transaction, std::slice::from_ref(&job), false).await?;
        transaction.commit().await.db()?;
        self.announce(std::slice::from_ref(&job));
        Ok((notification, job))
    }

    async fn get_notification(&self, id: NotificationId) -> StoreResult<Option<Notification>> {
        load(&self.client().await?, id, false).await
    }

    async fn update_notification(
        &self,
        mut notification: Notification,
        expected_version: u64,
    ) -> StoreResult<Notification> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        let stored = load(&transaction, notification.id, true).await?.ok_or(StoreError::NotFound)?;
        if stored.version != expected_version {
            return Err(Conflict::VersionMismatch.into());
        }
        notification.version = expected_version + 1;
        notification.created_at = stored.created_at;
        execute(
            &transaction,
            "UPDATE notifications SET channel = $2, status = $3, version = $4, record = $5 WHERE id = $1",
            &[
                notification.id.as_uuid(),
                &word(&notification.channel)?,
                &word(&notification.status)?,
                &big(notification.version),
                &to_json(&notification)?,
            ],
        )
        .await?;
        transaction.commit().await.db()?;
        Ok(notification)
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Notification>> {
        let after = decisions::start_after(page)?;
        let channel = filter.channel.as_ref().map(word).transpose()?;
        let status = filter.status.as_ref().map(word).transpose()?;
        let limit = i64::try_from(page.limit + 1).unwrap_or(i64::MAX);
        let found = query(
            &self.client().await?,
            "SELECT record FROM notifications WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR channel = $2) \
             AND ($3::text IS NULL OR status = $3) ORDER BY id LIMIT $4",
            &[&after, &channel, &status, &limit],
        )
        .await?;
        let items = rows::all(&found, |row| rows::record::<Notification>(row, 0))?;
        Ok(Page::from_overfetch(items, page.limit, |item| item.id.into()))
    }

    async fn notification_counts(&self) -> StoreResult<Vec<NotificationCount>> {
        // Grouped over the (channel, status) index: the records themselves are not read.
        let found = query(
            &self.client().await?,
            "SELECT channel, status, count(*) FROM notifications GROUP BY channel, status",
            &[],
        )
        .await?;
        let mut counts = found
            .iter()
            .map(|row| {
                let channel: Channel = serde_json::from_value(serde_json::Value::String(rows::get(row, 0)?))
                    .map_err(StoreError::corrupt)?;
                let status: NotificationStatus = serde_json::from_value(serde_json::Value::String(rows::get(row, 1)?))
                    .map_err(StoreError::corrupt)?;
                Ok(NotificationCount { channel, status, count: rows::unsigned(rows::get(row, 2)?) })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        counts.sort_by_key(|count| (count.channel, count.status));
        Ok(counts)
    }
}
