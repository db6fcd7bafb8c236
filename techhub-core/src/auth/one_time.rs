//! One-time tokens (password reset, email verification): 256 random bits shown once, stored as a SHA-256 hash.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::model::{TokenFamilyId, TokenHash, TokenKind, TokenRecord, UserId};
use crate::storage::TokenSelector;
use crate::{Result, TechHub, clock};

/// A fresh random token: 32 bytes from the OS-seeded CSPRNG, URL-safe base64 (43 characters).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Issues a token of `kind` for `user_id`, valid for `ttl`, voiding the user's earlier tokens of that kind.
/// Returns the raw token, which exists nowhere else: only its hash is stored.
pub(crate) async fn issue(hub: &TechHub, user_id: UserId, kind: TokenKind, ttl: Duration) -> Result<String> {
    let storage = hub.storage();
    storage.revoke_tokens(TokenSelector::User { user_id, kind: Some(kind), except_family: None }).await?;
    let raw = random_token();
    let now = hub.now();
    let record = TokenRecord::new(TokenHash::of(&raw), kind, user_id, TokenFamilyId::new(), now, clock::add(now, ttl));
    storage.insert_token(record).await?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let token = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).expect("base64url").len(), 32);
        assert_ne!(random_token(), token);
    }
}
