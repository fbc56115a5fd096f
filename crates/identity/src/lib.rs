//! Identity: accounts, password login, access and refresh tokens, the token
//! issuer's keys (JWKS, OpenID discovery), email verification, password
//! reset, platform roles and organization membership.
//!
//! Architecture invariant: only this crate reads access tokens. Other
//! contexts see a verified [`entrada_primitives::Principal`] through the
//! gateway, and call [`membership`] to authorize organizer actions.

pub mod domain;
pub mod http;
mod keys;
pub mod membership;
mod password;
pub mod service;
mod store;

pub use domain::{DisplayName, IdentityError, Password, TokenPurpose, User};
pub use keys::{AUDIENCE, PublicKey};
pub use password::PasswordCost;
pub use service::{Identity, IdentityConfig, Me, Tokens};
pub use store::Member;
