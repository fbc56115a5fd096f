//! Notify: the transactional mails (email verification, password reset,
//! order confirmation, refund), rendered from templates and sent by the
//! outbox consumer `notify.mail` through a [`Mailer`].
//!
//! Architecture invariant: notify reads nothing of other contexts' tables;
//! every fact a mail shows travels in the domain event.

pub mod mailer;
pub mod templates;

use entrada_primitives::SharedClock;
use entrada_storage::events::{DomainEvent, consumers};
use entrada_storage::outbox::{Consumer, Envelope, anyhow_lite};
use entrada_storage::{Db, Params, Run, Script, Tx};
use std::collections::HashSet;
use std::sync::Arc;

pub use mailer::{MailTransport, MailboxMailer, Mailer, OutgoingMail, SmtpConfig, SmtpMailer, SmtpTls, read_mailbox};

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

    fn delivers(&self) -> bool {
        true
    }

    /// Sends the mail, outside any transaction, unless the delivery log says
    /// it went out already (a redelivery after a committed send).
    async fn deliver(&self, db: &Db, env: &Envelope) -> Result<(), anyhow_lite::Error> {
        self.deliver_batch(db, std::slice::from_ref(env)).await.pop().unwrap_or(Ok(()))
    }

    /// Sends a batch's mails together: one read of the delivery log for
    /// the batch, then the mails not yet sent in one [`Mailer::send_all`].
    async fn deliver_batch(&self, db: &Db, events: &[Envelope]) -> Vec<Result<(), anyhow_lite::Error>> {
        let rendered: Vec<_> = events.iter().map(|env| templates::render(&env.event, &self.public_url)).collect();
        let sent = match self.already_sent(db, events, &rendered).await {
            Ok(sent) => sent,
            Err(e) => {
                let e = e.to_string();
                return events.iter().map(|_| Err(e.clone().into())).collect();
            }
        };
        let mut out: Vec<Result<(), anyhow_lite::Error>> = Vec::with_capacity(events.len());
        let mut to_send = Vec::new();
        let mut at = Vec::new();
        for (i, (env, mail)) in events.iter().zip(&rendered).enumerate() {
            out.push(Ok(()));
            if let Some(mail) = mail
                && !sent.contains(&(env.id, mail.template.to_owned()))
            {
                to_send.push(mail);
                at.push(i);
            }
        }
        for (i, result) in at.into_iter().zip(self.mailer.send_all(&to_send).await) {
            match result {
                Ok(()) => {
                    let template = rendered[i].as_ref().map_or("", |m| m.template);
                    tracing::info!(template, event_id = events[i].id, "mail sent");
                }
                Err(e) => out[i] = Err(e),
            }
        }
        out
    }

    fn plans(&self) -> bool {
        true
    }

    /// Records a batch of sent mails in the delivery log, as a script the
    /// dispatcher writes with the batch's queue rows' deletion (on SQLite).
    async fn plan_batch(&self, db: &Db, events: &[Envelope]) -> Result<Option<Script>, anyhow_lite::Error> {
        let mut script = db.script();
        for env in events {
            self.push_log(&mut script, env);
        }
        Ok(Some(script))
    }

    /// Records a sent mail in the delivery log.
    async fn handle(&self, tx: &mut Tx, env: &Envelope) -> Result<(), anyhow_lite::Error> {
        let mut script = Script::on(tx);
        self.push_log(&mut script, env);
        script.run(tx).await?;
        Ok(())
    }

    /// Records a batch of sent mails in one round trip.
    async fn handle_batch(&self, tx: &mut Tx, events: &[Envelope]) -> Result<(), anyhow_lite::Error> {
        let mut script = Script::on(tx);
        for env in events {
            self.push_log(&mut script, env);
        }
        script.run(tx).await?;
        Ok(())
    }
}

impl MailConsumer {
    /// The (event, template) pairs of `events` the delivery log has.
    async fn already_sent(
        &self,
        db: &Db,
        events: &[Envelope],
        rendered: &[Option<OutgoingMail>],
    ) -> Result<HashSet<(i64, String)>, sqlx::Error> {
        let ids: Vec<i64> = events.iter().zip(rendered).filter(|(_, m)| m.is_some()).map(|(e, _)| e.id).collect();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut p = Params::new(db.backend());
        let sql = format!("SELECT event_id, template FROM mail_deliveries WHERE event_id IN ({})", p.list(ids.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id);
        }
        let rows: Vec<(i64, String)> = q.all(&mut db.read()).await?;
        Ok(rows.into_iter().collect())
    }

    fn push_log(&self, script: &mut Script, env: &Envelope) {
        let Some(mail) = templates::render(&env.event, &self.public_url) else { return };
        script.push(
            sqlx::query(
                "INSERT INTO mail_deliveries (id, event_id, template, recipient, subject, transport, sent_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id, template) DO NOTHING",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(env.id)
            .bind(mail.template)
            .bind(mail.to)
            .bind(mail.subject)
            .bind(self.mailer.transport().as_str())
            .bind(self.clock.now_ms()),
        );
    }
}

/// Events this consumer renders, for documentation and tests.
pub fn handles(event: &DomainEvent) -> bool {
    templates::render(event, "").is_some()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use entrada_primitives::ids::{EventId, OrderId, UserId};
    use mailer::MailError;
    use std::sync::Mutex;

    /// Records what it is asked to send.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Mailer for Recorder {
        fn transport(&self) -> MailTransport {
            MailTransport::Mailbox
        }
        async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
            self.0.lock().unwrap().push(mail.to.clone());
            Ok(())
        }
    }

    fn paid(id: i64, to: &str) -> Envelope {
        let event = DomainEvent::OrderPaid {
            order_id: OrderId::new(),
            event_id: EventId::new(),
            buyer: UserId::new(),
            buyer_email: to.into(),
            event_name: "Noche".into(),
            total_minor: 4500,
            currency: "EUR".into(),
            tickets: vec![],
        };
        Envelope { id, occurred_at_ms: 0, event }
    }

    /// A batch redelivered after a crash between sending and recording
    /// sends only what the delivery log does not have; events without a
    /// mail are delivered as nothing.
    #[tokio::test]
    async fn a_redelivered_batch_sends_only_what_the_log_lacks() {
        let t = entrada_storage::testing::fresh().await;
        let recorder = Arc::new(Recorder::default());
        let clock: SharedClock = Arc::new(entrada_primitives::SystemClock);
        let consumer = MailConsumer::new(recorder.clone(), clock, "http://x".into());
        let sent_before = paid(1, "ana@example.com");
        let mut script = t.db.script();
        consumer.push_log(&mut script, &sent_before);
        t.db.write(script).await.unwrap();

        let batch = [
            sent_before,
            Envelope { id: 2, occurred_at_ms: 0, event: DomainEvent::OrderExpired { order_id: OrderId::new() } },
            paid(3, "bea@example.com"),
        ];
        let results = consumer.deliver_batch(&t.db, &batch).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(*recorder.0.lock().unwrap(), ["bea@example.com"]);
    }
}
