//! The notification variables (API.md, "Example server configuration"): `TECHHUB_WEBHOOK_ALLOW_PRIVATE`,
//! `TECHHUB_SLACK_WEBHOOK_URL` and `TECHHUB_NOTIFY_EMAILS`. A bad value stops the server at start with a message
//! naming the variable.

use std::fmt;

use techhub_core::model::{Email, EndpointKind};
use techhub_core::notify::{AddressPolicy, NewEndpoint};
use techhub_core::{Actor, NotifyConfig, TechHub};

use crate::settings::SettingError;

/// The event types the configured Slack URL receives.
const SLACK_EVENTS: [&str; 2] = ["build.failed", "job.failed"];

/// How this server notifies. `Debug` hides the Slack URL (it is a credential).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NotifySettings {
    /// `TECHHUB_WEBHOOK_ALLOW_PRIVATE`: the private ranges webhook URLs may reach (`loopback` or CIDRs).
    pub(crate) address_policy: AddressPolicy,
    /// `TECHHUB_SLACK_WEBHOOK_URL`: a Slack endpoint kept at start for `build.failed` and `job.failed`.
    pub(crate) slack_webhook_url: Option<String>,
    /// `TECHHUB_NOTIFY_EMAILS`: the addresses mailed on `build.failed`.
    pub(crate) emails: Vec<Email>,
}

impl fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifySettings")
            .field("address_policy", &self.address_policy)
            .field("slack_webhook_url", &self.slack_webhook_url.as_ref().map(|_| "<configured>"))
            .field("emails", &self.emails)
            .finish()
    }
}

impl NotifySettings {
    /// Reads the variables through `lookup`.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let get = |name: &str| lookup(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let address_policy = match get("TECHHUB_WEBHOOK_ALLOW_PRIVATE") {
            None => AddressPolicy::public_only(),
            Some(text) => AddressPolicy::parse(&text).map_err(|error| SettingError {
                variable: "TECHHUB_WEBHOOK_ALLOW_PRIVATE",
                problem: format!("{} (expected loopback and/or CIDRs like 10.0.0.0/8)", error.message()),
            })?,
        };
        let slack_webhook_url = get("TECHHUB_SLACK_WEBHOOK_URL");
        if let Some(url) = &slack_webhook_url
            && !url.starts_with("https://")
            && !url.starts_with("http://")
        {
            return Err(SettingError {
                variable: "TECHHUB_SLACK_WEBHOOK_URL",
                problem: "expected an https:// Slack incoming-webhook URL".to_owned(),
            });
        }
        let emails = get("TECHHUB_NOTIFY_EMAILS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|address| !address.is_empty())
                    .map(|address| {
                        Email::parse(address).map_err(|_| SettingError {
                            variable: "TECHHUB_NOTIFY_EMAILS",
                            problem: format!("{address:?} is not an email address"),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(Self { address_policy, slack_webhook_url, emails })
    }

    /// `config` with these settings.
    pub(crate) fn config(&self, config: NotifyConfig) -> NotifyConfig {
        config.address_policy(self.address_policy.clone()).email_recipients(self.emails.clone())
    }

    /// Creates the Slack endpoint of `TECHHUB_SLACK_WEBHOOK_URL`, unless one with that URL exists already.
    pub(crate) async fn ensure_slack_endpoint(&self, hub: &TechHub) -> Result<(), SettingError> {
        let Some(url) = &self.slack_webhook_url else { return Ok(()) };
        let fail = |error: techhub_core::Error| SettingError {
            variable: "TECHHUB_SLACK_WEBHOOK_URL",
            problem: format!("the Slack endpoint could not be set up: {}", error.message()),
        };
        let notifications = hub.notifications();
        let existing = notifications.list_endpoints(&Actor::System).await.map_err(fail)?;
        if existing.iter().any(|endpoint| endpoint.kind == EndpointKind::Slack && &endpoint.url == url) {
            return Ok(());
        }
        let new = NewEndpoint {
            kind: EndpointKind::Slack,
            url: url.clone(),
            description: "TECHHUB_SLACK_WEBHOOK_URL".to_owned(),
            event_types: SLACK_EVENTS.iter().map(|event| (*event).to_owned()).collect(),
        };
        notifications.create_endpoint(&Actor::System, new).await.map_err(fail)?;
        tracing::info!("Slack endpoint of TECHHUB_SLACK_WEBHOOK_URL created");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<NotifySettings, SettingError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        NotifySettings::from_lookup(|name| map.get(name).cloned())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn defaults_allow_only_public_addresses_and_mail_nobody() {
        let defaults = settings(&[]).expect("valid");
        assert_eq!(defaults.address_policy, AddressPolicy::public_only());
        assert!(defaults.emails.is_empty() && defaults.slack_webhook_url.is_none());
    }

    #[test]
    fn good_values_are_read() {
        let good = settings(&[
            ("TECHHUB_WEBHOOK_ALLOW_PRIVATE", "loopback, 10.0.0.0/8"),
            ("TECHHUB_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/secret"),
            ("TECHHUB_NOTIFY_EMAILS", "ops@example.com, Oncall@Example.com"),
        ])
        .expect("valid");
        assert!(good.address_policy.permits(ip("127.0.0.1")) && good.address_policy.permits(ip("10.1.1.1")));
        assert!(!good.address_policy.permits(ip("192.168.1.1")));
        let emails: Vec<&str> = good.emails.iter().map(Email::as_str).collect();
        assert_eq!(emails, ["ops@example.com", "oncall@example.com"]);
        assert!(!format!("{good:?}").contains("secret"), "the Slack URL is a credential");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("TECHHUB_WEBHOOK_ALLOW_PRIVATE", "10.0.0.0/40", "10.0.0.0/40"),
            ("TECHHUB_WEBHOOK_ALLOW_PRIVATE", "everything", "everything"),
            ("TECHHUB_SLACK_WEBHOOK_URL", "hooks.slack.com/services/x", "https://"),
            ("TECHHUB_NOTIFY_EMAILS", "ops@example.com, nobody", "\"nobody\""),
        ];
        for (variable, value, says) in cases {
            let error = settings(&[(variable, value)]).expect_err(value);
            assert_eq!(error.variable, variable, "{value}: {error}");
            assert!(error.problem.contains(says), "{value}: {error} should say {says}");
        }
    }
}
