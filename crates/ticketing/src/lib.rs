//! The ticketing core: organizations, events, ticket types, quotas (the
//! catalog) and holds, orders and issued tickets (the sale).
//!
//! Architecture invariant: inventory changes only through the quota guard in
//! `sales::store`, inside the transaction that creates or releases positions.

pub mod catalog;
pub mod sales;
