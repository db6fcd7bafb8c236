//! The event bus: every state change is published, and anyone can subscribe (WebSocket bridges, Tauri windows).
//!
//! A `tokio::sync::broadcast` channel underneath: a slow subscriber lags and is told how many events it
//! missed; it never slows the producers.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::model::UserId;
use crate::storage::Peers;

/// What area an event belongs to; subscribers filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Background jobs.
    Jobs,
    /// Builds, modules and their logs.
    Builds,
    /// User accounts.
    Users,
    /// Outbound notifications.
    Notifications,
}

/// What happened. The serialized form (`"job.progress"`) is the `type` of the HTTP API's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// A job was enqueued.
    #[serde(rename = "job.queued")]
    JobQueued,
    /// A worker started an attempt.
    #[serde(rename = "job.started")]
    JobStarted,
    /// A handler reported progress.
    #[serde(rename = "job.progress")]
    JobProgress,
    /// An attempt failed and the job will run again.
    #[serde(rename = "job.retrying")]
    JobRetrying,
    /// A job succeeded.
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    /// A job failed for good.
    #[serde(rename = "job.failed")]
    JobFailed,
    /// A job was cancelled.
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    /// A job whose worker vanished was queued again after its lease ran out.
    #[serde(rename = "job.rescued")]
    JobRescued,
    /// A handler wrote a line to its job's log.
    #[serde(rename = "job.log")]
    JobLog,
    /// A user registered or was created.
    #[serde(rename = "user.created")]
    UserCreated,
    /// A user changed.
    #[serde(rename = "user.updated")]
    UserUpdated,
    /// A user was deleted.
    #[serde(rename = "user.deleted")]
    UserDeleted,
    /// A build was created (or queued again).
    #[serde(rename = "build.queued")]
    BuildQueued,
    /// A build started running (or runs again after a retry).
    #[serde(rename = "build.started")]
    BuildStarted,
    /// A build's progress changed.
    #[serde(rename = "build.progress")]
    BuildProgress,
    /// A build succeeded.
    #[serde(rename = "build.succeeded")]
    BuildSucceeded,
    /// A build failed.
    #[serde(rename = "build.failed")]
    BuildFailed,
    /// A build was cancelled.
    #[serde(rename = "build.cancelled")]
    BuildCancelled,
    /// A build ran past its timeout.
    #[serde(rename = "build.timed_out")]
    BuildTimedOut,
    /// A module waits to run again (an automatic or manual retry).
    #[serde(rename = "module.pending")]
    ModulePending,
    /// A module started.
    #[serde(rename = "module.started")]
    ModuleStarted,
    /// A running module reported progress.
    #[serde(rename = "module.progress")]
    ModuleProgress,
    /// A module succeeded.
    #[serde(rename = "module.succeeded")]
    ModuleSucceeded,
    /// A module failed.
    #[serde(rename = "module.failed")]
    ModuleFailed,
    /// A module was skipped (a dependency did not succeed).
    #[serde(rename = "module.skipped")]
    ModuleSkipped,
    /// A module was cancelled.
    #[serde(rename = "module.cancelled")]
    ModuleCancelled,
    /// A module ran past its timeout.
    #[serde(rename = "module.timed_out")]
    ModuleTimedOut,
    /// Lines were appended to a build's log (batched).
    #[serde(rename = "build.log")]
    BuildLog,
    /// A notification was delivered or gave up.
    #[serde(rename = "notification.updated")]
    NotificationUpdated,
    /// A notification endpoint was disabled (it answered 410, or failed for the whole disable window).
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
}

impl EventKind {
    /// The topic the kind belongs to.
    pub const fn topic(self) -> Topic {
        match self {
            Self::JobQueued
            | Self::JobStarted
            | Self::JobProgress
            | Self::JobRetrying
            | Self::JobSucceeded
            | Self::JobFailed
            | Self::JobCancelled
            | Self::JobRescued
            | Self::JobLog => Topic::Jobs,
            Self::UserCreated | Self::UserUpdated | Self::UserDeleted => Topic::Users,
            Self::BuildQueued
            | Self::BuildStarted
            | Self::BuildProgress
            | Self::BuildSucceeded
            | Self::BuildFailed
            | Self::BuildCancelled
            | Self::BuildTimedOut
            | Self::ModulePending
            | Self::ModuleStarted
            | Self::ModuleProgress
            | Self::ModuleSucceeded
            | Self::ModuleFailed
            | Self::ModuleSkipped
            | Self::ModuleCancelled
            | Self::ModuleTimedOut
            | Self::BuildLog => Topic::Builds,
            Self::NotificationUpdated | Self::EndpointDisabled => Topic::Notifications,
        }
    }
}

/// One published change. Events carry ids and public fields only, never secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event published by this hub, in the order subscribers receive them.
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Its area.
    pub topic: Topic,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The id of the job, build, user or notification it is about.
    pub subject: Uuid,
    /// The user the subject belongs to (for per-user filtering); `None` for system-owned subjects.
    pub owner: Option<UserId>,
    /// Details, shaped per kind (`{ job_id, percent, message }` for `job.progress`).
    pub data: Value,
    /// Whether another instance sharing the store published it (see [`crate::storage::Peers`]). Subscribers
    /// that show events (WebSockets, windows) treat both alike; what acts on an event once (the notification
    /// rules) acts only on this instance's own, or every instance would act on each. Never serialized.
    #[serde(skip)]
    pub from_peer: bool,
}

/// Publishes events to every subscriber.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    // Assigning the sequence number and sending under one lock keeps `seq` in delivery order; who wants which
    // kinds is read under the same lock.
    state: Arc<Mutex<BusState>>,
    /// The other instances sharing the store, which get every event published here.
    peers: Option<Arc<dyn Peers>>,
}

impl EventBus {
    /// A bus whose subscribers may fall `capacity` events behind before they start missing events.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender, state: Arc::new(Mutex::new(BusState { next_seq: 1, ..BusState::default() })), peers: None }
    }

    /// A bus that also passes every event it publishes to `peers` (the other instances sharing the store).
    pub fn shared_with(capacity: usize, peers: Option<Arc<dyn Peers>>) -> Self {
        Self { peers, ..Self::new(capacity) }
    }

    /// A new subscriber, receiving every event published from now on (the other instances' too).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        let receiver = self.sender.subscribe();
        if let Some(peers) = &self.peers {
            peers.subscribed();
        }
        receiver
    }

    /// Whether a subscriber to every event ([`EventBus::subscribe`]) is subscribed: only those need the other
    /// instances' events (subscribers to some kinds act on this instance's own, see [`Event::from_peer`]).
    pub fn wants_everything(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.sender.receiver_count() > state.partial_subscribers
    }

    /// A new subscriber that needs only events of `kinds`, from now on. Unlike [`EventBus::subscribe`], it
    /// does not make the bus build the details of other kinds (see [`EventBus::publish_with`]): a background
    /// listener such as the notification rules keeps the hot path (job progress) free when nobody else listens.
    /// It is for acting on this instance's own events: it does not make the other instances send theirs
    /// (those that arrive for other subscribers reach it too, marked [`Event::from_peer`]).
    pub fn subscribe_to(&self, kinds: &[EventKind]) -> KindSubscriber {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.partial_subscribers += 1;
        state.wanted.extend_from_slice(kinds);
        KindSubscriber { receiver: self.sender.subscribe(), kinds: kinds.to_vec(), state: Arc::clone(&self.state) }
    }

    /// Publishes an event and returns its sequence number. With no subscriber the event is dropped.
    pub fn publish(
        &self,
        at: DateTime<Utc>,
        kind: EventKind,
        subject: impl Into<Uuid>,
        owner: Option<UserId>,
        data: Value,
    ) -> u64 {
        self.publish_with(at, kind, subject, owner, || data)
    }

    /// Delivers an event another instance published to this bus's subscribers, with this bus's next sequence
    /// number; it is not passed back to the peers.
    pub fn deliver_from_peer(&self, mut event: Event) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        event.seq = state.next_seq;
        event.from_peer = true;
        state.next_seq += 1;
        let _ = self.sender.send(event);
    }

    /// As [`EventBus::publish`], but `data` is built only when someone subscribes: on a hot path (every job
    /// publishes three events) the details of an event nobody receives are not built and dropped. The
    /// sequence number is taken either way, so numbering is the same as with `publish`.
    pub fn publish_with(
        &self,
        at: DateTime<Utc>,
        kind: EventKind,
        subject: impl Into<Uuid>,
        owner: Option<UserId>,
        data: impl FnOnce() -> Value,
    ) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = state.next_seq;
        state.next_seq += 1;
        // Checked under the sequence lock, like `send`'s own check: a subscriber arriving after this point
        // would have missed the event either way. The other instances sharing the store always get it: their
        // subscribers are not counted here. Subscribers of some kinds only count for those kinds.
        let everything = self.sender.receiver_count() > state.partial_subscribers;
        if self.peers.is_some() || everything || state.wanted.contains(&kind) {
            let event = Event {
                seq,
                at,
                topic: kind.topic(),
                kind,
                subject: subject.into(),
                owner,
                data: data(),
                from_peer: false,
            };
            if let Some(peers) = &self.peers {
                peers.publish(&event);
            }
            // An error only means the last subscriber left meanwhile, which is fine.
            let _ = self.sender.send(event);
        }
        seq
    }

    /// How many subscribers there are.
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// The bus's sequence and who listens for what, under one lock.
#[derive(Debug, Default)]
struct BusState {
    next_seq: u64,
    /// How many of the channel's receivers are [`KindSubscriber`]s.
    partial_subscribers: usize,
    /// The kinds those subscribers want, once per subscriber (a multiset: a few entries).
    wanted: Vec<EventKind>,
}

/// A subscriber to some kinds of events only ([`EventBus::subscribe_to`]); dropping it withdraws its interest.
#[derive(Debug)]
pub struct KindSubscriber {
    receiver: broadcast::Receiver<Event>,
    kinds: Vec<EventKind>,
    state: Arc<Mutex<BusState>>,
}

impl KindSubscriber {
    /// The next event of the kinds subscribed to; as [`broadcast::Receiver::recv`] otherwise (a lagging
    /// subscriber is told how many events, of any kind, it missed).
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        loop {
            let event = self.receiver.recv().await?;
            if self.kinds.contains(&event.kind) {
                return Ok(event);
            }
        }
    }
}

impl Drop for KindSubscriber {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.partial_subscribers = state.partial_subscribers.saturating_sub(1);
        for kind in &self.kinds {
            if let Some(index) = state.wanted.iter().position(|wanted| wanted == kind) {
                state.wanted.swap_remove(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobId;

    #[tokio::test]
    async fn lazy_events_are_built_only_for_subscribers_and_numbered_like_the_others() {
        let bus = EventBus::new(4);
        let job = JobId::new();
        let mut built = 0;
        let unheard = bus.publish_with(Utc::now(), EventKind::JobQueued, job, None, || {
            built += 1;
            serde_json::json!({})
        });
        assert_eq!((unheard, built), (1, 0));
        let mut subscriber = bus.subscribe();
        let heard = bus.publish_with(Utc::now(), EventKind::JobQueued, job, None, || {
            built += 1;
            serde_json::json!({ "n": 2 })
        });
        assert_eq!((heard, built), (2, 1));
        assert_eq!(bus.publish(Utc::now(), EventKind::JobQueued, job, None, serde_json::json!({})), 3);
        let event = subscriber.recv().await.expect("the subscriber hears the lazy event");
        assert_eq!((event.seq, event.data), (2, serde_json::json!({ "n": 2 })));
        assert_eq!(subscriber.recv().await.expect("and the eager one").seq, 3);
    }

    #[tokio::test]
    async fn a_kind_subscriber_gets_only_its_kinds_and_makes_only_them_built() {
        let bus = EventBus::new(8);
        let job = JobId::new();
        let built = std::cell::Cell::new(0);
        let publish = |kind| {
            bus.publish_with(Utc::now(), kind, job, None, || {
                built.set(built.get() + 1);
                serde_json::json!({})
            })
        };
        let mut failures = bus.subscribe_to(&[EventKind::JobFailed]);
        publish(EventKind::JobProgress);
        assert_eq!(built.get(), 0, "no one wants progress");
        let failed = publish(EventKind::JobFailed);
        assert_eq!(built.get(), 1, "the kind subscriber wants failures");
        let heard = failures.recv().await.expect("the failure arrives");
        assert_eq!((heard.kind, heard.seq), (EventKind::JobFailed, failed));

        // With a subscriber to everything, every kind is built; the kind subscriber still skips the others.
        let everything = bus.subscribe();
        publish(EventKind::JobProgress);
        let failed_again = publish(EventKind::JobFailed);
        assert_eq!(built.get(), 3);
        assert_eq!(failures.recv().await.expect("the next failure").seq, failed_again);
        drop(everything);

        drop(failures);
        publish(EventKind::JobFailed);
        assert_eq!(built.get(), 3, "a dropped kind subscriber withdraws its interest");
    }

    #[tokio::test]
    async fn subscribers_get_events_in_sequence_and_slow_ones_lag_without_blocking() {
        let bus = EventBus::new(4);
        let mut fast = bus.subscribe();
        let mut slow = bus.subscribe();
        let job = JobId::new();
        for percent in 0..10 {
            bus.publish(Utc::now(), EventKind::JobProgress, job, None, serde_json::json!({ "percent": percent }));
            let event = fast.recv().await.expect("fast subscriber keeps up");
            assert_eq!(event.seq, percent + 1);
            assert_eq!(event.topic, Topic::Jobs);
        }
        assert!(matches!(slow.recv().await, Err(broadcast::error::RecvError::Lagged(6))));
        assert_eq!(slow.recv().await.expect("resumes").seq, 7);
    }

    #[test]
    fn event_kinds_serialize_as_api_types() {
        assert_eq!(serde_json::to_value(EventKind::JobProgress).unwrap(), "job.progress");
        assert_eq!(serde_json::to_value(Topic::Builds).unwrap(), "builds");
    }
}
