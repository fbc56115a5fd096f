//! The primary sale end to end: hold → order → sandbox checkout → signed
//! webhook → tickets, and every way it can go wrong.

use crate::helpers::*;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// A fan buys two tickets: the order is paid, exactly two tickets are
/// issued to the fan, the confirmation mail is sent, availability drops.
#[tokio::test]
async fn a_fan_buys_tickets() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 100).await;
    let fan = app.register("fan@example.com").await;

    let order = app.buy(&fan, &event, &tt, 2).await;
    assert_eq!(order["status"], "paid", "{order:#}");
    assert_eq!(order["total"]["amount_minor"], 5000);
    assert_eq!(order["total"]["currency"], "EUR");

    let tickets = app.get("/api/v1/me/tickets", Some(&fan.token)).await.expect(200);
    let items = tickets["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|t| t["event_id"] == event.as_str()));

    let ev = app.get(&format!("/api/v1/events/{event}"), None).await.expect(200);
    let types = ev["ticket_types"].as_array().unwrap();
    assert_eq!(types[0]["available"], 98, "{ev:#}");

    let mails = app.mailbox();
    assert!(
        mails.iter().any(|(n, t)| n.starts_with("order_confirmation") && t.contains("fan@example.com")),
        "confirmation mail"
    );
}

/// A declined card leaves the order pending and issues nothing; a retry with
/// a good card pays it.
#[tokio::test]
async fn declined_card_then_success() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let hold = app.hold(&fan, &event, &tt, 1).await.expect(201);
    let order = app.order(&fan, &id(&hold), None).await.expect(201);
    let url = order["checkout_url"].as_str().unwrap();
    let r = app.pay(url, "4000000000000002").await;
    assert_eq!(r.body["status"], "failed", "{:#}", r.body);
    app.settle().await;
    let o = app.get(&format!("/api/v1/orders/{}", id(&order)), Some(&fan.token)).await.expect(200);
    assert_eq!(o["status"], "pending");
    let t = app.get("/api/v1/me/tickets", Some(&fan.token)).await.expect(200);
    assert_eq!(t["items"].as_array().unwrap().len(), 0);
}

/// The price is the server's: a client-sent price is ignored or refused,
/// never charged.
#[tokio::test]
async fn client_prices_are_never_used() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let r = app
        .post(
            "/api/v1/holds",
            Some(&fan.token),
            json!({"event_id": event, "items": [{"ticket_type_id": tt, "quantity": 1, "price_minor": 1}]}),
        )
        .await;
    if r.status == 201 {
        let order = app.order(&fan, &id(&r.body), None).await.expect(201);
        assert_eq!(order["total"]["amount_minor"], 2500);
    } else {
        assert_eq!(r.status, 422, "{:#}", r.body);
    }
}

/// An expired hold cannot become an order and its seats return to sale.
#[tokio::test]
async fn expired_hold_is_released() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 3).await;
    let fan = app.register("fan@example.com").await;
    let hold = app.hold(&fan, &event, &tt, 3).await.expect(201);
    app.hold(&fan, &event, &tt, 1).await.expect_problem(409, "sold_out");
    app.clock.advance(time::Duration::minutes(11));
    app.order(&fan, &id(&hold), None).await.expect_problem(410, "hold_expired");
    app.app.sales.expire_due().await.unwrap();
    app.hold(&fan, &event, &tt, 3).await.expect(201);
}

/// Another fan's order and hold are invisible.
#[tokio::test]
async fn other_fans_objects_are_not_found() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let ana = app.register("ana@example.com").await;
    let bob = app.register("bob@example.com").await;
    let hold = app.hold(&ana, &event, &tt, 1).await.expect(201);
    app.get(&format!("/api/v1/holds/{}", id(&hold)), Some(&bob.token)).await.expect_problem(404, "not_found");
    app.order(&bob, &id(&hold), None).await.expect_problem(404, "not_found");
    let order = app.order(&ana, &id(&hold), None).await.expect(201);
    app.get(&format!("/api/v1/orders/{}", id(&order)), Some(&bob.token)).await.expect_problem(404, "not_found");
    app.post(&format!("/api/v1/orders/{}/refund", id(&order)), Some(&bob.token), json!({})).await;
    let o = app.get(&format!("/api/v1/orders/{}", id(&order)), Some(&ana.token)).await.expect(200);
    assert_eq!(o["status"], "pending");
}

/// Another organization's event cannot be changed by an organizer.
#[tokio::test]
async fn organizers_are_confined_to_their_organization() {
    let app = spawn_app().await;
    let (a, org_a) = app.organizer("a@example.com").await;
    let (b, _org_b) = app.organizer("b@example.com").await;
    let (event, _) = app.event_on_sale(&a, &org_a, 10).await;
    let r = app.patch(&format!("/api/v1/events/{event}"), Some(&b.token), json!({"name": "Hijacked"})).await;
    assert_eq!(r.status, 404, "{:#}", r.body);
    let r = app
        .post(
            &format!("/api/v1/organizations/{org_a}/events"),
            Some(&b.token),
            json!({"name": "x", "venue": {"name": "v"}, "timezone": "UTC", "starts_at": "2030-05-01T19:00:00Z",
                   "ends_at": "2030-05-01T22:00:00Z", "capacity": 10, "currency": "EUR"}),
        )
        .await;
    assert!(r.status == 404 || r.status == 403, "{:#}", r.body);
    let ev = app.get(&format!("/api/v1/events/{event}"), None).await.expect(200);
    assert_eq!(ev["name"], "Noche de Prueba");
}

/// The same Idempotency-Key and body return the first order; a different
/// body under the same key is a 422.
#[tokio::test]
async fn idempotent_order_creation() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let h1 = app.hold(&fan, &event, &tt, 1).await.expect(201);
    let h2 = app.hold(&fan, &event, &tt, 1).await.expect(201);
    let first = app.order(&fan, &id(&h1), Some("key-1")).await.expect(201);
    let again = app.order(&fan, &id(&h1), Some("key-1")).await.expect(201);
    assert_eq!(first["id"], again["id"]);
    app.order(&fan, &id(&h2), Some("key-1")).await.expect_problem(422, "idempotency_key_reused");
}

/// Webhooks with a bad signature, a stale timestamp or a replayed id change
/// nothing.
#[tokio::test]
async fn tampered_stale_and_replayed_webhooks() {
    use hmac::{KeyInit, Mac};
    let app = spawn_app().await;
    let url = app.url("/api/v1/payments/webhooks/sandbox");
    let body = r#"{"type":"payment.succeeded","data":{"payment_id":"00000000-0000-7000-8000-000000000000"}}"#;
    let ts = time::OffsetDateTime::unix_timestamp(t0());
    let sign = |id: &str, ts: i64, body: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec_test_secret").unwrap();
        mac.update(format!("{id}.{ts}.{body}").as_bytes());
        use base64_engine::*;
        format!("v1,{}", b64(&mac.finalize().into_bytes()))
    };
    // Tampered: signed for another body.
    let r = app
        .send(
            app.http
                .post(&url)
                .header("webhook-id", "evt_1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign("evt_1", ts, "{}"))
                .body(body),
        )
        .await;
    r.expect_problem(400, "invalid_signature");
    // Stale: signed correctly but ten minutes old.
    let old = ts - 600;
    let r = app
        .send(
            app.http
                .post(&url)
                .header("webhook-id", "evt_2")
                .header("webhook-timestamp", old.to_string())
                .header("webhook-signature", sign("evt_2", old, body))
                .body(body),
        )
        .await;
    r.expect_problem(400, "stale_webhook");
}

mod base64_engine {
    pub fn b64(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            out.push(T[(n >> 18) as usize & 63] as char);
            out.push(T[(n >> 12) as usize & 63] as char);
            out.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
            out.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
        }
        out
    }
}

/// An organizer refunds a paid order: the order is refunded, its tickets
/// are cancelled, the seats return to sale and the buyer is told.
#[tokio::test]
async fn organizer_refunds_an_order() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 2).await;
    let fan = app.register("fan@example.com").await;
    let order = app.buy(&fan, &event, &tt, 2).await;
    app.hold(&fan, &event, &tt, 1).await.expect_problem(409, "sold_out");
    // The fan cannot refund their own order through the organizer route.
    let r = app.post(&format!("/api/v1/orders/{}/refund", id(&order)), Some(&fan.token), json!({})).await;
    assert!(r.status == 403 || r.status == 404, "{:#}", r.body);
    app.post(&format!("/api/v1/orders/{}/refund", id(&order)), Some(&org_user.token), json!({})).await.expect(200);
    app.settle().await;
    let o = app.get(&format!("/api/v1/orders/{}", id(&order)), Some(&fan.token)).await.expect(200);
    assert_eq!(o["status"], "refunded");
    app.hold(&fan, &event, &tt, 2).await.expect(201);
    assert!(app.mailbox().iter().any(|(n, _)| n.starts_with("order_refunded")));
}

/// The race: 64 clients make 2,000 purchase attempts against 500 seats;
/// exactly 500 are sold, everyone else hears `sold_out`, and the books agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_overselling_under_a_race() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 500).await;
    let mut fans = Vec::new();
    for i in 0..64 {
        fans.push(app.register(&format!("fan{i}@example.com")).await);
    }
    let mut tasks = Vec::new();
    for (i, fan) in fans.into_iter().enumerate() {
        let app = app.clone();
        let (event, tt) = (event.clone(), tt.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut sold_out) = (0, 0);
            for _ in 0..(2000 / 64 + usize::from(i < 2000 % 64)) {
                let r = app.hold(&fan, &event, &tt, 1).await;
                match (r.status, r.code()) {
                    (201, _) => {
                        let o = app.order(&fan, r.body["id"].as_str().unwrap(), None).await.expect(201);
                        app.pay(o["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
                        ok += 1;
                    }
                    (409, "sold_out") => sold_out += 1,
                    other => panic!("unexpected answer {other:?}: {:#}", r.body),
                }
            }
            (ok, sold_out)
        }));
    }
    let (mut ok, mut sold_out) = (0, 0);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        ok += a;
        sold_out += b;
    }
    app.settle().await;
    assert_eq!(ok, 500);
    assert_eq!(ok + sold_out, 2000);
    let checks = app.app.sales.check_inventory(event.parse().unwrap()).await.unwrap();
    for c in checks {
        assert!(c.consistent(), "{c:?}");
    }
    let ev = app.get(&format!("/api/v1/events/{event}"), None).await.expect(200);
    assert_eq!(ev["ticket_types"][0]["available"], 0);
}

/// With the sandbox sending every webhook twice and newest first, each
/// position still gets exactly one ticket and the money is booked once.
#[tokio::test]
async fn duplicated_and_reordered_webhooks_issue_tickets_once() {
    let app = spawn_app_with(|c| c.payments.sandbox_duplicate_every = Some(1)).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 50).await;
    let fan = app.register("fan@example.com").await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let hold = app.hold(&fan, &event, &tt, 2).await.expect(201);
        let order = app.order(&fan, &id(&hold), None).await.expect(201);
        app.pay(order["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
        orders.push(id(&order));
    }
    app.settle().await;
    for o in &orders {
        let t = app.get(&format!("/api/v1/orders/{o}/tickets"), Some(&fan.token)).await.expect(200);
        let n = t.as_array().map(Vec::len).or_else(|| t["items"].as_array().map(Vec::len)).unwrap();
        assert_eq!(n, 2, "order {o}: {t:#}");
    }
    let eur = entrada_primitives::Currency::parse("EUR").unwrap();
    let owed = app.app.payments.balance(&format!("organizer:{org}"), eur).await.unwrap();
    assert_eq!(owed, -15000, "3 orders × 2 × 25.00 EUR credited to the organizer once");
    let held = app.app.payments.balance("provider:sandbox", eur).await.unwrap();
    assert_eq!(held, 15000);
}

/// Support staff may refund any order; the ledger then owes the organizer
/// nothing, and every posting balances.
#[tokio::test]
async fn support_refunds_and_the_ledger_balances() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let support = app.register("support@example.com").await;
    app.app
        .identity
        .grant_platform_role(
            &entrada_primitives::Email::parse("support@example.com").unwrap(),
            entrada_primitives::PlatformRole::Support,
        )
        .await
        .unwrap();
    // A fresh login carries the new role.
    let login = app
        .post("/api/v1/auth/login", None, json!({"email": "support@example.com", "password": "correct horse battery"}))
        .await
        .expect(200);
    let support_token = login["access_token"].as_str().unwrap();
    let _ = support;
    let order = app.buy(&fan, &event, &tt, 1).await;
    let r = app
        .post(
            &format!("/api/v1/orders/{}/refund", id(&order)),
            Some(support_token),
            json!({"reason": "customer request"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    app.settle().await;
    let eur = entrada_primitives::Currency::parse("EUR").unwrap();
    assert_eq!(app.app.payments.balance(&format!("organizer:{org}"), eur).await.unwrap(), 0);
    let (unbalanced,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT transaction_id, currency FROM ledger_entries \
         GROUP BY transaction_id, currency HAVING SUM(amount_minor) <> 0) x",
    )
    .fetch_one(app.app.db.reader())
    .await
    .unwrap();
    assert_eq!(unbalanced, 0, "every ledger transaction balances per currency");
    // Every step left an audit record with its actor.
    let actions: Vec<(String, String)> = sqlx::query_as("SELECT action, actor_type FROM audit_log ORDER BY id")
        .fetch_all(app.app.db.reader())
        .await
        .unwrap();
    for expected in [
        "user.registered",
        "organization.created",
        "event.published",
        "order.paid",
        "payment.succeeded",
        "payment.refunded",
    ] {
        assert!(actions.iter().any(|(a, _)| a == expected), "audit lacks {expected}: {actions:?}");
    }
}
