//! Random opaque tokens and their stored digests.
//!
//! Refresh, verification, reset and enrolment tokens are 256 random bits shown
//! once; only the SHA-256 digest is stored, so a database leak yields nothing
//! usable.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// 32 random bytes from the OS, base64url without padding (43 characters).
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random source failing is unrecoverable for a server that mints
    // credentials; there is no safe fallback.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut b).expect("operating system random source");
    b
}

/// Hex SHA-256, the stored form of an opaque token.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_digest_is_stable() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
