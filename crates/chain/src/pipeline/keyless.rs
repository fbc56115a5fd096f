//! The fallback address book: a deterministic address per user, with no key behind it.
//!
//! For tools and tests that run the pipeline without the custodial wallet (the app uses the
//! wallet's `Custody`). The address is the last 20 bytes of
//! `keccak256("entrada.keyless:" ‖ user id)`; nobody can sign for it, which is harmless
//! because the platform's custodian is every holder's pre-approved operator and moves tokens
//! for gifts, resales, exports and repairs. When a wallet replaces this book, the reconciler
//! sees tokens at addresses that differ from the holders' custodial ones and moves them over.

use alloy::primitives::{Address, keccak256};
use entrada_primitives::ids::UserId;

use crate::custody::AddressBook;

/// Addresses without keys; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeylessAddressBook;

impl KeylessAddressBook {
    pub fn address_of(user: UserId) -> Address {
        Address::from_word(keccak256(format!("entrada.keyless:{user}").as_bytes()))
    }
}

#[async_trait::async_trait]
impl AddressBook for KeylessAddressBook {
    async fn custodial_address(&self, user: UserId) -> Result<Address, String> {
        Ok(Self::address_of(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same user always gets the same address, different users different ones.
    #[test]
    fn addresses_are_stable_and_distinct() {
        let (a, b) = (UserId::new(), UserId::new());
        assert_eq!(KeylessAddressBook::address_of(a), KeylessAddressBook::address_of(a));
        assert_ne!(KeylessAddressBook::address_of(a), KeylessAddressBook::address_of(b));
        assert_ne!(KeylessAddressBook::address_of(a), Address::ZERO);
    }
}
