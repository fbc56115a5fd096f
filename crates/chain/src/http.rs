//! The pipeline's operator surface: what the chain refused for good, and putting it back in
//! the queue once the cause is fixed. Platform staff only.

use axum::extract::State;
use entrada_primitives::clock::{from_ms, rfc3339};
use entrada_primitives::extract::{Path, Query};
use entrada_primitives::ids::TicketId;
use entrada_primitives::{AuthUser, PlatformRole, Principal, Problem};
use entrada_storage::audit::Actor;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::pipeline::{Pipeline, PipelineError};

/// The operator endpoints, state applied.
pub fn router(pipeline: Pipeline) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(list_failures)).routes(routes!(retry_failed)).with_state(pipeline)
}

fn problem(e: PipelineError) -> Problem {
    Problem::internal(e)
}

fn staff(p: &Principal) -> Result<(), Problem> {
    match p.role {
        PlatformRole::Admin | PlatformRole::Support => Ok(()),
        PlatformRole::Fan => Err(Problem::forbidden("forbidden", "platform staff only")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FailuresQuery {
    /// 1..=500, default 100.
    pub limit: Option<i64>,
}

/// A mint or token operation the chain refused `max_attempts` times.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureOut {
    /// `mint`, `transfer`, `burn` or `attend`.
    pub kind: String,
    pub ticket_id: String,
    pub event_id: String,
    pub token_id: i64,
    pub attempts: i64,
    pub last_error: String,
    /// When it was parked.
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FailuresOut {
    pub items: Vec<FailureOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetryOut {
    /// Mints and operations put back in the queue.
    pub requeued: u64,
}

/// Mints and token operations parked after the chain refused them repeatedly, most recent
/// first (platform admins and support).
#[utoipa::path(get, path = "/api/v1/admin/chain/failures", tag = "chain", params(FailuresQuery),
    responses((status = 200, body = FailuresOut), (status = 403, description = "forbidden"),
              (status = 422, description = "validation_failed")))]
async fn list_failures(
    State(pipeline): State<Pipeline>,
    AuthUser(p): AuthUser,
    Query(q): Query<FailuresQuery>,
) -> Result<axum::Json<FailuresOut>, Problem> {
    staff(&p)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid_field("limit", "must be 1 to 500"));
    }
    let items = pipeline
        .failures(limit)
        .await
        .map_err(problem)?
        .into_iter()
        .map(|f| FailureOut {
            kind: f.kind,
            ticket_id: f.ticket_id,
            event_id: f.event_id,
            token_id: f.token_id,
            attempts: f.attempts,
            last_error: f.last_error,
            since: rfc3339(from_ms(f.since)),
        })
        .collect();
    Ok(axum::Json(FailuresOut { items }))
}

/// Puts a ticket's parked mint and operations back in the queue with fresh attempts, once the
/// cause is fixed (platform admins only). 404 when nothing of the ticket is parked.
#[utoipa::path(post, path = "/api/v1/admin/chain/failures/{ticket_id}/retry", tag = "chain",
    params(("ticket_id" = TicketId, Path)),
    responses((status = 200, body = RetryOut), (status = 403, description = "forbidden"),
              (status = 404, description = "not_found")))]
async fn retry_failed(
    State(pipeline): State<Pipeline>,
    AuthUser(p): AuthUser,
    Path(ticket): Path<TicketId>,
) -> Result<axum::Json<RetryOut>, Problem> {
    if p.role != PlatformRole::Admin {
        return Err(Problem::forbidden("forbidden", "platform admins only"));
    }
    let requeued = pipeline.retry_failed(&Actor::User(p.user_id), &ticket.to_db()).await.map_err(problem)?;
    if requeued == 0 {
        return Err(Problem::not_found("not_found", "nothing of this ticket is parked"));
    }
    Ok(axum::Json(RetryOut { requeued }))
}
