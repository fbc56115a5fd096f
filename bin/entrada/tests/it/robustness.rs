//! Hostile and malformed input, and the promise the OpenAPI document makes
//! about it: every error is problem+json with a stable `code`, and every
//! status a client can receive is one the document lists.

use crate::helpers::*;
use serde_json::{Value, json};

/// A body over the 1 MiB limit is a `body_too_large` problem even on routes
/// that read the raw body themselves (optional-body refunds, signed
/// webhooks), never axum's plain-text rejection.
#[tokio::test]
async fn oversized_raw_bodies_answer_a_problem() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    let order = app.buy(&fan, &event, &tt, 1).await;
    let order_id = order["id"].as_str().unwrap();
    let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(2 << 20));

    let r = app
        .send(
            app.http
                .post(app.url(&format!("/api/v1/orders/{order_id}/refund")))
                .bearer_auth(&org_user.token)
                .header("content-type", "application/json")
                .body(big.clone()),
        )
        .await;
    r.expect_problem(413, "body_too_large");

    let r = app
        .send(
            app.http
                .post(app.url("/api/v1/payments/webhooks/sandbox"))
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    r.expect_problem(413, "body_too_large");

    // Nothing was half-done: the order is still paid.
    let o = app.get(&format!("/api/v1/orders/{order_id}"), Some(&fan.token)).await.expect(200);
    assert_eq!(o["status"], "paid", "{o:#}");
}

/// A problem's `status` member is the HTTP status number even when the
/// error carries the event's lifecycle state, which travels as
/// `event_status` instead.
#[tokio::test]
async fn problem_status_is_always_the_http_status() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, _) = app.event_on_sale(&org_user, &org, 10).await;

    let r = app.post(&format!("/api/v1/events/{event}/publish"), Some(&org_user.token), json!({})).await;
    r.expect_problem(409, "invalid_transition");
    assert_eq!(r.body["status"], 409, "{:#}", r.body);
    assert_eq!(r.body["event_status"], "on_sale", "{:#}", r.body);

    app.post(&format!("/api/v1/events/{event}/cancel"), Some(&org_user.token), json!({})).await.expect(200);
    let r = app.patch(&format!("/api/v1/events/{event}"), Some(&org_user.token), json!({"name": "Late"})).await;
    r.expect_problem(409, "event_closed");
    assert_eq!(r.body["status"], 409, "{:#}", r.body);
    assert_eq!(r.body["event_status"], "cancelled", "{:#}", r.body);
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

/// Every operation documents the statuses the shared layers answer (a bad
/// token, a rate limit, an unparsable id, malformed JSON) and every error
/// response as a problem+json `Problem`.
#[tokio::test]
async fn openapi_documents_every_shared_error() {
    let app = spawn_app().await;
    let doc = app.get("/api/openapi.json", None).await.expect(200);
    assert_eq!(doc["components"]["schemas"]["Problem"]["required"], json!(["type", "title", "status", "code"]));
    for (method, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        for status in ["401", "429", "500"] {
            assert!(responses.contains_key(status), "{method} {path} does not document {status}");
        }
        if path.contains('{') {
            assert!(responses.contains_key("404"), "{method} {path} does not document 404");
        }
        if op.get("requestBody").is_some() {
            assert!(responses.contains_key("413"), "{method} {path} does not document 413");
        }
        if op["requestBody"]["content"]["application/json"]["schema"].get("$ref").is_some() {
            for status in ["400", "415", "422"] {
                assert!(responses.contains_key(status), "{method} {path} does not document {status}");
            }
        }
        for (status, r) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    r["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }
    let refund = &doc["paths"]["/api/v1/orders/{id}/refund"]["post"]["responses"];
    assert!(refund.get("400").is_some() && refund.get("422").is_some(), "{refund:#}");
}

/// Every operation, called with nothing a client should send (no token,
/// an unknown id, an empty, malformed or oversized body), answers a status
/// its OpenAPI entry lists, as problem+json, never a 5xx.
#[tokio::test]
async fn every_operation_answers_documented_problems_to_junk() {
    let app = spawn_app().await;
    let doc = app.get("/api/openapi.json", None).await.expect(200);
    let unknown = "01890a5d-ac96-774b-bcce-b302099a8057";
    let bodies: [Option<(&str, String)>; 5] = [
        None,
        Some(("application/json", "{}".to_owned())),
        Some(("application/json", "{\"a\":".to_owned())),
        Some(("text/plain", "hello".to_owned())),
        Some(("application/json", format!("\"{}\"", "x".repeat(2 << 20)))),
    ];
    for (method, path, op) in operations(&doc) {
        let concrete = path.replace("{provider}", "sandbox").replace("{org_id}", unknown).replace("{id}", unknown);
        for token in [None, Some("not-a-token")] {
            for body in &bodies {
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let mut req = app.http.request(m, app.url(&concrete));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                if let Some((ctype, b)) = body {
                    req = req.header("content-type", *ctype).body(b.clone());
                }
                let r = app.send(req).await;
                let what = format!("{method} {concrete} token={token:?} body={:?}", body.as_ref().map(|b| b.0));
                assert!(r.status < 500, "{what}: {} {:#}", r.status, r.body);
                assert!(
                    op["responses"].get(r.status.to_string()).is_some(),
                    "{what}: undocumented {} {:#}",
                    r.status,
                    r.body
                );
                if r.status >= 400 {
                    assert_eq!(r.content_type, "application/problem+json", "{what}: {:#}", r.body);
                    assert_eq!(r.body["status"], r.status, "{what}: {:#}", r.body);
                    assert!(!r.code().is_empty(), "{what}: {:#}", r.body);
                }
            }
        }
    }
}
