//! Payments: providers behind one trait (the embedded sandbox, Stripe),
//! payment records, signed provider webhooks, refunds and the double-entry
//! money ledger.
//!
//! Architecture invariant: payments knows nothing of orders or tickets. A
//! payment names its payer-side object by an opaque `reference`
//! (`order:<uuid>`), and outcomes leave as domain events.

use entrada_primitives::ids::{OrganizationId, PaymentId};
use entrada_primitives::{Money, Problem};

/// What ticketing asks for when an order is placed.
#[derive(Debug, Clone)]
pub struct NewPayment {
    /// Opaque payer-side reference, e.g. `order:<uuid>`. Unique: asking
    /// twice for the same reference returns the first payment.
    pub reference: String,
    /// Whose sale this is (the ledger credits this organization).
    pub organization_id: OrganizationId,
    /// The amount the server computed; never a client value.
    pub amount: Money,
    pub description: String,
    /// Where the provider's checkout sends the buyer back to.
    pub return_url: String,
}

/// A payment ready for the buyer.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub payment_id: PaymentId,
    /// The hosted page the buyer pays on.
    pub checkout_url: String,
}

/// The service handle (cheap to clone).
#[derive(Clone)]
pub struct Payments {
    _private: (),
}

impl Payments {
    /// Creates (or returns the existing) payment for `req.reference`.
    pub async fn create_payment(&self, _req: NewPayment) -> Result<Checkout, Problem> {
        Err(Problem::unavailable("payments_unavailable", "not built yet"))
    }

    /// Refunds a captured payment in full. Idempotent: refunding a refunded
    /// payment succeeds without a second refund.
    pub async fn refund(&self, _payment_id: PaymentId, _reason: &str) -> Result<(), Problem> {
        Err(Problem::unavailable("payments_unavailable", "not built yet"))
    }
}
