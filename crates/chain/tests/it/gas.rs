//! Gas per ticket minted to a new holder, beside a plain OpenZeppelin ERC-721 measured in the
//! same run and the ~47,000-gas floor (two cold storage writes and a Transfer log).
//! Print the table with `cargo test -p entrada-chain --test it gas -- --nocapture`.

use entrada_chain::contracts::test_contracts::BaselineERC721;
use entrada_chain::{ChainClient, Mint};

use crate::{addr, chain, event_key, id, params};

/// The floor the brief measures against.
const REFERENCE: u64 = 47_000;

/// A batch mint costs within 3 % of the ~47,000-gas floor per ticket to a new holder once
/// the transaction's fixed cost is shared by 100 tickets, and no more than a plain
/// OpenZeppelin mint loop plus a small margin at every batch size.
#[tokio::test]
async fn gas_per_ticket_by_batch_size() {
    let (chain, _) = chain();
    let deployer = addr("gas-deployer");
    let baseline = chain.deploy_as(deployer, BaselineERC721::BYTECODE.clone()).await.unwrap().contract_address.unwrap();

    println!(
        "\n| tickets per tx | EventTickets.mintBatch gas/ticket | OZ ERC721 _mint loop gas/ticket | reference | vs reference |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut next = 0u64;
    let mut per_ticket_at_100 = 0;
    for n in [1u64, 10, 100, 500] {
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
        let vs = (ours as f64 / REFERENCE as f64 - 1.0) * 100.0;
        println!("| {n} | {ours} | {base} | {REFERENCE} | {vs:+.1} % |");
        // Per transaction: the role check, the supply counter and the first burned-id word
        // (three cold slots); per ticket: a warm bitmap read.
        assert!(ours * n <= base * n + 13_000 + 400 * n, "{n}: {ours} vs baseline {base}");
        if n == 100 {
            per_ticket_at_100 = ours;
        }
    }
    assert!(
        per_ticket_at_100 as f64 <= REFERENCE as f64 * 1.03,
        "100-ticket batch costs {per_ticket_at_100} gas per ticket"
    );
}
