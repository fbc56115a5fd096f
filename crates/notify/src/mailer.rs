//! Mail transports: a mailbox folder (the embedded default: one mbox file
//! a day in the data directory, readable by a person, a mail client and
//! tests) and SMTP through lettre (a relay in production, a real local
//! server in tests).

use entrada_primitives::{Secret, SharedClock};
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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

    /// Sends several mails, one result per mail in order; by default one
    /// [`Mailer::send`] after another.
    async fn send_all(&self, mails: &[&OutgoingMail]) -> Vec<Result<(), MailError>> {
        let mut out = Vec::with_capacity(mails.len());
        for mail in mails {
            out.push(self.send(mail).await);
        }
        out
    }
}

/// The header naming a mail's template (`order_confirmation`, …), so a
/// person or a test reading the mailbox can tell the mails apart.
pub const TEMPLATE_HEADER: &str = "X-Entrada-Template";

fn build_message(from: &str, mail: &OutgoingMail) -> Result<Message, MailError> {
    let mut msg = Message::builder()
        .from(from.parse::<Mailbox>()?)
        .to(mail.to.parse::<Mailbox>()?)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(eight_bit(&mail.body)?)?;
    msg.headers_mut()
        .insert_raw(HeaderValue::new(HeaderName::new_from_ascii_str(TEMPLATE_HEADER), mail.template.to_owned()));
    Ok(msg)
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

/// Appends each mail to the day's mailbox file, `<dir>/<YYYY-MM-DD>.mbox`
/// (UTC), in the mboxrd format that mail clients open (`mutt -f`,
/// Thunderbird's import): a `From ` line before each message, a blank line
/// after it, and a body line that starts with `From ` (after any `>`)
/// quoted with one more `>`.
///
/// One file a day, not one per mail: creating a file costs a directory
/// entry and an inode, which on a busy sale (a confirmation per order) cost
/// more than the rest of the mail's delivery; and on ext4 each inode freed
/// in the last minutes (a test run's deleted mailbox) makes the next one
/// slower to allocate. Appends are serialized within the process and each
/// batch of messages ([`Mailer::send_all`]) is one `write` on a file opened
/// for appending.
pub struct MailboxMailer {
    dir: PathBuf,
    from: String,
    sender: String,
    clock: SharedClock,
    append: Arc<Mutex<()>>,
}

impl MailboxMailer {
    /// `from` is the `From:` header (`Entrada <no-reply@entrada.local>`);
    /// its address is also the envelope sender on each message's `From `
    /// line.
    pub fn new(dir: PathBuf, from: String, clock: SharedClock) -> Self {
        let sender =
            from.parse::<Mailbox>().map(|m| m.email.to_string()).unwrap_or_else(|_| "MAILER-DAEMON".to_owned());
        Self { dir, from, sender, clock, append: Arc::new(Mutex::new(())) }
    }
}

/// `msg` (RFC 5322, CRLF line ends) as one mboxrd entry with LF line ends.
fn mbox_entry(sender: &str, at: time::OffsetDateTime, msg: &[u8]) -> Vec<u8> {
    const ASCTIME: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    let when = at.format(ASCTIME).unwrap_or_default();
    let mut out = Vec::with_capacity(msg.len() + 128);
    out.extend_from_slice(format!("From {sender} {when}\n").as_bytes());
    let text = msg.strip_suffix(b"\r\n").unwrap_or(msg);
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().position(|b| *b != b'>').is_some_and(|i| line[i..].starts_with(b"From ")) {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[async_trait::async_trait]
impl Mailer for MailboxMailer {
    fn transport(&self) -> MailTransport {
        MailTransport::Mailbox
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        self.send_all(&[mail]).await.pop().unwrap_or(Ok(()))
    }

    /// Appends the mails that build to the day's file in one write, made
    /// in one trip to the blocking pool.
    async fn send_all(&self, mails: &[&OutgoingMail]) -> Vec<Result<(), MailError>> {
        let now = self.clock.now().to_offset(time::UtcOffset::UTC);
        let mut out: Vec<Result<(), MailError>> = Vec::with_capacity(mails.len());
        let mut entries = Vec::new();
        for mail in mails {
            match build_message(&self.from, mail) {
                Ok(msg) => {
                    entries.extend_from_slice(&mbox_entry(&self.sender, now, &msg.formatted()));
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if entries.is_empty() {
            return out;
        }
        let file = self.dir.join(format!("{}.mbox", now.date()));
        let (dir, append) = (self.dir.clone(), self.append.clone());
        let written = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = append.lock().unwrap_or_else(|p| p.into_inner());
            std::fs::create_dir_all(&dir)?;
            std::fs::OpenOptions::new().create(true).append(true).open(&file)?.write_all(&entries)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        if let Err(e) = written {
            let e = e.to_string();
            for r in out.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone().into());
            }
        }
        out
    }
}

/// The messages of a mailbox folder written by [`MailboxMailer`], oldest
/// first, each as (template, text with the `From ` line removed and quoted
/// `From ` lines restored).
pub fn read_mailbox(dir: &std::path::Path) -> std::io::Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "mbox")).collect()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let mut current: Option<String> = None;
        for line in text.split_inclusive('\n') {
            if line.starts_with("From ") {
                out.extend(current.take());
                current = Some(String::new());
                continue;
            }
            let Some(msg) = current.as_mut() else { continue };
            match line.find(|c| c != '>') {
                Some(i) if i > 0 && line[i..].starts_with("From ") => msg.push_str(&line[1..]),
                _ => msg.push_str(line),
            }
        }
        out.extend(current);
    }
    Ok(out
        .into_iter()
        .map(|m| {
            let template = m
                .lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(TEMPLATE_HEADER).and_then(|r| r.strip_prefix(':')))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default();
            (template, m)
        })
        .collect())
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

    struct At(time::OffsetDateTime);
    impl entrada_primitives::Clock for At {
        fn now(&self) -> time::OffsetDateTime {
            self.0
        }
    }

    fn mailer(dir: &std::path::Path) -> MailboxMailer {
        let at = time::macros::datetime!(2026-11-24 19:05:09 UTC);
        MailboxMailer::new(dir.join("mailbox"), "Entrada <no-reply@entrada.local>".into(), Arc::new(At(at)))
    }

    /// The mailbox transport appends readable RFC 5322 messages to the
    /// day's mbox file, with links intact (no quoted-printable soft breaks).
    #[tokio::test]
    async fn mailbox_appends_readable_messages_to_the_days_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = mailer(dir.path());
        let long_link = format!("http://127.0.0.1:8080/verify-email?token={}", "a".repeat(43));
        m.send(&OutgoingMail {
            template: "email_verification",
            to: "ana@example.com".into(),
            subject: "Confirma tu correo · ñ".into(),
            body: format!("Hola, confirma:\n{long_link}\ncontraseña\n"),
        })
        .await
        .unwrap();
        m.send(&OutgoingMail {
            template: "order_confirmation",
            to: "bea@example.com".into(),
            subject: "Your order".into(),
            body: "Thanks.\n".into(),
        })
        .await
        .unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("mailbox")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files, vec![dir.path().join("mailbox").join("2026-11-24.mbox")]);
        let raw = std::fs::read_to_string(&files[0]).unwrap();
        assert!(raw.starts_with("From no-reply@entrada.local Tue Nov 24 19:05:09 2026\n"), "{raw}");
        assert!(!raw.contains('\r'), "mbox lines end in LF: {raw:?}");
        assert_eq!(raw.lines().filter(|l| l.starts_with("From ")).count(), 2, "{raw}");

        let mails = read_mailbox(&dir.path().join("mailbox")).unwrap();
        let templates: Vec<_> = mails.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(templates, ["email_verification", "order_confirmation"]);
        let text = &mails[0].1;
        assert!(text.contains("To: ana@example.com"), "{text}");
        assert!(text.contains(&long_link), "{text}");
        assert!(text.contains("contraseña"), "{text}");
        assert!(mails[1].1.contains("To: bea@example.com"), "{}", mails[1].1);
    }

    /// A body line that would read as the start of the next message is
    /// quoted in the file and restored when read back.
    #[tokio::test]
    async fn from_lines_in_a_body_are_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let m = mailer(dir.path());
        let body = "Hello\nFrom the box office: doors at 8.\n>From a quote\n";
        m.send(&OutgoingMail { template: "t", to: "ana@example.com".into(), subject: "s".into(), body: body.into() })
            .await
            .unwrap();
        let raw = std::fs::read_to_string(dir.path().join("mailbox").join("2026-11-24.mbox")).unwrap();
        assert!(raw.contains("\n>From the box office: doors at 8.\n>>From a quote\n"), "{raw}");
        let mails = read_mailbox(&dir.path().join("mailbox")).unwrap();
        assert_eq!(mails.len(), 1);
        assert!(mails[0].1.contains("\nFrom the box office: doors at 8.\n>From a quote\n"), "{}", mails[0].1);
    }

    /// A batch is appended in order; a mail that cannot be built (a bad
    /// address) fails alone and the others are written.
    #[tokio::test]
    async fn a_batch_is_appended_and_a_bad_mail_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let m = mailer(dir.path());
        let mail =
            |to: &str, template| OutgoingMail { template, to: to.into(), subject: "s".into(), body: "b\n".into() };
        let (a, bad, c) =
            (mail("ana@example.com", "first"), mail("not an address", "bad"), mail("cy@example.com", "third"));
        let results = m.send_all(&[&a, &bad, &c]).await;
        assert_eq!(results.iter().map(Result::is_ok).collect::<Vec<_>>(), [true, false, true]);
        let mails = read_mailbox(&dir.path().join("mailbox")).unwrap();
        let templates: Vec<_> = mails.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(templates, ["first", "third"]);
    }

    /// A batch whose file cannot be written fails as a whole.
    #[tokio::test]
    async fn a_batch_that_cannot_be_written_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mailbox"), "a file where the folder should be").unwrap();
        let m = mailer(dir.path());
        let a = OutgoingMail { template: "t", to: "ana@example.com".into(), subject: "s".into(), body: "b\n".into() };
        let results = m.send_all(&[&a, &a]).await;
        assert!(results.iter().all(Result::is_err), "{results:?}");
    }

    /// An empty or missing mailbox folder reads as no mail.
    #[test]
    fn a_missing_mailbox_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_mailbox(&dir.path().join("mailbox")).unwrap().is_empty());
    }
}
