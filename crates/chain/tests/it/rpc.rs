//! The JSON-RPC client itself, on anvil: nonces over many concurrent sends and after someone
//! else used the key, confirmations, a restart that finds the factory, configuration checks,
//! and sends whose outcome is unknown (node frozen with SIGSTOP, transaction dropped from the
//! pool, nonce taken by another transaction) reconciled by reading the chain, never re-sent
//! blindly.

use std::str::FromStr;
use std::time::Duration;

use alloy::providers::Provider;
use entrada_chain::rpc::anvil::{self, Anvil};
use entrada_chain::{Address, ChainClient, ChainError, Mint, RoleKeys, RpcChain, RpcConfig};
use entrada_primitives::Secret;
use serde_json::{Value, json};

use crate::harness::{rpc_config, spawn_anvil};
use crate::{addr, event_key, id, params};

async fn raw(chain: &RpcChain, method: &'static str, params: Value) -> Value {
    chain.provider().raw_request(method.into(), params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// A zero-value transaction from `who` that the node signs (its dev accounts are unlocked),
/// waited for until it is included: someone else using the key behind the client's back.
async fn spend_nonce_behind_the_clients_back(chain: &RpcChain, who: Address) {
    let hash = raw(chain, "eth_sendTransaction", json!([{ "from": who, "to": who, "value": "0x0" }])).await;
    let hash = entrada_chain::B256::from_str(hash.as_str().unwrap()).unwrap();
    while chain.provider().get_transaction_receipt(hash).await.unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Transactions the account has had included.
async fn nonce(chain: &RpcChain, who: Address) -> u64 {
    chain.provider().get_transaction_count(who).await.unwrap()
}

async fn pending_nonce(chain: &RpcChain, who: Address) -> u64 {
    chain.provider().get_transaction_count(who).pending().await.unwrap()
}

/// A client with short limits, so an unknown outcome shows up quickly.
fn impatient(node: &Anvil) -> RpcConfig {
    let mut cfg = rpc_config(node);
    cfg.request_timeout = Duration::from_millis(300);
    cfg.receipt_timeout = Duration::from_millis(1_500);
    cfg
}

async fn setup(cfg: RpcConfig) -> (RpcChain, Address) {
    let chain = RpcChain::connect(cfg).await.unwrap();
    let (c, _) = chain.create_collection(event_key("night"), &params(true)).await.unwrap();
    (chain, c)
}

fn one(to: Address, n: u64) -> Vec<Mint> {
    vec![Mint { to, token_id: id(n) }]
}

/// Forty mints sent at once from the same minter key all land, each with its own nonce and
/// none lost or doubled; when another process then uses the key behind the client's back,
/// the next send notices the stale nonce, resyncs from the node and lands.
#[tokio::test]
async fn nonces_stay_continuous_over_many_concurrent_sends() {
    let node = spawn_anvil();
    let (chain, c) = setup(rpc_config(&node)).await;
    let minter = chain.roles().minter;
    assert_eq!(nonce(&chain, minter).await, 0);

    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=40u64 {
        let chain = chain.clone();
        tasks.spawn(async move { chain.mint_batch(c, &one(addr(&format!("fan-{n}")), n)).await });
    }
    let mut hashes = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        hashes.insert(r.unwrap().unwrap().tx_hash);
    }
    assert_eq!(hashes.len(), 40);
    assert_eq!(nonce(&chain, minter).await, 40, "one transaction per mint, no gap, no extra");
    assert_eq!(chain.total_supply(c).await.unwrap(), 40);

    // Someone else spends the minter's next nonce (anvil signs for its dev accounts).
    spend_nonce_behind_the_clients_back(&chain, minter).await;
    assert_eq!(nonce(&chain, minter).await, 41);
    chain.mint_batch(c, &one(addr("late"), 41)).await.unwrap();
    assert_eq!(nonce(&chain, minter).await, 42);
    assert_eq!(chain.owner_of(c, id(41)).await.unwrap(), Some(addr("late")));
    assert_eq!(chain.unknown_sends(), 0);
}

/// With three confirmations a send returns only once two more blocks follow its block; if
/// they do not come in time the outcome is unknown, and the retry finds the included
/// transaction instead of sending a second one.
#[tokio::test]
async fn waits_for_confirmations_and_a_retry_finds_the_included_transaction() {
    let node = spawn_anvil();
    let mut cfg = impatient(&node);
    cfg.confirmations = 3;
    cfg.receipt_timeout = Duration::from_secs(60);
    let chain = RpcChain::connect(cfg.clone()).await.unwrap();
    // Blocks come from a miner beside the client (anvil mines only on demand here).
    let miner = {
        let chain = chain.clone();
        tokio::spawn(async move {
            loop {
                let _: Result<Value, _> = chain.provider().raw_request("evm_mine".into(), ()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (c, created) = chain.create_collection(event_key("night"), &params(true)).await.unwrap();
    let head = chain.block_number().await.unwrap();
    assert!(head >= created.block_number + 2, "returned at head {head} for block {}", created.block_number);
    let r = chain.mint_batch(c, &one(addr("fan"), 1)).await.unwrap();
    assert!(chain.block_number().await.unwrap() >= r.block_number + 2);
    miner.abort();
    let _ = miner.await;

    // No more blocks: the next mint is included but cannot reach three confirmations in time.
    cfg.receipt_timeout = Duration::from_millis(800);
    let chain = RpcChain::connect(cfg).await.unwrap();
    let minter = chain.roles().minter;
    let before = nonce(&chain, minter).await;
    let mints = one(addr("fan"), 2);
    let first = chain.mint_batch(c, &mints).await;
    assert!(matches!(first, Err(ChainError::Unavailable(_))), "{first:?}");
    assert_eq!(nonce(&chain, minter).await, before + 1, "it is included");
    assert_eq!(chain.unknown_sends(), 1);

    let _ = raw(&chain, "anvil_mine", json!(["0x2"])).await;
    let r = chain.mint_batch(c, &mints).await.unwrap();
    assert_eq!(nonce(&chain, minter).await, before + 1, "the retry sent nothing");
    assert_eq!(chain.block_number().await.unwrap(), r.block_number + 2);
    assert_eq!(chain.owner_of(c, id(2)).await.unwrap(), Some(addr("fan")));
    assert_eq!(chain.unknown_sends(), 0);
}

/// A client restarted on the same node with the same data directory finds the factory it
/// deployed (no second deployment) and the collections and tokens made through it; a
/// configured factory address is used as is, and one without code is refused.
#[tokio::test]
async fn a_restarted_client_finds_its_factory() {
    let node = spawn_anvil();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = rpc_config(&node);
    cfg.data_dir = Some(dir.path().to_path_buf());
    let (factory, c) = {
        let chain = RpcChain::connect(cfg.clone()).await.unwrap();
        let factory = chain.ensure_factory().await.unwrap();
        let (c, _) = chain.create_collection(event_key("night"), &params(true)).await.unwrap();
        chain.mint_batch(c, &one(addr("fan"), 1)).await.unwrap();
        (factory, c)
    };
    assert!(dir.path().join(format!("chain-rpc-{}.json", anvil::CHAIN_ID)).is_file());

    let chain = RpcChain::connect(cfg.clone()).await.unwrap();
    let admin = chain.roles().admin;
    let admin_nonce = nonce(&chain, admin).await;
    assert_eq!(chain.ensure_factory().await.unwrap(), factory);
    assert_eq!(nonce(&chain, admin).await, admin_nonce, "no second deployment");
    assert_eq!(chain.collection_of(event_key("night")).await.unwrap(), Some(c));
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(addr("fan")));
    assert_eq!(crate::reason(chain.create_collection(event_key("night"), &params(true)).await), "CollectionExists");

    let mut configured = rpc_config(&node);
    configured.factory = Some(factory);
    let chain = RpcChain::connect(configured.clone()).await.unwrap();
    assert_eq!(chain.collection_of(event_key("night")).await.unwrap(), Some(c));
    configured.factory = Some(addr("nothing-here"));
    let chain = RpcChain::connect(configured).await.unwrap();
    assert!(matches!(chain.ensure_factory().await, Err(ChainError::Invalid(_))));
}

/// Connecting checks the chain id and the keys; a bad key is refused without echoing it.
#[tokio::test]
async fn connect_refuses_a_wrong_chain_and_bad_keys() {
    let node = spawn_anvil();
    let mut cfg = rpc_config(&node);
    cfg.chain_id = 1;
    assert!(matches!(RpcChain::connect(cfg).await, Err(ChainError::Invalid(m)) if m.contains("31337")));

    let secret = "0xnot-a-key-but-secret-material";
    let cfg = RpcConfig::new(node.url(), anvil::CHAIN_ID, RoleKeys::single(Secret::new(secret.to_owned())));
    let err = RpcChain::connect(cfg).await.err().unwrap().to_string();
    assert!(err.contains("admin key") && !err.contains(secret), "{err}");

    // One key for every role is allowed: all four roles are the same address.
    let cfg = RpcConfig::new(node.url(), anvil::CHAIN_ID, RoleKeys::single(Secret::new(anvil::DEV_KEYS[5].into())));
    let (chain, c) = setup(cfg).await;
    let roles = chain.roles();
    assert!(roles.admin == roles.minter && roles.minter == roles.custodian && roles.custodian == roles.organizer);
    chain.mint_batch(c, &one(addr("fan"), 1)).await.unwrap();
    chain.transfer(c, addr("fan"), addr("friend"), id(1)).await.unwrap();
    chain.set_transfer_policy(c, false, 0).await.unwrap();
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(addr("friend")));

    let mut cfg = rpc_config(&node);
    cfg.url = "http://127.0.0.1:1".into();
    assert!(matches!(RpcChain::connect(cfg).await, Err(ChainError::Unavailable(_))));
}

/// A node frozen with SIGSTOP: a send that finds it frozen before broadcasting signs nothing;
/// a send frozen after broadcasting times out with an unknown outcome; after SIGCONT the
/// retry of the same mint reads the chain, finds the transaction and returns its receipt.
/// Either way the minter's nonce moves by exactly one per mint: no double send.
#[tokio::test]
async fn a_frozen_node_makes_the_outcome_unknown_and_the_retry_reconciles() {
    let node = spawn_anvil();
    let (chain, c) = setup(impatient(&node)).await;
    let minter = chain.roles().minter;
    let start = nonce(&chain, minter).await;

    // Frozen before the send: nothing is signed or sent.
    node.pause().unwrap();
    let frozen = chain.mint_batch(c, &one(addr("fan"), 1)).await;
    node.resume().unwrap();
    assert!(matches!(frozen, Err(ChainError::Unavailable(_))), "{frozen:?}");
    assert_eq!(chain.unknown_sends(), 0);
    chain.mint_batch(c, &one(addr("fan"), 1)).await.unwrap();
    assert_eq!(nonce(&chain, minter).await, start + 1);

    // Frozen after the broadcast: the node holds the transaction unmined, then stops answering.
    let _ = raw(&chain, "evm_setAutomine", json!([false])).await;
    let mints: Vec<Mint> = (2..=6).map(|n| Mint { to: addr(&format!("fan-{n}")), token_id: id(n) }).collect();
    let send = {
        let (chain, mints) = (chain.clone(), mints.clone());
        tokio::spawn(async move { chain.mint_batch(c, &mints).await })
    };
    while pending_nonce(&chain, minter).await == start + 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.pause().unwrap();
    let outcome = send.await.unwrap();
    assert!(matches!(outcome, Err(ChainError::Unavailable(_))), "{outcome:?}");
    assert_eq!(chain.unknown_sends(), 1);
    node.resume().unwrap();
    let _ = raw(&chain, "evm_mine", json!([])).await;
    assert_eq!(nonce(&chain, minter).await, start + 2, "the first broadcast was included");

    let r = chain.mint_batch(c, &mints).await.unwrap();
    assert!(r.success);
    assert_eq!(r.logs.len(), 5);
    assert_eq!(nonce(&chain, minter).await, start + 2, "the retry sent nothing new");
    assert_eq!(chain.unknown_sends(), 0);
    for m in &mints {
        assert_eq!(chain.owner_of(c, m.token_id).await.unwrap(), Some(m.to));
    }
    assert_eq!(chain.total_supply(c).await.unwrap(), 6);
}

/// A transaction that timed out and then vanished from the node's pool is re-broadcast as the
/// very same signed bytes (same hash, same nonce); one whose nonce another transaction took is
/// known dropped, and only then is the call signed afresh.
#[tokio::test]
async fn dropped_transactions_are_rebroadcast_or_resent_only_when_provably_dead() {
    let node = spawn_anvil();
    let (chain, c) = setup(impatient(&node)).await;
    let minter = chain.roles().minter;
    let start = nonce(&chain, minter).await;

    // Unmined, then dropped from the pool.
    let _ = raw(&chain, "evm_setAutomine", json!([false])).await;
    let mints = one(addr("fan"), 1);
    assert!(matches!(chain.mint_batch(c, &mints).await, Err(ChainError::Unavailable(_))));
    let pool = raw(&chain, "txpool_content", json!([])).await;
    let first_hash = pool["pending"]
        .as_object()
        .and_then(|by_sender| by_sender.values().next())
        .and_then(|by_nonce| by_nonce.as_object())
        .and_then(|by_nonce| by_nonce.values().next())
        .and_then(|tx| tx["hash"].as_str())
        .unwrap()
        .to_owned();
    let _ = raw(&chain, "anvil_dropAllTransactions", json!([])).await;
    let _ = raw(&chain, "evm_setAutomine", json!([true])).await;
    let r = chain.mint_batch(c, &mints).await.unwrap();
    assert_eq!(format!("{:#x}", r.tx_hash), first_hash, "the same signed transaction");
    assert_eq!(nonce(&chain, minter).await, start + 1);

    // Unmined, dropped, and its nonce taken by another transaction from the same key.
    let _ = raw(&chain, "evm_setAutomine", json!([false])).await;
    let mints = one(addr("fan"), 2);
    assert!(matches!(chain.mint_batch(c, &mints).await, Err(ChainError::Unavailable(_))));
    let _ = raw(&chain, "anvil_dropAllTransactions", json!([])).await;
    let _ = raw(&chain, "evm_setAutomine", json!([true])).await;
    spend_nonce_behind_the_clients_back(&chain, minter).await;
    assert_eq!(nonce(&chain, minter).await, start + 2);
    let r = chain.mint_batch(c, &mints).await.unwrap();
    assert!(r.success);
    assert_eq!(nonce(&chain, minter).await, start + 3, "one fresh transaction");
    assert_eq!(chain.owner_of(c, id(2)).await.unwrap(), Some(addr("fan")));
    assert_eq!(chain.total_supply(c).await.unwrap(), 2);
    assert_eq!(chain.unknown_sends(), 0);
}

/// A revert predicted by the node is still sent, so it has a
/// receipt, uses the nonce and names the same error as on the embedded chain.
#[tokio::test]
async fn a_revert_has_a_receipt_like_on_the_embedded_chain() {
    let node = spawn_anvil();
    let (chain, c) = setup(rpc_config(&node)).await;
    let minter = chain.roles().minter;
    chain.mint_batch(c, &one(addr("fan"), 1)).await.unwrap();
    let before = nonce(&chain, minter).await;
    match chain.mint_batch(c, &one(addr("other"), 1)).await {
        Err(ChainError::Reverted { reason, receipt }) => {
            assert_eq!(reason, "ERC721InvalidSender");
            assert!(!receipt.success);
            assert_eq!(receipt.from, minter);
            assert_eq!(receipt.to, Some(c));
            assert_eq!(chain.receipt(receipt.tx_hash).await.unwrap().as_ref(), Some(&*receipt));
        }
        other => panic!("expected a revert, got {other:?}"),
    }
    assert_eq!(nonce(&chain, minter).await, before + 1);
    assert_eq!(chain.balance_of(c, addr("other")).await.unwrap(), 0);
    assert_eq!(chain.total_supply(c).await.unwrap(), 1);
}
