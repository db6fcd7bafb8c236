//! The memory store's job cycle: enqueue -> claim -> complete, one thread.
//!
//! `cargo bench -p techhub-benches --bench memory_store` prints the time per cycle and cycles per second
//! (criterion's "thrpt" line). Two shapes: an empty queue, and a queue whose index already holds 100,000
//! delayed jobs (claims must stay O(log n), never a scan).
//!
//! Finished jobs are pruned every 4,096 cycles, as retention does in a running system, and that cost is part
//! of the measurement; without it the store would grow by every job ever run and the figure would measure
//! page faults.

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use chrono::TimeDelta;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use techhub_core::clock::{Clock, ManualClock};
use techhub_core::model::{Job, JobState, NewJob, WorkerId};
use techhub_core::storage::DynStorage;
use techhub_store_memory::MemoryStore;

const LEASE: Duration = Duration::from_secs(30);

const PRUNE_EVERY: u64 = 4_096;

async fn cycle(store: &DynStorage, queues: &[String], worker: &WorkerId, clock: &ManualClock, count: &Cell<u64>) {
    let now = clock.now();
    count.set(count.get() + 1);
    if count.get().is_multiple_of(PRUNE_EVERY) {
        store.prune_jobs(&[JobState::Succeeded], now + TimeDelta::seconds(1)).await.expect("prune");
    }
    let job = Job::new(NewJob::new("bench.noop", json!({ "n": 1 })), now).expect("valid job");
    store.enqueue(job).await.expect("enqueue");
    let claimed = store.claim(queues, worker, now, LEASE).await.expect("claim").expect("a due job");
    let lease = claimed.lease().expect("running");
    black_box(store.complete(&lease, json!(null), None, now).await.expect("complete"));
}

fn job_cycle(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let queues = vec!["default".to_owned()];
    let worker = WorkerId::new("bench");
    let clock = ManualClock::at_epoch();
    let count = Cell::new(0);

    let mut group = c.benchmark_group("memory_job_cycle");
    group.throughput(Throughput::Elements(1));

    let empty: DynStorage = std::sync::Arc::new(MemoryStore::new());
    group.bench_function("empty_queue", |b| {
        b.to_async(&runtime).iter(|| cycle(&empty, &queues, &worker, &clock, &count))
    });

    let deep: DynStorage = std::sync::Arc::new(MemoryStore::new());
    let later = clock.now() + TimeDelta::days(365);
    let backlog: Vec<Job> = (0..100_000)
        .map(|n| Job::new(NewJob::new("bench.later", json!({ "n": n })).run_at(later), clock.now()).expect("valid"))
        .collect();
    runtime.block_on(deep.enqueue_many(backlog)).expect("backlog enqueued");
    group.bench_function("with_100k_delayed", |b| {
        b.to_async(&runtime).iter(|| cycle(&deep, &queues, &worker, &clock, &count))
    });
    group.finish();
}

criterion_group!(benches, job_cycle);
criterion_main!(benches);
