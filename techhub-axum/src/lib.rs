//! # TechHub over HTTP
//!
//! [`router`] turns a [`TechHub`] into an axum [`Router`] speaking TechHub's HTTP contract (`docs/http-api.md` in the repository): auth,
//! users, jobs, live events over a WebSocket, health, Prometheus metrics and an OpenAPI 3.1 document. Only
//! HTTP concerns live here (parsing, status codes, headers, limits); every rule (who may do what, what is
//! valid) is the core's.
//!
//! - Errors are `application/problem+json` with a stable `code`, for everything: core errors (mapped in one
//!   place, [`Problem`]), malformed bodies, unknown routes, wrong methods, oversized bodies, timeouts.
//! - Every response has an `x-request-id` (the client's, or a new UUID) and the security headers (with
//!   `Strict-Transport-Security` when the hub's public URL is `https`); auth
//!   responses are `cache-control: no-store`; auth routes are rate limited per client address.
//!
//! Serve it with connection info, so the per-address limit knows the peer (behind a reverse proxy, list it in
//! [`HttpConfig::trusted_proxies`] so that its `X-Forwarded-For` is believed):
//!
//! ```no_run
//! # async fn serve(hub: techhub_core::TechHub) -> std::io::Result<()> {
//! use std::net::SocketAddr;
//!
//! let app = techhub_axum::router(hub, techhub_axum::HttpConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```

mod build_views;
mod client_address;
mod config;
mod events;
mod extract;
mod layers;
mod log_ring;
mod metrics_export;
mod problem;
mod rate_limit;
mod routes;
mod schema_names;
mod shared_responses;
mod state;
#[cfg(feature = "dashboard")]
mod ui;
mod views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use http::{HeaderName, HeaderValue, Method, header};
use techhub_core::TechHub;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

pub use crate::build_views::{
    BuildBatchView, BuildView, LogLineView, LogPageView, ModuleProgressView, ModuleRunView, ModuleStateView,
    ModuleStatsView, ModuleView, OverviewView, PercentilesView, ProjectProgressView,
};
pub use crate::client_address::{Cidr, CidrError, ClientInfo};
pub use crate::config::HttpConfig;
pub use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated};
pub use crate::log_ring::{LogLevel, LogRecord, LogRing, LogRingLayer};
pub use crate::problem::{ApiResult, FieldProblem, PROBLEM_JSON, Problem};
pub use crate::routes::audit::AuditEntryView;
pub use crate::routes::notifications::{
    ChannelStatsView, CreatedEndpointView, DeliveryView, EndpointView, NotificationView, SecretView, TemplateView,
};
pub use crate::routes::sessions::SessionView;
pub use crate::routes::system::{
    BuildCountsView, DatabaseView, JobCountsView, NotificationCountsView, StoreSummaryView, SystemInfoView,
    SystemStatsView, UserCountsView,
};
pub use crate::state::AppState;
pub use crate::views::{JobAccepted, JobView, PageView, QueueView, TokenPairView, UserView};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How often idle client addresses are forgotten by the auth rate limiter.
const LIMITER_SWEEP: Duration = Duration::from_secs(60);

/// The whole API as an axum router, ready to serve (see the crate docs).
///
/// Must be called inside a tokio runtime (it starts a small task that keeps the rate limiter's table small).
pub fn router(hub: TechHub, config: HttpConfig) -> Router {
    let auth_limiter =
        rate_limit::AddressLimiter::per_minute(config.auth_rate_limit_per_minute, config.trusted_proxies.clone());
    let (router, mut openapi) = api_router(&config, auth_limiter.clone()).split_for_parts();
    shared_responses::complete(&mut openapi);
    let openapi = openapi.to_json().expect("the OpenAPI document serializes");
    if let Some(limiter) = &auth_limiter {
        let limiter = Arc::downgrade(limiter);
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(LIMITER_SWEEP);
            sweep.tick().await;
            loop {
                sweep.tick().await;
                let Some(limiter) = limiter.upgrade() else { return };
                limiter.forget_idle();
            }
        });
    }
    metrics_export::handle();
    let https = hub.config().public_url.starts_with("https://");
    let state = AppState {
        hub,
        config: Arc::new(config.clone()),
        started: Instant::now(),
        started_at: chrono::Utc::now(),
        openapi: Arc::new(openapi),
    };
    #[cfg(feature = "dashboard")]
    let router = router.merge(ui::routes());
    let router = router.with_state(state).fallback(|| async { Problem::no_route() });
    with_layers(router, &config, https)
}

/// The OpenAPI document of [`router`], as a value (for tools and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api_router(&HttpConfig::default(), None).into_openapi();
    shared_responses::complete(&mut document);
    document
}

/// Every route, with its per-group layers, and the document they make.
fn api_router(config: &HttpConfig, auth_limiter: Option<Arc<rate_limit::AddressLimiter>>) -> OpenApiRouter<AppState> {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("TechHub API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Users, authentication, background jobs, builds, notifications and live events.")),
        )
        .build();
    let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
    doc.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(bearer));

    let no_store = SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The limiter sits inside `no_store`, so its 429s are not cached either.
    let auth = routes::auth::routes()
        .route_layer(middleware::from_fn_with_state(auth_limiter, rate_limit::limit_by_address))
        .layer(no_store);
    // A route layer sits inside the router-wide 1 MiB limit, so this one wins for the import route.
    let import = routes::users::import_route().layer(DefaultBodyLimit::max(config.import_body_limit));
    let rest = routes::users::routes()
        .merge(routes::sessions::routes())
        .merge(routes::audit::routes())
        .merge(routes::jobs::routes())
        .merge(routes::builds::routes())
        .merge(routes::notifications::routes())
        .merge(routes::system::routes())
        .merge(routes::openapi_route())
        .merge(events::routes());
    OpenApiRouter::with_openapi(doc).merge(auth).merge(import).merge(rest)
}

/// The span of one request: method, path and request id. Never the query string, which may carry an access
/// token (`/api/v1/events?access_token=`), and never headers.
fn request_span(request: &http::Request<axum::body::Body>) -> tracing::Span {
    let request_id = request.headers().get(&REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
}

/// The layers every route shares. Each `Router::layer` call boxes every route once more, and a route's boxed
/// stack is cloned (and its future boxed) on every request, level by level; so the layers are composed
/// with `ServiceBuilder` into as few `Router::layer` calls as their order allows (three), not one per
/// layer. Outermost first within a builder; the first call is innermost. `https`: the public URL is
/// https, so HSTS is sent.
fn with_layers(router: Router, config: &HttpConfig, https: bool) -> Router {
    let inner = ServiceBuilder::new()
        .layer(layers::ProblemBodiesLayer)
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, config.request_timeout))
        .layer(DefaultBodyLimit::max(config.body_limit));
    let mut router = router.layer(inner);
    if !config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> =
            config.cors_origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::PUT, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH, REQUEST_ID])
                .expose_headers([header::LOCATION, header::ETAG, header::RETRY_AFTER, REQUEST_ID])
                .max_age(Duration::from_secs(600)),
        );
    }
    let [nosniff, frame, referrer, csp] = layers::SECURITY_HEADERS
        .map(|(name, value)| SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)));
    let hsts = https.then(|| {
        SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(layers::HSTS),
        )
    });
    let outer = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(layers::RecordMetricsLayer)
        .option_layer(hsts)
        .layer(csp)
        .layer(referrer)
        .layer(frame)
        .layer(nosniff);
    router.layer(outer)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// Log lines written by the subscriber, kept for the test to read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn request_spans_never_log_the_query_string() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let request = http::Request::get("/api/v1/events?access_token=secret-token-value")
                .header(super::REQUEST_ID, "req-1")
                .body(axum::body::Body::empty())
                .expect("a request");
            let span = super::request_span(&request);
            let _entered = span.enter();
            tracing::debug!("handled");
        });
        let logged = String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("text");
        assert!(logged.contains("/api/v1/events") && logged.contains("req-1"), "{logged}");
        assert!(!logged.contains("secret-token-value"), "{logged}");
    }
}
