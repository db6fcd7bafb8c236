//! The job engine end to end over the memory store: retries, crashes, cancel, timeout, panic, shutdown, cron,
//! rate limits, progress coalescing and the user-visible policy.
//!
//! Job times (run_at, leases) come from a `ManualClock` the tests move by hand; the runtime's timers run on
//! tokio's paused clock, which jumps ahead whenever every task waits, so no test sleeps in real time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use techhub_core::clock::{Clock, ManualClock};
use techhub_core::events::{Event, EventKind};
use techhub_core::jobs::{
    Backoff, HandlerOptions, JobContext, JobError, JobHandler, RateLimit, Retention, Schedule, WorkerConfig, handler_fn,
};
use techhub_core::model::{
    JobFilter, JobId, JobState, NewJob, PageRequest, Role, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId,
};
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, ErrorKind, TechHub, TechHubBuilder};
use techhub_store_memory::MemoryStore;
use tokio::sync::broadcast::Receiver;
use tokio::time::{Instant, sleep, timeout};

const SYSTEM: Actor = Actor::System;

fn builder(store: &DynStorage, clock: &ManualClock) -> TechHubBuilder {
    TechHub::builder().shared_storage(store.clone()).clock(clock.clone())
}

fn config() -> WorkerConfig {
    let mut config = WorkerConfig::default().queue("default", 2);
    config.backoff = Backoff { base: Duration::from_secs(10), cap: Duration::from_secs(3600), jitter: 0.0 };
    config.retention = None;
    config
}

fn ok_handler() -> impl JobHandler {
    handler_fn(|_ctx| async { Ok(json!({ "ok": true })) })
}

/// The next event of `kind` about `job`, skipping others (fails after 10 virtual minutes).
async fn next_event(events: &mut Receiver<Event>, kind: EventKind, job: JobId) -> Event {
    timeout(Duration::from_secs(600), async {
        loop {
            let event = events.recv().await.expect("the bus is open");
            if event.kind == kind && event.subject == *job.as_uuid() {
                return event;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event for {job}"))
}

/// Polls the store until job `id` is in `state` (fails after 10 virtual minutes).
async fn wait_for_state(store: &DynStorage, id: JobId, state: JobState) -> techhub_core::model::Job {
    timeout(Duration::from_secs(600), async {
        loop {
            let job = store.get_job(id).await.expect("get works").expect("job exists");
            if job.state == state {
                return job;
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("job {id} never reached {state}"))
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_backoff_schedule_then_fail_with_the_error_kept() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let t0 = clock.now();
    let hub = builder(&store, &clock)
        .handler(
            "flaky",
            handler_fn(|ctx: JobContext| async move { Err(JobError::retry(format!("boom {}", ctx.attempt()))) }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = hub.start_workers(config()).expect("runtime starts");
    let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("flaky", json!({})).max_attempts(3)).await.expect("enqueued");

    next_event(&mut events, EventKind::JobRetrying, job.id).await;
    let after_first = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!((after_first.state, after_first.attempt), (JobState::Queued, 1));
    assert_eq!(after_first.run_at, t0 + chrono::TimeDelta::seconds(10), "first backoff is the base");

    // Not due yet: waking the workers changes nothing.
    clock.advance(Duration::from_secs(9));
    workers.wake();
    sleep(Duration::from_secs(2)).await;
    assert_eq!(store.get_job(job.id).await.expect("get").expect("exists").attempt, 1);

    clock.advance(Duration::from_secs(1));
    workers.wake();
    next_event(&mut events, EventKind::JobRetrying, job.id).await;
    let after_second = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(after_second.run_at, clock.now() + chrono::TimeDelta::seconds(20), "the delay doubles");

    clock.advance(Duration::from_secs(20));
    workers.wake();
    let failed = next_event(&mut events, EventKind::JobFailed, job.id).await;
    assert_eq!(failed.data["last_error"], "boom 3");
    let stored = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!((stored.state, stored.attempt, stored.last_error.as_deref()), (JobState::Failed, 3, Some("boom 3")));
    workers.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_workers_job_runs_again_elsewhere_after_its_lease() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let first_attempt_started = Arc::new(AtomicBool::new(false));
    let started = first_attempt_started.clone();
    let hub = builder(&store, &clock)
        .handler(
            "import",
            handler_fn(move |ctx: JobContext| {
                let started = started.clone();
                async move {
                    if ctx.attempt() == 1 {
                        started.store(true, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    Ok(json!({ "attempt": ctx.attempt() }))
                }
            }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let crashing = hub.start_workers(config()).expect("runtime starts");
    let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("import", json!({}))).await.expect("enqueued");
    next_event(&mut events, EventKind::JobStarted, job.id).await;
    assert!(first_attempt_started.load(Ordering::SeqCst));

    drop(crashing); // a crash: no shutdown, the lease stays taken
    assert_eq!(store.get_job(job.id).await.expect("get").expect("exists").state, JobState::Running);

    let survivor = hub.start_workers(config()).expect("runtime starts");
    survivor.run_maintenance().await.expect("maintenance runs");
    assert_eq!(
        store.get_job(job.id).await.expect("get").expect("exists").state,
        JobState::Running,
        "lease still valid"
    );

    clock.advance(Duration::from_secs(31));
    survivor.run_maintenance().await.expect("maintenance runs");
    next_event(&mut events, EventKind::JobRescued, job.id).await;
    let done = wait_for_state(&store, job.id, JobState::Succeeded).await;
    assert_eq!((done.attempt, done.result), (2, Some(json!({ "attempt": 2 }))));
    survivor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_job_stops_its_handler() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let saw_cancel = Arc::new(AtomicU32::new(0));
    let seen = saw_cancel.clone();
    let hub = builder(&store, &clock)
        .handler(
            "long",
            handler_fn(move |ctx: JobContext| {
                let seen = seen.clone();
                async move {
                    ctx.cancelled().await;
                    seen.fetch_add(1, Ordering::SeqCst);
                    Err(JobError::retry("stopped on request"))
                }
            }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = hub.start_workers(config()).expect("runtime starts");

    // Through the service: the handler in this process is told at once.
    let local = hub.jobs().enqueue(&SYSTEM, NewJob::new("long", json!({}))).await.expect("enqueued");
    next_event(&mut events, EventKind::JobStarted, local.id).await;
    let requested = hub.jobs().cancel(&SYSTEM, local.id).await.expect("cancel works");
    assert!(requested.cancel_requested);
    next_event(&mut events, EventKind::JobCancelled, local.id).await;
    assert_eq!(wait_for_state(&store, local.id, JobState::Cancelled).await.attempt, 1);

    // Straight in storage, as another process would: the next heartbeat carries it.
    let remote = hub.jobs().enqueue(&SYSTEM, NewJob::new("long", json!({}))).await.expect("enqueued");
    next_event(&mut events, EventKind::JobStarted, remote.id).await;
    store.cancel(remote.id, clock.now()).await.expect("cancel in storage");
    next_event(&mut events, EventKind::JobCancelled, remote.id).await;
    assert_eq!(saw_cancel.load(Ordering::SeqCst), 2);

    let finished = hub.jobs().cancel(&SYSTEM, remote.id).await.expect_err("already finished");
    assert_eq!(finished.kind(), ErrorKind::Conflict);
    workers.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_attempt_over_its_timeout_is_stopped_and_failed() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock)
        .handler_with(
            "stuck",
            HandlerOptions::default().timeout(Duration::from_secs(5)).max_attempts(1),
            // Ignores cancellation: the runtime must abort it after the stop grace.
            handler_fn(|_ctx| async {
                sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = hub.start_workers(config()).expect("runtime starts");
    let started = Instant::now();
    let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("stuck", json!({}))).await.expect("enqueued");
    next_event(&mut events, EventKind::JobFailed, job.id).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(60), "{waited:?}");
    let failed = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(failed.last_error.as_deref(), Some("timed out after 5 s"));
    workers.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_the_attempt_not_the_worker() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock)
        .handler(
            "fragile",
            handler_fn(|ctx: JobContext| async move {
                if ctx.attempt() == 1 {
                    panic!("boom");
                }
                Ok(json!("recovered"))
            }),
        )
        .handler("ok", ok_handler())
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    // One worker: if the panic killed it, nothing below would run.
    let mut one_worker = config();
    one_worker.queues = WorkerConfig::default().queue("default", 1).queues;
    let workers = hub.start_workers(one_worker).expect("runtime starts");
    let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("fragile", json!({}))).await.expect("enqueued");
    let retrying = next_event(&mut events, EventKind::JobRetrying, job.id).await;
    assert_eq!(retrying.data["last_error"], "the handler panicked: boom");

    let other = hub.jobs().enqueue(&SYSTEM, NewJob::new("ok", json!({}))).await.expect("enqueued");
    next_event(&mut events, EventKind::JobSucceeded, other.id).await;
    clock.advance(Duration::from_secs(10));
    workers.wake();
    let done = wait_for_state(&store, job.id, JobState::Succeeded).await;
    assert_eq!((done.attempt, done.result), (2, Some(json!("recovered"))));
    workers.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_finishes_quick_jobs_and_releases_the_rest_without_charging_an_attempt() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock)
        .handler(
            "quick",
            handler_fn(|_ctx| async {
                sleep(Duration::from_secs(1)).await;
                Ok(json!("done"))
            }),
        )
        .handler(
            "slow",
            handler_fn(|ctx: JobContext| async move {
                ctx.cancelled().await;
                Err(JobError::retry("interrupted"))
            }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let mut with_grace = config();
    with_grace.shutdown_grace = Duration::from_secs(5);
    let workers = hub.start_workers(with_grace).expect("runtime starts");
    let quick = hub.jobs().enqueue(&SYSTEM, NewJob::new("quick", json!({}))).await.expect("enqueued");
    let slow = hub.jobs().enqueue(&SYSTEM, NewJob::new("slow", json!({})).max_attempts(1)).await.expect("enqueued");
    next_event(&mut events, EventKind::JobStarted, slow.id).await;

    let started = Instant::now();
    workers.shutdown().await;
    assert!(started.elapsed() >= Duration::from_secs(5), "the slow job had its grace period");
    assert_eq!(store.get_job(quick.id).await.expect("get").expect("exists").state, JobState::Succeeded);
    let released = store.get_job(slow.id).await.expect("get").expect("exists");
    assert_eq!((released.state, released.attempt, released.lease_holder), (JobState::Queued, 0, None));

    // A fresh runtime runs it with its one attempt intact.
    let restarted = hub.start_workers(config()).expect("runtime starts");
    next_event(&mut events, EventKind::JobStarted, slow.id).await;
    assert_eq!(store.get_job(slow.id).await.expect("get").expect("exists").attempt, 1);
    restarted.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cron_fires_each_tick_once_with_two_runtimes_on_one_store() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let make_hub = || {
        let runs = runs.clone();
        builder(&store, &clock)
            .handler(
                "report.nightly",
                handler_fn(move |ctx: JobContext| {
                    let runs = runs.clone();
                    async move {
                        *runs.lock().expect("lock").entry(ctx.idempotency_key()).or_default() += 1;
                        Ok(Value::Null)
                    }
                }),
            )
            .build()
            .expect("hub")
    };
    let (first, second) = (make_hub(), make_hub());
    let schedule =
        || Schedule::new("nightly", "*/10 * * * * *", NewJob::new("report.nightly", json!({}))).expect("valid");
    let runtime_a = first.start_workers(config().schedule(schedule())).expect("runtime starts");
    let runtime_b = second.start_workers(config().schedule(schedule())).expect("runtime starts");

    for tick in 1..=3 {
        runtime_a.run_maintenance().await.expect("maintenance");
        runtime_b.run_maintenance().await.expect("maintenance");
        runtime_a.run_maintenance().await.expect("maintenance");
        let queued_only = JobFilter { state: Some(JobState::Queued), ..Default::default() };
        let queued = store.list_jobs(&queued_only, &PageRequest::first(50)).await.expect("list");
        assert_eq!(queued.items.len(), 1, "tick {tick} enqueued once");

        clock.advance(Duration::from_secs(10));
        runtime_a.wake();
        runtime_b.wake();
        timeout(Duration::from_secs(60), async {
            while runs.lock().expect("lock").len() < tick {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the tick ran");
        sleep(Duration::from_secs(1)).await;
    }
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 3);
    assert!(runs.values().all(|&count| count == 1), "{runs:?}");
    assert!(runs.keys().all(|key| key.starts_with("cron:nightly:")));
    assert!(Schedule::new("bad", "not a cron line", NewJob::new("x", json!({}))).is_err());
    runtime_a.shutdown().await;
    runtime_b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_queue_starts_jobs_no_faster_than_its_limit() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let recorded = starts.clone();
    let hub = builder(&store, &clock)
        .handler_with(
            "email.bulk",
            HandlerOptions::default().queue("email"),
            handler_fn(move |_ctx| {
                let recorded = recorded.clone();
                async move {
                    recorded.lock().expect("lock").push(Instant::now());
                    Ok(Value::Null)
                }
            }),
        )
        .build()
        .expect("hub");
    // The limit is the store's, on the hub's clock: it moves with tokio's (paused) clock here.
    let ticking = clock.clone();
    let ticker = tokio::spawn(async move {
        loop {
            sleep(Duration::from_millis(1)).await;
            ticking.advance(Duration::from_millis(1));
        }
    });
    let mut limited = config();
    limited.queues = WorkerConfig::default().rate_limited_queue("email", 4, RateLimit::per_second(5.0)).queues;
    let workers = hub.start_workers(limited).expect("runtime starts");
    let specs = (0..10).map(|n| NewJob::new("email.bulk", json!({ "n": n }))).collect();
    hub.jobs().enqueue_many(&SYSTEM, specs).await.expect("enqueued");
    timeout(Duration::from_secs(60), async {
        while starts.lock().expect("lock").len() < 10 {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all ran");
    let starts = starts.lock().expect("lock").clone();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(199), "two starts {gap:?} apart under a 5/s limit");
    }
    workers.shutdown().await;
    ticker.abort();
}

#[tokio::test(start_paused = true)]
async fn progress_is_coalesced_into_a_bounded_number_of_writes() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock)
        .handler(
            "chatty",
            handler_fn(|ctx: JobContext| async move {
                // 10,000 reports over two (virtual) seconds.
                for n in 0..10_000u32 {
                    ctx.progress((n / 100) as u8, format!("row {n}"));
                    if n % 50 == 49 {
                        sleep(Duration::from_millis(10)).await;
                    }
                }
                Ok(Value::Null)
            }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = hub.start_workers(config()).expect("runtime starts");
    let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("chatty", json!({}))).await.expect("enqueued");
    let mut progress_events = Vec::new();
    loop {
        let event = events.recv().await.expect("bus open");
        if event.subject != *job.id.as_uuid() {
            continue;
        }
        match event.kind {
            EventKind::JobProgress => progress_events.push(event),
            EventKind::JobSucceeded => break,
            _ => {}
        }
    }
    // 2 s at one write per 250 ms: about 8, never thousands.
    assert!((4..=10).contains(&progress_events.len()), "{} progress writes", progress_events.len());
    let last = progress_events.last().expect("some progress");
    assert!(last.data["percent"].as_u64().expect("percent") >= 90, "{:?}", last.data);
    workers.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_worker_wakes_at_once_on_a_local_enqueue() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock).handler("ok", ok_handler()).build().expect("hub");
    let mut events = hub.subscribe();
    let mut slow_poll = config();
    slow_poll.poll_interval = Duration::from_secs(3600);
    let workers = hub.start_workers(slow_poll).expect("runtime starts");
    sleep(Duration::from_secs(5)).await; // the workers are idle, waiting
    let started = Instant::now();
    let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("ok", json!({}))).await.expect("enqueued");
    next_event(&mut events, EventKind::JobSucceeded, job.id).await;
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?} for a poll", started.elapsed());
    workers.shutdown().await;
}

#[tokio::test]
async fn users_see_and_cancel_only_their_own_jobs() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = builder(&store, &ManualClock::at_epoch()).handler("export", ok_handler()).build().expect("hub");
    let (alice, bob) = (UserId::new(), UserId::new());
    let as_alice = Actor::user(alice, Role::User);
    let as_bob = Actor::user(bob, Role::User);
    let admin = Actor::user(UserId::new(), Role::Admin);

    let forbidden = hub.jobs().enqueue(&as_alice, NewJob::new("export", json!({}))).await.expect_err("users may not");
    assert_eq!(forbidden.kind(), ErrorKind::Forbidden);
    let unknown = hub.jobs().enqueue(&admin, NewJob::new("no.such.kind", json!({}))).await.expect_err("unknown kind");
    assert_eq!(unknown.kind(), ErrorKind::InvalidInput);
    assert!(store.list_jobs(&JobFilter::default(), &PageRequest::first(10)).await.expect("list").items.is_empty());

    let alices = hub.jobs().enqueue(&SYSTEM, NewJob::new("export", json!({})).created_by(alice)).await.expect("ok");
    let admins = hub.jobs().enqueue(&admin, NewJob::new("export", json!({}))).await.expect("enqueued");
    assert_eq!(admins.created_by, admin.user_id(), "the enqueuer is recorded");

    assert_eq!(hub.jobs().get(&as_alice, alices.id).await.expect("own job").id, alices.id);
    assert_eq!(hub.jobs().get(&as_bob, alices.id).await.expect_err("not bob's").kind(), ErrorKind::NotFound);
    assert_eq!(hub.jobs().cancel(&as_bob, alices.id).await.expect_err("not bob's").kind(), ErrorKind::NotFound);
    assert_eq!(hub.jobs().artifact(&as_bob, alices.id).await.expect_err("not bob's").kind(), ErrorKind::NotFound);
    let snooping = JobFilter { created_by: Some(alice), ..Default::default() };
    assert!(hub.jobs().list(&as_bob, snooping, &PageRequest::first(10)).await.expect("list").items.is_empty());
    let own = hub.jobs().list(&as_alice, JobFilter::default(), &PageRequest::first(10)).await.expect("list");
    assert_eq!(own.items.iter().map(|job| job.id).collect::<Vec<_>>(), [alices.id]);
    assert_eq!(
        hub.jobs().list(&admin, JobFilter::default(), &PageRequest::first(10)).await.expect("list").items.len(),
        2
    );
    assert_eq!(hub.jobs().stats(&as_alice).await.expect_err("admins only").kind(), ErrorKind::Forbidden);

    let cancelled = hub.jobs().cancel(&as_alice, alices.id).await.expect("own job");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(hub.jobs().retry(&as_alice, alices.id).await.expect_err("admins only").kind(), ErrorKind::Forbidden);
    let retried = hub.jobs().retry(&admin, alices.id).await.expect("admin retries");
    assert_eq!((retried.state, retried.attempt), (JobState::Queued, 0));
    let stats = hub.jobs().stats(&admin).await.expect("stats");
    assert_eq!((stats[0].counts.queue.as_str(), stats[0].counts.queued), ("default", 2));
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_long_jobs_lease_so_it_is_never_rescued() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock)
        .handler(
            "long",
            handler_fn(|_ctx| async {
                sleep(Duration::from_secs(60)).await;
                Ok(json!("done"))
            }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = hub.start_workers(config()).expect("runtime starts"); // lease 30 s, heartbeat every 10 s
    let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("long", json!({}))).await.expect("enqueued");
    next_event(&mut events, EventKind::JobStarted, job.id).await;
    // Job time runs twice as fast as the runtime's timers: 100 s of leases pass while it works, yet every
    // heartbeat pushes its lease ahead, so the rescue never takes it.
    for _ in 0..5 {
        sleep(Duration::from_secs(10)).await;
        clock.advance(Duration::from_secs(20));
        workers.run_maintenance().await.expect("maintenance");
        let running = store.get_job(job.id).await.expect("get").expect("exists");
        assert_eq!((running.state, running.attempt), (JobState::Running, 1));
        assert!(running.lease_until.expect("leased") > clock.now());
    }
    let done = wait_for_state(&store, job.id, JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    while let Ok(event) = events.try_recv() {
        assert_ne!(event.kind, EventKind::JobRescued);
    }
    workers.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn expired_tokens_are_pruned_with_job_retention_turned_off() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock).build().expect("hub");
    let workers = hub.start_workers(config()).expect("runtime starts"); // config() turns retention off
    let user = UserId::new();
    let now = clock.now();
    let expiring = TokenRecord::new(
        TokenHash::of("expiring"),
        TokenKind::PasswordReset,
        user,
        TokenFamilyId::new(),
        now,
        now + chrono::TimeDelta::minutes(30),
    );
    let lasting = TokenRecord::new(
        TokenHash::of("lasting"),
        TokenKind::Refresh,
        user,
        TokenFamilyId::new(),
        now,
        now + chrono::TimeDelta::days(30),
    );
    store.insert_token(expiring.clone()).await.expect("stored");
    store.insert_token(lasting.clone()).await.expect("stored");
    clock.advance(Duration::from_secs(3600));
    workers.run_maintenance().await.expect("maintenance");
    assert_eq!(store.get_token(&expiring.hash).await.expect("get"), None, "an expired token was kept");
    assert_eq!(store.get_token(&lasting.hash).await.expect("get"), Some(lasting));
    workers.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retention_prunes_finished_jobs_after_their_windows() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock)
        .handler("ok", ok_handler())
        .handler("bad", handler_fn(|_ctx| async { Err(JobError::permanent("no")) }))
        .build()
        .expect("hub");
    let mut retained = config();
    retained.retention = Some(Retention::default()); // the defaults: 24 h, 24 h, 7 days
    let workers = hub.start_workers(retained).expect("runtime starts");
    let succeeded = hub.jobs().enqueue(&SYSTEM, NewJob::new("ok", json!({}))).await.expect("enqueued");
    let failed = hub.jobs().enqueue(&SYSTEM, NewJob::new("bad", json!({}))).await.expect("enqueued");
    let cancelled = hub
        .jobs()
        .enqueue(&SYSTEM, NewJob::new("ok", json!({})).run_at(clock.now() + chrono::TimeDelta::days(30)))
        .await
        .expect("enqueued");
    hub.jobs().cancel(&SYSTEM, cancelled.id).await.expect("cancelled");
    // Both attempts may be recorded in one batch, in either order.
    wait_for_state(&store, succeeded.id, JobState::Succeeded).await;
    wait_for_state(&store, failed.id, JobState::Failed).await;
    let exists = |id: JobId| {
        let store = store.clone();
        async move { store.get_job(id).await.expect("get").is_some() }
    };

    clock.advance(Duration::from_secs(23 * 3600));
    workers.run_maintenance().await.expect("maintenance");
    assert!(exists(succeeded.id).await && exists(cancelled.id).await && exists(failed.id).await);

    clock.advance(Duration::from_secs(2 * 3600));
    workers.run_maintenance().await.expect("maintenance");
    assert!(!exists(succeeded.id).await && !exists(cancelled.id).await, "kept past 24 h");
    assert!(exists(failed.id).await, "failed jobs stay for a week");

    clock.advance(Duration::from_secs(6 * 24 * 3600));
    workers.run_maintenance().await.expect("maintenance");
    assert!(!exists(failed.id).await, "kept past 7 days");
    workers.shutdown().await;
}

/// A handler that returns the moment it sees a local cancel may finish before the runtime notices the cancel
/// itself: the attempt must still end `cancelled`, never `failed`. Real threads and time, many rounds, since
/// this is about which of two ready things the runtime looks at first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stopping_at_once_on_cancel_ends_cancelled() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "quick-to-stop",
            handler_fn(|ctx: JobContext| async move {
                ctx.cancelled().await;
                Err(JobError::retry("stopped on request"))
            }),
        )
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = hub.start_workers(config()).expect("runtime starts");
    for _ in 0..30 {
        let job = hub.jobs().enqueue(&SYSTEM, NewJob::new("quick-to-stop", json!({}))).await.expect("enqueued");
        next_event(&mut events, EventKind::JobStarted, job.id).await;
        hub.jobs().cancel(&SYSTEM, job.id).await.expect("cancel works");
        let ended = timeout(Duration::from_secs(10), async {
            loop {
                let job = store.get_job(job.id).await.expect("get").expect("exists");
                if job.state.is_finished() || job.state == JobState::Queued {
                    return job;
                }
                sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the attempt ends");
        assert_eq!(ended.state, JobState::Cancelled, "{:?}", ended.last_error);
    }
    workers.shutdown().await;
}

/// Queue statistics list every queue this process serves, with its workers, even before its first job.
#[tokio::test(start_paused = true)]
async fn stats_list_served_queues_before_their_first_job() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = builder(&store, &clock).handler("ok", ok_handler()).build().expect("hub");
    let workers = hub.start_workers(config().queue("email", 1)).expect("runtime starts");
    let stats = hub.jobs().stats(&SYSTEM).await.expect("stats");
    let served: Vec<(&str, usize, u64)> =
        stats.iter().map(|queue| (queue.counts.queue.as_str(), queue.workers, queue.counts.queued)).collect();
    assert_eq!(served, [("default", 2, 0), ("email", 1, 0)]);
    workers.shutdown().await;
}

/// The workers claim jobs in batches while earlier ones are recorded; a shutdown in the middle of
/// that leaves nothing running: every job has either succeeded once or is queued with no attempt spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_amid_batches_leaves_no_job_running_or_charged() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .handler(
            "brief",
            handler_fn(|_ctx| async {
                sleep(Duration::from_millis(2)).await;
                Ok(Value::Null)
            }),
        )
        .build()
        .expect("hub");
    let specs = (0..300).map(|n| NewJob::new("brief", json!({ "n": n }))).collect();
    hub.jobs().enqueue_many(&SYSTEM, specs).await.expect("enqueued");
    let mut config = config();
    config.queues[0].workers = 4;
    let workers = hub.start_workers(config).expect("runtime starts");
    timeout(Duration::from_secs(10), async {
        while store.queue_counts().await.expect("counts")[0].succeeded < 40 {
            sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("jobs run");
    workers.shutdown().await;

    let page = store.list_jobs(&JobFilter::default(), &PageRequest::first(500)).await.expect("list");
    assert_eq!(page.items.len(), 300);
    for job in page.items {
        match job.state {
            JobState::Succeeded => assert_eq!(job.attempt, 1),
            JobState::Queued => assert_eq!(job.attempt, 0, "a job given back keeps its attempts"),
            other => panic!("job {} left {other:?}", job.id),
        }
    }
}
