//! The Notifications routes, black box: endpoints (create with the secret shown once, list, patch, rotate,
//! delete), problem+json for every bad input, a signed `build.failed` arriving at a receiver on 127.0.0.1 and
//! the delivery log read back, resend, templates, direct messages, statistics, and no secret in any response,
//! event or log line.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{Options, PATIENCE, Server, assert_problem, body, header, start_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use techhub_core::NotifyConfig;
use techhub_core::notify::AddressPolicy;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

/// Every log line the process writes, for the "no secret in a log line" check.
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static LogSink {
    static SINK: OnceLock<LogSink> = OnceLock::new();
    SINK.get_or_init(|| {
        let sink = LogSink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        sink
    })
}

/// A server whose webhooks may reach loopback receivers, retrying at once (`retries` waits of zero).
async fn server(retries: usize) -> Server {
    logs();
    let notify = NotifyConfig::default()
        .address_policy(AddressPolicy::public_only().allow_loopback())
        .retry_schedule(vec![Duration::ZERO; retries]);
    start_with(Options { notify: Some(notify), ..Options::default() }).await
}

/// A receiver on 127.0.0.1 answering `statuses` in order (the last repeats); each request is passed on.
async fn receiver(statuses: Vec<u16>) -> (String, UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (seen, received) = unbounded_channel();
    let statuses = Arc::new(Mutex::new(statuses));
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let seen = seen.clone();
        let statuses = statuses.clone();
        async move {
            let _ = seen.send((headers, body));
            let mut statuses = statuses.lock().expect("not poisoned");
            let status = if statuses.len() > 1 { statuses.remove(0) } else { statuses.first().copied().unwrap_or(204) };
            axum::http::StatusCode::from_u16(status).expect("a status")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    (format!("http://{address}/hooks"), received)
}

async fn next(received: &mut UnboundedReceiver<(HeaderMap, Bytes)>) -> (HeaderMap, Bytes) {
    timeout(PATIENCE, received.recv()).await.expect("a delivery in time").expect("receiver open")
}

fn verify(secret: &str, headers: &HeaderMap, body: &Bytes) {
    let mut checked = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        checked.insert(
            name,
            headers.get(name).expect("the header is sent").to_str().expect("ascii").parse().expect("value"),
        );
    }
    standardwebhooks::Webhook::new(secret).expect("valid").verify(body, &checked).expect("the signature verifies");
}

async fn create_endpoint(server: &Server, url: &str, event_types: &[&str]) -> Value {
    let request = json!({ "kind": "webhook", "url": url, "description": "CI alerts", "event_types": event_types });
    let response = server.post("/api/v1/notifications/endpoints", Some(&server.admin.access), &request).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header(&response, "location").expect("a location").to_owned();
    let created = body(response).await;
    assert_eq!(
        location,
        format!("/api/v1/notifications/endpoints/{}", created["endpoint"]["id"].as_str().expect("id"))
    );
    created
}

async fn wait_status(server: &Server, id: &str, status: &str) -> Value {
    timeout(PATIENCE, async {
        loop {
            let notification =
                body(server.get(&format!("/api/v1/notifications/{id}"), Some(&server.admin.access)).await).await;
            if notification["status"] == status {
                return notification;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the notification settled in time")
}

/// Fails a one-module build over HTTP (an external executor), which publishes `build.failed`.
async fn fail_a_build(server: &Server, token: &str) -> String {
    let build = body(
        server.post("/api/v1/builds", Some(token), &json!({ "project": "web", "modules": [{ "name": "test" }] })).await,
    )
    .await;
    let id = build["id"].as_str().expect("a build id").to_owned();
    let start = server.post(&format!("/api/v1/builds/{id}/modules/test/start"), Some(token), &json!({})).await;
    assert_eq!(start.status(), StatusCode::OK);
    let fail =
        server.post(&format!("/api/v1/builds/{id}/modules/test/fail"), Some(token), &json!({ "exit_code": 1 })).await;
    assert_eq!(fail.status(), StatusCode::OK);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_build_failed_arrives_and_the_delivery_log_reads_back_without_secrets() {
    let server = server(3).await;
    let mut events = server.hub.subscribe();
    let admin = server.admin.access.clone();
    let (url, mut received) = receiver(vec![200]).await;
    let created = create_endpoint(&server, &url, &["build.failed"]).await;
    let secret = created["secret"].as_str().expect("the secret is shown at creation").to_owned();
    assert!(secret.starts_with("whsec_"));
    let endpoint_id = created["endpoint"]["id"].as_str().expect("id").to_owned();

    let build_id = fail_a_build(&server, &admin).await;
    let (headers, payload) = next(&mut received).await;
    verify(&secret, &headers, &payload);
    let payload: Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(
        (payload["type"].as_str(), payload["data"]["build_id"].as_str()),
        (Some("build.failed"), Some(build_id.as_str()))
    );

    let page = body(server.get("/api/v1/notifications?channel=webhook", Some(&admin)).await).await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(
        (items[0]["recipient"].as_str(), items[0]["event_type"].as_str()),
        (Some(endpoint_id.as_str()), Some("build.failed"))
    );
    let id = items[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(headers.get("webhook-id").and_then(|value| value.to_str().ok()), Some(id.as_str()));
    let detail = wait_status(&server, &id, "sent").await;
    assert_eq!(detail["deliveries"].as_array().map(Vec::len), Some(1), "{detail}");
    assert_eq!(detail["deliveries"][0]["status_code"], 200);
    assert!(detail["deliveries"][0]["duration_ms"].is_u64() && detail.get("body").is_none());

    let stats = body(server.get("/api/v1/notifications/stats", Some(&admin)).await).await;
    let webhook = stats.as_array().expect("an array").iter().find(|row| row["channel"] == "webhook").cloned();
    assert_eq!(webhook, Some(json!({ "channel": "webhook", "pending": 0, "sent": 1, "failed": 0 })));

    // The secret is in no later response, event or log line.
    let rotated = body(
        server
            .post(&format!("/api/v1/notifications/endpoints/{endpoint_id}/rotate-secret"), Some(&admin), &json!({}))
            .await,
    )
    .await;
    let new_secret = rotated["secret"].as_str().expect("a new secret").to_owned();
    let mut seen = String::new();
    for path in [
        "/api/v1/notifications/endpoints".to_owned(),
        format!("/api/v1/notifications/endpoints/{endpoint_id}"),
        "/api/v1/notifications".to_owned(),
        format!("/api/v1/notifications/{id}"),
        "/api/v1/audit".to_owned(),
    ] {
        seen.push_str(&server.get(&path, Some(&admin)).await.text().await.expect("text"));
    }
    while let Ok(event) = events.try_recv() {
        seen.push_str(&serde_json::to_string(&event).expect("serializes"));
    }
    seen.push_str(&String::from_utf8_lossy(&logs().0.lock().expect("not poisoned")));
    for secret in [&secret, &new_secret] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!seen.contains(key), "a secret leaked");
    }
    assert!(seen.contains(&endpoint_id), "the check read real answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_a_problem_and_only_admins_may_manage_notifications() {
    let server = server(0).await;
    let admin = server.admin.access.clone();
    let user = server.account("someone@example.com").await;
    let forbidden = server.get("/api/v1/notifications/endpoints", Some(&user.access)).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
    let forbidden = server.get("/api/v1/notifications/stats", Some(&user.access)).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden").await;

    // The loopback is allowed on this server; 10.x, link-local and mapped private addresses are not.
    let cases = [
        (json!({ "kind": "webhook", "url": "ftp://example.com/", "event_types": [] }), "url"),
        (json!({ "kind": "webhook", "url": "http://169.254.169.254/latest/", "event_types": [] }), "url"),
        (json!({ "kind": "webhook", "url": "http://10.0.0.1/", "event_types": [] }), "url"),
        (json!({ "kind": "webhook", "url": "http://[::ffff:10.0.0.1]/", "event_types": [] }), "url"),
        (
            json!({ "kind": "webhook", "url": "https://hooks.example.com/", "event_types": ["build.exploded"] }),
            "event_types[0]",
        ),
    ];
    for (request, field) in cases {
        let response = server.post("/api/v1/notifications/endpoints", Some(&admin), &request).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{request}: {problem}");
    }
    let response = server
        .post(
            "/api/v1/notifications/endpoints",
            Some(&admin),
            &json!({ "kind": "pager", "url": "https://example.com/", "event_types": [] }),
        )
        .await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        body(server.get("/api/v1/notifications/endpoints", Some(&admin)).await).await,
        json!([]),
        "nothing was stored"
    );

    let response = server
        .post(
            "/api/v1/notifications/template/nope",
            Some(&admin),
            &json!({ "channel": "email", "recipient": "a@example.com", "data": {} }),
        )
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = server.post("/api/v1/notifications/template/build_finished", Some(&admin), &json!({ "channel": "email", "recipient": "a@example.com", "data": { "build_id": "b1", "project": "web", "ref": "main", "status": "failed" } })).await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "data.duration_ms", "{problem}");
    let response = server
        .post(
            "/api/v1/notifications",
            Some(&admin),
            &json!({ "channel": "email", "recipient": "not an address", "subject": "s", "body": "b" }),
        )
        .await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let response = server.post("/api/v1/notifications", Some(&admin), &json!({ "channel": "webhook", "recipient": "0190f0c0-0000-7000-8000-000000000001", "subject": "s", "body": "{}" })).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let response = server.get("/api/v1/notifications?channel=pigeon", Some(&admin)).await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let missing = "/api/v1/notifications/endpoints/0190f0c0-0000-7000-8000-000000000001";
    assert_problem(server.get(missing, Some(&admin)).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(server.delete(missing, Some(&admin)).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_patched_rotated_deleted_and_failed_notifications_resent() {
    let server = server(0).await;
    let admin = server.admin.access.clone();
    let (url, mut received) = receiver(vec![500, 200]).await;
    let created = create_endpoint(&server, &url, &["build.failed"]).await;
    let id = created["endpoint"]["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/notifications/endpoints/{id}");

    let patched = body(
        server
            .patch(
                &path,
                Some(&admin),
                &json!({ "description": "on call", "event_types": ["job.failed", "build.failed"] }),
            )
            .await,
    )
    .await;
    assert_eq!(
        (patched["description"].as_str(), patched["event_types"].as_array().map(Vec::len)),
        (Some("on call"), Some(2))
    );
    let problem = assert_problem(
        server.patch(&path, Some(&admin), &json!({ "event_types": ["nope"] })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "event_types[0]");

    // Sent once, refused (500, no retries left): failed; resent: delivered with the same webhook id.
    let queued = server
        .post(
            "/api/v1/notifications",
            Some(&admin),
            &json!({ "channel": "webhook", "recipient": id, "subject": "", "body": "{\"n\": 1}" }),
        )
        .await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    let notification = body(queued).await;
    let notification_id = notification["id"].as_str().expect("id").to_owned();
    let (first, _) = next(&mut received).await;
    let failed = wait_status(&server, &notification_id, "failed").await;
    assert_eq!(failed["deliveries"][0]["status_code"], 500);
    let resent =
        server.post(&format!("/api/v1/notifications/{notification_id}/resend"), Some(&admin), &json!({})).await;
    assert_eq!(resent.status(), StatusCode::ACCEPTED);
    let (second, _) = next(&mut received).await;
    assert_eq!(first.get("webhook-id"), second.get("webhook-id"));
    let sent = wait_status(&server, &notification_id, "sent").await;
    let codes: Vec<Value> =
        sent["deliveries"].as_array().expect("deliveries").iter().map(|d| d["status_code"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(200)]);
    let again = server.post(&format!("/api/v1/notifications/{notification_id}/resend"), Some(&admin), &json!({})).await;
    assert_problem(again, StatusCode::CONFLICT, "conflict").await;

    let disabled = body(server.patch(&path, Some(&admin), &json!({ "enabled": false })).await).await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(server.delete(&path, Some(&admin)).await.status(), StatusCode::NO_CONTENT);
    assert_problem(server.get(&path, Some(&admin)).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_listed_and_render_to_email_with_a_locale_fallback() {
    let server = server(0).await;
    let admin = server.admin.access.clone();
    let templates = body(server.get("/api/v1/notifications/templates", Some(&admin)).await).await;
    let build = templates
        .as_array()
        .expect("an array")
        .iter()
        .find(|t| t["id"] == "build_finished")
        .cloned()
        .expect("built in");
    assert_eq!(build["channels"], json!(["email", "webhook", "slack", "log"]));
    assert!(build["variables"].as_array().expect("variables").contains(&json!("project")));
    for id in ["welcome", "verify_email", "password_reset", "password_changed", "job_failed"] {
        assert!(templates.as_array().expect("array").iter().any(|t| t["id"] == id), "{id}");
    }

    let data = json!({ "build_id": "b1", "project": "web", "ref": "main", "status": "failed", "duration_ms": 42 });
    let request = json!({ "channel": "email", "recipient": "ops@example.com", "data": data, "locale": "fr-CA" });
    let response = server.post("/api/v1/notifications/template/build_finished", Some(&admin), &request).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mail = server.wait_mail("ops@example.com", "[web] build failed on main").await;
    assert!(
        mail.text.contains("42 ms") && mail.html.as_deref().is_some_and(|html| html.contains("<strong>web</strong>"))
    );

    let direct =
        json!({ "channel": "email", "recipient": "dev@example.com", "subject": "Deploy", "body": "v2 is live" });
    assert_eq!(server.post("/api/v1/notifications", Some(&admin), &direct).await.status(), StatusCode::ACCEPTED);
    assert_eq!(server.wait_mail("dev@example.com", "Deploy").await.text, "v2 is live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_endpoint_url_never_shows_its_token() {
    let server = server(0).await;
    let mut events = server.hub.subscribe();
    let admin = server.admin.access.clone();
    let (url, mut received) = receiver(vec![200]).await;
    let token = "xoxSECRETslackTOKEN0123456789";
    let slack_url = format!("{}/services/T0ABC/B0DEF/{token}", url.trim_end_matches("/hooks"));
    let request = json!({ "kind": "slack", "url": slack_url, "event_types": ["build.failed"] });
    let response = server.post("/api/v1/notifications/endpoints", Some(&admin), &request).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut seen = response.text().await.expect("text");
    let created: Value = serde_json::from_str(&seen).expect("JSON");
    let endpoint_id = created["endpoint"]["id"].as_str().expect("id").to_owned();
    let masked = format!("{}/services/T0ABC/B0DEF/****", url.trim_end_matches("/hooks"));
    assert_eq!(created["endpoint"]["url"].as_str(), Some(masked.as_str()), "{created}");
    assert_eq!(created["secret"], Value::Null);

    // A message goes to the real URL, token included, while every answer shows it masked.
    let message = json!({ "channel": "slack", "recipient": endpoint_id, "subject": "Deploy", "body": "done" });
    let queued = body(server.post("/api/v1/notifications", Some(&admin), &message).await).await;
    let (_, delivered) = next(&mut received).await;
    assert!(String::from_utf8_lossy(&delivered).contains("done"));
    let id = queued["id"].as_str().expect("id").to_owned();
    wait_status(&server, &id, "sent").await;
    for path in [
        "/api/v1/notifications/endpoints".to_owned(),
        format!("/api/v1/notifications/endpoints/{endpoint_id}"),
        "/api/v1/notifications".to_owned(),
        format!("/api/v1/notifications/{id}"),
        "/api/v1/audit".to_owned(),
    ] {
        let answer = server.get(&path, Some(&admin)).await.text().await.expect("text");
        if path.ends_with(&endpoint_id) {
            let endpoint: Value = serde_json::from_str(&answer).expect("JSON");
            assert_eq!(endpoint["url"].as_str(), Some(masked.as_str()));
        }
        seen.push_str(&answer);
    }
    while let Ok(event) = events.try_recv() {
        seen.push_str(&serde_json::to_string(&event).expect("serializes"));
    }
    seen.push_str(&String::from_utf8_lossy(&logs().0.lock().expect("not poisoned")));
    assert!(!seen.contains(token), "the Slack token leaked");
    assert!(seen.contains(&masked) && seen.contains(&id), "the check read real answers");
}
