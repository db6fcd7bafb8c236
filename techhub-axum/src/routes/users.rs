//! `/api/v1/users/*`: the signed-in user, and user management (rights are checked by the core).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde::Deserialize;
use techhub_core::Error;
use techhub_core::model::{Role, User, UserFilter, UserId};
use techhub_core::users::{TransferFormat, UserPatch};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated, page_request};
use crate::problem::{ApiResult, Problem};
use crate::routes::accepted;
use crate::state::AppState;
use crate::views::{JobAccepted, PageView, UserView};

/// What a user may change of itself: only its name (anything else is refused as an unknown field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelfPatch {
    /// A new display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// What an admin may change of a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminPatch {
    /// A new display name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new email address (unverified until confirmed).
    #[serde(default)]
    pub email: Option<String>,
    /// `user` or `admin`.
    #[serde(default)]
    #[schema(value_type = Option<crate::schema_names::RoleName>)]
    pub role: Option<Role>,
    /// Enable or disable (disabling ends every session).
    #[serde(default)]
    pub active: Option<bool>,
}

/// One user of a JSON import.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Documents the body the core parses; never built here.
pub(crate) struct ImportUser {
    /// The address.
    pub email: String,
    /// The display name.
    pub name: Option<String>,
    /// `user` (default) or `admin`.
    #[schema(value_type = Option<crate::schema_names::RoleName>)]
    pub role: Option<String>,
    /// A password; without one the user is invited (mailed a link to choose one).
    pub password: Option<String>,
}

/// Filters of the user list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserListQuery {
    /// Only this role.
    #[param(value_type = Option<crate::schema_names::RoleName>)]
    pub role: Option<Role>,
    /// Only active or disabled users.
    pub active: Option<bool>,
    /// Only users whose email or name contains this text.
    pub q: Option<String>,
    /// Items per page (default 50, at most 500).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The format of an export.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportRequest {
    /// `csv` or `json`.
    #[schema(value_type = crate::schema_names::TransferFormatName, example = "csv")]
    pub format: TransferFormat,
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me, update_me))
        .routes(routes!(list_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(export_users))
}

/// The import route, apart: it takes bodies up to 32 MiB.
pub(crate) fn import_route() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import_users))
}

/// A user with its version as an `ETag`, for `If-Match`.
fn user_response(status: StatusCode, user: User) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", user.version)).ok();
    let mut response = (status, axum::Json(UserView::from(user))).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "The user", body = UserView),
              (status = 401, description = "Not signed in", body = Problem)))]
async fn me(Authenticated(session): Authenticated) -> Response {
    user_response(StatusCode::OK, session.user)
}

/// Changes the signed-in user's name (role and active flag are not the user's to change).
#[utoipa::path(patch, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])), request_body = SelfPatch,
    responses((status = 200, description = "Updated", body = UserView),
              (status = 422, description = "Invalid or not changeable", body = Problem)))]
async fn update_me(
    State(state): State<AppState>,
    session: Authenticated,
    ApiJson(patch): ApiJson<SelfPatch>,
) -> ApiResult<Response> {
    let patch = UserPatch { name: patch.name, ..UserPatch::default() };
    let user = state.hub.users().update(&session.actor(), session.0.user.id, patch, None).await?;
    Ok(user_response(StatusCode::OK, user))
}

/// Lists users (admins).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])), params(UserListQuery),
    responses((status = 200, description = "A page of users", body = PageView<UserView>),
              (status = 403, description = "Not an admin", body = Problem)))]
async fn list_users(
    State(state): State<AppState>,
    session: Authenticated,
    ApiQuery(query): ApiQuery<UserListQuery>,
) -> ApiResult<axum::Json<PageView<UserView>>> {
    let page = page_request(query.limit, query.cursor)?;
    let filter = UserFilter { role: query.role, active: query.active, query: query.q };
    let users = state.hub.users().list(&session.actor(), &filter, &page).await?;
    Ok(axum::Json(PageView::of(users)))
}

/// A user (admins, or the user itself).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 200, description = "The user", body = UserView),
              (status = 404, description = "No such user (or not yours)", body = Problem)))]
async fn get_user(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Response> {
    Ok(user_response(StatusCode::OK, state.hub.users().get(&session.actor(), id).await?))
}

/// The version an `If-Match` header asks for, if any.
fn expected_version(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse()
        .map(Some)
        .map_err(|_| Error::invalid_field("If-Match", "expected the user's ETag, a quoted version number").into())
}

/// Changes a user (admins: all fields; a user: only its own name). With `If-Match`, only if unchanged since.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])), request_body = AdminPatch,
    params(("id" = Uuid, Path, description = "The user's id"),
           ("If-Match" = Option<String>, Header, description = "The ETag last read")),
    responses((status = 200, description = "Updated", body = UserView),
              (status = 403, description = "Not allowed", body = Problem),
              (status = 409, description = "Would leave no active admin", body = Problem),
              (status = 412, description = "Changed since read", body = Problem)))]
async fn update_user(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<UserId>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<AdminPatch>,
) -> ApiResult<Response> {
    let expected = expected_version(&headers)?;
    let patch = UserPatch { name: patch.name, email: patch.email, role: patch.role, active: patch.active };
    let user = state.hub.users().update(&session.actor(), id, patch, expected).await?;
    Ok(user_response(StatusCode::OK, user))
}

/// Deletes a user (admins, or the user itself). The last active admin stays.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    responses((status = 204, description = "Deleted"),
              (status = 404, description = "No such user (or not yours)", body = Problem),
              (status = 409, description = "The last active admin", body = Problem)))]
async fn delete_user(
    State(state): State<AppState>,
    session: Authenticated,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<StatusCode> {
    state.hub.users().delete(&session.actor(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Imports users from CSV (`email,name,role[,password]`) or a JSON array (admins). Rows without a password
/// get an invitation email. Follow the job for the report.
#[utoipa::path(post, path = "/api/v1/users/import", tag = "users", security(("bearer" = [])),
    request_body(description = "CSV with the header `email,name,role[,password]`, or a JSON array of users",
        content((String = "text/csv", example = "email,name,role\ngrace@example.com,Grace,user\n"),
                (Vec<ImportUser> = "application/json"))),
    responses((status = 202, description = "Import job accepted", body = JobAccepted),
              (status = 403, description = "Not an admin", body = Problem),
              (status = 413, description = "Over 32 MiB", body = Problem),
              (status = 415, description = "Neither CSV nor JSON", body = Problem)))]
async fn import_users(
    State(state): State<AppState>,
    session: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    // Rights first: a non-admin must not make the server read (and buffer) up to 32 MiB.
    if !session.actor().is_privileged() {
        return Err(Error::forbidden("only admins may import users").into());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let format = match media_type.as_str() {
        "text/csv" => TransferFormat::Csv,
        "application/json" => TransferFormat::Json,
        _ => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send text/csv or application/json",
            ));
        }
    };
    let body = axum::body::to_bytes(body, state.config.import_body_limit)
        .await
        .map_err(|_| Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE))?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| Problem::new(StatusCode::BAD_REQUEST, "malformed_body", "the body is not UTF-8 text"))?;
    if format == TransferFormat::Json {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Array(_)) => {}
            Ok(_) => return Err(Error::invalid_field("body", "expected a JSON array of users").into()),
            Err(error) => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    format!("malformed JSON: {error}"),
                ));
            }
        }
    }
    let job = state.hub.users().import(&session.actor(), format, text).await?;
    Ok(accepted(job.id))
}

/// Exports every user as CSV or JSON (admins); the file is the job's artifact.
#[utoipa::path(post, path = "/api/v1/users/export", tag = "users", security(("bearer" = [])), request_body = ExportRequest,
    responses((status = 202, description = "Export job accepted", body = JobAccepted),
              (status = 403, description = "Not an admin", body = Problem)))]
async fn export_users(
    State(state): State<AppState>,
    session: Authenticated,
    ApiJson(request): ApiJson<ExportRequest>,
) -> ApiResult<Response> {
    let job = state.hub.users().export(&session.actor(), request.format).await?;
    Ok(accepted(job.id))
}
