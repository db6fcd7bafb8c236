//! Users: rows by id (id order gives stable cursors), a unique index from normalised email to id, and a counter
//! of active admins kept in the same transactions, so the last-admin rule reads one key, not every user.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sled::Tree;
use sled::transaction::TransactionalTree;
use techhub_core::model::{Email, Job, Page, PageRequest, Role, User, UserFilter, UserId};
use techhub_core::storage::{Conflict, StoreError, StoreResult, UserStore};

use crate::SledStore;
use crate::engine::{OrAbort, Sled, TxResult, abort, counter, missing_views, transaction};
use crate::job_index::{JobTx, NewJob};
use crate::paging::{page_of, trailing_id};
use crate::rows::{decode_user, encode_user};
use crate::tokens::{TokenScan, TokenTx};

const ACTIVE_ADMINS: &[u8] = b"active_admins";

fn is_active_admin(user: &User) -> bool {
    user.active && user.role == Role::Admin
}

/// Views of the user trees: rows, the email index and the counters.
struct UserTx<'a> {
    rows: &'a TransactionalTree,
    emails: &'a TransactionalTree,
    counts: &'a TransactionalTree,
}

impl<'a> UserTx<'a> {
    fn new(views: &'a [TransactionalTree]) -> TxResult<Self> {
        let [rows, emails, counts] = views else { return Err(missing_views()) };
        Ok(Self { rows, emails, counts })
    }

    fn load(&self, id: UserId) -> TxResult<Option<User>> {
        let Some(row) = self.rows.get(id.as_bytes())? else { return Ok(None) };
        Ok(Some(decode_user(id, &row).or_abort()?))
    }

    fn require(&self, id: UserId) -> TxResult<User> {
        self.load(id)?.ok_or_else(|| abort(StoreError::NotFound))
    }

    /// Whether a user other than `id` has `email`.
    fn email_taken(&self, email: &Email, id: UserId) -> TxResult<bool> {
        Ok(self.emails.get(email.as_str().as_bytes())?.is_some_and(|holder| holder != id.as_bytes()))
    }

    fn active_admins(&self) -> TxResult<u64> {
        counter(self.counts.get(ACTIVE_ADMINS)?.as_deref()).or_abort()
    }

    /// Whether replacing `stored` by `next` (`None`: deleting it) would leave no active admin where there was one.
    fn removes_last_admin(&self, stored: &User, next: Option<&User>) -> TxResult<bool> {
        Ok(is_active_admin(stored) && !next.is_some_and(is_active_admin) && self.active_admins()? == 1)
    }

    /// Writes `user` in place of `stored` (if any), keeping the email index and the admin counter in step.
    fn save(&self, stored: Option<&User>, user: Option<&User>) -> TxResult<()> {
        match user {
            Some(user) => {
                self.rows.insert(user.id.as_bytes(), encode_user(user))?;
            }
            None => {
                if let Some(stored) = stored {
                    self.rows.remove(stored.id.as_bytes())?;
                }
            }
        }
        let old_email = stored.map(|stored| stored.email.as_str());
        let new_email = user.map(|user| user.email.as_str());
        if old_email != new_email {
            if let Some(email) = old_email {
                self.emails.remove(email.as_bytes())?;
            }
            if let Some((email, user)) = new_email.zip(user) {
                self.emails.insert(email.as_bytes(), user.id.as_bytes())?;
            }
        }
        let was = stored.is_some_and(is_active_admin);
        let is = user.is_some_and(is_active_admin);
        if was != is {
            let admins = self.active_admins()?;
            let admins = if is { admins + 1 } else { admins.saturating_sub(1) };
            self.counts.insert(ACTIVE_ADMINS, &admins.to_be_bytes())?;
        }
        Ok(())
    }
}

impl SledStore {
    /// The user trees followed by the job trees (for follow-up jobs).
    fn users_and_jobs(&self) -> Vec<&Tree> {
        let users = [&self.trees.users, &self.trees.emails, &self.trees.user_counts];
        users.into_iter().chain(self.trees.jobs.all()).collect()
    }

    /// Changes one user's login counters in a transaction of the user rows alone.
    fn change_counters(&self, id: UserId, change: impl Fn(&mut User)) -> StoreResult<User> {
        transaction(&[&self.trees.users], |views| {
            let [rows] = views else { return Err(missing_views()) };
            let row = rows.get(id.as_bytes())?.ok_or_else(|| abort(StoreError::NotFound))?;
            let mut user = decode_user(id, &row).or_abort()?;
            change(&mut user);
            rows.insert(id.as_bytes(), encode_user(&user))?;
            Ok(user)
        })
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn insert_user(&self, mut user: User, follow_up: Vec<Job>) -> StoreResult<User> {
        user.version = 1;
        let follow_up = NewJob::prepare_all(follow_up)?;
        transaction(&self.users_and_jobs(), |views| {
            let (user_views, job_views) = views.split_at(3);
            let users = UserTx::new(user_views)?;
            if users.email_taken(&user.email, user.id)? {
                return Err(abort(Conflict::EmailTaken));
            }
            if users.load(user.id)?.is_some() {
                return Err(abort(Conflict::Duplicate));
            }
            users.save(None, Some(&user))?;
            JobTx::new(job_views)?.insert(&follow_up)?;
            Ok(())
        })?;
        self.durability.committed().await?;
        Ok(user)
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let Some(row) = self.trees.users.get(id.as_bytes()).sled()? else { return Ok(None) };
        decode_user(id, &row).map(Some)
    }

    async fn get_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        let Some(id) = self.trees.emails.get(email.as_str().as_bytes()).sled()? else { return Ok(None) };
        let id = UserId::from_uuid(trailing_id(&id)?);
        // The two reads are not one snapshot: a user whose address changed in between is not this address's.
        Ok(self.get_user(id).await?.filter(|user| user.email == *email))
    }

    async fn update_user(&self, user: User, expected_version: u64, follow_up: Vec<Job>) -> StoreResult<User> {
        let follow_up = NewJob::prepare_all(follow_up)?;
        let stored = transaction(&self.users_and_jobs(), |views| {
            let (user_views, job_views) = views.split_at(3);
            let users = UserTx::new(user_views)?;
            let stored = users.require(user.id)?;
            if stored.version != expected_version {
                return Err(abort(Conflict::VersionMismatch));
            }
            if stored.email != user.email && users.email_taken(&user.email, user.id)? {
                return Err(abort(Conflict::EmailTaken));
            }
            if users.removes_last_admin(&stored, Some(&user))? {
                return Err(abort(Conflict::LastActiveAdmin));
            }
            let next = User {
                version: expected_version + 1,
                created_at: stored.created_at,
                failed_logins: stored.failed_logins,
                last_failed_login_at: stored.last_failed_login_at,
                ..user.clone()
            };
            users.save(Some(&stored), Some(&next))?;
            JobTx::new(job_views)?.insert(&follow_up)?;
            Ok(next)
        })?;
        self.durability.committed().await?;
        Ok(stored)
    }

    async fn delete_user(&self, id: UserId, expected_version: Option<u64>) -> StoreResult<()> {
        let users = [&self.trees.users, &self.trees.emails, &self.trees.user_counts];
        let trees: Vec<&Tree> = users.into_iter().chain(self.trees.tokens.all()).collect();
        // The user's tokens are found by a scan, which a transaction cannot do: scan first, and retry if a token
        // was added to the user meanwhile (the transaction checks the user's token generation).
        for _ in 0..crate::tokens::SCAN_ATTEMPTS {
            let scan = TokenScan::of_user(&self.trees.tokens, id)?;
            let done = transaction(&trees, |views| {
                let (user_views, token_views) = views.split_at(3);
                let users = UserTx::new(user_views)?;
                let stored = users.require(id)?;
                if expected_version.is_some_and(|version| version != stored.version) {
                    return Err(abort(Conflict::VersionMismatch));
                }
                if users.removes_last_admin(&stored, None)? {
                    return Err(abort(Conflict::LastActiveAdmin));
                }
                let tokens = TokenTx::new(token_views)?;
                if !scan.is_current(&tokens)? {
                    return Ok(false);
                }
                for hash in &scan.hashes {
                    tokens.delete(hash)?;
                }
                users.save(Some(&stored), None)?;
                Ok(true)
            })?;
            if done {
                self.durability.committed().await?;
                return Ok(());
            }
        }
        Err(crate::tokens::contended())
    }

    async fn record_login_failure(&self, id: UserId, now: DateTime<Utc>) -> StoreResult<u32> {
        let user = self.change_counters(id, |user| {
            user.failed_logins = user.failed_logins.saturating_add(1);
            user.last_failed_login_at = Some(now);
        })?;
        self.durability.committed().await?;
        Ok(user.failed_logins)
    }

    async fn clear_login_failures(&self, id: UserId) -> StoreResult<()> {
        self.change_counters(id, |user| {
            user.failed_logins = 0;
            user.last_failed_login_at = None;
        })?;
        self.durability.committed().await
    }

    async fn list_users(&self, filter: &UserFilter, page: &PageRequest) -> StoreResult<Page<User>> {
        let load =
            |key: &sled::IVec, row: &sled::IVec| decode_user(UserId::from_uuid(trailing_id(key)?), row).map(Some);
        page_of(&self.trees.users, &[], page, load, |user| filter.matches(user), |user| user.id.into())
    }
}
