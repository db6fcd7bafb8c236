//! The hub as an embedding app uses it: built over a store, shared across tasks, publishing events.

use std::time::Duration;

use serde_json::json;
use techhub_core::clock::{Clock, ManualClock};
use techhub_core::events::{EventKind, Topic};
use techhub_core::model::JobId;
use techhub_core::{Config, ErrorKind, TechHub};
use techhub_store_memory::MemoryStore;

#[test]
fn builder_refuses_a_zero_event_capacity() {
    let error = TechHub::builder().storage(MemoryStore::new()).config(Config::default().event_capacity(0)).build();
    assert_eq!(error.expect_err("zero capacity").kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn clones_share_one_bus_and_the_injected_clock() {
    let clock = ManualClock::at_epoch();
    let hub = TechHub::builder().storage(MemoryStore::new()).clock(clock.clone()).build().expect("hub");
    let mut events = hub.subscribe();

    clock.advance(Duration::from_secs(5));
    let publisher = hub.clone();
    let job = JobId::new();
    tokio::spawn(async move {
        publisher.events().publish(publisher.now(), EventKind::JobQueued, job, None, json!({ "job_id": job }));
    })
    .await
    .expect("publisher ran");

    let event = events.recv().await.expect("event delivered");
    assert_eq!((event.seq, event.topic, event.kind, event.at), (1, Topic::Jobs, EventKind::JobQueued, clock.now()));
    assert_eq!(event.subject, *job.as_uuid());
    assert_eq!(hub.storage().backend(), "memory");
    assert!(format!("{hub:?}").contains("memory"));
}
