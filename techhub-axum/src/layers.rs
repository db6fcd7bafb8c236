//! Cross-cutting HTTP behaviour as tower layers: security headers, request metrics, and problem bodies for
//! every error a layer or the framework produces on its own.
//!
//! The two layers here are plain `Layer`/`Service` pairs rather than `axum::middleware::from_fn`: those box
//! each request's future and clone the inner service per request, on every request's path.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::MatchedPath;
use axum::response::{IntoResponse, Response};
use futures_util::future::{MapOk, TryFutureExt};
use http::{HeaderName, HeaderValue, Method, Request, header};
use metrics::SharedString;
use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};

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
/// 413 from a body limit, a 500 from a caught panic) with the problem for its status, keeping its headers
/// (`Allow`, `Retry-After`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProblemBodiesLayer;

impl<S> Layer<S> for ProblemBodiesLayer {
    type Service = ProblemBodies<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProblemBodies { inner }
    }
}

/// The service of [`ProblemBodiesLayer`].
#[derive(Debug, Clone)]
pub(crate) struct ProblemBodies<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for ProblemBodies<S>
where
    S: Service<Request<RequestBody>, Response = http::Response<ResponseBody>>,
    ResponseBody: HttpBody<Data = Bytes> + Send + 'static,
    ResponseBody::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<ResponseBody>) -> Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        self.inner.call(request).map_ok(problem_body::<ResponseBody> as fn(_) -> _)
    }
}

/// The response, with a problem body in place of a non-JSON error body.
fn problem_body<ResponseBody>(response: http::Response<ResponseBody>) -> Response
where
    ResponseBody: HttpBody<Data = Bytes> + Send + 'static,
    ResponseBody::Error: Into<BoxError>,
{
    let status = response.status();
    // A JSON body is a handler's deliberate answer (a problem, or readiness's `degraded` report): kept.
    let is_json = response.headers().get(header::CONTENT_TYPE).is_some_and(|content_type| {
        let content_type = content_type.as_bytes();
        content_type.starts_with(PROBLEM_JSON.as_bytes()) || content_type.starts_with(b"application/json")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        // `Body::new` does not box a body that already is one (the routes' answers).
        return response.map(Body::new);
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
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecordMetricsLayer;

impl<S> Layer<S> for RecordMetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordMetrics { inner }
    }
}

/// The service of [`RecordMetricsLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RecordMetrics<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for RecordMetrics<S>
where
    S: Service<Request<RequestBody>, Response = http::Response<ResponseBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RecordMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let labels = RequestLabels {
            started: Instant::now(),
            method: method_label(request.method()),
            route: request.extensions().get::<MatchedPath>().cloned(),
        };
        RecordMetricsFuture { inner: self.inner.call(request), labels: Some(labels) }
    }
}

/// What a request is counted under, taken before it is handed on.
#[derive(Debug)]
struct RequestLabels {
    started: Instant,
    method: SharedString,
    /// The route template (`None`: no route matched).
    route: Option<MatchedPath>,
}

impl RequestLabels {
    fn record(self, status: http::StatusCode) {
        let route: SharedString =
            self.route.map_or(SharedString::const_str("unmatched"), |path| path.as_str().to_owned().into());
        metrics::counter!("techhub_http_requests_total", "method" => self.method.clone(), "route" => route.clone(), "status" => status_label(status))
            .increment(1);
        metrics::histogram!("techhub_http_request_duration_seconds", "method" => self.method, "route" => route)
            .record(self.started.elapsed().as_secs_f64());
    }
}

pin_project! {
    /// The future of [`RecordMetrics`]: records once the response is ready.
    pub(crate) struct RecordMetricsFuture<F> {
        #[pin]
        inner: F,
        labels: Option<RequestLabels>,
    }
}

impl<F, ResponseBody, E> Future for RecordMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let (Ok(response), Some(labels)) = (&output, this.labels.take()) {
            labels.record(response.status());
        }
        Poll::Ready(output)
    }
}

/// The method as a label: the standard ones without an allocation.
fn method_label(method: &Method) -> SharedString {
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return method.as_str().to_owned().into(),
    };
    SharedString::const_str(name)
}

/// The status code as a label (three digits).
fn status_label(status: http::StatusCode) -> SharedString {
    status.as_str().to_owned().into()
}
