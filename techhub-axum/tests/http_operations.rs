//! The operators' routes over a real socket (`/api/v1/system/info|stats|database|logs|metrics`): admins read
//! them, users get 403, anonymous callers 401; the logs come from a real tracing subscriber's ring.

mod common;

use std::sync::OnceLock;

use common::{assert_problem, body, header, start, start_with};
use reqwest::StatusCode;
use serde_json::json;
use techhub_axum::{HttpConfig, LogRing};
use tracing_subscriber::layer::SubscriberExt;

const OPERATOR_ROUTES: [&str; 5] = [
    "/api/v1/system/info",
    "/api/v1/system/stats",
    "/api/v1/system/database",
    "/api/v1/system/logs",
    "/api/v1/system/metrics",
];

/// The process-wide subscriber of this test binary feeds one ring (a subscriber can be installed only once).
fn ring() -> LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(|| {
        let ring = LogRing::new(500);
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");
        ring
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_are_for_admins_only() {
    let server = start().await;
    let user = server.account("ops-user@example.com").await;
    for path in OPERATOR_ROUTES {
        assert_problem(server.get(path, None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert_problem(server.get(path, Some(&user.access)).await, StatusCode::FORBIDDEN, "forbidden").await;
        let response = server.get(path, Some(&server.admin.access)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_names_the_version_store_and_workers() {
    let server = start().await;
    let info = body(server.get("/api/v1/system/info", Some(&server.admin.access)).await).await;
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["uptime_s"].is_u64(), "{info}");
    assert!(info["started_at"].as_str().is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()), "{info}");
    assert_eq!(info["store"]["kind"], server.hub.storage().backend(), "{info}");
    let database = server.hub.storage().database_info().await.expect("database info");
    assert_eq!(info["store"]["schema_version"], json!(database.schema_version), "{info}");
    // The harness runs two workers on `default` and one on `email`, and no build executor.
    assert_eq!(info["workers"], json!({ "default": 2, "email": 1 }), "{info}");
    assert_eq!(info["build_executor"], json!(null), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_users_jobs_and_builds() {
    let server = start_with(common::Options { workers: false, ..Default::default() }).await;
    let admin = server.admin.access.clone();
    server.account("counted@example.com").await;
    for _ in 0..3 {
        let response = server.post("/api/v1/jobs", Some(&admin), &json!({ "kind": common::ECHO, "payload": {} })).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let build = json!({ "project": "shop", "modules": [{ "name": "compile" }] });
    assert_eq!(server.post("/api/v1/builds", Some(&admin), &build).await.status(), StatusCode::ACCEPTED);

    let stats = body(server.get("/api/v1/system/stats", Some(&admin)).await).await;
    assert_eq!(stats["users"], json!({ "total": 2, "active": 2, "admins": 1 }), "{stats}");
    // Without workers, every job waits: three echoes, each account's welcome and verification emails, and the
    // build's run.
    let queued = stats["jobs"]["queued"].as_u64().expect("a count");
    let all_queued: u64 =
        server.hub.storage().queue_counts().await.expect("counts").iter().map(|queue| queue.queued).sum();
    assert_eq!(queued, all_queued, "{stats}");
    assert!(queued >= 4, "{stats}");
    assert_eq!(stats["jobs"]["succeeded"], 0, "{stats}");
    assert_eq!(stats["builds"]["queued"], 1, "{stats}");
    assert_eq!(stats["builds"]["timed_out"], 0, "{stats}");
    for status in ["pending", "sent", "failed"] {
        assert!(stats["notifications"][status].is_u64(), "{stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_reports_the_store_without_secrets() {
    let server = start().await;
    let database = body(server.get("/api/v1/system/database", Some(&server.admin.access)).await).await;
    assert_eq!(database["kind"], server.hub.storage().backend(), "{database}");
    assert!(database["details"].is_object(), "{database}");
    if server.hub.storage().backend() == "sqlite" {
        assert!(database["schema_version"].as_u64().is_some_and(|version| version > 0), "{database}");
        assert!(database["size_bytes"].as_u64().is_some_and(|size| size > 0), "{database}");
        assert!(database["details"]["page_size"].as_u64().is_some(), "{database}");
        assert!(database["details"]["wal_bytes"].is_u64(), "{database}");
    }
    let text = database.to_string().to_ascii_lowercase();
    assert!(!text.contains("password") && !text.contains("secret"), "{database}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_from_the_ring_filtered_by_level_newest_last() {
    let ring = ring();
    let http = HttpConfig { log_ring: Some(ring.clone()), ..HttpConfig::default() };
    let server = start_with(common::Options { http, ..Default::default() }).await;
    let admin = server.admin.access.clone();
    tracing::info!(marker = "ops-info-7f3", "an informational record");
    tracing::warn!(marker = "ops-warn-7f3", attempts = 3_u64, "a warning record");

    let records = body(server.get("/api/v1/system/logs?limit=1000", Some(&admin)).await).await;
    let records = records.as_array().expect("an array");
    let warning = records.iter().find(|record| record["fields"]["marker"] == "ops-warn-7f3").expect("the warning");
    assert_eq!(warning["level"], "warn");
    assert_eq!(warning["message"], "a warning record");
    assert_eq!(warning["fields"]["attempts"], 3);
    assert!(warning["target"].as_str().is_some_and(|target| target.starts_with("http_operations")), "{warning}");
    let seqs: Vec<u64> = records.iter().map(|record| record["seq"].as_u64().expect("a seq")).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "oldest first: {seqs:?}");

    let warnings = body(server.get("/api/v1/system/logs?level=warn&limit=1000", Some(&admin)).await).await;
    let warnings = warnings.as_array().expect("an array");
    assert!(warnings.iter().all(|record| record["level"] == "warn" || record["level"] == "error"), "{warnings:?}");
    assert!(warnings.iter().any(|record| record["fields"]["marker"] == "ops-warn-7f3"));
    assert!(!warnings.iter().any(|record| record["fields"]["marker"] == "ops-info-7f3"));

    let since = warning["at"].as_str().expect("a time");
    let url = format!("/api/v1/system/logs?since={}&level=warn", since.replace('+', "%2B"));
    let later = body(server.get(&url, Some(&admin)).await).await;
    assert!(later.as_array().expect("an array").iter().any(|record| record["fields"]["marker"] == "ops-warn-7f3"));

    let one = body(server.get("/api/v1/system/logs?limit=1", Some(&admin)).await).await;
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    for bad in ["?limit=0", "?limit=1001", "?level=loud", "?since=yesterday"] {
        let response = server.get(&format!("/api/v1/system/logs{bad}"), Some(&admin)).await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_ring_answers_no_logs() {
    let server = start().await;
    let records = body(server.get("/api/v1/system/logs", Some(&server.admin.access)).await).await;
    assert_eq!(records, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_alias_serves_the_prometheus_text() {
    let server = start().await;
    let response = server.get("/api/v1/system/metrics", Some(&server.admin.access)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("text/plain")));
    let text = response.text().await.expect("text");
    assert!(text.contains("techhub_http_requests_total"), "{text}");
}

/// The statuses many routes share are in the document, and every problem is `application/problem+json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_declares_shared_statuses_and_problem_bodies() {
    let document = serde_json::to_value(techhub_axum::openapi()).expect("serializes");
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an item") {
            let responses = operation["responses"].as_object().expect("responses");
            let secured = operation["security"].as_array().is_some_and(|schemes| !schemes.is_empty());
            if secured {
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
            if operation["requestBody"].is_object() {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
            }
            for (status, response) in responses.iter().filter(|(status, _)| status.as_str() >= "400") {
                let content = response["content"].as_object();
                let problem = content.is_some_and(|content| content.contains_key("application/problem+json"));
                let readiness = path == "/api/v1/system/health" && status == "503";
                assert!(problem || readiness, "{method} {path} {status}: {response}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked} error answers checked");
    // Closed sets are enums.
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["Role"]["enum"], json!(["user", "admin"]));
    assert_eq!(schemas["JobState"]["enum"], json!(["queued", "running", "succeeded", "failed", "cancelled"]));
    assert_eq!(schemas["TransferFormat"]["enum"], json!(["csv", "json"]));
    assert!(schemas["BuildStatus"]["enum"].as_array().is_some_and(|names| names.len() == 6));
    assert!(schemas["ModuleStatus"]["enum"].as_array().is_some_and(|names| names.len() == 7));
    // The import route takes CSV and a JSON array.
    let import = &document["paths"]["/api/v1/users/import"]["post"]["requestBody"]["content"];
    assert!(import["text/csv"].is_object() && import["application/json"].is_object(), "{import}");
}

/// An admin's socket follows new log records once asked; a user's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_socket_follows_the_logs_live() {
    let ring = ring();
    let http = HttpConfig { log_ring: Some(ring.clone()), ..HttpConfig::default() };
    let server = start_with(common::Options { http, workers: false, ..Default::default() }).await;
    let user = server.account("log-follower@example.com").await;
    let mut refused = server.events(&user.access).await;
    common::send_json(&mut refused, &json!({ "type": "logs", "follow": true })).await;
    let (answer, _) = common::until(&mut refused, |message| message["type"] == "error").await;
    assert!(answer["message"].as_str().is_some_and(|text| text.contains("admins")), "{answer}");

    let mut socket = server.events(&server.admin.access).await;
    common::send_json(&mut socket, &json!({ "type": "logs", "follow": true })).await;
    common::until(&mut socket, |message| message["type"] == "logs" && message["follow"] == true).await;
    tracing::warn!(marker = "ops-live-91c", "a record logged while followed");
    let (record, _) = common::until(&mut socket, |message| {
        message["type"] == "log" && message["data"]["fields"]["marker"] == "ops-live-91c"
    })
    .await;
    assert_eq!(record["data"]["level"], "warn");
    assert_eq!(record["data"]["message"], "a record logged while followed");
}
