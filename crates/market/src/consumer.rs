//! Payment outcomes for resale purchases (`resale:<uuid>` references),
//! inside the dispatcher's transaction. Orders' references (`order:`) are
//! ticketing's and are ignored here, as ticketing ignores ours. The same
//! consumer takes tickets out of the market: an export withdraws the
//! ticket's listing and voids its gift offer; a cancellation does the same
//! and refunds a holder who bought the ticket on the resale market.
//!
//! Idempotent: the purchase moves by conditional status updates and the
//! settlement ledger transaction is unique per payment, so a replayed event
//! finds nothing to do.

use crate::domain::parse_purchase_reference;
use crate::service::Market;
use entrada_storage::events::{DomainEvent, consumers};
use entrada_storage::outbox::{Consumer, Envelope, anyhow_lite};
use entrada_storage::{Db, Script, Tx};
use std::sync::Arc;

/// The `market.payments` consumer (payment outcomes, exports, cancellations).
pub struct ResalePayments {
    svc: Market,
}

#[async_trait::async_trait]
impl Consumer for ResalePayments {
    fn name(&self) -> &'static str {
        consumers::MARKET_PAYMENTS
    }

    fn plans(&self) -> bool {
        true
    }

    /// A batch of payment outcomes for orders (the usual batch during a
    /// primary sale) is none of the market's business: nothing to write
    /// beyond the queue rows.
    async fn plan_batch(&self, db: &Db, events: &[Envelope]) -> Result<Option<Script>, anyhow_lite::Error> {
        let foreign = events.iter().all(|env| match &env.event {
            DomainEvent::PaymentSucceeded { reference, .. } | DomainEvent::PaymentFailed { reference, .. } => {
                parse_purchase_reference(reference).is_none()
            }
            _ => false,
        });
        Ok(foreign.then(|| db.script()))
    }

    async fn handle(&self, tx: &mut Tx, env: &Envelope) -> Result<(), anyhow_lite::Error> {
        // The event's own time: a replay records the same instants.
        let now = env.occurred_at_ms;
        let result = match &env.event {
            DomainEvent::PaymentSucceeded { payment_id, reference, amount_minor, currency } => {
                match parse_purchase_reference(reference) {
                    Some(p) => self.svc.settle_payment(tx, now, *payment_id, p, *amount_minor, currency).await,
                    None => Ok(()),
                }
            }
            DomainEvent::PaymentFailed { reference, reason, .. } => match parse_purchase_reference(reference) {
                Some(p) => self.svc.payment_failed(tx, now, p, reason).await,
                None => Ok(()),
            },
            DomainEvent::TicketExported { ticket_id, .. } => self.svc.on_exported(tx, now, *ticket_id).await,
            DomainEvent::TicketsCancelled { tickets, .. } => self.svc.on_cancelled(tx, now, tickets).await,
            _ => Ok(()),
        };
        result.map_err(|e| Box::new(e) as anyhow_lite::Error)
    }
}

impl Market {
    /// The consumer of payment outcomes for the outbox dispatcher.
    pub fn consumer(&self) -> Arc<dyn Consumer> {
        Arc::new(ResalePayments { svc: self.clone() })
    }
}
