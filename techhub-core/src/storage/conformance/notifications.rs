//! Rules of [`NotificationStore`](crate::storage::NotificationStore).

use super::fixtures::{at, conflict, t0};
use crate::model::{
    Channel, Delivery, Notification, NotificationCount, NotificationFilter, NotificationId, NotificationStatus,
    PageRequest,
};
use crate::storage::{Conflict, DynStorage, StoreError};

fn notification(channel: Channel, recipient: &str) -> Notification {
    Notification::new(channel, recipient, "Hello", "Welcome aboard", t0())
}

/// Notifications read back with version 1; delivery updates are versioned.
pub async fn notifications_insert_get_and_versioned_update(store: DynStorage) {
    let new = notification(Channel::Email, "ada@example.com");
    let stored = store.insert_notification(new.clone()).await.expect("insert works");
    assert_eq!(stored, Notification { version: 1, ..new });
    assert_eq!(store.get_notification(stored.id).await.expect("get works"), Some(stored.clone()));
    assert_eq!(conflict(store.insert_notification(stored.clone()).await), Conflict::Duplicate);

    let sent = Notification { status: NotificationStatus::Sent, attempts: 1, sent_at: Some(at(3)), ..stored.clone() };
    let updated = store.update_notification(sent, 1).await.expect("update works");
    assert_eq!((updated.version, updated.status), (2, NotificationStatus::Sent));
    let stale = Notification { status: NotificationStatus::Failed, ..stored };
    assert_eq!(conflict(store.update_notification(stale, 1).await), Conflict::VersionMismatch);
    assert_eq!(store.get_notification(updated.id).await.expect("get works"), Some(updated));
    let ghost = notification(Channel::Log, "nobody");
    assert!(matches!(store.update_notification(ghost, 1).await, Err(StoreError::NotFound)));
    assert_eq!(store.get_notification(NotificationId::new()).await.expect("get works"), None);
}

/// Listing filters by channel and status; counts per channel and status follow updates.
pub async fn notifications_list_by_filter_and_counts(store: DynStorage) {
    let mut ids = Vec::new();
    for (channel, recipient) in [
        (Channel::Email, "a@example.com"),
        (Channel::Email, "b@example.com"),
        (Channel::Webhook, "https://hooks.example.com/x"),
        (Channel::Slack, "#ops"),
    ] {
        ids.push(store.insert_notification(notification(channel, recipient)).await.expect("insert works"));
    }
    let failed = Notification { status: NotificationStatus::Failed, attempts: 3, ..ids[1].clone() };
    store.update_notification(failed, 1).await.expect("update works");

    let list = |filter: NotificationFilter| {
        let store = store.clone();
        async move {
            let page = store.list_notifications(&filter, &PageRequest::first(50)).await.expect("list works");
            page.items.into_iter().map(|item| item.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(NotificationFilter { channel: Some(Channel::Email), status: None }).await, [ids[0].id, ids[1].id]);
    let failed_email = NotificationFilter { channel: Some(Channel::Email), status: Some(NotificationStatus::Failed) };
    assert_eq!(list(failed_email).await, [ids[1].id]);
    assert_eq!(list(NotificationFilter::default()).await.len(), 4);

    let count = |channel, status, count| NotificationCount { channel, status, count };
    assert_eq!(
        store.notification_counts().await.expect("counts work"),
        [
            count(Channel::Email, NotificationStatus::Pending, 1),
            count(Channel::Email, NotificationStatus::Failed, 1),
            count(Channel::Webhook, NotificationStatus::Pending, 1),
            count(Channel::Slack, NotificationStatus::Pending, 1),
        ]
    );
}

/// The HTML body, event type and delivery attempts (in order) round-trip through insert and update.
pub async fn notifications_keep_html_event_type_and_deliveries(store: DynStorage) {
    let mut new = notification(Channel::Webhook, "0190f0c0-0000-7000-8000-000000000001");
    new.html = Some("<p>Welcome aboard</p>".to_owned());
    new.event_type = Some("build.failed".to_owned());
    let refused = Delivery { at: at(1), status_code: Some(500), error: Some("HTTP 500".to_owned()), duration_ms: 12 };
    new.deliveries.push(refused.clone());
    let stored = store.insert_notification(new.clone()).await.expect("insert works");
    assert_eq!(store.get_notification(stored.id).await.expect("get works"), Some(stored.clone()));

    let accepted = Delivery { at: at(31), status_code: Some(204), error: None, duration_ms: 3 };
    let mut sent = Notification { status: NotificationStatus::Sent, attempts: 2, sent_at: Some(at(31)), ..stored };
    sent.deliveries.push(accepted.clone());
    let updated = store.update_notification(sent, 1).await.expect("update works");
    let read = store.get_notification(updated.id).await.expect("get works").expect("it exists");
    assert_eq!(read.deliveries, [refused, accepted]);
    assert_eq!((read.html, read.event_type), (new.html, new.event_type));
}
