//! Two OS processes claiming from one store never get the same job: the same check for every store that
//! several processes can open at once (a SQLite file, a PostgreSQL database).
//!
//! The parent fills a queue with 4,000 jobs, starts two copies of its own binary (the child side runs when
//! an environment variable names the store) and lets them go at the same moment; each claims and completes
//! jobs until none is left, printing every job it claimed. No id may appear twice, every job must be
//! claimed, and both processes must have won some.
//!
//! An adapter's `tests/two_processes.rs`, declared with `harness = false` in its `Cargo.toml`, is one call,
//! with the same kind of opener as the [crash check](super::crash):
//!
//! ```ignore
//! fn main() {
//!     techhub_core::storage::conformance::two_processes::main(|path| {
//!         Ok(std::sync::Arc::new(techhub_store_sqlite::SqliteStore::open(path)?))
//!     });
//! }
//! ```

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::crash::{Open, OpenAsync, Opener};
use crate::model::{Job, JobState, NewJob, WorkerId};
use crate::storage::DynStorage;

const CHILD_ENV: &str = "TECHHUB_CLAIMER_STORE";
const GO_ENV: &str = "TECHHUB_CLAIMER_GO";
const JOBS: usize = 4_000;
const LEASE: Duration = Duration::from_secs(3_600);
/// How long a child may take to open the store and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the check (or, in a child process, the child's side) on a store opened at a path.
///
/// # Panics
///
/// When a job is claimed twice or never, when a process claims nothing, or when the store fails: that is the
/// test failing.
pub fn main(open: Open) {
    run(Opener::Sync(open));
}

/// [`main`] for a store opened asynchronously.
///
/// # Panics
///
/// As [`main`].
pub fn main_async(open: OpenAsync) {
    run(Opener::Async(open));
}

fn run(open: Opener) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match (std::env::var_os(CHILD_ENV), std::env::var_os(GO_ENV)) {
        (Some(store), Some(go)) => runtime.block_on(claim_all(open, Path::new(&store), Path::new(&go))),
        _ => runtime.block_on(parent(open)),
    }
}

/// The child: waits for the go file, then claims and completes until the queue is empty.
async fn claim_all(open: Opener, path: &Path, go: &Path) {
    let store = open.open(path).await.expect("the child opens the store");
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

async fn parent(open: Opener) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("store");
    let go = dir.path().join("go");
    let store = open.open(&path).await.expect("the store opens");
    let now = Utc::now();
    let jobs: Vec<Job> =
        (0..JOBS).map(|n| Job::new(NewJob::new("shared.work", json!({ "n": n })), now).expect("a valid job")).collect();
    let expected: HashSet<String> = jobs.iter().map(|job| job.id.to_string()).collect();
    store.enqueue_many(jobs).await.expect("enqueued");

    // Both are open and waiting before either may claim, so they really compete.
    let claimers: Vec<Claimer> = (0..2).map(|_| Claimer::start(&path, &go)).collect();
    std::fs::write(&go, b"").expect("the go file");
    let claimed_by: Vec<Vec<String>> = claimers.into_iter().map(Claimer::finish).collect();

    let mut seen = HashSet::new();
    for id in claimed_by.iter().flatten() {
        assert!(seen.insert(id.clone()), "job {id} was claimed twice");
    }
    assert_eq!(seen, expected, "every job is claimed exactly once");
    assert!(claimed_by.iter().all(|ids| !ids.is_empty()), "both processes claimed jobs: {:?}", sizes(&claimed_by));
    check_counts(&store).await;
    println!("two processes claimed {:?} of {JOBS} jobs, no job twice", sizes(&claimed_by));
}

async fn check_counts(store: &DynStorage) {
    let counts = store.queue_counts().await.expect("counts");
    assert_eq!(counts[0].succeeded, JOBS as u64, "every job succeeded once: {counts:?}");
    assert_eq!(counts[0].get(JobState::Running), 0);
}

/// A child process, and the thread reading the ids it claims.
struct Claimer {
    child: Child,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl Claimer {
    /// Starts a copy of this binary as a claimer and waits until it is ready.
    fn start(path: &Path, go: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this executable"))
            .env(CHILD_ENV, path)
            .env(GO_ENV, go)
            .stdout(Stdio::piped())
            .spawn()
            .expect("a claimer starts");
        let stdout = child.stdout.take().expect("stdout");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            assert_eq!(lines.next().expect("a first line").expect("text"), "ready");
            ready_tx.send(()).expect("the parent waits");
            lines.map(|line| line.expect("text")).collect::<Vec<String>>()
        });
        ready_rx.recv_timeout(READY_TIMEOUT).expect("the claimer is ready");
        Self { child, reader }
    }

    /// Waits for the claimer to end and answers the ids it claimed.
    fn finish(mut self) -> Vec<String> {
        assert!(self.child.wait().expect("the claimer ends").success(), "a claimer failed");
        self.reader.join().expect("its output")
    }
}

fn sizes(claimed_by: &[Vec<String>]) -> Vec<usize> {
    claimed_by.iter().map(Vec::len).collect()
}
