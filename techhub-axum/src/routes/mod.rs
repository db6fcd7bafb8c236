//! The routes, each documented where it is declared (utoipa), so the router and the OpenAPI document are
//! built from one list and cannot drift apart.

pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod builds;
pub(crate) mod jobs;
pub(crate) mod notifications;
pub(crate) mod sessions;
pub(crate) mod system;
pub(crate) mod users;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use techhub_core::model::JobId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use crate::views::JobAccepted;

/// 202 with `{ "job_id" }` and the job's `Location`.
pub(crate) fn accepted(id: JobId) -> Response {
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{id}")).expect("a job path is a valid header");
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], axum::Json(JobAccepted::from(id))).into_response()
}

/// The OpenAPI route.
pub(crate) fn openapi_route() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], state.openapi.as_str().to_owned())
        .into_response()
}
