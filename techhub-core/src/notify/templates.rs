//! Message templates (minijinja): one set per message kind, with a variant per channel (email subject, text and
//! HTML; Slack text; webhook JSON), optional locale variants that fall back to the language and then to the
//! default, escaping per channel, and strict undefined variables.
//!
//! Escaping follows the variant: HTML email escapes HTML, webhook JSON writes every value as JSON, Slack text
//! escapes `&`, `<` and `>` (Slack's control characters), and plain text (subjects, text bodies) is left as is.
//! A missing variable is an `InvalidInput` naming it. Applications add or override templates with
//! [`Templates::insert`] (or [`TechHubBuilder::template`](crate::TechHubBuilder::template)).

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{AutoEscape, Environment, ErrorKind as TemplateErrorKind};
use serde::Serialize;
use serde_json::Value;

use super::built_in_templates;
use crate::model::Channel;
use crate::{Error, Result};

/// One variant of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TemplatePart {
    /// The email subject (plain text).
    EmailSubject,
    /// The plain-text email body.
    EmailText,
    /// The HTML email body (HTML-escaped).
    EmailHtml,
    /// The Slack message text (mrkdwn; `&`, `<`, `>` escaped).
    Slack,
    /// The `data` of a webhook payload: a JSON document (values written as JSON).
    Webhook,
}

impl TemplatePart {
    /// The suffix of its template names, which also picks its escaping.
    const fn suffix(self) -> &'static str {
        match self {
            Self::EmailSubject => "subject.txt",
            Self::EmailText => "text.txt",
            Self::EmailHtml => "body.html",
            Self::Slack => "message.slack",
            Self::Webhook => "data.json",
        }
    }

    /// The channel the part serves.
    const fn channel(self) -> Channel {
        match self {
            Self::EmailSubject | Self::EmailText | Self::EmailHtml => Channel::Email,
            Self::Slack => Channel::Slack,
            Self::Webhook => Channel::Webhook,
        }
    }
}

/// A template an application adds (or a built-in it overrides): each variant is optional, but a channel is
/// offered only with its required parts (email: subject and text; Slack: its text; webhook: its JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateDefinition {
    /// Its id (`build_finished`).
    pub id: String,
    /// What it is for, for people.
    pub description: String,
    /// The locale of these variants (`fr`, `fr-CA`); `None` for the default ones.
    pub locale: Option<String>,
    /// Whether rendered bodies carry a one-time secret (such bodies are never stored).
    pub sensitive: bool,
    /// Email subject.
    pub email_subject: Option<String>,
    /// Email plain-text body.
    pub email_text: Option<String>,
    /// Email HTML body.
    pub email_html: Option<String>,
    /// Slack text.
    pub slack: Option<String>,
    /// Webhook `data` JSON.
    pub webhook: Option<String>,
}

impl TemplateDefinition {
    fn parts(&self) -> impl Iterator<Item = (TemplatePart, &String)> {
        [
            (TemplatePart::EmailSubject, &self.email_subject),
            (TemplatePart::EmailText, &self.email_text),
            (TemplatePart::EmailHtml, &self.email_html),
            (TemplatePart::Slack, &self.slack),
            (TemplatePart::Webhook, &self.webhook),
        ]
        .into_iter()
        .filter_map(|(part, source)| source.as_ref().map(|source| (part, source)))
    }
}

/// What a template offers, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateInfo {
    /// Its id.
    pub id: String,
    /// The channels it can render for.
    pub channels: Vec<Channel>,
    /// The variables its variants use (those the hub adds itself, `app_name` and `public_url`, left out).
    pub variables: Vec<String>,
    /// What it is for.
    pub description: String,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line (email; for other channels a one-line summary, possibly empty).
    pub subject: String,
    /// The plain-text body (email and log), the Slack text, or the webhook `data` JSON.
    pub text: String,
    /// The HTML alternative of an email, if the template has one.
    pub html: Option<String>,
    /// Whether the body carries a one-time secret (a reset or verification link): such bodies are delivered but
    /// never stored in the notification record.
    pub sensitive: bool,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    description: String,
    sensitive: bool,
    /// Which (locale, part) variants exist.
    variants: BTreeSet<(Option<String>, TemplatePart)>,
}

/// The template set.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    entries: BTreeMap<String, Entry>,
}

/// Variables the hub adds to every context.
const HUB_VARIABLES: [&str; 2] = ["app_name", "public_url"];

fn template_name(id: &str, locale: Option<&str>, part: TemplatePart) -> String {
    match locale {
        Some(locale) => format!("{id}.{locale}.{}", part.suffix()),
        None => format!("{id}.{}", part.suffix()),
    }
}

/// Slack's control characters, escaped as its docs ask.
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Templates {
    /// The built-in templates: `welcome`, `verify_email`, `password_reset`, `password_changed`,
    /// `build_finished`, `job_failed`, `user_registered`, `endpoint_disabled`.
    pub fn built_in() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else if name.ends_with(".json") {
                AutoEscape::Json
            } else if name.ends_with(".slack") {
                AutoEscape::Custom("slack")
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if state.auto_escape() == AutoEscape::Custom("slack") {
                let text = if value.is_safe() { value.to_string() } else { escape_slack(&value.to_string()) };
                return out.write_str(&text).map_err(|_| minijinja::Error::from(TemplateErrorKind::WriteFailure));
            }
            minijinja::escape_formatter(out, state, value)
        });
        let mut templates = Self { env, entries: BTreeMap::new() };
        for definition in built_in_templates::definitions() {
            // The built-in templates are constants that the tests below render, so adding them cannot fail.
            let _ = templates.insert(definition);
        }
        templates
    }

    /// Adds `definition`, or replaces the variants it gives of an existing template (of its locale). A template
    /// that does not parse is `InvalidInput` naming the variant, and changes nothing.
    pub fn insert(&mut self, definition: TemplateDefinition) -> Result<()> {
        let valid_id = !definition.id.is_empty()
            && definition.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_id {
            return Err(Error::invalid_field("id", "a template id is letters, digits, '_' and '-'"));
        }
        if definition.locale.as_deref().is_some_and(|locale| locale.is_empty() || locale.contains('.')) {
            return Err(Error::invalid_field("locale", "a locale is a tag like fr or fr-CA"));
        }
        // Parse every variant first, so a bad one changes nothing.
        let mut scratch = Environment::new();
        for (part, source) in definition.parts() {
            scratch.add_template_owned(part.suffix(), source.clone()).map_err(|error| {
                Error::invalid_field("template", format!("the {part:?} variant does not parse: {error}"))
            })?;
        }
        let locale = definition.locale.as_deref();
        let entry = self.entries.entry(definition.id.clone()).or_default();
        if locale.is_none() || entry.description.is_empty() {
            entry.description = definition.description.clone();
            entry.sensitive = definition.sensitive;
        }
        for (part, source) in definition.parts() {
            let name = template_name(&definition.id, locale, part);
            self.env
                .add_template_owned(name, source.clone())
                .map_err(|error| Error::internal(format!("a parsed template failed to load: {error}")))?;
            entry.variants.insert((definition.locale.clone(), part));
        }
        Ok(())
    }

    /// The template ids.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// What each template offers, in id order.
    pub fn list(&self) -> Vec<TemplateInfo> {
        self.entries.keys().filter_map(|id| self.info(id)).collect()
    }

    /// What template `id` offers, if it exists.
    pub fn info(&self, id: &str) -> Option<TemplateInfo> {
        let entry = self.entries.get(id)?;
        let mut variables = BTreeSet::new();
        for (locale, part) in &entry.variants {
            if let Ok(template) = self.env.get_template(&template_name(id, locale.as_deref(), *part)) {
                variables.extend(template.undeclared_variables(false));
            }
        }
        variables.retain(|name| !HUB_VARIABLES.contains(&name.as_str()));
        let channels = Channel::ALL.into_iter().filter(|channel| self.offers(entry, *channel)).collect();
        Some(TemplateInfo {
            id: id.to_owned(),
            channels,
            variables: variables.into_iter().collect(),
            description: entry.description.clone(),
        })
    }

    fn offers(&self, entry: &Entry, channel: Channel) -> bool {
        let has = |part| entry.variants.iter().any(|(_, existing)| *existing == part);
        match channel {
            Channel::Email | Channel::Log => has(TemplatePart::EmailSubject) && has(TemplatePart::EmailText),
            Channel::Slack => has(TemplatePart::Slack),
            Channel::Webhook => has(TemplatePart::Webhook),
        }
    }

    /// Whether template `id` exists.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Renders the email variants of template `name` (default locale) with `context`.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<Rendered> {
        self.render_for(name, Channel::Email, None, context)
    }

    /// Renders template `id` for `channel` in `locale` (falling back to its language, then to the default)
    /// with `context`.
    ///
    /// An unknown template is `NotFound`; a template without that channel's variant, a missing variable (named
    /// in the message, on field `data.<name>`) or webhook JSON that does not parse is `InvalidInput`.
    pub fn render_for(
        &self,
        id: &str,
        channel: Channel,
        locale: Option<&str>,
        context: impl Serialize,
    ) -> Result<Rendered> {
        let entry = self.entries.get(id).ok_or_else(|| Error::not_found(format!("no template is called {id:?}")))?;
        if !self.offers(entry, channel) {
            return Err(Error::invalid_field("channel", format!("template {id:?} has no {channel:?} variant")));
        }
        let context = serde_json::to_value(&context)
            .map_err(|error| Error::invalid_field("data", format!("the template data cannot be used: {error}")))?;
        let candidates = locale_candidates(locale);
        let render = |part: TemplatePart| -> Result<Option<String>> {
            let Some(locale) =
                candidates.iter().find(|candidate| entry.variants.contains(&((*candidate).clone(), part)))
            else {
                return Ok(None);
            };
            let name = template_name(id, locale.as_deref(), part);
            let template = self
                .env
                .get_template(&name)
                .map_err(|error| Error::internal(format!("template {name} is missing: {error}")))?;
            template.render(&context).map(Some).map_err(|error| {
                if error.kind() == TemplateErrorKind::UndefinedError {
                    let missing = missing_variable(&template.undeclared_variables(true), &context);
                    if let Some(missing) = missing {
                        return Error::invalid_field(
                            format!("data.{missing}"),
                            format!("template {id:?} needs the variable {missing:?}"),
                        );
                    }
                }
                Error::invalid_field(
                    "data",
                    format!("template {id:?} ({:?}) cannot be rendered: {error}", part.channel()),
                )
            })
        };
        let rendered = match channel {
            Channel::Email | Channel::Log => Rendered {
                subject: render(TemplatePart::EmailSubject)?.unwrap_or_default().trim().to_owned(),
                text: render(TemplatePart::EmailText)?.unwrap_or_default(),
                html: if channel == Channel::Email { render(TemplatePart::EmailHtml)? } else { None },
                sensitive: entry.sensitive,
            },
            Channel::Slack => Rendered {
                subject: String::new(),
                text: render(TemplatePart::Slack)?.unwrap_or_default().trim().to_owned(),
                html: None,
                sensitive: entry.sensitive,
            },
            Channel::Webhook => {
                let json = render(TemplatePart::Webhook)?.unwrap_or_default();
                let data: Value = serde_json::from_str(&json).map_err(|error| {
                    Error::invalid_field("template", format!("the webhook variant of {id:?} is not JSON: {error}"))
                })?;
                Rendered { subject: String::new(), text: data.to_string(), html: None, sensitive: entry.sensitive }
            }
        };
        Ok(rendered)
    }
}

/// `fr-CA` → [`fr-CA`, `fr`, default]; none → [default].
fn locale_candidates(locale: Option<&str>) -> Vec<Option<String>> {
    let mut candidates = Vec::new();
    if let Some(locale) = locale.map(str::trim).filter(|locale| !locale.is_empty()) {
        candidates.push(Some(locale.to_owned()));
        if let Some((language, _)) = locale.split_once(['-', '_']) {
            candidates.push(Some(language.to_owned()));
        }
    }
    candidates.push(None);
    candidates
}

/// The first variable (`name` or `build.project`) of `used` that `context` does not have, shortest first.
fn missing_variable(used: &std::collections::HashSet<String>, context: &Value) -> Option<String> {
    let mut used: Vec<&String> = used.iter().collect();
    used.sort_by_key(|path| (path.matches('.').count(), path.as_str()));
    let missing = |path: &&String| {
        let mut value = context;
        for segment in path.split('.') {
            match value.get(segment) {
                Some(inner) => value = inner,
                None => return true,
            }
        }
        false
    };
    used.into_iter().find(missing).cloned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user_context() -> Value {
        json!({
            "app_name": "Acme", "name": "Ada", "email": "ada@example.com", "public_url": "https://acme.test",
            "link": "https://acme.test/reset?token=abc", "valid_for": "30 minutes",
        })
    }

    #[test]
    fn every_built_in_template_renders_every_channel_it_offers() {
        let templates = Templates::built_in();
        let context = json!({
            "app_name": "Acme", "name": "Ada <admin>", "email": "ada@example.com", "public_url": "https://acme.test",
            "link": "https://acme.test/reset?token=abc", "valid_for": "30 minutes",
            "build_id": "b1", "project": "web & api", "ref": "main", "status": "failed", "duration_ms": 1200,
            "job_id": "j1", "kind": "email.welcome", "queue": "email", "error": "boom", "attempts": 3,
            "user_id": "u1", "endpoint_id": "e1", "reason": "410 Gone",
        });
        for info in templates.list() {
            assert!(!info.channels.is_empty(), "{}", info.id);
            for channel in info.channels {
                let rendered = templates.render_for(&info.id, channel, None, &context).expect("renders");
                assert!(!rendered.text.is_empty(), "{} {channel:?}", info.id);
            }
        }
        let reset = templates.render("password_reset", user_context()).expect("renders");
        assert_eq!(reset.subject, "Reset your Acme password");
        assert!(reset.text.contains("https://acme.test/reset?token=abc") && reset.sensitive);
        // HTML escaping writes `/` as `&#x2f;` inside the attribute, which browsers read back as `/`.
        let html = reset.html.expect("an HTML variant");
        assert!(html.contains("<a href=\"https:&#x2f;&#x2f;acme.test&#x2f;reset?token=abc\">"), "{html}");
    }

    #[test]
    fn escaping_follows_the_channel() {
        let templates = Templates::built_in();
        let context = json!({
            "app_name": "A&B", "public_url": "https://acme.test", "build_id": "b1", "project": "<web> & \"api\"",
            "ref": "main", "status": "failed", "duration_ms": 5,
        });
        let email = templates.render_for("build_finished", Channel::Email, None, &context).expect("renders");
        assert!(email.text.contains("<web> & \"api\""), "plain text is not escaped");
        assert!(email.html.expect("html").contains("&lt;web&gt; &amp; &quot;api&quot;"));
        let slack = templates.render_for("build_finished", Channel::Slack, None, &context).expect("renders");
        assert!(slack.text.contains("&lt;web&gt; &amp; \"api\"") && !slack.text.contains("<web>"));
        let webhook = templates.render_for("build_finished", Channel::Webhook, None, &context).expect("renders");
        let data: Value = serde_json::from_str(&webhook.text).expect("JSON");
        assert_eq!(data["project"], "<web> & \"api\"");
    }

    #[test]
    fn a_missing_variable_is_invalid_input_naming_it() {
        let templates = Templates::built_in();
        let error = templates
            .render("password_reset", json!({ "app_name": "x", "email": "e", "name": "n", "public_url": "u" }))
            .expect_err("link is missing");
        assert_eq!(error.kind(), crate::ErrorKind::InvalidInput);
        assert!(error.message().contains("\"link\"") || error.message().contains("\"valid_for\""), "{error}");
        assert_eq!(
            templates.render_for("nope", Channel::Email, None, json!({})).expect_err("x").kind(),
            crate::ErrorKind::NotFound
        );
        let error = templates.render_for("welcome", Channel::Webhook, None, user_context()).expect_err("no variant");
        assert_eq!(error.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn locales_fall_back_to_the_language_then_the_default_and_apps_override() {
        let mut templates = Templates::built_in();
        templates
            .insert(TemplateDefinition {
                id: "welcome".into(),
                locale: Some("fr".into()),
                email_subject: Some("Bienvenue sur {{ app_name }}".into()),
                email_text: Some("Bonjour {{ name }}".into()),
                ..TemplateDefinition::default()
            })
            .expect("valid");
        let french = templates.render_for("welcome", Channel::Email, Some("fr-CA"), user_context()).expect("renders");
        assert_eq!((french.subject.as_str(), french.text.as_str()), ("Bienvenue sur Acme", "Bonjour Ada"));
        // No French HTML: the default one is used.
        assert!(french.html.is_some());
        let german = templates.render_for("welcome", Channel::Email, Some("de"), user_context()).expect("renders");
        assert_eq!(german.subject, "Welcome to Acme");
        let bad = TemplateDefinition { id: "x".into(), email_text: Some("{% if %}".into()), ..Default::default() };
        assert!(templates.insert(bad).is_err() && !templates.contains("x"));
    }
}
