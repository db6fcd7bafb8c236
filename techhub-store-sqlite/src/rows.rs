//! Converting between domain values and columns: ids as 16-byte blobs (byte order is id order), times as
//! microseconds since the Unix epoch, enums as their API words, JSON as text.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::Row;
use rusqlite::types::Type;
use serde_json::Value;
use techhub_core::model::{
    ArtifactInfo, ClientMeta, Email, Job, JobState, PasswordHash, Progress, Role, TokenHash, TokenKind, TokenRecord,
    User, WorkerId,
};
use techhub_core::storage::{StoreError, StoreResult};
use uuid::Uuid;

/// A failure to read a stored value back.
pub(crate) fn bad_column(column: usize, why: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(std::io::Error::other(why.into())))
}

pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn time(row: &Row<'_>, column: usize) -> rusqlite::Result<DateTime<Utc>> {
    let value: i64 = row.get(column)?;
    DateTime::from_timestamp_micros(value).ok_or_else(|| bad_column(column, "time out of range"))
}

pub(crate) fn optional_time(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let value: Option<i64> = row.get(column)?;
    value
        .map(|value| DateTime::from_timestamp_micros(value).ok_or_else(|| bad_column(column, "time out of range")))
        .transpose()
}

pub(crate) fn uuid(row: &Row<'_>, column: usize) -> rusqlite::Result<Uuid> {
    let bytes: Vec<u8> = row.get(column)?;
    Uuid::from_slice(&bytes).map_err(|_| bad_column(column, "not a 16-byte id"))
}

pub(crate) fn optional_uuid(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<Uuid>> {
    let bytes: Option<Vec<u8>> = row.get(column)?;
    bytes.map(|bytes| Uuid::from_slice(&bytes).map_err(|_| bad_column(column, "not a 16-byte id"))).transpose()
}

pub(crate) fn parsed<T: FromStr>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    text.parse().map_err(|_| bad_column(column, format!("unexpected value {text:?}")))
}

pub(crate) fn json(row: &Row<'_>, column: usize) -> rusqlite::Result<Value> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|_| bad_column(column, "invalid JSON"))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(row: &Row<'_>, column: usize) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|_| bad_column(column, "invalid JSON record"))
}

/// A failed rusqlite call as a store error: a value that does not convert is `Corrupt` (the data is not what
/// this code wrote), a busy or locked database `Unavailable`, anything else a backend failure.
pub(crate) fn store_error(error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::corrupt(error)
        }
        other => crate::engine::sql_error(other),
    }
}

pub(crate) const USER_COLUMNS: &str = "id, email, name, role, active, email_verified, version, created_at, updated_at, \
     password_hash, failed_logins, last_failed_login_at";

pub(crate) fn user(row: &Row<'_>) -> rusqlite::Result<User> {
    let email: String = row.get(1)?;
    Ok(User {
        id: uuid(row, 0)?.into(),
        email: Email::parse(&email).map_err(|_| bad_column(1, "invalid stored email"))?,
        name: row.get(2)?,
        role: parsed::<Role>(row, 3)?,
        active: row.get(4)?,
        email_verified: row.get(5)?,
        version: u64::try_from(row.get::<_, i64>(6)?).unwrap_or_default(),
        created_at: time(row, 7)?,
        updated_at: time(row, 8)?,
        password_hash: row.get::<_, Option<String>>(9)?.map(PasswordHash::from_phc),
        failed_logins: u32::try_from(row.get::<_, i64>(10)?).unwrap_or(u32::MAX),
        last_failed_login_at: optional_time(row, 11)?,
    })
}

pub(crate) const TOKEN_COLUMNS: &str =
    "hash, kind, user_id, family, created_at, family_created_at, expires_at, consumed_at, user_agent, ip";

pub(crate) fn token(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let hash: Vec<u8> = row.get(0)?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| bad_column(0, "not a 32-byte hash"))?;
    let kind: String = row.get(1)?;
    let kind = [TokenKind::Refresh, TokenKind::PasswordReset, TokenKind::EmailVerify]
        .into_iter()
        .find(|known| known.as_str() == kind)
        .ok_or_else(|| bad_column(1, "unknown token kind"))?;
    Ok(TokenRecord {
        hash: TokenHash::from_bytes(hash),
        kind,
        user_id: uuid(row, 2)?.into(),
        family: uuid(row, 3)?.into(),
        created_at: time(row, 4)?,
        family_created_at: time(row, 5)?,
        expires_at: time(row, 6)?,
        consumed_at: optional_time(row, 7)?,
        client: ClientMeta {
            user_agent: row.get(8)?,
            ip: row
                .get::<_, Option<String>>(9)?
                .map(|ip| ip.parse().map_err(|_| bad_column(9, "not an IP address")))
                .transpose()?,
        },
    })
}

/// The columns [`job`] reads, in its order, as a literal: `concat!` builds the hot statements at compile time
/// (a `format!` per call showed in profiles).
macro_rules! job_columns {
    () => {
        "id, queue, kind, payload, state, priority, attempt, max_attempts, run_at, created_at, started_at, \
         finished_at, progress_percent, progress_message, last_error, result, artifact_content_type, \
         artifact_file_name, artifact_size, created_by, unique_key, lease_holder, lease_until, cancel_requested"
    };
}
pub(crate) use job_columns;

pub(crate) const JOB_COLUMNS: &str = job_columns!();

pub(crate) fn job(row: &Row<'_>) -> rusqlite::Result<Job> {
    let result: Option<String> = row.get(15)?;
    let artifact = match row.get::<_, Option<String>>(16)? {
        Some(content_type) => Some(ArtifactInfo {
            content_type,
            file_name: row.get(17)?,
            size: u64::try_from(row.get::<_, i64>(18)?).unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Job {
        id: uuid(row, 0)?.into(),
        queue: row.get(1)?,
        kind: row.get(2)?,
        payload: json(row, 3)?,
        state: parsed::<JobState>(row, 4)?,
        priority: row.get(5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        run_at: time(row, 8)?,
        created_at: time(row, 9)?,
        started_at: optional_time(row, 10)?,
        finished_at: optional_time(row, 11)?,
        progress: Progress { percent: row.get(12)?, message: row.get(13)? },
        last_error: row.get(14)?,
        result: result
            .map(|text| serde_json::from_str(&text).map_err(|_| bad_column(15, "invalid JSON")))
            .transpose()?,
        artifact,
        created_by: optional_uuid(row, 19)?.map(Into::into),
        unique_key: row.get(20)?,
        lease_holder: row.get::<_, Option<String>>(21)?.map(WorkerId::new),
        lease_until: optional_time(row, 22)?,
        cancel_requested: row.get(23)?,
    })
}
