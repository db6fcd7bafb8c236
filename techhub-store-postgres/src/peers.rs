//! The link between the instances sharing the database: `LISTEN/NOTIFY` on two channels.
//!
//! - `techhub_jobs`: after a commit that queued jobs, a store tells the others `queue` and how many, and
//!   each wakes that many idle workers of the queue (so a job enqueued on A starts on B at once, not at B's
//!   next poll).
//! - `techhub_events`: every event published on an instance's bus, as JSON, so every other instance
//!   delivers it to its own subscribers.
//!
//! One sender task per store sends what accumulated since its last round in one statement
//! (`pg_notify` over arrays: one transaction, whatever the number), so a burst of ten thousand jobs costs a
//! few notifications, not ten thousand. Notifications of one transaction, and of one session's successive
//! transactions, are delivered in order: an instance's events reach the others in the order it published
//! them. Several events share one notification up to PostgreSQL's payload limit; an event too large for
//! a notification is stored in `peer_events` and its id sent instead.
//!
//! One listener task per store holds its own connection (not pooled) and reconnects by itself when the
//! server goes away. Each instance tags what it sends with a random id and ignores its own notifications.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;
use techhub_core::events::Event;
use techhub_core::storage::{PeerInbox, Peers};
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::tls::Connector;

const JOBS_CHANNEL: &str = "techhub_jobs";
const EVENTS_CHANNEL: &str = "techhub_events";
/// PostgreSQL refuses payloads of 8,000 bytes or more; this leaves room for the instance tag.
const MAX_PAYLOAD: usize = 7_900;
/// Items one sending round takes at most.
const MAX_ROUND: usize = 4_096;
/// How long the listener waits before reconnecting, at most.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

enum Outgoing {
    JobsDue { queue: String, count: usize },
    Event(String),
}

/// The store's side of [`Peers`].
pub(crate) struct PgPeers {
    instance: Uuid,
    outbox: mpsc::UnboundedSender<Outgoing>,
    inboxes: Arc<Mutex<Vec<Weak<dyn PeerInbox>>>>,
    /// Dropped with the store: the listener then closes its connection and ends.
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for PgPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPeers").field("instance", &self.instance).finish_non_exhaustive()
    }
}

impl PgPeers {
    /// Starts the sender and the listener (on the current tokio runtime), and waits until the listener
    /// listens (at most `wait`; it keeps trying in the background after that), so that what other instances
    /// send once `connect` returned is received.
    pub(crate) async fn start(
        config: tokio_postgres::Config,
        connector: Connector,
        pool: Pool,
        wait: Duration,
    ) -> Arc<Self> {
        let instance = Uuid::now_v7();
        let (outbox, pending) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(());
        let (listening, is_listening) = watch::channel(false);
        let inboxes: Arc<Mutex<Vec<Weak<dyn PeerInbox>>>> = Arc::default();
        tokio::spawn(send(instance, pending, pool));
        tokio::spawn(listen(instance, config, connector, inboxes.clone(), stopped, listening));
        let mut is_listening = is_listening;
        let _ = tokio::time::timeout(wait, is_listening.wait_for(|listening| *listening)).await;
        Arc::new(Self { instance, outbox, inboxes, _stop: stop })
    }

    /// Tells the others that `queue` has a job due now.
    pub(crate) fn jobs_due(&self, queue: &str) {
        let _ = self.outbox.send(Outgoing::JobsDue { queue: queue.to_owned(), count: 1 });
    }
}

impl Peers for PgPeers {
    fn publish(&self, event: &Event) {
        match serde_json::to_string(event) {
            Ok(json) => {
                let _ = self.outbox.send(Outgoing::Event(json));
            }
            Err(error) => tracing::warn!(error = %error, "an event could not be encoded for the other instances"),
        }
    }

    fn attach(&self, inbox: Weak<dyn PeerInbox>) {
        let mut inboxes = self.inboxes.lock().unwrap_or_else(PoisonError::into_inner);
        inboxes.retain(|inbox| inbox.strong_count() > 0);
        inboxes.push(inbox);
    }
}

/// The sender: each round takes everything waiting, coalesces wake-ups per queue, packs events into
/// notifications, and sends them all in one statement.
async fn send(instance: Uuid, mut pending: mpsc::UnboundedReceiver<Outgoing>, pool: Pool) {
    let mut round = Vec::new();
    while pending.recv_many(&mut round, MAX_ROUND).await > 0 {
        let (channels, payloads) = pack(instance, round.drain(..));
        let sent = async {
            let client = pool.get().await.map_err(|error| error.to_string())?;
            let mut channels_sent = Vec::with_capacity(channels.len());
            let mut payloads_sent = Vec::with_capacity(payloads.len());
            for (channel, payload) in channels.into_iter().zip(payloads) {
                if payload.len() <= MAX_PAYLOAD + 64 {
                    channels_sent.push(channel);
                    payloads_sent.push(payload);
                    continue;
                }
                // Too large for a notification: stored, and its id sent instead.
                let body = payload.split_once('\n').map_or("", |(_, body)| body);
                let row = client
                    .query_one("INSERT INTO peer_events (payload) VALUES ($1) RETURNING id", &[&body])
                    .await
                    .map_err(|error| error.to_string())?;
                let id: i64 = row.get(0);
                client
                    .execute("DELETE FROM peer_events WHERE created_at < now() - interval '10 minutes'", &[])
                    .await
                    .map_err(|error| error.to_string())?;
                channels_sent.push(channel);
                payloads_sent.push(format!("{instance}\n@{id}"));
            }
            client
                .execute(
                    "SELECT pg_notify(channel, payload) FROM unnest($1::text[], $2::text[]) AS sent (channel, payload)",
                    &[&channels_sent, &payloads_sent],
                )
                .await
                .map_err(|error| error.to_string())?;
            Ok::<_, String>(())
        };
        if let Err(error) = sent.await {
            tracing::debug!(error = %error, "signals to the other instances were dropped (the database is unreachable)");
        }
    }
}

/// The notifications for one round, in order: wake-ups first (one per queue), then events, several per
/// notification as a JSON array.
fn pack(instance: Uuid, items: impl Iterator<Item = Outgoing>) -> (Vec<&'static str>, Vec<String>) {
    let mut due: BTreeMap<String, usize> = BTreeMap::new();
    let mut channels = Vec::new();
    let mut payloads = Vec::new();
    let mut batch = String::new();
    let flush = |batch: &mut String, channels: &mut Vec<&'static str>, payloads: &mut Vec<String>| {
        if !batch.is_empty() {
            channels.push(EVENTS_CHANNEL);
            payloads.push(format!("{instance}\n[{batch}]"));
            batch.clear();
        }
    };
    let mut events = Vec::new();
    for item in items {
        match item {
            Outgoing::JobsDue { queue, count } => *due.entry(queue).or_default() += count,
            Outgoing::Event(json) => events.push(json),
        }
    }
    for (queue, count) in due {
        channels.push(JOBS_CHANNEL);
        payloads.push(format!("{instance}\n{count}\n{queue}"));
    }
    for json in events {
        if !batch.is_empty() && batch.len() + 1 + json.len() > MAX_PAYLOAD {
            flush(&mut batch, &mut channels, &mut payloads);
        }
        if !batch.is_empty() {
            batch.push(',');
        }
        batch.push_str(&json);
    }
    flush(&mut batch, &mut channels, &mut payloads);
    (channels, payloads)
}

/// The listener: connects, listens on both channels, and delivers every notification from another instance
/// to the attached hubs; reconnects when the connection is lost, until the store is dropped.
async fn listen(
    instance: Uuid,
    config: tokio_postgres::Config,
    connector: Connector,
    inboxes: Arc<Mutex<Vec<Weak<dyn PeerInbox>>>>,
    mut stopped: watch::Receiver<()>,
    listening: watch::Sender<bool>,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        let session = listen_once(instance, &config, &connector, &inboxes, &mut delay, &listening);
        tokio::select! {
            outcome = session => {
                if let Err(error) = outcome {
                    tracing::debug!(error = %error, "the listener for other instances lost its connection; reconnecting");
                }
            }
            _ = stopped.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return,
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

async fn listen_once(
    instance: Uuid,
    config: &tokio_postgres::Config,
    connector: &Connector,
    inboxes: &Mutex<Vec<Weak<dyn PeerInbox>>>,
    delay: &mut Duration,
    listening: &watch::Sender<bool>,
) -> Result<(), tokio_postgres::Error> {
    let (notifications, mut incoming) = mpsc::unbounded_channel();
    let client = match connector {
        Connector::Plain(tls) => {
            let (client, mut connection) = config.connect(*tls).await?;
            tokio::spawn(async move {
                while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                    match message {
                        Ok(AsyncMessage::Notification(notification)) => {
                            let _ = notifications.send(notification);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            client
        }
        #[cfg(feature = "tls")]
        Connector::Rustls(tls) => {
            let (client, mut connection) = config.connect((**tls).clone()).await?;
            tokio::spawn(async move {
                while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                    match message {
                        Ok(AsyncMessage::Notification(notification)) => {
                            let _ = notifications.send(notification);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            client
        }
    };
    client.batch_execute(&format!("LISTEN {JOBS_CHANNEL}; LISTEN {EVENTS_CHANNEL}")).await?;
    *delay = Duration::from_millis(50);
    // Listening again after a lost connection: whatever was signalled meanwhile was missed.
    if listening.send_replace(true) {
        let targets: Vec<Arc<dyn PeerInbox>> =
            inboxes.lock().unwrap_or_else(PoisonError::into_inner).iter().filter_map(Weak::upgrade).collect();
        for inbox in targets {
            inbox.reconnected();
        }
    }
    // Ends when the connection does (its task drops the sender).
    while let Some(notification) = incoming.recv().await {
        let Some((from, body)) = notification.payload().split_once('\n') else { continue };
        if from == instance.to_string() {
            continue;
        }
        let targets: Vec<Arc<dyn PeerInbox>> =
            inboxes.lock().unwrap_or_else(PoisonError::into_inner).iter().filter_map(Weak::upgrade).collect();
        if targets.is_empty() {
            continue;
        }
        match notification.channel() {
            JOBS_CHANNEL => {
                let Some((count, queue)) = body.split_once('\n') else { continue };
                let count = count.parse().unwrap_or(1);
                for inbox in &targets {
                    inbox.jobs_due(queue, count);
                }
            }
            EVENTS_CHANNEL => {
                let stored;
                let body = match body.strip_prefix('@').and_then(|id| id.parse::<i64>().ok()) {
                    Some(id) => {
                        let row = client.query_opt("SELECT payload FROM peer_events WHERE id = $1", &[&id]).await?;
                        let Some(row) = row else { continue };
                        stored = row.get::<_, String>(0);
                        stored.as_str()
                    }
                    None => body,
                };
                match serde_json::from_str::<Vec<Event>>(body) {
                    Ok(events) => {
                        for event in events {
                            for inbox in &targets {
                                inbox.event(event.clone());
                            }
                        }
                    }
                    Err(error) => tracing::warn!(error = %error, "an event from another instance could not be read"),
                }
            }
            _ => {}
        }
    }
    Ok(())
}
