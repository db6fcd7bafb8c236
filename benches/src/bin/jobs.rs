//! The job engine's throughput and latency, for scripts:
//!
//! ```text
//! cargo run --release -p techhub-benches --bin jobs -- --store sqlite --jobs 100000 --workers 8
//! ```
//!
//! Every phase runs on a fresh store (`--store memory|sqlite|sled`, the durable ones in files under `--path`, a
//! temporary directory by default; or `--store postgres --url postgres://…`, whose job tables are emptied
//! before each phase). Enqueues are issued by `--producers` concurrent tasks, each acknowledged
//! only once durable under the store's setting (`--durability normal|full` for SQLite); `--batch N` enqueues
//! N jobs per `enqueue_many` call instead of one per `enqueue`. Four phases, one output line:
//! 1. `enqueue_per_s`: N jobs enqueued through `JobService`, no workers running;
//! 2. `process_per_s`: then `--workers` workers run a no-op handler until all N succeeded;
//! 3. `end_to_end_per_s`: N jobs enqueued while the workers run, until all succeeded;
//! 4. `p50/p99_start_latency_us`: with idle workers, 2,000 jobs enqueued one at a time, from just before
//!    `enqueue` to the handler's first instruction.
//!
//! With PostgreSQL, `--processes N` runs the workers in N other OS processes (copies of this binary, `--workers`
//! split between them) while this one only enqueues and measures: several app instances sharing one
//! database, woken across processes by `LISTEN/NOTIFY`. The start latency is then from just before `enqueue`
//! to the job's `started_at` as the worker's process recorded it (one machine, one clock).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use techhub_benches::{DurabilityArg, StoreKind, durability_label, open_store};
use techhub_core::jobs::{WorkerConfig, handler_fn};
use techhub_core::model::NewJob;
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, TechHub};
use techhub_store_postgres::{PostgresOptions, PostgresStore};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(about = "Measures TechHub's job engine")]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum, default_value = "memory")]
    store: Backend,
    /// The PostgreSQL database (`--store postgres`); its job tables are emptied before each phase.
    #[arg(long)]
    url: Option<String>,
    /// PostgreSQL only: OS processes running the workers (`--workers` split between them); 0 runs them in this
    /// process.
    #[arg(long, default_value_t = 0)]
    processes: usize,
    /// Internal: run as one of the worker processes of `--processes`.
    #[arg(long, hide = true)]
    worker_process: bool,
    /// Jobs per phase.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Workers on the queue.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Concurrent tasks enqueuing.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Jobs per `enqueue_many` call; 0 enqueues one job per call.
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Where durable stores keep their files (a temporary directory by default).
    #[arg(long)]
    path: Option<PathBuf>,
    /// SQLite's commit durability.
    #[arg(long, value_enum, default_value = "normal")]
    durability: DurabilityArg,
}

const LATENCY_SAMPLES: usize = 2_000;

/// The stores this bench runs on: the embedded ones, and PostgreSQL at `--url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Memory,
    Sqlite,
    Sled,
    Postgres,
}

impl Backend {
    fn embedded(self) -> Option<StoreKind> {
        match self {
            Self::Memory => Some(StoreKind::Memory),
            Self::Sqlite => Some(StoreKind::Sqlite),
            Self::Sled => Some(StoreKind::Sled),
            Self::Postgres => None,
        }
    }

    fn name(self) -> &'static str {
        self.embedded().map_or("postgres", StoreKind::name)
    }
}

fn url(args: &Args) -> &str {
    args.url.as_deref().expect("--store postgres needs --url postgres://…")
}

async fn connect(url: &str) -> DynStorage {
    Arc::new(PostgresStore::connect(url, PostgresOptions::default().max_connections(32)).await.expect("connects"))
}

/// A fresh store named `phase` in `dir` (PostgreSQL: the database at `--url`, its job tables emptied).
async fn open(args: &Args, dir: &Path, phase: &str) -> DynStorage {
    let Some(kind) = args.store.embedded() else {
        let store = connect(url(args)).await;
        let (client, connection) = tokio_postgres::connect(url(args), tokio_postgres::NoTls).await.expect("connects");
        tokio::spawn(connection);
        client.batch_execute("TRUNCATE jobs, job_artifacts, job_counts").await.expect("the job tables are emptied");
        return store;
    };
    open_store(kind, dir, phase, args.durability)
}

/// The worker processes of `--processes`, stopped (gracefully) when dropped.
struct WorkerProcesses(Vec<std::process::Child>);

impl WorkerProcesses {
    /// Starts them and waits until each runs its workers; none when `--processes` is 0.
    fn start(args: &Args) -> Self {
        use std::io::BufRead;
        let each = args.workers.div_ceil(args.processes.max(1));
        let children = (0..args.processes)
            .map(|_| {
                let mut child = std::process::Command::new(std::env::current_exe().expect("this executable"))
                    .args([
                        "--store",
                        "postgres",
                        "--url",
                        url(args),
                        "--workers",
                        &each.to_string(),
                        "--worker-process",
                    ])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("a worker process starts");
                let stdout = child.stdout.take().expect("its stdout");
                let mut line = String::new();
                std::io::BufReader::new(stdout).read_line(&mut line).expect("its ready line");
                assert_eq!(line.trim(), "ready", "the worker process started");
                child
            })
            .collect();
        Self(children)
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for child in &mut self.0 {
            drop(child.stdin.take());
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// One of the worker processes: runs the workers until the parent closes its stdin.
async fn worker_process(args: &Args) {
    let hub = hub(connect(url(args)).await, None);
    let workers = hub.start_workers(runtime_config(args.workers)).expect("runtime");
    println!("ready");
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    workers.shutdown().await;
}

/// Starts the phase's workers: in this process, or in `--processes` others.
enum Workers {
    Here(techhub_core::jobs::WorkerHandle),
    Elsewhere(WorkerProcesses),
}

impl Workers {
    fn start(hub: &TechHub, args: &Args) -> Self {
        if args.processes > 0 {
            Self::Elsewhere(WorkerProcesses::start(args))
        } else {
            Self::Here(hub.start_workers(runtime_config(args.workers)).expect("runtime"))
        }
    }

    async fn stop(self) {
        match self {
            Self::Here(handle) => handle.shutdown().await,
            Self::Elsewhere(processes) => drop(processes),
        }
    }
}

fn runtime_config(workers: usize) -> WorkerConfig {
    let mut config = WorkerConfig::default().queue("default", workers);
    config.retention = None;
    config
}

fn hub(store: DynStorage, started: Option<mpsc::UnboundedSender<Instant>>) -> TechHub {
    TechHub::builder()
        .shared_storage(store)
        .handler(
            "bench.noop",
            handler_fn(move |_ctx| {
                let started = started.clone();
                async move {
                    if let Some(started) = started {
                        let _ = started.send(Instant::now());
                    }
                    Ok(Value::Null)
                }
            }),
        )
        .build()
        .expect("a hub over a fresh store")
}

/// Enqueues `jobs` jobs from `args.producers` concurrent tasks, one or `args.batch` per call.
async fn enqueue_all(hub: &TechHub, args: &Args, jobs: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let per_call = args.batch.max(1);
    let producers: Vec<_> = (0..args.producers.max(1))
        .map(|_| {
            let (hub, next, batch) = (hub.clone(), next.clone(), args.batch);
            tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(per_call, Ordering::Relaxed);
                    if first >= jobs {
                        return;
                    }
                    let specs =
                        (first..(first + per_call).min(jobs)).map(|n| NewJob::new("bench.noop", json!({ "n": n })));
                    if batch == 0 {
                        for spec in specs {
                            hub.jobs().enqueue(&Actor::System, spec).await.expect("enqueue");
                        }
                    } else {
                        hub.jobs().enqueue_many(&Actor::System, specs.collect()).await.expect("enqueue_many");
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.expect("a producer finished");
    }
}

async fn wait_until_succeeded(hub: &TechHub, jobs: usize) {
    loop {
        let counts = hub.storage().queue_counts().await.expect("counts");
        if counts.iter().map(|queue| queue.succeeded).sum::<u64>() as usize >= jobs {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn per_second(count: usize, elapsed: Duration) -> u64 {
    (count as f64 / elapsed.as_secs_f64()) as u64
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.worker_process {
        worker_process(&args).await;
        return;
    }
    assert!(args.processes == 0 || args.store == Backend::Postgres, "--processes needs --store postgres");
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let dir = args.path.clone().unwrap_or_else(|| temporary.path().to_owned());

    // 1 and 2: enqueue with no workers, then process.
    let hub_a = hub(open(&args, &dir, "queue-then-process").await, None);
    let start = Instant::now();
    enqueue_all(&hub_a, &args, args.jobs).await;
    let enqueue_time = start.elapsed();
    let start = Instant::now();
    let workers = Workers::start(&hub_a, &args);
    wait_until_succeeded(&hub_a, args.jobs).await;
    let process_time = start.elapsed();
    workers.stop().await;

    // 3: enqueue while the workers run.
    let hub_b = hub(open(&args, &dir, "end-to-end").await, None);
    let workers = Workers::start(&hub_b, &args);
    let start = Instant::now();
    enqueue_all(&hub_b, &args, args.jobs).await;
    wait_until_succeeded(&hub_b, args.jobs).await;
    let end_to_end_time = start.elapsed();
    workers.stop().await;

    // 4: idle workers, one job at a time.
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let hub_c = hub(open(&args, &dir, "latency").await, Some(started_tx));
    let workers = Workers::start(&hub_c, &args);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES {
        let before = Instant::now();
        let enqueued_at = chrono::Utc::now();
        let job =
            hub_c.jobs().enqueue(&Actor::System, NewJob::new("bench.noop", json!({ "n": n }))).await.expect("enqueue");
        if args.processes == 0 {
            let started = started_rx.recv().await.expect("the handler ran");
            latencies.push(started.duration_since(before));
        } else {
            // Run in another process: its claim's `started_at` says when.
            loop {
                let stored = hub_c.storage().get_job(job.id).await.expect("get_job").expect("the job");
                if let Some(started_at) = stored.started_at {
                    latencies.push((started_at - enqueued_at).to_std().unwrap_or_default());
                    break;
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        }
        // Let the attempt settle so the next enqueue finds idle workers.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    workers.stop().await;
    latencies.sort_unstable();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_micros();

    println!(
        "store={} durability={} jobs={} workers={}{} producers={} batch={} enqueue_per_s={} process_per_s={} end_to_end_per_s={} p50_start_latency_us={} p99_start_latency_us={}",
        args.store.name(),
        args.store.embedded().map_or("server-commit", |kind| durability_label(kind, args.durability)),
        args.jobs,
        args.workers,
        if args.processes > 0 { format!(" worker_processes={}", args.processes) } else { String::new() },
        args.producers,
        args.batch,
        per_second(args.jobs, enqueue_time),
        per_second(args.jobs, process_time),
        per_second(args.jobs, end_to_end_time),
        percentile(0.50),
        percentile(0.99),
    );
}
