//! The sale's use cases: hold, order, checkout, refund, expiry and the
//! inventory check. Transactions are short and never span a call to the
//! payment service (SQLite has one writer; PostgreSQL row locks would be held
//! across a network round trip).

use super::domain::{
    self, ExpiryReport, Hold, HoldLine, HoldRequest, HoldStatus, Order, OrderStatus, Position, QuotaCheck, SalesError,
    Ticket,
};
use super::store;
use entrada_identity::membership::{self, OrgRole};
use entrada_payments::{Checkout, NewPayment, Payments};
use entrada_primitives::ids::{EventId, HoldId, OrderId, PaymentId, QuotaId, TicketId, TicketTypeId};
use entrada_primitives::page::{Page, PageRequest};
use entrada_primitives::{Principal, Problem, SharedClock};
use entrada_storage::audit::{self, Actor};
use entrada_storage::events::DomainEvent;
use entrada_storage::outbox::{self, Consumer};
use entrada_storage::{Backend, Db, Script, Tx, WriteError};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

/// The payment service as the sale sees it: the two calls it makes. A trait,
/// so the wiring passes the real [`Payments`] and tests a recording stand-in.
#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Creates (or returns the existing) payment for `req.reference`.
    async fn create_payment(&self, req: NewPayment) -> Result<Checkout, Problem>;
    /// [`PaymentGateway::create_payment`], then the caller's record of the
    /// checkout (`record` adds its statements to a script) written to `db`.
    /// The payment service commits it in the same write as its own record.
    async fn create_payment_recorded(
        &self,
        db: &Db,
        req: NewPayment,
        record: RecordCheckout,
    ) -> Result<Checkout, Problem> {
        let checkout = self.create_payment(req).await?;
        let mut script = db.script();
        record(&checkout, &mut script);
        db.write(script).await.map_err(|e| Problem::internal(sqlx::Error::from(e)))?;
        Ok(checkout)
    }
    /// Refunds a captured payment in full; refunding twice is not an error.
    async fn refund(&self, payment_id: PaymentId, reason: &str) -> Result<(), Problem>;
}

/// Statements that record a checkout on the caller's side.
pub type RecordCheckout = Box<dyn FnOnce(&Checkout, &mut Script) + Send>;

#[async_trait::async_trait]
impl PaymentGateway for Payments {
    async fn create_payment(&self, req: NewPayment) -> Result<Checkout, Problem> {
        Payments::create_payment(self, req).await
    }

    async fn create_payment_recorded(
        &self,
        _: &Db,
        req: NewPayment,
        record: RecordCheckout,
    ) -> Result<Checkout, Problem> {
        Payments::create_payment_recorded(self, req, record).await
    }

    async fn refund(&self, payment_id: PaymentId, reason: &str) -> Result<(), Problem> {
        Payments::refund(self, payment_id, reason).await
    }
}

/// Timing and links of the sale.
#[derive(Debug, Clone)]
pub struct SalesConfig {
    /// How long a hold keeps its inventory before the sweep gives it back.
    pub hold_ttl: time::Duration,
    /// How long a placed order waits for its payment, from creation.
    pub payment_window: time::Duration,
    /// The public origin, for the provider's return link (`{base}/orders/{id}`).
    pub public_base_url: String,
}

impl Default for SalesConfig {
    fn default() -> Self {
        Self {
            hold_ttl: time::Duration::minutes(10),
            payment_window: time::Duration::minutes(30),
            public_base_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// The sale service. Cheap to clone.
#[derive(Clone)]
pub struct Sales {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    clock: SharedClock,
    payments: Arc<dyn PaymentGateway>,
    cfg: SalesConfig,
}

/// Rows swept per query; a larger backlog is swept in several rounds.
const SWEEP_BATCH: i64 = 256;

impl Sales {
    pub fn new(db: Db, clock: SharedClock, payments: Arc<dyn PaymentGateway>, cfg: SalesConfig) -> Self {
        Self { inner: Arc::new(Inner { db, clock, payments, cfg }) }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The outbox consumer that turns payment outcomes into paid orders and
    /// tickets (`consumers::TICKETING_PAYMENTS`).
    pub fn consumer(&self) -> Arc<dyn Consumer> {
        Arc::new(super::consumer::PaymentOutcomes::new(self.inner.db.clone()))
    }

    /// Reserves inventory for the caller. Validation reads happen before the
    /// transaction; the quota guard runs last inside it, in quota-id order.
    pub async fn create_hold(&self, who: &Principal, req: HoldRequest) -> Result<Hold, SalesError> {
        let now = self.now_ms();
        let (lines, needs) = {
            let mut conn = self.inner.db.read();
            let event = store::load_event(&mut conn, req.event_id).await?.ok_or(SalesError::NotFound)?;
            let types = store::load_types(&mut conn, event.id).await?;
            let lines = domain::validate_hold(&req, &event, &types, now)?;
            let qmap = store::quota_map(&mut conn, event.id).await?;
            let needs = domain::quota_needs(&lines, &qmap)?;
            (lines, needs)
        };
        let hold = Hold {
            id: HoldId::new(),
            event_id: req.event_id,
            user_id: who.user_id,
            status: HoldStatus::Active,
            expires_at_ms: now + duration_ms(self.inner.cfg.hold_ttl),
            created_at_ms: now,
            items: lines,
        };
        // The quota guards and the hold's rows in one write; a failed guard
        // keeps nothing. On SQLite (one writer) the guards go first: a
        // script stopped by its first statement changed nothing, so its
        // group needs no undo. On PostgreSQL they go last: a guard locks the
        // quota row, which every hold of the event updates, until the
        // commit, and each statement after it would keep every other buyer
        // waiting one more round trip.
        let guards_last = self.inner.db.backend() == Backend::Postgres;
        let mut script = self.inner.db.script();
        let mut guards = if guards_last { Vec::new() } else { store::push_acquire(&mut script, &needs) };
        store::push_insert_hold(&mut script, &hold);
        audit::push(
            &mut script,
            now,
            &Actor::User(who.user_id),
            "hold.created",
            "hold",
            &hold.id.to_db(),
            json!({ "event_id": hold.event_id, "items": items_json(&hold.items) }),
        );
        if guards_last {
            guards = store::push_acquire(&mut script, &needs);
        }
        match self.inner.db.write(script).await {
            Ok(_) => Ok(hold),
            Err(WriteError::Guard(at)) => match guards.iter().find(|(g, _)| *g == at) {
                Some((_, sold_out)) => Err(SalesError::SoldOut(*sold_out)),
                None => Err(SalesError::Corrupt(format!("hold {} stopped by statement {at}", hold.id))),
            },
            Err(WriteError::Db(e)) => Err(e.into()),
        }
    }

    /// The caller's own hold; anyone else's is `NotFound`.
    pub async fn get_hold(&self, who: &Principal, id: HoldId) -> Result<Hold, SalesError> {
        let mut conn = self.inner.db.read();
        match store::load_hold(&mut conn, id).await? {
            Some(h) if h.user_id == who.user_id => Ok(h),
            _ => Err(SalesError::NotFound),
        }
    }

    /// Gives an active hold's inventory back.
    pub async fn release_hold(&self, who: &Principal, id: HoldId) -> Result<Hold, SalesError> {
        let mut hold = self.get_hold(who, id).await?;
        let now = self.now_ms();
        let mut tx = self.inner.db.begin().await?;
        if !store::close_hold(&mut tx, id, HoldStatus::Released, now).await? {
            tx.rollback().await?;
            return Err(SalesError::HoldNotActive);
        }
        release_lines(&mut tx, hold.event_id, &hold.items).await?;
        audit::record(&mut tx, now, &Actor::User(who.user_id), "hold.released", "hold", &id.to_db(), json!({})).await?;
        tx.commit().await?;
        hold.status = HoldStatus::Released;
        Ok(hold)
    }

    /// Converts the caller's active hold into a pending order priced by the
    /// server, then asks the payment service for a checkout. The order
    /// commits first: if the payment call fails the order stays pending
    /// without a payment and [`Sales::checkout`] retries.
    pub async fn place_order(&self, who: &Principal, hold_id: HoldId) -> Result<Order, SalesError> {
        let now = self.now_ms();
        let hold = self.get_hold(who, hold_id).await?;
        if hold.status != HoldStatus::Active {
            return Err(SalesError::HoldNotActive);
        }
        if hold.expires_at_ms <= now {
            self.expire_hold(hold_id, now).await?;
            return Err(SalesError::HoldExpired);
        }
        let (event, types) = {
            let mut conn = self.inner.db.read();
            let event = store::load_event(&mut conn, hold.event_id).await?.ok_or(SalesError::NotFound)?;
            let types = store::load_types(&mut conn, hold.event_id).await?;
            (event, types)
        };
        let mut positions = Vec::new();
        for line in &hold.items {
            let t = types
                .get(&line.ticket_type_id)
                .ok_or_else(|| SalesError::Corrupt(format!("held ticket type {} is gone", line.ticket_type_id)))?;
            for _ in 0..line.quantity {
                positions.push(Position {
                    id: uuid::Uuid::now_v7().to_string(),
                    ticket_type_id: t.id,
                    price: t.price,
                    position: positions.len() as i64,
                });
            }
        }
        let Some(currency) = positions.first().map(|p| p.price.currency) else {
            return Err(SalesError::Corrupt(format!("hold {hold_id} has no items")));
        };
        let prices: Vec<_> = positions.iter().map(|p| p.price).collect();
        let total = domain::order_total(currency, &prices)?;
        let mut order = Order {
            id: OrderId::new(),
            event_id: event.id,
            organization_id: event.organization_id,
            buyer_id: who.user_id,
            hold_id,
            status: OrderStatus::Pending,
            total,
            payment_id: None,
            checkout_url: None,
            payment_deadline_ms: now + duration_ms(self.inner.cfg.payment_window),
            last_payment_error: None,
            created_at_ms: now,
            paid_at_ms: None,
            closed_at_ms: None,
            positions,
        };

        let mut script = self.inner.db.script();
        let converted = store::push_convert_hold(&mut script, hold_id, now);
        store::push_insert_order(&mut script, &order);
        outbox::push(
            &mut script,
            now,
            &DomainEvent::OrderPlaced {
                order_id: order.id,
                event_id: order.event_id,
                buyer: order.buyer_id,
                total_minor: order.total.minor,
                currency: order.total.currency.as_str().to_owned(),
            },
        )?;
        audit::push(
            &mut script,
            now,
            &Actor::User(who.user_id),
            "order.placed",
            "order",
            &order.id.to_db(),
            json!({ "hold_id": hold_id, "total_minor": order.total.minor, "currency": order.total.currency.as_str(),
                    "positions": order.positions.len() }),
        );
        match self.inner.db.write(script).await {
            Ok(_) => {}
            Err(WriteError::Guard(at)) if at == converted => {
                // Lost a race: with a concurrent conversion, release or sweep.
                let again = self.get_hold(who, hold_id).await?;
                if again.status == HoldStatus::Active {
                    self.expire_hold(hold_id, now).await?;
                    return Err(SalesError::HoldExpired);
                }
                return Err(SalesError::HoldNotActive);
            }
            Err(WriteError::Guard(at)) => {
                return Err(SalesError::Corrupt(format!("order {} stopped by statement {at}", order.id)));
            }
            Err(WriteError::Db(e)) => return Err(e.into()),
        }

        if let Err(p) = self.start_payment(&mut order, &event.name).await {
            tracing::warn!(order = %order.id, problem = %p, "payment not started; the buyer can retry the checkout");
        }
        Ok(order)
    }

    /// Starts (or re-reads) the payment of the buyer's pending order.
    pub async fn checkout(&self, who: &Principal, order_id: OrderId) -> Result<Order, SalesError> {
        let mut order = self.load_order(order_id).await?.ok_or(SalesError::NotFound)?;
        if order.buyer_id != who.user_id {
            return Err(SalesError::NotFound);
        }
        if order.status != OrderStatus::Pending || order.payment_deadline_ms <= self.now_ms() {
            return Err(SalesError::OrderNotPayable);
        }
        if order.checkout_url.is_some() {
            return Ok(order);
        }
        let event_name = {
            let mut conn = self.inner.db.read();
            store::load_event(&mut conn, order.event_id).await?.map(|e| e.name).unwrap_or_default()
        };
        self.start_payment(&mut order, &event_name).await.map_err(SalesError::Payment)?;
        Ok(order)
    }

    /// Calls the payment service (outside any transaction); the checkout is
    /// stored on the order in the payment's own write.
    async fn start_payment(&self, order: &mut Order, event_name: &str) -> Result<(), Problem> {
        let base = self.inner.cfg.public_base_url.trim_end_matches('/');
        let (order_id, buyer) = (order.id, order.buyer_id);
        let now = self.now_ms();
        let checkout = self
            .inner
            .payments
            .create_payment_recorded(
                &self.inner.db,
                NewPayment {
                    reference: domain::order_reference(order.id),
                    organization_id: order.organization_id,
                    amount: order.total,
                    description: format!("{event_name}: {} ticket(s)", order.positions.len()),
                    return_url: format!("{base}/orders/{}", order.id),
                },
                Box::new(move |checkout: &Checkout, script: &mut Script| {
                    store::push_set_checkout(script, order_id, checkout.payment_id, &checkout.checkout_url);
                    audit::push(
                        script,
                        now,
                        &Actor::User(buyer),
                        "order.checkout_started",
                        "order",
                        &order_id.to_db(),
                        json!({ "payment_id": checkout.payment_id }),
                    );
                }),
            )
            .await?;
        order.payment_id = Some(checkout.payment_id);
        order.checkout_url = Some(checkout.checkout_url);
        Ok(())
    }

    async fn load_order(&self, id: OrderId) -> Result<Option<Order>, SalesError> {
        let mut conn = self.inner.db.read();
        store::load_order(&mut conn, id, "").await
    }

    /// How the caller relates to an order's organization: `None` when they
    /// may not see it at all.
    async fn access(&self, who: &Principal, order: &Order) -> Result<Access, SalesError> {
        if who.role.is_staff() {
            return Ok(Access::Refund);
        }
        let role = membership::role_of(&self.inner.db, who.user_id, order.organization_id).await?;
        Ok(match role {
            Some(OrgRole::Owner | OrgRole::Manager) => Access::Refund,
            Some(OrgRole::Viewer) => Access::See,
            None if order.buyer_id == who.user_id => Access::See,
            None => Access::None,
        })
    }

    /// The order, for its buyer, a member of its organization, or support.
    pub async fn get_order(&self, who: &Principal, id: OrderId) -> Result<Order, SalesError> {
        let order = self.load_order(id).await?.ok_or(SalesError::NotFound)?;
        if order.buyer_id == who.user_id || self.access(who, &order).await? != Access::None {
            Ok(order)
        } else {
            Err(SalesError::NotFound)
        }
    }

    /// The caller's orders, newest first.
    pub async fn my_orders(&self, who: &Principal, page: &PageRequest) -> Result<Page<Order>, SalesError> {
        let mut conn = self.inner.db.reader().acquire().await?;
        let rows = store::orders_of(&mut conn, who.user_id, page).await?;
        Ok(Page::from_rows(rows, page.limit, |o| o.id.to_db()))
    }

    /// The tickets the caller holds, newest first.
    pub async fn my_tickets(&self, who: &Principal, page: &PageRequest) -> Result<Page<Ticket>, SalesError> {
        let mut conn = self.inner.db.reader().acquire().await?;
        let rows = store::tickets_of(&mut conn, who.user_id, page).await?;
        let mut page = Page::from_rows(rows, page.limit, |t| t.id.to_db());
        store::attach_tokens(&mut conn, &mut page.items).await?;
        Ok(page)
    }

    /// One ticket the caller holds, with its token.
    pub async fn my_ticket(&self, who: &Principal, id: TicketId) -> Result<Ticket, SalesError> {
        let mut conn = self.inner.db.reader().acquire().await?;
        let mut ticket = store::ticket_of_holder(&mut conn, id, who.user_id).await?.ok_or(SalesError::NotFound)?;
        store::attach_tokens(&mut conn, std::slice::from_mut(&mut ticket)).await?;
        Ok(ticket)
    }

    /// The tickets of one order (for the buyer, the organization or support).
    pub async fn order_tickets(&self, who: &Principal, id: OrderId) -> Result<Vec<Ticket>, SalesError> {
        self.get_order(who, id).await?;
        let mut conn = self.inner.db.reader().acquire().await?;
        let mut tickets = store::tickets_of_order(&mut conn, id).await?;
        store::attach_tokens(&mut conn, &mut tickets).await?;
        Ok(tickets)
    }

    /// Refunds a paid order: the money first (outside a transaction), then
    /// order, tickets and inventory in one transaction. Refunding a refunded
    /// order answers the order again.
    pub async fn refund(&self, who: &Principal, id: OrderId, reason: &str) -> Result<Order, SalesError> {
        let order = self.load_order(id).await?.ok_or(SalesError::NotFound)?;
        match self.access(who, &order).await? {
            Access::Refund => {}
            Access::See => return Err(SalesError::Forbidden),
            Access::None => return Err(SalesError::NotFound),
        }
        match order.status {
            OrderStatus::Refunded => return Ok(order),
            OrderStatus::Paid => {}
            _ => return Err(SalesError::OrderNotRefundable),
        }
        let payment_id =
            order.payment_id.ok_or_else(|| SalesError::Corrupt(format!("paid order {id} has no payment")))?;
        self.inner.payments.refund(payment_id, reason).await.map_err(SalesError::Payment)?;

        let now = self.now_ms();
        let mut tx = self.inner.db.begin().await?;
        if store::close_order(&mut tx, id, OrderStatus::Paid, OrderStatus::Refunded, now).await? {
            let cancelled = store::cancel_tickets(&mut tx, id).await?;
            if !cancelled.is_empty() {
                // The chain pipeline burns their tokens (or never mints them).
                outbox::append(
                    &mut tx,
                    now,
                    &DomainEvent::TicketsCancelled {
                        event_id: order.event_id,
                        tickets: cancelled.clone(),
                        reason: "refund".to_owned(),
                    },
                )
                .await?;
            }
            release_lines(&mut tx, order.event_id, &lines_of(&order.positions)).await?;
            let buyer_email = store::user_email(&mut tx, order.buyer_id).await?;
            let event_name = store::load_event(&mut tx, order.event_id).await?.map(|e| e.name).unwrap_or_default();
            outbox::append(
                &mut tx,
                now,
                &DomainEvent::OrderRefunded {
                    order_id: id,
                    buyer_email,
                    event_name,
                    amount_minor: order.total.minor,
                    currency: order.total.currency.as_str().to_owned(),
                },
            )
            .await?;
            audit::record(
                &mut tx,
                now,
                &Actor::User(who.user_id),
                "order.refunded",
                "order",
                &id.to_db(),
                json!({ "reason": reason, "payment_id": payment_id, "tickets_cancelled": cancelled.len() }),
            )
            .await?;
        }
        tx.commit().await?;
        let after = self.load_order(id).await?.ok_or(SalesError::NotFound)?;
        if after.status == OrderStatus::Refunded { Ok(after) } else { Err(SalesError::OrderNotRefundable) }
    }

    /// Releases every due hold and expires every pending order past its
    /// deadline, one short transaction each. Safe to run concurrently: only
    /// the run whose conditional status update succeeds gives inventory back.
    pub async fn expire_due(&self) -> Result<ExpiryReport, SalesError> {
        let now = self.now_ms();
        let mut report = ExpiryReport::default();
        loop {
            let ids = {
                let mut conn = self.inner.db.reader().acquire().await?;
                store::due_holds(&mut conn, now, SWEEP_BATCH).await?
            };
            let mut progressed = false;
            for id in &ids {
                if self.expire_hold(*id, now).await? {
                    report.holds_expired += 1;
                    progressed = true;
                }
            }
            if (ids.len() as i64) < SWEEP_BATCH || !progressed {
                break;
            }
        }
        loop {
            let ids = {
                let mut conn = self.inner.db.reader().acquire().await?;
                store::due_orders(&mut conn, now, SWEEP_BATCH).await?
            };
            let mut progressed = false;
            for id in &ids {
                if self.expire_order(*id, now).await? {
                    report.orders_expired += 1;
                    progressed = true;
                }
            }
            if (ids.len() as i64) < SWEEP_BATCH || !progressed {
                break;
            }
        }
        Ok(report)
    }

    async fn expire_hold(&self, id: HoldId, now: i64) -> Result<bool, SalesError> {
        let mut tx = self.inner.db.begin().await?;
        if !store::close_hold(&mut tx, id, HoldStatus::Expired, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let hold = store::load_hold(&mut tx, id).await?.ok_or(SalesError::NotFound)?;
        release_lines(&mut tx, hold.event_id, &hold.items).await?;
        audit::record(&mut tx, now, &Actor::System, "hold.expired", "hold", &id.to_db(), json!({})).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expire_order(&self, id: OrderId, now: i64) -> Result<bool, SalesError> {
        let mut tx = self.inner.db.begin().await?;
        if !store::close_order(&mut tx, id, OrderStatus::Pending, OrderStatus::Expired, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let order = store::load_order(&mut tx, id, "").await?.ok_or(SalesError::NotFound)?;
        release_lines(&mut tx, order.event_id, &lines_of(&order.positions)).await?;
        outbox::append(&mut tx, now, &DomainEvent::OrderExpired { order_id: id }).await?;
        audit::record(&mut tx, now, &Actor::System, "order.expired", "order", &id.to_db(), json!({})).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sweeps every `every` until `shutdown` resolves; errors are logged and
    /// the next tick tries again.
    pub async fn run_expiry(self, every: std::time::Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.expire_due().await {
                Ok(r) if r != ExpiryReport::default() => {
                    tracing::info!(holds = r.holds_expired, orders = r.orders_expired, "expired due holds and orders");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Recomputes each quota of the event from the facts (sold, pending,
    /// held) beside its guarded counter.
    pub async fn check_inventory(&self, event_id: EventId) -> Result<Vec<QuotaCheck>, SalesError> {
        let now = self.now_ms();
        let mut conn = self.inner.db.reader().acquire().await?;
        let quotas = store::quotas_of_event(&mut conn, event_id).await?;
        let qmap = store::quota_map(&mut conn, event_id).await?;
        let counts = store::type_counts(&mut conn, event_id, now).await?;
        let mut types_of: HashMap<QuotaId, Vec<TicketTypeId>> = HashMap::new();
        for (t, qs) in &qmap {
            for q in qs {
                types_of.entry(*q).or_default().push(*t);
            }
        }
        Ok(quotas
            .into_iter()
            .map(|(quota_id, name, size, used)| {
                let mut check =
                    QuotaCheck { quota_id, name, size, used, sold: 0, pending: 0, held: 0, held_overdue: 0 };
                for t in types_of.get(&quota_id).map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(c) = counts.get(t) {
                        check.sold += c.sold;
                        check.pending += c.pending;
                        check.held += c.held;
                        check.held_overdue += c.held_overdue;
                    }
                }
                check
            })
            .collect())
    }

    /// How many tickets an order has (any status).
    pub async fn count_tickets(&self, order_id: OrderId) -> Result<i64, SalesError> {
        let mut conn = self.inner.db.reader().acquire().await?;
        store::count_tickets(&mut conn, order_id).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    None,
    See,
    Refund,
}

fn duration_ms(d: time::Duration) -> i64 {
    i64::try_from(d.whole_milliseconds()).unwrap_or(i64::MAX / 4)
}

fn items_json(items: &[HoldLine]) -> serde_json::Value {
    items.iter().map(|l| json!({ "ticket_type_id": l.ticket_type_id, "quantity": l.quantity })).collect()
}

/// Positions grouped back into cart lines, for releasing their inventory.
pub(crate) fn lines_of(positions: &[Position]) -> Vec<HoldLine> {
    let mut per_type: BTreeMap<TicketTypeId, i64> = BTreeMap::new();
    for p in positions {
        *per_type.entry(p.ticket_type_id).or_insert(0) += 1;
    }
    per_type.into_iter().map(|(ticket_type_id, quantity)| HoldLine { ticket_type_id, quantity }).collect()
}

/// Gives back the inventory of `lines` inside the caller's transaction.
pub(crate) async fn release_lines(tx: &mut Tx, event: EventId, lines: &[HoldLine]) -> Result<(), SalesError> {
    let qmap = store::quota_map(tx, event).await?;
    store::release(tx, &domain::quota_releases(lines, &qmap)).await
}
