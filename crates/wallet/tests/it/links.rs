//! Linking external addresses with Sign-In with Ethereum: the happy path and every rejection.

use crate::{App, CHAIN_ID, spawn};
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use entrada_primitives::ids::UserId;
use serde_json::{Value, json};
use time::Duration;

fn sign(signer: &PrivateKeySigner, message: &str) -> String {
    format!("0x{}", hex::encode(signer.sign_message_sync(message.as_bytes()).unwrap().as_bytes()))
}

impl App {
    /// Asks for a challenge for `signer`'s address and returns the message to sign.
    async fn challenge(&self, who: UserId, signer: &PrivateKeySigner) -> String {
        let r = self
            .send(
                "POST",
                "/api/v1/me/wallet/links/challenge",
                Some(who),
                Some(json!({ "address": signer.address().to_checksum(None) })),
            )
            .await;
        r.ok(201)["message"].as_str().unwrap().to_owned()
    }

    async fn link(&self, who: UserId, message: &str, signature: &str) -> crate::Reply {
        self.send(
            "POST",
            "/api/v1/me/wallet/links",
            Some(who),
            Some(json!({ "message": message, "signature": signature })),
        )
        .await
    }
}

/// A fan links an address by signing the server's message: the link shows in the wallet, is
/// audited, and the same signed message cannot be used again.
#[tokio::test]
async fn links_an_address_once() {
    let app = spawn().await;
    let fan = app.user("fan").await;
    let key = PrivateKeySigner::random();
    let message = app.challenge(fan, &key).await;
    assert!(message.starts_with("tickets.example.com wants you to sign in with your Ethereum account:\n"), "{message}");
    assert!(message.contains(&format!("\n{}\n", key.address().to_checksum(None))));
    assert!(message.contains(&format!("\nChain ID: {CHAIN_ID}\n")));
    assert!(message.contains("\nURI: https://tickets.example.com\n"));

    let sig = sign(&key, &message);
    let linked = app.link(fan, &message, &sig).await;
    assert_eq!(linked.ok(201)["address"], json!(key.address().to_checksum(None)));
    assert_eq!(linked.body["chain_id"], json!(CHAIN_ID));

    let wallet = app.send("GET", "/api/v1/me/wallet", Some(fan), None).await;
    let links = wallet.ok(200)["links"].as_array().unwrap().clone();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["address"], json!(key.address().to_checksum(None)));
    assert!(wallet.body["custodial_address"].as_str().unwrap().starts_with("0x"));
    assert_ne!(wallet.body["custodial_address"], links[0]["address"]);

    app.link(fan, &message, &sig).await.problem(409, "siwe_nonce_used");
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", "wallet.address_linked").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", "wallet.link_challenge_issued").await, 1);
}

/// Every way a signed message can be wrong is refused with its own code, and a refused message
/// does not use up the nonce: the correct message still links afterwards.
#[tokio::test]
async fn rejects_every_bad_message() {
    let app = spawn().await;
    let fan = app.user("fan").await;
    let key = PrivateKeySigner::random();
    let message = app.challenge(fan, &key).await;
    let signed = |m: &str| (m.to_owned(), sign(&key, m));

    let cases: Vec<(&str, (String, String), u16, &str)> = vec![
        (
            "wrong domain",
            signed(&message.replace("tickets.example.com wants", "evil.example.com wants")),
            422,
            "siwe_wrong_domain",
        ),
        ("wrong scheme", signed(&format!("http://{message}")), 422, "siwe_wrong_domain"),
        (
            "wrong uri",
            signed(&message.replace("URI: https://tickets.example.com", "URI: https://evil.example.com")),
            422,
            "siwe_wrong_uri",
        ),
        (
            "wrong chain",
            signed(&message.replace(&format!("Chain ID: {CHAIN_ID}"), "Chain ID: 1")),
            422,
            "siwe_wrong_chain",
        ),
        ("made-up nonce", signed(&replace_nonce(&message, "abcdefgh12345678")), 422, "siwe_unknown_nonce"),
        (
            "tampered after signing",
            (message.replace("Link this", "Link that"), sign(&key, &message)),
            422,
            "siwe_bad_signature",
        ),
        (
            "signed by another key",
            (message.clone(), sign(&PrivateKeySigner::random(), &message)),
            422,
            "siwe_bad_signature",
        ),
        ("malformed signature", (message.clone(), "0x1234".to_owned()), 422, "siwe_bad_signature"),
        ("not a SIWE message", signed("hello"), 422, "invalid_siwe_message"),
        ("not yet valid", signed(&format!("{message}\nNot Before: 2030-06-02T00:00:00Z")), 422, "siwe_not_yet_valid"),
        (
            "issued in the future",
            signed(&times(&message, "2030-06-01T19:30:00Z", "2030-06-01T19:40:00Z")),
            422,
            "siwe_not_yet_valid",
        ),
        (
            "already expired",
            signed(&times(&message, "2030-06-01T18:00:00Z", "2030-06-01T18:30:00Z")),
            422,
            "siwe_expired",
        ),
    ];
    for (name, (m, s), status, code) in cases {
        let r = app.link(fan, &m, &s).await;
        assert_eq!((r.status, r.body["code"].as_str()), (status, Some(code)), "{name}: {}", r.body);
    }
    // Another fan cannot use this fan's nonce, even with a valid signature.
    let other = app.user("other").await;
    app.link(other, &message, &sign(&key, &message)).await.problem(422, "siwe_unknown_nonce");
    assert_eq!(app.count("SELECT COUNT(*) FROM wallet_links WHERE user_id = $1", &fan.to_db()).await, 0);

    // Nothing above consumed the nonce.
    app.link(fan, &message, &sign(&key, &message)).await.ok(201);
}

/// A challenge answered after its ten minutes is refused as expired.
#[tokio::test]
async fn expired_challenge_is_refused() {
    let app = spawn().await;
    let fan = app.user("fan").await;
    let key = PrivateKeySigner::random();
    let message = app.challenge(fan, &key).await;
    app.clock.advance(Duration::minutes(11));
    app.link(fan, &message, &sign(&key, &message)).await.problem(422, "siwe_expired");
    // A message without its own expiry is still bound by the nonce's.
    let open_ended: String =
        message.lines().filter(|l| !l.starts_with("Expiration Time: ")).collect::<Vec<_>>().join("\n");
    app.link(fan, &open_ended, &sign(&key, &open_ended)).await.problem(422, "siwe_expired");
}

/// One address belongs to one account: a second fan proving the same key gets a conflict; the
/// first fan linking it again is a no-op.
#[tokio::test]
async fn an_address_links_to_one_account() {
    let app = spawn().await;
    let (a, b) = (app.user("a").await, app.user("b").await);
    let key = PrivateKeySigner::random();
    let m = app.challenge(a, &key).await;
    app.link(a, &m, &sign(&key, &m)).await.ok(201);
    let m = app.challenge(b, &key).await;
    app.link(b, &m, &sign(&key, &m)).await.problem(409, "address_linked_elsewhere");
    let m = app.challenge(a, &key).await;
    app.link(a, &m, &sign(&key, &m)).await.ok(201);
    assert_eq!(app.count("SELECT COUNT(*) FROM wallet_links WHERE address <> $1", "").await, 1);
}

/// Unlinking removes only the caller's own link, and is audited.
#[tokio::test]
async fn unlinks() {
    let app = spawn().await;
    let (a, b) = (app.user("a").await, app.user("b").await);
    let key = PrivateKeySigner::random();
    let m = app.challenge(a, &key).await;
    app.link(a, &m, &sign(&key, &m)).await.ok(201);
    let path = format!("/api/v1/me/wallet/links/{}", key.address().to_checksum(None));
    app.send("DELETE", &path, Some(b), None).await.problem(404, "not_found");
    app.send("DELETE", &path, Some(a), None).await.ok(204);
    app.send("DELETE", &path, Some(a), None).await.problem(404, "not_found");
    app.send("DELETE", "/api/v1/me/wallet/links/not-an-address", Some(a), None).await.problem(404, "not_found");
    let wallet = app.send("GET", "/api/v1/me/wallet", Some(a), None).await;
    assert_eq!(wallet.ok(200)["links"], json!([]));
    assert_eq!(app.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", "wallet.address_unlinked").await, 1);
}

/// Challenges need a caller and a well-formed address; bodies are validated.
#[tokio::test]
async fn challenge_validates_input() {
    let app = spawn().await;
    let fan = app.user("fan").await;
    let path = "/api/v1/me/wallet/links/challenge";
    let addr = json!({ "address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" });
    app.send("POST", path, None, Some(addr.clone())).await.problem(401, "unauthenticated");
    for bad in [json!({ "address": "0x12" }), json!({ "address": "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed" })] {
        let r = app.send("POST", path, Some(fan), Some(bad)).await;
        assert_eq!(r.status, 422, "{}", r.body);
    }
    let r = app.send("POST", path, Some(fan), Some(json!({}))).await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = app
        .send(
            "POST",
            "/api/v1/me/wallet/links",
            Some(fan),
            Some(json!({ "message": "x".repeat(5000), "signature": "0x" })),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let _: Value = r.body;
}

/// A fan has at most ten open challenges; once they expire, new ones are issued again.
#[tokio::test]
async fn open_challenges_are_bounded() {
    let app = spawn().await;
    let fan = app.user("fan").await;
    let key = PrivateKeySigner::random();
    for _ in 0..10 {
        app.challenge(fan, &key).await;
    }
    let body = json!({ "address": key.address().to_checksum(None) });
    let r = app.send("POST", "/api/v1/me/wallet/links/challenge", Some(fan), Some(body.clone())).await;
    r.problem(429, "too_many_challenges");
    // Another fan is not affected.
    let other = app.user("other").await;
    app.challenge(other, &key).await;
    app.clock.advance(Duration::minutes(11));
    app.challenge(fan, &key).await;
}

fn replace_line(message: &str, prefix: &str, value: &str) -> String {
    message
        .lines()
        .map(|l| if l.starts_with(prefix) { format!("{prefix}{value}") } else { l.to_owned() })
        .collect::<Vec<_>>()
        .join("\n")
}

fn times(message: &str, issued: &str, expires: &str) -> String {
    replace_line(&replace_line(message, "Issued At: ", issued), "Expiration Time: ", expires)
}

fn replace_nonce(message: &str, nonce: &str) -> String {
    replace_line(message, "Nonce: ", nonce)
}
