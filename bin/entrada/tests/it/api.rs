//! The HTTP surface itself: health, metrics, OpenAPI, docs, problem+json for
//! everything that is not a handler's answer, request ids, rate limits.

use crate::helpers::*;
use serde_json::json;

/// Liveness, readiness and metrics answer without authentication.
#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let r = app.get("/healthz", None).await;
    assert_eq!(r.status, 200);
    let r = app.get("/readyz", None).await;
    assert_eq!(r.status, 200);
    app.get("/api/v1/events", None).await.expect(200);
    let r = app.get("/metrics", None).await;
    assert_eq!(r.status, 200);
    let text = r.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("http_requests_total"), "metrics: {text}");
    assert!(text.contains("route=\"/api/v1/events\""), "metrics by route template: {text}");
}

/// The OpenAPI document is 3.1, generated from the handlers, and the docs
/// page loads without any external asset.
#[tokio::test]
async fn openapi_document_and_offline_docs_page() {
    let app = spawn_app().await;
    let doc = app.get("/api/openapi.json", None).await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    for path in ["/api/v1/auth/register", "/api/v1/holds", "/api/v1/orders", "/api/v1/events/{id}"] {
        assert!(doc["paths"].get(path).is_some(), "missing {path} in OpenAPI");
    }
    let page = app.send(app.http.get(app.url("/api/docs/"))).await;
    assert_eq!(page.status, 200);
    let html = page.body.as_str().unwrap_or_default();
    assert!(!html.contains("cdn") && !html.contains("unpkg"), "docs page must not load remote assets");
}

/// Unknown routes and wrong methods are problem+json, never plain text.
#[tokio::test]
async fn unknown_route_and_wrong_method_are_problems() {
    let app = spawn_app().await;
    app.get("/api/v1/nope", None).await.expect_problem(404, "not_found");
    let r = app.send(app.http.delete(app.url("/api/v1/auth/register"))).await;
    r.expect_problem(405, "method_not_allowed");
}

/// Malformed JSON, a wrong content type and a body of the wrong shape get
/// distinct codes.
#[tokio::test]
async fn malformed_bodies_are_rejected_with_codes() {
    let app = spawn_app().await;
    app.post_raw("/api/v1/auth/register", None, "{\"email\":", "application/json")
        .await
        .expect_problem(400, "malformed_json");
    app.post_raw("/api/v1/auth/register", None, "email=a", "application/x-www-form-urlencoded")
        .await
        .expect_problem(415, "unsupported_media_type");
    app.post("/api/v1/auth/register", None, json!({"email": 5})).await.expect_problem(422, "invalid_body");
}

/// Every response carries a request id, echoed when the client sent one.
#[tokio::test]
async fn request_ids_are_set_and_propagated() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(!res.headers()["x-request-id"].is_empty());
}

/// A client over the per-IP limit gets 429 `rate_limited` with Retry-After.
#[tokio::test]
async fn rate_limit_answers_429() {
    let app = spawn_app_with(|c| {
        c.rate_limit.per_ip_per_second = 1;
        c.rate_limit.burst = 3;
    })
    .await;
    let mut limited = None;
    for _ in 0..10 {
        let res = app.http.get(app.url("/api/v1/events")).send().await.unwrap();
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
    }
    let res = limited.expect("the limit is reached within 10 requests");
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
}

/// A bearer token that does not verify is refused even on public routes.
#[tokio::test]
async fn a_bad_token_is_refused() {
    let app = spawn_app().await;
    app.get("/api/v1/me", Some("not-a-jwt")).await.expect_problem(401, "invalid_token");
    app.get("/api/v1/me", None).await.expect_problem(401, "unauthenticated");
}

/// A JSON array is not an object, even when its items would fill the
/// fields in order: 422 `invalid_body`, nothing created.
#[tokio::test]
async fn an_array_body_is_refused() {
    let app = spawn_app().await;
    let r = app.post("/api/v1/auth/register", None, json!(["arr@example.com", "correct horse battery", "Arr"])).await;
    r.expect_problem(422, "invalid_body");
    app.post("/api/v1/auth/login", None, json!({"email": "arr@example.com", "password": "correct horse battery"}))
        .await
        .expect_problem(401, "invalid_credentials");
}
