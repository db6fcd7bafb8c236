//! System endpoints over a real socket: liveness, readiness, metrics, the headers every response carries,
//! the router's own errors (no route, wrong method), and the OpenAPI document against the server and the
//! contract of docs/http-api.md.

mod common;

use std::collections::BTreeSet;

use common::{NO_ROUTE_DETAIL, assert_problem, assert_security_headers, body, header, start};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// The HTTP guide the repository carries: the contract clients read.
const GUIDE: &str = include_str!("../../docs/http-api.md");

/// Every operation the guide lists as served (`` `GET /path` `` before its "Planned" section), lower-cased
/// method first.
fn contract() -> BTreeSet<(String, String)> {
    let served = GUIDE.split("## Planned").next().unwrap_or(GUIDE);
    let mut operations = BTreeSet::new();
    for quoted in served.split('`').skip(1).step_by(2) {
        let Some((method, path)) = quoted.split_once(' ') else { continue };
        if METHODS.contains(&method.to_ascii_lowercase().as_str()) && path.starts_with('/') {
            let path = path.split(['?', ' ']).next().unwrap_or(path);
            operations.insert((method.to_ascii_lowercase(), path.to_owned()));
        }
    }
    operations
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_and_readiness() {
    let server = start().await;
    let response = server.get("/health", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(response.headers());
    let live = body(response).await;
    assert_eq!(live["status"], "ok");
    assert_eq!(live["version"], env!("CARGO_PKG_VERSION"));
    assert!(live["uptime_s"].is_u64(), "{live}");

    let response = server.get("/api/v1/system/health", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let ready = body(response).await;
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["storage"], "ok", "{ready}");
    assert_eq!(ready["checks"]["store"], server.hub.storage().backend(), "{ready}");
    // The idle server's workers are counted before any job exists: two on `default`, one on `email`.
    assert_eq!(ready["checks"]["workers"], 3, "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_template_logins_jobs_and_sockets() {
    let server = start().await;
    let token = server.admin.access.clone();
    let id = Uuid::new_v4();
    assert_eq!(server.get(&format!("/api/v1/users/{id}"), Some(&token)).await.status(), StatusCode::NOT_FOUND);
    server.login(common::ADMIN_EMAIL, common::PASSWORD).await;
    let response = server.post("/api/v1/jobs", Some(&token), &json!({ "kind": common::ECHO, "payload": {} })).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let _socket = server.events(&token).await;

    let response = server.get("/metrics", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("text/plain")));
    assert_security_headers(response.headers());
    let text = response.text().await.expect("text");
    let requests: Vec<&str> = text.lines().filter(|line| line.starts_with("techhub_http_requests_total{")).collect();
    assert!(
        requests.iter().any(|line| line.contains(r#"route="/api/v1/users/{id}""#) && line.contains(r#"status="404""#)),
        "{text}"
    );
    assert!(!text.contains(&id.to_string()), "a raw id became a label: {text}");
    assert!(text.contains("techhub_http_request_duration_seconds"), "{text}");
    assert!(text.lines().any(|line| line.starts_with("techhub_logins_total{") && line.contains("ok")), "{text}");
    assert!(text.contains("techhub_jobs_enqueued_total"), "{text}");
    assert!(text.lines().any(|line| line.starts_with("techhub_ws_clients")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers_and_a_request_id() {
    let server = start().await;
    let token = server.admin.access.clone();
    let requests = [
        (Method::GET, "/health", None, StatusCode::OK),
        (Method::GET, "/api/v1/users/me", Some(token.as_str()), StatusCode::OK),
        (Method::GET, "/api/v1/users/me", None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/api/v1/users", Some(token.as_str()), StatusCode::OK),
        (Method::GET, "/api/v1/nothing-here", None, StatusCode::NOT_FOUND),
        (Method::DELETE, "/health", None, StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/api/v1/openapi.json", None, StatusCode::OK),
        (Method::GET, "/metrics", None, StatusCode::OK),
    ];
    let mut ids = BTreeSet::new();
    for (method, path, token, status) in requests {
        let response = server.request(method.clone(), path, token).send().await.expect("sent");
        assert_eq!(response.status(), status, "{method} {path}");
        assert_security_headers(response.headers());
        let id = header(&response, "x-request-id").expect("a request id");
        Uuid::parse_str(id).unwrap_or_else(|_| panic!("a generated request id is a UUID: {id}"));
        ids.insert(id.to_owned());
    }
    assert_eq!(ids.len(), 8, "every request gets its own id");

    for (method, path) in [(Method::GET, "/health"), (Method::GET, "/nowhere"), (Method::POST, "/api/v1/auth/login")] {
        let response = server
            .request(method.clone(), path, None)
            .header("x-request-id", "client-chosen-42")
            .send()
            .await
            .expect("sent");
        assert_eq!(header(&response, "x-request-id"), Some("client-chosen-42"), "{method} {path}");
        assert_security_headers(response.headers());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let server = start().await;
    let token = server.admin.access.clone();
    for path in ["/api/v1/nothing-here", "/api/v2/users", "/", "/api/v1/users/me/extra"] {
        let problem = assert_problem(server.get(path, Some(&token)).await, StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(problem["detail"], NO_ROUTE_DETAIL, "{path}");
    }
    // A segment that is not an id names nothing.
    for path in ["/api/v1/jobs/not-a-uuid", "/api/v1/users/12345"] {
        assert_problem(server.get(path, Some(&token)).await, StatusCode::NOT_FOUND, "not_found").await;
    }

    for (method, path, allowed) in [
        (Method::DELETE, "/api/v1/auth/login", &["POST"][..]),
        (Method::GET, "/api/v1/auth/register", &["POST"]),
        (Method::PUT, "/api/v1/users/me", &["GET", "PATCH"]),
        (Method::POST, "/health", &["GET"]),
        (Method::DELETE, "/api/v1/jobs", &["GET", "POST"]),
    ] {
        let response = server.request(method.clone(), path, Some(&token)).send().await.expect("sent");
        let allow = header(&response, "allow").unwrap_or_else(|| panic!("{method} {path}: no Allow")).to_owned();
        assert_security_headers(response.headers());
        assert_problem(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        for method in allowed {
            assert!(allow.split(',').any(|item| item.trim() == *method), "{path}: Allow {allow} lacks {method}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_3_1_and_holds_the_whole_contract() {
    let server = start().await;
    let response = server.get("/api/v1/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("application/json")));
    let document = body(response).await;
    assert!(document["openapi"].as_str().is_some_and(|version| version.starts_with("3.1")), "{}", document["openapi"]);
    assert!(document["info"]["title"].is_string() && document["info"]["version"].is_string());
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    // The guide and the document list the same operations, both ways.
    let contract = contract();
    assert!(contract.len() >= 28, "the guide lists only {} operations: is it still parsed?", contract.len());
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS.iter().filter(|method| !item[**method].is_null()) {
            documented.insert(((*method).to_owned(), path.clone()));
        }
    }
    let missing: Vec<_> = contract.difference(&documented).collect();
    assert!(missing.is_empty(), "operations of docs/http-api.md missing from the OpenAPI document: {missing:?}");
    let unlisted: Vec<_> = documented.difference(&contract).collect();
    assert!(unlisted.is_empty(), "operations served but missing from docs/http-api.md: {unlisted:?}");

    // The document a program gets from the crate is the one the server serves.
    let offline = serde_json::to_value(techhub_axum::openapi()).expect("serializes");
    assert_eq!(offline, document);
}

/// A body fit for any documented operation (handlers then answer 4xx on their own, not the router).
fn probe(server: &common::Server, method: &str, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("a method");
    let with_body = method == Method::POST || method == Method::PATCH || method == Method::PUT;
    let request = server.request(method, path, token);
    if with_body { request.json(&json!({})) } else { request }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served_and_its_security_is_true() {
    let server = start().await;
    let document = body(server.get("/api/v1/openapi.json", None).await).await;
    let token = server.admin.access.clone();

    // The probe tells routes from the fallback: a path no route serves gets the fallback's detail.
    let fallback = body(probe(&server, "get", "/api/v1/not-a-route", Some(&token)).send().await.expect("sent")).await;
    assert_eq!(fallback["detail"], NO_ROUTE_DETAIL);

    let paths = document["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (template, item) in paths {
        let path: String = template
            .split('/')
            .map(|segment| if segment.starts_with('{') { Uuid::new_v4().to_string() } else { segment.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            operations += 1;
            let response = probe(&server, method, &path, Some(&token)).send().await.expect("sent");
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {template} is documented but not routed");
            assert!(
                !(status == StatusCode::NOT_FOUND && answer["detail"] == NO_ROUTE_DETAIL),
                "{method} {template} is documented but not routed"
            );

            // Documented as needing a bearer token: refused without one; documented as open: not refused.
            let secured = operation["security"].as_array().is_some_and(|schemes| !schemes.is_empty());
            let anonymous = probe(&server, method, &path, None).send().await.expect("sent").status();
            assert_eq!(
                anonymous == StatusCode::UNAUTHORIZED,
                secured,
                "{method} {template}: documented security {secured}, anonymous answer {anonymous}"
            );
        }
    }
    assert!(operations >= contract().len(), "{operations} operations documented");
}

/// Sends `head` (and no more) over a raw connection and reads the response until the server closes or
/// `PATIENCE` runs out: its status and text.
async fn raw_exchange(server: &common::Server, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connects");
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(common::PATIENCE, async {
        loop {
            let n = stream.read(&mut buffer).await.expect("reads");
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received);
            let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                head.lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase().strip_prefix("content-length:").map(str::trim).map(String::from)
                    })
                    .and_then(|length| length.parse::<usize>().ok())
                    .is_some_and(|length| body.len() >= length)
            });
            if n == 0 || complete {
                return text.into_owned();
            }
        }
    })
    .await
    .expect("an answer in time");
    let status = read.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    (status, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_stalls_gets_408_but_an_open_socket_lives_on() {
    let http =
        techhub_axum::HttpConfig { request_timeout: std::time::Duration::from_millis(300), ..Default::default() };
    let server = common::start_with(common::Options { http, workers: false, ..Default::default() }).await;
    let mut socket = server.events(&server.admin.access).await;

    // A body announced but never sent.
    let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 64\r\n\r\n{\"email\":";
    let (status, text) = raw_exchange(&server, head).await;
    assert_eq!(status, 408, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/problem+json"), "{text}");
    assert!(lower.contains("x-content-type-options: nosniff") && lower.contains("x-request-id:"), "{text}");
    assert!(text.contains(r#""status":408"#), "{text}");

    // The socket outlives the request timeout.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let job = server
        .hub
        .jobs()
        .enqueue(&techhub_core::Actor::System, techhub_core::model::NewJob::new(common::ECHO, json!({})))
        .await
        .expect("enqueued");
    let event = common::next_json(&mut socket).await;
    assert_eq!(event["data"]["job_id"], job.id.to_string());
}

/// Browsers may call from the configured origins only: a preflight from one is answered with it, from any
/// other origin without `access-control-allow-origin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let http =
        techhub_axum::HttpConfig { cors_origins: vec!["https://app.example.com".to_owned()], ..Default::default() };
    let server = common::start_with(common::Options { http, workers: false, ..Default::default() }).await;
    let preflight = |origin: &'static str| {
        server
            .http
            .request(Method::OPTIONS, format!("{}/api/v1/users/me", server.base))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("preflight");
    assert_eq!(header(&allowed, "access-control-allow-origin"), Some("https://app.example.com"));
    let refused = preflight("https://evil.example.com").await.expect("preflight");
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_transport_security_is_sent_only_when_the_public_url_is_https() {
    let https = start().await; // The harness's public URL is https.
    for path in ["/health", "/api/v1/users/me", "/no/such/route"] {
        let response = https.get(path, None).await;
        assert_eq!(header(&response, "strict-transport-security"), Some("max-age=31536000; includeSubDomains"));
    }
    let plain = common::start_with(common::Options {
        workers: false,
        public_url: Some("http://127.0.0.1:8080"),
        ..common::Options::default()
    })
    .await;
    assert_eq!(header(&plain.get("/health", None).await, "strict-transport-security"), None);
}

/// Every kind of response the shared layers shape carries HSTS (the harness's public URL is https), the other
/// security headers and a request id: a handler's answer, an extractor's 401, the router's 404 and 405, and a
/// body limit's 413 (given a problem body by the problem-bodies layer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_response_carries_hsts_and_the_security_headers() {
    let server = start().await;
    let token = server.admin.access.clone();
    let big_name = "x".repeat(1024 * 1024 + 1);
    let responses = [
        (server.get("/api/v1/users/me", Some(&token)).await, StatusCode::OK),
        (server.get("/api/v1/users/me", None).await, StatusCode::UNAUTHORIZED),
        (server.get("/api/v1/nothing-here", Some(&token)).await, StatusCode::NOT_FOUND),
        (
            server.request(Method::PUT, "/api/v1/users/me", Some(&token)).send().await.expect("sent"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            server.patch("/api/v1/users/me", Some(&token), &json!({ "name": big_name })).await,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (response, status) in responses {
        assert_eq!(response.status(), status);
        assert_eq!(
            header(&response, "strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{status}"
        );
        assert_security_headers(response.headers());
        if status != StatusCode::OK {
            assert_eq!(header(&response, "content-type"), Some("application/problem+json"), "{status}");
        }
    }
}
