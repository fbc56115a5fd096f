//! Mail transports: a mailbox folder (the embedded default: one `.eml` file
//! per mail in the data directory, readable by a person and by tests) and
//! SMTP through lettre (a relay in production, a real local server in tests).

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use entrada_primitives::Secret;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct OutgoingMail {
    /// Stable template name, recorded in the delivery log.
    pub template: &'static str,
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTransport {
    Mailbox,
    Smtp,
}

impl MailTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mailbox => "mailbox",
            Self::Smtp => "smtp",
        }
    }
}

pub type MailError = Box<dyn std::error::Error + Send + Sync>;

#[async_trait::async_trait]
pub trait Mailer: Send + Sync + 'static {
    fn transport(&self) -> MailTransport;
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError>;
}

fn build_message(from: &str, mail: &OutgoingMail) -> Result<Message, MailError> {
    Ok(Message::builder()
        .from(from.parse::<Mailbox>()?)
        .to(mail.to.parse::<Mailbox>()?)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())?)
}

/// Writes each mail as an RFC 5322 file `<time>-<template>-<id>.eml`.
pub struct MailboxMailer {
    dir: PathBuf,
    from: String,
}

impl MailboxMailer {
    pub fn new(dir: PathBuf, from: String) -> Self {
        Self { dir, from }
    }
}

#[async_trait::async_trait]
impl Mailer for MailboxMailer {
    fn transport(&self) -> MailTransport {
        MailTransport::Mailbox
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let msg = build_message(&self.from, mail)?;
        tokio::fs::create_dir_all(&self.dir).await?;
        let name = format!("{}-{}.eml", mail.template, uuid::Uuid::now_v7());
        // Write then rename, so a reader never sees half a mail.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        tokio::fs::write(&tmp, msg.formatted()).await?;
        tokio::fs::rename(&tmp, self.dir.join(name)).await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP: only for a relay on the same host or in tests.
    None,
    /// STARTTLS on the submission port (587), the usual relay setting.
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
}

impl SmtpMailer {
    pub fn new(cfg: &SmtpConfig, from: String) -> Result<Self, MailError> {
        let mut b = match cfg.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host)?,
        }
        .port(cfg.port);
        if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(u.clone(), p.expose().clone()));
        }
        Ok(Self { transport: b.build(), from })
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    fn transport(&self) -> MailTransport {
        MailTransport::Smtp
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let msg = build_message(&self.from, mail)?;
        self.transport.send(msg).await?;
        Ok(())
    }
}
