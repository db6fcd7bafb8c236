//! `GET /api/v1/events`: live events over a WebSocket.
//!
//! The client authenticates with `?access_token=` or, within a few seconds (`HttpConfig::ws_auth_timeout`), a
//! first message `{ "type": "auth", "token": "..." }`; it may then narrow what it receives with
//! `{ "type": "subscribe", "topics": ["jobs"], "ids": ["<job id>"] }` (each acknowledged with
//! `{ "type": "subscribed", ... }`). An admin may follow the server's new log records (from the router's
//! `LogRing`) with `{ "type": "logs", "follow": true }`: each then comes as `{ "type": "log", "data": record }`
//! (`{ "type": "log.lagged" }` when some went by unseen). Events go out as `{ "seq", "at", "topic", "type", "data" }`. A user
//! receives the events of what it owns, an admin everything.
//!
//! The socket follows its session: it closes with 1008 when the access token expires, and within
//! `HttpConfig::ws_session_check` of the session being revoked or the user being disabled or deleted. The
//! caller's rights are re-read before the next event whenever the bus announces a change of the user (so a
//! demoted admin stops receiving other users' events at once). Client messages are small (a few KiB); a larger
//! one ends the socket.
//!
//! Each client has a bounded buffer between the event bus and its socket. A client that lets it fill up (or
//! falls behind the bus itself) is closed with 1013 ("try again later"); the bus never waits for a socket,
//! so one slow client never slows the others.

use std::collections::HashSet;
use std::fmt;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use techhub_core::auth::Session;
use techhub_core::events::{Event, EventKind, Topic};
use tokio::sync::{broadcast, mpsc, oneshot};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::ApiQuery;
use crate::problem::{ApiResult, Problem};
use crate::state::AppState;

/// Close code: the server is overloaded for this client; try again later.
const TRY_AGAIN_LATER: u16 = 1013;
/// Close code: the client broke the protocol (bad or missing auth).
const POLICY_VIOLATION: u16 = 1008;

/// The socket's query. Its `Debug` hides the token.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// An access token, instead of a first `auth` message.
    pub access_token: Option<String>,
}

impl fmt::Debug for EventsQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsQuery").field("access_token", &self.access_token.as_ref().map(|_| "<redacted>")).finish()
    }
}

/// What the client sends. Its `Debug` hides the token.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Auth {
        token: String,
    },
    Subscribe {
        #[serde(default)]
        topics: Option<Vec<Topic>>,
        #[serde(default)]
        ids: Option<Vec<Uuid>>,
    },
    /// Admins: start (or stop) receiving the server's new log records as `{ "type": "log", "data" }`.
    Logs {
        follow: bool,
    },
}

impl fmt::Debug for ClientMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth { .. } => f.debug_struct("Auth").field("token", &"<redacted>").finish(),
            Self::Subscribe { topics, ids } => {
                f.debug_struct("Subscribe").field("topics", topics).field("ids", ids).finish()
            }
            Self::Logs { follow } => f.debug_struct("Logs").field("follow", follow).finish(),
        }
    }
}

/// What a client asked to receive (everything it may see, until it subscribes).
#[derive(Debug, Default, Clone)]
struct Subscription {
    topics: Option<HashSet<Topic>>,
    ids: Option<HashSet<Uuid>>,
}

impl Subscription {
    fn wants(&self, event: &Event) -> bool {
        self.topics.as_ref().is_none_or(|topics| topics.contains(&event.topic))
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&event.subject))
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Live events (WebSocket upgrade).
#[utoipa::path(get, path = "/api/v1/events", tag = "realtime", params(EventsQuery),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
              (status = 400, description = "Not a WebSocket handshake (no `Connection: upgrade`, `Upgrade: websocket`, key or version 13)", body = Problem),
              (status = 401, description = "Invalid access token", body = Problem),
              (status = 426, description = "The connection cannot be upgraded", body = Problem)))]
async fn events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let (mut parts, _body) = request.into_parts();
    // A token in the query is checked before upgrading, so a bad one gets a plain 401.
    let caller = match query.access_token {
        Some(token) => Some(Caller { session: state.hub.auth().authenticate(&token).await?, token }),
        None => None,
    };
    let limit = state.config.ws_max_message.max(1);
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &state)
        .await
        .map_err(|rejection| Problem::new(rejection.status(), "malformed_body", rejection.body_text()))?
        .max_message_size(limit)
        .max_frame_size(limit);
    Ok(upgrade.on_upgrade(move |socket| serve(socket, state, caller)).into_response())
}

/// Who is on the other end: its session as last checked, and the token to check it again with.
struct Caller {
    session: Session,
    token: String,
}

impl Caller {
    /// Re-reads the session (and so the user's role and active flag); `None` once it ended or the token
    /// expired.
    async fn recheck(&mut self, state: &AppState) -> Option<()> {
        let session = state.hub.auth().authenticate(&self.token).await.ok()?;
        if state.hub.now() >= session.expires_at {
            return None;
        }
        self.session = session;
        Some(())
    }
}

async fn serve(mut socket: WebSocket, state: AppState, caller: Option<Caller>) {
    let caller = match caller {
        Some(caller) => caller,
        None => match first_message_auth(&mut socket, &state).await {
            Some(caller) => caller,
            None => return close(&mut socket, POLICY_VIOLATION, "authenticate first").await,
        },
    };
    metrics::gauge!("techhub_ws_clients").increment(1.0);
    // Subscribed before the client hears it is in: every event after "authenticated" reaches it.
    let bus = state.hub.subscribe();
    let _ = socket.send(text(json!({ "type": "authenticated" }))).await;
    run(socket, &state, caller, bus).await;
    metrics::gauge!("techhub_ws_clients").decrement(1.0);
}

/// Waits for `{ "type": "auth", "token" }` as the first message.
async fn first_message_auth(socket: &mut WebSocket, state: &AppState) -> Option<Caller> {
    let message = tokio::time::timeout(state.config.ws_auth_timeout, socket.recv()).await.ok()??.ok()?;
    let Message::Text(body) = message else { return None };
    let ClientMessage::Auth { token } = serde_json::from_str(&body).ok()? else { return None };
    let session = state.hub.auth().authenticate(&token).await.ok()?;
    Some(Caller { session, token })
}

/// Whether `event` announces a change of the caller's own account (its role, active flag or existence).
fn changes_caller(event: &Event, caller: &Caller) -> bool {
    matches!(event.kind, EventKind::UserUpdated | EventKind::UserDeleted)
        && event.subject == *caller.session.user.id.as_uuid()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))).await;
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

/// Closes a client that cannot keep up (once), counting it.
fn slow(reason: &'static str, closer: &mut Option<oneshot::Sender<(u16, &'static str)>>) {
    metrics::counter!("techhub_ws_closed_slow_total").increment(1);
    end(TRY_AGAIN_LATER, reason, closer);
}

/// Has the writer close the socket with `code` (once), ahead of anything still buffered.
fn end(code: u16, reason: &'static str, closer: &mut Option<oneshot::Sender<(u16, &'static str)>>) {
    if let Some(sender) = closer.take() {
        let _ = sender.send((code, reason));
    }
}

/// What the writer sends next.
enum Outgoing {
    Message(Message),
    Close(u16, &'static str),
}

/// Bus → filter → bounded buffer → socket. Three parts so that no part waits on another's socket I/O: the
/// reader takes client messages, the forwarder moves visible events into the buffer (never waiting), and
/// the writer drains the buffer into the socket.
async fn run(socket: WebSocket, state: &AppState, mut caller: Caller, mut bus: broadcast::Receiver<Event>) {
    let (mut sink, mut stream) = socket.split();
    let (outgoing, mut pending) = mpsc::channel::<Outgoing>(state.config.event_buffer.max(1));
    let (closer, mut closing) = oneshot::channel::<(u16, &'static str)>();
    let writer = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                close = &mut closing => {
                    let (code, reason) = close.unwrap_or((TRY_AGAIN_LATER, "closing"));
                    Outgoing::Close(code, reason)
                }
                next = pending.recv() => match next { Some(next) => next, None => break },
            };
            match next {
                Outgoing::Message(message) => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close(code, reason) => {
                    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
        }
    });

    let mut subscription = Subscription::default();
    // The server's log records, once an admin asks to follow them.
    let mut logs: Option<broadcast::Receiver<crate::log_ring::LogRecord>> = None;
    let mut closer = Some(closer);
    let mut session_check =
        tokio::time::interval(state.config.ws_session_check.max(std::time::Duration::from_millis(10)));
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = session_check.tick() => {
                if caller.recheck(state).await.is_none() {
                    end(POLICY_VIOLATION, "the session ended", &mut closer);
                    break;
                }
            }
            event = bus.recv() => match event {
                Ok(event) => {
                    if changes_caller(&event, &caller) && caller.recheck(state).await.is_none() {
                        end(POLICY_VIOLATION, "the session ended", &mut closer);
                        break;
                    }
                    if !caller.session.actor.may_access(event.owner) || !subscription.wants(&event) {
                        continue;
                    }
                    let message = text(json!({
                        "seq": event.seq, "at": event.at, "topic": event.topic, "type": event.kind, "data": event.data,
                    }));
                    if outgoing.try_send(Outgoing::Message(message)).is_err() {
                        slow("client too slow: event buffer full", &mut closer);
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics::counter!("techhub_event_bus_lagged_total").increment(missed);
                    slow("client too slow: fell behind the event bus", &mut closer);
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            record = next_log(&mut logs) => {
                let message = match record {
                    Ok(record) if caller.session.actor.is_privileged() => json!({ "type": "log", "data": record }),
                    Ok(_) => { logs = None; continue; }
                    // Records went by unseen: the client reads the ring again.
                    Err(broadcast::error::RecvError::Lagged(_)) => json!({ "type": "log.lagged" }),
                    Err(broadcast::error::RecvError::Closed) => { logs = None; continue; }
                };
                if outgoing.try_send(Outgoing::Message(text(message))).is_err() {
                    slow("client too slow: event buffer full", &mut closer);
                    break;
                }
            }
            message = stream.next() => match message {
                Some(Ok(Message::Text(body))) => {
                    let reply = match serde_json::from_str::<ClientMessage>(&body) {
                        Ok(ClientMessage::Logs { follow }) => {
                            let ring = state.config.log_ring.as_ref();
                            if !caller.session.actor.is_privileged() {
                                json!({ "type": "error", "message": "only admins may follow the server's logs" })
                            } else if let (true, Some(ring)) = (follow, ring) {
                                logs = Some(ring.subscribe());
                                json!({ "type": "logs", "follow": true })
                            } else {
                                logs = None;
                                json!({ "type": "logs", "follow": false })
                            }
                        }
                        Ok(ClientMessage::Subscribe { topics, ids }) => {
                            subscription = Subscription {
                                topics: topics.map(|topics| topics.into_iter().collect()),
                                ids: ids.map(|ids| ids.into_iter().collect()),
                            };
                            json!({ "type": "subscribed", "topics": subscription.topics, "ids": subscription.ids })
                        }
                        Ok(ClientMessage::Auth { .. }) => json!({ "type": "error", "message": "already authenticated" }),
                        Err(error) => json!({ "type": "error", "message": format!("unreadable message: {error}") }),
                    };
                    if outgoing.try_send(Outgoing::Message(text(reply))).is_err() {
                        slow("client too slow: event buffer full", &mut closer);
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    drop(outgoing);
    let _ = writer.await;
}

/// The next log record of a followed ring; pending forever while none is followed.
async fn next_log(
    logs: &mut Option<broadcast::Receiver<crate::log_ring::LogRecord>>,
) -> Result<crate::log_ring::LogRecord, broadcast::error::RecvError> {
    match logs {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_and_client_messages_never_show_a_token_in_debug() {
        let query = EventsQuery { access_token: Some("eyJ.secret.token".to_owned()) };
        assert!(!format!("{query:?}").contains("secret"), "{query:?}");
        let message: ClientMessage =
            serde_json::from_str(r#"{ "type": "auth", "token": "eyJ.secret.token" }"#).expect("an auth message");
        assert!(!format!("{message:?}").contains("secret"), "{message:?}");
        let subscribe: ClientMessage =
            serde_json::from_str(r#"{ "type": "subscribe", "topics": ["jobs"] }"#).expect("a subscription");
        assert!(format!("{subscribe:?}").contains("Jobs"));
    }
}
