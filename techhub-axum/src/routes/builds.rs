//! `/api/v1/builds/*` and `/api/v1/progress*`: builds, their modules (for external executors), logs,
//! statistics and project progress. Every rule is the core's ([`techhub_core::builds::BuildService`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderValue, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use techhub_core::builds::{LogQuery, NewBuild, NewModule};
use techhub_core::model::{BuildFilter, BuildId, BuildStatus, LogStream, OutcomeFilter};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::build_views::{
    BuildBatchView, BuildView, LogPageView, ModuleProgressView, ModuleStatsView, OverviewView, ProjectProgressView,
};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated, page_request};
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;
use crate::views::PageView;

/// A module of a build to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModuleRequest {
    /// Unique within the build: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// A shell command for the server's executor (admins only, with `TECHHUB_BUILD_EXECUTOR=process`).
    #[serde(default)]
    pub command: Option<String>,
    /// Modules that must finish well first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A failure neither fails the build nor blocks dependents.
    #[serde(default)]
    pub allow_failure: bool,
    /// One run's timeout in seconds.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Automatic retries of a failed run.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// A build to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildRequest {
    /// The project built.
    pub project: String,
    /// The ref built (default `main`).
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Stop at the first hard failure.
    #[serde(default)]
    pub fail_fast: Option<bool>,
    /// The whole build's timeout in seconds (default `TECHHUB_BUILD_TIMEOUT`).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Its modules.
    pub modules: Vec<ModuleRequest>,
}

impl From<BuildRequest> for NewBuild {
    fn from(request: BuildRequest) -> Self {
        Self {
            project: request.project,
            git_ref: request.git_ref,
            priority: request.priority,
            fail_fast: request.fail_fast,
            timeout_s: request.timeout_s,
            modules: request
                .modules
                .into_iter()
                .map(|module| NewModule {
                    name: module.name,
                    command: module.command,
                    depends_on: module.depends_on,
                    allow_failure: module.allow_failure,
                    timeout_s: module.timeout_s,
                    retries: module.retries,
                })
                .collect(),
        }
    }
}

/// Several builds, created all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// The builds.
    pub builds: Vec<BuildRequest>,
}

/// Filters of the build list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct BuildListQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only this status.
    #[param(value_type = Option<crate::schema_names::BuildStatusName>)]
    pub status: Option<BuildStatus>,
    /// Items per page (default 50, at most 500).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lines an external executor appends.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendLogRequest {
    /// The module that wrote them.
    pub module: String,
    /// `stdout` or `stderr`.
    #[schema(value_type = crate::schema_names::ExecutorStreamName, example = "stdout")]
    pub stream: LogStream,
    /// The lines, without line ends.
    pub lines: Vec<String>,
}

/// Which log lines to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogReadQuery {
    /// Only this module's lines.
    pub module: Option<String>,
    /// The first `seq` wanted (default 0).
    pub offset: Option<u64>,
    /// At most this many lines (default and maximum 5,000).
    pub limit: Option<usize>,
}

/// A running module's progress (external executors).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModuleUpdateRequest {
    /// 0 to 100.
    #[serde(default)]
    pub progress: Option<u8>,
    /// What it is doing.
    #[serde(default)]
    pub message: Option<String>,
}

/// How a module ended well (external executors).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteRequest {
    /// A note.
    #[serde(default)]
    pub message: Option<String>,
}

/// How a module ended badly (external executors).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailRequest {
    /// Why.
    #[serde(default)]
    pub message: Option<String>,
    /// The process's exit code.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// Which builds statistics cover.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Only builds finished at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
}

/// Which project a module belongs to.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ModuleProgressQuery {
    /// The project (default: the newest build that has the module).
    pub project: Option<String>,
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_builds, create_build))
        .routes(routes!(create_batch))
        .routes(routes!(get_build))
        .routes(routes!(cancel_build))
        .routes(routes!(retry_module))
        .routes(routes!(read_log, append_log))
        .routes(routes!(update_module))
        .routes(routes!(start_module))
        .routes(routes!(complete_module))
        .routes(routes!(fail_module))
        .routes(routes!(overview))
        .routes(routes!(module_stats))
        .routes(routes!(progress))
        .routes(routes!(module_progress))
}

fn build_location(build: &BuildView) -> HeaderValue {
    HeaderValue::from_str(&format!("/api/v1/builds/{}", build.id)).expect("a build path is a valid header")
}

/// A JSON body that may be absent (then the default); malformed JSON is 400, a wrong field 422.
fn optional_json<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            Problem::new(StatusCode::BAD_REQUEST, "malformed_body", format!("the body is not valid JSON: {error}"))
        } else {
            techhub_core::Error::invalid_input(format!("the body does not match: {error}")).into()
        }
    })
}

/// Creates a build. It runs on the server's executor when its modules have commands; otherwise an external
/// executor drives it through the module routes.
#[utoipa::path(post, path = "/api/v1/builds", tag = "builds", security(("bearer" = [])), request_body = BuildRequest,
    responses((status = 202, description = "Created and queued", body = BuildView),
              (status = 422, description = "Invalid: a cycle, an unknown dependency, a command not allowed", body = Problem),
              (status = 429, description = "Too many builds queued", body = Problem)))]
async fn create_build(
    State(state): State<AppState>,
    session: Authenticated,
    ApiJson(request): ApiJson<BuildRequest>,
) -> ApiResult<Response> {
    let build = BuildView::from(state.hub.builds().create(&session.actor(), request.into()).await?);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, build_location(&build))], axum::Json(build)).into_response())
}

/// Creates several builds: all of them, or (one being invalid) none.
#[utoipa::path(post, path = "/api/v1/builds/batch", tag = "builds", security(("bearer" = [])), request_body = BatchRequest,
    responses((status = 202, description = "Created and queued", body = BuildBatchView),
              (status = 422, description = "One build is invalid; nothing was stored", body = Problem),
              (status = 429, description = "Too many builds queued", body = Problem)))]
async fn create_batch(
    State(state): State<AppState>,
    session: Authenticated,
    ApiJson(request): ApiJson<BatchRequest>,
) -> ApiResult<Response> {
    let specs = request.builds.into_iter().map(NewBuild::from).collect();
    let builds = state.hub.builds().create_batch(&session.actor(), specs).await?;
    let view = BuildBatchView { builds: builds.into_iter().map(Into::into).collect() };
    Ok((StatusCode::ACCEPTED, axum::Json(view)).into_response())
}

/// The builds the caller may see (admins: all; users: their own).
#[utoipa::path(get, path = "/api/v1/builds", tag = "builds", security(("bearer" = [])), params(BuildListQuery),
    responses((status = 200, description = "A page of builds", body = PageView<BuildView>)))]
async fn list_builds(
    State(state): State<AppState>,
    session: Authenticated,
    ApiQuery(query): ApiQuery<BuildListQuery>,
) -> ApiResult<axum::Json<PageView<BuildView>>> {
    let page = page_request(query.limit, query.cursor)?;
    let filter = BuildFilter { project: query.project, status: query.status, created_by: None };
    Ok(axum::Json(PageView::of(state.hub.builds().list(&session.actor(), filter, &page).await?)))
}

/// A build the caller may see.
#[utoipa::path(get, path = "/api/v1/builds/{id}", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id")),
    responses((status = 200, description = "The build", body = BuildView),
              (status = 404, description = "No such build (or not yours)", body = Problem)))]
async fn get_build(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<BuildId>,
) -> ApiResult<axum::Json<BuildView>> {
    Ok(axum::Json(state.hub.builds().get(&session.actor(), id).await?.into()))
}

/// Cancels a build: a queued one at once (200), a running one once its processes stopped (202: SIGTERM, then
/// SIGKILL after the grace period).
#[utoipa::path(post, path = "/api/v1/builds/{id}/cancel", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id")),
    responses((status = 200, description = "Cancelled", body = BuildView),
              (status = 202, description = "Cancel under way", body = BuildView),
              (status = 409, description = "Already finished", body = Problem)))]
async fn cancel_build(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<BuildId>,
) -> ApiResult<Response> {
    let build = state.hub.builds().cancel(&session.actor(), id).await?;
    let status = if build.status.is_finished() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, axum::Json(BuildView::from(build))).into_response())
}

/// Runs a failed, timed-out or cancelled module of a finished build again, with the modules skipped because
/// of it.
#[utoipa::path(post, path = "/api/v1/builds/{id}/modules/{name}/retry", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id"), ("name" = String, Path, description = "The module")),
    responses((status = 202, description = "Running again", body = BuildView),
              (status = 409, description = "The build runs, or the module did not fail", body = Problem)))]
async fn retry_module(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath((id, name)): ApiPath<(BuildId, String)>,
) -> ApiResult<Response> {
    let build = state.hub.builds().retry_module(&session.actor(), id, &name).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(BuildView::from(build))).into_response())
}

/// Reads a build's log from `offset` (a `seq`); follow `build.log` events from `next_offset` after.
#[utoipa::path(get, path = "/api/v1/builds/{id}/logs", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id"), LogReadQuery),
    responses((status = 200, description = "Lines", body = LogPageView),
              (status = 422, description = "Offset past the end, or an unknown module", body = Problem)))]
async fn read_log(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<BuildId>,
    ApiQuery(query): ApiQuery<LogReadQuery>,
) -> ApiResult<axum::Json<LogPageView>> {
    let query = LogQuery { module: query.module, offset: query.offset.unwrap_or(0), limit: query.limit };
    Ok(axum::Json(state.hub.builds().read_log(&session.actor(), id, &query).await?.into()))
}

/// Appends lines to a build's log (external executors).
#[utoipa::path(post, path = "/api/v1/builds/{id}/logs", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id")), request_body = AppendLogRequest,
    responses((status = 202, description = "Stored"),
              (status = 422, description = "An unknown module, a wrong stream, too many lines", body = Problem)))]
async fn append_log(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<BuildId>,
    ApiJson(request): ApiJson<AppendLogRequest>,
) -> ApiResult<StatusCode> {
    if request.stream == LogStream::System {
        return Err(techhub_core::Error::invalid_field("stream", "the stream is stdout or stderr").into());
    }
    state.hub.builds().append_log(&session.actor(), id, Some(request.module), request.stream, request.lines).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Reports a running module's progress (external executors).
#[utoipa::path(put, path = "/api/v1/builds/{id}/modules/{name}", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id"), ("name" = String, Path, description = "The module")),
    request_body = ModuleUpdateRequest,
    responses((status = 200, description = "The build", body = BuildView),
              (status = 409, description = "The module is not running", body = Problem)))]
async fn update_module(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath((id, name)): ApiPath<(BuildId, String)>,
    ApiJson(request): ApiJson<ModuleUpdateRequest>,
) -> ApiResult<axum::Json<BuildView>> {
    let build =
        state.hub.builds().update_module(&session.actor(), id, &name, request.progress, request.message).await?;
    Ok(axum::Json(build.into()))
}

/// Starts a pending module whose dependencies are done (external executors).
#[utoipa::path(post, path = "/api/v1/builds/{id}/modules/{name}/start", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id"), ("name" = String, Path, description = "The module")),
    responses((status = 200, description = "The build", body = BuildView),
              (status = 409, description = "Not pending, or its dependencies are not done", body = Problem)))]
async fn start_module(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath((id, name)): ApiPath<(BuildId, String)>,
) -> ApiResult<axum::Json<BuildView>> {
    Ok(axum::Json(state.hub.builds().start_module(&session.actor(), id, &name).await?.into()))
}

/// Ends a running module well (external executors).
#[utoipa::path(post, path = "/api/v1/builds/{id}/modules/{name}/complete", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id"), ("name" = String, Path, description = "The module")),
    request_body(content = Option<CompleteRequest>, description = "Optional"),
    responses((status = 200, description = "The build", body = BuildView),
              (status = 409, description = "The module is not running", body = Problem)))]
async fn complete_module(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath((id, name)): ApiPath<(BuildId, String)>,
    body: Bytes,
) -> ApiResult<axum::Json<BuildView>> {
    let request: CompleteRequest = optional_json(&body)?;
    Ok(axum::Json(state.hub.builds().complete_module(&session.actor(), id, &name, request.message).await?.into()))
}

/// Ends a running module badly (external executors).
#[utoipa::path(post, path = "/api/v1/builds/{id}/modules/{name}/fail", tag = "builds", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The build's id"), ("name" = String, Path, description = "The module")),
    request_body(content = Option<FailRequest>, description = "Optional"),
    responses((status = 200, description = "The build", body = BuildView),
              (status = 409, description = "The module is not running", body = Problem)))]
async fn fail_module(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath((id, name)): ApiPath<(BuildId, String)>,
    body: Bytes,
) -> ApiResult<axum::Json<BuildView>> {
    let request: FailRequest = optional_json(&body)?;
    let build = state.hub.builds().fail_module(&session.actor(), id, &name, request.message, request.exit_code).await?;
    Ok(axum::Json(build.into()))
}

/// Builds at a glance (users: their own builds).
#[utoipa::path(get, path = "/api/v1/builds/stats/overview", tag = "builds", security(("bearer" = [])), params(StatsQuery),
    responses((status = 200, description = "Totals, success rate, durations", body = OverviewView)))]
async fn overview(
    State(state): State<AppState>,
    session: Authenticated,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<axum::Json<OverviewView>> {
    let filter = OutcomeFilter { project: query.project, since: query.since };
    Ok(axum::Json(state.hub.builds().overview(&session.actor(), &filter).await?.into()))
}

/// Per module: runs, success rate, durations, last status, flakiness (users: their own builds).
#[utoipa::path(get, path = "/api/v1/builds/stats/modules", tag = "builds", security(("bearer" = [])), params(StatsQuery),
    responses((status = 200, description = "Per project and module", body = Vec<ModuleStatsView>)))]
async fn module_stats(
    State(state): State<AppState>,
    session: Authenticated,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<axum::Json<Vec<ModuleStatsView>>> {
    let filter = OutcomeFilter { project: query.project, since: query.since };
    let stats = state.hub.builds().module_stats(&session.actor(), &filter).await?;
    Ok(axum::Json(stats.into_iter().map(Into::into).collect()))
}

/// Every project's newest build and its modules (users: their own builds).
#[utoipa::path(get, path = "/api/v1/progress", tag = "builds", security(("bearer" = [])),
    responses((status = 200, description = "Per project", body = Vec<ProjectProgressView>)))]
async fn progress(
    State(state): State<AppState>,
    session: Authenticated,
) -> ApiResult<axum::Json<Vec<ProjectProgressView>>> {
    let progress = state.hub.builds().progress(&session.actor()).await?;
    Ok(axum::Json(progress.into_iter().map(Into::into).collect()))
}

/// A module's latest state and its recent runs.
#[utoipa::path(get, path = "/api/v1/progress/modules/{name}", tag = "builds", security(("bearer" = [])),
    params(("name" = String, Path, description = "The module"), ModuleProgressQuery),
    responses((status = 200, description = "Its state and runs", body = ModuleProgressView),
              (status = 404, description = "No build has that module", body = Problem)))]
async fn module_progress(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ModuleProgressQuery>,
) -> ApiResult<axum::Json<ModuleProgressView>> {
    let report = state.hub.builds().module_progress(&session.actor(), query.project.as_deref(), &name).await?;
    Ok(axum::Json(report.into()))
}
