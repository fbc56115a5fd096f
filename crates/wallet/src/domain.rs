//! The wallet's types and rules: errors with their codes, validated
//! addresses. No I/O, no serialization (the wire types live in `http.rs`).

use crate::keys::KeyError;
use alloy::primitives::Address;

/// What can go wrong in a wallet use case; mapped to problem+json in one
/// place (`http::problem`).
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// Unknown, or not the caller's to see (both answer 404).
    #[error("no such resource")]
    NotFound,
    #[error("{field}: {message}")]
    Validation { field: &'static str, message: String },
    /// The signed text is not an EIP-4361 message.
    #[error("{0}")]
    BadMessage(String),
    #[error("the message is for another domain than this deployment ({0})")]
    WrongDomain(String),
    #[error("the message's URI must be {0}")]
    WrongUri(String),
    #[error("the message is for chain {got}; this deployment links addresses on chain {want}")]
    WrongChain { got: u64, want: u64 },
    #[error("too many open challenges; answer or let one expire first")]
    TooManyChallenges,
    #[error("the nonce was not issued to this account; ask for a new challenge")]
    UnknownNonce,
    #[error("the nonce has already been used; ask for a new challenge")]
    NonceUsed,
    #[error("the message or its nonce has expired; ask for a new challenge")]
    Expired,
    #[error("the message is not valid yet")]
    NotYetValid,
    #[error("the signature is malformed or was not made by the message's address")]
    BadSignature,
    #[error("this address is linked to another account")]
    AddressLinkedElsewhere,
    #[error("this address is not linked to your account; link it first")]
    AddressNotLinked,
    #[error("the organizer does not allow exporting this event's tickets")]
    ExportNotAllowed,
    #[error("this event's tickets can be exported from {0}")]
    ExportNotYet(String),
    #[error("the ticket is not valid (cancelled or refunded)")]
    TicketNotValid,
    #[error("this ticket's token has already been exported")]
    AlreadyExported,
    #[error("the ticket changed hands meanwhile; reload it")]
    TicketChanged,
    #[error("upload a PNG, JPEG or WebP image (SVG is not accepted)")]
    UnsupportedImage,
    #[error("the image is larger than {0} bytes")]
    ImageTooLarge(usize),
    /// A custodial key could not be sealed or opened. The message names the
    /// master key id at most, never key material.
    #[error("wallet key: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
    /// A corrupted row or an impossible state; logged, shown as `internal`.
    #[error("{0}")]
    Internal(String),
}

impl WalletError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation { field, message: message.into() }
    }
}

/// The stored form of an address: `0x` and 40 lower-case hex digits, so
/// uniqueness in the database does not depend on EIP-55 capitalisation.
pub fn address_to_db(a: &Address) -> String {
    format!("{a:#x}")
}

/// Reads a stored address; a malformed value is a corrupted row.
pub fn address_from_db(s: &str) -> Result<Address, WalletError> {
    s.parse::<Address>().map_err(|_| WalletError::Internal(format!("malformed stored address {s:?}")))
}

/// An address as a client sends it: `0x` and 40 hex digits. Mixed case must
/// be a valid EIP-55 checksum (a typo in a checksummed address is caught);
/// all-lower or all-upper case is accepted as is.
pub fn parse_address(field: &'static str, s: &str) -> Result<Address, WalletError> {
    let bad = || WalletError::invalid(field, "must be an address: 0x followed by 40 hexadecimal digits");
    let hex = s.strip_prefix("0x").ok_or_else(bad)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mixed = hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        Address::parse_checksummed(s, None)
            .map_err(|_| WalletError::invalid(field, "the mixed-case address fails its EIP-55 checksum"))
    } else {
        s.parse::<Address>().map_err(|_| bad())
    }
}

/// An image format an organizer may upload for a collectible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Webp,
}

impl ImageKind {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    pub fn from_content_type(s: &str) -> Option<Self> {
        match s {
            "image/png" => Some(Self::Png),
            "image/jpeg" => Some(Self::Jpeg),
            "image/webp" => Some(Self::Webp),
            _ => None,
        }
    }

    /// What the bytes are, by their magic numbers; the declared content type
    /// is never trusted alone. SVG (text, able to carry script) is none of these.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }
}

/// The largest organizer image accepted, in bytes.
pub const MAX_IMAGE_BYTES: usize = 512 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats are recognised by their bytes only; SVG, HTML and truncated headers are not images.
    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(ImageKind::sniff(b"\x89PNG\r\n\x1a\nrest"), Some(ImageKind::Png));
        assert_eq!(ImageKind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(ImageKind::Jpeg));
        assert_eq!(ImageKind::sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some(ImageKind::Webp));
        assert_eq!(ImageKind::sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"), None);
        assert_eq!(ImageKind::sniff(b"<html>"), None);
        assert_eq!(ImageKind::sniff(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(ImageKind::sniff(b"\x89PN"), None);
    }

    /// Addresses: lower case and valid checksums pass; a broken checksum and bad shapes do not.
    #[test]
    fn parses_addresses() {
        let ok = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let a = parse_address("address", ok).unwrap_or_default();
        assert_eq!(a.to_checksum(None), ok);
        assert!(parse_address("address", &ok.to_lowercase()).is_ok());
        assert!(parse_address("address", "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(parse_address("address", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(parse_address("address", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe").is_err());
        assert!(parse_address("address", "0xzzAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    }
}
