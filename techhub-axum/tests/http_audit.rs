//! `GET /api/v1/audit`: every audited action API.md lists that this server performs is recorded by the core,
//! filtered and paged; nothing secret is in it; only admins read it.

mod common;

use std::time::Duration;

use common::{PASSWORD, PATIENCE, assert_problem, body, link_token, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Every entry the admin can read with `query` (all pages).
async fn entries(server: &common::Server, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/audit?limit=3{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = server.get(&path, Some(&server.admin.access)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page = body(response).await;
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// Waits until the log holds an entry of `action` passing `wanted`.
async fn wait_entry(server: &common::Server, action: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = entries(server, &format!("&action={action}")).await.into_iter().find(|entry| wanted(entry))
        {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {action} entry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_records_every_audited_action_without_a_secret() {
    let server = start().await;
    let admin = server.admin.access.clone();
    let register = json!({ "email": "audited@example.com", "password": PASSWORD });
    let created = body(server.post("/api/v1/auth/register", None, &register).await).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let is_about = |entry: &Value| entry["user_id"] == id.as_str();

    let login = server
        .request(reqwest::Method::POST, "/api/v1/auth/login", None)
        .header("user-agent", "AuditTest/1.0")
        .json(&json!({ "email": "audited@example.com", "password": PASSWORD }))
        .send()
        .await
        .expect("sent");
    let pair = body(login).await;
    let access = pair["access_token"].as_str().expect("a token").to_owned();
    let refresh = pair["refresh_token"].as_str().expect("a token").to_owned();
    let wrong_passwords = ["wrong-guess-1!", "wrong-guess-2!", "wrong-guess-3!", "wrong-guess-4!", "wrong-guess-5!"];
    for wrong in wrong_passwords {
        let attempt = json!({ "email": "audited@example.com", "password": wrong });
        assert_eq!(server.post("/api/v1/auth/login", None, &attempt).await.status(), StatusCode::UNAUTHORIZED);
    }
    let unknown = json!({ "email": "nobody-here@example.com", "password": "typed-secret-xyz" });
    server.post("/api/v1/auth/login", None, &unknown).await;

    let change = json!({ "current_password": PASSWORD, "new_password": "changed passphrase one" });
    // Locked by the five failures: refused, and audited as such.
    assert_eq!(
        server.post("/api/v1/auth/password/change", Some(&access), &change).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    server.post("/api/v1/auth/logout", None, &json!({ "refresh_token": refresh })).await;
    server.post("/api/v1/auth/password/forgot", None, &json!({ "email": "audited@example.com" })).await;
    let mail = server.wait_mail("audited@example.com", "Reset your TechHub password").await;
    let reset_token = link_token(&mail.text, "reset-password");
    let reset = json!({ "token": reset_token, "new_password": "reset passphrase two" });
    assert_eq!(server.post("/api/v1/auth/password/reset", None, &reset).await.status(), StatusCode::NO_CONTENT);
    let pair = server.login("audited@example.com", "reset passphrase two").await;
    let access = pair["access_token"].as_str().expect("a token").to_owned();
    let change = json!({ "current_password": "reset passphrase two", "new_password": "changed passphrase three" });
    assert_eq!(
        server.post("/api/v1/auth/password/change", Some(&access), &change).await.status(),
        StatusCode::NO_CONTENT
    );
    let path = format!("/api/v1/users/{id}");
    server.patch(&path, Some(&admin), &json!({ "role": "admin", "name": "Promoted" })).await;
    server.delete(&format!("{path}/sessions"), Some(&admin)).await;
    assert_eq!(server.delete(&path, Some(&admin)).await.status(), StatusCode::NO_CONTENT);

    let created = wait_entry(&server, "user.created", is_about).await;
    assert_eq!(created["detail"]["via"], "register");
    let succeeded =
        wait_entry(&server, "login.succeeded", |entry| is_about(entry) && entry["user_agent"] == "AuditTest/1.0").await;
    assert_eq!((&succeeded["ip"], &succeeded["outcome"]), (&json!("127.0.0.1"), &json!("success")));
    let failed = wait_entry(&server, "login.failed", is_about).await;
    assert_eq!((&failed["outcome"], &failed["detail"]["reason"]), (&json!("failure"), &json!("invalid_credentials")));
    wait_entry(&server, "login.failed", |entry| entry["user_id"].is_null()).await;
    wait_entry(&server, "account.locked", is_about).await;
    wait_entry(&server, "password.reset", is_about).await;
    wait_entry(&server, "password.changed", |entry| is_about(entry) && entry["outcome"] == "success").await;
    wait_entry(&server, "session.revoked", |entry| is_about(entry) && entry["detail"]["reason"] == "logout").await;
    wait_entry(&server, "session.revoked", |entry| is_about(entry) && entry["detail"]["all"] == true).await;
    let updated = wait_entry(&server, "user.updated", is_about).await;
    assert_eq!(
        (&updated["detail"]["fields"], &updated["actor_id"]),
        (&json!(["name", "role"]), &json!(server.admin.id))
    );
    wait_entry(&server, "user.deleted", is_about).await;

    // Filters: by user (subject or actor), by time; an unknown action is refused.
    let about_user = entries(&server, &format!("&user_id={id}")).await;
    assert!(about_user.iter().all(|entry| entry["user_id"] == id.as_str() || entry["actor_id"] == id.as_str()));
    assert!(about_user.len() >= 10, "{about_user:?}");
    let since = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    assert!(entries(&server, &format!("&since={}", since.to_rfc3339().replace('+', "%2B"))).await.is_empty());
    let bad = server.get("/api/v1/audit?action=login.hacked", Some(&admin)).await;
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    // Nothing secret anywhere in the log.
    let everything = serde_json::to_string(&entries(&server, "").await).expect("json");
    let mut secrets = vec![
        PASSWORD,
        "typed-secret-xyz",
        "nobody-here@example.com",
        "reset passphrase two",
        "changed passphrase three",
        reset_token.as_str(),
        refresh.as_str(),
        access.as_str(),
    ];
    secrets.extend(wrong_passwords);
    for secret in secrets {
        assert!(!everything.contains(secret), "{secret:?} is in the audit log");
    }
    assert!(!everything.contains("argon2"), "a hash is in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_read_the_audit_log() {
    let server = start().await;
    let user = server.account("curious@example.com").await;
    assert_problem(server.get("/api/v1/audit", Some(&user.access)).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_problem(server.get("/api/v1/audit", None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let own = format!("/api/v1/audit?user_id={}", user.id);
    assert_problem(server.get(&own, Some(&user.access)).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(server.get("/api/v1/audit", Some(&server.admin.access)).await.status(), StatusCode::OK);
}
