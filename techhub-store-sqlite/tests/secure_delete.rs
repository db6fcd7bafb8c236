//! Deleted data does not linger in the database file: a discarded job payload and a revoked token leave no
//! trace in the file's bytes once the write-ahead log is checkpointed (`PRAGMA secure_delete`).

use chrono::{DateTime, Utc};
use serde_json::json;
use techhub_core::model::{Job, NewJob, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId, WorkerId};
use techhub_core::storage::{JobStore, TokenSelector, TokenStore};
use techhub_store_sqlite::SqliteStore;

const MARKER: &str = "PLAINTEXT-MARKER-0123456789-that-must-not-survive";

fn t0() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000)
}

/// Every file in `dir`, concatenated.
fn bytes_of(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory") {
        match std::fs::read(entry.expect("an entry").path()) {
            Ok(bytes) => all.extend(bytes),
            // A WAL or shared-memory file SQLite removed between the listing and the read holds nothing.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("unreadable: {error}"),
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_payloads_and_revoked_tokens_leave_no_trace_in_the_file() {
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("store.db");
    {
        let store = SqliteStore::open(&path).expect("opens");
        let job = Job::new(NewJob::new("users.import", json!({ "rows": [{ "secret": MARKER }] })), t0()).expect("job");
        store.enqueue(job).await.expect("enqueued");
        let worker = WorkerId::new("w1");
        let claimed = store
            .claim(&["default".to_owned()], &worker, t0(), std::time::Duration::from_secs(60))
            .await
            .expect("claim works")
            .expect("claimed");
        let lease = claimed.lease().expect("leased");
        store.complete(&lease, json!({ "created": 1 }), None, t0()).await.expect("completed");
        store.discard_job_payload(claimed.id).await.expect("discarded");

        // A token whose hash bytes are the marker's first 32 bytes, then revoked.
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&MARKER.as_bytes()[..32]);
        let family = TokenFamilyId::new();
        let record = TokenRecord::new(
            TokenHash::from_bytes(hash),
            TokenKind::Refresh,
            UserId::new(),
            family,
            t0(),
            t0() + chrono::TimeDelta::days(1),
        );
        store.insert_token(record).await.expect("inserted");
        store.revoke_tokens(TokenSelector::Family(family)).await.expect("revoked");

        // Fold the write-ahead log (which keeps history by design, until it is reset) into the file and
        // empty it, as a checkpoint does in the normal course of things.
        let connection = rusqlite::Connection::open(&path).expect("a second connection");
        let busy: i64 =
            connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0)).expect("checkpoints");
        assert_eq!(busy, 0, "the checkpoint was not blocked");
        drop(store);
    }
    let bytes = bytes_of(dir.path());
    assert!(!bytes.is_empty());
    assert!(!contains(&bytes, MARKER), "a discarded payload lingers in the file");
    assert!(!contains(&bytes, &MARKER[..32]), "a revoked token's hash lingers in the file");
}
