//! Mail transports: a mailbox folder (the embedded default: one `.eml` file
//! per mail in the data directory, readable by a person and by tests) and
//! SMTP through lettre (a relay in production, a real local server in tests).

use entrada_primitives::Secret;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
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
        .body(eight_bit(&mail.body)?)?)
}

/// The body as 8bit MIME, not quoted-printable: mailbox files stay readable
/// and links are never split by soft line breaks. lettre only picks 8bit for
/// lines of at most 76 characters; RFC 5322 allows 998, which links need.
fn eight_bit(text: &str) -> Result<Body, MailError> {
    if text.contains('\0') || text.lines().any(|l| l.len() > 998) {
        return Err("mail body has a NUL byte or a line over 998 bytes".into());
    }
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    Ok(Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::EightBit))
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
        let name = format!("{}-{}.eml", mail.template, uuid::Uuid::now_v7());
        let dir = self.dir.clone();
        // One trip to the blocking pool for the whole file. Write then
        // rename, so a reader never sees half a mail.
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, msg.formatted())?;
            std::fs::rename(&tmp, dir.join(name))
        })
        .await
        .map_err(std::io::Error::other)??;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The mailbox transport writes one readable RFC 5322 file per mail,
    /// with links intact (no quoted-printable soft breaks).
    #[tokio::test]
    async fn mailbox_writes_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let m = MailboxMailer::new(dir.path().join("mailbox"), "Entrada <no-reply@entrada.local>".into());
        let long_link = format!("http://127.0.0.1:8080/verify-email?token={}", "a".repeat(43));
        m.send(&OutgoingMail {
            template: "email_verification",
            to: "ana@example.com".into(),
            subject: "Confirma tu correo · ñ".into(),
            body: format!("Hola, confirma:\n{long_link}\ncontraseña\n"),
        })
        .await
        .unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("mailbox")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("To: ana@example.com"), "{text}");
        assert!(text.contains(&long_link), "{text}");
        assert!(text.contains("contraseña"), "{text}");
    }
}
