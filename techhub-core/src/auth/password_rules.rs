//! What a password must be (OWASP ASVS 5.0 6.2.1, 6.2.4): at least 8 characters (counted as characters,
//! not bytes), at most 1,024 bytes (checked before any hashing), not the email address, and not one of
//! the common passwords of a maintained breach list. Verified exactly as given: no trimming, no
//! normalisation.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::model::Email;
use crate::{Error, Result};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted, in bytes: longer ones are refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The common-password list: the `passwords` crate's breach list (about 100,000 entries), its entries of 8
/// characters or more, lower-cased. The file names its source and license.
const COMMON_LIST: &str = include_str!("../../data/common-passwords.txt");

/// The list as a set, built on first use.
static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| COMMON_LIST.lines().filter(|line| !line.is_empty() && !line.starts_with('#')).collect());

/// Whether `password` (compared lower-cased) is on the common-password list.
pub fn is_common_password(password: &str) -> bool {
    COMMON.contains(password.to_lowercase().as_str())
}

/// Checks a new password for the account with `email`.
pub fn check_new_password(password: &str, email: &Email) -> Result<()> {
    let refuse = |why: &str| Err(Error::invalid_field("password", why));
    if password.len() > MAX_PASSWORD_BYTES {
        return refuse("the password must be at most 1024 bytes long");
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return refuse("the password must be at least 8 characters long");
    }
    let folded = password.to_lowercase();
    if folded.trim() == email.as_str() {
        return refuse("the password must not be the email address");
    }
    if COMMON.contains(folded.as_str()) {
        return refuse("this password is among the most common ones; choose another");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email::parse("kim@example.com").expect("valid")
    }

    #[test]
    fn the_minimum_counts_characters_and_the_maximum_bytes() {
        assert!(check_new_password("short", &email()).is_err());
        assert!(check_new_password(&"x".repeat(64), &email()).is_ok());
        assert!(check_new_password(&"y".repeat(1024), &email()).is_ok());
        assert!(check_new_password(&"z".repeat(1025), &email()).is_err());
        assert!(check_new_password(&"é".repeat(4), &email()).is_err(), "4 characters in 8 bytes are too few");
        assert!(check_new_password("ünïcødé!", &email()).is_ok(), "8 characters in more bytes are enough");
        assert!(check_new_password(&"a".repeat(1024 * 1024), &email()).is_err());
    }

    #[test]
    fn the_email_and_common_passwords_are_refused_but_spaces_are_kept() {
        assert!(check_new_password("KIM@example.com", &email()).is_err());
        assert!(check_new_password("Password123", &email()).is_err());
        assert!(check_new_password("P@ssw0rd", &email()).is_err());
        assert!(check_new_password("  spaces count  ", &email()).is_ok());
    }

    #[test]
    fn the_list_is_the_breach_list_not_a_handful() {
        assert!(COMMON.len() >= 10_000, "{} entries", COMMON.len());
        assert!(COMMON.iter().all(|common| common.chars().count() >= MIN_PASSWORD_CHARS));
        assert!(COMMON.iter().all(|common| *common == common.to_lowercase()));
        for common in ["superman123", "qwertyuiop", "sunshine1", "iloveyou2"] {
            assert!(is_common_password(common), "{common}");
        }
        assert!(!is_common_password("correct horse battery staple"));
    }
}
