//! Outbound notifications: the [`Notifier`] channel trait and its channels (email, webhook, Slack, log),
//! endpoints, Standard Webhooks signing, the SSRF guard, templates, rules and the delivery jobs.
//!
//! Sending always happens inside jobs (`email.welcome`, `email.verify`, `email.password_reset`,
//! `notification.send`), so it inherits retries and never runs on a request's path. Each notification is
//! recorded in the [`NotificationStore`](crate::storage::NotificationStore) with one
//! [`Delivery`](crate::model::Delivery) per attempt (time, status code, error, duration).
//!
//! - Email goes to the hub's notifier: [`OutboxNotifier`] by default (keeps messages listable, for
//!   development and tests), or [`SmtpNotifier`] (feature `smtp`, multipart text + HTML) for real delivery.
//! - Webhooks ([`WebhookNotifier`]) are signed per the Standard Webhooks specification ([`signing`]) and
//!   go to stored [`Endpoint`](crate::model::Endpoint)s; Slack ([`SlackNotifier`]) is rate limited per URL.
//!   Both use [`HttpDelivery`]: no redirects, timeouts, a bounded response read, and the [`AddressPolicy`]
//!   asked at creation and at every connect, on every resolved address.
//! - [`NotificationService`] (`hub.notifications()`) manages endpoints and notifications for admins; the
//!   rules ([`rules`]) turn bus events into notifications for subscribed endpoints and configured emails.

mod address_policy;
mod built_in_templates;
mod channels;
mod delivery;
mod http_client;
mod outbox;
pub mod rules;
mod service;
pub mod signing;
#[cfg(feature = "smtp")]
mod smtp;
mod templates;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::address_policy::{AddressPolicy, IpBlock};
pub use self::channels::{Attempt, LogNotifier, SlackNotifier, SlackRateLimit, WebhookNotifier};
pub(crate) use self::delivery::register_builtin_handlers;
pub use self::delivery::{EMAIL_QUEUE, NotificationJob, kinds};
pub use self::http_client::{HttpAnswer, HttpDelivery, HttpLimits};
pub use self::outbox::OutboxNotifier;
pub use self::service::{ChannelStats, EndpointPatch, NewEndpoint, NotificationDetail, NotificationService};
#[cfg(feature = "smtp")]
pub use self::smtp::SmtpNotifier;
pub use self::templates::{Rendered, TemplateDefinition, TemplateInfo, TemplatePart, Templates};

/// The shared machinery of the webhook and Slack channels, built once per hub from its configuration.
#[derive(Debug, Clone)]
pub(crate) struct NotifyChannels {
    /// The guarded HTTP client.
    pub(crate) http: HttpDelivery,
    /// Messages per second per Slack URL.
    pub(crate) slack: SlackRateLimit,
}

/// One outbound message.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The recipient: an email address for email, the URL for webhooks and Slack.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body (for webhooks the JSON payload, for Slack the message JSON).
    pub text: String,
    /// The HTML alternative of an email body.
    #[serde(default)]
    pub html: Option<String>,
    /// A stable id of the message, the same on every retry (the `webhook-id` of webhooks).
    #[serde(default)]
    pub id: Option<String>,
}

impl Message {
    /// A plain-text message.
    pub fn text(to: impl Into<String>, subject: impl Into<String>, text: impl Into<String>) -> Self {
        Self { to: to.into(), subject: subject.into(), text: text.into(), ..Self::default() }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies can carry one-time links: show their size, not their text.
        f.debug_struct("Message")
            .field("to", &redacted_recipient(&self.to))
            .field("subject", &self.subject)
            .field("text_len", &self.text.len())
            .field("html_len", &self.html.as_ref().map(String::len))
            .finish_non_exhaustive()
    }
}

/// A recipient as logs and `Debug` show it: an email address as it is, a URL with its credentials and its
/// last path segment masked (a Slack URL's path is its secret, and a message does not know its endpoint's
/// kind).
fn redacted_recipient(to: &str) -> String {
    if to.contains("://") { crate::model::redact_secret_path(to) } else { to.to_owned() }
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying (a timeout, a 4xx SMTP reply, a refused connection).
    #[error("temporary delivery failure: {0}")]
    Transient(String),
    /// Retrying cannot help (an invalid address, a 5xx SMTP reply, a refused private address).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
    /// An HTTP receiver answered with a status other than 2xx (a redirect included: it is never followed).
    #[error("the receiver answered HTTP {status}")]
    Rejected {
        /// The status code.
        status: u16,
        /// The wait the receiver asked for (`Retry-After`), if any.
        retry_after: Option<Duration>,
    },
}

/// An outbound channel. Implementations must not log message bodies (they may carry one-time links).
#[async_trait]
pub trait Notifier: fmt::Debug + Send + Sync + 'static {
    /// Delivers `message`.
    async fn send(&self, message: &Message) -> Result<(), NotifyError>;
}
