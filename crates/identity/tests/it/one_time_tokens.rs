//! Email verification and password reset tokens: single use, expiring.

use crate::helpers::*;
use serde_json::json;

/// The token from the verification mail verifies the address once; used
/// again or made up it is 400 `invalid_token`; resending after that is 409
/// `already_verified`.
#[tokio::test]
async fn verification_token_is_single_use() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let token = app.mailed_token("user.email_verification_requested", "ana@example.com").await.unwrap();
    let r = app.post("/api/v1/auth/verify-email", None, json!({"token": token})).await.expect(200);
    assert_eq!(r["email_verified"], true);
    let me = app.get("/api/v1/me", Some(&ana.token)).await.expect(200);
    assert_eq!(me["email_verified"], true);
    app.post("/api/v1/auth/verify-email", None, json!({"token": token})).await.expect_problem(400, "invalid_token");
    app.post("/api/v1/auth/verify-email", None, json!({"token": "made-up"})).await.expect_problem(400, "invalid_token");
    app.post("/api/v1/auth/verify-email/resend", Some(&ana.token), json!({}))
        .await
        .expect_problem(409, "already_verified");
    assert!(app.audit_actions(&ana.id).await.contains(&"user.email_verified".to_owned()));
}

/// A verification token is good for 48 hours: after that it is 400
/// `token_expired`, and a resent one works.
#[tokio::test]
async fn verification_token_expires_and_can_be_resent() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let old = app.mailed_token("user.email_verification_requested", "ana@example.com").await.unwrap();
    app.clock.advance(time::Duration::hours(48));
    app.post("/api/v1/auth/verify-email", None, json!({"token": old})).await.expect_problem(400, "token_expired");
    app.post("/api/v1/auth/verify-email/resend", None, json!({})).await.expect_problem(401, "unauthenticated");
    // The access token from registration has expired too; log in again.
    let login = app.login("ana@example.com", PASSWORD).await.expect(200);
    let token = login["access_token"].as_str().unwrap();
    assert_eq!(app.post("/api/v1/auth/verify-email/resend", Some(token), json!({})).await.status, 202);
    let new = app.mailed_token("user.email_verification_requested", "ana@example.com").await.unwrap();
    assert_ne!(new, old);
    app.post("/api/v1/auth/verify-email", None, json!({"token": new})).await.expect(200);
    let _ = ana;
}

/// A password reset always answers 202 and mails only existing accounts;
/// the token sets a new password once, logs out every session and verifies
/// the address; a weak new password is 422 and leaves the token usable.
#[tokio::test]
async fn password_reset_sets_the_password_and_ends_sessions() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    for email in ["ana@example.com", "nobody@example.com", "not an address"] {
        let r = app.post("/api/v1/auth/password-reset", None, json!({"email": email})).await;
        assert_eq!(r.status, 202, "{email}");
    }
    assert_eq!(app.count_events("user.password_reset_requested").await, 1);
    let token = app.mailed_token("user.password_reset_requested", "ana@example.com").await.unwrap();

    let weak =
        app.post("/api/v1/auth/password-reset/confirm", None, json!({"token": token, "new_password": "short"})).await;
    weak.expect_problem(422, "validation_failed");
    assert_eq!(weak.body["errors"][0]["field"], "new_password");

    let new_password = "a much better passphrase";
    let r = app
        .post("/api/v1/auth/password-reset/confirm", None, json!({"token": token, "new_password": new_password}))
        .await
        .expect(200);
    assert_eq!(r["sessions_revoked"], 1);
    app.post("/api/v1/auth/password-reset/confirm", None, json!({"token": token, "new_password": new_password}))
        .await
        .expect_problem(400, "invalid_token");

    app.login("ana@example.com", PASSWORD).await.expect_problem(401, "invalid_credentials");
    let login = app.login("ana@example.com", new_password).await.expect(200);
    assert_eq!(login["user"]["email_verified"], true);
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh}))
        .await
        .expect_problem(401, "invalid_refresh_token");
    assert!(app.audit_actions(&ana.id).await.contains(&"user.password_reset".to_owned()));
}

/// A reset token is good for one hour only: 400 `token_expired` after.
#[tokio::test]
async fn reset_token_expires_after_an_hour() {
    let app = spawn_app().await;
    app.register("ana@example.com").await;
    app.post("/api/v1/auth/password-reset", None, json!({"email": "ana@example.com"})).await;
    let token = app.mailed_token("user.password_reset_requested", "ana@example.com").await.unwrap();
    app.clock.advance(time::Duration::minutes(60));
    app.post(
        "/api/v1/auth/password-reset/confirm",
        None,
        json!({"token": token, "new_password": "a much better passphrase"}),
    )
    .await
    .expect_problem(400, "token_expired");
    app.login("ana@example.com", PASSWORD).await.expect(200);
}
