//! Identity's SQL, written once for SQLite and PostgreSQL.

use crate::domain::{IdentityError, TokenPurpose, User};
use crate::membership::OrgRole;
use entrada_primitives::clock::from_ms;
use entrada_primitives::ids::{OrganizationId, SessionId, UserId};
use entrada_primitives::{Email, PlatformRole};
use entrada_storage::{Db, Tx};
use sqlx::{Any, Executor};

// The Any driver cannot decode SQLite's BOOLEAN, so the flag is read as an
// integer on both backends.
const USER_COLUMNS: &str = "id, email, display_name, platform_role, \
     CAST(CASE WHEN email_verified THEN 1 ELSE 0 END AS BIGINT), created_at, password_hash";

type UserRow = (String, String, String, String, i64, i64, String);

/// A user with the password hash, which never leaves the service.
pub(crate) struct UserWithHash {
    pub user: User,
    pub password_hash: String,
}

fn user_from_row(r: UserRow) -> Result<UserWithHash, IdentityError> {
    let (id, email, display_name, role, verified, created_at, password_hash) = r;
    let bad = |what: &str| IdentityError::Internal(format!("corrupted users row: {what}"));
    Ok(UserWithHash {
        user: User {
            id: UserId::from_db(&id).map_err(|_| bad("id"))?,
            email: Email::parse(&email).map_err(|_| bad("email"))?,
            display_name,
            platform_role: PlatformRole::parse(&role).ok_or_else(|| bad("platform_role"))?,
            email_verified: verified != 0,
            created_at: from_ms(created_at),
        },
        password_hash,
    })
}

/// Looks an address up ignoring case (the unique index does the same).
pub(crate) async fn user_by_email<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    email: &str,
) -> Result<Option<UserWithHash>, IdentityError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)");
    let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(email).fetch_optional(ex).await?;
    row.map(user_from_row).transpose()
}

pub(crate) async fn user_by_id<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    id: UserId,
) -> Result<Option<UserWithHash>, IdentityError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).fetch_optional(ex).await?;
    row.map(user_from_row).transpose()
}

pub(crate) async fn insert_user(tx: &mut Tx, user: &User, password_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, platform_role, email_verified, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.id.to_db())
    .bind(user.email.as_str())
    .bind(password_hash)
    .bind(&user.display_name)
    .bind(user.platform_role.as_str())
    .bind(user.email_verified)
    .bind(entrada_primitives::clock::to_ms(user.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sets a new password through the reset flow. Following the emailed link
/// proves the mailbox, so the address counts as verified too.
pub(crate) async fn reset_password(tx: &mut Tx, user: UserId, password_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, email_verified = TRUE WHERE id = $2")
        .bind(password_hash)
        .bind(user.to_db())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn set_email_verified(tx: &mut Tx, user: UserId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1").bind(user.to_db()).execute(&mut **tx).await?;
    Ok(())
}

pub(crate) async fn set_platform_role(tx: &mut Tx, user: UserId, role: PlatformRole) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET platform_role = $1 WHERE id = $2")
        .bind(role.as_str())
        .bind(user.to_db())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

// --- sessions and refresh tokens -------------------------------------------

pub(crate) async fn insert_session(
    tx: &mut Tx,
    session: SessionId,
    user: UserId,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)")
        .bind(session.to_db())
        .bind(user.to_db())
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn insert_refresh_token(
    tx: &mut Tx,
    digest: &str,
    session: SessionId,
    user: UserId,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (digest, session_id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(digest)
    .bind(session.to_db())
    .bind(user.to_db())
    .bind(now_ms)
    .bind(expires_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A presented refresh token and the state of its family.
pub(crate) struct RefreshRow {
    pub session: SessionId,
    pub user: UserId,
    pub expires_ms: i64,
    pub used: bool,
    pub session_revoked: bool,
}

pub(crate) async fn refresh_token(db: &Db, tx: &mut Tx, digest: &str) -> Result<Option<RefreshRow>, IdentityError> {
    // Locks the token row on PostgreSQL so two concurrent presentations of
    // the same token serialise: the second sees `used_at` and counts as reuse.
    let sql = format!(
        "SELECT r.session_id, r.user_id, r.expires_at, r.used_at, s.revoked_at \
         FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.digest = $1{}",
        db.for_update()
    );
    type Row = (String, String, i64, Option<i64>, Option<i64>);
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(digest).fetch_optional(&mut **tx).await?;
    let bad = |what: &str| IdentityError::Internal(format!("corrupted refresh_tokens row: {what}"));
    row.map(|(s, u, exp, used, revoked)| {
        Ok(RefreshRow {
            session: SessionId::from_db(&s).map_err(|_| bad("session_id"))?,
            user: UserId::from_db(&u).map_err(|_| bad("user_id"))?,
            expires_ms: exp,
            used: used.is_some(),
            session_revoked: revoked.is_some(),
        })
    })
    .transpose()
}

/// Marks a refresh token used; false when another request got there first.
pub(crate) async fn use_refresh_token(tx: &mut Tx, digest: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE digest = $2 AND used_at IS NULL")
        .bind(now_ms)
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Revokes one session; false if it was already revoked.
pub(crate) async fn revoke_session(
    tx: &mut Tx,
    session: SessionId,
    now_ms: i64,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let r =
        sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(reason)
            .bind(session.to_db())
            .execute(&mut **tx)
            .await?;
    Ok(r.rows_affected() == 1)
}

/// Revokes every open session of a user; returns how many.
pub(crate) async fn revoke_user_sessions(
    tx: &mut Tx,
    user: UserId,
    now_ms: i64,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now_ms)
    .bind(reason)
    .bind(user.to_db())
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected())
}

/// The session a refresh token belongs to, whatever its state (for logout).
pub(crate) async fn session_of_refresh_token(
    tx: &mut Tx,
    digest: &str,
) -> Result<Option<(SessionId, UserId)>, IdentityError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT session_id, user_id FROM refresh_tokens WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&mut **tx)
            .await?;
    let bad = |_| IdentityError::Internal("corrupted refresh_tokens row".into());
    row.map(|(s, u)| Ok((SessionId::from_db(&s).map_err(bad)?, UserId::from_db(&u).map_err(bad)?))).transpose()
}

// --- one-time tokens ---------------------------------------------------------

pub(crate) async fn insert_one_time_token(
    tx: &mut Tx,
    digest: &str,
    user: UserId,
    purpose: TokenPurpose,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let expires = now_ms + purpose.lifetime().whole_milliseconds() as i64;
    sqlx::query(
        "INSERT INTO one_time_tokens (digest, user_id, purpose, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(digest)
    .bind(user.to_db())
    .bind(purpose.as_str())
    .bind(now_ms)
    .bind(expires)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A one-time token that exists, has this purpose and is unused: its user
/// and expiry.
pub(crate) async fn one_time_token<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    digest: &str,
    purpose: TokenPurpose,
) -> Result<Option<(UserId, i64)>, IdentityError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT user_id, expires_at FROM one_time_tokens WHERE digest = $1 AND purpose = $2 AND used_at IS NULL",
    )
    .bind(digest)
    .bind(purpose.as_str())
    .fetch_optional(ex)
    .await?;
    row.map(|(u, exp)| {
        Ok((UserId::from_db(&u).map_err(|_| IdentityError::Internal("corrupted one_time_tokens row".into()))?, exp))
    })
    .transpose()
}

/// Uses a one-time token; false if it was used concurrently.
pub(crate) async fn consume_one_time_token(tx: &mut Tx, digest: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE one_time_tokens SET used_at = $1 WHERE digest = $2 AND used_at IS NULL")
        .bind(now_ms)
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Voids every outstanding token of a purpose for a user.
pub(crate) async fn void_one_time_tokens(
    tx: &mut Tx,
    user: UserId,
    purpose: TokenPurpose,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE one_time_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL")
        .bind(now_ms)
        .bind(user.to_db())
        .bind(purpose.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

// --- login throttling --------------------------------------------------------

/// (window start, failures) for an address.
pub(crate) async fn login_throttle(db: &Db, key: &str) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT window_start, failures FROM login_throttle WHERE email_key = $1")
        .bind(key)
        .fetch_optional(db.reader())
        .await
}

/// Counts a failure; a window that began before `window_floor_ms` restarts.
pub(crate) async fn record_login_failure(
    tx: &mut Tx,
    key: &str,
    now_ms: i64,
    window_floor_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_throttle (email_key, window_start, failures) VALUES ($1, $2, 1) \
         ON CONFLICT (email_key) DO UPDATE SET \
           failures = CASE WHEN login_throttle.window_start <= $3 THEN 1 ELSE login_throttle.failures + 1 END, \
           window_start = CASE WHEN login_throttle.window_start <= $3 THEN $2 ELSE login_throttle.window_start END",
    )
    .bind(key)
    .bind(now_ms)
    .bind(window_floor_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn clear_login_failures(tx: &mut Tx, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE email_key = $1").bind(key).execute(&mut **tx).await?;
    Ok(())
}

// --- organization members ----------------------------------------------------

/// A member of an organization with their account's public facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: UserId,
    pub email: Email,
    pub display_name: String,
    pub role: OrgRole,
    pub since_ms: i64,
}

pub(crate) async fn members<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    org: OrganizationId,
) -> Result<Vec<Member>, IdentityError> {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT m.user_id, u.email, u.display_name, m.role, m.created_at \
         FROM org_members m JOIN users u ON u.id = m.user_id \
         WHERE m.organization_id = $1 ORDER BY m.created_at, m.user_id",
    )
    .bind(org.to_db())
    .fetch_all(ex)
    .await?;
    let bad = |what: &str| IdentityError::Internal(format!("corrupted org_members row: {what}"));
    rows.into_iter()
        .map(|(u, e, n, r, at)| {
            Ok(Member {
                user_id: UserId::from_db(&u).map_err(|_| bad("user_id"))?,
                email: Email::parse(&e).map_err(|_| bad("email"))?,
                display_name: n,
                role: OrgRole::parse(&r).ok_or_else(|| bad("role"))?,
                since_ms: at,
            })
        })
        .collect()
}

pub(crate) async fn owner_count(tx: &mut Tx, org: OrganizationId) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM org_members WHERE organization_id = $1 AND role = 'owner'")
        .bind(org.to_db())
        .fetch_one(&mut **tx)
        .await?;
    Ok(n)
}

pub(crate) async fn member_role(
    tx: &mut Tx,
    org: OrganizationId,
    user: UserId,
) -> Result<Option<OrgRole>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT role FROM org_members WHERE organization_id = $1 AND user_id = $2")
            .bind(org.to_db())
            .bind(user.to_db())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.and_then(|(r,)| OrgRole::parse(&r)))
}
