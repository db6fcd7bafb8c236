//! The built-in templates: the account emails (welcome, verify email, password reset, password changed) and
//! the event messages (build finished, job failed, user registered, endpoint disabled).

use super::templates::TemplateDefinition;

/// Wraps an HTML email body in a minimal, inline-styled document.
fn html(body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif; line-height: 1.5\">\n{body}\n\
         <p style=\"color: #666; font-size: 12px\">{{{{ app_name }}}}</p>\n</body></html>\n"
    )
}

fn definition(id: &str, description: &str, sensitive: bool) -> TemplateDefinition {
    TemplateDefinition {
        id: id.to_owned(),
        description: description.to_owned(),
        sensitive,
        ..TemplateDefinition::default()
    }
}

/// Every built-in template.
pub(super) fn definitions() -> Vec<TemplateDefinition> {
    vec![
        TemplateDefinition {
            email_subject: Some("Welcome to {{ app_name }}".into()),
            email_text: Some(
                "Hello {{ name or email }},\n\nyour {{ app_name }} account for {{ email }} is ready.\n\n\
                 Sign in at {{ public_url }}\n"
                    .into(),
            ),
            email_html: Some(html(
                "<p>Hello {{ name or email }},</p>\n<p>your {{ app_name }} account for {{ email }} is ready.</p>\n\
                 <p><a href=\"{{ public_url }}\">Sign in</a></p>",
            )),
            ..definition("welcome", "Welcomes a new user (name, email).", false)
        },
        TemplateDefinition {
            email_subject: Some("Confirm your email address for {{ app_name }}".into()),
            email_text: Some(
                "Hello {{ name or email }},\n\nplease confirm that {{ email }} is your address by opening this link \
                 within {{ valid_for }}:\n\n{{ link }}\n\nIf you did not create an account, ignore this message.\n"
                    .into(),
            ),
            email_html: Some(html(
                "<p>Hello {{ name or email }},</p>\n<p>please confirm that {{ email }} is your address within \
                 {{ valid_for }}:</p>\n<p><a href=\"{{ link }}\">Confirm my address</a></p>\n\
                 <p>If you did not create an account, ignore this message.</p>",
            )),
            ..definition("verify_email", "Asks a user to confirm an address (name, email, link, valid_for).", true)
        },
        TemplateDefinition {
            email_subject: Some("Reset your {{ app_name }} password".into()),
            email_text: Some(
                "Hello {{ name or email }},\n\nsomeone asked to reset the password of {{ email }}. To choose a new \
                 one, open this link within {{ valid_for }}:\n\n{{ link }}\n\nIf it was not you, ignore this \
                 message: your password stays as it is.\n"
                    .into(),
            ),
            email_html: Some(html(
                "<p>Hello {{ name or email }},</p>\n<p>someone asked to reset the password of {{ email }}. To \
                 choose a new one, open this link within {{ valid_for }}:</p>\n\
                 <p><a href=\"{{ link }}\">Choose a new password</a></p>\n\
                 <p>If it was not you, ignore this message: your password stays as it is.</p>",
            )),
            ..definition("password_reset", "A password-reset link (name, email, link, valid_for).", true)
        },
        TemplateDefinition {
            email_subject: Some("Your {{ app_name }} password was changed".into()),
            email_text: Some(
                "Hello {{ name or email }},\n\nthe password of {{ email }} was just changed and your other sessions \
                 were signed out. If this was not you, reset your password at {{ public_url }} at once.\n"
                    .into(),
            ),
            email_html: Some(html(
                "<p>Hello {{ name or email }},</p>\n<p>the password of {{ email }} was just changed and your other \
                 sessions were signed out.</p>\n<p>If this was not you, \
                 <a href=\"{{ public_url }}\">reset your password</a> at once.</p>",
            )),
            ..definition("password_changed", "Tells a user their password changed (name, email).", false)
        },
        TemplateDefinition {
            email_subject: Some("[{{ project }}] build {{ status }} on {{ ref }}".into()),
            email_text: Some(
                "Build {{ build_id }} of {{ project }} on {{ ref }} finished: {{ status }} \
                 ({{ duration_ms }} ms).\n\n{{ public_url }}\n"
                    .into(),
            ),
            email_html: Some(html(
                "<p>Build <code>{{ build_id }}</code> of <strong>{{ project }}</strong> on {{ ref }} finished: \
                 <strong>{{ status }}</strong> ({{ duration_ms }} ms).</p>",
            )),
            slack: Some(
                "*{{ project }}* build `{{ build_id }}` on {{ ref }}: *{{ status }}* ({{ duration_ms }} ms)".into(),
            ),
            webhook: Some(
                "{\"build_id\": {{ build_id }}, \"project\": {{ project }}, \"ref\": {{ ref }}, \
                 \"status\": {{ status }}, \"duration_ms\": {{ duration_ms }}}"
                    .into(),
            ),
            ..definition(
                "build_finished",
                "A build succeeded, failed or was cancelled (build_id, project, ref, status, duration_ms).",
                false,
            )
        },
        TemplateDefinition {
            email_subject: Some("Job {{ kind }} failed".into()),
            email_text: Some(
                "Job {{ job_id }} ({{ kind }}, queue {{ queue }}) failed after {{ attempts }} attempts: \
                 {{ error }}\n"
                    .into(),
            ),
            email_html: Some(html(
                "<p>Job <code>{{ job_id }}</code> ({{ kind }}, queue {{ queue }}) failed after {{ attempts }} \
                 attempts:</p>\n<pre>{{ error }}</pre>",
            )),
            slack: Some("Job `{{ kind }}` ({{ job_id }}) failed after {{ attempts }} attempts: {{ error }}".into()),
            webhook: Some(
                "{\"job_id\": {{ job_id }}, \"kind\": {{ kind }}, \"queue\": {{ queue }}, \
                 \"attempts\": {{ attempts }}, \"error\": {{ error }}}"
                    .into(),
            ),
            ..definition("job_failed", "A job failed for good (job_id, kind, queue, attempts, error).", false)
        },
        TemplateDefinition {
            email_subject: Some("New {{ app_name }} user: {{ email }}".into()),
            email_text: Some("{{ email }} registered (user {{ user_id }}).\n".into()),
            slack: Some("New user *{{ email }}* registered".into()),
            webhook: Some("{\"user_id\": {{ user_id }}, \"email\": {{ email }}}".into()),
            ..definition("user_registered", "A user registered (user_id, email).", false)
        },
        TemplateDefinition {
            email_subject: Some("Notification endpoint disabled".into()),
            email_text: Some("Endpoint {{ endpoint_id }} was disabled: {{ reason }}\n".into()),
            slack: Some("Notification endpoint `{{ endpoint_id }}` was disabled: {{ reason }}".into()),
            webhook: Some("{\"endpoint_id\": {{ endpoint_id }}, \"reason\": {{ reason }}}".into()),
            ..definition("endpoint_disabled", "An endpoint was disabled (endpoint_id, reason).", false)
        },
    ]
}
