//! Types every Entrada context shares: time, money, identifiers, validated
//! inputs, the authenticated principal and the problem+json error.
//!
//! Nothing here does I/O. Each type validates on construction ("parse, don't
//! validate"), so a function that takes one cannot skip the check.

pub mod auth;
pub mod clock;
pub mod email;
pub mod extract;
pub mod ids;
pub mod money;
pub mod page;
pub mod problem;
pub mod secret;
pub mod token;

pub use auth::{AuthUser, MaybeAuthUser, PlatformRole, Principal};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use email::Email;
pub use money::{Currency, Money};
pub use problem::Problem;
pub use secret::Secret;
