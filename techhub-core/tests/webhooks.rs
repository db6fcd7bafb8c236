//! Webhook and Slack delivery end to end, with real receivers on 127.0.0.1 (axum servers inside the tests):
//! Standard Webhooks signatures checked by an independent implementation (the `standardwebhooks` crate),
//! retries with one `webhook-id`, 410 disabling, redirects refused, secret rotation, the SSRF guard at creation
//! and at connect, Slack's 429 with `Retry-After`, the failure window, and the rules from bus events to
//! subscribed endpoints. `TECHHUB_TEST_STORE` picks the store (`memory`, `sqlite`, `sled`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use techhub_core::builds::{NewBuild, NewModule};
use techhub_core::clock::{Clock, ManualClock};
use techhub_core::events::{Event, EventKind};
use techhub_core::jobs::{WorkerConfig, WorkerHandle};
use techhub_core::model::{
    Channel, Endpoint, EndpointKind, Notification, NotificationFilter, NotificationStatus, PageRequest,
};
use techhub_core::notify::{AddressPolicy, EMAIL_QUEUE, HttpLimits, NewEndpoint};
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, Config, ErrorKind, NotifyConfig, TechHub};
use techhub_store_memory::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast::Receiver;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(20);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// When it arrived.
    at: std::time::Instant,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// What a receiver answers, in order; the last answer repeats.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
}

fn answer(status: u16) -> Answer {
    Answer { status, headers: Vec::new() }
}

#[derive(Clone)]
struct Receiver_ {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: UnboundedSender<Received>,
}

async fn receive(State(state): State<Receiver_>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let at = std::time::Instant::now();
    let _ = state.seen.send(Received { at, path: uri.path().to_owned(), headers, body });
    let next = {
        let mut answers = state.answers.lock().expect("not poisoned");
        if answers.len() > 1 { answers.pop_front() } else { answers.front().cloned() }
    };
    let next = next.unwrap_or_else(|| answer(204));
    let mut response = StatusCode::from_u16(next.status).expect("a status").into_response();
    for (name, value) in next.headers {
        response.headers_mut().insert(name, value.parse().expect("a header value"));
    }
    response
}

/// A receiver on 127.0.0.1 answering `answers` in order.
async fn receiver(answers: Vec<Answer>) -> (SocketAddr, UnboundedReceiver<Received>) {
    let (seen, received) = unbounded_channel();
    let state = Receiver_ { answers: Arc::new(Mutex::new(answers.into())), seen };
    let app = axum::Router::new().fallback(receive).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    (address, received)
}

async fn next(received: &mut UnboundedReceiver<Received>) -> Received {
    timeout(PATIENCE, received.recv()).await.expect("a request arrived in time").expect("receiver open")
}

/// Retries at once (the schedule is configuration) and reaches loopback receivers.
fn config() -> NotifyConfig {
    NotifyConfig::default().address_policy(AddressPolicy::public_only().allow_loopback()).retry_schedule(vec![
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    ])
}

/// The store `TECHHUB_TEST_STORE` names (`memory`, the default, `sqlite` or `sled`), kept in a temporary
/// directory that lives as long as the process (scripts/test.sh runs this suite on each).
fn store() -> DynStorage {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    let path = dir.path().join(uuid::Uuid::now_v7().to_string());
    match std::env::var("TECHHUB_TEST_STORE").as_deref() {
        Ok("sqlite") => Arc::new(techhub_store_sqlite::SqliteStore::open(path).expect("SQLite opens")),
        Ok("sled") => Arc::new(techhub_store_sled::SledStore::open(path).expect("sled opens")),
        Ok("memory") | Err(_) => Arc::new(MemoryStore::new()),
        Ok(other) => panic!("TECHHUB_TEST_STORE={other:?}: expected memory, sqlite or sled"),
    }
}

fn hub_with(notify: NotifyConfig, clock: Option<ManualClock>) -> TechHub {
    let mut builder = TechHub::builder().shared_storage(store()).config(Config::default().notify(notify));
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    builder.build().expect("hub")
}

fn workers(hub: &TechHub) -> WorkerHandle {
    let mut config = WorkerConfig::default().queue(EMAIL_QUEUE, 2);
    config.poll_interval = Duration::from_millis(20);
    hub.start_workers(config).expect("runtime starts")
}

async fn webhook(hub: &TechHub, url: String, event_types: &[&str]) -> (Endpoint, String) {
    let new = NewEndpoint {
        kind: EndpointKind::Webhook,
        url,
        description: "test receiver".to_owned(),
        event_types: event_types.iter().map(|event| (*event).to_owned()).collect(),
    };
    let (endpoint, secret) = hub.notifications().create_endpoint(&Actor::System, new).await.expect("created");
    (endpoint, secret.expect("webhooks have a secret").expose().to_owned())
}

/// Verifies a delivery with the independent Standard Webhooks implementation.
fn verify(secret: &str, delivery: &Received) -> Result<(), standardwebhooks::WebhookError> {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if let Some(value) = delivery.headers.get(name) {
            headers.insert(name, value.to_str().expect("ascii").parse().expect("a header value"));
        }
    }
    standardwebhooks::Webhook::new(secret).expect("a valid secret").verify(&delivery.body, &headers)
}

fn header(delivery: &Received, name: &str) -> String {
    delivery.headers.get(name).map(|value| value.to_str().expect("ascii").to_owned()).unwrap_or_default()
}

/// Fails a one-module build driven from outside, which publishes `build.failed`.
async fn fail_a_build(hub: &TechHub, project: &str) {
    let build =
        hub.builds().create(&Actor::System, NewBuild::new(project, vec![NewModule::new("test")])).await.expect("build");
    hub.builds().start_module(&Actor::System, build.id, "test").await.expect("started");
    hub.builds()
        .fail_module(&Actor::System, build.id, "test", Some("2 tests failed".into()), Some(1))
        .await
        .expect("failed");
}

async fn notifications(hub: &TechHub, channel: Channel) -> Vec<Notification> {
    let filter = NotificationFilter { channel: Some(channel), status: None };
    hub.notifications().list(&Actor::System, &filter, &PageRequest::first(100)).await.expect("list").items
}

async fn settled(hub: &TechHub, id: techhub_core::model::NotificationId, status: NotificationStatus) -> Notification {
    timeout(PATIENCE, async {
        loop {
            let record = hub.notifications().get(&Actor::System, id).await.expect("read");
            if record.status == status {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the notification settled in time")
}

async fn event_of(events: &mut Receiver<Event>, kind: EventKind) -> Event {
    timeout(PATIENCE, async {
        loop {
            let event = events.recv().await.expect("bus open");
            if event.kind == kind {
                return event;
            }
        }
    })
    .await
    .expect("the event came in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_reaches_the_subscribed_endpoint_signed_and_not_the_unsubscribed_one() {
    let hub = hub_with(config(), None);
    let _workers = workers(&hub);
    let (subscribed_at, mut subscribed) = receiver(vec![answer(200)]).await;
    let (other_at, mut other) = receiver(vec![answer(200)]).await;
    let (endpoint, secret) = webhook(&hub, format!("http://{subscribed_at}/hooks"), &["build.failed"]).await;
    webhook(&hub, format!("http://{other_at}/hooks"), &["build.succeeded"]).await;

    fail_a_build(&hub, "web").await;
    let delivery = next(&mut subscribed).await;
    assert_eq!(delivery.path, "/hooks");
    verify(&secret, &delivery).expect("the signature verifies independently");
    let payload: Value = serde_json::from_slice(&delivery.body).expect("JSON");
    assert_eq!(payload["type"], "build.failed");
    assert_eq!(
        (payload["data"]["project"].as_str(), payload["data"]["status"].as_str()),
        (Some("web"), Some("failed"))
    );
    assert!(payload["timestamp"].is_string());
    assert!(verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &delivery).is_err(), "another secret does not verify");

    let sent = notifications(&hub, Channel::Webhook).await;
    assert_eq!(sent.len(), 1, "only the subscribed endpoint got a notification");
    assert_eq!(sent[0].recipient, endpoint.id.to_string());
    assert_eq!(header(&delivery, "webhook-id"), sent[0].id.to_string());
    let record = settled(&hub, sent[0].id, NotificationStatus::Sent).await;
    assert_eq!(record.deliveries.len(), 1);
    assert_eq!(record.deliveries[0].status_code, Some(200));
    assert!(other.try_recv().is_err(), "the unsubscribed receiver got nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_the_same_webhook_id_and_every_attempt_is_recorded() {
    let hub = hub_with(config(), None);
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![answer(500), answer(503), answer(200)]).await;
    let (endpoint, secret) = webhook(&hub, format!("http://{at}/"), &["build.failed"]).await;
    let queued = hub
        .notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", r#"{"hello": "world"}"#)
        .await
        .expect("queued");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let delivery = next(&mut received).await;
        verify(&secret, &delivery).expect("every attempt is signed");
        ids.push(header(&delivery, "webhook-id"));
    }
    assert_eq!(ids, vec![queued.id.to_string(); 3], "the webhook id is stable across retries");
    let record = settled(&hub, queued.id, NotificationStatus::Sent).await;
    let codes: Vec<Option<u16>> = record.deliveries.iter().map(|delivery| delivery.status_code).collect();
    assert_eq!(codes, [Some(500), Some(503), Some(200)]);
    assert_eq!(record.attempts, 3);
    assert!(record.deliveries[0].error.as_deref().is_some_and(|error| error.contains("500")));
    let healthy = hub.notifications().get_endpoint(&Actor::System, endpoint.id).await.expect("read");
    assert_eq!((healthy.failure_streak, healthy.failing_since), (0, None), "a success resets the streak");
}

/// A delivery's record is written by its job's settle, with the job's outcome: each `notification.updated`
/// event comes once that write is stored (the store already shows at least what the event tells, and the job's
/// outcome with it), and it tells the status and the count of attempts, nothing secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_update_is_published_once_its_record_and_job_outcome_are_stored() {
    let hub = hub_with(config(), None);
    let mut events = hub.subscribe();
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![answer(500), answer(200)]).await;
    let (endpoint, secret) = webhook(&hub, format!("http://{at}/hooks"), &["build.failed"]).await;
    let queued = hub
        .notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", r#"{"hello": "world"}"#)
        .await
        .expect("queued");
    let job_id = queued.job_id.expect("a queued notification names its job");
    let mut told = Vec::new();
    while told.last().is_none_or(|(status, _)| status != "sent") {
        let event = event_of(&mut events, EventKind::NotificationUpdated).await;
        let stored = hub.storage().get_notification(queued.id).await.expect("read").expect("exists");
        let job = hub.storage().get_job(job_id).await.expect("read").expect("exists");
        let status = event.data["status"].as_str().expect("a status").to_owned();
        let attempts = u32::try_from(event.data["attempts"].as_u64().expect("a count")).expect("small");
        assert!(stored.attempts >= attempts, "the event came after its record was stored: {stored:?}");
        if status == "sent" {
            assert_eq!(stored.status, NotificationStatus::Sent);
            assert_eq!(job.state, techhub_core::model::JobState::Succeeded, "the job's outcome is stored with it");
        }
        let mut keys: Vec<&str> = event.data.as_object().expect("an object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["attempts", "channel", "notification_id", "status"]);
        let text = event.data.to_string();
        assert!(!text.contains(&secret) && !text.contains("whsec_") && !text.contains("/hooks"), "{text}");
        told.push((status, attempts));
    }
    assert_eq!(told, [("pending".to_owned(), 1), ("sent".to_owned(), 2)]);
    assert_eq!(next(&mut received).await.path, "/hooks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_and_publishes_endpoint_disabled() {
    let hub = hub_with(config(), None);
    let mut events = hub.subscribe();
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![answer(410)]).await;
    let (endpoint, _) = webhook(&hub, format!("http://{at}/"), &["build.failed"]).await;
    let queued = hub
        .notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
        .await
        .expect("queued");
    next(&mut received).await;
    let disabled = event_of(&mut events, EventKind::EndpointDisabled).await;
    assert_eq!(disabled.data["endpoint_id"], endpoint.id.to_string());
    let record = settled(&hub, queued.id, NotificationStatus::Failed).await;
    assert_eq!(record.deliveries.len(), 1, "410 is not retried");
    let stored = hub.notifications().get_endpoint(&Actor::System, endpoint.id).await.expect("read");
    assert!(!stored.enabled && stored.disabled_reason.as_deref().is_some_and(|why| why.contains("410")));

    // A disabled endpoint receives nothing more: the next notification fails without an attempt.
    let later = hub
        .notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
        .await
        .expect("queued");
    let record = settled(&hub, later.id, NotificationStatus::Failed).await;
    assert!(record.deliveries.is_empty() && received.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failure_and_is_never_followed() {
    let hub = hub_with(config().retry_schedule(vec![]), None);
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![]).await;
    for target in [format!("http://{at}/followed"), "http://169.254.169.254/latest/meta-data/".to_owned()] {
        let redirect = Answer { status: 302, headers: vec![("location", target.clone())] };
        let (redirecting_at, mut redirecting) = receiver(vec![redirect]).await;
        let (endpoint, _) = webhook(&hub, format!("http://{redirecting_at}/"), &["build.failed"]).await;
        let queued = hub
            .notifications()
            .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
            .await
            .expect("queued");
        next(&mut redirecting).await;
        let record = settled(&hub, queued.id, NotificationStatus::Failed).await;
        assert_eq!(record.deliveries[0].status_code, Some(302), "{target}");
    }
    assert!(received.try_recv().is_err(), "the redirect target was never asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_both_secrets_sign_until_the_overlap_ends() {
    let clock = ManualClock::new(chrono::Utc::now());
    let hub = hub_with(config(), Some(clock.clone()));
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![answer(204)]).await;
    let (endpoint, old) = webhook(&hub, format!("http://{at}/"), &["build.failed"]).await;
    let new = hub.notifications().rotate_secret(&Actor::System, endpoint.id).await.expect("rotated");
    let new = new.expose().to_owned();
    assert_ne!(old, new);
    hub.notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
        .await
        .expect("queued");
    let delivery = next(&mut received).await;
    assert_eq!(header(&delivery, "webhook-signature").split(' ').count(), 2);
    verify(&old, &delivery).expect("the old secret still verifies");
    verify(&new, &delivery).expect("the new secret verifies");

    clock.advance(Duration::from_secs(24 * 3600 + 1));
    hub.notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
        .await
        .expect("queued");
    let delivery = next(&mut received).await;
    assert_eq!(header(&delivery, "webhook-signature").split(' ').count(), 1, "the old secret stopped signing");
    let stored = hub.storage().get_endpoint(endpoint.id).await.expect("read").expect("exists");
    assert!(!format!("{stored:?}").contains(&new) && !format!("{stored:?}").contains(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_special_addresses_are_refused_at_creation() {
    let hub = hub_with(NotifyConfig::default(), None);
    let (at, _received) = receiver(vec![]).await;
    let port = at.port();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        "http://10.1.2.3/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        "http://[::ffff:169.254.169.254]/".to_owned(),
        "ftp://hooks.example.com/".to_owned(),
        "not a url".to_owned(),
    ] {
        let new = NewEndpoint {
            kind: EndpointKind::Webhook,
            url: url.clone(),
            description: String::new(),
            event_types: vec![],
        };
        let error = hub.notifications().create_endpoint(&Actor::System, new).await.expect_err(&url);
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{url}");
        assert_eq!(error.fields().first().map(|field| field.field.as_str()), Some("url"), "{url}: {error}");
    }
    assert!(hub.notifications().list_endpoints(&Actor::System).await.expect("list").is_empty());
    let unknown = NewEndpoint {
        kind: EndpointKind::Webhook,
        url: "https://hooks.example.com/".to_owned(),
        description: String::new(),
        event_types: vec!["build.exploded".to_owned()],
    };
    let error = hub.notifications().create_endpoint(&Actor::System, unknown).await.expect_err("unknown event");
    assert_eq!(error.fields().first().map(|field| field.field.as_str()), Some("event_types[0]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_runs_again_at_connect_for_names_and_literal_addresses() {
    // Stored endpoints that bypassed creation (a name that resolved elsewhere then, say): every connect checks.
    let hub = hub_with(NotifyConfig::default().retry_schedule(vec![]), None);
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![answer(200)]).await;
    for url in [
        format!("http://localhost:{}/", at.port()),
        format!("http://{at}/"),
        format!("http://[::ffff:127.0.0.1]:{}/", at.port()),
    ] {
        let endpoint = Endpoint::new(EndpointKind::Webhook, url.clone(), "", vec!["build.failed".into()], hub.now());
        let mut endpoint = endpoint;
        endpoint.rotate_secret(techhub_core::notify::signing::generate_secret(), hub.now(), hub.now());
        let endpoint = hub.storage().insert_endpoint(endpoint).await.expect("stored");
        let queued = hub
            .notifications()
            .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
            .await
            .expect("queued");
        let record = settled(&hub, queued.id, NotificationStatus::Failed).await;
        let error = record.last_error.clone().unwrap_or_default();
        assert!(error.contains("not allowed"), "{url}: {error}");
        assert_eq!(record.deliveries[0].status_code, None, "{url}");
    }
    assert!(received.try_recv().is_err(), "the receiver was never reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_429_is_retried_only_after_its_retry_after() {
    let clock = ManualClock::new(chrono::Utc::now());
    let hub = hub_with(config(), Some(clock.clone()));
    let handle = workers(&hub);
    let too_many = Answer { status: 429, headers: vec![("retry-after", "30".to_owned())] };
    let (at, mut received) = receiver(vec![too_many, answer(200)]).await;
    let new = NewEndpoint {
        kind: EndpointKind::Slack,
        url: format!("http://{at}/services/T0/B0/x"),
        description: String::new(),
        event_types: vec!["build.failed".into()],
    };
    let (endpoint, secret) = hub.notifications().create_endpoint(&Actor::System, new).await.expect("created");
    assert!(secret.is_none(), "Slack endpoints have no signing secret");
    fail_a_build(&hub, "api").await;
    let first = next(&mut received).await;
    let message: Value = serde_json::from_slice(&first.body).expect("JSON");
    assert!(message["text"].as_str().is_some_and(|text| text.contains("*api*")), "{message}");
    let sent = notifications(&hub, Channel::Slack).await;
    assert_eq!(sent[0].recipient, endpoint.id.to_string());
    let job_id = sent[0].job_id.expect("a job");
    let waiting = waiting_for_retry(&hub, job_id).await;
    assert!(waiting.run_at >= clock.now() + chrono::TimeDelta::seconds(30), "the retry waits for Retry-After");
    handle.wake();
    assert!(received.try_recv().is_err(), "nothing before Retry-After");
    clock.advance(Duration::from_secs(30));
    handle.wake();
    let second = next(&mut received).await;
    assert_eq!(second.body, first.body);
    let record = settled(&hub, sent[0].id, NotificationStatus::Sent).await;
    let codes: Vec<Option<u16>> = record.deliveries.iter().map(|delivery| delivery.status_code).collect();
    assert_eq!(codes, [Some(429), Some(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_endpoint_stops_its_pending_deliveries() {
    let hub = hub_with(config(), None);
    let (at, mut received) = receiver(vec![answer(200)]).await;
    let (endpoint, _) = webhook(&hub, format!("http://{at}/"), &["build.failed"]).await;
    let queued = hub
        .notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
        .await
        .expect("queued");
    hub.notifications().delete_endpoint(&Actor::System, endpoint.id).await.expect("deleted");
    let _workers = workers(&hub);
    let record = settled(&hub, queued.id, NotificationStatus::Failed).await;
    assert_eq!(record.last_error.as_deref(), Some("the endpoint was deleted"));
    assert!(record.deliveries.is_empty() && received.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_the_whole_window_is_disabled_and_announced() {
    let clock = ManualClock::new(chrono::Utc::now());
    let hub = hub_with(
        config().retry_schedule(vec![Duration::ZERO]).disable_after(Duration::from_secs(3600)),
        Some(clock.clone()),
    );
    let mut events = hub.subscribe();
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![answer(500)]).await;
    let (endpoint, _) = webhook(&hub, format!("http://{at}/"), &["build.failed"]).await;
    let recipient = endpoint.id.to_string();

    let first = hub.notifications().send(&Actor::System, Channel::Webhook, &recipient, "", "{}").await.expect("queued");
    let record = settled(&hub, first.id, NotificationStatus::Failed).await;
    assert_eq!(record.attempts, 2, "one attempt and one retry");
    let failing = hub.notifications().get_endpoint(&Actor::System, endpoint.id).await.expect("read");
    assert!(failing.enabled, "failing for less than the window keeps it enabled");
    assert_eq!((failing.failure_streak, failing.failing_since), (2, Some(clock.now())));

    clock.advance(Duration::from_secs(3600));
    let second =
        hub.notifications().send(&Actor::System, Channel::Webhook, &recipient, "", "{}").await.expect("queued");
    let disabled = event_of(&mut events, EventKind::EndpointDisabled).await;
    assert_eq!(disabled.data["endpoint_id"], recipient);
    let record = settled(&hub, second.id, NotificationStatus::Failed).await;
    assert_eq!(record.attempts, 1, "a disabled endpoint is not retried");
    let stored = hub.notifications().get_endpoint(&Actor::System, endpoint.id).await.expect("read");
    assert!(!stored.enabled && stored.disabled_reason.as_deref().is_some_and(|why| why.contains("failed since")));
    for _ in 0..3 {
        next(&mut received).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_is_mailed_to_the_configured_recipients_only() {
    let outbox = techhub_core::notify::OutboxNotifier::new();
    let recipients = vec![techhub_core::model::Email::parse("ops@example.com").expect("valid")];
    let hub = TechHub::builder()
        .shared_storage(store())
        .notifier(outbox.clone())
        .config(Config::default().notify(config().email_recipients(recipients)))
        .build()
        .expect("hub");
    let _workers = workers(&hub);
    fail_a_build(&hub, "web").await;
    let mail = timeout(PATIENCE, async {
        loop {
            if let Some(mail) = outbox.last_to("ops@example.com") {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("mailed in time");
    assert_eq!(mail.subject, "[web] build failed on main");
    assert!(
        mail.text.contains("finished: failed")
            && mail.html.as_deref().is_some_and(|html| html.contains("<strong>web</strong>"))
    );
    let mailed = notifications(&hub, Channel::Email).await;
    assert_eq!(mailed.len(), 1, "one recipient, one message");
    assert_eq!(
        (mailed[0].event_type.as_deref(), mailed[0].template.as_deref()),
        (Some("build.failed"), Some("build_finished"))
    );
}

async fn slack(hub: &TechHub, url: String) -> Endpoint {
    let new = NewEndpoint { kind: EndpointKind::Slack, url, description: String::new(), event_types: vec![] };
    hub.notifications().create_endpoint(&Actor::System, new).await.expect("created").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slack_messages_to_one_url_arrive_at_least_a_second_apart() {
    // The default limit: one message per second per Slack URL. Two workers could send both at once.
    let hub = hub_with(config(), None);
    let _workers = workers(&hub);
    let (at, mut received) = receiver(vec![answer(200)]).await;
    let endpoint = slack(&hub, format!("http://{at}/services/T0/B0/x")).await;
    let recipient = endpoint.id.to_string();
    for text in ["first", "second"] {
        hub.notifications().send(&Actor::System, Channel::Slack, &recipient, "", text).await.expect("queued");
    }
    let first = next(&mut received).await;
    let second = next(&mut received).await;
    // A minimum gap is behaviour (the limiter holds the second message back), not a speed assertion.
    let gap = second.at.duration_since(first.at);
    assert!(gap >= Duration::from_millis(950), "the second message came {gap:?} after the first");
}

/// A receiver on 127.0.0.1 that answers every request `200 OK` with a body that never ends (it claims a
/// huge length and writes until the client goes away); it reports each connection the client closed.
async fn endless_receiver() -> (SocketAddr, UnboundedReceiver<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("bound");
    let (closed, closes) = unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000000000000\r\n\r\n";
                let mut written = 0u64;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                while socket.write_all(&chunk).await.is_ok() {
                    written += chunk.len() as u64;
                }
                let _ = closed.send(written);
            });
        }
    });
    (address, closes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_response_body_is_cut_short_and_the_attempt_recorded() {
    // A total timeout longer than the test's patience: only the bounded read can end the exchange in time.
    let limits = HttpLimits { timeout: Duration::from_secs(600), ..HttpLimits::default() };
    let hub = hub_with(config().http(limits), None);
    let _workers = workers(&hub);
    let (at, mut closes) = endless_receiver().await;
    let (endpoint, _) = webhook(&hub, format!("http://{at}/hooks"), &[]).await;
    let queued = hub
        .notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
        .await
        .expect("queued");
    let record = settled(&hub, queued.id, NotificationStatus::Sent).await;
    let codes: Vec<Option<u16>> = record.deliveries.iter().map(|delivery| delivery.status_code).collect();
    assert_eq!(codes, [Some(200)], "one attempt, recorded with the receiver's status");
    // The client hung up on the body instead of reading (or buffering) it to the end.
    timeout(PATIENCE, closes.recv()).await.expect("the client closed the connection in time").expect("open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_configured_maximum_waits_the_maximum() {
    let clock = ManualClock::new(chrono::Utc::now());
    let cap = Duration::from_secs(60);
    let hub = hub_with(config().max_retry_after(cap), Some(clock.clone()));
    let _workers = workers(&hub);
    let busy = Answer { status: 503, headers: vec![("retry-after", "86400".to_owned())] };
    let (at, mut received) = receiver(vec![busy, answer(200)]).await;
    let (endpoint, _) = webhook(&hub, format!("http://{at}/hooks"), &[]).await;
    let queued = hub
        .notifications()
        .send(&Actor::System, Channel::Webhook, &endpoint.id.to_string(), "", "{}")
        .await
        .expect("queued");
    next(&mut received).await;
    let job_id = queued.job_id.expect("a job");
    let waiting = waiting_for_retry(&hub, job_id).await;
    // The manual clock stands still: the wait is exactly the cap, not the day the receiver asked for.
    assert_eq!(waiting.run_at, clock.now() + chrono::TimeDelta::from_std(cap).expect("fits"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_workers_queues_the_notifications_of_its_own_events() {
    // An API-only instance: no workers, yet its own `build.failed` becomes a pending notification and its job.
    let hub = hub_with(config(), None);
    let (at, _received) = receiver(vec![answer(200)]).await;
    let (endpoint, _) = webhook(&hub, format!("http://{at}/hooks"), &["build.failed"]).await;
    fail_a_build(&hub, "web").await;
    let pending = timeout(PATIENCE, async {
        loop {
            let found = notifications(&hub, Channel::Webhook).await;
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the rule ran without workers");
    assert_eq!(pending.len(), 1);
    let notification = &pending[0];
    assert_eq!(
        (notification.status, notification.recipient.as_str(), notification.event_type.as_deref()),
        (NotificationStatus::Pending, endpoint.id.to_string().as_str(), Some("build.failed"))
    );
    let job = hub.storage().get_job(notification.job_id.expect("a job")).await.expect("read").expect("stored");
    assert_eq!((job.kind.as_str(), job.state), ("notification.send", techhub_core::model::JobState::Queued));
    // Workers started later (here, or on another instance) deliver it.
    let _workers = workers(&hub);
    settled(&hub, notification.id, NotificationStatus::Sent).await;
}

/// The job `job_id` once its first attempt has failed and it waits, queued, for its retry.
async fn waiting_for_retry(hub: &TechHub, job_id: techhub_core::model::JobId) -> techhub_core::model::Job {
    timeout(PATIENCE, async {
        loop {
            let job = hub.storage().get_job(job_id).await.expect("read").expect("exists");
            if job.state == techhub_core::model::JobState::Queued && job.attempt == 1 {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the job waits")
}
