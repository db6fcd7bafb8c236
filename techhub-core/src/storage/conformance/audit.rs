//! Rules of [`AuditStore`](crate::storage::AuditStore).

use serde_json::json;

use super::fixtures::{at, conflict};
use crate::model::{AuditAction, AuditEntry, AuditFilter, AuditOutcome, ClientMeta, PageRequest, UserId};
use crate::storage::{Conflict, DynStorage, StoreError};

fn entry(action: AuditAction, seconds: i64, user: Option<UserId>) -> AuditEntry {
    AuditEntry::new(action, AuditOutcome::Success, at(seconds)).on(user)
}

async fn all(store: &DynStorage, filter: &AuditFilter, limit: usize) -> Vec<AuditEntry> {
    let mut items = Vec::new();
    let mut page = PageRequest::first(limit);
    loop {
        let batch = store.list_audit(filter, &page).await.expect("list works");
        items.extend(batch.items);
        match batch.next_cursor {
            Some(cursor) => page = PageRequest::after(cursor, limit),
            None => return items,
        }
    }
}

/// Appended entries read back whole, in the order they were made; an id is appended once.
pub async fn audit_append_reads_back_in_order_and_never_replaces(store: DynStorage) {
    let actor = UserId::new();
    let client = ClientMeta::new(Some("Agent/1.0"), "2001:db8::9".parse().ok());
    let first = AuditEntry::new(AuditAction::LoginFailed, AuditOutcome::Failure, at(1))
        .by(None)
        .on(Some(actor))
        .from_client(&client)
        .detail(json!({ "reason": "invalid_credentials" }));
    let second =
        entry(AuditAction::UserUpdated, 2, Some(UserId::new())).by(Some(actor)).detail(json!({ "fields": ["role"] }));
    store.append_audit(first.clone()).await.expect("appended");
    store.append_audit(second.clone()).await.expect("appended");
    let replaced = AuditEntry { outcome: AuditOutcome::Success, ..first.clone() };
    assert_eq!(conflict(store.append_audit(replaced).await), Conflict::Duplicate);
    assert_eq!(all(&store, &AuditFilter::default(), 10).await, [first, second]);
}

/// Filters by account (as subject or actor), action and time; cursor pages never skip nor repeat, also while
/// entries are appended between pages; a forged cursor is invalid input.
pub async fn audit_list_filters_and_pages_by_cursor(store: DynStorage) {
    let alice = UserId::new();
    let bob = UserId::new();
    let mut appended = Vec::new();
    for n in 0..12 {
        let (action, user) =
            if n % 3 == 0 { (AuditAction::LoginSucceeded, alice) } else { (AuditAction::UserCreated, bob) };
        let made = entry(action, n, Some(user));
        store.append_audit(made.clone()).await.expect("appended");
        appended.push(made);
    }
    let by_bob = entry(AuditAction::UserDeleted, 20, Some(UserId::new())).by(Some(bob));
    store.append_audit(by_bob.clone()).await.expect("appended");
    appended.push(by_bob.clone());

    let alices = AuditFilter { user_id: Some(alice), ..AuditFilter::default() };
    assert_eq!(all(&store, &alices, 2).await.len(), 4);
    let bobs = all(&store, &AuditFilter { user_id: Some(bob), ..AuditFilter::default() }, 3).await;
    assert_eq!(bobs.len(), 9, "subject or actor");
    assert_eq!(bobs.last(), Some(&by_bob));
    let logins = AuditFilter { action: Some(AuditAction::LoginSucceeded), ..AuditFilter::default() };
    assert!(all(&store, &logins, 5).await.iter().all(|found| found.action == AuditAction::LoginSucceeded));
    let recent = AuditFilter { since: Some(at(9)), ..AuditFilter::default() };
    assert_eq!(all(&store, &recent, 5).await, appended[9..]);

    // Appending between pages neither skips nor repeats.
    let first = store.list_audit(&AuditFilter::default(), &PageRequest::first(5)).await.expect("page");
    let later = entry(AuditAction::SessionRevoked, 30, Some(alice));
    store.append_audit(later.clone()).await.expect("appended");
    let mut seen = first.items.clone();
    seen.extend(all_after(&store, first.next_cursor.expect("more")).await);
    let mut expected = appended.clone();
    expected.push(later);
    assert_eq!(seen, expected);

    let forged = PageRequest::after(crate::model::Cursor::from_client("nonsense"), 5);
    assert!(matches!(store.list_audit(&AuditFilter::default(), &forged).await, Err(StoreError::InvalidInput(_))));
}

async fn all_after(store: &DynStorage, cursor: crate::model::Cursor) -> Vec<AuditEntry> {
    let mut items = Vec::new();
    let mut page = PageRequest::after(cursor, 5);
    loop {
        let batch = store.list_audit(&AuditFilter::default(), &page).await.expect("list works");
        items.extend(batch.items);
        match batch.next_cursor {
            Some(cursor) => page = PageRequest::after(cursor, 5),
            None => return items,
        }
    }
}

/// Pruning deletes exactly the entries older than the horizon and says how many.
pub async fn audit_prune_removes_only_older_entries(store: DynStorage) {
    let entries: Vec<AuditEntry> = (0..6).map(|n| entry(AuditAction::LoginSucceeded, n * 10, None)).collect();
    for made in &entries {
        store.append_audit(made.clone()).await.expect("appended");
    }
    assert_eq!(store.prune_audit(at(30)).await.expect("pruned"), 3);
    assert_eq!(all(&store, &AuditFilter::default(), 10).await, entries[3..]);
    assert_eq!(store.prune_audit(at(30)).await.expect("pruned"), 0);
}
