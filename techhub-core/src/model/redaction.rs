//! Secrets out of values shown to people: a job's payload may carry a password hash, a token or an API key
//! (an import's rows, a handler's credentials), and whoever may read the job need not read those.

use serde_json::{Map, Value};

/// What a redacted value reads as.
pub const REDACTED: &str = "[redacted]";

/// Parts of a key (compared lower-case, without `-` and `_`) that name a secret.
const SECRET_WORDS: [&str; 11] = [
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "authorization",
    "credential",
    "cookie",
    "signature",
    "passphrase",
];

/// Whether an object key names a secret (`password_hash`, `apiKey`, `X-Auth-Token`, `client_secret`, ...).
pub fn names_a_secret(key: &str) -> bool {
    let folded: String = key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    SECRET_WORDS.iter().any(|word| folded.contains(word))
}

/// `value` with the value of every object key that names a secret replaced by [`REDACTED`], at any depth
/// (inside arrays too). Everything else is kept as it is.
pub fn redact_secrets(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, value)| {
                    let shown =
                        if names_a_secret(key) { Value::String(REDACTED.to_owned()) } else { redact_secrets(value) };
                    (key.clone(), shown)
                })
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_secrets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth_and_the_rest_is_kept() {
        let payload = json!({
            "format": "csv",
            "rows": [{ "email": "ada@example.com", "password_hash": "$argon2id$v=19$..." }, { "email": "b@example.com" }],
            "auth": { "apiKey": "k-123", "X-Auth-Token": "t-456", "client_secret": "s", "user": "ops" },
            "Authorization": "Bearer eyJ...",
            "count": 3,
        });
        assert_eq!(
            redact_secrets(&payload),
            json!({
                "format": "csv",
                "rows": [{ "email": "ada@example.com", "password_hash": REDACTED }, { "email": "b@example.com" }],
                "auth": { "apiKey": REDACTED, "X-Auth-Token": REDACTED, "client_secret": REDACTED, "user": "ops" },
                "Authorization": REDACTED,
                "count": 3,
            })
        );
        assert_eq!(redact_secrets(&json!("plain")), json!("plain"));
        assert!(!names_a_secret("unique_key") && !names_a_secret("queue") && !names_a_secret("email"));
    }
}
