//! Builds over HTTP with real processes and a real WebSocket client: the seed's flow end to end (a build of
//! three modules with commands, watched live, then its logs and statistics), every bad input as problem+json,
//! and build events reaching only the build's creator and admins.

mod common;

use common::{Options, assert_problem, body, send_json, start_with, until};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn about(event: &Value, build: &str) -> bool {
    event["data"]["build_id"] == build
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_of_three_commands_runs_live_and_shows_logs_and_statistics() {
    let server = start_with(Options { build_executor: true, ..Options::default() }).await;
    let admin = server.admin.clone();
    let user = server.account("watcher@example.com").await;
    let mut admin_socket = server.events(&admin.access).await;
    let mut user_socket = server.events(&user.access).await;
    for socket in [&mut admin_socket, &mut user_socket] {
        send_json(socket, &json!({ "type": "subscribe", "topics": ["builds"] })).await;
        until(socket, |message| message["type"] == "subscribed").await;
    }

    let request = json!({
        "project": "shop",
        "ref": "main",
        "modules": [
            { "name": "compile", "command": "echo compiling; echo '::progress 50 halfway'; sleep 0.3; echo compiled" },
            { "name": "test", "command": "echo testing >&2", "depends_on": ["compile"] },
            { "name": "package", "command": "echo packaged", "depends_on": ["test"] }
        ]
    });
    let response = server.post("/api/v1/builds", Some(&admin.access), &request).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = common::header(&response, "location").expect("a Location").to_owned();
    let build = body(response).await;
    let id = build["id"].as_str().expect("an id").to_owned();
    assert_eq!(location, format!("/api/v1/builds/{id}"));
    assert_eq!((build["status"].as_str(), build["modules"].as_array().map(Vec::len)), (Some("queued"), Some(3)));

    let (finished, before) =
        until(&mut admin_socket, |event| about(event, &id) && event["type"] == "build.succeeded").await;
    assert_eq!(finished["topic"], "builds");
    let seen: Vec<(String, String)> = before
        .iter()
        .filter(|event| about(event, &id))
        .map(|event| {
            (event["type"].as_str().unwrap_or("").to_owned(), event["data"]["module"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    for module in ["compile", "test", "package"] {
        let started = seen.iter().position(|(kind, name)| kind == "module.started" && name == module);
        let succeeded = seen.iter().position(|(kind, name)| kind == "module.succeeded" && name == module);
        assert!(started.is_some() && started < succeeded, "{module}: {seen:?}");
    }
    assert!(seen.iter().any(|(kind, name)| kind == "module.progress" && name == "compile"), "{seen:?}");
    let live_lines: Vec<String> = before
        .iter()
        .filter(|event| about(event, &id) && event["type"] == "build.log")
        .flat_map(|event| event["data"]["lines"].as_array().cloned().unwrap_or_default())
        .map(|line| line["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(live_lines.contains(&"compiled".to_owned()), "{live_lines:?}");

    let logs = body(server.get(&format!("/api/v1/builds/{id}/logs?offset=0"), Some(&admin.access)).await).await;
    let texts: Vec<&str> =
        logs["lines"].as_array().expect("lines").iter().filter_map(|line| line["text"].as_str()).collect();
    assert_eq!(texts, ["compiling", "compiled", "testing", "packaged"]);
    assert_eq!((logs["next_offset"].as_u64(), logs["truncated"].as_bool()), (Some(4), Some(false)));
    let test_lines =
        body(server.get(&format!("/api/v1/builds/{id}/logs?module=test"), Some(&admin.access)).await).await;
    assert_eq!(test_lines["lines"][0]["stream"], "stderr");

    let build = body(server.get(&location, Some(&admin.access)).await).await;
    assert_eq!((build["status"].as_str(), build["progress"].as_u64()), (Some("succeeded"), Some(100)));
    assert!(build["duration_ms"].is_u64() && build["queued_ms"].is_u64());
    let overview = body(server.get("/api/v1/builds/stats/overview?project=shop", Some(&admin.access)).await).await;
    assert_eq!((overview["total"].as_u64(), overview["success_rate"].as_f64()), (Some(1), Some(1.0)));
    assert!(overview["duration_ms"]["p50"].is_u64());
    let modules = body(server.get("/api/v1/builds/stats/modules", Some(&admin.access)).await).await;
    let names: Vec<&str> =
        modules.as_array().expect("an array").iter().filter_map(|entry| entry["module"].as_str()).collect();
    assert_eq!(names, ["compile", "package", "test"]);
    let progress = body(server.get("/api/v1/progress", Some(&admin.access)).await).await;
    assert_eq!(progress[0]["latest_build_id"], id.as_str());
    let module = body(server.get("/api/v1/progress/modules/compile?project=shop", Some(&admin.access)).await).await;
    assert_eq!(module["recent_runs"][0]["status"], "succeeded");

    // The user saw none of the admin's build: its first build event is about its own build.
    let own = server
        .post("/api/v1/builds", Some(&user.access), &json!({ "project": "mine", "modules": [{ "name": "a" }] }))
        .await;
    let own = body(own).await;
    let (first, _) = until(&mut user_socket, |event| event["topic"] == "builds").await;
    assert_eq!((first["type"].as_str(), &first["data"]["build_id"]), (Some("build.queued"), &own["id"]));
    let hidden = server.get(&location, Some(&user.access)).await;
    assert_problem(hidden, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_a_problem_naming_what_is_wrong() {
    let server = start_with(Options { build_executor: true, ..Options::default() }).await;
    let admin = server.admin.access.clone();
    let user = server.account("builder@example.com").await;
    let post = |path: &'static str, token: String, body: Value| {
        let server = &server;
        async move { server.post(path, Some(&token), &body).await }
    };

    let cycle = json!({ "project": "p", "modules": [{ "name": "a", "depends_on": ["b"] }, { "name": "b", "depends_on": ["a"] }] });
    let problem = assert_problem(
        post("/api/v1/builds", admin.clone(), cycle).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(problem["errors"][0]["field"].as_str().is_some_and(|field| field.ends_with("].depends_on")), "{problem}");
    let unknown = json!({ "project": "p", "modules": [{ "name": "a", "depends_on": ["ghost"] }] });
    let problem = assert_problem(
        post("/api/v1/builds", admin.clone(), unknown).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "modules[0].depends_on");
    let command = json!({ "project": "p", "modules": [{ "name": "a" }, { "name": "b", "command": "true" }] });
    let problem = assert_problem(
        post("/api/v1/builds", user.access.clone(), command).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "modules[1].command");
    let extra = json!({ "project": "p", "modules": [{ "name": "a", "shell": "bash" }] });
    assert_problem(
        post("/api/v1/builds", admin.clone(), extra).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let batch =
        json!({ "builds": [{ "project": "p", "modules": [{ "name": "a" }] }, { "project": "", "modules": [] }] });
    let problem = assert_problem(
        post("/api/v1/builds/batch", admin.clone(), batch).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(problem["errors"][0]["field"].as_str().is_some_and(|field| field.starts_with("builds[1].")), "{problem}");
    let listed = body(server.get("/api/v1/builds", Some(&admin)).await).await;
    assert_eq!(listed["items"], json!([]), "the batch stored nothing");
    let malformed = server
        .request(Method::POST, "/api/v1/builds", Some(&admin))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("sent");
    assert_problem(malformed, StatusCode::BAD_REQUEST, "malformed_body").await;

    // An external build: illegal transitions are conflicts.
    let external = json!({ "project": "p", "modules": [{ "name": "a" }, { "name": "b", "depends_on": ["a"] }] });
    let build = body(post("/api/v1/builds", user.access.clone(), external).await).await;
    let id = build["id"].as_str().expect("an id").to_owned();
    let path = |tail: &str| format!("/api/v1/builds/{id}{tail}");
    let complete = server.post(&path("/modules/a/complete"), Some(&user.access), &json!({})).await;
    assert_problem(complete, StatusCode::CONFLICT, "conflict").await;
    let early = server.post(&path("/modules/b/start"), Some(&user.access), &json!({})).await;
    assert_problem(early, StatusCode::CONFLICT, "conflict").await;
    let start = server.request(Method::POST, &path("/modules/a/start"), Some(&user.access)).send().await.expect("sent");
    assert_eq!(start.status(), StatusCode::OK);
    let update = server
        .request(Method::PUT, &path("/modules/a"), Some(&user.access))
        .json(&json!({ "progress": 30 }))
        .send()
        .await
        .expect("sent");
    assert_eq!(body(update).await["modules"][0]["progress"], 30);
    let lines = json!({ "module": "a", "stream": "stdout", "lines": ["hello"] });
    assert_eq!(server.post(&path("/logs"), Some(&user.access), &lines).await.status(), StatusCode::ACCEPTED);
    let system = json!({ "module": "a", "stream": "system", "lines": ["forged"] });
    assert_problem(
        server.post(&path("/logs"), Some(&user.access), &system).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let past = server.get(&path("/logs?offset=5"), Some(&user.access)).await;
    let problem = assert_problem(past, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "offset");
    let failed =
        server.post(&path("/modules/a/fail"), Some(&user.access), &json!({ "message": "red", "exit_code": 2 })).await;
    let failed = body(failed).await;
    assert_eq!((failed["status"].as_str(), failed["modules"][1]["status"].as_str()), (Some("failed"), Some("skipped")));
    let cancel = server.post(&path("/cancel"), Some(&user.access), &json!({})).await;
    assert_problem(cancel, StatusCode::CONFLICT, "conflict").await;
    let retry_b = server.post(&path("/modules/b/retry"), Some(&user.access), &json!({})).await;
    assert_problem(retry_b, StatusCode::CONFLICT, "conflict").await;
    let retry_a = server.post(&path("/modules/a/retry"), Some(&user.access), &json!({})).await;
    assert_eq!(retry_a.status(), StatusCode::ACCEPTED);
    assert_eq!(body(retry_a).await["status"], "running");

    // Another user knows nothing of it.
    let other = server.account("other@example.com").await;
    assert_problem(server.get(&path(""), Some(&other.access)).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(
        server.post(&path("/cancel"), Some(&other.access), &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // A queued build is cancelled at once (200).
    let queued = body(
        post("/api/v1/builds", user.access.clone(), json!({ "project": "p", "modules": [{ "name": "a" }] })).await,
    )
    .await;
    let cancelled = server
        .post(&format!("/api/v1/builds/{}/cancel", queued["id"].as_str().unwrap_or("")), Some(&user.access), &json!({}))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(body(cancelled).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_refused_when_the_server_has_no_executor() {
    let server = start_with(Options::default()).await;
    let command = json!({ "project": "p", "modules": [{ "name": "a", "command": "true" }] });
    let response = server.post("/api/v1/builds", Some(&server.admin.access), &command).await;
    let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "modules[0].command");
    assert!(problem["errors"][0]["message"].as_str().is_some_and(|message| message.contains("TECHHUB_BUILD_EXECUTOR")));

    let document = body(server.get("/api/v1/openapi.json", None).await).await;
    for path in [
        "/api/v1/builds",
        "/api/v1/builds/batch",
        "/api/v1/builds/{id}",
        "/api/v1/builds/{id}/cancel",
        "/api/v1/builds/{id}/logs",
        "/api/v1/builds/{id}/modules/{name}",
        "/api/v1/builds/{id}/modules/{name}/start",
        "/api/v1/builds/{id}/modules/{name}/complete",
        "/api/v1/builds/{id}/modules/{name}/fail",
        "/api/v1/builds/{id}/modules/{name}/retry",
        "/api/v1/builds/stats/overview",
        "/api/v1/builds/stats/modules",
        "/api/v1/progress",
        "/api/v1/progress/modules/{name}",
    ] {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
}
