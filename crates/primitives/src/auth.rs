//! Who is calling. The gateway verifies the bearer token once per request and
//! leaves an [`AuthState`] in the request extensions; contexts take
//! [`AuthUser`] or [`MaybeAuthUser`] as handler parameters and never see
//! tokens. This keeps every context independent of the identity crate's keys.

use crate::ids::{SessionId, UserId};
use crate::problem::Problem;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

/// Platform-wide role. Organization roles (owner, manager, viewer) are per
/// organization and checked by the context that owns the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlatformRole {
    Fan,
    Support,
    Admin,
}

impl PlatformRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fan => "fan",
            Self::Support => "support",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fan" => Some(Self::Fan),
            "support" => Some(Self::Support),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Support and admins may look up and refund any order.
    pub fn is_staff(self) -> bool {
        matches!(self, Self::Support | Self::Admin)
    }
}

/// A verified caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: PlatformRole,
    /// The login (refresh-token family) the access token belongs to.
    pub session_id: SessionId,
}

/// What the gateway's authentication layer concluded about a request.
#[derive(Debug, Clone)]
pub enum AuthState {
    Anonymous,
    Authenticated(Principal),
    /// A token was sent but did not verify; the code says why
    /// (`invalid_token`, `token_expired`).
    Rejected(&'static str),
}

/// Requires a valid access token: 401 otherwise.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<AuthState>() {
            Some(AuthState::Authenticated(p)) => Ok(AuthUser(*p)),
            Some(AuthState::Rejected(code)) => {
                Err(Problem::unauthorized(code, "the access token is invalid or expired"))
            }
            _ => Err(Problem::unauthorized("unauthenticated", "send an access token as `Authorization: Bearer …`")),
        }
    }
}

/// An optional caller: anonymous is fine, a bad token is still a 401.
#[derive(Debug, Clone, Copy)]
pub struct MaybeAuthUser(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuthUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<AuthState>() {
            Some(AuthState::Authenticated(p)) => Ok(MaybeAuthUser(Some(*p))),
            Some(AuthState::Rejected(code)) => {
                Err(Problem::unauthorized(code, "the access token is invalid or expired"))
            }
            _ => Ok(MaybeAuthUser(None)),
        }
    }
}
