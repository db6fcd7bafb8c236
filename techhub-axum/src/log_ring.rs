//! The server's recent log records, kept in memory for `GET /api/v1/system/logs` and the dashboard.
//!
//! [`LogRing`] is a bounded ring: a [`tracing_subscriber::Layer`] (from [`LogRing::layer`]) that the
//! embedding server installs beside its log output appends each event, and the oldest record goes when the ring
//! is full. Logs never hold secrets (request spans leave out query strings and headers, and the core never
//! logs a password or token), so neither does the ring. New records are also broadcast, for live followers.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use utoipa::ToSchema;

/// The longest text kept of one field or message, in bytes: a runaway value must not fill the ring.
const MAX_TEXT_BYTES: usize = 2048;
/// How many new records a slow live follower may fall behind before it misses some.
const LIVE_BUFFER: usize = 256;

/// How severe a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Fine-grained tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the server copes with.
    Warn,
    /// A failure.
    Error,
}

impl From<&Level> for LogLevel {
    fn from(level: &Level) -> Self {
        match *level {
            Level::TRACE => Self::Trace,
            Level::DEBUG => Self::Debug,
            Level::INFO => Self::Info,
            Level::WARN => Self::Warn,
            _ => Self::Error,
        }
    }
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LogRecord {
    /// Its number: one more than the record before it (since the server started).
    pub seq: u64,
    /// When it was logged.
    pub at: DateTime<Utc>,
    /// Its level.
    pub level: LogLevel,
    /// The module that logged it (`techhub_core::jobs::runtime`, ...).
    pub target: String,
    /// The message.
    pub message: String,
    /// Its other fields, as text, numbers or booleans.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

/// A bounded ring of recent log records, shared by its [`layer`](LogRing::layer) (which writes) and the
/// router (which reads). Cheap to clone.
#[derive(Clone)]
pub struct LogRing {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    records: Mutex<Ring>,
    live: broadcast::Sender<LogRecord>,
}

#[derive(Default)]
struct Ring {
    next_seq: u64,
    records: VecDeque<LogRecord>,
}

impl fmt::Debug for LogRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogRing").field("capacity", &self.inner.capacity).finish_non_exhaustive()
    }
}

impl LogRing {
    /// A ring that keeps the newest `capacity` records (at least one).
    pub fn new(capacity: usize) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let capacity = capacity.max(1);
        Self { inner: Arc::new(Inner { capacity, records: Mutex::new(Ring::default()), live }) }
    }

    /// How many records it keeps at most.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The layer that feeds this ring; install it in the subscriber beside the log output (with the same
    /// filter, so the ring holds what the log shows).
    pub fn layer(&self) -> LogRingLayer {
        LogRingLayer { ring: self.clone() }
    }

    /// The records at `min_level` or above, at or after `since`, oldest first: the newest `limit` of them.
    pub fn recent(&self, min_level: LogLevel, since: Option<DateTime<Utc>>, limit: usize) -> Vec<LogRecord> {
        let ring = self.lock();
        let mut picked: Vec<LogRecord> = ring
            .records
            .iter()
            .rev()
            .filter(|record| record.level >= min_level && since.is_none_or(|since| record.at >= since))
            .take(limit)
            .cloned()
            .collect();
        picked.reverse();
        picked
    }

    /// Every record appended from now on (a follower that lags behind by more than a few hundred misses some;
    /// it can read [`recent`](Self::recent) again).
    pub fn subscribe(&self) -> broadcast::Receiver<LogRecord> {
        self.inner.live.subscribe()
    }

    fn push(&self, level: LogLevel, target: &str, message: String, fields: Map<String, Value>) {
        let record = {
            let mut ring = self.lock();
            let record =
                LogRecord { seq: ring.next_seq, at: Utc::now(), level, target: target.to_owned(), message, fields };
            ring.next_seq += 1;
            if ring.records.len() == self.inner.capacity {
                ring.records.pop_front();
            }
            ring.records.push_back(record.clone());
            record
        };
        // No follower: nothing to do (the error says only that).
        let _ = self.inner.live.send(record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Every write leaves the ring whole (a push is one pop and one push), so a poisoned lock is usable.
        self.inner.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`tracing_subscriber::Layer`] that appends every event it sees to its [`LogRing`].
#[derive(Debug, Clone)]
pub struct LogRingLayer {
    ring: LogRing,
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LogRingLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        self.ring.push(LogLevel::from(metadata.level()), metadata.target(), visitor.message, visitor.fields);
    }
}

/// Collects an event's message and fields.
#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: Map<String, Value>,
}

/// `text`, cut to [`MAX_TEXT_BYTES`] on a character boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(bounded(format!("{value:?}"))));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(bounded(value.to_owned())));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(bounded(value.to_string())));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_records_with_their_fields_and_filters_by_level() {
        let ring = LogRing::new(3);
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(count = 1, "first");
            tracing::warn!(queue = "default", "second");
            tracing::error!(ok = false, "third");
            tracing::info!(ratio = 0.5, "fourth");
        });
        let all = ring.recent(LogLevel::Trace, None, 10);
        let messages: Vec<&str> = all.iter().map(|record| record.message.as_str()).collect();
        assert_eq!(messages, ["second", "third", "fourth"], "the oldest record went");
        assert_eq!(all.iter().map(|record| record.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(all[0].fields["queue"], "default");
        assert_eq!(all[1].fields["ok"], false);
        assert_eq!(all[0].level, LogLevel::Warn);
        let warnings = ring.recent(LogLevel::Warn, None, 10);
        assert_eq!(warnings.iter().map(|record| record.message.as_str()).collect::<Vec<_>>(), ["second", "third"]);
        assert_eq!(ring.recent(LogLevel::Trace, None, 1)[0].message, "fourth", "a limit keeps the newest");
        let later = ring.recent(LogLevel::Trace, Some(all[2].at + chrono::Duration::seconds(1)), 10);
        assert!(later.is_empty());
    }

    #[test]
    fn long_values_are_cut() {
        let ring = LogRing::new(2);
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        let long = "é".repeat(MAX_TEXT_BYTES);
        tracing::subscriber::with_default(subscriber, || tracing::info!(value = %long, "{long}"));
        let record = &ring.recent(LogLevel::Trace, None, 1)[0];
        assert!(record.message.len() <= MAX_TEXT_BYTES + '…'.len_utf8());
        assert!(record.fields["value"].as_str().is_some_and(|value| value.len() <= MAX_TEXT_BYTES + 3));
    }
}
