//! Tokens: rows by hash, indexes by user, by family and by expiry, and a generation per user and per family.
//!
//! Revoking a user's or a family's tokens needs a scan of an index, which a sled transaction cannot do. So a
//! revocation reads the owner's generation, scans, and then, inside its transaction, checks that the generation
//! is unchanged: every token insert bumps the generations of its user and its family in its own transaction, so
//! an unchanged generation proves no token joined the set after the scan (tokens that left it meanwhile are
//! simply not found). A refresh rotation therefore can never slip a replacement past a family revocation.

use std::ops::Bound;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sled::IVec;
use sled::transaction::TransactionalTree;
use techhub_core::model::{Consumed, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId};
use techhub_core::storage::{Conflict, StoreError, StoreResult, TokenSelector, TokenStore};
use uuid::Uuid;

use crate::SledStore;
use crate::engine::{OrAbort, Sled, TokenTrees, TxResult, abort, counter, missing_views, transaction};
use crate::keys;
use crate::rows::{decode_token, encode_token};

/// How often a revocation rescans when tokens keep joining the set it scanned.
pub(crate) const SCAN_ATTEMPTS: usize = 64;
/// How many expired tokens one pruning transaction deletes.
const PRUNE_BATCH: usize = 256;

/// Tokens kept being added faster than a revocation could finish.
pub(crate) fn contended() -> StoreError {
    StoreError::unavailable(std::io::Error::other("tokens kept changing during a revocation; try again"))
}

fn user_generation(user: UserId) -> Vec<u8> {
    [b"u".as_slice(), user.as_bytes()].concat()
}

fn family_generation(family: TokenFamilyId) -> Vec<u8> {
    [b"f".as_slice(), family.as_bytes()].concat()
}

fn hash_from(bytes: &[u8]) -> StoreResult<TokenHash> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| crate::codec::corrupt("a token hash is not 32 bytes"))?;
    Ok(TokenHash::from_bytes(bytes))
}

/// Views of the token trees, in [`TokenTrees::all`] order.
pub(crate) struct TokenTx<'a> {
    rows: &'a TransactionalTree,
    by_user: &'a TransactionalTree,
    by_family: &'a TransactionalTree,
    by_expiry: &'a TransactionalTree,
    generations: &'a TransactionalTree,
}

impl<'a> TokenTx<'a> {
    pub(crate) fn new(views: &'a [TransactionalTree]) -> TxResult<Self> {
        let [rows, by_user, by_family, by_expiry, generations] = views else { return Err(missing_views()) };
        Ok(Self { rows, by_user, by_family, by_expiry, generations })
    }

    fn load(&self, hash: &TokenHash) -> TxResult<Option<TokenRecord>> {
        let Some(row) = self.rows.get(hash.as_bytes())? else { return Ok(None) };
        Ok(Some(decode_token(*hash, &row).or_abort()?))
    }

    fn insert(&self, record: &TokenRecord) -> TxResult<()> {
        if self.rows.get(record.hash.as_bytes())?.is_some() {
            return Err(abort(Conflict::Duplicate));
        }
        let hash = record.hash.as_bytes();
        self.rows.insert(hash, encode_token(record))?;
        self.by_user.insert(keys::owned(record.user_id.as_uuid(), hash), IVec::default())?;
        self.by_family.insert(keys::owned(record.family.as_uuid(), hash), IVec::default())?;
        self.by_expiry.insert(keys::token_expiry(record.expires_at, &record.hash), IVec::default())?;
        for key in [user_generation(record.user_id), family_generation(record.family)] {
            let next = self.generation(&key)? + 1;
            self.generations.insert(key, &next.to_be_bytes())?;
        }
        Ok(())
    }

    /// Deletes the token and its index entries; returns it, if it was there.
    pub(crate) fn delete(&self, hash: &TokenHash) -> TxResult<Option<TokenRecord>> {
        let Some(record) = self.load(hash)? else { return Ok(None) };
        let bytes = hash.as_bytes();
        self.rows.remove(bytes)?;
        self.by_user.remove(keys::owned(record.user_id.as_uuid(), bytes))?;
        self.by_family.remove(keys::owned(record.family.as_uuid(), bytes))?;
        self.by_expiry.remove(keys::token_expiry(record.expires_at, hash))?;
        Ok(Some(record))
    }

    fn generation(&self, key: &[u8]) -> TxResult<u64> {
        counter(self.generations.get(key)?.as_deref()).or_abort()
    }
}

/// The tokens of one user or family as an index scan found them, with the generation read before the scan.
#[derive(Debug)]
pub(crate) struct TokenScan {
    pub(crate) hashes: Vec<TokenHash>,
    generation_key: Vec<u8>,
    generation: u64,
}

impl TokenScan {
    pub(crate) fn of_user(trees: &TokenTrees, user: UserId) -> StoreResult<Self> {
        Self::scan(trees, &trees.by_user, user_generation(user), user.as_uuid())
    }

    fn of_family(trees: &TokenTrees, family: TokenFamilyId) -> StoreResult<Self> {
        Self::scan(trees, &trees.by_family, family_generation(family), family.as_uuid())
    }

    fn scan(trees: &TokenTrees, index: &sled::Tree, generation_key: Vec<u8>, owner: &Uuid) -> StoreResult<Self> {
        // The generation first: a token added after this read changes it, whether or not the scan saw it.
        let generation = counter(trees.generations.get(&generation_key).sled()?.as_deref())?;
        let hashes = index
            .scan_prefix(owner.as_bytes())
            .map(|entry| hash_from(keys::owned_record(&entry.sled()?.0)?))
            .collect::<StoreResult<_>>()?;
        Ok(Self { hashes, generation_key, generation })
    }

    /// Whether no token joined the scanned set since the scan.
    pub(crate) fn is_current(&self, tokens: &TokenTx<'_>) -> TxResult<bool> {
        Ok(tokens.generation(&self.generation_key)? == self.generation)
    }
}

impl SledStore {
    fn token_transaction<R>(&self, body: impl Fn(&TokenTx<'_>) -> TxResult<R>) -> StoreResult<R> {
        transaction(&self.trees.tokens.all(), |views| body(&TokenTx::new(views)?))
    }

    fn load_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        let Some(row) = self.trees.tokens.rows.get(hash.as_bytes()).sled()? else { return Ok(None) };
        decode_token(*hash, &row).map(Some)
    }

    /// The records an owner index lists under `owner` (read outside a transaction, for queries).
    fn tokens_under(&self, index: &sled::Tree, owner: &Uuid) -> StoreResult<Vec<TokenRecord>> {
        let mut records = Vec::new();
        for entry in index.scan_prefix(owner.as_bytes()) {
            let hash = hash_from(keys::owned_record(&entry.sled()?.0)?)?;
            // Deleted since the index was read: not there any more.
            if let Some(record) = self.load_token(&hash)? {
                records.push(record);
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl TokenStore for SledStore {
    async fn insert_token(&self, record: TokenRecord) -> StoreResult<()> {
        self.token_transaction(|tokens| tokens.insert(&record))?;
        self.durability.committed().await
    }

    async fn get_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        self.load_token(hash)
    }

    async fn consume_token(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: DateTime<Utc>,
        replacement: Option<TokenRecord>,
    ) -> StoreResult<Option<Consumed>> {
        let consumed = self.token_transaction(|tokens| {
            let Some(mut record) = tokens.load(hash)?.filter(|record| record.kind == kind && now < record.expires_at)
            else {
                return Ok(None);
            };
            if record.consumed_at.is_some() {
                return Ok(Some(Consumed::Replayed(record)));
            }
            record.consumed_at = Some(now);
            tokens.rows.insert(hash.as_bytes(), encode_token(&record))?;
            if let Some(next) = &replacement {
                tokens.insert(next)?;
            }
            Ok(Some(Consumed::Fresh(record)))
        })?;
        self.durability.committed().await?;
        Ok(consumed)
    }

    async fn revoke_tokens(&self, selector: TokenSelector) -> StoreResult<u64> {
        for _ in 0..SCAN_ATTEMPTS {
            let scan = match selector {
                TokenSelector::Family(family) => TokenScan::of_family(&self.trees.tokens, family)?,
                TokenSelector::User { user_id, .. } => TokenScan::of_user(&self.trees.tokens, user_id)?,
            };
            let revoked = self.token_transaction(|tokens| {
                if !scan.is_current(tokens)? {
                    return Ok(None);
                }
                let mut revoked = 0;
                for hash in &scan.hashes {
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
                Ok(Some(revoked))
            })?;
            if let Some(revoked) = revoked {
                self.durability.committed().await?;
                return Ok(revoked);
            }
        }
        Err(contended())
    }

    async fn live_tokens(&self, user_id: UserId, kind: TokenKind, now: DateTime<Utc>) -> StoreResult<Vec<TokenRecord>> {
        let mut live: Vec<TokenRecord> = self
            .tokens_under(&self.trees.tokens.by_user, user_id.as_uuid())?
            .into_iter()
            .filter(|record| record.kind == kind && record.is_live(now))
            .collect();
        live.sort_by_key(|record| (record.created_at, record.hash));
        Ok(live)
    }

    async fn family_is_live(&self, family: TokenFamilyId, now: DateTime<Utc>) -> StoreResult<bool> {
        Ok(self.tokens_under(&self.trees.tokens.by_family, family.as_uuid())?.iter().any(|record| record.is_live(now)))
    }

    async fn prune_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let end = keys::token_expiry_end(now);
        let mut from = Bound::Unbounded;
        let mut pruned = 0;
        loop {
            let expired: Vec<IVec> = self
                .trees
                .tokens
                .by_expiry
                .range((from.clone(), Bound::Excluded(end.clone())))
                .take(PRUNE_BATCH)
                .map(|entry| entry.sled().map(|(key, _)| key))
                .collect::<StoreResult<_>>()?;
            let Some(last) = expired.last().cloned() else { break };
            pruned += self.token_transaction(|tokens| {
                let mut deleted = 0;
                for key in &expired {
                    let (expires_at, hash) = keys::decode_token_expiry(key).or_abort()?;
                    // Expired tokens stay expired; only check it is still the record the index entry was for.
                    if tokens.load(&hash)?.is_some_and(|record| record.expires_at == expires_at) {
                        tokens.delete(&hash)?;
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
        if pruned > 0 {
            self.durability.committed().await?;
        }
        Ok(pruned)
    }
}
