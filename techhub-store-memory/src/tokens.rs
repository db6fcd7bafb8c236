//! Tokens: a map by hash, with indexes by family and by user for revocation.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use techhub_core::model::{Consumed, TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId};
use techhub_core::storage::{Conflict, StoreResult, TokenSelector, TokenStore, decisions};

use crate::{MemoryStore, lock};

#[derive(Debug, Default)]
pub(crate) struct TokenTables {
    by_hash: HashMap<TokenHash, TokenRecord>,
    by_family: HashMap<TokenFamilyId, HashSet<TokenHash>>,
    by_user: HashMap<UserId, HashSet<TokenHash>>,
}

impl TokenTables {
    fn insert(&mut self, record: TokenRecord) {
        self.by_family.entry(record.family).or_default().insert(record.hash);
        self.by_user.entry(record.user_id).or_default().insert(record.hash);
        self.by_hash.insert(record.hash, record);
    }

    fn remove(&mut self, hash: &TokenHash) -> Option<TokenRecord> {
        let record = self.by_hash.remove(hash)?;
        remove_from_index(&mut self.by_family, record.family, hash);
        remove_from_index(&mut self.by_user, record.user_id, hash);
        Some(record)
    }

    /// Deletes what `selector` names; returns how many records went.
    pub(crate) fn revoke(&mut self, selector: TokenSelector) -> u64 {
        let doomed: Vec<TokenHash> = match selector {
            TokenSelector::Family(family) => {
                self.by_family.get(&family).map(|hashes| hashes.iter().copied().collect()).unwrap_or_default()
            }
            TokenSelector::User { user_id, kind, except_family } => self
                .by_user
                .get(&user_id)
                .into_iter()
                .flatten()
                .filter_map(|hash| self.by_hash.get(hash))
                .filter(|record| kind.is_none_or(|kind| kind == record.kind))
                .filter(|record| except_family != Some(record.family))
                .map(|record| record.hash)
                .collect(),
        };
        doomed.iter().filter(|hash| self.remove(hash).is_some()).count() as u64
    }
}

fn remove_from_index<K: std::hash::Hash + Eq>(index: &mut HashMap<K, HashSet<TokenHash>>, key: K, hash: &TokenHash) {
    if let Some(hashes) = index.get_mut(&key) {
        hashes.remove(hash);
        if hashes.is_empty() {
            index.remove(&key);
        }
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn insert_token(&self, record: TokenRecord) -> StoreResult<()> {
        let mut tokens = lock(&self.tokens);
        if tokens.by_hash.contains_key(&record.hash) {
            return Err(Conflict::Duplicate.into());
        }
        tokens.insert(record);
        Ok(())
    }

    async fn get_token(&self, hash: &TokenHash) -> StoreResult<Option<TokenRecord>> {
        Ok(lock(&self.tokens).by_hash.get(hash).cloned())
    }

    async fn consume_token(
        &self,
        hash: &TokenHash,
        kind: TokenKind,
        now: DateTime<Utc>,
        replacement: Option<TokenRecord>,
    ) -> StoreResult<Option<Consumed>> {
        let mut tokens = lock(&self.tokens);
        let decision = decisions::consume_token(tokens.by_hash.get(hash).cloned(), kind, now);
        if let Some(Consumed::Fresh(record)) = &decision {
            if replacement.as_ref().is_some_and(|next| tokens.by_hash.contains_key(&next.hash)) {
                return Err(Conflict::Duplicate.into());
            }
            tokens.by_hash.insert(record.hash, record.clone());
            if let Some(next) = replacement {
                tokens.insert(next);
            }
        }
        Ok(decision)
    }

    async fn revoke_tokens(&self, selector: TokenSelector) -> StoreResult<u64> {
        Ok(lock(&self.tokens).revoke(selector))
    }

    async fn live_tokens(&self, user_id: UserId, kind: TokenKind, now: DateTime<Utc>) -> StoreResult<Vec<TokenRecord>> {
        let tokens = lock(&self.tokens);
        let mut live: Vec<TokenRecord> = tokens
            .by_user
            .get(&user_id)
            .into_iter()
            .flatten()
            .filter_map(|hash| tokens.by_hash.get(hash))
            .filter(|record| record.kind == kind && record.is_live(now))
            .cloned()
            .collect();
        live.sort_by_key(|record| record.created_at);
        Ok(live)
    }

    async fn family_is_live(&self, family: TokenFamilyId, now: DateTime<Utc>) -> StoreResult<bool> {
        let tokens = lock(&self.tokens);
        Ok(tokens
            .by_family
            .get(&family)
            .into_iter()
            .flatten()
            .filter_map(|hash| tokens.by_hash.get(hash))
            .any(|record| record.is_live(now)))
    }

    async fn prune_tokens(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tokens = lock(&self.tokens);
        let expired: Vec<TokenHash> =
            tokens.by_hash.values().filter(|record| record.expires_at <= now).map(|record| record.hash).collect();
        Ok(expired.iter().filter(|hash| tokens.remove(hash).is_some()).count() as u64)
    }
}
