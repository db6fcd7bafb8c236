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

/// Delivery attempts kept on one notification: past it, [`Notification::record_delivery`] drops the oldest
/// (resends included).
pub const MAX_DELIVERIES_KEPT: usize = 100;

/// One delivery attempt of a notification and the status it leads to, recorded by the settle of the job that
/// made it ([`SideWrite::RecordDelivery`](super::SideWrite::RecordDelivery)), so that the attempt, the
/// notification's status and the job's outcome are one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The notification delivered.
    pub notification_id: NotificationId,
    /// The attempt, if one was made (`None` when the notification is given up on without one: its endpoint
    /// was deleted or disabled).
    pub delivery: Option<Delivery>,
    /// The status it leads to.
    pub status: NotificationStatus,
    /// The notification's `last_error` from now on (`None` clears it).
    pub last_error: Option<String>,
}

impl Notification {
    /// Records `record` as stored at `now`: one more attempt (the oldest dropped past
    /// [`MAX_DELIVERIES_KEPT`]), the new status and last error, `sent_at = now` when it is now sent, and the
    /// next version.
    pub fn record_delivery(&mut self, record: &DeliveryRecord, now: DateTime<Utc>) {
        if let Some(delivery) = &record.delivery {
            self.attempts = self.attempts.saturating_add(1);
            self.deliveries.push(delivery.clone());
            if self.deliveries.len() > MAX_DELIVERIES_KEPT {
                let excess = self.deliveries.len() - MAX_DELIVERIES_KEPT;
                self.deliveries.drain(..excess);
            }
        }
        self.status = record.status;
        self.last_error.clone_from(&record.last_error);
        if record.status == NotificationStatus::Sent {
            self.sent_at = Some(now);
        }
        self.version += 1;
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).single().unwrap_or_default()
    }

    fn delivery(second: u32, error: Option<&str>) -> Delivery {
        Delivery { at: at(second), status_code: Some(500), error: error.map(str::to_owned), duration_ms: 3 }
    }

    #[test]
    fn a_recorded_delivery_counts_an_attempt_and_sets_the_status() {
        let mut notification = Notification::new(Channel::Webhook, "endpoint", "subject", "{}", at(0));
        notification.version = 4;
        let failed = DeliveryRecord {
            notification_id: notification.id,
            delivery: Some(delivery(1, Some("HTTP 500"))),
            status: NotificationStatus::Pending,
            last_error: Some("HTTP 500".to_owned()),
        };
        notification.record_delivery(&failed, at(2));
        assert_eq!(
            (notification.attempts, notification.status, notification.last_error.as_deref(), notification.sent_at),
            (1, NotificationStatus::Pending, Some("HTTP 500"), None)
        );
        assert_eq!(notification.version, 5);
        let sent = DeliveryRecord {
            delivery: Some(delivery(3, None)),
            status: NotificationStatus::Sent,
            last_error: None,
            ..failed
        };
        notification.record_delivery(&sent, at(4));
        assert_eq!(
            (notification.attempts, notification.status, notification.last_error.as_deref(), notification.sent_at),
            (2, NotificationStatus::Sent, None, Some(at(4)))
        );
        assert_eq!(notification.deliveries, vec![delivery(1, Some("HTTP 500")), delivery(3, None)]);
    }

    #[test]
    fn giving_up_without_an_attempt_counts_none() {
        let mut notification = Notification::new(Channel::Slack, "endpoint", "subject", "{}", at(0));
        let gave_up = DeliveryRecord {
            notification_id: notification.id,
            delivery: None,
            status: NotificationStatus::Failed,
            last_error: Some("the endpoint was deleted".to_owned()),
        };
        notification.record_delivery(&gave_up, at(1));
        assert_eq!((notification.attempts, notification.status), (0, NotificationStatus::Failed));
        assert!(notification.deliveries.is_empty());
    }

    #[test]
    fn only_the_latest_deliveries_are_kept() {
        let mut notification = Notification::new(Channel::Webhook, "endpoint", "subject", "{}", at(0));
        for second in 0..(MAX_DELIVERIES_KEPT as u32 + 5) {
            let record = DeliveryRecord {
                notification_id: notification.id,
                delivery: Some(delivery(second % 60, Some(&second.to_string()))),
                status: NotificationStatus::Pending,
                last_error: None,
            };
            notification.record_delivery(&record, at(0));
        }
        assert_eq!(notification.deliveries.len(), MAX_DELIVERIES_KEPT);
        assert_eq!(notification.attempts, MAX_DELIVERIES_KEPT as u32 + 5);
        assert_eq!(notification.deliveries[0].error.as_deref(), Some("5"));
    }
}
