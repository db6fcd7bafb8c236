//! User management: registration, the policy (mass assignment, IDOR, last admin), verification, and the
//! import / export jobs run by real workers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use techhub_core::config::{Argon2Params, AuthConfig};
use techhub_core::events::EventKind;
use techhub_core::jobs::WorkerConfig;
use techhub_core::model::{
    Job, JobFilter, JobId, JobState, PageRequest, Role, TokenHash, TokenKind, TokenRecord, User, UserFilter,
};
use techhub_core::notify::OutboxNotifier;
use techhub_core::storage::DynStorage;
use techhub_core::users::{ImportReport, Registration, TransferFormat, UserPatch};
use techhub_core::{Actor, Config, ErrorKind, TechHub};
use techhub_store_memory::MemoryStore;
use tokio::time::timeout;

const PASSWORD: &str = "correct horse battery staple";

fn hub(store: &DynStorage, outbox: &OutboxNotifier) -> TechHub {
    let mut auth = AuthConfig::default();
    auth.argon2 = Argon2Params { memory_kib: 256, iterations: 1, parallelism: 1 };
    TechHub::builder()
        .shared_storage(store.clone())
        .notifier(outbox.clone())
        .config(Config::default().auth(auth))
        .build()
        .expect("hub")
}

async fn register(hub: &TechHub, email: &str) -> User {
    let registration = Registration { email: email.into(), password: PASSWORD.into(), name: Some("Someone".into()) };
    hub.users().register(registration).await.expect("registers")
}

async fn jobs_of_kind(store: &DynStorage, kind: &str) -> Vec<Job> {
    let filter = JobFilter { kind: Some(kind.into()), ..Default::default() };
    store.list_jobs(&filter, &PageRequest::first(100)).await.expect("list").items
}

#[tokio::test]
async fn registration_stores_the_user_with_its_welcome_and_verification_jobs() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = hub(&store, &OutboxNotifier::new());
    let mut events = hub.subscribe();
    let user = register(&hub, "  New@Example.com ").await;
    assert_eq!(
        (user.email.as_str(), user.role, user.active, user.email_verified),
        ("new@example.com", Role::User, true, false)
    );
    assert!(user.password_hash.as_ref().expect("hashed").as_phc().starts_with("$argon2id$"));
    let serialized = serde_json::to_string(&user).expect("json");
    assert!(!serialized.contains("argon2") && !serialized.contains("password"), "{serialized}");
    for kind in ["email.welcome", "email.verify"] {
        let jobs = jobs_of_kind(&store, kind).await;
        assert_eq!(jobs.len(), 1, "{kind}");
        assert_eq!(jobs[0].payload, json!({ "user_id": user.id }));
    }
    let created = events.recv().await.expect("event");
    assert!(created.kind == EventKind::UserCreated || created.kind == EventKind::JobQueued);

    let again = Registration { email: "new@example.com".into(), password: PASSWORD.into(), name: None };
    assert_eq!(hub.users().register(again).await.expect_err("taken").code(), Some("email_taken"));
    assert_eq!(jobs_of_kind(&store, "email.welcome").await.len(), 1, "a refused registration enqueues nothing");
    let control =
        Registration { email: "ctl@example.com".into(), password: PASSWORD.into(), name: Some("bad\u{7}name".into()) };
    assert_eq!(hub.users().register(control).await.expect_err("control char").kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn users_change_only_their_own_name_and_cannot_reach_other_users() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = hub(&store, &OutboxNotifier::new());
    let alice = register(&hub, "alice@example.com").await;
    let bob = register(&hub, "bob@example.com").await;
    let as_alice = Actor::user(alice.id, Role::User);

    let rename = UserPatch { name: Some("Alice A.".into()), ..Default::default() };
    assert_eq!(hub.users().update(&as_alice, alice.id, rename, None).await.expect("own name").name, "Alice A.");
    for patch in [
        UserPatch { role: Some(Role::Admin), ..Default::default() },
        UserPatch { active: Some(false), ..Default::default() },
        UserPatch { email: Some("mine@example.com".into()), ..Default::default() },
    ] {
        let refused = hub.users().update(&as_alice, alice.id, patch.clone(), None).await.expect_err("mass assignment");
        assert_eq!(refused.kind(), ErrorKind::Forbidden, "{patch:?}");
    }
    let unknown_field = serde_json::from_value::<UserPatch>(json!({ "email_verified": true }));
    assert!(unknown_field.is_err(), "a field outside the patch is rejected, not ignored");
    let stored = store.get_user(alice.id).await.expect("get").expect("user");
    assert_eq!((stored.role, stored.active, stored.email.as_str()), (Role::User, true, "alice@example.com"));

    // IDOR: Alice cannot read, change or delete Bob, nor list users.
    assert_eq!(hub.users().get(&as_alice, bob.id).await.expect_err("idor").kind(), ErrorKind::NotFound);
    let patch = UserPatch { name: Some("pwned".into()), ..Default::default() };
    assert_eq!(hub.users().update(&as_alice, bob.id, patch, None).await.expect_err("idor").kind(), ErrorKind::NotFound);
    assert_eq!(hub.users().delete(&as_alice, bob.id).await.expect_err("idor").kind(), ErrorKind::NotFound);
    assert_eq!(
        hub.users().list(&as_alice, &UserFilter::default(), &PageRequest::default()).await.expect_err("admins").kind(),
        ErrorKind::Forbidden
    );
    assert_eq!(store.get_user(bob.id).await.expect("get").expect("bob").name, "Someone");

    // Stale versions are refused.
    let rename = UserPatch { name: Some("x".into()), ..Default::default() };
    let stale = hub.users().update(&as_alice, alice.id, rename, Some(1)).await;
    assert_eq!(stale.expect_err("stale").code(), Some("version_mismatch"));
    hub.users().delete(&as_alice, alice.id).await.expect("users may delete themselves");
}

#[tokio::test]
async fn admins_manage_users_but_never_lose_the_last_admin() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = hub(&store, &OutboxNotifier::new());
    let root = hub.users().ensure_admin("root@example.com", PASSWORD).await.expect("bootstrap");
    assert_eq!(hub.users().ensure_admin("ROOT@example.com", "ignored password").await.expect("kept").id, root.id);
    let as_root = Actor::user(root.id, Role::Admin);
    for patch in [
        UserPatch { role: Some(Role::User), ..Default::default() },
        UserPatch { active: Some(false), ..Default::default() },
    ] {
        let refused = hub.users().update(&as_root, root.id, patch, None).await.expect_err("last admin");
        assert_eq!((refused.kind(), refused.code()), (ErrorKind::Conflict, Some("last_admin")));
    }
    assert_eq!(hub.users().delete(&as_root, root.id).await.expect_err("last admin").code(), Some("last_admin"));

    let carol = register(&hub, "carol@example.com").await;
    let promote = UserPatch { role: Some(Role::Admin), email: Some("Carol@Corp.example".into()), ..Default::default() };
    let carol = hub.users().update(&as_root, carol.id, promote, Some(carol.version)).await.expect("admin edits");
    assert_eq!((carol.role, carol.email.as_str(), carol.email_verified), (Role::Admin, "carol@corp.example", false));
    assert_eq!(jobs_of_kind(&store, "email.verify").await.len(), 2, "the new address gets a verification email");
    hub.users()
        .update(&as_root, root.id, UserPatch { role: Some(Role::User), ..Default::default() }, None)
        .await
        .expect("two admins");
    let admins = UserFilter { role: Some(Role::Admin), ..Default::default() };
    let page = hub.users().list(&Actor::user(carol.id, Role::Admin), &admins, &PageRequest::default()).await;
    assert_eq!(page.expect("list").items.len(), 1);
}

#[tokio::test]
async fn a_verification_link_verifies_once() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = hub(&store, &OutboxNotifier::new());
    let user = register(&hub, "verify@example.com").await;
    let now = hub.now();
    let record = TokenRecord::new(
        TokenHash::of("verify-me"),
        TokenKind::EmailVerify,
        user.id,
        Default::default(),
        now,
        now + chrono::TimeDelta::hours(1),
    );
    store.insert_token(record).await.expect("stored");
    assert_eq!(hub.auth().verify_email("wrong").await.expect_err("unknown").kind(), ErrorKind::Unauthenticated);
    hub.auth().verify_email("verify-me").await.expect("verifies");
    assert!(store.get_user(user.id).await.expect("get").expect("user").email_verified);
    assert_eq!(hub.auth().verify_email("verify-me").await.expect_err("single use").kind(), ErrorKind::Unauthenticated);
}

async fn run_to_end(hub: &TechHub, job: &Job) -> Job {
    let mut events = hub.subscribe();
    let workers = hub.start_workers(WorkerConfig::default().queue("default", 1).queue("email", 1)).expect("runtime");
    let id: JobId = job.id;
    timeout(Duration::from_secs(30), async {
        loop {
            let event = events.recv().await.expect("bus open");
            if event.subject == *id.as_uuid() && matches!(event.kind, EventKind::JobSucceeded | EventKind::JobFailed) {
                break;
            }
        }
    })
    .await
    .expect("the job finished");
    workers.shutdown().await;
    hub.storage().get_job(id).await.expect("get").expect("job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_import_is_handled_row_by_row_and_a_retry_creates_nothing_twice() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let outbox = OutboxNotifier::new();
    let hub = hub(&store, &outbox);
    let root = hub.users().ensure_admin("root@example.com", PASSWORD).await.expect("admin");
    let as_root = Actor::user(root.id, Role::Admin);
    register(&hub, "existing@example.com").await;
    let csv = "email,name,role,password\n\
               ann@example.com,Ann,user,a long enough passphrase\n\
               not-an-email,Broken,user,\n\
               existing@example.com,Dup,user,\n\
               ANN@example.com,Ann again,user,\n\
               bobby@example.com,\"Robert'); DROP TABLE users;--\",admin,\n\
               eve@example.com,=HYPERLINK(\"http://evil.example\"),user,\n\
               short@example.com,Short,user,short\n\
               odd@example.com,Odd,superuser,\n\
               too,few\n";
    let as_user = Actor::user(root.id, Role::User);
    assert_eq!(
        hub.users().import(&as_user, TransferFormat::Csv, csv.into()).await.expect_err("admins").kind(),
        ErrorKind::Forbidden
    );
    let job = hub.users().import(&as_root, TransferFormat::Csv, csv.into()).await.expect("enqueued");
    let done = run_to_end(&hub, &job).await;
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.last_error);
    let report: ImportReport = serde_json::from_value(done.result.expect("a report")).expect("report shape");
    assert_eq!((report.created, report.skipped, report.failed), (3, 2, 4), "{report:?}");
    let failed_rows: Vec<usize> = report.errors.iter().map(|error| error.row).collect();
    assert_eq!(failed_rows, [2, 7, 8, 9]);
    assert_eq!(done.progress.percent, 100);

    let bobby = store
        .get_user_by_email(&techhub_core::model::Email::parse("bobby@example.com").expect("ok"))
        .await
        .expect("get")
        .expect("created");
    assert_eq!(
        (bobby.name.as_str(), bobby.role, bobby.password_hash.is_none()),
        ("Robert'); DROP TABLE users;--", Role::Admin, true)
    );
    assert_eq!(jobs_of_kind(&store, "email.password_reset").await.len(), 2, "password-less rows are invited");
    hub.auth().login("ann@example.com", "a long enough passphrase").await.expect("imported password works");

    // The same file again: everything is skipped or refused, nothing created twice.
    let again = hub.users().import(&as_root, TransferFormat::Csv, csv.into()).await.expect("enqueued");
    let report: ImportReport =
        serde_json::from_value(run_to_end(&hub, &again).await.result.expect("report")).expect("shape");
    assert_eq!((report.created, report.skipped, report.failed), (0, 5, 4));

    let json_rows =
        json!([{ "email": "json@example.com", "name": "Jay" }, { "email": "json@example.com" }, { "nope": 1 }]);
    let job = hub.users().import(&as_root, TransferFormat::Json, json_rows.to_string()).await.expect("enqueued");
    let report: ImportReport =
        serde_json::from_value(run_to_end(&hub, &job).await.result.expect("report")).expect("shape");
    assert_eq!((report.created, report.skipped, report.failed), (1, 1, 1));

    // The export never carries a hash, and defuses the formula-looking name.
    let export = hub.users().export(&as_root, TransferFormat::Csv).await.expect("enqueued");
    assert_eq!(run_to_end(&hub, &export).await.result, Some(json!({ "users": 6 })));
    let artifact = hub.jobs().artifact(&as_root, export.id).await.expect("artifact");
    assert_eq!(
        (artifact.content_type.as_str(), artifact.file_name.as_deref().map(|name| name.ends_with(".csv"))),
        ("text/csv; charset=utf-8", Some(true))
    );
    let text = String::from_utf8(artifact.bytes).expect("utf-8");
    assert!(text.starts_with("id,email,name,role,active,email_verified,created_at\n"), "{text}");
    assert!(text.contains("'=HYPERLINK"), "{text}");
    assert!(!text.contains("argon2") && !text.contains("$v=19"), "{text}");
    let json_export = hub.users().export(&as_root, TransferFormat::Json).await.expect("enqueued");
    run_to_end(&hub, &json_export).await;
    let exported: Vec<Value> =
        serde_json::from_slice(&hub.jobs().artifact(&as_root, json_export.id).await.expect("artifact").bytes)
            .expect("json");
    assert_eq!(exported.len(), 6);
    assert!(exported.iter().all(|user| user.get("password_hash").is_none()));
}

#[tokio::test]
async fn ensure_admin_does_not_promote_a_registered_account_it_cannot_sign_in_to() {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let hub = hub(&store, &OutboxNotifier::new());
    let squatter = register(&hub, "ops@example.com").await;
    let refused = hub.users().ensure_admin("ops@example.com", "the operator's own passphrase").await;
    let refused = refused.expect_err("someone else's account is not promoted");
    assert_eq!((refused.kind(), refused.code()), (ErrorKind::Conflict, Some("admin_email_taken")));
    assert_eq!(store.get_user(squatter.id).await.expect("get").expect("kept").role, Role::User, "unchanged");

    // The owner itself (its password verifies) may be promoted.
    let promoted = hub.users().ensure_admin("ops@example.com", PASSWORD).await.expect("own account");
    assert_eq!((promoted.id, promoted.role, promoted.active), (squatter.id, Role::Admin, true));
}
