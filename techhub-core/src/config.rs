//! Typed configuration of a [`TechHub`](crate::TechHub).

use std::time::Duration;

/// How a hub behaves. Build it with [`Config::default`] and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// How many events a subscriber may fall behind before it starts missing them (default 1024).
    pub event_capacity: usize,
    /// The product name used in emails (default "TechHub").
    pub app_name: String,
    /// The base URL of links in emails, e.g. `https://app.example.com` (default `http://127.0.0.1:8080`).
    /// Configured, never taken from a request, so a forged `Host` header cannot redirect reset links.
    pub public_url: String,
    /// The sender of emails (default `TechHub <no-reply@localhost>`).
    pub email_from: String,
    /// How long a password-reset link works (default 30 min).
    pub password_reset_ttl: Duration,
    /// How long an email-verification link works (default 24 h).
    pub email_verify_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            event_capacity: 1024,
            app_name: "TechHub".to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            email_from: "TechHub <no-reply@localhost>".to_owned(),
            password_reset_ttl: Duration::from_secs(30 * 60),
            email_verify_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Config {
    /// Sets [`Config::event_capacity`].
    #[must_use]
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Sets [`Config::app_name`].
    #[must_use]
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = name.into();
        self
    }

    /// Sets [`Config::public_url`] (a trailing `/` is dropped).
    #[must_use]
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets [`Config::email_from`].
    #[must_use]
    pub fn email_from(mut self, from: impl Into<String>) -> Self {
        self.email_from = from.into();
        self
    }

    /// Sets [`Config::password_reset_ttl`].
    #[must_use]
    pub fn password_reset_ttl(mut self, ttl: Duration) -> Self {
        self.password_reset_ttl = ttl;
        self
    }

    /// Sets [`Config::email_verify_ttl`].
    #[must_use]
    pub fn email_verify_ttl(mut self, ttl: Duration) -> Self {
        self.email_verify_ttl = ttl;
        self
    }

    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        if self.event_capacity == 0 {
            return Err(crate::Error::invalid_field("event_capacity", "the event capacity must be at least 1"));
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(crate::Error::invalid_field(
                "public_url",
                "the public URL must start with http:// or https://",
            ));
        }
        if self.password_reset_ttl.is_zero() || self.email_verify_ttl.is_zero() {
            return Err(crate::Error::invalid_field("ttl", "token lifetimes must be longer than zero"));
        }
        Ok(())
    }
}
