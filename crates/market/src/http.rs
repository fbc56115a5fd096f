//! The market's HTTP surface: gifts, listings, purchases, resale terms and
//! the public ticket history; wire types; the one mapping of market errors
//! to problem+json.
//!
//! Authorization rule: an object the caller may not act on answers 404
//! `not_found`, exactly like an object that does not exist (another fan's
//! ticket, listing, gift or purchase), so ids cannot be probed. Request
//! bodies carry no price the server trusts except a seller's asking price,
//! which is checked against the cap the server computes from face value.

use crate::domain::MarketError;
use crate::service::{History, Market, ResaleTerms};
use crate::store::{GiftRow, ListingRow, PurchaseRow};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use entrada_primitives::clock::{from_ms, rfc3339};
use entrada_primitives::extract::{Json, MaybeIdempotencyKey, Path};
use entrada_primitives::ids::{EventId, TicketId};
use entrada_primitives::{AuthUser, Currency, Email, Money, Problem};
use entrada_storage::idempotency;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The market's routes, state applied.
pub fn router(market: Market) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(offer_gift))
        .routes(routes!(get_gift))
        .routes(routes!(accept_gift))
        .routes(routes!(decline_gift))
        .routes(routes!(cancel_gift))
        .routes(routes!(my_gifts))
        .routes(routes!(resale_terms))
        .routes(routes!(create_listing))
        .routes(routes!(get_listing, reprice))
        .routes(routes!(withdraw))
        .routes(routes!(event_listings))
        .routes(routes!(my_listings))
        .routes(routes!(purchase))
        .routes(routes!(get_purchase))
        .routes(routes!(my_purchases))
        .routes(routes!(history))
        .routes(routes!(history_by_serial))
        .with_state(market)
}

impl From<MarketError> for Problem {
    fn from(e: MarketError) -> Self {
        use MarketError::*;
        match e {
            NotFound => Problem::not_found("not_found", "no such resource"),
            Invalid { field, message } => Problem::invalid_field(field, message),
            Policy(r) => Problem::conflict(r.code(), r.message()),
            PriceAboveCap { cap_minor, currency } => {
                Problem::unprocessable("price_above_cap", "the price is above the organizer's resale cap")
                    .with("cap", serde_json::json!({ "amount_minor": cap_minor, "currency": currency.as_str() }))
            }
            CurrencyMismatch { expected } => {
                Problem::unprocessable("currency_mismatch", "the price must be in the event currency")
                    .with("currency", expected.as_str())
            }
            TicketNotTransferable => {
                Problem::conflict("ticket_not_transferable", "the ticket was cancelled or refunded and cannot move")
            }
            TicketCheckedIn => {
                Problem::conflict("ticket_checked_in", "the ticket was already used for entry and cannot move")
            }
            TicketExported => Problem::conflict(
                "ticket_exported",
                "the ticket's token was exported to an external wallet; it moves there, not inside Entrada",
            ),
            TicketListed => Problem::conflict("ticket_listed", "the ticket is listed for resale; withdraw it first"),
            GiftPending => Problem::conflict("gift_pending", "the ticket has a pending gift offer; cancel it first"),
            GiftNotPending => Problem::conflict("gift_not_pending", "the gift offer is no longer pending"),
            GiftExpired => Problem::gone("gift_expired", "the gift offer expired"),
            ClaimTokenInvalid => Problem::forbidden(
                "claim_token_invalid",
                "send the claim token from the gift mail to accept an invitation",
            ),
            SelfGift => Problem::unprocessable("self_gift", "you cannot give a ticket to yourself"),
            ListingUnavailable => Problem::conflict(
                "listing_unavailable",
                "the listing was sold, is reserved by another buyer or was withdrawn",
            ),
            ListingNotActive => Problem::conflict("listing_not_active", "the listing is sold, reserved or withdrawn"),
            OwnListing => Problem::conflict("own_listing", "you cannot buy your own listing"),
            Payment(p) => p,
            e @ (Storage(_) | Corrupt(_)) => Problem::internal(e),
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

/// The highest asking price accepted, minor units (ten million in major units).
const MAX_PRICE_MINOR: i64 = 1_000_000_000;

impl MoneyView {
    fn parse(&self) -> Result<Money, Problem> {
        let c = Currency::parse(&self.currency)
            .map_err(|_| Problem::invalid_field("price.currency", "an ISO 4217 code such as EUR"))?;
        // An upper bound keeps every sum of prices far inside i64, whatever the cap.
        if !(1..=MAX_PRICE_MINOR).contains(&self.amount_minor) {
            return Err(Problem::invalid_field("price.amount_minor", format!("must be 1 to {MAX_PRICE_MINOR}")));
        }
        Ok(Money::new(self.amount_minor, c))
    }
}

fn ts(ms: i64) -> String {
    rfc3339(from_ms(ms))
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, Problem> {
    serde_json::to_value(v).map_err(Problem::internal)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OfferGiftBody {
    /// The recipient's email address; they need no account yet.
    pub recipient_email: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AcceptGiftBody {
    /// The claim token from the gift mail. Required when the offer was made
    /// to an address that had no account at the time (an invitation).
    pub claim_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GiftView {
    pub id: Uuid,
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub recipient_email: String,
    /// `pending | accepted | declined | cancelled | expired | void`.
    pub status: String,
    pub expires_at: String,
    pub created_at: String,
    pub closed_at: Option<String>,
    /// True for the caller's own offers (outgoing).
    pub sent_by_me: bool,
}

impl GiftView {
    fn of(g: &GiftRow, me: entrada_primitives::ids::UserId) -> Self {
        Self {
            id: g.id,
            ticket_id: g.ticket_id,
            event_id: g.event_id,
            recipient_email: g.recipient_email.clone(),
            status: g.status.clone(),
            expires_at: ts(g.expires_at),
            created_at: ts(g.created_at),
            closed_at: g.closed_at.map(ts),
            sent_by_me: g.sender_id == me,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyGiftsView {
    /// Pending offers to the caller's account or address.
    pub incoming: Vec<GiftView>,
    /// The caller's offers, newest first.
    pub outgoing: Vec<GiftView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceBody {
    /// The asking price; at most the cap (`GET /api/v1/tickets/{id}/resale-terms`).
    pub price: MoneyView,
}

/// A listing as anyone sees it: no seller.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListingView {
    pub id: Uuid,
    pub event_id: EventId,
    pub ticket_id: TicketId,
    pub serial: i64,
    pub ticket_type: String,
    pub price: MoneyView,
    /// The order position's price.
    pub face_value: MoneyView,
    /// The cap at listing time; `null` when the organizer set none.
    pub cap: Option<MoneyView>,
    /// `active | held | sold | withdrawn` (`held`: a buyer is paying).
    pub status: String,
    /// `seller | window_closed | freeze | resale_disabled | ticket_changed | event_closed`.
    pub withdraw_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&ListingRow> for ListingView {
    fn from(l: &ListingRow) -> Self {
        let cur = l.price.currency;
        Self {
            id: l.id,
            event_id: l.event_id,
            ticket_id: l.ticket_id,
            serial: l.serial,
            ticket_type: l.ticket_type.clone(),
            price: l.price.into(),
            face_value: Money::new(l.face_minor, cur).into(),
            cap: l.cap_minor.map(|c| Money::new(c, cur).into()),
            status: l.status.clone(),
            withdraw_reason: l.withdraw_reason.clone(),
            created_at: ts(l.created_at),
            updated_at: ts(l.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListingList {
    pub items: Vec<ListingView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PurchaseView {
    pub id: Uuid,
    pub listing_id: Uuid,
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub price: MoneyView,
    /// What the seller receives, the organizer's royalty and the platform
    /// fee; they add up to `price` exactly.
    pub seller_proceeds: MoneyView,
    pub royalty: MoneyView,
    pub fee: MoneyView,
    /// `pending | completed | expired | refunded | cancelled`.
    pub status: String,
    pub checkout_url: Option<String>,
    pub last_payment_error: Option<String>,
    /// Pay before this instant, or the listing goes back on sale.
    pub expires_at: String,
    pub created_at: String,
    pub completed_at: Option<String>,
}

impl From<&PurchaseRow> for PurchaseView {
    fn from(p: &PurchaseRow) -> Self {
        let m = |minor| MoneyView::from(Money::new(minor, p.currency));
        Self {
            id: p.id,
            listing_id: p.listing_id,
            ticket_id: p.ticket_id,
            event_id: p.event_id,
            price: m(p.price_minor),
            seller_proceeds: m(p.seller_minor),
            royalty: m(p.royalty_minor),
            fee: m(p.fee_minor),
            status: p.status.clone(),
            checkout_url: p.checkout_url.clone(),
            last_payment_error: p.last_payment_error.clone(),
            expires_at: ts(p.expires_at),
            created_at: ts(p.created_at),
            completed_at: p.completed_at.map(ts),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseList {
    pub items: Vec<PurchaseView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResaleTermsView {
    pub ticket_id: TicketId,
    pub face_value: MoneyView,
    /// The highest asking price allowed now; `null` when uncapped.
    pub cap: Option<MoneyView>,
    pub royalty_bps: i64,
    pub fee_bps: i64,
    pub resales_so_far: i64,
    /// `null` when a gift offer would be accepted now, else the problem code it would get.
    pub gift_refusal: Option<String>,
    /// `null` when a listing would be accepted now, else the problem code it would get.
    pub resale_refusal: Option<String>,
}

impl From<&ResaleTerms> for ResaleTermsView {
    fn from(t: &ResaleTerms) -> Self {
        Self {
            ticket_id: t.ticket_id,
            face_value: t.face.into(),
            cap: t.cap_minor.map(|c| Money::new(c, t.face.currency).into()),
            royalty_bps: t.royalty_bps,
            fee_bps: t.fee_bps,
            resales_so_far: t.resales_so_far,
            gift_refusal: t.gift_refusal.map(str::to_owned),
            resale_refusal: t.resale_refusal.map(str::to_owned),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntryView {
    /// `issued | minted | gift | resale | checked_in`, in time order.
    pub kind: String,
    pub at: String,
    /// Pseudonymous, per ticket: `holder 1`, `holder 2`, …
    pub from: Option<String>,
    pub to: Option<String>,
    /// Face value for `issued`, the price paid for `resale`.
    pub price: Option<MoneyView>,
    /// The cap that applied to a resale.
    pub cap: Option<MoneyView>,
    /// For `minted`: the token, its mint transaction and its collection.
    pub token: Option<TokenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// The ERC-721 token id (the ticket's serial).
    pub token_id: i64,
    pub tx_hash: String,
    /// The event's collection contract, 0x-hex.
    pub contract: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub serial: i64,
    pub ticket_type: String,
    /// False once cancelled or refunded.
    pub valid: bool,
    pub entries: Vec<HistoryEntryView>,
}

impl From<&History> for HistoryView {
    fn from(h: &History) -> Self {
        Self {
            ticket_id: h.ticket_id,
            event_id: h.event_id,
            serial: h.serial,
            ticket_type: h.ticket_type.clone(),
            valid: h.valid,
            entries: h
                .entries
                .iter()
                .map(|e| HistoryEntryView {
                    kind: e.kind.to_owned(),
                    at: ts(e.at),
                    from: e.from.clone(),
                    to: e.to.clone(),
                    price: e.price.map(Into::into),
                    cap: match (e.cap_minor, e.price) {
                        (Some(c), Some(p)) => Some(Money::new(c, p.currency).into()),
                        _ => None,
                    },
                    token: e.token.as_ref().map(|(token_id, tx_hash, contract)| TokenView {
                        token_id: *token_id,
                        tx_hash: tx_hash.clone(),
                        contract: contract.clone(),
                    }),
                })
                .collect(),
        }
    }
}

const IDEMPOTENCY: &str = "Replays the first response for the same body";

/// Offer one of your tickets to someone by email.
#[utoipa::path(post, path = "/api/v1/tickets/{id}/gifts", tag = "market", request_body = OfferGiftBody,
    params(("id" = TicketId, Path, description = "Ticket id"),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY)),
    responses(
        (status = 201, description = "Offered; the recipient is mailed", body = GiftView),
        (status = 404, description = "`not_found`: unknown ticket or not yours"),
        (status = 409, description = "`transfers_not_allowed`, `transfers_frozen`, `event_closed`, `ticket_not_transferable`, `ticket_checked_in`, `ticket_exported`, `ticket_listed`, `gift_pending`"),
        (status = 422, description = "`validation_failed`, `self_gift`"),
    ))]
async fn offer_gift(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    Path(id): Path<TicketId>,
    Json(body): Json<OfferGiftBody>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let email = Email::parse(&body.recipient_email)
        .map_err(|_| Problem::invalid_field("recipient_email", "not a valid email address"))?;
    let bytes = serde_json::to_vec(&body).map_err(Problem::internal)?;
    let scope = format!("{}:POST /api/v1/tickets/{id}/gifts", who.user_id);
    let out = idempotency::run(m.db(), m.now_ms(), &scope, key.as_ref(), &bytes, || async {
        let g = m.offer_gift(&who, id, &email).await?;
        Ok((StatusCode::CREATED, to_value(&GiftView::of(&g, who.user_id))?))
    })
    .await?;
    Ok((out.status, Json(out.body)))
}

/// A gift you sent or may accept.
#[utoipa::path(get, path = "/api/v1/gifts/{id}", tag = "market", params(("id" = Uuid, Path, description = "Gift id")),
    responses((status = 200, body = GiftView), (status = 404, description = "`not_found`")))]
async fn get_gift(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<GiftView>, Problem> {
    Ok(Json(GiftView::of(&m.get_gift(&who, id).await?, who.user_id)))
}

/// Accept a gift: the ticket becomes yours and its earlier QR codes stop admitting.
#[utoipa::path(post, path = "/api/v1/gifts/{id}/accept", tag = "market", request_body(content = Option<AcceptGiftBody>),
    params(("id" = Uuid, Path, description = "Gift id")),
    responses(
        (status = 200, description = "Accepted; the ticket is in your wallet", body = GiftView),
        (status = 400, description = "`malformed_json`"),
        (status = 403, description = "`claim_token_invalid`"),
        (status = 404, description = "`not_found`: unknown gift or not addressed to you"),
        (status = 409, description = "`gift_not_pending`, `transfers_not_allowed`, `transfers_frozen`, `event_closed`, `ticket_not_transferable`, `ticket_checked_in`, `ticket_exported`, `ticket_listed`"),
        (status = 410, description = "`gift_expired`"),
        (status = 422, description = "`invalid_body`, `validation_failed`"),
    ))]
async fn accept_gift(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<Uuid>,
    body: Bytes,
) -> Result<Json<GiftView>, Problem> {
    // Optional body (a recipient with an account sends none): read as
    // bytes, see `optional_json`.
    let body: AcceptGiftBody = entrada_primitives::extract::optional_json(&body)?;
    if body.claim_token.as_ref().is_some_and(|t| t.len() > 200) {
        return Err(Problem::invalid_field("claim_token", "at most 200 characters"));
    }
    let g = m.accept_gift(&who, id, body.claim_token.as_deref()).await?;
    Ok(Json(GiftView::of(&g, who.user_id)))
}

/// Decline a gift offered to you.
#[utoipa::path(post, path = "/api/v1/gifts/{id}/decline", tag = "market",
    params(("id" = Uuid, Path, description = "Gift id")),
    responses((status = 200, body = GiftView), (status = 404, description = "`not_found`"),
        (status = 409, description = "`gift_not_pending`"), (status = 410, description = "`gift_expired`")))]
async fn decline_gift(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<GiftView>, Problem> {
    Ok(Json(GiftView::of(&m.decline_gift(&who, id).await?, who.user_id)))
}

/// Cancel a gift you offered, while it is pending.
#[utoipa::path(post, path = "/api/v1/gifts/{id}/cancel", tag = "market",
    params(("id" = Uuid, Path, description = "Gift id")),
    responses((status = 200, body = GiftView), (status = 404, description = "`not_found`"),
        (status = 409, description = "`gift_not_pending`"), (status = 410, description = "`gift_expired`")))]
async fn cancel_gift(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<GiftView>, Problem> {
    Ok(Json(GiftView::of(&m.cancel_gift(&who, id).await?, who.user_id)))
}

/// Gifts offered to you (pending) and the ones you offered.
#[utoipa::path(get, path = "/api/v1/me/gifts", tag = "market", responses((status = 200, body = MyGiftsView)))]
async fn my_gifts(State(m): State<Market>, AuthUser(who): AuthUser) -> Result<Json<MyGiftsView>, Problem> {
    let g = m.my_gifts(&who).await?;
    Ok(Json(MyGiftsView {
        incoming: g.incoming.iter().map(|x| GiftView::of(x, who.user_id)).collect(),
        outgoing: g.outgoing.iter().map(|x| GiftView::of(x, who.user_id)).collect(),
    }))
}

/// What you may do with your ticket now: the cap, royalty and fee, and
/// whether a gift or a listing would be refused (and with which code).
#[utoipa::path(get, path = "/api/v1/tickets/{id}/resale-terms", tag = "market",
    params(("id" = TicketId, Path, description = "Ticket id")),
    responses((status = 200, body = ResaleTermsView), (status = 404, description = "`not_found`")))]
async fn resale_terms(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<TicketId>,
) -> Result<Json<ResaleTermsView>, Problem> {
    Ok(Json((&m.resale_terms(&who, id).await?).into()))
}

/// List your ticket for resale at a price within the cap.
#[utoipa::path(post, path = "/api/v1/tickets/{id}/listings", tag = "market", request_body = PriceBody,
    params(("id" = TicketId, Path, description = "Ticket id"),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY)),
    responses(
        (status = 201, description = "Listed", body = ListingView),
        (status = 404, description = "`not_found`: unknown ticket or not yours"),
        (status = 409, description = "`resale_not_allowed`, `transfers_not_allowed`, `resale_window_not_open`, `resale_window_closed`, `resale_frozen`, `resale_limit_reached`, `event_closed`, `ticket_not_transferable`, `ticket_checked_in`, `ticket_exported`, `ticket_listed`, `gift_pending`"),
        (status = 422, description = "`price_above_cap` (with `cap`), `currency_mismatch`, `validation_failed`"),
    ))]
async fn create_listing(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    Path(id): Path<TicketId>,
    Json(body): Json<PriceBody>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let price = body.price.parse()?;
    let bytes = serde_json::to_vec(&body).map_err(Problem::internal)?;
    let scope = format!("{}:POST /api/v1/tickets/{id}/listings", who.user_id);
    let out = idempotency::run(m.db(), m.now_ms(), &scope, key.as_ref(), &bytes, || async {
        let l = m.create_listing(&who, id, price).await?;
        Ok((StatusCode::CREATED, to_value(&ListingView::from(&l))?))
    })
    .await?;
    Ok((out.status, Json(out.body)))
}

/// One listing (public).
#[utoipa::path(get, path = "/api/v1/listings/{id}", tag = "market",
    params(("id" = Uuid, Path, description = "Listing id")),
    responses((status = 200, body = ListingView), (status = 404, description = "`not_found`")))]
async fn get_listing(State(m): State<Market>, Path(id): Path<Uuid>) -> Result<Json<ListingView>, Problem> {
    Ok(Json((&m.get_listing(id).await?).into()))
}

/// Change the price of your active listing.
#[utoipa::path(patch, path = "/api/v1/listings/{id}", tag = "market", request_body = PriceBody,
    params(("id" = Uuid, Path, description = "Listing id")),
    responses((status = 200, body = ListingView), (status = 404, description = "`not_found`: unknown or not yours"),
        (status = 409, description = "`listing_not_active`, a resale policy code"),
        (status = 422, description = "`price_above_cap`, `currency_mismatch`, `validation_failed`")))]
async fn reprice(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<PriceBody>,
) -> Result<Json<ListingView>, Problem> {
    let price = body.price.parse()?;
    Ok(Json((&m.reprice(&who, id, price).await?).into()))
}

/// Take your listing down.
#[utoipa::path(post, path = "/api/v1/listings/{id}/withdraw", tag = "market",
    params(("id" = Uuid, Path, description = "Listing id")),
    responses((status = 200, body = ListingView), (status = 404, description = "`not_found`: unknown or not yours"),
        (status = 409, description = "`listing_not_active`: sold, reserved by a paying buyer, or withdrawn")))]
async fn withdraw(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<ListingView>, Problem> {
    Ok(Json((&m.withdraw(&who, id).await?).into()))
}

/// Resale offers a buyer can take now for an event, cheapest first (public).
#[utoipa::path(get, path = "/api/v1/events/{id}/listings", tag = "market",
    params(("id" = EventId, Path, description = "Event id")),
    responses((status = 200, body = ListingList), (status = 404, description = "`not_found`")))]
async fn event_listings(State(m): State<Market>, Path(id): Path<EventId>) -> Result<Json<ListingList>, Problem> {
    let items = m.event_listings(id).await?;
    Ok(Json(ListingList { items: items.iter().map(ListingView::from).collect() }))
}

/// Your listings, newest first.
#[utoipa::path(get, path = "/api/v1/me/listings", tag = "market", responses((status = 200, body = ListingList)))]
async fn my_listings(State(m): State<Market>, AuthUser(who): AuthUser) -> Result<Json<ListingList>, Problem> {
    let items = m.my_listings(&who).await?;
    Ok(Json(ListingList { items: items.iter().map(ListingView::from).collect() }))
}

/// Buy a listing: reserves it for you and opens the payment at the listing's price.
#[utoipa::path(post, path = "/api/v1/listings/{id}/purchase", tag = "market",
    params(("id" = Uuid, Path, description = "Listing id"),
        ("Idempotency-Key" = Option<String>, Header, description = IDEMPOTENCY)),
    responses(
        (status = 201, description = "Reserved; pay at `checkout_url` before `expires_at`", body = PurchaseView),
        (status = 404, description = "`not_found`"),
        (status = 409, description = "`listing_unavailable`, `own_listing`, `ticket_exported`, a resale policy code"),
        (status = 503, description = "`payments_unavailable`"),
    ))]
async fn purchase(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    MaybeIdempotencyKey(key): MaybeIdempotencyKey,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let scope = format!("{}:POST /api/v1/listings/{id}/purchase", who.user_id);
    let out = idempotency::run(m.db(), m.now_ms(), &scope, key.as_ref(), b"", || async {
        let p = m.purchase(&who, id).await?;
        Ok((StatusCode::CREATED, to_value(&PurchaseView::from(&p))?))
    })
    .await?;
    Ok((out.status, Json(out.body)))
}

/// One of your resale purchases.
#[utoipa::path(get, path = "/api/v1/resale-purchases/{id}", tag = "market",
    params(("id" = Uuid, Path, description = "Purchase id")),
    responses((status = 200, body = PurchaseView), (status = 404, description = "`not_found`")))]
async fn get_purchase(
    State(m): State<Market>,
    AuthUser(who): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<Json<PurchaseView>, Problem> {
    Ok(Json((&m.get_purchase(&who, id).await?).into()))
}

/// Your resale purchases, newest first.
#[utoipa::path(get, path = "/api/v1/me/resale-purchases", tag = "market", responses((status = 200, body = PurchaseList)))]
async fn my_purchases(State(m): State<Market>, AuthUser(who): AuthUser) -> Result<Json<PurchaseList>, Problem> {
    let items = m.my_purchases(&who).await?;
    Ok(Json(PurchaseList { items: items.iter().map(PurchaseView::from).collect() }))
}

/// A ticket's public history: issued, each gift and resale (with its price
/// beside the cap), checked in. Holders are pseudonymous.
#[utoipa::path(get, path = "/api/v1/tickets/{id}/history", tag = "market",
    params(("id" = TicketId, Path, description = "Ticket id")),
    responses((status = 200, body = HistoryView), (status = 404, description = "`not_found`")))]
async fn history(State(m): State<Market>, Path(id): Path<TicketId>) -> Result<Json<HistoryView>, Problem> {
    Ok(Json((&m.history(id).await?).into()))
}

/// The same history, found by event and serial (the token id), as printed
/// on a ticket or read from the chain.
#[utoipa::path(get, path = "/api/v1/events/{id}/tickets/{serial}/history", tag = "market",
    params(("id" = EventId, Path, description = "Event id"), ("serial" = i64, Path, description = "Ticket serial")),
    responses((status = 200, body = HistoryView), (status = 404, description = "`not_found`")))]
async fn history_by_serial(
    State(m): State<Market>,
    Path((id, serial)): Path<(EventId, i64)>,
) -> Result<Json<HistoryView>, Problem> {
    Ok(Json((&m.history_by_serial(id, serial).await?).into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::Refusal;

    #[test]
    fn every_market_error_has_its_stable_code_and_status() {
        let eur = Currency::parse("EUR").unwrap();
        let cases: Vec<(MarketError, u16, &str)> = vec![
            (MarketError::NotFound, 404, "not_found"),
            (MarketError::invalid("price", "x"), 422, "validation_failed"),
            (MarketError::Policy(Refusal::Frozen), 409, "resale_frozen"),
            (MarketError::Policy(Refusal::TransfersFrozen), 409, "transfers_frozen"),
            (MarketError::Policy(Refusal::ResaleLimitReached), 409, "resale_limit_reached"),
            (MarketError::PriceAboveCap { cap_minor: 2750, currency: eur }, 422, "price_above_cap"),
            (MarketError::CurrencyMismatch { expected: eur }, 422, "currency_mismatch"),
            (MarketError::TicketNotTransferable, 409, "ticket_not_transferable"),
            (MarketError::TicketCheckedIn, 409, "ticket_checked_in"),
            (MarketError::TicketExported, 409, "ticket_exported"),
            (MarketError::TicketListed, 409, "ticket_listed"),
            (MarketError::GiftPending, 409, "gift_pending"),
            (MarketError::GiftNotPending, 409, "gift_not_pending"),
            (MarketError::GiftExpired, 410, "gift_expired"),
            (MarketError::ClaimTokenInvalid, 403, "claim_token_invalid"),
            (MarketError::SelfGift, 422, "self_gift"),
            (MarketError::ListingUnavailable, 409, "listing_unavailable"),
            (MarketError::ListingNotActive, 409, "listing_not_active"),
            (MarketError::OwnListing, 409, "own_listing"),
            (MarketError::Corrupt("x".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let p = Problem::from(e);
            assert_eq!((p.status.as_u16(), p.code.as_ref()), (status, code));
        }
        let cap = Problem::from(MarketError::PriceAboveCap { cap_minor: 2750, currency: eur }).body();
        assert_eq!(cap["cap"]["amount_minor"], 2750);
    }
}
