//! The outbox notifier: keeps every message in memory and logs that it was sent.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::{Message, Notifier, NotifyError};

/// Keeps delivered messages in memory, listable by the app (development, tests, a desktop app without mail).
/// Logs each delivery's recipient and subject, never its body. Clones share one outbox.
#[derive(Debug, Clone, Default)]
pub struct OutboxNotifier {
    messages: Arc<Mutex<Vec<Message>>>,
}

impl OutboxNotifier {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message delivered so far, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
        self.messages.lock().unwrap_or_else(PoisonError::into_inner).push(message.clone());
        Ok(())
    }
}
