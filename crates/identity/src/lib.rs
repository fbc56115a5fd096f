//! Identity: accounts, password login, access and refresh tokens, the token
//! issuer's keys (JWKS, OpenID discovery), email verification, password
//! reset, platform roles and organization membership.

pub mod membership;
