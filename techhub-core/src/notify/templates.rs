//! Message templates (minijinja): a subject and a plain-text body per template.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde::Serialize;

use crate::{Error, Result};

/// The built-in templates: name, subject template's name, subject, body, and whether the rendered body
/// carries a one-time secret.
const BUILT_IN: &[(&str, &str, &str, &str, bool)] = &[
    (
        "welcome",
        "welcome.subject",
        "Welcome to {{ app_name }}",
        "Hello {{ name or email }},\n\nyour {{ app_name }} account for {{ email }} is ready.\n\nSign in at {{ public_url }}\n",
        false,
    ),
    (
        "verify_email",
        "verify_email.subject",
        "Confirm your email address for {{ app_name }}",
        "Hello {{ name or email }},\n\nplease confirm that {{ email }} is your address by opening this link \
         within {{ valid_for }}:\n\n{{ link }}\n\nIf you did not create an account, ignore this message.\n",
        true,
    ),
    (
        "password_reset",
        "password_reset.subject",
        "Reset your {{ app_name }} password",
        "Hello {{ name or email }},\n\nsomeone asked to reset the password of {{ email }}. To choose a new one, \
         open this link within {{ valid_for }}:\n\n{{ link }}\n\nIf it was not you, ignore this message: your \
         password stays as it is.\n",
        true,
    ),
    (
        "password_changed",
        "password_changed.subject",
        "Your {{ app_name }} password was changed",
        "Hello {{ name or email }},\n\nthe password of {{ email }} was just changed and your other sessions were \
         signed out. If this was not you, reset your password at {{ public_url }} at once.\n",
        false,
    ),
];

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// Whether the body carries a one-time secret (a reset or verification link): such bodies are delivered but
    /// never stored in the notification record.
    pub sensitive: bool,
}

/// The template set.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    sensitive: BTreeMap<&'static str, bool>,
    subjects: BTreeMap<&'static str, &'static str>,
}

impl Templates {
    /// The built-in templates: `welcome`, `verify_email`, `password_reset`, `password_changed`.
    pub fn built_in() -> Self {
        let mut env = Environment::new();
        // Plain-text mail: no HTML escaping, and a missing variable is an error rather than an empty string.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut sensitive = BTreeMap::new();
        let mut subjects = BTreeMap::new();
        for (name, subject_name, subject, body, secret) in BUILT_IN {
            // Built-in templates are constants checked by the tests below, so adding them cannot fail.
            let _ = env.add_template(subject_name, subject);
            let _ = env.add_template(name, body);
            sensitive.insert(*name, *secret);
            subjects.insert(*name, *subject_name);
        }
        Self { env, sensitive, subjects }
    }

    /// The template names.
    pub fn names(&self) -> Vec<&'static str> {
        self.sensitive.keys().copied().collect()
    }

    /// Renders template `name` with `context`. An unknown template or a missing variable is `InvalidInput`.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<Rendered> {
        let (Some(&sensitive), Some(&subject)) = (self.sensitive.get(name), self.subjects.get(name)) else {
            return Err(Error::invalid_field("template", format!("no template is called {name:?}")));
        };
        let context = minijinja::Value::from_serialize(&context);
        let render = |template: &str| {
            self.env
                .get_template(template)
                .and_then(|template| template.render(&context))
                .map_err(|error| Error::invalid_field("data", format!("template {name:?} cannot be rendered: {error}")))
        };
        Ok(Rendered { subject: render(subject)?, text: render(name)?, sensitive })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_built_in_template_renders_with_its_documented_variables() {
        let templates = Templates::built_in();
        let context = json!({
            "app_name": "Acme", "name": "Ada", "email": "ada@example.com", "public_url": "https://acme.test",
            "link": "https://acme.test/reset?token=abc", "valid_for": "30 minutes",
        });
        for name in templates.names() {
            let rendered = templates.render(name, &context).expect("renders");
            assert!(!rendered.subject.is_empty() && rendered.text.contains("ada@example.com"), "{name}");
        }
        let reset = templates.render("password_reset", &context).expect("renders");
        assert_eq!(reset.subject, "Reset your Acme password");
        assert!(reset.text.contains("https://acme.test/reset?token=abc") && reset.sensitive);
        assert!(!templates.render("welcome", &context).expect("renders").sensitive);
    }

    #[test]
    fn unknown_templates_and_missing_variables_are_invalid_input() {
        let templates = Templates::built_in();
        assert!(templates.render("nope", json!({})).is_err());
        assert!(templates.render("password_reset", json!({ "app_name": "x", "email": "e" })).is_err());
        // Plain text is not HTML-escaped.
        let rendered =
            templates.render("welcome", json!({ "app_name": "A&B", "name": "<Ada>", "email": "e", "public_url": "u" }));
        assert!(rendered.expect("renders").text.contains("<Ada>"));
    }
}
