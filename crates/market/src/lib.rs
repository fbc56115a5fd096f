//! Market: gifts between users, resale listings under the organizer's
//! rules (price cap, window, freeze, resale limit, royalty and fee), resale
//! purchases paid through the payment provider, their settlement (ledger,
//! payouts) and the public per-ticket history.
//!
//! Architecture invariant: the market changes a ticket's holder only through
//! one guarded update that names the expected holder and generation, and
//! bumps the generation in the same transaction that records the transfer,
//! appends `ticket.holder_changed` and audits it. Check-in derives
//! revocation from that generation, so the old QR stops admitting without
//! the market knowing anything of check-in; the chain pipeline moves the
//! token from the event, so the market knows nothing of the chain.

pub mod consumer;
pub mod domain;
pub mod http;
pub mod service;
pub mod store;

pub use domain::{MarketError, Policy, Refusal, Split};
pub use service::{Market, MarketConfig, PLATFORM_FEES, seller_account};
