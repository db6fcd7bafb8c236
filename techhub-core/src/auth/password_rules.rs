//! What a password must be: 8 to 1,024 bytes (checked before any hashing), not the email address, and not
//! one of the most common passwords. Verified exactly as given: no trimming, no normalisation.

use crate::model::Email;
use crate::{Error, Result};

/// The shortest password accepted, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// The longest password accepted, in bytes: longer ones are refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The most common passwords of 8 characters or more (lower case), from public breach corpora.
const COMMON: &[&str] = &[
    "password",
    "12345678",
    "123456789",
    "1234567890",
    "12345678910",
    "qwertyuiop",
    "password1",
    "password12",
    "password123",
    "password1234",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "sunshine1",
    "princess",
    "princess1",
    "football",
    "football1",
    "baseball",
    "baseball1",
    "welcome1",
    "welcome123",
    "abc12345",
    "abcd1234",
    "11111111",
    "00000000",
    "88888888",
    "66666666",
    "99999999",
    "55555555",
    "12121212",
    "11223344",
    "12341234",
    "87654321",
    "987654321",
    "123123123",
    "123456789a",
    "qwerty123",
    "qwerty12",
    "qwertyui",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "1qaz2wsx",
    "zaq12wsx",
    "qazwsxedc",
    "asdfghjkl",
    "asdfasdf",
    "zxcvbnm1",
    "1234qwer",
    "qwer1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "pa$$word",
    "trustno1",
    "superman",
    "letmein1",
    "letmein123",
    "dragon12",
    "master12",
    "monkey12",
    "admin123",
    "admin1234",
    "administrator",
    "changeme",
    "whatever",
    "starwars",
    "computer",
    "michelle",
    "jennifer",
    "corvette",
    "mercedes",
    "samantha",
    "internet",
    "cocacola",
    "blink182",
    "hello123",
    "charlie1",
    "aa123456",
    "shadow12",
    "jordan23",
    "liverpool",
    "chelsea1",
    "arsenal1",
    "maverick",
    "jonathan",
    "michael1",
    "basketball",
    "soccer12",
    "hockey12",
    "pokemon1",
    "minecraft",
    "fuckyou1",
    "iloveyou2",
    "babygirl1",
    "lovely12",
    "loveme12",
    "freedom1",
    "whatever1",
    "qwerty1234",
    "test1234",
    "testtest",
    "secret12",
    "default1",
    "guest123",
    "user1234",
];

/// Checks a new password for the account with `email`.
pub fn check_new_password(password: &str, email: &Email) -> Result<()> {
    let refuse = |why: &str| Err(Error::invalid_field("password", why));
    if password.len() < MIN_PASSWORD_BYTES {
        return refuse("the password must be at least 8 bytes long");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return refuse("the password must be at most 1024 bytes long");
    }
    let folded = password.to_lowercase();
    if folded.trim() == email.as_str() {
        return refuse("the password must not be the email address");
    }
    if COMMON.contains(&folded.as_str()) {
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
    fn lengths_are_bytes_and_checked_before_anything_else() {
        assert!(check_new_password("short", &email()).is_err());
        assert!(check_new_password(&"x".repeat(64), &email()).is_ok());
        assert!(check_new_password(&"y".repeat(1024), &email()).is_ok());
        assert!(check_new_password(&"z".repeat(1025), &email()).is_err());
        assert!(check_new_password(&"é".repeat(4), &email()).is_ok(), "4 characters, 8 bytes");
        assert!(check_new_password(&"a".repeat(1024 * 1024), &email()).is_err());
    }

    #[test]
    fn the_email_and_common_passwords_are_refused_but_spaces_are_kept() {
        assert!(check_new_password("KIM@example.com", &email()).is_err());
        assert!(check_new_password("Password123", &email()).is_err());
        assert!(check_new_password("P@ssw0rd", &email()).is_err());
        assert!(check_new_password("  spaces count  ", &email()).is_ok());
        assert!(COMMON.iter().all(|common| common.len() >= MIN_PASSWORD_BYTES && *common == common.to_lowercase()));
    }
}
