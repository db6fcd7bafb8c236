//! Access tokens: short-lived JWTs with a pinned algorithm, `typ: at+jwt`, every claim required and checked,
//! and key rotation by `kid`.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::AuthConfig;
use crate::model::{Role, TokenFamilyId, UserId};
use crate::{Error, Result, clock};

/// The `typ` header of TechHub access tokens (RFC 9068).
const TOKEN_TYPE: &str = "at+jwt";
/// The shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims of an access token. Every field is required: a token missing one is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user.
    pub sub: UserId,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// A unique id for the token.
    pub jti: String,
    /// The session (refresh-token family) it belongs to: revoking the session voids the token at once.
    pub sid: TokenFamilyId,
    /// The user's role when issued (informational: rights are read from storage at each request).
    pub role: Role,
}

/// A key that signs and verifies access tokens.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// HS256 only: the HMAC with its key schedule done once, cloned per verification (keying it costs two
    /// SHA-256 blocks, on every authenticated request's path).
    hmac: Option<Hmac<Sha256>>,
}

impl SigningKey {
    /// An HS256 key from a secret of at least 32 bytes (shorter is a configuration error).
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::invalid_field("jwt_secret", "the JWT secret must be at least 32 bytes long"));
        }
        let hmac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| Error::invalid_field("jwt_secret", "not a usable HMAC key"))?;
        Ok(Self {
            kid: kid.into(),
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            hmac: Some(hmac),
        })
    }

    /// An EdDSA (Ed25519) key from a PKCS#8 DER private key and the raw 32-byte public key.
    pub fn ed25519(kid: impl Into<String>, private_pkcs8_der: &[u8], public_key: &[u8; 32]) -> Result<Self> {
        let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public_key))
            .map_err(|_| Error::invalid_field("jwt_key", "not a valid Ed25519 public key"))?;
        Ok(Self {
            kid: kid.into(),
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(private_pkcs8_der),
            decoding,
            hmac: None,
        })
    }

    /// A random HS256 key, for a hub given none: tokens it signs die with the process.
    pub(crate) fn ephemeral() -> Self {
        let secret = crate::auth::one_time::random_token();
        Self::hs256("ephemeral", secret.as_bytes()).unwrap_or_else(|_| unreachable!("43 bytes is long enough"))
    }

    /// The key id (`kid` header).
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// The signing key and the retired keys that still verify until their grace period ends.
#[derive(Debug, Clone)]
pub struct JwtKeys {
    current: SigningKey,
    retired: Vec<(SigningKey, DateTime<Utc>)>,
}

impl JwtKeys {
    /// Signs and verifies with `current` only.
    pub fn new(current: SigningKey) -> Self {
        Self { current, retired: Vec::new() }
    }

    /// Signs with `next` from now on; the current key keeps verifying until `now + grace` (so tokens it signed
    /// live out their lifetime).
    #[must_use]
    pub fn rotate(mut self, next: SigningKey, now: DateTime<Utc>, grace: Duration) -> Self {
        let previous = std::mem::replace(&mut self.current, next);
        self.retired.push((previous, clock::add(now, grace)));
        self
    }

    /// The key that verifies a token with `kid` at `now`.
    fn verifying(&self, kid: &str, now: DateTime<Utc>) -> Option<&SigningKey> {
        std::iter::once(&self.current)
            .filter(|key| key.kid == kid)
            .chain(self.retired.iter().filter(|(key, until)| key.kid == kid && now < *until).map(|(key, _)| key))
            .next()
    }
}

/// Issues and verifies access tokens.
#[derive(Debug)]
pub(crate) struct AccessTokens {
    keys: JwtKeys,
    issuer: String,
    audience: String,
    ttl: Duration,
    leeway: Duration,
    /// Built once per algorithm: verification is on every request's path.
    validations: [(Algorithm, Validation); 2],
}

impl AccessTokens {
    pub(crate) fn new(keys: JwtKeys, config: &AuthConfig) -> Self {
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.set_issuer(&[&config.issuer]);
            validation.set_audience(&[&config.audience]);
            validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
            // Time is checked against the hub's clock in `verify`, not the library's reading of the system clock.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            (algorithm, validation)
        };
        Self {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.access_ttl,
            leeway: config.leeway,
            validations: [validation(Algorithm::HS256), validation(Algorithm::EdDSA)],
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` in session `sid`, valid from `now` for the configured lifetime.
    pub(crate) fn issue(&self, user: UserId, role: Role, sid: TokenFamilyId, now: DateTime<Utc>) -> Result<String> {
        let key = &self.keys.current;
        let mut header = Header::new(key.algorithm);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user,
            exp: clock::add(now, self.ttl).timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: uuid::Uuid::now_v7().to_string(),
            sid,
            role,
        };
        jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|error| Error::internal(format!("signing an access token failed: {error}")))
    }

    /// The claims of a valid token at `now`; otherwise `Unauthenticated` with code `token_expired` or
    /// `token_invalid` (the message never says more than that).
    ///
    /// The header is read once (its `typ`, `kid` and `alg` pick the key). An HS256 token is then checked here
    /// with the key's prepared HMAC and its claims parsed once; other algorithms go through `jsonwebtoken`.
    /// Either way every claim is required and issuer and audience must match.
    pub(crate) fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims> {
        let invalid = || Error::unauthenticated("the access token is invalid").with_code("token_invalid");
        let parts = TokenParts::split(token).ok_or_else(invalid)?;
        let header: TokenHeader = parts.header().ok_or_else(invalid)?;
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(invalid());
        }
        let key = header.kid.as_deref().and_then(|kid| self.keys.verifying(kid, now)).ok_or_else(invalid)?;
        if header.alg != key.algorithm {
            return Err(invalid());
        }
        let claims = match &key.hmac {
            Some(hmac) => {
                if !parts.signed_by(hmac) {
                    return Err(invalid());
                }
                let claims = parts.claims().ok_or_else(invalid)?;
                if claims.iss != self.issuer || claims.aud != self.audience {
                    return Err(invalid());
                }
                claims
            }
            None => {
                let validation =
                    self.validations.iter().find(|(algorithm, _)| *algorithm == key.algorithm).map(|(_, v)| v);
                let validation = validation.ok_or_else(invalid)?;
                jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, validation).map_err(|_| invalid())?.claims
            }
        };
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let now = now.timestamp();
        if claims.nbf > now.saturating_add(leeway) || claims.iat > now.saturating_add(leeway) {
            return Err(invalid());
        }
        if claims.exp.saturating_add(leeway) <= now {
            return Err(Error::unauthenticated("the access token has expired").with_code("token_expired"));
        }
        Ok(claims)
    }
}

/// The header fields verification reads; others are ignored, as `jsonwebtoken` ignores them.
#[derive(Deserialize)]
struct TokenHeader {
    alg: Algorithm,
    typ: Option<String>,
    kid: Option<String>,
}

/// The three base64url parts of a compact JWS, not yet decoded.
struct TokenParts<'a> {
    header: &'a str,
    claims: &'a str,
    /// `header.claims`, the bytes the signature covers.
    signed: &'a str,
    signature: &'a str,
}

impl<'a> TokenParts<'a> {
    /// Exactly three dot-separated parts, or `None`.
    fn split(token: &'a str) -> Option<Self> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        if claims.contains('.') {
            return None;
        }
        Some(Self { header, claims, signed, signature })
    }

    fn header(&self) -> Option<TokenHeader> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(self.header).ok()?).ok()
    }

    /// Whether the signature is the HMAC of the signed part (compared in constant time).
    fn signed_by(&self, hmac: &Hmac<Sha256>) -> bool {
        let mut signature = [0_u8; 32];
        // An HS256 signature is 32 bytes: 43 base64url characters without padding.
        if self.signature.len() != 43 || URL_SAFE_NO_PAD.decode_slice(self.signature, &mut signature) != Ok(32) {
            return false;
        }
        let mut mac = hmac.clone();
        mac.update(self.signed.as_bytes());
        mac.verify_slice(&signature).is_ok()
    }

    /// The claims, every one of them required (a missing or mistyped one is `None`).
    fn claims(&self) -> Option<AccessClaims> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(self.claims).ok()?).ok()
    }
}
