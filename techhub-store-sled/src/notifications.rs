//! Notifications: JSON records by id, and a counter per channel and status kept in the same transactions, so
//! counts never load the records.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{
    Channel, DeliveryRecord, Job, Notification, NotificationCount, NotificationFilter, NotificationId,
    NotificationStatus, Page, PageRequest,
};
use techhub_core::storage::{Conflict, NotificationStore, StoreError, StoreResult};

use crate::SledStore;
use crate::codec::corrupt;
use crate::engine::{Sled, TreeId, counter};
use crate::job_index::{JobTx, NewJob};
use crate::paging::page_of;
use crate::rows::{from_json, to_json};
use crate::tx::{OrAbort, Tx, TxResult, TxTree, abort};

/// The counter key of a channel and status: their positions in the enums, so key order is declaration order.
fn count_key(notification: &Notification) -> [u8; 2] {
    let channel = Channel::ALL.iter().position(|channel| *channel == notification.channel).unwrap_or_default();
    let status = NotificationStatus::ALL.iter().position(|status| *status == notification.status).unwrap_or_default();
    [channel as u8, status as u8]
}

fn shift(counts: TxTree<'_>, key: [u8; 2], up: bool) -> TxResult<()> {
    let count = counter(counts.get(key)?.as_deref()).or_abort()?;
    let count = if up { count + 1 } else { count.saturating_sub(1) };
    if count == 0 {
        counts.remove(key.as_slice())
    } else {
        counts.insert(key.as_slice(), count.to_be_bytes().as_slice())
    }
}

/// The notification rows and counters as one call sees them.
fn trees<'a>(tx: &'a Tx<'a>) -> (TxTree<'a>, TxTree<'a>) {
    (tx.tree(TreeId::Notifications), tx.tree(TreeId::NotificationCounts))
}

/// Applies a delivery record a settle carries, inside the settle's transaction; a missing notification is
/// skipped (the contract's rule).
pub(crate) fn record_delivery(tx: &Tx<'_>, record: &DeliveryRecord, now: DateTime<Utc>) -> TxResult<()> {
    let (rows, counts) = trees(tx);
    let Some(row) = rows.get(record.notification_id.as_bytes())? else { return Ok(()) };
    let stored: Notification = from_json(&row).or_abort()?;
    let mut next = stored.clone();
    next.record_delivery(record, now);
    rows.insert(next.id.as_bytes().as_slice(), to_json(&next).or_abort()?)?;
    if count_key(&stored) != count_key(&next) {
        shift(counts, count_key(&stored), false)?;
        shift(counts, count_key(&next), true)?;
    }
    Ok(())
}

#[async_trait]
impl NotificationStore for SledStore {
    async fn insert_notification(&self, notification: Notification) -> StoreResult<Notification> {
        let stored = Notification { version: 1, ..notification };
        let row = to_json(&stored)?;
        self.writer
            .write(move |tx| {
                let (rows, counts) = trees(tx);
                if rows.get(stored.id.as_bytes())?.is_some() {
                    return Err(abort(Conflict::Duplicate));
                }
                rows.insert(stored.id.as_bytes().as_slice(), row.as_slice())?;
                shift(counts, count_key(&stored), true)?;
                Ok(stored.clone())
            })
            .await
    }

    async fn queue_notification(
        &self,
        notification: Notification,
        expected_version: Option<u64>,
        job: Job,
    ) -> StoreResult<(Notification, Job)> {
        let prepared = NewJob::prepare(&job)?;
        let unique_key = job.unique_key.clone();
        let stored = self
            .writer
            .write(move |tx| {
                let (rows, counts) = trees(tx);
                let previous = rows.get(notification.id.as_bytes())?;
                let next = match (expected_version, previous) {
                    (None, Some(_)) => return Err(abort(Conflict::Duplicate)),
                    (None, None) => Notification { version: 1, ..notification.clone() },
                    (Some(_), None) => return Err(abort(StoreError::NotFound)),
                    (Some(version), Some(row)) => {
                        let stored: Notification = from_json(&row).or_abort()?;
                        if stored.version != version {
                            return Err(abort(Conflict::VersionMismatch));
                        }
                        shift(counts, count_key(&stored), false)?;
                        Notification { version: version + 1, created_at: stored.created_at, ..notification.clone() }
                    }
                };
                rows.insert(next.id.as_bytes().as_slice(), to_json(&next).or_abort()?)?;
                shift(counts, count_key(&next), true)?;
                let jobs = JobTx::new(tx);
                if let Some(key) = &unique_key
                    && jobs.unique_holder(key)?.is_some()
                {
                    return Err(abort(Conflict::Duplicate));
                }
                // The call's writes reach the transaction only if it succeeds: a refused job undoes the
                // notification's writes above.
                jobs.insert(std::slice::from_ref(&prepared))?;
                Ok(next)
            })
            .await?;
        Ok((stored, job))
    }

    async fn get_notification(&self, id: NotificationId) -> StoreResult<Option<Notification>> {
        self.read(move |trees| {
            trees[TreeId::Notifications].get(id.as_bytes()).sled()?.map(|row| from_json(&row)).transpose()
        })
        .await
    }

    async fn update_notification(
        &self,
        notification: Notification,
        expected_version: u64,
    ) -> StoreResult<Notification> {
        self.writer
            .write(move |tx| {
                let (rows, counts) = trees(tx);
                let row = rows.get(notification.id.as_bytes())?.ok_or_else(|| abort(StoreError::NotFound))?;
                let stored: Notification = from_json(&row).or_abort()?;
                if stored.version != expected_version {
                    return Err(abort(Conflict::VersionMismatch));
                }
                let next = Notification {
                    version: expected_version + 1,
                    created_at: stored.created_at,
                    ..notification.clone()
                };
                rows.insert(next.id.as_bytes().as_slice(), to_json(&next).or_abort()?)?;
                if count_key(&stored) != count_key(&next) {
                    shift(counts, count_key(&stored), false)?;
                    shift(counts, count_key(&next), true)?;
                }
                Ok(next)
            })
            .await
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Notification>> {
        let (filter, page) = (*filter, page.clone());
        self.read(move |trees| {
            let load = |_: &sled::IVec, row: &sled::IVec| from_json(row).map(Some);
            let keep = |item: &Notification| filter.matches(item);
            page_of(&trees[TreeId::Notifications], &[], &page, load, keep, |item| item.id.into())
        })
        .await
    }

    async fn notification_counts(&self) -> StoreResult<Vec<NotificationCount>> {
        self.read(|trees| {
            trees[TreeId::NotificationCounts]
                .iter()
                .map(|entry| {
                    let (key, count) = entry.sled()?;
                    let [channel, status] = key.as_ref() else { return Err(corrupt("a notification counter key")) };
                    Ok(NotificationCount {
                        channel: *Channel::ALL.get(usize::from(*channel)).ok_or_else(|| corrupt("unknown channel"))?,
                        status: *NotificationStatus::ALL
                            .get(usize::from(*status))
                            .ok_or_else(|| corrupt("unknown notification status"))?,
                        count: counter(Some(&count))?,
                    })
                })
                .collect()
        })
        .await
    }
}
