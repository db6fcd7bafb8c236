//! Notifications: one outbound message on one channel, and its delivery record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{JobId, NotificationId};

/// How a notification travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email over SMTP.
    Email,
    /// An HTTP POST with a signed body.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// The log / outbox (development and tests).
    Log,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Self; 4] = [Self::Email, Self::Webhook, Self::Slack, Self::Log];
}

/// Whether a notification was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Not yet delivered (possibly retrying).
    Pending,
    /// Delivered.
    Sent,
    /// Given up on.
    Failed,
}

impl NotificationStatus {
    /// Every status.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Sent, Self::Failed];
}

/// One outbound message and its delivery record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Its id.
    pub id: NotificationId,
    /// How it travels.
    pub channel: Channel,
    /// Address, URL or channel name.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// The template it was rendered from, if any.
    pub template: Option<String>,
    /// The rendered body (for a webhook, the JSON payload POSTed; for Slack, the message JSON).
    pub body: String,
    /// The rendered HTML alternative of an email body, if any.
    #[serde(default)]
    pub html: Option<String>,
    /// The event type that caused it (`build.failed`, ...), if an event did.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Whether it was delivered.
    pub status: NotificationStatus,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was delivered.
    pub sent_at: Option<DateTime<Utc>>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The job delivering it.
    pub job_id: Option<JobId>,
    /// One record per delivery attempt, oldest first.
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
    /// Bumped by every write.
    pub version: u64,
}

impl Notification {
    /// A pending notification created at `now`.
    pub fn new(
        channel: Channel,
        recipient: impl Into<String>,
        subject: impl Into<String>,
        body: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: NotificationId::new(),
            channel,
            recipient: recipient.into(),
            subject: subject.into(),
            template: None,
            body: body.into(),
            html: None,
            event_type: None,
            status: NotificationStatus::Pending,
            attempts: 0,
            created_at: now,
            sent_at: None,
            last_error: None,
            job_id: None,
            deliveries: Vec::new(),
            version: 0,
        }
    }
}

/// One delivery attempt of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// When the attempt began.
    pub at: DateTime<Utc>,
    /// The HTTP status the receiver answered, if it answered.
    pub status_code: Option<u16>,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
}

/// Which notifications to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only this status.
    pub status: Option<NotificationStatus>,
}

impl NotificationFilter {
    /// Whether `notification` passes the filter.
    pub fn matches(&self, notification: &Notification) -> bool {
        self.channel.is_none_or(|channel| channel == notification.channel)
            && self.status.is_none_or(|status| status == notification.status)
    }
}

/// How many notifications of one channel are in one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationCount {
    /// The channel.
    pub channel: Channel,
    /// The status.
    pub status: NotificationStatus,
    /// How many.
    pub count: u64,
}
