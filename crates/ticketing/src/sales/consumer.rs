//! Payment outcomes → orders and tickets, inside the dispatcher's transaction.
//!
//! Idempotent by construction: every change starts with a conditional status
//! update (`WHERE status = 'pending'`), so a replayed event finds nothing to
//! do, and `tickets.position_id` is unique, so a ticket cannot be issued
//! twice even by a bug here.

use super::domain::{self, Order, OrderStatus, SalesError};
use super::service::{lines_of, release_lines};
use super::store;
use entrada_primitives::ids::{OrderId, PaymentId};
use entrada_storage::audit::{self, Actor};
use entrada_storage::events::{DomainEvent, consumers};
use entrada_storage::outbox::{self, Consumer, Envelope, anyhow_lite};
use entrada_storage::{Db, Fetch, Script, Tx};
use serde_json::json;
use std::collections::HashMap;

/// The `ticketing.payments` consumer.
pub struct PaymentOutcomes {
    db: Db,
}

impl PaymentOutcomes {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    async fn succeeded(
        &self,
        tx: &mut Tx,
        now: i64,
        payment_id: PaymentId,
        reference: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<(), SalesError> {
        let Some(order_id) = domain::parse_order_reference(reference) else {
            return Ok(());
        };
        let Some(order) = store::load_order(tx, order_id, self.db.for_update()).await? else {
            tracing::warn!(%reference, %payment_id, "payment for an unknown order; ignored");
            return Ok(());
        };
        let amount_ok = order.total.minor == amount_minor && order.total.currency.as_str() == currency;
        let same_payment = order.payment_id.is_none_or(|p| p == payment_id);
        match order.status {
            OrderStatus::Paid | OrderStatus::Refunded | OrderStatus::Cancelled => {
                if !same_payment {
                    // A second, different payment for a closed order: the
                    // buyer paid twice, give the second one back.
                    tracing::warn!(order = %order.id, %payment_id, "second payment for a closed order; refunding it");
                    request_refund(tx, now, &order, payment_id, "duplicate_payment").await?;
                }
                Ok(())
            }
            OrderStatus::Pending => {
                if !amount_ok {
                    tracing::error!(order = %order.id, %payment_id, amount_minor, %currency,
                        expected = %order.total, "payment amount differs from the order total; cancelling");
                    if store::close_order(tx, order.id, OrderStatus::Pending, OrderStatus::Cancelled, now).await? {
                        release_lines(tx, order.event_id, &lines_of(&order.positions)).await?;
                        store::set_checkout_payment(tx, order.id, payment_id).await?;
                        request_refund(tx, now, &order, payment_id, "amount_mismatch").await?;
                    }
                    return Ok(());
                }
                if store::mark_paid(tx, order.id, OrderStatus::Pending, payment_id, now).await? {
                    honour(tx, now, &order, payment_id).await?;
                }
                Ok(())
            }
            OrderStatus::Expired => {
                if !amount_ok {
                    tracing::error!(order = %order.id, %payment_id, amount_minor, %currency,
                        expected = %order.total, "late payment amount differs from the order total; cancelling");
                    if store::close_order(tx, order.id, OrderStatus::Expired, OrderStatus::Cancelled, now).await? {
                        store::set_checkout_payment(tx, order.id, payment_id).await?;
                        request_refund(tx, now, &order, payment_id, "amount_mismatch").await?;
                    }
                    return Ok(());
                }
                // The money came after the deadline released the seats: take
                // them again through the same guard, or give the money back.
                let qmap = store::quota_map(tx, order.event_id).await?;
                let lines = lines_of(&order.positions);
                let reacquired = match domain::quota_needs(&lines, &qmap) {
                    Ok(needs) => store::acquire(tx, &needs).await?.is_ok(),
                    Err(_) => false,
                };
                if reacquired {
                    if store::mark_paid(tx, order.id, OrderStatus::Expired, payment_id, now).await? {
                        honour(tx, now, &order, payment_id).await?;
                    }
                } else if store::close_order(tx, order.id, OrderStatus::Expired, OrderStatus::Cancelled, now).await? {
                    store::set_checkout_payment(tx, order.id, payment_id).await?;
                    request_refund(tx, now, &order, payment_id, "inventory_gone_after_expiry").await?;
                }
                Ok(())
            }
        }
    }

    async fn failed(
        &self,
        tx: &mut Tx,
        now: i64,
        payment_id: PaymentId,
        reference: &str,
        reason: &str,
    ) -> Result<(), SalesError> {
        let Some(order_id) = domain::parse_order_reference(reference) else {
            return Ok(());
        };
        if store::set_payment_error(tx, order_id, reason).await? {
            audit::record(
                tx,
                now,
                &Actor::System,
                "order.payment_failed",
                "order",
                &order_id.to_db(),
                json!({ "payment_id": payment_id, "reason": reason }),
            )
            .await?;
        }
        Ok(())
    }
}

/// Issues the tickets of an order just marked paid and announces them: one
/// read for the mail's facts, then one round trip for every write.
async fn honour(tx: &mut Tx, now: i64, order: &Order, payment_id: PaymentId) -> Result<(), SalesError> {
    let (buyer_email, event_name) = store::mail_facts(tx, order.buyer_id, order.event_id).await?;
    let mut script = Script::on(tx);
    let serial = push_honour(&mut script, now, order, payment_id, buyer_email, event_name)?;
    let changed = script.run(tx).await?;
    check_serial(&changed, serial, order)
}

/// Adds the tickets of an order marked paid, the `order.paid` and
/// `tickets.issued` events and the audit record to `script`. Returns the
/// index of the event's serial counter bump, when tickets are issued.
fn push_honour(
    script: &mut Script,
    now: i64,
    order: &Order,
    payment_id: PaymentId,
    buyer_email: String,
    event_name: String,
) -> Result<Option<usize>, SalesError> {
    let serial = (!order.positions.is_empty()).then(|| script.len());
    let tickets = store::push_issue_tickets(script, order, now);
    if let Some(at) = serial {
        script.guard(at);
    }
    outbox::push(
        script,
        now,
        &DomainEvent::OrderPaid {
            order_id: order.id,
            event_id: order.event_id,
            buyer: order.buyer_id,
            buyer_email,
            event_name,
            total_minor: order.total.minor,
            currency: order.total.currency.as_str().to_owned(),
            tickets: tickets.clone(),
        },
    )?;
    outbox::push(
        script,
        now,
        &DomainEvent::TicketsIssued {
            order_id: order.id,
            event_id: order.event_id,
            holder: order.buyer_id,
            tickets: tickets.clone(),
        },
    )?;
    audit::push(
        script,
        now,
        &Actor::System,
        "order.paid",
        "order",
        &order.id.to_db(),
        json!({ "payment_id": payment_id, "late": order.status == OrderStatus::Expired, "tickets": tickets }),
    );
    Ok(serial)
}

/// The tickets read their serials from the event's row, bumped first; no
/// bump means the event is gone.
fn check_serial(changed: &[u64], serial: Option<usize>, order: &Order) -> Result<(), SalesError> {
    match serial {
        Some(at) if changed.get(at) != Some(&1) => {
            Err(SalesError::Corrupt(format!("event {} of order {} is gone", order.event_id, order.id)))
        }
        _ => Ok(()),
    }
}

/// The usual batch during a sale: every event a successful payment of the
/// exact total of a different pending order. Reads the orders, their
/// positions and the mails' facts on `conn` (three round trips) and returns
/// one script that pays them all, whatever the batch size; each order's
/// move and its event's serial counter are guards. `None`, having changed
/// nothing, when the batch is anything else: the caller then goes event by
/// event.
async fn pay_script(conn: &mut impl Fetch, lock: &str, events: &[Envelope]) -> Result<Option<Script>, SalesError> {
    let mut paid = Vec::with_capacity(events.len());
    for env in events {
        let DomainEvent::PaymentSucceeded { payment_id, reference, amount_minor, currency } = &env.event else {
            return Ok(None);
        };
        let Some(order_id) = domain::parse_order_reference(reference) else { return Ok(None) };
        paid.push((env.occurred_at_ms, order_id, *payment_id, *amount_minor, currency.as_str()));
    }
    let mut ids: Vec<OrderId> = paid.iter().map(|p| p.1).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != paid.len() {
        return Ok(None);
    }
    let orders: HashMap<OrderId, Order> =
        store::load_orders(conn, &ids, lock).await?.into_iter().map(|o| (o.id, o)).collect();
    let simple = paid.iter().all(|(_, id, _, minor, currency)| {
        orders.get(id).is_some_and(|o| {
            o.status == OrderStatus::Pending && o.total.minor == *minor && o.total.currency.as_str() == *currency
        })
    });
    if !simple {
        return Ok(None);
    }
    let mut buyers: Vec<_> = orders.values().map(|o| o.buyer_id).collect();
    buyers.sort();
    buyers.dedup();
    let mut event_ids: Vec<_> = orders.values().map(|o| o.event_id).collect();
    event_ids.sort();
    event_ids.dedup();
    let (emails, names) = store::mail_facts_of(conn, &buyers, &event_ids).await?;
    let mut script = Script::new(conn.backend());
    for (now, id, payment_id, _, _) in &paid {
        let order = &orders[id];
        let email = emails
            .get(&order.buyer_id)
            .cloned()
            .ok_or_else(|| SalesError::Corrupt(format!("order buyer {} has no account", order.buyer_id)))?;
        let name = names.get(&order.event_id).cloned().unwrap_or_default();
        let moved = store::push_mark_paid(&mut script, order.id, OrderStatus::Pending, *payment_id, *now);
        script.guard(moved);
        push_honour(&mut script, *now, order, *payment_id, email, name)?;
    }
    Ok(Some(script))
}

/// Pays a batch of pending orders inside `tx` ([`pay_script`]); false,
/// having changed nothing, when the batch is not that.
async fn pay_pending_orders(tx: &mut Tx, lock: &str, events: &[Envelope]) -> Result<bool, SalesError> {
    let Some(script) = pay_script(tx, lock, events).await? else { return Ok(false) };
    let guards = script.guards().to_vec();
    let changed = script.run(tx).await?;
    // The orders were read in this transaction (locked on PostgreSQL, on
    // the only writer on SQLite), so each one moves, and its event is there.
    if let Some(g) = guards.iter().find(|g| changed.get(**g) == Some(&0)) {
        return Err(SalesError::Corrupt(format!("a locked order or its event changed under statement {g}")));
    }
    Ok(true)
}

async fn request_refund(
    tx: &mut Tx,
    now: i64,
    order: &Order,
    payment_id: PaymentId,
    reason: &str,
) -> Result<(), SalesError> {
    outbox::append(tx, now, &DomainEvent::RefundRequested { payment_id, reason: reason.to_owned() }).await?;
    audit::record(
        tx,
        now,
        &Actor::System,
        "order.refund_requested",
        "order",
        &order.id.to_db(),
        json!({ "payment_id": payment_id, "reason": reason }),
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Consumer for PaymentOutcomes {
    fn name(&self) -> &'static str {
        consumers::TICKETING_PAYMENTS
    }

    fn plans(&self) -> bool {
        true
    }

    /// A batch of payments for pending orders, read on a reader; the
    /// guards catch an order that moved since (expired, paid by a replay).
    async fn plan_batch(&self, db: &Db, events: &[Envelope]) -> Result<Option<Script>, anyhow_lite::Error> {
        pay_script(&mut db.read(), "", events).await.map_err(|e| Box::new(e) as anyhow_lite::Error)
    }

    async fn handle_batch(&self, tx: &mut Tx, events: &[Envelope]) -> Result<(), anyhow_lite::Error> {
        if pay_pending_orders(tx, self.db.for_update(), events).await.map_err(|e| Box::new(e) as anyhow_lite::Error)? {
            return Ok(());
        }
        for env in events {
            self.handle(tx, env).await?;
        }
        Ok(())
    }

    async fn handle(&self, tx: &mut Tx, env: &Envelope) -> Result<(), anyhow_lite::Error> {
        // The event's own time, not the clock's: a replay after a crash
        // records the same instants as the first delivery would have.
        let now = env.occurred_at_ms;
        let result = match &env.event {
            DomainEvent::PaymentSucceeded { payment_id, reference, amount_minor, currency } => {
                self.succeeded(tx, now, *payment_id, reference, *amount_minor, currency).await
            }
            DomainEvent::PaymentFailed { payment_id, reference, reason } => {
                self.failed(tx, now, *payment_id, reference, reason).await
            }
            _ => Ok(()),
        };
        result.map_err(|e| Box::new(e) as anyhow_lite::Error)
    }
}
