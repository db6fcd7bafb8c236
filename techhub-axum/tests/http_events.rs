//! `GET /api/v1/events` with a real WebSocket client: authentication by query or first message, refusals,
//! subscriptions, per-owner filtering, live job progress, and a slow client closed with 1013 while another
//! keeps receiving.

mod common;

use std::time::Duration;

use common::{BLOCK, ECHO, Options, PATIENCE, body, close_code, next_json, send_json, start, start_with, until};
use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use techhub_axum::HttpConfig;
use techhub_core::Actor;
use techhub_core::events::EventKind;
use techhub_core::model::{NewJob, UserId};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

/// A queued job owned by `user` (through the core), announced as `job.queued`.
async fn owned_job(server: &common::Server, user: &str) -> String {
    let owner: UserId = user.parse().expect("a user id");
    let spec = NewJob::new(ECHO, json!({})).created_by(owner).run_at(chrono::Utc::now() + Duration::from_secs(3600));
    server.hub.jobs().enqueue(&Actor::System, spec).await.expect("enqueued").id.to_string()
}

fn about(event: &Value, job: &str) -> bool {
    event["data"]["job_id"] == job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_authenticates_by_query_or_by_first_message() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let user = server.account("ws@example.com").await;

    let mut by_query = server.events(&user.access).await;
    let (mut by_message, _) = tokio_tungstenite::connect_async(server.events_url(None)).await.expect("connects");
    send_json(&mut by_message, &json!({ "type": "auth", "token": user.access })).await;
    assert_eq!(next_json(&mut by_message).await, json!({ "type": "authenticated" }));

    for socket in [&mut by_query, &mut by_message] {
        send_json(socket, &json!({ "type": "subscribe", "topics": ["jobs"] })).await;
        // (The second socket also got the first socket's job, before its acknowledgement.)
        let (ack, _) = until(socket, |message| message["type"] == "subscribed").await;
        assert_eq!((&ack["topics"], &ack["ids"]), (&json!(["jobs"]), &Value::Null));
        let job = owned_job(&server, &user.id).await;
        let (event, _) = until(socket, |event| about(event, &job)).await;
        assert_eq!((&event["type"], &event["topic"]), (&json!("job.queued"), &json!("jobs")), "{event}");
        let keys: Vec<&String> = event.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["at", "data", "seq", "topic", "type"]);

        // Protocol slips are answered, not fatal.
        send_json(socket, &json!({ "type": "auth", "token": user.access })).await;
        assert_eq!(next_json(socket).await["type"], "error");
        socket.send(Message::text("not json")).await.expect("sent");
        assert_eq!(next_json(socket).await["type"], "error");
        send_json(socket, &json!({ "type": "subscribe", "topics": ["nonsense"] })).await;
        assert_eq!(next_json(socket).await["type"], "error");
    }
    assert!(server.metric("techhub_ws_clients").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_or_right_after_the_upgrade() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    for token in ["garbage", "a.b.c"] {
        match tokio_tungstenite::connect_async(server.events_url(Some(token))).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
                let text = String::from_utf8(response.body().clone().unwrap_or_default()).expect("utf-8");
                let problem: Value = serde_json::from_str(&text).expect("a problem body");
                assert_eq!(problem["code"], "token_invalid");
            }
            other => panic!("a bad token in the query must be refused with 401, got {other:?}"),
        }
    }
    // The same over plain HTTP: a 401 problem with WWW-Authenticate.
    let response = server.get("/api/v1/events?access_token=garbage", None).await;
    common::assert_problem(response, StatusCode::UNAUTHORIZED, "token_invalid").await;

    let first_messages = [
        Message::text(json!({ "type": "auth", "token": "garbage" }).to_string()),
        Message::text(json!({ "type": "subscribe", "topics": ["jobs"] }).to_string()),
        Message::text("hello"),
        Message::binary(server.admin.access.clone().into_bytes()),
    ];
    for first in first_messages {
        let (mut socket, _) = tokio_tungstenite::connect_async(server.events_url(None)).await.expect("upgrades");
        socket.send(first.clone()).await.expect("sent");
        assert_eq!(close_code(&mut socket).await, 1008, "after {first:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_receive_events_of_what_they_own_and_admins_everything() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let alice = server.account("alice@example.com").await;
    let bob = server.account("bob@example.com").await;
    let mut alices = server.events(&alice.access).await;
    let mut bobs = server.events(&bob.access).await;
    let mut admins = server.events(&server.admin.access).await;

    let bob_job = owned_job(&server, &bob.id).await;
    let alice_job = owned_job(&server, &alice.id).await;
    // The bus is ordered: had Alice been sent Bob's event, it would come before her own.
    assert!(about(&next_json(&mut alices).await, &alice_job), "alice got another user's event first");
    assert!(about(&next_json(&mut bobs).await, &bob_job));
    let (_, before) = until(&mut admins, |event| about(event, &alice_job)).await;
    assert!(before.iter().any(|event| about(event, &bob_job)), "the admin sees bob's job too: {before:?}");

    // Her own account's changes reach Alice only.
    let renamed = server.patch("/api/v1/users/me", Some(&alice.access), &json!({ "name": "Alice A." })).await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let event = next_json(&mut alices).await;
    assert_eq!((&event["type"], &event["topic"]), (&json!("user.updated"), &json!("users")), "{event}");
    let sentinel = owned_job(&server, &bob.id).await;
    assert!(about(&next_json(&mut bobs).await, &sentinel), "bob got alice's account event");

    // A subscription narrows to topics and ids.
    let wanted = owned_job(&server, &alice.id).await;
    send_json(&mut alices, &json!({ "type": "subscribe", "topics": ["jobs"], "ids": [wanted] })).await;
    let (ack, _) = until(&mut alices, |message| message["type"] == "subscribed").await;
    assert_eq!(ack["ids"], json!([wanted]));
    let other = owned_job(&server, &alice.id).await;
    server.post(&format!("/api/v1/jobs/{other}/cancel"), Some(&alice.access), &json!({})).await;
    server.post(&format!("/api/v1/jobs/{wanted}/cancel"), Some(&alice.access), &json!({})).await;
    // (The queued event of `wanted` may come before or after the acknowledgement: it raced the subscribe.)
    let (event, before) = until(&mut alices, |event| event["type"] == "job.cancelled").await;
    assert!(about(&event, &wanted), "{event}");
    assert!(before.iter().all(|event| about(event, &wanted)), "only the subscribed job: {before:?}");
    send_json(&mut alices, &json!({ "type": "subscribe", "topics": ["users"] })).await;
    until(&mut alices, |message| message["type"] == "subscribed").await;
    owned_job(&server, &alice.id).await;
    server.patch("/api/v1/users/me", Some(&alice.access), &json!({ "name": "Alice B." })).await;
    assert_eq!(next_json(&mut alices).await["type"], "user.updated", "job events were filtered out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_progress_is_pushed_live() {
    let server = start().await;
    let token = server.admin.access.clone();
    let mut socket = server.events(&token).await;
    let response = server.post("/api/v1/jobs", Some(&token), &json!({ "kind": BLOCK })).await;
    let id = body(response).await["job_id"].as_str().expect("job_id").to_owned();
    let mut seen = Vec::new();
    let (progress, before) = until(&mut socket, |event| event["type"] == "job.progress" && about(event, &id)).await;
    seen.extend(before.iter().filter(|event| about(event, &id)).map(|event| event["type"].clone()));
    assert_eq!(seen, [json!("job.queued"), json!("job.started")]);
    assert_eq!(progress["data"], json!({ "job_id": id, "percent": 10, "message": "waiting to be cancelled" }));
    let cancel = server.post(&format!("/api/v1/jobs/{id}/cancel"), Some(&token), &json!({})).await;
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let (cancelled, _) = until(&mut socket, |event| about(event, &id) && event["type"] != "job.progress").await;
    assert_eq!((&cancelled["type"], &cancelled["data"]["state"]), (&json!("job.cancelled"), &json!("cancelled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_closed_with_1013_while_others_keep_receiving() {
    let http = HttpConfig { event_buffer: 4, ..HttpConfig::default() };
    let server = start_with(Options { http, workers: false, ..Options::default() }).await;
    let token = server.admin.access.clone();

    // The slow client: a small receive buffer, and it never reads past its acknowledgement.
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("buffer size");
    let stream = tcp.connect(server.addr).await.expect("connects");
    let (mut slow, _) =
        tokio_tungstenite::client_async(server.events_url(Some(&token)), stream).await.expect("upgrades");
    assert_eq!(next_json(&mut slow).await["type"], "authenticated");
    let mut healthy = server.events(&token).await;

    let closed_before = server.metric("techhub_ws_closed_slow_total").await;
    let padding = "x".repeat(64 * 1024);
    let publish = |n: u64| {
        server.hub.events().publish(
            server.hub.now(),
            EventKind::JobProgress,
            Uuid::new_v4(),
            None,
            json!({ "n": n, "padding": padding }),
        )
    };
    // Publish at the healthy client's pace until the server gives up on the slow one.
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        n += 1;
        publish(n);
        let event = next_json(&mut healthy).await;
        assert_eq!(event["data"]["n"], n, "the healthy client receives every event, in order");
        if n % 8 == 0 && server.metric("techhub_ws_closed_slow_total").await > closed_before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline && n < 2_000, "the slow client was never closed");
    }
    for more in n + 1..=n + 3 {
        publish(more);
        assert_eq!(next_json(&mut healthy).await["data"]["n"], more, "still served after the slow client's end");
    }
    // Once the slow client reads again, what was buffered drains and the close frame follows.
    assert_eq!(close_code(&mut slow).await, 1013);
}

/// Waits for the server to end the socket, failing if it sends anything but a close (or the connection drops).
async fn ends_without_reply(ws: &mut common::Ws) {
    use futures_util::StreamExt;
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(text))) => panic!("expected the socket to end, got {text}"),
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the socket stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_closes_with_1008_after_logout_revocation_disable_and_delete() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;

    let logged_out = server.account("out@example.com").await;
    let mut socket = server.events(&logged_out.access).await;
    let response = server.post("/api/v1/auth/logout", None, &json!({ "refresh_token": logged_out.refresh })).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut socket).await, 1008, "after logout");

    let revoked = server.account("revoked@example.com").await;
    let mut socket = server.events(&revoked.access).await;
    let id: UserId = revoked.id.parse().expect("id");
    server.hub.auth().revoke_all_sessions(&Actor::System, id).await.expect("revoked");
    assert_eq!(close_code(&mut socket).await, 1008, "after revocation");

    let disabled = server.account("disabled@example.com").await;
    let mut socket = server.events(&disabled.access).await;
    let path = format!("/api/v1/users/{}", disabled.id);
    let response = server.patch(&path, Some(&server.admin.access), &json!({ "active": false })).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(close_code(&mut socket).await, 1008, "after disabling");

    let deleted = server.account("deleted@example.com").await;
    let mut socket = server.events(&deleted.access).await;
    let response = server.delete(&format!("/api/v1/users/{}", deleted.id), Some(&server.admin.access)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut socket).await, 1008, "after deletion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_admin_stops_receiving_other_users_events_at_once() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let second = server.account("second-admin@example.com").await;
    let other = server.account("other@example.com").await;
    let path = format!("/api/v1/users/{}", second.id);
    let response = server.patch(&path, Some(&server.admin.access), &json!({ "role": "admin" })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut socket = server.events(&second.access).await;
    let seen = owned_job(&server, &other.id).await;
    let (_, _) = until(&mut socket, |event| about(event, &seen)).await;

    let response = server.patch(&path, Some(&server.admin.access), &json!({ "role": "user" })).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Straight after the demotion: the other user's job first, then the demoted user's own.
    let hidden = owned_job(&server, &other.id).await;
    let own = owned_job(&server, &second.id).await;
    let (_, before) = until(&mut socket, |event| about(event, &own)).await;
    assert!(!before.iter().any(|event| about(event, &hidden)), "a demoted admin still saw another's job: {before:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_closes_with_1008_when_its_access_token_expires() {
    let clock = techhub_core::clock::ManualClock::new(chrono::Utc::now());
    let server = start_with(Options { clock: Some(clock.clone()), workers: false, ..Options::default() }).await;
    let user = server.account("expiring@example.com").await;
    let mut socket = server.events(&user.access).await;
    // Just past the 15-minute lifetime, still inside the 5 s leeway plain requests get.
    clock.advance(Duration::from_secs(15 * 60 + 1));
    assert_eq!(close_code(&mut socket).await, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_client_message_ends_the_socket() {
    let server = start_with(Options { workers: false, ..Options::default() }).await;
    let mut socket = server.events(&server.admin.access).await;
    // A well-formed subscription, only far larger than anything this protocol needs.
    let ids: Vec<Uuid> = (0..400).map(|_| Uuid::new_v4()).collect();
    send_json(&mut socket, &json!({ "type": "subscribe", "topics": ["jobs"], "ids": ids })).await;
    ends_without_reply(&mut socket).await;

    // Before authenticating too.
    let (mut anonymous, _) = tokio_tungstenite::connect_async(server.events_url(None)).await.expect("connects");
    let padding = "x".repeat(64 * 1024);
    let result = anonymous.send(Message::text(json!({ "type": "auth", "token": padding }).to_string())).await;
    if result.is_ok() {
        ends_without_reply(&mut anonymous).await;
    }
}
