//! The storage family: one object-safe async trait per aggregate, gathered by [`Storage`].
//!
//! The traits speak in domain terms (claim the next job, consume a token), so each adapter can use what its
//! backend does best. Every sentence of a method's docs that starts with a rule is a contract: the
//! conformance suite (`techhub_core::storage::conformance`, feature `conformance`) has a test for it, and an
//! adapter is correct when it passes the whole suite.
//!
//! Times are always passed in (`now`): stores never read a clock, so tests drive time by hand.
//!
//! # Transactional follow-up jobs
//! A domain write and the jobs that follow from it commit together or not at all: [`UserStore::insert_user`],
//! [`UserStore::update_user`] and [`BuildStore::insert_builds`] take the follow-up jobs and store them in the
//! same atomic write. A user is never created without its welcome email, and no job exists for a user whose
//! insert failed.

pub mod decisions;
mod error;
mod local_rate_buckets;
mod peers;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use self::error::{Conflict, StoreError, StoreResult};
pub use self::local_rate_buckets::LocalRateBuckets;
pub use self::peers::{PeerInbox, Peers};
use crate::model::{
    Artifact, AuditEntry, AuditFilter, Build, BuildFilter, BuildId, BuildOutcome, BuildStatus, Consumed, DatabaseInfo,
    Email, Endpoint, EndpointId, Job, JobFailure, JobFilter, JobId, JobState, Lease, LogLine, NewLogLine, Notification,
    NotificationCount, NotificationFilter, NotificationId, OutcomeFilter, Page, PageRequest, Progress, QueueCounts,
    QueueStarts, RateLimit, Settlement, TokenFamilyId, TokenHash, TokenKind, TokenRecord, User, UserCounts, UserFilter,
    UserId, WorkerId,
};

/// Users, unique by normalised email, updated under optimistic concurrency.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores `user` with version 1, and enqueues `follow_up` in the same atomic write.
    ///
    /// - The email is unique: if another user has it, fails with [`Conflict::EmailTaken`] and stores nothing,
    ///   no job included. Of concurrent inserts of one address exactly one succeeds.
    /// - A user whose id exists fails with [`Conflict::Duplicate`].
    /// - Follow-up jobs obey [`JobStore::enqueue`] (a live `unique_key` returns the existing job).
    ///
    /// Returns the stored user.
    async fn insert_user(&self, user: User, follow_up: Vec<Job>) -> StoreResult<User>;

    /// The user with `id`, if any.
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>>;

    /// The user with the (normalised) `email`, if any.
    async fn get_user_by_email(&self, email: &Email) -> StoreResult<Option<User>>;

    /// Replaces the stored user with `user` if its version is still `expected_version`, stores it with
    /// version `expected_version + 1`, and enqueues `follow_up` in the same atomic write.
    ///
    /// - A missing user fails with [`StoreError::NotFound`].
    /// - A stale `expected_version` fails with [`Conflict::VersionMismatch`] and changes nothing.
    /// - A new email held by another user fails with [`Conflict::EmailTaken`] and changes nothing; the old
    ///   address is free afterwards.
    /// - A write that would leave no active admin where there was one (demoting or disabling the last)
    ///   fails with [`Conflict::LastActiveAdmin`] and changes nothing.
    ///
    /// `id`, `created_at` and the login-failure counters are kept from the stored user (the counters change only
    /// through [`UserStore::record_login_failure`] and [`UserStore::clear_login_failures`], so an update never
    /// undoes a concurrent failure). Returns the stored user.
    async fn update_user(&self, user: User, expected_version: u64, follow_up: Vec<Job>) -> StoreResult<User>;

    /// Deletes the user and, in the same atomic write, every token it holds (so all its sessions end).
    ///
    /// - A missing user fails with [`StoreError::NotFound`].
    /// - With `expected_version`, a stale version fails with [`Conflict::VersionMismatch`].
    /// - Deleting the last active admin fails with [`Conflict::LastActiveAdmin`].
    ///
    /// Its email is free afterwards. Its jobs, builds and notifications are kept.
    async fn delete_user(&self, id: UserId, expected_version: Option<u64>) -> StoreResult<()>;

    /// Counts a failed sign-in at `now`, atomically: returns the new number of failures since the last success.
    /// Of concurrent failures none is lost. The version does not change. A missing user is `NotFound`.
    async fn record_login_failure(&self, id: UserId, now: DateTime<Utc>) -> StoreResult<u32>;

    /// Resets the failure count after a successful sign-in. The version does not change. A missing user is
    /// `NotFound`.
    async fn clear_login_failures(&self, id: UserId) -> StoreResult<()>;

    /// How many users there are (all, active, admins), without loading them.
    ///
    /// The counts follow every insert, update and delete at once.
    async fn count_users(&self) -> StoreResult<UserCounts>;

    /// A page of users passing `filter`, in id order.
    ///
    /// Listing by cursor never skips nor repeats a user, even while others are inserted or deleted. An
    /// unreadable cursor fails with [`StoreError::InvalidInput`].
    async fn list_users(&self, filter: &UserFilter, page: &PageRequest) -> StoreResult<Page<User>>;
}

/// Which tokens to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSelector {
    /// Every token of one family (one login session).
    Family(TokenFamilyId),
    /// Every token of a user, optionally of one kind, optionally sparing one family (the caller's session).
    User {
        /// Whose tokens.
        user_id: UserId,
        /// Only this kind; `None` for all kinds.
        kind: Option<TokenKind>,
        /// Keep this family.
        except_family: Option<TokenFamilyId>,
    },
}

/// Refresh, password-reset and email-verification tokens, stored as hashes.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores a token record.
    ///
    /// - A record with the same hash fails with [`Conflict::Duplicate`].
    /// - Every field reads back as stored, its client (user agent and address) included.
    async fn insert_token(&self, record: TokenRecord) -> StoreResult<()>;

    /// The record with `hash` as stored (consumed and expired ones included), without changing it.
    async fn get_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>>;

    /// Consumes the token with `hash` and `kind` at `now`, atomically.
    ///
    /// - A live token (unconsumed, `now < expires_at`) is marked consumed and returned as
    ///   [`Consumed::Fresh`]; of concurrent consumers exactly one gets it.
    /// - With `replacement`, a fresh consume also stores the replacement in the same atomic write (refresh
    ///   rotation: a revoke of the family can never fall between the two).
    /// - A token consumed before is returned as [`Consumed::Replayed`] and nothing changes.
    /// - An expired token, a token of another kind, or an unknown hash gives `None`. Expired tokens are
    ///   never returned.
    async fn consume_token(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: DateTime<Utc>,
        replacement: Option<TokenRecord>,
    ) -> StoreResult<Option<Consumed>>;

    /// Deletes the tokens `selector` names, consumed ones included, and returns how many there were.
    async fn revoke_tokens(&self, selector: TokenSelector) -> StoreResult<u64>;

    /// A user's live tokens of `kind` at `now` (for listing sessions), oldest first.
    async fn live_tokens(&self, user_id: UserId, kind: TokenKind, now: DateTime<Utc>) -> StoreResult<Vec<TokenRecord>>;

    /// Whether the family holds a live token at `now`: a session is alive while its refresh chain is.
    async fn family_is_live(&self, family: TokenFamilyId, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Deletes every record that expired before `now` and returns how many.
    async fn prune_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// Durable jobs: enqueue, claim under a lease, report, finish.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a queued job (built by [`Job::new`]).
    ///
    /// - If the job has a `unique_key` and a queued or running job has that key, returns that job and
    ///   stores nothing. Of concurrent enqueues with one key exactly one job is stored.
    /// - Otherwise a job whose id exists fails with [`Conflict::Duplicate`]. The key is asked first: enqueueing
    ///   again a job whose key is still live returns the live job, whatever its id (a retried request is
    ///   answered, not refused).
    ///
    /// Returns the stored (or existing) job.
    async fn enqueue(&self, job: Job) -> StoreResult<Job>;

    /// Enqueues every job in one atomic write: all are stored (with [`JobStore::enqueue`]'s unique-key rule,
    /// also between the jobs of the batch) or, if one fails, none is.
    async fn enqueue_many(&self, jobs: Vec<Job>) -> StoreResult<Vec<Job>>;

    /// The job with `id`, if any.
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;

    /// A page of jobs passing `filter`, in id order.
    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Page<Job>>;

    /// Claims the next due job of `queues` for `worker`, atomically.
    ///
    /// - Due means `queued` with `run_at <= now`; a delayed job is not claimable before its `run_at`.
    /// - The job chosen has the highest priority, then the oldest `run_at`, then the lowest id.
    /// - It becomes `running` with `attempt + 1`, `started_at = now`, `lease_holder = worker` and
    ///   `lease_until = now + lease`.
    /// - Two concurrent claimers never get the same job.
    ///
    /// Returns `None` when nothing is due.
    async fn claim(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> StoreResult<Option<Job>>;

    /// Claims up to `max` due jobs of `queues` for `worker` in one atomic call (a runtime filling its free
    /// worker slots in one round).
    ///
    /// - Each job claimed changes exactly as in [`JobStore::claim`] (`running`, `attempt + 1`, the lease).
    /// - The jobs are those `max` successive claims would take, in the same order: highest priority, then oldest
    ///   `run_at`, then lowest id, across all of `queues`.
    /// - Concurrent batch claimers (and single claimers) never get the same job.
    /// - `max = 0`, or nothing due, returns an empty list.
    async fn claim_many(
        &self,
        queues: &[String],
        worker: &WorkerId,
        now: DateTime<Utc>,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<Job>>;

    /// Extends the lease to `now + extend`.
    ///
    /// Every call that presents a [`Lease`] succeeds only while the job runs under it: once the job moved on
    /// (requeued, claimed again, finished) it fails with [`Conflict::LeaseLost`] and changes nothing; a
    /// missing job fails with [`StoreError::NotFound`]. The returned job tells whether a cancel was requested.
    async fn heartbeat(&self, lease: &Lease, now: DateTime<Utc>, extend: Duration) -> StoreResult<Job>;

    /// Records the handler's progress (same lease rule as [`JobStore::heartbeat`]).
    async fn report_progress(&self, lease: &Lease, progress: Progress, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Finishes the attempt as `succeeded` with `result` and an optional artifact (same lease rule).
    /// A live `unique_key` is freed.
    async fn complete(
        &self,
        lease: &Lease,
        result: Value,
        artifact: Option<Artifact>,
        now: DateTime<Utc>,
    ) -> StoreResult<Job>;

    /// Ends the attempt as failed (same lease rule), keeping `failure.error` as `last_error`.
    ///
    /// With attempts left and [`Retry::After`](crate::model::Retry::After)`(delay)`, the job is `queued`
    /// again at `run_at = now + delay`. Otherwise (last attempt, or `Retry::Never`) it becomes `failed`
    /// for good and its `unique_key` is freed.
    async fn fail(&self, lease: &Lease, failure: JobFailure, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Gives the job back without charging an attempt (graceful shutdown): `queued` again, `attempt - 1`,
    /// `run_at = now` (same lease rule).
    async fn release(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Settles many attempts in one atomic write (a batch of finished jobs), and answers one outcome per
    /// settlement, in order.
    ///
    /// - Each settlement is fenced by its own lease and changes its job exactly as the single-job method it
    ///   names ([`JobStore::complete`], [`JobStore::fail`], [`JobStore::release`],
    ///   [`JobStore::acknowledge_cancel`]) would at `now`.
    /// - A stale lease fails only its own settlement (with [`Conflict::LeaseLost`], or [`StoreError::NotFound`]
    ///   for a missing job) and changes nothing for that job; the others are stored.
    /// - The outer error means the write as a whole failed and nothing of it was stored.
    async fn settle_many(&self, settlements: Vec<Settlement>, now: DateTime<Utc>)
    -> StoreResult<Vec<StoreResult<Job>>>;

    /// Takes up to `want` starts of `queue` at `now` from the queue's token bucket under `limit`: a queue's
    /// rate limit, kept by the store, so that every worker of every process sharing the store draws on one
    /// bucket and together they never start more than the limit allows.
    ///
    /// - A queue nobody took from yet has a full bucket: `limit.burst` starts (at least 1).
    /// - The bucket refills at `limit.per_second` starts a second of `now`, up to `limit.burst`; a `now`
    ///   earlier than the last call's refills nothing.
    /// - Whole starts are granted, at most `want` (`want = 0` grants none); when fewer than `want` are granted,
    ///   `next_in` says how long until the next one is there.
    /// - Concurrent callers draw on one bucket: together they are never granted more than it holds.
    /// - Each queue has a bucket of its own.
    async fn take_queue_starts(
        &self,
        queue: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
        want: u32,
    ) -> StoreResult<QueueStarts>;

    /// Gives back `count` starts taken from `queue`'s bucket but not used (a claim found no job).
    ///
    /// - The bucket never holds more than `limit.burst` starts.
    async fn return_queue_starts(
        &self,
        queue: &str,
        limit: RateLimit,
        now: DateTime<Utc>,
        count: u32,
    ) -> StoreResult<()>;

    /// Cancels a job.
    ///
    /// - A `queued` job becomes `cancelled` at once.
    /// - A `running` job gets `cancel_requested`; its handler sees it and the runtime then calls
    ///   [`JobStore::acknowledge_cancel`].
    /// - A finished job fails with [`Conflict::InvalidState`]; a missing one with [`StoreError::NotFound`].
    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Marks a running job whose handler stopped after a cancel as `cancelled` (same lease rule).
    async fn acknowledge_cancel(&self, lease: &Lease, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Queues a `failed` or `cancelled` job again with a fresh attempt budget (`attempt = 0`,
    /// `run_at = now`).
    ///
    /// Any other state fails with [`Conflict::InvalidState`]; a live job holding its `unique_key` fails with
    /// [`Conflict::Duplicate`].
    async fn retry(&self, id: JobId, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Rescues every `running` job whose lease ended before `now` (a crashed worker's): with attempts left it
    /// is `queued` again at `run_at = now`, otherwise it `failed` with the error "lease expired". Returns the
    /// jobs it changed.
    async fn requeue_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<Job>>;

    /// Counts by queue and state, without scanning the jobs, in queue-name order.
    async fn queue_counts(&self) -> StoreResult<Vec<QueueCounts>>;

    /// The artifact of job `id`, if it has one.
    async fn get_artifact(&self, id: JobId) -> StoreResult<Option<Artifact>>;

    /// Replaces the payload of a finished job with `null` (a payload that held user data, once no attempt can
    /// need it). Everything else about the job stays.
    ///
    /// - A queued or running job fails with [`Conflict::InvalidState`] and keeps its payload.
    /// - A missing job fails with [`StoreError::NotFound`].
    async fn discard_job_payload(&self, id: JobId) -> StoreResult<()>;

    /// Deletes finished jobs in `states` that finished before `finished_before`, with their artifacts, and
    /// returns how many. Unfinished states in `states` are ignored: a queued or running job is never pruned.
    async fn prune_jobs(&self, states: &[JobState], finished_before: DateTime<Utc>) -> StoreResult<u64>;

    /// Enqueues `job` as the job of tick `tick` of the cron schedule `schedule`, and records in the same atomic
    /// write that the tick fired, so that a tick runs once whatever the number of instances firing it.
    ///
    /// - A tick later than the schedule's last fired tick becomes its last fired tick, and `job` is stored as
    ///   [`JobStore::enqueue`] stores it; the answer is `Some` of the stored (or existing live) job.
    /// - A schedule that never fired takes any tick.
    /// - A tick equal to or earlier than the schedule's last fired tick stores nothing and answers `None`, also
    ///   when the job of that tick has finished since.
    /// - Of concurrent calls for one schedule and tick, exactly one stores a job.
    /// - Each schedule has its own last fired tick.
    /// - If storing the job fails, the tick is not recorded and the error is returned.
    ///
    /// The record is one entry per schedule name, replaced at each tick: it needs no pruning.
    async fn enqueue_cron_tick(&self, schedule: &str, tick: DateTime<Utc>, job: Job) -> StoreResult<Option<Job>>;
}

/// Builds and their append-only logs.
#[async_trait]
pub trait BuildStore: Send + Sync {
    /// Stores every build with version 1, and `follow_up` jobs, in one atomic write: all or nothing.
    ///
    /// A build whose id exists fails with [`Conflict::Duplicate`] and stores nothing.
    /// A build stored finished has its [`BuildOutcome`] kept in the same write (see [`BuildStore::build_outcomes`]).
    async fn insert_builds(&self, builds: Vec<Build>, follow_up: Vec<Job>) -> StoreResult<Vec<Build>>;

    /// The build with `id`, if any.
    async fn get_build(&self, id: BuildId) -> StoreResult<Option<Build>>;

    /// Replaces the build if its version is still `expected_version`, storing `expected_version + 1`.
    ///
    /// A stale version fails with [`Conflict::VersionMismatch`] and changes nothing; a missing build with
    /// [`StoreError::NotFound`].
    /// A build stored finished has its [`BuildOutcome`] written (replaced) in the same atomic write; a build
    /// stored unfinished (a retried module made it run again) has its outcome removed.
    async fn update_build(&self, build: Build, expected_version: u64) -> StoreResult<Build>;

    /// A page of builds passing `filter`, in id order.
    async fn list_builds(&self, filter: &BuildFilter, page: &PageRequest) -> StoreResult<Page<Build>>;

    /// Appends lines to the build's log, numbering them on from the last (`seq` from 0, no gaps, no
    /// reordering, also under concurrent appends). Returns the log's new length. A missing build fails
    /// with [`StoreError::NotFound`].
    async fn append_log(&self, id: BuildId, lines: Vec<NewLogLine>) -> StoreResult<u64>;

    /// Up to `limit` lines of the build's log from `offset` (a `seq`), in order.
    ///
    /// Lines dropped by [`BuildStore::truncate_log`] are not returned; the `seq`s of the others never change.
    async fn read_log(&self, id: BuildId, offset: u64, limit: usize) -> StoreResult<Vec<LogLine>>;

    /// Drops log lines in one atomic write: the line at `marker.seq` is replaced by `marker`, and every line
    /// whose `seq` is in `drop` is deleted (a `seq` that is not stored is ignored).
    ///
    /// The caller never drops the log's last line, so the next append still numbers on from the log's length.
    /// A missing build fails with [`StoreError::NotFound`] and changes nothing.
    async fn truncate_log(&self, id: BuildId, marker: LogLine, drop: Vec<u64>) -> StoreResult<()>;

    /// How many builds there are per status (only non-zero counts, in [`BuildStatus::ALL`] order), without
    /// loading the builds.
    async fn build_counts(&self) -> StoreResult<Vec<(BuildStatus, u64)>>;

    /// The outcomes of the finished builds that pass `filter`, in build id order: what statistics are computed
    /// from, without loading the builds themselves.
    async fn build_outcomes(&self, filter: &OutcomeFilter) -> StoreResult<Vec<BuildOutcome>>;

    /// The newest build (highest id) of every project, in project-name order.
    async fn latest_builds(&self) -> StoreResult<Vec<Build>>;
}

/// Notification delivery records: one record per notification, holding its delivery attempts
/// ([`Notification::deliveries`]), so an attempt and the status it leads to are one write.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Stores a notification with version 1. A duplicate id fails with [`Conflict::Duplicate`].
    ///
    /// Every field reads back as stored, the HTML body, event type and delivery attempts (in their order)
    /// included.
    async fn insert_notification(&self, notification: Notification) -> StoreResult<Notification>;

    /// Stores a notification and the `notification.send` job that delivers it in one atomic write, so a crash
    /// never leaves a pending notification without its job (or a job without its notification).
    ///
    /// - With `expected_version` `None` the notification is stored with version 1, as
    ///   [`NotificationStore::insert_notification`] stores it; an id that exists fails with
    ///   [`Conflict::Duplicate`].
    /// - With `Some(version)` the stored notification is replaced if its version is still `version`, and is
    ///   stored with version `version + 1` (a resend); a stale version fails with [`Conflict::VersionMismatch`]
    ///   and a missing notification with [`StoreError::NotFound`].
    /// - The job is stored as [`JobStore::enqueue`] stores it, except that a job whose id exists fails with
    ///   [`Conflict::Duplicate`], and so does a job whose unique key a queued or running job holds.
    /// - After success both are stored; after any failure neither the notification nor the jobs changed.
    ///
    /// Returns the notification and the job as stored.
    async fn queue_notification(
        &self,
        notification: Notification,
        expected_version: Option<u64>,
        job: Job,
    ) -> StoreResult<(Notification, Job)>;

    /// The notification with `id`, if any.
    async fn get_notification(&self, id: NotificationId) -> StoreResult<Option<Notification>>;

    /// Replaces the notification if its version is still `expected_version` (else
    /// [`Conflict::VersionMismatch`]); a missing one fails with [`StoreError::NotFound`].
    async fn update_notification(&self, notification: Notification, expected_version: u64)
    -> StoreResult<Notification>;

    /// A page of notifications passing `filter`, in id order.
    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Notification>>;

    /// How many notifications there are per channel and status (only non-zero counts, ordered by channel then
    /// status as the enums declare them), without loading them.
    async fn notification_counts(&self) -> StoreResult<Vec<NotificationCount>>;
}

/// Notification endpoints (webhook and Slack targets), a small collection read whole.
#[async_trait]
pub trait EndpointStore: Send + Sync {
    /// Stores `endpoint` with version 1.
    ///
    /// - An endpoint whose id exists fails with [`Conflict::Duplicate`] and changes nothing.
    /// - Every field reads back as stored, its secrets (in their order) included.
    async fn insert_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint>;

    /// The endpoint with `id`, if any.
    async fn get_endpoint(&self, id: EndpointId) -> StoreResult<Option<Endpoint>>;

    /// Replaces the stored endpoint with `endpoint` if its version is still `expected_version`, and stores it
    /// with version `expected_version + 1`.
    ///
    /// - A missing endpoint fails with [`StoreError::NotFound`].
    /// - A stale `expected_version` fails with [`Conflict::VersionMismatch`] and changes nothing.
    /// - `created_at` stays as first stored.
    async fn update_endpoint(&self, endpoint: Endpoint, expected_version: u64) -> StoreResult<Endpoint>;

    /// Deletes the endpoint with `id`; a missing one fails with [`StoreError::NotFound`]. Its notifications
    /// are kept (the delivery job sees the endpoint is gone and stops).
    async fn delete_endpoint(&self, id: EndpointId) -> StoreResult<()>;

    /// Every endpoint, in id order (creation order).
    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>>;
}

/// The audit log: append-only (there is no way to change an entry), pruned only by age.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `entry`.
    ///
    /// - An entry whose id exists fails with [`Conflict::Duplicate`] and changes nothing: entries are never
    ///   replaced.
    /// - Every field reads back as appended.
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()>;

    /// A page of entries passing `filter`, in id order (the order they were made).
    ///
    /// Listing by cursor never skips nor repeats an entry, even while others are appended. An unreadable
    /// cursor fails with [`StoreError::InvalidInput`].
    async fn list_audit(&self, filter: &AuditFilter, page: &PageRequest) -> StoreResult<Page<AuditEntry>>;

    /// Deletes every entry whose `at` is before `before` and returns how many; later entries stay.
    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Everything TechHub stores, behind one object-safe trait: the hub holds an `Arc<dyn Storage>`.
#[async_trait]
pub trait Storage:
    UserStore
    + TokenStore
    + JobStore
    + BuildStore
    + NotificationStore
    + EndpointStore
    + AuditStore
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// A short name of the backend (`"memory"`, `"sqlite"`), for logs and health reports.
    fn backend(&self) -> &'static str;

    /// Checks that the backend answers (a cheap read). Fails with [`StoreError::Unavailable`] if not.
    async fn health(&self) -> StoreResult<()>;

    /// Facts about the database, for operators: its kind, schema version, size and backend details.
    ///
    /// - The `kind` is [`Storage::backend`].
    /// - The `schema_version` is the same on every call of one open store.
    /// - The `details` hold no secret: no password and no connection string with credentials.
    /// - It is answered without loading any user, job, build or notification.
    async fn database_info(&self) -> StoreResult<DatabaseInfo>;

    /// The user `user_id` if the session (token family) `family` is live at `now` — what authenticating a
    /// request reads — else `None` (the session ended, or the user is gone).
    ///
    /// The default asks [`TokenStore::family_is_live`], then [`UserStore::get_user`]; a store whose reads
    /// have a fixed cost per call (a hop to a blocking thread) answers both in one.
    async fn session_user(
        &self,
        family: TokenFamilyId,
        user_id: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        if !self.family_is_live(family, now).await? {
            return Ok(None);
        }
        self.get_user(user_id).await
    }

    /// The other app instances sharing this store, when the store can reach them (see [`Peers`]): the hub
    /// wires its event bus and job wake-ups to them. The default, for stores one process uses, is `None`.
    fn peers(&self) -> Option<Arc<dyn Peers>> {
        None
    }
}

/// A shared, type-erased store: what services hold.
pub type DynStorage = Arc<dyn Storage>;
