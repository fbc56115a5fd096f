//! Organization membership: which users act for which organization, and in
//! which role. Other contexts call these functions to authorize organizer
//! actions (invariant 8: an organizer acts only on their organization).

use entrada_primitives::ids::{OrganizationId, UserId};
use entrada_storage::{Db, Tx};

/// A member's role in one organization, from most to least powerful.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    /// Read-only: sees sales and reports.
    Viewer,
    /// Manages events, ticket types, quotas, refunds.
    Manager,
    /// Everything, including members.
    Owner,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Manager => "manager",
            Self::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "manager" => Some(Self::Manager),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// Adds or changes a membership inside the caller's transaction.
pub async fn set(
    tx: &mut Tx,
    org: OrganizationId,
    user: UserId,
    role: OrgRole,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO org_members (organization_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(org.to_db())
    .bind(user.to_db())
    .bind(role.as_str())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The user's role in the organization, if any.
pub async fn role_of(db: &Db, user: UserId, org: OrganizationId) -> Result<Option<OrgRole>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT role FROM org_members WHERE organization_id = $1 AND user_id = $2")
            .bind(org.to_db())
            .bind(user.to_db())
            .fetch_optional(db.reader())
            .await?;
    Ok(row.and_then(|(r,)| OrgRole::parse(&r)))
}

/// The organizations the user belongs to, with roles.
pub async fn organizations_of(db: &Db, user: UserId) -> Result<Vec<(OrganizationId, OrgRole)>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT organization_id, role FROM org_members WHERE user_id = $1 ORDER BY created_at")
            .bind(user.to_db())
            .fetch_all(db.reader())
            .await?;
    Ok(rows.into_iter().filter_map(|(o, r)| Some((OrganizationId::from_db(&o).ok()?, OrgRole::parse(&r)?))).collect())
}
