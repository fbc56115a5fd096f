//! The audit log: every state change records who did what to which object and
//! when (invariant 9 of the brief), in the same transaction as the change.

use crate::db::Tx;
use crate::script::Script;
use entrada_primitives::ids::UserId;
use sqlx::Any;
use sqlx::any::AnyArguments;

/// Who caused a change.
#[derive(Debug, Clone)]
pub enum Actor {
    User(UserId),
    /// A background job (hold expiry, outbox consumer).
    System,
    /// A payment provider's webhook, named by provider.
    Provider(&'static str),
}

impl Actor {
    fn parts(&self) -> (&'static str, Option<String>) {
        match self {
            Actor::User(u) => ("user", Some(u.to_db())),
            Actor::System => ("system", None),
            Actor::Provider(p) => ("provider", Some((*p).to_owned())),
        }
    }
}

/// Records one change. `action` is a dotted code such as `event.published`.
pub async fn record(
    tx: &mut Tx,
    at_ms: i64,
    actor: &Actor,
    action: &str,
    object_type: &str,
    object_id: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    insert(at_ms, actor, action, object_type, object_id, &details).execute(&mut **tx).await?;
    Ok(())
}

/// Adds the record of one change to `script`, which the caller runs in the
/// transaction that makes the change.
pub fn push(
    script: &mut Script,
    at_ms: i64,
    actor: &Actor,
    action: &str,
    object_type: &str,
    object_id: &str,
    details: serde_json::Value,
) {
    script.push(insert(at_ms, actor, action, object_type, object_id, &details));
}

fn insert(
    at_ms: i64,
    actor: &Actor,
    action: &str,
    object_type: &str,
    object_id: &str,
    details: &serde_json::Value,
) -> sqlx::query::Query<'static, Any, AnyArguments> {
    let (actor_type, actor_id) = actor.parts();
    sqlx::query(
        "INSERT INTO audit_log (at, actor_type, actor_id, action, object_type, object_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(at_ms)
    .bind(actor_type)
    .bind(actor_id)
    .bind(action.to_owned())
    .bind(object_type.to_owned())
    .bind(object_id.to_owned())
    .bind(details.to_string())
}
