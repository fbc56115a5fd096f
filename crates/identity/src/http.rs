//! Identity's HTTP surface: authentication endpoints, the caller's account,
//! platform roles, organization members, JWKS and OpenID discovery. Wire
//! types live here; [`problem`] is the one place domain errors become
//! problem+json.

use crate::domain::{DisplayName, IdentityError, Password, User};
use crate::membership::OrgRole;
use crate::service::{Identity, Tokens};
use crate::store::Member;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use entrada_primitives::clock::{from_ms, rfc3339};
use entrada_primitives::extract::{Json, MaybeIdempotencyKey, Path};
use entrada_primitives::ids::{OrganizationId, UserId};
use entrada_primitives::{AuthUser, Email, PlatformRole, Problem, Secret};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The identity routes, state applied.
pub fn router(svc: Identity) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(jwks))
        .routes(routes!(openid_configuration))
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(verify_email))
        .routes(routes!(resend_verification))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(set_platform_role))
        .routes(routes!(add_member, list_members))
        .with_state(svc)
}

/// Maps every identity error to its problem. Codes are part of the API.
pub fn problem(e: IdentityError) -> Problem {
    let code = e.code();
    match e {
        IdentityError::Invalid { field, message } => Problem::invalid_field(field, message),
        IdentityError::UnknownMember => Problem::invalid_field("email", "no account with this email"),
        IdentityError::EmailTaken => Problem::conflict(code, "an account with this email already exists"),
        IdentityError::InvalidCredentials => Problem::unauthorized(code, "email or password is wrong"),
        IdentityError::TooManyAttempts { retry_after_s } => {
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                code,
                "too many failed logins for this address; try again later",
            );
            p.retry_after = Some(retry_after_s.max(1));
            p
        }
        IdentityError::InvalidRefreshToken => Problem::unauthorized(code, "the refresh token is unknown or revoked"),
        IdentityError::RefreshTokenExpired => {
            Problem::unauthorized(code, "the refresh token has expired; log in again")
        }
        IdentityError::RefreshTokenReused => {
            Problem::unauthorized(code, "the refresh token was already used; the session has been revoked")
        }
        IdentityError::InvalidToken => Problem::bad_request(code, "the token is unknown or was already used"),
        IdentityError::TokenExpired => Problem::bad_request(code, "the token has expired; request a new one"),
        IdentityError::AlreadyVerified => Problem::conflict(code, "the email address is already verified"),
        IdentityError::Forbidden => Problem::forbidden(code, "this needs a platform administrator"),
        IdentityError::NotFound => Problem::not_found(code, "no such resource"),
        IdentityError::LastOwner => Problem::conflict(code, "an organization must keep at least one owner"),
        IdentityError::Internal(cause) => Problem::internal(cause),
    }
}

fn parse_email(s: &str) -> Result<Email, Problem> {
    Email::parse(s).map_err(|_| Problem::invalid_field("email", "not a valid email address"))
}

fn parse_password(field: &'static str, s: &Secret<String>) -> Result<Password, Problem> {
    Password::parse(s.expose()).map_err(|e| match e {
        IdentityError::Invalid { message, .. } => Problem::invalid_field(field, message),
        other => problem(other),
    })
}

// --- wire types ---------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    /// 10 to 128 characters.
    #[schema(value_type = String, format = Password)]
    pub password: Secret<String>,
    pub display_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: Secret<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OneTimeTokenRequest {
    #[schema(value_type = String)]
    pub token: Secret<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordResetRequest {
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordResetConfirmRequest {
    #[schema(value_type = String)]
    pub token: Secret<String>,
    #[schema(value_type = String, format = Password)]
    pub new_password: Secret<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    pub role: PlatformRole,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberRequest {
    pub email: String,
    pub role: OrgRole,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub platform_role: PlatformRole,
    pub email_verified: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email.to_string(),
            display_name: u.display_name,
            platform_role: u.platform_role,
            email_verified: u.email_verified,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// An EdDSA-signed JWT; send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single use: exchange it at `/api/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    pub user: UserResponse,
}

impl From<Tokens> for TokenResponse {
    fn from(t: Tokens) -> Self {
        Self {
            access_token: t.access_token.expose().clone(),
            token_type: "Bearer",
            expires_in: t.expires_in,
            refresh_token: t.refresh_token.expose().clone(),
            user: t.user.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipResponse {
    pub organization_id: OrganizationId,
    pub role: OrgRole,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub platform_role: PlatformRole,
    pub email_verified: bool,
    pub created_at: String,
    pub organizations: Vec<MembershipResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberResponse {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: OrgRole,
    /// When the membership was created, RFC 3339.
    pub since: String,
}

impl From<Member> for MemberResponse {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email.to_string(),
            display_name: m.display_name,
            role: m.role,
            since: rfc3339(from_ms(m.since_ms)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedResponse {
    pub email_verified: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChangedResponse {
    pub password_changed: bool,
    /// How many sessions were logged out.
    pub sessions_revoked: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembersResponse {
    pub items: Vec<MemberResponse>,
}

/// An Ed25519 public key as an RFC 8037 OKP JWK.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub alg: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: String,
    pub revocation_endpoint: String,
    pub grant_types_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub claims_supported: Vec<&'static str>,
}

// --- discovery -----------------------------------------------------------------

/// The issuer's public keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, body = JwkSet)))]
async fn jwks(State(svc): State<Identity>) -> Result<Response, Problem> {
    let keys = svc.public_keys().await.map_err(problem)?;
    let set = JwkSet {
        keys: keys
            .into_iter()
            .map(|k| Jwk { kty: "OKP", crv: "Ed25519", x: k.x, kid: k.kid, use_: "sig", alg: "EdDSA" })
            .collect(),
    };
    // Short caching: clients refetch on an unknown kid anyway.
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(set)).into_response())
}

/// OpenID Connect discovery metadata.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "identity",
    responses((status = 200, body = OpenIdConfiguration)))]
async fn openid_configuration(State(svc): State<Identity>) -> Json<OpenIdConfiguration> {
    let iss = svc.config().issuer.clone();
    Json(OpenIdConfiguration {
        jwks_uri: format!("{iss}/.well-known/jwks.json"),
        token_endpoint: format!("{iss}/api/v1/auth/login"),
        userinfo_endpoint: format!("{iss}/api/v1/me"),
        revocation_endpoint: format!("{iss}/api/v1/auth/logout"),
        issuer: iss,
        grant_types_supported: vec!["password", "refresh_token"],
        response_types_supported: vec!["token"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: vec!["EdDSA"],
        token_endpoint_auth_methods_supported: vec!["none"],
        claims_supported: vec!["iss", "sub", "aud", "exp", "iat", "jti", "sid", "role"],
    })
}

// --- authentication -------------------------------------------------------------

/// Creates an account and logs it in; a verification mail is sent.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "identity", request_body = RegisterRequest,
    responses((status = 201, body = TokenResponse), (status = 409, description = "email_taken"),
              (status = 422, description = "validation_failed")))]
async fn register(State(svc): State<Identity>, Json(req): Json<RegisterRequest>) -> Result<Response, Problem> {
    let email = parse_email(&req.email)?;
    let password = parse_password("password", &req.password)?;
    let name = DisplayName::parse(&req.display_name).map_err(problem)?;
    let tokens = svc.register(email, password, name).await.map_err(problem)?;
    Ok((StatusCode::CREATED, no_store(), Json(TokenResponse::from(tokens))).into_response())
}

/// Token responses must not be cached by anything in between (RFC 6749 §5.1).
fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

/// Logs in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "identity", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid_credentials"),
              (status = 429, description = "too_many_attempts")))]
async fn login(State(svc): State<Identity>, Json(req): Json<LoginRequest>) -> Result<Response, Problem> {
    let tokens = svc.login(&req.email, req.password.expose()).await.map_err(problem)?;
    Ok((no_store(), Json(TokenResponse::from(tokens))).into_response())
}

/// Exchanges a refresh token for a new access and refresh token.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "identity", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse),
              (status = 401, description = "invalid_refresh_token, refresh_token_expired or refresh_token_reused")))]
async fn refresh(State(svc): State<Identity>, Json(req): Json<RefreshRequest>) -> Result<Response, Problem> {
    let tokens = svc.refresh(req.refresh_token.expose()).await.map_err(problem)?;
    Ok((no_store(), Json(TokenResponse::from(tokens))).into_response())
}

/// Ends the session the refresh token belongs to.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "identity", request_body = RefreshRequest,
    responses((status = 204)))]
async fn logout(State(svc): State<Identity>, Json(req): Json<RefreshRequest>) -> Result<StatusCode, Problem> {
    svc.logout(req.refresh_token.expose()).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account and organization memberships (OpenID userinfo).
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    responses((status = 200, body = MeResponse), (status = 401, description = "unauthenticated")))]
async fn me(State(svc): State<Identity>, AuthUser(p): AuthUser) -> Result<Json<MeResponse>, Problem> {
    let me = svc.me(p.user_id).await.map_err(problem)?;
    let u = me.user;
    Ok(Json(MeResponse {
        id: u.id,
        email: u.email.to_string(),
        display_name: u.display_name,
        platform_role: u.platform_role,
        email_verified: u.email_verified,
        created_at: rfc3339(u.created_at),
        organizations: me
            .organizations
            .into_iter()
            .map(|(organization_id, role)| MembershipResponse { organization_id, role })
            .collect(),
    }))
}

/// Confirms the email address with the token from the verification mail.
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "identity", request_body = OneTimeTokenRequest,
    responses((status = 200, body = VerifiedResponse), (status = 400, description = "invalid_token or token_expired")))]
async fn verify_email(
    State(svc): State<Identity>,
    Json(req): Json<OneTimeTokenRequest>,
) -> Result<Json<VerifiedResponse>, Problem> {
    svc.verify_email(req.token.expose()).await.map_err(problem)?;
    Ok(Json(VerifiedResponse { email_verified: true }))
}

/// Sends a new verification mail to the caller.
#[utoipa::path(post, path = "/api/v1/auth/verify-email/resend", tag = "identity",
    responses((status = 202), (status = 409, description = "already_verified")))]
async fn resend_verification(State(svc): State<Identity>, AuthUser(p): AuthUser) -> Result<StatusCode, Problem> {
    svc.resend_verification(p.user_id).await.map_err(problem)?;
    Ok(StatusCode::ACCEPTED)
}

/// Mails a password reset link if the address has an account; the answer
/// is the same either way.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "identity", request_body = PasswordResetRequest,
    responses((status = 202)))]
async fn request_password_reset(
    State(svc): State<Identity>,
    Json(req): Json<PasswordResetRequest>,
) -> Result<StatusCode, Problem> {
    svc.request_password_reset(&req.email).await.map_err(problem)?;
    Ok(StatusCode::ACCEPTED)
}

/// Sets a new password with a reset token; every session is logged out.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "identity",
    request_body = PasswordResetConfirmRequest,
    responses((status = 200, body = PasswordChangedResponse), (status = 400, description = "invalid_token or token_expired"),
              (status = 422, description = "validation_failed")))]
async fn confirm_password_reset(
    State(svc): State<Identity>,
    Json(req): Json<PasswordResetConfirmRequest>,
) -> Result<Json<PasswordChangedResponse>, Problem> {
    let password = parse_password("new_password", &req.new_password)?;
    let sessions_revoked = svc.confirm_password_reset(req.token.expose(), password).await.map_err(problem)?;
    Ok(Json(PasswordChangedResponse { password_changed: true, sessions_revoked }))
}

// --- administration ----------------------------------------------------------------

/// Sets a user's platform role (platform admins only).
#[utoipa::path(put, path = "/api/v1/admin/users/{id}/role", tag = "identity", request_body = RoleRequest,
    params(("id" = UserId, Path)),
    responses((status = 200, body = UserResponse), (status = 403, description = "forbidden"),
              (status = 404, description = "not_found")))]
async fn set_platform_role(
    State(svc): State<Identity>,
    AuthUser(p): AuthUser,
    Path(id): Path<UserId>,
    Json(req): Json<RoleRequest>,
) -> Result<Json<UserResponse>, Problem> {
    let user = svc.set_platform_role(&p, id, req.role).await.map_err(problem)?;
    Ok(Json(user.into()))
}

/// Adds a member to the organization or changes their role (owners only).
#[utoipa::path(post, path = "/api/v1/organizations/{org_id}/members", tag = "identity", request_body = MemberRequest,
    params(("org_id" = OrganizationId, Path)),
    responses((status = 201, body = MemberResponse), (status = 404, description = "not_found"),
              (status = 409, description = "last_owner"), (status = 422, description = "validation_failed")))]
async fn add_member(
    State(svc): State<Identity>,
    AuthUser(p): AuthUser,
    Path(org): Path<OrganizationId>,
    key: MaybeIdempotencyKey,
    Json(req): Json<MemberRequest>,
) -> Result<Response, Problem> {
    let email = parse_email(&req.email)?;
    let body = serde_json::to_vec(&req).map_err(Problem::internal)?;
    let scope = format!("{}:POST /api/v1/organizations/{org}/members", p.user_id);
    let now_ms = svc.now_ms();
    let out = entrada_storage::idempotency::run(svc.db(), now_ms, &scope, key.0.as_ref(), &body, || async {
        let member = svc.set_member(&p, org, &email, req.role).await.map_err(problem)?;
        let json = serde_json::to_value(MemberResponse::from(member)).map_err(Problem::internal)?;
        Ok((StatusCode::CREATED, json))
    })
    .await?;
    Ok((out.status, Json(out.body)).into_response())
}

/// The organization's members (any member may look).
#[utoipa::path(get, path = "/api/v1/organizations/{org_id}/members", tag = "identity",
    params(("org_id" = OrganizationId, Path)),
    responses((status = 200, body = MembersResponse), (status = 404, description = "not_found")))]
async fn list_members(
    State(svc): State<Identity>,
    AuthUser(p): AuthUser,
    Path(org): Path<OrganizationId>,
) -> Result<Json<MembersResponse>, Problem> {
    let members = svc.members(&p, org).await.map_err(problem)?;
    Ok(Json(MembersResponse { items: members.into_iter().map(Into::into).collect() }))
}
