//! Rules of [`JobStore::enqueue_cron_tick`](crate::storage::JobStore::enqueue_cron_tick).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::task::JoinSet;

use super::fixtures::{all_jobs, at, claim, conflict, spec};
use crate::model::{Job, NewJob};
use crate::storage::{Conflict, DynStorage};

/// The job a schedule enqueues at `tick`, keyed as the runtime keys it.
fn tick_job(schedule: &str, tick: DateTime<Utc>) -> Job {
    spec(
        NewJob::new("cron.tick", json!({ "schedule": schedule }))
            .run_at(tick)
            .unique_key(format!("cron:{schedule}:{}", tick.timestamp())),
    )
}

async fn fire(store: &DynStorage, schedule: &str, tick: DateTime<Utc>) -> Option<Job> {
    store.enqueue_cron_tick(schedule, tick, tick_job(schedule, tick)).await.expect("enqueue_cron_tick works")
}

/// A tick fires once: the same tick fired again stores nothing, also after the first tick's job finished
/// (when its unique key no longer holds); a later tick fires.
pub async fn cron_tick_fires_once_even_after_its_job_finished(store: DynStorage) {
    let first = fire(&store, "nightly", at(60)).await.expect("a schedule that never fired takes any tick");
    assert_eq!(store.get_job(first.id).await.expect("get works"), Some(first.clone()));
    assert_eq!(fire(&store, "nightly", at(60)).await, None, "a live tick fired again");

    let lease = claim(&store, "default", "w", at(60)).await.lease().expect("running");
    assert_eq!(lease.job_id, first.id);
    store.complete(&lease, json!({}), None, at(61)).await.expect("complete works");
    assert_eq!(fire(&store, "nightly", at(60)).await, None, "a finished tick fired again");
    assert_eq!(all_jobs(&store).await.len(), 1);

    let next = fire(&store, "nightly", at(120)).await.expect("a later tick fires");
    assert_ne!(next.id, first.id);
    assert_eq!(all_jobs(&store).await.len(), 2);
}

/// A tick earlier than the schedule's last fired tick is refused and stores nothing.
pub async fn cron_tick_older_than_the_last_fired_is_refused(store: DynStorage) {
    fire(&store, "hourly", at(7200)).await.expect("the first tick fires");
    assert_eq!(fire(&store, "hourly", at(3600)).await, None);
    assert_eq!(all_jobs(&store).await.len(), 1);
    // The refused tick did not move the record back: the tick after the newer one still fires once.
    fire(&store, "hourly", at(10_800)).await.expect("a later tick fires");
    assert_eq!(fire(&store, "hourly", at(10_800)).await, None);
    assert_eq!(all_jobs(&store).await.len(), 2);
}

/// Each schedule keeps its own last fired tick.
pub async fn cron_ticks_of_schedules_are_independent(store: DynStorage) {
    fire(&store, "a", at(600)).await.expect("a fires");
    fire(&store, "b", at(60)).await.expect("b fires at an earlier tick than a's");
    fire(&store, "b", at(600)).await.expect("b fires at a's tick");
    assert_eq!(fire(&store, "a", at(600)).await, None);
    assert_eq!(all_jobs(&store).await.len(), 3);
}

/// Of 16 concurrent calls for one schedule and tick (each with its own job id) exactly one stores a job.
pub async fn cron_tick_concurrent_callers_store_one_job(store: DynStorage) {
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.spawn(async move { fire(&store, "minutely", at(60)).await.map(|job| job.id) });
    }
    let mut fired = HashSet::new();
    let mut refused = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("task ran") {
            Some(id) => assert!(fired.insert(id)),
            None => refused += 1,
        }
    }
    assert_eq!((fired.len(), refused), (1, 15));
    assert_eq!(all_jobs(&store).await.len(), 1);
}

/// A tick whose job cannot be stored (its id exists) fails and is not recorded: the tick fires afterwards.
pub async fn cron_tick_is_not_recorded_when_its_job_fails(store: DynStorage) {
    let taken = store.enqueue(spec(NewJob::new("plain", json!({})))).await.expect("enqueue works");
    let clash = Job { id: taken.id, ..tick_job("daily", at(86_400)) };
    assert_eq!(conflict(store.enqueue_cron_tick("daily", at(86_400), clash).await), Conflict::Duplicate);
    assert_eq!(all_jobs(&store).await.len(), 1);
    fire(&store, "daily", at(86_400)).await.expect("the tick was not recorded, so it fires");
    assert_eq!(all_jobs(&store).await.len(), 2);
}
