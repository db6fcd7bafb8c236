//! The domain: users, tokens, jobs, builds, notifications, and the ids and pages they come in.

mod audit;
mod build;
mod database;
mod endpoint;
mod ids;
mod job;
mod notification;
mod page;
mod rate_limit;
mod redaction;
mod token;
mod user;

pub use audit::{AuditAction, AuditEntry, AuditFilter, AuditOutcome};
pub use build::{
    Build, BuildFilter, BuildOutcome, BuildStatus, LogLine, LogStream, Module, ModuleOutcome, ModuleStatus, NewLogLine,
    OutcomeFilter,
};
pub use database::DatabaseInfo;
pub use endpoint::{Endpoint, EndpointKind, EndpointSecret, SigningSecret, redact_secret_path, redact_url};
pub use ids::{AuditId, BuildId, EndpointId, JobId, NotificationId, TokenFamilyId, UserId};
pub use job::{
    Artifact, ArtifactInfo, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, Job, JobFailure, JobFilter, JobState, Lease,
    MAX_NAME_BYTES, NewJob, Progress, QueueCounts, Retry, Settlement, SideWrite, WorkerId,
};
pub use notification::{
    Channel, Delivery, DeliveryRecord, MAX_DELIVERIES_KEPT, Notification, NotificationCount, NotificationFilter,
    NotificationStatus,
};
pub use page::{Cursor, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageRequest};
pub use rate_limit::{QueueStarts, RateBucket, RateLimit};
pub use redaction::{REDACTED, names_a_secret, redact_secrets};
pub use token::{ClientMeta, Consumed, TokenHash, TokenKind, TokenRecord};
pub use user::{Email, MAX_EMAIL_BYTES, PasswordHash, Role, User, UserCounts};

/// Which users to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Only this role.
    pub role: Option<Role>,
    /// Only active (`true`) or disabled (`false`) users.
    pub active: Option<bool>,
    /// Only users whose email or name contains this text (case-insensitive).
    pub query: Option<String>,
}

impl UserFilter {
    /// Whether `user` passes the filter.
    pub fn matches(&self, user: &User) -> bool {
        self.role.is_none_or(|role| role == user.role)
            && self.active.is_none_or(|active| active == user.active)
            && self.query.as_ref().is_none_or(|query| {
                let query = query.to_lowercase();
                user.email.as_str().contains(&query) || user.name.to_lowercase().contains(&query)
            })
    }
}
