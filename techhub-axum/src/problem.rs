//! Every error leaves as `application/problem+json` (RFC 9457) with a stable `code`: core errors are mapped
//! here, in one place, and so are the framework's own rejections.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use techhub_core::{Error, ErrorKind};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long a client told "429" should wait when nothing more precise is known.
const DEFAULT_RETRY_AFTER_S: u64 = 60;

/// An error response: RFC 9457 problem details plus the API's stable `code`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`about:blank`: the status says it all).
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// What went wrong, for programs: `validation_failed`, `not_found`, `email_taken`, ...
    pub code: &'static str,
    /// Per-field messages of a validation failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    #[serde(skip)]
    retry_after_s: Option<u64>,
}

/// One field's validation message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// The field (dotted path for nested ones).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    /// A problem with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            errors: Vec::new(),
            retry_after_s: None,
        }
    }

    /// 404 for a path no route serves.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no resource at this path")
    }

    /// 401 for a request without usable credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 429, retry after `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        let mut problem = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down");
        problem.retry_after_s = Some(seconds.max(1));
        problem
    }

    /// The problem a bare error status (from a layer or the framework) stands for.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, detail) = match status {
            StatusCode::BAD_REQUEST => ("malformed_body", "the request could not be read"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "authentication required"),
            StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
            StatusCode::NOT_FOUND => ("not_found", "no resource at this path"),
            StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this method is not allowed on this resource"),
            StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported content type"),
            StatusCode::UNPROCESSABLE_ENTITY => ("validation_failed", "the request is not valid"),
            StatusCode::TOO_MANY_REQUESTS => return Self::rate_limited(DEFAULT_RETRY_AFTER_S),
            StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the service is unavailable; try again later"),
            status if status.is_server_error() => ("internal", "an internal error occurred"),
            _ => ("error", "the request failed"),
        };
        Self::new(status, code, detail)
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        let code = error.code();
        let (status, default_code) = match error.kind() {
            ErrorKind::InvalidInput => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict if code == Some("version_mismatch") => (StatusCode::PRECONDITION_FAILED, "conflict"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            // The message may name internals (a file, a query): it goes to the log, never to the client.
            tracing::error!(error = %error, source = ?std::error::Error::source(&error), "request failed");
            return Self::for_status(status);
        }
        // Codes the core sets that the API names differently or keeps to itself.
        let code = match code {
            Some("email_taken") => "email_taken",
            Some("invalid_credentials") => "invalid_credentials",
            Some("token_invalid") => "token_invalid",
            Some("token_expired") => "token_expired",
            _ => default_code,
        };
        let mut problem = Self::new(status, code, error.message());
        problem.errors = error
            .fields()
            .iter()
            .map(|field| FieldProblem { field: field.field.clone(), message: field.message.clone() })
            .collect();
        if status == StatusCode::TOO_MANY_REQUESTS {
            problem.retry_after_s = Some(DEFAULT_RETRY_AFTER_S);
        }
        problem
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => {
                // Unknown, missing or wrong-typed fields: the body is JSON, but not this request's.
                let detail = error.body_text();
                let mut problem = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail.clone());
                problem.errors = vec![FieldProblem { field: field_of(&detail), message: detail }];
                problem
            }
            JsonRejection::JsonSyntaxError(error) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_body", format!("malformed JSON: {}", error.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with content-type application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            other => Self::new(StatusCode::BAD_REQUEST, "malformed_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        // A path segment that is not an id names nothing that exists.
        Self::new(StatusCode::NOT_FOUND, "not_found", rejection.body_text())
    }
}

/// The field a JSON data error is about, or "body": the path serde reports ("name: invalid type: ..." →
/// "name"; it ends with the field of an unknown field error), else the field an unknown or missing field
/// error quotes ("missing field `password`" → "password").
fn field_of(message: &str) -> String {
    let message = message.split_once("target type: ").map_or(message, |(_, rest)| rest);
    let (path, reason) = match message.split_once(": ") {
        Some((path, reason)) if !path.is_empty() && !path.contains(' ') && path != "." => (Some(path), reason),
        _ => (None, message),
    };
    let missing = reason.starts_with("missing field");
    let quoted = (missing || reason.starts_with("unknown field"))
        .then(|| reason.split('`').nth(1))
        .flatten()
        .filter(|field| !field.is_empty() && !field.contains(' '));
    match (path, quoted) {
        (Some(path), Some(field)) if missing => format!("{path}.{field}"),
        (Some(path), _) => path.to_owned(),
        (None, Some(field)) => field.to_owned(),
        (None, None) => "body".to_owned(),
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_s;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// What handlers return: a value, or a problem.
pub type ApiResult<T> = Result<T, Problem>;
