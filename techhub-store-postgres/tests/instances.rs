//! Several instances (stores, hubs) on one database: wake-ups and events cross between them, migrations run
//! once when they start together, and the rules that must hold across instances are the database's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use techhub_core::clock::{self, Clock, ManualClock};
use techhub_core::events::{Event, EventKind};
use techhub_core::jobs::{JobContext, RateLimit, Schedule, WorkerConfig, handler_fn};
use techhub_core::model::{
    Email, JobFilter, JobState, NewJob, NotificationFilter, PageRequest, Role, TokenFamilyId, TokenHash, TokenKind,
    TokenRecord, User,
};
use techhub_core::storage::{Conflict, Storage, StoreError, TokenSelector, TokenStore, UserStore};
use techhub_core::users::Registration;
use techhub_core::{Actor, Config, NotifyConfig, TechHub};
use techhub_store_postgres::test_server::{TestDatabase, TestServer};
use techhub_store_postgres::{PostgresOptions, PostgresStore};
use tokio::sync::broadcast;

const KIND: &str = "instances.work";
/// Longer than any test: a worker that picks a job up did so because it was woken, not because it polled.
const NEVER_POLL: Duration = Duration::from_secs(3_600);
/// How long a test waits for something that must happen (a failure, not a speed claim, when it does not).
const PATIENCE: Duration = Duration::from_secs(30);

async fn connect(database: &TestDatabase) -> PostgresStore {
    PostgresStore::connect(database.url(), PostgresOptions::default().max_connections(4)).await.expect("connects")
}

fn hub(store: PostgresStore) -> TechHub {
    TechHub::builder()
        .storage(store)
        .handler(
            KIND,
            handler_fn(|ctx| async move {
                for step in 1..=10_u8 {
                    ctx.log(format!("step {step}"));
                    ctx.progress(step * 10, format!("step {step}"));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Value::Null)
            }),
        )
        .build()
        .expect("a hub")
}

fn idle_workers(count: usize) -> WorkerConfig {
    let mut config = WorkerConfig::default().queue("default", count);
    config.poll_interval = NEVER_POLL;
    config
}

async fn wait_for_state(hub: &TechHub, id: techhub_core::model::JobId, state: JobState) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let job = hub.jobs().get(&Actor::System, id).await.expect("the job");
        if job.state == state {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {id} stayed {:?}", job.state);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_on_one_instance_wakes_idle_workers_on_another() {
    let database = TestServer::shared().database().await;
    let enqueuer = hub(connect(&database).await);
    let worker = hub(connect(&database).await);
    let workers = worker.start_workers(idle_workers(2)).expect("workers start");
    for round in 0..5 {
        // Let the workers find the queue empty and wait (they would never poll again).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let job = enqueuer.jobs().enqueue(&Actor::System, NewJob::new(KIND, json!({ "round": round }))).await;
        wait_for_state(&enqueuer, job.expect("enqueued").id, JobState::Succeeded).await;
    }
    workers.shutdown().await;
}

/// The events of `subject` a subscriber receives, until the job succeeded.
async fn events_of(events: &mut broadcast::Receiver<Event>, subject: uuid::Uuid) -> Vec<Event> {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.recv().await.expect("no event is missed");
            if event.subject == subject {
                let done = event.kind == EventKind::JobSucceeded;
                seen.push(event);
                if done {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the job's events stopped at {:?}", seen.iter().map(|e| e.kind).collect::<Vec<_>>()));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_instance_reach_subscribers_of_another_in_order() {
    let database = TestServer::shared().database().await;
    let runner = hub(connect(&database).await);
    let watcher = hub(connect(&database).await);
    let mut watched = watcher.subscribe();
    let mut config = WorkerConfig::default().queue("default", 2);
    config.progress_interval = Duration::from_millis(10);
    let workers = runner.start_workers(config).expect("workers start");
    // Created through the watcher, run by the runner: every event after the first comes from the runner.
    let job = watcher.jobs().enqueue(&Actor::System, NewJob::new(KIND, json!({}))).await.expect("enqueued");
    let events = events_of(&mut watched, job.id.into()).await;
    let kinds: Vec<EventKind> = events.iter().map(|event| event.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::JobQueued), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&EventKind::JobStarted), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&EventKind::JobSucceeded), "{kinds:?}");
    let percents: Vec<u64> = events
        .iter()
        .filter(|event| event.kind == EventKind::JobProgress)
        .map(|event| event.data["percent"].as_u64().expect("a percent"))
        .collect();
    assert!(!percents.is_empty(), "progress reached the other instance: {kinds:?}");
    assert!(percents.windows(2).all(|pair| pair[0] < pair[1]), "progress in order: {percents:?}");
    let lines: Vec<&str> = events
        .iter()
        .filter(|event| event.kind == EventKind::JobLog)
        .map(|event| event.data["line"].as_str().expect("a line"))
        .collect();
    let expected: Vec<String> = (1..=10).map(|step| format!("step {step}")).collect();
    assert_eq!(lines, expected, "every log line, in order");
    assert!(events.windows(2).all(|pair| pair[0].seq < pair[1].seq), "local sequence numbers increase");
    workers.shutdown().await;
}

/// An instance nobody subscribes to (no workers, no rules, no WebSocket) still sends its job events, details included, to
/// the other instances: `EventBus::publish_with` skips building an event only when no one anywhere can get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_of_an_instance_without_subscribers_reach_another() {
    let database = TestServer::shared().database().await;
    // Built outside the runtime, a hub starts its notification rules only with its workers, which this one
    // never starts: nothing subscribes on it.
    let quiet_store = connect(&database).await;
    let quiet = std::thread::spawn(move || hub(quiet_store)).join().expect("the hub is built");
    let watcher = hub(connect(&database).await);
    let mut watched = watcher.subscribe();
    assert_eq!(quiet.events().subscriber_count(), 0, "nothing subscribes on the quiet instance");

    let job = quiet.jobs().enqueue(&Actor::System, NewJob::new(KIND, json!({}))).await.expect("enqueued");
    // Progress as the runtime publishes it (the runtime itself always subscribes, for the notification rules).
    quiet.events().publish_with(
        quiet.now(),
        EventKind::JobProgress,
        job.id,
        None,
        || json!({ "job_id": job.id, "percent": 40, "message": "halfway there" }),
    );
    quiet.jobs().cancel(&Actor::System, job.id).await.expect("cancelled");
    assert_eq!(quiet.events().subscriber_count(), 0);

    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while seen.last().is_none_or(|event: &Event| event.kind != EventKind::JobCancelled) {
            let event = watched.recv().await.expect("no event is missed");
            if event.subject == uuid::Uuid::from(job.id) {
                seen.push(event);
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the quiet instance's events stopped at {:?}", seen.iter().map(|e| e.kind).collect::<Vec<_>>())
    });
    let kinds: Vec<EventKind> = seen.iter().map(|event| event.kind).collect();
    assert_eq!(kinds, [EventKind::JobQueued, EventKind::JobProgress, EventKind::JobCancelled]);
    assert!(seen.iter().all(|event| event.from_peer), "every one came from the other instance");
    assert_eq!(seen[0].data["kind"], KIND, "the details were built: {:?}", seen[0].data);
    assert_eq!((seen[1].data["percent"].as_u64(), seen[1].data["message"].as_str()), (Some(40), Some("halfway there")));
    assert_eq!(seen[2].data["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_a_notification_still_arrives_whole() {
    let database = TestServer::shared().database().await;
    let sender = hub(connect(&database).await);
    let receiver = hub(connect(&database).await);
    let mut events = receiver.subscribe();
    let lines: Vec<String> = (0..400).map(|n| format!("line {n}: {}", "x".repeat(60))).collect();
    let subject = uuid::Uuid::now_v7();
    sender.events().publish(Utc::now(), EventKind::BuildLog, subject, None, json!({ "lines": lines }));
    sender.events().publish(Utc::now(), EventKind::BuildProgress, subject, None, json!({ "percent": 50 }));
    let (first, second) = tokio::time::timeout(PATIENCE, async {
        (events.recv().await.expect("the large event"), events.recv().await.expect("the next"))
    })
    .await
    .expect("both events arrive");
    assert_eq!((first.kind, first.subject), (EventKind::BuildLog, subject));
    assert_eq!(first.data["lines"].as_array().map(Vec::len), Some(400));
    assert_eq!(first.data["lines"][399], json!(lines[399]));
    assert_eq!(second.kind, EventKind::BuildProgress, "the order is kept around the large one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let database = TestServer::shared().empty_database().await;
    let url = database.url().to_owned();
    let mut starting = tokio::task::JoinSet::new();
    for n in 0..4 {
        let url = url.clone();
        starting.spawn(async move {
            let store = PostgresStore::connect(&url, PostgresOptions::default()).await.expect("every instance starts");
            let email = Email::parse(&format!("start{n}@example.com")).expect("an address");
            store.insert_user(User::new(email, "Starter", Role::User, Utc::now()), vec![]).await.expect("writes");
        });
    }
    while let Some(started) = starting.join_next().await {
        started.expect("an instance started");
    }
    let store = connect(&database).await;
    assert_eq!(store.count_users().await.expect("counts").total, 4);

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("a plain connection");
    tokio::spawn(connection);
    client.batch_execute("UPDATE techhub_schema SET version = 999").await.expect("the schema is made newer");
    let error = PostgresStore::connect(&url, PostgresOptions::default()).await.expect_err("a newer schema is refused");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    let message = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
    assert!(message.contains("newer") && message.contains("999"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_guard_holds_across_instances() {
    let database = TestServer::shared().database().await;
    let (one, two) = (Arc::new(connect(&database).await), Arc::new(connect(&database).await));
    for round in 0..10 {
        let mut admins = Vec::new();
        for side in ["a", "b"] {
            let email = Email::parse(&format!("{side}{round}@example.com")).expect("an address");
            admins.push(one.insert_user(User::new(email, "Admin", Role::Admin, Utc::now()), vec![]).await.expect("in"));
        }
        let demote = |store: Arc<PostgresStore>, mut admin: User| async move {
            let version = admin.version;
            admin.role = Role::User;
            store.update_user(admin, version, vec![]).await
        };
        let (first, second) = tokio::join!(
            tokio::spawn(demote(one.clone(), admins[0].clone())),
            tokio::spawn(demote(two.clone(), admins[1].clone()))
        );
        let outcomes = [first.expect("ran"), second.expect("ran")];
        let refused = outcomes
            .iter()
            .filter(|outcome| outcome.as_ref().err().and_then(StoreError::conflict) == Some(Conflict::LastActiveAdmin))
            .count();
        // Round 0 starts with no admin but these two; later rounds have the survivors of earlier ones.
        if round == 0 {
            assert_eq!(refused, 1, "exactly one demotion of the last two admins succeeds: {outcomes:?}");
        }
        assert!(one.count_users().await.expect("counts").admins >= 1, "an active admin is left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_or_a_user_disabled_on_one_instance_is_seen_by_another_at_once() {
    let database = TestServer::shared().database().await;
    let (one, two) = (connect(&database).await, connect(&database).await);
    let now = Utc::now();
    let user = one
        .insert_user(User::new(Email::parse("kim@example.com").expect("an address"), "Kim", Role::User, now), vec![])
        .await
        .expect("inserted");
    let family = TokenFamilyId::new();
    let token = |raw: &str| {
        TokenRecord::new(
            TokenHash::of(raw),
            TokenKind::Refresh,
            user.id,
            family,
            now,
            now + chrono::TimeDelta::hours(1),
        )
    };
    one.insert_token(token("first")).await.expect("a session");
    assert!(two.session_user(family, user.id, now).await.expect("reads").is_some_and(|found| found.active));

    let mut disabled = user.clone();
    disabled.active = false;
    one.update_user(disabled, user.version, vec![]).await.expect("disabled");
    let seen = two.session_user(family, user.id, now).await.expect("reads").expect("the session lives");
    assert!(!seen.active, "the other instance sees the user disabled on its next read");

    one.revoke_tokens(TokenSelector::Family(family)).await.expect("revoked");
    assert!(two.session_user(family, user.id, now).await.expect("reads").is_none(), "the session ended everywhere");
}

/// Two instances firing one schedule: each tick runs once, also when one instance comes late (its clock
/// behind) and fires a tick whose job the other already ran: the store remembers the fired tick, where the
/// unique key alone would have let the finished tick run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_fires_each_tick_once_across_instances() {
    let database = TestServer::shared().database().await;
    let (clock_a, clock_b) = (ManualClock::at_epoch(), ManualClock::at_epoch());
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let make_hub = |store: PostgresStore, clock: &ManualClock| {
        let runs = runs.clone();
        TechHub::builder()
            .storage(store)
            .clock(clock.clone())
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
            .expect("a hub")
    };
    let first = make_hub(connect(&database).await, &clock_a);
    let second = make_hub(connect(&database).await, &clock_b);
    let schedule =
        || Schedule::new("nightly", "*/10 * * * * *", NewJob::new("report.nightly", json!({}))).expect("valid");
    let config = || {
        let mut config = WorkerConfig::default().queue("default", 2).schedule(schedule());
        config.retention = None;
        // Rescues never run; schedules are fired by the test (and every poll, which the assertions allow).
        config.rescue_interval = NEVER_POLL;
        config.poll_interval = Duration::from_millis(50);
        config
    };
    let runtime_a = first.start_workers(config()).expect("runtime starts");
    let runtime_b = second.start_workers(config()).expect("runtime starts");
    let queued_ticks =
        JobFilter { state: Some(JobState::Queued), kind: Some("report.nightly".into()), ..Default::default() };
    let wait_for_runs = |count: usize| {
        let runs = runs.clone();
        async move {
            tokio::time::timeout(PATIENCE, async {
                while runs.lock().expect("lock").len() < count {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the tick ran");
        }
    };
    for tick in 1..=3 {
        runtime_a.run_maintenance().await.expect("maintenance");
        runtime_b.run_maintenance().await.expect("maintenance");
        runtime_a.run_maintenance().await.expect("maintenance");
        let queued = first.storage().list_jobs(&queued_ticks, &PageRequest::first(50)).await.expect("lists");
        assert_eq!(queued.items.len(), 1, "tick {tick} is enqueued once by the two instances");

        clock_a.advance(Duration::from_secs(10));
        clock_b.advance(Duration::from_secs(10));
        runtime_a.wake();
        runtime_b.wake();
        wait_for_runs(tick).await;
    }

    // A late instance: the fourth tick (40 s) is enqueued and run to the end on the first instance while the
    // second instance's clock still reads 30 s; the second then fires the tick it thinks is next, 40 s.
    runtime_a.run_maintenance().await.expect("maintenance");
    clock_a.advance(Duration::from_secs(10));
    runtime_a.wake();
    wait_for_runs(4).await;
    let fourth_key = format!("cron:nightly:{}", clock::add(clock_b.now(), Duration::from_secs(10)).timestamp());
    let fourth = tick_jobs(&first, &fourth_key).await;
    assert_eq!(fourth.len(), 1);
    wait_for_state(&first, fourth[0].id, JobState::Succeeded).await;
    runtime_b.run_maintenance().await.expect("maintenance");
    assert_eq!(tick_jobs(&second, &fourth_key).await.len(), 1, "the late instance enqueued a finished tick again");

    runtime_a.shutdown().await;
    runtime_b.shutdown().await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 4);
    assert!(runs.values().all(|&count| count == 1), "every tick ran once: {runs:?}");
}

/// Every job (in any state) with the unique key `key`.
async fn tick_jobs(hub: &TechHub, key: &str) -> Vec<techhub_core::model::Job> {
    let filter = JobFilter { kind: Some("report.nightly".into()), ..Default::default() };
    let jobs = hub.storage().list_jobs(&filter, &PageRequest::first(100)).await.expect("lists");
    jobs.items.into_iter().filter(|job| job.unique_key.as_deref() == Some(key)).collect()
}

/// A hub whose notification rules mail `user.registered` to one operator address.
fn hub_mailing_registrations(store: PostgresStore) -> TechHub {
    let notify = NotifyConfig::default()
        .email_recipients(vec![Email::parse("ops@example.com").expect("an address")])
        .email_events(vec!["user.registered".to_owned()]);
    TechHub::builder().storage(store).config(Config::default().notify(notify)).build().expect("a hub")
}

/// Registers `email` on `hub`, then waits until `other` has received that registration's event from its peer.
async fn register_seen_by(hub: &TechHub, other: &mut broadcast::Receiver<Event>, email: &str) {
    let registration =
        Registration { email: email.to_owned(), password: "a long enough passphrase".to_owned(), name: None };
    let user = hub.users().register(registration).await.expect("registered");
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = other.recv().await.expect("the bus is open");
            if event.kind == EventKind::UserCreated && event.subject == uuid::Uuid::from(user.id) {
                assert!(event.from_peer, "the event came from the other instance");
                return;
            }
        }
    })
    .await
    .expect("the other instance saw the registration");
}

async fn registration_mails(store: &dyn Storage) -> usize {
    let page = store
        .list_notifications(&NotificationFilter::default(), &PageRequest::first(200))
        .await
        .expect("notifications list");
    page.items
        .iter()
        .filter(|notification| {
            notification.event_type.as_deref() == Some("user.registered") && notification.recipient == "ops@example.com"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_becomes_notifications_once_whichever_instances_see_it() {
    let database = TestServer::shared().database().await;
    let first = hub_mailing_registrations(connect(&database).await);
    let second = hub_mailing_registrations(connect(&database).await);
    let first_workers = first.start_workers(idle_workers(1)).expect("workers start");
    let second_workers = second.start_workers(idle_workers(1)).expect("workers start");
    let mut first_events = first.subscribe();
    let mut second_events = second.subscribe();

    // Each instance's rules see its own registration and the other's; a later registration on the
    // instance that saw a peer's event proves its rules got past that event (they run in bus order).
    register_seen_by(&first, &mut second_events, "ada@example.com").await;
    register_seen_by(&second, &mut first_events, "grace@example.com").await;
    let last = Registration {
        email: "linus@example.com".to_owned(),
        password: "a long enough passphrase".to_owned(),
        name: None,
    };
    first.users().register(last).await.expect("registered");
    let store = first.storage();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while registration_mails(store.as_ref()).await < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the rules never mailed the three registrations");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The second instance ran its rules on the peer's ada event before its own grace one, and the first on
    // grace before linus: any duplicate exists by now.
    let second_store = second.storage();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while registration_mails(second_store.as_ref()).await < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the rules never mailed the three registrations");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(registration_mails(store.as_ref()).await, 3, "one mail per registration, not one per instance");
    first_workers.shutdown().await;
    second_workers.shutdown().await;
}

/// A rate-limited queue served by two instances starts no more jobs over any window than its one limit
/// allows (the bucket is the database's, not each process's): per window `w`, at most `burst + rate * w`
/// starts, plus one for the moment between taking a start and the claim stamping `started_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_rate_limit_holds_across_instances() {
    let database = TestServer::shared().database().await;
    let limit = RateLimit::per_second(10.0).burst(2);
    let hubs = [hub(connect(&database).await), hub(connect(&database).await)];
    let mut runtimes = Vec::new();
    for hub in &hubs {
        let mut config = WorkerConfig::default().rate_limited_queue("limited", 4, limit);
        config.poll_interval = Duration::from_millis(50);
        runtimes.push(hub.start_workers(config).expect("a runtime"));
    }
    let specs = (0..40).map(|n| NewJob::new(KIND, json!({ "n": n })).queue("limited")).collect();
    hubs[0].jobs().enqueue_many(&Actor::System, specs).await.expect("enqueued");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let jobs = loop {
        let filter = JobFilter { queue: Some("limited".into()), ..JobFilter::default() };
        let page = hubs[1].storage().list_jobs(&filter, &PageRequest::first(100)).await.expect("a page");
        if page.items.iter().all(|job| job.state == JobState::Succeeded) {
            break page.items;
        }
        assert!(tokio::time::Instant::now() < deadline, "the limited jobs did not all run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for runtime in runtimes {
        runtime.shutdown().await;
    }
    let mut starts: Vec<_> = jobs.iter().filter_map(|job| job.started_at).collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 40);
    for window in [Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)] {
        let allowed = f64::from(limit.burst) + limit.per_second * window.as_secs_f64() + 1.0;
        for (first, start) in starts.iter().enumerate() {
            let end = *start + chrono::TimeDelta::from_std(window).expect("a short window");
            let within = starts[first..].iter().take_while(|later| **later < end).count();
            assert!(within as f64 <= allowed, "{within} starts within {window:?} of {start}, {allowed} allowed");
        }
    }
}
