//! Authentication: password hashing and rules, access tokens, one-time tokens, and the [`AuthService`].

mod jwt;
pub(crate) mod one_time;
pub(crate) mod password;
mod password_rules;
mod service;
pub(crate) mod throttle;

pub(crate) use jwt::AccessTokens;
pub use jwt::{AccessClaims, JwtKeys, MIN_SECRET_BYTES, SigningKey};
pub use password::PASSWORD_HASHES_METRIC;
pub use password_rules::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, check_new_password, is_common_password};
pub use service::{AuthService, Session, TokenPair};
