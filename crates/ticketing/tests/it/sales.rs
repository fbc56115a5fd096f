//! The sale end to end against a real database: holds, orders, payment
//! outcomes through the outbox, expiry, refunds, idempotency and the race
//! for the last tickets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use entrada_identity::membership::{self, OrgRole};
use entrada_payments::{Checkout, NewPayment};
use entrada_primitives::auth::AuthState;
use entrada_primitives::ids::{
    EventId, HoldId, OrderId, OrganizationId, PaymentId, QuotaId, SessionId, TicketTypeId, UserId,
};
use entrada_primitives::page::PageRequest;
use entrada_primitives::{Clock, ManualClock, PlatformRole, Principal, Problem, SharedClock};
use entrada_storage::events::DomainEvent;
use entrada_storage::outbox::{self, Dispatcher};
use entrada_storage::testing::{TestDb, fresh};
use entrada_ticketing::sales::{
    HoldRequest, Order, OrderStatus, PaymentGateway, Sales, SalesConfig, SalesError, router,
};
use http::{Request, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use time::macros::datetime;
use tower::ServiceExt;

/// A payment service stand-in that records calls and, like the real one,
/// answers the same payment for the same reference.
#[derive(Default)]
struct RecordingPayments {
    created: Mutex<HashMap<String, (PaymentId, NewPayment)>>,
    refunds: Mutex<Vec<(PaymentId, String)>>,
    unavailable: AtomicBool,
}

#[async_trait::async_trait]
impl PaymentGateway for RecordingPayments {
    async fn create_payment(&self, req: NewPayment) -> Result<Checkout, Problem> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Problem::unavailable("payments_unavailable", "provider down"));
        }
        let mut created = self.created.lock().unwrap();
        let (id, _) = created.entry(req.reference.clone()).or_insert_with(|| (PaymentId::new(), req.clone()));
        Ok(Checkout { payment_id: *id, checkout_url: format!("https://pay.example/{id}") })
    }

    async fn refund(&self, payment_id: PaymentId, reason: &str) -> Result<(), Problem> {
        self.refunds.lock().unwrap().push((payment_id, reason.to_owned()));
        Ok(())
    }
}

struct App {
    t: TestDb,
    clock: ManualClock,
    sales: Sales,
    payments: Arc<RecordingPayments>,
    dispatcher: Dispatcher,
    org: OrganizationId,
    event: EventId,
    /// General admission: 2500 EUR cents, 1 to 10 per order.
    ga: TicketTypeId,
    /// VIP: 9900 EUR cents, 1 to 4 per order.
    vip: TicketTypeId,
    /// Covers GA and VIP.
    quota: QuotaId,
    buyer: Principal,
    other: Principal,
    owner: Principal,
    viewer: Principal,
    support: Principal,
}

const START: time::OffsetDateTime = datetime!(2030-03-01 12:00 UTC);

fn principal(user_id: UserId, role: PlatformRole) -> Principal {
    Principal { user_id, role, session_id: SessionId::new() }
}

async fn exec(t: &TestDb, sql: &str, binds: Vec<Value>) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for b in binds {
        q = match b {
            Value::String(s) => q.bind(s),
            Value::Number(n) => q.bind(n.as_i64().unwrap()),
            Value::Bool(b) => q.bind(b),
            Value::Null => q.bind(Option::<i64>::None),
            other => panic!("unsupported bind {other}"),
        };
    }
    q.execute(&mut *t.db.writer().await.unwrap()).await.unwrap();
}

async fn user(t: &TestDb, role: PlatformRole) -> Principal {
    let id = UserId::new();
    exec(
        t,
        "INSERT INTO users (id, email, password_hash, display_name, platform_role, created_at) VALUES ($1, $2, 'x', 'U', $3, 0)",
        vec![json!(id.to_db()), json!(format!("{id}@example.com")), json!(role.as_str())],
    )
    .await;
    principal(id, role)
}

async fn ticket_type(t: &TestDb, event: EventId, name: &str, price: i64, min: i64, max: i64) -> TicketTypeId {
    let id = TicketTypeId::new();
    exec(
        t,
        "INSERT INTO ticket_types (id, event_id, name, price_minor, currency, min_per_order, max_per_order, created_at) \
         VALUES ($1, $2, $3, $4, 'EUR', $5, $6, 0)",
        vec![json!(id.to_db()), json!(event.to_db()), json!(name), json!(price), json!(min), json!(max)],
    )
    .await;
    id
}

async fn quota(t: &TestDb, event: EventId, size: i64, types: &[TicketTypeId]) -> QuotaId {
    let id = QuotaId::new();
    exec(
        t,
        "INSERT INTO quotas (id, event_id, name, size, used, is_capacity, created_at) VALUES ($1, $2, 'Main', $3, 0, FALSE, 0)",
        vec![json!(id.to_db()), json!(event.to_db()), json!(size)],
    )
    .await;
    for ty in types {
        exec(
            t,
            "INSERT INTO quota_ticket_types (quota_id, ticket_type_id) VALUES ($1, $2)",
            vec![json!(id.to_db()), json!(ty.to_db())],
        )
        .await;
    }
    id
}

async fn app_with(size: i64) -> App {
    let t = fresh().await;
    let clock = ManualClock::new(START);
    let shared: SharedClock = Arc::new(clock.clone());
    let buyer = user(&t, PlatformRole::Fan).await;
    let other = user(&t, PlatformRole::Fan).await;
    let owner = user(&t, PlatformRole::Fan).await;
    let viewer = user(&t, PlatformRole::Fan).await;
    let support = user(&t, PlatformRole::Support).await;
    let org = OrganizationId::new();
    exec(
        &t,
        "INSERT INTO organizations (id, name, slug, created_by, created_at) VALUES ($1, 'Org', $2, $3, 0)",
        vec![json!(org.to_db()), json!(format!("org-{org}")), json!(owner.user_id.to_db())],
    )
    .await;
    let mut tx = t.db.begin().await.unwrap();
    membership::set(&mut tx, org, owner.user_id, OrgRole::Owner, 0).await.unwrap();
    membership::set(&mut tx, org, viewer.user_id, OrgRole::Viewer, 0).await.unwrap();
    tx.commit().await.unwrap();
    let event = EventId::new();
    let now = shared.now_ms();
    exec(
        &t,
        "INSERT INTO events (id, organization_id, name, venue_name, timezone, starts_at, ends_at, capacity, currency, \
         status, created_at, updated_at) VALUES ($1, $2, 'Spring Gig', 'Hall', 'Europe/Berlin', $3, $4, 1000, 'EUR', 'on_sale', 0, 0)",
        vec![json!(event.to_db()), json!(org.to_db()), json!(now + 86_400_000), json!(now + 90_000_000)],
    )
    .await;
    let ga = ticket_type(&t, event, "GA", 2500, 1, 10).await;
    let vip = ticket_type(&t, event, "VIP", 9900, 1, 4).await;
    let quota = quota(&t, event, size, &[ga, vip]).await;
    let payments = Arc::new(RecordingPayments::default());
    let sales = Sales::new(
        t.db.clone(),
        shared.clone(),
        payments.clone(),
        SalesConfig { public_base_url: "https://tickets.example/".into(), ..SalesConfig::default() },
    );
    let dispatcher = Dispatcher::new(t.db.clone(), shared, vec![sales.consumer()]);
    App { t, clock, sales, payments, dispatcher, org, event, ga, vip, quota, buyer, other, owner, viewer, support }
}

impl App {
    async fn hold(&self, who: &Principal, items: &[(TicketTypeId, i64)]) -> Result<HoldId, SalesError> {
        let req = HoldRequest { event_id: self.event, items: items.to_vec() };
        self.sales.create_hold(who, req).await.map(|h| h.id)
    }

    async fn order(&self, who: &Principal, items: &[(TicketTypeId, i64)]) -> Order {
        let hold = self.hold(who, items).await.unwrap();
        self.sales.place_order(who, hold).await.unwrap()
    }

    async fn deliver(&self, event: DomainEvent) {
        let mut tx = self.t.db.begin().await.unwrap();
        outbox::append(&mut tx, self.clock.now_ms(), &event).await.unwrap();
        tx.commit().await.unwrap();
        self.dispatcher.drain().await.unwrap();
    }

    async fn pay(&self, order: &Order) {
        self.pay_amount(order, order.total.minor).await;
    }

    async fn pay_amount(&self, order: &Order, amount_minor: i64) {
        let payment_id = order.payment_id.unwrap_or_default();
        self.deliver(DomainEvent::PaymentSucceeded {
            payment_id,
            reference: format!("order:{}", order.id),
            amount_minor,
            currency: "EUR".into(),
        })
        .await;
    }

    async fn status(&self, order: OrderId) -> OrderStatus {
        self.sales.get_order(&self.support, order).await.unwrap().status
    }

    async fn used(&self) -> i64 {
        let (used,): (i64,) = sqlx::query_as("SELECT used FROM quotas WHERE id = $1")
            .bind(self.quota.to_db())
            .fetch_one(self.t.db.reader())
            .await
            .unwrap();
        used
    }

    async fn events_named(&self, name: &str) -> Vec<Value> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY id")
            .bind(name.to_owned())
            .fetch_all(self.t.db.reader())
            .await
            .unwrap();
        rows.into_iter().map(|(p,)| serde_json::from_str(&p).unwrap()).collect()
    }

    async fn assert_inventory_consistent(&self) {
        for q in self.sales.check_inventory(self.event).await.unwrap() {
            assert!(q.consistent(), "quota counter drifted from the facts: {q:?}");
            assert!(q.within_size(), "quota oversold: {q:?}");
        }
    }

    async fn http(
        &self,
        who: &Principal,
        method: &str,
        uri: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let (router, _api) = router(self.sales.clone()).split_for_parts();
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let mut req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        req.extensions_mut().insert(AuthState::Authenticated(*who));
        let res = router.oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, value)
    }
}

/// A paid order yields exactly one ticket per position with distinct serials,
/// and a replayed payment event changes nothing.
#[tokio::test]
async fn a_paid_order_issues_one_ticket_per_position_exactly_once() {
    let app = app_with(100).await;
    let order = app.order(&app.buyer, &[(app.ga, 2), (app.vip, 1)]).await;
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.positions.len(), 3);
    assert_eq!(order.total.minor, 2 * 2500 + 9900);
    assert!(order.checkout_url.as_deref().unwrap().starts_with("https://pay.example/"));
    let asked = app.payments.created.lock().unwrap().get(&format!("order:{}", order.id)).unwrap().1.clone();
    assert_eq!(asked.amount, order.total);
    assert_eq!(asked.organization_id, app.org);
    assert_eq!(asked.return_url, format!("https://tickets.example/orders/{}", order.id));
    assert_eq!(order.payment_deadline_ms, app.clock.now_ms() + 30 * 60_000);
    assert_eq!(app.events_named("order.placed").await.len(), 1);

    app.pay(&order).await;
    assert_eq!(app.status(order.id).await, OrderStatus::Paid);
    assert_eq!(app.sales.count_tickets(order.id).await.unwrap(), 3);
    app.pay(&order).await;
    assert_eq!(app.sales.count_tickets(order.id).await.unwrap(), 3);
    assert_eq!(app.events_named("order.paid").await.len(), 1);
    assert_eq!(app.events_named("tickets.issued").await.len(), 1);

    let paid = &app.events_named("order.paid").await[0];
    assert_eq!(paid["buyer_email"], format!("{}@example.com", app.buyer.user_id));
    assert_eq!(paid["event_name"], "Spring Gig");
    assert_eq!(paid["tickets"].as_array().unwrap().len(), 3);

    let page = app.sales.my_tickets(&app.buyer, &PageRequest { limit: 2, after: None }).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = PageRequest { limit: 2, after: page.next_cursor.as_ref().map(|_| page.items[1].id.to_db()) };
    let page2 = app.sales.my_tickets(&app.buyer, &rest).await.unwrap();
    assert_eq!(page2.items.len(), 1);
    assert!(page2.next_cursor.is_none());
    let mut serials: Vec<i64> = page.items.iter().chain(&page2.items).map(|t| t.serial).collect();
    serials.sort();
    assert_eq!(serials, vec![1, 2, 3]);
    assert!(page.items.iter().all(|t| t.holder_id == app.buyer.user_id && t.generation == 1));

    let (status, body) = app.http(&app.buyer, "GET", "/api/v1/me/tickets?limit=10", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 3);
    assert_eq!(app.used().await, 3);
    app.assert_inventory_consistent().await;
}

/// A failed payment keeps the order pending with the reason; a later success
/// still pays it.
#[tokio::test]
async fn a_failed_payment_keeps_the_order_payable() {
    let app = app_with(100).await;
    let order = app.order(&app.buyer, &[(app.ga, 1)]).await;
    app.deliver(DomainEvent::PaymentFailed {
        payment_id: order.payment_id.unwrap(),
        reference: format!("order:{}", order.id),
        reason: "card_declined".into(),
    })
    .await;
    let after = app.sales.get_order(&app.buyer, order.id).await.unwrap();
    assert_eq!(after.status, OrderStatus::Pending);
    assert_eq!(after.last_payment_error.as_deref(), Some("card_declined"));
    assert_eq!(app.sales.count_tickets(order.id).await.unwrap(), 0);
    app.pay(&order).await;
    assert_eq!(app.status(order.id).await, OrderStatus::Paid);
    assert_eq!(app.sales.count_tickets(order.id).await.unwrap(), 1);
}

/// A hold gives its inventory back when it expires, and converting it
/// afterwards answers 410 `hold_expired`.
#[tokio::test]
async fn an_expired_hold_releases_its_inventory() {
    let app = app_with(5).await;
    let swept = app.hold(&app.buyer, &[(app.ga, 3)]).await.unwrap();
    let unswept = app.hold(&app.buyer, &[(app.vip, 2)]).await.unwrap();
    assert_eq!(app.used().await, 5);
    assert!(matches!(app.hold(&app.other, &[(app.ga, 1)]).await, Err(SalesError::SoldOut(t)) if t == app.ga));

    app.clock.advance(time::Duration::minutes(10));
    app.assert_inventory_consistent().await;
    let (status, body) = app.http(&app.buyer, "POST", "/api/v1/orders", Some(json!({"hold_id": unswept})), None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::GONE, Some("hold_expired")));
    assert_eq!(app.used().await, 3, "converting an expired hold releases it on the spot");

    let report = app.sales.expire_due().await.unwrap();
    assert_eq!(report.holds_expired, 1);
    assert_eq!(app.sales.expire_due().await.unwrap().holds_expired, 0, "a second sweep finds nothing");
    assert_eq!(app.used().await, 0);
    assert_eq!(app.sales.get_hold(&app.buyer, swept).await.unwrap().status.as_str(), "expired");
    assert!(matches!(app.sales.place_order(&app.buyer, swept).await, Err(SalesError::HoldNotActive)));
    assert!(app.hold(&app.other, &[(app.ga, 5)]).await.is_ok());
    app.assert_inventory_consistent().await;
}

/// Concurrent sweeps release each due hold exactly once.
#[tokio::test]
async fn concurrent_sweeps_release_once() {
    let app = app_with(50).await;
    for _ in 0..10 {
        app.hold(&app.buyer, &[(app.ga, 2)]).await.unwrap();
    }
    app.clock.advance(time::Duration::minutes(11));
    let (a, b) = tokio::join!(app.sales.expire_due(), app.sales.expire_due());
    assert_eq!(a.unwrap().holds_expired + b.unwrap().holds_expired, 10);
    assert_eq!(app.used().await, 0);
}

/// An unpaid order expires at its deadline and gives its seats back; a
/// payment arriving later re-acquires them while they are still free.
#[tokio::test]
async fn an_expired_order_is_honoured_if_its_seats_are_still_free() {
    let app = app_with(10).await;
    let order = app.order(&app.buyer, &[(app.ga, 2)]).await;
    app.clock.advance(time::Duration::minutes(29));
    assert_eq!(app.sales.expire_due().await.unwrap().orders_expired, 0);
    app.clock.advance(time::Duration::minutes(1));
    assert_eq!(app.sales.expire_due().await.unwrap().orders_expired, 1);
    assert_eq!(app.status(order.id).await, OrderStatus::Expired);
    assert_eq!(app.used().await, 0);
    assert_eq!(app.events_named("order.expired").await.len(), 1);
    let (status, body) =
        app.http(&app.buyer, "POST", &format!("/api/v1/orders/{}/checkout", order.id), None, None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("order_not_payable")));

    app.pay(&order).await;
    assert_eq!(app.status(order.id).await, OrderStatus::Paid);
    assert_eq!(app.sales.count_tickets(order.id).await.unwrap(), 2);
    assert_eq!(app.used().await, 2);
    app.assert_inventory_consistent().await;
}

/// A late payment whose seats were sold meanwhile is not honoured: the order
/// is cancelled and a refund is requested.
#[tokio::test]
async fn a_late_payment_without_seats_is_refunded() {
    let app = app_with(2).await;
    let order = app.order(&app.buyer, &[(app.ga, 2)]).await;
    app.clock.advance(time::Duration::minutes(31));
    app.sales.expire_due().await.unwrap();
    let theirs = app.order(&app.other, &[(app.ga, 2)]).await;
    app.pay(&order).await;
    assert_eq!(app.status(order.id).await, OrderStatus::Cancelled);
    assert_eq!(app.sales.count_tickets(order.id).await.unwrap(), 0);
    let refunds = app.events_named("payment.refund_requested").await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["reason"], "inventory_gone_after_expiry");
    assert_eq!(refunds[0]["payment_id"], order.payment_id.unwrap().to_string());
    app.pay(&order).await;
    assert_eq!(app.events_named("payment.refund_requested").await.len(), 1, "replay requests no second refund");
    assert_eq!(app.status(theirs.id).await, OrderStatus::Pending);
    assert_eq!(app.used().await, 2);
    app.assert_inventory_consistent().await;
}

/// A payment for a different amount than the order total issues nothing.
#[tokio::test]
async fn a_payment_of_the_wrong_amount_is_refunded() {
    let app = app_with(10).await;
    let order = app.order(&app.buyer, &[(app.ga, 2)]).await;
    app.pay_amount(&order, 1).await;
    assert_eq!(app.status(order.id).await, OrderStatus::Cancelled);
    assert_eq!(app.sales.count_tickets(order.id).await.unwrap(), 0);
    assert_eq!(app.events_named("payment.refund_requested").await[0]["reason"], "amount_mismatch");
    assert_eq!(app.used().await, 0);
}

/// The quota guard refuses what does not fit and names the ticket type.
#[tokio::test]
async fn holds_beyond_the_quota_are_sold_out() {
    let app = app_with(3).await;
    app.hold(&app.buyer, &[(app.ga, 2)]).await.unwrap();
    let (status, body) = app
        .http(
            &app.other,
            "POST",
            "/api/v1/holds",
            Some(json!({"event_id": app.event, "items": [{"ticket_type_id": app.vip, "quantity": 2}]})),
            None,
        )
        .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("sold_out")));
    assert_eq!(body["ticket_type_id"], app.vip.to_string());
    assert_eq!(app.used().await, 2, "a refused hold takes nothing");
    assert!(app.hold(&app.other, &[(app.vip, 1)]).await.is_ok());
    assert_eq!(app.used().await, 3);
}

/// Per-order limits, sale windows and the event state are enforced with
/// their own problem codes.
#[tokio::test]
async fn carts_outside_the_rules_are_refused() {
    let app = app_with(1000).await;
    let bulk = ticket_type(&app.t, app.event, "Bulk", 100, 1, 150).await;
    quota(&app.t, app.event, 1000, &[bulk]).await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!([]), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        (json!([{"ticket_type_id": app.ga, "quantity": 0}]), StatusCode::UNPROCESSABLE_ENTITY, "quantity_out_of_range"),
        (
            json!([{"ticket_type_id": app.vip, "quantity": 5}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity_out_of_range",
        ),
        (json!([{"ticket_type_id": bulk, "quantity": 101}]), StatusCode::UNPROCESSABLE_ENTITY, "quantity_out_of_range"),
        (
            json!([{"ticket_type_id": app.ga, "quantity": 1}, {"ticket_type_id": app.ga, "quantity": 1}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!([{"ticket_type_id": TicketTypeId::new(), "quantity": 1}]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (json!([{"ticket_type_id": app.ga, "quantity": "two"}]), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    ];
    for (items, status, code) in cases {
        let (s, body) = app
            .http(&app.buyer, "POST", "/api/v1/holds", Some(json!({"event_id": app.event, "items": items})), None)
            .await;
        assert_eq!((s, body["code"].as_str()), (status, Some(code)), "{items}");
    }
    assert!(app.hold(&app.buyer, &[(bulk, 100)]).await.is_ok());

    let now = app.clock.now_ms();
    exec(
        &app.t,
        "UPDATE ticket_types SET sale_starts_at = $1 WHERE id = $2",
        vec![json!(now + 1), json!(app.vip.to_db())],
    )
    .await;
    exec(&app.t, "UPDATE ticket_types SET sale_ends_at = $1 WHERE id = $2", vec![json!(now), json!(app.ga.to_db())])
        .await;
    assert!(matches!(app.hold(&app.buyer, &[(app.vip, 1)]).await, Err(SalesError::SaleNotStarted(t)) if t == app.vip));
    assert!(matches!(app.hold(&app.buyer, &[(app.ga, 1)]).await, Err(SalesError::SaleEnded(t)) if t == app.ga));
    exec(&app.t, "UPDATE events SET status = 'sales_closed' WHERE id = $1", vec![json!(app.event.to_db())]).await;
    let (s, body) = app
        .http(
            &app.buyer,
            "POST",
            "/api/v1/holds",
            Some(json!({"event_id": app.event, "items": [{"ticket_type_id": bulk, "quantity": 1}]})),
            None,
        )
        .await;
    assert_eq!((s, body["code"].as_str()), (StatusCode::CONFLICT, Some("event_not_on_sale")));
    let (s, _) = app
        .http(
            &app.buyer,
            "POST",
            "/api/v1/holds",
            Some(json!({"event_id": EventId::new(), "items": [{"ticket_type_id": bulk, "quantity": 1}]})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Someone else's hold or order does not exist for the caller; the
/// organization's members and support see orders.
#[tokio::test]
async fn other_peoples_holds_and_orders_are_not_found() {
    let app = app_with(100).await;
    let hold = app.hold(&app.buyer, &[(app.ga, 1)]).await.unwrap();
    for (method, uri) in [("GET", format!("/api/v1/holds/{hold}")), ("DELETE", format!("/api/v1/holds/{hold}"))] {
        let (s, body) = app.http(&app.other, method, &uri, None, None).await;
        assert_eq!((s, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{method} {uri}");
    }
    let (s, body) = app.http(&app.other, "POST", "/api/v1/orders", Some(json!({"hold_id": hold})), None).await;
    assert_eq!((s, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    let order = app.sales.place_order(&app.buyer, hold).await.unwrap();
    let uri = format!("/api/v1/orders/{}", order.id);
    assert_eq!(app.http(&app.other, "GET", &uri, None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.http(&app.other, "POST", &format!("{uri}/checkout"), None, None).await.0, StatusCode::NOT_FOUND);
    for who in [&app.buyer, &app.owner, &app.viewer, &app.support] {
        let (s, body) = app.http(who, "GET", &uri, None, None).await;
        assert_eq!((s, body["id"].as_str()), (StatusCode::OK, Some(order.id.to_string().as_str())));
    }
    assert_eq!(app.http(&app.buyer, "GET", "/api/v1/holds/not-a-uuid", None, None).await.0, StatusCode::NOT_FOUND);
    let (s, body) = app.http(&app.buyer, "POST", "/api/v1/orders", Some(json!({"hold_id": hold})), None).await;
    assert_eq!((s, body["code"].as_str()), (StatusCode::CONFLICT, Some("hold_not_active")));

    let mine = app.sales.my_orders(&app.buyer, &PageRequest { limit: 10, after: None }).await.unwrap();
    assert_eq!(mine.items.len(), 1);
    assert!(app.sales.my_orders(&app.other, &PageRequest { limit: 10, after: None }).await.unwrap().items.is_empty());
}

/// Releasing a hold gives its seats back at once, and only once.
#[tokio::test]
async fn releasing_a_hold_returns_its_inventory() {
    let app = app_with(4).await;
    let hold = app.hold(&app.buyer, &[(app.ga, 4)]).await.unwrap();
    let (s, body) = app.http(&app.buyer, "DELETE", &format!("/api/v1/holds/{hold}"), None, None).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("released")));
    assert_eq!(app.used().await, 0);
    let (s, body) = app.http(&app.buyer, "DELETE", &format!("/api/v1/holds/{hold}"), None, None).await;
    assert_eq!((s, body["code"].as_str()), (StatusCode::CONFLICT, Some("hold_not_active")));
    assert_eq!(app.used().await, 0);
}

/// The same Idempotency-Key and body replays the order; another body under
/// the key is refused; a client's price is ignored.
#[tokio::test]
async fn order_creation_is_idempotent_and_priced_by_the_server() {
    let app = app_with(100).await;
    let (s, held) = app
        .http(&app.buyer, "POST", "/api/v1/holds",
            Some(json!({"event_id": app.event, "items": [{"ticket_type_id": app.vip, "quantity": 2, "price": {"amount_minor": 1, "currency": "EUR"}}]})),
            Some("hold-1"))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(held["status"], "active");
    let hold = held["id"].as_str().unwrap().to_owned();
    let body = json!({"hold_id": hold, "price": 1, "total": {"amount_minor": 1, "currency": "EUR"}});
    let (s1, first) = app.http(&app.buyer, "POST", "/api/v1/orders", Some(body.clone()), Some("order-1")).await;
    assert_eq!(s1, StatusCode::CREATED, "{first}");
    assert_eq!(first["total"], json!({"amount_minor": 19800, "currency": "EUR"}));
    assert_eq!(first["positions"][0]["price"]["amount_minor"], 9900);
    assert_eq!(first["status"], "pending");
    assert!(first["checkout_url"].is_string());
    assert!(first["payment_deadline"].as_str().unwrap().ends_with('Z'));
    let (s2, second) = app.http(&app.buyer, "POST", "/api/v1/orders", Some(body), Some("order-1")).await;
    assert_eq!((s2, &second["id"]), (StatusCode::CREATED, &first["id"]));
    let (s3, third) =
        app.http(&app.buyer, "POST", "/api/v1/orders", Some(json!({"hold_id": HoldId::new()})), Some("order-1")).await;
    assert_eq!((s3, third["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));
    let mine = app.sales.my_orders(&app.buyer, &PageRequest { limit: 10, after: None }).await.unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(app.payments.created.lock().unwrap().len(), 1);
}

/// When the payment service is down the order still exists, pending, and the
/// checkout endpoint starts the payment later.
#[tokio::test]
async fn checkout_retries_a_payment_that_could_not_start() {
    let app = app_with(100).await;
    app.payments.unavailable.store(true, Ordering::SeqCst);
    let order = app.order(&app.buyer, &[(app.ga, 1)]).await;
    assert_eq!(order.status, OrderStatus::Pending);
    assert!(order.checkout_url.is_none());
    let uri = format!("/api/v1/orders/{}/checkout", order.id);
    let (s, body) = app.http(&app.buyer, "POST", &uri, None, None).await;
    assert_eq!((s, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("payments_unavailable")));
    app.payments.unavailable.store(false, Ordering::SeqCst);
    let (s, body) = app.http(&app.buyer, "POST", &uri, None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body["checkout_url"].as_str().unwrap().starts_with("https://pay.example/"));
    let stored = app.sales.get_order(&app.buyer, order.id).await.unwrap();
    assert!(stored.payment_id.is_some());
}

/// Only the organization's owners and managers (or support) refund, only
/// paid orders, once; tickets are cancelled and seats return.
#[tokio::test]
async fn refunds_cancel_tickets_and_return_inventory() {
    let app = app_with(10).await;
    let order = app.order(&app.buyer, &[(app.ga, 2)]).await;
    let uri = format!("/api/v1/orders/{}/refund", order.id);
    let (s, body) = app.http(&app.owner, "POST", &uri, None, None).await;
    assert_eq!((s, body["code"].as_str()), (StatusCode::CONFLICT, Some("order_not_refundable")));
    app.pay(&order).await;
    assert_eq!(app.http(&app.other, "POST", &uri, None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.http(&app.buyer, "POST", &uri, None, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(app.http(&app.viewer, "POST", &uri, None, None).await.0, StatusCode::FORBIDDEN);
    let (s, body) = app.http(&app.owner, "POST", &uri, Some(json!({"reason": "show moved"})), None).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("refunded")));
    let (s, body) = app.http(&app.support, "POST", &uri, None, None).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("refunded")));
    assert_eq!(app.payments.refunds.lock().unwrap().len(), 1, "a refunded order is not refunded twice");
    assert_eq!(app.payments.refunds.lock().unwrap()[0].1, "show moved");
    let tickets = app.sales.order_tickets(&app.buyer, order.id).await.unwrap();
    assert!(tickets.iter().all(|t| t.status.as_str() == "cancelled"));
    assert_eq!(app.used().await, 0);
    let refunded = app.events_named("order.refunded").await;
    assert_eq!(refunded.len(), 1);
    assert_eq!(refunded[0]["amount_minor"], 5000);
    app.assert_inventory_consistent().await;
}

/// Many buyers racing for the last tickets never oversell: of 2,000 attempts
/// against 500 seats exactly 500 succeed, and the counter matches the facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_race_for_the_last_tickets_never_oversells() {
    let app = Arc::new(app_with(500).await);
    let mut buyers = Vec::new();
    for _ in 0..16 {
        buyers.push(user(&app.t, PlatformRole::Fan).await);
    }
    let buyers = Arc::new(buyers);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..64usize {
        let (app, buyers, next) = (app.clone(), buyers.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ordered, mut sold_out) = (0u32, 0u32);
            loop {
                let attempt = next.fetch_add(1, Ordering::SeqCst);
                if attempt >= 2000 {
                    return (ordered, sold_out);
                }
                let who = &buyers[(task + attempt) % buyers.len()];
                let ty = if attempt % 3 == 0 { app.vip } else { app.ga };
                match app.hold(who, &[(ty, 1)]).await {
                    Ok(hold) => {
                        app.sales.place_order(who, hold).await.expect("a fresh hold converts");
                        ordered += 1;
                    }
                    Err(SalesError::SoldOut(_)) => sold_out += 1,
                    Err(e) => panic!("unexpected error in the race: {e}"),
                }
            }
        }));
    }
    let (mut ordered, mut sold_out) = (0, 0);
    for t in tasks {
        let (o, s) = t.await.unwrap();
        ordered += o;
        sold_out += s;
    }
    assert_eq!((ordered, sold_out), (500, 1500));
    assert_eq!(app.used().await, 500);
    let checks = app.sales.check_inventory(app.event).await.unwrap();
    assert_eq!(checks.len(), 1);
    assert_eq!((checks[0].pending, checks[0].held, checks[0].sold), (500, 0, 0));
    app.assert_inventory_consistent().await;

    // Every payment delivered twice, drained by two dispatchers at once:
    // still exactly one ticket per position.
    let mut orders = Vec::new();
    for who in buyers.iter() {
        let page = app.sales.my_orders(who, &PageRequest { limit: 200, after: None }).await.unwrap();
        orders.extend(page.items);
    }
    assert_eq!(orders.len(), 500);
    let mut tx = app.t.db.begin().await.unwrap();
    for _ in 0..2 {
        for o in &orders {
            let event = DomainEvent::PaymentSucceeded {
                payment_id: o.payment_id.unwrap(),
                reference: format!("order:{}", o.id),
                amount_minor: o.total.minor,
                currency: "EUR".into(),
            };
            outbox::append(&mut tx, app.clock.now_ms(), &event).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    let second = Dispatcher::new(app.t.db.clone(), Arc::new(app.clock.clone()), vec![app.sales.consumer()]);
    let (a, b) = tokio::join!(app.dispatcher.drain(), second.drain());
    assert_eq!(a.unwrap() + b.unwrap(), 1000);
    let (tickets, serials): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT serial) FROM tickets WHERE event_id = $1")
            .bind(app.event.to_db())
            .fetch_one(app.t.db.reader())
            .await
            .unwrap();
    assert_eq!((tickets, serials), (500, 500));
    let checks = app.sales.check_inventory(app.event).await.unwrap();
    assert_eq!((checks[0].sold, checks[0].pending, checks[0].used), (500, 0, 500));
    app.assert_inventory_consistent().await;
}

/// Payments are paid a batch at a time only when every one of the batch is a
/// plain payment of a pending order; a batch with anything else in it (here
/// a payment short of its order's total) goes event by event, and each order
/// gets its own outcome.
#[tokio::test]
async fn a_mixed_batch_of_payments_gets_each_orders_own_outcome() {
    let app = app_with(100).await;
    let good = app.order(&app.buyer, &[(app.ga, 1)]).await;
    let short = app.order(&app.buyer, &[(app.ga, 2)]).await;
    let mut tx = app.t.db.begin().await.unwrap();
    for (o, amount_minor) in [(&good, good.total.minor), (&short, short.total.minor - 1)] {
        let event = DomainEvent::PaymentSucceeded {
            payment_id: o.payment_id.unwrap(),
            reference: format!("order:{}", o.id),
            amount_minor,
            currency: "EUR".into(),
        };
        outbox::append(&mut tx, app.clock.now_ms(), &event).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(app.dispatcher.drain().await.unwrap(), 2);
    assert_eq!(app.status(good.id).await, OrderStatus::Paid);
    assert_eq!(app.sales.count_tickets(good.id).await.unwrap(), 1);
    assert_eq!(app.status(short.id).await, OrderStatus::Cancelled);
    assert_eq!(app.sales.count_tickets(short.id).await.unwrap(), 0);
    assert_eq!(app.events_named("payment.refund_requested").await.len(), 1);
    assert_eq!(app.used().await, 1);
    app.assert_inventory_consistent().await;
}

/// The event's capacity quota counts every ticket type without being listed
/// for each, and a type covered by no quota at all is not for sale.
#[tokio::test]
async fn the_capacity_quota_covers_every_type_and_uncovered_types_are_not_sold() {
    let app = app_with(100).await;
    let capacity = QuotaId::new();
    exec(
        &app.t,
        "INSERT INTO quotas (id, event_id, name, size, used, is_capacity, created_at) VALUES ($1, $2, 'Capacity', 3, 0, $3, 0)",
        vec![json!(capacity.to_db()), json!(app.event.to_db()), json!(true)],
    )
    .await;
    app.hold(&app.buyer, &[(app.ga, 2), (app.vip, 1)]).await.unwrap();
    assert!(matches!(app.hold(&app.other, &[(app.vip, 1)]).await, Err(SalesError::SoldOut(t)) if t == app.vip));
    assert_eq!(app.used().await, 3, "the refused hold gave back what the first quota took");
    let checks = app.sales.check_inventory(app.event).await.unwrap();
    let cap = checks.iter().find(|q| q.quota_id == capacity).unwrap();
    assert_eq!((cap.used, cap.held), (3, 3));
    app.assert_inventory_consistent().await;

    let orphan = ticket_type(&app.t, app.event, "Orphan", 100, 1, 10).await;
    exec(&app.t, "DELETE FROM quotas WHERE id = $1", vec![json!(capacity.to_db())]).await;
    assert!(matches!(app.hold(&app.other, &[(orphan, 1)]).await, Err(SalesError::SoldOut(t)) if t == orphan));
}
