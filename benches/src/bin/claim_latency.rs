//! Claim latency as the queue grows, for scripts:
//!
//! ```text
//! cargo run --release -p techhub-benches --bin claim_latency -- --store sqlite
//! ```
//!
//! The queue is filled to each depth in turn (1,000 to 1,000,000 due jobs by default); at each depth one task
//! times `--samples` claims, topping the queue up by one job before each (untimed), so the depth holds. One
//! line per depth with the 50th, 99th and 99.9th percentile and the maximum, in microseconds: a flat p99
//! from the first line to the last means a claim does not scan.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::Parser;
use serde_json::json;
use techhub_benches::{StoreKind, open_store};
use techhub_core::model::{Job, NewJob, WorkerId};

#[derive(Debug, Parser)]
#[command(about = "Measures claim latency against queue depth")]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Queue depths to measure at, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000,1000000")]
    depths: Vec<usize>,
    /// Claims timed at each depth.
    #[arg(long, default_value_t = 5_000)]
    samples: usize,
    /// Where a durable store keeps its files (a temporary directory by default).
    #[arg(long)]
    path: Option<PathBuf>,
}

fn due_job() -> Job {
    Job::new(NewJob::new("bench.noop", json!({ "n": 1 })), Utc::now() - TimeDelta::seconds(1)).expect("a job")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let dir = args.path.clone().unwrap_or_else(|| temporary.path().to_owned());
    let store = open_store(args.store, &dir, "claim-latency", Default::default());
    let queues = vec!["default".to_owned()];
    let worker = WorkerId::new("bench");
    let mut queued = 0;
    for depth in args.depths {
        while queued < depth {
            let batch = (depth - queued).min(10_000);
            store.enqueue_many((0..batch).map(|_| due_job()).collect()).await.expect("enqueue_many");
            queued += batch;
        }
        let mut latencies = Vec::with_capacity(args.samples);
        for _ in 0..args.samples {
            store.enqueue(due_job()).await.expect("top up");
            let start = Instant::now();
            let claimed = store.claim(&queues, &worker, Utc::now(), Duration::from_secs(600)).await.expect("claim");
            latencies.push(start.elapsed());
            assert!(claimed.is_some(), "a due job");
        }
        latencies.sort_unstable();
        let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_micros();
        println!(
            "store={} queued={depth} samples={} p50_claim_us={} p99_claim_us={} p999_claim_us={} max_claim_us={}",
            args.store.name(),
            args.samples,
            percentile(0.50),
            percentile(0.99),
            percentile(0.999),
            latencies.last().map_or(0, Duration::as_micros),
        );
    }
}
