//! Notification endpoints: stored webhook and Slack targets, the event types they subscribe to, their health
//! (enabled, failure streak) and their signing secrets.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EndpointId;

/// What an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    /// An HTTP receiver of signed Standard Webhooks deliveries.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
}

/// A Standard Webhooks signing secret: `whsec_` followed by the base64 of the key bytes.
///
/// It is stored (the signature needs it) but never shown after creation or rotation: its `Debug` is redacted,
/// and the HTTP face never serializes an [`Endpoint`] as a whole.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// Wraps the text form `whsec_…` (no check: [`crate::notify`] makes and parses them).
    pub fn from_text(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text form, `whsec_…`: only for signing and for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

/// One signing secret of an endpoint and, after a rotation replaced it, when it stops signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSecret {
    /// The secret.
    pub secret: SigningSecret,
    /// `None` for the current secret; for a rotated-out one, the end of its overlap.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A webhook or Slack target.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its id.
    pub id: EndpointId,
    /// Webhook or Slack.
    pub kind: EndpointKind,
    /// Where deliveries are POSTed (it may carry credentials: show it through [`redact_url`]).
    pub url: String,
    /// What it is for, for people.
    pub description: String,
    /// The event types it receives (`build.failed`, ...).
    pub event_types: Vec<String>,
    /// Whether deliveries go to it.
    pub enabled: bool,
    /// Why it was disabled automatically (a 410, a failure window), if it was.
    pub disabled_reason: Option<String>,
    /// Consecutive failed attempts (reset by a success).
    pub failure_streak: u32,
    /// When the current run of failures began (reset by a success).
    pub failing_since: Option<DateTime<Utc>>,
    /// The signing secrets, current first (webhooks only; Slack endpoints have none).
    pub secrets: Vec<EndpointSecret>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write.
    pub version: u64,
}

impl Endpoint {
    /// An enabled endpoint created at `now`, with no secret yet.
    pub fn new(
        kind: EndpointKind,
        url: impl Into<String>,
        description: impl Into<String>,
        event_types: Vec<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: EndpointId::new(),
            kind,
            url: url.into(),
            description: description.into(),
            event_types,
            enabled: true,
            disabled_reason: None,
            failure_streak: 0,
            failing_since: None,
            secrets: Vec::new(),
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    /// Whether it receives events of `event_type` (enabled and subscribed).
    pub fn receives(&self, event_type: &str) -> bool {
        self.enabled && self.event_types.iter().any(|subscribed| subscribed == event_type)
    }

    /// The secrets that sign at `now`: the current one and those whose overlap has not ended.
    pub fn live_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SigningSecret> {
        self.secrets.iter().filter(move |secret| secret.expires_at.is_none_or(|end| end > now)).map(|s| &s.secret)
    }

    /// Makes `secret` the current one; the previous current secret keeps signing until `overlap_end`, and
    /// secrets whose overlap ended at `now` are dropped.
    pub fn rotate_secret(&mut self, secret: SigningSecret, now: DateTime<Utc>, overlap_end: DateTime<Utc>) {
        self.secrets.retain(|old| old.expires_at.is_none_or(|end| end > now));
        for old in &mut self.secrets {
            if old.expires_at.is_none() {
                old.expires_at = Some(overlap_end);
            }
        }
        self.secrets.insert(0, EndpointSecret { secret, expires_at: None });
        self.updated_at = now;
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("url", &redact_url(&self.url))
            .field("event_types", &self.event_types)
            .field("enabled", &self.enabled)
            .field("failure_streak", &self.failure_streak)
            .field("secrets", &self.secrets.len())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// `url` with any user name and password replaced by `***`, for logs and responses.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}***{}", &url[..authority_start], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn credentials_are_redacted_and_plain_urls_kept() {
        assert_eq!(redact_url("https://user:pw@hooks.example.com/a@b"), "https://***@hooks.example.com/a@b");
        assert_eq!(redact_url("https://hooks.example.com/x?a=b@c"), "https://hooks.example.com/x?a=b@c");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_overlap_only() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let mut endpoint = Endpoint::new(EndpointKind::Webhook, "https://h.example.com", "", vec![], now);
        endpoint.rotate_secret(SigningSecret::from_text("whsec_a"), now, now);
        let day = TimeDelta::hours(24);
        endpoint.rotate_secret(SigningSecret::from_text("whsec_b"), now, now + day);
        let live = |at| endpoint.live_secrets(at).map(|s| s.expose().to_owned()).collect::<Vec<_>>();
        assert_eq!(live(now), ["whsec_b", "whsec_a"]);
        assert_eq!(live(now + day), ["whsec_b"]);
        assert!(!format!("{endpoint:?}").contains("whsec_"));
    }
}
