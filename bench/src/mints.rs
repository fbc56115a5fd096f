//! `entrada-bench mints`: tickets minted per second through `ChainClient::mint_batch`, by
//! batch size, on the embedded chain and on anvil over JSON-RPC (the pinned npm binary,
//! started on 127.0.0.1 and killed when done), with gas per ticket from the receipts.
//!
//! Each batch size gets its own collection; every ticket goes to a new holder, as in the
//! gas benchmark. Transactions are sent with `--in-flight` of them outstanding at once (one
//! minter key: the client hands out consecutive nonces), and the clock runs from the first
//! send to the last confirmed receipt. At the end every collection's supply is checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entrada_chain::rpc::anvil::{self, Anvil};
use entrada_chain::{
    Address, B256, ChainClient, CollectionParams, EmbeddedChain, Mint, RoleKeys, RpcChain, RpcConfig, U256,
};
use entrada_primitives::{Secret, SharedClock, SystemClock};

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum ChainKind {
    Embedded,
    Anvil,
    Both,
}

#[derive(clap::Args)]
pub struct MintArgs {
    #[arg(long, value_enum, default_value = "both")]
    chain: ChainKind,
    /// Tickets minted per batch size.
    #[arg(long, default_value_t = 5_000)]
    tickets: u64,
    /// Batch sizes (tickets per transaction).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500")]
    batch: Vec<u64>,
    /// Transactions outstanding at once.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    deadline: u64,
}

pub async fn mints(a: MintArgs) {
    let deadline = Instant::now() + Duration::from_secs(a.deadline);
    println!("tickets per batch size: {}, transactions in flight: {}", a.tickets, a.in_flight);
    println!("\n| chain | tickets per tx | transactions | seconds | tickets/s | gas/ticket |");
    println!("|---|---:|---:|---:|---:|---:|");
    if matches!(a.chain, ChainKind::Embedded | ChainKind::Both) {
        let clock: SharedClock = Arc::new(SystemClock);
        let chain: Arc<dyn ChainClient> = Arc::new(EmbeddedChain::in_memory(clock).expect("embedded chain"));
        run("embedded", chain, &a.batch, &a, deadline).await;
    }
    if matches!(a.chain, ChainKind::Anvil | ChainKind::Both) {
        // A fresh node per batch size: anvil slows down as its in-memory history grows (by
        // thousands of transactions), which would bias the sizes measured last.
        for &size in &a.batch {
            let node = Anvil::spawn(&[]).unwrap_or_else(|e| panic!("{e}"));
            let k = |i: usize| Secret::new(anvil::DEV_KEYS[i].to_owned());
            let keys = RoleKeys { admin: k(0), minter: k(1), custodian: k(2), organizer: k(3) };
            let mut cfg = RpcConfig::new(node.url(), anvil::CHAIN_ID, keys);
            // A local node answers at once; poll faster than a production client would.
            cfg.poll_interval = Duration::from_millis(2);
            let chain = RpcChain::connect(cfg).await.expect("connect to anvil");
            run("anvil (JSON-RPC)", Arc::new(chain), &[size], &a, deadline).await;
            drop(node);
        }
    }
}

async fn run(label: &str, chain: Arc<dyn ChainClient>, sizes: &[u64], a: &MintArgs, deadline: Instant) {
    chain.ensure_factory().await.expect("factory");
    for &size in sizes {
        let size = size.clamp(1, 500);
        let key = B256::from(U256::from(size) + U256::from(1u64 << 40));
        let params = CollectionParams {
            name: "Bench".into(),
            symbol: "BENCH".into(),
            base_uri: "https://tickets.example/t/".into(),
            contract_uri: "https://tickets.example/c".into(),
            royalty_receiver: Address::repeat_byte(0x11),
            royalty_bps: 500,
            event_end: 0,
            transfers_locked: true,
        };
        let (collection, _) = chain.create_collection(key, &params).await.expect("collection");
        let batches: Vec<Vec<Mint>> = (0..a.tickets.div_ceil(size))
            .map(|b| {
                (b * size..((b + 1) * size).min(a.tickets))
                    .map(|i| Mint { to: holder(size, i), token_id: U256::from(1_000 + i) })
                    .collect()
            })
            .collect();
        let txs = batches.len();
        let started = Instant::now();
        let mut gas = 0u64;
        let mut pending = tokio::task::JoinSet::new();
        let mut queue = batches.into_iter();
        loop {
            while pending.len() < a.in_flight.max(1) {
                let Some(batch) = queue.next() else { break };
                let chain = chain.clone();
                pending.spawn(async move { chain.mint_batch(collection, &batch).await });
            }
            let Some(done) = pending.join_next().await else { break };
            gas += done.expect("mint task").expect("mint").gas_used;
            assert!(Instant::now() < deadline, "deadline reached");
        }
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(chain.total_supply(collection).await.unwrap(), a.tickets, "every ticket minted once");
        println!("| {label} | {size} | {txs} | {secs:.2} | {:.0} | {} |", a.tickets as f64 / secs, gas / a.tickets);
    }
}

/// A fresh holder per ticket and batch size, with no zero bytes in its address (like a hashed
/// one, so calldata costs what it costs for real addresses).
fn holder(size: u64, i: u64) -> Address {
    let mut x = size.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i;
    let mut bytes = [0u8; 20];
    for b in &mut bytes {
        // splitmix64 steps; a zero byte becomes 1.
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        *b = ((z ^ (z >> 31)) as u8).max(1);
    }
    Address::from(bytes)
}
