//! Users. Email uniqueness is the database's unique index; the last-admin guard runs under an advisory lock
//! so that two instances demoting the last two admins at once cannot both succeed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use techhub_core::model::{Email, Job, Page, PageRequest, Role, User, UserCounts, UserFilter, UserId};
use techhub_core::storage::{Conflict, StoreError, StoreResult, UserStore, decisions};

use crate::db::{self, Db, execute, query, query_one, query_opt};
use crate::rows::{self, USER_COLUMNS, big};
use crate::{PostgresStore, jobs};

/// Held (for the transaction) by every write that could remove the last active admin: "admins".
const ADMIN_GUARD_LOCK: i64 = 0x6164_6d69_6e73;

pub(crate) async fn load_user<C: GenericClient + Sync>(
    client: &C,
    id: UserId,
    lock: bool,
) -> StoreResult<Option<User>> {
    let sql = if lock {
        format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")
    };
    query_opt(client, &sql, &[id.as_uuid()]).await?.as_ref().map(rows::user).transpose()
}

async fn active_admins<C: GenericClient + Sync>(client: &C) -> StoreResult<u64> {
    let row = query_one(client, "SELECT count(*) FROM users WHERE role = 'admin' AND active", &[]).await?;
    Ok(rows::unsigned(rows::get(&row, 0)?))
}

async fn email_taken<C: GenericClient + Sync>(client: &C, email: &Email, other_than: UserId) -> StoreResult<bool> {
    let row = query_one(
        client,
        "SELECT EXISTS (SELECT 1 FROM users WHERE email = $1 AND id <> $2)",
        &[&email.as_str(), other_than.as_uuid()],
    )
    .await?;
    rows::get(&row, 0)
}

/// An email taken by a concurrent writer shows as a unique violation of the email index.
fn email_conflict(error: tokio_postgres::Error) -> StoreError {
    if db::violates(&error, "users_email_key") { Conflict::EmailTaken.into() } else { db::db_error(error) }
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn insert_user(&self, mut user: User, follow_up: Vec<Job>) -> StoreResult<User> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        if email_taken(&transaction, &user.email, user.id).await? {
            return Err(Conflict::EmailTaken.into());
        }
        user.version = 1;
        let statement = transaction
            .prepare_cached(&format!(
                "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .await
            .db()?;
        transaction
            .execute(
                &statement,
                &[
                    user.id.as_uuid(),
                    &user.email.as_str(),
                    &user.name,
                    &user.role.as_str(),
                    &user.active,
                    &user.email_verified,
                    &1_i64,
                    &user.created_at,
                    &user.updated_at,
                    &user.password_hash.as_ref().map(|hash| hash.as_phc()),
                    &i32::try_from(user.failed_logins).unwrap_or(i32::MAX),
                    &user.last_failed_login_at,
                ],
            )
            .await
            .map_err(email_conflict)?;
        let queued = jobs::insert_jobs(&transaction, follow_up).await?;
        transaction.commit().await.db()?;
        self.announce(&queued);
        Ok(user)
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        load_user(&self.client().await?, id, false).await
    }

    async fn get_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        query_opt(&client, &sql, &[&email.as_str()]).await?.as_ref().map(rows::user).transpose()
    }

    async fn update_user(&self, user: User, expected_version: u64, follow_up: Vec<Job>) -> StoreResult<User> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMIN_GUARD_LOCK]).await.db()?;
        let stored = load_user(&transaction, user.id, true).await?.ok_or(StoreError::NotFound)?;
        // The decision's reads are synchronous: answer them up front (both are index lookups).
        let taken = stored.email != user.email && email_taken(&transaction, &user.email, stored.id).await?;
        let admins = if stored.is_active_admin() { active_admins(&transaction).await? } else { 0 };
        let user = decisions::merge_user_update(
            &stored,
            user,
            expected_version,
            |_, _| Ok::<_, StoreError>(taken),
            || Ok(admins),
        )??;
        execute(
            &transaction,
            "UPDATE users SET email = $2, name = $3, role = $4, active = $5, email_verified = $6, version = $7, \
             updated_at = $8, password_hash = $9 WHERE id = $1",
            &[
                user.id.as_uuid(),
                &user.email.as_str(),
                &user.name,
                &user.role.as_str(),
                &user.active,
                &user.email_verified,
                &big(user.version),
                &user.updated_at,
                &user.password_hash.as_ref().map(|hash| hash.as_phc()),
            ],
        )
        .await
        .map_err(|error| match error {
            StoreError::Conflict(Conflict::Duplicate) => Conflict::EmailTaken.into(),
            other => other,
        })?;
        let queued = jobs::insert_jobs(&transaction, follow_up).await?;
        transaction.commit().await.db()?;
        self.announce(&queued);
        Ok(user)
    }

    async fn delete_user(&self, id: UserId, expected_version: Option<u64>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMIN_GUARD_LOCK]).await.db()?;
        let stored = load_user(&transaction, id, true).await?.ok_or(StoreError::NotFound)?;
        let admins = if stored.is_active_admin() { active_admins(&transaction).await? } else { 0 };
        decisions::check_user_delete(&stored, expected_version, || Ok::<_, StoreError>(admins))??;
        execute(&transaction, "DELETE FROM tokens WHERE user_id = $1", &[id.as_uuid()]).await?;
        execute(&transaction, "DELETE FROM users WHERE id = $1", &[id.as_uuid()]).await?;
        transaction.commit().await.db()
    }

    async fn record_login_failure(&self, id: UserId, now: DateTime<Utc>) -> StoreResult<u32> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "UPDATE users SET failed_logins = failed_logins + 1, last_failed_login_at = $2 WHERE id = $1 \
             RETURNING failed_logins",
            &[id.as_uuid(), &now],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(u32::try_from(rows::get::<i32>(&row, 0)?).unwrap_or_default())
    }

    async fn clear_login_failures(&self, id: UserId) -> StoreResult<()> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL WHERE id = $1",
            &[id.as_uuid()],
        )
        .await?;
        if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn count_users(&self) -> StoreResult<UserCounts> {
        let client = self.client().await?;
        // Fold the deltas the triggers appended into one row, then add up what is left (a few rows).
        execute(
            &client,
            "WITH folded AS (DELETE FROM user_count_deltas RETURNING total, active, admins) \
             INSERT INTO user_count_deltas SELECT sum(total), sum(active), sum(admins) FROM folded \
             HAVING count(*) > 0",
            &[],
        )
        .await?;
        let row = query_one(
            &client,
            "SELECT COALESCE(sum(total), 0)::bigint, COALESCE(sum(active), 0)::bigint, COALESCE(sum(admins), 0)::bigint \
             FROM user_count_deltas",
            &[],
        )
        .await?;
        Ok(UserCounts {
            total: rows::unsigned(rows::get(&row, 0)?),
            active: rows::unsigned(rows::get(&row, 1)?),
            admins: rows::unsigned(rows::get(&row, 2)?),
        })
    }

    async fn list_users(&self, filter: &UserFilter, page: &PageRequest) -> StoreResult<Page<User>> {
        let after = decisions::start_after(page)?;
        let client = self.client().await?;
        let needle = filter.query.as_deref().map(str::to_lowercase);
        let limit = i64::try_from(page.limit + 1).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ($1::uuid IS NULL OR id > $1) AND ($2::text IS NULL OR role = $2) \
             AND ($3::boolean IS NULL OR active = $3) \
             AND ($4::text IS NULL OR strpos(email, $4) > 0 OR strpos(lower(name), $4) > 0) \
             ORDER BY id LIMIT $5"
        );
        let found =
            query(&client, &sql, &[&after, &filter.role.map(Role::as_str), &filter.active, &needle, &limit]).await?;
        let items = rows::all(&found, rows::user)?;
        Ok(Page::from_overfetch(items, page.limit, |user| user.id.into()))
    }
}
