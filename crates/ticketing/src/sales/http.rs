//! The sale's HTTP surface: holds, orders, checkout, refunds, the buyer's
//! orders and tickets; wire types; the one mapping of sale errors to
//! problem+json.
//!
//! Request bodies ignore unknown members (a tolerant reader): a `price` sent
//! by a client is never read, the server prices every position from its
//! ticket types, and clients built against a newer schema keep working.

use super::domain::{Hold, HoldRequest, Order, SalesError, Ticket, TicketToken};
use super::service::Sales;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use entrada_primitives::clock::{from_ms, rfc3339};
use entrada_primitives::extract::{Json, MaybeIdempotencyKey, Path, Query};
use entrada_primitives::ids::{EventId, HoldId, OrderId, OrganizationId, PaymentId, TicketId, TicketTypeId};
use entrada_primitives::page::{Page, PageParams};
use entrada_primitives::{AuthUser, Money, Problem};
use entrada_storage::idempotency;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The sale's routes, state applied.
pub fn router(sales: Sales) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_hold))
        .routes(routes!(get_hold, release_hold))
        .routes(routes!(create_order))
        .routes(routes!(get_order))
        .routes(routes!(checkout))
        .routes(routes!(refund))
        .routes(routes!(order_tickets))
        .routes(routes!(my_orders))
        .routes(routes!(my_tickets))
        .routes(routes!(my_ticket))
        .with_state(sales)
}

impl From<SalesError> for Problem {
    fn from(e: SalesError) -> Self {
        match e {
            SalesError::NotFound => Problem::not_found("not_found", "no such resource"),
            SalesError::Forbidden => Problem::forbidden("forbidden", "your role does not allow this"),
            SalesError::Invalid { field, message } => Problem::invalid_field(&field, message),
            SalesError::EventNotOnSale => Problem::conflict("event_not_on_sale", "the event is not on sale"),
            SalesError::SaleNotStarted(t) => {
                Problem::conflict("sale_not_started", "the sale of this ticket type has not started")
                    .with("ticket_type_id", t.to_string())
            }
            SalesError::SaleEnded(t) => Problem::conflict("sale_ended", "the sale of this ticket type has ended")
                .with("ticket_type_id", t.to_string()),
            SalesError::QuantityOutOfRange { ticket_type_id, message } => {
                let p = Problem::unprocessable("quantity_out_of_range", message);
                match ticket_type_id {
                    Some(t) => p.with("ticket_type_id", t.to_string()),
                    None => p,
                }
            }
            SalesError::SoldOut(t) => Problem::conflict("sold_out", "not enough tickets of this type are left")
                .with("ticket_type_id", t.to_string()),
            SalesError::HoldExpired => Problem::gone("hold_expired", "the hold expired; its tickets were released"),
            SalesError::HoldNotActive => {
                Problem::conflict("hold_not_active", "the hold was already converted, released or expired")
            }
            SalesError::OrderNotRefundable => {
                Problem::conflict("order_not_refundable", "only paid orders can be refunded")
            }
            SalesError::OrderNotPayable => Problem::conflict("order_not_payable", "the order is not awaiting payment"),
            SalesError::Payment(p) => p,
            e @ (SalesError::Storage(_) | SalesError::Corrupt(_)) => Problem::internal(e),
        }
    }
}

/// Money on the wire: integer minor units and an ISO 4217 code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MoneyView {
    pub amount_minor: i64,
    pub currency: String,
}

impl From<Money> for MoneyView {
    fn from(m: Money) -> Self {
        Self { amount_minor: m.minor, currency: m.currency.as_str().to_owned() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HoldItemBody {
    pub ticket_type_id: TicketTypeId,
    /// At least 1 and within the ticket type's per-order limits.
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateHoldBody {
    pub event_id: EventId,
    /// Distinct ticket types, at most 100 tickets in total.
    pub items: Vec<HoldItemBody>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HoldView {
    pub id: HoldId,
    pub event_id: EventId,
    /// `active | converted | released | expired`.
    pub status: String,
    /// RFC 3339; the inventory is given back after this instant.
    pub expires_at: String,
    pub created_at: String,
    pub items: Vec<HoldItemBody>,
}

impl From<&Hold> for HoldView {
    fn from(h: &Hold) -> Self {
        Self {
            id: h.id,
            event_id: h.event_id,
            status: h.status.as_str().to_owned(),
            expires_at: rfc3339(from_ms(h.expires_at_ms)),
            created_at: rfc3339(from_ms(h.created_at_ms)),
            items: h
                .items
                .iter()
                .map(|l| HoldItemBody { ticket_type_id: l.ticket_type_id, quantity: l.quantity })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateOrderBody {
    pub hold_id: HoldId,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PositionView {
    pub id: String,
    pub ticket_type_id: TicketTypeId,
    /// The server's price at order time.
    pub price: MoneyView,
    pub position: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub id: OrderId,
    pub event_id: EventId,
    pub organization_id: OrganizationId,
    /// `pending | paid | refunded | expired | cancelled`.
    pub status: String,
    pub positions: Vec<PositionView>,
    pub total: MoneyView,
    /// RFC 3339; an unpaid order expires after this instant.
    pub payment_deadline: String,
    /// The provider's page to pay on; absent until the payment was started.
    pub checkout_url: Option<String>,
    pub payment_id: Option<PaymentId>,
    /// Why the last payment attempt failed, if it did.
    pub last_payment_error: Option<String>,
    pub created_at: String,
    pub paid_at: Option<String>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id,
            event_id: o.event_id,
            organization_id: o.organization_id,
            status: o.status.as_str().to_owned(),
            positions: o
                .positions
                .iter()
                .map(|p| PositionView {
                    id: p.id.clone(),
                    ticket_type_id: p.ticket_type_id,
                    price: p.price.into(),
                    position: p.position,
                })
                .collect(),
            total: o.total.into(),
            payment_deadline: rfc3339(from_ms(o.payment_deadline_ms)),
            checkout_url: o.checkout_url.clone(),
            payment_id: o.payment_id,
            last_payment_error: o.last_payment_error.clone(),
            created_at: rfc3339(from_ms(o.created_at_ms)),
            paid_at: o.paid_at_ms.map(|t| rfc3339(from_ms(t))),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketView {
    pub id: TicketId,
    pub event_id: EventId,
    pub ticket_type_id: TicketTypeId,
    pub order_id: OrderId,
    /// The ticket's number within its event (the future token id).
    pub serial: i64,
    /// `valid | cancelled`.
    pub status: String,
    /// Bumped when the ticket changes holder; old credentials stop admitting.
    pub generation: i64,
    pub issued_at: String,
    /// The ticket's ERC-721 token; absent until the chain pipeline has seen the ticket
    /// (moments after issue). The ticket admits whatever this says.
    pub chain: Option<TokenView>,
}

/// Where a ticket's token is on its way to the chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    /// `embedded` (the chain inside this deployment) or `rpc` (an EVM network).
    pub network: String,
    /// EIP-155 chain id.
    pub chain_id: i64,
    /// The event's ERC-721 collection; absent until it exists on chain.
    pub contract: Option<String>,
    /// The token id: the ticket's serial, as a decimal string.
    pub token_id: String,
    /// `pending` (waiting for its batch), `submitted` (in a transaction), `confirmed` (on
    /// chain), `burned` (refunded or cancelled; never minted if it had not been yet), or
    /// `failed` (refused by the chain; an operator looks at it).
    pub status: String,
    /// The address the token was minted or last moved to.
    pub owner: Option<String>,
    /// The mint transaction, or the burn once burned; absent while pending, or when the
    /// outcome was learned by reading the chain after a lost answer.
    pub tx_hash: Option<String>,
}

impl From<&TicketToken> for TokenView {
    fn from(t: &TicketToken) -> Self {
        Self {
            network: t.network.clone(),
            chain_id: t.chain_id,
            contract: t.contract.clone(),
            token_id: t.token_id.to_string(),
            status: t.status.clone(),
            owner: t.owner.clone(),
            tx_hash: t.tx_hash.clone(),
        }
    }
}

impl From<&Ticket> for TicketView {
    fn from(t: &Ticket) -> Self {
        Self {
            id: t.id,
            event_id: t.event_id,
            ticket_type_id: t.ticket_type_id,
            order_id: t.order_id,
            serial: t.serial,
            status: t.status.as_str().to_owned(),
            generation: t.generation,
            issued_at: rfc3339(from_ms(t.issued_at_ms)),
            chain: t.token.as_ref().map(TokenView::from),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TicketPage {
    pub items: Vec<TicketView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RefundBody {
    /// Shown in the audit log and passed to the payment provider.
    pub reason: Option<String>,
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, Problem> {
    serde_json::to_value(v).map_err(Problem::internal)
}

/// Reserve tickets for a few minutes.
#[utoipa::path(post, path = "/api/v1/holds", tag = "sales", request_body = CreateHoldBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same body")),
    responses(
        (status = 201, description = "Held", body = HoldView),
        (status = 404, description = "`not_found`: unknown event"),
        (status = 409, description = "`sold_out`, `event_not_on_sale`, `sale_not_started`, `sale_ended`"),
        (status = 422, description = "`quantity_out_of_range`, `validation_failed`"),
    ))]
async fn create_hold(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    Json(body): Json<CreateHoldBody>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let bytes = serde_json::to_vec(&body).map_err(Problem::internal)?;
    let scope = format!("{}:POST /api/v1/holds", who.user_id);
    let out = idempotency::run(sales.db(), sales.now_ms(), &scope, key.as_ref(), &bytes, || async {
        let req = HoldRequest {
            event_id: body.event_id,
            items: body.items.iter().map(|i| (i.ticket_type_id, i.quantity)).collect(),
        };
        let hold = sales.create_hold(&who, req).await?;
        Ok((StatusCode::CREATED, to_value(&HoldView::from(&hold))?))
    })
    .await?;
    Ok((out.status, Json(out.body)))
}

/// One of the caller's holds.
#[utoipa::path(get, path = "/api/v1/holds/{id}", tag = "sales",
    params(("id" = HoldId, Path, description = "Hold id")),
    responses((status = 200, body = HoldView), (status = 404, description = "`not_found`")))]
async fn get_hold(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Path(id): Path<HoldId>,
) -> Result<Json<HoldView>, Problem> {
    Ok(Json(HoldView::from(&sales.get_hold(&who, id).await?)))
}

/// Give a hold's tickets back.
#[utoipa::path(delete, path = "/api/v1/holds/{id}", tag = "sales",
    params(("id" = HoldId, Path, description = "Hold id")),
    responses((status = 200, body = HoldView), (status = 404, description = "`not_found`"),
        (status = 409, description = "`hold_not_active`")))]
async fn release_hold(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Path(id): Path<HoldId>,
) -> Result<Json<HoldView>, Problem> {
    Ok(Json(HoldView::from(&sales.release_hold(&who, id).await?)))
}

/// Turn a hold into an order and start its payment.
#[utoipa::path(post, path = "/api/v1/orders", tag = "sales", request_body = CreateOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same body")),
    responses(
        (status = 201, description = "Placed; pay at `checkout_url` before `payment_deadline`", body = OrderView),
        (status = 404, description = "`not_found`: unknown hold or someone else's"),
        (status = 409, description = "`hold_not_active`"),
        (status = 410, description = "`hold_expired`"),
        (status = 422, description = "`idempotency_key_reused`"),
    ))]
async fn create_order(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    Json(body): Json<CreateOrderBody>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let bytes = serde_json::to_vec(&body).map_err(Problem::internal)?;
    let scope = format!("{}:POST /api/v1/orders", who.user_id);
    let out = idempotency::run(sales.db(), sales.now_ms(), &scope, key.as_ref(), &bytes, || async {
        let order = sales.place_order(&who, body.hold_id).await?;
        Ok((StatusCode::CREATED, to_value(&OrderView::from(&order))?))
    })
    .await?;
    Ok((out.status, Json(out.body)))
}

/// An order, for its buyer, its organization's members, or support.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "sales",
    params(("id" = OrderId, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, description = "`not_found`")))]
async fn get_order(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, Problem> {
    Ok(Json(OrderView::from(&sales.get_order(&who, id).await?)))
}

/// Start (or retry starting) the payment of a pending order.
#[utoipa::path(post, path = "/api/v1/orders/{id}/checkout", tag = "sales",
    params(("id" = OrderId, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 404, description = "`not_found`"),
        (status = 409, description = "`order_not_payable`"),
        (status = 503, description = "`payments_unavailable`")))]
async fn checkout(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, Problem> {
    Ok(Json(OrderView::from(&sales.checkout(&who, id).await?)))
}

/// Refund a paid order (organization owner or manager, or support).
#[utoipa::path(post, path = "/api/v1/orders/{id}/refund", tag = "sales", request_body(content = Option<RefundBody>),
    params(("id" = OrderId, Path, description = "Order id")),
    responses((status = 200, body = OrderView), (status = 400, description = "`malformed_json`"),
        (status = 403, description = "`forbidden`"), (status = 404, description = "`not_found`"),
        (status = 409, description = "`order_not_refundable`"),
        (status = 422, description = "`invalid_body`, `validation_failed`")))]
async fn refund(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Path(id): Path<OrderId>,
    body: Bytes,
) -> Result<Json<OrderView>, Problem> {
    // Optional body: read as bytes, see `optional_json`.
    let body: RefundBody = entrada_primitives::extract::optional_json(&body)?;
    let reason = body.reason.unwrap_or_else(|| "requested_by_organizer".to_owned());
    if reason.chars().count() > 500 {
        return Err(Problem::invalid_field("reason", "at most 500 characters"));
    }
    Ok(Json(OrderView::from(&sales.refund(&who, id, &reason).await?)))
}

/// The tickets of one order.
#[utoipa::path(get, path = "/api/v1/orders/{id}/tickets", tag = "sales",
    params(("id" = OrderId, Path, description = "Order id")),
    responses((status = 200, body = Vec<TicketView>), (status = 404, description = "`not_found`")))]
async fn order_tickets(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Path(id): Path<OrderId>,
) -> Result<Json<Vec<TicketView>>, Problem> {
    let tickets = sales.order_tickets(&who, id).await?;
    Ok(Json(tickets.iter().map(TicketView::from).collect()))
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/v1/me/orders", tag = "sales",
    params(("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = OrderPage)))]
async fn my_orders(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Query(params): Query<PageParams>,
) -> Result<Json<OrderPage>, Problem> {
    let page: Page<Order> = sales.my_orders(&who, &params.parse()?).await?;
    Ok(Json(OrderPage { items: page.items.iter().map(OrderView::from).collect(), next_cursor: page.next_cursor }))
}

/// The tickets the caller holds, newest first.
#[utoipa::path(get, path = "/api/v1/me/tickets", tag = "sales",
    params(("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = TicketPage)))]
async fn my_tickets(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Query(params): Query<PageParams>,
) -> Result<Json<TicketPage>, Problem> {
    let page: Page<Ticket> = sales.my_tickets(&who, &params.parse()?).await?;
    Ok(Json(TicketPage { items: page.items.iter().map(TicketView::from).collect(), next_cursor: page.next_cursor }))
}

/// One ticket the caller holds, with its token.
#[utoipa::path(get, path = "/api/v1/me/tickets/{id}", tag = "sales",
    params(("id" = TicketId, Path, description = "Ticket id")),
    responses((status = 200, body = TicketView), (status = 404, description = "`not_found`: unknown, or someone else's")))]
async fn my_ticket(
    State(sales): State<Sales>,
    AuthUser(who): AuthUser,
    Path(id): Path<TicketId>,
) -> Result<Json<TicketView>, Problem> {
    Ok(Json(TicketView::from(&sales.my_ticket(&who, id).await?)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_sale_error_has_its_stable_code_and_status() {
        let t = TicketTypeId::new();
        let cases: Vec<(SalesError, u16, &str)> = vec![
            (SalesError::NotFound, 404, "not_found"),
            (SalesError::Forbidden, 403, "forbidden"),
            (SalesError::invalid("items", "empty"), 422, "validation_failed"),
            (SalesError::EventNotOnSale, 409, "event_not_on_sale"),
            (SalesError::SaleNotStarted(t), 409, "sale_not_started"),
            (SalesError::SaleEnded(t), 409, "sale_ended"),
            (
                SalesError::QuantityOutOfRange { ticket_type_id: None, message: "x".into() },
                422,
                "quantity_out_of_range",
            ),
            (SalesError::SoldOut(t), 409, "sold_out"),
            (SalesError::HoldExpired, 410, "hold_expired"),
            (SalesError::HoldNotActive, 409, "hold_not_active"),
            (SalesError::OrderNotRefundable, 409, "order_not_refundable"),
            (SalesError::OrderNotPayable, 409, "order_not_payable"),
            (SalesError::Corrupt("x".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let p = Problem::from(e);
            assert_eq!((p.status.as_u16(), p.code.as_ref()), (status, code));
        }
        let sold_out = Problem::from(SalesError::SoldOut(t)).body();
        assert_eq!(sold_out["ticket_type_id"], t.to_string());
    }

    #[test]
    fn a_client_price_is_not_part_of_the_order_request() {
        let body: CreateOrderBody =
            serde_json::from_str(&format!(r#"{{"hold_id":"{}","price":1}}"#, HoldId::new())).unwrap();
        let echoed = serde_json::to_value(&body).unwrap();
        assert!(echoed.get("price").is_none());
    }
}
