//! Password hashing: argon2id, on blocking threads, at most N at once.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash as Phc, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::{OnceCell, Semaphore};

use crate::config::Argon2Params;
use crate::model::PasswordHash;
use crate::{Error, Result};

/// What verifying a password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verified {
    /// The password matches; `needs_rehash` when the hash uses other parameters than the current ones.
    Valid { needs_rehash: bool },
    /// It does not (or there was no usable hash to check against).
    Invalid,
}

/// The counter of argon2 computations, by `op` (`hash` or `verify`): what sign-ins and password changes cost.
pub const PASSWORD_HASHES_METRIC: &str = "techhub_password_hashes_total";

/// Hashes and verifies passwords. Hashing is CPU- and memory-heavy on purpose, so it never runs on an async
/// worker thread, and a semaphore bounds how many run at once (and so the memory they take).
#[derive(Debug)]
pub(crate) struct Passwords {
    params: Argon2Params,
    ceiling: Argon2Params,
    permits: Arc<Semaphore>,
    dummy: OnceCell<PasswordHash>,
}

impl Passwords {
    pub(crate) fn new(params: Argon2Params, ceiling: Argon2Params, concurrency: usize) -> Self {
        Self { params, ceiling, permits: Arc::new(Semaphore::new(concurrency.max(1))), dummy: OnceCell::new() }
    }

    /// A new argon2id hash of `password` with the current parameters and a random salt.
    pub(crate) async fn hash(&self, password: &str) -> Result<PasswordHash> {
        let params = self.params;
        let password = password.to_owned();
        self.blocking("hash", move || {
            let salt = SaltString::generate(&mut OsRng);
            hasher(params)?
                .hash_password(password.as_bytes(), &salt)
                .map(|phc| PasswordHash::from_phc(phc.to_string()))
                .map_err(|error| Error::internal(format!("hashing failed: {error}")))
        })
        .await
    }

    /// Checks `password` against `stored`. Without a stored hash, or with one this service refuses (not
    /// argon2id, or parameters above the ceiling), it checks against a dummy hash instead, so that the answer
    /// takes about as long as a real check and says nothing about which case it was.
    pub(crate) async fn verify(&self, password: &str, stored: Option<&PasswordHash>) -> Result<Verified> {
        let usable = stored.and_then(|stored| match self.parameters_of(stored) {
            Some(params) if params.within(&self.ceiling) => Some((stored.clone(), params)),
            Some(params) => {
                tracing::warn!(?params, "refusing a stored password hash above the parameter ceiling");
                None
            }
            None => {
                tracing::warn!("refusing a stored password hash that is not argon2id");
                None
            }
        });
        let (target, params, real) = match usable {
            Some((hash, params)) => (hash, params, true),
            None => (self.dummy().await?.clone(), self.params, false),
        };
        let password = password.to_owned();
        let matches = self
            .blocking("verify", move || {
                let phc = Phc::new(target.as_phc()).map_err(|_| Error::internal("unreadable password hash"))?;
                Ok(hasher(params)?.verify_password(password.as_bytes(), &phc).is_ok())
            })
            .await?;
        Ok(if real && matches { Verified::Valid { needs_rehash: params != self.params } } else { Verified::Invalid })
    }

    /// The argon2id parameters of a stored hash, if it is one.
    fn parameters_of(&self, stored: &PasswordHash) -> Option<Argon2Params> {
        let phc = Phc::new(stored.as_phc()).ok()?;
        if phc.algorithm.as_str() != "argon2id" {
            return None;
        }
        let params = Params::try_from(&phc).ok()?;
        Some(Argon2Params { memory_kib: params.m_cost(), iterations: params.t_cost(), parallelism: params.p_cost() })
    }

    async fn dummy(&self) -> Result<&PasswordHash> {
        self.dummy
            .get_or_try_init(|| async {
                let unguessable = crate::auth::one_time::random_token();
                self.hash(&unguessable).await
            })
            .await
    }

    /// Runs one argon2 computation (`op`: `hash` or `verify`) on a blocking thread, counted in
    /// [`PASSWORD_HASHES_METRIC`].
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::internal("the hashing pool is closed"))?;
        metrics::counter!(PASSWORD_HASHES_METRIC, "op" => op).increment(1);
        tokio::task::spawn_blocking(work).await.map_err(|_| Error::internal("a hashing task failed"))?
    }
}

fn hasher(params: Argon2Params) -> Result<Argon2<'static>> {
    let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
        .map_err(|error| Error::invalid_field("argon2", format!("unusable argon2 parameters: {error}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIGHT: Argon2Params = Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 };

    #[tokio::test]
    async fn hashes_verify_and_report_old_parameters() {
        let passwords = Passwords::new(LIGHT, Argon2Params::OWASP, 2);
        let hash = passwords.hash("correct horse battery staple").await.expect("hashes");
        assert!(hash.as_phc().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(
            passwords.verify("correct horse battery staple", Some(&hash)).await.expect("verifies"),
            Verified::Valid { needs_rehash: false }
        );
        assert_eq!(
            passwords.verify("Correct horse battery staple", Some(&hash)).await.expect("verifies"),
            Verified::Invalid
        );
        assert_eq!(passwords.verify("anything", None).await.expect("verifies"), Verified::Invalid);

        let stronger = Passwords::new(Argon2Params { memory_kib: 128, ..LIGHT }, Argon2Params::OWASP, 2);
        assert_eq!(
            stronger.verify("correct horse battery staple", Some(&hash)).await.expect("verifies"),
            Verified::Valid { needs_rehash: true }
        );
    }

    #[tokio::test]
    async fn absurd_or_foreign_hashes_are_refused_without_computing_them() {
        let passwords = Passwords::new(LIGHT, Argon2Params::OWASP, 2);
        // 4 GiB and a million passes: computing it would take minutes and all the memory.
        let planted =
            PasswordHash::from_phc("$argon2id$v=19$m=4194304,t=1000000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA");
        let started = std::time::Instant::now();
        assert_eq!(passwords.verify("whatever", Some(&planted)).await.expect("answers"), Verified::Invalid);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let bcrypt = PasswordHash::from_phc("$2b$12$abcdefghijklmnopqrstuuFakeFakeFakeFakeFakeFakeFakeFake");
        assert_eq!(passwords.verify("whatever", Some(&bcrypt)).await.expect("answers"), Verified::Invalid);
    }
}
