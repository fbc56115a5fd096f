//! Holds, orders, payment outcomes and issued tickets.
//!
//! A buyer holds inventory (the quota guard), converts the hold into a
//! pending order priced by the server, pays through the payment service, and
//! the `ticketing.payments` consumer issues exactly one ticket per position.
//! The expiry sweep gives back what holds and unpaid orders no longer need.

pub mod consumer;
pub mod domain;
pub mod http;
pub mod service;
pub mod store;

pub use consumer::PaymentOutcomes;
pub use domain::{ExpiryReport, Hold, HoldLine, HoldRequest, Order, OrderStatus, QuotaCheck, SalesError, Ticket};
pub use http::router;
pub use service::{PaymentGateway, Sales, SalesConfig};
