//! Entrada's tickets on an EVM chain: the compiled contracts, one [`ChainClient`] trait for
//! everything the platform asks of a chain, and [`EmbeddedChain`], an in-process revm chain
//! that runs the real bytecode and keeps its state in the data directory, and [`RpcChain`],
//! the same over JSON-RPC to any EVM node with locally held keys.
//!
//! Architecture invariant: the chain clients know nothing about orders, tickets or the
//! database; they speak addresses, token ids and receipts. Deciding what to mint is the
//! [`pipeline`]'s business: it follows tickets by id through the outbox and its own tables.

pub mod client;
pub mod contracts;
pub mod custody;
pub mod embedded;
pub mod http;
pub mod pipeline;
pub mod rpc;

pub use alloy::primitives::{Address, B256, Bytes, Log, U256};
pub use client::{ChainClient, ChainError, CollectionParams, Mint, PlatformRoles, Receipt};
pub use custody::AddressBook;
pub use embedded::EmbeddedChain;
pub use rpc::{RoleKeys, RpcChain, RpcConfig};
