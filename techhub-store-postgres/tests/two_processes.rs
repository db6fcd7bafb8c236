//! Two OS processes claiming from one PostgreSQL database never get the same job.
//!
//! The parent fills a queue, starts two copies of this binary (the child side runs when `CLAIMER_URL` is set)
//! and lets them go at the same moment; each claims and completes jobs until none is left, printing every
//! job it claimed. No id may appear twice, every job must be claimed, and both processes must have won some.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use techhub_core::model::{Job, JobState, NewJob, WorkerId};
use techhub_core::storage::JobStore;
use techhub_store_postgres::test_server::TestServer;
use techhub_store_postgres::{PostgresOptions, PostgresStore};

const CHILD_ENV: &str = "CLAIMER_URL";
const GO_ENV: &str = "CLAIMER_GO";
const JOBS: usize = 4_000;
const LEASE: Duration = Duration::from_secs(3_600);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    match std::env::var(CHILD_ENV) {
        Ok(url) => runtime.block_on(claim_all(&url, Path::new(&std::env::var_os(GO_ENV).expect("go")))),
        Err(_) => runtime.block_on(parent()),
    }
}

async fn connect(url: &str) -> PostgresStore {
    PostgresStore::connect(url, PostgresOptions::default().share_between_instances(false)).await.expect("connects")
}

/// The child: waits for the go file, then claims and completes until the queue is empty.
async fn claim_all(url: &str, go: &Path) {
    let store = connect(url).await;
    let worker = WorkerId::new(format!("process-{}", std::process::id()));
    let queues = vec!["default".to_owned()];
    println!("ready");
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut out = std::io::stdout().lock();
    while let Some(job) = store.claim(&queues, &worker, Utc::now(), LEASE).await.expect("claim") {
        writeln!(out, "{}", job.id).expect("stdout");
        let lease = job.lease().expect("a claimed job is leased");
        store.complete(&lease, json!(null), None, Utc::now()).await.expect("complete under our own lease");
    }
}

async fn parent() {
    let database = TestServer::shared().database().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let go = dir.path().join("go");
    let store = connect(database.url()).await;
    let now = Utc::now();
    let jobs: Vec<Job> =
        (0..JOBS).map(|n| Job::new(NewJob::new("shared.work", json!({ "n": n })), now).expect("a valid job")).collect();
    let expected: HashSet<String> = jobs.iter().map(|job| job.id.to_string()).collect();
    store.enqueue_many(jobs).await.expect("enqueued");

    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().expect("this executable"))
                .env(CHILD_ENV, database.url())
                .env(GO_ENV, &go)
                .stdout(Stdio::piped())
                .spawn()
                .expect("a claimer starts")
        })
        .collect();
    // Both are connected and waiting before either may claim, so they really compete.
    let mut outputs = Vec::new();
    let mut readers = Vec::new();
    for mut child in children {
        let stdout = child.stdout.take().expect("stdout");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        readers.push(std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            assert_eq!(lines.next().expect("a first line").expect("text"), "ready");
            ready_tx.send(()).expect("the parent waits");
            lines.map(|line| line.expect("text")).collect::<Vec<String>>()
        }));
        ready_rx.recv_timeout(Duration::from_secs(60)).expect("the claimer is ready");
        outputs.push(child);
    }
    std::fs::write(&go, b"").expect("the go file");
    let mut claimed_by: Vec<Vec<String>> = Vec::new();
    for (mut child, reader) in outputs.into_iter().zip(readers) {
        assert!(child.wait().expect("the claimer ends").success(), "a claimer failed");
        claimed_by.push(reader.join().expect("its output"));
    }

    let mut seen = HashSet::new();
    for id in claimed_by.iter().flatten() {
        assert!(seen.insert(id.clone()), "job {id} was claimed twice");
    }
    assert_eq!(seen, expected, "every job is claimed exactly once");
    assert!(claimed_by.iter().all(|ids| !ids.is_empty()), "both processes claimed jobs: {:?}", sizes(&claimed_by));
    let counts = store.queue_counts().await.expect("counts");
    assert_eq!(counts[0].succeeded, JOBS as u64, "every job succeeded once: {counts:?}");
    assert_eq!(counts[0].get(JobState::Running), 0);
    println!("two processes claimed {:?} of {JOBS} jobs, no job twice", sizes(&claimed_by));
}

fn sizes(claimed_by: &[Vec<String>]) -> Vec<usize> {
    claimed_by.iter().map(Vec::len).collect()
}
