//! Liveness, readiness and metrics (no auth), and the operators' routes (admins): the server's version,
//! store and workers, counts of everything, the database, recent logs, and the metrics again.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderValue, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use techhub_core::model::{BuildStatus, DatabaseInfo, JobState, NotificationStatus};
use techhub_core::system::SystemStats;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiQuery, Authenticated};
use crate::log_ring::{LogLevel, LogRecord};
use crate::metrics_export;
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Liveness {
    /// Always `ok` while the process serves.
    pub status: &'static str,
    /// The server's version.
    pub version: &'static str,
    /// Seconds since the router was built.
    pub uptime_s: u64,
}

/// Readiness: whether the dependencies answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// Each check: `storage` (`ok` or `down`), `workers` (how many run in this process), `store` (backend).
    #[schema(value_type = Object)]
    pub checks: serde_json::Value,
}

/// The store, in short.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreSummaryView {
    /// The backend: `memory`, `sqlite`, `sled`, ...
    pub kind: String,
    /// The version of the layout it wrote (`null`: nothing on disk).
    pub schema_version: Option<u64>,
}

/// What runs: version, uptime, store, workers, build executor.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemInfoView {
    /// The server's version.
    pub version: &'static str,
    /// Seconds since the router was built.
    pub uptime_s: u64,
    /// When the router was built.
    pub started_at: DateTime<Utc>,
    /// The store.
    pub store: StoreSummaryView,
    /// Workers in this process per queue.
    pub workers: BTreeMap<String, usize>,
    /// The executor that runs module commands here (`process`), or `null`: external executors only.
    pub build_executor: Option<&'static str>,
}

/// Users: all of them, those who may sign in, admins.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserCountsView {
    /// Every user.
    pub total: u64,
    /// Users who may sign in.
    pub active: u64,
    /// Users with the admin role, active or not.
    pub admins: u64,
}

/// Jobs per state.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCountsView {
    /// Waiting.
    pub queued: u64,
    /// Leased by a worker.
    pub running: u64,
    /// Finished with a result.
    pub succeeded: u64,
    /// Failed for good.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// Builds per status.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildCountsView {
    /// Waiting.
    pub queued: u64,
    /// Running.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Timed out.
    pub timed_out: u64,
}

/// Notifications per delivery status.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationCountsView {
    /// Not yet delivered.
    pub pending: u64,
    /// Delivered.
    pub sent: u64,
    /// Failed for good.
    pub failed: u64,
}

/// How many of everything there are.
#[derive(Debug, Serialize, ToSchema)]
pub struct SystemStatsView {
    /// Users.
    pub users: UserCountsView,
    /// Jobs per state.
    pub jobs: JobCountsView,
    /// Builds per status.
    pub builds: BuildCountsView,
    /// Notifications per status.
    pub notifications: NotificationCountsView,
}

impl From<SystemStats> for SystemStatsView {
    fn from(stats: SystemStats) -> Self {
        let job = |state| stats.jobs.get(&state).copied().unwrap_or(0);
        let build = |status| stats.builds.get(&status).copied().unwrap_or(0);
        let notification = |status| stats.notifications.get(&status).copied().unwrap_or(0);
        Self {
            users: UserCountsView { total: stats.users.total, active: stats.users.active, admins: stats.users.admins },
            jobs: JobCountsView {
                queued: job(JobState::Queued),
                running: job(JobState::Running),
                succeeded: job(JobState::Succeeded),
                failed: job(JobState::Failed),
                cancelled: job(JobState::Cancelled),
            },
            builds: BuildCountsView {
                queued: build(BuildStatus::Queued),
                running: build(BuildStatus::Running),
                succeeded: build(BuildStatus::Succeeded),
                failed: build(BuildStatus::Failed),
                cancelled: build(BuildStatus::Cancelled),
                timed_out: build(BuildStatus::TimedOut),
            },
            notifications: NotificationCountsView {
                pending: notification(NotificationStatus::Pending),
                sent: notification(NotificationStatus::Sent),
                failed: notification(NotificationStatus::Failed),
            },
        }
    }
}

/// The database behind the store.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseView {
    /// The backend: `memory`, `sqlite`, `sled`, ...
    pub kind: String,
    /// The version of the layout it wrote (`null`: nothing on disk).
    pub schema_version: Option<u64>,
    /// Bytes on disk, when known.
    pub size_bytes: Option<u64>,
    /// Backend facts (SQLite: `file`, `file_bytes`, `wal_bytes`, `page_size`, `page_count`, ...). Never a
    /// password or a connection string with credentials.
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl From<DatabaseInfo> for DatabaseView {
    fn from(info: DatabaseInfo) -> Self {
        Self {
            kind: info.kind,
            schema_version: info.schema_version,
            size_bytes: info.size_bytes,
            details: info.details,
        }
    }
}

/// The most log records one read returns.
pub(crate) const MAX_LOG_LIMIT: usize = 1000;
/// How many log records a read returns when it names no limit.
const DEFAULT_LOG_LIMIT: usize = 200;

/// Which log records to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogQuery {
    /// The lowest level wanted (default: every level the ring holds).
    pub level: Option<LogLevel>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// At most this many, the newest (default 200, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(readiness))
        .routes(routes!(metrics))
        .routes(routes!(info))
        .routes(routes!(stats))
        .routes(routes!(database))
        .routes(routes!(logs))
        .routes(routes!(admin_metrics))
}

/// Whether the process serves.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, description = "Alive", body = Liveness)))]
async fn health(State(state): State<AppState>) -> axum::Json<Liveness> {
    axum::Json(Liveness {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs(),
    })
}

/// Whether the server can do its work: storage answers.
#[utoipa::path(get, path = "/api/v1/system/health", tag = "system",
    responses((status = 200, description = "Ready", body = Readiness),
              (status = 503, description = "Degraded", body = Readiness)))]
async fn readiness(State(state): State<AppState>) -> Response {
    let storage = state.hub.storage().health().await;
    if let Err(error) = &storage {
        tracing::warn!(error = %error, "readiness: storage is down");
    }
    let workers: usize = state
        .hub
        .jobs()
        .stats(&techhub_core::Actor::System)
        .await
        .map_or(0, |stats| stats.iter().map(|queue| queue.workers).sum());
    let ready = storage.is_ok();
    let body = Readiness {
        status: if ready { "ok" } else { "degraded" },
        checks: json!({
            "storage": if ready { "ok" } else { "down" },
            "store": state.hub.storage().backend(),
            "workers": workers,
        }),
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// The Prometheus text, or 503 when the embedding app records metrics itself.
fn prometheus_text() -> ApiResult<Response> {
    let handle = metrics_export::handle().ok_or_else(|| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "metrics are recorded by the embedding app")
    })?;
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    handle.run_upkeep();
    Ok(([(header::CONTENT_TYPE, content_type)], handle.render()).into_response())
}

/// Prometheus metrics: HTTP requests and latency by route and status, jobs by queue and state, job durations,
/// logins, WebSocket clients, event-bus lag.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 503, description = "Another metrics recorder is installed", body = Problem)))]
async fn metrics() -> ApiResult<Response> {
    prometheus_text()
}

/// The same Prometheus text as `/metrics`, for admins (behind a proxy that hides `/metrics`).
#[utoipa::path(get, path = "/api/v1/system/metrics", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 503, description = "Another metrics recorder is installed", body = Problem)))]
async fn admin_metrics(State(state): State<AppState>, session: Authenticated) -> ApiResult<Response> {
    state.hub.system().authorize(&session.actor())?;
    prometheus_text()
}

/// The server: version, uptime, store and schema version, workers per queue, build executor (admins).
#[utoipa::path(get, path = "/api/v1/system/info", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "The server", body = SystemInfoView)))]
async fn info(State(state): State<AppState>, session: Authenticated) -> ApiResult<axum::Json<SystemInfoView>> {
    let actor = session.actor();
    let database = state.hub.system().database(&actor).await?;
    let workers = state.hub.jobs().stats(&actor).await?.into_iter().map(|queue| (queue.counts.queue, queue.workers));
    Ok(axum::Json(SystemInfoView {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs(),
        started_at: state.started_at,
        store: StoreSummaryView { kind: database.kind, schema_version: database.schema_version },
        workers: workers.filter(|(_, workers)| *workers > 0).collect(),
        build_executor: state.hub.build_executor().map(|executor| executor.name()),
    }))
}

/// Counts of users, jobs per state, builds per status and notifications per status, from counters (admins).
#[utoipa::path(get, path = "/api/v1/system/stats", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "The counts", body = SystemStatsView)))]
async fn stats(State(state): State<AppState>, session: Authenticated) -> ApiResult<axum::Json<SystemStatsView>> {
    Ok(axum::Json(state.hub.system().stats(&session.actor()).await?.into()))
}

/// The database: kind, schema version, size and details (admins).
#[utoipa::path(get, path = "/api/v1/system/database", tag = "system", security(("bearer" = [])),
    responses((status = 200, description = "The database", body = DatabaseView)))]
async fn database(State(state): State<AppState>, session: Authenticated) -> ApiResult<axum::Json<DatabaseView>> {
    Ok(axum::Json(state.hub.system().database(&session.actor()).await?.into()))
}

/// The server's recent log records, oldest first (admins). Empty when the server keeps no log ring.
#[utoipa::path(get, path = "/api/v1/system/logs", tag = "system", security(("bearer" = [])), params(LogQuery),
    responses((status = 200, description = "The records, newest last", body = Vec<LogRecord>)))]
async fn logs(
    State(state): State<AppState>,
    session: Authenticated,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<axum::Json<Vec<LogRecord>>> {
    state.hub.system().authorize(&session.actor())?;
    let limit = query.limit.unwrap_or(DEFAULT_LOG_LIMIT);
    if !(1..=MAX_LOG_LIMIT).contains(&limit) {
        return Err(techhub_core::Error::invalid_field("limit", format!("limit must be 1..={MAX_LOG_LIMIT}")).into());
    }
    let records = state
        .config
        .log_ring
        .as_ref()
        .map_or_else(Vec::new, |ring| ring.recent(query.level.unwrap_or(LogLevel::Trace), query.since, limit));
    Ok(axum::Json(records))
}
