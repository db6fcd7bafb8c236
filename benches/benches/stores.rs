//! Single-caller latency of the store operations the hot paths rest on, for every store:
//!
//! - `user_insert`: a new user (unique email) inserted;
//! - `user_get_by_email`: one of 10,000 users read by email;
//! - `token_consume`: a refresh token consumed with its replacement stored (the rotation a refresh does);
//! - `job_claim/<queued>`: one claim from a queue holding 1,000 or 1,000,000 due jobs (the queue is topped up
//!   between claims, outside the timing, so its depth stays put).
//!
//! `cargo bench -p techhub-benches --bench stores` (add a filter such as `sqlite` to run one store). Writes to
//! the durable stores are acknowledged only once durable under their default setting (SQLite: WAL with
//! `synchronous = NORMAL`; sled: a flush per write round).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::ValueEnum;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;
use techhub_benches::{DurabilityArg, StoreKind, open_store};
use techhub_core::model::{
    Email, Job, NewJob, Role, TokenFamilyId, TokenHash, TokenKind, TokenRecord, User, UserId, WorkerId,
};
use techhub_core::storage::DynStorage;
use tokio::runtime::Runtime;

/// A store under measurement.
struct Subject {
    name: &'static str,
    store: DynStorage,
}

/// Every store the filter selects, each fresh, its files in `dir`.
fn subjects(dir: &Path) -> Vec<Subject> {
    StoreKind::value_variants()
        .iter()
        .filter(|kind| selected(kind.name()))
        .map(|kind| Subject { name: kind.name(), store: open_store(*kind, dir, kind.name(), DurabilityArg::Normal) })
        .collect()
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn new_user() -> User {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let email = Email::parse(&format!("bench-{n}@example.com")).expect("an email");
    User::new(email, "Bench", Role::User, Utc::now())
}

fn new_job() -> Job {
    Job::new(NewJob::new("bench.noop", json!({ "n": 1 })), Utc::now() - TimeDelta::seconds(1)).expect("a job")
}

fn refresh_token(user: UserId, family: TokenFamilyId) -> TokenRecord {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let now = Utc::now();
    TokenRecord::new(
        TokenHash::of(&format!("refresh-{n}")),
        TokenKind::Refresh,
        user,
        family,
        now,
        now + TimeDelta::days(1),
    )
}

fn users(c: &mut Criterion, runtime: &Runtime, subject: &Subject) {
    let store = &subject.store;
    let mut group = c.benchmark_group(format!("{}/users", subject.name));
    group.bench_function("user_insert", |b| {
        b.to_async(runtime).iter(|| async { store.insert_user(new_user(), Vec::new()).await.expect("insert") })
    });
    let emails: Vec<Email> = runtime.block_on(async {
        let mut emails = Vec::new();
        for _ in 0..10_000 {
            emails.push(store.insert_user(new_user(), Vec::new()).await.expect("insert").email);
        }
        emails
    });
    let next = AtomicU64::new(0);
    group.bench_function("user_get_by_email", |b| {
        b.to_async(runtime).iter(|| async {
            let n = next.fetch_add(7_919, Ordering::Relaxed) as usize % emails.len();
            store.get_user_by_email(&emails[n]).await.expect("get").expect("present")
        })
    });
    group.finish();
}

fn tokens(c: &mut Criterion, runtime: &Runtime, subject: &Subject) {
    let store = &subject.store;
    let user = runtime.block_on(store.insert_user(new_user(), Vec::new())).expect("insert");
    let family = TokenFamilyId::new();
    let first = refresh_token(user.id, family);
    let current = std::sync::Mutex::new(first.hash);
    runtime.block_on(store.insert_token(first)).expect("insert token");
    let mut group = c.benchmark_group(format!("{}/tokens", subject.name));
    group.bench_function("token_consume", |b| {
        b.to_async(runtime).iter(|| async {
            let replacement = refresh_token(user.id, family);
            let next = replacement.hash;
            let hash = std::mem::replace(&mut *current.lock().expect("not poisoned"), next);
            store.consume_token(&hash, TokenKind::Refresh, Utc::now(), Some(replacement)).await.expect("consume")
        })
    });
    group.finish();
}

fn claims(c: &mut Criterion, runtime: &Runtime, subject: &Subject) {
    let store = &subject.store;
    let queues = vec!["default".to_owned()];
    let worker = WorkerId::new("bench");
    let mut group = c.benchmark_group(format!("{}/jobs", subject.name));
    let mut queued = 0;
    for depth in [1_000_usize, 1_000_000] {
        runtime.block_on(async {
            while queued < depth {
                let batch = (depth - queued).min(10_000);
                store.enqueue_many((0..batch).map(|_| new_job()).collect()).await.expect("enqueue_many");
                queued += batch;
            }
        });
        group.bench_with_input(BenchmarkId::new("job_claim", depth), &depth, |b, _| {
            let (queues, worker) = (&queues, &worker);
            b.to_async(runtime).iter_custom(|iterations| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    store.enqueue(new_job()).await.expect("top up");
                    let start = Instant::now();
                    let job = store.claim(queues, worker, Utc::now(), Duration::from_secs(600)).await;
                    timed += start.elapsed();
                    assert!(job.expect("claim").is_some(), "a due job");
                }
                timed
            })
        });
    }
    group.finish();
}

/// Whether the command line's filter (if it names a store) selects `store`: filling a store with a million
/// jobs takes a while, so stores not asked for are not set up at all.
fn selected(store: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let names_a_store = |filter: &String| ["memory", "sqlite", "sled"].iter().any(|name| filter.contains(name));
    !filters.iter().any(names_a_store) || filters.iter().any(|filter| filter.contains(store))
}

fn stores(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    for subject in subjects(dir.path()) {
        users(c, &runtime, &subject);
        tokens(c, &runtime, &subject);
        claims(c, &runtime, &subject);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = stores
}
criterion_main!(benches);
