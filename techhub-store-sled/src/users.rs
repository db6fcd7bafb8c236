//! Users: rows by id (id order gives stable cursors), a unique index from normalised email to id, and a counter
//! of active admins kept in the same transactions, so the last-admin rule reads one key, not every user.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{Email, Job, Page, PageRequest, User, UserCounts, UserFilter, UserId};
use techhub_core::storage::{Conflict, StoreError, StoreResult, UserStore, decisions};

use crate::SledStore;
use crate::engine::{Sled, TreeId, Trees, counter};
use crate::job_index::{JobTx, NewJob};
use crate::paging::{page_of, trailing_id};
use crate::rows::{decode_user, encode_user};
use crate::tokens::{TokenTx, tokens_of_user};
use crate::tx::{OrAbort, Tx, TxResult, TxTree, abort, transaction};

const ACTIVE_ADMINS: &[u8] = b"active_admins";
/// The [`UserCounts`], as three big-endian `u64`s (total, active, admins).
const USER_COUNTS: &[u8] = b"user_counts";

fn encode_counts(counts: &UserCounts) -> [u8; 24] {
    let mut bytes = [0; 24];
    for (slot, value) in bytes.chunks_exact_mut(8).zip([counts.total, counts.active, counts.admins]) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
    bytes
}

fn decode_counts(bytes: Option<&[u8]>) -> StoreResult<UserCounts> {
    let Some(bytes) = bytes else { return Ok(UserCounts::default()) };
    let part = |index: usize| counter(bytes.get(index * 8..index * 8 + 8));
    if bytes.len() != 24 {
        return Err(crate::codec::corrupt("the user counts are not 24 bytes"));
    }
    Ok(UserCounts { total: part(0)?, active: part(1)?, admins: part(2)? })
}

/// The user with `id`, read outside the writer.
pub(crate) fn load_user(trees: &Trees, id: UserId) -> StoreResult<Option<User>> {
    let Some(row) = trees[TreeId::Users].get(id.as_bytes()).sled()? else { return Ok(None) };
    decode_user(id, &row).map(Some)
}

/// Databases written before the user counts existed get them once, at open, from one scan of the users.
pub(crate) fn backfill_counts(trees: &Trees) -> StoreResult<()> {
    let counts_tree = &trees[TreeId::UserCounts];
    if counts_tree.get(USER_COUNTS).sled()?.is_some() {
        return Ok(());
    }
    let mut counts = UserCounts::default();
    for entry in trees[TreeId::Users].iter() {
        let (key, row) = entry.sled()?;
        counts.follow(None, Some(&decode_user(UserId::from_uuid(trailing_id(&key)?), &row)?));
    }
    counts_tree.insert(USER_COUNTS, encode_counts(&counts).as_slice()).sled()?;
    Ok(())
}

/// The user trees as one call sees them: rows, the email index and the counters.
struct UserTx<'a> {
    rows: TxTree<'a>,
    emails: TxTree<'a>,
    counts: TxTree<'a>,
}

impl<'a> UserTx<'a> {
    fn new(tx: &'a Tx<'a>) -> Self {
        Self { rows: tx.tree(TreeId::Users), emails: tx.tree(TreeId::Emails), counts: tx.tree(TreeId::UserCounts) }
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
        Ok(self.emails.get(email.as_str())?.is_some_and(|holder| holder != id.as_bytes()))
    }

    fn active_admins(&self) -> TxResult<u64> {
        counter(self.counts.get(ACTIVE_ADMINS)?.as_deref()).or_abort()
    }

    /// Writes `user` in place of `stored` (`None`s: absent), keeping the email index and admin counter in step.
    fn save(&self, stored: Option<&User>, user: Option<&User>) -> TxResult<()> {
        match (stored, user) {
            (_, Some(user)) => self.rows.insert(user.id.as_bytes().as_slice(), encode_user(user))?,
            (Some(stored), None) => self.rows.remove(stored.id.as_bytes().as_slice())?,
            (None, None) => {}
        }
        let old_email = stored.map(|stored| stored.email.as_str());
        let new_email = user.map(|user| user.email.as_str());
        if old_email != new_email {
            if let Some(email) = old_email {
                self.emails.remove(email)?;
            }
            if let Some(user) = user {
                self.emails.insert(user.email.as_str(), user.id.as_bytes().as_slice())?;
            }
        }
        let mut counts = decode_counts(self.counts.get(USER_COUNTS)?.as_deref()).or_abort()?;
        counts.follow(stored, user);
        self.counts.insert(USER_COUNTS, encode_counts(&counts).as_slice())?;
        let (was, is) = (stored.is_some_and(User::is_active_admin), user.is_some_and(User::is_active_admin));
        if was != is {
            let admins = self.active_admins()?;
            let admins = if is { admins + 1 } else { admins.saturating_sub(1) };
            self.counts.insert(ACTIVE_ADMINS, admins.to_be_bytes().as_slice())?;
        }
        Ok(())
    }
}

impl SledStore {
    /// Changes one user's login counters.
    async fn change_counters(&self, id: UserId, change: impl Fn(&mut User) + Send + 'static) -> StoreResult<User> {
        self.writer
            .write(move |tx| {
                let users = UserTx::new(tx);
                let mut user = users.require(id)?;
                change(&mut user);
                users.rows.insert(id.as_bytes().as_slice(), encode_user(&user))?;
                Ok(user)
            })
            .await
    }
}

#[async_trait]
impl UserStore for SledStore {
    async fn insert_user(&self, mut user: User, follow_up: Vec<Job>) -> StoreResult<User> {
        user.version = 1;
        let follow_up = NewJob::prepare_all(&follow_up)?;
        self.writer
            .write(move |tx| {
                let users = UserTx::new(tx);
                if users.email_taken(&user.email, user.id)? {
                    return Err(abort(Conflict::EmailTaken));
                }
                if users.load(user.id)?.is_some() {
                    return Err(abort(Conflict::Duplicate));
                }
                users.save(None, Some(&user))?;
                JobTx::new(tx).insert(&follow_up)?;
                Ok(user.clone())
            })
            .await
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read(move |trees| load_user(trees, id)).await
    }

    async fn get_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        let email = email.clone();
        self.read(move |trees| {
            let Some(id) = trees[TreeId::Emails].get(email.as_str()).sled()? else { return Ok(None) };
            let id = UserId::from_uuid(trailing_id(&id)?);
            // The two reads are not one snapshot: a user whose address changed in between is not this address's.
            Ok(load_user(trees, id)?.filter(|user| user.email == email))
        })
        .await
    }

    async fn update_user(&self, user: User, expected_version: u64, follow_up: Vec<Job>) -> StoreResult<User> {
        let follow_up = NewJob::prepare_all(&follow_up)?;
        self.writer
            .write(move |tx| {
                let users = UserTx::new(tx);
                let stored = users.require(user.id)?;
                let next = decisions::merge_user_update(
                    &stored,
                    user.clone(),
                    expected_version,
                    |email, id| users.email_taken(email, id),
                    || users.active_admins(),
                )?
                .map_err(abort)?;
                users.save(Some(&stored), Some(&next))?;
                JobTx::new(tx).insert(&follow_up)?;
                Ok(next)
            })
            .await
    }

    async fn delete_user(&self, id: UserId, expected_version: Option<u64>) -> StoreResult<()> {
        // The user's tokens are found by a scan, which a transaction cannot do; on the writer, nothing can add
        // one between the scan and the transaction.
        self.writer
            .alone(move |trees| {
                let hashes = tokens_of_user(trees, id)?;
                transaction(trees, |tx| {
                    let users = UserTx::new(tx);
                    let stored = users.require(id)?;
                    decisions::check_user_delete(&stored, expected_version, || users.active_admins())?
                        .map_err(abort)?;
                    let tokens = TokenTx::new(tx);
                    for hash in &hashes {
                        tokens.delete(hash)?;
                    }
                    users.save(Some(&stored), None)
                })
            })
            .await
    }

    async fn record_login_failure(&self, id: UserId, now: DateTime<Utc>) -> StoreResult<u32> {
        let user = self
            .change_counters(id, move |user| {
                user.failed_logins = user.failed_logins.saturating_add(1);
                user.last_failed_login_at = Some(now);
            })
            .await?;
        Ok(user.failed_logins)
    }

    async fn clear_login_failures(&self, id: UserId) -> StoreResult<()> {
        self.change_counters(id, |user| {
            user.failed_logins = 0;
            user.last_failed_login_at = None;
        })
        .await
        .map(drop)
    }

    async fn count_users(&self) -> StoreResult<UserCounts> {
        self.read(|trees| decode_counts(trees[TreeId::UserCounts].get(USER_COUNTS).sled()?.as_deref())).await
    }

    async fn list_users(&self, filter: &UserFilter, page: &PageRequest) -> StoreResult<Page<User>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |trees| {
            let load =
                |key: &sled::IVec, row: &sled::IVec| decode_user(UserId::from_uuid(trailing_id(key)?), row).map(Some);
            page_of(&trees[TreeId::Users], &[], &page, load, |user| filter.matches(user), |user| user.id.into())
        })
        .await
    }
}
