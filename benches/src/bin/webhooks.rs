//! Webhook delivery throughput, for scripts:
//!
//! ```text
//! cargo run --release -p techhub-benches --bin webhooks [-- --deliveries 5000 --workers 32 --store memory --senders 1]
//! ```
//!
//! Prints one line: the cost of one Standard Webhooks signature (HMAC-SHA256 over `id.timestamp.body` of a
//! 1 KiB body, base64), and signed deliveries per second end to end to a receiver on 127.0.0.1: each delivery
//! is a stored notification, a `notification.send` job claimed by a worker, a signed POST over a kept-alive
//! connection, and the recorded attempt. The clock starts when the notifications are queued and stops when the
//! receiver has answered the last one and every record says `sent`; `queued_s` says when the last one was queued
//! (by `--senders` tasks at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use clap::Parser;
use techhub_core::jobs::WorkerConfig;
use techhub_core::model::{Channel, EndpointKind, NotificationStatus};
use techhub_core::notify::signing::{SigningKey, generate_secret};
use techhub_core::notify::{AddressPolicy, EMAIL_QUEUE, NewEndpoint};
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, Config, NotifyConfig, TechHub};

#[derive(Debug, Parser)]
struct Args {
    /// Deliveries to make.
    #[arg(long, default_value_t = 5000)]
    deliveries: usize,
    /// Workers on the delivery queue.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// `memory`, `sqlite` or `sled`.
    #[arg(long, default_value = "memory")]
    store: String,
    /// Tasks queueing the notifications at once (each queues its share one after another, as request handlers
    /// would): with one, the figure can be bounded by one caller's queueing round trips rather than delivery.
    #[arg(long, default_value_t = 1)]
    senders: usize,
}

fn store(kind: &str, dir: &std::path::Path) -> DynStorage {
    match kind {
        "sqlite" => Arc::new(techhub_store_sqlite::SqliteStore::open(dir.join("bench.db")).expect("SQLite opens")),
        "sled" => Arc::new(techhub_store_sled::SledStore::open(dir.join("bench.sled")).expect("sled opens")),
        _ => Arc::new(techhub_store_memory::MemoryStore::new()),
    }
}

fn signature_ns() -> f64 {
    let key = SigningKey::new(&generate_secret()).expect("a fresh secret is valid");
    let body = vec![b'x'; 1024];
    let rounds = 200_000u32;
    let started = Instant::now();
    for n in 0..rounds {
        std::hint::black_box(key.sign("msg_2bPNbMmZ4Sl5OPrTY8XqTjbxQSg", i64::from(n), std::hint::black_box(&body)));
    }
    started.elapsed().as_nanos() as f64 / f64::from(rounds)
}

async fn count(State(received): State<Arc<AtomicU64>>) -> StatusCode {
    received.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sign_ns = signature_ns();

    let received = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().fallback(count).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });

    let dir = tempfile::tempdir().expect("a temporary directory");
    let notify = NotifyConfig::default().address_policy(AddressPolicy::public_only().allow_loopback());
    let hub = TechHub::builder()
        .shared_storage(store(&args.store, dir.path()))
        .config(Config::default().notify(notify))
        .build()
        .expect("hub");
    let new = NewEndpoint {
        kind: EndpointKind::Webhook,
        url: format!("http://{address}/hooks"),
        description: "bench".to_owned(),
        event_types: vec!["build.failed".to_owned()],
    };
    let (endpoint, _) = hub.notifications().create_endpoint(&Actor::System, new).await.expect("endpoint");
    let recipient = endpoint.id.to_string();

    let mut config = WorkerConfig::default().queue(EMAIL_QUEUE, args.workers);
    config.poll_interval = Duration::from_millis(50);
    let workers = hub.start_workers(config).expect("workers");

    let body =
        serde_json::json!({ "build_id": "0190f0c0-0000-7000-8000-000000000001", "project": "web", "status": "failed" })
            .to_string();
    let started = Instant::now();
    let senders = args.senders.max(1);
    let mut sending = tokio::task::JoinSet::new();
    for sender in 0..senders {
        let share = args.deliveries / senders + usize::from(sender < args.deliveries % senders);
        let (hub, recipient, body) = (hub.clone(), recipient.clone(), body.clone());
        sending.spawn(async move {
            let mut ids = Vec::with_capacity(share);
            for _ in 0..share {
                let queued = hub
                    .notifications()
                    .send(&Actor::System, Channel::Webhook, &recipient, "", &body)
                    .await
                    .expect("queued");
                ids.push(queued.id);
            }
            ids
        });
    }
    let mut ids = Vec::with_capacity(args.deliveries);
    while let Some(queued) = sending.join_next().await {
        ids.extend(queued.expect("a sender finished"));
    }
    let queued_s = started.elapsed().as_secs_f64();
    let target = u64::try_from(args.deliveries).unwrap_or(u64::MAX);
    while received.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Every record settled as sent (the receiver answers before the record is written).
    for id in &ids {
        loop {
            let record = hub.storage().get_notification(*id).await.expect("read").expect("exists");
            if record.status == NotificationStatus::Sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    workers.shutdown().await;
    println!(
        "store={} workers={} senders={senders} deliveries={} signature_ns={sign_ns:.0} deliveries_per_s={:.0} \
         elapsed_s={elapsed:.2} queued_s={queued_s:.2}",
        args.store,
        args.workers,
        args.deliveries,
        args.deliveries as f64 / elapsed
    );
}
