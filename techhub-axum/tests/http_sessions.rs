//! `/api/v1/users/{id}/sessions`: listing with user agent, address and `current`; revoking one or all, after
//! which the revoked access tokens stop working at the next request; nobody reads another user's sessions.

mod common;

use common::{Options, PASSWORD, assert_problem, body, start_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Signs in over HTTP as `email` with `user_agent`: the token pair.
async fn sign_in(server: &common::Server, email: &str, user_agent: &str) -> Value {
    let request = server
        .request(reqwest::Method::POST, "/api/v1/auth/login", None)
        .header("user-agent", user_agent)
        .json(&json!({ "email": email, "password": PASSWORD }));
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    body(response).await
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().expect("an access token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_with_their_client_and_revoked_one_or_all() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let alice = server.account("alice@example.com").await;
    let laptop = sign_in(&server, "alice@example.com", "Laptop/1.0").await;
    let phone = sign_in(&server, "alice@example.com", "Phone/2.0").await;
    let path = format!("/api/v1/users/{}/sessions", alice.id);

    let listed = server.get(&path, Some(access(&laptop))).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let sessions = body(listed).await;
    let sessions = sessions.as_array().expect("a list");
    assert_eq!(sessions.len(), 3, "the harness's sign-in and two over HTTP: {sessions:?}");
    let by_agent = |agent: &str| {
        sessions.iter().find(|session| session["user_agent"] == agent).unwrap_or_else(|| panic!("{agent} listed"))
    };
    assert_eq!(
        (&by_agent("Laptop/1.0")["ip"], &by_agent("Laptop/1.0")["current"]),
        (&json!("127.0.0.1"), &json!(true))
    );
    assert_eq!(by_agent("Phone/2.0")["current"], false);
    assert_eq!(sessions.iter().filter(|session| session["current"] == true).count(), 1);
    for session in sessions {
        let keys: Vec<&String> = session.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["current", "expires_at", "id", "ip", "refreshed_at", "started_at", "user_agent"]);
    }

    // Revoking the phone's session: its access token stops working at once, the laptop's does not.
    let phone_id = by_agent("Phone/2.0")["id"].as_str().expect("an id").to_owned();
    assert_eq!(server.get("/api/v1/users/me", Some(access(&phone))).await.status(), StatusCode::OK);
    let revoked = server.delete(&format!("{path}/{phone_id}"), Some(access(&laptop))).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let response = server.get("/api/v1/users/me", Some(access(&phone))).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "token_invalid").await;
    assert_eq!(server.get("/api/v1/users/me", Some(access(&laptop))).await.status(), StatusCode::OK);
    let again = server.delete(&format!("{path}/{phone_id}"), Some(access(&laptop))).await;
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;

    // Revoking all: the caller's own session included.
    let all = server.delete(&path, Some(access(&laptop))).await;
    assert_eq!(all.status(), StatusCode::NO_CONTENT);
    for token in [access(&laptop), alice.access.as_str()] {
        let response = server.get("/api/v1/users/me", Some(token)).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "token_invalid").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_read_or_revoke_another_users_sessions_but_an_admin_can() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let alice = server.account("alice@example.com").await;
    let mallory = server.account("mallory@example.com").await;
    let path = format!("/api/v1/users/{}/sessions", alice.id);

    assert_problem(server.get(&path, Some(&mallory.access)).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(server.delete(&path, Some(&mallory.access)).await, StatusCode::NOT_FOUND, "not_found").await;
    let listed = body(server.get(&path, Some(&server.admin.access)).await).await;
    let session_id = listed[0]["id"].as_str().expect("alice's session").to_owned();
    assert_eq!(listed[0]["current"], false, "the admin's own session is not alice's");
    let one = server.delete(&format!("{path}/{session_id}"), Some(&mallory.access)).await;
    assert_problem(one, StatusCode::NOT_FOUND, "not_found").await;
    // Alice's session survived every attempt.
    assert_eq!(server.get("/api/v1/users/me", Some(&alice.access)).await.status(), StatusCode::OK);
    assert_problem(server.get(&path, None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let by_admin = server.delete(&format!("{path}/{session_id}"), Some(&server.admin.access)).await;
    assert_eq!(by_admin.status(), StatusCode::NO_CONTENT);
    let response = server.get("/api/v1/users/me", Some(&alice.access)).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "token_invalid").await;
}
