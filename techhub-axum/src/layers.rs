//! Cross-cutting HTTP behaviour as middleware: security headers, request metrics, and problem bodies for
//! every error a layer or the framework produces on its own.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, header};

use crate::problem::{PROBLEM_JSON, Problem};

/// The headers every response carries (docs/http-api.md, "Conventions").
pub(crate) const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
];

/// `Strict-Transport-Security`, sent when the public URL is `https`: browsers then refuse plain HTTP to this
/// host for a year, so a network attacker cannot strip TLS from a later visit.
pub(crate) const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Replaces the body of an error response that is not JSON (a 405 from the router, a 408 from the timeout, a
/// 413 from a body limit, a 500 from a caught panic) with the problem for its status,
/// keeping its headers (`Allow`, `Retry-After`).
pub(crate) async fn problem_bodies(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // A JSON body is a handler's deliberate answer (a problem, or readiness's `degraded` report): kept.
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|content_type| {
        let content_type = content_type.as_bytes();
        content_type.starts_with(PROBLEM_JSON.as_bytes()) || content_type.starts_with(b"application/json")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _body) = response.into_parts();
    let mut problem = Problem::for_status(status).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.remove(&name) {
            problem.headers_mut().insert(name, value);
        }
    }
    parts.headers.extend(problem.headers().clone());
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let (_, body) = problem.into_parts();
    Response::from_parts(parts, body)
}

/// Counts requests and their latency by method, route template (never the raw path: ids would explode the
/// label space) and status.
pub(crate) async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("techhub_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("techhub_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
