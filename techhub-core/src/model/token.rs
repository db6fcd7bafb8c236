//! Token records: refresh, password-reset and email-verification tokens, stored only as SHA-256 hashes.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{TokenFamilyId, UserId};

/// What a token is for. A token of one kind is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Exchanged for a new access token; rotated on every use.
    Refresh,
    /// Lets its holder set a new password once.
    PasswordReset,
    /// Proves its holder received mail at the user's address.
    EmailVerify,
}

impl TokenKind {
    /// `"refresh"`, `"password_reset"` or `"email_verify"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Refresh => "refresh",
            Self::PasswordReset => "password_reset",
            Self::EmailVerify => "email_verify",
        }
    }
}

/// The SHA-256 hash of a raw token: what storage keeps and looks tokens up by. Its `Debug` is redacted:
/// a hash is not the token, but it identifies one and has no business in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes the raw token its holder presented.
    pub fn of(raw_token: &str) -> Self {
        Self(Sha256::digest(raw_token.as_bytes()).into())
    }

    /// Wraps a hash read back from storage.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash's bytes, for storage.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// A stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The hash of the raw token (the raw token is shown once, to its holder, and never stored).
    pub hash: TokenHash,
    /// What the token is for.
    pub kind: TokenKind,
    /// Whose token it is.
    pub user_id: UserId,
    /// The family: for refresh tokens the login session they rotate within; for other kinds, the token's own.
    pub family: TokenFamilyId,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When its family began (the login, for refresh tokens): an absolute session lifetime counts from here.
    pub family_created_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// When it was consumed, if it was. Consumed records stay until they expire so that a replay is
    /// recognised (and, for refresh tokens, revokes the family).
    pub consumed_at: Option<DateTime<Utc>>,
    /// Where its family began: the signing-in client's user agent and address, when known (for listing
    /// sessions). Rotations keep them.
    pub client: ClientMeta,
}

/// What a front-end knows about the client behind a call: its user agent and address. Both are optional:
/// an embedding app may know neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMeta {
    /// The `User-Agent` (or the app's own description of itself), cut to 256 characters.
    pub user_agent: Option<String>,
    /// The client's address.
    pub ip: Option<IpAddr>,
}

impl ClientMeta {
    /// The longest user agent kept, in characters.
    pub const MAX_USER_AGENT_CHARS: usize = 256;

    /// A client with this user agent (cut to [`ClientMeta::MAX_USER_AGENT_CHARS`]) and address.
    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> Self {
        let user_agent = user_agent
            .map(|agent| agent.chars().filter(|c| !c.is_control()).take(Self::MAX_USER_AGENT_CHARS).collect::<String>())
            .filter(|agent| !agent.is_empty());
        Self { user_agent, ip }
    }
}

impl TokenRecord {
    /// A fresh record for the raw token whose hash is `hash`.
    pub fn new(
        hash: TokenHash,
        kind: TokenKind,
        user_id: UserId,
        family: TokenFamilyId,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            hash,
            kind,
            user_id,
            family,
            created_at,
            family_created_at: created_at,
            expires_at,
            consumed_at: None,
            client: ClientMeta::default(),
        }
    }

    /// The same record, begun by `client`.
    #[must_use]
    pub fn from_client(mut self, client: ClientMeta) -> Self {
        self.client = client;
        self
    }

    /// The same record, in a family that began at `family_created_at` (a rotated refresh token).
    #[must_use]
    pub fn in_family_since(mut self, family_created_at: DateTime<Utc>) -> Self {
        self.family_created_at = family_created_at;
        self
    }

    /// Whether the token is still accepted at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.consumed_at.is_none() && now < self.expires_at
    }
}

/// What consuming a token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// The token was live; it is now consumed and this caller is the only one that got it.
    Fresh(TokenRecord),
    /// The token had been consumed before (its `consumed_at` says when): a replay. For refresh tokens the
    /// caller decides whether that is a race within the grace window or theft that revokes the family.
    Replayed(TokenRecord),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_and_redacted() {
        let hash = TokenHash::of("abc");
        assert_eq!(hash.as_bytes()[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(format!("{hash:?}"), "TokenHash(<redacted>)");
    }
}
