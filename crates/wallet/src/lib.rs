//! The wallet: one envelope-encrypted custodial key and address per fan
//! ([`custody`], [`keys`]), the fan's assets view, the collectibles' metadata
//! and art, external wallets linked with Sign-In with Ethereum ([`siwe`]),
//! and export of a ticket's token to a linked address.
//!
//! Architecture invariant: private keys are never stored unencrypted and
//! never leave the `keys`/`custody` modules in clear (invariant 7). The
//! wallet sends nothing to a chain: an export appends `ticket.exported` and
//! the chain pipeline moves the token.

pub mod art;
pub mod custody;
pub mod domain;
pub mod http;
pub mod keys;
pub mod service;
pub mod siwe;
pub mod store;

pub use custody::{Custody, RewrapReport};
pub use domain::WalletError;
pub use http::router;
pub use keys::{KeyError, MasterKeys};
pub use service::{Wallet, WalletConfig};
