//! The HTTP face's settings. Everything about users, jobs and rights lives in the core's `Config`; this is
//! only what HTTP adds.

use std::time::Duration;

/// Settings of [`router`](crate::router).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Origins allowed to call the API from a browser (`https://app.example.com`); empty: no CORS headers,
    /// so browsers allow same-origin calls only.
    pub cors_origins: Vec<String>,
    /// Requests per minute one client address may make to the auth routes; 0 turns the per-address limit
    /// off (the core's per-account lockout stays).
    pub auth_rate_limit_per_minute: u32,
    /// Longest time a request may take before it is answered 408 (WebSocket sessions are not limited).
    pub request_timeout: Duration,
    /// Largest request body (1 MiB).
    pub body_limit: usize,
    /// Largest body of `POST /api/v1/users/import` (32 MiB).
    pub import_body_limit: usize,
    /// Events a WebSocket client may have waiting before it is closed with 1013 (try again later).
    pub event_buffer: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            auth_rate_limit_per_minute: 60,
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
            import_body_limit: 32 * 1024 * 1024,
            event_buffer: 256,
        }
    }
}
