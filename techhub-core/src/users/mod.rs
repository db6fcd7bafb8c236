//! [`UserService`]: registration, reading, listing, updating and deleting users, with the caller's rights
//! checked here; and the `users.import` / `users.export` jobs.

mod transfer;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::json;

pub(crate) use self::transfer::register_transfer_handlers;
pub use self::transfer::{ImportReport, ImportRow, RowError, TransferFormat};
use crate::actor::Actor;
use crate::auth::check_new_password;
use crate::events::EventKind;
use crate::model::{Email, Job, NewJob, Page, PageRequest, Role, TokenKind, User, UserFilter, UserId};
use crate::notify::kinds;
use crate::storage::{Conflict, StoreError, TokenSelector};
use crate::{Error, Result, TechHub};

/// The longest display name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A sign-up. Its `Debug` hides the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The email address (normalised on the way in).
    pub email: String,
    /// The password, used exactly as given.
    pub password: String,
    /// An optional display name.
    #[serde(default)]
    pub name: Option<String>,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").field("email", &self.email).field("name", &self.name).finish_non_exhaustive()
    }
}

/// A change to a user. Users may change only their own `name`; admins may change all four fields. There is no
/// password field: nobody sets another user's password (admins start a reset instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new display name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new email address (admins only; the new address is unverified until confirmed).
    #[serde(default)]
    pub email: Option<String>,
    /// A new role (admins only).
    #[serde(default)]
    pub role: Option<Role>,
    /// Enable or disable (admins only; disabling ends every session at once).
    #[serde(default)]
    pub active: Option<bool>,
}

/// Users as callers see them. Get it with [`TechHub::users`].
#[derive(Debug, Clone)]
pub struct UserService {
    hub: TechHub,
}

/// Checks and tidies a display name.
pub(crate) fn clean_name(name: Option<&str>) -> Result<String> {
    let name = name.unwrap_or_default().trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid_field("name", format!("the name must be at most {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_field("name", "the name must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Maps a store conflict on a user write to the error callers see.
pub(crate) fn user_conflict(error: StoreError) -> Error {
    match error.conflict() {
        Some(Conflict::EmailTaken) => {
            Error::conflict("this email address is already registered").with_code("email_taken")
        }
        Some(Conflict::VersionMismatch) => {
            Error::conflict("the user was changed by someone else; reload and try again").with_code("version_mismatch")
        }
        Some(Conflict::LastActiveAdmin) => {
            Error::conflict("the last active admin cannot be demoted, disabled or deleted").with_code("last_admin")
        }
        _ => error.into(),
    }
}

impl UserService {
    pub(crate) fn new(hub: TechHub) -> Self {
        Self { hub }
    }

    /// Registers a user (role `user`). The user and its `email.welcome` and `email.verify` jobs are stored in
    /// one atomic write. A taken address is a `Conflict` with code `email_taken`, however it is spelled.
    pub async fn register(&self, registration: Registration) -> Result<User> {
        let email = Email::parse(&registration.email)?;
        check_new_password(&registration.password, &email)?;
        let name = clean_name(registration.name.as_deref())?;
        let hash = self.hub.passwords().hash(&registration.password).await?;
        let mut user = User::new(email, name, Role::User, self.hub.now());
        user.password_hash = Some(hash);
        let follow_up = [kinds::WELCOME, kinds::VERIFY].map(|kind| NewJob::new(kind, json!({ "user_id": user.id })));
        self.create(user, follow_up.to_vec()).await
    }

    /// Stores a new user with follow-up jobs, then announces both.
    pub(crate) async fn create(&self, user: User, follow_up: Vec<NewJob>) -> Result<User> {
        let jobs = follow_up
            .into_iter()
            .map(|spec| self.hub.jobs().prepare(&Actor::System, spec))
            .collect::<Result<Vec<Job>>>()?;
        let stored = self.hub.storage().insert_user(user, jobs.clone()).await.map_err(user_conflict)?;
        self.hub.jobs().announce(&jobs);
        self.publish(EventKind::UserCreated, &stored);
        tracing::info!(user_id = %stored.id, role = %stored.role, "user created");
        Ok(stored)
    }

    /// Creates the admin `email` with `password` when no account has that address; keeps an existing active
    /// admin as it is (its password untouched). An existing account that is not an active admin is promoted
    /// only if `password` verifies against its own: bootstrapping must not hand admin rights over an account
    /// someone else registered. Otherwise it fails with a `Conflict` with code `admin_email_taken` and changes
    /// nothing. For bootstrapping a deployment.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<User> {
        let email = Email::parse(email)?;
        if let Some(existing) = self.hub.storage().get_user_by_email(&email).await? {
            if existing.role == Role::Admin && existing.active {
                return Ok(existing);
            }
            let verified = self.hub.passwords().verify(password, existing.password_hash.as_ref()).await?;
            if !matches!(verified, crate::auth::password::Verified::Valid { .. }) {
                tracing::warn!(user_id = %existing.id, "refusing to promote an existing account whose password does not match");
                return Err(Error::conflict(
                    "an account with this address exists and is not an admin; the configured password does not \
                     match it, so it is not promoted",
                )
                .with_code("admin_email_taken"));
            }
            return self
                .modify(existing.id, |user| {
                    user.role = Role::Admin;
                    user.active = true;
                    Ok(())
                })
                .await;
        }
        check_new_password(password, &email)?;
        let mut admin = User::new(email, "Administrator", Role::Admin, self.hub.now());
        admin.email_verified = true;
        admin.password_hash = Some(self.hub.passwords().hash(password).await?);
        self.create(admin, vec![]).await
    }

    /// A user the actor may see (itself, or anyone for admins); others are `NotFound`.
    pub async fn get(&self, actor: &Actor, id: UserId) -> Result<User> {
        match self.hub.storage().get_user(id).await? {
            Some(user) if actor.may_access(Some(id)) => Ok(user),
            _ => Err(Error::not_found("no such user")),
        }
    }

    /// A page of users (admins only).
    pub async fn list(&self, actor: &Actor, filter: &UserFilter, page: &PageRequest) -> Result<Page<User>> {
        if !actor.is_privileged() {
            return Err(Error::forbidden("only admins may list users"));
        }
        Ok(self.hub.storage().list_users(filter, page).await?)
    }

    /// Applies `patch` to user `id`, optionally only if its version is still `expected_version` (else a
    /// `Conflict` with code `version_mismatch`). Users may change only their own name; anything else is
    /// `Forbidden` and changes nothing. Disabling a user ends its sessions at once. A new email address is
    /// unverified, and every reset or verification link issued before the change stops working.
    pub async fn update(
        &self,
        actor: &Actor,
        id: UserId,
        patch: UserPatch,
        expected_version: Option<u64>,
    ) -> Result<User> {
        let mut user = self.get(actor, id).await?;
        if !actor.is_privileged() && (patch.email.is_some() || patch.role.is_some() || patch.active.is_some()) {
            return Err(Error::forbidden("users may change only their name"));
        }
        if expected_version.is_some_and(|version| version != user.version) {
            return Err(user_conflict(StoreError::Conflict(Conflict::VersionMismatch)));
        }
        let version = user.version;
        if let Some(name) = &patch.name {
            user.name = clean_name(Some(name))?;
        }
        let mut email_changed = false;
        if let Some(email) = &patch.email {
            let email = Email::parse(email)?;
            if email != user.email {
                user.email = email;
                user.email_verified = false;
                email_changed = true;
            }
        }
        let disabling = patch.active == Some(false) && user.active;
        user.role = patch.role.unwrap_or(user.role);
        user.active = patch.active.unwrap_or(user.active);
        user.updated_at = self.hub.now();
        let stored = self.hub.storage().update_user(user, version, vec![]).await.map_err(user_conflict)?;
        if disabling {
            let sessions = TokenSelector::User { user_id: id, kind: None, except_family: None };
            self.hub.storage().revoke_tokens(sessions).await?;
        }
        if email_changed {
            self.void_links_of_old_address(id).await?;
        }
        self.publish(EventKind::UserUpdated, &stored);
        Ok(stored)
    }

    /// After an email change: voids every reset and verification link (they went to the old address, and a
    /// verification link would otherwise confirm the new one), then mails the new address a verification
    /// link. In that order, so the new link is never voided: a mail job that runs meanwhile reads the new
    /// address. (The verification mail is enqueued after the change rather than with it; should that fail,
    /// the user asks for another.)
    async fn void_links_of_old_address(&self, user_id: UserId) -> Result<()> {
        let storage = self.hub.storage();
        for kind in [TokenKind::PasswordReset, TokenKind::EmailVerify] {
            storage.revoke_tokens(TokenSelector::User { user_id, kind: Some(kind), except_family: None }).await?;
        }
        let verify = NewJob::new(kinds::VERIFY, json!({ "user_id": user_id })).unique_key(format!("verify:{user_id}"));
        if let Err(error) = self.hub.jobs().enqueue(&Actor::System, verify).await {
            tracing::warn!(%user_id, %error, "the new address's verification mail could not be enqueued");
        }
        Ok(())
    }

    /// Deletes a user (an admin, or the user itself), ending its sessions in the same write. The last active
    /// admin cannot be deleted.
    pub async fn delete(&self, actor: &Actor, id: UserId) -> Result<()> {
        let user = self.get(actor, id).await?;
        self.hub.storage().delete_user(id, None).await.map_err(user_conflict)?;
        self.publish(EventKind::UserDeleted, &user);
        tracing::info!(user_id = %id, "user deleted");
        Ok(())
    }

    /// Enqueues an import of users (admins only); the job's result is an [`ImportReport`]. The file is parsed
    /// and its passwords hashed (and checked against the password rules) before the job is stored, so no
    /// plaintext password is ever written; a file of the wrong shape is `InvalidInput` and stores nothing.
    /// The job's payload is discarded when it finishes.
    pub async fn import(&self, actor: &Actor, format: TransferFormat, data: String) -> Result<Job> {
        if !actor.is_privileged() {
            return Err(Error::forbidden("only admins may import users"));
        }
        let payload = transfer::prepare_import(&self.hub, format, data).await?;
        let payload = serde_json::to_value(payload)
            .map_err(|error| Error::internal(format!("an import could not be stored: {error}")))?;
        self.hub.jobs().enqueue(actor, NewJob::new(transfer::IMPORT, payload)).await
    }

    /// Enqueues an export of every user (admins only); the file is the job's artifact. Never includes hashes.
    pub async fn export(&self, actor: &Actor, format: TransferFormat) -> Result<Job> {
        if !actor.is_privileged() {
            return Err(Error::forbidden("only admins may export users"));
        }
        self.hub.jobs().enqueue(actor, NewJob::new(transfer::EXPORT, json!({ "format": format }))).await
    }

    /// Re-reads user `id`, applies `change` and stores it, retrying on a concurrent update.
    pub(crate) async fn modify(&self, id: UserId, change: impl Fn(&mut User) -> Result<()>) -> Result<User> {
        let storage = self.hub.storage();
        let mut tries = 0;
        loop {
            let mut user = storage.get_user(id).await?.ok_or_else(|| Error::not_found("no such user"))?;
            let version = user.version;
            change(&mut user)?;
            user.updated_at = self.hub.now();
            match storage.update_user(user, version, vec![]).await {
                Err(StoreError::Conflict(Conflict::VersionMismatch)) if tries < 5 => tries += 1,
                result => return result.map_err(user_conflict),
            }
        }
    }

    fn publish(&self, kind: EventKind, user: &User) {
        self.hub.events().publish(
            self.hub.now(),
            kind,
            user.id,
            Some(user.id),
            json!({ "user_id": user.id, "email": user.email, "role": user.role, "active": user.active }),
        );
    }
}
