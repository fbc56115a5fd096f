//! Registration, login, the caller's account and login throttling.

use crate::helpers::*;
use serde_json::json;

/// Registering answers 201 with a token pair and the new account, and the
/// access token opens `/api/v1/me`; logging in later gives a working pair too.
#[tokio::test]
async fn register_then_login() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "Ana@Example.COM", "password": PASSWORD, "display_name": "  Ana  "}),
        )
        .await;
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    let body = r.expect(201);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["email"], "Ana@example.com");
    assert_eq!(body["user"]["display_name"], "Ana");
    assert_eq!(body["user"]["platform_role"], "fan");
    assert_eq!(body["user"]["email_verified"], false);
    assert_eq!(body["user"]["created_at"], "2030-01-01T00:00:00Z");
    let ana = session(&body);

    let me = app.get("/api/v1/me", Some(&ana.token)).await.expect(200);
    assert_eq!(me["id"], ana.id);
    assert_eq!(me["organizations"], json!([]));

    // The address is found regardless of case.
    let login = app.login("ana@EXAMPLE.com", PASSWORD).await.expect(200);
    assert_eq!(login["user"]["id"], ana.id);
    let token = login["access_token"].as_str().unwrap();
    app.get("/api/v1/me", Some(token)).await.expect(200);

    assert_eq!(app.count_events("user.registered").await, 1);
    assert_eq!(app.count_events("user.email_verification_requested").await, 1);
    let actions = app.audit_actions(&ana.id).await;
    assert!(actions.contains(&"user.registered".to_owned()), "{actions:?}");
}

/// A second account with the same address (in any letter case) is refused
/// with 409 `email_taken`.
#[tokio::test]
async fn duplicate_email_is_refused() {
    let app = spawn_app().await;
    app.register("ana@example.com").await;
    for email in ["ana@example.com", "ANA@example.com"] {
        app.post("/api/v1/auth/register", None, json!({"email": email, "password": PASSWORD, "display_name": "Other"}))
            .await
            .expect_problem(409, "email_taken");
    }
}

/// Weak or overlong passwords, bad addresses and empty names are 422s naming
/// the field; a broken body is 400 `malformed_json`, a wrong shape 422
/// `invalid_body`. Nothing is created.
#[tokio::test]
async fn bad_registrations_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    let cases = [
        (json!({"email": "a@example.com", "password": "short", "display_name": "A"}), "password"),
        (json!({"email": "a@example.com", "password": "x".repeat(129), "display_name": "A"}), "password"),
        (json!({"email": "not-an-email", "password": PASSWORD, "display_name": "A"}), "email"),
        (json!({"email": "a@example.com", "password": PASSWORD, "display_name": "   "}), "display_name"),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/auth/register", None, body).await;
        r.expect_problem(422, "validation_failed");
        assert_eq!(r.body["errors"][0]["field"], field);
    }
    app.post_raw("/api/v1/auth/register", "{\"email\":").await.expect_problem(400, "malformed_json");
    app.post_raw("/api/v1/auth/login", "not json").await.expect_problem(400, "malformed_json");
    app.post("/api/v1/auth/register", None, json!({"email": 5})).await.expect_problem(422, "invalid_body");
    app.post("/api/v1/auth/refresh", None, json!({})).await.expect_problem(422, "invalid_body");
    assert_eq!(app.count_events("user.registered").await, 0);
}

/// A wrong password and an unknown address get exactly the same answer, so
/// login cannot be used to find out who has an account.
#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let app = spawn_app().await;
    app.register("ana@example.com").await;
    let wrong = app.login("ana@example.com", "not the password").await;
    let unknown = app.login("nobody@example.com", "not the password").await;
    let malformed = app.login("nobody", "not the password").await;
    wrong.expect_problem(401, "invalid_credentials");
    for other in [&unknown, &malformed] {
        assert_eq!(other.status, wrong.status);
        assert_eq!(other.body, wrong.body);
    }
}

/// After ten failed logins within 15 minutes the address is refused with
/// 429 `too_many_attempts` and a Retry-After, even with the right password
/// and even for an address without an account; the window then passes.
#[tokio::test]
async fn repeated_failures_throttle_the_address() {
    let app = spawn_app().await;
    app.register("ana@example.com").await;
    for _ in 0..10 {
        app.login("ana@example.com", "guess guess guess").await.expect_problem(401, "invalid_credentials");
        app.login("ghost@example.com", "guess guess guess").await.expect_problem(401, "invalid_credentials");
    }
    let r = app.login("ana@example.com", PASSWORD).await;
    r.expect_problem(429, "too_many_attempts");
    assert_eq!(r.headers.get("retry-after").unwrap(), "900");
    app.login("ghost@example.com", "guess guess guess").await.expect_problem(429, "too_many_attempts");
    // Another address is unaffected.
    app.register("bo@example.com").await;
    app.login("bo@example.com", PASSWORD).await.expect(200);

    app.clock.advance(time::Duration::minutes(15));
    app.login("ana@example.com", PASSWORD).await.expect(200);
    // A success clears the count: nine more failures do not lock it again.
    for _ in 0..9 {
        app.login("ana@example.com", "guess guess guess").await.expect_problem(401, "invalid_credentials");
    }
    app.login("ana@example.com", PASSWORD).await.expect(200);
}

/// Neither passwords nor refresh, verification or reset tokens are stored
/// or audited in clear.
#[tokio::test]
async fn secrets_are_stored_only_as_digests() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    app.post("/api/v1/auth/password-reset", None, json!({"email": "ana@example.com"})).await.expect(202);
    let verify = app.mailed_token("user.email_verification_requested", "ana@example.com").await.unwrap();
    let reset = app.mailed_token("user.password_reset_requested", "ana@example.com").await.unwrap();
    let stored = app.stored_text().await;
    for secret in [PASSWORD, ana.refresh.as_str(), verify.as_str(), reset.as_str()] {
        assert!(!stored.contains(secret), "a secret is stored in clear");
    }
    assert!(stored.contains(&entrada_primitives::token::digest(&ana.refresh)));
    assert!(stored.contains("$argon2id$"));
}

/// `/api/v1/me` needs a token: none is 401 `unauthenticated`, a bad one 401
/// `invalid_token`.
#[tokio::test]
async fn me_requires_a_valid_token() {
    let app = spawn_app().await;
    app.get("/api/v1/me", None).await.expect_problem(401, "unauthenticated");
    app.get("/api/v1/me", Some("not-a-jwt")).await.expect_problem(401, "invalid_token");
}
