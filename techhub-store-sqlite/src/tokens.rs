//! Tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use techhub_core::model::{Consumed, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId};
use techhub_core::storage::{Conflict, StoreResult, TokenSelector, TokenStore, decisions};

use crate::CachedStatements;
use crate::rows::{TOKEN_COLUMNS, micros};
use crate::{Sql, SqliteStore, rows};

fn load(connection: &Connection, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
    connection
        .cached_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"), [hash.as_bytes()], rows::token)
        .optional()
        .sql()
}

fn insert(connection: &Connection, record: &TokenRecord) -> StoreResult<()> {
    if load(connection, &record.hash)?.is_some() {
        return Err(Conflict::Duplicate.into());
    }
    connection
        .cached_execute(
            &format!("INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                record.hash.as_bytes(),
                record.kind.as_str(),
                record.user_id.as_bytes(),
                record.family.as_bytes(),
                micros(record.created_at),
                micros(record.family_created_at),
                micros(record.expires_at),
                record.consumed_at.map(micros),
            ],
        )
        .sql()?;
    Ok(())
}

/// When the session `family`'s last live token expires, if it has one at `now`.
pub(crate) fn family_live_until(
    connection: &Connection,
    family: TokenFamilyId,
    now: DateTime<Utc>,
) -> StoreResult<Option<DateTime<Utc>>> {
    let until: Option<i64> = connection
        .cached_row(
            "SELECT MAX(expires_at) FROM tokens WHERE family = ?1 AND consumed_at IS NULL AND expires_at > ?2",
            params![family.as_bytes(), micros(now)],
            |row| row.get(0),
        )
        .sql()?;
    Ok(until.and_then(DateTime::from_timestamp_micros))
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_token(&self, record: TokenRecord) -> StoreResult<()> {
        self.write_sessions(move |connection| insert(connection, &record)).await
    }

    async fn get_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let hash = *hash;
        self.engine.read(move |connection| load(connection, &hash)).await
    }

    async fn consume_token(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: DateTime<Utc>,
        replacement: Option<TokenRecord>,
    ) -> StoreResult<Option<Consumed>> {
        let hash = *hash;
        self.write_sessions(move |connection| {
            let decision = decisions::consume_token(load(connection, &hash)?, kind, now);
            if let Some(Consumed::Fresh(record)) = &decision {
                connection
                    .cached_execute(
                        "UPDATE tokens SET consumed_at = ?2 WHERE hash = ?1",
                        params![hash.as_bytes(), record.consumed_at.map(micros)],
                    )
                    .sql()?;
                if let Some(next) = replacement {
                    insert(connection, &next)?;
                }
            }
            Ok(decision)
        })
        .await
    }

    async fn revoke_tokens(&self, selector: TokenSelector) -> StoreResult<u64> {
        self.write_sessions(move |connection| {
                let deleted = match selector {
                    TokenSelector::Family(family) => {
                        connection.cached_execute("DELETE FROM tokens WHERE family = ?1", [family.as_bytes()]).sql()?
                    }
                    TokenSelector::User { user_id, kind, except_family } => connection
                        .cached_execute(
                            "DELETE FROM tokens WHERE user_id = ?1 AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR family <> ?3)",
                            params![user_id.as_bytes(), kind.map(TokenKind::as_str), except_family.map(|family| family.as_bytes().to_vec())],
                        )
                        .sql()?,
                };
                Ok(deleted as u64)
            })
            .await
    }

    async fn live_tokens(&self, user_id: UserId, kind: TokenKind, now: DateTime<Utc>) -> StoreResult<Vec<TokenRecord>> {
        self.engine
            .read(move |connection| {
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = ?1 AND kind = ?2 AND consumed_at IS NULL \
                         AND expires_at > ?3 ORDER BY created_at, hash"
                    ))
                    .sql()?;
                let records = statement
                    .query_map(params![user_id.as_bytes(), kind.as_str(), micros(now)], rows::token)
                    .sql()?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .sql()?;
                Ok(records)
            })
            .await
    }

    async fn family_is_live(&self, family: TokenFamilyId, now: DateTime<Utc>) -> StoreResult<bool> {
        self.engine.read(move |connection| Ok(family_live_until(connection, family, now)?.is_some())).await
    }

    async fn prune_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.write_sessions(move |connection| {
            Ok(connection.cached_execute("DELETE FROM tokens WHERE expires_at <= ?1", [micros(now)]).sql()? as u64)
        })
        .await
    }
}
