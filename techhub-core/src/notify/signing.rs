//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per
//! live secret, space-separated; secrets are `whsec_` + base64 of 32 random bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::model::SigningSecret;
use crate::{Error, Result};

/// The prefix of every signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Bytes of key in a new secret.
const SECRET_BYTES: usize = 32;

/// A new random secret (`whsec_` + base64 of 32 random bytes).
pub fn generate_secret() -> SigningSecret {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    SigningSecret::from_text(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// A signing key ready to sign many messages (the secret decoded once).
#[derive(Clone)]
pub struct SigningKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// Decodes `secret` (`whsec_` + base64). Anything else is `InvalidInput`.
    pub fn new(secret: &SigningSecret) -> Result<Self> {
        let invalid = || Error::invalid_field("secret", "a signing secret is whsec_ followed by base64");
        let encoded = secret.expose().strip_prefix(SECRET_PREFIX).ok_or_else(invalid)?;
        let key = STANDARD.decode(encoded).map_err(|_| invalid())?;
        let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| invalid())?;
        Ok(Self { mac })
    }

    /// `v1,<base64 signature>` of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header value: one signature per key, space-separated.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter().map(|key| key.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_example_signs_as_published() {
        // The example of the Standard Webhooks specification (and of its reference libraries).
        let secret = SigningSecret::from_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let key = SigningKey::new(&secret).expect("a valid secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn generated_secrets_are_distinct_and_decode_to_32_bytes() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        let encoded = a.expose().strip_prefix(SECRET_PREFIX).expect("prefixed");
        assert_eq!(STANDARD.decode(encoded).expect("base64").len(), 32);
        assert!(SigningKey::new(&SigningSecret::from_text("nope")).is_err());
        assert!(SigningKey::new(&SigningSecret::from_text("whsec_!!")).is_err());
    }
}
