//! Gas per ticket minted to a new holder, beside a plain OpenZeppelin ERC-721 measured in the
//! same run and the ~47,000-gas floor (two cold storage writes and a Transfer log), on the
//! embedded chain and on anvil.
//! Print the tables with `cargo test -p entrada-chain --test it gas -- --nocapture`.

use entrada_chain::Mint;
use entrada_chain::contracts::test_contracts::BaselineERC721;

use crate::harness::TestChain;
use crate::{addr, event_key, id, params};

/// The floor the brief measures against.
const REFERENCE: u64 = 47_000;

/// Batch sizes measured.
const SIZES: [u64; 4] = [1, 10, 100, 500];

/// Per batch size: (tickets per tx, our gas per ticket, OpenZeppelin mint loop gas per ticket).
async fn measure(chain: &TestChain) -> Vec<(u64, u64, u64)> {
    let deployer = addr("gas-deployer");
    let baseline = chain.deploy_as(deployer, BaselineERC721::BYTECODE.clone()).await.unwrap().contract_address.unwrap();
    let mut rows = Vec::new();
    let mut next = 0u64;
    for n in SIZES {
        let (c, _) = chain.create_collection(event_key(&format!("gas-{n}")), &params(true)).await.unwrap();
        let mints: Vec<Mint> = (0..n)
            .map(|i| {
                next += 1;
                Mint { to: addr(&format!("gas-holder-{next}")), token_id: id(1_000 + i) }
            })
            .collect();
        let ours = chain.mint_batch(c, &mints).await.unwrap().gas_used / n;

        let to = (0..n).map(|i| addr(&format!("gas-base-holder-{n}-{i}"))).collect();
        let ids = (0..n).map(|i| id(n * 10_000 + i)).collect();
        let base =
            chain.send(deployer, baseline, BaselineERC721::mintLoopCall { to, tokenIds: ids }).await.unwrap().gas_used
                / n;
        rows.push((n, ours, base));
    }
    rows
}

fn print(title: &str, rows: &[(u64, u64, u64)]) {
    println!("\n{title}");
    println!(
        "| tickets per tx | EventTickets.mintBatch gas/ticket | OZ ERC721 _mint loop gas/ticket | reference | vs reference |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (n, ours, base) in rows {
        let vs = (*ours as f64 / REFERENCE as f64 - 1.0) * 100.0;
        println!("| {n} | {ours} | {base} | {REFERENCE} | {vs:+.1} % |");
    }
}

/// A batch mint costs within 3 % of the ~47,000-gas floor per ticket to a new holder once
/// the transaction's fixed cost is shared by 100 tickets, and no more than a plain
/// OpenZeppelin mint loop plus a small margin at every batch size.
#[tokio::test]
async fn gas_per_ticket_by_batch_size() {
    let rows = measure(&TestChain::embedded().await).await;
    print("embedded chain", &rows);
    for &(n, ours, base) in &rows {
        // Per transaction: the role check, the supply counter and the first burned-id word
        // (three cold slots); per ticket: a warm bitmap read.
        assert!(ours * n <= base * n + 13_000 + 400 * n, "{n}: {ours} vs baseline {base}");
        if n == 100 {
            assert!(ours as f64 <= REFERENCE as f64 * 1.03, "100-ticket batch costs {ours} gas per ticket");
        }
    }
}

/// The same mints cost exactly the same gas on anvil as on the embedded chain (same bytecode,
/// same Prague rules): the embedded figures are the figures of a real node.
#[tokio::test]
async fn gas_on_anvil_equals_the_embedded_chain() {
    let embedded = measure(&TestChain::embedded().await).await;
    let anvil = measure(&TestChain::anvil().await).await;
    print("anvil (JSON-RPC)", &anvil);
    assert_eq!(anvil, embedded);
}

/// Attended marks share a transaction like mints: per token, a bitmap bit (one storage word
/// per 256 serials) and two logs; the 21,000-gas transaction cost and the role check are paid
/// once per batch. A gate's batch of 100 costs a small fraction of 100 single marks.
#[tokio::test]
async fn gas_per_attended_mark_by_batch_size() {
    let chain = TestChain::embedded().await;
    let (c, _) = chain.create_collection(event_key("gas-attend"), &params(true)).await.unwrap();
    let total: u64 = SIZES.iter().sum();
    let mints: Vec<Mint> = (0..total).map(|i| Mint { to: addr(&format!("fan-{i}")), token_id: id(i) }).collect();
    for chunk in mints.chunks(500) {
        chain.mint_batch(c, chunk).await.unwrap();
    }
    println!("\n| tokens per tx | markAttended gas/token |\n|---:|---:|");
    let mut next = 0u64;
    let mut per_token = Vec::new();
    for n in SIZES {
        let ids: Vec<_> = (next..next + n).map(id).collect();
        next += n;
        let gas = chain.mark_attended(c, &ids).await.unwrap().gas_used / n;
        println!("| {n} | {gas} |");
        per_token.push(gas);
    }
    assert!(per_token.windows(2).all(|w| w[1] < w[0]), "cheaper per token as batches grow: {per_token:?}");
    assert!(per_token[2] * 5 < per_token[0], "a batch of 100 costs under a fifth per token: {per_token:?}");
}
