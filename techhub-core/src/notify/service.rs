//! [`NotificationService`]: endpoints, notifications, resends, templates and statistics, for admins (and the
//! system). Get it with [`TechHub::notifications`].

use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde::Serialize;
use serde_json::{Value, json};

use super::delivery::{EMAIL_QUEUE, kinds};
use super::signing::generate_secret;
use super::templates::TemplateInfo;
use super::{Rendered, rules};
use crate::actor::Actor;
use crate::model::{
    AuditAction, AuditEntry, AuditOutcome, Channel, Email, Endpoint, EndpointId, EndpointKind, Job, NewJob,
    Notification, NotificationFilter, NotificationId, NotificationStatus, Page, PageRequest, SigningSecret,
};
use crate::{Error, Result, TechHub};

/// Longest description kept on an endpoint.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Longest subject or recipient accepted.
const MAX_SUBJECT_CHARS: usize = 500;
/// Largest body accepted for a direct notification.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// What creating an endpoint takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEndpoint {
    /// Webhook or Slack.
    pub kind: EndpointKind,
    /// Where deliveries go (http or https; a public address unless the operator allows others).
    pub url: String,
    /// What it is for.
    pub description: String,
    /// The event types it receives (see [`rules::EVENT_TYPES`]).
    pub event_types: Vec<String>,
}

/// What an endpoint update may change (absent fields stay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPatch {
    /// A new description.
    pub description: Option<String>,
    /// New event types.
    pub event_types: Option<Vec<String>>,
    /// Enabled or not (enabling clears the failure streak and the reason it was disabled).
    pub enabled: Option<bool>,
}

/// Notifications of one channel by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    /// The channel.
    pub channel: Channel,
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered.
    pub sent: u64,
    /// Given up on.
    pub failed: u64,
}

/// A notification with its delivery attempts (they are part of the record).
pub type NotificationDetail = Notification;

/// Endpoints and notifications. Every method is for admins and the system; others get `Forbidden`.
#[derive(Debug, Clone)]
pub struct NotificationService {
    hub: TechHub,
}

fn require_admin(actor: &Actor) -> Result<()> {
    if actor.is_privileged() { Ok(()) } else { Err(Error::forbidden("only admins may manage notifications")) }
}

fn check_event_types(event_types: &[String]) -> Result<Vec<String>> {
    let mut checked: Vec<String> = Vec::new();
    for (index, event_type) in event_types.iter().enumerate() {
        if !rules::EVENT_TYPES.contains(&event_type.as_str()) {
            return Err(Error::invalid_field(
                format!("event_types[{index}]"),
                format!("unknown event type {event_type:?}; known: {}", rules::EVENT_TYPES.join(", ")),
            ));
        }
        if !checked.contains(event_type) {
            checked.push(event_type.clone());
        }
    }
    Ok(checked)
}

fn check_description(description: &str) -> Result<String> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid_field("description", format!("at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    Ok(description.trim().to_owned())
}

impl NotificationService {
    pub(crate) fn new(hub: TechHub) -> Self {
        Self { hub }
    }

    /// Creates an endpoint and returns it with its signing secret (webhooks; Slack endpoints have none). The
    /// secret is shown this once. A URL that is not http(s) or reaches a private or special address (unless
    /// the operator allows it) is `InvalidInput` on `url`; an unknown event type names its index.
    pub async fn create_endpoint(&self, actor: &Actor, new: NewEndpoint) -> Result<(Endpoint, Option<SigningSecret>)> {
        require_admin(actor)?;
        let description = check_description(&new.description)?;
        let event_types = check_event_types(&new.event_types)?;
        self.hub.notify_channels().http.check_url(&new.url).await?;
        let now = self.hub.now();
        let mut endpoint = Endpoint::new(new.kind, new.url.trim(), description, event_types, now);
        let secret = (new.kind == EndpointKind::Webhook).then(generate_secret);
        if let Some(secret) = &secret {
            endpoint.rotate_secret(secret.clone(), now, now);
        }
        let stored = self.hub.storage().insert_endpoint(endpoint).await?;
        let entry = AuditEntry::new(AuditAction::EndpointCreated, AuditOutcome::Success, now)
            .by(actor.user_id())
            .detail(json!({ "endpoint_id": stored.id, "kind": stored.kind, "event_types": stored.event_types }));
        self.hub.audit().record(entry).await;
        Ok((stored, secret))
    }

    /// Every endpoint, oldest first.
    pub async fn list_endpoints(&self, actor: &Actor) -> Result<Vec<Endpoint>> {
        require_admin(actor)?;
        Ok(self.hub.storage().list_endpoints().await?)
    }

    /// The endpoint `id` (`NotFound` if none).
    pub async fn get_endpoint(&self, actor: &Actor, id: EndpointId) -> Result<Endpoint> {
        require_admin(actor)?;
        self.hub.storage().get_endpoint(id).await?.ok_or_else(|| Error::not_found("no such endpoint"))
    }

    /// Changes an endpoint's description, event types or enabled flag.
    pub async fn update_endpoint(&self, actor: &Actor, id: EndpointId, patch: EndpointPatch) -> Result<Endpoint> {
        require_admin(actor)?;
        let description = patch.description.as_deref().map(check_description).transpose()?;
        let event_types = patch.event_types.as_deref().map(check_event_types).transpose()?;
        loop {
            let mut endpoint = self.get_endpoint(actor, id).await?;
            let version = endpoint.version;
            if let Some(description) = &description {
                endpoint.description.clone_from(description);
            }
            if let Some(event_types) = &event_types {
                endpoint.event_types.clone_from(event_types);
            }
            if let Some(enabled) = patch.enabled {
                if enabled && !endpoint.enabled {
                    endpoint.failure_streak = 0;
                    endpoint.failing_since = None;
                    endpoint.disabled_reason = None;
                }
                endpoint.enabled = enabled;
            }
            endpoint.updated_at = self.hub.now();
            match self.hub.storage().update_endpoint(endpoint, version).await {
                Err(crate::storage::StoreError::Conflict(crate::storage::Conflict::VersionMismatch)) => continue,
                other => return Ok(other?),
            }
        }
    }

    /// Deletes an endpoint; its pending deliveries stop (their jobs find it gone and give up).
    pub async fn delete_endpoint(&self, actor: &Actor, id: EndpointId) -> Result<()> {
        require_admin(actor)?;
        self.hub.storage().delete_endpoint(id).await.map_err(|error| match error {
            crate::storage::StoreError::NotFound => Error::not_found("no such endpoint"),
            other => other.into(),
        })
    }

    /// Gives a webhook endpoint a new signing secret, returned this once; the old one keeps signing beside it
    /// for the configured overlap (24 h by default). A Slack endpoint has no secret: `InvalidInput`.
    pub async fn rotate_secret(&self, actor: &Actor, id: EndpointId) -> Result<SigningSecret> {
        require_admin(actor)?;
        loop {
            let mut endpoint = self.get_endpoint(actor, id).await?;
            if endpoint.kind != EndpointKind::Webhook {
                return Err(Error::invalid_field("kind", "only webhook endpoints have a signing secret"));
            }
            let version = endpoint.version;
            let now = self.hub.now();
            let overlap = TimeDelta::from_std(self.hub.config().notify.secret_overlap).unwrap_or(TimeDelta::MAX);
            let secret = generate_secret();
            endpoint.rotate_secret(secret.clone(), now, now.checked_add_signed(overlap).unwrap_or(now));
            match self.hub.storage().update_endpoint(endpoint, version).await {
                Err(crate::storage::StoreError::Conflict(crate::storage::Conflict::VersionMismatch)) => continue,
                Err(error) => return Err(error.into()),
                Ok(_) => {
                    let entry = AuditEntry::new(AuditAction::EndpointSecretRotated, AuditOutcome::Success, now)
                        .by(actor.user_id())
                        .detail(json!({ "endpoint_id": id }));
                    self.hub.audit().record(entry).await;
                    return Ok(secret);
                }
            }
        }
    }

    /// A page of notifications passing `filter`, oldest first.
    pub async fn list(
        &self,
        actor: &Actor,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        require_admin(actor)?;
        Ok(self.hub.storage().list_notifications(filter, page).await?)
    }

    /// The notification `id` with its delivery attempts (`NotFound` if none).
    pub async fn get(&self, actor: &Actor, id: NotificationId) -> Result<NotificationDetail> {
        require_admin(actor)?;
        self.hub.storage().get_notification(id).await?.ok_or_else(|| Error::not_found("no such notification"))
    }

    /// Sends a failed (or pending) notification again as a new job with a fresh attempt budget; its webhook id
    /// stays the same. The notification's new state and its job are one atomic write. A sent notification is a
    /// `Conflict`.
    pub async fn resend(&self, actor: &Actor, id: NotificationId) -> Result<Job> {
        require_admin(actor)?;
        loop {
            let mut record = self.get(actor, id).await?;
            if record.status == NotificationStatus::Sent {
                return Err(Error::conflict("the notification was already delivered"));
            }
            let version = record.version;
            let job = self.prepare_job(id)?;
            record.status = NotificationStatus::Pending;
            record.job_id = Some(job.id);
            match self.hub.storage().queue_notification(record, Some(version), job).await {
                Err(crate::storage::StoreError::Conflict(crate::storage::Conflict::VersionMismatch)) => continue,
                Err(error) => return Err(error.into()),
                Ok((_, job)) => {
                    self.hub.jobs().announce([&job]);
                    return Ok(job);
                }
            }
        }
    }

    /// Queues a message with a subject and body on `channel` to `recipient` (an email address, or the id of a
    /// webhook or Slack endpoint; for webhooks `body` is the JSON `data`).
    pub async fn send(
        &self,
        actor: &Actor,
        channel: Channel,
        recipient: &str,
        subject: &str,
        body: &str,
    ) -> Result<Notification> {
        require_admin(actor)?;
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(Error::invalid_field("subject", format!("at most {MAX_SUBJECT_CHARS} characters")));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(Error::invalid_field("body", format!("at most {MAX_BODY_BYTES} bytes")));
        }
        let rendered = match channel {
            Channel::Webhook => {
                let data: Value = serde_json::from_str(body)
                    .map_err(|_| Error::invalid_field("body", "a webhook body is a JSON document"))?;
                Rendered { subject: subject.to_owned(), text: data.to_string(), html: None, sensitive: false }
            }
            Channel::Slack => Rendered {
                subject: subject.to_owned(),
                text: if subject.is_empty() { body.to_owned() } else { format!("*{subject}*\n{body}") },
                html: None,
                sensitive: false,
            },
            Channel::Email | Channel::Log => {
                Rendered { subject: subject.to_owned(), text: body.to_owned(), html: None, sensitive: false }
            }
        };
        self.queue(channel, recipient, None, None, rendered).await
    }

    /// Renders template `template_id` for `channel` (in `locale`, with fallback) with `data` and queues it to
    /// `recipient`. An unknown template is `NotFound`; a missing variable is `InvalidInput` naming it.
    pub async fn send_template(
        &self,
        actor: &Actor,
        template_id: &str,
        channel: Channel,
        recipient: &str,
        data: &Value,
        locale: Option<&str>,
    ) -> Result<Notification> {
        require_admin(actor)?;
        if !(data.is_object() || data.is_null()) {
            return Err(Error::invalid_field("data", "template data is a JSON object"));
        }
        let rendered = self.render(template_id, channel, locale, data.clone())?;
        if rendered.sensitive {
            return Err(Error::invalid_field("template_id", "this template carries one-time links: its job sends it"));
        }
        self.queue(channel, recipient, Some(template_id), None, rendered).await
    }

    /// The templates, with their channels and variables.
    pub fn templates(&self, actor: &Actor) -> Result<Vec<TemplateInfo>> {
        require_admin(actor)?;
        Ok(self.hub.templates().list())
    }

    /// Notifications per channel and status, from the store's counters (every channel listed).
    pub async fn stats(&self, actor: &Actor) -> Result<Vec<ChannelStats>> {
        require_admin(actor)?;
        let mut by_channel: BTreeMap<Channel, ChannelStats> = Channel::ALL
            .into_iter()
            .map(|channel| (channel, ChannelStats { channel, pending: 0, sent: 0, failed: 0 }))
            .collect();
        for count in self.hub.storage().notification_counts().await? {
            if let Some(stats) = by_channel.get_mut(&count.channel) {
                match count.status {
                    NotificationStatus::Pending => stats.pending += count.count,
                    NotificationStatus::Sent => stats.sent += count.count,
                    NotificationStatus::Failed => stats.failed += count.count,
                }
            }
        }
        Ok(by_channel.into_values().collect())
    }

    /// Renders with the hub's variables (`app_name`, `public_url`) added.
    pub(crate) fn render(
        &self,
        template_id: &str,
        channel: Channel,
        locale: Option<&str>,
        data: Value,
    ) -> Result<Rendered> {
        let mut data = if data.is_null() { json!({}) } else { data };
        if let Some(fields) = data.as_object_mut() {
            let config = self.hub.config();
            fields.entry("app_name").or_insert_with(|| json!(config.app_name));
            fields.entry("public_url").or_insert_with(|| json!(config.public_url));
        }
        self.hub.templates().render_for(template_id, channel, locale, &data)
    }

    /// Stores a pending notification and its delivery job in one atomic write, then wakes the workers. Checks the recipient first: an email address
    /// for email, an existing endpoint of the right kind for webhooks and Slack.
    pub(crate) async fn queue(
        &self,
        channel: Channel,
        recipient: &str,
        template: Option<&str>,
        event_type: Option<&str>,
        rendered: Rendered,
    ) -> Result<Notification> {
        let recipient = self.check_recipient(channel, recipient).await?;
        let body = match channel {
            Channel::Webhook => {
                let data: Value = serde_json::from_str(&rendered.text).unwrap_or(Value::String(rendered.text.clone()));
                json!({
                    "type": event_type.unwrap_or("notification"),
                    "timestamp": self.hub.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "data": data,
                })
                .to_string()
            }
            Channel::Slack => json!({ "text": rendered.text }).to_string(),
            Channel::Email | Channel::Log => rendered.text,
        };
        let mut record = Notification::new(channel, recipient, rendered.subject, body, self.hub.now());
        record.html = rendered.html;
        record.template = template.map(str::to_owned);
        record.event_type = event_type.map(str::to_owned);
        let job = self.prepare_job(record.id)?;
        record.job_id = Some(job.id);
        // One atomic write: a crash cannot leave a pending notification that no job delivers.
        let (stored, job) = self.hub.storage().queue_notification(record, None, job).await?;
        self.hub.jobs().announce([&job]);
        Ok(stored)
    }

    async fn check_recipient(&self, channel: Channel, recipient: &str) -> Result<String> {
        match channel {
            Channel::Email => Ok(Email::parse(recipient)
                .map_err(|_| Error::invalid_field("recipient", "not a valid email address"))?
                .as_str()
                .to_owned()),
            Channel::Log => {
                if recipient.is_empty() || recipient.chars().count() > MAX_SUBJECT_CHARS {
                    return Err(Error::invalid_field("recipient", "give a recipient name"));
                }
                Ok(recipient.to_owned())
            }
            Channel::Webhook | Channel::Slack => {
                let id: EndpointId = recipient.parse().map_err(|_| {
                    Error::invalid_field("recipient", "the recipient of this channel is an endpoint id")
                })?;
                let endpoint = self.hub.storage().get_endpoint(id).await?;
                let kind = if channel == Channel::Webhook { EndpointKind::Webhook } else { EndpointKind::Slack };
                match endpoint {
                    Some(endpoint) if endpoint.kind == kind => Ok(id.to_string()),
                    Some(_) => Err(Error::invalid_field("recipient", "that endpoint is of another kind")),
                    None => Err(Error::invalid_field("recipient", "no such endpoint")),
                }
            }
        }
    }

    fn prepare_job(&self, id: NotificationId) -> Result<Job> {
        let spec = NewJob::new(kinds::SEND, json!({ "notification_id": id })).queue(EMAIL_QUEUE);
        self.hub.jobs().prepare(&Actor::System, spec)
    }
}

impl TechHub {
    /// Endpoints, notifications, templates and delivery statistics.
    pub fn notifications(&self) -> NotificationService {
        NotificationService::new(self.clone())
    }
}
