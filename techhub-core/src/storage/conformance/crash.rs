//! Crash safety, the same check for every durable adapter: a child process writes and works until it is
//! killed with SIGKILL at a random moment; the parent reopens the store and checks that nothing the child
//! had acknowledged is missing, then that every job, including those killed mid-run, eventually succeeds.
//!
//! An adapter's `tests/crash.rs`, declared with `harness = false` in its `Cargo.toml`, is one call; the same
//! binary is both the parent and (started again with an environment variable set) the child:
//!
//! ```ignore
//! fn main() {
//!     techhub_core::storage::conformance::crash::main(|path| {
//!         Ok(std::sync::Arc::new(techhub_store_sqlite::SqliteStore::open(path)?))
//!     });
//! }
//! ```
//!
//! A store opened asynchronously (a server database: the "path" is then only a name, the adapter knows its
//! server) uses [`main_async`] the same way.
//!
//! Each round the child opens the store, runs eight workers on jobs that take a few milliseconds, enqueues
//! jobs from two tasks and inserts users from a third, and prints each id only once the store acknowledged
//! the write. `TECHHUB_CRASH_ROUNDS` changes the number of rounds (20 by default).

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use serde_json::{Value, json};

use crate::jobs::{WorkerConfig, handler_fn};
use crate::model::{Email, JobId, JobState, NewJob, Role, User, UserId};
use crate::storage::{DynStorage, StoreResult};
use crate::{Actor, TechHub};

/// Opens the adapter's store at a path (creating it on first use).
pub type Open = fn(&Path) -> StoreResult<DynStorage>;

/// Opens the adapter's store asynchronously (a server database, reached over the network).
pub type OpenAsync = fn(PathBuf) -> Pin<Box<dyn Future<Output = StoreResult<DynStorage>> + Send>>;

/// How a multi-process check opens the store: either way, from async code.
#[derive(Clone, Copy)]
pub(super) enum Opener {
    Sync(Open),
    Async(OpenAsync),
}

impl Opener {
    pub(super) async fn open(self, path: &Path) -> StoreResult<DynStorage> {
        match self {
            Self::Sync(open) => open(path),
            Self::Async(open) => open(path.to_owned()).await,
        }
    }
}

const CHILD_ENV: &str = "TECHHUB_CRASH_CHILD";
const ROUNDS_ENV: &str = "TECHHUB_CRASH_ROUNDS";
const DEFAULT_ROUNDS: usize = 20;
const KIND: &str = "crash.work";
/// Short, so jobs a killed child was running come back within the test.
const LEASE: Duration = Duration::from_secs(2);
/// Between two writes of a producer: enough writes to keep the store busy, few enough that checking all of
/// them after every round stays quick.
const PRODUCER_PAUSE: Duration = Duration::from_millis(2);
/// A child not killed by then (its parent died) ends by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// How long the parent waits for everything acknowledged to succeed after the last round.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the crash test (or, in the child process, the child's side).
///
/// # Panics
///
/// When the store loses an acknowledged write, fails to open, or does not bring every job to success:
/// that is the test failing.
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
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(open, Path::new(&path));
        return;
    }
    let rounds = std::env::var(ROUNDS_ENV).ok().and_then(|rounds| rounds.parse().ok()).unwrap_or(DEFAULT_ROUNDS);
    let dir = tempfile::tempdir().expect("a scratch directory");
    parent(open, &dir.path().join("store"), rounds);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// A hub over `store` whose handler takes a few milliseconds, so a kill often lands mid-job.
fn hub(store: DynStorage) -> TechHub {
    TechHub::builder()
        .shared_storage(store)
        .handler(
            KIND,
            handler_fn(|_ctx| async {
                let pause = rand::rng().random_range(1..20);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                Ok(Value::Null)
            }),
        )
        .build()
        .expect("a hub")
}

fn worker_config() -> WorkerConfig {
    let mut config = WorkerConfig::default().queue("default", 8);
    config.lease = LEASE;
    config.heartbeat_interval = Duration::from_millis(500);
    config.poll_interval = Duration::from_millis(50);
    config.rescue_interval = Duration::from_millis(200);
    config.retention = None;
    config
}

/// The child: works and writes until killed, printing every acknowledged write as a line.
fn child(open: Opener, path: &Path) {
    runtime().block_on(async {
        let hub = hub(open.open(path).await.expect("the store opens in the child"));
        let _workers = hub.start_workers(worker_config()).expect("workers start");
        announce("ready");
        let jobs = |hub: TechHub| async move {
            loop {
                // Attempts to spare: a job may be killed mid-run in many rounds and must still succeed.
                let spec = NewJob::new(KIND, json!({})).max_attempts(1_000);
                let job = hub.jobs().enqueue(&Actor::System, spec).await.expect("enqueue");
                announce(&format!("job {}", job.id));
                tokio::time::sleep(PRODUCER_PAUSE).await;
            }
        };
        let users = |hub: TechHub| async move {
            loop {
                let email = Email::parse(&format!("crash-{}@example.com", rand::random::<u64>())).expect("an email");
                let user = User::new(email, "Crash Test", Role::User, Utc::now());
                let user = hub.storage().insert_user(user, Vec::new()).await.expect("insert user");
                announce(&format!("user {} {}", user.id, user.email));
                tokio::time::sleep(PRODUCER_PAUSE).await;
            }
        };
        let work = async {
            tokio::join!(
                tokio::spawn(jobs(hub.clone())),
                tokio::spawn(jobs(hub.clone())),
                tokio::spawn(users(hub.clone()))
            )
        };
        let _ = tokio::time::timeout(CHILD_LIFETIME, work).await;
    });
}

/// One line on stdout, written whole (the lock is held for the line and its newline).
fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// What the children acknowledged, over all rounds.
#[derive(Default)]
struct Acknowledged {
    users: HashMap<UserId, String>,
    jobs: Vec<JobId>,
}

impl Acknowledged {
    fn record(&mut self, line: &str) {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("job"), Some(id), None) => self.jobs.push(id.parse().expect("a job id")),
            (Some("user"), Some(id), Some(email)) => {
                self.users.insert(id.parse().expect("a user id"), email.to_owned());
            }
            _ => panic!("the child printed an unexpected line: {line:?}"),
        }
    }
}

fn parent(open: Opener, path: &Path, rounds: usize) {
    let runtime = runtime();
    let mut acknowledged = Acknowledged::default();
    let mut rng = rand::rng();
    // The parent creates the store, so every child opens an existing one (a server database's opener makes
    // the database here and leaves at `path` what its children need to find it).
    runtime.block_on(async { drop(open.open(path).await.expect("the parent creates the store")) });
    for round in 1..=rounds {
        let (mut child, lines) = spawn_child(path);
        let ready = lines.recv_timeout(Duration::from_secs(30));
        assert_eq!(ready.as_deref(), Ok("ready"), "round {round}: the child did not start");
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("the child is reaped");
        // Every complete line the child wrote before it died is still in the pipe.
        for line in lines {
            acknowledged.record(&line);
        }
        runtime.block_on(check_acknowledged(open, path, &acknowledged, round));
    }
    runtime.block_on(settle(open, path, &acknowledged));
}

/// Starts the child, with a thread passing on each complete line it prints (a line cut by the kill is not
/// an acknowledgement and is dropped).
fn spawn_child(path: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().expect("this test's executable"))
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("the child's stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.ends_with(b"\n") => {
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    if sender.send(text).is_err() {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });
    (child, receiver)
}

/// Reopens the store after a kill: it opens, and holds every user and job acknowledged so far.
async fn check_acknowledged(open: Opener, path: &Path, acknowledged: &Acknowledged, round: usize) {
    let store =
        open.open(path).await.unwrap_or_else(|error| panic!("round {round}: the store does not reopen: {error}"));
    store.health().await.unwrap_or_else(|error| panic!("round {round}: the reopened store is unhealthy: {error}"));
    for (id, email) in &acknowledged.users {
        let user = store.get_user(*id).await.expect("get_user");
        let user = user.unwrap_or_else(|| panic!("round {round}: acknowledged user {id} is lost"));
        assert_eq!(user.email.as_str(), email, "round {round}: user {id} changed");
        let by_email = store.get_user_by_email(&user.email).await.expect("get_user_by_email");
        assert_eq!(by_email.map(|user| user.id), Some(*id), "round {round}: the email index lost user {id}");
    }
    for id in &acknowledged.jobs {
        let job = store.get_job(*id).await.expect("get_job");
        assert!(job.is_some(), "round {round}: acknowledged job {id} is lost");
    }
    eprintln!(
        "crash round {round}: store reopened with all {} users and {} jobs acknowledged so far",
        acknowledged.users.len(),
        acknowledged.jobs.len()
    );
}

/// After the last kill: workers in this process recover the jobs left running (once their lease ends) and
/// run everything; every acknowledged job must end `succeeded`, and some must have been recovered.
async fn settle(open: Opener, path: &Path, acknowledged: &Acknowledged) {
    let hub = hub(open.open(path).await.expect("the store reopens for the last time"));
    let workers = hub.start_workers(worker_config()).expect("workers start");
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let counts = hub.storage().queue_counts().await.expect("queue_counts");
        if counts.iter().all(|queue| queue.queued == 0 && queue.running == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs still unfinished after {SETTLE_TIMEOUT:?}: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.shutdown().await;
    let mut recovered = 0;
    for id in &acknowledged.jobs {
        let job = hub.storage().get_job(*id).await.expect("get_job").expect("the job exists");
        assert_eq!(job.state, JobState::Succeeded, "job {id} ended {:?}: {:?}", job.state, job.last_error);
        if job.attempt > 1 {
            recovered += 1;
        }
    }
    assert!(recovered > 0, "no job was killed mid-run, so recovery went untested");
    eprintln!(
        "crash test: {} users and {} jobs acknowledged, none lost; {recovered} jobs recovered after a kill \
         and succeeded",
        acknowledged.users.len(),
        acknowledged.jobs.len()
    );
}
