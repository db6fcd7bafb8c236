//! Rules of [`Storage::database_info`](crate::storage::Storage::database_info).

use super::fixtures::t0;
use crate::model::{Channel, Notification};
use crate::storage::DynStorage;

/// The database info names the store's backend, keeps its schema version across calls and writes, and holds
/// no secret.
pub async fn system_database_info_names_the_backend_and_keeps_its_version(store: DynStorage) {
    let first = store.database_info().await.expect("database info works");
    assert_eq!(first.kind, store.backend());
    store
        .insert_notification(Notification::new(Channel::Log, "ops", "Hello", "a body", t0()))
        .await
        .expect("insert works");
    let second = store.database_info().await.expect("database info works");
    assert_eq!(second.kind, first.kind);
    assert_eq!(second.schema_version, first.schema_version, "the schema version changed between calls");
    let details = serde_json::to_string(&second.details).expect("details serialize").to_ascii_lowercase();
    for secret in ["password", "secret", "token"] {
        assert!(!details.contains(secret), "the details name a {secret}: {details}");
    }
    assert!(second.details.values().all(|value| !value.is_object() && !value.is_array()), "details are flat");
}
