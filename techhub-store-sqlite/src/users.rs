//! Users.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use techhub_core::model::{Email, Job, Page, PageRequest, Role, User, UserCounts, UserFilter, UserId};
use techhub_core::storage::{Conflict, StoreError, StoreResult, UserStore, decisions};

use crate::CachedStatements;
use crate::rows::{USER_COLUMNS, micros};
use crate::{Sql, SqliteStore, jobs, like_pattern, rows};

pub(crate) fn load_user(connection: &Connection, id: UserId) -> StoreResult<Option<User>> {
    connection
        .cached_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [id.as_bytes()], rows::user)
        .optional()
        .sql()
}

fn active_admins(connection: &Connection) -> StoreResult<u64> {
    connection.cached_row("SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1", [], |row| row.get(0)).sql()
}

fn email_taken(connection: &Connection, email: &Email, other_than: UserId) -> StoreResult<bool> {
    connection
        .cached_row(
            "SELECT EXISTS(SELECT 1 FROM users WHERE email = ?1 AND id <> ?2)",
            params![email.as_str(), other_than.as_bytes()],
            |row| row.get(0),
        )
        .sql()
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, mut user: User, follow_up: Vec<Job>) -> StoreResult<User> {
        self.write_sessions(move |connection| {
            if email_taken(connection, &user.email, user.id)? {
                return Err(Conflict::EmailTaken.into());
            }
            if load_user(connection, user.id)?.is_some() {
                return Err(Conflict::Duplicate.into());
            }
            user.version = 1;
            connection
                .cached_execute(
                    &format!(
                        "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                    ),
                    params![
                        user.id.as_bytes(),
                        user.email.as_str(),
                        user.name,
                        user.role.as_str(),
                        user.active,
                        user.email_verified,
                        1,
                        micros(user.created_at),
                        micros(user.updated_at),
                        user.password_hash.as_ref().map(|hash| hash.as_phc().to_owned()),
                        user.failed_logins,
                        user.last_failed_login_at.map(micros),
                    ],
                )
                .sql()?;
            jobs::insert_jobs(connection, follow_up)?;
            Ok(user)
        })
        .await
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.engine.read(move |connection| load_user(connection, id)).await
    }

    async fn get_user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        let email = email.clone();
        self.engine
            .read(move |connection| {
                connection
                    .cached_row(
                        &format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"),
                        [email.as_str()],
                        rows::user,
                    )
                    .optional()
                    .sql()
            })
            .await
    }

    async fn update_user(&self, user: User, expected_version: u64, follow_up: Vec<Job>) -> StoreResult<User> {
        self.write_sessions(move |connection| {
            let stored = load_user(connection, user.id)?.ok_or(StoreError::NotFound)?;
            let user = decisions::merge_user_update(
                &stored,
                user,
                expected_version,
                |email, id| email_taken(connection, email, id),
                || active_admins(connection),
            )??;
            connection
                .cached_execute(
                    "UPDATE users SET email = ?2, name = ?3, role = ?4, active = ?5, email_verified = ?6, version = ?7, \
                     updated_at = ?8, password_hash = ?9 WHERE id = ?1",
                    params![
                        user.id.as_bytes(),
                        user.email.as_str(),
                        user.name,
                        user.role.as_str(),
                        user.active,
                        user.email_verified,
                        i64::try_from(user.version).unwrap_or(i64::MAX),
                        micros(user.updated_at),
                        user.password_hash.as_ref().map(|hash| hash.as_phc().to_owned()),
                    ],
                )
                .sql()?;
            jobs::insert_jobs(connection, follow_up)?;
            Ok(user)
        })
        .await
    }

    async fn delete_user(&self, id: UserId, expected_version: Option<u64>) -> StoreResult<()> {
        self.write_sessions(move |connection| {
            let stored = load_user(connection, id)?.ok_or(StoreError::NotFound)?;
            decisions::check_user_delete(&stored, expected_version, || active_admins(connection))??;
            connection.cached_execute("DELETE FROM tokens WHERE user_id = ?1", [id.as_bytes()]).sql()?;
            connection.cached_execute("DELETE FROM users WHERE id = ?1", [id.as_bytes()]).sql()?;
            Ok(())
        })
        .await
    }

    async fn record_login_failure(&self, id: UserId, now: DateTime<Utc>) -> StoreResult<u32> {
        self.write_sessions(move |connection| {
            connection
                .cached_row(
                    "UPDATE users SET failed_logins = failed_logins + 1, last_failed_login_at = ?2 WHERE id = ?1 \
                         RETURNING failed_logins",
                    params![id.as_bytes(), micros(now)],
                    |row| row.get(0),
                )
                .optional()
                .sql()?
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn clear_login_failures(&self, id: UserId) -> StoreResult<()> {
        self.write_sessions(move |connection| {
            let changed = connection
                .cached_execute(
                    "UPDATE users SET failed_logins = 0, last_failed_login_at = NULL WHERE id = ?1",
                    [id.as_bytes()],
                )
                .sql()?;
            if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    async fn count_users(&self) -> StoreResult<UserCounts> {
        // Answered from the (role, active) index alone: no user row is read.
        self.engine
            .read(|connection| {
                connection
                    .cached_row(
                        "SELECT COUNT(*), COALESCE(SUM(active), 0), COALESCE(SUM(role = 'admin'), 0) FROM users \
                         INDEXED BY users_active_admins",
                        [],
                        |row| Ok(UserCounts { total: row.get(0)?, active: row.get(1)?, admins: row.get(2)? }),
                    )
                    .sql()
            })
            .await
    }

    async fn list_users(&self, filter: &UserFilter, page: &PageRequest) -> StoreResult<Page<User>> {
        let after = decisions::start_after(page)?;
        let filter = filter.clone();
        let limit = page.limit;
        self.engine
            .read(move |connection| {
                let pattern = filter.query.as_deref().map(|query| like_pattern(&query.to_lowercase()));
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR role = ?2) \
                         AND (?3 IS NULL OR active = ?3) AND (?4 IS NULL OR email LIKE ?4 ESCAPE '\\' OR lower(name) LIKE ?4 ESCAPE '\\') \
                         ORDER BY id LIMIT ?5"
                    ))
                    .sql()?;
                let items = statement
                    .query_map(
                        params![
                            after.map(|id| id.as_bytes().to_vec()),
                            filter.role.map(Role::as_str),
                            filter.active,
                            pattern,
                            i64::try_from(limit + 1).unwrap_or(i64::MAX),
                        ],
                        rows::user,
                    )
                    .sql()?
                    .collect::<rusqlite::Result<Vec<User>>>()
                    .sql()?;
                Ok(Page::from_overfetch(items, limit, |user| user.id.into()))
            })
            .await
    }
}
