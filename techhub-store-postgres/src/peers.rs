//! The link between the instances sharing the database: `LISTEN/NOTIFY` on three channels (the third below).
//!
//! - `techhub_jobs`: after a commit that queued jobs, a store tells the others `queue` and how many, and
//!   each wakes that many idle workers of the queue (so a job enqueued on A starts on B at once, not at B's
//!   next poll).
//! - `techhub_events`: the events published on an instance's bus, as JSON, so every other instance
//!   delivers them to its own subscribers; sent only while some other instance wants them (below).
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
//!
//! **An instance alone sends nothing.** Forwarding every bus event through the server costs a commit, the
//! server's notification queue and a JSON encoding per event, for nobody when no other instance listens. So
//! each instance knows whether others are there, from a third channel, `techhub_instances`:
//!
//! - A listener that starts (or reconnects) registers its instance in `peer_instances`, reads which other
//!   instances are registered and were seen lately (so it knows of them at once), and says `hello`.
//! - An instance that hears `hello` from an instance it does not know answers `welcome`. A starting store's
//!   `connect` returns only once every registered instance answered (or after [`WELCOME_WAIT`]), so from then
//!   on the instances already running forward their events and wake-ups to it.
//! - Every instance says `hello` again every [`HELLO_INTERVAL`] and refreshes its row; one not heard from (by
//!   any signal) for [`PEER_TIMEOUT`] is taken for gone, and when every other is gone this one stops sending
//!   until it hears from one again.
//!
//! **Events only to whom wants them.** Most events (job started, progress, succeeded) are wanted by nobody
//! on the other instances: only subscribers to every event (WebSocket clients, windows) show other
//! instances' events; the notification rules act on their own instance's. So each `hello` and `welcome`
//! says since when its instance has such a subscriber (0: none), and an instance's first one makes it say
//! `wants` at once. An instance sends its events only while some other wants them; meanwhile it keeps
//! those of the last [`KEEP_SPAN`], and when one starts wanting, sends first the kept ones published since
//! its subscriber arrived (less [`CLOCK_MARGIN`]): the news takes a moment to travel through the server,
//! and a WebSocket client on B must still see every event of a job A ran just after it connected.
//! Instances whose subscribers all left say so at their next `hello`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use techhub_core::events::Event;
use techhub_core::storage::{PeerInbox, Peers};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::tls::Connector;

const JOBS_CHANNEL: &str = "techhub_jobs";
const EVENTS_CHANNEL: &str = "techhub_events";
const INSTANCES_CHANNEL: &str = "techhub_instances";
/// How often an instance tells the others it is still there.
const HELLO_INTERVAL: Duration = Duration::from_secs(10);
/// An instance not heard from for this long is taken for gone (three hellos missed, and some slack).
const PEER_TIMEOUT: Duration = Duration::from_secs(35);
/// How long a starting instance waits for the registered instances to answer its `hello`.
const WELCOME_WAIT: Duration = Duration::from_secs(1);
/// PostgreSQL refuses payloads of 8,000 bytes or more; this leaves room for the instance tag.
const MAX_PAYLOAD: usize = 7_900;
/// Items one sending round takes at most.
const MAX_ROUND: usize = 4_096;
/// How long an instance keeps the events it did not send (nobody wanted them), for an instance whose first
/// subscriber arrived just before it heard of it.
const KEEP_SPAN: Duration = Duration::from_secs(5);
/// Events kept at most.
const KEEP_MAX: usize = 20_000;
/// Kept events from this long before another instance's first subscriber arrived are sent to it too: the
/// instances' clocks may differ a little (the cost is a few events from just before it subscribed).
const CLOCK_MARGIN: Duration = Duration::from_millis(250);
/// How long the listener waits before reconnecting, at most.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

enum Outgoing {
    JobsDue {
        queue: String,
        count: usize,
    },
    Event(Event),
    /// A word on the instances channel.
    Signal(String),
}

/// Microseconds since the Unix epoch (0 before it), as signals carry times.
fn micros(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

fn from_micros(micros: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(micros)
}

/// Whether this instance sends its events to the others: only while some other instance has a subscriber to
/// every event ([`Peers::subscribed`]). Meanwhile it keeps the last few seconds of them, so that an instance
/// whose first subscriber arrived shortly before this one heard of it (the news travels through the server)
/// still gets every event published since.
#[derive(Default)]
struct Forwarding {
    /// The other instances that want events: since when (their clock), and when last heard saying so.
    wanting: HashMap<Uuid, (SystemTime, Instant)>,
    /// While nobody wants them: the events of the last [`KEEP_SPAN`], with when each was published.
    kept: VecDeque<(SystemTime, Event)>,
}

impl Forwarding {
    fn on(&self) -> bool {
        !self.wanting.is_empty()
    }

    fn keep(&mut self, event: &Event) {
        let now = SystemTime::now();
        while self.kept.len() >= KEEP_MAX
            || self.kept.front().is_some_and(|(at, _)| now.duration_since(*at).unwrap_or_default() > KEEP_SPAN)
        {
            self.kept.pop_front();
        }
        self.kept.push_back((now, event.clone()));
    }

    /// Instance `other` wants events since `since` (`None`: it wants none now). When the first one starts
    /// wanting, the kept events from `since` on are sent first, in order, before anything published later.
    fn wants(&mut self, other: Uuid, since: Option<SystemTime>, outbox: &mpsc::UnboundedSender<Outgoing>) {
        let Some(since) = since else {
            self.wanting.remove(&other);
            return;
        };
        if !self.on() {
            let from = since.checked_sub(CLOCK_MARGIN).unwrap_or(since);
            for (at, event) in self.kept.drain(..) {
                if at >= from {
                    let _ = outbox.send(Outgoing::Event(event));
                }
            }
        }
        self.wanting.entry(other).and_modify(|entry| entry.1 = Instant::now()).or_insert((since, Instant::now()));
    }

    /// Forgets the instances not heard from for [`PEER_TIMEOUT`].
    fn expire(&mut self) {
        self.wanting.retain(|_, (_, heard)| heard.elapsed() <= PEER_TIMEOUT);
    }
}

/// Since when this instance has a subscriber to every event, as it tells the others (`None`: it has none).
type Advertised = Arc<Mutex<Option<SystemTime>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether other instances listen: until when the last one heard from counts as present.
#[derive(Debug)]
struct Presence {
    since: Instant,
    /// Milliseconds after `since` until which another instance counts as present (0: none heard yet).
    others_until: AtomicU64,
}

impl Presence {
    fn new() -> Self {
        Self { since: Instant::now(), others_until: AtomicU64::new(0) }
    }

    /// Another instance was heard from now.
    fn heard(&self) {
        let until = (self.since.elapsed() + PEER_TIMEOUT).as_millis();
        self.others_until.fetch_max(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Whether another instance was heard from within [`PEER_TIMEOUT`].
    fn others(&self) -> bool {
        u128::from(self.others_until.load(Ordering::Relaxed)) > self.since.elapsed().as_millis()
    }
}

/// The store's side of [`Peers`].
pub(crate) struct PgPeers {
    instance: Uuid,
    presence: Arc<Presence>,
    forwarding: Arc<Mutex<Forwarding>>,
    advertised: Advertised,
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
        let presence = Arc::new(Presence::new());
        let forwarding: Arc<Mutex<Forwarding>> = Arc::default();
        let advertised: Advertised = Arc::default();
        tokio::spawn(send(instance, pending, pool, presence.clone()));
        let link = Link {
            instance,
            inboxes: inboxes.clone(),
            presence: presence.clone(),
            forwarding: forwarding.clone(),
            advertised: advertised.clone(),
            outbox: outbox.clone(),
        };
        tokio::spawn(listen(link, config, connector, stopped, listening));
        let mut is_listening = is_listening;
        let _ = tokio::time::timeout(wait, is_listening.wait_for(|listening| *listening)).await;
        Arc::new(Self { instance, presence, forwarding, advertised, outbox, inboxes, _stop: stop })
    }

    /// Tells the others that `queue` has a job due now (if any other instance listens).
    pub(crate) fn jobs_due(&self, queue: &str) {
        if self.presence.others() {
            let _ = self.outbox.send(Outgoing::JobsDue { queue: queue.to_owned(), count: 1 });
        }
    }
}

impl Peers for PgPeers {
    fn publish(&self, event: &Event) {
        if !self.presence.others() {
            return;
        }
        // Sent or kept under the lock, so kept events sent when an instance starts wanting them go first.
        let mut forwarding = lock(&self.forwarding);
        if forwarding.on() {
            let _ = self.outbox.send(Outgoing::Event(event.clone()));
        } else {
            forwarding.keep(event);
        }
    }

    fn subscribed(&self) {
        let mut advertised = lock(&self.advertised);
        if advertised.is_none() {
            let since = SystemTime::now();
            *advertised = Some(since);
            let _ = self.outbox.send(Outgoing::Signal(format!("{}\nwants {}", self.instance, micros(since))));
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
async fn send(instance: Uuid, mut pending: mpsc::UnboundedReceiver<Outgoing>, pool: Pool, presence: Arc<Presence>) {
    let mut round = Vec::new();
    while pending.recv_many(&mut round, MAX_ROUND).await > 0 {
        if !presence.others() {
            // The last other instance went away since these were queued: nobody to send them to.
            round.clear();
            continue;
        }
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
            // Prepared once per connection: a round is then one round trip, not a parse and an execution.
            let notify = client
                .prepare_cached(
                    "SELECT pg_notify(channel, payload) FROM unnest($1::text[], $2::text[]) AS sent (channel, payload)",
                )
                .await
                .map_err(|error| error.to_string())?;
            client.execute(&notify, &[&channels_sent, &payloads_sent]).await.map_err(|error| error.to_string())?;
            Ok::<_, String>(())
        };
        if let Err(error) = sent.await {
            tracing::debug!(error = %error, "signals to the other instances were dropped (the database is unreachable)");
        }
    }
}

/// The notifications for one round, in order: signals first, then wake-ups (one per queue), then events,
/// several per notification as a JSON array.
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
            Outgoing::Event(event) => match serde_json::to_string(&event) {
                Ok(json) => events.push(json),
                Err(error) => tracing::warn!(error = %error, "an event could not be encoded for the other instances"),
            },
            Outgoing::Signal(payload) => {
                channels.push(INSTANCES_CHANNEL);
                payloads.push(payload);
            }
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

/// What the listener shares with the store.
struct Link {
    instance: Uuid,
    inboxes: Arc<Mutex<Vec<Weak<dyn PeerInbox>>>>,
    presence: Arc<Presence>,
    forwarding: Arc<Mutex<Forwarding>>,
    advertised: Advertised,
    outbox: mpsc::UnboundedSender<Outgoing>,
}

impl Link {
    fn targets(&self) -> Vec<Arc<dyn PeerInbox>> {
        lock(&self.inboxes).iter().filter_map(Weak::upgrade).collect()
    }

    /// What this instance tells the others in its `hello` and `welcome`: since when it wants events (0: it
    /// does not). Its subscribers are asked again first (inside the lock that `subscribed` takes, so a
    /// subscriber arriving meanwhile is either seen here or advertises itself after).
    fn interest(&self) -> u64 {
        let mut advertised = lock(&self.advertised);
        if advertised.is_some() && !self.targets().iter().any(|inbox| inbox.wants_events()) {
            *advertised = None;
        }
        advertised.map_or(0, micros)
    }

    /// Another instance said whether it wants events (`0`: no; a time: since then).
    fn heard_interest(&self, from: Uuid, since: u64) {
        lock(&self.forwarding).wants(from, (since > 0).then(|| from_micros(since)), &self.outbox);
    }
}

/// The listener: connects, listens on the three channels, and delivers every notification from another
/// instance to the attached hubs; reconnects when the connection is lost, until the store is dropped.
async fn listen(
    link: Link,
    config: tokio_postgres::Config,
    connector: Connector,
    mut stopped: watch::Receiver<()>,
    listening: watch::Sender<bool>,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        let session = listen_once(&link, &config, &connector, &mut delay, &listening);
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

/// Registers this instance, tells the others it is there, and returns the other instances registered and
/// seen within [`PEER_TIMEOUT`] (whose `welcome` a starting instance waits for).
async fn say_hello(client: &tokio_postgres::Client, link: &Link) -> Result<HashSet<Uuid>, tokio_postgres::Error> {
    let instance = link.instance;
    client
        .execute(
            "INSERT INTO peer_instances (id, seen_at) VALUES ($1, now()) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            &[&instance],
        )
        .await?;
    // Rows of instances long gone are of no use to anybody.
    client.execute("DELETE FROM peer_instances WHERE seen_at < now() - interval '1 day'", &[]).await?;
    let timeout = PEER_TIMEOUT.as_secs_f64();
    let others = client
        .query(
            "SELECT id FROM peer_instances WHERE id <> $1 AND seen_at > now() - make_interval(secs => $2)",
            &[&instance, &timeout],
        )
        .await?;
    signal(client, instance, &format!("hello {}", link.interest())).await?;
    Ok(others.iter().map(|row| row.get(0)).collect())
}

async fn signal(client: &tokio_postgres::Client, instance: Uuid, word: &str) -> Result<(), tokio_postgres::Error> {
    client.execute("SELECT pg_notify($1, $2)", &[&INSTANCES_CHANNEL, &format!("{instance}\n{word}")]).await?;
    Ok(())
}

async fn listen_once(
    link: &Link,
    config: &tokio_postgres::Config,
    connector: &Connector,
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
    client
        .batch_execute(&format!("LISTEN {JOBS_CHANNEL}; LISTEN {EVENTS_CHANNEL}; LISTEN {INSTANCES_CHANNEL}"))
        .await?;
    let instance = link.instance;
    let mut awaited = say_hello(&client, link).await?;
    let mut known: HashMap<Uuid, Instant> = HashMap::new();
    for other in &awaited {
        link.presence.heard();
        known.insert(*other, Instant::now());
    }
    *delay = Duration::from_millis(50);
    // Listening again after a lost connection: whatever was signalled meanwhile was missed.
    if *listening.borrow() {
        for inbox in link.targets() {
            inbox.reconnected();
        }
    }
    let mut welcome_until = Some(Instant::now() + WELCOME_WAIT);
    let mut hello = tokio::time::interval_at(Instant::now() + HELLO_INTERVAL, HELLO_INTERVAL);
    loop {
        if awaited.is_empty() || welcome_until.is_some_and(|until| until <= Instant::now()) {
            welcome_until = None;
            listening.send_replace(true);
        }
        let far = Instant::now() + HELLO_INTERVAL;
        let notification = tokio::select! {
            notification = incoming.recv() => notification,
            _ = hello.tick() => {
                lock(&link.forwarding).expire();
                say_hello(&client, link).await?;
                continue;
            }
            () = tokio::time::sleep_until(welcome_until.unwrap_or(far)), if welcome_until.is_some() => continue,
        };
        // Ends when the connection does (its task drops the sender).
        let Some(notification) = notification else { return Ok(()) };
        let Some((from, body)) = notification.payload().split_once('\n') else { continue };
        let Ok(from) = from.parse::<Uuid>() else { continue };
        if from == instance {
            continue;
        }
        link.presence.heard();
        let now = Instant::now();
        let new = known.insert(from, now).is_none_or(|seen| now.duration_since(seen) > PEER_TIMEOUT);
        awaited.remove(&from);
        if notification.channel() == INSTANCES_CHANNEL {
            // `hello`, `welcome` and `wants`, each with since when the sender wants events (0: it does not).
            let (word, since) = body.split_once(' ').unwrap_or((body, "0"));
            link.heard_interest(from, since.parse().unwrap_or(0));
            // A newcomer (or one back after a long silence) learns of this instance from the answer.
            if word == "hello" && new {
                signal(&client, instance, &format!("welcome {}", link.interest())).await?;
            }
            continue;
        }
        let targets = link.targets();
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
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use techhub_core::events::EventKind;

    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            at: Utc::now(),
            topic: EventKind::JobProgress.topic(),
            kind: EventKind::JobProgress,
            subject: Uuid::nil(),
            owner: None,
            data: serde_json::json!({ "percent": seq }),
            from_peer: false,
        }
    }

    fn sent(pending: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Ok(item) = pending.try_recv() {
            if let Outgoing::Event(event) = item {
                seqs.push(event.seq);
            }
        }
        seqs
    }

    #[test]
    fn kept_events_go_to_the_first_instance_that_wants_them_from_when_its_subscriber_arrived_in_order() {
        let (outbox, mut pending) = mpsc::unbounded_channel();
        let mut forwarding = Forwarding::default();
        assert!(!forwarding.on(), "nobody wants events at first");
        let now = SystemTime::now();
        // Kept with their publication times: one long before the subscriber arrived, one just before (within
        // the clock margin), two after.
        for (seq, at) in [(1, now - Duration::from_secs(3)), (2, now - CLOCK_MARGIN / 2), (3, now), (4, now)] {
            forwarding.kept.push_back((at, event(seq)));
        }
        forwarding.wants(Uuid::now_v7(), Some(now), &outbox);
        assert!(forwarding.on());
        assert_eq!(sent(&mut pending), [2, 3, 4], "from the subscriber's arrival (less the margin), in order");
        assert!(forwarding.kept.is_empty(), "nothing is kept while events are sent");

        // A second instance wanting them changes nothing: it got every event sent since it listens.
        forwarding.kept.push_back((now, event(5)));
        forwarding.wants(Uuid::now_v7(), Some(now), &outbox);
        assert!(sent(&mut pending).is_empty());
    }

    #[test]
    fn events_stop_when_the_last_instance_wanting_them_says_it_no_longer_does() {
        let (outbox, _pending) = mpsc::unbounded_channel();
        let mut forwarding = Forwarding::default();
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        forwarding.wants(first, Some(SystemTime::now()), &outbox);
        forwarding.wants(second, Some(SystemTime::now()), &outbox);
        forwarding.wants(first, None, &outbox);
        assert!(forwarding.on(), "the second still wants them");
        forwarding.wants(second, None, &outbox);
        assert!(!forwarding.on());
        forwarding.keep(&event(1));
        assert_eq!(forwarding.kept.len(), 1, "kept again once nobody wants them");
    }

    #[test]
    fn only_the_last_few_seconds_of_events_are_kept() {
        let mut forwarding = Forwarding::default();
        forwarding.kept.push_back((SystemTime::now() - KEEP_SPAN * 2, event(1)));
        forwarding.keep(&event(2));
        let kept: Vec<u64> = forwarding.kept.iter().map(|(_, event)| event.seq).collect();
        assert_eq!(kept, [2], "the old one is dropped");
        for seq in 0..KEEP_MAX as u64 + 10 {
            forwarding.keep(&event(seq));
        }
        assert_eq!(forwarding.kept.len(), KEEP_MAX, "and never more than the cap");
    }
}
