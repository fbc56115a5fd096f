//! Integration tests of the ticket contracts through `ChainClient` and as arbitrary senders:
//! the real compiled bytecode on the embedded chain (revm) and, through the same test bodies,
//! on an anvil node over JSON-RPC (`harness`), plus tests of the JSON-RPC client itself (`rpc`).

// Test bodies shared by both chains are plain async functions, not `#[test]`s, so clippy's
// allowance for unwrap in tests does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gas;
mod harness;
mod policy;
mod props;
mod rpc;

use harness::TestChain;

on_both_chains!(
    factory_creates_one_collection_per_event,
    batch_mint_to_many_holders,
    double_mint_reverts_and_batches_are_all_or_nothing,
    every_privileged_function_rejects_everyone_else,
    royalty_info_follows_erc2981,
    burn_removes_the_token,
    owners_of_reads_many_tokens_at_once,
    attended_mark_changes_metadata,
    reentrancy_through_on_erc721_received_cannot_break_invariants,
);

use std::sync::Arc;

use alloy::sol_types::{SolCall, SolConstructor};
use entrada_chain::contracts::EventTickets;
use entrada_chain::contracts::test_contracts::ReentrantReceiver;
use entrada_chain::{Address, B256, ChainClient, ChainError, CollectionParams, EmbeddedChain, Mint, U256};
use entrada_primitives::{ManualClock, SharedClock};
use time::macros::datetime;

/// A chain in memory at a fixed time, and the clock that drives its block timestamps.
pub fn chain() -> (EmbeddedChain, ManualClock) {
    let clock = ManualClock::new(datetime!(2030-06-01 18:00 UTC));
    let shared: SharedClock = Arc::new(clock.clone());
    (EmbeddedChain::in_memory(shared).expect("embedded chain"), clock)
}

/// A distinct address that has never been used.
pub fn addr(label: &str) -> Address {
    Address::from_word(alloy::primitives::keccak256(label.as_bytes()))
}

pub fn id(n: u64) -> U256 {
    U256::from(n)
}

pub fn event_key(label: &str) -> B256 {
    alloy::primitives::keccak256(label.as_bytes())
}

/// Unix seconds of `chain()`'s start.
pub const START: u64 = 1_906_567_200;

pub fn params(locked: bool) -> CollectionParams {
    CollectionParams {
        name: "Night Show".into(),
        symbol: "NIGHT".into(),
        base_uri: "https://tickets.example/api/v1/tokens/1337/night/".into(),
        contract_uri: "https://tickets.example/api/v1/collections/night".into(),
        royalty_receiver: addr("organizer-payout"),
        royalty_bps: 500,
        event_end: START + 86_400,
        transfers_locked: locked,
    }
}

pub async fn collection(chain: &dyn ChainClient, locked: bool) -> Address {
    let (c, _) = chain.create_collection(event_key("night"), &params(locked)).await.expect("create collection");
    c
}

pub fn reason(r: Result<impl std::fmt::Debug, ChainError>) -> String {
    match r {
        Err(e) => e.revert_reason().map(str::to_owned).unwrap_or_else(|| format!("not a revert: {e}")),
        Ok(v) => format!("succeeded: {v:?}"),
    }
}

/// A fresh chain has the factory, and a collection lands at the predicted address with its
/// name, symbol and contract metadata; a second collection for the same event is refused.
async fn factory_creates_one_collection_per_event(chain: TestChain) {
    assert_ne!(chain.ensure_factory().await.unwrap(), Address::ZERO);
    let key = event_key("night");
    assert_eq!(chain.collection_of(key).await.unwrap(), None);
    let predicted = chain.predict_collection(key).await.unwrap();

    let (c, receipt) = chain.create_collection(key, &params(true)).await.unwrap();
    assert_eq!(c, predicted);
    assert!(receipt.success);
    assert!(!receipt.logs.is_empty(), "CollectionCreated and RoleGranted are logged");
    assert_eq!(chain.collection_of(key).await.unwrap(), Some(c));
    assert_eq!(chain.view(c, EventTickets::nameCall {}).await.unwrap(), "Night Show");
    assert_eq!(chain.view(c, EventTickets::symbolCall {}).await.unwrap(), "NIGHT");
    assert_eq!(
        chain.view(c, EventTickets::contractURICall {}).await.unwrap(),
        "https://tickets.example/api/v1/collections/night"
    );
    assert_eq!(chain.total_supply(c).await.unwrap(), 0);

    assert_eq!(reason(chain.create_collection(key, &params(false)).await), "CollectionExists");
    let (other, _) = chain.create_collection(event_key("matinee"), &params(false)).await.unwrap();
    assert_ne!(other, c);

    let mut bad = params(true);
    bad.royalty_bps = 10_001;
    assert!(matches!(chain.create_collection(event_key("bad"), &bad).await, Err(ChainError::Invalid(_))));
}

/// One transaction mints tickets to many different holders, each token id owned by its holder,
/// with one Transfer log per token and the receipt findable by hash.
async fn batch_mint_to_many_holders(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let mints: Vec<Mint> = (1..=40).map(|n| Mint { to: addr(&format!("fan-{}", n % 25)), token_id: id(n) }).collect();
    let before = chain.block_number().await.unwrap();
    let receipt = chain.mint_batch(c, &mints).await.unwrap();
    assert_eq!(receipt.block_number, before + 1, "one block per transaction");
    assert_eq!(receipt.logs.len(), 40);
    for m in &mints {
        assert_eq!(chain.owner_of(c, m.token_id).await.unwrap(), Some(m.to));
    }
    assert_eq!(chain.total_supply(c).await.unwrap(), 40);
    // fan-1 gets serials 1 and 26.
    assert_eq!(chain.balance_of(c, addr("fan-1")).await.unwrap(), 2);
    assert_eq!(chain.owner_of(c, id(41)).await.unwrap(), None);
    assert_eq!(chain.receipt(receipt.tx_hash).await.unwrap(), Some(receipt));
    assert_eq!(chain.receipt(B256::ZERO).await.unwrap(), None);
    assert!(matches!(chain.mint_batch(c, &[]).await, Err(ChainError::Invalid(_))));
}

/// A token id can be minted once: a repeat in a later batch, a repeat inside one batch and a
/// re-mint after a burn all revert, and a reverted batch mints none of its tokens.
async fn double_mint_reverts_and_batches_are_all_or_nothing(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let alice = addr("alice");
    let bob = addr("bob");
    chain.mint_batch(c, &[Mint { to: alice, token_id: id(7) }]).await.unwrap();

    let again = chain.mint_batch(c, &[Mint { to: bob, token_id: id(8) }, Mint { to: bob, token_id: id(7) }]).await;
    assert_eq!(reason(again), "ERC721InvalidSender");
    assert_eq!(chain.owner_of(c, id(8)).await.unwrap(), None, "the whole batch rolled back");
    assert_eq!(chain.owner_of(c, id(7)).await.unwrap(), Some(alice));

    let dup = chain.mint_batch(c, &[Mint { to: bob, token_id: id(9) }, Mint { to: alice, token_id: id(9) }]).await;
    assert_eq!(reason(dup), "ERC721InvalidSender");

    chain.burn(c, id(7)).await.unwrap();
    assert_eq!(reason(chain.mint_batch(c, &[Mint { to: bob, token_id: id(7) }]).await), "TokenAlreadyBurned");
    assert_eq!(chain.total_supply(c).await.unwrap(), 0);
    assert_eq!(
        reason(chain.mint_batch(c, &[Mint { to: Address::ZERO, token_id: id(10) }]).await),
        "ERC721InvalidReceiver"
    );

    // Mismatched arrays (only reachable by a raw call).
    let raw = EventTickets::mintBatchCall { to: vec![alice, bob], tokenIds: vec![id(11)] };
    let minter = chain.roles().minter;
    assert_eq!(reason(chain.send(minter, c, raw).await), "LengthMismatch");
}

/// Every state-changing function of the collection and the factory rejects a caller without
/// the role, and each role can do only its own part.
async fn every_privileged_function_rejects_everyone_else(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let roles = chain.roles();
    let holder = addr("holder");
    chain.mint_batch(c, &[Mint { to: holder, token_id: id(1) }]).await.unwrap();
    let stranger = addr("stranger");
    let unauthorized = "AccessControlUnauthorizedAccount";

    let mint = || EventTickets::mintBatchCall { to: vec![stranger], tokenIds: vec![id(2)] };
    let burn = || EventTickets::burnCall { tokenId: id(1) };
    let attend = || EventTickets::markAttendedCall { tokenIds: vec![id(1)] };
    let policy = || EventTickets::setTransferPolicyCall { locked: false, end: 0 };
    let royalty =
        || EventTickets::setDefaultRoyaltyCall { receiver: stranger, bps: alloy::primitives::Uint::from(9_000u16) };
    let base = || EventTickets::setBaseURICall { baseURI: "https://evil.example/".into() };
    let curi = || EventTickets::setContractURICall { uri: "https://evil.example/c".into() };
    let grant = || EventTickets::grantRoleCall { role: alloy::primitives::keccak256("MINTER_ROLE"), account: stranger };

    for who in [stranger, holder] {
        assert_eq!(reason(chain.send(who, c, mint()).await), unauthorized);
        assert_eq!(reason(chain.send(who, c, burn()).await), unauthorized);
        assert_eq!(reason(chain.send(who, c, attend()).await), unauthorized);
        assert_eq!(reason(chain.send(who, c, policy()).await), unauthorized);
        assert_eq!(reason(chain.send(who, c, royalty()).await), unauthorized);
        assert_eq!(reason(chain.send(who, c, base()).await), unauthorized);
        assert_eq!(reason(chain.send(who, c, curi()).await), unauthorized);
        assert_eq!(reason(chain.send(who, c, grant()).await), unauthorized);
    }
    // Roles do not leak into each other.
    assert_eq!(reason(chain.send(roles.organizer, c, mint()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.custodian, c, mint()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.organizer, c, burn()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.custodian, c, attend()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.minter, c, policy()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.custodian, c, royalty()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.minter, c, base()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.minter, c, curi()).await), unauthorized);
    assert_eq!(reason(chain.send(roles.minter, c, grant()).await), unauthorized);

    // A collection cannot be re-initialised to take over its roles.
    let reinit = EventTickets::initializeCall {
        p: EventTickets::InitParams {
            name: "x".into(),
            symbol: "x".into(),
            baseURI: String::new(),
            contractURI: String::new(),
            admin: stranger,
            minter: stranger,
            custodian: stranger,
            organizer: stranger,
            royaltyReceiver: stranger,
            royaltyBps: alloy::primitives::Uint::from(0u16),
            eventEnd: 0,
            transfersLocked: false,
        },
    };
    assert_eq!(reason(chain.send(stranger, c, reinit.clone()).await), "InvalidInitialization");
    let implementation =
        chain.view(chain.factory(), entrada_chain::contracts::TicketFactory::implementationCall {}).await.unwrap();
    assert_eq!(reason(chain.send(stranger, implementation, reinit).await), "InvalidInitialization");

    // Only the factory's owner creates collections.
    let create = entrada_chain::contracts::TicketFactory::createCollectionCall {
        eventKey: event_key("spam"),
        params: entrada_chain::contracts::ticket_factory::EventTickets::InitParams {
            name: "x".into(),
            symbol: "x".into(),
            baseURI: String::new(),
            contractURI: String::new(),
            admin: stranger,
            minter: stranger,
            custodian: stranger,
            organizer: stranger,
            royaltyReceiver: stranger,
            royaltyBps: alloy::primitives::Uint::from(0u16),
            eventEnd: 0,
            transfersLocked: false,
        },
    };
    assert_eq!(reason(chain.send(stranger, chain.factory(), create).await), "OwnableUnauthorizedAccount");

    // Nothing changed.
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(holder));
    assert_eq!(chain.total_supply(c).await.unwrap(), 1);
    assert!(chain.transfers_locked(c).await.unwrap());
    assert!(!chain.view(c, EventTickets::isAttendedCall { tokenId: id(1) }).await.unwrap());
    // The legitimate roles do succeed.
    chain.mark_attended(c, &[id(1)]).await.unwrap();
    chain.set_transfer_policy(c, false, 0).await.unwrap();
    chain.send(roles.organizer, c, royalty()).await.unwrap();
    chain.send(roles.organizer, c, curi()).await.unwrap();
    chain.send(roles.admin, c, grant()).await.unwrap();
    chain.send(stranger, c, mint()).await.unwrap();
}

/// ERC-2981: the default royalty set at creation is reported for every token, the organizer
/// can change it, and the collection advertises ERC-721, ERC-2981 and ERC-4906.
async fn royalty_info_follows_erc2981(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let r = chain
        .view(c, EventTickets::royaltyInfoCall { tokenId: id(3), salePrice: U256::from(10_000u64) })
        .await
        .unwrap();
    assert_eq!((r.receiver, r.amount), (addr("organizer-payout"), U256::from(500u64)));
    let r = chain
        .view(c, EventTickets::royaltyInfoCall { tokenId: id(99), salePrice: U256::from(4_000u64) })
        .await
        .unwrap();
    assert_eq!(r.amount, U256::from(200u64), "5 % of 4,000");

    let organizer = chain.roles().organizer;
    let set = EventTickets::setDefaultRoyaltyCall {
        receiver: addr("new-payout"),
        bps: alloy::primitives::Uint::from(1_000u16),
    };
    chain.send(organizer, c, set).await.unwrap();
    let r = chain
        .view(c, EventTickets::royaltyInfoCall { tokenId: id(3), salePrice: U256::from(10_000u64) })
        .await
        .unwrap();
    assert_eq!((r.receiver, r.amount), (addr("new-payout"), U256::from(1_000u64)));
    // The same through the client, as the pipeline does when an event's royalty changes.
    chain.set_default_royalty(c, addr("third-payout"), 750).await.unwrap();
    let r = chain
        .view(c, EventTickets::royaltyInfoCall { tokenId: id(3), salePrice: U256::from(10_000u64) })
        .await
        .unwrap();
    assert_eq!((r.receiver, r.amount), (addr("third-payout"), U256::from(750u64)));

    for iface in
        [[0x80, 0xac, 0x58, 0xcd], [0x2a, 0x55, 0x20, 0x5a], [0x49, 0x06, 0x49, 0x06], [0x5b, 0x5e, 0x13, 0x9f]]
    {
        assert!(chain.view(c, EventTickets::supportsInterfaceCall { interfaceId: iface.into() }).await.unwrap());
    }
    assert!(
        !chain
            .view(c, EventTickets::supportsInterfaceCall { interfaceId: [0xde, 0xad, 0xbe, 0xef].into() })
            .await
            .unwrap()
    );
}

/// A burn (refund) removes the token: no owner, lower balance and supply; the custodian may
/// burn too; burning a token that does not exist reverts.
async fn burn_removes_the_token(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let fan = addr("fan");
    chain.mint_batch(c, &[Mint { to: fan, token_id: id(1) }, Mint { to: fan, token_id: id(2) }]).await.unwrap();
    chain.burn(c, id(1)).await.unwrap();
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), None);
    assert_eq!(chain.balance_of(c, fan).await.unwrap(), 1);
    assert_eq!(chain.total_supply(c).await.unwrap(), 1);
    assert!(chain.view(c, EventTickets::isBurnedCall { tokenId: id(1) }).await.unwrap());

    let custodian = chain.roles().custodian;
    chain.send(custodian, c, EventTickets::burnCall { tokenId: id(2) }).await.unwrap();
    assert_eq!(chain.total_supply(c).await.unwrap(), 0);
    assert_eq!(chain.view(c, EventTickets::totalMintedCall {}).await.unwrap(), U256::from(2u64));
    assert_eq!(reason(chain.burn(c, id(1)).await), "ERC721NonexistentToken");
    assert_eq!(reason(chain.burn(c, id(3)).await), "ERC721NonexistentToken");
}

/// `owners_of` answers a page of tokens in one call per 500 ids: each holder, and `None` for
/// an id burned or never minted, exactly as `owner_of` one by one.
async fn owners_of_reads_many_tokens_at_once(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let mints: Vec<Mint> = (1..=3).map(|n| Mint { to: addr(&format!("holder-{n}")), token_id: id(n) }).collect();
    chain.mint_batch(c, &mints).await.unwrap();
    chain.burn(c, id(2)).await.unwrap();
    let ids: Vec<U256> = (0..1_200).map(id).collect();
    let owners = chain.owners_of(c, &ids).await.unwrap();
    assert_eq!(owners.len(), 1_200, "three calls of up to 500 ids");
    assert_eq!(&owners[..5], &[None, Some(addr("holder-1")), None, Some(addr("holder-3")), None]);
    assert!(owners[5..].iter().all(Option::is_none));
    for n in 0..5 {
        assert_eq!(chain.owner_of(c, id(n)).await.unwrap(), owners[n as usize]);
    }
}

/// Checking tickets in switches their token URIs to the attended variant and emits ERC-4906
/// MetadataUpdate, many tokens per transaction; other tokens keep the plain URI. Ids without a
/// token and tokens already attended are skipped, so a repeated mark changes nothing.
async fn attended_mark_changes_metadata(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let fan = addr("fan");
    chain.mint_batch(c, &[Mint { to: fan, token_id: id(5) }, Mint { to: fan, token_id: id(6) }]).await.unwrap();
    let base = "https://tickets.example/api/v1/tokens/1337/night/";
    assert_eq!(chain.token_uri(c, id(5)).await.unwrap(), format!("{base}5"));
    let receipt = chain.mark_attended(c, &[id(5), id(77), id(5)]).await.unwrap();
    assert_eq!(receipt.logs.len(), 2, "Attended and MetadataUpdate, once, for the one token");
    assert_eq!(chain.token_uri(c, id(5)).await.unwrap(), format!("{base}5/attended"));
    assert_eq!(chain.token_uri(c, id(6)).await.unwrap(), format!("{base}6"));
    assert_eq!(reason(chain.token_uri(c, id(77)).await), "ERC721NonexistentToken");
    let receipt = chain.mark_attended(c, &[id(5), id(6)]).await.unwrap();
    assert_eq!(receipt.logs.len(), 2, "only the token not yet attended");
    assert_eq!(chain.token_uri(c, id(6)).await.unwrap(), format!("{base}6/attended"));
    let attended = chain.view(c, EventTickets::isAttendedCall { tokenId: id(6) }).await.unwrap();
    assert!(attended);
    assert!(chain.mark_attended(c, &[id(77)]).await.unwrap().logs.is_empty());
}

/// The chain's state lives in the data directory: after reopening it, the factory, the
/// collection, owners, receipts and the block height are all still there, and the chain goes on.
#[tokio::test]
async fn state_survives_reopening_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(datetime!(2030-06-01 18:00 UTC));
    let shared: SharedClock = Arc::new(clock.clone());
    let (factory, c, receipt, height) = {
        let chain = EmbeddedChain::open(dir.path(), shared.clone()).unwrap();
        let c = collection(&chain, true).await;
        let receipt = chain
            .mint_batch(c, &[Mint { to: addr("a"), token_id: id(1) }, Mint { to: addr("b"), token_id: id(2) }])
            .await
            .unwrap();
        (chain.factory(), c, receipt, chain.block_number().await.unwrap())
    };
    let chain = EmbeddedChain::open(dir.path(), shared.clone()).unwrap();
    assert_eq!(chain.factory(), factory, "no second factory at restart");
    assert_eq!(chain.block_number().await.unwrap(), height);
    assert_eq!(chain.collection_of(event_key("night")).await.unwrap(), Some(c));
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(addr("a")));
    assert_eq!(chain.owner_of(c, id(2)).await.unwrap(), Some(addr("b")));
    assert_eq!(chain.receipt(receipt.tx_hash).await.unwrap(), Some(receipt));
    assert_eq!(reason(chain.mint_batch(c, &[Mint { to: addr("c"), token_id: id(1) }]).await), "ERC721InvalidSender");
    chain.mint_batch(c, &[Mint { to: addr("c"), token_id: id(3) }]).await.unwrap();
    drop(chain);
    let chain = EmbeddedChain::open(dir.path(), shared).unwrap();
    assert_eq!(chain.total_supply(c).await.unwrap(), 3);

    // A damaged state file is an error, not a silently empty chain.
    std::fs::write(dir.path().join("chain-state.json"), b"{not json").unwrap();
    assert!(matches!(EmbeddedChain::open(dir.path(), Arc::new(clock)), Err(ChainError::State(_))));
}

fn journal_lines(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("chain-journal.jsonl")).map_or(0, |s| s.lines().count())
}

/// Blocks are journaled, not rewritten: reopening replays the journal onto the snapshot; a
/// torn last line (a crash in the middle of an append) is dropped and the chain goes on from
/// the block before it, while a damaged line in the middle is an error.
#[tokio::test]
async fn reopening_replays_the_journal_and_drops_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let shared: SharedClock = Arc::new(ManualClock::new(datetime!(2030-06-01 18:00 UTC)));
    let chain = EmbeddedChain::open(dir.path(), shared.clone()).unwrap();
    let snapshot = std::fs::read(dir.path().join("chain-state.json")).unwrap();
    let c = collection(&chain, true).await;
    chain.mint_batch(c, &[Mint { to: addr("a"), token_id: id(1) }]).await.unwrap();
    let height = chain.block_number().await.unwrap();
    drop(chain);
    assert_eq!(std::fs::read(dir.path().join("chain-state.json")).unwrap(), snapshot, "the snapshot was not rewritten");
    assert_eq!(journal_lines(dir.path()), 2, "one line per block");

    let journal = dir.path().join("chain-journal.jsonl");
    let mut torn = std::fs::read(&journal).unwrap();
    torn.extend_from_slice(br#"{"block":4,"time":19065"#);
    std::fs::write(&journal, &torn).unwrap();
    let chain = EmbeddedChain::open(dir.path(), shared.clone()).unwrap();
    assert_eq!(chain.block_number().await.unwrap(), height);
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(addr("a")));
    chain.mint_batch(c, &[Mint { to: addr("b"), token_id: id(2) }]).await.unwrap();
    drop(chain);
    let chain = EmbeddedChain::open(dir.path(), shared.clone()).unwrap();
    assert_eq!(chain.total_supply(c).await.unwrap(), 2, "the block after the torn line is replayed too");
    drop(chain);

    let text = std::fs::read_to_string(&journal).unwrap();
    let damaged = text.replacen("\"block\":3", "\"block\":x", 1);
    assert_ne!(damaged, text);
    std::fs::write(&journal, damaged).unwrap();
    assert!(matches!(EmbeddedChain::open(dir.path(), shared.clone()), Err(ChainError::State(_))));

    // A journal whose snapshot is gone cannot be replayed onto a new chain: an error, not a
    // fresh chain that silently forgets the tokens.
    std::fs::write(&journal, text).unwrap();
    std::fs::remove_file(dir.path().join("chain-state.json")).unwrap();
    assert!(matches!(EmbeddedChain::open(dir.path(), shared), Err(ChainError::State(_))));
}

/// After `COMPACT_AFTER_BLOCKS` blocks the snapshot is rewritten and the journal emptied; a
/// journal left behind by a crash between the two holds only blocks the snapshot already has,
/// which are skipped, so nothing is applied twice.
#[tokio::test]
async fn the_journal_is_compacted_into_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let shared: SharedClock = Arc::new(ManualClock::new(datetime!(2030-06-01 18:00 UTC)));
    let chain = EmbeddedChain::open(dir.path(), shared.clone()).unwrap();
    let c = collection(&chain, true).await;
    let mut before_compaction = Vec::new();
    for n in 1..=entrada_chain::embedded::COMPACT_AFTER_BLOCKS + 5 {
        if journal_lines(dir.path()) as u64 == entrada_chain::embedded::COMPACT_AFTER_BLOCKS - 2 {
            before_compaction = std::fs::read(dir.path().join("chain-journal.jsonl")).unwrap();
        }
        // Cheap blocks: a plain call to an account with no code.
        chain.transact_as(addr("someone"), addr(&format!("nobody{n}")), Default::default()).await.unwrap();
    }
    chain.mint_batch(c, &[Mint { to: addr("a"), token_id: id(1) }]).await.unwrap();
    let height = chain.block_number().await.unwrap();
    drop(chain);
    assert!(journal_lines(dir.path()) < 10, "compacted: {} lines", journal_lines(dir.path()));

    // A crash after the snapshot's rename but before the journal was emptied.
    let mut stale = before_compaction;
    assert!(!stale.is_empty());
    stale.extend(std::fs::read(dir.path().join("chain-journal.jsonl")).unwrap());
    std::fs::write(dir.path().join("chain-journal.jsonl"), stale).unwrap();
    let chain = EmbeddedChain::open(dir.path(), shared).unwrap();
    assert_eq!(chain.block_number().await.unwrap(), height);
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(addr("a")));
    assert_eq!(chain.total_supply(c).await.unwrap(), 1);
}

/// A hostile receiver that re-enters the collection from `onERC721Received` cannot mint,
/// burn, or move a token while transfers are locked; once transfers are free it can only do
/// what any holder may (move its own token), and the books stay consistent either way.
async fn reentrancy_through_on_erc721_received_cannot_break_invariants(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let roles = chain.roles();
    let fan = addr("fan");
    let accomplice = addr("accomplice");
    chain.mint_batch(c, &[Mint { to: fan, token_id: id(1) }, Mint { to: fan, token_id: id(2) }]).await.unwrap();
    let mut initcode = ReentrantReceiver::BYTECODE.to_vec();
    initcode.extend(ReentrantReceiver::constructorCall { accomplice_: accomplice }.abi_encode());
    let attacker = chain.deploy_as(addr("deployer"), initcode.into()).await.unwrap().contract_address.unwrap();

    // Locked: the custodian delivers a resold ticket to the attacker contract.
    let safe = |from, to, n| EventTickets::safeTransferFrom_0Call { from, to, tokenId: id(n) };
    chain.send(roles.custodian, c, safe(fan, attacker, 1)).await.unwrap();
    assert_eq!(chain.view(attacker, ReentrantReceiver::receivedCall {}).await.unwrap(), U256::from(1u64));
    assert!(!chain.view(attacker, ReentrantReceiver::mintSucceededCall {}).await.unwrap());
    assert!(!chain.view(attacker, ReentrantReceiver::transferSucceededCall {}).await.unwrap());
    assert!(!chain.view(attacker, ReentrantReceiver::burnSucceededCall {}).await.unwrap());
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(attacker));
    assert_eq!(chain.owner_of(c, id(1_000_001)).await.unwrap(), None);
    assert_eq!(chain.total_supply(c).await.unwrap(), 2);

    // Unlocked: the fan sends the other ticket there themself.
    chain.set_transfer_policy(c, false, 0).await.unwrap();
    chain.send(fan, c, safe(fan, attacker, 2)).await.unwrap();
    assert!(!chain.view(attacker, ReentrantReceiver::mintSucceededCall {}).await.unwrap());
    assert!(!chain.view(attacker, ReentrantReceiver::burnSucceededCall {}).await.unwrap());
    assert!(
        chain.view(attacker, ReentrantReceiver::transferSucceededCall {}).await.unwrap(),
        "an owner may pass its own token on"
    );
    assert_eq!(chain.owner_of(c, id(2)).await.unwrap(), Some(accomplice));
    assert_eq!(chain.owner_of(c, id(1_000_002)).await.unwrap(), None);
    assert_eq!(chain.total_supply(c).await.unwrap(), 2);
    let balances = chain.balance_of(c, fan).await.unwrap()
        + chain.balance_of(c, attacker).await.unwrap()
        + chain.balance_of(c, accomplice).await.unwrap();
    assert_eq!(balances, 2, "balances add up to the supply");
    // A selector check on the raw call shape, so a changed ABI fails loudly here.
    assert_eq!(EventTickets::safeTransferFrom_0Call::SIGNATURE, "safeTransferFrom(address,address,uint256)");
}
