//! [`AuthService`]: sign-in with throttling, sessions (refresh-token families), password reset and change,
//! email verification.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::one_time::random_token;
use super::password::Verified;
use super::password_rules::{MAX_PASSWORD_BYTES, check_new_password};
use crate::actor::Actor;
use crate::model::{Consumed, Email, NewJob, TokenFamilyId, TokenHash, TokenKind, TokenRecord, User, UserId};
use crate::notify::kinds;
use crate::storage::TokenSelector;
use crate::{Error, Result, TechHub, clock};

/// What a successful sign-in or refresh returns. Its `Debug` hides both tokens.
#[derive(Clone, Serialize)]
pub struct TokenPair {
    /// The access token (a JWT), for `Authorization: Bearer`.
    pub access_token: String,
    /// The refresh token: opaque, single use, exchanged for the next pair.
    pub refresh_token: String,
    /// Always "Bearer".
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The signed-in user.
    pub user: User,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("user", &self.user.id)
            .finish()
    }
}

/// An authenticated request's caller.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user, as stored now (its role and active flag are current, not those of the token).
    pub user: User,
    /// The actor to pass to services.
    pub actor: Actor,
    /// The session (refresh-token family) the access token belongs to.
    pub session_id: TokenFamilyId,
    /// When the access token expires (its `exp`, without the leeway): a long-lived connection authenticated
    /// by it (a WebSocket) ends then.
    pub expires_at: DateTime<Utc>,
}

/// One live session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The session's id.
    pub id: TokenFamilyId,
    /// When the user signed in.
    pub started_at: DateTime<Utc>,
    /// When the session was last refreshed.
    pub refreshed_at: DateTime<Utc>,
    /// When it ends unless refreshed.
    pub expires_at: DateTime<Utc>,
}

/// Authentication. Get it with [`TechHub::auth`].
#[derive(Debug, Clone)]
pub struct AuthService {
    hub: TechHub,
}

fn invalid_credentials() -> Error {
    Error::unauthenticated("invalid email or password").with_code("invalid_credentials")
}

fn locked_out() -> Error {
    Error::rate_limited("too many failed sign-ins; try again later").with_code("rate_limited")
}

/// The key failed sign-ins are counted under: the normalised address, or (bounded) what was typed.
fn attempted_address(raw: &str, parsed: Option<&Email>) -> String {
    match parsed {
        Some(email) => email.as_str().to_owned(),
        None => raw.trim().chars().take(320).collect::<String>().to_lowercase(),
    }
}

fn invalid_token() -> Error {
    Error::unauthenticated("the token is invalid or has expired").with_code("token_invalid")
}

impl AuthService {
    pub(crate) fn new(hub: TechHub) -> Self {
        Self { hub }
    }

    /// Signs in. Unknown email, wrong password and disabled user give the same error after about the same
    /// time (a dummy hash is checked when there is no real one). After `lockout_threshold` failures the
    /// attempted address is locked for a window that doubles with each further failure (capped): meanwhile
    /// even the right password is refused with `RateLimited`, and an address no account has is refused alike,
    /// so repeated guesses do not tell which addresses exist. Attempts during a lockout are not counted. A
    /// success clears the count and upgrades an old hash.
    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair> {
        let hub = &self.hub;
        if password.len() > MAX_PASSWORD_BYTES {
            tracing::info!(outcome = "refused", "sign-in with an over-long password refused before hashing");
            return Err(invalid_credentials());
        }
        let parsed = Email::parse(email).ok();
        let address = attempted_address(email, parsed.as_ref());
        let user = match &parsed {
            Some(email) => hub.storage().get_user_by_email(email).await?,
            None => None,
        };
        let verified =
            hub.passwords().verify(password, user.as_ref().and_then(|user| user.password_hash.as_ref())).await?;
        let now = hub.now();
        if let Some(until) = self.locked_until(&address, user.as_ref(), now) {
            tracing::warn!(user_id = ?user.as_ref().map(|user| user.id), locked_until = %until, "sign-in refused: address locked");
            return Err(locked_out());
        }
        match (user, verified) {
            (Some(user), Verified::Valid { needs_rehash }) if user.active => {
                hub.sign_in_throttle().clear(&address, now);
                if user.failed_logins > 0 {
                    hub.storage().clear_login_failures(user.id).await?;
                }
                if needs_rehash {
                    self.upgrade_hash(&user, password).await;
                }
                tracing::info!(user_id = %user.id, outcome = "ok", "signed in");
                metrics::counter!("techhub_logins_total", "outcome" => "ok").increment(1);
                self.start_session(user).await
            }
            (user, _) => {
                let failures = self.record_failure(&address, user.as_ref(), now);
                tracing::info!(user_id = ?user.as_ref().map(|user| user.id), failures, outcome = "failed", "sign-in failed");
                metrics::counter!("techhub_logins_total", "outcome" => "failed").increment(1);
                Err(invalid_credentials())
            }
        }
    }

    /// When the lockout of `address` ends, if it is locked at `now`. The per-address table decides; for an
    /// address it does not know yet (say, after a restart) the account's stored count is the starting point.
    fn locked_until(&self, address: &str, user: Option<&User>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let stored = user.map(|user| (user.failed_logins, user.last_failed_login_at));
        self.hub.sign_in_throttle().locked_until(&self.hub.config().auth, address, stored, now)
    }

    /// Counts a failed sign-in of `address`; for an account, the stored count is written in the background,
    /// off the answer's path, so a known address answers as fast as an unknown one. Returns the count.
    fn record_failure(&self, address: &str, user: Option<&User>, now: DateTime<Utc>) -> u32 {
        let stored = user.map_or(0, |user| user.failed_logins);
        let failures = self.hub.sign_in_throttle().record_failure(address, stored, now);
        if let Some(user_id) = user.map(|user| user.id) {
            let storage = self.hub.storage().clone();
            tokio::spawn(async move {
                if let Err(error) = storage.record_login_failure(user_id, now).await {
                    tracing::warn!(%user_id, %error, "a failed sign-in could not be counted in storage");
                }
            });
        }
        failures
    }

    async fn upgrade_hash(&self, user: &User, password: &str) {
        let upgraded = async {
            let hash = self.hub.passwords().hash(password).await?;
            let mut fresh = self.hub.storage().get_user(user.id).await?.ok_or_else(|| Error::not_found("user"))?;
            let version = fresh.version;
            fresh.password_hash = Some(hash);
            self.hub.storage().update_user(fresh, version, vec![]).await?;
            Ok::<_, Error>(())
        };
        if let Err(error) = upgraded.await {
            tracing::warn!(user_id = %user.id, error = %error, "upgrading a password hash failed; it is retried at the next sign-in");
        }
    }

    /// A new session: a refresh-token family with its first token, and an access token.
    async fn start_session(&self, user: User) -> Result<TokenPair> {
        let now = self.hub.now();
        let config = &self.hub.config().auth;
        let raw = random_token();
        let expires_at = clock::add(now, config.refresh_idle_ttl.min(config.refresh_absolute_ttl));
        let record =
            TokenRecord::new(TokenHash::of(&raw), TokenKind::Refresh, user.id, TokenFamilyId::new(), now, expires_at);
        let family = record.family;
        self.hub.storage().insert_token(record).await?;
        self.pair(user, family, raw, now)
    }

    fn pair(&self, user: User, family: TokenFamilyId, refresh_token: String, now: DateTime<Utc>) -> Result<TokenPair> {
        let tokens = self.hub.access_tokens();
        Ok(TokenPair {
            access_token: tokens.issue(user.id, user.role, family, now)?,
            refresh_token,
            token_type: "Bearer",
            expires_in: tokens.ttl().as_secs(),
            user,
        })
    }

    /// Exchanges a refresh token for a new pair, rotating it within its session. Presenting a token that was
    /// already rotated is theft (the whole session is revoked) unless it comes within the reuse grace window,
    /// when it is a race between two tabs and is only refused. Sessions end after the idle and absolute
    /// lifetimes, and with their user's deletion or disabling.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair> {
        let hub = &self.hub;
        let storage = hub.storage();
        let now = hub.now();
        let config = &hub.config().auth;
        let hash = TokenHash::of(refresh_token);
        let Some(current) = storage.get_token(&hash).await?.filter(|record| record.kind == TokenKind::Refresh) else {
            return Err(invalid_token());
        };
        let deadline = clock::add(current.family_created_at, config.refresh_absolute_ttl);
        if now >= deadline {
            storage.revoke_tokens(TokenSelector::Family(current.family)).await?;
            return Err(invalid_token());
        }
        let next_raw = random_token();
        let next = TokenRecord::new(
            TokenHash::of(&next_raw),
            TokenKind::Refresh,
            current.user_id,
            current.family,
            now,
            clock::add(now, config.refresh_idle_ttl).min(deadline),
        )
        .in_family_since(current.family_created_at);
        match storage.consume_token(&hash, TokenKind::Refresh, now, Some(next)).await? {
            None => Err(invalid_token()),
            Some(Consumed::Replayed(record)) => {
                let rotated_at = record.consumed_at.unwrap_or(record.created_at);
                if now <= clock::add(rotated_at, config.refresh_reuse_grace) {
                    return Err(invalid_token());
                }
                tracing::warn!(user_id = %record.user_id, session = %record.family, "a rotated refresh token was reused: revoking the session");
                storage.revoke_tokens(TokenSelector::Family(record.family)).await?;
                Err(invalid_token())
            }
            Some(Consumed::Fresh(record)) => match storage.get_user(record.user_id).await? {
                Some(user) if user.active => self.pair(user, record.family, next_raw, now),
                _ => {
                    storage.revoke_tokens(TokenSelector::Family(record.family)).await?;
                    Err(invalid_token())
                }
            },
        }
    }

    /// Ends the session of `refresh_token` (whatever state it is in). Always succeeds.
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        if let Some(record) = self.hub.storage().get_token(&TokenHash::of(refresh_token)).await?
            && record.kind == TokenKind::Refresh
        {
            self.hub.storage().revoke_tokens(TokenSelector::Family(record.family)).await?;
        }
        Ok(())
    }

    /// Checks an access token: signature, algorithm, `typ`, `kid`, every claim, that its session is alive
    /// and that its user exists and is active. So logout, password change or reset, disabling and deleting a
    /// user take effect at once.
    pub async fn authenticate(&self, access_token: &str) -> Result<Session> {
        let hub = &self.hub;
        let now = hub.now();
        let claims = hub.access_tokens().verify(access_token, now)?;
        match hub.storage().session_user(claims.sid, claims.sub, now).await? {
            Some(user) if user.active => Ok(Session {
                actor: Actor::user(user.id, user.role),
                user,
                session_id: claims.sid,
                expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now),
            }),
            _ => Err(invalid_token()),
        }
    }

    /// Checks an access token's signature, algorithm, `typ`, `kid` and claims, without touching storage. It
    /// does not see revoked sessions or disabled users: requests use [`AuthService::authenticate`]; this is
    /// for code that only needs the claims (a gateway, a benchmark).
    pub fn verify_access_token(&self, access_token: &str) -> Result<super::AccessClaims> {
        self.hub.access_tokens().verify(access_token, self.hub.now())
    }

    /// The live sessions of `user_id` (the user itself or an admin).
    pub async fn sessions(&self, actor: &Actor, user_id: UserId) -> Result<Vec<SessionInfo>> {
        if !actor.may_access(Some(user_id)) {
            return Err(Error::not_found("no such user"));
        }
        let live = self.hub.storage().live_tokens(user_id, TokenKind::Refresh, self.hub.now()).await?;
        Ok(live
            .into_iter()
            .map(|record| SessionInfo {
                id: record.family,
                started_at: record.family_created_at,
                refreshed_at: record.created_at,
                expires_at: record.expires_at,
            })
            .collect())
    }

    /// Ends one session of `user_id`.
    pub async fn revoke_session(&self, actor: &Actor, user_id: UserId, session: TokenFamilyId) -> Result<()> {
        if !self.sessions(actor, user_id).await?.iter().any(|info| info.id == session) {
            return Err(Error::not_found("no such session"));
        }
        self.hub.storage().revoke_tokens(TokenSelector::Family(session)).await?;
        Ok(())
    }

    /// Ends every session of `user_id`; returns how many tokens went.
    pub async fn revoke_all_sessions(&self, actor: &Actor, user_id: UserId) -> Result<u64> {
        if !actor.may_access(Some(user_id)) {
            return Err(Error::not_found("no such user"));
        }
        let selector = TokenSelector::User { user_id, kind: Some(TokenKind::Refresh), except_family: None };
        Ok(self.hub.storage().revoke_tokens(selector).await?)
    }

    /// Starts a password reset. Always answers the same, whether the address is known or not; for a known,
    /// active user it enqueues `email.password_reset`, which mints a single-use link (voiding older ones) and
    /// mails it to the stored address. An account gets at most one such mail a minute and ten a day (more
    /// requests are answered alike and send nothing), so nobody can flood an inbox or keep a link dead.
    pub async fn request_password_reset(&self, email: &str) -> Result<()> {
        let user = match Email::parse(email) {
            Ok(email) => self.hub.storage().get_user_by_email(&email).await?,
            Err(_) => None,
        };
        if let Some(user) = user.filter(|user| user.active) {
            let key = format!("reset:{}", user.id);
            if !self.hub.mail_throttle().allow(&key, self.hub.now()) {
                tracing::info!(user_id = %user.id, "password reset mail not sent: the account's mail limit is reached");
                return Ok(());
            }
            self.enqueue_user_email(kinds::PASSWORD_RESET, user.id, Some(key)).await?;
        }
        Ok(())
    }

    /// Sets a new password with a reset token: the token is consumed atomically (one use, also under
    /// concurrency), every session and other reset link of the user ends, and a notice is mailed.
    pub async fn reset_password(&self, token: &str, new_password: &str) -> Result<()> {
        let user = self.user_of_live_token(token, TokenKind::PasswordReset).await?;
        check_new_password(new_password, &user.email)?;
        let hash = self.hub.passwords().hash(new_password).await?;
        match self
            .hub
            .storage()
            .consume_token(&TokenHash::of(token), TokenKind::PasswordReset, self.hub.now(), None)
            .await?
        {
            Some(Consumed::Fresh(_)) => {}
            _ => return Err(invalid_token()),
        }
        self.set_password(user.id, hash, None).await?;
        self.hub.storage().clear_login_failures(user.id).await?;
        tracing::info!(user_id = %user.id, "password reset");
        Ok(())
    }

    /// Changes the signed-in user's password: the current one is required (a wrong one counts as a failed
    /// sign-in, and a locked account is refused with `RateLimited` as at sign-in), the user's other sessions
    /// end, and a notice is mailed.
    pub async fn change_password(&self, session: &Session, current: &str, new_password: &str) -> Result<()> {
        let user = self.hub.storage().get_user(session.user.id).await?.ok_or_else(invalid_token)?;
        if current.len() > MAX_PASSWORD_BYTES {
            return Err(invalid_credentials());
        }
        let address = user.email.as_str().to_owned();
        let verified = self.hub.passwords().verify(current, user.password_hash.as_ref()).await?;
        let now = self.hub.now();
        // A locked account refuses a password change as it refuses a sign-in: a stolen access token must not
        // let its holder keep guessing the password.
        if self.locked_until(&address, Some(&user), now).is_some() {
            tracing::warn!(user_id = %user.id, "password change refused: account locked");
            return Err(locked_out());
        }
        match verified {
            Verified::Valid { .. } => {}
            Verified::Invalid => {
                self.record_failure(&address, Some(&user), now);
                return Err(invalid_credentials());
            }
        }
        check_new_password(new_password, &user.email)?;
        let hash = self.hub.passwords().hash(new_password).await?;
        self.set_password(user.id, hash, Some(session.session_id)).await
    }

    /// Stores a new hash, ends every session but `keep` and every reset link, and mails a notice.
    async fn set_password(
        &self,
        user_id: UserId,
        hash: crate::model::PasswordHash,
        keep: Option<TokenFamilyId>,
    ) -> Result<()> {
        let storage = self.hub.storage();
        self.hub
            .users()
            .modify(user_id, |user| {
                user.password_hash = Some(hash.clone());
                Ok(())
            })
            .await?;
        storage
            .revoke_tokens(TokenSelector::User { user_id, kind: Some(TokenKind::Refresh), except_family: keep })
            .await?;
        storage
            .revoke_tokens(TokenSelector::User { user_id, kind: Some(TokenKind::PasswordReset), except_family: None })
            .await?;
        self.enqueue_user_email(kinds::PASSWORD_CHANGED, user_id, None).await?;
        Ok(())
    }

    /// Mails the user a fresh verification link (voiding older ones): at most one a minute and ten a day per
    /// account, more requests are `RateLimited`.
    pub async fn request_email_verification(&self, actor: &Actor, user_id: UserId) -> Result<()> {
        if !actor.may_access(Some(user_id)) {
            return Err(Error::not_found("no such user"));
        }
        let key = format!("verify:{user_id}");
        if !self.hub.mail_throttle().allow(&key, self.hub.now()) {
            return Err(
                Error::rate_limited("a verification mail was sent recently; try again later").with_code("rate_limited")
            );
        }
        self.enqueue_user_email(kinds::VERIFY, user_id, Some(key)).await
    }

    /// Marks the address of the token's user as verified; the token is single use.
    pub async fn verify_email(&self, token: &str) -> Result<()> {
        let hash = TokenHash::of(token);
        let consumed = self.hub.storage().consume_token(&hash, TokenKind::EmailVerify, self.hub.now(), None).await?;
        let Some(Consumed::Fresh(record)) = consumed else { return Err(invalid_token()) };
        self.hub
            .users()
            .modify(record.user_id, |user| {
                user.email_verified = true;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn user_of_live_token(&self, token: &str, kind: TokenKind) -> Result<User> {
        let record = self.hub.storage().get_token(&TokenHash::of(token)).await?;
        let now = self.hub.now();
        let Some(record) = record.filter(|record| record.kind == kind && record.is_live(now)) else {
            return Err(invalid_token());
        };
        self.hub.storage().get_user(record.user_id).await?.filter(|user| user.active).ok_or_else(invalid_token)
    }

    async fn enqueue_user_email(&self, kind: &str, user_id: UserId, unique_key: Option<String>) -> Result<()> {
        let mut spec = NewJob::new(kind, json!({ "user_id": user_id }));
        if let Some(key) = unique_key {
            spec = spec.unique_key(key);
        }
        self.hub.jobs().enqueue(&Actor::System, spec).await?;
        Ok(())
    }
}
