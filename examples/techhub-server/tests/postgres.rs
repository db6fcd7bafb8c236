//! Several example servers on one PostgreSQL database (`TECHHUB_STORE=postgres://…`), as separate OS
//! processes: a job created through one runs on the other's workers and its events reach a WebSocket on the
//! first; a session ended through one is refused by the other; and a server whose database restarts reports
//! itself not ready (503) meanwhile and recovers by itself, losing nothing.
//!
//! The database server is the test harness's real PostgreSQL (`techhub_store_postgres::test_server`).

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::spawn_listening;
use futures_util::StreamExt;
use serde_json::{Value, json};
use techhub_store_postgres::test_server::TestServer;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "a shared signing secret of at least 32 bytes";
const ADMIN: &str = "admin@example.com";
const PASSWORD: &str = "a long admin passphrase";
/// How long a test waits for something that must happen (a failure, not a speed claim, when it does not).
const PATIENCE: Duration = Duration::from_secs(30);

/// A running server process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on the database at `url` (it keeps nothing in its directory) running `workers` workers.
fn start(url: &str, workers: usize) -> Server {
    let (child, address) = spawn_listening(
        common::server(&std::env::temp_dir())
            .env("TECHHUB_LOG", "error")
            .env("TECHHUB_STORE", url)
            .env("TECHHUB_JWT_SECRET", SECRET)
            .env("TECHHUB_WORKERS", workers.to_string())
            .env("TECHHUB_ADMIN_EMAIL", ADMIN)
            .env("TECHHUB_ADMIN_PASSWORD", PASSWORD)
            .stderr(Stdio::inherit()),
    );
    Server { child, base: format!("http://{address}") }
}

/// `GET path` on `server` as the holder of `access`, as JSON.
async fn get_json(http: &reqwest::Client, server: &Server, path: &str, access: &str) -> Value {
    let response = http.get(format!("{}{path}", server.base)).bearer_auth(access).send().await.expect("answers");
    response.json().await.expect("a JSON body")
}

async fn login(http: &reqwest::Client, server: &Server) -> Value {
    let response = http
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&json!({ "email": ADMIN, "password": PASSWORD }))
        .send()
        .await
        .expect("login answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a token pair")
}

async fn me(http: &reqwest::Client, server: &Server, access: &str) -> u16 {
    let response = http.get(format!("{}/api/v1/users/me", server.base)).bearer_auth(access).send().await;
    response.expect("answers").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_jobs_events_and_sessions() {
    let database = TestServer::shared().database().await;
    // The first runs no workers at all: every job it takes is run by the second.
    let front = start(database.url(), 0);
    let back = start(database.url(), 2);
    let http = reqwest::Client::new();
    let pair = login(&http, &front).await;
    let access = pair["access_token"].as_str().expect("an access token").to_owned();

    let events_url = format!("{}/api/v1/events?access_token={access}", front.base.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(events_url.as_str()).await.expect("the socket opens");

    let export = http
        .post(format!("{}/api/v1/users/export", front.base))
        .bearer_auth(&access)
        .json(&json!({ "format": "json" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(export.status(), 202);
    let job_id = export.json::<Value>().await.expect("json")["job_id"].as_str().expect("a job id").to_owned();

    // Its events, produced on the back server, reach the socket on the front one, in order.
    let mut kinds = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(message) = socket.next().await {
            let Ok(Message::Text(text)) = message else { continue };
            let event: Value = serde_json::from_str(text.as_str()).expect("an event");
            if event["data"]["job_id"] == json!(job_id) {
                let kind = event["type"].as_str().unwrap_or_default().to_owned();
                let done = kind == "job.succeeded";
                kinds.push(kind);
                if done {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the job's events on the front server stopped at {kinds:?}"));
    let started = kinds.iter().position(|kind| kind == "job.started").expect("job.started arrived");
    assert!(started < kinds.len() - 1, "started before it succeeded: {kinds:?}");
    let job = get_json(&http, &front, &format!("/api/v1/jobs/{job_id}"), &access).await;
    assert_eq!(job["state"], "succeeded", "{job}");

    // A session ended through one server is refused by the other on its next request.
    assert_eq!(me(&http, &back, &access).await, 200, "the back server accepts the front server's session");
    let logout = http
        .post(format!("{}/api/v1/auth/logout", front.base))
        .json(&json!({ "refresh_token": pair["refresh_token"] }))
        .send()
        .await
        .expect("answers");
    assert_eq!(logout.status(), 204);
    assert_eq!(me(&http, &back, &access).await, 401, "the back server refuses the ended session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_database_restarts_is_unready_meanwhile_and_recovers_by_itself() {
    if !techhub_store_postgres::test_server::can_start_private() {
        eprintln!("skipped: restarting the database needs PostgreSQL installed locally");
        return;
    }
    let postgres = TestServer::start_private();
    let database = postgres.database().await;
    let server = start(database.url(), 1);
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client, base: String| async move {
        match http.get(format!("{base}/api/v1/system/health")).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    };
    assert_eq!(ready(http.clone(), server.base.clone()).await, 200);
    let access = login(&http, &server).await["access_token"].as_str().expect("a token").to_owned();
    let before = get_json(&http, &server, "/api/v1/users/me", &access).await;

    postgres.stop();
    let until = |want: u16| {
        let (http, base) = (http.clone(), server.base.clone());
        async move {
            tokio::time::timeout(PATIENCE, async {
                while ready(http.clone(), base.clone()).await != want {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("readiness never became {want}"));
        }
    };
    until(503).await;
    postgres.start();
    until(200).await;

    // Nothing acknowledged was lost, sessions work again, and the workers run jobs again.
    let after = get_json(&http, &server, "/api/v1/users/me", &access).await;
    assert_eq!(after["id"], before["id"]);
    let export = http
        .post(format!("{}/api/v1/users/export", server.base))
        .bearer_auth(&access)
        .json(&json!({ "format": "csv" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(export.status(), 202);
    let job_id = export.json::<Value>().await.expect("json")["job_id"].as_str().expect("a job id").to_owned();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let job = get_json(&http, &server, &format!("/api/v1/jobs/{job_id}"), &access).await;
            if job["state"] == "succeeded" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a job enqueued after the restart runs");
}
