//! Several OS processes opening one database file at the same moment all succeed, whether the file is new
//! (every process wants to create the schema) or older than the code (every process wants to migrate it),
//! and a file newer than the code is refused.
//!
//! The parent prepares the file, starts copies of this binary (the child side runs when `OPENER_DB` is set)
//! and lets them go together; each opens the store, writes a user, and prints `opened` or the error.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use techhub_core::model::{Email, Role, User};
use techhub_core::storage::{Storage, StoreError, UserStore};
use techhub_store_sqlite::SqliteStore;

const CHILD_ENV: &str = "OPENER_DB";
const GO_ENV: &str = "OPENER_GO";
const PROCESSES: usize = 4;
const ROUNDS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    match std::env::var_os(CHILD_ENV) {
        Some(db) => runtime.block_on(open_once(Path::new(&db), Path::new(&std::env::var_os(GO_ENV).expect("go")))),
        None => {
            for round in 0..ROUNDS {
                new_file_opened_together(round);
                older_file_opened_together(round);
            }
            newer_file_is_refused();
            println!("open_together: {ROUNDS} rounds of {PROCESSES} processes on a new and an older file: ok");
        }
    }
}

/// The child: waits for the go file, opens the store and writes through it.
async fn open_once(db: &Path, go: &Path) {
    while !go.exists() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let outcome = async {
        let store = SqliteStore::open(db)?;
        store.health().await?;
        let email = Email::parse(&format!("p{}@example.com", std::process::id())).expect("a valid address");
        store.insert_user(User::new(email, "Opener", Role::User, Utc::now()), vec![]).await?;
        Ok::<_, StoreError>(())
    }
    .await;
    match outcome {
        Ok(()) => println!("opened"),
        Err(error) => println!("failed: {error} ({:?})", std::error::Error::source(&error)),
    }
}

/// Starts the children on `db`, lets them go at once, and returns what each printed.
fn open_together(db: &Path) -> Vec<String> {
    let go = db.with_extension("go");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().expect("this executable"))
                .env(CHILD_ENV, db)
                .env(GO_ENV, &go)
                .stdout(Stdio::piped())
                .spawn()
                .expect("an opener starts")
        })
        .collect();
    // Give every child time to start and wait on the go file, so they really open together.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&go, b"go").expect("the go file");
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("the opener ends");
            assert!(output.status.success(), "an opener crashed: {output:?}");
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        })
        .collect()
}

fn schema_version(db: &Path) -> i64 {
    let connection = rusqlite::Connection::open(db).expect("a plain connection");
    connection.pragma_query_value(None, "user_version", |row| row.get(0)).expect("the version reads")
}

fn users(db: &Path) -> i64 {
    let connection = rusqlite::Connection::open(db).expect("a plain connection");
    connection.query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0)).expect("users count")
}

/// The schema version this code writes: what a fresh open leaves.
fn current_version() -> i64 {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("reference.db");
    drop(SqliteStore::open(&db).expect("opens"));
    schema_version(&db)
}

fn assert_all_opened(outcomes: &[String], what: &str) {
    assert!(outcomes.iter().all(|outcome| outcome == "opened"), "{what}: {outcomes:?}");
}

fn new_file_opened_together(round: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("new.db");
    assert_all_opened(&open_together(&db), &format!("a new file, round {round}"));
    assert_eq!(schema_version(&db), current_version());
    assert_eq!(users(&db), PROCESSES as i64, "every process wrote its user");
}

/// A file one version behind, holding data: every process migrates it at once; the data stays.
fn older_file_opened_together(round: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("older.db");
    let current = current_version();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(&db).expect("opens");
        let email = Email::parse("before@example.com").expect("a valid address");
        store.insert_user(User::new(email, "Before", Role::User, Utc::now()), vec![]).await.expect("insert works");
    });
    let connection = rusqlite::Connection::open(&db).expect("a plain connection");
    connection.pragma_update(None, "user_version", current - 1).expect("the version is set back");
    drop(connection);

    assert_all_opened(&open_together(&db), &format!("an older file, round {round}"));
    assert_eq!(schema_version(&db), current);
    assert_eq!(users(&db), PROCESSES as i64 + 1, "the user written before the migration is kept");
}

fn newer_file_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("newer.db");
    drop(SqliteStore::open(&db).expect("opens"));
    let newer = current_version() + 1;
    rusqlite::Connection::open(&db)
        .expect("a plain connection")
        .pragma_update(None, "user_version", newer)
        .expect("set");
    let error = SqliteStore::open(&db).expect_err("a newer schema is refused");
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    let message = std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default();
    assert!(message.contains("newer") && message.contains(&newer.to_string()), "{message}");
    assert_eq!(schema_version(&db), newer, "the refused file is left as it was");
}
