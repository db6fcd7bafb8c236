//! Rules of [`TokenStore`](crate::storage::TokenStore).

use tokio::task::JoinSet;

use super::fixtures::{at, conflict, t0, user};
use crate::model::{ClientMeta, Consumed, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId};
use crate::storage::{Conflict, DynStorage, TokenSelector};

fn record(raw: &str, kind: TokenKind, user_id: UserId, family: TokenFamilyId) -> TokenRecord {
    TokenRecord::new(TokenHash::of(raw), kind, user_id, family, t0(), at(3600))
}

async fn owner(store: &DynStorage, raw_email: &str) -> UserId {
    store.insert_user(user(raw_email), vec![]).await.expect("insert works").id
}

/// A live token is consumed once (`Fresh`, with `consumed_at`); presenting it again is a `Replayed`.
pub async fn tokens_consume_is_single_use(store: DynStorage) {
    let user_id = owner(&store, "tok@example.com").await;
    let issued = record("reset-1", TokenKind::PasswordReset, user_id, TokenFamilyId::new());
    store.insert_token(issued.clone()).await.expect("insert works");

    let hash = TokenHash::of("reset-1");
    let first = store.consume_token(&hash, TokenKind::PasswordReset, at(10), None).await.expect("consume works");
    let consumed = TokenRecord { consumed_at: Some(at(10)), ..issued };
    assert_eq!(first, Some(Consumed::Fresh(consumed.clone())));
    let second = store.consume_token(&hash, TokenKind::PasswordReset, at(11), None).await.expect("consume works");
    assert_eq!(second, Some(Consumed::Replayed(consumed)));
    let unknown = store.consume_token(&TokenHash::of("nope"), TokenKind::PasswordReset, at(11), None).await;
    assert_eq!(unknown.expect("consume works"), None);
}

/// Of 32 concurrent consumers of one token exactly one gets it fresh.
pub async fn tokens_concurrent_consumers_exactly_one_wins(store: DynStorage) {
    let user_id = owner(&store, "race@example.com").await;
    store.insert_token(record("contended", TokenKind::Refresh, user_id, TokenFamilyId::new())).await.expect("insert");
    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let store = store.clone();
        tasks.spawn(
            async move { store.consume_token(&TokenHash::of("contended"), TokenKind::Refresh, at(1), None).await },
        );
    }
    let mut fresh = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task ran").expect("consume works") {
            Some(Consumed::Fresh(_)) => fresh += 1,
            Some(Consumed::Replayed(_)) => {}
            None => panic!("a live token vanished"),
        }
    }
    assert_eq!(fresh, 1);
}

/// An expired token is never returned, fresh or replayed.
pub async fn tokens_expired_are_never_returned(store: DynStorage) {
    let user_id = owner(&store, "old@example.com").await;
    store.insert_token(record("old", TokenKind::EmailVerify, user_id, TokenFamilyId::new())).await.expect("insert");
    let hash = TokenHash::of("old");
    assert_eq!(store.consume_token(&hash, TokenKind::EmailVerify, at(3600), None).await.expect("works"), None);
    assert_eq!(store.consume_token(&hash, TokenKind::EmailVerify, at(9999), None).await.expect("works"), None);

    store.insert_token(record("used", TokenKind::EmailVerify, user_id, TokenFamilyId::new())).await.expect("insert");
    let used = TokenHash::of("used");
    assert!(store.consume_token(&used, TokenKind::EmailVerify, at(1), None).await.expect("works").is_some());
    assert_eq!(store.consume_token(&used, TokenKind::EmailVerify, at(3601), None).await.expect("works"), None);
}

/// A token of one kind is not consumed as another, and stays usable for its own kind.
pub async fn tokens_kind_must_match(store: DynStorage) {
    let user_id = owner(&store, "kind@example.com").await;
    store.insert_token(record("reset", TokenKind::PasswordReset, user_id, TokenFamilyId::new())).await.expect("ok");
    let hash = TokenHash::of("reset");
    for wrong in [TokenKind::Refresh, TokenKind::EmailVerify] {
        assert_eq!(store.consume_token(&hash, wrong, at(1), None).await.expect("works"), None);
    }
    let right = store.consume_token(&hash, TokenKind::PasswordReset, at(1), None).await.expect("works");
    assert!(matches!(right, Some(Consumed::Fresh(_))));
}

/// A second record with the same hash is a `Duplicate`.
pub async fn tokens_duplicate_hash_conflicts(store: DynStorage) {
    let user_id = owner(&store, "dup@example.com").await;
    store.insert_token(record("same", TokenKind::Refresh, user_id, TokenFamilyId::new())).await.expect("insert");
    let again = record("same", TokenKind::Refresh, user_id, TokenFamilyId::new());
    assert_eq!(conflict(store.insert_token(again).await), Conflict::Duplicate);
}

/// Consuming with a replacement stores it in the same write; a replay stores nothing.
pub async fn tokens_rotation_stores_replacement_atomically(store: DynStorage) {
    let user_id = owner(&store, "rotate@example.com").await;
    let family = TokenFamilyId::new();
    store.insert_token(record("gen-1", TokenKind::Refresh, user_id, family)).await.expect("insert");

    let gen2 = record("gen-2", TokenKind::Refresh, user_id, family);
    let first = store.consume_token(&TokenHash::of("gen-1"), TokenKind::Refresh, at(5), Some(gen2)).await;
    assert!(matches!(first.expect("works"), Some(Consumed::Fresh(_))));
    let live = store.live_tokens(user_id, TokenKind::Refresh, at(5)).await.expect("list works");
    assert_eq!(live.iter().map(|record| record.hash).collect::<Vec<_>>(), [TokenHash::of("gen-2")]);

    let sneaky = record("gen-2b", TokenKind::Refresh, user_id, family);
    let replay = store.consume_token(&TokenHash::of("gen-1"), TokenKind::Refresh, at(6), Some(sneaky)).await;
    assert!(matches!(replay.expect("works"), Some(Consumed::Replayed(_))));
    let unknown = store.consume_token(&TokenHash::of("gen-2b"), TokenKind::Refresh, at(6), None).await;
    assert_eq!(unknown.expect("works"), None, "a replay stored its replacement");
}

/// Revoking a family deletes all its tokens (consumed ones included) and nothing else.
pub async fn tokens_revoke_family(store: DynStorage) {
    let user_id = owner(&store, "fam@example.com").await;
    let (stolen, other) = (TokenFamilyId::new(), TokenFamilyId::new());
    store.insert_token(record("s1", TokenKind::Refresh, user_id, stolen)).await.expect("insert");
    let s2 = record("s2", TokenKind::Refresh, user_id, stolen);
    store.consume_token(&TokenHash::of("s1"), TokenKind::Refresh, at(1), Some(s2)).await.expect("rotate works");
    store.insert_token(record("o1", TokenKind::Refresh, user_id, other)).await.expect("insert");

    assert_eq!(store.revoke_tokens(TokenSelector::Family(stolen)).await.expect("revoke works"), 2);
    assert!(!store.family_is_live(stolen, at(2)).await.expect("works"));
    assert!(store.family_is_live(other, at(2)).await.expect("works"));
    assert_eq!(store.consume_token(&TokenHash::of("s2"), TokenKind::Refresh, at(2), None).await.expect("ok"), None);
    assert_eq!(store.revoke_tokens(TokenSelector::Family(stolen)).await.expect("revoke works"), 0);
}

/// Revoking a user's tokens can select a kind and spare one family; other users keep theirs.
pub async fn tokens_revoke_user_tokens_by_kind_sparing_a_family(store: DynStorage) {
    let user_id = owner(&store, "many@example.com").await;
    let neighbour = owner(&store, "next@example.com").await;
    let (current, laptop, phone) = (TokenFamilyId::new(), TokenFamilyId::new(), TokenFamilyId::new());
    store.insert_token(record("current", TokenKind::Refresh, user_id, current)).await.expect("insert");
    store.insert_token(record("laptop", TokenKind::Refresh, user_id, laptop)).await.expect("insert");
    store.insert_token(record("phone", TokenKind::Refresh, user_id, phone)).await.expect("insert");
    store.insert_token(record("reset", TokenKind::PasswordReset, user_id, TokenFamilyId::new())).await.expect("ok");
    store.insert_token(record("theirs", TokenKind::Refresh, neighbour, TokenFamilyId::new())).await.expect("ok");

    let others = TokenSelector::User { user_id, kind: Some(TokenKind::Refresh), except_family: Some(current) };
    assert_eq!(store.revoke_tokens(others).await.expect("revoke works"), 2);
    let live = store.live_tokens(user_id, TokenKind::Refresh, at(1)).await.expect("list works");
    assert_eq!(live.iter().map(|record| record.family).collect::<Vec<_>>(), [current]);
    assert_eq!(store.live_tokens(user_id, TokenKind::PasswordReset, at(1)).await.expect("list").len(), 1);

    let all = TokenSelector::User { user_id, kind: None, except_family: None };
    assert_eq!(store.revoke_tokens(all).await.expect("revoke works"), 2);
    assert!(store.live_tokens(user_id, TokenKind::Refresh, at(1)).await.expect("list works").is_empty());
    assert_eq!(store.live_tokens(neighbour, TokenKind::Refresh, at(1)).await.expect("list works").len(), 1);
}

/// Live tokens are unconsumed and unexpired, oldest first; a family is live while it holds one.
pub async fn tokens_live_tokens_and_family_liveness(store: DynStorage) {
    let user_id = owner(&store, "live@example.com").await;
    let family = TokenFamilyId::new();
    let mut short = record("short", TokenKind::Refresh, user_id, family);
    short.expires_at = at(60);
    let mut long = record("long", TokenKind::Refresh, user_id, TokenFamilyId::new());
    long.created_at = at(1);
    store.insert_token(long.clone()).await.expect("insert");
    store.insert_token(short.clone()).await.expect("insert");

    let live = store.live_tokens(user_id, TokenKind::Refresh, at(2)).await.expect("list works");
    assert_eq!(live, [short.clone(), long.clone()]);
    assert!(store.family_is_live(family, at(59)).await.expect("works"));
    assert!(!store.family_is_live(family, at(60)).await.expect("works"));
    assert_eq!(store.live_tokens(user_id, TokenKind::Refresh, at(60)).await.expect("list works"), [long]);

    store.consume_token(&TokenHash::of("short"), TokenKind::Refresh, at(3), None).await.expect("consume works");
    assert!(!store.family_is_live(family, at(4)).await.expect("works"), "a consumed chain keeps its session");
    assert!(!store.family_is_live(TokenFamilyId::new(), at(4)).await.expect("works"));
}

/// Pruning deletes every record that expired, and only those.
pub async fn tokens_prune_removes_only_expired(store: DynStorage) {
    let user_id = owner(&store, "prune@example.com").await;
    let mut expired = record("expired", TokenKind::PasswordReset, user_id, TokenFamilyId::new());
    expired.expires_at = at(10);
    store.insert_token(expired).await.expect("insert");
    store.insert_token(record("fresh", TokenKind::PasswordReset, user_id, TokenFamilyId::new())).await.expect("ok");

    assert_eq!(store.prune_tokens(at(11)).await.expect("prune works"), 1);
    assert_eq!(store.prune_tokens(at(11)).await.expect("prune works"), 0);
    let fresh = store.consume_token(&TokenHash::of("fresh"), TokenKind::PasswordReset, at(12), None).await;
    assert!(matches!(fresh.expect("works"), Some(Consumed::Fresh(_))));
}

/// Reading a token by hash changes nothing and shows consumed records too; the family start survives rotation.
pub async fn tokens_get_token_reads_without_consuming(store: DynStorage) {
    let user_id = owner(&store, "peek@example.com").await;
    let family = TokenFamilyId::new();
    let issued = record("peek", TokenKind::Refresh, user_id, family).in_family_since(at(-100));
    store.insert_token(issued.clone()).await.expect("insert");
    assert_eq!(store.get_token(&TokenHash::of("peek")).await.expect("get works"), Some(issued.clone()));
    assert_eq!(store.get_token(&TokenHash::of("peek")).await.expect("get works"), Some(issued.clone()));
    let next = record("peek-2", TokenKind::Refresh, user_id, family).in_family_since(issued.family_created_at);
    let fresh = store.consume_token(&TokenHash::of("peek"), TokenKind::Refresh, at(1), Some(next)).await;
    assert!(matches!(fresh.expect("works"), Some(Consumed::Fresh(_))));
    let consumed = store.get_token(&TokenHash::of("peek")).await.expect("get works").expect("kept until expiry");
    assert_eq!(consumed.consumed_at, Some(at(1)));
    let rotated = store.get_token(&TokenHash::of("peek-2")).await.expect("get works").expect("stored");
    assert_eq!(rotated.family_created_at, at(-100));
    assert_eq!(store.get_token(&TokenHash::of("unknown")).await.expect("get works"), None);
}

/// A session's user is read only while the session lives: what authenticating a request relies on.
pub async fn tokens_session_user_needs_a_live_session(store: DynStorage) {
    let user_id = owner(&store, "session@example.com").await;
    let family = TokenFamilyId::new();
    let mut token = record("session", TokenKind::Refresh, user_id, family);
    token.expires_at = at(60);
    store.insert_token(token).await.expect("insert");

    let user = store.session_user(family, user_id, at(1)).await.expect("works").expect("a live session's user");
    assert_eq!(user.id, user_id);
    // A change to the user shows at once (a store that keeps sessions must forget them on writes).
    let mut renamed = user.clone();
    renamed.name = "Renamed".to_owned();
    store.update_user(renamed, user.version, Vec::new()).await.expect("update");
    let again = store.session_user(family, user_id, at(2)).await.expect("works").expect("still live");
    assert_eq!(again.name, "Renamed");
    assert!(store.session_user(family, user_id, at(60)).await.expect("works").is_none(), "an expired session");
    assert!(store.session_user(TokenFamilyId::new(), user_id, at(1)).await.expect("works").is_none(), "unknown");
    store.revoke_tokens(TokenSelector::Family(family)).await.expect("revoke");
    assert!(store.session_user(family, user_id, at(1)).await.expect("works").is_none(), "a revoked session");
}

/// A token keeps the client that began its family (user agent and address, either may be absent), as read
/// back one by one and in the live listing.
pub async fn tokens_keep_their_client(store: DynStorage) {
    let user_id = owner(&store, "client@example.com").await;
    let browser = ClientMeta::new(Some("Mozilla/5.0 (X11; Linux) Firefox/140.0"), "2001:db8::7".parse().ok());
    let with = record("with-client", TokenKind::Refresh, user_id, TokenFamilyId::new()).from_client(browser);
    let partial = ClientMeta::new(None, "192.0.2.44".parse().ok());
    let half = record("half-client", TokenKind::Refresh, user_id, TokenFamilyId::new()).from_client(partial);
    let without = record("no-client", TokenKind::Refresh, user_id, TokenFamilyId::new());
    for token in [&with, &half, &without] {
        store.insert_token(token.clone()).await.expect("insert");
        assert_eq!(store.get_token(&token.hash).await.expect("get works").as_ref(), Some(token));
    }
    let live = store.live_tokens(user_id, TokenKind::Refresh, t0()).await.expect("live");
    let clients: Vec<&ClientMeta> = live.iter().map(|token| &token.client).collect();
    assert_eq!(clients.len(), 3);
    for token in [&with, &half, &without] {
        assert!(clients.contains(&&token.client), "{:?} listed", token.client);
    }
}
