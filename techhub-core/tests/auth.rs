//! Authentication under attack: forged and stale tokens, replays, enumeration, lockout, and the password rules.
//! Hashing uses light argon2 parameters here (the rules are the same; only the cost differs).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use techhub_core::auth::{JwtKeys, SigningKey, TokenPair};
use techhub_core::clock::{Clock, ManualClock};
use techhub_core::config::{Argon2Params, AuthConfig};
use techhub_core::model::{Email, JobFilter, PageRequest, PasswordHash, Role, TokenHash, TokenKind, TokenRecord, User};
use techhub_core::storage::DynStorage;
use techhub_core::users::Registration;
use techhub_core::{Config, Error, ErrorKind, TechHub};
use techhub_store_memory::MemoryStore;
use tokio::task::JoinSet;

const SECRET: &[u8] = b"an HS256 secret of at least thirty-two bytes";
const PASSWORD: &str = "correct horse battery staple";
const ED25519_PKCS8: [u8; 48] = [
    48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 112, 4, 34, 4, 32, 23, 9, 126, 120, 207, 228, 246, 250, 39, 178, 171, 16,
    12, 65, 78, 189, 158, 28, 248, 248, 168, 198, 233, 80, 6, 169, 55, 98, 96, 189, 109, 242,
];
const ED25519_PUBLIC: [u8; 32] = [
    194, 139, 165, 217, 95, 52, 187, 11, 83, 163, 193, 136, 90, 2, 230, 251, 72, 141, 228, 107, 243, 106, 152, 204,
    177, 110, 15, 22, 21, 135, 255, 23,
];

struct Fixture {
    hub: TechHub,
    store: DynStorage,
    clock: ManualClock,
}

fn light_auth() -> AuthConfig {
    let mut auth = AuthConfig::default();
    auth.argon2 = Argon2Params { memory_kib: 256, iterations: 1, parallelism: 1 };
    auth
}

fn fixture_with(keys: JwtKeys, auth: AuthConfig) -> Fixture {
    let store: DynStorage = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_epoch();
    let hub = TechHub::builder()
        .shared_storage(store.clone())
        .clock(clock.clone())
        .config(Config::default().auth(auth))
        .jwt_keys(keys)
        .build()
        .expect("hub");
    Fixture { hub, store, clock }
}

fn fixture() -> Fixture {
    fixture_with(JwtKeys::new(SigningKey::hs256("k1", SECRET).expect("long enough")), light_auth())
}

impl Fixture {
    async fn register(&self, email: &str) -> User {
        let registration = Registration { email: email.into(), password: PASSWORD.into(), name: Some("Tester".into()) };
        self.hub.users().register(registration).await.expect("registers")
    }

    async fn login(&self, email: &str) -> TokenPair {
        self.hub.auth().login(email, PASSWORD).await.expect("signs in")
    }

    async fn rejects(&self, token: &str) -> Error {
        self.hub.auth().authenticate(token).await.expect_err("the token must be refused")
    }
}

fn assert_unauthenticated(error: &Error) {
    assert_eq!(error.kind(), ErrorKind::Unauthenticated, "{error:?}");
}

/// Signs arbitrary claims with the test secret and `kid`, to forge tokens an attacker could make if it had
/// the key, or to build malformed ones.
fn sign(claims: &Value, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("signs")
}

/// The claims of a valid token, to alter one at a time.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

#[tokio::test]
async fn forged_and_malformed_access_tokens_are_refused() {
    let f = fixture();
    f.register("ada@example.com").await;
    let pair = f.login("ada@example.com").await;
    let session = f.hub.auth().authenticate(&pair.access_token).await.expect("the real token works");
    assert_eq!((session.user.email.as_str(), session.actor.is_privileged()), ("ada@example.com", false));
    let claims = claims_of(&pair.access_token);

    // alg=none: no signature at all.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#);
    let body = pair.access_token.split('.').nth(1).expect("payload");
    assert_unauthenticated(&f.rejects(&format!("{none_header}.{body}.")).await);
    // Signed with another key under the right kid; and under an unknown kid.
    assert_unauthenticated(&f.rejects(&sign(&claims, "k1", b"some other secret that is long enough!!")).await);
    assert_unauthenticated(&f.rejects(&sign(&claims, "k9", SECRET)).await);
    // A tampered payload (an admin role) under the original signature.
    let mut escalated = claims.clone();
    escalated["role"] = json!("admin");
    let parts: Vec<&str> = pair.access_token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(escalated.to_string()), parts[2]);
    assert_unauthenticated(&f.rejects(&tampered).await);
    // Missing or string exp; wrong or missing aud and iss; a wrong typ.
    for (field, value) in [
        ("exp", None),
        ("exp", Some(json!("9999999999"))),
        ("aud", Some(json!("other"))),
        ("aud", None),
        ("iss", Some(json!("evil"))),
        ("iss", None),
        ("sid", None),
    ] {
        let mut altered = claims.clone();
        match value {
            Some(value) => altered[field] = value,
            None => {
                altered.as_object_mut().expect("object").remove(field);
            }
        }
        assert_unauthenticated(&f.rejects(&sign(&altered, "k1", SECRET)).await);
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    header.typ = Some("JWT".into());
    let wrong_typ = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).expect("signs");
    assert_unauthenticated(&f.rejects(&wrong_typ).await);
    // Another HMAC algorithm under the HS256 key's kid; a truncated signature; a fourth part; an audience list.
    let mut hs384 = Header::new(Algorithm::HS384);
    hs384.kid = Some("k1".into());
    hs384.typ = Some("at+jwt".into());
    assert_unauthenticated(
        &f.rejects(&jsonwebtoken::encode(&hs384, &claims, &EncodingKey::from_secret(SECRET)).expect("signs")).await,
    );
    let valid = sign(&claims, "k1", SECRET);
    assert_unauthenticated(&f.rejects(&valid[..valid.len() - 1]).await);
    assert_unauthenticated(&f.rejects(&format!("{valid}.{}", parts[2])).await);
    let mut audiences = claims.clone();
    audiences["aud"] = json!([claims["aud"].clone()]);
    assert_unauthenticated(&f.rejects(&sign(&audiences, "k1", SECRET)).await);
    // A refresh token or a garbage string is not an access token.
    assert_unauthenticated(&f.rejects(&pair.refresh_token).await);
    assert_unauthenticated(&f.rejects("").await);
    // The claims that were refused above are fine when signed properly: the checks are what refused them.
    f.hub.auth().authenticate(&sign(&claims, "k1", SECRET)).await.expect("a correctly signed copy is valid");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let f = fixture();
    f.register("exp@example.com").await;
    let pair = f.login("exp@example.com").await;
    f.clock.advance(Duration::from_secs(15 * 60 + 4));
    f.hub.auth().authenticate(&pair.access_token).await.expect("within the 5 s leeway");
    f.clock.advance(Duration::from_secs(2));
    let expired = f.rejects(&pair.access_token).await;
    assert_eq!(expired.code(), Some("token_expired"));

    let mut future = claims_of(&pair.access_token);
    let later = f.clock.now().timestamp() + 3600;
    future["nbf"] = json!(later);
    future["iat"] = json!(later);
    future["exp"] = json!(later + 600);
    assert_unauthenticated(&f.rejects(&sign(&future, "k1", SECRET)).await);
}

#[tokio::test]
async fn keys_rotate_by_kid_with_a_grace_period_and_eddsa_works() {
    let clock = ManualClock::at_epoch();
    let old = SigningKey::hs256("old", SECRET).expect("key");
    let f = fixture_with(JwtKeys::new(old.clone()), light_auth());
    f.register("rot@example.com").await;
    let old_token = f.login("rot@example.com").await.access_token;

    let ed = SigningKey::ed25519("ed1", &ED25519_PKCS8, &ED25519_PUBLIC).expect("valid key");
    let rotated = JwtKeys::new(old).rotate(ed, clock.now(), Duration::from_secs(60));
    let g = Fixture { hub: rebuild(&f, rotated), store: f.store.clone(), clock: f.clock.clone() };
    let new_token = g.login("rot@example.com").await.access_token;
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(new_token.split('.').next().expect("header")).expect("b64"))
            .expect("json");
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str(), header["typ"].as_str()),
        (Some("EdDSA"), Some("ed1"), Some("at+jwt"))
    );
    g.hub.auth().authenticate(&new_token).await.expect("the new key verifies");
    g.hub.auth().authenticate(&old_token).await.expect("the old key verifies during its grace");
    // An HS256 token claiming the EdDSA key's kid: the algorithm is pinned per key.
    assert_unauthenticated(&g.rejects(&sign(&claims_of(&new_token), "ed1", SECRET)).await);
    g.clock.advance(Duration::from_secs(61));
    assert_unauthenticated(&g.rejects(&old_token).await);
    let short = SigningKey::hs256("short", b"too short").expect_err("a short secret is a configuration error");
    assert_eq!(short.kind(), ErrorKind::InvalidInput, "{short:?}");
}

fn rebuild(f: &Fixture, keys: JwtKeys) -> TechHub {
    TechHub::builder()
        .shared_storage(f.store.clone())
        .clock(f.clock.clone())
        .config(Config::default().auth(light_auth()))
        .jwt_keys(keys)
        .build()
        .expect("hub")
}

#[tokio::test]
async fn tokens_of_deleted_disabled_or_password_changed_users_stop_working_at_once() {
    let f = fixture();
    let admin = f.hub.users().ensure_admin("root@example.com", PASSWORD).await.expect("admin");
    let as_admin = techhub_core::Actor::user(admin.id, Role::Admin);

    let disabled = f.register("off@example.com").await;
    let token = f.login("off@example.com").await;
    let patch = techhub_core::users::UserPatch { active: Some(false), ..Default::default() };
    f.hub.users().update(&as_admin, disabled.id, patch, None).await.expect("disabled");
    assert_unauthenticated(&f.rejects(&token.access_token).await);
    assert_unauthenticated(&f.hub.auth().refresh(&token.refresh_token).await.expect_err("refresh refused"));
    assert_eq!(
        f.hub.auth().login("off@example.com", PASSWORD).await.expect_err("disabled").code(),
        Some("invalid_credentials")
    );

    let deleted = f.register("gone@example.com").await;
    let token = f.login("gone@example.com").await;
    f.hub.users().delete(&as_admin, deleted.id).await.expect("deleted");
    assert_unauthenticated(&f.rejects(&token.access_token).await);

    f.register("moved@example.com").await;
    let laptop = f.login("moved@example.com").await;
    let phone = f.login("moved@example.com").await;
    let session = f.hub.auth().authenticate(&laptop.access_token).await.expect("valid");
    f.hub.auth().change_password(&session, PASSWORD, "a brand new passphrase").await.expect("changed");
    assert_unauthenticated(&f.rejects(&phone.access_token).await);
    f.hub.auth().authenticate(&laptop.access_token).await.expect("the session that changed it stays");
    let old_password = f.hub.auth().login("moved@example.com", PASSWORD).await.expect_err("the old password is dead");
    assert_eq!(old_password.code(), Some("invalid_credentials"));
    f.hub.auth().login("moved@example.com", "a brand new passphrase").await.expect("new password works");
    let notices = f
        .store
        .list_jobs(
            &JobFilter { kind: Some("email.password_changed".into()), ..Default::default() },
            &PageRequest::first(5),
        )
        .await;
    assert_eq!(notices.expect("list").items.len(), 1, "a notice email is enqueued");
    let wrong = f.hub.auth().change_password(&session, "not the password", "another new passphrase").await;
    assert_eq!(wrong.expect_err("wrong current").code(), Some("invalid_credentials"));
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_token_revokes_the_session() {
    let f = fixture();
    f.register("rt@example.com").await;
    let first = f.login("rt@example.com").await;
    let second = f.hub.auth().refresh(&first.refresh_token).await.expect("rotates");
    assert_ne!(second.refresh_token, first.refresh_token);

    // Two tabs racing: within the grace window the loser is refused, the session lives.
    assert_unauthenticated(&f.hub.auth().refresh(&first.refresh_token).await.expect_err("already used"));
    f.hub.auth().authenticate(&second.access_token).await.expect("session alive after a racing refresh");

    // Past the grace window a replay is theft: the whole session dies, new tokens included.
    f.clock.advance(Duration::from_secs(11));
    assert_unauthenticated(&f.hub.auth().refresh(&first.refresh_token).await.expect_err("replay"));
    assert_unauthenticated(&f.rejects(&second.access_token).await);
    assert_unauthenticated(&f.hub.auth().refresh(&second.refresh_token).await.expect_err("family revoked"));
}

#[tokio::test]
async fn sessions_end_after_idle_and_absolute_lifetimes_and_can_be_listed_and_revoked() {
    let mut auth = light_auth();
    auth.refresh_idle_ttl = Duration::from_secs(3600);
    auth.refresh_absolute_ttl = Duration::from_secs(3 * 3600);
    let f = fixture_with(JwtKeys::new(SigningKey::hs256("k1", SECRET).expect("key")), auth);
    let user = f.register("life@example.com").await;
    let actor = techhub_core::Actor::user(user.id, Role::User);

    let idle = f.login("life@example.com").await;
    f.clock.advance(Duration::from_secs(3601));
    assert_unauthenticated(&f.hub.auth().refresh(&idle.refresh_token).await.expect_err("idle too long"));

    let mut pair = f.login("life@example.com").await;
    for _ in 0..5 {
        f.clock.advance(Duration::from_secs(2400));
        match f.hub.auth().refresh(&pair.refresh_token).await {
            Ok(next) => pair = next,
            Err(error) => {
                assert_unauthenticated(&error);
                break;
            }
        }
    }
    assert!(f.hub.auth().sessions(&actor, user.id).await.expect("list").is_empty(), "the absolute lifetime ended it");

    let a = f.login("life@example.com").await;
    let b = f.login("life@example.com").await;
    let sessions = f.hub.auth().sessions(&actor, user.id).await.expect("list");
    assert_eq!(sessions.len(), 2);
    let session_a = f.hub.auth().authenticate(&a.access_token).await.expect("valid").session_id;
    f.hub.auth().revoke_session(&actor, user.id, session_a).await.expect("revoked");
    assert_unauthenticated(&f.rejects(&a.access_token).await);
    f.hub.auth().authenticate(&b.access_token).await.expect("the other session lives");
    f.hub.auth().logout(&b.refresh_token).await.expect("logout");
    assert_unauthenticated(&f.rejects(&b.access_token).await);
}

/// Stores a reset token for `user` the way the reset job does, and returns the raw token.
async fn reset_token(f: &Fixture, user: &User, raw: &str, ttl: Duration) -> String {
    let now = f.clock.now();
    let record = TokenRecord::new(
        TokenHash::of(raw),
        TokenKind::PasswordReset,
        user.id,
        Default::default(),
        now,
        now + chrono::TimeDelta::from_std(ttl).expect("ttl"),
    );
    f.store.insert_token(record).await.expect("stored");
    raw.to_owned()
}

#[tokio::test]
async fn reset_tokens_are_single_use_expire_and_end_every_session() {
    let f = fixture();
    let user = f.register("reset@example.com").await;
    let session = f.login("reset@example.com").await;

    let token = reset_token(&f, &user, "reset-token-1", Duration::from_secs(1800)).await;
    let weak = f.hub.auth().reset_password(&token, "password123").await.expect_err("a common password");
    assert_eq!(weak.kind(), ErrorKind::InvalidInput);
    f.hub.auth().reset_password(&token, "a fresh passphrase").await.expect("the token still works after bad input");
    assert_unauthenticated(&f.hub.auth().reset_password(&token, "another passphrase").await.expect_err("reused"));
    assert_unauthenticated(&f.rejects(&session.access_token).await);
    f.hub.auth().login("reset@example.com", "a fresh passphrase").await.expect("new password works");

    let expiring = reset_token(&f, &user, "reset-token-2", Duration::from_secs(1800)).await;
    f.clock.advance(Duration::from_secs(1801));
    assert_unauthenticated(&f.hub.auth().reset_password(&expiring, "yet another phrase").await.expect_err("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_uses_of_one_reset_token_succeed_exactly_once() {
    let f = fixture();
    let user = f.register("race@example.com").await;
    let token = reset_token(&f, &user, "contended-reset", Duration::from_secs(1800)).await;
    let mut tasks = JoinSet::new();
    for n in 0..20 {
        let (hub, token) = (f.hub.clone(), token.clone());
        tasks.spawn(async move { hub.auth().reset_password(&token, &format!("parallel passphrase {n}")).await });
    }
    let mut successes = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task ran") {
            Ok(()) => successes += 1,
            // Every loser is told its token is no good, not some other failure.
            Err(error) => assert_unauthenticated(&error),
        }
    }
    assert_eq!(successes, 1);
}

#[tokio::test]
async fn a_newer_reset_request_voids_the_older_link_and_unknown_emails_answer_the_same() {
    let f = fixture();
    f.register("known@example.com").await;
    f.hub.auth().request_password_reset("known@example.com").await.expect("same answer");
    f.hub.auth().request_password_reset("nobody@example.com").await.expect("same answer");
    f.hub.auth().request_password_reset("not an email").await.expect("same answer");
    f.hub.auth().request_password_reset("kn\u{0131}own@example.com").await.expect("same answer"); // dotless i
    let resets = JobFilter { kind: Some("email.password_reset".into()), ..Default::default() };
    let jobs = f.store.list_jobs(&resets, &PageRequest::first(10)).await.expect("list").items;
    assert_eq!(jobs.len(), 1, "only the known address gets a reset email");
    assert_eq!(
        jobs[0].payload["user_id"],
        json!(
            f.store
                .get_user_by_email(&Email::parse("known@example.com").expect("ok"))
                .await
                .expect("get")
                .expect("user")
                .id
        )
    );
}

#[tokio::test]
async fn login_errors_do_not_tell_unknown_emails_from_wrong_passwords() {
    let f = fixture();
    f.register("real@example.com").await;
    let unknown = f.hub.auth().login("ghost@example.com", PASSWORD).await.expect_err("unknown");
    let wrong = f.hub.auth().login("real@example.com", "wrong password!").await.expect_err("wrong");
    let malformed = f.hub.auth().login("not an address", PASSWORD).await.expect_err("malformed");
    for error in [&unknown, &wrong, &malformed] {
        assert_eq!((error.kind(), error.code(), error.message()), (unknown.kind(), unknown.code(), unknown.message()));
    }
    assert_eq!(unknown.code(), Some("invalid_credentials"));
    let huge = "x".repeat(1024 * 1024);
    assert_eq!(
        f.hub.auth().login("real@example.com", &huge).await.expect_err("huge").code(),
        Some("invalid_credentials")
    );
}

#[tokio::test]
async fn unicode_and_case_variants_of_an_email_are_one_account() {
    let f = fixture();
    f.register("kim@example.com").await;
    f.register("jose\u{0301}@example.com").await; // NFD
    for variant in
        ["KIM@example.com", "\u{212A}im@example.com", "\u{FF4B}\u{FF49}\u{FF4D}@example.com", " kim@example.com "]
    {
        let registration = Registration { email: variant.into(), password: PASSWORD.into(), name: None };
        let error = f.hub.users().register(registration).await.expect_err("the same address");
        assert_eq!((error.kind(), error.code()), (ErrorKind::Conflict, Some("email_taken")), "{variant:?}");
        f.hub.auth().login(variant, PASSWORD).await.expect("signs into the one account");
    }
    let nfc = Registration { email: "jos\u{00E9}@example.com".into(), password: PASSWORD.into(), name: None };
    assert_eq!(f.hub.users().register(nfc).await.expect_err("NFC = NFD").code(), Some("email_taken"));
    // A dotless i is another letter: another account, and no way into kim's.
    let dotless = Registration { email: "k\u{0131}m@example.com".into(), password: PASSWORD.into(), name: None };
    let other = f.hub.users().register(dotless).await.expect("a different address");
    assert_ne!(other.email.as_str(), "kim@example.com");
    let invisible = Registration { email: "k\u{200B}im@example.com".into(), password: PASSWORD.into(), name: None };
    assert_eq!(f.hub.users().register(invisible).await.expect_err("zero-width").kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn password_rules_apply_before_hashing_and_absurd_stored_hashes_are_refused() {
    let f = fixture();
    let long_ok = Registration { email: "long@example.com".into(), password: "p".repeat(64), name: None };
    f.hub.users().register(long_ok).await.expect("64 characters are fine");
    // That a 1 MB password is refused before any hashing is counted in tests/password_work.rs.
    let huge = Registration { email: "huge@example.com".into(), password: "p".repeat(1024 * 1024), name: None };
    assert_eq!(f.hub.users().register(huge).await.expect_err("1 MB").kind(), ErrorKind::InvalidInput);
    for (email, password) in [
        ("same@example.com", "same@example.com"),
        ("common@example.com", "password123"),
        ("short@example.com", "short"),
    ] {
        let registration = Registration { email: email.into(), password: password.into(), name: None };
        assert_eq!(f.hub.users().register(registration).await.expect_err(password).kind(), ErrorKind::InvalidInput);
    }
    assert!(f.store.get_user_by_email(&Email::parse("huge@example.com").expect("ok")).await.expect("get").is_none());

    let mut planted = User::new(Email::parse("planted@example.com").expect("ok"), "", Role::User, f.clock.now());
    planted.password_hash =
        Some(PasswordHash::from_phc("$argon2id$v=19$m=4194304,t=100000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"));
    f.store.insert_user(planted, vec![]).await.expect("stored");
    let started = std::time::Instant::now();
    assert_eq!(
        f.hub.auth().login("planted@example.com", PASSWORD).await.expect_err("refused").code(),
        Some("invalid_credentials")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_old_hash_is_upgraded_at_the_next_sign_in() {
    let mut weak = light_auth();
    weak.argon2 = Argon2Params { memory_kib: 128, iterations: 1, parallelism: 1 };
    let f = fixture_with(JwtKeys::new(SigningKey::hs256("k1", SECRET).expect("key")), weak);
    let user = f.register("upgrade@example.com").await;
    let g = Fixture {
        hub: rebuild(&f, JwtKeys::new(SigningKey::hs256("k1", SECRET).expect("key"))),
        store: f.store.clone(),
        clock: f.clock.clone(),
    };
    g.login("upgrade@example.com").await;
    let stored = g.store.get_user(user.id).await.expect("get").expect("user");
    assert!(
        stored.password_hash.expect("hash").as_phc().contains("m=256,t=1,p=1"),
        "rehashed with the current parameters"
    );
    g.login("upgrade@example.com").await;
}

#[tokio::test]
async fn lockout_refuses_even_the_right_password_until_it_passes() {
    let f = fixture();
    f.register("lock@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            f.hub.auth().login("lock@example.com", "wrong guess!").await.expect_err("wrong").code(),
            Some("invalid_credentials")
        );
    }
    let locked = f.hub.auth().login("lock@example.com", PASSWORD).await.expect_err("locked");
    assert_eq!(locked.kind(), ErrorKind::RateLimited);
    f.clock.advance(Duration::from_secs(31));
    f.login("lock@example.com").await;
    // Success cleared the count: one more failure does not lock.
    f.hub.auth().login("lock@example.com", "wrong guess!").await.expect_err("wrong");
    f.login("lock@example.com").await;
    // Attempts during a lockout are refused without counting; a failure after it ends doubles the window.
    for attempt in 1..=5 {
        let refused = f.hub.auth().login("lock@example.com", "wrong guess!").await.expect_err("wrong");
        assert_eq!(refused.code(), Some("invalid_credentials"), "attempt {attempt} counts as a failure");
    }
    assert_eq!(
        f.hub.auth().login("lock@example.com", "wrong guess!").await.expect_err("locked").kind(),
        ErrorKind::RateLimited
    );
    f.clock.advance(Duration::from_secs(31));
    f.hub.auth().login("lock@example.com", "wrong guess!").await.expect_err("sixth failure");
    f.clock.advance(Duration::from_secs(31));
    assert_eq!(
        f.hub.auth().login("lock@example.com", PASSWORD).await.expect_err("longer lock").kind(),
        ErrorKind::RateLimited
    );
    f.clock.advance(Duration::from_secs(30));
    f.login("lock@example.com").await;
}

/// Five wrong passwords for `email` (known or not), each refused as bad credentials.
async fn fail_five_times(f: &Fixture, email: &str) {
    for _ in 0..5 {
        let error = f.hub.auth().login(email, "wrong guess!").await.expect_err("wrong");
        assert_eq!(error.code(), Some("invalid_credentials"), "{error:?}");
    }
}

#[tokio::test]
async fn a_locked_account_refuses_a_password_change_as_it_refuses_sign_in() {
    let f = fixture();
    f.register("changer@example.com").await;
    let pair = f.login("changer@example.com").await;
    let session = f.hub.auth().authenticate(&pair.access_token).await.expect("signed in");
    fail_five_times(&f, "changer@example.com").await;
    let error = f
        .hub
        .auth()
        .change_password(&session, PASSWORD, "a brand new passphrase")
        .await
        .expect_err("locked: even the right current password is refused");
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    // Nothing changed: after the lockout the old password still works.
    f.clock.advance(Duration::from_secs(31));
    f.login("changer@example.com").await;
}

#[tokio::test]
async fn a_locked_account_and_an_unknown_address_answer_alike() {
    let f = fixture();
    f.register("known@example.com").await;
    fail_five_times(&f, "known@example.com").await;
    fail_five_times(&f, "unknown@example.com").await;
    for password in ["wrong guess!", PASSWORD] {
        let known = f.hub.auth().login("known@example.com", password).await.expect_err("locked");
        let unknown = f.hub.auth().login("unknown@example.com", password).await.expect_err("locked alike");
        assert_eq!(
            (known.kind(), known.code(), known.message()),
            (unknown.kind(), unknown.code(), unknown.message()),
            "a known and an unknown address must be indistinguishable"
        );
        assert_eq!(known.kind(), ErrorKind::RateLimited);
    }
}

#[tokio::test]
async fn reset_mails_are_limited_per_account() {
    let f = fixture();
    f.register("inbox@example.com").await;
    let resets = JobFilter { kind: Some("email.password_reset".into()), ..JobFilter::default() };
    let count = || async { f.store.list_jobs(&resets, &PageRequest::first(100)).await.expect("listed").items.len() };
    f.hub.auth().request_password_reset("inbox@example.com").await.expect("accepted");
    assert_eq!(count().await, 1);
    // With the first mail out of the way (its unique key free again), a second within the minute sends nothing.
    let first = f.store.list_jobs(&resets, &PageRequest::first(1)).await.expect("listed").items[0].id;
    f.hub.jobs().cancel(&techhub_core::Actor::System, first).await.expect("cancelled");
    f.hub.auth().request_password_reset("inbox@example.com").await.expect("answered alike");
    assert_eq!(count().await, 1, "a second reset mail within a minute");
    f.clock.advance(Duration::from_secs(61));
    f.hub.auth().request_password_reset("inbox@example.com").await.expect("accepted");
    assert_eq!(count().await, 2, "a minute later the account may get another");
}
