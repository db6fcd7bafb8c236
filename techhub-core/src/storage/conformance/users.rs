//! Rules of [`UserStore`](crate::storage::UserStore).

use std::collections::HashSet;

use tokio::task::JoinSet;

use super::fixtures::{admin, all_jobs, at, conflict, email, job, spec, t0, user};
use crate::model::{
    Build, BuildFilter, Channel, Cursor, Module, NewJob, Notification, PageRequest, PasswordHash, Role, TokenFamilyId,
    TokenHash, TokenKind, TokenRecord, User, UserCounts, UserFilter, UserId,
};
use crate::storage::{Conflict, DynStorage, StoreError};

/// Insert returns the stored user with version 1; it reads back by id and by normalised email, hash included.
pub async fn users_insert_and_get_round_trip(store: DynStorage) {
    let mut new = user("Ada@Example.com");
    new.password_hash = Some(PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"));
    let stored = store.insert_user(new.clone(), vec![]).await.expect("insert works");
    assert_eq!(stored.version, 1);
    assert_eq!(User { version: 1, ..new.clone() }, stored);

    assert_eq!(store.get_user(stored.id).await.expect("get works"), Some(stored.clone()));
    assert_eq!(store.get_user_by_email(&email("ada@example.com")).await.expect("get works"), Some(stored));
    assert_eq!(store.get_user(UserId::new()).await.expect("get works"), None);
    assert_eq!(store.get_user_by_email(&email("nobody@example.com")).await.expect("get works"), None);
}

/// Email is unique after normalisation (case, surrounding space, NFKC); the loser stores nothing.
pub async fn users_email_unique_after_normalisation(store: DynStorage) {
    store.insert_user(user("kim@example.com"), vec![]).await.expect("first insert works");
    for variant in ["KIM@example.com", "  kim@EXAMPLE.com\t", "\u{212A}im@example.com", "\u{FF4B}im@example.com"] {
        let result = store.insert_user(user(variant), vec![job("email.welcome")]).await;
        assert_eq!(conflict(result), Conflict::EmailTaken, "{variant:?}");
    }
    let page = store.list_users(&UserFilter::default(), &PageRequest::first(10)).await.expect("list works");
    assert_eq!(page.items.len(), 1);
    assert!(all_jobs(&store).await.is_empty(), "a refused insert enqueued its follow-up job");
}

/// Of 16 concurrent inserts of one address exactly one wins; the others get `EmailTaken`, and only the
/// winner's follow-up job exists.
pub async fn users_concurrent_inserts_of_one_email_one_wins(store: DynStorage) {
    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            let raw = if n % 2 == 0 { "race@example.com" } else { " RACE@example.com " };
            store.insert_user(user(raw), vec![job("email.welcome")]).await
        });
    }
    let mut winners = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task ran") {
            Ok(_) => winners += 1,
            Err(error) => assert_eq!(error.conflict(), Some(Conflict::EmailTaken), "{error:?}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(all_jobs(&store).await.len(), 1);
}

/// A second user with an existing id is a `Duplicate`.
pub async fn users_duplicate_id_conflicts(store: DynStorage) {
    let first = store.insert_user(user("one@example.com"), vec![]).await.expect("insert works");
    let twin = User { email: email("two@example.com"), ..first.clone() };
    assert_eq!(conflict(store.insert_user(twin, vec![]).await), Conflict::Duplicate);
    assert_eq!(store.get_user_by_email(&email("two@example.com")).await.expect("get works"), None);
}

/// An update with the current version bumps it; a stale version is a `VersionMismatch` and changes nothing.
pub async fn users_update_is_versioned(store: DynStorage) {
    let stored = store.insert_user(user("ver@example.com"), vec![]).await.expect("insert works");
    let renamed = User { name: "Renamed".to_owned(), updated_at: at(5), ..stored.clone() };
    let updated = store.update_user(renamed, 1, vec![]).await.expect("update works");
    assert_eq!((updated.version, updated.name.as_str(), updated.updated_at), (2, "Renamed", at(5)));

    let stale = User { name: "Lost update".to_owned(), ..stored.clone() };
    assert_eq!(conflict(store.update_user(stale, 1, vec![job("email.notice")]).await), Conflict::VersionMismatch);
    assert_eq!(store.get_user(stored.id).await.expect("get works"), Some(updated));
    assert!(all_jobs(&store).await.is_empty());
}

/// Updating a user that does not exist is `NotFound`.
pub async fn users_update_missing_user_is_not_found(store: DynStorage) {
    let ghost = user("ghost@example.com");
    assert!(matches!(store.update_user(ghost, 1, vec![]).await, Err(StoreError::NotFound)));
    assert!(matches!(store.delete_user(UserId::new(), None).await, Err(StoreError::NotFound)));
}

/// Changing the email frees the old address; taking another user's address is `EmailTaken`.
pub async fn users_update_email_frees_old_and_refuses_taken(store: DynStorage) {
    let a = store.insert_user(user("a@example.com"), vec![]).await.expect("insert works");
    let b = store.insert_user(user("b@example.com"), vec![]).await.expect("insert works");

    let taken = User { email: email("B@example.com"), ..a.clone() };
    assert_eq!(conflict(store.update_user(taken, a.version, vec![]).await), Conflict::EmailTaken);
    assert_eq!(store.get_user(a.id).await.expect("get works"), Some(a.clone()));

    let moved = User { email: email("c@example.com"), ..a.clone() };
    store.update_user(moved, a.version, vec![]).await.expect("update works");
    assert_eq!(store.get_user_by_email(&email("a@example.com")).await.expect("get works"), None);
    assert_eq!(store.get_user_by_email(&email("c@example.com")).await.expect("get works").map(|u| u.id), Some(a.id));
    store.insert_user(user("a@example.com"), vec![]).await.expect("the old address is free");
    assert_eq!(store.get_user_by_email(&email("b@example.com")).await.expect("get works"), Some(b));
}

/// The last active admin cannot be demoted, disabled or deleted; with two, one can.
pub async fn users_last_active_admin_is_protected(store: DynStorage) {
    let root = store.insert_user(admin("root@example.com"), vec![]).await.expect("insert works");
    let demoted = User { role: Role::User, ..root.clone() };
    assert_eq!(conflict(store.update_user(demoted, root.version, vec![]).await), Conflict::LastActiveAdmin);
    let disabled = User { active: false, ..root.clone() };
    assert_eq!(conflict(store.update_user(disabled, root.version, vec![]).await), Conflict::LastActiveAdmin);
    assert_eq!(conflict(store.delete_user(root.id, None).await), Conflict::LastActiveAdmin);
    assert_eq!(store.get_user(root.id).await.expect("get works"), Some(root.clone()));

    // A disabled admin does not count as active.
    let mut spare = admin("spare@example.com");
    spare.active = false;
    let spare = store.insert_user(spare, vec![]).await.expect("insert works");
    assert_eq!(conflict(store.delete_user(root.id, None).await), Conflict::LastActiveAdmin);

    let enabled = store.update_user(User { active: true, ..spare }, 1, vec![]).await.expect("update works");
    store.update_user(User { role: Role::User, ..root.clone() }, root.version, vec![]).await.expect("two admins");
    assert_eq!(conflict(store.delete_user(enabled.id, None).await), Conflict::LastActiveAdmin);
}

/// Deleting a user deletes every token it holds (its sessions end) and frees its email; others' stay.
pub async fn users_delete_ends_sessions_and_frees_email(store: DynStorage) {
    let gone = store.insert_user(user("gone@example.com"), vec![]).await.expect("insert works");
    let kept = store.insert_user(user("kept@example.com"), vec![]).await.expect("insert works");
    for (owner, raw) in [(gone.id, "gone-refresh"), (gone.id, "gone-reset"), (kept.id, "kept-refresh")] {
        let kind = if raw.ends_with("reset") { TokenKind::PasswordReset } else { TokenKind::Refresh };
        let record = TokenRecord::new(TokenHash::of(raw), kind, owner, TokenFamilyId::new(), t0(), at(3600));
        store.insert_token(record).await.expect("insert works");
    }
    store.delete_user(gone.id, None).await.expect("delete works");

    assert_eq!(store.get_user(gone.id).await.expect("get works"), None);
    assert!(store.live_tokens(gone.id, TokenKind::Refresh, t0()).await.expect("list works").is_empty());
    let reset = store.consume_token(&TokenHash::of("gone-reset"), TokenKind::PasswordReset, at(1), None).await;
    assert_eq!(reset.expect("consume works"), None);
    assert_eq!(store.live_tokens(kept.id, TokenKind::Refresh, t0()).await.expect("list works").len(), 1);
    store.insert_user(user("gone@example.com"), vec![]).await.expect("the email is free again");
}

/// Deleting a user keeps the jobs and builds it created and the notifications sent to it.
pub async fn users_delete_keeps_jobs_builds_and_notifications(store: DynStorage) {
    let gone = store.insert_user(user("leaver@example.com"), vec![job("email.welcome")]).await.expect("insert");
    let export = spec(NewJob::new("users.export", serde_json::json!({})).created_by(gone.id));
    store.enqueue(export.clone()).await.expect("enqueue works");
    let mut build = Build::new("web", "main", vec![Module::new("compile")], t0());
    build.created_by = Some(gone.id);
    store.insert_builds(vec![build.clone()], vec![]).await.expect("insert works");
    let mail = Notification::new(Channel::Email, "leaver@example.com", "Bye", "Farewell", t0());
    store.insert_notification(mail.clone()).await.expect("insert works");

    store.delete_user(gone.id, None).await.expect("delete works");

    assert_eq!(all_jobs(&store).await.len(), 2, "the user's jobs went with it");
    assert_eq!(store.get_job(export.id).await.expect("get works").and_then(|job| job.created_by), Some(gone.id));
    assert_eq!(store.get_build(build.id).await.expect("get works").and_then(|build| build.created_by), Some(gone.id));
    let mine = BuildFilter { created_by: Some(gone.id), ..Default::default() };
    assert_eq!(store.list_builds(&mine, &PageRequest::first(10)).await.expect("list works").items.len(), 1);
    assert!(store.get_notification(mail.id).await.expect("get works").is_some());
}

/// Delete with an expected version refuses a stale one.
pub async fn users_delete_checks_expected_version(store: DynStorage) {
    let stored = store.insert_user(user("del@example.com"), vec![]).await.expect("insert works");
    assert_eq!(conflict(store.delete_user(stored.id, Some(7)).await), Conflict::VersionMismatch);
    assert!(store.get_user(stored.id).await.expect("get works").is_some());
    store.delete_user(stored.id, Some(stored.version)).await.expect("delete works");
}

/// Cursor listing never skips nor repeats a user while others are inserted concurrently.
pub async fn users_cursor_listing_never_skips_or_repeats_during_inserts(store: DynStorage) {
    let mut before = HashSet::new();
    for n in 0..60 {
        before.insert(store.insert_user(user(&format!("before{n}@example.com")), vec![]).await.expect("insert").id);
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..60 {
                store.insert_user(user(&format!("during{n}@example.com")), vec![]).await.expect("insert works");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen: Vec<UserId> = Vec::new();
    let mut page = PageRequest::first(7);
    loop {
        let batch = store.list_users(&UserFilter::default(), &page).await.expect("list works");
        assert!(batch.items.len() <= 7);
        seen.extend(batch.items.iter().map(|user| user.id));
        tokio::task::yield_now().await;
        match batch.next_cursor {
            Some(cursor) => page = PageRequest::after(cursor, 7),
            None => break,
        }
    }
    writer.await.expect("writer finished");
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "a user repeated or the order broke");
    let seen: HashSet<UserId> = seen.into_iter().collect();
    assert!(before.is_subset(&seen), "a user that existed before listing was skipped");
}

/// Cursor listing never skips nor repeats a user while others are deleted concurrently: every user that
/// lives through the whole listing is seen exactly once.
pub async fn users_cursor_listing_never_skips_or_repeats_during_deletes(store: DynStorage) {
    let mut kept = HashSet::new();
    let mut doomed = Vec::new();
    for n in 0..120 {
        let stored = store.insert_user(user(&format!("user{n}@example.com")), vec![]).await.expect("insert").id;
        if n % 2 == 0 {
            doomed.push(stored);
        } else {
            kept.insert(stored);
        }
    }
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move {
            for id in doomed {
                store.delete_user(id, None).await.expect("delete works");
                tokio::task::yield_now().await;
            }
        })
    };
    let mut seen: Vec<UserId> = Vec::new();
    let mut page = PageRequest::first(7);
    loop {
        let batch = store.list_users(&UserFilter::default(), &page).await.expect("list works");
        seen.extend(batch.items.iter().map(|user| user.id));
        tokio::task::yield_now().await;
        match batch.next_cursor {
            Some(cursor) => page = PageRequest::after(cursor, 7),
            None => break,
        }
    }
    deleter.await.expect("deleter finished");
    assert!(seen.windows(2).all(|pair| pair[0] < pair[1]), "a user repeated or the order broke");
    let seen: HashSet<UserId> = seen.into_iter().collect();
    assert!(kept.is_subset(&seen), "a user that was never deleted was skipped");
}

/// Listing filters by role, active and a case-insensitive substring of email or name.
pub async fn users_list_filters_by_role_active_and_substring(store: DynStorage) {
    let mut named = user("grace@navy.example");
    named.name = "Grace Hopper".to_owned();
    store.insert_user(named, vec![]).await.expect("insert works");
    store.insert_user(admin("root@example.com"), vec![]).await.expect("insert works");
    let mut disabled = user("off@example.com");
    disabled.active = false;
    store.insert_user(disabled, vec![]).await.expect("insert works");

    let emails = |filter: UserFilter| {
        let store = store.clone();
        async move {
            let page = store.list_users(&filter, &PageRequest::first(50)).await.expect("list works");
            page.items.into_iter().map(|user| user.email.to_string()).collect::<Vec<_>>()
        }
    };
    assert_eq!(emails(UserFilter { role: Some(Role::Admin), ..Default::default() }).await, ["root@example.com"]);
    assert_eq!(emails(UserFilter { active: Some(false), ..Default::default() }).await, ["off@example.com"]);
    assert_eq!(emails(UserFilter { query: Some("HOPPER".into()), ..Default::default() }).await, ["grace@navy.example"]);
    assert_eq!(emails(UserFilter { query: Some("navy".into()), ..Default::default() }).await, ["grace@navy.example"]);
    assert_eq!(emails(UserFilter { query: Some("%".into()), ..Default::default() }).await, Vec::<String>::new());
    assert_eq!(emails(UserFilter { query: Some("_".into()), ..Default::default() }).await, Vec::<String>::new());
    assert_eq!(emails(UserFilter::default()).await.len(), 3);
}

/// User counts (all, active, admins) follow inserts, updates and deletes, refused writes changing nothing.
pub async fn users_counts_follow_every_write(store: DynStorage) {
    let counts = |total, active, admins| UserCounts { total, active, admins };
    assert_eq!(store.count_users().await.expect("counts"), counts(0, 0, 0));
    let root = store.insert_user(admin("root@example.com"), vec![]).await.expect("insert works");
    let kim = store.insert_user(user("kim@example.com"), vec![]).await.expect("insert works");
    let mut off = user("off@example.com");
    off.active = false;
    let off = store.insert_user(off, vec![]).await.expect("insert works");
    assert_eq!(store.count_users().await.expect("counts"), counts(3, 2, 1));
    let _ = conflict(store.insert_user(user("KIM@example.com"), vec![]).await);
    assert_eq!(store.count_users().await.expect("counts"), counts(3, 2, 1), "a refused insert counted");

    let kim = store.update_user(User { role: Role::Admin, ..kim.clone() }, kim.version, vec![]).await.expect("ok");
    store.update_user(User { active: true, ..off.clone() }, off.version, vec![]).await.expect("update works");
    assert_eq!(store.count_users().await.expect("counts"), counts(3, 3, 2));
    let stale = store.update_user(User { active: false, ..off.clone() }, off.version, vec![]).await;
    assert_eq!(conflict(stale), Conflict::VersionMismatch);
    assert_eq!(store.count_users().await.expect("counts"), counts(3, 3, 2), "a refused update counted");

    store.update_user(User { active: false, ..kim.clone() }, kim.version, vec![]).await.expect("update works");
    assert_eq!(store.count_users().await.expect("counts"), counts(3, 2, 2), "a disabled admin is still an admin");
    store.delete_user(kim.id, None).await.expect("delete works");
    store.delete_user(off.id, None).await.expect("delete works");
    assert_eq!(store.count_users().await.expect("counts"), counts(1, 1, 1));
    assert_eq!(conflict(store.delete_user(root.id, None).await), Conflict::LastActiveAdmin);
    assert_eq!(store.count_users().await.expect("counts"), counts(1, 1, 1));
}

/// A cursor the store did not issue is `InvalidInput`.
pub async fn users_list_rejects_forged_cursor(store: DynStorage) {
    let page = PageRequest::after(Cursor::from_client("'; DROP TABLE users; --"), 10);
    assert!(matches!(store.list_users(&UserFilter::default(), &page).await, Err(StoreError::InvalidInput(_))));
}

/// A user and its follow-up jobs land together, and a refused user leaves no job behind.
pub async fn users_insert_with_follow_up_jobs_is_atomic(store: DynStorage) {
    let new = user("welcome@example.com");
    let welcome = job("email.welcome");
    let verify = job("email.verify");
    store.insert_user(new.clone(), vec![welcome.clone(), verify.clone()]).await.expect("insert works");
    let ids: Vec<_> = all_jobs(&store).await.into_iter().map(|job| job.id).collect();
    assert_eq!(ids, [welcome.id, verify.id]);

    // The email is taken: neither the user nor its jobs are stored.
    let refused = store.insert_user(user("WELCOME@example.com"), vec![job("email.welcome")]).await;
    assert_eq!(conflict(refused), Conflict::EmailTaken);
    // A follow-up job that cannot be stored (its id exists) refuses the user too.
    let orphan = user("orphan@example.com");
    assert_eq!(conflict(store.insert_user(orphan.clone(), vec![welcome.clone()]).await), Conflict::Duplicate);
    assert_eq!(store.get_user(orphan.id).await.expect("get works"), None);
    assert_eq!(all_jobs(&store).await.len(), 2);
}

/// An update and its follow-up jobs land together; a stale update leaves no job behind.
pub async fn users_update_with_follow_up_jobs_is_atomic(store: DynStorage) {
    let stored = store.insert_user(user("notice@example.com"), vec![]).await.expect("insert works");
    let notice = crate::model::Job::new(NewJob::new("email.notice", serde_json::json!({})), t0()).expect("valid");
    let changed = User { name: "Changed".to_owned(), ..stored.clone() };
    store.update_user(changed.clone(), stored.version, vec![notice.clone()]).await.expect("update works");
    assert_eq!(all_jobs(&store).await.into_iter().map(|job| job.id).collect::<Vec<_>>(), [notice.id]);

    let duplicate_job = store.update_user(changed.clone(), stored.version + 1, vec![notice]).await;
    assert_eq!(conflict(duplicate_job), Conflict::Duplicate);
    assert_eq!(store.get_user(stored.id).await.expect("get works").map(|user| user.version), Some(2));

    // A stale version refuses the update, and its (otherwise valid) follow-up job is not stored either.
    let stale = store.update_user(changed, stored.version, vec![job("email.notice")]).await;
    assert_eq!(conflict(stale), Conflict::VersionMismatch);
    assert_eq!(all_jobs(&store).await.len(), 1, "a refused update left a follow-up job behind");
}

/// Login failures are counted atomically (none lost under concurrency), cleared on success, kept by updates,
/// and change no version.
pub async fn users_login_failures_count_atomically(store: DynStorage) {
    let stored = store.insert_user(user("locked@example.com"), vec![]).await.expect("insert works");
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.spawn(async move { store.record_login_failure(stored.id, at(3)).await.expect("counts") });
    }
    let mut counts = Vec::new();
    while let Some(count) = tasks.join_next().await {
        counts.push(count.expect("task ran"));
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=16).collect::<Vec<u32>>(), "every failure got its own number");

    let counted = store.get_user(stored.id).await.expect("get works").expect("exists");
    assert_eq!((counted.failed_logins, counted.last_failed_login_at, counted.version), (16, Some(at(3)), 1));
    // An update made from an older read keeps the counters.
    let renamed = store.update_user(User { name: "Renamed".into(), ..stored.clone() }, 1, vec![]).await.expect("ok");
    assert_eq!(renamed.failed_logins, 16);

    store.clear_login_failures(stored.id).await.expect("clears");
    let cleared = store.get_user(stored.id).await.expect("get works").expect("exists");
    assert_eq!((cleared.failed_logins, cleared.last_failed_login_at, cleared.version), (0, None, 2));
    assert!(matches!(store.record_login_failure(UserId::new(), at(4)).await, Err(StoreError::NotFound)));
    assert!(matches!(store.clear_login_failures(UserId::new()).await, Err(StoreError::NotFound)));
}
