//! Rules of the queue rate limits kept by the store: [`JobStore::take_queue_starts`] and
//! [`JobStore::return_queue_starts`](crate::storage::JobStore::return_queue_starts).
//!
//! [`JobStore::take_queue_starts`]: crate::storage::JobStore::take_queue_starts

use std::time::Duration;

use tokio::task::JoinSet;

use super::fixtures::at;
use crate::model::{QueueStarts, RateLimit};
use crate::storage::DynStorage;

/// A queue's bucket starts full (its burst), refills at its rate up to the burst, answers how long until the
/// next token when it runs short, takes back unused starts, and is kept per queue.
pub async fn jobs_queue_rate_limit_grants_the_burst_then_the_rate(store: DynStorage) {
    let limit = RateLimit::per_second(1.0).burst(3);
    let take = |want: u32, second: i64| {
        let store = store.clone();
        async move { store.take_queue_starts("mail", limit, at(second), want).await.expect("a take works") }
    };
    assert_eq!(take(0, 0).await, QueueStarts { granted: 0, next_in: None });
    assert_eq!(take(2, 0).await, QueueStarts { granted: 2, next_in: None });
    let short = take(2, 0).await;
    assert_eq!(short.granted, 1);
    let wait = short.next_in.expect("the bucket ran short");
    assert!((Duration::from_millis(999)..=Duration::from_millis(1_001)).contains(&wait), "{wait:?}");
    assert_eq!(take(1, 0).await.granted, 0);
    assert_eq!(take(1, 1).await, QueueStarts { granted: 1, next_in: None });
    store.return_queue_starts("mail", limit, at(1), 1).await.expect("giving back works");
    assert_eq!(take(1, 1).await.granted, 1);
    assert_eq!(take(1, 1).await.granted, 0);
    // Another queue has a bucket of its own.
    let other = store.take_queue_starts("reports", limit, at(1), 5).await.expect("a take works");
    assert_eq!(other.granted, 3);
    // A long pause refills up to the burst, no further; giving back never overfills it.
    store.return_queue_starts("mail", limit, at(100), 5).await.expect("giving back works");
    assert_eq!(take(10, 100).await.granted, 3);
}

/// Concurrent takers share one bucket: together they are granted exactly what it holds, never a token twice.
pub async fn jobs_queue_rate_limit_concurrent_takers_share_one_bucket(store: DynStorage) {
    let limit = RateLimit::per_second(0.001).burst(20);
    let mut takers = JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        takers.spawn(async move {
            let mut granted = 0;
            for _ in 0..4 {
                granted += store.take_queue_starts("shared", limit, at(0), 1).await.expect("a take works").granted;
            }
            granted
        });
    }
    let mut total = 0;
    while let Some(granted) = takers.join_next().await {
        total += granted.expect("a taker finished");
    }
    assert_eq!(total, 20, "16 takers asking 64 starts of a bucket of 20");
}
