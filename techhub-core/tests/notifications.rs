//! Notification delivery end to end: real SMTP to a sink on 127.0.0.1, retries, one-time links through the
//! outbox, the `notification.send` job, and the delivery records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use techhub_core::events::{Event, EventKind};
use techhub_core::jobs::{Backoff, WorkerConfig, WorkerHandle};
use techhub_core::model::{
    Channel, Consumed, Email, Job, JobId, JobState, NewJob, Notification, NotificationId, NotificationStatus, Role,
    TokenHash, TokenKind, User,
};
use techhub_core::notify::{EMAIL_QUEUE, OutboxNotifier, SmtpNotifier, kinds};
use techhub_core::storage::DynStorage;
use techhub_core::{Actor, TechHub};
use techhub_store_memory::MemoryStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::Receiver;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::timeout;

/// What the SMTP sink received in one transaction.
#[derive(Debug)]
struct Received {
    recipients: Vec<String>,
    data: String,
}

/// A minimal SMTP server on 127.0.0.1: accepts every message, or answers the very first `RCPT` with a
/// temporary failure (451) when asked to.
async fn smtp_sink(fail_first_recipient: bool) -> (SocketAddr, UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("bound");
    let (sender, received) = unbounded_channel();
    let fail_next = Arc::new(AtomicBool::new(fail_first_recipient));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(smtp_session(socket, sender.clone(), fail_next.clone()));
        }
    });
    (address, received)
}

async fn smtp_session(socket: TcpStream, sink: UnboundedSender<Received>, fail_next: Arc<AtomicBool>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut recipients = Vec::new();
    let _ = write.write_all(b"220 sink.test ESMTP ready\r\n").await;
    while let Ok(Some(line)) = lines.next_line().await {
        let command = line.to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") || command.starts_with("HELO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if command.starts_with("MAIL FROM") {
            recipients.clear();
            b"250 2.1.0 ok\r\n"
        } else if command.starts_with("RCPT TO") {
            if fail_next.swap(false, Ordering::SeqCst) {
                b"451 4.3.0 mailbox busy, try again later\r\n"
            } else {
                recipients.push(line[8..].trim().to_owned());
                b"250 2.1.5 ok\r\n"
            }
        } else if command == "DATA" {
            let _ = write.write_all(b"354 go ahead\r\n").await;
            let mut data = String::new();
            while let Ok(Some(body_line)) = lines.next_line().await {
                if body_line == "." {
                    break;
                }
                data.push_str(&body_line);
                data.push('\n');
            }
            let _ = sink.send(Received { recipients: std::mem::take(&mut recipients), data });
            b"250 2.0.0 queued\r\n"
        } else if command.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else if command.starts_with("RSET") || command.starts_with("NOOP") {
            b"250 ok\r\n"
        } else {
            b"502 5.5.2 not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn email_workers(hub: &TechHub) -> WorkerHandle {
    let mut config = WorkerConfig::default().queue(EMAIL_QUEUE, 1);
    config.poll_interval = Duration::from_millis(20);
    // Retry at once: these tests are about what is recorded, not about the delay.
    config.backoff = Backoff { base: Duration::ZERO, cap: Duration::ZERO, jitter: 0.0 };
    hub.start_workers(config).expect("runtime starts")
}

async fn user(hub: &TechHub, email: &str, name: &str) -> User {
    let user = User::new(Email::parse(email).expect("valid"), name, Role::User, hub.now());
    hub.storage().insert_user(user, vec![]).await.expect("insert works")
}

async fn send_to(hub: &TechHub, kind: &str, user: &User) -> Job {
    hub.jobs().enqueue(&Actor::System, NewJob::new(kind, json!({ "user_id": user.id }))).await.expect("enqueued")
}

async fn finished(events: &mut Receiver<Event>, job: JobId) -> Event {
    timeout(Duration::from_secs(30), async {
        loop {
            let event = events.recv().await.expect("bus open");
            let done = matches!(event.kind, EventKind::JobSucceeded | EventKind::JobFailed);
            if done && event.subject == *job.as_uuid() {
                return event;
            }
        }
    })
    .await
    .expect("the job finished")
}

async fn record(store: &DynStorage, job: JobId) -> Notification {
    let id = NotificationId::from_uuid(*job.as_uuid());
    store.get_notification(id).await.expect("get works").expect("a delivery record exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_email_is_delivered_over_smtp_and_recorded() {
    let (address, mut received) = smtp_sink(false).await;
    let store: DynStorage = Arc::new(MemoryStore::new());
    let smtp = SmtpNotifier::from_url(&format!("smtp://{address}"), "Acme <no-reply@acme.test>").expect("valid");
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .config(techhub_core::Config::default().app_name("Acme").public_url("https://acme.test/"))
        .notifier(smtp)
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = email_workers(&hub);
    let ada = user(&hub, "Ada@Example.com", "Ada").await;

    let job = send_to(&hub, kinds::WELCOME, &ada).await;
    assert_eq!(job.queue, EMAIL_QUEUE);
    assert_eq!(finished(&mut events, job.id).await.kind, EventKind::JobSucceeded);
    let message = timeout(Duration::from_secs(5), received.recv()).await.expect("delivered").expect("sink open");
    assert_eq!(message.recipients, ["<ada@example.com>"]);
    assert!(message.data.contains("Subject: Welcome to Acme"), "{}", message.data);
    assert!(message.data.contains("From: Acme <no-reply@acme.test>"), "{}", message.data);
    assert!(message.data.contains("Hello Ada"), "{}", message.data);
    assert!(message.data.contains("https://acme.test"), "{}", message.data);
    // Multipart: the plain text first (the fallback), then the HTML alternative.
    let data = &message.data;
    assert!(data.contains("Content-Type: multipart/alternative"), "{data}");
    let (plain, html) = (data.find("Content-Type: text/plain"), data.find("Content-Type: text/html"));
    assert!(plain.is_some() && html.is_some() && plain < html, "{data}");
    assert!(data.contains("<p>Hello Ada,</p>"), "{data}");

    let delivery = record(&store, job.id).await;
    assert_eq!((delivery.status, delivery.attempts, delivery.channel), (NotificationStatus::Sent, 1, Channel::Email));
    assert_eq!((delivery.recipient.as_str(), delivery.template.as_deref()), ("ada@example.com", Some("welcome")));
    assert!(delivery.sent_at.is_some() && delivery.last_error.is_none());
    assert!(delivery.html.as_deref().is_some_and(|html| html.contains("<p>Hello Ada,</p>")));
    assert_eq!(delivery.deliveries.len(), 1, "the attempt is recorded");
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_smtp_failure_is_retried_and_every_attempt_counted() {
    let (address, mut received) = smtp_sink(true).await;
    let store: DynStorage = Arc::new(MemoryStore::new());
    let smtp = SmtpNotifier::from_url(&format!("smtp://{address}"), "no-reply@acme.test").expect("valid");
    let hub = TechHub::builder().shared_storage(store.clone()).notifier(smtp).build().expect("hub");
    let mut events = hub.subscribe();
    let workers = email_workers(&hub);
    let grace = user(&hub, "grace@example.com", "Grace").await;

    let job = send_to(&hub, kinds::WELCOME, &grace).await;
    assert_eq!(finished(&mut events, job.id).await.kind, EventKind::JobSucceeded);
    let message = timeout(Duration::from_secs(5), received.recv()).await.expect("delivered").expect("sink open");
    assert_eq!(message.recipients, ["<grace@example.com>"]);
    let stored = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(stored.attempt, 2, "the 451 cost one attempt");
    let delivery = record(&store, job.id).await;
    assert_eq!((delivery.status, delivery.attempts, delivery.last_error), (NotificationStatus::Sent, 2, None));
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_mails_a_working_one_time_link_that_is_never_stored() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let outbox = OutboxNotifier::new();
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .config(techhub_core::Config::default().public_url("https://acme.test"))
        .notifier(outbox.clone())
        .build()
        .expect("hub");
    let mut events = hub.subscribe();
    let workers = email_workers(&hub);
    let kim = user(&hub, "kim@example.com", "Kim").await;

    let first = send_to(&hub, kinds::PASSWORD_RESET, &kim).await;
    finished(&mut events, first.id).await;
    let first_token = link_token(&outbox.last_to("kim@example.com").expect("mailed").text);
    let second = send_to(&hub, kinds::PASSWORD_RESET, &kim).await;
    finished(&mut events, second.id).await;
    let mail = outbox.last_to("kim@example.com").expect("mailed");
    assert_eq!(mail.subject, "Reset your TechHub password");
    assert!(mail.text.contains("30 minutes"), "{}", mail.text);
    let second_token = link_token(&mail.text);
    assert_ne!(first_token, second_token);

    let delivery = record(&store, second.id).await;
    assert!(!delivery.body.contains(&second_token), "the one-time link was stored in the delivery record");
    assert!(!format!("{mail:?}").contains(&second_token), "Debug shows the link");

    let now = hub.now();
    let older = store.consume_token(&TokenHash::of(&first_token), TokenKind::PasswordReset, now, None).await;
    assert_eq!(older.expect("works"), None, "a newer request voids the older link");
    let newer = store.consume_token(&TokenHash::of(&second_token), TokenKind::PasswordReset, now, None).await;
    match newer.expect("works") {
        Some(Consumed::Fresh(token)) => assert_eq!(token.user_id, kim.id),
        other => panic!("the mailed link does not work: {other:?}"),
    }
    workers.shutdown().await;
}

fn link_token(text: &str) -> String {
    let start = text.find("https://acme.test/reset-password?token=").expect("a reset link") + 39;
    text[start..].split_whitespace().next().expect("a token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_send_renders_templates_records_failures_and_skips_missing_users() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let outbox = OutboxNotifier::new();
    let hub = TechHub::builder().shared_storage(store.clone()).notifier(outbox.clone()).build().expect("hub");
    let mut events = hub.subscribe();
    let workers = email_workers(&hub);

    let templated = json!({ "channel": "email", "recipient": "ops@example.com", "template": "welcome",
        "data": { "name": "Ops", "email": "ops@example.com" } });
    let job = hub.jobs().enqueue(&Actor::System, NewJob::new(kinds::SEND, templated)).await.expect("enqueued");
    assert_eq!(finished(&mut events, job.id).await.kind, EventKind::JobSucceeded);
    assert_eq!(outbox.last_to("ops@example.com").expect("mailed").subject, "Welcome to TechHub");

    let plain = json!({ "channel": "log", "recipient": "audit", "subject": "Deploy", "body": "v2 is live" });
    let job = hub.jobs().enqueue(&Actor::System, NewJob::new(kinds::SEND, plain)).await.expect("enqueued");
    assert_eq!(finished(&mut events, job.id).await.kind, EventKind::JobSucceeded);
    assert_eq!(record(&store, job.id).await.body, "v2 is live");

    let unreachable =
        json!({ "channel": "webhook", "recipient": "https://hooks.example.com", "subject": "s", "body": "b" });
    let job = hub.jobs().enqueue(&Actor::System, NewJob::new(kinds::SEND, unreachable)).await.expect("enqueued");
    assert_eq!(finished(&mut events, job.id).await.kind, EventKind::JobFailed);
    let delivery = record(&store, job.id).await;
    // Webhooks go to stored endpoints only: a bare URL is refused without an attempt.
    assert_eq!((delivery.status, delivery.attempts), (NotificationStatus::Failed, 0));
    assert!(delivery.last_error.expect("kept").contains("endpoint id"));

    let malformed = json!({ "channel": "email", "recipient": "x@example.com", "subject": "only a subject" });
    let job = hub.jobs().enqueue(&Actor::System, NewJob::new(kinds::SEND, malformed)).await.expect("enqueued");
    assert_eq!(finished(&mut events, job.id).await.kind, EventKind::JobFailed);
    assert_eq!(store.get_job(job.id).await.expect("get").expect("exists").attempt, 1, "bad input is not retried");

    let gone = user(&hub, "gone@example.com", "Gone").await;
    store.delete_user(gone.id, None).await.expect("deleted");
    let job = send_to(&hub, kinds::WELCOME, &gone).await;
    assert_eq!(finished(&mut events, job.id).await.kind, EventKind::JobSucceeded);
    let skipped = store.get_job(job.id).await.expect("get").expect("exists");
    assert_eq!(
        (skipped.state, skipped.result),
        (JobState::Succeeded, Some(json!({ "skipped": "the user no longer exists" })))
    );
    assert!(outbox.last_to("gone@example.com").is_none());
    workers.shutdown().await;
}
