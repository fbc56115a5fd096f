//! Entrada's tickets on an EVM chain: the compiled contracts, one [`ChainClient`] trait for
//! everything the platform asks of a chain, and [`EmbeddedChain`], an in-process revm chain
//! that runs the real bytecode and keeps its state in the data directory.
//!
//! Architecture invariant: this crate knows nothing about orders, tickets or the database; it
//! speaks addresses, token ids and receipts. Deciding what to mint is the caller's business.

pub mod client;
pub mod contracts;
pub mod custody;
pub mod embedded;

pub use alloy::primitives::{Address, B256, Bytes, Log, U256};
pub use client::{ChainClient, ChainError, CollectionParams, Mint, PlatformRoles, Receipt};
pub use custody::AddressBook;
pub use embedded::EmbeddedChain;
