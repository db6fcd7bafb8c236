//! The API's objects (docs/http-api.md, "Objects"): what clients see of the core's types. Built field by field, so a
//! field added to a core type never leaks by accident (a user's password hash, a job's lease holder).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use techhub_core::auth::TokenPair;
use techhub_core::jobs::QueueStats;
use techhub_core::model::{Job, JobId, JobState, Page, Role, User};
use utoipa::ToSchema;
use uuid::Uuid;

/// A user. Never a password or token field.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// Its id.
    pub id: Uuid,
    /// Its email address, normalised.
    pub email: String,
    /// Its display name.
    pub name: String,
    /// `user` or `admin`.
    #[schema(value_type = crate::schema_names::RoleName, example = "user")]
    pub role: Role,
    /// Whether it may sign in.
    pub active: bool,
    /// Whether it confirmed its email address.
    pub email_verified: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id.into(),
            email: user.email.to_string(),
            name: user.name,
            role: user.role,
            active: user.active,
            email_verified: user.email_verified,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// What a sign-in or refresh returns.
#[derive(Serialize, ToSchema)]
pub struct TokenPairView {
    /// The access token (a JWT) for `Authorization: Bearer`.
    pub access_token: String,
    /// The refresh token: single use, exchanged at `/api/v1/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(value_type = crate::schema_names::TokenTypeName)]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The signed-in user.
    pub user: UserView,
}

impl From<TokenPair> for TokenPairView {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: pair.token_type,
            expires_in: pair.expires_in,
            user: pair.user.into(),
        }
    }
}

/// A job's progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgressView {
    /// 0 to 100.
    pub percent: u8,
    /// What the handler is doing.
    pub message: Option<String>,
}

/// A background job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Its id.
    pub id: Uuid,
    /// The queue it runs on.
    pub queue: String,
    /// Its handler's name.
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = crate::schema_names::JobStateName, example = "queued")]
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts made so far.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it may run.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its latest progress.
    pub progress: ProgressView,
    /// The error of its latest failed attempt.
    pub last_error: Option<String>,
    /// What its handler returned.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Its handler's input, with every value whose key names a secret (a password, token, key, ...) replaced by
    /// `"[redacted]"`. Only in a single job's answer (`GET /api/v1/jobs/{id}`), never in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Whether `GET /api/v1/jobs/{id}/artifact` has a file.
    pub has_artifact: bool,
    /// The user who enqueued it (none for system jobs).
    pub created_by: Option<Uuid>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            id: job.id.into(),
            queue: job.queue,
            kind: job.kind,
            state: job.state,
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            run_at: job.run_at,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            progress: ProgressView { percent: job.progress.percent, message: job.progress.message },
            last_error: job.last_error,
            result: job.result,
            payload: None,
            has_artifact: job.artifact.is_some(),
            created_by: job.created_by.map(Into::into),
        }
    }
}

/// A job was accepted: follow it at `Location` or over the events socket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobAccepted {
    /// The job's id.
    pub job_id: Uuid,
}

impl From<JobId> for JobAccepted {
    fn from(id: JobId) -> Self {
        Self { job_id: id.into() }
    }
}

/// One queue's counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueView {
    /// The queue.
    pub queue: String,
    /// Waiting jobs (due or delayed).
    pub queued: u64,
    /// Jobs being worked on.
    pub running: u64,
    /// Jobs that succeeded (and are not yet pruned).
    pub succeeded: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Cancelled jobs.
    pub cancelled: u64,
    /// How long the oldest due job has waited, in seconds.
    pub oldest_queued_age_s: f64,
    /// Workers serving the queue in this process.
    pub workers: usize,
}

impl From<QueueStats> for QueueView {
    fn from(stats: QueueStats) -> Self {
        Self {
            queue: stats.counts.queue,
            queued: stats.counts.queued,
            running: stats.counts.running,
            succeeded: stats.counts.succeeded,
            failed: stats.counts.failed,
            cancelled: stats.counts.cancelled,
            oldest_queued_age_s: stats.oldest_queued_age_s,
            workers: stats.workers,
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PageView<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> PageView<T> {
    /// The view of a core page, each item converted.
    pub fn of<U: Into<T>>(page: Page<U>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|cursor| cursor.to_string()),
        }
    }
}
