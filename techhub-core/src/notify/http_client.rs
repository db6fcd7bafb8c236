//! The HTTP client of the webhook and Slack channels (reqwest over rustls): redirects never followed, connect
//! and total timeouts, a bounded response read, and the [`AddressPolicy`] asked on every resolved address of
//! every connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{Client, Url, redirect};

use super::NotifyError;
use super::address_policy::AddressPolicy;
use crate::{Error, Result};

/// Limits of outbound HTTP deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for the whole exchange, the response body included.
    pub timeout: Duration,
    /// Bytes of a response body read at most (the rest is dropped unread).
    pub max_response_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(5), timeout: Duration::from_secs(15), max_response_bytes: 4096 }
    }
}

/// How one POST went, when the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` the receiver asked for (seconds or an HTTP date), if any.
    pub retry_after: Option<Duration>,
    /// The start of the body (at most [`HttpLimits::max_response_bytes`]), lossily decoded.
    pub body: String,
}

/// The guarded HTTP client.
#[derive(Debug, Clone)]
pub struct HttpDelivery {
    client: Client,
    policy: Arc<AddressPolicy>,
    limits: HttpLimits,
}

/// A resolution refused because an address is not allowed (kept in the error's source chain).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Resolves names and refuses the whole answer if any address is private or special: so a URL that passed at
/// creation is checked again at every connect, on every address it resolves to.
#[derive(Debug)]
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(blocked) = addresses.iter().find(|address| !policy.permits(address.ip())) {
                let refusal = Refused(format!("{host} resolves to {}, which is not allowed", blocked.ip()));
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

impl HttpDelivery {
    /// A client that may reach the addresses `policy` permits.
    pub fn new(policy: AddressPolicy, limits: HttpLimits) -> Result<Self> {
        let policy = Arc::new(policy);
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.timeout)
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| Error::internal(format!("the HTTP client cannot be built: {error}")))?;
        Ok(Self { client, policy, limits })
    }

    /// The address policy.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Checks `url` as endpoint creation does: http or https, a host, and every address it resolves to allowed.
    /// Failures are `InvalidInput` on `url`.
    pub async fn check_url(&self, url: &str) -> Result<Url> {
        let parsed = parse_url(url)?;
        let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| Error::invalid_field("url", format!("the host {host} does not resolve")))?
                .map(|address| address.ip())
                .collect(),
        };
        if addresses.is_empty() {
            return Err(Error::invalid_field("url", format!("the host {host} does not resolve")));
        }
        for ip in addresses {
            self.policy.check(ip)?;
        }
        Ok(parsed)
    }

    /// POSTs `body` to `url` with `headers`. Transport failures (refused address, timeout, connection) are
    /// errors; any answer, 2xx or not, is an [`HttpAnswer`].
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
        now: DateTime<Utc>,
    ) -> std::result::Result<HttpAnswer, NotifyError> {
        let parsed = parse_url(url).map_err(|error| NotifyError::Permanent(error.message().to_owned()))?;
        // The resolver is not asked for addresses written in the URL itself: check those here.
        let literal = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.policy.check(ip).map_err(|error| NotifyError::Permanent(error.message().to_owned()))?;
        }
        let mut header_map = HeaderMap::new();
        header_map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        header_map.insert(USER_AGENT, HeaderValue::from_static(concat!("TechHub/", env!("CARGO_PKG_VERSION"))));
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| NotifyError::Permanent(format!("the {name} header cannot be sent")))?;
            header_map.insert(HeaderName::from_static(name), value);
        }
        let mut response = self
            .client
            .post(parsed)
            .headers(header_map)
            .body(body)
            .send()
            .await
            .map_err(|error| transport(&error, url))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, now));
        let mut body = Vec::new();
        while body.len() < self.limits.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.limits.max_response_bytes - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                // A body cut short or slow changes nothing: the status decided the outcome.
                Ok(None) | Err(_) => break,
            }
        }
        Ok(HttpAnswer { status, retry_after, body: String::from_utf8_lossy(&body).into_owned() })
    }
}

fn parse_url(url: &str) -> Result<Url> {
    let parsed =
        Url::parse(url).map_err(|_| Error::invalid_field("url", "not a URL (an http or https URL is expected)"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid_field("url", "only http and https URLs are allowed"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid_field("url", "the URL has no host"));
    }
    Ok(parsed)
}

/// A transport failure: a refused address is permanent (asking again changes nothing), anything else
/// (timeout, refused connection, TLS) is worth retrying.
fn transport(error: &reqwest::Error, url: &str) -> NotifyError {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return NotifyError::Permanent(refused.0.clone());
        }
        source = current.source();
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // reqwest's message names the URL, which may hold credentials or (Slack) a secret path: name only its
    // origin. The error is stored on the notification and shown to admins.
    let origin = Url::parse(url).map(|parsed| parsed.origin().ascii_serialization()).unwrap_or_default();
    NotifyError::Transient(format!("the request to {origin} {what}"))
}

/// `Retry-After`: delay-seconds or an HTTP date, as a wait from `now` (a date in the past is no wait).
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

/// Times an exchange.
pub(crate) fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").expect("valid").with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_http_urls_with_a_host_parse() {
        assert!(parse_url("https://hooks.example.com/x").is_ok());
        for bad in ["ftp://example.com", "file:///etc/passwd", "https://", "not a url", "javascript:alert(1)"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
