//! A claim still waiting for the database when the runtime stops: the jobs it returns are given back at once,
//! not started after the stop (where one worker would run them one after another, outliving their leases).
//! The wait is real: another connection holds SQLite's write lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use techhub_core::jobs::{WorkerConfig, handler_fn};
use techhub_core::model::{JobFilter, JobState, NewJob, PageRequest};
use techhub_core::{Actor, TechHub};
use techhub_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_claimed_as_the_runtime_stops_are_given_back_unstarted() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("hub.db");
    let store = Arc::new(SqliteStore::open(&path).expect("the store opens"));
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let hub = TechHub::builder()
        .shared_storage(store)
        .handler(
            "test.count",
            handler_fn(move |_ctx| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok(Value::Null) }
            }),
        )
        .build()
        .expect("a hub");
    for n in 0..4 {
        hub.jobs().enqueue(&Actor::System, NewJob::new("test.count", json!({ "n": n }))).await.expect("enqueue");
    }

    // Another connection takes the write lock: the runtime's first claim waits for it.
    let blocker = rusqlite::Connection::open(&path).expect("a second connection");
    blocker.execute_batch("BEGIN IMMEDIATE").expect("the write lock");
    let workers = hub.start_workers(WorkerConfig::default().queue("default", 4)).expect("the runtime starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shutdown = tokio::spawn(workers.shutdown());
    // Let the waiting workers see the stop, then let the claim through.
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.execute_batch("ROLLBACK").expect("the lock released");
    shutdown.await.expect("the shutdown ends");

    assert_eq!(started.load(Ordering::SeqCst), 0, "no handler started after the stop");
    let jobs = hub.storage().list_jobs(&JobFilter::default(), &PageRequest::default()).await.expect("the jobs");
    assert_eq!(jobs.items.len(), 4);
    for job in &jobs.items {
        assert_eq!((job.state, job.attempt), (JobState::Queued, 0), "job {} is back in the queue, uncharged", job.id);
    }
}
