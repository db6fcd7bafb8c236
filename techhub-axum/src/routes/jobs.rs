//! `/api/v1/jobs/*` and `/api/v1/queue`: following, enqueueing, cancelling and retrying jobs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderValue, header};
use serde::Deserialize;
use serde_json::Value;
use techhub_core::model::{JobFilter, JobId, JobState, NewJob};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated, page_request};
use crate::problem::{ApiResult, Problem};
use crate::routes::accepted;
use crate::state::AppState;
use crate::views::{JobAccepted, JobView, PageView, QueueView};

/// Filters of the job list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    #[param(value_type = Option<crate::schema_names::JobStateName>)]
    pub state: Option<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Items per page (default 50, at most 500).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A job to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueRequest {
    /// The handler's name; it must be registered.
    pub kind: String,
    /// The handler's input.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The queue (default: the handler's).
    #[serde(default)]
    pub queue: Option<String>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Not before this time.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts allowed (default: the handler's).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// While a job with this key is queued or running, enqueueing another returns it instead.
    #[serde(default)]
    pub unique_key: Option<String>,
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs, enqueue))
        .routes(routes!(get_job))
        .routes(routes!(artifact))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(queues))
}

/// The jobs the caller may see (admins: all; users: their own).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])), params(JobListQuery),
    responses((status = 200, description = "A page of jobs", body = PageView<JobView>)))]
async fn list_jobs(
    State(state): State<AppState>,
    session: Authenticated,
    ApiQuery(query): ApiQuery<JobListQuery>,
) -> ApiResult<axum::Json<PageView<JobView>>> {
    let page = page_request(query.limit, query.cursor)?;
    let filter = JobFilter { queue: query.queue, state: query.state, kind: query.kind, created_by: None };
    let jobs = state.hub.jobs().list(&session.actor(), filter, &page).await?;
    Ok(axum::Json(PageView::of(jobs)))
}

/// Enqueues a job (admins).
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])), request_body = EnqueueRequest,
    responses((status = 202, description = "Accepted", body = JobAccepted),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 422, description = "Unknown kind or invalid fields", body = Problem)))]
async fn enqueue(
    State(state): State<AppState>,
    session: Authenticated,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> ApiResult<Response> {
    let spec = NewJob {
        queue: request.queue,
        kind: request.kind,
        payload: request.payload,
        priority: request.priority,
        run_at: request.run_at,
        max_attempts: request.max_attempts,
        unique_key: request.unique_key,
        created_by: None,
    };
    let job = state.hub.jobs().enqueue(&session.actor(), spec).await?;
    Ok(accepted(job.id))
}

/// A job the caller may see.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, description = "The job, with its payload (secrets redacted)", body = JobView),
              (status = 404, description = "No such job (or not yours)", body = Problem)))]
async fn get_job(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<axum::Json<JobView>> {
    let job = state.hub.jobs().get(&session.actor(), id).await?;
    let payload = techhub_core::model::redact_secrets(&job.payload);
    Ok(axum::Json(JobView { payload: Some(payload), ..job.into() }))
}

/// The file a succeeded job produced (an export), with its content type.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/artifact", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, description = "The file, with `content-disposition: attachment`",
                content((String = "text/csv"), (Vec<Object> = "application/json"))),
              (status = 404, description = "No file (yet)", body = Problem)))]
async fn artifact(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<Response> {
    let artifact = state.hub.jobs().artifact(&session.actor(), id).await?;
    let content_type = HeaderValue::from_str(&artifact.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let file_name = artifact.file_name.as_deref().map(safe_file_name).unwrap_or_else(|| format!("job-{id}"));
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok(([(header::CONTENT_TYPE, content_type), (header::CONTENT_DISPOSITION, disposition)], artifact.bytes)
        .into_response())
}

/// A file name safe inside a quoted header parameter: no quotes, separators or control characters.
fn safe_file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// Cancels a job: a queued one at once (200), a running one once its handler stops (202).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, description = "Cancelled", body = JobView),
              (status = 202, description = "Cancel requested", body = JobView),
              (status = 409, description = "Already finished", body = Problem)))]
async fn cancel(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<Response> {
    let job = state.hub.jobs().cancel(&session.actor(), id).await?;
    let status = if job.state == JobState::Cancelled { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, axum::Json(JobView::from(job))).into_response())
}

/// Queues a failed or cancelled job again with a fresh attempt budget (admins).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 202, description = "Queued again", body = JobAccepted),
              (status = 409, description = "Not failed or cancelled", body = Problem)))]
async fn retry(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<JobId>,
) -> ApiResult<Response> {
    let job = state.hub.jobs().retry(&session.actor(), id).await?;
    Ok(accepted(job.id))
}

/// Per-queue counts (admins).
#[utoipa::path(get, path = "/api/v1/queue", tag = "jobs", security(("bearer" = [])),
    responses((status = 200, description = "Every queue", body = Vec<QueueView>),
              (status = 403, description = "Not an admin", body = Problem)))]
async fn queues(State(state): State<AppState>, session: Authenticated) -> ApiResult<axum::Json<Vec<QueueView>>> {
    let stats = state.hub.jobs().stats(&session.actor()).await?;
    Ok(axum::Json(stats.into_iter().map(QueueView::from).collect()))
}
