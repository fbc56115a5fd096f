//! Sale types and rules without I/O: hold validation, the quota needs of a
//! cart, order and hold states, the sale's error codes.

use entrada_primitives::ids::{
    EventId, HoldId, OrderId, OrganizationId, PaymentId, QuotaId, TicketId, TicketTypeId, UserId,
};
use entrada_primitives::money::MoneyError;
use entrada_primitives::{Currency, Money};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The most tickets one order may hold, across all its types.
pub const MAX_TICKETS_PER_ORDER: i64 = 100;

/// Why a sale operation was refused. Each variant maps to one stable
/// problem code in `http.rs`.
#[derive(Debug, thiserror::Error)]
pub enum SalesError {
    /// Unknown, or not visible to the caller (never reveals existence).
    #[error("not found")]
    NotFound,
    /// The caller may see the object but not do this to it.
    #[error("forbidden")]
    Forbidden,
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the event is not on sale")]
    EventNotOnSale,
    #[error("the sale of {0} has not started")]
    SaleNotStarted(TicketTypeId),
    #[error("the sale of {0} has ended")]
    SaleEnded(TicketTypeId),
    #[error("quantity out of range: {message}")]
    QuantityOutOfRange { ticket_type_id: Option<TicketTypeId>, message: String },
    #[error("{0} is sold out")]
    SoldOut(TicketTypeId),
    #[error("the hold has expired")]
    HoldExpired,
    #[error("the hold is not active")]
    HoldNotActive,
    #[error("the order cannot be refunded in its current state")]
    OrderNotRefundable,
    #[error("the order is not awaiting payment")]
    OrderNotPayable,
    /// The payment service refused or is unavailable; its problem is shown.
    #[error("payment service: {0}")]
    Payment(entrada_primitives::Problem),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// A stored row that cannot be read back (a corrupted id or currency).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl SalesError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

impl From<MoneyError> for SalesError {
    fn from(e: MoneyError) -> Self {
        Self::Corrupt(format!("money: {e}"))
    }
}

impl From<uuid::Error> for SalesError {
    fn from(e: uuid::Error) -> Self {
        Self::Corrupt(format!("id: {e}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Active,
    Converted,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Converted => "converted",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Result<Self, SalesError> {
        Ok(match s {
            "active" => Self::Active,
            "converted" => Self::Converted,
            "released" => Self::Released,
            "expired" => Self::Expired,
            other => return Err(SalesError::Corrupt(format!("hold status {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Placed, inventory taken, waiting for the money until the deadline.
    Pending,
    Paid,
    Refunded,
    /// The deadline passed unpaid; inventory was given back.
    Expired,
    /// A payment arrived that could not be honoured; it is refunded.
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Refunded => "refunded",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<Self, SalesError> {
        Ok(match s {
            "pending" => Self::Pending,
            "paid" => Self::Paid,
            "refunded" => Self::Refunded,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            other => return Err(SalesError::Corrupt(format!("order status {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketStatus {
    Valid,
    Cancelled,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Result<Self, SalesError> {
        Ok(match s {
            "valid" => Self::Valid,
            "cancelled" => Self::Cancelled,
            other => return Err(SalesError::Corrupt(format!("ticket status {other:?}"))),
        })
    }
}

/// What a buyer asks to reserve, as received (not yet validated).
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub event_id: EventId,
    pub items: Vec<(TicketTypeId, i64)>,
}

/// The event facts the sale rules need.
#[derive(Debug, Clone)]
pub struct EventForSale {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub name: String,
    /// `draft | published | on_sale | sales_closed | ended | cancelled`.
    pub status: String,
    pub ends_at_ms: i64,
}

/// The ticket-type facts the sale rules need; prices only ever come from here.
#[derive(Debug, Clone)]
pub struct TypeForSale {
    pub id: TicketTypeId,
    pub event_id: EventId,
    pub name: String,
    pub price: Money,
    pub min_per_order: i64,
    pub max_per_order: i64,
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
}

/// One validated cart line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLine {
    pub ticket_type_id: TicketTypeId,
    /// At least 1, within the type's per-order limits.
    pub quantity: i64,
}

/// Checks a cart against the event, its ticket types and the clock. Draft
/// events answer `NotFound`: they are not public yet.
pub fn validate_hold(
    req: &HoldRequest,
    event: &EventForSale,
    types: &HashMap<TicketTypeId, TypeForSale>,
    now_ms: i64,
) -> Result<Vec<HoldLine>, SalesError> {
    if event.status == "draft" {
        return Err(SalesError::NotFound);
    }
    if event.status != "on_sale" {
        return Err(SalesError::EventNotOnSale);
    }
    if req.items.is_empty() {
        return Err(SalesError::invalid("items", "must name at least one ticket type"));
    }
    let mut seen = HashSet::new();
    let mut total: i64 = 0;
    let mut lines = Vec::with_capacity(req.items.len());
    for (i, (type_id, quantity)) in req.items.iter().enumerate() {
        if !seen.insert(*type_id) {
            return Err(SalesError::invalid(
                format!("items[{i}].ticket_type_id"),
                "each ticket type may appear only once",
            ));
        }
        let Some(t) = types.get(type_id).filter(|t| t.event_id == event.id) else {
            return Err(SalesError::invalid(format!("items[{i}].ticket_type_id"), "not a ticket type of this event"));
        };
        if *quantity < 1 || *quantity < t.min_per_order || *quantity > t.max_per_order {
            return Err(SalesError::QuantityOutOfRange {
                ticket_type_id: Some(t.id),
                message: format!("{}: between {} and {} per order", t.name, t.min_per_order.max(1), t.max_per_order),
            });
        }
        total = total.saturating_add(*quantity);
        lines.push(HoldLine { ticket_type_id: t.id, quantity: *quantity });
    }
    if total > MAX_TICKETS_PER_ORDER {
        return Err(SalesError::QuantityOutOfRange {
            ticket_type_id: None,
            message: format!("at most {MAX_TICKETS_PER_ORDER} tickets per order"),
        });
    }
    if now_ms >= event.ends_at_ms {
        return Err(SalesError::SaleEnded(lines[0].ticket_type_id));
    }
    for line in &lines {
        if let Some(t) = types.get(&line.ticket_type_id) {
            if t.sale_starts_at_ms.is_some_and(|s| now_ms < s) {
                return Err(SalesError::SaleNotStarted(t.id));
            }
            if t.sale_ends_at_ms.is_some_and(|e| now_ms >= e) {
                return Err(SalesError::SaleEnded(t.id));
            }
        }
    }
    Ok(lines)
}

/// How much one quota must grow for a cart, and which ticket type to name
/// if it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaNeed {
    pub quantity: i64,
    pub first_type: TicketTypeId,
}

/// Sums the cart per quota. A `BTreeMap`, so callers walk the quotas in
/// ascending id order: every transaction locks quota rows in the same order
/// and two carts sharing quotas cannot deadlock on PostgreSQL.
///
/// A ticket type covered by no quota at all is not for sale (pretix's rule:
/// no quota, no availability), so it answers `SoldOut`.
pub fn quota_needs(
    lines: &[HoldLine],
    quotas_of: &HashMap<TicketTypeId, Vec<QuotaId>>,
) -> Result<BTreeMap<QuotaId, QuotaNeed>, SalesError> {
    let mut needs: BTreeMap<QuotaId, QuotaNeed> = BTreeMap::new();
    for line in lines {
        let quotas = quotas_of.get(&line.ticket_type_id).filter(|q| !q.is_empty());
        let Some(quotas) = quotas else {
            return Err(SalesError::SoldOut(line.ticket_type_id));
        };
        for q in quotas {
            let need = needs.entry(*q).or_insert(QuotaNeed { quantity: 0, first_type: line.ticket_type_id });
            need.quantity = need.quantity.saturating_add(line.quantity);
        }
    }
    Ok(needs)
}

/// Sums the same per-quota quantities for releasing inventory; a type with
/// no quota took nothing and gives nothing back.
pub fn quota_releases(lines: &[HoldLine], quotas_of: &HashMap<TicketTypeId, Vec<QuotaId>>) -> BTreeMap<QuotaId, i64> {
    let mut out: BTreeMap<QuotaId, i64> = BTreeMap::new();
    for line in lines {
        for q in quotas_of.get(&line.ticket_type_id).map(Vec::as_slice).unwrap_or(&[]) {
            *out.entry(*q).or_insert(0) += line.quantity;
        }
    }
    out
}

/// The server-priced total of an order, with checked arithmetic: a mixed
/// currency or an overflow is refused, never wrapped.
pub fn order_total(currency: Currency, prices: &[Money]) -> Result<Money, MoneyError> {
    prices.iter().try_fold(Money::zero(currency), |acc, p| acc.checked_add(*p))
}

/// A reservation of inventory for one buyer.
#[derive(Debug, Clone)]
pub struct Hold {
    pub id: HoldId,
    pub event_id: EventId,
    pub user_id: UserId,
    pub status: HoldStatus,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
    pub items: Vec<HoldLine>,
}

/// One admission bought in an order, at the server's price.
#[derive(Debug, Clone)]
pub struct Position {
    pub id: String,
    pub ticket_type_id: TicketTypeId,
    pub price: Money,
    pub position: i64,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderId,
    pub event_id: EventId,
    pub organization_id: OrganizationId,
    pub buyer_id: UserId,
    pub hold_id: HoldId,
    pub status: OrderStatus,
    pub total: Money,
    pub payment_id: Option<PaymentId>,
    pub checkout_url: Option<String>,
    pub payment_deadline_ms: i64,
    pub last_payment_error: Option<String>,
    pub created_at_ms: i64,
    pub paid_at_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    pub positions: Vec<Position>,
}

#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: TicketId,
    pub event_id: EventId,
    pub ticket_type_id: TicketTypeId,
    pub order_id: OrderId,
    pub serial: i64,
    pub holder_id: UserId,
    pub status: TicketStatus,
    pub generation: i64,
    pub issued_at_ms: i64,
    /// The ticket's token, once the chain pipeline has recorded it.
    pub token: Option<TicketToken>,
}

/// A ticket's ERC-721 token as the chain pipeline records it. Read from the chain context's
/// `chain_tokens` and `chain_collections` tables (read only, documented in `docs/chain.md`),
/// so ticketing shows the token without depending on the chain crate or calling a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketToken {
    /// `embedded` or `rpc`.
    pub network: String,
    pub chain_id: i64,
    /// The event's collection, once it exists on chain.
    pub contract: Option<String>,
    /// The ticket's serial.
    pub token_id: i64,
    /// `pending | submitted | confirmed | burned | failed`.
    pub status: String,
    /// The address the token was minted or last moved to.
    pub owner: Option<String>,
    /// The mint (or, once burned, the burn) transaction.
    pub tx_hash: Option<String>,
}

/// What one expiry sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    pub holds_expired: u64,
    pub orders_expired: u64,
}

/// One quota's counter beside the facts it should equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCheck {
    pub quota_id: QuotaId,
    pub name: String,
    pub size: i64,
    /// The guarded counter.
    pub used: i64,
    /// Positions of paid orders with a valid ticket.
    pub sold: i64,
    /// Positions of pending orders (including those past their deadline
    /// that the next sweep will expire).
    pub pending: i64,
    /// Units in active holds that have not expired yet.
    pub held: i64,
    /// Units in active holds past `expires_at` that the sweep has not
    /// released yet: still counted in `used`, no longer sellable to the
    /// holder.
    pub held_overdue: i64,
}

impl QuotaCheck {
    /// The counter equals the facts.
    pub fn consistent(&self) -> bool {
        self.used == self.sold + self.pending + self.held + self.held_overdue
    }

    /// Invariant 1: sold + pending + unexpired holds never exceed the size.
    pub fn within_size(&self) -> bool {
        self.sold + self.pending + self.held <= self.size && self.used <= self.size
    }
}

/// Parses `order:<uuid>`, the payment reference this context uses.
pub fn order_reference(order_id: OrderId) -> String {
    format!("order:{order_id}")
}

/// The order named by a payment reference, if it is one of ours.
pub fn parse_order_reference(reference: &str) -> Option<OrderId> {
    reference.strip_prefix("order:").and_then(|s| OrderId::from_db(s).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    fn fixture(now: i64) -> (EventForSale, HashMap<TicketTypeId, TypeForSale>, TicketTypeId) {
        let event = EventForSale {
            id: EventId::new(),
            organization_id: OrganizationId::new(),
            name: "Gig".into(),
            status: "on_sale".into(),
            ends_at_ms: now + 1_000_000,
        };
        let t = TypeForSale {
            id: TicketTypeId::new(),
            event_id: event.id,
            name: "GA".into(),
            price: eur(2500),
            min_per_order: 2,
            max_per_order: 4,
            sale_starts_at_ms: Some(now - 10),
            sale_ends_at_ms: Some(now + 10),
        };
        let id = t.id;
        (event, HashMap::from([(id, t)]), id)
    }

    #[test]
    fn a_cart_within_limits_and_windows_is_accepted() {
        let (event, types, ga) = fixture(1_000);
        let req = HoldRequest { event_id: event.id, items: vec![(ga, 3)] };
        let lines = validate_hold(&req, &event, &types, 1_000).unwrap();
        assert_eq!(lines, vec![HoldLine { ticket_type_id: ga, quantity: 3 }]);
    }

    #[test]
    fn carts_outside_the_rules_are_refused_with_their_reason() {
        let (event, types, ga) = fixture(1_000);
        let check = |items: Vec<(TicketTypeId, i64)>, now: i64| {
            validate_hold(&HoldRequest { event_id: event.id, items }, &event, &types, now).unwrap_err()
        };
        assert!(matches!(check(vec![], 1_000), SalesError::Invalid { .. }));
        assert!(matches!(check(vec![(ga, 2), (ga, 2)], 1_000), SalesError::Invalid { .. }));
        assert!(matches!(check(vec![(TicketTypeId::new(), 2)], 1_000), SalesError::Invalid { .. }));
        assert!(matches!(check(vec![(ga, 1)], 1_000), SalesError::QuantityOutOfRange { .. }));
        assert!(matches!(check(vec![(ga, 5)], 1_000), SalesError::QuantityOutOfRange { .. }));
        assert!(matches!(check(vec![(ga, 0)], 1_000), SalesError::QuantityOutOfRange { .. }));
        assert!(matches!(check(vec![(ga, 2)], 989), SalesError::SaleNotStarted(_)));
        assert!(matches!(check(vec![(ga, 2)], 1_010), SalesError::SaleEnded(_)));
    }

    #[test]
    fn events_not_on_sale_refuse_and_drafts_stay_hidden() {
        let (mut event, types, ga) = fixture(1_000);
        let req = HoldRequest { event_id: event.id, items: vec![(ga, 2)] };
        event.status = "sales_closed".into();
        assert!(matches!(validate_hold(&req, &event, &types, 1_000), Err(SalesError::EventNotOnSale)));
        event.status = "draft".into();
        assert!(matches!(validate_hold(&req, &event, &types, 1_000), Err(SalesError::NotFound)));
    }

    #[test]
    fn quota_needs_sum_per_quota_in_id_order_and_uncovered_types_are_sold_out() {
        let a = TicketTypeId::new();
        let b = TicketTypeId::new();
        let q1 = QuotaId::new();
        let q2 = QuotaId::new();
        let map = HashMap::from([(a, vec![q2, q1]), (b, vec![q1])]);
        let lines = [HoldLine { ticket_type_id: a, quantity: 2 }, HoldLine { ticket_type_id: b, quantity: 3 }];
        let needs = quota_needs(&lines, &map).unwrap();
        let order: Vec<_> = needs.keys().copied().collect();
        let mut sorted = vec![q1, q2];
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(needs[&q1].quantity, 5);
        assert_eq!(needs[&q2].quantity, 2);
        let orphan = [HoldLine { ticket_type_id: TicketTypeId::new(), quantity: 1 }];
        assert!(matches!(quota_needs(&orphan, &map), Err(SalesError::SoldOut(_))));
    }

    #[test]
    fn totals_use_checked_arithmetic() {
        let eur_c = Currency::parse("EUR").unwrap();
        assert_eq!(order_total(eur_c, &[eur(2500), eur(2500)]).unwrap().minor, 5000);
        assert!(order_total(eur_c, &[eur(i64::MAX), eur(1)]).is_err());
        let usd = Money::new(1, Currency::parse("USD").unwrap());
        assert!(order_total(eur_c, &[usd]).is_err());
    }

    #[test]
    fn order_references_round_trip() {
        let id = OrderId::new();
        assert_eq!(parse_order_reference(&order_reference(id)), Some(id));
        assert_eq!(parse_order_reference("payout:123"), None);
    }
}
