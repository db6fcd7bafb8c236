//! Converting between domain values and columns: ids as `uuid` (the server orders them as bytes, which is id
//! order), times as `timestamptz` (microseconds), enums as their API words, JSON as text.

use std::str::FromStr;

use serde_json::Value;
use techhub_core::model::{
    ArtifactInfo, ClientMeta, Email, Job, JobState, PasswordHash, Progress, Role, TokenHash, TokenKind, TokenRecord,
    User, WorkerId,
};
use techhub_core::storage::{StoreError, StoreResult};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use uuid::Uuid;

/// A stored value that is not what this code writes.
pub(crate) fn corrupt(why: impl Into<String>) -> StoreError {
    StoreError::corrupt(std::io::Error::other(why.into()))
}

/// Column `index` of `row`, or `Corrupt`.
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> StoreResult<T> {
    row.try_get(index).map_err(StoreError::corrupt)
}

fn parsed<T: FromStr>(row: &Row, index: usize) -> StoreResult<T> {
    let text: &str = get(row, index)?;
    text.parse().map_err(|_| corrupt(format!("unexpected value {text:?} in column {index}")))
}

fn json_text(row: &Row, index: usize) -> StoreResult<Value> {
    serde_json::from_str(get(row, index)?).map_err(StoreError::corrupt)
}

/// A whole record stored as JSON text.
pub(crate) fn record<T: serde::de::DeserializeOwned>(row: &Row, index: usize) -> StoreResult<T> {
    serde_json::from_str(get(row, index)?).map_err(StoreError::corrupt)
}

/// JSON text for a value (a payload, a record).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

/// The word an enum serializes to (`"running"`, `"webhook"`), for columns that filter on it.
pub(crate) fn word<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    Ok(to_json(value)?.trim_matches('"').to_owned())
}

/// A count or version as a `bigint`.
pub(crate) fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `bigint` count or version read back.
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

pub(crate) const USER_COLUMNS: &str = "id, email, name, role, active, email_verified, version, created_at, updated_at, \
     password_hash, failed_logins, last_failed_login_at";

pub(crate) fn user(row: &Row) -> StoreResult<User> {
    let email: &str = get(row, 1)?;
    Ok(User {
        id: get::<Uuid>(row, 0)?.into(),
        email: Email::parse(email).map_err(|_| corrupt("invalid stored email"))?,
        name: get(row, 2)?,
        role: parsed::<Role>(row, 3)?,
        active: get(row, 4)?,
        email_verified: get(row, 5)?,
        version: unsigned(get(row, 6)?),
        created_at: get(row, 7)?,
        updated_at: get(row, 8)?,
        password_hash: get::<Option<String>>(row, 9)?.map(PasswordHash::from_phc),
        failed_logins: u32::try_from(get::<i32>(row, 10)?).unwrap_or_default(),
        last_failed_login_at: get(row, 11)?,
    })
}

pub(crate) const TOKEN_COLUMNS: &str =
    "hash, kind, user_id, family, created_at, family_created_at, expires_at, consumed_at, user_agent, ip";

pub(crate) fn token(row: &Row) -> StoreResult<TokenRecord> {
    let hash: &[u8] = get(row, 0)?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| corrupt("not a 32-byte hash"))?;
    let kind: &str = get(row, 1)?;
    let kind = [TokenKind::Refresh, TokenKind::PasswordReset, TokenKind::EmailVerify]
        .into_iter()
        .find(|known| known.as_str() == kind)
        .ok_or_else(|| corrupt("unknown token kind"))?;
    Ok(TokenRecord {
        hash: TokenHash::from_bytes(hash),
        kind,
        user_id: get::<Uuid>(row, 2)?.into(),
        family: get::<Uuid>(row, 3)?.into(),
        created_at: get(row, 4)?,
        family_created_at: get(row, 5)?,
        expires_at: get(row, 6)?,
        consumed_at: get(row, 7)?,
        client: ClientMeta {
            user_agent: get(row, 8)?,
            ip: get::<Option<&str>>(row, 9)?
                .map(|ip| ip.parse().map_err(|_| corrupt("not an IP address")))
                .transpose()?,
        },
    })
}

pub(crate) const JOB_COLUMNS: &str = "id, queue, kind, payload, state, priority, attempt, max_attempts, run_at, created_at, \
     started_at, finished_at, progress_percent, progress_message, last_error, result, artifact_content_type, \
     artifact_file_name, artifact_size, created_by, unique_key, lease_holder, lease_until, cancel_requested, revision";

/// A job and the revision it was read at.
pub(crate) fn job_at_revision(row: &Row) -> StoreResult<(Job, i64)> {
    Ok((job(row)?, get(row, 24)?))
}

pub(crate) fn job(row: &Row) -> StoreResult<Job> {
    let artifact = match get::<Option<String>>(row, 16)? {
        Some(content_type) => Some(ArtifactInfo {
            content_type,
            file_name: get(row, 17)?,
            size: unsigned(get::<Option<i64>>(row, 18)?.unwrap_or_default()),
        }),
        None => None,
    };
    Ok(Job {
        id: get::<Uuid>(row, 0)?.into(),
        queue: get(row, 1)?,
        kind: get(row, 2)?,
        payload: json_text(row, 3)?,
        state: parsed::<JobState>(row, 4)?,
        priority: get(row, 5)?,
        attempt: u32::try_from(get::<i32>(row, 6)?).unwrap_or_default(),
        max_attempts: u32::try_from(get::<i32>(row, 7)?).unwrap_or_default(),
        run_at: get(row, 8)?,
        created_at: get(row, 9)?,
        started_at: get(row, 10)?,
        finished_at: get(row, 11)?,
        progress: Progress { percent: u8::try_from(get::<i16>(row, 12)?).unwrap_or_default(), message: get(row, 13)? },
        last_error: get(row, 14)?,
        result: get::<Option<&str>>(row, 15)?
            .map(|text| serde_json::from_str(text).map_err(StoreError::corrupt))
            .transpose()?,
        artifact,
        created_by: get::<Option<Uuid>>(row, 19)?.map(Into::into),
        unique_key: get(row, 20)?,
        lease_holder: get::<Option<String>>(row, 21)?.map(WorkerId::new),
        lease_until: get(row, 22)?,
        cancel_requested: get(row, 23)?,
    })
}

/// Reads every row with `convert`.
pub(crate) fn all<T>(rows: &[Row], convert: impl Fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(convert).collect()
}
