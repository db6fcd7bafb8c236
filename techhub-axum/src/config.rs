//! The HTTP face's settings. Everything about users, jobs and rights lives in the core's `Config`; this is
//! only what HTTP adds.

use std::time::Duration;

use crate::client_address::Cidr;
use crate::log_ring::LogRing;

/// Settings of [`router`](crate::router).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Origins allowed to call the API from a browser (`https://app.example.com`); empty: no CORS headers,
    /// so browsers allow same-origin calls only.
    pub cors_origins: Vec<String>,
    /// Requests per minute one client address (an IPv6 client's /64) may make to the auth routes; 0 turns
    /// the per-address limit off (the core's per-account lockout stays).
    pub auth_rate_limit_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` is believed (empty: none, the TCP peer is the client). The
    /// client is the right-most hop that is not one of them.
    pub trusted_proxies: Vec<Cidr>,
    /// Longest time a request may take before it is answered 408 (WebSocket sessions are not limited).
    pub request_timeout: Duration,
    /// Largest request body (1 MiB).
    pub body_limit: usize,
    /// Largest body of `POST /api/v1/users/import` (32 MiB).
    pub import_body_limit: usize,
    /// Events a WebSocket client may have waiting before it is closed with 1013 (try again later).
    pub event_buffer: usize,
    /// Largest message (and frame) a WebSocket client may send (4 KiB: a subscription of ~100 ids). A larger
    /// one closes the socket.
    pub ws_max_message: usize,
    /// How long a socket that did not pass `?access_token=` has to send its auth message (3 s).
    pub ws_auth_timeout: Duration,
    /// How often a socket re-checks its session, so that a revoked session or a disabled, deleted or demoted
    /// user takes effect within this time even when no event announces it (500 ms). Changes announced on the
    /// event bus (the user's own `user.updated` or `user.deleted`) are applied before the next event.
    pub ws_session_check: Duration,
    /// The ring of recent log records that `GET /api/v1/system/logs` reads; install its
    /// [`layer`](LogRing::layer) in the tracing subscriber. `None`: the route answers an empty list.
    pub log_ring: Option<LogRing>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            auth_rate_limit_per_minute: 60,
            trusted_proxies: Vec::new(),
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
            import_body_limit: 32 * 1024 * 1024,
            event_buffer: 256,
            ws_max_message: 4 * 1024,
            ws_auth_timeout: Duration::from_secs(3),
            ws_session_check: Duration::from_millis(500),
            log_ring: None,
        }
    }
}
