//! Check-in through the whole app: a ticket bought in the sale is admitted
//! once by an enrolled scanner with the holder's rotating QR, and refused
//! after that, or once it is refunded.

use crate::helpers::*;
use base64::Engine as _;
use entrada_primitives::Clock as _;
use serde_json::{Value, json};

pub(crate) struct Gate {
    pub(crate) id: String,
    pub(crate) device_token: String,
}

/// A zone "floor", a gate in it and an enrolled scanner device.
pub(crate) async fn gate(app: &TestApp, organizer: &User, event: &str) -> Gate {
    let zone =
        app.post(&format!("/api/v1/events/{event}/zones"), Some(&organizer.token), json!({"name": "floor"})).await;
    let zone = zone.expect(201);
    let gate = app
        .post(
            &format!("/api/v1/events/{event}/gates"),
            Some(&organizer.token),
            json!({"name": "Puerta 1", "zone_id": zone["id"]}),
        )
        .await
        .expect(201);
    let device = app
        .post(
            &format!("/api/v1/events/{event}/devices"),
            Some(&organizer.token),
            json!({"name": "Scanner 1", "gate_ids": [gate["id"]]}),
        )
        .await
        .expect(201);
    let enrolled = app.post("/api/v1/scanner/enrol", None, json!({"code": device["enrolment_code"]})).await.expect(201);
    Gate {
        id: gate["id"].as_str().unwrap().to_owned(),
        device_token: enrolled["device_token"].as_str().unwrap().to_owned(),
    }
}

/// What the fan app does: a device key, the credential, and the QR text
/// with a proof for the current 15-second step.
pub(crate) struct Phone {
    key: ed25519_dalek::SigningKey,
    credential: Vec<u8>,
}

pub(crate) async fn phone(app: &TestApp, fan: &User, ticket: &str) -> Phone {
    let key = ed25519_dalek::SigningKey::from_bytes(&entrada_primitives::token::random_bytes::<32>());
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    let r = app
        .post(&format!("/api/v1/tickets/{ticket}/device-key"), Some(&fan.token), json!({"public_key": public}))
        .await;
    assert_eq!(r.status, 204, "{:#}", r.body);
    let c = app.get(&format!("/api/v1/tickets/{ticket}/credential"), Some(&fan.token)).await.expect(200);
    assert_eq!(c["kind"], "rotating");
    let credential =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c["credential"].as_str().unwrap()).unwrap();
    Phone { key, credential }
}

impl Phone {
    pub(crate) fn qr(&self, unix: i64) -> String {
        let step = entrada_credential::time_step(unix);
        let proof = entrada_credential::prove(&self.credential, &self.key, step);
        entrada_credential::encode_rotating(&self.credential, step, &proof)
    }
}

pub(crate) async fn scan(app: &TestApp, g: &Gate, payload: &str) -> Value {
    let nonce = uuid::Uuid::now_v7().to_string();
    let r = app
        .send(
            app.http
                .post(app.url("/api/v1/scanner/scan"))
                .header("authorization", format!("Device {}", g.device_token))
                .json(&json!({"payload": payload, "gate_id": g.id, "nonce": nonce})),
        )
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    r.body
}

/// Bought, shown, admitted once; the same QR again is `already_used`; a
/// screenshot replayed 45 s later is `stale_proof`.
#[tokio::test]
async fn a_bought_ticket_admits_once() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let g = gate(&app, &org_user, &event).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &tt, 1).await;
    let tickets = app.get("/api/v1/me/tickets", Some(&fan.token)).await.expect(200);
    let ticket = tickets["items"][0]["id"].as_str().unwrap().to_owned();

    // Another fan can neither see the credential nor register a key.
    let other = app.register("other@example.com").await;
    app.get(&format!("/api/v1/tickets/{ticket}/credential"), Some(&other.token)).await.expect_problem(404, "not_found");

    let p = phone(&app, &fan, &ticket).await;
    let now = app.clock.now().unix_timestamp();
    let qr = p.qr(now);
    let first = scan(&app, &g, &qr).await;
    assert_eq!(first["ok"], true, "{first:#}");
    assert_eq!(first["reason"], "ok");
    let again = scan(&app, &g, &p.qr(now)).await;
    assert_eq!(again["ok"], false);
    assert_eq!(again["reason"], "already_used", "{again:#}");
    app.clock.advance(time::Duration::seconds(45));
    let replay = scan(&app, &g, &qr).await;
    assert_eq!(replay["reason"], "stale_proof", "{replay:#}");
}

/// A refunded ticket's credential stops admitting at once.
#[tokio::test]
async fn a_refunded_ticket_is_refused() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let g = gate(&app, &org_user, &event).await;
    let fan = app.register("fan@example.com").await;
    let order = app.buy(&fan, &event, &tt, 1).await;
    let tickets = app.get("/api/v1/me/tickets", Some(&fan.token)).await.expect(200);
    let ticket = tickets["items"][0]["id"].as_str().unwrap().to_owned();
    let p = phone(&app, &fan, &ticket).await;
    app.post(&format!("/api/v1/orders/{}/refund", order["id"].as_str().unwrap()), Some(&org_user.token), json!({}))
        .await
        .expect(200);
    let v = scan(&app, &g, &p.qr(app.clock.now().unix_timestamp())).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["reason"], "cancelled", "{v:#}");
}

/// A fan's bearer token is not a scanner credential.
#[tokio::test]
async fn fans_cannot_use_the_scanner_api() {
    let app = spawn_app().await;
    let fan = app.register("fan@example.com").await;
    app.post("/api/v1/scanner/scan", Some(&fan.token), json!({"payload": "EN1:x", "gate_id": "x", "nonce": "n"}))
        .await
        .expect_problem(401, "device_token_required");
}
