//! Gifts and resale through the whole app: ownership moves under the
//! organizer's rules, the old holder's QR stops admitting at the real
//! scanner API while the new holder's admits, money settles to the cent in
//! a balanced ledger, and one listing is sold exactly once.

use crate::checkin::{Gate, Phone, gate, phone};
use crate::helpers::*;
use entrada_primitives::Clock as _;
use serde_json::{Value, json};

/// Shows the phone's current QR at the gate.
async fn scan(app: &TestApp, g: &Gate, p: &Phone) -> Value {
    crate::checkin::scan(app, g, &p.qr(app.clock.now().unix_timestamp())).await
}

/// An event on sale (25.00 EUR tickets) with its organizer, a gate, and a fan
/// holding one ticket.
struct World {
    org: User,
    event: String,
    tt: String,
    gate: Gate,
    fan: User,
    ticket: String,
}

async fn world(app: &TestApp) -> World {
    let (org, org_id) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org, &org_id, 100).await;
    let gate = gate(app, &org, &event).await;
    let fan = app.register("fan@example.com").await;
    let ticket = buy_one(app, &fan, &event, &tt).await;
    World { org, event, tt, gate, fan, ticket }
}

/// Buys one ticket and returns its id.
async fn buy_one(app: &TestApp, fan: &User, event: &str, tt: &str) -> String {
    let order = app.buy(fan, event, tt, 1).await;
    assert_eq!(order["status"], "paid", "{order:#}");
    let tickets = app.get(&format!("/api/v1/orders/{}/tickets", order["id"].as_str().unwrap()), Some(&fan.token)).await;
    tickets.expect(200)[0]["id"].as_str().unwrap().to_owned()
}

async fn set_policy(app: &TestApp, w: &World, policy: Value) {
    app.patch(&format!("/api/v1/events/{}", w.event), Some(&w.org.token), json!({ "resale_policy": policy }))
        .await
        .expect(200);
}

async fn holds(app: &TestApp, fan: &User, ticket: &str) -> bool {
    let mine = app.get("/api/v1/me/tickets", Some(&fan.token)).await.expect(200);
    mine["items"].as_array().unwrap().iter().any(|t| t["id"] == ticket)
}

/// A fresh access token after the clock moved past the old one's lifetime.
async fn login(app: &TestApp, u: &mut User) {
    let r = app
        .post("/api/v1/auth/login", None, json!({"email": u.email, "password": "correct horse battery"}))
        .await
        .expect(200);
    u.token = r["access_token"].as_str().unwrap().to_owned();
}

fn eur(minor: i64) -> Value {
    json!({"amount_minor": minor, "currency": "EUR"})
}

async fn list(app: &TestApp, fan: &User, ticket: &str, minor: i64) -> Resp {
    app.post(&format!("/api/v1/tickets/{ticket}/listings"), Some(&fan.token), json!({ "price": eur(minor) })).await
}

async fn offer(app: &TestApp, from: &User, ticket: &str, to: &str) -> Resp {
    app.post(&format!("/api/v1/tickets/{ticket}/gifts"), Some(&from.token), json!({ "recipient_email": to })).await
}

/// Offers the world's ticket and returns the gift id.
async fn gift_id(app: &TestApp, w: &World, to: &str) -> String {
    let r = offer(app, &w.fan, &w.ticket, to).await.expect(201);
    r["id"].as_str().unwrap().to_owned()
}

async fn purchase(app: &TestApp, buyer: &User, listing: &str) -> Resp {
    app.post(&format!("/api/v1/listings/{listing}/purchase"), Some(&buyer.token), json!({})).await
}

/// Every ledger transaction balances: the entries of each currency sum to zero.
async fn ledger_sums(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT currency, CAST(SUM(amount_minor) AS BIGINT) FROM ledger_entries GROUP BY currency")
        .fetch_all(app.app.db.reader())
        .await
        .unwrap()
}

async fn balance(app: &TestApp, account: &str) -> i64 {
    app.app.payments.balance(account, entrada_primitives::Currency::parse("EUR").unwrap()).await.unwrap()
}

async fn holder_events(app: &TestApp, ticket: &str) -> Vec<Value> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT payload FROM outbox WHERE event_type = 'ticket.holder_changed' ORDER BY id")
            .fetch_all(app.app.db.reader())
            .await
            .unwrap();
    rows.iter().map(|r| serde_json::from_str::<Value>(&r.0).unwrap()).filter(|v| v["ticket_id"] == ticket).collect()
}

/// A gift accepted by a fan with an account: the ticket is theirs, the
/// sender's QR is rejected as `superseded_generation`, the recipient's QR
/// admits, `ticket.holder_changed {reason: gift}` is out, and the public
/// history shows the gift between pseudonymous holders.
#[tokio::test]
async fn an_accepted_gift_moves_the_ticket_and_revokes_the_old_qr() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let friend = app.register("friend@example.com").await;
    let old = phone(&app, &w.fan, &w.ticket).await;

    let gift = app
        .post(
            &format!("/api/v1/tickets/{}/gifts", w.ticket),
            Some(&w.fan.token),
            json!({"recipient_email": "Friend@Example.com"}),
        )
        .await
        .expect(201);
    assert_eq!(gift["status"], "pending");
    app.settle().await;
    let mails = app.mailbox();
    let mail = mails
        .iter()
        .find(|(_, m)| m.to_lowercase().contains("to: friend@example.com") && m.contains("wants to give you"));
    assert!(mail.is_some(), "the recipient is told: {mails:?}");

    let mine = app.get("/api/v1/me/gifts", Some(&friend.token)).await.expect(200);
    assert_eq!(mine["incoming"][0]["id"], gift["id"]);
    let gid = gift["id"].as_str().unwrap();
    let accept_path = format!("/api/v1/gifts/{gid}/accept");
    app.post_raw(&accept_path, Some(&friend.token), "{", "application/json")
        .await
        .expect_problem(400, "malformed_json");
    // the body is optional for a recipient with an account
    let accept = app.http.post(app.url(&format!("/api/v1/gifts/{gid}/accept"))).bearer_auth(&friend.token);
    let accepted = app.send(accept).await.expect(200);
    assert_eq!(accepted["status"], "accepted");
    assert!(holds(&app, &friend, &w.ticket).await);
    assert!(!holds(&app, &w.fan, &w.ticket).await);

    let v = scan(&app, &w.gate, &old).await;
    assert_eq!((v["ok"].clone(), v["reason"].clone()), (json!(false), json!("superseded_generation")), "{v:#}");
    // the sender cannot fetch a credential for the ticket any more
    app.get(&format!("/api/v1/tickets/{}/credential", w.ticket), Some(&w.fan.token))
        .await
        .expect_problem(404, "not_found");
    let new = phone(&app, &friend, &w.ticket).await;
    let v = scan(&app, &w.gate, &new).await;
    assert_eq!(v["ok"], true, "{v:#}");

    let ev = holder_events(&app, &w.ticket).await;
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0]["reason"].as_str(), ev[0]["generation"].as_i64()), (Some("gift"), Some(2)));
    assert_eq!((ev[0]["from"].as_str(), ev[0]["to"].as_str()), (Some(w.fan.id.as_str()), Some(friend.id.as_str())));

    let h = app.get(&format!("/api/v1/tickets/{}/history", w.ticket), None).await.expect(200);
    let kinds: Vec<&str> = h["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // the token was minted by the chain pipeline during `settle()` after the sale
    assert_eq!(kinds, ["issued", "minted", "gift", "checked_in"]);
    let minted = &h["entries"][1]["token"];
    assert!(minted["tx_hash"].as_str().is_some_and(|x| x.starts_with("0x")), "{h:#}");
    assert_eq!(minted["token_id"], h["serial"]);
    assert_eq!(h["entries"][2]["from"], "holder 1");
    assert_eq!(h["entries"][2]["to"], "holder 2");
    let text = h.to_string();
    assert!(!text.contains("example.com") && !text.contains(&w.fan.id), "no personal data: {text}");
    let by_serial = app.get(&format!("/api/v1/events/{}/tickets/{}/history", w.event, h["serial"]), None).await;
    assert_eq!(by_serial.expect(200), h);
    app.get(&format!("/api/v1/events/{}/tickets/999999/history", w.event), None).await.expect_problem(404, "not_found");

    // a used ticket cannot be given again
    let again = app
        .post(
            &format!("/api/v1/tickets/{}/gifts", w.ticket),
            Some(&friend.token),
            json!({"recipient_email": "third@example.com"}),
        )
        .await;
    again.expect_problem(409, "ticket_checked_in");
}

/// Declined and cancelled offers leave the ticket where it was; an offer
/// runs out after its time (the sweep marks it expired, and accepting an
/// overdue offer before the sweep is `gift_expired`).
#[tokio::test]
async fn gifts_can_be_declined_cancelled_and_expire() {
    let app = spawn_app().await;
    let mut w = world(&app).await;
    let friend = app.register("friend@example.com").await;
    let g1 = gift_id(&app, &w, "friend@example.com").await;
    // one pending offer per ticket
    app.post(
        &format!("/api/v1/tickets/{}/gifts", w.ticket),
        Some(&w.fan.token),
        json!({"recipient_email": "other@example.com"}),
    )
    .await
    .expect_problem(409, "gift_pending");
    let d = app.post(&format!("/api/v1/gifts/{g1}/decline"), Some(&friend.token), json!({})).await.expect(200);
    assert_eq!(d["status"], "declined");
    app.post(&format!("/api/v1/gifts/{g1}/accept"), Some(&friend.token), json!({}))
        .await
        .expect_problem(409, "gift_not_pending");
    assert!(holds(&app, &w.fan, &w.ticket).await);

    let g2 = gift_id(&app, &w, "friend@example.com").await;
    // the recipient cannot cancel, only the sender
    app.post(&format!("/api/v1/gifts/{g2}/cancel"), Some(&friend.token), json!({}))
        .await
        .expect_problem(404, "not_found");
    let c = app.post(&format!("/api/v1/gifts/{g2}/cancel"), Some(&w.fan.token), json!({})).await.expect(200);
    assert_eq!(c["status"], "cancelled");
    app.post(&format!("/api/v1/gifts/{g2}/accept"), Some(&friend.token), json!({}))
        .await
        .expect_problem(409, "gift_not_pending");

    let g3 = gift_id(&app, &w, "friend@example.com").await;
    app.clock.advance(time::Duration::days(8));
    let mut friend = friend;
    login(&app, &mut friend).await;
    login(&app, &mut w.fan).await;
    app.post(&format!("/api/v1/gifts/{g3}/accept"), Some(&friend.token), json!({}))
        .await
        .expect_problem(410, "gift_expired");
    let g4 = gift_id(&app, &w, "friend@example.com").await;
    app.clock.advance(time::Duration::days(8));
    app.settle().await;
    login(&app, &mut friend).await;
    login(&app, &mut w.fan).await;
    let g = app.get(&format!("/api/v1/gifts/{g4}"), Some(&w.fan.token)).await.expect(200);
    assert_eq!(g["status"], "expired");
    assert!(holds(&app, &w.fan, &w.ticket).await);
    assert!(!holds(&app, &friend, &w.ticket).await);
    assert!(holder_events(&app, &w.ticket).await.is_empty());
}

/// A friend without an account gets an invitation mail; after signing up
/// with that address they accept with the mailed claim token (without it,
/// `claim_token_invalid`) and the ticket is theirs.
#[tokio::test]
async fn an_invitation_is_claimed_after_sign_up() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let gift = app
        .post(
            &format!("/api/v1/tickets/{}/gifts", w.ticket),
            Some(&w.fan.token),
            json!({"recipient_email": "newcomer@example.com"}),
        )
        .await
        .expect(201);
    let gid = gift["id"].as_str().unwrap();
    app.settle().await;
    let mails = app.mailbox();
    let (_, mail) = mails
        .iter()
        .find(|(_, m)| m.contains("newcomer@example.com") && m.contains("Create your free Entrada account"))
        .expect("an invitation mail");
    let token = mail
        .lines()
        .find_map(|l| l.strip_prefix("Claim code: "))
        .map(|t| t.trim().to_owned())
        .expect("the mail carries the claim code");

    let newcomer = app.register("newcomer@example.com").await;
    let mine = app.get("/api/v1/me/gifts", Some(&newcomer.token)).await.expect(200);
    assert_eq!(mine["incoming"][0]["id"], gift["id"]);
    app.post(&format!("/api/v1/gifts/{gid}/accept"), Some(&newcomer.token), json!({}))
        .await
        .expect_problem(403, "claim_token_invalid");
    app.post(&format!("/api/v1/gifts/{gid}/accept"), Some(&newcomer.token), json!({"claim_token": "wrong"}))
        .await
        .expect_problem(403, "claim_token_invalid");
    // someone else who learnt the token still cannot claim: it is not addressed to them
    let stranger = app.register("stranger@example.com").await;
    app.post(&format!("/api/v1/gifts/{gid}/accept"), Some(&stranger.token), json!({"claim_token": token}))
        .await
        .expect_problem(404, "not_found");
    let ok = app
        .post(&format!("/api/v1/gifts/{gid}/accept"), Some(&newcomer.token), json!({"claim_token": token}))
        .await
        .expect(200);
    assert_eq!(ok["status"], "accepted");
    assert!(holds(&app, &newcomer, &w.ticket).await);
    let old = app.get(&format!("/api/v1/tickets/{}/credential", w.ticket), Some(&w.fan.token)).await;
    old.expect_problem(404, "not_found");
    let p = phone(&app, &newcomer, &w.ticket).await;
    assert_eq!(scan(&app, &w.gate, &p).await["ok"], true);
}

/// The whole resale: a price above the cap is refused with the cap in the
/// problem; list, reprice, withdraw, list again; the public event page shows
/// the offer; a buyer pays the listing's price (not one it sends); on
/// settlement the ticket is the buyer's, the seller's QR is superseded, the
/// buyer's admits, and the ledger splits the price exactly into seller
/// proceeds, royalty and fee, with a payout for the seller.
#[tokio::test]
async fn a_listing_is_listed_repriced_withdrawn_and_bought() {
    let app = spawn_app().await;
    let w = world(&app).await;
    set_policy(&app, &w, json!({"price_cap_bps": 12000, "royalty_bps": 500, "fee_bps": 250})).await;
    let seller_qr = phone(&app, &w.fan, &w.ticket).await;

    let terms = app.get(&format!("/api/v1/tickets/{}/resale-terms", w.ticket), Some(&w.fan.token)).await.expect(200);
    assert_eq!(terms["cap"], eur(3000));
    assert_eq!(terms["resale_refusal"], Value::Null);

    let above = list(&app, &w.fan, &w.ticket, 3001).await;
    above.expect_problem(422, "price_above_cap");
    assert_eq!(above.body["cap"], eur(3000));
    app.post(
        &format!("/api/v1/tickets/{}/listings", w.ticket),
        Some(&w.fan.token),
        json!({"price": {"amount_minor": 2500, "currency": "USD"}}),
    )
    .await
    .expect_problem(422, "currency_mismatch");

    list(&app, &w.fan, &w.ticket, 0).await.expect_problem(422, "validation_failed");
    list(&app, &w.fan, &w.ticket, i64::MAX).await.expect_problem(422, "validation_failed");
    let l = list(&app, &w.fan, &w.ticket, 2600).await.expect(201);
    assert_eq!(
        (l["status"].as_str(), l["cap"].clone(), l["face_value"].clone()),
        (Some("active"), eur(3000), eur(2500))
    );
    let lid = l["id"].as_str().unwrap().to_owned();
    list(&app, &w.fan, &w.ticket, 2600).await.expect_problem(409, "ticket_listed");
    app.patch(&format!("/api/v1/listings/{lid}"), Some(&w.fan.token), json!({"price": eur(3100)}))
        .await
        .expect_problem(422, "price_above_cap");
    let r = app.patch(&format!("/api/v1/listings/{lid}"), Some(&w.fan.token), json!({"price": eur(2900)})).await;
    assert_eq!(r.expect(200)["price"], eur(2900));
    let wd = app.post(&format!("/api/v1/listings/{lid}/withdraw"), Some(&w.fan.token), json!({})).await.expect(200);
    assert_eq!((wd["status"].as_str(), wd["withdraw_reason"].as_str()), (Some("withdrawn"), Some("seller")));
    let shown = app.get(&format!("/api/v1/events/{}/listings", w.event), None).await.expect(200);
    assert!(shown["items"].as_array().unwrap().is_empty());

    let l = list(&app, &w.fan, &w.ticket, 2750).await.expect(201);
    let lid = l["id"].as_str().unwrap().to_owned();
    let shown = app.get(&format!("/api/v1/events/{}/listings", w.event), None).await.expect(200);
    assert_eq!(shown["items"][0]["id"], lid.as_str());
    assert_eq!(shown["items"][0]["price"], eur(2750));
    assert!(!shown.to_string().contains(&w.fan.id), "the public list does not name the seller");

    let buyer = app.register("buyer@example.com").await;
    // a price sent by the buyer is not read
    let p = app
        .post(&format!("/api/v1/listings/{lid}/purchase"), Some(&buyer.token), json!({"price": eur(1)}))
        .await
        .expect(201);
    assert_eq!(p["price"], eur(2750));
    // 2750 × 5 % = 137.5 → 137 royalty; × 2.5 % = 68.75 → 68 fee; the seller gets the rest
    assert_eq!((p["seller_proceeds"].clone(), p["royalty"].clone(), p["fee"].clone()), (eur(2545), eur(137), eur(68)));
    // held for the buyer: off the public list, and the seller cannot withdraw it now
    let shown = app.get(&format!("/api/v1/events/{}/listings", w.event), None).await.expect(200);
    assert!(shown["items"].as_array().unwrap().is_empty());
    app.post(&format!("/api/v1/listings/{lid}/withdraw"), Some(&w.fan.token), json!({}))
        .await
        .expect_problem(409, "listing_not_active");

    app.pay(p["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    app.settle().await;
    let done = app.get(&format!("/api/v1/resale-purchases/{}", p["id"].as_str().unwrap()), Some(&buyer.token)).await;
    assert_eq!(done.expect(200)["status"], "completed");
    assert!(holds(&app, &buyer, &w.ticket).await);
    assert!(!holds(&app, &w.fan, &w.ticket).await);
    let sold = app.get(&format!("/api/v1/listings/{lid}"), None).await.expect(200);
    assert_eq!(sold["status"], "sold");

    let v = scan(&app, &w.gate, &seller_qr).await;
    assert_eq!(v["reason"], "superseded_generation", "{v:#}");
    let buyer_qr = phone(&app, &buyer, &w.ticket).await;
    assert_eq!(scan(&app, &w.gate, &buyer_qr).await["ok"], true);

    let ev = holder_events(&app, &w.ticket).await;
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0]["reason"].as_str(), ev[0]["to"].as_str()), (Some("resale"), Some(buyer.id.as_str())));

    // money: buyer paid 2750 = seller 2545 + royalty 137 + fee 68
    assert!(ledger_sums(&app).await.iter().all(|(_, s)| *s == 0), "{:?}", ledger_sums(&app).await);
    let org_id: (String,) = sqlx::query_as("SELECT organization_id FROM events WHERE id = $1")
        .bind(&w.event)
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
    assert_eq!(balance(&app, "provider:sandbox").await, 2500 + 2750);
    assert_eq!(balance(&app, &format!("organizer:{}", org_id.0)).await, -(2500 + 137));
    assert_eq!(balance(&app, &format!("seller:{}", w.fan.id)).await, -2545);
    assert_eq!(balance(&app, "platform:fees").await, -68);
    let payouts: Vec<(String, i64, String)> = sqlx::query_as("SELECT seller_id, amount_minor, currency FROM payouts")
        .fetch_all(app.app.db.reader())
        .await
        .unwrap();
    assert_eq!(payouts, vec![(w.fan.id.clone(), 2545, "EUR".to_owned())]);

    let h = app.get(&format!("/api/v1/tickets/{}/history", w.ticket), None).await.expect(200);
    let resale = h["entries"].as_array().unwrap().iter().find(|e| e["kind"] == "resale").unwrap();
    assert_eq!(
        (resale["kind"].as_str(), resale["price"].clone(), resale["cap"].clone()),
        (Some("resale"), eur(2750), eur(3000))
    );

    // the new holder may resell; the old one can no longer touch the ticket
    list(&app, &w.fan, &w.ticket, 2500).await.expect_problem(404, "not_found");
    let _ = w.tt;
}

/// Fifty buyers press "buy" on one listing at once: exactly one gets it,
/// every other one is told `listing_unavailable` (409), and only one payment
/// is ever captured.
#[tokio::test]
async fn fifty_buyers_one_listing_exactly_one_wins() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let l = list(&app, &w.fan, &w.ticket, 2500).await.expect(201);
    let lid = l["id"].as_str().unwrap().to_owned();
    let mut buyers = Vec::new();
    for i in 0..50 {
        buyers.push(app.register(&format!("buyer{i}@example.com")).await);
    }
    let results = futures::future::join_all(buyers.iter().map(|b| purchase(&app, b, &lid))).await;
    let winners: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one purchase");
    for r in results.iter().filter(|r| r.status != 201) {
        r.expect_problem(409, "listing_unavailable");
    }
    let winner = winners[0];
    app.pay(winner.body["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    app.settle().await;
    let (captures,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM ledger_transactions x JOIN payments p ON p.id = x.payment_id \
         WHERE x.kind = 'capture' AND p.reference LIKE 'resale:%'",
    )
    .fetch_one(app.app.db.reader())
    .await
    .unwrap();
    assert_eq!(captures, 1);
    let (payments,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments WHERE reference LIKE 'resale:%'")
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
    assert_eq!(payments, 1, "losers never reached the provider");
    assert_eq!(balance(&app, "provider:sandbox").await, 2500 + 2500);
    assert!(ledger_sums(&app).await.iter().all(|(_, s)| *s == 0));
    let winner_index = results.iter().position(|r| r.status == 201).unwrap();
    assert!(holds(&app, &buyers[winner_index], &w.ticket).await, "the ticket went to the one buyer who won");
}

/// A buyer whose hold ran out pays after the listing was sold to someone
/// else: their money is refunded through the refund path, the ticket stays
/// with the second buyer, and the ledger still balances.
#[tokio::test]
async fn a_late_payment_for_a_resold_listing_is_refunded() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let lid = list(&app, &w.fan, &w.ticket, 2400).await.expect(201)["id"].as_str().unwrap().to_owned();
    let slow = app.register("slow@example.com").await;
    let fast = app.register("fast@example.com").await;
    let p1 = purchase(&app, &slow, &lid).await.expect(201);
    purchase(&app, &fast, &lid).await.expect_problem(409, "listing_unavailable");
    app.clock.advance(time::Duration::minutes(11));
    app.settle().await;
    let expired = app.get(&format!("/api/v1/resale-purchases/{}", p1["id"].as_str().unwrap()), Some(&slow.token)).await;
    assert_eq!(expired.expect(200)["status"], "expired");
    let p2 = purchase(&app, &fast, &lid).await.expect(201);
    app.pay(p2["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    app.settle().await;
    assert!(holds(&app, &fast, &w.ticket).await);

    app.pay(p1["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    app.settle().await;
    let late = app.get(&format!("/api/v1/resale-purchases/{}", p1["id"].as_str().unwrap()), Some(&slow.token)).await;
    assert_eq!(late.expect(200)["status"], "refunded");
    assert!(holds(&app, &fast, &w.ticket).await);
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT reference, status FROM payments WHERE reference LIKE 'resale:%' ORDER BY created_at")
            .fetch_all(app.app.db.reader())
            .await
            .unwrap();
    assert_eq!(statuses.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(), ["refunded", "succeeded"]);
    assert!(ledger_sums(&app).await.iter().all(|(_, s)| *s == 0));
    assert_eq!(balance(&app, "provider:sandbox").await, 2500 + 2400);
    assert_eq!(balance(&app, &format!("seller:{}", w.fan.id)).await, -2400);
}

/// Nobody acts on another fan's ticket, gift, listing or purchase: each is
/// answered 404 `not_found`, exactly like an id that does not exist; a
/// seller cannot buy their own listing.
#[tokio::test]
async fn cross_user_attempts_are_refused() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let mallory = app.register("mallory@example.com").await;
    let friend = app.register("friend@example.com").await;
    let t = &w.ticket;
    let unknown = uuid::Uuid::now_v7();

    offer(&app, &mallory, t, "m@example.com").await.expect_problem(404, "not_found");
    list(&app, &mallory, t, 2000).await.expect_problem(404, "not_found");
    list(&app, &mallory, &unknown.to_string(), 2000).await.expect_problem(404, "not_found");
    app.get(&format!("/api/v1/tickets/{t}/resale-terms"), Some(&mallory.token)).await.expect_problem(404, "not_found");

    let g = app
        .post(
            &format!("/api/v1/tickets/{t}/gifts"),
            Some(&w.fan.token),
            json!({"recipient_email": "friend@example.com"}),
        )
        .await
        .expect(201);
    let gid = g["id"].as_str().unwrap();
    for action in ["accept", "decline", "cancel"] {
        app.post(&format!("/api/v1/gifts/{gid}/{action}"), Some(&mallory.token), json!({}))
            .await
            .expect_problem(404, "not_found");
        app.post(&format!("/api/v1/gifts/{unknown}/{action}"), Some(&mallory.token), json!({}))
            .await
            .expect_problem(404, "not_found");
    }
    app.get(&format!("/api/v1/gifts/{gid}"), Some(&mallory.token)).await.expect_problem(404, "not_found");
    // a pending gift blocks listing until cancelled
    list(&app, &w.fan, t, 2000).await.expect_problem(409, "gift_pending");
    app.post(&format!("/api/v1/gifts/{gid}/cancel"), Some(&w.fan.token), json!({})).await.expect(200);

    let lid = list(&app, &w.fan, t, 2000).await.expect(201)["id"].as_str().unwrap().to_owned();
    app.patch(&format!("/api/v1/listings/{lid}"), Some(&mallory.token), json!({"price": eur(1)}))
        .await
        .expect_problem(404, "not_found");
    app.post(&format!("/api/v1/listings/{lid}/withdraw"), Some(&mallory.token), json!({}))
        .await
        .expect_problem(404, "not_found");
    purchase(&app, &w.fan, &lid).await.expect_problem(409, "own_listing");
    purchase(&app, &mallory, &unknown.to_string()).await.expect_problem(404, "not_found");
    let p = purchase(&app, &friend, &lid).await.expect(201);
    app.get(&format!("/api/v1/resale-purchases/{}", p["id"].as_str().unwrap()), Some(&mallory.token))
        .await
        .expect_problem(404, "not_found");
    // without a token: 401
    app.post(&format!("/api/v1/tickets/{t}/listings"), None, json!({"price": eur(1)}))
        .await
        .expect_problem(401, "unauthenticated");
    // garbage in: 422 naming the field
    app.post(&format!("/api/v1/tickets/{t}/gifts"), Some(&w.fan.token), json!({"recipient_email": "not-an-address"}))
        .await
        .expect_problem(422, "validation_failed");
    app.post(&format!("/api/v1/tickets/{t}/gifts"), Some(&w.fan.token), json!({"recipient_email": "fan@example.com"}))
        .await
        .expect_problem(422, "self_gift");
}

/// Every resale rule answers with its own code: resale disabled, transfers
/// disabled, window not open, too many resales, freeze; open listings are
/// withdrawn by the sweep when the window closes or the freeze starts (and
/// refused at purchase time before the sweep runs); a refunded ticket cannot
/// move and its listing is taken down.
#[tokio::test]
async fn every_policy_rule_is_enforced_with_its_code() {
    let app = spawn_app().await;
    let mut w = world(&app).await;
    let t = w.ticket.clone();

    // a refunded ticket cannot move, and its open listing is taken down
    let mut buyer = app.register("buyer@example.com").await;
    let other = buy_one(&app, &buyer, &w.event, &w.tt).await;
    let stale = list(&app, &buyer, &other, 2000).await.expect(201)["id"].as_str().unwrap().to_owned();
    let orders = app.get("/api/v1/me/orders", Some(&buyer.token)).await.expect(200);
    let order = orders["items"][0]["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/v1/orders/{order}/refund"), Some(&w.org.token), json!({})).await.expect(200);
    app.settle().await;
    let l = app.get(&format!("/api/v1/listings/{stale}"), None).await.expect(200);
    assert_eq!((l["status"].as_str(), l["withdraw_reason"].as_str()), (Some("withdrawn"), Some("ticket_changed")));
    app.post(
        &format!("/api/v1/tickets/{other}/gifts"),
        Some(&buyer.token),
        json!({"recipient_email": "x@example.com"}),
    )
    .await
    .expect_problem(409, "ticket_not_transferable");
    list(&app, &buyer, &other, 2000).await.expect_problem(409, "ticket_not_transferable");

    set_policy(&app, &w, json!({"resale_allowed": false})).await;
    list(&app, &w.fan, &t, 2000).await.expect_problem(409, "resale_not_allowed");
    set_policy(&app, &w, json!({"resale_allowed": true, "transfers_allowed": false})).await;
    offer(&app, &w.fan, &t, "friend@example.com").await.expect_problem(409, "transfers_not_allowed");
    list(&app, &w.fan, &t, 2000).await.expect_problem(409, "transfers_not_allowed");
    set_policy(&app, &w, json!({"transfers_allowed": true, "resale_opens_at": "2030-03-10T00:00:00Z"})).await;
    list(&app, &w.fan, &t, 2000).await.expect_problem(409, "resale_window_not_open");
    set_policy(&app, &w, json!({"resale_opens_at": null, "max_resales_per_ticket": 0})).await;
    list(&app, &w.fan, &t, 2000).await.expect_problem(409, "resale_limit_reached");

    // the window closes: the sweep takes the listing down
    set_policy(&app, &w, json!({"max_resales_per_ticket": null, "resale_closes_at": "2030-03-05T00:00:00Z"})).await;
    let lid = list(&app, &w.fan, &t, 2000).await.expect(201)["id"].as_str().unwrap().to_owned();
    app.clock.advance(time::Duration::days(5));
    app.settle().await;
    login(&app, &mut w.fan).await;
    login(&app, &mut w.org).await;
    let l = app.get(&format!("/api/v1/listings/{lid}"), None).await.expect(200);
    assert_eq!((l["status"].as_str(), l["withdraw_reason"].as_str()), (Some("withdrawn"), Some("window_closed")));
    list(&app, &w.fan, &t, 2000).await.expect_problem(409, "resale_window_closed");

    // the freeze before doors (19:00 on 1 April; 2 hours): listed before,
    // withdrawn by the sweep once it starts, refused after
    set_policy(&app, &w, json!({"resale_closes_at": null, "freeze_minutes_before_doors": 120})).await;
    let lid = list(&app, &w.fan, &t, 2000).await.expect(201)["id"].as_str().unwrap().to_owned();
    app.clock.set(time::macros::datetime!(2030-04-01 17:00 UTC));
    login(&app, &mut w.fan).await;
    login(&app, &mut buyer).await;
    // checked at purchase time even before the sweep runs
    purchase(&app, &buyer, &lid).await.expect_problem(409, "resale_frozen");
    let l = app.get(&format!("/api/v1/listings/{lid}"), None).await.expect(200);
    assert_eq!((l["status"].as_str(), l["withdraw_reason"].as_str()), (Some("withdrawn"), Some("freeze")));
    list(&app, &w.fan, &t, 2000).await.expect_problem(409, "resale_frozen");
    // nor can it be given away in the last minutes
    offer(&app, &w.fan, &t, "friend@example.com").await.expect_problem(409, "transfers_frozen");
}

/// A listing blocks a gift until withdrawn; a gift and then a resale move the
/// ticket twice (generations 2 and 3), and the history labels each holder
/// once, in order.
#[tokio::test]
async fn gift_then_resale_counts_generations_and_labels_holders() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let lid = list(&app, &w.fan, &w.ticket, 2000).await.expect(201)["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/v1/tickets/{}/gifts", w.ticket),
        Some(&w.fan.token),
        json!({"recipient_email": "friend@example.com"}),
    )
    .await
    .expect_problem(409, "ticket_listed");
    app.post(&format!("/api/v1/listings/{lid}/withdraw"), Some(&w.fan.token), json!({})).await.expect(200);
    let friend = app.register("friend@example.com").await;
    let g = app
        .post(
            &format!("/api/v1/tickets/{}/gifts", w.ticket),
            Some(&w.fan.token),
            json!({"recipient_email": "friend@example.com"}),
        )
        .await
        .expect(201);
    app.post(&format!("/api/v1/gifts/{}/accept", g["id"].as_str().unwrap()), Some(&friend.token), json!({}))
        .await
        .expect(200);
    // the friend resells, then gives it back: two moves, generation 3
    let lid = list(&app, &friend, &w.ticket, 2500).await.expect(201)["id"].as_str().unwrap().to_owned();
    let buyer = app.register("buyer@example.com").await;
    let p = purchase(&app, &buyer, &lid).await.expect(201);
    app.pay(p["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    app.settle().await;
    let ev = holder_events(&app, &w.ticket).await;
    let reasons: Vec<(&str, i64)> =
        ev.iter().map(|e| (e["reason"].as_str().unwrap(), e["generation"].as_i64().unwrap())).collect();
    assert_eq!(reasons, [("gift", 2), ("resale", 3)]);
    let h = app.get(&format!("/api/v1/tickets/{}/history", w.ticket), None).await.expect(200);
    let labels: Vec<(String, String)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "gift" || e["kind"] == "resale")
        .map(|e| (e["from"].as_str().unwrap().to_owned(), e["to"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        labels,
        [("holder 1".to_owned(), "holder 2".to_owned()), ("holder 2".to_owned(), "holder 3".to_owned())]
    );
}

/// After a sequence of gifts and resales over several tickets and `settle()`,
/// the chain follows the tickets: each token's on-chain owner is the
/// custodial address of its ticket's current holder (embedded chain).
#[tokio::test]
async fn after_gifts_and_resales_each_token_is_owned_by_its_holders_address() {
    let app = spawn_app().await;
    let chain = app.app.chain.chain().clone();
    tokens_follow_gifts_and_resales(&app, chain.as_ref()).await;
}

/// The same on a real EVM node over JSON-RPC (anvil), read back through a
/// second client of the node.
#[tokio::test]
async fn on_anvil_each_token_is_owned_by_its_holders_address() {
    use entrada_chain::rpc::anvil::{self, Anvil};
    use entrada_chain::{RoleKeys, RpcChain, RpcConfig};
    use entrada_primitives::Secret;
    let node = Anvil::spawn(&[]).unwrap_or_else(|e| panic!("{e}"));
    let keys = || {
        let k = |i: usize| Secret::new(anvil::DEV_KEYS[i].to_owned());
        RoleKeys { admin: k(0), minter: k(1), custodian: k(2), organizer: k(3) }
    };
    let url = node.url();
    let app = spawn_app_with(move |c| {
        let k = keys();
        c.chain.mode = "rpc".into();
        c.chain.rpc_url = url;
        c.chain.chain_id = anvil::CHAIN_ID;
        c.chain.admin_key = k.admin;
        c.chain.minter_key = k.minter;
        c.chain.custodian_key = k.custodian;
        c.chain.organizer_key = k.organizer;
    })
    .await;
    let mut cfg = RpcConfig::new(node.url(), anvil::CHAIN_ID, keys());
    cfg.data_dir = Some(app.data_dir.path().to_path_buf());
    let reader = RpcChain::connect(cfg).await.unwrap();
    tokens_follow_gifts_and_resales(&app, &reader).await;
}

async fn tokens_follow_gifts_and_resales(app: &TestApp, chain: &dyn entrada_chain::ChainClient) {
    use entrada_chain::{Address, U256};
    use std::str::FromStr;
    let w = world(app).await;
    let a = app.register("a@example.com").await;
    let b = app.register("b@example.com").await;
    let t2 = buy_one(app, &w.fan, &w.event, &w.tt).await;
    let t3 = buy_one(app, &w.fan, &w.event, &w.tt).await;

    let give = |from: &User, ticket: String, to: &User| {
        let (from, to) = (from.clone(), to.clone());
        async move {
            let g = offer(app, &from, &ticket, &to.email).await.expect(201);
            app.post(&format!("/api/v1/gifts/{}/accept", g["id"].as_str().unwrap()), Some(&to.token), json!({}))
                .await
                .expect(200);
        }
    };
    let sell = |from: &User, ticket: String, to: &User| {
        let (from, to) = (from.clone(), to.clone());
        async move {
            let l = list(app, &from, &ticket, 2400).await.expect(201);
            let p = purchase(app, &to, l["id"].as_str().unwrap()).await.expect(201);
            app.pay(p["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
            app.settle().await;
        }
    };
    give(&w.fan, w.ticket.clone(), &a).await;
    app.settle().await;
    sell(&a, w.ticket.clone(), &b).await;
    sell(&w.fan, t2.clone(), &a).await;
    give(&a, t2.clone(), &w.fan).await;
    give(&w.fan, t3.clone(), &b).await;
    app.settle().await;

    let db = app.app.db.reader();
    let (address,): (String,) = sqlx::query_as("SELECT address FROM chain_collections WHERE event_id = $1")
        .bind(&w.event)
        .fetch_one(db)
        .await
        .unwrap();
    let contract = Address::from_str(&address).unwrap();
    let fan_address = app.app.chain.custodial_address(w.fan.id.parse().unwrap()).await.unwrap();
    let b_address = app.app.chain.custodial_address(b.id.parse().unwrap()).await.unwrap();
    assert_ne!(fan_address, b_address, "each holder has their own address");
    for (ticket, holder) in [(&w.ticket, &b), (&t2, &w.fan), (&t3, &b)] {
        assert!(holds(app, holder, ticket).await);
        let (serial,): (i64,) =
            sqlx::query_as("SELECT serial FROM tickets WHERE id = $1").bind(ticket).fetch_one(db).await.unwrap();
        let owner = chain.owner_of(contract, U256::from(serial as u64)).await.unwrap();
        let custodial = app.app.chain.custodial_address(holder.id.parse().unwrap()).await.unwrap();
        assert_eq!(owner, Some(custodial), "ticket {serial}");
    }
    assert_eq!(chain.total_supply(contract).await.unwrap(), 3);
}

/// A small xorshift generator: the ledger test's sequence is random but
/// reproducible from the printed seed (`ENTRADA_MARKET_SEED=<n>`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// After a random sequence of primary sales, resales at random prices within
/// the cap, and organizer refunds, every ledger transaction balances and each
/// party's balance is exactly what a plain model of the money says it is
/// owed: the provider holds every capture minus refunds, the organizer is
/// owed face values and royalties minus refunds, each seller their proceeds,
/// the platform its fees; payouts match the sellers' balances. A refund of an
/// order whose ticket was resold also refunds the holder's resale payment and
/// takes the seller's proceeds and the fee back (royalty stays).
#[tokio::test]
async fn after_random_sales_resales_and_refunds_every_party_is_owed_exactly_its_share() {
    use std::collections::BTreeMap;
    let seed = std::env::var("ENTRADA_MARKET_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("ENTRADA_MARKET_SEED={seed}");
    let mut rng = Rng(seed);
    let app = spawn_app().await;
    let w = world(&app).await;
    set_policy(&app, &w, json!({"price_cap_bps": 15000, "royalty_bps": 725, "fee_bps": 333})).await;
    let org_id: (String,) = sqlx::query_as("SELECT organization_id FROM events WHERE id = $1")
        .bind(&w.event)
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
    let mut fans = vec![w.fan.clone()];
    for i in 0..4 {
        fans.push(app.register(&format!("fan{i}@example.com")).await);
    }
    // the model: what each account should read (debit positive)
    let mut owed: BTreeMap<String, i64> = BTreeMap::new();
    let provider = "provider:sandbox".to_owned();
    let organizer = format!("organizer:{}", org_id.0);
    *owed.entry(provider.clone()).or_default() += 2500;
    *owed.entry(organizer.clone()).or_default() -= 2500;
    // per ticket: the last resale (seller, price, royalty, fee), which a refund of the ticket unwinds
    let mut last_resale: BTreeMap<String, (String, i64, i64, i64)> = BTreeMap::new();

    for _ in 0..14 {
        match rng.below(10) {
            0..=3 => {
                let fan = fans[rng.below(fans.len())].clone();
                buy_one(&app, &fan, &w.event, &w.tt).await;
                *owed.entry(provider.clone()).or_default() += 2500;
                *owed.entry(organizer.clone()).or_default() -= 2500;
            }
            4..=7 => {
                let valid: Vec<(String, String)> =
                    sqlx::query_as("SELECT id, holder_id FROM tickets WHERE status = 'valid' ORDER BY serial")
                        .fetch_all(app.app.db.reader())
                        .await
                        .unwrap();
                if valid.is_empty() {
                    continue;
                }
                let (ticket, holder) = valid[rng.below(valid.len())].clone();
                let seller = fans.iter().find(|f| f.id == holder).unwrap().clone();
                let others: Vec<&User> = fans.iter().filter(|f| f.id != holder).collect();
                let buyer = others[rng.below(others.len())].clone();
                let price = 100 + rng.below(3650 - 100 + 1) as i64;
                let l = list(&app, &seller, &ticket, price).await.expect(201);
                let p = purchase(&app, &buyer, l["id"].as_str().unwrap()).await.expect(201);
                app.pay(p["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
                app.settle().await;
                let royalty = price * 725 / 10000;
                let fee = price * 333 / 10000;
                *owed.entry(provider.clone()).or_default() += price;
                *owed.entry(organizer.clone()).or_default() -= royalty;
                *owed.entry(format!("seller:{}", seller.id)).or_default() -= price - royalty - fee;
                *owed.entry("platform:fees".to_owned()).or_default() -= fee;
                last_resale.insert(ticket.clone(), (seller.id.clone(), price, royalty, fee));
            }
            _ => {
                let paid: Vec<(String, i64)> =
                    sqlx::query_as("SELECT id, total_minor FROM orders WHERE status = 'paid' ORDER BY created_at")
                        .fetch_all(app.app.db.reader())
                        .await
                        .unwrap();
                if paid.is_empty() {
                    continue;
                }
                let (order, total) = paid[rng.below(paid.len())].clone();
                app.post(&format!("/api/v1/orders/{order}/refund"), Some(&w.org.token), json!({})).await.expect(200);
                app.settle().await;
                *owed.entry(provider.clone()).or_default() -= total;
                *owed.entry(organizer.clone()).or_default() += total;
                let tickets: Vec<(String,)> = sqlx::query_as("SELECT id FROM tickets WHERE order_id = $1")
                    .bind(&order)
                    .fetch_all(app.app.db.reader())
                    .await
                    .unwrap();
                for (t,) in tickets {
                    if let Some((seller, price, royalty, fee)) = last_resale.remove(&t) {
                        *owed.entry(provider.clone()).or_default() -= price;
                        *owed.entry(organizer.clone()).or_default() += royalty;
                        *owed.entry(format!("seller:{seller}")).or_default() += price - royalty - fee;
                        *owed.entry("platform:fees".to_owned()).or_default() += fee;
                    }
                }
            }
        }
    }

    assert!(ledger_sums(&app).await.iter().all(|(_, s)| *s == 0), "{:?}", ledger_sums(&app).await);
    let (unbalanced,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT transaction_id FROM ledger_entries GROUP BY transaction_id, currency \
         HAVING SUM(amount_minor) <> 0) x",
    )
    .fetch_one(app.app.db.reader())
    .await
    .unwrap();
    assert_eq!(unbalanced, 0, "every transaction balances on its own");
    for (account, expected) in &owed {
        assert_eq!(balance(&app, account).await, *expected, "{account} (seed {seed})");
    }
    for fan in &fans {
        let (due,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM payouts WHERE seller_id = $1 \
                 AND status = 'due'",
        )
        .bind(&fan.id)
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
        assert_eq!(due, -balance(&app, &format!("seller:{}", fan.id)).await, "payouts of {}", fan.email);
    }
}

/// Links a new external key to `fan` through the wallet's challenge and a real signature; returns its address.
async fn link_wallet(app: &TestApp, fan: &User) -> String {
    use alloy::signers::SignerSync as _;
    let key = alloy::signers::local::PrivateKeySigner::random();
    let address = key.address().to_checksum(None);
    let c = app
        .post("/api/v1/me/wallet/links/challenge", Some(&fan.token), json!({ "address": address }))
        .await
        .expect(201);
    let message = c["message"].as_str().unwrap();
    let sig = key.sign_message_sync(message.as_bytes()).unwrap();
    app.post(
        "/api/v1/me/wallet/links",
        Some(&fan.token),
        json!({ "message": message, "signature": format!("0x{}", hex::encode(sig.as_bytes())) }),
    )
    .await
    .expect(201);
    address
}

async fn export(app: &TestApp, fan: &User, ticket: &str, to: &str) {
    app.post(&format!("/api/v1/tickets/{ticket}/export"), Some(&fan.token), json!({ "address": to })).await.expect(201);
}

/// An exported ticket leaves the market: the export withdraws its listing
/// and voids its gift offer (at once when the market's consumer runs, and at
/// the next touch before that); listing, gifting and buying it are refused
/// with 409 `ticket_exported`; a buyer who was already paying for it is
/// refunded and the ticket stays with its holder.
#[tokio::test]
async fn an_exported_ticket_cannot_be_gifted_listed_or_bought() {
    let app = spawn_app().await;
    let w = world(&app).await;
    set_policy(&app, &w, json!({"export_allowed": true})).await;
    let to = link_wallet(&app, &w.fan).await;
    let friend = app.register("friend@example.com").await;
    let buyer = app.register("buyer@example.com").await;
    let second = buy_one(&app, &w.fan, &w.event, &w.tt).await;
    let third = buy_one(&app, &w.fan, &w.event, &w.tt).await;
    let fourth = buy_one(&app, &w.fan, &w.event, &w.tt).await;

    // listed, exported, settled: the consumer withdraws the listing
    let l1 = list(&app, &w.fan, &w.ticket, 2500).await.expect(201)["id"].as_str().unwrap().to_owned();
    export(&app, &w.fan, &w.ticket, &to).await;
    app.settle().await;
    let l = app.get(&format!("/api/v1/listings/{l1}"), None).await.expect(200);
    assert_eq!((l["status"].as_str(), l["withdraw_reason"].as_str()), (Some("withdrawn"), Some("ticket_exported")));
    list(&app, &w.fan, &w.ticket, 2500).await.expect_problem(409, "ticket_exported");
    offer(&app, &w.fan, &w.ticket, "friend@example.com").await.expect_problem(409, "ticket_exported");
    let terms = app.get(&format!("/api/v1/tickets/{}/resale-terms", w.ticket), Some(&w.fan.token)).await.expect(200);
    assert_eq!(
        (terms["resale_refusal"].as_str(), terms["gift_refusal"].as_str()),
        (Some("ticket_exported"), Some("ticket_exported"))
    );

    // listed, exported, bought before the consumer ran: refused, listing taken down
    let l2 = list(&app, &w.fan, &second, 2500).await.expect(201)["id"].as_str().unwrap().to_owned();
    export(&app, &w.fan, &second, &to).await;
    purchase(&app, &buyer, &l2).await.expect_problem(409, "ticket_exported");
    let l = app.get(&format!("/api/v1/listings/{l2}"), None).await.expect(200);
    assert_eq!((l["status"].as_str(), l["withdraw_reason"].as_str()), (Some("withdrawn"), Some("ticket_exported")));

    // offered, exported, accepted before the consumer ran: refused, offer void
    let g = offer(&app, &w.fan, &third, "friend@example.com").await.expect(201)["id"].as_str().unwrap().to_owned();
    export(&app, &w.fan, &third, &to).await;
    app.post(&format!("/api/v1/gifts/{g}/accept"), Some(&friend.token), json!({}))
        .await
        .expect_problem(409, "ticket_exported");
    app.settle().await;
    let gift = app.get(&format!("/api/v1/gifts/{g}"), Some(&w.fan.token)).await.expect(200);
    assert_eq!(gift["status"], "void");
    assert!(holds(&app, &w.fan, &third).await);

    // a buyer holding the listing pays after the export: refunded, the ticket stays
    let l4 = list(&app, &w.fan, &fourth, 2300).await.expect(201)["id"].as_str().unwrap().to_owned();
    let p = purchase(&app, &buyer, &l4).await.expect(201);
    export(&app, &w.fan, &fourth, &to).await;
    app.settle().await;
    app.pay(p["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    app.settle().await;
    let done = app.get(&format!("/api/v1/resale-purchases/{}", p["id"].as_str().unwrap()), Some(&buyer.token)).await;
    assert_eq!(done.expect(200)["status"], "refunded");
    assert!(holds(&app, &w.fan, &fourth).await);
    assert!(!holds(&app, &buyer, &fourth).await);
    let (refunded,): (String,) = sqlx::query_as("SELECT status FROM payments WHERE reference = $1")
        .bind(format!("resale:{}", p["id"].as_str().unwrap()))
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
    assert_eq!(refunded, "refunded");
    assert!(ledger_sums(&app).await.iter().all(|(_, s)| *s == 0));
    assert_eq!(balance(&app, &format!("seller:{}", w.fan.id)).await, 0);
    let (payouts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM payouts").fetch_one(app.app.db.reader()).await.unwrap();
    assert_eq!(payouts, 0);
}

/// The first buyer's order is refunded by the organizer after they resold
/// the ticket: the resale buyer, whose ticket is now cancelled, gets their
/// payment back too; the seller's due payout is reversed with a reversing
/// ledger transaction; each payment is refunded exactly once, also when the
/// cancellation is delivered to the market again; the ledger balances and
/// every account is back to zero.
#[tokio::test]
async fn refunding_the_original_order_refunds_the_resale_buyer_and_reverses_the_payout() {
    let app = spawn_app().await;
    let w = world(&app).await;
    set_policy(&app, &w, json!({"price_cap_bps": 12000, "royalty_bps": 500, "fee_bps": 250})).await;
    let buyer = app.register("buyer@example.com").await;
    let lid = list(&app, &w.fan, &w.ticket, 2750).await.expect(201)["id"].as_str().unwrap().to_owned();
    let p = purchase(&app, &buyer, &lid).await.expect(201);
    let pid = p["id"].as_str().unwrap().to_owned();
    app.pay(p["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
    app.settle().await;
    assert!(holds(&app, &buyer, &w.ticket).await);
    let (order,): (String,) = sqlx::query_as("SELECT order_id FROM tickets WHERE id = $1")
        .bind(&w.ticket)
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();

    app.post(&format!("/api/v1/orders/{order}/refund"), Some(&w.org.token), json!({})).await.expect(200);
    app.settle().await;

    let mine = app.get(&format!("/api/v1/resale-purchases/{pid}"), Some(&buyer.token)).await.expect(200);
    assert_eq!(mine["status"], "refunded");
    let (payout,): (String,) = sqlx::query_as("SELECT status FROM payouts WHERE purchase_id = $1")
        .bind(&pid)
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
    assert_eq!(payout, "reversed");

    let (app, w) = (&app, &w);
    let check = |label: &'static str| async move {
        {
            let payments: Vec<(String, String)> =
                sqlx::query_as("SELECT reference, status FROM payments ORDER BY created_at")
                    .fetch_all(app.app.db.reader())
                    .await
                    .unwrap();
            assert_eq!(payments.len(), 2, "{label}");
            assert!(payments.iter().all(|p| p.1 == "refunded"), "{label}: both buyers refunded: {payments:?}");
            let refunds: Vec<(String, i64)> = sqlx::query_as(
                "SELECT payment_id, COUNT(*) FROM ledger_transactions WHERE kind = 'refund' GROUP BY payment_id",
            )
            .fetch_all(app.app.db.reader())
            .await
            .unwrap();
            assert_eq!(refunds.len(), 2, "{label}: {refunds:?}");
            assert!(refunds.iter().all(|r| r.1 == 1), "{label}: each payment refunded once: {refunds:?}");
            let (reversals,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'resale_settlement_reversal'")
                    .fetch_one(app.app.db.reader())
                    .await
                    .unwrap();
            assert_eq!(reversals, 1, "{label}");
            let (audits,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM audit_log WHERE action = 'resale_purchase.refunded'")
                    .fetch_one(app.app.db.reader())
                    .await
                    .unwrap();
            assert_eq!(audits, 1, "{label}");
            assert!(ledger_sums(app).await.iter().all(|(_, s)| *s == 0), "{label}");
            let org_id: (String,) = sqlx::query_as("SELECT organization_id FROM events WHERE id = $1")
                .bind(&w.event)
                .fetch_one(app.app.db.reader())
                .await
                .unwrap();
            // every party is back where it started: the refund of 2750 and the reversal of 2545 + 68
            for account in [
                "provider:sandbox".to_owned(),
                format!("organizer:{}", org_id.0),
                format!("seller:{}", w.fan.id),
                "platform:fees".to_owned(),
            ] {
                assert_eq!(balance(app, &account).await, 0, "{label}: {account}");
            }
        }
    };
    check("after the refund").await;

    // the cancellation delivered again changes nothing
    let ticket: entrada_primitives::ids::TicketId = w.ticket.parse().unwrap();
    let event: entrada_primitives::ids::EventId = w.event.parse().unwrap();
    let mut tx = app.app.db.begin().await.unwrap();
    entrada_storage::outbox::append(
        &mut tx,
        app.clock.now_ms(),
        &entrada_storage::events::DomainEvent::TicketsCancelled {
            event_id: event,
            tickets: vec![ticket],
            reason: "refund".into(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.settle().await;
    check("after redelivery").await;
}

/// On PostgreSQL, buying a listing used to lock listing then ticket (and then
/// the previous buyer's purchase), while a late payment's settlement locked
/// purchase, listing, ticket, and the sweep purchase then listing: run at
/// the same moment, they could deadlock and answer 500. Now every path locks
/// ticket, listing or gift, purchase, in that order. Many rounds of: a new
/// listing, a gift offer and a purchase of the same ticket while the payment
/// of an expired hold on its listing settles and the sweep runs. Every
/// request gets its proper answer, never a 5xx, and exactly one buyer ends
/// up with the ticket (or the hold).
#[tokio::test]
async fn listing_and_buying_one_ticket_at_once_never_fails() {
    let app = spawn_app().await;
    let mut w = world(&app).await;
    let mut b1 = app.register("b1@example.com").await;
    let mut b2 = app.register("b2@example.com").await;
    for round in 0..25 {
        login(&app, &mut w.fan).await;
        login(&app, &mut b1).await;
        login(&app, &mut b2).await;
        let ticket = buy_one(&app, &w.fan, &w.event, &w.tt).await;
        let lid = list(&app, &w.fan, &ticket, 2400).await.expect(201)["id"].as_str().unwrap().to_owned();
        let late = purchase(&app, &b1, &lid).await.expect(201);
        // the first buyer's hold runs out, then they pay anyway
        app.clock.advance(time::Duration::minutes(11));
        login(&app, &mut b2).await;
        login(&app, &mut w.fan).await;
        app.pay(late["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
        let (settled, p2, relist, gift) = tokio::join!(
            app.app.settle(),
            purchase(&app, &b2, &lid),
            list(&app, &w.fan, &ticket, 2450),
            offer(&app, &w.fan, &ticket, "friend@example.com"),
        );
        settled.unwrap();
        for r in [&p2, &relist, &gift] {
            assert!(r.status < 500, "round {round}: {} {:#}", r.status, r.body);
            if r.status != 201 {
                let code = r.body["code"].as_str().unwrap_or_default();
                assert!(
                    ["listing_unavailable", "ticket_listed", "not_found"].contains(&code),
                    "round {round}: {:#}",
                    r.body
                );
            }
        }
        app.settle().await;
        let path = format!("/api/v1/resale-purchases/{}", late["id"].as_str().unwrap());
        let first = app.get(&path, Some(&b1.token)).await.expect(200)["status"].as_str().unwrap().to_owned();
        if p2.status == 201 {
            // the second buyer holds the listing; the late payment went back
            assert_eq!(first, "refunded", "round {round}");
            assert!(holds(&app, &w.fan, &ticket).await, "round {round}");
        } else {
            p2.expect_problem(409, "listing_unavailable");
            assert_eq!(first, "completed", "round {round}");
            assert!(holds(&app, &b1, &ticket).await, "round {round}");
        }
        assert!(relist.status != 201 && gift.status != 201, "round {round}: the ticket stays listed or sold");
    }
    assert!(ledger_sums(&app).await.iter().all(|(_, s)| *s == 0));
}

/// Only the purchase through which the holder holds the ticket now is
/// unwound by a refund: A sells to B, B to C, C back to B (all in the same
/// millisecond of the test clock); the organizer refunds A's order; B's
/// second purchase is refunded and C's payout reversed, while B's first
/// purchase and C's purchase stay settled.
#[tokio::test]
async fn a_refund_unwinds_only_the_resale_the_holder_holds_the_ticket_by() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let b = app.register("b@example.com").await;
    let c = app.register("c@example.com").await;
    let mut purchases = Vec::new();
    for (seller, buyer, price) in [(&w.fan, &b, 2400), (&b, &c, 2300), (&c, &b, 2200)] {
        let lid = list(&app, seller, &w.ticket, price).await.expect(201)["id"].as_str().unwrap().to_owned();
        let p = purchase(&app, buyer, &lid).await.expect(201);
        app.pay(p["checkout_url"].as_str().unwrap(), "4242424242424242").await.expect(200);
        app.settle().await;
        purchases.push(p["id"].as_str().unwrap().to_owned());
    }
    assert!(holds(&app, &b, &w.ticket).await);
    let (order,): (String,) = sqlx::query_as("SELECT order_id FROM tickets WHERE id = $1")
        .bind(&w.ticket)
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
    app.post(&format!("/api/v1/orders/{order}/refund"), Some(&w.org.token), json!({})).await.expect(200);
    app.settle().await;
    let mut states = Vec::new();
    for id in &purchases {
        let row: (String, String) = sqlx::query_as(
            "SELECT p.status, o.status FROM resale_purchases p JOIN payouts o ON o.purchase_id = p.id WHERE p.id = $1",
        )
        .bind(id)
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
        states.push(row);
    }
    let expected = [("completed", "due"), ("completed", "due"), ("refunded", "reversed")];
    assert_eq!(states, expected.map(|(p, o)| (p.to_owned(), o.to_owned())));
    assert!(ledger_sums(&app).await.iter().all(|(_, s)| *s == 0));
    assert_eq!(balance(&app, &format!("seller:{}", c.id)).await, 0, "C's proceeds from selling back were taken back");
}
