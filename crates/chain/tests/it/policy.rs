//! The transfer policy: while the event is upcoming only the custodian moves tokens. On both
//! chains; time moves with the manual clock or anvil's `evm_increaseTime`.

use entrada_chain::Mint;
use entrada_chain::contracts::EventTickets;
use time::Duration;

use crate::harness::TestChain;
use crate::{START, addr, collection, id, reason};

crate::on_both_chains!(holder_cannot_transfer_while_locked_custodian_can, transfers_are_free_after_the_event_ends);

/// While transfers are locked a holder can neither transfer nor safe-transfer their own
/// ticket, nor can an approved friend; the custodian can move it for them; once the organizer
/// unlocks, the holder moves it freely.
async fn holder_cannot_transfer_while_locked_custodian_can(chain: TestChain) {
    let c = collection(&*chain, true).await;
    let (alice, bob, carol) = (addr("alice"), addr("bob"), addr("carol"));
    chain.mint_batch(c, &[Mint { to: alice, token_id: id(1) }, Mint { to: alice, token_id: id(2) }]).await.unwrap();
    assert!(chain.transfers_locked(c).await.unwrap());

    let plain = |from, to, n| EventTickets::transferFromCall { from, to, tokenId: id(n) };
    let safe = |from, to, n| EventTickets::safeTransferFrom_0Call { from, to, tokenId: id(n) };
    assert_eq!(reason(chain.send(alice, c, plain(alice, bob, 1)).await), "TransfersLocked");
    assert_eq!(reason(chain.send(alice, c, safe(alice, bob, 1)).await), "TransfersLocked");
    // Approval is allowed (it moves nothing) but does not open a way around the lock.
    chain.send(alice, c, EventTickets::approveCall { to: carol, tokenId: id(1) }).await.unwrap();
    chain.send(alice, c, EventTickets::setApprovalForAllCall { operator: carol, approved: true }).await.unwrap();
    assert_eq!(reason(chain.send(carol, c, plain(alice, carol, 1)).await), "TransfersLocked");
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(alice));

    // The custodian (market operator) moves it without a per-holder approval.
    chain.transfer(c, alice, bob, id(1)).await.unwrap();
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(bob));
    // …but only from the real owner.
    assert_eq!(reason(chain.transfer(c, alice, carol, id(1)).await), "ERC721IncorrectOwner");

    chain.set_transfer_policy(c, false, START + 86_400).await.unwrap();
    assert!(!chain.transfers_locked(c).await.unwrap());
    chain.send(bob, c, plain(bob, carol, 1)).await.unwrap();
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(carol));
    // Unlocked is plain ERC-721: a stranger still cannot take someone else's token.
    assert_eq!(reason(chain.send(bob, c, plain(alice, bob, 2)).await), "ERC721InsufficientApproval");
}

/// After the event's end the lock no longer applies, without anyone changing the flag.
async fn transfers_are_free_after_the_event_ends(chain: TestChain) {
    let c = collection(&*chain, true).await; // ends at START + 1 day
    let (alice, bob) = (addr("alice"), addr("bob"));
    chain.mint_batch(c, &[Mint { to: alice, token_id: id(1) }]).await.unwrap();
    let plain = EventTickets::transferFromCall { from: alice, to: bob, tokenId: id(1) };
    assert_eq!(reason(chain.send(alice, c, plain.clone()).await), "TransfersLocked");

    chain.advance(Duration::hours(23)).await;
    assert!(chain.transfers_locked(c).await.unwrap());
    chain.advance(Duration::hours(2)).await;
    assert!(!chain.transfers_locked(c).await.unwrap());
    chain.send(alice, c, plain).await.unwrap();
    assert_eq!(chain.owner_of(c, id(1)).await.unwrap(), Some(bob));

    // The organizer can lock again with a later end (e.g. a postponed event).
    chain.set_transfer_policy(c, true, START + 10 * 86_400).await.unwrap();
    let back = EventTickets::transferFromCall { from: bob, to: alice, tokenId: id(1) };
    assert_eq!(reason(chain.send(bob, c, back).await), "TransfersLocked");
}
