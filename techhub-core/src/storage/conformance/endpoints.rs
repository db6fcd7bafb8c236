//! Rules of [`EndpointStore`](crate::storage::EndpointStore).

use super::fixtures::{at, conflict, t0};
use crate::model::{Endpoint, EndpointId, EndpointKind, SigningSecret};
use crate::storage::{Conflict, DynStorage, StoreError};

fn endpoint(url: &str, event_types: &[&str]) -> Endpoint {
    let mut endpoint = Endpoint::new(
        EndpointKind::Webhook,
        url,
        "Build alerts",
        event_types.iter().map(|event| (*event).to_owned()).collect(),
        t0(),
    );
    endpoint.rotate_secret(SigningSecret::from_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), t0(), t0());
    endpoint
}

/// Endpoints read back whole (secrets in order included) with version 1; a duplicate id conflicts.
pub async fn endpoints_insert_get_round_trip_and_duplicate(store: DynStorage) {
    let mut new = endpoint("https://hooks.example.com/a", &["build.failed", "job.failed"]);
    new.rotate_secret(SigningSecret::from_text("whsec_second"), t0(), at(86_400));
    new.failing_since = Some(at(5));
    new.failure_streak = 2;
    new.disabled_reason = Some("410 Gone".to_owned());
    let stored = store.insert_endpoint(new.clone()).await.expect("insert works");
    assert_eq!(stored, Endpoint { version: 1, ..new });
    assert_eq!(store.get_endpoint(stored.id).await.expect("get works"), Some(stored.clone()));
    assert_eq!(conflict(store.insert_endpoint(stored.clone()).await), Conflict::Duplicate);
    assert_eq!(store.list_endpoints().await.expect("list works"), [stored]);
    assert_eq!(store.get_endpoint(EndpointId::new()).await.expect("get works"), None);
}

/// Updates are versioned: a stale version conflicts and changes nothing, `created_at` stays, a missing
/// endpoint is not found.
pub async fn endpoints_update_is_versioned(store: DynStorage) {
    let stored =
        store.insert_endpoint(endpoint("https://hooks.example.com/a", &["build.failed"])).await.expect("insert");
    let disabled = Endpoint { enabled: false, created_at: at(99), updated_at: at(7), ..stored.clone() };
    let updated = store.update_endpoint(disabled, 1).await.expect("update works");
    assert_eq!((updated.version, updated.enabled, updated.created_at, updated.updated_at), (2, false, t0(), at(7)));
    let stale = Endpoint { description: "stale".to_owned(), ..stored.clone() };
    assert_eq!(conflict(store.update_endpoint(stale, 1).await), Conflict::VersionMismatch);
    assert_eq!(store.get_endpoint(stored.id).await.expect("get works"), Some(updated));
    let ghost = endpoint("https://hooks.example.com/ghost", &[]);
    assert!(matches!(store.update_endpoint(ghost, 1).await, Err(StoreError::NotFound)));
}

/// Listing is in id order; a deleted endpoint is gone from reads and lists, a second delete is not found.
pub async fn endpoints_list_in_id_order_and_delete(store: DynStorage) {
    let mut stored = Vec::new();
    for url in ["https://a.example.com", "https://b.example.com", "https://c.example.com"] {
        stored.push(store.insert_endpoint(endpoint(url, &["build.failed"])).await.expect("insert works"));
    }
    let ids = |endpoints: Vec<Endpoint>| endpoints.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list_endpoints().await.expect("list")), ids(stored.clone()));
    store.delete_endpoint(stored[1].id).await.expect("delete works");
    assert_eq!(store.get_endpoint(stored[1].id).await.expect("get works"), None);
    assert_eq!(ids(store.list_endpoints().await.expect("list")), [stored[0].id, stored[2].id]);
    assert!(matches!(store.delete_endpoint(stored[1].id).await, Err(StoreError::NotFound)));
    let update = store.update_endpoint(stored[1].clone(), 1).await;
    assert!(matches!(update, Err(StoreError::NotFound)));
}
