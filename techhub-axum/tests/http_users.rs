//! `/api/v1/users/*` over a real socket: the signed-in user, mass assignment, IDOR, listing, ETags, the last
//! admin, body limits, and a CSV import followed live over the events socket, then exported and downloaded.

mod common;

use std::collections::BTreeSet;

use common::{
    Options, PASSWORD, PATIENCE, assert_problem, assert_security_headers, body, header, send_json, start, start_with,
    until,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use techhub_core::jobs::WorkerConfig;
use techhub_core::model::{Job, JobId};
use uuid::Uuid;

/// The user as its admin sees it now.
async fn stored(server: &common::Server, id: &str) -> Value {
    let response = server.get(&format!("/api/v1/users/{id}"), Some(&server.admin.access)).await;
    assert_eq!(response.status(), StatusCode::OK);
    body(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_read_and_rename_themselves_but_nothing_else() {
    let server = start().await;
    let ada = server.account("ada@example.com").await;
    let token = Some(ada.access.as_str());
    let response = server.get("/api/v1/users/me", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(response.headers());
    assert!(header(&response, "etag").is_some_and(|etag| etag.starts_with('"')), "an ETag");
    let me = body(response).await;
    assert_eq!((&me["id"], &me["email"], &me["role"]), (&json!(ada.id), &json!("ada@example.com"), &json!("user")));

    let response = server.patch("/api/v1/users/me", token, &json!({ "name": "Ada L." })).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body(response).await["name"], "Ada L.");

    // Mass assignment through /users/me: fields outside the self patch are refused, and nothing changes.
    for (patch, field) in [
        (json!({ "role": "admin" }), "role"),
        (json!({ "active": false }), "active"),
        (json!({ "email": "mine@example.com" }), "email"),
        (json!({ "email_verified": true }), "email_verified"),
        (json!({ "name": "Sneaky", "role": "admin" }), "role"),
        (json!({ "name": 5 }), "name"),
    ] {
        let problem = assert_problem(
            server.patch("/api/v1/users/me", token, &patch).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(
            problem["errors"].as_array().is_some_and(|errors| errors.iter().any(|e| e["field"] == field)),
            "{problem}"
        );
    }
    let control = server.patch("/api/v1/users/me", token, &json!({ "name": "bell\u{7}" })).await;
    assert_problem(control, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let broken = server.post_raw("/api/v1/users/me", token, "application/json", "{}".into()).await;
    assert_eq!(broken.status(), StatusCode::METHOD_NOT_ALLOWED);
    let malformed = server
        .request(reqwest::Method::PATCH, "/api/v1/users/me", token)
        .header("content-type", "application/json")
        .body(r#"{"name": "#)
        .send()
        .await
        .expect("sent");
    assert_problem(malformed, StatusCode::BAD_REQUEST, "malformed_body").await;
    let form = server
        .request(reqwest::Method::PATCH, "/api/v1/users/me", token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("role=admin")
        .send()
        .await
        .expect("sent");
    assert_problem(form, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

    let after = stored(&server, &ada.id).await;
    assert_eq!(
        (&after["name"], &after["role"], &after["active"], &after["email"], &after["email_verified"]),
        (&json!("Ada L."), &json!("user"), &json!(true), &json!("ada@example.com"), &json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_patching_itself_by_id_cannot_change_its_role_or_state() {
    let server = start().await;
    let bob = server.account("bob@example.com").await;
    let path = format!("/api/v1/users/{}", bob.id);
    let token = Some(bob.access.as_str());
    for patch in [
        json!({ "role": "admin" }),
        json!({ "active": false }),
        json!({ "email": "other@example.com" }),
        json!({ "name": "Bob", "role": "admin" }),
    ] {
        assert_problem(server.patch(&path, token, &patch).await, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let after = stored(&server, &bob.id).await;
    assert_eq!(
        (&after["role"], &after["active"], &after["email"]),
        (&json!("user"), &json!(true), &json!("bob@example.com"))
    );
    // Its own name it may change, and it may read itself by id.
    assert_eq!(body(server.patch(&path, token, &json!({ "name": "Robert" })).await).await["name"], "Robert");
    assert_eq!(body(server.get(&path, token).await).await["role"], "user");
    assert_eq!(body(server.get("/api/v1/users/me", token).await).await["role"], "user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_reach_other_users() {
    let server = start().await;
    let alice = server.account("alice@example.com").await;
    let bob = server.account("bob@example.com").await;
    let token = Some(alice.access.as_str());
    let path = format!("/api/v1/users/{}", bob.id);
    let nobody = format!("/api/v1/users/{}", Uuid::new_v4());
    // Another user's id answers exactly like an id that does not exist.
    let other = assert_problem(server.get(&path, token).await, StatusCode::NOT_FOUND, "not_found").await;
    let missing = assert_problem(server.get(&nobody, token).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(other, missing);
    assert_problem(server.patch(&path, token, &json!({ "name": "pwned" })).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    assert_problem(server.patch(&path, token, &json!({ "role": "user" })).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    assert_problem(server.delete(&path, token).await, StatusCode::NOT_FOUND, "not_found").await;
    for admin_only in ["/api/v1/users", "/api/v1/users?role=admin"] {
        assert_problem(server.get(admin_only, token).await, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let export = server.post("/api/v1/users/export", token, &json!({ "format": "csv" })).await;
    assert_problem(export, StatusCode::FORBIDDEN, "forbidden").await;
    let import =
        server.post_raw("/api/v1/users/import", token, "text/csv", "email,name,role\nx@example.com,X,admin\n".into());
    assert_problem(import.await, StatusCode::FORBIDDEN, "forbidden").await;
    let after = stored(&server, &bob.id).await;
    assert_eq!((&after["name"], &after["role"]), (&json!("Tester"), &json!("user")));
    // Anonymous callers are 401 everywhere here.
    for path in ["/api/v1/users/me", "/api/v1/users", path.as_str()] {
        assert_problem(server.get(path, None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_users_with_filters_and_cursors() {
    let server = start().await;
    let token = Some(server.admin.access.as_str());
    for email in ["alice@example.com", "bob@example.com", "carol@example.com", "dan@example.com"] {
        server.account(email).await;
    }
    let all = body(server.get("/api/v1/users", token).await).await;
    assert_eq!(all["items"].as_array().expect("items").len(), 5);
    assert_eq!(all["next_cursor"], Value::Null);

    let emails = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|user| user["email"].as_str().expect("email").to_owned())
            .collect()
    };
    assert_eq!(emails(&body(server.get("/api/v1/users?role=admin", token).await).await), [common::ADMIN_EMAIL]);
    assert_eq!(emails(&body(server.get("/api/v1/users?q=carol", token).await).await), ["carol@example.com"]);
    let dan =
        body(server.get("/api/v1/users?q=dan", token).await).await["items"][0]["id"].as_str().expect("id").to_owned();
    let disable = server.patch(&format!("/api/v1/users/{dan}"), token, &json!({ "active": false })).await;
    assert_eq!(disable.status(), StatusCode::OK);
    assert_eq!(emails(&body(server.get("/api/v1/users?active=false", token).await).await), ["dan@example.com"]);
    assert_eq!(
        body(server.get("/api/v1/users?active=true&role=user", token).await).await["items"].as_array().map(Vec::len),
        Some(3)
    );

    // Pages of two, followed by cursor: every user once.
    let mut seen = BTreeSet::new();
    let mut path = "/api/v1/users?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = body(server.get(&path, token).await).await;
        pages += 1;
        assert!(page["items"].as_array().expect("items").len() <= 2);
        for email in emails(&page) {
            assert!(seen.insert(email.clone()), "{email} twice");
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/users?limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "the cursor never ends");
    }
    assert_eq!(seen.len(), 5);

    for bad in ["limit=0", "limit=501", "limit=-1", "limit=ten", "role=superuser", "active=maybe", "cursor=%00garbage"]
    {
        let response = server.get(&format!("/api/v1/users?{bad}"), token).await;
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_change_users_guarded_by_if_match() {
    let server = start().await;
    let token = Some(server.admin.access.as_str());
    let erin = server.account("erin@example.com").await;
    server.account("taken@example.com").await;
    let path = format!("/api/v1/users/{}", erin.id);

    let response = server.get(&path, token).await;
    let etag = header(&response, "etag").expect("an ETag").to_owned();
    let stale = r#""999""#;
    for if_match in [stale, "W/\"998\""] {
        let response = server
            .request(reqwest::Method::PATCH, &path, token)
            .header("if-match", if_match)
            .json(&json!({ "name": "Lost update" }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED, "If-Match {if_match}");
        common::assert_problem_headers(response.headers(), StatusCode::PRECONDITION_FAILED);
    }
    let malformed = server
        .request(reqwest::Method::PATCH, &path, token)
        .header("if-match", "yesterday")
        .json(&json!({ "name": "x" }));
    assert_problem(malformed.send().await.expect("sent"), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(stored(&server, &erin.id).await["name"], "Tester", "refused patches change nothing");

    let patch = json!({ "name": "Erin E.", "email": "Erin@Corp.example", "role": "admin" });
    let response = server
        .request(reqwest::Method::PATCH, &path, token)
        .header("if-match", &etag)
        .json(&patch)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let new_etag = header(&response, "etag").expect("a new ETag").to_owned();
    assert_ne!(new_etag, etag);
    let user = body(response).await;
    assert_eq!(
        (&user["name"], &user["email"], &user["role"], &user["email_verified"]),
        (&json!("Erin E."), &json!("erin@corp.example"), &json!("admin"), &json!(false))
    );
    // The ETag read before the change is stale now.
    let response = server
        .request(reqwest::Method::PATCH, &path, token)
        .header("if-match", &etag)
        .json(&json!({ "name": "again" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);

    let taken = server.patch(&path, token, &json!({ "email": "TAKEN@example.com" })).await;
    assert_problem(taken, StatusCode::CONFLICT, "email_taken").await;
    let invalid = server.patch(&path, token, &json!({ "email": "not an address" })).await;
    assert_problem(invalid, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let role = server.patch(&path, token, &json!({ "role": "root" })).await;
    let problem = assert_problem(role, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "role", "{problem}");

    // Disabling ends the user's sessions at once.
    assert_eq!(server.get("/api/v1/users/me", Some(&erin.access)).await.status(), StatusCode::OK);
    assert_eq!(server.patch(&path, token, &json!({ "active": false })).await.status(), StatusCode::OK);
    assert_problem(server.get("/api/v1/users/me", Some(&erin.access)).await, StatusCode::UNAUTHORIZED, "token_invalid")
        .await;
    let refresh = server.post("/api/v1/auth/refresh", None, &json!({ "refresh_token": erin.refresh })).await;
    assert_problem(refresh, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let login = json!({ "email": "erin@corp.example", "password": PASSWORD });
    assert_problem(
        server.post("/api/v1/auth/login", None, &login).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let unknown = format!("/api/v1/users/{}", Uuid::new_v4());
    assert_problem(server.patch(&unknown, token, &json!({ "name": "x" })).await, StatusCode::NOT_FOUND, "not_found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_deleted_by_admins_or_themselves_and_their_sessions_end() {
    let server = start().await;
    let token = Some(server.admin.access.as_str());
    let fay = server.account("fay@example.com").await;
    let gus = server.account("gus@example.com").await;

    let response = server.delete(&format!("/api/v1/users/{}", fay.id), token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_security_headers(response.headers());
    assert_problem(server.get(&format!("/api/v1/users/{}", fay.id), token).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    assert_problem(server.get("/api/v1/users/me", Some(&fay.access)).await, StatusCode::UNAUTHORIZED, "token_invalid")
        .await;
    let again = server.delete(&format!("/api/v1/users/{}", fay.id), token).await;
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;

    let response = server.delete(&format!("/api/v1/users/{}", gus.id), Some(&gus.access)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "a user may delete itself");
    assert_problem(server.get("/api/v1/users/me", Some(&gus.access)).await, StatusCode::UNAUTHORIZED, "token_invalid")
        .await;
    let login = json!({ "email": "gus@example.com", "password": PASSWORD });
    assert_problem(
        server.post("/api/v1/auth/login", None, &login).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_active_admin_can_be_neither_deleted_nor_demoted() {
    let server = start().await;
    let token = Some(server.admin.access.as_str());
    let path = format!("/api/v1/users/{}", server.admin.id);
    assert_problem(server.delete(&path, token).await, StatusCode::CONFLICT, "conflict").await;
    for patch in [json!({ "role": "user" }), json!({ "active": false })] {
        assert_problem(server.patch(&path, token, &patch).await, StatusCode::CONFLICT, "conflict").await;
    }
    let me = body(server.get("/api/v1/users/me", token).await).await;
    assert_eq!((&me["role"], &me["active"]), (&json!("admin"), &json!(true)));

    // With a second admin, the first may step down.
    let hal = server.account("hal@example.com").await;
    let promote = server.patch(&format!("/api/v1/users/{}", hal.id), token, &json!({ "role": "admin" })).await;
    assert_eq!(promote.status(), StatusCode::OK);
    let demote = server.patch(&path, Some(&hal.access), &json!({ "role": "user" })).await;
    assert_eq!(demote.status(), StatusCode::OK, "hal's token was issued when hal was a user, but roles are read fresh");
    assert_eq!(body(demote).await["role"], "user");
    // Now hal is the last admin.
    let last = server.delete(&format!("/api/v1/users/{}", hal.id), Some(&hal.access)).await;
    assert_problem(last, StatusCode::CONFLICT, "conflict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_one_mib_are_413_except_on_the_import_route() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let token = Some(server.admin.access.as_str());
    let big_name = "x".repeat(1024 * 1024 + 1);
    let response = server.patch("/api/v1/users/me", token, &json!({ "name": big_name })).await;
    assert_security_headers(response.headers());
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let register = json!({ "email": "big@example.com", "password": PASSWORD, "name": big_name });
    let response = server.post("/api/v1/auth/register", None, &register).await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let enqueue = json!({ "kind": common::ECHO, "payload": { "blob": big_name } });
    assert_problem(
        server.post("/api/v1/jobs", token, &enqueue).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // The import route takes files up to 32 MiB.
    let mut csv = String::from("email,name,role\n");
    let mut row = 0;
    while csv.len() < 3 * 1024 * 1024 / 2 {
        row += 1;
        csv.push_str(&format!("user{row}@example.com,User number {row} with a fairly long name,user\n"));
    }
    let response = server.post_raw("/api/v1/users/import", token, "text/csv; charset=utf-8", csv).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(body(response).await["job_id"].is_string());
    let rows: Vec<Value> =
        (0..30_000).map(|n| json!({ "email": format!("json{n}@example.com"), "name": "A JSON row" })).collect();
    let json_body = serde_json::to_string(&rows).expect("JSON");
    assert!(json_body.len() > 1024 * 1024);
    let response = server.post_raw("/api/v1/users/import", token, "application/json", json_body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_route_refuses_what_it_cannot_read() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let token = Some(server.admin.access.as_str());
    let path = "/api/v1/users/import";
    for content_type in ["application/xml", "text/plain", "multipart/form-data; boundary=x"] {
        let response = server.post_raw(path, token, content_type, "email,name,role\n".into()).await;
        assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    }
    let bare = server.request(reqwest::Method::POST, path, token).body("email,name,role\n").send().await.expect("sent");
    assert_problem(bare, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    let object = server.post_raw(path, token, "application/json", r#"{"email":"x@example.com"}"#.into()).await;
    assert_problem(object, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let broken = server.post_raw(path, token, "application/json", "[{".into()).await;
    assert_problem(broken, StatusCode::BAD_REQUEST, "malformed_body").await;
    let export = server.post("/api/v1/users/export", token, &json!({ "format": "xml" })).await;
    assert_problem(export, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let export =
        server.post("/api/v1/users/export", token, &json!({ "format": "csv", "columns": ["password_hash"] })).await;
    assert_problem(export, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_import_is_followed_live_and_the_export_is_downloaded_without_hashes() {
    let server = start().await;
    let token = server.admin.access.clone();
    server.account("existing@example.com").await;
    let mut socket = server.events(&token).await;

    let csv = "email,name,role,password\n\
               ann@example.com,Ann,user,a long enough passphrase\n\
               bob@example.com,Bob,admin,\n\
               existing@example.com,Dup,user,\n\
               not-an-email,Broken,user,\n\
               odd@example.com,Odd,superuser,\n";
    let response = server.post_raw("/api/v1/users/import", Some(&token), "text/csv", csv.into()).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = header(&response, "location").expect("a Location").to_owned();
    let job_id = body(response).await["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(location, format!("/api/v1/jobs/{job_id}"));

    send_json(&mut socket, &json!({ "type": "subscribe", "topics": ["jobs"], "ids": [job_id] })).await;
    // Until the acknowledgement the socket receives everything: the job may even have finished by then.
    let (ack, early) = until(&mut socket, |message| message["type"] == "subscribed").await;
    assert_eq!((&ack["topics"], &ack["ids"]), (&json!(["jobs"]), &json!([job_id])));
    let is_done = |event: &Value| event["type"] == "job.succeeded" && event["data"]["job_id"] == job_id.as_str();
    let succeeded = match early.iter().find(|event| is_done(event)) {
        Some(event) => event.clone(),
        None => {
            let (succeeded, after) = until(&mut socket, is_done).await;
            for event in &after {
                assert_eq!(event["data"]["job_id"], job_id.as_str(), "only the subscribed job: {event}");
                assert_eq!(event["topic"], "jobs");
            }
            succeeded
        }
    };
    assert_eq!(succeeded["topic"], "jobs");
    assert!(succeeded["seq"].is_u64() && succeeded["at"].is_string(), "{succeeded}");

    let job = body(server.get(&location, Some(&token)).await).await;
    assert_eq!(
        (&job["state"], &job["kind"], &job["created_by"]),
        (&json!("succeeded"), &json!("users.import"), &json!(server.admin.id))
    );
    let result = &job["result"];
    assert_eq!(
        (&result["created"], &result["skipped"], &result["failed"]),
        (&json!(2), &json!(1), &json!(2)),
        "{result}"
    );
    let errors = result["errors"].as_array().expect("errors");
    let failed: Vec<(u64, &str)> = errors
        .iter()
        .map(|error| (error["row"].as_u64().expect("row"), error["email"].as_str().expect("email")))
        .collect();
    // A cell that is not an address is not repeated: with misaligned columns it may be a password.
    assert_eq!(failed, [(4, ""), (5, "odd@example.com")]);
    assert!(errors.iter().all(|error| error["error"].is_string()));

    // The imported password works; the password-less row is invited; the admin row is an admin.
    server.login("ann@example.com", "a long enough passphrase").await;
    server.wait_mail("bob@example.com", "Reset your TechHub password").await;
    let bob = body(server.get("/api/v1/users?q=bob", Some(&token)).await).await;
    assert_eq!(bob["items"][0]["role"], "admin");

    // Export: a CSV artifact with every user and no secret.
    let response = server.post("/api/v1/users/export", Some(&token), &json!({ "format": "csv" })).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = header(&response, "location").expect("a Location").to_owned();
    let export_id = body(response).await["job_id"].as_str().expect("job_id").to_owned();
    assert_eq!(location, format!("/api/v1/jobs/{export_id}"));
    let job = server.wait_state(&token, &export_id, "succeeded").await;
    assert_eq!(job["has_artifact"], true);
    let response = server.get(&format!("/api/v1/jobs/{export_id}/artifact"), Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_security_headers(response.headers());
    assert!(
        header(&response, "content-type").is_some_and(|value| value.starts_with("text/csv")),
        "{:?}",
        response.headers()
    );
    let disposition = header(&response, "content-disposition").expect("a disposition").to_owned();
    assert!(disposition.starts_with("attachment; filename=\"") && disposition.ends_with(".csv\""), "{disposition}");
    let text = response.text().await.expect("text");
    let header_line = text.lines().next().expect("a header line");
    assert!(!header_line.contains("password") && !header_line.contains("hash"), "{header_line}");
    for email in ["ann@example.com", "bob@example.com", "existing@example.com", common::ADMIN_EMAIL] {
        assert!(text.contains(email), "{email} missing from {text}");
    }
    assert!(!text.contains("argon2") && !text.contains("$v=19"), "{text}");
    assert_eq!(text.lines().count(), 5, "a header and four users: {text}");

    // The JSON export has its own content type.
    let response = server.post("/api/v1/users/export", Some(&token), &json!({ "format": "json" })).await;
    let json_id = body(response).await["job_id"].as_str().expect("job_id").to_owned();
    server.wait_state(&token, &json_id, "succeeded").await;
    let response = server.get(&format!("/api/v1/jobs/{json_id}/artifact"), Some(&token)).await;
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("application/json")));
    let users: Vec<Value> = response.json().await.expect("a JSON array");
    assert_eq!(users.len(), 4);
    assert!(users.iter().all(|user| user.get("password_hash").is_none() && user.get("password").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_is_stored_in_an_import_job_payload_or_result() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let token = server.admin.access.clone();
    let secrets = ["first secret passphrase", "second-secret-in-role", "tiny", "json secret passphrase", "4242424242"];
    // Row 2 has its password in the role column; row 3's password is too short; the JSON file has a
    // number where a password goes.
    let csv = format!(
        "email,name,role,password\n\
         one@example.com,One,user,{}\n\
         two@example.com,Two,{},\n\
         three@example.com,Three,user,{}\n",
        secrets[0], secrets[1], secrets[2]
    );
    let json_rows = format!(
        r#"[{{"email":"four@example.com","password":"{}"}},{{"email":"five@example.com","password":{}}}]"#,
        secrets[3], secrets[4]
    );
    let mut ids = Vec::new();
    for (content_type, file) in [("text/csv", csv), ("application/json", json_rows)] {
        let response = server.post_raw("/api/v1/users/import", Some(&token), content_type, file).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        ids.push(body(response).await["job_id"].as_str().expect("job_id").parse::<JobId>().expect("an id"));
    }
    let stored = |job: &Job| serde_json::to_string(job).expect("a job serializes");
    let assert_no_secret = |text: &str, when: &str| {
        for secret in secrets {
            assert!(!text.contains(secret), "{when}: {secret:?} is stored in {text}");
        }
    };
    for id in &ids {
        let job = server.hub.storage().get_job(*id).await.expect("read").expect("stored");
        assert_no_secret(&stored(&job), "while queued");
    }

    let workers = server.hub.start_workers(WorkerConfig::default().queue("default", 1)).expect("workers");
    for id in &ids {
        server.wait_state(&token, &id.to_string(), "succeeded").await;
        let job = server.hub.storage().get_job(*id).await.expect("read").expect("stored");
        assert_no_secret(&stored(&job), "once finished");
        // The payload (rows with password hashes) is discarded by a write just after the one that settles the
        // job, so a reader polling the state may see the finished job a moment before.
        let discarded = tokio::time::timeout(PATIENCE, async {
            loop {
                let job = server.hub.storage().get_job(*id).await.expect("read").expect("stored");
                if job.payload == Value::Null {
                    return job;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the payload is discarded when the job ends");
        assert_no_secret(&stored(&discarded), "once discarded");
    }
    workers.shutdown().await;
    server.login("one@example.com", secrets[0]).await;
    server.login("four@example.com", secrets[3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_route_refuses_a_non_admin_before_reading_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let user = server.account("not-admin@example.com").await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.expect("connects");
    // Announce 30 MiB but send only the headers: a server that reads the body first never answers.
    let head = format!(
        "POST /api/v1/users/import HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
        user.access,
        30 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.expect("headers sent");
    let mut response = vec![0u8; 12];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut response))
        .await
        .expect("an answer before the body")
        .expect("read");
    assert_eq!(&response, b"HTTP/1.1 403");
}
