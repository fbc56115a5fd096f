//! Identity's use cases: accounts, logins, token rotation, verification,
//! password reset, platform roles and organization members.
//!
//! Access tokens are stateless: [`Identity::verify_access`] checks the
//! signature and expiry in memory and never asks the database, so a logout
//! or a role change reaches an already-issued access token only when it
//! expires (15 minutes by default). That is the usual trade for a check that
//! runs on every request; what logout revokes at once is the refresh-token
//! family, so no new access token can be minted for the session. Operations
//! that need the current role (platform administration) re-read it.

use crate::domain::{
    DisplayName, IdentityError, LOGIN_WINDOW, MAX_LOGIN_FAILURES, Password, TokenPurpose, User, email_key,
};
use crate::keys::{KeyRing, PublicKey};
use crate::membership::{self, OrgRole};
use crate::password::{Hasher, PasswordCost};
use crate::store::{self, Member};
use entrada_primitives::auth::{AuthState, Principal};
use entrada_primitives::ids::{OrganizationId, SessionId, UserId};
use entrada_primitives::token::{digest, random_token};
use entrada_primitives::{Email, PlatformRole, Secret, SharedClock};
use entrada_storage::audit::{self, Actor};
use entrada_storage::{Db, DomainEvent, Tx, outbox};
use serde_json::json;
use std::sync::Arc;

/// How the issuer is set up.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The public base URL (`iss` of every token, base of the discovery
    /// document), without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub issuer: String,
    /// Lifetime of access tokens; also how long a logout or role change can
    /// take to reach a token already issued.
    pub access_ttl: time::Duration,
    /// Lifetime of each refresh token (sliding: every rotation starts anew).
    pub refresh_ttl: time::Duration,
    pub password_cost: PasswordCost,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            access_ttl: time::Duration::minutes(15),
            refresh_ttl: time::Duration::days(30),
            password_cost: PasswordCost::Standard,
        }
    }
}

/// What a successful login, registration or refresh hands the client.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: Secret<String>,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: Secret<String>,
    pub user: User,
}

/// The account of the caller with their organizations.
#[derive(Debug, Clone)]
pub struct Me {
    pub user: User,
    pub organizations: Vec<(OrganizationId, OrgRole)>,
}

/// The identity service; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    clock: SharedClock,
    cfg: IdentityConfig,
    keys: KeyRing,
    hasher: Hasher,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("issuer", &self.inner.cfg.issuer).finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads (or, on a new deployment, creates) the signing key and prepares
    /// the password hasher.
    pub async fn start(db: Db, clock: SharedClock, mut cfg: IdentityConfig) -> Result<Identity, IdentityError> {
        cfg.issuer = cfg.issuer.trim_end_matches('/').to_owned();
        if cfg.access_ttl <= time::Duration::ZERO || cfg.refresh_ttl <= time::Duration::ZERO {
            return Err(IdentityError::Internal("token lifetimes must be positive".into()));
        }
        let keys = KeyRing::start(db.clone(), clock.clone(), cfg.issuer.clone(), cfg.access_ttl).await?;
        let hasher = Hasher::new(cfg.password_cost).await?;
        Ok(Identity { inner: Arc::new(Inner { db, clock, cfg, keys, hasher }) })
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.inner.cfg
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    // --- tokens --------------------------------------------------------------

    /// Verifies an access token: signature first, then issuer, audience and
    /// expiry against the injected clock. No database access on the happy
    /// path. Errors are `invalid_token` or `token_expired`.
    pub async fn verify_access(&self, token: &str) -> Result<Principal, &'static str> {
        self.inner.keys.verify(token).await
    }

    /// What an `Authorization` header value says about the caller, for the
    /// gateway's authentication layer (and tests that stand in for it).
    pub async fn authenticate(&self, authorization: Option<&str>) -> AuthState {
        let Some(value) = authorization else { return AuthState::Anonymous };
        match value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            Some(token) => match self.verify_access(token.trim()).await {
                Ok(p) => AuthState::Authenticated(p),
                Err(code) => AuthState::Rejected(code),
            },
            None => AuthState::Rejected("invalid_token"),
        }
    }

    /// The public keys for the JWKS document.
    pub async fn public_keys(&self) -> Result<Vec<PublicKey>, IdentityError> {
        self.inner.keys.public_keys().await
    }

    /// Starts a session in `tx` and returns its id and first refresh token.
    async fn open_session(&self, tx: &mut Tx, user: UserId, now_ms: i64) -> Result<(SessionId, String), IdentityError> {
        let session = SessionId::new();
        store::insert_session(tx, session, user, now_ms).await?;
        let refresh = self.new_refresh_token(tx, session, user, now_ms).await?;
        Ok((session, refresh))
    }

    async fn new_refresh_token(
        &self,
        tx: &mut Tx,
        session: SessionId,
        user: UserId,
        now_ms: i64,
    ) -> Result<String, IdentityError> {
        let raw = random_token();
        let expires = now_ms + self.inner.cfg.refresh_ttl.whole_milliseconds() as i64;
        store::insert_refresh_token(tx, &digest(&raw), session, user, now_ms, expires).await?;
        Ok(raw)
    }

    fn tokens(&self, user: User, session: SessionId, refresh: String) -> Result<Tokens, IdentityError> {
        let (access, expires_in) = self.inner.keys.issue(user.id, user.platform_role, session)?;
        Ok(Tokens { access_token: Secret::new(access), expires_in, refresh_token: Secret::new(refresh), user })
    }

    // --- accounts ------------------------------------------------------------

    /// Creates an account and logs it in. The verification token goes only
    /// into the `EmailVerificationRequested` event (for the mail).
    pub async fn register(
        &self,
        email: Email,
        password: Password,
        display_name: DisplayName,
    ) -> Result<Tokens, IdentityError> {
        if store::user_by_email(self.db().reader(), email.as_str()).await?.is_some() {
            return Err(IdentityError::EmailTaken);
        }
        // Hash before the transaction: SQLite has one writer, and a hash
        // takes tens of milliseconds.
        let hash = self.inner.hasher.hash(password.expose()).await?;
        let now_ms = self.now_ms();
        let user = User {
            id: UserId::new(),
            email,
            display_name: display_name.as_str().to_owned(),
            platform_role: PlatformRole::Fan,
            email_verified: false,
            created_at: entrada_primitives::clock::from_ms(now_ms),
        };
        let mut tx = self.db().begin().await?;
        match store::insert_user(&mut tx, &user, &hash).await {
            Ok(()) => {}
            Err(e) if entrada_storage::is_unique_violation(&e) => return Err(IdentityError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        let verification = random_token();
        store::insert_one_time_token(&mut tx, &digest(&verification), user.id, TokenPurpose::VerifyEmail, now_ms)
            .await?;
        let actor = Actor::User(user.id);
        audit::record(&mut tx, now_ms, &actor, "user.registered", "user", &user.id.to_db(), json!({})).await?;
        outbox::append(
            &mut tx,
            now_ms,
            &DomainEvent::UserRegistered { user_id: user.id, email: user.email.to_string() },
        )
        .await?;
        outbox::append(
            &mut tx,
            now_ms,
            &DomainEvent::EmailVerificationRequested {
                user_id: user.id,
                email: user.email.to_string(),
                token: verification,
            },
        )
        .await?;
        let (session, refresh) = self.open_session(&mut tx, user.id, now_ms).await?;
        audit::record(
            &mut tx,
            now_ms,
            &actor,
            "session.created",
            "session",
            &session.to_db(),
            json!({ "via": "register" }),
        )
        .await?;
        tx.commit().await?;
        self.tokens(user, session, refresh)
    }

    /// Password login. Unknown address and wrong password give the same
    /// error after the same amount of hashing. After
    /// [`MAX_LOGIN_FAILURES`] failures within [`LOGIN_WINDOW`] the address is
    /// refused (`too_many_attempts`) until the window ends, whether or not an
    /// account exists, so throttling reveals nothing either. (Anyone can lock
    /// an address out for 15 minutes this way; per-IP limits at the gateway
    /// bound how many.)
    pub async fn login(&self, email: &str, password: &str) -> Result<Tokens, IdentityError> {
        let key = email.trim().to_lowercase();
        let now_ms = self.now_ms();
        let window_ms = LOGIN_WINDOW.whole_milliseconds() as i64;
        if let Some((start, failures)) = store::login_throttle(self.db(), &key).await?
            && failures >= MAX_LOGIN_FAILURES
            && start + window_ms > now_ms
        {
            let retry_after_s = ((start + window_ms - now_ms) as u64).div_ceil(1000);
            return Err(IdentityError::TooManyAttempts { retry_after_s });
        }
        let found = match Email::parse(email) {
            Ok(e) => store::user_by_email(self.db().reader(), e.as_str()).await?,
            Err(_) => None,
        };
        let ok = match &found {
            Some(u) => self.inner.hasher.verify(password, &u.password_hash).await?,
            None => self.inner.hasher.verify_dummy(password).await?,
        };
        let mut tx = self.db().begin().await?;
        let user = match found {
            Some(u) if ok => u.user,
            other => {
                store::record_login_failure(&mut tx, &key, now_ms, now_ms - window_ms).await?;
                if let Some(u) = other {
                    let id = u.user.id;
                    audit::record(
                        &mut tx,
                        now_ms,
                        &Actor::User(id),
                        "user.login_failed",
                        "user",
                        &id.to_db(),
                        json!({}),
                    )
                    .await?;
                }
                tx.commit().await?;
                return Err(IdentityError::InvalidCredentials);
            }
        };
        store::clear_login_failures(&mut tx, &key).await?;
        let (session, refresh) = self.open_session(&mut tx, user.id, now_ms).await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(user.id),
            "session.created",
            "session",
            &session.to_db(),
            json!({ "via": "password" }),
        )
        .await?;
        tx.commit().await?;
        self.tokens(user, session, refresh)
    }

    /// Rotates a refresh token: the presented one is spent and a new one of
    /// the same family returned with a fresh access token. A spent token
    /// presented again means it leaked (or the client misbehaves): the whole
    /// family is revoked, so the thief's copy dies with the user's.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, IdentityError> {
        let d = digest(refresh_token);
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        let row = store::refresh_token(self.db(), &mut tx, &d).await?.ok_or(IdentityError::InvalidRefreshToken)?;
        if row.session_revoked {
            return Err(IdentityError::InvalidRefreshToken);
        }
        if row.used || !store::use_refresh_token(&mut tx, &d, now_ms).await? {
            return self.revoke_for_reuse(tx, row.session, row.user, now_ms).await;
        }
        if row.expires_ms <= now_ms {
            return Err(IdentityError::RefreshTokenExpired);
        }
        let user = store::user_by_id(&mut *tx, row.user).await?.ok_or(IdentityError::InvalidRefreshToken)?.user;
        let refresh = self.new_refresh_token(&mut tx, row.session, user.id, now_ms).await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(user.id),
            "session.refreshed",
            "session",
            &row.session.to_db(),
            json!({}),
        )
        .await?;
        tx.commit().await?;
        self.tokens(user, row.session, refresh)
    }

    async fn revoke_for_reuse(
        &self,
        mut tx: Tx,
        session: SessionId,
        user: UserId,
        now_ms: i64,
    ) -> Result<Tokens, IdentityError> {
        store::revoke_session(&mut tx, session, now_ms, "refresh_token_reused").await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::System,
            "session.refresh_token_reused",
            "session",
            &session.to_db(),
            json!({ "user_id": user.to_db() }),
        )
        .await?;
        // Committed, not rolled back: the revocation is the point.
        tx.commit().await?;
        tracing::warn!(%user, %session, "refresh token reuse detected; session revoked");
        Err(IdentityError::RefreshTokenReused)
    }

    /// Ends the session a refresh token belongs to (any token of the family,
    /// spent or not). Unknown or already revoked tokens are not an error:
    /// logging out twice is fine.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), IdentityError> {
        let d = digest(refresh_token);
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        if let Some((session, user)) = store::session_of_refresh_token(&mut tx, &d).await?
            && store::revoke_session(&mut tx, session, now_ms, "logout").await?
        {
            audit::record(
                &mut tx,
                now_ms,
                &Actor::User(user),
                "session.revoked",
                "session",
                &session.to_db(),
                json!({ "reason": "logout" }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The caller's account and organizations.
    pub async fn me(&self, user: UserId) -> Result<Me, IdentityError> {
        let user = store::user_by_id(self.db().reader(), user).await?.ok_or(IdentityError::NotFound)?.user;
        let organizations = membership::organizations_of(self.db(), user.id).await?;
        Ok(Me { user, organizations })
    }

    /// The account with this id, if any.
    pub async fn user(&self, id: UserId) -> Result<Option<User>, IdentityError> {
        Ok(store::user_by_id(self.db().reader(), id).await?.map(|u| u.user))
    }

    // --- email verification and password reset -------------------------------

    /// Spends a one-time token: `invalid_token` when unknown or used,
    /// `token_expired` after its lifetime.
    async fn spend_token(
        &self,
        tx: &mut Tx,
        raw: &str,
        purpose: TokenPurpose,
        now_ms: i64,
    ) -> Result<UserId, IdentityError> {
        let d = digest(raw);
        let (user, expires) =
            store::one_time_token(&mut **tx, &d, purpose).await?.ok_or(IdentityError::InvalidToken)?;
        if expires <= now_ms {
            return Err(IdentityError::TokenExpired);
        }
        if !store::consume_one_time_token(tx, &d, now_ms).await? {
            return Err(IdentityError::InvalidToken);
        }
        Ok(user)
    }

    /// Confirms the address with the token from the verification mail.
    pub async fn verify_email(&self, token: &str) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        let user = self.spend_token(&mut tx, token, TokenPurpose::VerifyEmail, now_ms).await?;
        store::set_email_verified(&mut tx, user).await?;
        audit::record(&mut tx, now_ms, &Actor::User(user), "user.email_verified", "user", &user.to_db(), json!({}))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sends a new verification mail (earlier links stay valid until they
    /// expire). `already_verified` when there is nothing to verify.
    pub async fn resend_verification(&self, user: UserId) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        let u = store::user_by_id(&mut *tx, user).await?.ok_or(IdentityError::NotFound)?.user;
        if u.email_verified {
            return Err(IdentityError::AlreadyVerified);
        }
        let token = random_token();
        store::insert_one_time_token(&mut tx, &digest(&token), u.id, TokenPurpose::VerifyEmail, now_ms).await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(u.id),
            "user.email_verification_requested",
            "user",
            &u.id.to_db(),
            json!({}),
        )
        .await?;
        outbox::append(
            &mut tx,
            now_ms,
            &DomainEvent::EmailVerificationRequested { user_id: u.id, email: u.email.to_string(), token },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Mails a reset link if the address has an account. Always succeeds
    /// from the caller's point of view, so it cannot be used to probe for
    /// accounts.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), IdentityError> {
        let Ok(email) = Email::parse(email) else { return Ok(()) };
        let Some(found) = store::user_by_email(self.db().reader(), email.as_str()).await? else { return Ok(()) };
        let u = found.user;
        let now_ms = self.now_ms();
        let token = random_token();
        let mut tx = self.db().begin().await?;
        store::insert_one_time_token(&mut tx, &digest(&token), u.id, TokenPurpose::ResetPassword, now_ms).await?;
        audit::record(
            &mut tx,
            now_ms,
            &Actor::System,
            "user.password_reset_requested",
            "user",
            &u.id.to_db(),
            json!({}),
        )
        .await?;
        outbox::append(
            &mut tx,
            now_ms,
            &DomainEvent::PasswordResetRequested { user_id: u.id, email: u.email.to_string(), token },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a new password with a reset token and ends every session of the
    /// account (whoever knew the old password is logged out). Returns how
    /// many sessions were ended.
    pub async fn confirm_password_reset(&self, token: &str, new_password: Password) -> Result<u64, IdentityError> {
        // Check the token before paying for a hash, then spend it for real
        // inside the transaction (it may have been used meanwhile).
        let (_, expires) = store::one_time_token(self.db().reader(), &digest(token), TokenPurpose::ResetPassword)
            .await?
            .ok_or(IdentityError::InvalidToken)?;
        if expires <= self.now_ms() {
            return Err(IdentityError::TokenExpired);
        }
        let hash = self.inner.hasher.hash(new_password.expose()).await?;
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        let user = self.spend_token(&mut tx, token, TokenPurpose::ResetPassword, now_ms).await?;
        store::reset_password(&mut tx, user, &hash).await?;
        store::void_one_time_tokens(&mut tx, user, TokenPurpose::ResetPassword, now_ms).await?;
        let revoked = store::revoke_user_sessions(&mut tx, user, now_ms, "password_reset").await?;
        if let Some(u) = store::user_by_id(&mut *tx, user).await? {
            store::clear_login_failures(&mut tx, &email_key(&u.user.email)).await?;
        }
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(user),
            "user.password_reset",
            "user",
            &user.to_db(),
            json!({ "sessions_revoked": revoked }),
        )
        .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    // --- roles ---------------------------------------------------------------

    /// Sets a platform role by email, for the command line (actor: system).
    pub async fn grant_platform_role(&self, email: &Email, role: PlatformRole) -> Result<User, IdentityError> {
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        let user = store::user_by_email(&mut *tx, email.as_str()).await?.ok_or(IdentityError::NotFound)?.user;
        let user = change_role(&mut tx, now_ms, &Actor::System, user, role).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Sets a user's platform role on behalf of a platform admin. The
    /// caller's role is re-read from the database rather than trusted from
    /// the token, so a demoted admin loses the power at once.
    pub async fn set_platform_role(
        &self,
        caller: &Principal,
        target: UserId,
        role: PlatformRole,
    ) -> Result<User, IdentityError> {
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        let caller_role = store::user_by_id(&mut *tx, caller.user_id).await?.map(|u| u.user.platform_role);
        if caller.role != PlatformRole::Admin || caller_role != Some(PlatformRole::Admin) {
            return Err(IdentityError::Forbidden);
        }
        let user = store::user_by_id(&mut *tx, target).await?.ok_or(IdentityError::NotFound)?.user;
        let user = change_role(&mut tx, now_ms, &Actor::User(caller.user_id), user, role).await?;
        tx.commit().await?;
        Ok(user)
    }

    // --- organization members ------------------------------------------------

    /// Adds a member or changes their role; only an owner of the
    /// organization may. Anyone else (including members with lesser roles
    /// and callers naming an organization that does not exist) gets
    /// `not_found`. An organization always keeps at least one owner.
    pub async fn set_member(
        &self,
        caller: &Principal,
        org: OrganizationId,
        email: &Email,
        role: OrgRole,
    ) -> Result<Member, IdentityError> {
        let now_ms = self.now_ms();
        let mut tx = self.db().begin().await?;
        if store::member_role(&mut tx, org, caller.user_id).await? != Some(OrgRole::Owner) {
            return Err(IdentityError::NotFound);
        }
        let target = store::user_by_email(&mut *tx, email.as_str()).await?.ok_or(IdentityError::UnknownMember)?.user;
        let previous = store::member_role(&mut tx, org, target.id).await?;
        membership::set(&mut tx, org, target.id, role, now_ms).await?;
        if store::owner_count(&mut tx, org).await? == 0 {
            return Err(IdentityError::LastOwner);
        }
        audit::record(
            &mut tx,
            now_ms,
            &Actor::User(caller.user_id),
            "organization.member_set",
            "organization",
            &org.to_db(),
            json!({ "user_id": target.id.to_db(), "role": role.as_str(), "previous": previous.map(OrgRole::as_str) }),
        )
        .await?;
        let member = store::members(&mut *tx, org)
            .await?
            .into_iter()
            .find(|m| m.user_id == target.id)
            .ok_or_else(|| IdentityError::Internal("membership vanished inside its transaction".into()))?;
        tx.commit().await?;
        Ok(member)
    }

    /// The members of an organization, for any of its members; `not_found`
    /// for everyone else.
    pub async fn members(&self, caller: &Principal, org: OrganizationId) -> Result<Vec<Member>, IdentityError> {
        if membership::role_of(self.db(), caller.user_id, org).await?.is_none() {
            return Err(IdentityError::NotFound);
        }
        store::members(self.db().reader(), org).await
    }
}

async fn change_role(
    tx: &mut Tx,
    now_ms: i64,
    actor: &Actor,
    mut user: User,
    role: PlatformRole,
) -> Result<User, IdentityError> {
    let previous = user.platform_role;
    store::set_platform_role(tx, user.id, role).await?;
    audit::record(
        tx,
        now_ms,
        actor,
        "user.platform_role_changed",
        "user",
        &user.id.to_db(),
        json!({ "from": previous.as_str(), "to": role.as_str() }),
    )
    .await?;
    user.platform_role = role;
    Ok(user)
}
