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
    /// Where deliveries are POSTed (it may carry credentials, and a Slack URL's path is its secret: show it
    /// through [`Endpoint::redacted_url`]).
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

    /// The URL as responses, events, logs and `Debug` show it: credentials hidden ([`redact_url`]), and for a
    /// Slack endpoint its secret token as well ([`redact_secret_path`]), whatever its host.
    pub fn redacted_url(&self) -> String {
        match self.kind {
            EndpointKind::Slack => redact_secret_path(&self.url),
            EndpointKind::Webhook => redact_url(&self.url),
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
            .field("url", &self.redacted_url())
            .field("event_types", &self.event_types)
            .field("enabled", &self.enabled)
            .field("failure_streak", &self.failure_streak)
            .field("secrets", &self.secrets.len())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The mask that replaces a secret token in a shown URL.
const SECRET_MASK: &str = "****";

/// `url` with any user name and password replaced by `***`, for logs and responses. A Slack incoming-webhook
/// URL (host `hooks.slack.com`) also gets its secret token masked ([`redact_secret_path`]).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    if host.eq_ignore_ascii_case("hooks.slack.com") {
        return redact_secret_path(url);
    }
    match authority.rfind('@') {
        Some(at) => format!("{}***{}", &url[..authority_start], &rest[at..]),
        None => url.to_owned(),
    }
}

/// `url` for a URL whose path ends in a secret (a Slack incoming webhook,
/// `https://hooks.slack.com/services/T…/B…/<token>`): credentials hidden as [`redact_url`] hides them, the
/// last path segment replaced by `****`, the query and fragment dropped. The scheme, host, port and the other
/// path segments stay, so people can still tell endpoints apart.
pub fn redact_secret_path(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return SECRET_MASK.to_owned() };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let authority = match authority.rfind('@') {
        Some(at) => format!("***{}", &authority[at..]),
        None => authority.to_owned(),
    };
    let after_authority = &rest[authority_len..];
    let path = &after_authority[..after_authority.find(['?', '#']).unwrap_or(after_authority.len())];
    let kept = match path.trim_end_matches('/').rfind('/') {
        Some(last) => &path[..=last],
        None => "/",
    };
    format!("{}{authority}{kept}{SECRET_MASK}", &url[..authority_start])
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
    fn slack_tokens_are_masked_and_the_rest_kept() {
        let slack = "https://hooks.slack.com/services/T0123/B0456/abcdefSECRETtoken";
        assert_eq!(redact_url(slack), "https://hooks.slack.com/services/T0123/B0456/****");
        assert_eq!(
            redact_url("https://Hooks.Slack.com:443/services/T1/B2/tok?x=1"),
            "https://Hooks.Slack.com:443/services/T1/B2/****"
        );
        assert_eq!(redact_secret_path("http://u:p@127.0.0.1:8080/hook/tok#f"), "http://***@127.0.0.1:8080/hook/****");
        assert_eq!(redact_secret_path("http://127.0.0.1:8080/tok/"), "http://127.0.0.1:8080/****");
        assert_eq!(redact_secret_path("http://127.0.0.1:8080"), "http://127.0.0.1:8080/****");
        assert_eq!(redact_secret_path("no url at all"), "****");
        let endpoint =
            Endpoint::new(EndpointKind::Slack, "http://127.0.0.1:9/services/T/B/tok", "", vec![], Utc::now());
        assert_eq!(endpoint.redacted_url(), "http://127.0.0.1:9/services/T/B/****");
        assert!(!format!("{endpoint:?}").contains("tok"));
        let webhook = Endpoint { kind: EndpointKind::Webhook, ..endpoint };
        assert_eq!(webhook.redacted_url(), "http://127.0.0.1:9/services/T/B/tok");
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
