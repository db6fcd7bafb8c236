//! The runtime's metrics, read through a debugging recorder installed for this test binary alone.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use serde_json::{Value, json};
use techhub_core::events::EventKind;
use techhub_core::jobs::telemetry::names;
use techhub_core::jobs::{JobError, WorkerConfig, handler_fn};
use techhub_core::model::NewJob;
use techhub_core::{Actor, TechHub};
use techhub_store_memory::MemoryStore;
use tokio::time::timeout;

type Snapshot = Vec<(CompositeKey, Option<metrics::Unit>, Option<metrics::SharedString>, DebugValue)>;

/// The sum of counter `name` over the series carrying all of `labels`.
fn counter(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| key.kind() == MetricKind::Counter && key.key().name() == name)
        .filter(|(key, ..)| {
            labels.iter().all(|(label, value)| key.key().labels().any(|l| l.key() == *label && l.value() == *value))
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => *count,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_counted_by_queue_and_outcome_and_timed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter: Snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");

    let hub = TechHub::builder()
        .storage(MemoryStore::new())
        .handler("ok", handler_fn(|_ctx| async { Ok(Value::Null) }))
        .handler("bad", handler_fn(|_ctx| async { Err(JobError::permanent("no")) }))
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let mut config = WorkerConfig::default().queue("default", 2);
    config.poll_interval = Duration::from_millis(20);
    let workers = hub.start_workers(config).expect("runtime");
    let specs = vec![NewJob::new("ok", json!({})), NewJob::new("ok", json!({})), NewJob::new("bad", json!({}))];
    hub.jobs().enqueue_many(&Actor::System, specs).await.expect("enqueued");
    let mut finished = 0;
    timeout(Duration::from_secs(10), async {
        while finished < 3 {
            let event = events.recv().await.expect("bus open");
            if matches!(event.kind, EventKind::JobSucceeded | EventKind::JobFailed) {
                finished += 1;
            }
        }
    })
    .await
    .expect("all finished");
    workers.run_maintenance().await.expect("maintenance refreshes the gauges");
    workers.shutdown().await;

    let snapshot: Snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(counter(&snapshot, names::ENQUEUED, &[("queue", "default")]), 3);
    assert_eq!(counter(&snapshot, names::ATTEMPTS, &[("queue", "default"), ("outcome", "succeeded")]), 2);
    assert_eq!(counter(&snapshot, names::ATTEMPTS, &[("queue", "default"), ("outcome", "failed")]), 1);
    let timed = snapshot.iter().any(|(key, .., value)| {
        key.key().name() == names::RUN_SECONDS && matches!(value, DebugValue::Histogram(samples) if samples.len() == 3)
    });
    assert!(timed, "every attempt's run time is recorded");
    let depth =
        snapshot.iter().find(|(key, ..)| key.kind() == MetricKind::Gauge && key.key().name() == names::QUEUE_DEPTH);
    assert!(matches!(depth, Some((.., DebugValue::Gauge(value))) if value.into_inner() == 0.0), "{depth:?}");
}
