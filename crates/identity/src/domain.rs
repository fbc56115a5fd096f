//! Identity's domain types: validated passwords and display names, the
//! account view, the one-time token purposes and the error codes. No I/O.

use entrada_primitives::ids::UserId;
use entrada_primitives::{Email, PlatformRole};
use time::OffsetDateTime;

/// A password that meets the rules: 10 to 128 characters. Length is the
/// rule that matters (NIST SP 800-63B); composition rules are deliberately
/// absent because they push users to predictable patterns.
///
/// Never `Debug`-printed: the type has no `Debug` impl on purpose.
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let n = s.chars().count();
        if n < Self::MIN_CHARS {
            return Err(IdentityError::invalid("password", "must be at least 10 characters"));
        }
        if n > Self::MAX_CHARS {
            return Err(IdentityError::invalid("password", "must be at most 128 characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(IdentityError::invalid("display_name", "must not be empty"));
        }
        if s.chars().count() > 100 {
            return Err(IdentityError::invalid("display_name", "must be at most 100 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(IdentityError::invalid("display_name", "must not contain control characters"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key login throttling and case-insensitive lookups use for an address.
pub fn email_key(email: &Email) -> String {
    email.as_str().to_lowercase()
}

/// An account as the service hands it out (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub display_name: String,
    pub platform_role: PlatformRole,
    pub email_verified: bool,
    pub created_at: OffsetDateTime,
}

/// What a one-time token may be used for; each has its own lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }

    /// 48 hours to click a verification link; 1 hour for a reset, which
    /// grants the account to whoever holds it.
    pub fn lifetime(self) -> time::Duration {
        match self {
            Self::VerifyEmail => time::Duration::hours(48),
            Self::ResetPassword => time::Duration::hours(1),
        }
    }
}

/// Login throttling: after this many failed attempts within the window, the
/// address is refused until the window (counted from the first failure) ends.
pub const MAX_LOGIN_FAILURES: i64 = 10;
pub const LOGIN_WINDOW: time::Duration = time::Duration::minutes(15);

/// Everything that can go wrong in identity, each with a stable code
/// (see `http.rs` for the one place they become problem+json).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: &'static str },
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("too many failed logins; retry in {retry_after_s} s")]
    TooManyAttempts { retry_after_s: u64 },
    #[error("unknown or revoked refresh token")]
    InvalidRefreshToken,
    #[error("the refresh token has expired")]
    RefreshTokenExpired,
    #[error("the refresh token was already used; the session is revoked")]
    RefreshTokenReused,
    #[error("unknown or already used token")]
    InvalidToken,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the email address is already verified")]
    AlreadyVerified,
    #[error("not allowed")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("no account with this email")]
    UnknownMember,
    #[error("an organization must keep at least one owner")]
    LastOwner,
    #[error("internal: {0}")]
    Internal(String),
}

impl IdentityError {
    pub fn invalid(field: &'static str, message: &'static str) -> Self {
        Self::Invalid { field, message }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::UnknownMember => "validation_failed",
            Self::EmailTaken => "email_taken",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::RefreshTokenExpired => "refresh_token_expired",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::AlreadyVerified => "already_verified",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::LastOwner => "last_owner",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("ääääääääää").is_ok(), "10 characters, 20 bytes");
        assert!(Password::parse(&"x".repeat(128)).is_ok());
        assert!(matches!(Password::parse(&"x".repeat(129)), Err(IdentityError::Invalid { field: "password", .. })));
    }

    #[test]
    fn display_name_is_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Ana ").map(|d| d.as_str().to_owned()).ok(), Some("Ana".into()));
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse(&"n".repeat(101)).is_err());
    }

    #[test]
    fn reset_tokens_live_shorter_than_verification_tokens() {
        assert!(TokenPurpose::ResetPassword.lifetime() < TokenPurpose::VerifyEmail.lifetime());
    }
}
