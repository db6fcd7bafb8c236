//! The job engine's throughput and latency, for scripts:
//!
//! ```text
//! cargo run --release -p techhub-benches --bin jobs -- --store sqlite --jobs 100000 --workers 8
//! ```
//!
//! Every phase runs on a fresh store (`--store memory|sqlite|sled`, the durable ones in files under `--path`, a
//! temporary directory by default). Enqueues are issued by `--producers` concurrent tasks, each acknowledged
//! only once durable under the store's setting (`--durability normal|full` for SQLite); `--batch N` enqueues
//! N jobs per `enqueue_many` call instead of one per `enqueue`. Four phases, one output line:
//! 1. `enqueue_per_s`: N jobs enqueued through `JobService`, no workers running;
//! 2. `process_per_s`: then `--workers` workers run a no-op handler until all N succeeded;
//! 3. `end_to_end_per_s`: N jobs enqueued while the workers run, until all succeeded;
//! 4. `p50/p99_start_latency_us`: with idle workers, 2,000 jobs enqueued one at a time, from just before
//!    `enqueue` to the handler's first instruction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use techhub_benches::{DurabilityArg, StoreKind, durability_label, open_store};
use techhub_core::jobs::{WorkerConfig, handler_fn};
use techhub_core::model::NewJob;
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, TechHub};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(about = "Measures TechHub's job engine")]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum, default_value = "memory")]
    store: StoreKind,
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

/// A fresh store named `phase` in `dir`.
fn open(args: &Args, dir: &Path, phase: &str) -> DynStorage {
    open_store(args.store, dir, phase, args.durability)
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
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let dir = args.path.clone().unwrap_or_else(|| temporary.path().to_owned());

    // 1 and 2: enqueue with no workers, then process.
    let hub_a = hub(open(&args, &dir, "queue-then-process"), None);
    let start = Instant::now();
    enqueue_all(&hub_a, &args, args.jobs).await;
    let enqueue_time = start.elapsed();
    let start = Instant::now();
    let workers = hub_a.start_workers(runtime_config(args.workers)).expect("runtime");
    wait_until_succeeded(&hub_a, args.jobs).await;
    let process_time = start.elapsed();
    workers.shutdown().await;

    // 3: enqueue while the workers run.
    let hub_b = hub(open(&args, &dir, "end-to-end"), None);
    let workers = hub_b.start_workers(runtime_config(args.workers)).expect("runtime");
    let start = Instant::now();
    enqueue_all(&hub_b, &args, args.jobs).await;
    wait_until_succeeded(&hub_b, args.jobs).await;
    let end_to_end_time = start.elapsed();
    workers.shutdown().await;

    // 4: idle workers, one job at a time.
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let hub_c = hub(open(&args, &dir, "latency"), Some(started_tx));
    let workers = hub_c.start_workers(runtime_config(args.workers)).expect("runtime");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES {
        let before = Instant::now();
        hub_c.jobs().enqueue(&Actor::System, NewJob::new("bench.noop", json!({ "n": n }))).await.expect("enqueue");
        let started = started_rx.recv().await.expect("the handler ran");
        latencies.push(started.duration_since(before));
        // Let the attempt settle so the next enqueue finds idle workers.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    workers.shutdown().await;
    latencies.sort_unstable();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_micros();

    println!(
        "store={} durability={} jobs={} workers={} producers={} batch={} enqueue_per_s={} process_per_s={} end_to_end_per_s={} p50_start_latency_us={} p99_start_latency_us={}",
        args.store.name(),
        durability_label(args.store, args.durability),
        args.jobs,
        args.workers,
        args.producers,
        args.batch,
        per_second(args.jobs, enqueue_time),
        per_second(args.jobs, process_time),
        per_second(args.jobs, end_to_end_time),
        percentile(0.50),
        percentile(0.99),
    );
}
