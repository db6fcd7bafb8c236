//! `/api/v1/auth/*` over a real socket: sign-up, sign-in, refresh rotation and replay, logout, password
//! forgot / reset / change, email verification, the 401 family, lockout and the per-address rate limit.

mod common;

use std::time::Duration;

use common::{Options, PASSWORD, assert_problem, assert_security_headers, body, header, link_token, start, start_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use techhub_axum::HttpConfig;
use techhub_core::clock::ManualClock;

fn manual_clock() -> ManualClock {
    ManualClock::new(chrono::Utc::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_creates_a_user_with_its_location_and_no_secret() {
    let server = start().await;
    let request = json!({ "email": "  New.User@Example.com ", "password": PASSWORD, "name": "New User" });
    let response = server.post("/api/v1/auth/register", None, &request).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_security_headers(response.headers());
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    let location = header(&response, "location").expect("a Location").to_owned();
    let text = response.text().await.expect("body");
    assert!(!text.contains("password") && !text.contains("argon2") && !text.contains("hash"), "{text}");
    let user: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(location, format!("/api/v1/users/{}", user["id"].as_str().expect("an id")));
    assert_eq!(
        (&user["email"], &user["name"], &user["role"], &user["active"], &user["email_verified"]),
        (&json!("new.user@example.com"), &json!("New User"), &json!("user"), &json!(true), &json!(false))
    );
    for field in ["created_at", "updated_at"] {
        let at = user[field].as_str().expect("a timestamp");
        chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|_| panic!("{field} is RFC 3339: {at}"));
    }
    let keys: Vec<&String> = user.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["active", "created_at", "email", "email_verified", "id", "name", "role", "updated_at"]);

    // The Location is the user, readable by the user itself.
    let pair = server.login("new.user@example.com", PASSWORD).await;
    let token = pair["access_token"].as_str().expect("token");
    let me = server.get(&location, Some(token)).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(body(me).await["id"], user["id"]);

    // The same address, spelled differently, is taken.
    let again = json!({ "email": "NEW.USER@example.com", "password": PASSWORD });
    assert_problem(server.post("/api/v1/auth/register", None, &again).await, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refuses_bad_input_with_the_right_codes() {
    let server = start().await;
    let path = "/api/v1/auth/register";
    for (request, field) in [
        (json!({ "email": "a@example.com", "password": "short" }), "password"),
        (json!({ "email": "a@example.com", "password": "a@example.com" }), "password"),
        (json!({ "email": "not an email", "password": PASSWORD }), "email"),
        (json!({ "email": "a@example.com", "password": PASSWORD, "role": "admin" }), "role"),
        (json!({ "email": "a@example.com", "password": PASSWORD, "email_verified": true }), "email_verified"),
        (json!({ "email": "a@example.com", "password": PASSWORD, "name": 5 }), "name"),
        (json!({ "email": "a@example.com" }), "password"),
    ] {
        let problem = assert_problem(
            server.post(path, None, &request).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let errors = problem["errors"].as_array().unwrap_or_else(|| panic!("no errors for {request}: {problem}"));
        assert!(
            errors.iter().any(|error| error["field"] == field),
            "{request}: expected an error on {field}: {problem}"
        );
    }
    let very_long = "x".repeat(1025);
    let request = json!({ "email": "a@example.com", "password": very_long });
    assert_problem(server.post(path, None, &request).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
        .await;

    // Not JSON, not JSON at all, or not said to be JSON.
    let broken = server.post_raw(path, None, "application/json", r#"{"email": "a@example.com", "#.into()).await;
    assert_problem(broken, StatusCode::BAD_REQUEST, "malformed_body").await;
    let plain = server.post_raw(path, None, "text/plain", r#"{"email":"a@example.com","password":"x"}"#.into()).await;
    assert_problem(plain, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    let bare = server.request(reqwest::Method::POST, path, None).body("{}").send().await.expect("sent");
    assert_problem(bare, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    // Nothing was created by any of these.
    let email = techhub_core::model::Email::parse("a@example.com").expect("an email");
    assert!(server.hub.storage().get_user_by_email(&email).await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_a_token_pair_and_never_says_which_part_was_wrong() {
    let server = start().await;
    let account = server.account("ada@example.com").await;
    let response =
        server.post("/api/v1/auth/login", None, &json!({ "email": "ADA@example.com", "password": PASSWORD })).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert_security_headers(response.headers());
    let pair = body(response).await;
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    assert_eq!(pair["user"]["id"], account.id.as_str());
    assert!(pair["access_token"].as_str().is_some_and(|token| token.split('.').count() == 3), "a JWT");
    assert!(pair["refresh_token"].as_str().is_some_and(|token| token.len() >= 32));
    let me = server.get("/api/v1/users/me", pair["access_token"].as_str()).await;
    assert_eq!(body(me).await["email"], "ada@example.com");

    let wrong_password = server
        .post("/api/v1/auth/login", None, &json!({ "email": "ada@example.com", "password": "not the password" }))
        .await;
    assert_eq!(header(&wrong_password, "cache-control"), Some("no-store"));
    let wrong_password = assert_problem(wrong_password, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let wrong_email =
        server.post("/api/v1/auth/login", None, &json!({ "email": "nobody@example.com", "password": PASSWORD })).await;
    let wrong_email = assert_problem(wrong_email, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(wrong_password, wrong_email, "the two failures must be indistinguishable");
    let not_an_email =
        server.post("/api/v1/auth/login", None, &json!({ "email": "nobody", "password": PASSWORD })).await;
    assert_eq!(assert_problem(not_an_email, StatusCode::UNAUTHORIZED, "invalid_credentials").await, wrong_email);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_lock_the_account_with_429() {
    let server = start().await;
    server.account("target@example.com").await;
    let wrong = json!({ "email": "target@example.com", "password": "guess guess guess" });
    for _ in 0..5 {
        let response = server.post("/api/v1/auth/login", None, &wrong).await;
        assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // Locked: even the right password is refused for now, with a hint of when to come back.
    for password in ["guess guess guess", PASSWORD] {
        let request = json!({ "email": "target@example.com", "password": password });
        let response = server.post("/api/v1/auth/login", None, &request).await;
        assert!(header(&response, "retry-after").and_then(|value| value.parse::<u64>().ok()).is_some_and(|s| s > 0));
        assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    }
    // Other accounts are not affected.
    server.login(common::ADMIN_EMAIL, PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_answers_429_with_retry_after() {
    let http = HttpConfig { auth_rate_limit_per_minute: 3, ..HttpConfig::default() };
    let server = start_with(Options { http, workers: false, ..Options::default() }).await;
    let wrong = json!({ "email": "nobody@example.com", "password": PASSWORD });
    for _ in 0..3 {
        let response = server.post("/api/v1/auth/login", None, &wrong).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Any auth route, whatever the account: the budget is the address's.
    for (path, request) in [
        ("/api/v1/auth/login", json!({ "email": common::ADMIN_EMAIL, "password": PASSWORD })),
        ("/api/v1/auth/register", json!({ "email": "new@example.com", "password": PASSWORD })),
        ("/api/v1/auth/password/forgot", json!({ "email": "new@example.com" })),
    ] {
        let response = server.post(path, None, &request).await;
        let retry_after = header(&response, "retry-after").expect("Retry-After").to_owned();
        assert_security_headers(response.headers());
        assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        let seconds: u64 = retry_after.parse().expect("Retry-After is a number of seconds");
        assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
    }
    // Other routes are not limited.
    assert_eq!(server.get("/health", None).await.status(), StatusCode::OK);
    assert_eq!(server.get("/api/v1/users/me", Some(&server.admin.access)).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_replaying_a_rotated_token_ends_the_whole_session() {
    let clock = manual_clock();
    let server = start_with(Options { clock: Some(clock.clone()), workers: false, ..Options::default() }).await;
    server.account("eve@example.com").await;
    let first = server.login("eve@example.com", PASSWORD).await;
    let refresh = |token: &Value| json!({ "refresh_token": token.as_str().expect("a token") });

    let response = server.post("/api/v1/auth/refresh", None, &refresh(&first["refresh_token"])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    let second = body(response).await;
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!((&second["token_type"], &second["user"]["email"]), (&json!("Bearer"), &json!("eve@example.com")));

    // The old token is dead (a replay within the grace window is refused, the session lives on).
    let replay = server.post("/api/v1/auth/refresh", None, &refresh(&first["refresh_token"])).await;
    assert_problem(replay, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let response = server.post("/api/v1/auth/refresh", None, &refresh(&second["refresh_token"])).await;
    assert_eq!(response.status(), StatusCode::OK, "a race between two tabs does not end the session");
    let third = body(response).await;

    // A replay after the grace window is theft: the whole family is revoked.
    clock.advance(Duration::from_secs(11));
    let replay = server.post("/api/v1/auth/refresh", None, &refresh(&second["refresh_token"])).await;
    assert_problem(replay, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let newest = server.post("/api/v1/auth/refresh", None, &refresh(&third["refresh_token"])).await;
    assert_problem(newest, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let access = server.get("/api/v1/users/me", third["access_token"].as_str()).await;
    assert_problem(access, StatusCode::UNAUTHORIZED, "token_invalid").await;

    // Garbage and missing tokens.
    let garbage = server.post("/api/v1/auth/refresh", None, &json!({ "refresh_token": "garbage" })).await;
    assert_problem(garbage, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let missing = server.post("/api/v1/auth/refresh", None, &json!({})).await;
    assert_problem(missing, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    server.account("leo@example.com").await;
    let pair = server.login("leo@example.com", PASSWORD).await;
    let token = json!({ "refresh_token": pair["refresh_token"] });
    let response = server.post("/api/v1/auth/logout", None, &token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert!(response.bytes().await.expect("body").is_empty());
    let refreshed = server.post("/api/v1/auth/refresh", None, &token).await;
    assert_problem(refreshed, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let access = server.get("/api/v1/users/me", pair["access_token"].as_str()).await;
    assert_problem(access, StatusCode::UNAUTHORIZED, "token_invalid").await;
    // Logging out again, or with nonsense, still answers 204 (nothing to learn from it).
    assert_eq!(server.post("/api/v1/auth/logout", None, &token).await.status(), StatusCode::NO_CONTENT);
    let nonsense = json!({ "refresh_token": "nonsense" });
    assert_eq!(server.post("/api/v1/auth/logout", None, &nonsense).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_invalid_and_expired_tokens_are_401_with_www_authenticate() {
    let clock = manual_clock();
    let server = start_with(Options { clock: Some(clock.clone()), workers: false, ..Options::default() }).await;
    let path = "/api/v1/users/me";
    assert_problem(server.get(path, None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let basic = server.request(reqwest::Method::GET, path, None).header("authorization", "Basic YWRtaW46YWRtaW4=");
    assert_problem(basic.send().await.expect("sent"), StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_problem(server.get(path, Some("not.a.jwt")).await, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let mut tampered = server.admin.access.clone();
    tampered.pop();
    tampered.push(if server.admin.access.ends_with('A') { 'B' } else { 'A' });
    assert_problem(server.get(path, Some(&tampered)).await, StatusCode::UNAUTHORIZED, "token_invalid").await;

    assert_eq!(server.get(path, Some(&server.admin.access)).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(16 * 60));
    let expired = server.get(path, Some(&server.admin.access)).await;
    assert_problem(expired, StatusCode::UNAUTHORIZED, "token_expired").await;
    // The events socket refuses it too, before upgrading.
    let expired = server.get(&format!("/api/v1/events?access_token={}", server.admin.access), None).await;
    assert_problem(expired, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_with_the_emailed_token_once() {
    let server = start().await;
    let account = server.account("kim@example.com").await;
    for email in ["kim@example.com", "nobody@example.com"] {
        let response = server.post("/api/v1/auth/password/forgot", None, &json!({ "email": email })).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "the same answer whether {email} exists or not");
        assert_eq!(header(&response, "cache-control"), Some("no-store"));
    }
    let mail = server.wait_mail("kim@example.com", "Reset your TechHub password").await;
    let token = link_token(&mail.text, "reset-password");

    let weak = json!({ "token": token, "new_password": "kim@example.com" });
    let refused = server.post("/api/v1/auth/password/reset", None, &weak).await;
    assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let reset = json!({ "token": token, "new_password": "a brand new passphrase" });
    let response = server.post("/api/v1/auth/password/reset", None, &reset).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let old = json!({ "email": "kim@example.com", "password": PASSWORD });
    assert_problem(
        server.post("/api/v1/auth/login", None, &old).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    server.login("kim@example.com", "a brand new passphrase").await;
    // Every earlier session ended; the link works once.
    let earlier = server.post("/api/v1/auth/refresh", None, &json!({ "refresh_token": account.refresh })).await;
    assert_problem(earlier, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let again = json!({ "token": token, "new_password": "yet another passphrase" });
    assert_problem(
        server.post("/api/v1/auth/password/reset", None, &again).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
    let forged = json!({ "token": "forged", "new_password": "yet another passphrase" });
    assert_problem(
        server.post("/api/v1/auth/password/reset", None, &forged).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
    assert!(server.outbox.last_to("nobody@example.com").is_none(), "nothing is mailed to an unknown address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let server = start().await;
    let other_session = server.account("max@example.com").await;
    let this_session = server.login("max@example.com", PASSWORD).await;
    let access = this_session["access_token"].as_str().expect("token");
    let path = "/api/v1/auth/password/change";

    let anonymous = server.post(path, None, &json!({ "current_password": PASSWORD, "new_password": "x" })).await;
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong = json!({ "current_password": "not my password", "new_password": "a brand new passphrase" });
    assert_problem(server.post(path, Some(access), &wrong).await, StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    let weak = json!({ "current_password": PASSWORD, "new_password": "short" });
    assert_problem(server.post(path, Some(access), &weak).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
        .await;
    let change = json!({ "current_password": PASSWORD, "new_password": "a brand new passphrase" });
    let response = server.post(path, Some(access), &change).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "cache-control"), Some("no-store"));

    let other = server.post("/api/v1/auth/refresh", None, &json!({ "refresh_token": other_session.refresh })).await;
    assert_problem(other, StatusCode::UNAUTHORIZED, "token_invalid").await;
    assert_problem(
        server.get("/api/v1/users/me", Some(&other_session.access)).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
    let this =
        server.post("/api/v1/auth/refresh", None, &json!({ "refresh_token": this_session["refresh_token"] })).await;
    assert_eq!(this.status(), StatusCode::OK, "this session lives on");
    let old = json!({ "email": "max@example.com", "password": PASSWORD });
    assert_problem(
        server.post("/api/v1/auth/login", None, &old).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    server.login("max@example.com", "a brand new passphrase").await;
    server.wait_mail("max@example.com", "password was changed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_is_verified_with_the_emailed_token_once() {
    let server = start().await;
    let request = json!({ "email": "vera@example.com", "password": PASSWORD });
    assert_eq!(server.post("/api/v1/auth/register", None, &request).await.status(), StatusCode::CREATED);
    server.wait_mail("vera@example.com", "Welcome to TechHub").await;
    let mail = server.wait_mail("vera@example.com", "Confirm your email address").await;
    let token = link_token(&mail.text, "verify-email");

    let response = server.post("/api/v1/auth/verify-email", None, &json!({ "token": token })).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let pair = server.login("vera@example.com", PASSWORD).await;
    assert_eq!(pair["user"]["email_verified"], true);
    let again = server.post("/api/v1/auth/verify-email", None, &json!({ "token": token })).await;
    assert_problem(again, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let forged = server.post("/api/v1/auth/verify-email", None, &json!({ "token": "forged" })).await;
    assert_problem(forged, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let unknown =
        server.post("/api/v1/auth/verify-email", None, &json!({ "token": "x", "email": "vera@example.com" })).await;
    assert_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_change_voids_the_links_sent_to_the_old_address() {
    let server = start().await;
    let user = server.account("mover@example.com").await;
    let verify_mail = server.wait_mail("mover@example.com", "Confirm your email address").await;
    let verify_token = link_token(&verify_mail.text, "verify-email");
    let forgot = server.post("/api/v1/auth/password/forgot", None, &json!({ "email": "mover@example.com" })).await;
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let reset_mail = server.wait_mail("mover@example.com", "Reset your TechHub password").await;
    let reset_token = link_token(&reset_mail.text, "reset-password");

    let path = format!("/api/v1/users/{}", user.id);
    let moved = server.patch(&path, Some(&server.admin.access), &json!({ "email": "moved@example.com" })).await;
    assert_eq!(moved.status(), StatusCode::OK);
    assert_eq!(body(moved).await["email_verified"], false);

    let reset = json!({ "token": reset_token, "new_password": "a takeover passphrase" });
    let response = server.post("/api/v1/auth/password/reset", None, &reset).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "token_invalid").await;
    let response = server.post("/api/v1/auth/verify-email", None, &json!({ "token": verify_token })).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "token_invalid").await;

    // The new address gets its own link, which works.
    let mail = server.wait_mail("moved@example.com", "Confirm your email address").await;
    let token = link_token(&mail.text, "verify-email");
    let response = server.post("/api/v1/auth/verify-email", None, &json!({ "token": token })).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.login("moved@example.com", PASSWORD).await["user"]["email_verified"], true);
}

/// Signs in as nobody from `127.0.0.1`, claiming to forward for `forwarded_for`: the status.
async fn login_forwarded(server: &common::Server, forwarded_for: &str) -> StatusCode {
    let wrong = json!({ "email": "nobody@example.com", "password": PASSWORD });
    let request = server.request(reqwest::Method::POST, "/api/v1/auth/login", None).json(&wrong);
    request.header("x-forwarded-for", forwarded_for).send().await.expect("sent").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_buy_a_fresh_budget() {
    let http = HttpConfig { auth_rate_limit_per_minute: 2, ..HttpConfig::default() };
    let server = start_with(Options { http, workers: false, ..Options::default() }).await;
    assert_eq!(login_forwarded(&server, "198.51.100.1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_forwarded(&server, "198.51.100.2").await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_forwarded(&server, "198.51.100.3").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let http = HttpConfig {
        auth_rate_limit_per_minute: 2,
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("a CIDR")],
        ..HttpConfig::default()
    };
    let server = start_with(Options { http, workers: false, ..Options::default() }).await;
    for _ in 0..2 {
        assert_eq!(login_forwarded(&server, "198.51.100.1").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login_forwarded(&server, "198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not held back; a spoofed left-most hop changes nothing.
    assert_eq!(login_forwarded(&server, "198.51.100.2").await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_forwarded(&server, "6.6.6.6, 198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS);
    // Two addresses of one IPv6 /64 share a budget.
    for _ in 0..2 {
        assert_eq!(login_forwarded(&server, "2001:db8:0:1::1").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(login_forwarded(&server, "2001:db8:0:1::ffff").await, StatusCode::TOO_MANY_REQUESTS);
}
