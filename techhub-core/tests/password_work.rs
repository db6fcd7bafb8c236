//! Password work is counted (argon2 runs, through a debugging recorder installed for this test binary alone):
//! an oversized password is refused before any hashing, on every path that takes one.

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use techhub_core::ErrorKind;
use techhub_core::TechHub;
use techhub_core::auth::PASSWORD_HASHES_METRIC;
use techhub_core::config::{Argon2Params, Config};
use techhub_core::users::Registration;
use techhub_store_memory::MemoryStore;

const PASSWORD: &str = "a long enough passphrase";

/// How many argon2 computations have run so far.
fn hashes(snapshotter: &Snapshotter) -> u64 {
    let snapshot: Vec<(CompositeKey, _, _, DebugValue)> = snapshotter.snapshot().into_vec();
    snapshot
        .iter()
        .filter(|(key, ..)| key.kind() == MetricKind::Counter && key.key().name() == PASSWORD_HASHES_METRIC)
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => *count,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_password_is_refused_before_any_hashing() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");
    let mut config = Config::default();
    config.auth.argon2 = Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 };
    let hub = TechHub::builder().storage(MemoryStore::new()).config(config).build().expect("hub");
    let huge = "p".repeat(1024 * 1024);

    let registration = Registration { email: "huge@example.com".into(), password: huge.clone(), name: None };
    assert_eq!(hub.users().register(registration).await.expect_err("1 MB").kind(), ErrorKind::InvalidInput);
    assert_eq!(hashes(&snapshotter), 0, "registration hashed a password it refuses");

    let ok = Registration { email: "kim@example.com".into(), password: PASSWORD.into(), name: None };
    hub.users().register(ok).await.expect("registers");
    let after_register = hashes(&snapshotter);
    assert!(after_register >= 1, "a registration is counted: this test can see hashing");

    let tokens = hub.auth().login("kim@example.com", PASSWORD).await.expect("signs in");
    let session = hub.auth().authenticate(&tokens.access_token).await.expect("valid");
    let before = hashes(&snapshotter);
    let changed = hub.auth().change_password(&session, PASSWORD, &huge).await;
    assert_eq!(changed.expect_err("1 MB").kind(), ErrorKind::InvalidInput);
    let changed = hub.auth().change_password(&session, &huge, "another long passphrase").await;
    assert!(changed.is_err_and(|error| error.code() == Some("invalid_credentials")), "a 1 MB current password");
    assert_eq!(hashes(&snapshotter), before, "a password change hashed a 1 MB password");
}
