//! The sandbox provider end to end: checkout page, test cards, signed
//! webhooks delivered over HTTP, de-duplication, refunds and the ledger.

use crate::{App, SANDBOX_SECRET, spawn_sandbox};
use entrada_payments::signature::standard_sign;
use entrada_primitives::ids::PaymentId;
use entrada_storage::{Dispatcher, DomainEvent, outbox};
use std::sync::Arc;

/// Signs a sandbox-style webhook as the sandbox would, `age_secs` ago.
fn signed(app: &App, event_id: &str, body: &str, age_secs: i64) -> Vec<(&'static str, String)> {
    let ts = app.clock_now_secs() - age_secs;
    vec![
        ("webhook-id", event_id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", standard_sign(SANDBOX_SECRET.as_bytes(), event_id, ts, body.as_bytes())),
    ]
}

fn sandbox_body(event_id: &str, kind: &str, payment: PaymentId, extra: serde_json::Value) -> String {
    let mut data = serde_json::json!({ "payment_id": payment.to_string(), "amount_minor": 2500, "currency": "EUR" });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({ "id": event_id, "type": kind, "created": 0, "data": data }).to_string()
}

impl App {
    fn clock_now_secs(&self) -> i64 {
        use entrada_primitives::Clock;
        self.clock.now().unix_timestamp()
    }

    /// Creates a payment, pays it with `card` and delivers the webhooks.
    async fn paid(&self, reference: &str, card: &str) -> PaymentId {
        let c = self.payments.create_payment(self.new_payment(reference, 2500)).await.unwrap();
        assert_eq!(self.pay_json(c.payment_id, card).await.status(), 200);
        self.payments.deliver_sandbox_webhooks().await.unwrap();
        c.payment_id
    }
}

/// A buyer pays with the success card on the hosted page; only the signed
/// webhook moves the payment to succeeded, which emits `payment.succeeded`
/// and posts a balanced capture to the ledger.
#[tokio::test]
async fn sandbox_happy_path_end_to_end() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:happy", 2500)).await.unwrap();
    assert_eq!(c.checkout_url, format!("{}/sandbox/checkout/{}", app.base, c.payment_id));

    let page = app.http.get(&c.checkout_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("25.00 EUR") && html.contains("Nightjar live") && html.contains(r#"name="card""#));
    assert!(!html.contains("http://") && !html.contains("https://"), "the page loads no external assets");

    let res = app.pay_json(c.payment_id, "4242424242424242").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["payment_id"], c.payment_id.to_string());
    // The browser's answer changes nothing on our side: only the webhook does.
    assert_eq!(app.status(c.payment_id).await, "created");
    assert!(app.events().await.is_empty());

    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 1);
    assert_eq!(app.status(c.payment_id).await, "succeeded");
    let events = app.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "payment.succeeded");
    assert_eq!(events[0].1["reference"], "order:happy");
    assert_eq!(events[0].1["amount_minor"], 2500);
    assert_eq!(events[0].1["payment_id"], c.payment_id.to_string());
    assert_eq!(app.balance("provider:sandbox").await, 2500);
    assert_eq!(app.balance(&app.organizer()).await, -2500);
    app.assert_ledger_balanced().await;
    let audits = app
        .count("SELECT COUNT(*) FROM audit_log WHERE object_type = 'payment' AND action = 'payment.succeeded'")
        .await;
    assert_eq!(audits, 1);
    // Nothing left to send.
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 0);

    // Paying again is refused.
    let again = app.pay_json(c.payment_id, "4242424242424242").await;
    assert_eq!(App::problem_code(again).await, (409, "payment_not_payable".to_owned()));
}

/// A browser form post is answered with a 303 back to the return URL,
/// carrying the payment id and status.
#[tokio::test]
async fn form_post_redirects_to_the_return_url() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:form", 2500)).await.unwrap();
    let res = app.post_form(&c.checkout_url, "card=4242+4242+4242+4242").await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        format!("https://shop.example/return?payment={}&status=succeeded", c.payment_id)
    );
    let declined = app.payments.create_payment(app.new_payment("order:form2", 2500)).await.unwrap();
    let res = app.post_form(&declined.checkout_url, "card=4000000000000002").await;
    assert_eq!(res.status(), 303);
    assert!(res.headers()["location"].to_str().unwrap().ends_with("&status=failed"));
}

/// The two decline cards fail the payment with their codes, emit
/// `payment.failed`, post nothing to the ledger, and a failed payment cannot
/// be paid again.
#[tokio::test]
async fn declined_cards_fail_with_their_codes() {
    let app = spawn_sandbox(None).await;
    for (reference, card, code) in
        [("order:d1", "4000000000000002", "card_declined"), ("order:d2", "4000000000009995", "insufficient_funds")]
    {
        let c = app.payments.create_payment(app.new_payment(reference, 2500)).await.unwrap();
        let body: serde_json::Value = app.pay_json(c.payment_id, card).await.json().await.unwrap();
        assert_eq!(body["status"], "failed");
        assert_eq!(body["decline_code"], code);
        app.payments.deliver_sandbox_webhooks().await.unwrap();
        assert_eq!(app.status(c.payment_id).await, "failed");
        let again = app.pay_json(c.payment_id, "4242424242424242").await;
        assert_eq!(App::problem_code(again).await, (409, "payment_not_payable".to_owned()));
    }
    let events = app.events().await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|(t, _)| t == "payment.failed"));
    assert_eq!(events[0].1["reason"], "card_declined");
    assert_eq!(events[1].1["reason"], "insufficient_funds");
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries").await, 0);
}

/// The pending card is pending after the first delivery run and succeeds on
/// the next settlement run.
#[tokio::test]
async fn pending_card_settles_on_the_next_run() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:slow", 2500)).await.unwrap();
    let body: serde_json::Value = app.pay_json(c.payment_id, "4000000000000077").await.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 1);
    assert_eq!(app.status(c.payment_id).await, "pending");
    assert!(app.events().await.is_empty());
    assert_eq!(app.balance("provider:sandbox").await, 0);

    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 1);
    assert_eq!(app.status(c.payment_id).await, "succeeded");
    assert_eq!(app.events().await.len(), 1);
    assert_eq!(app.balance("provider:sandbox").await, 2500);
}

/// Unknown or malformed cards are a 422 naming the field; an unknown
/// payment is a 404; a malformed JSON body is a 400. None changes state.
#[tokio::test]
async fn bad_cards_and_unknown_payments_are_refused() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:bad", 2500)).await.unwrap();
    for card in ["4111111111111111", "not a card", ""] {
        let (status, code) = App::problem_code(app.pay_json(c.payment_id, card).await).await;
        assert_eq!((status, code.as_str()), (422, "validation_failed"), "{card}");
    }
    let res = app.post_form(&c.checkout_url, "number=4242424242424242").await;
    assert_eq!(App::problem_code(res).await, (422, "validation_failed".to_owned()));
    let res = app
        .http
        .post(&c.checkout_url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(App::problem_code(res).await, (400, "malformed_json".to_owned()));
    let unknown = app.pay_json(PaymentId::new(), "4242424242424242").await;
    assert_eq!(App::problem_code(unknown).await, (404, "not_found".to_owned()));
    let page = app.http.get(format!("{}/sandbox/checkout/not-a-uuid", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert_eq!(app.status(c.payment_id).await, "created");
    assert_eq!(app.count("SELECT COUNT(*) FROM sandbox_webhooks").await, 0);
}

/// Buyers paying one checkout at once (a double click, two tabs): exactly
/// one payment goes through and queues one webhook; the others are told
/// 409 `payment_not_payable`, and paying again later is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_of_one_checkout_charge_once() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:twice", 2500)).await.unwrap();
    let attempts = futures::future::join_all((0..6).map(|_| app.pay_json(c.payment_id, "4242424242424242"))).await;
    let mut outcomes = Vec::new();
    for res in attempts {
        let status = res.status().as_u16();
        let code = if status == 200 { String::new() } else { App::problem_code(res).await.1 };
        outcomes.push((status, code));
    }
    assert_eq!(outcomes.iter().filter(|(s, _)| *s == 200).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|(s, code)| *s == 200 || (*s == 409 && code == "payment_not_payable")), "{outcomes:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM sandbox_webhooks").await, 1);
    let again = app.pay_json(c.payment_id, "4000000000000002").await;
    assert_eq!(App::problem_code(again).await, (409, "payment_not_payable".to_owned()));
    let (status,): (String,) = sqlx::query_as("SELECT status FROM sandbox_charges WHERE payment_id = $1")
        .bind(c.payment_id.to_db())
        .fetch_one(app.tdb.db.reader())
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
}

/// Asking twice for the same reference returns the first payment and opens
/// no second checkout; bad input is a 422 naming the field.
#[tokio::test]
async fn create_is_idempotent_by_reference() {
    let app = spawn_sandbox(None).await;
    let a = app.payments.create_payment(app.new_payment("order:same", 2500)).await.unwrap();
    let b = app.payments.create_payment(app.new_payment("order:same", 9999)).await.unwrap();
    assert_eq!(a.payment_id, b.payment_id);
    assert_eq!(a.checkout_url, b.checkout_url);
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sandbox_charges").await, 1);
    let (amount,): (i64,) =
        sqlx::query_as("SELECT amount_minor FROM payments").fetch_one(app.tdb.db.reader()).await.unwrap();
    assert_eq!(amount, 2500, "the first request's amount stands");

    let zero = app.payments.create_payment(app.new_payment("order:zero", 0)).await.unwrap_err();
    assert_eq!((zero.status.as_u16(), zero.code.as_ref()), (422, "validation_failed"));
    let mut bad = app.new_payment("order:url", 100);
    bad.return_url = "ftp://x".into();
    assert_eq!(app.payments.create_payment(bad).await.unwrap_err().code, "validation_failed");
    let audits = app.count("SELECT COUNT(*) FROM audit_log WHERE action = 'payment.created'").await;
    assert_eq!(audits, 1);
}

/// Callers racing to create the payment of one reference all get the same
/// payment and checkout (the losers continue with the winner's), and each
/// caller's record of it is written exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_share_one_payment_and_record_each_caller_once() {
    let app = spawn_sandbox(None).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (payments, req) = (app.payments.clone(), app.new_payment("order:race", 2500));
        tasks.push(tokio::spawn(async move {
            payments
                .create_payment_recorded(
                    req,
                    move |c: &entrada_payments::Checkout, script: &mut entrada_storage::Script| {
                        entrada_storage::audit::push(
                            script,
                            0,
                            &entrada_storage::audit::Actor::System,
                            "probe.recorded",
                            "payment",
                            &c.payment_id.to_db(),
                            serde_json::json!({ "caller": i }),
                        );
                    },
                )
                .await
                .unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    assert!(seen.iter().all(|c| c.payment_id == seen[0].payment_id && c.checkout_url == seen[0].checkout_url));
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM sandbox_charges").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = 'probe.recorded'").await, 8);
    assert_eq!(app.status(seen[0].payment_id).await, "created");
    let linked = "SELECT COUNT(*) FROM payments p JOIN sandbox_charges c ON c.id = p.provider_ref \
                  AND c.id = p.capture_ref AND c.payment_id = p.id";
    assert_eq!(app.count(linked).await, 1, "the payment names the charge that was opened for it");
}

/// With duplicates on, every webhook is delivered twice and newest first;
/// the payment still succeeds exactly once: one event, one capture.
#[tokio::test]
async fn duplicate_deliveries_change_nothing_twice() {
    let app = spawn_sandbox(Some(1)).await;
    let a = app.payments.create_payment(app.new_payment("order:dup1", 2500)).await.unwrap();
    let b = app.payments.create_payment(app.new_payment("order:dup2", 2500)).await.unwrap();
    app.pay_json(a.payment_id, "4242424242424242").await;
    app.pay_json(b.payment_id, "4000000000000077").await;
    // a: succeeded ×2, b: pending ×2, all delivered
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 4);
    // b settles: succeeded ×2
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 2);
    assert_eq!(app.status(a.payment_id).await, "succeeded");
    assert_eq!(app.status(b.payment_id).await, "succeeded");
    let events = app.events().await;
    assert_eq!(events.iter().filter(|(t, _)| t == "payment.succeeded").count(), 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_transactions").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_receipts").await, 3);
    assert_eq!(app.balance("provider:sandbox").await, 5000);
    app.assert_ledger_balanced().await;
}

/// Late events arriving out of order never move a payment backwards: a
/// `pending` or `failed` after `succeeded` changes nothing, and a second
/// `succeeded` (a different event id) posts nothing twice.
#[tokio::test]
async fn out_of_order_events_never_downgrade() {
    let app = spawn_sandbox(None).await;
    let id = app.paid("order:ooo", "4242424242424242").await;
    for (eid, kind, extra) in [
        ("evt_late_pending", "payment.pending", serde_json::json!({})),
        ("evt_late_failed", "payment.failed", serde_json::json!({ "reason": "card_declined" })),
        ("evt_second_success", "payment.succeeded", serde_json::json!({})),
    ] {
        let body = sandbox_body(eid, kind, id, extra);
        let res = app.post_webhook("sandbox", &signed(&app, eid, &body, 0), &body).await;
        assert_eq!(res.status(), 200, "{kind}");
    }
    assert_eq!(app.status(id).await, "succeeded");
    assert_eq!(app.events().await.len(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_transactions").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_receipts").await, 4);
}

/// Tampered, stale, unsigned and replayed webhooks change nothing: the
/// first three are 400s with their codes, a replay is acknowledged; other
/// provider names are 404; an unknown payment is acknowledged.
#[tokio::test]
async fn tampered_stale_and_replayed_webhooks_are_refused_or_ignored() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:sig", 2500)).await.unwrap();
    let id = c.payment_id;
    let body = sandbox_body("evt_sig", "payment.succeeded", id, serde_json::json!({}));

    let tampered = body.replace("2500", "1");
    let res = app.post_webhook("sandbox", &signed(&app, "evt_sig", &body, 0), &tampered).await;
    assert_eq!(App::problem_code(res).await, (400, "invalid_signature".to_owned()));

    let res = app.post_webhook("sandbox", &signed(&app, "evt_sig", &body, 301), &body).await;
    assert_eq!(App::problem_code(res).await, (400, "stale_webhook".to_owned()));
    // From the future too.
    let res = app.post_webhook("sandbox", &signed(&app, "evt_sig", &body, -301), &body).await;
    assert_eq!(App::problem_code(res).await, (400, "stale_webhook".to_owned()));

    let res = app.post_webhook("sandbox", &[], &body).await;
    assert_eq!(App::problem_code(res).await, (400, "invalid_signature".to_owned()));

    let garbage = "{\"id\":\"x\"}";
    let res = app.post_webhook("sandbox", &signed(&app, "evt_garbage", garbage, 0), garbage).await;
    assert_eq!(App::problem_code(res).await, (400, "malformed_webhook".to_owned()));

    for other in ["stripe", "paypal"] {
        let res = app.post_webhook(other, &signed(&app, "evt_sig", &body, 0), &body).await;
        assert_eq!(res.status(), 404, "{other}");
    }
    assert_eq!(app.status(id).await, "created");
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_receipts").await, 0);

    // The genuine one applies; its replay is acknowledged and changes nothing.
    let res = app.post_webhook("sandbox", &signed(&app, "evt_sig", &body, 10), &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.status(id).await, "succeeded");
    let res = app.post_webhook("sandbox", &signed(&app, "evt_sig", &body, 0), &body).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.events().await.len(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries").await, 2);

    // An unknown payment is acknowledged (and logged) so the provider stops.
    let unknown = sandbox_body("evt_unknown", "payment.succeeded", PaymentId::new(), serde_json::json!({}));
    let res = app.post_webhook("sandbox", &signed(&app, "evt_unknown", &unknown, 0), &unknown).await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.events().await.len(), 1);
}

/// A failed delivery (the receiver is down) is retried with backoff from
/// one second until it gets a 2xx.
#[tokio::test]
async fn webhooks_are_retried_with_backoff_until_acknowledged() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:retry", 2500)).await.unwrap();
    app.pay_json(c.payment_id, "4242424242424242").await;
    app.outage.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 0);
    assert_eq!(app.count("SELECT attempts FROM sandbox_webhooks").await, 1);
    app.outage.store(false, std::sync::atomic::Ordering::SeqCst);
    // Not due yet: nothing is sent before the backoff elapses.
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 0);
    assert_eq!(app.status(c.payment_id).await, "created");
    app.clock.advance(time::Duration::seconds(1));
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 1);
    assert_eq!(app.status(c.payment_id).await, "succeeded");
    assert_eq!(app.count("SELECT attempts FROM sandbox_webhooks").await, 2);
}

/// A refund gives the money back once: the payment is refunded, the ledger
/// is reversed, `payment.refunded` is emitted once, and refunding again (or
/// receiving the provider's refund webhook) changes nothing.
#[tokio::test]
async fn refund_is_idempotent_and_reverses_the_ledger() {
    let app = spawn_sandbox(None).await;
    let id = app.paid("order:refund", "4242424242424242").await;
    assert_eq!(app.balance("provider:sandbox").await, 2500);

    app.payments.refund(id, "event cancelled").await.unwrap();
    assert_eq!(app.status(id).await, "refunded");
    assert_eq!(app.balance("provider:sandbox").await, 0);
    assert_eq!(app.balance(&app.organizer()).await, 0);
    app.assert_ledger_balanced().await;

    app.payments.refund(id, "event cancelled").await.unwrap();
    assert_eq!(app.payments.deliver_sandbox_webhooks().await.unwrap(), 1, "the provider's refund webhook");
    let refunded = app.events().await.into_iter().filter(|(t, _)| t == "payment.refunded").collect::<Vec<_>>();
    assert_eq!(refunded.len(), 1);
    assert_eq!(refunded[0].1["reference"], "order:refund");
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_transactions").await, 2);
    let (refund_id,): (Option<String>,) =
        sqlx::query_as("SELECT refund_id FROM sandbox_charges").fetch_one(app.tdb.db.reader()).await.unwrap();
    assert!(refund_id.unwrap().starts_with("re_"));

    // Nothing captured, nothing to refund; unknown payments are 404.
    let open = app.payments.create_payment(app.new_payment("order:open", 100)).await.unwrap();
    let err = app.payments.refund(open.payment_id, "x").await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.code.as_ref()), (409, "payment_not_refundable"));
    let err = app.payments.refund(PaymentId::new(), "x").await.unwrap_err();
    assert_eq!(err.code, "not_found");
}

/// Ticketing's `payment.refund_requested` event reaches the refund
/// consumer, and the background step refunds through the provider once,
/// even when the event is handled twice.
#[tokio::test]
async fn refund_requests_from_events_are_carried_out_once() {
    let app = spawn_sandbox(None).await;
    let id = app.paid("order:late", "4242424242424242").await;
    let unpaid = app.payments.create_payment(app.new_payment("order:unpaid", 100)).await.unwrap();
    let db = app.tdb.db.clone();
    for payment_id in [id, id, unpaid.payment_id] {
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, 0, &DomainEvent::RefundRequested { payment_id, reason: "sold out".into() })
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let clock: entrada_primitives::SharedClock = Arc::new(app.clock.clone());
    let dispatcher = Dispatcher::new(app.tdb.db.clone(), clock, vec![app.payments.consumer()]);
    assert_eq!(dispatcher.drain().await.unwrap(), 3);
    // Recorded only: the provider call runs in the background step.
    assert_eq!(app.status(id).await, "succeeded");
    let asked = app.count("SELECT COUNT(*) FROM audit_log WHERE action = 'payment.refund_requested'").await;
    assert_eq!(asked, 2, "the repeated request for the same payment is recorded once");

    // One refunded, one dropped because nothing was captured.
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 2);
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 0);
    assert_eq!(app.status(id).await, "refunded");
    assert_eq!(app.status(unpaid.payment_id).await, "created");
    let refunded = app.events().await.into_iter().filter(|(t, _)| t == "payment.refunded").count();
    assert_eq!(refunded, 1);
    assert_eq!(app.balance("provider:sandbox").await, 0);
    app.assert_ledger_balanced().await;
}

/// The background loop delivers webhooks without being driven by hand and
/// stops when its shutdown future resolves. The test waits for the server to
/// answer the webhook (bounded), never for a fixed time.
#[tokio::test]
async fn background_loop_delivers_and_stops_on_shutdown() {
    let app = spawn_sandbox(None).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.payments.clone().run_background(async move {
        let _ = stopped.await;
    }));
    let c = app.payments.create_payment(app.new_payment("order:bg", 2500)).await.unwrap();
    app.pay_json(c.payment_id, "4242424242424242").await;
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), app.webhook_answered.notified()).await;
    assert!(waited.is_ok(), "the background loop delivered the webhook");
    assert_eq!(app.status(c.payment_id).await, "succeeded");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), task).await.unwrap().unwrap();
}

/// A refund requested while the payment is still pending waits (with
/// backoff) for the money to arrive, then refunds it.
#[tokio::test]
async fn refund_request_for_a_pending_payment_waits_for_the_capture() {
    let app = spawn_sandbox(None).await;
    let c = app.payments.create_payment(app.new_payment("order:wait", 2500)).await.unwrap();
    app.pay_json(c.payment_id, "4000000000000077").await;
    app.payments.deliver_sandbox_webhooks().await.unwrap();
    assert_eq!(app.status(c.payment_id).await, "pending");
    let mut tx = app.tdb.db.begin().await.unwrap();
    outbox::append(&mut tx, 0, &DomainEvent::RefundRequested { payment_id: c.payment_id, reason: "late".into() })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let clock: entrada_primitives::SharedClock = Arc::new(app.clock.clone());
    Dispatcher::new(app.tdb.db.clone(), clock, vec![app.payments.consumer()]).drain().await.unwrap();
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 0);

    app.payments.deliver_sandbox_webhooks().await.unwrap();
    assert_eq!(app.status(c.payment_id).await, "succeeded");
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 0, "backing off");
    app.clock.advance(time::Duration::seconds(1));
    assert_eq!(app.payments.process_refund_requests().await.unwrap(), 1);
    assert_eq!(app.status(c.payment_id).await, "refunded");
    app.assert_ledger_balanced().await;
}

/// The OpenAPI document lists the webhook endpoint and leaves the sandbox's
/// HTML checkout pages out of the public API.
#[tokio::test]
async fn openapi_lists_the_webhook_but_not_the_sandbox_pages() {
    let app = spawn_sandbox(None).await;
    let (_router, api) = app.payments.router().split_for_parts();
    let doc = serde_json::to_value(&api).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/payments/webhooks/{provider}"));
    assert!(paths.keys().all(|p| !p.starts_with("/sandbox")));
}
