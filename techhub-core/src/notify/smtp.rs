//! Email over SMTP with lettre (tokio, rustls).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
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
        let transport = transport_builder(url)?.timeout(Some(Duration::from_secs(30))).build();
        Ok(Self { transport, from: sender(from)? })
    }

    /// Checks an SMTP URL as [`SmtpNotifier::from_url`] would, without building a transport (which needs a
    /// running Tokio runtime): for settings checked before anything starts.
    pub fn check_url(url: &str) -> Result<()> {
        transport_builder(url).map(drop)
    }

    /// Checks a sender address (`ops@example.com` or `TechHub <ops@example.com>`) as [`SmtpNotifier::from_url`]
    /// would, without building a transport: for settings checked before anything starts.
    pub fn check_sender(from: &str) -> Result<()> {
        sender(from).map(drop)
    }
}

fn transport_builder(url: &str) -> Result<AsyncSmtpTransportBuilder> {
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        // The URL may hold a password: never echo it back.
        .map_err(|_| Error::invalid_field("smtp_url", "not a valid SMTP URL (smtp://host:port, smtps://host)"))
}

fn sender(from: &str) -> Result<Mailbox> {
    from.parse::<Mailbox>()
        .map_err(|error| Error::invalid_field("email_from", format!("not a valid sender address: {error}")))
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
        let builder = lettre::Message::builder().from(self.from.clone()).to(to).subject(&message.subject);
        // With an HTML body: multipart/alternative, plain text first (the fallback), HTML last (preferred).
        let email = match &message.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(message.text.clone(), html.clone())),
            None => builder.singlepart(SinglePart::plain(message.text.clone())),
        }
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
