//! Email over SMTP with lettre (tokio, rustls).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Message, Notifier, NotifyError};
use crate::{Error, Result};

/// Delivers email through an SMTP server.
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpNotifier {
    /// A notifier for the server at `url` (lettre's form: `smtp://host:25` plain, `smtp://host:587?tls=required`
    /// STARTTLS, `smtps://user:pass@host` implicit TLS) sending as `from` (`"App <no-reply@example.com>"`).
    pub fn from_url(url: &str, from: &str) -> Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            // The URL may hold a password: never echo it back.
            .map_err(|_| Error::invalid_field("smtp_url", "not a valid SMTP URL (smtp://host:port, smtps://host)"))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|error| Error::invalid_field("email_from", format!("not a valid sender address: {error}")))?;
        Ok(Self { transport, from })
    }
}

impl fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifier").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        let to = message
            .to
            .parse::<Mailbox>()
            .map_err(|error| NotifyError::Permanent(format!("invalid recipient address: {error}")))?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&message.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(message.text.clone())
            .map_err(|error| NotifyError::Permanent(format!("the message cannot be built: {error}")))?;
        self.transport.send(email).await.map(drop).map_err(|error| {
            if error.is_permanent() {
                NotifyError::Permanent(error.to_string())
            } else {
                NotifyError::Transient(error.to_string())
            }
        })
    }
}
