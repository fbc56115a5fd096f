//! The wallet through the whole app on the embedded chain: a bought ticket is a token at the
//! fan's custodial address, its `tokenURI` serves the collectible's metadata, a linked wallet
//! (Sign-In with Ethereum) receives an exported token on chain, the old QR generation stops
//! admitting, and `entrada wallet rewrap` moves custodial keys to a new master key.

use crate::checkin::{gate, phone, scan};
use crate::helpers::*;
use alloy::signers::SignerSync as _;
use alloy::signers::local::PrivateKeySigner;
use base64::Engine as _;
use entrada_chain::{Address, U256};
use entrada_gateway::App;
use entrada_primitives::Clock as _;
use entrada_primitives::Secret;
use serde_json::{Value, json};
use std::str::FromStr;

async fn wallet(app: &TestApp, fan: &User) -> Value {
    app.get("/api/v1/me/wallet", Some(&fan.token)).await.expect(200)
}

/// Links a new external key to `fan` through the challenge and a real signature.
async fn link(app: &TestApp, fan: &User) -> PrivateKeySigner {
    let key = PrivateKeySigner::random();
    let c = app
        .post(
            "/api/v1/me/wallet/links/challenge",
            Some(&fan.token),
            json!({ "address": key.address().to_checksum(None) }),
        )
        .await
        .expect(201);
    let message = c["message"].as_str().unwrap();
    let host = app.base.trim_start_matches("http://");
    assert!(message.starts_with(&format!("{host} wants you to sign in with your Ethereum account:")), "{message}");
    let sig = key.sign_message_sync(message.as_bytes()).unwrap();
    app.post(
        "/api/v1/me/wallet/links",
        Some(&fan.token),
        json!({ "message": message, "signature": format!("0x{}", hex::encode(sig.as_bytes())) }),
    )
    .await
    .expect(201);
    key
}

/// A bought ticket is minted to the fan's custodial address: the wallet view shows the
/// contract, token id, transaction and metadata URL, the chain agrees on the owner and the
/// `tokenURI`, and that URL serves public ERC-721 metadata.
#[tokio::test]
async fn a_bought_ticket_is_a_token_at_the_custodial_address() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, _tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &_tt, 1).await;

    let w = wallet(&app, &fan).await;
    let custodial = w["custodial_address"].as_str().unwrap().to_owned();
    let t = &w["tickets"][0];
    assert_eq!(t["event_id"], json!(event));
    let nft = &t["nft"];
    assert_eq!(nft["status"], json!("confirmed"), "{w}");
    assert_eq!(nft["owner"], json!(custodial));
    assert!(nft["tx_hash"].as_str().unwrap().starts_with("0x"));
    let token_id = nft["token_id"].as_str().unwrap();
    let metadata_url = nft["metadata_url"].as_str().unwrap().to_owned();
    assert_eq!(metadata_url, format!("{}/api/v1/nft/{event}/{token_id}", app.base));

    let contract = Address::from_str(nft["contract"].as_str().unwrap()).unwrap();
    let id = U256::from_str(token_id).unwrap();
    let chain = app.app.chain.chain();
    assert_eq!(chain.owner_of(contract, id).await.unwrap(), Some(Address::from_str(&custodial).unwrap()));
    assert_eq!(chain.token_uri(contract, id).await.unwrap(), metadata_url);

    let meta = app.get(&metadata_url.replace(&app.base, ""), None).await.expect(200);
    assert_eq!(meta["name"], json!(format!("Noche de Prueba — General #{token_id}")));
    assert!(meta["attributes"].as_array().unwrap().contains(&json!({ "trait_type": "City", "value": "Madrid" })));
    let contract_meta = app.get(&format!("/api/v1/nft/{event}/contract"), None).await.expect(200);
    assert_eq!(contract_meta["name"], json!("Noche de Prueba"));
    let recipient = contract_meta["fee_recipient"].as_str().unwrap().to_owned();
    assert_eq!(Address::from_str(&recipient).unwrap(), chain.roles().organizer);
    let art = app.get(&format!("/api/v1/nft/{event}/art/event.svg"), None).await;
    assert_eq!((art.status, art.content_type.as_str()), (200, "image/svg+xml"));

    // The same address every time; nothing in the answer resembles a private key.
    assert_eq!(wallet(&app, &fan).await["custodial_address"], json!(custodial));
    assert!(!w.to_string().contains("private"));
}

/// With the organizer's permission, the holder exports the ticket to a linked wallet: the
/// token moves there on chain, the wallet shows where it went, and a rotating code of the old
/// holder generation no longer admits.
#[tokio::test]
async fn an_exported_ticket_moves_to_the_linked_wallet() {
    let app = spawn_app().await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &tt, 1).await;
    let ticket = wallet(&app, &fan).await["tickets"][0]["ticket_id"].as_str().unwrap().to_owned();
    let key = link(&app, &fan).await;
    let to = key.address().to_checksum(None);

    let refused =
        app.post(&format!("/api/v1/tickets/{ticket}/export"), Some(&fan.token), json!({ "address": to })).await;
    refused.expect_problem(409, "export_not_allowed");
    app.patch(
        &format!("/api/v1/events/{event}"),
        Some(&org_user.token),
        json!({ "resale_policy": { "export_allowed": true } }),
    )
    .await
    .expect(200);
    let stranger = app.register("stranger@example.com").await;
    app.post(&format!("/api/v1/tickets/{ticket}/export"), Some(&stranger.token), json!({ "address": to }))
        .await
        .expect_problem(404, "not_found");

    let g = gate(&app, &org_user, &event).await;
    let old_phone = phone(&app, &fan, &ticket).await;
    let exported =
        app.post(&format!("/api/v1/tickets/{ticket}/export"), Some(&fan.token), json!({ "address": to })).await;
    let exported = exported.expect(201);
    assert_eq!(exported["generation"], json!(2));
    app.settle().await;

    let w = wallet(&app, &fan).await;
    let nft = &w["tickets"][0]["nft"];
    assert_eq!(nft["exported_to"], json!(to));
    assert_eq!(w["tickets"][0]["generation"], json!(2));
    let contract = Address::from_str(nft["contract"].as_str().unwrap()).unwrap();
    let id = U256::from_str(nft["token_id"].as_str().unwrap()).unwrap();
    assert_eq!(app.app.chain.chain().owner_of(contract, id).await.unwrap(), Some(key.address()));
    assert_eq!(nft["owner"], json!(to));

    // The rotating code of generation 1, issued before the export, no longer admits.
    let v = scan(&app, &g, &old_phone.qr(app.clock.now().unix_timestamp())).await;
    assert_eq!(v["ok"], json!(false), "{v:#}");
    app.post(&format!("/api/v1/tickets/{ticket}/export"), Some(&fan.token), json!({ "address": to }))
        .await
        .expect_problem(409, "already_exported");
}

/// Rotation end to end: keys created under one master key are re-wrapped by the
/// `entrada wallet rewrap` command under a new one (a second run changes nothing), after which
/// the app starts with only the new key and every custodial key still opens.
#[tokio::test]
async fn rewrap_command_rotates_the_master_key() {
    let b64 = |k: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    let (old, new) = (b64([11; 32]), b64([22; 32]));
    let app = spawn_app_with(|c| {
        c.wallet.master_keys.insert("old".into(), Secret::new(old.clone()));
        c.wallet.active_key_id = "old".into();
    })
    .await;
    let mut fans = Vec::new();
    for i in 0..3 {
        let fan = app.register(&format!("fan{i}@example.com")).await;
        let address = wallet(&app, &fan).await["custodial_address"].as_str().unwrap().to_owned();
        fans.push((fan, address));
    }
    let db_url = app.app.config.database_url();
    let data_dir = app.data_dir.path().to_str().unwrap().to_owned();
    let env = [
        ("ENTRADA_DATA_DIR", data_dir.clone()),
        ("ENTRADA_DATABASE__URL", db_url.clone()),
        ("ENTRADA_IDENTITY__PASSWORD_COST", "fast".to_owned()),
        ("ENTRADA_WALLET__MASTER_KEYS__OLD", old.clone()),
        ("ENTRADA_WALLET__MASTER_KEYS__NEW", new.clone()),
        ("ENTRADA_WALLET__ACTIVE_KEY_ID", "new".to_owned()),
    ];
    let run = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_entrada"));
        c.args(["wallet", "rewrap"]).env("ENTRADA_LOG", "error");
        for (k, v) in &env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let first = run();
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(out.contains("re-wrapped 3 key(s) under master key `new`"), "{out}");
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("re-wrapped 0 key(s)"));
    for text in [out, String::from_utf8_lossy(&first.stderr).into_owned()] {
        assert!(!text.contains(&old) && !text.contains(&new), "a master key was printed");
    }

    // The old key is gone from the configuration; every key still opens.
    let mut config = app.app.config.clone();
    config.wallet.master_keys.remove("old");
    config.wallet.master_keys.insert("new".into(), Secret::new(new.clone()));
    config.wallet.active_key_id = "new".into();
    let clock: entrada_primitives::SharedClock = std::sync::Arc::new(app.clock.clone());
    let rotated = App::build(config, clock).await.unwrap();
    for (fan, address) in &fans {
        let id = entrada_primitives::ids::UserId::from_db(&fan.id).unwrap();
        let signer = rotated.wallet.custody().signer(id).await.unwrap().unwrap();
        assert_eq!(signer.address().to_checksum(None), *address);
    }
}

/// In embedded mode with no master key configured, the first start writes one into the data
/// directory, readable by its owner only.
#[tokio::test]
async fn embedded_mode_generates_a_private_master_key_file() {
    let app = spawn_app().await;
    let file = app.data_dir.path().join("wallet-master.key");
    let meta = std::fs::metadata(&file).expect("master key file");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}
