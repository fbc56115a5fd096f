//! Stripe: the client's wire format against a fake Stripe that checks every
//! request and answers with recorded Stripe bodies, and webhook signatures
//! against a fixed vector.

use crate::{App, STRIPE_WEBHOOK_SECRET, spawn_stripe};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use entrada_payments::WebhookError;
use entrada_payments::signature::{stripe_sign, stripe_verify};
use entrada_primitives::Clock;
use entrada_primitives::ids::PaymentId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/stripe/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One request the fake Stripe received.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    content_type: Option<String>,
    form: Vec<(String, String)>,
}

impl Recorded {
    fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct FakeStripe {
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// While true, Stripe answers 500 (an outage).
    down: Arc<AtomicBool>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[allow(clippy::result_large_err)]
impl FakeStripe {
    /// Records the request and checks what every Stripe call must carry;
    /// answers like Stripe when it is missing.
    fn check(&self, path: &str, headers: &HeaderMap, body: &Bytes) -> Result<Recorded, Response> {
        let rec = Recorded {
            path: path.to_owned(),
            authorization: header(headers, "authorization"),
            idempotency_key: header(headers, "idempotency-key"),
            content_type: header(headers, "content-type"),
            form: serde_urlencoded::from_bytes(body).unwrap_or_default(),
        };
        self.requests.lock().unwrap().push(rec.clone());
        if self.down.load(Ordering::SeqCst) {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":{"type":"api_error"}}"#).into_response());
        }
        if rec.authorization.as_deref() != Some("Bearer sk_test_entrada") {
            let body = r#"{"error":{"message":"Invalid API Key provided","type":"invalid_request_error"}}"#;
            return Err((StatusCode::UNAUTHORIZED, body).into_response());
        }
        if rec.content_type.as_deref() != Some("application/x-www-form-urlencoded") || rec.idempotency_key.is_none() {
            return Err((StatusCode::BAD_REQUEST, fixture("error_invalid_request.json")).into_response());
        }
        Ok(rec)
    }
}

fn json_response(body: String) -> Response {
    ([("content-type", "application/json")], body).into_response()
}

async fn sessions(State(fake): State<FakeStripe>, headers: HeaderMap, body: Bytes) -> Response {
    let rec = match fake.check("/v1/checkout/sessions", &headers, &body) {
        Ok(r) => r,
        Err(res) => return res,
    };
    if rec.field("line_items[0][price_data][currency]").is_none() {
        return (StatusCode::BAD_REQUEST, fixture("error_invalid_request.json")).into_response();
    }
    let pid = rec.field("client_reference_id").unwrap_or_default().to_owned();
    json_response(fixture("checkout_session_created.json").replace("{{payment_id}}", &pid))
}

async fn refunds(State(fake): State<FakeStripe>, headers: HeaderMap, body: Bytes) -> Response {
    match fake.check("/v1/refunds", &headers, &body) {
        Ok(_) => json_response(fixture("refund_created.json")),
        Err(res) => res,
    }
}

async fn spawn_fake() -> (FakeStripe, String) {
    let fake = FakeStripe::default();
    let app = axum::Router::new()
        .route("/v1/checkout/sessions", axum::routing::post(sessions))
        .route("/v1/refunds", axum::routing::post(refunds))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, base)
}

impl App {
    /// Posts a Stripe event fixture for `payment`, signed now.
    async fn stripe_event(&self, fixture_name: &str, payment: PaymentId) -> reqwest::Response {
        let body = fixture(fixture_name).replace("{{payment_id}}", &payment.to_string());
        let sig = stripe_sign(STRIPE_WEBHOOK_SECRET.as_bytes(), self.clock.now().unix_timestamp(), body.as_bytes());
        self.post_webhook("stripe", &[("stripe-signature", sig)], &body).await
    }
}

/// Creating a payment opens a Checkout Session with Stripe's exact form
/// fields, bearer auth and our payment id as the Idempotency-Key; asking
/// again for the same reference does not call Stripe twice.
#[tokio::test]
async fn stripe_checkout_session_wire_format() {
    let (fake, api) = spawn_fake().await;
    let app = spawn_stripe(api).await;
    let c = app.payments.create_payment(app.new_payment("order:stripe-1", 2500)).await.unwrap();
    assert!(c.checkout_url.starts_with("https://checkout.stripe.com/c/pay/cs_test_"));

    let reqs = fake.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/checkout/sessions");
    assert_eq!(r.authorization.as_deref(), Some("Bearer sk_test_entrada"));
    assert_eq!(r.idempotency_key.as_deref(), Some(c.payment_id.to_string().as_str()));
    let pid = c.payment_id.to_string();
    let expect = [
        ("mode", "payment".to_owned()),
        ("line_items[0][price_data][currency]", "eur".to_owned()),
        ("line_items[0][price_data][unit_amount]", "2500".to_owned()),
        ("line_items[0][price_data][product_data][name]", "2 × Standing, Nightjar live".to_owned()),
        ("line_items[0][quantity]", "1".to_owned()),
        ("success_url", format!("https://shop.example/return?payment={pid}&status=succeeded")),
        ("cancel_url", format!("https://shop.example/return?payment={pid}&status=cancelled")),
        ("client_reference_id", pid.clone()),
        ("metadata[payment_id]", pid.clone()),
        ("payment_intent_data[metadata][payment_id]", pid.clone()),
    ];
    for (k, v) in expect {
        assert_eq!(r.field(k), Some(v.as_str()), "{k}");
    }

    let again = app.payments.create_payment(app.new_payment("order:stripe-1", 2500)).await.unwrap();
    assert_eq!(again.payment_id, c.payment_id);
    assert_eq!(fake.requests.lock().unwrap().len(), 1);

    // The sandbox pages and webhook do not exist when Stripe is configured.
    let page = app.http.get(format!("{}/sandbox/checkout/{}", app.base, c.payment_id)).send().await.unwrap();
    assert_eq!(page.status(), 404);
    let res = app.post_webhook("sandbox", &[], "{}").await;
    assert_eq!(res.status(), 404);
}

/// A Stripe outage is a 503 `provider_unavailable`; asking again once Stripe
/// is back opens the checkout with the same idempotency key.
#[tokio::test]
async fn stripe_outage_is_retryable() {
    let (fake, api) = spawn_fake().await;
    let app = spawn_stripe(api).await;
    fake.down.store(true, Ordering::SeqCst);
    let err = app.payments.create_payment(app.new_payment("order:outage", 2500)).await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code.as_ref()), (503, "provider_unavailable"));
    fake.down.store(false, Ordering::SeqCst);
    let c = app.payments.create_payment(app.new_payment("order:outage", 2500)).await.unwrap();
    let reqs = fake.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].idempotency_key, reqs[1].idempotency_key);
    assert_eq!(reqs[1].idempotency_key.as_deref(), Some(c.payment_id.to_string().as_str()));
}

/// Stripe's webhooks drive the payment: `checkout.session.completed`
/// captures (once, even with `payment_intent.succeeded` after it), a refund
/// goes to `/v1/refunds` against the PaymentIntent with a stable key, and
/// `charge.refunded` afterwards changes nothing.
#[tokio::test]
async fn stripe_webhooks_capture_and_refund() {
    let (fake, api) = spawn_fake().await;
    let app = spawn_stripe(api).await;
    let c = app.payments.create_payment(app.new_payment("order:stripe-1", 2500)).await.unwrap();
    let id = c.payment_id;

    assert_eq!(app.stripe_event("event_checkout_session_completed.json", id).await.status(), 200);
    assert_eq!(app.status(id).await, "succeeded");
    assert_eq!(app.stripe_event("event_payment_intent_succeeded.json", id).await.status(), 200);
    // Replay of the same event id.
    assert_eq!(app.stripe_event("event_checkout_session_completed.json", id).await.status(), 200);
    assert_eq!(app.events().await.len(), 1);
    assert_eq!(app.balance("provider:stripe").await, 2500);
    assert_eq!(app.balance(&app.organizer()).await, -2500);

    app.payments.refund(id, "requested by customer").await.unwrap();
    app.payments.refund(id, "requested by customer").await.unwrap();
    let reqs = fake.requests.lock().unwrap().clone();
    let refunds: Vec<_> = reqs.iter().filter(|r| r.path == "/v1/refunds").collect();
    assert_eq!(refunds.len(), 1, "the second refund is answered from our own record");
    assert_eq!(refunds[0].field("payment_intent"), Some("pi_3QabcdEFGHijklMN0xYz3456"));
    assert_eq!(refunds[0].field("amount"), Some("2500"));
    assert_eq!(refunds[0].idempotency_key.as_deref(), Some(format!("refund:{id}").as_str()));
    assert_eq!(refunds[0].authorization.as_deref(), Some("Bearer sk_test_entrada"));
    assert_eq!(app.status(id).await, "refunded");

    assert_eq!(app.stripe_event("event_charge_refunded.json", id).await.status(), 200);
    let kinds: Vec<String> = app.events().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(kinds, ["payment.succeeded", "payment.refunded"]);
    assert_eq!(app.balance("provider:stripe").await, 0);
    app.assert_ledger_balanced().await;
}

/// A refund made in the Stripe dashboard arrives only as `charge.refunded`
/// and is applied from it, found by the PaymentIntent.
#[tokio::test]
async fn stripe_dashboard_refund_applies_from_the_webhook() {
    let (_fake, api) = spawn_fake().await;
    let app = spawn_stripe(api).await;
    let c = app.payments.create_payment(app.new_payment("order:dash", 2500)).await.unwrap();
    app.stripe_event("event_checkout_session_completed.json", c.payment_id).await;
    let res = app.stripe_event("event_charge_refunded.json", c.payment_id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.status(c.payment_id).await, "refunded");
    app.assert_ledger_balanced().await;
}

/// `payment_intent.payment_failed` fails the payment with the decline code.
#[tokio::test]
async fn stripe_payment_failed_carries_the_decline_code() {
    let (_fake, api) = spawn_fake().await;
    let app = spawn_stripe(api).await;
    let c = app.payments.create_payment(app.new_payment("order:fail", 2500)).await.unwrap();
    assert_eq!(app.stripe_event("event_payment_intent_payment_failed.json", c.payment_id).await.status(), 200);
    assert_eq!(app.status(c.payment_id).await, "failed");
    let events = app.events().await;
    assert_eq!(events[0].0, "payment.failed");
    assert_eq!(events[0].1["reason"], "insufficient_funds");
}

/// The Stripe signature scheme against a fixed vector. The expected hex was
/// computed once, independently, with Python:
/// `hmac.new(b"whsec_test_entrada_fixed_vector", b"1763900300." + body, hashlib.sha256).hexdigest()`.
#[test]
fn stripe_signature_fixed_vector() {
    let body =
        br#"{"id":"evt_fixed","type":"payment_intent.succeeded","data":{"object":{"id":"pi_fixed","metadata":{}}}}"#;
    let expected = "bcf0b4fa95ef1f3ddef00417e66435c05311bf0256bad3b6224543d31e618fc6";
    let ts = 1_763_900_300;
    assert_eq!(stripe_sign(STRIPE_WEBHOOK_SECRET.as_bytes(), ts, body), format!("t={ts},v1={expected}"));

    let headers = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert("stripe-signature", v.parse().unwrap());
        h
    };
    let secret = STRIPE_WEBHOOK_SECRET.as_bytes();
    let good = headers(&format!("t={ts},v1={expected}"));
    assert_eq!(stripe_verify(secret, &good, body, ts + 300), Ok(()));
    // several v1 entries (secret rotation): any one may match
    let rotated = headers(&format!("t={ts},v1={},v1={expected},v0=deadbeef", "0".repeat(64)));
    assert_eq!(stripe_verify(secret, &rotated, body, ts), Ok(()));
    // tampered body
    let tampered = String::from_utf8(body.to_vec()).unwrap().replace("pi_fixed", "pi_other");
    assert_eq!(stripe_verify(secret, &good, tampered.as_bytes(), ts), Err(WebhookError::InvalidSignature));
    // stale, either way
    assert_eq!(stripe_verify(secret, &good, body, ts + 301), Err(WebhookError::StaleWebhook));
    assert_eq!(stripe_verify(secret, &good, body, ts - 301), Err(WebhookError::StaleWebhook));
    // missing header, missing timestamp, no v1, garbage
    assert_eq!(stripe_verify(secret, &HeaderMap::new(), body, ts), Err(WebhookError::InvalidSignature));
    assert_eq!(
        stripe_verify(secret, &headers(&format!("v1={expected}")), body, ts),
        Err(WebhookError::InvalidSignature)
    );
    assert_eq!(
        stripe_verify(secret, &headers(&format!("t={ts},v0={expected}")), body, ts),
        Err(WebhookError::InvalidSignature)
    );
    assert_eq!(stripe_verify(secret, &headers("garbage"), body, ts), Err(WebhookError::InvalidSignature));
    // a stale timestamp with a wrong signature reports the signature
    assert_eq!(stripe_verify(b"whsec_wrong", &good, body, ts + 1000), Err(WebhookError::InvalidSignature));
}

/// The Standard Webhooks scheme (the sandbox's) against a fixed vector,
/// computed once with Python:
/// `base64.b64encode(hmac.new(b"sandbox-secret", b'evt_fixed.1763900300.{"a":1}', hashlib.sha256).digest())`.
#[test]
fn standard_webhooks_signature_fixed_vector() {
    let sig = entrada_payments::signature::standard_sign(b"sandbox-secret", "evt_fixed", 1_763_900_300, br#"{"a":1}"#);
    assert_eq!(sig, "v1,fY2SSmvFbSf7u4vrzjueq10J5Fm0jIXv7f/yoDRIUeU=");
}

/// Over HTTP, a tampered or stale Stripe webhook is a 400 with its code and
/// changes nothing.
#[tokio::test]
async fn stripe_webhook_endpoint_refuses_tampered_and_stale() {
    let (_fake, api) = spawn_fake().await;
    let app = spawn_stripe(api).await;
    let c = app.payments.create_payment(app.new_payment("order:tamper", 2500)).await.unwrap();
    let body = fixture("event_checkout_session_completed.json").replace("{{payment_id}}", &c.payment_id.to_string());
    let now = app.clock.now().unix_timestamp();
    let sig = stripe_sign(STRIPE_WEBHOOK_SECRET.as_bytes(), now, body.as_bytes());
    let tampered = body.replace("2500", "25");
    let res = app.post_webhook("stripe", &[("stripe-signature", sig)], &tampered).await;
    assert_eq!(App::problem_code(res).await, (400, "invalid_signature".to_owned()));
    let old = stripe_sign(STRIPE_WEBHOOK_SECRET.as_bytes(), now - 301, body.as_bytes());
    let res = app.post_webhook("stripe", &[("stripe-signature", old)], &body).await;
    assert_eq!(App::problem_code(res).await, (400, "stale_webhook".to_owned()));
    let res = app.post_webhook("stripe", &[], &body).await;
    assert_eq!(App::problem_code(res).await, (400, "invalid_signature".to_owned()));
    assert_eq!(app.status(c.payment_id).await, "created");
    assert!(app.events().await.is_empty());
}

/// A requested refund that Stripe cannot take now is retried with backoff
/// from one second, with the same idempotency key, until it succeeds.
#[tokio::test]
async fn requested_refunds_retry_with_backoff_while_stripe_is_down() {
    let (fake, api) = spawn_fake().await;
    let app = spawn_stripe(api).await;
    let c = app.payments.create_payment(app.new_payment("order:retry-refund", 2500)).await.unwrap();
    app.stripe_event("event_checkout_session_completed.json", c.payment_id).await;
    let mut tx = app.tdb.db.begin().await.unwrap();
    entrada_storage::outbox::append(
        &mut tx,
        0,
        &entrada_storage::DomainEvent::RefundRequested { payment_id: c.payment_id, reason: "sold out".into() },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let clock: entrada_primitives::SharedClock = Arc::new(app.clock.clone());
    entrada_storage::Dispatcher::new(app.tdb.db.clone(), clock, vec![app.payments.consumer()]).drain().await.unwrap();

    fake.down.store(true, Ordering::SeqCst);
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 0);
    assert_eq!(app.status(c.payment_id).await, "succeeded");
    fake.down.store(false, Ordering::SeqCst);
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 0, "not due before the backoff");
    app.clock.advance(time::Duration::seconds(1));
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 1);
    assert_eq!(app.status(c.payment_id).await, "refunded");
    let keys: Vec<_> = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/v1/refunds")
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    app.assert_ledger_balanced().await;
}
