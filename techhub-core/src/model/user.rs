//! Users, their roles, and the normalised email address that identifies them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::UserId;
use crate::Error;

/// The longest email address accepted, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// An email address in its normalised form: trimmed, Unicode NFKC, lower-case.
///
/// Two addresses that differ only in case, surrounding space or Unicode compatibility form (a Kelvin sign
/// for a `k`, full-width letters) normalise to the same `Email`, so uniqueness holds on what a person
/// would call "the same address". Deserializing normalises too, so every `Email` value is normalised.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Normalises and validates `raw`.
    ///
    /// Refuses: an empty local part or domain, more or fewer than one `@`, white space, control or
    /// zero-width characters anywhere, and addresses longer than [`MAX_EMAIL_BYTES`] after normalising (an
    /// input over four times that is refused before normalising).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::invalid_field("email", format!("not a valid email address: {why}"));
        // Checked before normalising, which costs time and memory in proportion to the input (and may expand
        // it): full-width letters shrink by at most 3 bytes to 1, so 4x the limit leaves room for them.
        if raw.trim().len() > MAX_EMAIL_BYTES * 4 {
            return Err(invalid("it is too long"));
        }
        let folded: String = raw.trim().nfkc().collect::<String>().to_lowercase();
        // Lower-casing can leave a string that is no longer NFKC (e.g. U+0130 becomes i + U+0307); normalise again
        // so that the stored form is stable under a second normalisation.
        let normalised: String = folded.nfkc().collect();
        if normalised.is_empty() {
            return Err(invalid("it is empty"));
        }
        if normalised.len() > MAX_EMAIL_BYTES {
            return Err(invalid("it is too long"));
        }
        if normalised.chars().any(|c| c.is_whitespace() || c.is_control() || is_invisible(c)) {
            return Err(invalid("it contains spaces, control or invisible characters"));
        }
        let (local, domain) = normalised.split_once('@').ok_or_else(|| invalid("it has no '@'"))?;
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return Err(invalid("it needs exactly one '@' between a name and a domain"));
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(invalid("its domain is malformed"));
        }
        Ok(Self(normalised))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that render as nothing and so let two addresses look identical.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = Error;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> Self {
        email.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A regular user: sees and changes only its own data.
    #[default]
    User,
    /// An administrator: manages users, jobs and the system.
    Admin,
}

impl Role {
    /// `"user"` or `"admin"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            _ => Err(Error::invalid_field("role", "role must be \"user\" or \"admin\"")),
        }
    }
}

/// A password hash in PHC string form (`$argon2id$v=19$...`). A secret: its `Debug` is redacted and it is
/// never serialized as part of a [`User`].
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by the password hasher or read back from storage.
    pub fn from_phc(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    /// The PHC string, for the hasher to verify against and for storage to persist.
    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// A user account.
///
/// `Serialize` gives the public shape of the HTTP API's User object; the password hash is skipped, so a
/// serialized user never carries a secret. Stores persist the hash from [`User::password_hash`] themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The normalised, unique email address.
    pub email: Email,
    /// A display name (may be empty).
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Whether the user may sign in. Disabled users keep their data.
    pub active: bool,
    /// Whether the user proved it owns its email address.
    pub email_verified: bool,
    /// Bumped by every write; updates name the version they read (optimistic concurrency).
    pub version: u64,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
    /// The password hash, if the user has a password (invited users may not yet).
    #[serde(skip)]
    pub password_hash: Option<PasswordHash>,
    /// Failed sign-ins since the last success (kept in storage, so lockouts survive restarts).
    #[serde(skip)]
    pub failed_logins: u32,
    /// When the latest failed sign-in happened.
    #[serde(skip)]
    pub last_failed_login_at: Option<DateTime<Utc>>,
}

impl User {
    /// A new active, unverified user with no password, created at `now`. Its version is set by the store.
    pub fn new(email: Email, name: impl Into<String>, role: Role, now: DateTime<Utc>) -> Self {
        Self {
            id: UserId::new(),
            email,
            name: name.into(),
            role,
            active: true,
            email_verified: false,
            version: 0,
            created_at: now,
            updated_at: now,
            password_hash: None,
            failed_logins: 0,
            last_failed_login_at: None,
        }
    }

    /// Whether the user is an active admin: what the last-admin guard counts.
    pub fn is_active_admin(&self) -> bool {
        self.active && self.role == Role::Admin
    }
}

/// How many users there are: kept by the store as users change, never counted by loading every user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserCounts {
    /// Every user.
    pub total: u64,
    /// Users who may sign in.
    pub active: u64,
    /// Users with the admin role, active or not.
    pub admins: u64,
}

impl UserCounts {
    /// Follows a write that replaces `before` by `after` (`None`: absent; an insert has no `before`, a delete
    /// no `after`).
    pub fn follow(&mut self, before: Option<&User>, after: Option<&User>) {
        for (user, add) in [(before, false), (after, true)] {
            let Some(user) = user else { continue };
            for (counter, counts) in
                [(&mut self.total, true), (&mut self.active, user.active), (&mut self.admins, user.role == Role::Admin)]
            {
                if counts {
                    *counter = if add { counter.saturating_add(1) } else { counter.saturating_sub(1) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_normalisation_folds_case_space_and_compatibility_forms() {
        let canonical = Email::parse("kim@example.com").expect("valid");
        for variant in [
            "  Kim@Example.COM ",
            "\u{212A}im@example.com",               // Kelvin sign
            "\u{FF4B}\u{FF49}\u{FF4D}@example.com", // full-width "kim"
            "kim@\u{FF45}xample.com",               // full-width e in the domain
        ] {
            assert_eq!(Email::parse(variant).expect("valid"), canonical, "{variant:?}");
        }
        // Composed and decomposed forms are one address.
        assert_eq!(Email::parse("jos\u{00E9}@example.com").unwrap(), Email::parse("jose\u{0301}@example.com").unwrap());
    }

    #[test]
    fn email_normalisation_is_idempotent() {
        for raw in ["\u{0130}stanbul@example.com", "\u{0131}@example.com", "STRASSE@example.com", "ǅ@x.io"] {
            let once = Email::parse(raw).expect("valid");
            assert_eq!(Email::parse(once.as_str()).expect("valid"), once, "{raw:?}");
        }
    }

    #[test]
    fn email_rejects_malformed_and_invisible_characters() {
        for raw in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "kim@",
            "kim@@example.com",
            "a@b@example.com",
            "kim @example.com",
            "kim\u{200B}@example.com",
            "kim\u{0000}@example.com",
            "kim\u{FEFF}@example.com",
            "kim@example..com",
            "kim@.example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn deserializing_normalises() {
        let email: Email = serde_json::from_str("\" Kim@Example.com \"").expect("valid");
        assert_eq!(email.as_str(), "kim@example.com");
        assert!(serde_json::from_str::<Email>("\"nope\"").is_err());
    }

    #[test]
    fn user_never_shows_its_password_hash() {
        let mut user = User::new(Email::parse("kim@example.com").unwrap(), "Kim", Role::User, Default::default());
        user.password_hash = Some(PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"));
        assert!(!format!("{user:?}").contains("argon2id"));
        let json = serde_json::to_string(&user).expect("serializes");
        assert!(!json.contains("argon2id") && !json.contains("password"), "{json}");
    }
}
