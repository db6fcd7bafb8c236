//! The built-in delivery jobs, and the delivery record each one keeps in the notification store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Message, NotifyError, Rendered};
use crate::jobs::{HandlerOptions, JobContext, JobError, Registry, Typed, TypedJobHandler};
use crate::model::{Channel, Notification, NotificationId, NotificationStatus, TokenKind, UserId};
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
    /// Sends one message on a channel: payload [`NotificationJob`](super::NotificationJob).
    pub const SEND: &str = "notification.send";
}

/// The queue the built-in notification jobs run on.
pub const EMAIL_QUEUE: &str = "email";

/// The payload of the user emails.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct UserEmail {
    user_id: UserId,
}

/// The payload of `notification.send`: either a `subject` and `body`, or a `template` and its `data`.
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

/// Registers the built-in handlers for every kind the app did not register itself.
pub(crate) fn register_builtin_handlers(registry: &mut Registry) {
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
        registry.insert(kinds::SEND.to_owned(), Arc::new(Typed(SendHandler)), options);
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
        deliver(&ctx, Channel::Email, user.email.as_str(), Some(self.template), rendered).await
    }
}

/// Sends one message on a channel.
struct SendHandler;

#[async_trait]
impl TypedJobHandler for SendHandler {
    type Payload = NotificationJob;
    type Output = Value;

    async fn run(&self, job: NotificationJob, ctx: JobContext) -> Result<Value, JobError> {
        let hub = ctx.hub();
        let rendered = match (&job.template, &job.subject, &job.body) {
            (Some(template), None, None) => {
                let mut data = if job.data.is_null() { json!({}) } else { job.data.clone() };
                if let Some(fields) = data.as_object_mut() {
                    fields.entry("app_name").or_insert_with(|| json!(hub.config().app_name));
                    fields.entry("public_url").or_insert_with(|| json!(hub.config().public_url));
                }
                hub.templates().render(template, &data)?
            }
            (None, Some(subject), Some(body)) => {
                Rendered { subject: subject.clone(), text: body.clone(), sensitive: false }
            }
            _ => return Err(JobError::permanent("give either a template (and data) or a subject and a body")),
        };
        deliver(&ctx, job.channel, &job.recipient, job.template.as_deref(), rendered).await
    }
}

/// Delivers `rendered` and keeps the delivery record (one per job, whose id it shares), so every attempt
/// counts and a message delivered by an earlier attempt is never sent twice.
async fn deliver(
    ctx: &JobContext,
    channel: Channel,
    recipient: &str,
    template: Option<&str>,
    rendered: Rendered,
) -> Result<Value, JobError> {
    let hub = ctx.hub();
    let storage = hub.storage();
    let id = NotificationId::from_uuid(*ctx.job_id().as_uuid());
    let mut record = match storage.get_notification(id).await.map_err(crate::Error::from)? {
        Some(record) => record,
        None => {
            // One-time links are delivered but never stored: admins can list notifications.
            let stored_body =
                if rendered.sensitive { "(not stored: it carried a one-time link)" } else { &rendered.text };
            let mut record = Notification::new(channel, recipient, &rendered.subject, stored_body, hub.now());
            record.id = id;
            record.template = template.map(str::to_owned);
            record.job_id = Some(ctx.job_id());
            storage.insert_notification(record).await.map_err(crate::Error::from)?
        }
    };
    if record.status == NotificationStatus::Sent {
        return Ok(json!({ "notification_id": id, "already_sent": true }));
    }
    let message = Message { to: recipient.to_owned(), subject: rendered.subject, text: rendered.text };
    let outcome = send(hub, channel, &message).await;
    let version = record.version;
    record.attempts += 1;
    let result = match outcome {
        Ok(()) => {
            record.status = NotificationStatus::Sent;
            record.sent_at = Some(hub.now());
            record.last_error = None;
            Ok(json!({ "notification_id": id }))
        }
        Err(error) => {
            let last_attempt = ctx.attempt() >= ctx.max_attempts();
            let permanent = matches!(error, NotifyError::Permanent(_));
            record.status =
                if permanent || last_attempt { NotificationStatus::Failed } else { NotificationStatus::Pending };
            record.last_error = Some(error.to_string());
            Err(if permanent { JobError::permanent(error.to_string()) } else { JobError::retry(error.to_string()) })
        }
    };
    let status = record.status;
    let updated = storage.update_notification(record, version).await.map_err(crate::Error::from)?;
    hub.events().publish(
        hub.now(),
        crate::events::EventKind::NotificationUpdated,
        id,
        None,
        json!({ "notification_id": id, "channel": channel, "status": status, "attempts": updated.attempts }),
    );
    result
}

async fn send(hub: &TechHub, channel: Channel, message: &Message) -> Result<(), NotifyError> {
    match channel {
        Channel::Email => hub.notifier().send(message).await,
        Channel::Log => {
            tracing::info!(to = %message.to, subject = %message.subject, "notification on the log channel");
            Ok(())
        }
        Channel::Webhook | Channel::Slack => {
            Err(NotifyError::Permanent(format!("the {channel:?} channel is not configured in this hub")))
        }
    }
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
