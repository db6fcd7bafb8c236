//! Notifications (JSON records with their filter columns beside them).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use techhub_core::model::{
    Channel, DeliveryRecord, Job, Notification, NotificationCount, NotificationFilter, NotificationId,
    NotificationStatus, Page, PageRequest,
};
use techhub_core::storage::{Conflict, NotificationStore, StoreError, StoreResult, decisions};

use crate::CachedStatements;
use crate::jobs::{insert_jobs, live_with_key};
use crate::rows::to_json;
use crate::{Sql, SqliteStore, rows};

fn word<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    Ok(to_json(value)?.trim_matches('"').to_owned())
}

fn load(connection: &Connection, id: NotificationId) -> StoreResult<Option<Notification>> {
    connection
        .cached_row("SELECT record FROM notifications WHERE id = ?1", [id.as_bytes()], |row| rows::from_json(row, 0))
        .optional()
        .sql()
}

fn write_row(connection: &Connection, notification: &Notification, insert: bool) -> StoreResult<()> {
    let sql = if insert {
        "INSERT INTO notifications (id, channel, status, version, record) VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "UPDATE notifications SET channel = ?2, status = ?3, version = ?4, record = ?5 WHERE id = ?1"
    };
    connection
        .cached_execute(
            sql,
            params![
                notification.id.as_bytes(),
                word(&notification.channel)?,
                word(&notification.status)?,
                i64::try_from(notification.version).unwrap_or(i64::MAX),
                to_json(notification)?,
            ],
        )
        .sql()?;
    Ok(())
}

/// Applies a delivery record a settle carries, inside the settle's transaction; a missing notification is
/// skipped (the contract's rule).
pub(crate) fn record_delivery(connection: &Connection, record: &DeliveryRecord, now: DateTime<Utc>) -> StoreResult<()> {
    let Some(mut notification) = load(connection, record.notification_id)? else { return Ok(()) };
    notification.record_delivery(record, now);
    write_row(connection, &notification, false)
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn insert_notification(&self, mut notification: Notification) -> StoreResult<Notification> {
        self.engine
            .write(move |connection| {
                if load(connection, notification.id)?.is_some() {
                    return Err(Conflict::Duplicate.into());
                }
                notification.version = 1;
                write_row(connection, &notification, true)?;
                Ok(notification)
            })
            .await
    }

    async fn queue_notification(
        &self,
        mut notification: Notification,
        expected_version: Option<u64>,
        job: Job,
    ) -> StoreResult<(Notification, Job)> {
        // One write closure: it runs in a savepoint of its own, so a failure of either part undoes both.
        self.engine
            .write(move |connection| {
                let stored = load(connection, notification.id)?;
                match (expected_version, stored) {
                    (None, Some(_)) => return Err(Conflict::Duplicate.into()),
                    (None, None) => notification.version = 1,
                    (Some(_), None) => return Err(StoreError::NotFound),
                    (Some(version), Some(stored)) if stored.version != version => {
                        return Err(Conflict::VersionMismatch.into());
                    }
                    (Some(version), Some(stored)) => {
                        notification.version = version + 1;
                        notification.created_at = stored.created_at;
                    }
                }
                write_row(connection, &notification, expected_version.is_none())?;
                if let Some(key) = &job.unique_key
                    && live_with_key(connection, key)?.is_some()
                {
                    return Err(Conflict::Duplicate.into());
                }
                let job = insert_jobs(connection, vec![job])?.remove(0);
                Ok((notification, job))
            })
            .await
    }

    async fn get_notification(&self, id: NotificationId) -> StoreResult<Option<Notification>> {
        self.engine.read(move |connection| load(connection, id)).await
    }

    async fn update_notification(
        &self,
        mut notification: Notification,
        expected_version: u64,
    ) -> StoreResult<Notification> {
        self.engine
            .write(move |connection| {
                let stored = load(connection, notification.id)?.ok_or(StoreError::NotFound)?;
                if stored.version != expected_version {
                    return Err(Conflict::VersionMismatch.into());
                }
                notification.version = expected_version + 1;
                notification.created_at = stored.created_at;
                write_row(connection, &notification, false)?;
                Ok(notification)
            })
            .await
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Notification>> {
        let after = decisions::start_after(page)?;
        let filter = *filter;
        let limit = page.limit;
        self.engine
            .read(move |connection| {
                let channel = filter.channel.as_ref().map(word).transpose()?;
                let status = filter.status.as_ref().map(word).transpose()?;
                let mut statement = connection
                    .prepare_cached(
                        "SELECT record FROM notifications WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR channel = ?2) \
                         AND (?3 IS NULL OR status = ?3) ORDER BY id LIMIT ?4",
                    )
                    .sql()?;
                let items = statement
                    .query_map(
                        params![after.map(|id| id.as_bytes().to_vec()), channel, status, i64::try_from(limit + 1).unwrap_or(i64::MAX)],
                        |row| rows::from_json::<Notification>(row, 0),
                    )
                    .sql()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .sql()?;
                Ok(Page::from_overfetch(items, limit, |item| item.id.into()))
            })
            .await
    }

    async fn notification_counts(&self) -> StoreResult<Vec<NotificationCount>> {
        self.engine
            .read(|connection| {
                // Grouped over the (channel, status) index: the records themselves are not read.
                let mut statement = connection
                    .prepare_cached("SELECT channel, status, COUNT(*) FROM notifications GROUP BY channel, status")
                    .sql()?;
                let mut counts = statement
                    .query_map([], |row| {
                        let channel: String = row.get(0)?;
                        let status: String = row.get(1)?;
                        let count: i64 = row.get(2)?;
                        Ok((channel, status, count))
                    })
                    .sql()?
                    .map(|row| {
                        let (channel, status, count) = row.sql()?;
                        let channel: Channel =
                            serde_json::from_value(serde_json::Value::String(channel)).map_err(StoreError::corrupt)?;
                        let status: NotificationStatus =
                            serde_json::from_value(serde_json::Value::String(status)).map_err(StoreError::corrupt)?;
                        Ok(NotificationCount { channel, status, count: u64::try_from(count).unwrap_or_default() })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                counts.sort_by_key(|count| (count.channel, count.status));
                Ok(counts)
            })
            .await
    }
}
