//! The refund-request consumer: ticketing asks for money back by event, and
//! payments records the request in the consumer's transaction. The provider
//! call happens afterwards in the background loop, outside any transaction,
//! because the dispatcher's transaction holds the (single, on SQLite) writer
//! connection and a provider call inside it could stall every writer.

use crate::service::Payments;
use entrada_storage::events::consumers::PAYMENTS_REFUNDS;
use entrada_storage::outbox::anyhow_lite;
use entrada_storage::{Consumer, DomainEvent, Envelope, Tx};
use std::sync::Arc;

pub struct RefundRequests {
    svc: Payments,
}

#[async_trait::async_trait]
impl Consumer for RefundRequests {
    fn name(&self) -> &'static str {
        PAYMENTS_REFUNDS
    }

    async fn handle(&self, tx: &mut Tx, env: &Envelope) -> Result<(), anyhow_lite::Error> {
        if let DomainEvent::RefundRequested { payment_id, reason } = &env.event {
            let now = self.svc.inner.clock.now_ms();
            self.svc.request_refund(tx, *payment_id, reason, now).await?;
        }
        Ok(())
    }
}

impl Payments {
    /// The consumer of `payment.refund_requested` for the outbox dispatcher.
    pub fn consumer(&self) -> Arc<dyn Consumer> {
        Arc::new(RefundRequests { svc: self.clone() })
    }
}
