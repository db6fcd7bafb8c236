//! The HTTP channels (webhook, Slack) and the log channel, each behind [`Notifier`].

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::http_client::{HttpDelivery, elapsed_ms};
use super::signing::{SigningKey, signature_header};
use super::{Message, Notifier, NotifyError};
use crate::clock::Clock;

/// What one delivery attempt did: the status code the receiver answered (if it answered), how long it took,
/// and whether it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The HTTP status, when a receiver answered.
    pub status_code: Option<u16>,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// `Ok` when delivered.
    pub outcome: Result<(), NotifyError>,
}

impl Attempt {
    /// An attempt of a channel that has no status codes (email, log).
    pub fn of(outcome: Result<(), NotifyError>, started: Instant) -> Self {
        Self { status_code: None, duration_ms: elapsed_ms(started), outcome }
    }
}

/// POSTs `body` and turns the answer into an [`Attempt`]: 2xx is success, anything else (a redirect included)
/// is [`NotifyError::Rejected`].
async fn post(
    http: &HttpDelivery,
    url: &str,
    headers: &[(&'static str, String)],
    body: &str,
    clock: &dyn Clock,
) -> Attempt {
    let started = Instant::now();
    match http.post(url, headers, body.as_bytes().to_vec(), clock.now()).await {
        Ok(answer) => {
            let outcome = if (200..300).contains(&answer.status) {
                Ok(())
            } else {
                Err(NotifyError::Rejected { status: answer.status, retry_after: answer.retry_after })
            };
            Attempt { status_code: Some(answer.status), duration_ms: elapsed_ms(started), outcome }
        }
        Err(error) => Attempt { status_code: None, duration_ms: elapsed_ms(started), outcome: Err(error) },
    }
}

/// Delivers Standard Webhooks: a POST of the message text (the `{ type, timestamp, data }` JSON) to the
/// endpoint URL with `webhook-id` (the message id, stable across retries), `webhook-timestamp` (now, in seconds)
/// and `webhook-signature` (one `v1,` signature per live secret).
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    http: HttpDelivery,
    keys: Vec<SigningKey>,
    clock: Arc<dyn Clock>,
}

impl WebhookNotifier {
    /// A notifier signing with `keys` (the endpoint's live secrets, current first).
    pub fn new(http: HttpDelivery, keys: Vec<SigningKey>, clock: Arc<dyn Clock>) -> Self {
        Self { http, keys, clock }
    }

    /// Delivers `message` to `message.to` and reports the attempt.
    pub async fn deliver(&self, message: &Message) -> Attempt {
        let id = message.id.clone().unwrap_or_default();
        let timestamp = self.clock.now().timestamp();
        let signature = signature_header(&self.keys, &id, timestamp, message.text.as_bytes());
        let headers =
            [("webhook-id", id), ("webhook-timestamp", timestamp.to_string()), ("webhook-signature", signature)];
        post(&self.http, &message.to, &headers, &message.text, self.clock.as_ref()).await
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        self.deliver(message).await.outcome
    }
}

/// Messages per second per Slack URL.
#[derive(Debug, Clone)]
pub struct SlackRateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl SlackRateLimit {
    /// `per_second` messages per second per URL (at least one).
    pub fn new(per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        Self { limiter: Arc::new(RateLimiter::keyed(Quota::per_second(rate))) }
    }

    /// Waits until `url` may get another message.
    pub async fn until_ready(&self, url: &str) {
        self.limiter.until_key_ready(&url.to_owned()).await;
    }
}

/// Delivers to Slack incoming webhooks (the message text is the Slack JSON), at most the rate limit's
/// messages per second to one URL; a 429 is [`NotifyError::Rejected`] with its `Retry-After`.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    http: HttpDelivery,
    limit: SlackRateLimit,
    clock: Arc<dyn Clock>,
}

impl SlackNotifier {
    /// A notifier sharing `limit` with every other Slack delivery of the hub.
    pub fn new(http: HttpDelivery, limit: SlackRateLimit, clock: Arc<dyn Clock>) -> Self {
        Self { http, limit, clock }
    }

    /// Delivers `message` to `message.to` (waiting for the URL's rate limit first) and reports the attempt.
    pub async fn deliver(&self, message: &Message) -> Attempt {
        self.limit.until_ready(&message.to).await;
        post(&self.http, &message.to, &[], &message.text, self.clock.as_ref()).await
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        self.deliver(message).await.outcome
    }
}

/// Writes a line per message to the log (recipient and subject, never the body): for development.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        tracing::info!(to = %super::redacted_recipient(&message.to), subject = %message.subject, "notification on the log channel");
        Ok(())
    }
}
