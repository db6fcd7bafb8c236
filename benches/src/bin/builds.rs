//! The build engine's costs, for scripts:
//!
//! ```text
//! cargo run --release -p techhub-benches --bin builds -- --store sqlite
//! ```
//!
//! Three phases, one output line each:
//! 1. `log`: `--lines` log lines (60 bytes each) appended through `BuildService::log_writer` by one writer
//!    (what a chatty module produces), until the last one is stored: lines per second. Every batch is one
//!    store write, acknowledged durable under the store's setting (SQLite: WAL, `synchronous = NORMAL`).
//! 2. `dag`: a build of `--modules` modules in a wide DAG (one root, the rest after it, a sink after all of
//!    them) run by a no-op executor with `--module-concurrency`: wall time per module from create to the
//!    `build.succeeded` event, i.e. the runner's overhead (two or three build writes per module, events).
//! 3. `event_latency`: a real server on 127.0.0.1 and a real WebSocket client; a `sh` command prints the
//!    current time in nanoseconds every 150 ms (`--samples` lines); latency is the client's receive time minus
//!    the time in the line (p50/p99, microseconds). Run with `--store` of the phase's store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::Value;
use techhub_benches::{DurabilityArg, StoreKind, durability_label, open_store};
use techhub_core::builds::{BuildExecutor, ModuleExit, ModuleRun, NewBuild, NewModule, ProcessExecutor};
use techhub_core::events::EventKind;
use techhub_core::jobs::{WorkerConfig, WorkerHandle};
use techhub_core::model::{LogStream, NewLogLine};
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, BuildConfig, Config, TechHub};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Measures TechHub's build engine")]
struct Args {
    /// The store to measure.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Log lines in the log phase.
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Modules in the DAG phase.
    #[arg(long, default_value_t = 100)]
    modules: usize,
    /// Modules of the DAG build running at once.
    #[arg(long, default_value_t = 16)]
    module_concurrency: usize,
    /// Lines (latency samples) in the event phase.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Where durable stores keep their files (a temporary directory by default).
    #[arg(long)]
    path: Option<PathBuf>,
}

/// Runs nothing: every module succeeds at once, so a build measures the runner alone.
struct NoopExecutor;

#[async_trait]
impl BuildExecutor for NoopExecutor {
    async fn run(&self, _run: ModuleRun) -> ModuleExit {
        ModuleExit::succeeded()
    }

    fn name(&self) -> &'static str {
        "noop"
    }
}

fn workers(hub: &TechHub) -> WorkerHandle {
    let mut config = WorkerConfig::default().queue(techhub_core::builds::BUILD_QUEUE, 2);
    config.poll_interval = Duration::from_millis(20);
    hub.start_workers(config).expect("workers start")
}

async fn log_phase(store: DynStorage, lines: usize) -> f64 {
    let config = Config::default().builds(BuildConfig::default().log_max_bytes(1 << 40));
    let hub = TechHub::builder().shared_storage(store).config(config).build().expect("hub");
    let build = hub
        .builds()
        .create(&Actor::System, NewBuild::new("bench", vec![NewModule::new("chatty")]))
        .await
        .expect("a build");
    let writer = hub.builds().log_writer(&Actor::System, build.id, Some("chatty")).await.expect("a writer");
    let at = hub.now();
    let started = Instant::now();
    let chunk = 1_000;
    for first in (0..lines).step_by(chunk) {
        let batch = (first..(first + chunk).min(lines))
            .map(|n| NewLogLine {
                at,
                module: Some("chatty".to_owned()),
                stream: LogStream::Stdout,
                text: format!("line {n:>10} of the benchmark's chatty module, 60 bytes."),
            })
            .collect();
        writer.write(batch).await.expect("queued");
    }
    writer.flush().await.expect("stored");
    let elapsed = started.elapsed();
    let stored = hub.storage().read_log(build.id, lines as u64 - 1, 1).await.expect("reads");
    assert_eq!(stored.len(), 1, "the last line is stored");
    lines as f64 / elapsed.as_secs_f64()
}

async fn dag_phase(store: DynStorage, modules: usize, concurrency: usize) -> (f64, Duration) {
    let config = Config::default().builds(BuildConfig::default().module_concurrency(concurrency));
    let hub =
        TechHub::builder().shared_storage(store).config(config).build_executor(NoopExecutor).build().expect("hub");
    let _workers = workers(&hub);
    let mut events = hub.subscribe();
    let middle = modules.saturating_sub(2).max(1);
    let mut spec = vec![NewModule::new("root").command("noop")];
    let names: Vec<String> = (0..middle).map(|n| format!("m{n}")).collect();
    spec.extend(names.iter().map(|name| NewModule::new(name.clone()).command("noop").depends_on(["root"])));
    spec.push(NewModule::new("sink").command("noop").depends_on(names.clone()));
    let count = spec.len();
    let started = Instant::now();
    let build = hub.builds().create(&Actor::System, NewBuild::new("bench", spec)).await.expect("a build");
    loop {
        let event = events.recv().await.expect("the bus is open");
        if event.subject == *build.id.as_uuid() && event.kind == EventKind::BuildSucceeded {
            break;
        }
    }
    let elapsed = started.elapsed();
    (elapsed.as_secs_f64() * 1_000.0 / count as f64, elapsed)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn latency_phase(store: DynStorage, samples: usize) -> (u64, u64, usize) {
    let hub = TechHub::builder().shared_storage(store).build_executor(ProcessExecutor::new()).build().expect("hub");
    let _workers = workers(&hub);
    let password = "benchmark admin password";
    hub.users().ensure_admin("bench@example.com", password).await.expect("admin");
    let token = hub.auth().login("bench@example.com", password).await.expect("signs in").access_token;
    let app = techhub_axum::router(hub.clone(), techhub_axum::HttpConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    let url = format!("ws://{addr}/api/v1/events?access_token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
    let command = format!("i=0; while [ $i -lt {samples} ]; do date +%s%N; sleep 0.15; i=$((i+1)); done");
    let spec = NewBuild::new("bench", vec![NewModule::new("clock").command(command)]);
    let build = hub.builds().create(&Actor::System, spec).await.expect("a build");
    let id = build.id.to_string();
    let mut latencies = Vec::with_capacity(samples);
    while latencies.len() < samples {
        let Some(Ok(Message::Text(text))) = socket.next().await else { continue };
        let received = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64;
        let event: Value = serde_json::from_str(&text).expect("JSON");
        if event["type"] != "build.log" || event["data"]["build_id"] != id.as_str() {
            continue;
        }
        for line in event["data"]["lines"].as_array().into_iter().flatten() {
            if let Some(sent) = line["text"].as_str().and_then(|text| text.parse::<u64>().ok()) {
                latencies.push(received.saturating_sub(sent) / 1_000);
            }
        }
    }
    latencies.sort_unstable();
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.len())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = args.path.clone().unwrap_or_else(|| temp.path().to_owned());
    let durability = durability_label(args.store, DurabilityArg::Normal);
    let store = args.store.name();

    let lines_per_s = log_phase(open_store(args.store, &dir, "builds-log", DurabilityArg::Normal), args.lines).await;
    println!("phase=log store={store} durability={durability} lines={} lines_per_s={lines_per_s:.0}", args.lines);

    let (per_module_ms, total) = dag_phase(
        open_store(args.store, &dir, "builds-dag", DurabilityArg::Normal),
        args.modules,
        args.module_concurrency,
    )
    .await;
    println!(
        "phase=dag store={store} modules={} module_concurrency={} total_ms={} per_module_ms={per_module_ms:.3}",
        args.modules,
        args.module_concurrency,
        total.as_millis()
    );

    let (p50, p99, samples) =
        latency_phase(open_store(args.store, &dir, "builds-events", DurabilityArg::Normal), args.samples).await;
    println!("phase=event_latency store={store} samples={samples} p50_us={p50} p99_us={p99}");
}
