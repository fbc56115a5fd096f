//! Property tests over random call sequences against a model of what the contract should do.

use std::collections::{BTreeMap, BTreeSet};

use entrada_chain::contracts::EventTickets;
use entrada_chain::{Address, ChainClient, Mint};
use proptest::prelude::*;

use crate::{START, addr, chain, collection, id};

const HOLDERS: u8 = 4;
const IDS: u8 = 12;

#[derive(Debug, Clone)]
enum Who {
    Owner,
    Custodian,
    Stranger,
}

#[derive(Debug, Clone)]
enum Op {
    Mint(Vec<(u8, u8)>),
    Transfer { by: Who, token: u8, to: u8 },
    Burn(u8),
    SetLocked(bool),
    Attend(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec((0..HOLDERS, 0..IDS), 1..5).prop_map(Op::Mint),
        4 => (prop_oneof![Just(Who::Owner), Just(Who::Custodian), Just(Who::Stranger)], 0..IDS, 0..HOLDERS)
            .prop_map(|(by, token, to)| Op::Transfer { by, token, to }),
        1 => (0..IDS).prop_map(Op::Burn),
        1 => any::<bool>().prop_map(Op::SetLocked),
        1 => (0..IDS).prop_map(Op::Attend),
    ]
}

fn fail(e: entrada_chain::ChainError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn holder(i: u8) -> Address {
    addr(&format!("prop-holder-{i}"))
}

/// What the model says should exist.
#[derive(Default)]
struct Model {
    owners: BTreeMap<u8, u8>,
    burned: BTreeSet<u8>,
    locked: bool,
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (chain, _) = chain();
    let c = collection(&chain, true).await;
    let mut m = Model { locked: true, ..Model::default() };
    let stranger = addr("prop-stranger");
    for (step, op) in ops.iter().enumerate() {
        let (expected, outcome) = match op {
            Op::Mint(list) => {
                let ids: BTreeSet<u8> = list.iter().map(|(_, t)| *t).collect();
                let ok =
                    ids.len() == list.len() && ids.iter().all(|t| !m.owners.contains_key(t) && !m.burned.contains(t));
                let mints: Vec<Mint> =
                    list.iter().map(|(h, t)| Mint { to: holder(*h), token_id: id(u64::from(*t)) }).collect();
                let r = chain.mint_batch(c, &mints).await;
                if ok && r.is_ok() {
                    for (h, t) in list {
                        m.owners.insert(*t, *h);
                    }
                }
                (ok, r.map(|_| ()))
            }
            Op::Transfer { by, token, to } => {
                let owner = m.owners.get(token).copied();
                let from = holder(owner.unwrap_or(0));
                let call = EventTickets::transferFromCall { from, to: holder(*to), tokenId: id(u64::from(*token)) };
                let (ok, r) = match by {
                    // The policy under test: nobody but the custodian moves a token while locked.
                    Who::Owner => (owner.is_some() && !m.locked, chain.send(from, c, call).await),
                    Who::Custodian => {
                        (owner.is_some(), chain.transfer(c, from, holder(*to), id(u64::from(*token))).await)
                    }
                    Who::Stranger => (false, chain.send(stranger, c, call).await),
                };
                if ok && r.is_ok() {
                    m.owners.insert(*token, *to);
                }
                (ok, r.map(|_| ()))
            }
            Op::Burn(token) => {
                let ok = m.owners.contains_key(token);
                let r = chain.burn(c, id(u64::from(*token))).await;
                if ok && r.is_ok() {
                    m.owners.remove(token);
                    m.burned.insert(*token);
                }
                (ok, r.map(|_| ()))
            }
            Op::SetLocked(locked) => {
                m.locked = *locked;
                (true, chain.set_transfer_policy(c, *locked, START + 86_400).await.map(|_| ()))
            }
            // Ids without a token are skipped, never an error.
            Op::Attend(token) => (true, chain.mark_attended(c, &[id(u64::from(*token))]).await.map(|_| ())),
        };
        prop_assert_eq!(expected, outcome.is_ok(), "step {} {:?}: {:?}", step, op, outcome);
    }
    prop_assert_eq!(chain.total_supply(c).await.map_err(fail)?, m.owners.len() as u64);
    let minted = chain.view(c, EventTickets::totalMintedCall {}).await.map_err(fail)?;
    prop_assert_eq!(minted, alloy::primitives::U256::from(m.owners.len() + m.burned.len()));
    for t in 0..IDS {
        let on_chain = chain.owner_of(c, id(u64::from(t))).await.map_err(fail)?;
        prop_assert_eq!(on_chain, m.owners.get(&t).map(|h| holder(*h)), "token {}", t);
    }
    for h in 0..HOLDERS {
        let expected = m.owners.values().filter(|o| **o == h).count() as u64;
        prop_assert_eq!(chain.balance_of(c, holder(h)).await.map_err(fail)?, expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Over random sequences of mints, transfers by owners, the custodian and strangers, burns,
    /// lock changes and check-ins: every call succeeds exactly when the model says it may (so
    /// no transfer gets past the policy), supply equals the distinct tokens minted and not
    /// burned, and every owner and balance matches the model.
    #[test]
    fn random_call_sequences_keep_supply_and_policy(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
