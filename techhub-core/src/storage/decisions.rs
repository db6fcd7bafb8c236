//! Decisions every store makes the same way, made once here.
//!
//! A store reads what a decision needs through its own mechanics (a SQL query, a sled transaction, a map
//! lookup) and writes what the decision says; the decision itself (which conflict wins, what an update keeps,
//! whether a token is fresh) lives in these functions, so every store, present and future, behaves alike.
//!
//! Decisions that read lazily take the reads as closures returning the store's own error type `E`, and answer
//! `Result<Result<T, Conflict>, E>`: the outer error is a failed read (passed on as is, so a sled transaction
//! can still retry), the inner one the refusal the contract names.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Conflict, StoreError, StoreResult};
use crate::model::{Consumed, Email, Endpoint, Job, JobState, PageRequest, TokenKind, TokenRecord, User, UserId};

/// The id a listing continues after, or [`StoreError::InvalidInput`] for a cursor no store issued.
pub fn start_after(page: &PageRequest) -> StoreResult<Option<Uuid>> {
    page.position().map_err(|error| StoreError::InvalidInput(error.message().to_owned()))
}

/// What [`UserStore::update_user`](super::UserStore::update_user) stores in place of `stored`, or the
/// conflict that refuses it.
///
/// Checked in the contract's order: a stale `expected_version`, then a new email held by another user
/// (`email_taken`, asked only when the email changes), then the last active admin (`active_admins`, asked only
/// when an active admin would stop being one). The result keeps `id`, `created_at` and the login-failure
/// counters of `stored` and carries version `expected_version + 1`.
pub fn merge_user_update<E>(
    stored: &User,
    mut update: User,
    expected_version: u64,
    email_taken: impl FnOnce(&Email, UserId) -> Result<bool, E>,
    active_admins: impl FnOnce() -> Result<u64, E>,
) -> Result<Result<User, Conflict>, E> {
    if stored.version != expected_version {
        return Ok(Err(Conflict::VersionMismatch));
    }
    if stored.email != update.email && email_taken(&update.email, stored.id)? {
        return Ok(Err(Conflict::EmailTaken));
    }
    if let Some(refusal) = last_admin_guard(stored, Some(&update), active_admins)? {
        return Ok(Err(refusal));
    }
    update.id = stored.id;
    update.version = expected_version + 1;
    update.created_at = stored.created_at;
    update.failed_logins = stored.failed_logins;
    update.last_failed_login_at = stored.last_failed_login_at;
    Ok(Ok(update))
}

/// What [`EndpointStore::update_endpoint`](super::EndpointStore::update_endpoint) stores in place of
/// `stored`, or [`Conflict::VersionMismatch`] for a stale `expected_version`. The result keeps `id` and
/// `created_at` of `stored` and carries version `expected_version + 1`.
pub fn merge_endpoint_update(
    stored: &Endpoint,
    mut update: Endpoint,
    expected_version: u64,
) -> Result<Endpoint, Conflict> {
    if stored.version != expected_version {
        return Err(Conflict::VersionMismatch);
    }
    update.id = stored.id;
    update.created_at = stored.created_at;
    update.version = expected_version + 1;
    Ok(update)
}

/// Whether [`UserStore::delete_user`](super::UserStore::delete_user) may delete `stored`: a stale
/// `expected_version` or the last active admin refuse it.
pub fn check_user_delete<E>(
    stored: &User,
    expected_version: Option<u64>,
    active_admins: impl FnOnce() -> Result<u64, E>,
) -> Result<Result<(), Conflict>, E> {
    if expected_version.is_some_and(|version| version != stored.version) {
        return Ok(Err(Conflict::VersionMismatch));
    }
    Ok(last_admin_guard(stored, None, active_admins)?.map_or(Ok(()), Err))
}

/// [`Conflict::LastActiveAdmin`] if replacing `stored` by `next` (`None`: deleting it) would leave no active
/// admin where `stored` was one; `active_admins` (counting `stored`) is asked only then.
fn last_admin_guard<E>(
    stored: &User,
    next: Option<&User>,
    active_admins: impl FnOnce() -> Result<u64, E>,
) -> Result<Option<Conflict>, E> {
    let demoted = stored.is_active_admin() && !next.is_some_and(User::is_active_admin);
    Ok((demoted && active_admins()? <= 1).then_some(Conflict::LastActiveAdmin))
}

/// What [`TokenStore::consume_token`](super::TokenStore::consume_token) answers for the record stored under
/// the presented hash (`None`: no record).
///
/// A record of another kind, or expired at `now`, is as good as absent (`None`). A record consumed before is
/// [`Consumed::Replayed`] and nothing changes. A live one is [`Consumed::Fresh`], carrying the record as the
/// store must now write it (`consumed_at = now`).
pub fn consume_token(stored: Option<TokenRecord>, kind: TokenKind, now: DateTime<Utc>) -> Option<Consumed> {
    let mut record = stored.filter(|record| record.kind == kind && now < record.expires_at)?;
    if record.consumed_at.is_some() {
        return Some(Consumed::Replayed(record));
    }
    record.consumed_at = Some(now);
    Some(Consumed::Fresh(record))
}

/// Whether [`JobStore::retry`](super::JobStore::retry) may queue `job` again: only a `failed` or `cancelled`
/// job ([`Conflict::InvalidState`] otherwise), and only while no live job holds its unique key
/// (`key_is_held`, asked only for a keyed job; [`Conflict::Duplicate`] if one does).
pub fn check_retry<E>(job: &Job, key_is_held: impl FnOnce(&str) -> Result<bool, E>) -> Result<Result<(), Conflict>, E> {
    if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
        return Ok(Err(Conflict::InvalidState));
    }
    // The job is finished, so a holder of its key is another, live job.
    if let Some(key) = &job.unique_key
        && key_is_held(key)?
    {
        return Ok(Err(Conflict::Duplicate));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use chrono::Duration;

    use super::*;
    use crate::model::{Role, TokenFamilyId, TokenHash};

    fn user(role: Role) -> User {
        let mut user = User::new(Email::parse("kim@example.com").expect("valid"), "Kim", role, Utc::now());
        user.version = 3;
        user
    }

    fn never<T>() -> Result<T, Infallible> {
        panic!("this read is not needed for the decision")
    }

    #[test]
    fn update_checks_version_before_reading_anything() {
        let stored = user(Role::Admin);
        let verdict = merge_user_update(&stored, stored.clone(), 2, |_, _| never(), never).expect("no read fails");
        assert_eq!(verdict, Err(Conflict::VersionMismatch));
    }

    #[test]
    fn update_keeps_identity_and_counters_and_bumps_the_version() {
        let mut stored = user(Role::User);
        stored.failed_logins = 4;
        let mut update = stored.clone();
        update.name = "Kim Lee".into();
        update.failed_logins = 0;
        update.created_at = Utc::now() + Duration::days(1);
        let merged = merge_user_update(&stored, update, 3, |_, _| never(), never).expect("reads").expect("allowed");
        assert_eq!((merged.version, merged.failed_logins, merged.created_at), (4, 4, stored.created_at));
        assert_eq!(merged.name, "Kim Lee");
    }

    #[test]
    fn update_refuses_a_taken_email_and_the_last_admin() {
        let stored = user(Role::Admin);
        let mut moved = stored.clone();
        moved.email = Email::parse("lee@example.com").expect("valid");
        let taken = merge_user_update(&stored, moved, 3, |_, _| Ok::<_, Infallible>(true), never).expect("reads");
        assert_eq!(taken, Err(Conflict::EmailTaken));

        let mut demoted = stored.clone();
        demoted.role = Role::User;
        let last = merge_user_update(&stored, demoted.clone(), 3, |_, _| never(), || Ok::<_, Infallible>(1));
        assert_eq!(last.expect("reads"), Err(Conflict::LastActiveAdmin));
        let one_of_two = merge_user_update(&stored, demoted, 3, |_, _| never(), || Ok::<_, Infallible>(2));
        assert!(one_of_two.expect("reads").is_ok());
    }

    #[test]
    fn delete_guards_version_and_last_admin() {
        let admin = user(Role::Admin);
        assert_eq!(check_user_delete(&admin, Some(1), never).expect("reads"), Err(Conflict::VersionMismatch));
        assert_eq!(
            check_user_delete(&admin, None, || Ok::<_, Infallible>(1)).expect("reads"),
            Err(Conflict::LastActiveAdmin)
        );
        assert_eq!(check_user_delete(&user(Role::User), Some(3), never).expect("reads"), Ok(()));
    }

    #[test]
    fn consume_tells_fresh_replayed_expired_and_foreign_kinds_apart() {
        let now = Utc::now();
        let record = TokenRecord::new(
            TokenHash::of("raw"),
            TokenKind::Refresh,
            UserId::new(),
            TokenFamilyId::new(),
            now,
            now + Duration::minutes(5),
        );
        let Some(Consumed::Fresh(fresh)) = consume_token(Some(record.clone()), TokenKind::Refresh, now) else {
            panic!("a live token is fresh")
        };
        assert_eq!(fresh.consumed_at, Some(now));
        assert!(matches!(consume_token(Some(fresh), TokenKind::Refresh, now), Some(Consumed::Replayed(_))));
        assert_eq!(consume_token(Some(record.clone()), TokenKind::PasswordReset, now), None);
        assert_eq!(consume_token(Some(record.clone()), TokenKind::Refresh, record.expires_at), None);
        assert_eq!(consume_token(None, TokenKind::Refresh, now), None);
    }
}
