//! The `chain.tokens` consumer: turns ticket events into token rows and operations, inside the
//! dispatcher's transaction, with no chain call (the chain may be down; the sale must not
//! wait for it).
//!
//! Idempotent: token rows are keyed by ticket id and operations by (outbox event, ticket), so
//! a replay inserts nothing new.

use alloy::primitives::Address;
use entrada_primitives::ids::{EventId, TicketId, UserId};
use entrada_storage::events::{DomainEvent, consumers};
use entrada_storage::outbox::{Consumer, Envelope, anyhow_lite};
use entrada_storage::{Db, Fetch, Script, Tx};
use std::collections::HashSet;
use std::str::FromStr;

use super::domain::{OpKind, address_text, event_key};
use super::store;

/// Records what the chain should become; the worker makes it so.
pub struct TokensConsumer {
    network: String,
    chain_id: u64,
}

impl TokensConsumer {
    pub fn new(network: String, chain_id: u64) -> Self {
        Self { network, chain_id }
    }

    /// Token rows for the tickets of one or more issue events (`(occurred at, tickets)`), in
    /// one read and one round trip of writes.
    async fn issued(&self, tx: &mut Tx, issues: &[(i64, &[TicketId])]) -> Result<(), sqlx::Error> {
        let script = self.plan_issued(tx, issues).await?;
        script.run(tx).await?;
        Ok(())
    }

    /// The writes of [`Self::issued`], from a read on `on`.
    ///
    /// The ticket rows, not the event, say who holds the ticket now and whether it is still
    /// valid: an issue handled after a gift or a refund mints to the right holder, or not at
    /// all. Read outside the writer (a planned batch), a gift or refund committed after the
    /// read is still seen in order: its own event follows the issue in this consumer's queue.
    async fn plan_issued(&self, on: &mut impl Fetch, issues: &[(i64, &[TicketId])]) -> Result<Script, sqlx::Error> {
        let ids: Vec<TicketId> = issues.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let found = store::issued_tickets(on, &ids).await?;
        let mut script = Script::new(on.backend());
        let mut collections = HashSet::new();
        for (now, tickets) in issues {
            for id in *tickets {
                let Some(t) = found.get(&id.to_db()) else { continue };
                if collections.insert(t.event_id.clone()) {
                    let key = format!("{:#x}", event_key(&t.event_id));
                    store::push_collection_row(&mut script, &t.event_id, &self.network, self.chain_id, &key, *now);
                }
                store::push_token(&mut script, t, *now);
            }
        }
        Ok(script)
    }

    /// The issue events of a batch made only of them (the usual batch during a sale).
    fn issues(events: &[Envelope]) -> Option<Vec<(i64, &[TicketId])>> {
        events
            .iter()
            .map(|env| match &env.event {
                DomainEvent::TicketsIssued { tickets, .. } => Some((env.occurred_at_ms, tickets.as_slice())),
                _ => None,
            })
            .collect()
    }

    async fn cancelled(
        &self,
        tx: &mut Tx,
        env: &Envelope,
        event: EventId,
        tickets: &[TicketId],
    ) -> Result<(), sqlx::Error> {
        let now = env.occurred_at_ms;
        for t in tickets {
            let ticket = t.to_db();
            match store::token_state(tx, &ticket).await?.as_deref() {
                // Not minted yet: it never will be.
                Some("pending") => {
                    store::burn_unminted(tx, &ticket, now).await?;
                }
                Some("submitted" | "confirmed") => {
                    let source = format!("outbox:{}:{ticket}", env.id);
                    store::insert_op(tx, &ticket, &event.to_db(), OpKind::Burn.as_str(), None, None, &source, now)
                        .await?;
                }
                // Already burned or failed, or its issue not seen yet (the issue then reads
                // the ticket as cancelled and never mints it).
                _ => {}
            }
        }
        Ok(())
    }

    /// A new holder (`to_user`) or an external address (`to_address`).
    async fn moved(
        &self,
        tx: &mut Tx,
        env: &Envelope,
        ticket: TicketId,
        event: EventId,
        to_user: Option<UserId>,
        to_address: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let now = env.occurred_at_ms;
        let ticket = ticket.to_db();
        let to_user = to_user.map(|u| u.to_db());
        let state = store::token_state(tx, &ticket).await?;
        let Some(state) = state else { return Ok(()) };
        if state == "burned" || state == "failed" {
            return Ok(());
        }
        store::set_intended_owner(tx, &ticket, to_user.as_deref(), to_address, now).await?;
        // A pending mint simply goes to the new owner (the worker's claim checks the owner it
        // resolved is still the intended one); a mint in flight or done needs a transfer.
        if state != "pending" {
            let source = format!("outbox:{}:{ticket}", env.id);
            store::insert_op(
                tx,
                &ticket,
                &event.to_db(),
                OpKind::Transfer.as_str(),
                to_user.as_deref(),
                to_address,
                &source,
                now,
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Consumer for TokensConsumer {
    fn name(&self) -> &'static str {
        consumers::CHAIN_TOKENS
    }

    fn plans(&self) -> bool {
        true
    }

    /// A batch of issues alone is planned from a read on a reader: its token rows insert
    /// nothing twice (keyed by ticket), so they need no guard. Other batches go through
    /// `handle_batch`.
    async fn plan_batch(&self, db: &Db, events: &[Envelope]) -> Result<Option<Script>, anyhow_lite::Error> {
        let Some(issues) = Self::issues(events) else { return Ok(None) };
        Ok(Some(self.plan_issued(&mut db.read(), &issues).await?))
    }

    /// A batch of issues alone (the usual batch during a sale) is recorded in two round trips.
    async fn handle_batch(&self, tx: &mut Tx, events: &[Envelope]) -> Result<(), anyhow_lite::Error> {
        if let Some(issues) = Self::issues(events) {
            self.issued(tx, &issues).await?;
            return Ok(());
        }
        for env in events {
            self.handle(tx, env).await?;
        }
        Ok(())
    }

    async fn handle(&self, tx: &mut Tx, env: &Envelope) -> Result<(), anyhow_lite::Error> {
        let now = env.occurred_at_ms;
        match &env.event {
            DomainEvent::TicketsIssued { tickets, .. } => self.issued(tx, &[(now, tickets)]).await?,
            DomainEvent::TicketsCancelled { event_id, tickets, .. } => {
                self.cancelled(tx, env, *event_id, tickets).await?;
            }
            DomainEvent::TicketHolderChanged { ticket_id, event_id, to, .. } => {
                self.moved(tx, env, *ticket_id, *event_id, Some(*to), None).await?;
            }
            DomainEvent::TicketExported { ticket_id, event_id, to_address, .. } => {
                // Only a well-formed address is ever sent to the chain; the wallet validated
                // it, so a bad one here is a bug to surface, not to retry forever.
                let Ok(addr) = Address::from_str(to_address) else {
                    tracing::error!(%ticket_id, %to_address, "export to a malformed address ignored");
                    return Ok(());
                };
                let text = address_text(addr);
                self.moved(tx, env, *ticket_id, *event_id, None, Some(&text)).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
