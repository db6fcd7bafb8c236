//! Tokens. A consume locks the token's row, so of concurrent consumers (on any instance) exactly one finds it
//! fresh.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use techhub_core::model::{Consumed, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId};
use techhub_core::storage::{Conflict, StoreResult, TokenSelector, TokenStore, decisions};

use crate::PostgresStore;
use crate::db::{Db, execute, query, query_one, query_opt};
use crate::rows::{self, TOKEN_COLUMNS};

async fn load<C: GenericClient + Sync>(client: &C, hash: &TokenHash, lock: bool) -> StoreResult<Option<TokenRecord>> {
    let sql = if lock {
        format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1 FOR UPDATE")
    } else {
        format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1")
    };
    query_opt(client, &sql, &[&hash.as_bytes().as_slice()]).await?.as_ref().map(rows::token).transpose()
}

async fn insert<C: GenericClient + Sync>(client: &C, record: &TokenRecord) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
    );
    let inserted = execute(
        client,
        &sql,
        &[
            &record.hash.as_bytes().as_slice(),
            &record.kind.as_str(),
            record.user_id.as_uuid(),
            record.family.as_uuid(),
            &record.created_at,
            &record.family_created_at,
            &record.expires_at,
            &record.consumed_at,
            &record.client.user_agent,
            &record.client.ip.map(|ip| ip.to_string()),
        ],
    )
    .await?;
    if inserted == 0 { Err(Conflict::Duplicate.into()) } else { Ok(()) }
}

#[async_trait]
impl TokenStore for PostgresStore {
    async fn insert_token(&self, record: TokenRecord) -> StoreResult<()> {
        insert(&self.client().await?, &record).await
    }

    async fn get_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        load(&self.client().await?, hash, false).await
    }

    async fn consume_token(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: DateTime<Utc>,
        replacement: Option<TokenRecord>,
    ) -> StoreResult<Option<Consumed>> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.db()?;
        let decision = decisions::consume_token(load(&transaction, hash, true).await?, kind, now);
        if let Some(Consumed::Fresh(record)) = &decision {
            execute(
                &transaction,
                "UPDATE tokens SET consumed_at = $2 WHERE hash = $1",
                &[&hash.as_bytes().as_slice(), &record.consumed_at],
            )
            .await?;
            if let Some(next) = &replacement {
                insert(&transaction, next).await?;
            }
            transaction.commit().await.db()?;
        }
        Ok(decision)
    }

    async fn revoke_tokens(&self, selector: TokenSelector) -> StoreResult<u64> {
        let client = self.client().await?;
        match selector {
            TokenSelector::Family(family) => {
                execute(&client, "DELETE FROM tokens WHERE family = $1", &[family.as_uuid()]).await
            }
            TokenSelector::User { user_id, kind, except_family } => {
                execute(
                    &client,
                    "DELETE FROM tokens WHERE user_id = $1 AND ($2::text IS NULL OR kind = $2) \
                     AND ($3::uuid IS NULL OR family <> $3)",
                    &[user_id.as_uuid(), &kind.map(TokenKind::as_str), &except_family.map(|family| *family.as_uuid())],
                )
                .await
            }
        }
    }

    async fn live_tokens(&self, user_id: UserId, kind: TokenKind, now: DateTime<Utc>) -> StoreResult<Vec<TokenRecord>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = $1 AND kind = $2 AND consumed_at IS NULL \
             AND expires_at > $3 ORDER BY created_at, hash"
        );
        let found = query(&client, &sql, &[user_id.as_uuid(), &kind.as_str(), &now]).await?;
        rows::all(&found, rows::token)
    }

    async fn family_is_live(&self, family: TokenFamilyId, now: DateTime<Utc>) -> StoreResult<bool> {
        let client = self.client().await?;
        let row = query_one(
            &client,
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE family = $1 AND consumed_at IS NULL AND expires_at > $2)",
            &[family.as_uuid(), &now],
        )
        .await?;
        rows::get(&row, 0)
    }

    async fn prune_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        execute(&self.client().await?, "DELETE FROM tokens WHERE expires_at <= $1", &[&now]).await
    }
}
