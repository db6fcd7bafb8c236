//! Tokens: rows by hash, and indexes by user, by family and by expiry.
//!
//! Revoking a user's or a family's tokens needs a scan of an index, which a sled transaction cannot do. So
//! revocations (and user deletion, and pruning) run on the writer by themselves: they scan, then delete in a
//! transaction, and since the writer is the only thread that writes, no token can join the set in between. A
//! refresh rotation therefore can never slip a replacement past a family revocation.

use std::ops::Bound;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sled::IVec;
use techhub_core::model::{Consumed, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId};
use techhub_core::storage::{Conflict, StoreResult, TokenSelector, TokenStore, decisions};
use uuid::Uuid;

use crate::SledStore;
use crate::codec::corrupt;
use crate::engine::{Sled, TreeId, Trees};
use crate::keys;
use crate::rows::{decode_token, encode_token};
use crate::tx::{OrAbort, Tx, TxResult, TxTree, abort, transaction};

/// How many expired tokens one pruning transaction deletes.
const PRUNE_BATCH: usize = 256;

fn hash_from(bytes: &[u8]) -> StoreResult<TokenHash> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| corrupt("a token hash is not 32 bytes"))?;
    Ok(TokenHash::from_bytes(bytes))
}

/// The hashes an owner index lists under `owner`.
fn hashes_under(trees: &Trees, index: TreeId, owner: &Uuid) -> StoreResult<Vec<TokenHash>> {
    trees[index].scan_prefix(owner.as_bytes()).map(|entry| hash_from(keys::owned_record(&entry.sled()?.0)?)).collect()
}

/// The hashes of a user's tokens (on the writer, before the transaction that deletes them).
pub(crate) fn tokens_of_user(trees: &Trees, user: UserId) -> StoreResult<Vec<TokenHash>> {
    hashes_under(trees, TreeId::TokensByUser, user.as_uuid())
}

/// The token trees as one call sees them.
pub(crate) struct TokenTx<'a> {
    rows: TxTree<'a>,
    by_user: TxTree<'a>,
    by_family: TxTree<'a>,
    by_expiry: TxTree<'a>,
}

impl<'a> TokenTx<'a> {
    pub(crate) fn new(tx: &'a Tx<'a>) -> Self {
        Self {
            rows: tx.tree(TreeId::Tokens),
            by_user: tx.tree(TreeId::TokensByUser),
            by_family: tx.tree(TreeId::TokensByFamily),
            by_expiry: tx.tree(TreeId::TokensByExpiry),
        }
    }

    fn load(&self, hash: &TokenHash) -> TxResult<Option<TokenRecord>> {
        let Some(row) = self.rows.get(hash.as_bytes())? else { return Ok(None) };
        Ok(Some(decode_token(*hash, &row).or_abort()?))
    }

    fn insert(&self, record: &TokenRecord) -> TxResult<()> {
        let hash = record.hash.as_bytes().as_slice();
        if self.rows.get(hash)?.is_some() {
            return Err(abort(Conflict::Duplicate));
        }
        self.rows.insert(hash, encode_token(record))?;
        self.by_user.insert(keys::owned(record.user_id.as_uuid(), hash), IVec::default())?;
        self.by_family.insert(keys::owned(record.family.as_uuid(), hash), IVec::default())?;
        self.by_expiry.insert(keys::token_expiry(record.expires_at, &record.hash), IVec::default())
    }

    /// Deletes the token and its index entries; returns it, if it was there.
    pub(crate) fn delete(&self, hash: &TokenHash) -> TxResult<Option<TokenRecord>> {
        let Some(record) = self.load(hash)? else { return Ok(None) };
        let bytes = hash.as_bytes().as_slice();
        self.rows.remove(bytes)?;
        self.by_user.remove(keys::owned(record.user_id.as_uuid(), bytes))?;
        self.by_family.remove(keys::owned(record.family.as_uuid(), bytes))?;
        self.by_expiry.remove(keys::token_expiry(record.expires_at, hash))?;
        Ok(Some(record))
    }
}

/// Deletes the tokens `selector` names (on the writer: scan, then one transaction).
fn revoke(trees: &Trees, selector: TokenSelector) -> StoreResult<u64> {
    let hashes = match selector {
        TokenSelector::Family(family) => hashes_under(trees, TreeId::TokensByFamily, family.as_uuid())?,
        TokenSelector::User { user_id, .. } => tokens_of_user(trees, user_id)?,
    };
    transaction(trees, |tx| {
        let tokens = TokenTx::new(tx);
        let mut revoked = 0;
        for hash in &hashes {
            let Some(record) = tokens.load(hash)? else { continue };
            let chosen = match selector {
                TokenSelector::Family(_) => true,
                TokenSelector::User { kind, except_family, .. } => {
                    kind.is_none_or(|kind| kind == record.kind) && except_family != Some(record.family)
                }
            };
            if chosen {
                tokens.delete(hash)?;
                revoked += 1;
            }
        }
        Ok(revoked)
    })
}

/// Deletes every token that expired at `now` (on the writer), in batches.
fn prune(trees: &Trees, now: DateTime<Utc>) -> StoreResult<u64> {
    let end = keys::token_expiry_end(now);
    let mut from = Bound::Unbounded;
    let mut pruned = 0;
    loop {
        let expired: Vec<IVec> = trees[TreeId::TokensByExpiry]
            .range((from.clone(), Bound::Excluded(end.clone())))
            .take(PRUNE_BATCH)
            .map(|entry| entry.sled().map(|(key, _)| key))
            .collect::<StoreResult<_>>()?;
        let Some(last) = expired.last().cloned() else { break };
        pruned += transaction(trees, |tx| {
            let tokens = TokenTx::new(tx);
            let mut deleted = 0;
            for key in &expired {
                let (_, hash) = keys::decode_token_expiry(key).or_abort()?;
                if tokens.delete(&hash)?.is_some() {
                    deleted += 1;
                }
            }
            Ok(deleted)
        })?;
        if expired.len() < PRUNE_BATCH {
            break;
        }
        from = Bound::Excluded(last.to_vec());
    }
    Ok(pruned)
}

fn load_token(trees: &Trees, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
    let Some(row) = trees[TreeId::Tokens].get(hash.as_bytes()).sled()? else { return Ok(None) };
    decode_token(*hash, &row).map(Some)
}

/// The records an owner index lists under `owner` (read outside the writer, for queries).
fn tokens_under(trees: &Trees, index: TreeId, owner: &Uuid) -> StoreResult<Vec<TokenRecord>> {
    let mut records = Vec::new();
    for hash in hashes_under(trees, index, owner)? {
        // Deleted since the index was read: not there any more.
        if let Some(record) = load_token(trees, &hash)? {
            records.push(record);
        }
    }
    Ok(records)
}

/// Whether the session `family` holds a live token at `now` (read outside the writer).
pub(crate) fn family_is_live(trees: &Trees, family: TokenFamilyId, now: DateTime<Utc>) -> StoreResult<bool> {
    Ok(tokens_under(trees, TreeId::TokensByFamily, family.as_uuid())?.iter().any(|record| record.is_live(now)))
}

#[async_trait]
impl TokenStore for SledStore {
    async fn insert_token(&self, record: TokenRecord) -> StoreResult<()> {
        self.writer.write(move |tx| TokenTx::new(tx).insert(&record)).await
    }

    async fn get_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let hash = *hash;
        self.read(move |trees| load_token(trees, &hash)).await
    }

    async fn consume_token(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: DateTime<Utc>,
        replacement: Option<TokenRecord>,
    ) -> StoreResult<Option<Consumed>> {
        let hash = *hash;
        self.writer
            .write(move |tx| {
                let tokens = TokenTx::new(tx);
                let decision = decisions::consume_token(tokens.load(&hash)?, kind, now);
                if let Some(Consumed::Fresh(record)) = &decision {
                    tokens.rows.insert(hash.as_bytes().as_slice(), encode_token(record))?;
                    if let Some(next) = &replacement {
                        tokens.insert(next)?;
                    }
                }
                Ok(decision)
            })
            .await
    }

    async fn revoke_tokens(&self, selector: TokenSelector) -> StoreResult<u64> {
        self.writer.alone(move |trees| revoke(trees, selector)).await
    }

    async fn live_tokens(&self, user_id: UserId, kind: TokenKind, now: DateTime<Utc>) -> StoreResult<Vec<TokenRecord>> {
        self.read(move |trees| {
            let mut live: Vec<TokenRecord> = tokens_under(trees, TreeId::TokensByUser, user_id.as_uuid())?
                .into_iter()
                .filter(|record| record.kind == kind && record.is_live(now))
                .collect();
            live.sort_by_key(|record| (record.created_at, record.hash));
            Ok(live)
        })
        .await
    }

    async fn family_is_live(&self, family: TokenFamilyId, now: DateTime<Utc>) -> StoreResult<bool> {
        self.read(move |trees| family_is_live(trees, family, now)).await
    }

    async fn prune_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.writer.alone(move |trees| prune(trees, now)).await
    }
}
