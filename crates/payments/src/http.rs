//! HTTP: the provider webhook endpoint, the sandbox's hosted checkout pages,
//! wire types, and the one mapping of payment errors to problem+json.

use crate::domain::{PaymentsError, ProviderError};
use crate::service::Payments;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use entrada_primitives::Problem;
use entrada_primitives::extract::{Json, Path};
use entrada_primitives::ids::PaymentId;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

impl From<PaymentsError> for Problem {
    fn from(e: PaymentsError) -> Problem {
        match e {
            PaymentsError::NotFound => Problem::not_found("not_found", "no such payment"),
            PaymentsError::NotPayable => {
                Problem::conflict("payment_not_payable", "this payment has already been paid or has failed")
            }
            PaymentsError::NotRefundable => {
                Problem::conflict("payment_not_refundable", "only a captured payment can be refunded")
            }
            PaymentsError::Invalid(field, msg) => Problem::invalid_field(field, msg),
            PaymentsError::Webhook(w) => Problem::bad_request(w.code(), w.to_string()),
            PaymentsError::Provider(ProviderError::Unavailable(cause)) => {
                tracing::warn!(%cause, "payment provider unavailable");
                Problem::unavailable("provider_unavailable", "the payment provider is unavailable; try again")
            }
            PaymentsError::Provider(ProviderError::Rejected { code }) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "provider_rejected",
                format!("the payment provider refused the request ({code})"),
            ),
            PaymentsError::Storage(e) => Problem::internal(e),
            PaymentsError::Corrupt(e) => Problem::internal(e),
        }
    }
}

/// The acknowledgement of a webhook delivery.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAck {
    pub received: bool,
}

/// A sandbox card payment (JSON form of the checkout page's POST).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxPayRequest {
    /// A sandbox test card number, e.g. `4242424242424242`.
    pub card: String,
}

/// The outcome of a sandbox card payment, as the buyer's browser sees it.
/// Entrada itself learns it only from the webhook.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxPayResponse {
    pub payment_id: PaymentId,
    /// `succeeded`, `pending` or `failed`.
    pub status: String,
    /// Why a card was declined: `card_declined` or `insufficient_funds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
}

/// Receives a provider webhook. The raw body is verified against the
/// provider's signature scheme before anything in it is read.
#[utoipa::path(
    post,
    path = "/api/v1/payments/webhooks/{provider}",
    tag = "payments",
    params(("provider" = String, Path, description = "`sandbox` or `stripe`; only the configured provider answers")),
    request_body(content = String, content_type = "application/json", description = "the provider's signed event"),
    responses(
        (status = 200, description = "applied, or a replay / unknown payment acknowledged", body = WebhookAck),
        (status = 400, description = "`invalid_signature`, `stale_webhook` or `malformed_webhook`", content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: not the configured provider", content_type = "application/problem+json"),
    )
)]
async fn receive_webhook(
    State(svc): State<Payments>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAck>, Problem> {
    svc.receive_webhook(&provider, &headers, &body).await?;
    Ok(Json(WebhookAck { received: true }))
}

/// The sandbox's hosted checkout page (HTML, excluded from OpenAPI).
async fn checkout_page(State(svc): State<Payments>, Path(payment_id): Path<PaymentId>) -> Result<Response, Problem> {
    let sandbox = svc.sandbox().ok_or_else(|| Problem::not_found("not_found", "no such page"))?;
    let charge = sandbox.charge(payment_id).await?.ok_or(PaymentsError::NotFound)?;
    Ok(Html(crate::sandbox::checkout_page(&charge)).into_response())
}

/// Pays on the sandbox checkout page: a browser form post (`card=…`) is
/// redirected back to the return URL; a JSON post gets JSON.
async fn checkout_pay(
    State(svc): State<Payments>,
    Path(payment_id): Path<PaymentId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let sandbox = svc.sandbox().ok_or_else(|| Problem::not_found("not_found", "no such page"))?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
    let req: SandboxPayRequest = if is_json {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                Problem::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
            } else {
                Problem::unprocessable("invalid_body", format!("the body does not match the schema: {e}"))
            }
        })?
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|_| Problem::invalid_field("card", "enter a card number"))?
    };
    let res = sandbox.pay(payment_id, &req.card).await?;
    if is_json {
        let out = SandboxPayResponse {
            payment_id,
            status: res.status.to_owned(),
            decline_code: res.decline_code.map(str::to_owned),
        };
        return Ok(Json(out).into_response());
    }
    let sep = if res.return_url.contains('?') { '&' } else { '?' };
    Ok(Redirect::to(&format!("{}{sep}payment={payment_id}&status={}", res.return_url, res.status)).into_response())
}

/// The payments routes with state applied: the webhook endpoint (in the
/// OpenAPI document) and, when the sandbox is the provider, its checkout
/// pages (plain routes, not part of the public API).
pub fn router(svc: Payments) -> OpenApiRouter {
    let mut r = OpenApiRouter::new().routes(routes!(receive_webhook));
    if svc.sandbox().is_some() {
        r = r.route("/sandbox/checkout/{payment_id}", axum::routing::get(checkout_page).post(checkout_pay));
    }
    r.with_state(svc)
}

impl Payments {
    /// Same as [`router`].
    pub fn router(&self) -> OpenApiRouter {
        router(self.clone())
    }
}
