//! When storage stops answering, readiness says so (503 `degraded`), requests that need storage get 503
//! `unavailable`, liveness stays 200, and no answer shows internals (SQL, paths, library errors); once
//! storage is back, so is the service.
//!
//! The store is a SQLite file with the default options (its reader pool included) but a short busy timeout,
//! so the test is quick; another connection holds the write lock, so every write times out on it, as it would
//! behind a stuck process sharing the file, while reads still answer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use techhub_store_sqlite::{SqliteOptions, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_is_503_without_internals() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("down.db");
    let options = SqliteOptions { busy_timeout: Duration::from_millis(100), ..SqliteOptions::default() };
    let store = SqliteStore::open_with(&path, &options).expect("opens");
    let server = common::start_with(common::Options {
        store: Some(Arc::new(store)),
        workers: false,
        ..common::Options::default()
    })
    .await;
    let ready = server.get("/api/v1/system/health", None).await;
    assert_eq!(ready.status(), StatusCode::OK);

    // Hold the write lock from another connection, as another process would.
    let blocker = rusqlite::Connection::open(&path).expect("a second connection");
    blocker.execute_batch("BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS blocker (x);").expect("takes the write lock");

    let ready = server.get("/api/v1/system/health", None).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["storage"], "down", "{body}");

    let live = server.get("/health", None).await;
    assert_eq!(live.status(), StatusCode::OK, "liveness does not depend on storage");

    let registration = json!({ "email": "down@example.com", "password": "a long passphrase" });
    let response = server.post("/api/v1/auth/register", None, &registration).await;
    let problem = common::assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let export = server.post("/api/v1/users/export", Some(&server.admin.access), &json!({ "format": "csv" })).await;
    let export = common::assert_problem(export, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    for problem in [problem, export] {
        let text = problem.to_string().to_lowercase();
        for leak in ["sqlite", "database", "locked", "busy", ".db", "/tmp", "select", "insert", "rusqlite"] {
            assert!(!text.contains(leak), "{leak:?} leaked in {problem}");
        }
    }

    // Storage back: so is the service.
    blocker.execute_batch("COMMIT").expect("commit");
    drop(blocker);
    let response = server.post("/api/v1/auth/register", None, &registration).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let ready = server.get("/api/v1/system/health", None).await;
    assert_eq!(ready.status(), StatusCode::OK);
}
