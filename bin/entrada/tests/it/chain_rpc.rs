//! Tickets as tokens through the whole app on a real EVM node: the app configured with
//! `chain.mode = "rpc"` against anvil (pinned npm package, `tools/anvil`) mints bought tickets
//! to the holders' custodial addresses; with the node frozen (SIGSTOP) sales and entry go on
//! and mints queue; once it runs again (SIGCONT) the pipeline drains and every ticket is
//! minted exactly once.

use crate::checkin::{gate, phone, scan};
use crate::helpers::*;
use entrada_chain::contracts::EventTickets;
use entrada_chain::rpc::anvil::{self, Anvil};
use entrada_chain::{Address, ChainClient, RoleKeys, RpcChain, RpcConfig, U256};
use entrada_primitives::Clock as _;
use entrada_primitives::Secret;
use entrada_primitives::ids::UserId;
use serde_json::Value;
use std::str::FromStr;

fn node() -> Anvil {
    Anvil::spawn(&[]).unwrap_or_else(|e| panic!("{e}"))
}

fn keys() -> RoleKeys {
    let k = |i: usize| Secret::new(anvil::DEV_KEYS[i].to_owned());
    RoleKeys { admin: k(0), minter: k(1), custodian: k(2), organizer: k(3) }
}

/// The app over `node` through its configuration, with a short request limit so a frozen
/// node shows up quickly.
async fn app_on(node: &Anvil) -> TestApp {
    let url = node.url();
    spawn_app_with(move |c| {
        let k = keys();
        c.chain.mode = "rpc".into();
        c.chain.rpc_url = url;
        c.chain.chain_id = anvil::CHAIN_ID;
        c.chain.admin_key = k.admin;
        c.chain.minter_key = k.minter;
        c.chain.custodian_key = k.custodian;
        c.chain.organizer_key = k.organizer;
        c.chain.rpc_timeout_ms = 500;
        c.chain.send_lease_seconds = 4;
    })
    .await
}

/// A second client on the same node and data directory (so it finds the app's factory).
async fn reader(node: &Anvil, app: &TestApp) -> RpcChain {
    let mut cfg = RpcConfig::new(node.url(), anvil::CHAIN_ID, keys());
    cfg.data_dir = Some(app.data_dir.path().to_path_buf());
    RpcChain::connect(cfg).await.unwrap()
}

async fn my_tickets(app: &TestApp, fan: &User) -> Vec<Value> {
    let page = app.get("/api/v1/me/tickets?limit=200", Some(&fan.token)).await.expect(200);
    page["items"].as_array().unwrap().clone()
}

fn addr(v: &Value) -> Address {
    Address::from_str(v.as_str().unwrap()).unwrap()
}

fn token(v: &Value) -> U256 {
    U256::from_str(v["chain"]["token_id"].as_str().unwrap()).unwrap()
}

async fn holder_address(app: &TestApp, fan: &User) -> Address {
    app.app.chain.custodial_address(UserId::from_str(&fan.id).unwrap()).await.unwrap()
}

/// A ticket bought in the app configured for JSON-RPC becomes a token on anvil, owned by
/// the holder's custodial address, and the ticket API shows the node's chain id.
#[tokio::test]
async fn a_bought_ticket_is_minted_on_the_node() {
    let node = node();
    let app = app_on(&node).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 10).await;
    let fan = app.register("fan@example.com").await;
    app.buy(&fan, &event, &tt, 2).await;

    let chain = reader(&node, &app).await;
    let owner = holder_address(&app, &fan).await;
    let tickets = my_tickets(&app, &fan).await;
    assert_eq!(tickets.len(), 2);
    let contract = addr(&tickets[0]["chain"]["contract"]);
    for t in &tickets {
        assert_eq!(t["chain"]["status"], "confirmed", "{t:#}");
        assert_eq!(t["chain"]["chain_id"], anvil::CHAIN_ID, "{t:#}");
        assert_eq!(addr(&t["chain"]["owner"]), owner);
        assert_eq!(chain.owner_of(contract, token(t)).await.unwrap(), Some(owner));
    }
    assert_eq!(chain.total_supply(contract).await.unwrap(), 2);
    // The collection was made by the factory the app recorded in its data directory.
    assert_eq!(chain.collection_of(chain_event_key(&app, &event).await).await.unwrap(), Some(contract));
    assert!(app.data_dir.path().join(format!("chain-rpc-{}.json", anvil::CHAIN_ID)).is_file());
}

/// The event key the pipeline used for the collection, read back through the factory's
/// record rather than recomputed: whatever the key, the factory knows the collection.
async fn chain_event_key(app: &TestApp, event: &str) -> entrada_chain::B256 {
    let row: (String,) = sqlx::query_as("SELECT event_key FROM chain_collections WHERE event_id = $1")
        .bind(event.to_owned())
        .fetch_one(app.app.db.reader())
        .await
        .unwrap();
    entrada_chain::B256::from_str(&row.0).unwrap()
}

/// Freeze the node in the middle of a sale: purchases are paid and tickets issued, a fan gets
/// in, and the tokens wait; the node runs again, the pipeline drains, and every ticket is a
/// token exactly once, owned by its holder.
#[tokio::test]
async fn a_frozen_node_stops_neither_sales_nor_entry_and_mints_drain_after() {
    let node = node();
    let app = app_on(&node).await;
    let (org_user, org) = app.organizer("org@example.com").await;
    let (event, tt) = app.event_on_sale(&org_user, &org, 20).await;
    let g = gate(&app, &org_user, &event).await;
    let early = app.register("early@example.com").await;
    app.buy(&early, &event, &tt, 1).await;
    assert_eq!(my_tickets(&app, &early).await[0]["chain"]["status"], "confirmed");

    node.pause().unwrap();
    let mut fans = Vec::new();
    for i in 0..3 {
        let fan = app.register(&format!("fan{i}@example.com")).await;
        let order = app.buy(&fan, &event, &tt, 2).await;
        assert_eq!(order["status"], "paid", "the sale does not wait for the chain");
        fans.push(fan);
    }
    for fan in &fans {
        for t in my_tickets(&app, fan).await {
            assert_eq!(t["status"], "valid");
            assert_ne!(t["chain"]["status"], "confirmed", "{t:#}");
        }
    }
    let ticket = my_tickets(&app, &fans[0]).await[0]["id"].as_str().unwrap().to_owned();
    let p = phone(&app, &fans[0], &ticket).await;
    let v = scan(&app, &g, &p.qr(app.clock.now().unix_timestamp())).await;
    assert_eq!(v["ok"], true, "entry does not wait for the chain: {v:#}");

    node.resume().unwrap();
    // The frozen sends are resolved by reading the chain, then retried after their backoff.
    app.clock.advance(time::Duration::minutes(5));
    app.settle().await;
    app.clock.advance(time::Duration::minutes(5));
    app.settle().await;

    let chain = reader(&node, &app).await;
    let mut contract = None;
    let mut all = my_tickets(&app, &early).await;
    for fan in &fans {
        let owner = holder_address(&app, fan).await;
        for t in my_tickets(&app, fan).await {
            assert_eq!(t["chain"]["status"], "confirmed", "{t:#}");
            let c = addr(&t["chain"]["contract"]);
            assert_eq!(chain.owner_of(c, token(&t)).await.unwrap(), Some(owner));
            contract = Some(c);
            all.push(t);
        }
    }
    let contract = contract.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(chain.total_supply(contract).await.unwrap(), 7);
    assert_eq!(chain.view(contract, EventTickets::totalMintedCall {}).await.unwrap(), U256::from(7u64), "once each");
    let admitted = all.iter().find(|t| t["id"] == ticket.as_str()).unwrap();
    let uri = chain.token_uri(contract, token(admitted)).await.unwrap();
    assert!(uri.ends_with("/attended"), "{uri}");
}
