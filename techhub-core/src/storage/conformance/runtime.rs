//! The job runtime on the store under test: what the batched claims and settles promise (each job run once,
//! at most `workers` handlers at once, claim order, rate limits on the store's bucket, retries, cancel from
//! another instance, heartbeats, graceful shutdown) holds on every store, not only on the memory store the
//! runtime's own tests use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::{sleep, timeout};

use crate::clock::ManualClock;
use crate::jobs::{Backoff, JobContext, JobError, RateLimit, WorkerConfig, handler_fn};
use crate::model::{Job, JobFilter, JobId, JobState, NewJob, PageRequest};
use crate::storage::DynStorage;
use crate::{Actor, TechHub};

/// Runtime settings short enough for tests in real time.
fn config(workers: usize) -> WorkerConfig {
    let mut config = WorkerConfig::default().queue("default", workers);
    config.poll_interval = Duration::from_millis(50);
    config.rescue_interval = Duration::from_millis(50);
    config.backoff = Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(10), jitter: 0.0 };
    config.retention = None;
    config
}

/// Polls until `done` holds for the store's jobs (fails after 30 s).
async fn wait_until(store: &DynStorage, what: &str, done: impl Fn(&[Job]) -> bool) -> Vec<Job> {
    timeout(Duration::from_secs(30), async {
        loop {
            let jobs = all_jobs(store).await;
            if done(&jobs) {
                return jobs;
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
}

async fn all_jobs(store: &DynStorage) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut page = PageRequest::first(500);
    loop {
        let listed = store.list_jobs(&JobFilter::default(), &page).await.expect("list works");
        jobs.extend(listed.items);
        match listed.next_cursor {
            Some(cursor) => page = PageRequest { cursor: Some(cursor), ..page },
            None => return jobs,
        }
    }
}

fn count(jobs: &[Job], state: JobState) -> usize {
    jobs.iter().filter(|job| job.state == state).count()
}

/// Jobs enqueued before and while the runtime runs are each run once, with at most `workers` handlers at
/// once, and every result is recorded.
pub async fn runtime_runs_each_job_once_with_at_most_its_workers_at_once(store: DynStorage) {
    let runs: Arc<Mutex<HashMap<JobId, usize>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (seen, now, peak) = (runs.clone(), running.clone(), most.clone());
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "count",
            handler_fn(move |ctx: JobContext| {
                let (seen, now, peak) = (seen.clone(), now.clone(), peak.clone());
                async move {
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(at_once, Ordering::SeqCst);
                    *seen.lock().unwrap_or_else(PoisonError::into_inner).entry(ctx.job_id()).or_default() += 1;
                    sleep(Duration::from_micros(200)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(json!({ "n": ctx.payload()["n"] }))
                }
            }),
        )
        .build()
        .expect("hub builds");
    let before = (0..150).map(|n| NewJob::new("count", json!({ "n": n }))).collect();
    hub.jobs().enqueue_many(&Actor::System, before).await.expect("enqueued");
    let workers = hub.start_workers(config(4)).expect("runtime starts");
    for n in 150..250 {
        hub.jobs().enqueue(&Actor::System, NewJob::new("count", json!({ "n": n }))).await.expect("enqueued");
    }
    let jobs = wait_until(&store, "all 250 jobs succeeded", |jobs| count(jobs, JobState::Succeeded) == 250).await;
    workers.shutdown().await;

    let runs = runs.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(runs.len(), 250, "every job ran");
    assert!(runs.values().all(|&runs| runs == 1), "a job ran twice: {runs:?}");
    assert!(most.load(Ordering::SeqCst) <= 4, "{} handlers ran at once with 4 workers", most.load(Ordering::SeqCst));
    for job in jobs {
        assert_eq!((job.attempt, job.lease_holder.as_ref()), (1, None));
        assert_eq!(job.result, Some(json!({ "n": job.payload["n"] })), "the result of job {} is recorded", job.id);
    }
}

/// One worker starts jobs in claim order: highest priority first, then the oldest, then the lowest id.
pub async fn runtime_starts_jobs_in_claim_order(store: DynStorage) {
    let order: Arc<Mutex<Vec<i64>>> = Arc::default();
    let recorded = order.clone();
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "ordered",
            handler_fn(move |ctx: JobContext| {
                let recorded = recorded.clone();
                async move {
                    let n = ctx.payload()["n"].as_i64().unwrap_or(-1);
                    recorded.lock().unwrap_or_else(PoisonError::into_inner).push(n);
                    Ok(Value::Null)
                }
            }),
        )
        .build()
        .expect("hub builds");
    // n, priority: enqueued in n order (so oldest first within a priority).
    let specs: Vec<(i64, i32)> = (0..24).map(|n| (n, [0, 5, -3, 5, 1, 0][n as usize % 6])).collect();
    let batch =
        specs.iter().map(|&(n, priority)| NewJob::new("ordered", json!({ "n": n })).priority(priority)).collect();
    hub.jobs().enqueue_many(&Actor::System, batch).await.expect("enqueued");
    let workers = hub.start_workers(config(1)).expect("runtime starts");
    wait_until(&store, "all 24 jobs succeeded", |jobs| count(jobs, JobState::Succeeded) == 24).await;
    workers.shutdown().await;

    let mut expected = specs;
    expected.sort_by_key(|&(n, priority)| (-priority, n));
    let expected: Vec<i64> = expected.into_iter().map(|(n, _)| n).collect();
    assert_eq!(*order.lock().unwrap_or_else(PoisonError::into_inner), expected);
}

/// A rate-limited queue starts its burst, then only as the store's bucket refills on the hub's clock, however
/// many workers are free.
pub async fn runtime_rate_limit_holds_on_the_hub_clock(store: DynStorage) {
    let clock = ManualClock::at_epoch();
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .clock(clock.clone())
        .handler("limited", handler_fn(|_ctx| async { Ok(Value::Null) }))
        .build()
        .expect("hub builds");
    let specs = (0..8).map(|n| NewJob::new("limited", json!({ "n": n }))).collect();
    hub.jobs().enqueue_many(&Actor::System, specs).await.expect("enqueued");
    let mut limited = config(4);
    limited.queues =
        WorkerConfig::default().rate_limited_queue("default", 4, RateLimit::per_second(1.0).burst(3)).queues;
    let workers = hub.start_workers(limited).expect("runtime starts");

    wait_until(&store, "the burst of 3 ran", |jobs| count(jobs, JobState::Succeeded) == 3).await;
    // The clock stands still: nothing more may start, whatever the wait.
    sleep(Duration::from_millis(300)).await;
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.iter().filter(|job| job.attempt > 0).count(), 3, "only the burst started while time stood still");

    clock.advance(Duration::from_secs(2));
    wait_until(&store, "two more ran after 2 s at 1/s", |jobs| count(jobs, JobState::Succeeded) == 5).await;
    sleep(Duration::from_millis(300)).await;
    let jobs = all_jobs(&store).await;
    assert_eq!(jobs.iter().filter(|job| job.attempt > 0).count(), 5, "2 s at 1/s allow two starts");
    workers.shutdown().await;
}

/// Failures are recorded through the batch like successes: a retried job runs again after its backoff and
/// keeps its last result, a permanent failure fails at once with its error, a missing handler fails for good.
pub async fn runtime_records_retries_and_failures(store: DynStorage) {
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "flaky",
            handler_fn(|ctx: JobContext| async move {
                if ctx.attempt() < 2 { Err(JobError::retry("not yet")) } else { Ok(json!("recovered")) }
            }),
        )
        .handler("broken", handler_fn(|_ctx| async { Err(JobError::permanent("bad input")) }))
        .build()
        .expect("hub builds");
    let flaky = hub.jobs().enqueue(&Actor::System, NewJob::new("flaky", json!({}))).await.expect("enqueued");
    let broken = hub.jobs().enqueue(&Actor::System, NewJob::new("broken", json!({}))).await.expect("enqueued");
    // Enqueued by an instance that has a handler this one lacks.
    let orphan = Job::new(NewJob::new("unknown.kind", json!({})), hub.now()).expect("a valid job");
    let orphan = store.enqueue(orphan).await.expect("enqueued");
    let workers = hub.start_workers(config(2)).expect("runtime starts");
    let finished = |job: &Job| job.state.is_finished();
    let jobs = wait_until(&store, "the three jobs finished", |jobs| jobs.iter().all(finished)).await;
    workers.shutdown().await;

    let by_id: HashMap<JobId, &Job> = jobs.iter().map(|job| (job.id, job)).collect();
    let flaky = by_id[&flaky.id];
    assert_eq!((flaky.state, flaky.attempt, flaky.result.clone()), (JobState::Succeeded, 2, Some(json!("recovered"))));
    let broken = by_id[&broken.id];
    assert_eq!((broken.state, broken.attempt), (JobState::Failed, 1));
    assert!(broken.last_error.as_deref().is_some_and(|error| error.contains("bad input")), "{:?}", broken.last_error);
    let orphan = by_id[&orphan.id];
    assert_eq!((orphan.state, orphan.attempt), (JobState::Failed, 1));
}

/// A cancel sent through another instance (a hub without workers on the same store) reaches the running
/// handler at its next heartbeat; the attempt ends cancelled.
pub async fn runtime_cancel_from_another_instance_stops_the_handler(store: DynStorage) {
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "patient",
            handler_fn(|ctx: JobContext| async move {
                ctx.cancelled().await;
                Err(JobError::retry("stopped"))
            }),
        )
        .build()
        .expect("hub builds");
    let other = TechHub::builder().shared_storage(store.clone()).build().expect("hub builds");
    let job = hub.jobs().enqueue(&Actor::System, NewJob::new("patient", json!({}))).await.expect("enqueued");
    let mut quick = config(1);
    quick.lease = Duration::from_secs(5);
    quick.heartbeat_interval = Duration::from_millis(50);
    let workers = hub.start_workers(quick).expect("runtime starts");
    wait_until(&store, "the job runs", |jobs| count(jobs, JobState::Running) == 1).await;
    other.jobs().cancel(&Actor::System, job.id).await.expect("cancel accepted");
    let jobs = wait_until(&store, "the job is cancelled", |jobs| count(jobs, JobState::Cancelled) == 1).await;
    workers.shutdown().await;
    assert_eq!((jobs[0].id, jobs[0].attempt), (job.id, 1));
}

/// Heartbeats keep a job running longer than its lease from being rescued: it runs once.
pub async fn runtime_heartbeats_keep_a_long_jobs_lease(store: DynStorage) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "long",
            handler_fn(move |_ctx| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_millis(900)).await;
                    Ok(Value::Null)
                }
            }),
        )
        .build()
        .expect("hub builds");
    hub.jobs().enqueue(&Actor::System, NewJob::new("long", json!({}))).await.expect("enqueued");
    let mut short = config(2);
    short.lease = Duration::from_millis(300);
    short.heartbeat_interval = Duration::from_millis(50);
    let workers = hub.start_workers(short).expect("runtime starts");
    let jobs = wait_until(&store, "the long job succeeded", |jobs| count(jobs, JobState::Succeeded) == 1).await;
    workers.shutdown().await;
    assert_eq!((jobs[0].attempt, runs.load(Ordering::SeqCst)), (1, 1), "rescued while its heartbeats ran");
}

/// A graceful shutdown lets quick jobs finish and gives the others back queued, their attempt not charged,
/// with nothing left running: every job is either succeeded once or queued untouched.
pub async fn runtime_shutdown_records_finished_jobs_and_releases_the_rest(store: DynStorage) {
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "brief",
            handler_fn(|_ctx| async {
                sleep(Duration::from_millis(1)).await;
                Ok(Value::Null)
            }),
        )
        .handler(
            "stubborn",
            handler_fn(|ctx: JobContext| async move {
                ctx.cancelled().await;
                Err(JobError::retry("interrupted"))
            }),
        )
        .build()
        .expect("hub builds");
    let stubborn =
        hub.jobs().enqueue(&Actor::System, NewJob::new("stubborn", json!({})).priority(10)).await.expect("enqueued");
    let specs = (0..200).map(|n| NewJob::new("brief", json!({ "n": n }))).collect();
    hub.jobs().enqueue_many(&Actor::System, specs).await.expect("enqueued");
    let mut graceful = config(4);
    graceful.shutdown_grace = Duration::from_millis(100);
    let workers = hub.start_workers(graceful).expect("runtime starts");
    wait_until(&store, "some jobs ran", |jobs| count(jobs, JobState::Succeeded) >= 20).await;
    workers.shutdown().await;

    for job in all_jobs(&store).await {
        match job.state {
            JobState::Succeeded => assert_eq!(job.attempt, 1),
            JobState::Queued => {
                assert_eq!((job.attempt, job.lease_holder.as_ref()), (0, None), "job {} was charged", job.id);
            }
            other => panic!("job {} was left {other:?} by a graceful shutdown", job.id),
        }
    }
    let stubborn = store.get_job(stubborn.id).await.expect("get works").expect("exists");
    assert_eq!(stubborn.state, JobState::Queued, "the job still running at the end of the grace is given back");
}
