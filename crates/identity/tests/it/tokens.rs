//! Access tokens, refresh rotation, logout, JWKS and discovery.

use crate::helpers::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use entrada_identity::Identity;
use entrada_primitives::SharedClock;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use std::sync::Arc;

/// A refresh token is exchanged for a new pair, once: the new tokens work,
/// and the spent token presented again is 401 `refresh_token_reused` and
/// revokes the whole family, so the newer token dies too.
#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let r1 = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh})).await.expect(200);
    let next = r1["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, ana.refresh);
    assert_eq!(r1["user"]["id"], ana.id);
    app.get("/api/v1/me", r1["access_token"].as_str()).await.expect(200);

    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh}))
        .await
        .expect_problem(401, "refresh_token_reused");
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": next}))
        .await
        .expect_problem(401, "invalid_refresh_token");
    let session = app.svc.verify_access(&ana.token).await.unwrap().session_id;
    let actions = app.audit_actions(&session.to_string()).await;
    assert!(actions.contains(&"session.refresh_token_reused".to_owned()), "{actions:?}");

    // Other logins of the same user are untouched.
    let other = app.login("ana@example.com", PASSWORD).await.expect(200);
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": other["refresh_token"]})).await.expect(200);
}

/// Unknown refresh tokens are 401 `invalid_refresh_token`; a refresh token
/// past its 30 days is 401 `refresh_token_expired`.
#[tokio::test]
async fn unknown_and_expired_refresh_tokens_are_refused() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": "made-up"}))
        .await
        .expect_problem(401, "invalid_refresh_token");
    app.clock.advance(time::Duration::days(30) - time::Duration::seconds(1));
    let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh})).await.expect(200);
    // Each rotation starts a new 30 days.
    app.clock.advance(time::Duration::days(30));
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": r["refresh_token"]}))
        .await
        .expect_problem(401, "refresh_token_expired");
}

/// Logout answers 204, ends the refresh family (later refreshes are 401
/// `invalid_refresh_token`), is audited, and may be repeated.
#[tokio::test]
async fn logout_revokes_the_session() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let r = app.post("/api/v1/auth/logout", None, json!({"refresh_token": ana.refresh})).await;
    assert_eq!(r.status, 204);
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh}))
        .await
        .expect_problem(401, "invalid_refresh_token");
    assert_eq!(app.post("/api/v1/auth/logout", None, json!({"refresh_token": ana.refresh})).await.status, 204);
    assert_eq!(app.post("/api/v1/auth/logout", None, json!({"refresh_token": "unknown"})).await.status, 204);
    let session = app.svc.verify_access(&ana.token).await.unwrap().session_id;
    assert_eq!(app.audit_actions(&session.to_string()).await, ["session.created", "session.revoked"]);
}

/// An access token stops working when its 15 minutes are up on the injected
/// clock: 401 `token_expired`.
#[tokio::test]
async fn access_tokens_expire_with_the_clock() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    app.clock.advance(time::Duration::minutes(15) - time::Duration::seconds(1));
    app.get("/api/v1/me", Some(&ana.token)).await.expect(200);
    app.clock.advance(time::Duration::seconds(1));
    app.get("/api/v1/me", Some(&ana.token)).await.expect_problem(401, "token_expired");
    assert_eq!(app.svc.verify_access(&ana.token).await, Err("token_expired"));
}

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let h = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    let c = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    (h, c, it.next().unwrap().to_owned())
}

fn join(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(serde_json::to_vec(header).unwrap()),
        B64.encode(serde_json::to_vec(claims).unwrap()),
        sig
    )
}

/// The issuer's own private key, read as an attacker with database access
/// would not have it: used to sign tokens whose claims are wrong.
async fn issuer_key(app: &App) -> EncodingKey {
    let (der,): (String,) = sqlx::query_as("SELECT private_key FROM signing_keys WHERE slot = 'current'")
        .fetch_one(app.tdb.db.reader())
        .await
        .unwrap();
    EncodingKey::from_ed_der(&B64.decode(der).unwrap())
}

/// Tampered tokens are all `invalid_token`: a flipped signature byte, a
/// payload promoted to admin, a token signed by another key under the same
/// kid, `alg: none`, HS256 keyed with the public key, an unknown kid, and
/// (signed with the real key) a wrong issuer or audience or a malformed
/// subject; also once the genuine token has been verified and remembered.
#[tokio::test]
async fn tampered_tokens_are_rejected() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let (header, claims, sig) = parts(&ana.token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(claims["aud"], "entrada");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["role"], "fan");
    for key in ["sub", "exp", "iat", "jti", "sid"] {
        assert!(claims.get(key).is_some(), "claim {key} missing");
    }

    let mut bad = Vec::new();
    // Flip one bit of the signature.
    let mut raw = B64.decode(&sig).unwrap();
    raw[10] ^= 0x01;
    bad.push(join(&header, &claims, &B64.encode(&raw)));
    // Promote the payload, keep the signature.
    let mut admin = claims.clone();
    admin["role"] = json!("admin");
    bad.push(join(&header, &admin, &sig));
    // Signed with another Ed25519 key under the issuer's kid.
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other = EncodingKey::from_ed_der(other.to_pkcs8_der().unwrap().as_bytes());
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = header["kid"].as_str().map(str::to_owned);
    bad.push(jsonwebtoken::encode(&h, &claims, &other).unwrap());
    // alg none, no signature.
    let mut none = header.clone();
    none["alg"] = json!("none");
    bad.push(join(&none, &claims, ""));
    // HS256 with the public key bytes as the HMAC secret (key confusion).
    let jwks = app.get("/.well-known/jwks.json", None).await.expect(200);
    let x = B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = h.kid.clone();
    bad.push(jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&x)).unwrap());
    // Unknown kid.
    let mut unknown = Header::new(Algorithm::EdDSA);
    unknown.kid = Some("unknown".into());
    bad.push(jsonwebtoken::encode(&unknown, &claims, &issuer_key(&app).await).unwrap());
    // Validly signed, wrong claims.
    let real = issuer_key(&app).await;
    for (k, v) in [("iss", json!("http://evil.test")), ("aud", json!("someone-else")), ("sub", json!("not-a-uuid"))] {
        let mut c = claims.clone();
        c[k] = v;
        bad.push(jsonwebtoken::encode(&h, &c, &real).unwrap());
    }
    bad.push(String::new());
    bad.push("a.b.c".into());

    // The genuine token, verified first, is remembered by its exact text:
    // a variant of it is verified afresh and refused, every time.
    let genuine = app.svc.verify_access(&ana.token).await.unwrap();
    for round in 0..2 {
        for (i, token) in bad.iter().enumerate() {
            assert_eq!(app.svc.verify_access(token).await, Err("invalid_token"), "round {round}, case {i}");
        }
    }
    assert_eq!(app.svc.verify_access(&ana.token).await, Ok(genuine));
    app.get("/api/v1/me", Some(&bad[1])).await.expect_problem(401, "invalid_token");
    // The untouched token still verifies, and re-signing it faithfully works.
    assert!(app.svc.verify_access(&ana.token).await.is_ok());
    let resigned = jsonwebtoken::encode(&h, &claims, &real).unwrap();
    assert!(app.svc.verify_access(&resigned).await.is_ok());
}

/// A relying party can verify an access token with nothing but the JWKS:
/// the OKP key's `x` decodes it, with the issuer's kid; discovery points at it.
#[tokio::test]
async fn jwks_verifies_access_tokens() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let d = app.get("/.well-known/openid-configuration", None).await.expect(200);
    assert_eq!(d["issuer"], ISSUER);
    assert_eq!(d["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(d["userinfo_endpoint"], format!("{ISSUER}/api/v1/me"));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["EdDSA"]));

    let jwks = app.get("/.well-known/jwks.json", None).await.expect(200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str(), k["use"].as_str(), k["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("sig"), Some("EdDSA"))
    );
    assert!(k.get("d").is_none(), "the private key must not be published");

    let header = jsonwebtoken::decode_header(&ana.token).unwrap();
    assert_eq!(header.kid.as_deref(), k["kid"].as_str());
    let key = DecodingKey::from_ed_components(k["x"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&["entrada"]);
    v.set_issuer(&[ISSUER]);
    v.validate_exp = false; // the test clock is in 2030
    let data = jsonwebtoken::decode::<Value>(&ana.token, &key, &v).unwrap();
    assert_eq!(data.claims["sub"], ana.id);
}

/// A second process on the same database signs with the same key, so tokens
/// from either verify in both.
#[tokio::test]
async fn a_second_process_reuses_the_signing_key() {
    let app = spawn_app().await;
    let clock: SharedClock = Arc::new(app.clock.clone());
    let second = Identity::start(app.tdb.db.clone(), clock, config()).await.unwrap();
    assert_eq!(second.public_keys().await.unwrap(), app.svc.public_keys().await.unwrap());
    let ana = app.register("ana@example.com").await;
    let p = second.verify_access(&ana.token).await.unwrap();
    assert_eq!(p.user_id.to_string(), ana.id);
    let t = second.login("ana@example.com", PASSWORD).await.unwrap();
    assert!(app.svc.verify_access(t.access_token.expose()).await.is_ok());
}

/// Two processes starting at once on a new database agree on one signing key.
#[tokio::test]
async fn concurrent_starts_create_one_key() {
    let tdb = entrada_storage::testing::fresh().await;
    let clock: SharedClock =
        Arc::new(entrada_primitives::ManualClock::new(time::macros::datetime!(2030-01-01 00:00 UTC)));
    let (a, b) = tokio::join!(
        Identity::start(tdb.db.clone(), clock.clone(), config()),
        Identity::start(tdb.db.clone(), clock.clone(), config()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let keys = a.public_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys, b.public_keys().await.unwrap());
}

/// The same refresh token presented twice at the same moment yields one new
/// pair; the other request is treated as reuse and the family is revoked.
#[tokio::test]
async fn concurrent_refreshes_spend_the_token_once() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let body = json!({"refresh_token": ana.refresh});
    let (r1, r2) = tokio::join!(
        app.post("/api/v1/auth/refresh", None, body.clone()),
        app.post("/api/v1/auth/refresh", None, body.clone()),
    );
    let mut statuses = [r1.status, r2.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401]);
    let loser = if r1.status == 401 { &r1 } else { &r2 };
    loser.expect_problem(401, "refresh_token_reused");
}
