//! `/api/v1/jobs/*` and `/api/v1/queue` over a real socket: enqueueing (admins), reading, cancelling (queued
//! 200, running 202, finished 409), retrying, artifacts, queue statistics, and users confined to their own
//! jobs (IDOR).

mod common;

use std::time::Duration;

use common::{BLOCK, ECHO, FAIL, assert_problem, assert_security_headers, body, header, in_future, start};
use reqwest::StatusCode;
use serde_json::{Value, json};
use techhub_core::Actor;
use techhub_core::model::{NewJob, UserId};
use uuid::Uuid;

/// Enqueues over HTTP as the admin: the job id (after checking the 202's shape).
async fn enqueue(server: &common::Server, request: &Value) -> String {
    let response = server.post("/api/v1/jobs", Some(&server.admin.access), request).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{request}");
    assert_security_headers(response.headers());
    let location = header(&response, "location").expect("a Location").to_owned();
    let accepted = body(response).await;
    assert_eq!(accepted.as_object().map(|object| object.len()), Some(1), "only {{ job_id }}: {accepted}");
    let id = accepted["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(location, format!("/api/v1/jobs/{id}"));
    id
}

/// A job owned by `user`, enqueued through the core (users cannot enqueue over HTTP).
async fn owned_job(server: &common::Server, user: &str, kind: &str) -> String {
    let owner: UserId = user.parse().expect("a user id");
    let spec = NewJob::new(kind, json!({})).created_by(owner).run_at(chrono::Utc::now() + Duration::from_secs(3600));
    server.hub.jobs().enqueue(&Actor::System, spec).await.expect("enqueued").id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_enqueue_jobs_and_read_them_back() {
    let server = start().await;
    let token = server.admin.access.clone();
    let request = json!({ "kind": ECHO, "payload": { "n": 1 }, "priority": 5, "max_attempts": 2 });
    let id = enqueue(&server, &request).await;
    let job = server.wait_state(&token, &id, "succeeded").await;
    let keys: Vec<&String> = job.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "attempt",
            "created_at",
            "created_by",
            "finished_at",
            "has_artifact",
            "id",
            "kind",
            "last_error",
            "max_attempts",
            "payload",
            "priority",
            "progress",
            "queue",
            "result",
            "run_at",
            "started_at",
            "state"
        ]
    );
    assert_eq!(
        (&job["id"], &job["queue"], &job["kind"], &job["priority"], &job["attempt"], &job["max_attempts"]),
        (&json!(id), &json!("default"), &json!(ECHO), &json!(5), &json!(1), &json!(2))
    );
    assert_eq!(
        (&job["result"], &job["last_error"], &job["has_artifact"]),
        (&json!({ "echo": { "n": 1 } }), &Value::Null, &json!(false))
    );
    assert_eq!(job["created_by"], server.admin.id.as_str());
    assert!(job["progress"]["percent"].is_u64(), "{job}");
    for field in ["run_at", "created_at", "started_at", "finished_at"] {
        let at = job[field].as_str().unwrap_or_else(|| panic!("{field} in {job}"));
        chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|_| panic!("{field} is RFC 3339: {at}"));
    }

    // A live unique key returns the job already holding it.
    let unique = json!({ "kind": ECHO, "run_at": in_future(Duration::from_secs(3600)), "unique_key": "nightly" });
    let first = enqueue(&server, &unique).await;
    assert_eq!(enqueue(&server, &unique).await, first);
    let queued = body(server.get(&format!("/api/v1/jobs/{first}"), Some(&token)).await).await;
    assert_eq!((&queued["state"], &queued["started_at"]), (&json!("queued"), &Value::Null));

    // Refused requests.
    let unknown = server.post("/api/v1/jobs", Some(&token), &json!({ "kind": "no.such.kind" })).await;
    let problem = assert_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "kind", "{problem}");
    for (request, field) in [
        (json!({ "payload": {} }), "kind"),
        (json!({ "kind": ECHO, "owner": "me" }), "owner"),
        (json!({ "kind": ECHO, "created_by": server.admin.id }), "created_by"),
        (json!({ "kind": ECHO, "priority": "high" }), "priority"),
        (json!({ "kind": ECHO, "run_at": "tomorrow" }), "run_at"),
        (json!({ "kind": ECHO, "max_attempts": -1 }), "max_attempts"),
    ] {
        let response = server.post("/api/v1/jobs", Some(&token), &request).await;
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{request}: {problem}");
    }
    let user = server.account("user@example.com").await;
    let forbidden = server.post("/api/v1/jobs", Some(&user.access), &json!({ "kind": ECHO })).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
    let anonymous = server.post("/api/v1/jobs", None, &json!({ "kind": ECHO })).await;
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let missing = server.get(&format!("/api/v1/jobs/{}", Uuid::new_v4()), Some(&token)).await;
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_answers_200_when_queued_202_when_running_and_409_when_finished() {
    let server = start().await;
    let token = server.admin.access.clone();

    let queued = enqueue(&server, &json!({ "kind": ECHO, "run_at": in_future(Duration::from_secs(3600)) })).await;
    let response = server.post(&format!("/api/v1/jobs/{queued}/cancel"), Some(&token), &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let job = body(response).await;
    assert_eq!((&job["id"], &job["state"]), (&json!(queued), &json!("cancelled")));
    let again = server.post(&format!("/api/v1/jobs/{queued}/cancel"), Some(&token), &json!({})).await;
    assert_problem(again, StatusCode::CONFLICT, "conflict").await;

    let running = enqueue(&server, &json!({ "kind": BLOCK })).await;
    server.wait_state(&token, &running, "running").await;
    let response = server.post(&format!("/api/v1/jobs/{running}/cancel"), Some(&token), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job = body(response).await;
    assert_eq!((&job["id"], &job["state"]), (&json!(running), &json!("running")));
    server.wait_state(&token, &running, "cancelled").await;
    let again = server.post(&format!("/api/v1/jobs/{running}/cancel"), Some(&token), &json!({})).await;
    assert_problem(again, StatusCode::CONFLICT, "conflict").await;

    let done = enqueue(&server, &json!({ "kind": ECHO })).await;
    server.wait_state(&token, &done, "succeeded").await;
    let finished = server.post(&format!("/api/v1/jobs/{done}/cancel"), Some(&token), &json!({})).await;
    assert_problem(finished, StatusCode::CONFLICT, "conflict").await;
    let unknown = server.post(&format!("/api/v1/jobs/{}/cancel", Uuid::new_v4()), Some(&token), &json!({})).await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_cancelled_jobs_are_retried_with_a_new_budget() {
    let server = start().await;
    let token = server.admin.access.clone();

    let failing = enqueue(&server, &json!({ "kind": FAIL })).await;
    let failed = server.wait_state(&token, &failing, "failed").await;
    assert_eq!((&failed["attempt"], &failed["max_attempts"]), (&json!(1), &json!(1)));
    assert!(failed["last_error"].as_str().is_some_and(|error| error.contains("failing on purpose")), "{failed}");
    let response = server.post(&format!("/api/v1/jobs/{failing}/retry"), Some(&token), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "location"), Some(format!("/api/v1/jobs/{failing}").as_str()));
    assert_eq!(body(response).await["job_id"], failing.as_str());
    // It runs again (a fresh budget), and fails again.
    let first_finish = failed["finished_at"].clone();
    let again =
        server.wait_job(&token, &failing, |job| job["state"] == "failed" && job["finished_at"] != first_finish).await;
    assert_eq!(again["attempt"], 1, "{again}");

    let blocked = enqueue(&server, &json!({ "kind": BLOCK })).await;
    server.wait_state(&token, &blocked, "running").await;
    server.post(&format!("/api/v1/jobs/{blocked}/cancel"), Some(&token), &json!({})).await;
    server.wait_state(&token, &blocked, "cancelled").await;
    let response = server.post(&format!("/api/v1/jobs/{blocked}/retry"), Some(&token), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    server.wait_state(&token, &blocked, "running").await;
    // A running or succeeded job cannot be retried.
    let refused = server.post(&format!("/api/v1/jobs/{blocked}/retry"), Some(&token), &json!({})).await;
    assert_problem(refused, StatusCode::CONFLICT, "conflict").await;
    server.post(&format!("/api/v1/jobs/{blocked}/cancel"), Some(&token), &json!({})).await;
    let done = enqueue(&server, &json!({ "kind": ECHO })).await;
    server.wait_state(&token, &done, "succeeded").await;
    let refused = server.post(&format!("/api/v1/jobs/{done}/retry"), Some(&token), &json!({})).await;
    assert_problem(refused, StatusCode::CONFLICT, "conflict").await;

    // Users may not retry, even their own jobs.
    let user = server.account("user@example.com").await;
    let own = owned_job(&server, &user.id, ECHO).await;
    server.post(&format!("/api/v1/jobs/{own}/cancel"), Some(&user.access), &json!({})).await;
    let forbidden = server.post(&format!("/api/v1/jobs/{own}/retry"), Some(&user.access), &json!({})).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_and_cancel_only_their_own_jobs() {
    let server = start().await;
    let alice = server.account("alice@example.com").await;
    let bob = server.account("bob@example.com").await;
    let alices = owned_job(&server, &alice.id, ECHO).await;
    let bobs = owned_job(&server, &bob.id, ECHO).await;
    let token = Some(alice.access.as_str());

    let page = body(server.get("/api/v1/jobs", token).await).await;
    let ids: Vec<&str> =
        page["items"].as_array().expect("items").iter().map(|job| job["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [alices.as_str()], "alice sees her job only (not bob's, not the system's emails)");
    assert_eq!(page["next_cursor"], Value::Null);
    let filtered = body(server.get(&format!("/api/v1/jobs?kind={ECHO}&state=queued&queue=default"), token).await).await;
    assert_eq!(filtered["items"].as_array().map(Vec::len), Some(1));

    // Bob's job is "not found" for Alice, exactly like a job that does not exist.
    let nobody = Uuid::new_v4();
    let theirs =
        assert_problem(server.get(&format!("/api/v1/jobs/{bobs}"), token).await, StatusCode::NOT_FOUND, "not_found")
            .await;
    let missing =
        assert_problem(server.get(&format!("/api/v1/jobs/{nobody}"), token).await, StatusCode::NOT_FOUND, "not_found")
            .await;
    assert_eq!(theirs, missing);
    for action in ["cancel", "retry"] {
        let response = server.post(&format!("/api/v1/jobs/{bobs}/{action}"), token, &json!({})).await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let artifact = server.get(&format!("/api/v1/jobs/{bobs}/artifact"), token).await;
    assert_problem(artifact, StatusCode::NOT_FOUND, "not_found").await;
    let bob_sees = body(server.get(&format!("/api/v1/jobs/{bobs}"), Some(&bob.access)).await).await;
    assert_eq!(bob_sees["state"], "queued", "alice's attempts changed nothing");

    // Her own: readable and cancellable.
    assert_eq!(body(server.get(&format!("/api/v1/jobs/{alices}"), token).await).await["created_by"], alice.id.as_str());
    let cancelled = server.post(&format!("/api/v1/jobs/{alices}/cancel"), token, &json!({})).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let stats = server.get("/api/v1/queue", token).await;
    assert_problem(stats, StatusCode::FORBIDDEN, "forbidden").await;

    // The admin sees everything, filters, and pages.
    let admin = Some(server.admin.access.as_str());
    let all = body(server.get("/api/v1/jobs?limit=500", admin).await).await;
    let all_ids: Vec<&str> =
        all["items"].as_array().expect("items").iter().map(|job| job["id"].as_str().expect("id")).collect();
    assert!(all_ids.contains(&alices.as_str()) && all_ids.contains(&bobs.as_str()), "{all_ids:?}");
    let emails = body(server.get("/api/v1/jobs?queue=email&limit=500", admin).await).await;
    assert!(
        emails["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|job| job["queue"] == "email" && job["created_by"].is_null())
    );
    let cancelled = body(server.get("/api/v1/jobs?state=cancelled", admin).await).await;
    assert_eq!(cancelled["items"][0]["id"], alices.as_str());
    let first = body(server.get("/api/v1/jobs?limit=1", admin).await).await;
    let cursor = first["next_cursor"].as_str().expect("more than one job");
    let second = body(server.get(&format!("/api/v1/jobs?limit=1&cursor={cursor}"), admin).await).await;
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    for bad in ["state=exploded", "limit=0", "limit=501"] {
        let response = server.get(&format!("/api/v1/jobs?{bad}"), admin).await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_exist_only_once_a_job_succeeded_with_one() {
    let server = start().await;
    let token = server.admin.access.clone();
    let queued = enqueue(&server, &json!({ "kind": ECHO, "run_at": in_future(Duration::from_secs(3600)) })).await;
    let response = server.get(&format!("/api/v1/jobs/{queued}/artifact"), Some(&token)).await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let done = enqueue(&server, &json!({ "kind": ECHO })).await;
    server.wait_state(&token, &done, "succeeded").await;
    let response = server.get(&format!("/api/v1/jobs/{done}/artifact"), Some(&token)).await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = server.get(&format!("/api/v1/jobs/{}/artifact", Uuid::new_v4()), Some(&token)).await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let export = enqueue(&server, &json!({ "kind": "users.export", "payload": { "format": "json" } })).await;
    server.wait_state(&token, &export, "succeeded").await;
    let response = server.get(&format!("/api/v1/jobs/{export}/artifact"), Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-disposition").is_some_and(|value| value.starts_with("attachment")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_read_per_queue_statistics() {
    let server = start().await;
    let token = server.admin.access.clone();
    let done = enqueue(&server, &json!({ "kind": ECHO })).await;
    server.wait_state(&token, &done, "succeeded").await;
    enqueue(&server, &json!({ "kind": ECHO, "run_at": in_future(Duration::from_secs(3600)) })).await;
    let failing = enqueue(&server, &json!({ "kind": FAIL })).await;
    server.wait_state(&token, &failing, "failed").await;

    let response = server.get("/api/v1/queue", Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let queues = body(response).await;
    let default = queues.as_array().expect("a list").iter().find(|queue| queue["queue"] == "default").expect("default");
    let keys: Vec<&String> = default.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        ["cancelled", "failed", "oldest_queued_age_s", "queue", "queued", "running", "succeeded", "workers"]
    );
    assert_eq!(
        (&default["queued"], &default["running"], &default["succeeded"], &default["failed"], &default["cancelled"]),
        (&json!(1), &json!(0), &json!(1), &json!(1), &json!(0))
    );
    assert_eq!(default["workers"], 2);
    assert!(default["oldest_queued_age_s"].as_f64().is_some_and(|age| age >= 0.0));
    assert_problem(server.get("/api/v1/queue", None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_job_shows_its_payload_with_secrets_redacted_and_lists_never_do() {
    let server = start().await;
    let token = server.admin.access.clone();
    let payload = json!({
        "report": "weekly",
        "password": "hunter2-hunter2",
        "auth": { "api_key": "k-secret-123", "user": "ops" },
        "rows": [{ "email": "ada@example.com", "password_hash": "$argon2id$v=19$abc" }],
    });
    let run_at = in_future(Duration::from_secs(3600));
    let id = enqueue(&server, &json!({ "kind": ECHO, "payload": payload, "run_at": run_at })).await;

    let response = server.get(&format!("/api/v1/jobs/{id}"), Some(&token)).await;
    let text = response.text().await.expect("text");
    for secret in ["hunter2-hunter2", "k-secret-123", "$argon2id$v=19$abc"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let job: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        job["payload"],
        json!({
            "report": "weekly",
            "password": "[redacted]",
            "auth": { "api_key": "[redacted]", "user": "ops" },
            "rows": [{ "email": "ada@example.com", "password_hash": "[redacted]" }],
        })
    );
    let list = body(server.get("/api/v1/jobs?limit=500", Some(&token)).await).await;
    let listed = list["items"].as_array().expect("items").iter().find(|job| job["id"] == id.as_str()).expect("listed");
    assert!(listed.get("payload").is_none(), "{listed}");
}
