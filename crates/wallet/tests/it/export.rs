//! Exporting a ticket's token to a linked address: who may, when, and what it changes.

use crate::{App, Fixture, spawn};
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use entrada_primitives::ids::UserId;
use serde_json::{Value, json};
use time::Duration;

impl App {
    /// Links a fresh external key to `who` and returns it.
    async fn linked_key(&self, who: UserId) -> PrivateKeySigner {
        let key = PrivateKeySigner::random();
        let r = self
            .send(
                "POST",
                "/api/v1/me/wallet/links/challenge",
                Some(who),
                Some(json!({ "address": key.address().to_checksum(None) })),
            )
            .await;
        let message = r.ok(201)["message"].as_str().unwrap().to_owned();
        let sig = format!("0x{}", hex::encode(key.sign_message_sync(message.as_bytes()).unwrap().as_bytes()));
        self.send("POST", "/api/v1/me/wallet/links", Some(who), Some(json!({ "message": message, "signature": sig })))
            .await
            .ok(201);
        key
    }

    async fn export(&self, who: UserId, ticket: &str, address: &str) -> crate::Reply {
        self.send("POST", &format!("/api/v1/tickets/{ticket}/export"), Some(who), Some(json!({ "address": address })))
            .await
    }

    async fn generation(&self, ticket: &str) -> i64 {
        self.count("SELECT generation FROM tickets WHERE id = $1", ticket).await
    }
}

fn addr(k: &PrivateKeySigner) -> String {
    k.address().to_checksum(None)
}

/// The holder exports to their linked address: the generation bumps (old QR codes stop
/// admitting), `ticket.exported` is queued for the chain pipeline in the same transaction, the
/// change is audited, the wallet shows it, and a second export is refused.
#[tokio::test]
async fn holder_exports_to_a_linked_address() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (ticket, _) = app.ticket(&f, f.fan).await;
    let key = app.linked_key(f.fan).await;

    let r = app.export(f.fan, &ticket, &addr(&key)).await;
    assert_eq!(r.ok(201)["generation"], json!(2));
    assert_eq!(r.body["to_address"], json!(addr(&key)));
    assert_eq!(app.generation(&ticket).await, 2);

    let (payload,): (String,) = sqlx::query_as("SELECT payload FROM outbox WHERE event_type = 'ticket.exported'")
        .fetch_one(app.db().reader())
        .await
        .unwrap();
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["ticket_id"], json!(ticket));
    assert_eq!(event["to_address"], json!(addr(&key)));
    assert_eq!(event["generation"], json!(2));
    assert_eq!(event["holder"], json!(f.fan.to_string()));
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox_queue WHERE consumer = $1", "chain.tokens").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", "ticket.exported").await, 1);

    let wallet = app.send("GET", "/api/v1/me/wallet", Some(f.fan), None).await;
    let t = &wallet.ok(200)["tickets"][0];
    assert_eq!(t["ticket_id"], json!(ticket));
    assert_eq!(t["generation"], json!(2));
    assert_eq!(t["nft"]["exported_to"], json!(addr(&key)));

    app.export(f.fan, &ticket, &addr(&key)).await.problem(409, "already_exported");
    assert_eq!(app.generation(&ticket).await, 2);
}

/// The same `Idempotency-Key` replays the first answer instead of exporting twice.
#[tokio::test]
async fn export_is_idempotent_by_key() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (ticket, _) = app.ticket(&f, f.fan).await;
    let key = app.linked_key(f.fan).await;
    let path = format!("/api/v1/tickets/{ticket}/export");
    let body = json!({ "address": addr(&key) });
    let first = app.send_with("POST", &path, Some(f.fan), Some(body.clone()), &[("idempotency-key", "exp-1")]).await;
    let again = app.send_with("POST", &path, Some(f.fan), Some(body), &[("idempotency-key", "exp-1")]).await;
    assert_eq!(first.ok(201), again.ok(201));
    assert_eq!(app.generation(&ticket).await, 2);
}

/// Nobody but the holder exports, only to their own linked address, only when the event
/// allows it, never a cancelled ticket; each refusal leaves the ticket untouched.
#[tokio::test]
async fn export_refusals() {
    let app = spawn().await;
    let f: Fixture = app.fixture().await;
    let (ticket, _) = app.ticket(&f, f.fan).await;
    let mine = app.linked_key(f.fan).await;
    let other = app.user("other").await;
    let theirs = app.linked_key(other).await;

    app.send("POST", &format!("/api/v1/tickets/{ticket}/export"), None, Some(json!({ "address": addr(&mine) })))
        .await
        .problem(401, "unauthenticated");
    // Another fan's ticket does not exist for them, even to their own linked address.
    app.export(other, &ticket, &addr(&theirs)).await.problem(404, "not_found");
    app.export(f.fan, &uuid::Uuid::now_v7().to_string(), &addr(&mine)).await.problem(404, "not_found");
    // Someone else's linked address, or one never linked.
    app.export(f.fan, &ticket, &addr(&theirs)).await.problem(422, "address_not_linked");
    app.export(f.fan, &ticket, &addr(&PrivateKeySigner::random())).await.problem(422, "address_not_linked");
    app.export(f.fan, &ticket, "0x1234").await.problem(422, "validation_failed");

    // The organizer's policy.
    app.exec("UPDATE events SET export_allowed = FALSE WHERE id = $1", &[&f.event]).await;
    app.export(f.fan, &ticket, &addr(&mine)).await.problem(409, "export_not_allowed");
    app.exec("UPDATE events SET export_allowed = TRUE, export_after = 1906585200000 WHERE id = $1", &[&f.event]).await;
    let r = app.export(f.fan, &ticket, &addr(&mine)).await;
    r.problem(409, "export_not_yet");
    assert!(r.body["detail"].as_str().unwrap().contains("2030-06-01T23:00:00Z"), "{}", r.body);

    // A cancelled ticket never leaves.
    let (cancelled, _) = app.ticket(&f, f.fan).await;
    app.exec("UPDATE tickets SET status = 'cancelled' WHERE id = $1", &[&cancelled]).await;
    app.export(f.fan, &cancelled, &addr(&mine)).await.problem(409, "ticket_not_valid");

    assert_eq!(app.generation(&ticket).await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE event_type = $1", "ticket.exported").await, 0);

    // Once the export window opens, it goes through.
    app.clock.advance(Duration::hours(4));
    app.export(f.fan, &ticket, &addr(&mine)).await.ok(201);
}

/// Two concurrent exports of one ticket to two linked addresses: exactly one wins, the
/// generation moves by exactly one, and one event is queued.
#[tokio::test]
async fn concurrent_exports_move_once() {
    let app = spawn().await;
    let f = app.fixture().await;
    let (ticket, _) = app.ticket(&f, f.fan).await;
    let (a, b) = (app.linked_key(f.fan).await, app.linked_key(f.fan).await);
    let (a, b) = (addr(&a), addr(&b));
    let (ra, rb) = tokio::join!(app.export(f.fan, &ticket, &a), app.export(f.fan, &ticket, &b));
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} {}", ra.body, rb.body);
    assert_eq!(app.generation(&ticket).await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE event_type = $1", "ticket.exported").await, 1);
}
