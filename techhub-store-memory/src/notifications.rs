//! Notifications: a map by id, and counters per channel and status kept on every write.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{
    Channel, DeliveryRecord, Job, Notification, NotificationCount, NotificationFilter, NotificationId,
    NotificationStatus, Page, PageRequest,
};
use techhub_core::storage::{Conflict, NotificationStore, StoreError, StoreResult};

use crate::{MemoryStore, paging, read, write};

#[derive(Debug, Default)]
pub(crate) struct NotificationTables {
    by_id: BTreeMap<NotificationId, Notification>,
    counts: BTreeMap<(Channel, NotificationStatus), u64>,
}

impl NotificationTables {
    /// Applies a delivery record a settle carries; a missing notification is skipped (the contract's rule).
    pub(crate) fn record_delivery(&mut self, record: &DeliveryRecord, now: DateTime<Utc>) {
        let Some(stored) = self.by_id.get_mut(&record.notification_id) else { return };
        let before = (stored.channel, stored.status);
        stored.record_delivery(record, now);
        let after = (stored.channel, stored.status);
        if before != after {
            let count = self.counts.entry(before).or_default();
            *count = count.saturating_sub(1);
            *self.counts.entry(after).or_default() += 1;
        }
    }

    fn count(&mut self, notification: &Notification, delta: i64) {
        let count = self.counts.entry((notification.channel, notification.status)).or_default();
        *count = count.saturating_add_signed(delta);
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn insert_notification(&self, mut notification: Notification) -> StoreResult<Notification> {
        let mut tables = write(&self.notifications);
        if tables.by_id.contains_key(&notification.id) {
            return Err(Conflict::Duplicate.into());
        }
        notification.version = 1;
        tables.count(&notification, 1);
        tables.by_id.insert(notification.id, notification.clone());
        Ok(notification)
    }

    async fn queue_notification(
        &self,
        mut notification: Notification,
        expected_version: Option<u64>,
        job: Job,
    ) -> StoreResult<(Notification, Job)> {
        let mut tables = write(&self.notifications);
        let previous = match expected_version {
            None if tables.by_id.contains_key(&notification.id) => return Err(Conflict::Duplicate.into()),
            None => None,
            Some(version) => {
                let stored = tables.by_id.get(&notification.id).ok_or(StoreError::NotFound)?;
                if stored.version != version {
                    return Err(Conflict::VersionMismatch.into());
                }
                Some(stored.clone())
            }
        };
        let mut jobs = self.jobs.lock_index();
        if job.unique_key.as_ref().is_some_and(|key| jobs.holds_key(key)) {
            return Err(Conflict::Duplicate.into());
        }
        jobs.check_new(&self.jobs, std::slice::from_ref(&job))?;
        // Validated: from here on nothing fails, so the notification and its job land together.
        match &previous {
            Some(previous) => {
                notification.version = previous.version + 1;
                notification.created_at = previous.created_at;
                tables.count(previous, -1);
            }
            None => notification.version = 1,
        }
        tables.count(&notification, 1);
        tables.by_id.insert(notification.id, notification.clone());
        let job = jobs.insert_checked(&self.jobs, vec![job]).remove(0);
        Ok((notification, job))
    }

    async fn get_notification(&self, id: NotificationId) -> StoreResult<Option<Notification>> {
        Ok(read(&self.notifications).by_id.get(&id).cloned())
    }

    async fn update_notification(
        &self,
        mut notification: Notification,
        expected_version: u64,
    ) -> StoreResult<Notification> {
        let mut tables = write(&self.notifications);
        let stored = tables.by_id.get(&notification.id).ok_or(StoreError::NotFound)?;
        if stored.version != expected_version {
            return Err(Conflict::VersionMismatch.into());
        }
        notification.version = expected_version + 1;
        notification.created_at = stored.created_at;
        let previous = stored.clone();
        tables.count(&previous, -1);
        tables.count(&notification, 1);
        tables.by_id.insert(notification.id, notification.clone());
        Ok(notification)
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Notification>> {
        paging::page_of(&read(&self.notifications).by_id, page, |item| filter.matches(item), |item| item.id.into())
    }

    async fn notification_counts(&self) -> StoreResult<Vec<NotificationCount>> {
        Ok(read(&self.notifications)
            .counts
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(&(channel, status), &count)| NotificationCount { channel, status, count })
            .collect())
    }
}
