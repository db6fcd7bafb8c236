//! Outbound notifications: the [`Notifier`] channel trait, messages, templates, and the built-in delivery jobs.
//!
//! Sending always happens inside jobs (`email.welcome`, `email.verify`, `email.password_reset`,
//! `notification.send`), so it inherits retries and never runs on a request's path. Each delivery is recorded in
//! the [`NotificationStore`](crate::storage::NotificationStore): status, attempts, last error.
//!
//! Email goes to the hub's notifier: [`OutboxNotifier`] by default (keeps messages listable, for development
//! and tests), or [`SmtpNotifier`] (feature `smtp`) for real delivery.

mod delivery;
mod outbox;
#[cfg(feature = "smtp")]
mod smtp;
mod templates;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub(crate) use self::delivery::register_builtin_handlers;
pub use self::delivery::{EMAIL_QUEUE, NotificationJob, kinds};
pub use self::outbox::OutboxNotifier;
#[cfg(feature = "smtp")]
pub use self::smtp::SmtpNotifier;
pub use self::templates::{Rendered, Templates};

/// One outbound message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The recipient: an email address for email.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies can carry one-time links: show their size, not their text.
        f.debug_struct("Message")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("text_len", &self.text.len())
            .finish()
    }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying (a timeout, a 4xx SMTP reply, a refused connection).
    #[error("temporary delivery failure: {0}")]
    Transient(String),
    /// Retrying cannot help (an invalid address, a 5xx SMTP reply).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
}

/// An outbound channel. Implementations must not log message bodies (they may carry one-time links).
#[async_trait]
pub trait Notifier: fmt::Debug + Send + Sync + 'static {
    /// Delivers `message`.
    async fn send(&self, message: &Message) -> Result<(), NotifyError>;
}
