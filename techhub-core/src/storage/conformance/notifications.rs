//! Rules of [`NotificationStore`](crate::storage::NotificationStore).

use super::fixtures::{all_jobs, at, conflict, job, spec, t0};
use crate::model::{
    Channel, Delivery, JobState, NewJob, Notification, NotificationCount, NotificationFilter, NotificationId,
    NotificationStatus, PageRequest,
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

/// A notification and its delivery job land together; when either cannot be stored (a duplicate notification,
/// a stale version, a job id that exists, a unique key a live job holds) neither is.
pub async fn notifications_queue_with_job_is_atomic(store: DynStorage) {
    let new = notification(Channel::Webhook, "0190f0c0-0000-7000-8000-000000000002");
    let send = job("notification.send");
    let (stored, queued) = store.queue_notification(new.clone(), None, send.clone()).await.expect("queue works");
    assert_eq!(stored, Notification { version: 1, ..new.clone() });
    assert_eq!((queued.id, queued.state), (send.id, JobState::Queued));
    assert_eq!(store.get_notification(new.id).await.expect("get works"), Some(stored.clone()));
    assert_eq!(store.get_job(send.id).await.expect("get works"), Some(queued));

    // A notification id that exists: its fresh job is not stored.
    let orphan_job = job("notification.send");
    assert_eq!(conflict(store.queue_notification(new.clone(), None, orphan_job.clone()).await), Conflict::Duplicate);
    assert_eq!(store.get_job(orphan_job.id).await.expect("get works"), None);

    // A job id that exists: the fresh notification is not stored.
    let orphan = notification(Channel::Email, "ada@example.com");
    assert_eq!(conflict(store.queue_notification(orphan.clone(), None, send.clone()).await), Conflict::Duplicate);
    assert_eq!(store.get_notification(orphan.id).await.expect("get works"), None);

    // A unique key a live job holds is refused (not answered with the live job), and nothing is stored.
    let keyed = spec(NewJob::new("notification.send", serde_json::json!({})).unique_key("one-delivery"));
    let first = notification(Channel::Log, "ops");
    store.queue_notification(first, None, keyed).await.expect("queue works");
    let twin = spec(NewJob::new("notification.send", serde_json::json!({})).unique_key("one-delivery"));
    let second = notification(Channel::Log, "ops");
    assert_eq!(conflict(store.queue_notification(second.clone(), None, twin.clone()).await), Conflict::Duplicate);
    assert_eq!(store.get_notification(second.id).await.expect("get works"), None);
    assert_eq!(store.get_job(twin.id).await.expect("get works"), None);
    assert_eq!(all_jobs(&store).await.len(), 2);

    // A resend replaces the stored notification under its version, with its new job.
    let resend = job("notification.send");
    let again = Notification { status: NotificationStatus::Pending, job_id: Some(resend.id), ..stored.clone() };
    let (replaced, _) = store.queue_notification(again.clone(), Some(1), resend.clone()).await.expect("resend works");
    assert_eq!((replaced.version, replaced.job_id), (2, Some(resend.id)));
    assert_eq!(store.get_job(resend.id).await.expect("get works").map(|job| job.id), Some(resend.id));
    // A stale version stores neither; a missing notification neither.
    let stale_job = job("notification.send");
    assert_eq!(conflict(store.queue_notification(again, Some(1), stale_job.clone()).await), Conflict::VersionMismatch);
    let ghost = notification(Channel::Log, "nobody");
    assert!(matches!(store.queue_notification(ghost, Some(1), stale_job.clone()).await, Err(StoreError::NotFound)));
    assert_eq!(store.get_job(stale_job.id).await.expect("get works"), None);
    assert_eq!(store.get_notification(new.id).await.expect("get works").map(|n| n.version), Some(2));
    assert_eq!(all_jobs(&store).await.len(), 3);
    let count = |channel, status, count| NotificationCount { channel, status, count };
    assert_eq!(
        store.notification_counts().await.expect("counts work"),
        [count(Channel::Webhook, NotificationStatus::Pending, 1), count(Channel::Log, NotificationStatus::Pending, 1)]
    );
}
