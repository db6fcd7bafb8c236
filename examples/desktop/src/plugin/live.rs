//! The bus → window bridge: the signed-in user's events, filtered exactly as the WebSocket filters them.
//!
//! Rare state changes (a job queued, started, finished; a build or module changing state; a user changing)
//! go out as the Tauri event [`STATE_EVENT`]; the frequent ones (progress, log lines) go through the
//! `tauri::ipc::Channel`s the window handed to the `watch` command, which are ordered and cheaper than events.
//! A user receives the events of what it owns, an admin everything, nobody anything while signed out. When
//! the bus announces a change of the signed-in user, the session is checked again before the next event (a
//! demoted admin stops receiving other users' events at once; a disabled or deleted user is signed out), and
//! it is checked every [`SESSION_CHECK`] anyway (an expired access token is refreshed then; a session that
//! ended is signed out), as the WebSocket does.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager, Runtime};
use techhub_core::auth::Session;
use techhub_core::events::{Event, EventKind, Topic};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::error::CommandError;
use super::state::HubState;

/// The Tauri event that carries state changes ([`EventView`]).
pub const STATE_EVENT: &str = "techhub:state";
/// The Tauri event that says the session changed: the signed-in user, or `null` after signing out.
pub const SESSION_EVENT: &str = "techhub:session";
/// The Tauri event that says events were missed (the window was too slow): reload what is shown.
pub const LAGGED_EVENT: &str = "techhub:lagged";

/// One bus event as the window sees it (the WebSocket's shape, plus the subject).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    /// The bus's sequence number.
    pub seq: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Its area (`jobs`, `builds`, `users`, ...).
    pub topic: Topic,
    /// What happened (`job.progress`, `build.log`, ...).
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The job, build or user it is about.
    pub subject: Uuid,
    /// Details, shaped per kind.
    pub data: serde_json::Value,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        Self {
            seq: event.seq,
            at: event.at,
            topic: event.topic,
            kind: event.kind,
            subject: event.subject,
            data: event.data.clone(),
        }
    }
}

/// Whether `kind` is frequent (progress, log lines): those go through channels, the rest as events.
pub fn is_stream(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::JobProgress
            | EventKind::JobLog
            | EventKind::BuildProgress
            | EventKind::ModuleProgress
            | EventKind::BuildLog
    )
}

/// How often the signed-in session is checked again while events flow (or do not).
pub const SESSION_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Forwards `bus` to the app's windows until the task is aborted (by [`HubState::shutdown`]).
pub(crate) async fn forward<R: Runtime>(app: AppHandle<R>, mut bus: broadcast::Receiver<Event>) {
    let mut session_check = tokio::time::interval_at(tokio::time::Instant::now() + SESSION_CHECK, SESSION_CHECK);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = session_check.tick() => {
                if app.state::<HubState>().last_session().is_some() {
                    recheck(&app).await;
                }
                continue;
            }
            event = bus.recv() => match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let _ = app.emit(LAGGED_EVENT, missed);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let state = app.state::<HubState>();
        let Some(mut session) = state.last_session() else { continue };
        if matches!(event.kind, EventKind::UserUpdated | EventKind::UserDeleted)
            && event.subject == *session.user.id.as_uuid()
        {
            match recheck(&app).await {
                Some(fresh) => session = fresh,
                None => continue,
            }
        }
        if !session.actor.may_access(event.owner) {
            continue;
        }
        let view = EventView::from(&event);
        if is_stream(event.kind) {
            state.send_to_channels(&view);
        } else {
            let _ = app.emit(STATE_EVENT, &view);
        }
    }
}

/// Checks the session again and tells the window what it is now: the user, or `null` once it ended. When
/// the check itself fails (the store is unavailable), the session as last checked stands.
async fn recheck<R: Runtime>(app: &AppHandle<R>) -> Option<Session> {
    let state = app.state::<HubState>();
    match state.session().await {
        Ok(fresh) => {
            let _ = app.emit(SESSION_EVENT, &fresh.user);
            Some(fresh)
        }
        Err(error) if error.code == CommandError::not_signed_in().code => {
            let _ = app.emit(SESSION_EVENT, ());
            None
        }
        Err(error) => {
            tracing::warn!(%error, "the session could not be checked");
            state.last_session()
        }
    }
}
