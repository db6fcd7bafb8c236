//! The state the commands share: the hub, the signed-in session, the window's live channels, the workers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tauri::async_runtime::JoinHandle;
use tauri::ipc::Channel;
use techhub_core::auth::{Session, TokenPair};
use techhub_core::jobs::WorkerHandle;
use techhub_core::{ErrorKind, TechHub};

use super::error::CommandError;
use super::live::EventView;

/// What a TechHub Tauri app holds in its state (managed by [`init`](super::init)).
///
/// The tokens of the signed-in session live here and only here: commands authenticate with them on the
/// window's behalf, and no command returns them, so the access token never reaches JavaScript. Signing in
/// again replaces the session; the app serves one person at a time, like any desktop app.
pub struct HubState {
    hub: TechHub,
    exports_dir: PathBuf,
    // A tokio mutex: authenticating (and refreshing) awaits the store while the tokens are held, so two
    // commands racing after expiry refresh once rather than each spending the single-use refresh token.
    tokens: tokio::sync::Mutex<Option<TokenPair>>,
    signed_in: Mutex<Option<Session>>,
    channels: Mutex<Vec<Channel<EventView>>>,
    workers: Mutex<Option<WorkerHandle>>,
    forwarder: Mutex<Option<JoinHandle<()>>>,
}

impl HubState {
    /// State around `hub`, whose workers (if any) stop with [`shutdown`](Self::shutdown); exported files are
    /// saved into `exports_dir`.
    pub fn new(hub: TechHub, workers: Option<WorkerHandle>, exports_dir: PathBuf) -> Self {
        Self {
            hub,
            exports_dir,
            tokens: tokio::sync::Mutex::new(None),
            signed_in: Mutex::new(None),
            channels: Mutex::new(Vec::new()),
            workers: Mutex::new(workers),
            forwarder: Mutex::new(None),
        }
    }

    /// The hub.
    pub fn hub(&self) -> &TechHub {
        &self.hub
    }

    /// Where exported files are saved.
    pub fn exports_dir(&self) -> &Path {
        &self.exports_dir
    }

    /// Signs in with `email` and `password`, replacing any session, and returns it.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Session, CommandError> {
        let mut tokens = self.tokens.lock().await;
        let pair = self.hub.auth().login(email, password).await?;
        let session = self.hub.auth().authenticate(&pair.access_token).await?;
        if let Some(previous) = tokens.replace(pair) {
            // The old session ends with the new one; a failure only leaves it to expire on its own.
            let _ = self.hub.auth().logout(&previous.refresh_token).await;
        }
        self.remember(Some(session.clone()));
        Ok(session)
    }

    /// Ends the session (its refresh token is revoked in the store), if there is one.
    pub async fn sign_out(&self) -> Result<(), CommandError> {
        let mut tokens = self.tokens.lock().await;
        self.remember(None);
        if let Some(pair) = tokens.take() {
            self.hub.auth().logout(&pair.refresh_token).await?;
        }
        Ok(())
    }

    /// The signed-in session as the store has it now (role and active flag current), refreshing the access
    /// token once it has expired. A session the core no longer accepts is forgotten: `not_signed_in`.
    pub async fn session(&self) -> Result<Session, CommandError> {
        let mut tokens = self.tokens.lock().await;
        let Some(pair) = tokens.as_ref() else { return Err(CommandError::not_signed_in()) };
        let refresh_token = pair.refresh_token.clone();
        let checked = match self.hub.auth().authenticate(&pair.access_token).await {
            Err(error) if error.code() == Some("token_expired") => {
                match self.hub.auth().refresh(&refresh_token).await {
                    Ok(fresh) => {
                        let session = self.hub.auth().authenticate(&fresh.access_token).await;
                        *tokens = Some(fresh);
                        session
                    }
                    Err(error) => Err(error),
                }
            }
            checked => checked,
        };
        match checked {
            Ok(session) => {
                self.remember(Some(session.clone()));
                Ok(session)
            }
            Err(error) if error.kind() == ErrorKind::Unauthenticated => {
                *tokens = None;
                self.remember(None);
                Err(CommandError::not_signed_in())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The session as last checked, without asking the store (for filtering events, many per second).
    pub fn last_session(&self) -> Option<Session> {
        lock(&self.signed_in).clone()
    }

    fn remember(&self, session: Option<Session>) {
        *lock(&self.signed_in) = session;
    }

    /// Adds a channel that receives the signed-in user's progress and log events.
    pub fn add_channel(&self, channel: Channel<EventView>) {
        lock(&self.channels).push(channel);
    }

    /// Sends `event` to every channel, dropping the channels whose window is gone.
    pub(crate) fn send_to_channels(&self, event: &EventView) {
        lock(&self.channels).retain(|channel| channel.send(event.clone()).is_ok());
    }

    pub(crate) fn set_forwarder(&self, forwarder: JoinHandle<()>) {
        *lock(&self.forwarder) = Some(forwarder);
    }

    /// Stops the event forwarder and the workers (running jobs get the runtime's grace period, the rest go
    /// back to `queued` with their leases released) and ends the session. Later calls do nothing.
    pub async fn shutdown(&self) {
        if let Some(forwarder) = lock(&self.forwarder).take() {
            forwarder.abort();
        }
        let workers = lock(&self.workers).take();
        if let Some(workers) = workers {
            workers.shutdown().await;
        }
        let _ = self.sign_out().await;
        lock(&self.channels).clear();
    }
}

/// Locks `mutex`, also after a panic elsewhere: every value kept here stays valid whatever a panicking holder
/// was doing (each is replaced whole, never half-updated).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
