//! Authentication costs, for scripts:
//!
//! ```text
//! cargo run --release -p techhub-benches --bin auth
//! ```
//!
//! Prints one line: the time of one password hash at the default (OWASP) argon2id parameters, access-token
//! verifications per second on one thread, and the p50/p99 latency of a trivial async task (a 1 ms sleep's
//! overshoot) while 32 sign-ins hash at once: hashing runs on blocking threads behind a semaphore, so the
//! runtime must stay responsive. Then, on a SQLite store, the median time of a failed sign-in for a known
//! address and for an unknown one: they must not differ measurably (the known address's failure count is
//! written off the answer's path), or the timing would tell which accounts exist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use techhub_core::TechHub;
use techhub_core::auth::{JwtKeys, SigningKey};
use techhub_core::users::Registration;
use techhub_store_memory::MemoryStore;
use tokio::task::JoinSet;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::main]
async fn main() {
    let keys = JwtKeys::new(SigningKey::hs256("bench", b"a benchmark secret of at least 32 bytes").expect("key"));
    let hub = TechHub::builder().storage(MemoryStore::new()).jwt_keys(keys).build().expect("hub");

    // One hash at the default parameters (through registration, which hashes once).
    let started = Instant::now();
    let registration = Registration { email: "bench@example.com".into(), password: PASSWORD.into(), name: None };
    hub.users().register(registration).await.expect("registers");
    let hash_ms = started.elapsed().as_secs_f64() * 1000.0;

    // Access-token verifications on this thread.
    let token = hub.auth().login("bench@example.com", PASSWORD).await.expect("signs in").access_token;
    let auth = hub.auth();
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(auth.verify_access_token(std::hint::black_box(&token)).expect("valid"));
    }
    let verify_per_s = (rounds as f64 / started.elapsed().as_secs_f64()) as u64;

    // Responsiveness during a sign-in storm.
    let (p50_ms, p99_ms, logins) = responsiveness(&hub).await;
    let (known_ms, unknown_ms) = failed_sign_ins().await;
    println!(
        "hash_ms={hash_ms:.1} verify_per_s={verify_per_s} concurrent_logins=32 logins_done={logins} p50_task_latency_ms={p50_ms:.2} p99_task_latency_ms={p99_ms:.2} failed_known_p50_ms={known_ms:.2} failed_unknown_p50_ms={unknown_ms:.2}"
    );
}

/// Median failed sign-in time for known and for unknown addresses (interleaved, each address tried below the
/// lockout threshold), on SQLite with the default durability.
async fn failed_sign_ins() -> (f64, f64) {
    let dir = tempfile::tempdir().expect("a directory");
    let store = techhub_store_sqlite::SqliteStore::open(dir.path().join("bench.db")).expect("opens");
    let hub = TechHub::builder().storage(store).build().expect("hub");
    let accounts = 20;
    for n in 0..accounts {
        let registration =
            Registration { email: format!("known{n}@example.com"), password: PASSWORD.into(), name: None };
        hub.users().register(registration).await.expect("registers");
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for round in 0..3 {
        for n in 0..accounts {
            for (address, times) in [
                (format!("known{n}@example.com"), &mut known),
                (format!("unknown{n}-{round}@example.com"), &mut unknown),
            ] {
                let started = Instant::now();
                hub.auth().login(&address, "a wrong password").await.expect_err("refused");
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    (median(&mut known), median(&mut unknown))
}

async fn responsiveness(hub: &TechHub) -> (f64, f64, usize) {
    let mut storm = JoinSet::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..32 {
        let (hub, stop) = (hub.clone(), stop.clone());
        storm.spawn(async move {
            let mut done = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                hub.auth().login("bench@example.com", PASSWORD).await.expect("signs in");
                done += 1;
            }
            done
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut latencies = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        latencies.push(started.elapsed().saturating_sub(Duration::from_millis(1)));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut logins = 0;
    while let Some(done) = storm.join_next().await {
        logins += done.expect("storm task");
    }
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99), logins)
}
