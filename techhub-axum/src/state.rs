//! What every handler shares: the hub, the configuration, and the process-wide pieces built once.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use techhub_core::TechHub;

use crate::config::HttpConfig;

/// The router's state.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub hub: TechHub,
    /// HTTP settings.
    pub config: Arc<HttpConfig>,
    /// When this router was built (for `uptime_s`).
    pub started: Instant,
    /// When this router was built, as a time.
    pub started_at: DateTime<Utc>,
    /// The OpenAPI document, serialized once.
    pub openapi: Arc<String>,
}
