//! Where the chain pipeline learns a holder's custodial address.
//!
//! The wallet context owns the keys; the pipeline only needs the address a
//! token should belong to. A trait, not a dependency on the wallet crate, so
//! the wallet can depend on the chain (for the assets view and exports)
//! without a cycle, and tests can hand the pipeline a fixed address book.

use alloy::primitives::Address;
use entrada_primitives::ids::UserId;

#[async_trait::async_trait]
pub trait AddressBook: Send + Sync {
    /// The custodial address of `user`, created (and its key stored,
    /// encrypted) on first use. Idempotent: the same user always gets the same
    /// address.
    async fn custodial_address(&self, user: UserId) -> Result<Address, String>;
}
