//! The answers many routes share, added to the OpenAPI document in one place so that no route forgets one:
//! clients generate SDKs from the document, so every status a route can answer must be in it.
//!
//! Added to each operation unless it documents that status itself:
//! - 401 (with `WWW-Authenticate`) when it takes a bearer token;
//! - 404 when its path has a parameter (an id that does not parse names nothing too);
//! - 422 when it reads a query string (a bad value);
//! - 400, 413, 415 and 422 when it reads a body (malformed, too large, of another type, not valid);
//! - 429 (with `Retry-After`) on the rate-limited auth routes;
//! - 503 when it reads the store (it may be down).
//!
//! Every error answer is then documented as `application/problem+json`, which is what the server sends.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Type, schema::ObjectBuilder,
};

use crate::problem::PROBLEM_JSON;

/// Routes that answer without the store: nothing of theirs can be unavailable.
const STORELESS: [&str; 3] = ["/health", "/metrics", "/api/v1/openapi.json"];

/// Adds the shared answers to every operation of `doc` and types every problem body.
pub(crate) fn complete(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations =
            [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head];
        for operation in operations.into_iter().flatten() {
            complete_operation(path, operation);
        }
    }
}

fn complete_operation(path: &str, operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|schemes| !schemes.is_empty());
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let in_path = parameters.iter().any(|parameter| parameter.parameter_in == ParameterIn::Path);
    let in_query = parameters.iter().any(|parameter| parameter.parameter_in == ParameterIn::Query);
    let body = operation.request_body.is_some();

    let mut shared: Vec<(&str, &str)> = Vec::new();
    if secured {
        shared.push(("401", "No valid bearer access token (missing, malformed, expired or revoked)"));
    }
    if in_path {
        shared.push(("404", "Nothing there (or not yours to see)"));
    }
    if body {
        shared.push(("400", "The body could not be read (malformed JSON, not UTF-8)"));
        shared.push(("413", "The body is too large"));
        shared.push(("415", "The body's content type is not accepted"));
    }
    if body || in_query {
        shared.push(("422", "Not valid: the problem's `errors` name the fields"));
    }
    if path.starts_with("/api/v1/auth/") {
        shared.push(("429", "Too many requests from this address (or failures for this account); see Retry-After"));
    }
    if !STORELESS.contains(&path) {
        shared.push(("503", "The store is unavailable; try again later"));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(problem_response(status, description)));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        // A problem body documented with the default media type is sent as problem+json.
        let is_problem = |content: &utoipa::openapi::Content| matches!(&content.schema, Some(RefOr::Ref(reference)) if reference.ref_location.ends_with("/Problem"));
        if let Some(content) = response.content.shift_remove("application/json") {
            let media = if is_problem(&content) { PROBLEM_JSON } else { "application/json" };
            response.content.insert(media.to_owned(), content);
        }
    }
}

/// A problem answer with `description`, and the header its status brings.
fn problem_response(status: &str, description: &str) -> utoipa::openapi::Response {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let mut response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content);
    let integer = || ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).build();
    let text = || ObjectBuilder::new().schema_type(Type::String).build();
    match status {
        "401" => {
            response = response
                .header("WWW-Authenticate", HeaderBuilder::new().schema(text()).description(Some("`Bearer`")).build());
        }
        "429" => {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new().schema(integer()).description(Some("Seconds to wait")).build(),
            );
        }
        _ => {}
    }
    response.build()
}
