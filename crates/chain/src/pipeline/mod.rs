//! The mint pipeline: every issued ticket becomes exactly one token, owned by its holder's
//! address, and follows the ticket through gifts, resales, exports, refunds and check-in.
//!
//! - `consumer`: the `chain.tokens` outbox consumer records, in the dispatcher's transaction,
//!   what the chain should become (token rows, transfer/burn/attend operations);
//! - `service`: the steps that make it so (collections, batched mints, operations in order,
//!   unknown outcomes resolved by reading the chain, reconciliation);
//! - `worker`: the background loop; `store`: the SQL; `domain`: states and decisions;
//! - `keyless`: an address book without keys, for tools and tests that run without the wallet.
//!
//! The tables (`chain_collections`, `chain_tokens`, `chain_ops`, `chain_transactions`) are
//! described in `docs/chain.md`. Ticketing reads `chain_tokens` and `chain_collections` to
//! show a ticket's token; nothing else outside this module writes them.

pub mod consumer;
pub mod domain;
pub mod keyless;
pub mod service;
pub mod store;
pub mod worker;

pub use domain::{PipelineConfig, TokenState};
pub use keyless::KeylessAddressBook;
pub use service::{Pipeline, PipelineError, ReconcileReport, StepReport};
pub use worker::WorkerConfig;
