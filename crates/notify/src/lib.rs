//! Notify: the transactional mails (email verification, password reset,
//! order confirmation, refund), rendered from templates and sent by the
//! outbox consumer `notify.mail` through a [`Mailer`].
//!
//! Architecture invariant: notify reads nothing of other contexts' tables;
//! every fact a mail shows travels in the domain event.

pub mod mailer;
pub mod templates;

use entrada_primitives::SharedClock;
use entrada_storage::Tx;
use entrada_storage::events::{DomainEvent, consumers};
use entrada_storage::outbox::{Consumer, Envelope, anyhow_lite};
use std::sync::Arc;

pub use mailer::{MailTransport, MailboxMailer, Mailer, OutgoingMail, SmtpConfig, SmtpMailer, SmtpTls};

/// The mail consumer.
pub struct MailConsumer {
    mailer: Arc<dyn Mailer>,
    clock: SharedClock,
    /// Base URL of the web apps, for links in mails.
    public_url: String,
}

impl MailConsumer {
    pub fn new(mailer: Arc<dyn Mailer>, clock: SharedClock, public_url: String) -> Arc<Self> {
        Arc::new(Self { mailer, clock, public_url })
    }
}

#[async_trait::async_trait]
impl Consumer for MailConsumer {
    fn name(&self) -> &'static str {
        consumers::NOTIFY_MAIL
    }

    async fn handle(&self, tx: &mut Tx, env: &Envelope) -> Result<(), anyhow_lite::Error> {
        let Some(mail) = templates::render(&env.event, &self.public_url) else {
            return Ok(());
        };
        // The log row is written first, in the dispatcher's transaction: a
        // redelivery after a committed send finds it and sends nothing; a
        // crash between send and commit sends twice (at least once).
        let inserted = sqlx::query(
            "INSERT INTO mail_deliveries (id, event_id, template, recipient, subject, transport, sent_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id, template) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(env.id)
        .bind(mail.template)
        .bind(&mail.to)
        .bind(&mail.subject)
        .bind(self.mailer.transport().as_str())
        .bind(self.clock.now_ms())
        .execute(&mut **tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(());
        }
        self.mailer.send(&mail).await?;
        tracing::info!(template = mail.template, event_id = env.id, "mail sent");
        Ok(())
    }
}

/// Events this consumer renders, for documentation and tests.
pub fn handles(event: &DomainEvent) -> bool {
    templates::render(event, "").is_some()
}
