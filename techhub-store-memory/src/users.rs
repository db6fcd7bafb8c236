//! Users: a map by id (id order gives stable cursors) and a unique index by normalised email.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{Email, Job, Page, PageRequest, User, UserCounts, UserFilter, UserId};
use techhub_core::storage::{Conflict, StoreError, StoreResult, TokenSelector, UserStore, decisions};

use crate::{MemoryStore, lock, paging, read, write};

#[derive(Debug, Default)]
pub(crate) struct UserTables {
    by_id: BTreeMap<UserId, User>,
    by_email: HashMap<Email, UserId>,
    active_admins: usize,
    counts: UserCounts,
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn insert_user(&self, mut user: User, follow_up: Vec<Job>) -> StoreResult<User> {
        let mut users = write(&self.users);
        if users.by_email.contains_key(&user.email) {
            return Err(Conflict::EmailTaken.into());
        }
        if users.by_id.contains_key(&user.id) {
            return Err(Conflict::Duplicate.into());
        }
        let mut jobs = self.jobs.lock_index();
        jobs.check_new(&self.jobs, &follow_up)?;
        // Validated: from here on nothing fails, so the user and its jobs land together.
        user.version = 1;
        users.by_email.insert(user.email.clone(), user.id);
        users.active_admins += usize::from(user.is_active_admin());
        users.counts.follow(None, Some(&user));
        users.by_id.insert(user.id, user.clone());
        jobs.insert_checked(&self.jobs, follow_up);
        Ok(user)
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(read(&self.users).by_id.get(&id).cloned())
    }

    async fn get_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        let users = read(&self.users);
        Ok(users.by_email.get(email).and_then(|id| users.by_id.get(id)).cloned())
    }

    async fn update_user(&self, user: User, expected_version: u64, follow_up: Vec<Job>) -> StoreResult<User> {
        let mut users = write(&self.users);
        let tables = &mut *users;
        let stored = tables.by_id.get(&user.id).ok_or(StoreError::NotFound)?;
        let user = decisions::merge_user_update(
            stored,
            user,
            expected_version,
            |email, _| Ok::<_, StoreError>(tables.by_email.contains_key(email)),
            || Ok(tables.active_admins as u64),
        )??;
        let mut jobs = self.jobs.lock_index();
        jobs.check_new(&self.jobs, &follow_up)?;

        if stored.email != user.email {
            tables.by_email.remove(&stored.email);
            tables.by_email.insert(user.email.clone(), user.id);
        }
        tables.active_admins =
            tables.active_admins - usize::from(stored.is_active_admin()) + usize::from(user.is_active_admin());
        tables.counts.follow(Some(stored), Some(&user));
        tables.by_id.insert(user.id, user.clone());
        jobs.insert_checked(&self.jobs, follow_up);
        Ok(user)
    }

    async fn delete_user(&self, id: UserId, expected_version: Option<u64>) -> StoreResult<()> {
        let mut users = write(&self.users);
        let stored = users.by_id.get(&id).ok_or(StoreError::NotFound)?;
        decisions::check_user_delete(stored, expected_version, || Ok::<_, StoreError>(users.active_admins as u64))??;
        let was_active_admin = stored.is_active_admin();
        let email = stored.email.clone();
        let mut counts = users.counts;
        counts.follow(Some(stored), None);
        users.counts = counts;
        // Sessions end with the user, in the same critical section.
        lock(&self.tokens).revoke(TokenSelector::User { user_id: id, kind: None, except_family: None });
        users.by_email.remove(&email);
        users.by_id.remove(&id);
        users.active_admins -= usize::from(was_active_admin);
        Ok(())
    }

    async fn record_login_failure(&self, id: UserId, now: DateTime<Utc>) -> StoreResult<u32> {
        let mut users = write(&self.users);
        let user = users.by_id.get_mut(&id).ok_or(StoreError::NotFound)?;
        user.failed_logins = user.failed_logins.saturating_add(1);
        user.last_failed_login_at = Some(now);
        Ok(user.failed_logins)
    }

    async fn clear_login_failures(&self, id: UserId) -> StoreResult<()> {
        let mut users = write(&self.users);
        let user = users.by_id.get_mut(&id).ok_or(StoreError::NotFound)?;
        user.failed_logins = 0;
        user.last_failed_login_at = None;
        Ok(())
    }

    async fn count_users(&self) -> StoreResult<UserCounts> {
        Ok(read(&self.users).counts)
    }

    async fn list_users(&self, filter: &UserFilter, page: &PageRequest) -> StoreResult<Page<User>> {
        paging::page_of(&read(&self.users).by_id, page, |user| filter.matches(user), |user| user.id.into())
    }
}
