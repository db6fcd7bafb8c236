//! Liveness, readiness, metrics and the OpenAPI document (no auth).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(readiness)).routes(routes!(metrics))
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

/// Prometheus metrics: HTTP requests and latency by route and status, jobs by queue and state, job durations,
/// logins, WebSocket clients, event-bus lag.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 503, description = "Another metrics recorder is installed", body = Problem)))]
async fn metrics() -> ApiResult<Response> {
    let handle = metrics_export::handle().ok_or_else(|| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "metrics are recorded by the embedding app")
    })?;
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    handle.run_upkeep();
    Ok(([(header::CONTENT_TYPE, content_type)], handle.render()).into_response())
}
