//! Payments: providers behind one trait (the embedded sandbox, Stripe),
//! payment records, signed provider webhooks, refunds and the double-entry
//! money ledger.
//!
//! Architecture invariant: payments knows nothing of orders or tickets. A
//! payment names its payer-side object by an opaque `reference`
//! (`order:<uuid>`), and outcomes leave as domain events
//! (`payment.succeeded`, `payment.failed`, `payment.refunded`). Outcomes only
//! ever arrive through verified provider webhooks, never from the buyer's
//! browser.

pub mod consumer;
pub mod domain;
pub mod http;
pub mod provider;
pub mod sandbox;
pub mod service;
pub mod signature;
pub mod store;
pub mod stripe;

pub use domain::{Checkout, NewPayment, Outcome, PaymentStatus, PaymentsError, ProviderEvent, WebhookError};
pub use provider::{CreateRequest, CreatedCheckout, PaymentProvider, RefundRequest};
pub use sandbox::SandboxConfig;
pub use service::{Payments, PaymentsConfig, ProviderConfig};
pub use stripe::StripeConfig;
