//! Rules of the side writes a batched settle carries ([`SideWrite`]): stored with their job's change, in the
//! same atomic write, and fenced by the same lease.

use std::time::Duration;

use serde_json::json;

use super::fixtures::{LEASE, at, conflict, queues, spec, t0, worker};
use crate::model::{
    Channel, Delivery, DeliveryRecord, Job, JobFailure, JobId, JobState, Lease, NewJob, Notification,
    NotificationCount, NotificationId, NotificationStatus, Retry, Settlement, SideWrite,
};
use crate::storage::{Conflict, DynStorage};

fn lease_of(job: &Job) -> Lease {
    job.lease().expect("a claimed job has a lease")
}

/// Claims `count` jobs of kind `kind`, each with a payload that must not stay at rest.
async fn claimed(store: &DynStorage, kind: &str, count: usize, max_attempts: u32) -> Vec<Job> {
    let specs: Vec<Job> = (0..count)
        .map(|n| spec(NewJob::new(kind, json!({ "password": format!("secret-{n}") })).max_attempts(max_attempts)))
        .collect();
    store.enqueue_many(specs).await.expect("enqueue works");
    let claimed = store.claim_many(&queues(&["default"]), &worker("w"), at(1), LEASE, count).await.expect("claim");
    assert_eq!(claimed.len(), count);
    claimed
}

async fn payload(store: &DynStorage, id: JobId) -> serde_json::Value {
    store.get_job(id).await.expect("get").expect("exists").payload
}

fn attempt(second: i64, error: Option<&str>) -> Delivery {
    Delivery {
        at: at(second),
        status_code: Some(if error.is_some() { 503 } else { 204 }),
        error: error.map(str::to_owned),
        duration_ms: 7,
    }
}

fn record(id: NotificationId, status: NotificationStatus, delivery: Delivery) -> DeliveryRecord {
    DeliveryRecord { notification_id: id, last_error: delivery.error.clone(), delivery: Some(delivery), status }
}

async fn webhook_notification(store: &DynStorage) -> Notification {
    let new = Notification::new(Channel::Webhook, "endpoint", "build.failed", "{}", t0());
    store.insert_notification(new).await.expect("insert works")
}

/// A settle carrying [`SideWrite::DiscardPayload`] leaves the payload `null` when it finishes the job (success,
/// failure for good, acknowledged cancel) and keeps it when the job is queued again (a retry, a release); a
/// settle without it keeps the payload. The answer is the job as stored.
pub async fn jobs_settle_with_payload_discard_leaves_finished_payloads_null(store: DynStorage) {
    let jobs = claimed(&store, "import", 6, 3).await;
    store.cancel(jobs[3].id, at(2)).await.expect("cancel requested");
    let discard = || vec![SideWrite::DiscardPayload];
    let retry = JobFailure { error: "flaky".into(), retry: Retry::After(Duration::from_secs(5)) };
    let settlements = vec![
        Settlement::Complete { lease: lease_of(&jobs[0]), result: json!({}), artifact: None, side_writes: discard() },
        Settlement::Fail {
            lease: lease_of(&jobs[1]),
            failure: JobFailure { error: "bad".into(), retry: Retry::Never },
            side_writes: discard(),
        },
        Settlement::Fail { lease: lease_of(&jobs[2]), failure: retry, side_writes: discard() },
        Settlement::AcknowledgeCancel { lease: lease_of(&jobs[3]), side_writes: discard() },
        Settlement::Release { lease: lease_of(&jobs[4]), side_writes: discard() },
        Settlement::Complete { lease: lease_of(&jobs[5]), result: json!({}), artifact: None, side_writes: Vec::new() },
    ];
    let settled: Vec<Job> = store
        .settle_many(settlements, at(3))
        .await
        .expect("the batch is stored")
        .into_iter()
        .map(|outcome| outcome.expect("every lease is current"))
        .collect();
    let states: Vec<JobState> = settled.iter().map(|job| job.state).collect();
    assert_eq!(
        states,
        [
            JobState::Succeeded,
            JobState::Failed,
            JobState::Queued,
            JobState::Cancelled,
            JobState::Queued,
            JobState::Succeeded
        ]
    );
    for (n, job) in settled.iter().enumerate() {
        let expected = if n < 2 || n == 3 { json!(null) } else { json!({ "password": format!("secret-{n}") }) };
        assert_eq!(payload(&store, job.id).await, expected, "job {n}'s payload as stored");
        assert_eq!(job.payload, expected, "job {n}'s payload as answered");
    }
    // The job queued again still runs with its payload, and its last attempt discards it.
    let again = store.claim_many(&queues(&["default"]), &worker("w"), at(9), LEASE, 2).await.expect("claim");
    let retried = again.iter().find(|job| job.id == jobs[2].id).expect("the retried job is claimed again");
    assert_eq!(retried.payload, json!({ "password": "secret-2" }));
    let last = Settlement::Fail {
        lease: lease_of(retried),
        failure: JobFailure { error: "bad".into(), retry: Retry::Never },
        side_writes: discard(),
    };
    store.settle_many(vec![last], at(10)).await.expect("stored").remove(0).expect("current lease");
    assert_eq!(payload(&store, jobs[2].id).await, json!(null));
}

/// A settle carrying [`SideWrite::RecordDelivery`] records the attempt on the notification in the same write as
/// the job's change ([`Notification::record_delivery`] at the settle's time: one more attempt, the status, the
/// last error, `sent_at` once sent, the next version), whatever the job's outcome; the counts by channel and
/// status follow; two records for one notification in one batch apply in order; a record for a notification
/// that does not exist is skipped and its job settled all the same.
pub async fn jobs_settle_carrying_a_delivery_record_updates_the_notification_with_the_job(store: DynStorage) {
    let first = webhook_notification(&store).await;
    let second = webhook_notification(&store).await;
    let jobs = claimed(&store, "notification.send", 4, 5).await;
    let failed = record(first.id, NotificationStatus::Pending, attempt(2, Some("HTTP 503")));
    let settlements = vec![
        Settlement::Fail {
            lease: lease_of(&jobs[0]),
            failure: JobFailure { error: "HTTP 503".into(), retry: Retry::After(Duration::from_secs(5)) },
            side_writes: vec![SideWrite::RecordDelivery(failed.clone())],
        },
        Settlement::Complete {
            lease: lease_of(&jobs[1]),
            result: json!({ "notification_id": second.id }),
            artifact: None,
            side_writes: vec![
                SideWrite::RecordDelivery(record(second.id, NotificationStatus::Pending, attempt(2, Some("reset")))),
                SideWrite::RecordDelivery(record(second.id, NotificationStatus::Sent, attempt(3, None))),
            ],
        },
        Settlement::Complete {
            lease: lease_of(&jobs[2]),
            result: json!({}),
            artifact: None,
            side_writes: vec![SideWrite::RecordDelivery(record(
                NotificationId::new(),
                NotificationStatus::Sent,
                attempt(2, None),
            ))],
        },
    ];
    let outcomes = store.settle_many(settlements, at(4)).await.expect("the batch is stored");
    let states: Vec<JobState> = outcomes.into_iter().map(|outcome| outcome.expect("current lease").state).collect();
    assert_eq!(states, [JobState::Queued, JobState::Succeeded, JobState::Succeeded], "the missing one's job settled");

    let mut expected_first = first.clone();
    expected_first.record_delivery(&failed, at(4));
    let stored_first = store.get_notification(first.id).await.expect("get").expect("exists");
    assert_eq!(stored_first, expected_first);
    assert_eq!(
        (stored_first.status, stored_first.attempts, stored_first.last_error.as_deref(), stored_first.version),
        (NotificationStatus::Pending, 1, Some("HTTP 503"), 2)
    );
    let stored_second = store.get_notification(second.id).await.expect("get").expect("exists");
    assert_eq!(
        (stored_second.status, stored_second.attempts, stored_second.sent_at, stored_second.last_error),
        (NotificationStatus::Sent, 2, Some(at(4)), None)
    );
    assert_eq!(stored_second.deliveries, [attempt(2, Some("reset")), attempt(3, None)], "applied in order");
    assert_eq!(stored_second.version, 3);
    assert_eq!(
        store.notification_counts().await.expect("counts"),
        [
            NotificationCount { channel: Channel::Webhook, status: NotificationStatus::Pending, count: 1 },
            NotificationCount { channel: Channel::Webhook, status: NotificationStatus::Sent, count: 1 },
        ]
    );

    // A job's last attempt fails for good: the notification's failure is recorded with it.
    let gave_up = DeliveryRecord {
        notification_id: first.id,
        delivery: None,
        status: NotificationStatus::Failed,
        last_error: Some("the endpoint was deleted".into()),
    };
    let last = Settlement::Fail {
        lease: lease_of(&jobs[3]),
        failure: JobFailure { error: "the endpoint was deleted".into(), retry: Retry::Never },
        side_writes: vec![SideWrite::RecordDelivery(gave_up)],
    };
    store.settle_many(vec![last], at(5)).await.expect("stored").remove(0).expect("current lease");
    let stored_first = store.get_notification(first.id).await.expect("get").expect("exists");
    assert_eq!(
        (stored_first.status, stored_first.attempts, stored_first.last_error.as_deref(), stored_first.version),
        (NotificationStatus::Failed, 1, Some("the endpoint was deleted"), 3)
    );
}

/// A settlement refused in a batch (its lease went stale: the job was rescued and claimed again) writes neither
/// its job's change nor its side writes (the payload stays, the notification is untouched), while the rest of
/// the batch is stored with theirs.
pub async fn jobs_settle_refused_for_a_stale_lease_writes_none_of_its_side_writes(store: DynStorage) {
    let kept = webhook_notification(&store).await;
    let recorded = webhook_notification(&store).await;
    let jobs = claimed(&store, "notification.send", 2, 5).await;
    // The first job's lease runs out; it is rescued and another worker claims it.
    store.heartbeat(&lease_of(&jobs[1]), at(20), LEASE).await.expect("heartbeat");
    let rescued = store.requeue_expired(at(40)).await.expect("rescue works");
    assert_eq!(rescued.iter().map(|job| job.id).collect::<Vec<_>>(), [jobs[0].id]);
    let reclaimed =
        store.claim_many(&queues(&["default"]), &worker("new"), at(41), LEASE, 1).await.expect("claim").remove(0);
    assert_eq!(reclaimed.id, jobs[0].id);

    let settlements = vec![
        Settlement::Complete {
            lease: lease_of(&jobs[0]),
            result: json!({}),
            artifact: None,
            side_writes: vec![
                SideWrite::RecordDelivery(record(kept.id, NotificationStatus::Sent, attempt(30, None))),
                SideWrite::DiscardPayload,
            ],
        },
        Settlement::Complete {
            lease: lease_of(&jobs[1]),
            result: json!({}),
            artifact: None,
            side_writes: vec![
                SideWrite::RecordDelivery(record(recorded.id, NotificationStatus::Sent, attempt(30, None))),
                SideWrite::DiscardPayload,
            ],
        },
    ];
    let mut outcomes = store.settle_many(settlements, at(42)).await.expect("the batch is stored").into_iter();
    assert_eq!(conflict(outcomes.next().expect("first")), Conflict::LeaseLost);
    assert_eq!(outcomes.next().expect("second").expect("current lease").state, JobState::Succeeded);

    assert_eq!(store.get_job(jobs[0].id).await.expect("get"), Some(reclaimed), "the stale settle changed nothing");
    assert_eq!(store.get_notification(kept.id).await.expect("get"), Some(kept), "nor its notification");
    assert_eq!(payload(&store, jobs[1].id).await, json!(null));
    let stored = store.get_notification(recorded.id).await.expect("get").expect("exists");
    assert_eq!((stored.status, stored.attempts, stored.version), (NotificationStatus::Sent, 1, 2));
}
