//! The built-in delivery jobs, and the delivery record each one keeps in the notification store.
//!
//! `notification.send` delivers one stored notification (payload `{ "notification_id": ... }`), or renders and
//! delivers an inline message (payload [`NotificationJob`]) whose record shares the job's id. Every attempt is
//! recorded on the notification ([`Delivery`]) by the job's settle, in the same write as the job's outcome
//! ([`SideWrite::RecordDelivery`]), and its `notification.updated` event is published once that write is stored;
//! failures are retried on the configured schedule (a
//! `Retry-After` longer than the schedule's wait is honoured, up to the configured maximum); a webhook
//! answering 410, or failing for the whole disable window, disables its endpoint and publishes
//! `endpoint.disabled`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::channels::Attempt;
use super::signing::SigningKey;
use super::{Message, Notifier as _, NotifyError, Rendered, SlackNotifier, WebhookNotifier};
use crate::config::Config;
use crate::events::EventKind;
use crate::jobs::{HandlerOptions, JobContext, JobError, Registry, Typed, TypedJobHandler};
use crate::model::{
    Channel, Delivery, DeliveryRecord, Endpoint, EndpointId, Notification, NotificationId, NotificationStatus,
    SideWrite, TokenKind, UserId,
};
use crate::storage::{Conflict, StoreError};
use crate::{TechHub, auth};

/// The kinds of the built-in notification jobs.
pub mod kinds {
    /// Welcomes a new user: payload `{ "user_id": ... }`.
    pub const WELCOME: &str = "email.welcome";
    /// Sends a fresh email-verification link: payload `{ "user_id": ... }`.
    pub const VERIFY: &str = "email.verify";
    /// Sends a fresh password-reset link: payload `{ "user_id": ... }`.
    pub const PASSWORD_RESET: &str = "email.password_reset";
    /// Tells a user its password changed: payload `{ "user_id": ... }`.
    pub const PASSWORD_CHANGED: &str = "email.password_changed";
    /// Sends one message on a channel: payload `{ "notification_id": ... }` or
    /// [`NotificationJob`](super::NotificationJob).
    pub const SEND: &str = "notification.send";
}

/// The queue the built-in notification jobs run on.
pub const EMAIL_QUEUE: &str = "email";

/// The payload of the user emails.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct UserEmail {
    user_id: UserId,
}

/// The inline payload of `notification.send`: either a `subject` and `body`, or a `template` and its `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationJob {
    /// The channel.
    pub channel: Channel,
    /// The recipient (an email address for email).
    pub recipient: String,
    /// The subject (without a template).
    #[serde(default)]
    pub subject: Option<String>,
    /// The body (without a template).
    #[serde(default)]
    pub body: Option<String>,
    /// A template name (see [`Templates::names`](super::Templates::names)).
    #[serde(default)]
    pub template: Option<String>,
    /// The template's variables (`app_name` and `public_url` are added).
    #[serde(default)]
    pub data: Value,
}

/// The payload of `notification.send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum SendPayload {
    /// Deliver a stored notification.
    Stored {
        /// Its id.
        notification_id: NotificationId,
    },
    /// Render, store and deliver.
    Inline(NotificationJob),
}

/// Registers the built-in handlers for every kind the app did not register itself.
pub(crate) fn register_builtin_handlers(registry: &mut Registry, config: &Config) {
    let options = HandlerOptions::default().queue(EMAIL_QUEUE).max_attempts(6).timeout(Duration::from_secs(120));
    let user_emails = [
        (kinds::WELCOME, UserEmailHandler { template: "welcome", token: None }),
        (kinds::VERIFY, UserEmailHandler { template: "verify_email", token: Some(TokenKind::EmailVerify) }),
        (kinds::PASSWORD_RESET, UserEmailHandler { template: "password_reset", token: Some(TokenKind::PasswordReset) }),
        (kinds::PASSWORD_CHANGED, UserEmailHandler { template: "password_changed", token: None }),
    ];
    for (kind, handler) in user_emails {
        if registry.get(kind).is_none() {
            registry.insert(kind.to_owned(), Arc::new(Typed(handler)), options.clone());
        }
    }
    if registry.get(kinds::SEND).is_none() {
        // One attempt, then one per wait of the schedule.
        let attempts = u32::try_from(config.notify.retry_schedule.len()).unwrap_or(u32::MAX).saturating_add(1);
        registry.insert(kinds::SEND.to_owned(), Arc::new(Typed(SendHandler)), options.max_attempts(attempts));
    }
}

/// Renders a template for a user and emails it; reset and verification emails carry a fresh one-time link.
struct UserEmailHandler {
    template: &'static str,
    token: Option<TokenKind>,
}

#[async_trait]
impl TypedJobHandler for UserEmailHandler {
    type Payload = UserEmail;
    type Output = Value;

    async fn run(&self, payload: UserEmail, ctx: JobContext) -> Result<Value, JobError> {
        let hub = ctx.hub().clone();
        let Some(user) = hub.storage().get_user(payload.user_id).await.map_err(crate::Error::from)? else {
            return Ok(json!({ "skipped": "the user no longer exists" }));
        };
        if self.token == Some(TokenKind::EmailVerify) && user.email_verified {
            return Ok(json!({ "skipped": "the address is already verified" }));
        }
        let config = hub.config();
        let mut context = json!({
            "app_name": config.app_name,
            "public_url": config.public_url,
            "name": user.name,
            "email": user.email,
        });
        if let Some(kind) = self.token {
            let (ttl, path) = match kind {
                TokenKind::PasswordReset => (config.password_reset_ttl, "reset-password"),
                _ => (config.email_verify_ttl, "verify-email"),
            };
            let raw = auth::one_time::issue(&hub, user.id, kind, ttl).await?;
            context["link"] = json!(format!("{}/{path}?token={raw}", config.public_url));
            context["valid_for"] = json!(describe(ttl));
        }
        let rendered = hub.templates().render(self.template, &context)?;
        deliver_inline(&ctx, Channel::Email, user.email.as_str(), Some(self.template), rendered).await
    }
}

/// Sends one message on a channel.
struct SendHandler;

#[async_trait]
impl TypedJobHandler for SendHandler {
    type Payload = SendPayload;
    type Output = Value;

    async fn run(&self, payload: SendPayload, ctx: JobContext) -> Result<Value, JobError> {
        let hub = ctx.hub();
        let job = match payload {
            SendPayload::Stored { notification_id } => return deliver_stored(&ctx, notification_id, None).await,
            SendPayload::Inline(job) => job,
        };
        let rendered = match (&job.template, &job.subject, &job.body) {
            (Some(template), None, None) => {
                let mut data = if job.data.is_null() { json!({}) } else { job.data.clone() };
                if let Some(fields) = data.as_object_mut() {
                    fields.entry("app_name").or_insert_with(|| json!(hub.config().app_name));
                    fields.entry("public_url").or_insert_with(|| json!(hub.config().public_url));
                }
                hub.templates().render_for(template, job.channel, None, &data)?
            }
            (None, Some(subject), Some(body)) => {
                Rendered { subject: subject.clone(), text: body.clone(), html: None, sensitive: false }
            }
            _ => return Err(JobError::permanent("give either a template (and data) or a subject and a body")),
        };
        deliver_inline(&ctx, job.channel, &job.recipient, job.template.as_deref(), rendered).await
    }
}

/// Stores the record of an inline message (its id is the job's, so a retry finds it) and delivers it. One-time
/// links are delivered but never stored: admins can list notifications.
async fn deliver_inline(
    ctx: &JobContext,
    channel: Channel,
    recipient: &str,
    template: Option<&str>,
    rendered: Rendered,
) -> Result<Value, JobError> {
    let hub = ctx.hub();
    let storage = hub.storage();
    let id = NotificationId::from_uuid(*ctx.job_id().as_uuid());
    if storage.get_notification(id).await.map_err(crate::Error::from)?.is_none() {
        let stored_body = if rendered.sensitive { "(not stored: it carried a one-time link)" } else { &rendered.text };
        let mut record = Notification::new(channel, recipient, &rendered.subject, stored_body, hub.now());
        record.id = id;
        record.html = if rendered.sensitive { None } else { rendered.html.clone() };
        record.template = template.map(str::to_owned);
        record.job_id = Some(ctx.job_id());
        match storage.insert_notification(record).await {
            Ok(_) | Err(StoreError::Conflict(Conflict::Duplicate)) => {}
            Err(error) => return Err(crate::Error::from(error).into()),
        }
    }
    let message = Message {
        to: recipient.to_owned(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        id: Some(id.to_string()),
    };
    deliver_stored(ctx, id, Some(message)).await
}

/// What a delivery goes to.
enum Target {
    /// The hub's email notifier, or the log.
    Direct(Channel),
    /// A webhook or Slack endpoint.
    Endpoint(Box<Endpoint>),
}

/// Delivers the stored notification `id` (with `message` when its body is not stored), records the attempt and
/// decides what comes next.
async fn deliver_stored(ctx: &JobContext, id: NotificationId, message: Option<Message>) -> Result<Value, JobError> {
    let hub = ctx.hub();
    let storage = hub.storage();
    let Some(record) = storage.get_notification(id).await.map_err(crate::Error::from)? else {
        return Err(JobError::permanent(format!("notification {id} no longer exists")));
    };
    if record.status == NotificationStatus::Sent {
        return Ok(json!({ "notification_id": id, "already_sent": true }));
    }
    if record.job_id.is_some_and(|job| job != ctx.job_id()) {
        // A resend gave the notification to a newer job: this one stands down.
        return Ok(json!({ "notification_id": id, "superseded": true }));
    }
    let target = match record.channel {
        Channel::Email | Channel::Log => Target::Direct(record.channel),
        Channel::Webhook | Channel::Slack => {
            let Ok(endpoint_id) = record.recipient.parse::<EndpointId>() else {
                return give_up(ctx, &record, "the recipient of a webhook or Slack message is an endpoint id");
            };
            let endpoint = storage.get_endpoint(endpoint_id).await.map_err(crate::Error::from)?;
            match endpoint {
                Some(endpoint) if endpoint.enabled => Target::Endpoint(Box::new(endpoint)),
                Some(_) => return give_up(ctx, &record, "the endpoint is disabled"),
                None => return give_up(ctx, &record, "the endpoint was deleted"),
            }
        }
    };
    let message = message.unwrap_or_else(|| Message {
        to: record.recipient.clone(),
        subject: record.subject.clone(),
        text: record.body.clone(),
        html: record.html.clone(),
        id: Some(id.to_string()),
    });
    let at = hub.now();
    let attempt = send(hub, &target, message).await;
    let delivery = Delivery {
        at,
        status_code: attempt.status_code,
        error: attempt.outcome.as_ref().err().map(ToString::to_string),
        duration_ms: attempt.duration_ms,
    };
    let endpoint = match target {
        Target::Endpoint(endpoint) => Some(*endpoint),
        Target::Direct(_) => None,
    };
    let (status, result) = match attempt.outcome {
        Ok(()) => {
            // A healthy endpoint (as loaded for this attempt) has nothing to reset: skip its read and write. A
            // failure recorded since then is reset by the endpoint's next success.
            if let Some(endpoint) =
                endpoint.filter(|endpoint| endpoint.failure_streak > 0 || endpoint.failing_since.is_some())
            {
                endpoint_health(hub, endpoint.id, Health::Succeeded).await;
            }
            (NotificationStatus::Sent, Ok(json!({ "notification_id": id })))
        }
        Err(error) => {
            // The endpoint's health stays a write of its own: whether it is now disabled decides below whether
            // the job retries, so it must be known before the settle is.
            let disabled = match (&endpoint, &error) {
                (Some(endpoint), NotifyError::Rejected { status: 410, .. }) => {
                    endpoint_health(hub, endpoint.id, Health::Gone).await
                }
                (Some(endpoint), _) => endpoint_health(hub, endpoint.id, Health::Failed).await,
                (None, _) => false,
            };
            match retry_wait(hub, ctx.attempt(), &error) {
                Some(wait) if !disabled && ctx.attempt() < ctx.max_attempts() => {
                    (NotificationStatus::Pending, Err(JobError::retry_after(wait, error.to_string())))
                }
                _ => (NotificationStatus::Failed, Err(JobError::permanent(error.to_string()))),
            }
        }
    };
    let last_error = delivery.error.clone();
    record_with_settle(
        ctx,
        &record,
        DeliveryRecord { notification_id: id, delivery: Some(delivery), status, last_error },
    );
    result
}

/// Hands the notification's delivery record to the job's settle, so that the attempt, the notification's status
/// and the job's outcome are one write (fenced by the job's lease: a lost lease stores none of them, and the
/// rerun delivers again, with the same `webhook-id`), and publishes the update once that write is stored.
fn record_with_settle(ctx: &JobContext, loaded: &Notification, record: DeliveryRecord) {
    let attempts = loaded.attempts + u32::from(record.delivery.is_some());
    let data = json!({
        "notification_id": loaded.id,
        "channel": loaded.channel,
        "status": record.status,
        "attempts": attempts,
    });
    ctx.publish_when_settled(EventKind::NotificationUpdated, loaded.id, None, data);
    ctx.settle_with(SideWrite::RecordDelivery(record));
}

/// Sends on the target's channel.
async fn send(hub: &TechHub, target: &Target, mut message: Message) -> Attempt {
    let started = Instant::now();
    match target {
        Target::Direct(Channel::Email) => Attempt::of(hub.notifier().send(&message).await, started),
        Target::Direct(_) => Attempt::of(super::LogNotifier.send(&message).await, started),
        Target::Endpoint(endpoint) => {
            message.to = endpoint.url.clone();
            let channels = hub.notify_channels();
            match endpoint.kind {
                crate::model::EndpointKind::Webhook => {
                    let keys = endpoint.live_secrets(hub.now()).map(SigningKey::new).collect::<crate::Result<Vec<_>>>();
                    match keys {
                        Ok(keys) => {
                            WebhookNotifier::new(channels.http.clone(), keys, hub.clock().clone())
                                .deliver(&message)
                                .await
                        }
                        Err(error) => Attempt::of(Err(NotifyError::Permanent(error.message().to_owned())), started),
                    }
                }
                crate::model::EndpointKind::Slack => {
                    SlackNotifier::new(channels.http.clone(), channels.slack.clone(), hub.clock().clone())
                        .deliver(&message)
                        .await
                }
            }
        }
    }
}

/// The wait before the next attempt after `attempt` failed with `error`, or `None` when retrying cannot help:
/// the schedule's wait, or the receiver's `Retry-After` when that is longer (capped at the configured maximum).
fn retry_wait(hub: &TechHub, attempt: u32, error: &NotifyError) -> Option<Duration> {
    let config = &hub.config().notify;
    let schedule = &config.retry_schedule;
    let scheduled = schedule
        .get(usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX))
        .or(schedule.last())
        .copied()
        .unwrap_or_default();
    match error {
        NotifyError::Permanent(_) => None,
        NotifyError::Rejected { status: 410, .. } => None,
        NotifyError::Rejected { retry_after: Some(asked), .. } => {
            Some(scheduled.max((*asked).min(config.max_retry_after)))
        }
        NotifyError::Rejected { .. } | NotifyError::Transient(_) => Some(scheduled),
    }
}

/// Marks a notification failed without an attempt (its endpoint is gone or disabled), with the job's settle.
fn give_up(ctx: &JobContext, record: &Notification, why: &str) -> Result<Value, JobError> {
    let gave_up = DeliveryRecord {
        notification_id: record.id,
        delivery: None,
        status: NotificationStatus::Failed,
        last_error: Some(why.to_owned()),
    };
    record_with_settle(ctx, record, gave_up);
    Err(JobError::permanent(why))
}

/// What an attempt says about its endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Succeeded,
    Failed,
    Gone,
}

/// Records an attempt's outcome on the endpoint (failure streak and window), disabling it on a 410 or when it
/// has failed for the whole disable window; returns whether it is now disabled. Concurrent deliveries to one
/// endpoint retry the versioned update.
async fn endpoint_health(hub: &TechHub, id: EndpointId, health: Health) -> bool {
    for _ in 0..5 {
        let Ok(Some(mut endpoint)) = hub.storage().get_endpoint(id).await else { return false };
        let now = hub.now();
        let version = endpoint.version;
        let was_enabled = endpoint.enabled;
        match health {
            Health::Succeeded => {
                if endpoint.failure_streak == 0 && endpoint.failing_since.is_none() {
                    return false;
                }
                endpoint.failure_streak = 0;
                endpoint.failing_since = None;
            }
            Health::Failed | Health::Gone => {
                endpoint.failure_streak = endpoint.failure_streak.saturating_add(1);
                let since = *endpoint.failing_since.get_or_insert(now);
                let window = TimeDelta::from_std(hub.config().notify.disable_after).unwrap_or(TimeDelta::MAX);
                let reason = if health == Health::Gone {
                    Some("the receiver answered 410 Gone".to_owned())
                } else if now - since >= window {
                    Some(format!("every delivery failed since {}", since.to_rfc3339()))
                } else {
                    None
                };
                if let Some(reason) = reason.filter(|_| endpoint.enabled) {
                    endpoint.enabled = false;
                    endpoint.disabled_reason = Some(reason);
                }
            }
        }
        endpoint.updated_at = now;
        match hub.storage().update_endpoint(endpoint, version).await {
            Ok(stored) => {
                if was_enabled && !stored.enabled {
                    let reason = stored.disabled_reason.clone().unwrap_or_default();
                    tracing::warn!(endpoint = %id, reason = %reason, "notification endpoint disabled");
                    hub.events().publish(
                        now,
                        EventKind::EndpointDisabled,
                        id,
                        None,
                        json!({ "endpoint_id": id, "reason": reason }),
                    );
                }
                return !stored.enabled;
            }
            Err(StoreError::Conflict(Conflict::VersionMismatch)) => continue,
            Err(error) => {
                tracing::warn!(endpoint = %id, error = %error, "the endpoint's health could not be recorded");
                return false;
            }
        }
    }
    false
}

/// "30 minutes", "24 hours": how long a link works, for people.
fn describe(ttl: Duration) -> String {
    let minutes = ttl.as_secs() / 60;
    match minutes {
        0..=1 => "a minute".to_owned(),
        2..=119 => format!("{minutes} minutes"),
        _ => format!("{} hours", minutes / 60),
    }
}
