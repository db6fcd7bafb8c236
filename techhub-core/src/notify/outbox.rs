//! The outbox notifier: keeps the latest messages in memory and logs that each was sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::{Message, Notifier, NotifyError};

/// Keeps delivered messages in memory, listable by the app (development, tests, a desktop app without mail).
/// Logs each delivery's recipient and subject, never its body. Clones share one outbox. It holds at most
/// [`OutboxNotifier::DEFAULT_CAPACITY`] messages (or the capacity given): the oldest go first, so a server
/// left without SMTP does not grow without bound.
#[derive(Debug, Clone)]
pub struct OutboxNotifier {
    messages: Arc<Mutex<VecDeque<Message>>>,
    capacity: usize,
}

impl Default for OutboxNotifier {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl OutboxNotifier {
    /// How many messages an outbox keeps by default.
    pub const DEFAULT_CAPACITY: usize = 1000;

    /// An empty outbox keeping the default number of messages.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty outbox keeping the latest `capacity` messages (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self { messages: Arc::new(Mutex::new(VecDeque::new())), capacity: capacity.max(1) }
    }

    /// The messages kept (the latest, up to the capacity), oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The latest message to `to`, if any.
    pub fn last_to(&self, to: &str) -> Option<Message> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).iter().rev().find(|m| m.to == to).cloned()
    }
}

#[async_trait]
impl Notifier for OutboxNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        tracing::info!(to = %message.to, subject = %message.subject, "message kept in the outbox (no SMTP configured)");
        let mut messages = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
        while messages.len() >= self.capacity {
            messages.pop_front();
        }
        messages.push_back(message.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> Message {
        Message::text(format!("user{n}@example.com"), format!("message {n}"), "")
    }

    #[tokio::test]
    async fn the_outbox_keeps_only_the_latest_messages() {
        let outbox = OutboxNotifier::with_capacity(3);
        for n in 0..5 {
            outbox.send(&message(n)).await.expect("kept");
        }
        let subjects: Vec<String> = outbox.messages().into_iter().map(|message| message.subject).collect();
        assert_eq!(subjects, ["message 2", "message 3", "message 4"]);
        assert!(outbox.last_to("user0@example.com").is_none(), "the oldest went first");
        assert_eq!(OutboxNotifier::new().capacity, OutboxNotifier::DEFAULT_CAPACITY);
    }
}
