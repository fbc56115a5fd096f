//! The boundary to payment providers: one object-safe trait, implemented by
//! the embedded sandbox and by Stripe, chosen once from configuration.

use crate::domain::{ProviderError, ProviderEvent, WebhookError};
use entrada_primitives::Money;
use entrada_primitives::ids::PaymentId;
use http::HeaderMap;
use time::OffsetDateTime;

/// What the provider needs to open a checkout.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Our payment id, also the idempotency key: asking the provider twice
    /// gives the same checkout.
    pub payment_id: PaymentId,
    pub amount: Money,
    pub reference: String,
    pub description: String,
    pub return_url: String,
}

/// The provider's answer to [`CreateRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedCheckout {
    /// The provider's checkout object (sandbox charge id, Stripe session id).
    pub provider_ref: String,
    /// What refunds are issued against, when already known (the sandbox
    /// charge; for Stripe the PaymentIntent arrives later, by webhook).
    pub capture_ref: Option<String>,
    pub checkout_url: String,
}

/// What the provider needs to refund.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// The object the money was captured on.
    pub capture_ref: String,
    pub amount: Money,
    /// Stable per payment, so a retried refund never refunds twice.
    pub idempotency_key: String,
}

#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// The provider's name: the webhook path segment and the ledger account
    /// suffix (`provider:<name>`).
    fn name(&self) -> &'static str;

    /// Opens a hosted checkout. Idempotent by `req.payment_id`.
    async fn create_payment(&self, req: &CreateRequest) -> Result<CreatedCheckout, ProviderError>;

    /// Refunds in full and returns the provider's refund id. Idempotent by
    /// `req.idempotency_key`.
    async fn refund(&self, req: &RefundRequest) -> Result<String, ProviderError>;

    /// Verifies a webhook's signature, then its age against `now`, then
    /// parses it. Nothing in the body is read before the signature verifies.
    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<ProviderEvent, WebhookError>;
}
