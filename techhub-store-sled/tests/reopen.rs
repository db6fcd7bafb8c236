//! What a store acknowledged is there when the directory is opened again, indexes and counters included.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use techhub_core::model::{Email, Job, JobState, NewJob, Role, User, WorkerId};
use techhub_core::storage::{JobStore, StoreError, UserStore};
use techhub_store_sled::{FlushPolicy, SledOptions, SledStore};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).expect("in range")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_sees_acknowledged_users_and_jobs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("techhub");
    let email = Email::parse("ada@example.com").expect("valid");
    let welcome = Job::new(NewJob::new("email.welcome", json!({ "to": "ada" })).queue("email"), t0()).expect("valid");
    let later = Job::new(NewJob::new("report", json!({})).run_at(t0() + Duration::from_secs(60)), t0()).expect("valid");
    let user = {
        let store = SledStore::open(&path).expect("opens");
        let user = store
            .insert_user(User::new(email.clone(), "Ada", Role::Admin, t0()), vec![welcome.clone()])
            .await
            .expect("inserts");
        store.enqueue(later.clone()).await.expect("enqueues");
        user
    };

    let store = SledStore::open(&path).expect("opens again");
    assert_eq!(store.get_user_by_email(&email).await.expect("reads"), Some(user));
    assert_eq!(store.get_job(welcome.id).await.expect("reads"), Some(welcome.clone()));
    let counts = store.queue_counts().await.expect("counts");
    assert_eq!(
        counts.iter().map(|queue| (queue.queue.as_str(), queue.queued)).collect::<Vec<_>>(),
        [("default", 1), ("email", 1)]
    );
    let worker = WorkerId::new("w");
    let claimed = store.claim(&["email".to_owned()], &worker, t0(), Duration::from_secs(30)).await.expect("claims");
    assert_eq!(claimed.map(|job| (job.id, job.state)), Some((welcome.id, JobState::Running)));
    let due = t0() + Duration::from_secs(60);
    let claimed = store.claim(&["default".to_owned()], &worker, due, Duration::from_secs(30)).await.expect("claims");
    assert_eq!(claimed.map(|job| job.id), Some(later.id), "the delayed index survived too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_flushing_keeps_writes_across_a_clean_reopen() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("techhub");
    let options = SledOptions { flush: FlushPolicy::Every(Duration::from_millis(5)), ..SledOptions::default() };
    let job = Job::new(NewJob::new("tick", json!({})), t0()).expect("valid");
    {
        let store = SledStore::open_with(&path, &options).expect("opens");
        store.enqueue(job.clone()).await.expect("enqueues");
    }
    let store = SledStore::open_with(&path, &options).expect("opens again");
    assert_eq!(store.get_job(job.id).await.expect("reads"), Some(job));
}

#[test]
fn a_directory_in_use_is_unavailable_after_the_lock_wait() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("techhub");
    let _open = SledStore::open(&path).expect("opens");
    let options = SledOptions { lock_wait: Duration::from_millis(200), ..SledOptions::default() };
    let started = Instant::now();
    let second = SledStore::open_with(&path, &options);
    assert!(matches!(second, Err(StoreError::Unavailable(_))), "{second:?}");
    assert!(started.elapsed() >= options.lock_wait, "gave up after {:?}, before the lock wait", started.elapsed());
}

#[test]
fn opening_waits_for_a_lock_released_during_the_wait() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("techhub");
    let first = SledStore::open(&path).expect("opens");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(first);
    });
    let options = SledOptions { lock_wait: Duration::from_secs(10), ..SledOptions::default() };
    SledStore::open_with(&path, &options).expect("the lock was released within the wait");
    release.join().expect("the first store was dropped");
}

#[test]
fn a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("techhub");
    drop(SledStore::open(&path).expect("opens"));
    {
        let db = raw_sled(&path);
        let meta = db.open_tree("meta").expect("the meta tree");
        let stored = meta.get(b"format").expect("reads").expect("the layout version is recorded");
        let newer = u32::from_be_bytes(stored.as_ref().try_into().expect("4 bytes")) + 1;
        meta.insert(b"format", &newer.to_be_bytes()).expect("writes");
        db.flush().expect("flushes");
    }
    let refused = SledStore::open(&path);
    let Err(StoreError::Corrupt(source)) = &refused else { panic!("a newer layout must be refused: {refused:?}") };
    assert!(source.to_string().contains("newer"), "{source}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_user_counts_gets_them_at_open() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("techhub");
    {
        let store = SledStore::open(&path).expect("opens");
        for (address, role) in [("root@example.com", Role::Admin), ("kim@example.com", Role::User)] {
            let user = User::new(Email::parse(address).expect("valid"), "Someone", role, t0());
            store.insert_user(user, vec![]).await.expect("insert works");
        }
    }
    {
        // What an older TechHub left: users, and no counts.
        let db = raw_sled(&path);
        db.open_tree("user_counts").expect("the counts tree").remove(b"user_counts").expect("removes");
        db.flush().expect("flushes");
    }
    let store = SledStore::open(&path).expect("opens");
    let counts = store.count_users().await.expect("counts");
    assert_eq!((counts.total, counts.active, counts.admins), (2, 2, 1));
}

/// The directory opened with sled itself, once the store just dropped has let go of its lock (sled's own
/// threads release it a moment after the drop).
fn raw_sled(path: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(error) if Instant::now() < deadline => {
                assert!(error.to_string().contains("could not acquire lock"), "{error}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("sled cannot open the directory: {error}"),
        }
    }
}
