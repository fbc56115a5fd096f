//! SQL of the sale: holds, orders, positions, tickets and the quota guard.
//!
//! Every function takes a connection, so the same statement runs inside a
//! write transaction (`&mut **tx`) or on a reader. The catalog's tables
//! (events, ticket types, quotas) are read directly here rather than through
//! the catalog's API, because the guard must run in the sale's transaction.

use super::domain::{
    EventForSale, Hold, HoldLine, HoldStatus, Order, OrderStatus, Position, QuotaNeed, SalesError, Ticket,
    TicketStatus, TicketToken, TypeForSale,
};
use entrada_primitives::ids::{
    EventId, HoldId, OrderId, OrganizationId, PaymentId, QuotaId, TicketId, TicketTypeId, UserId,
};
use entrada_primitives::page::PageRequest;
use entrada_primitives::{Currency, Money};
use entrada_storage::{Fetch, Params, Run, Script};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap};

type Conn = AnyConnection;

pub async fn load_event(conn: &mut impl Fetch, id: EventId) -> Result<Option<EventForSale>, SalesError> {
    let row: Option<(String, String, String, String, i64)> =
        sqlx::query("SELECT id, organization_id, name, status, ends_at FROM events WHERE id = $1")
            .bind(id.to_db())
            .optional(conn)
            .await?;
    row.map(|(id, org, name, status, ends_at_ms)| {
        Ok(EventForSale {
            id: EventId::from_db(&id)?,
            organization_id: OrganizationId::from_db(&org)?,
            name,
            status,
            ends_at_ms,
        })
    })
    .transpose()
}

pub async fn load_types(
    conn: &mut impl Fetch,
    event: EventId,
) -> Result<HashMap<TicketTypeId, TypeForSale>, SalesError> {
    let rows = sqlx::query(
        "SELECT id, event_id, name, price_minor, currency, min_per_order, max_per_order, sale_starts_at, sale_ends_at \
         FROM ticket_types WHERE event_id = $1",
    )
    .bind(event.to_db())
    .rows(conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let t = TypeForSale {
            id: TicketTypeId::from_db(&r.try_get::<String, _>("id")?)?,
            event_id: EventId::from_db(&r.try_get::<String, _>("event_id")?)?,
            name: r.try_get("name")?,
            price: money(r.try_get("price_minor")?, &r.try_get::<String, _>("currency")?)?,
            min_per_order: r.try_get("min_per_order")?,
            max_per_order: r.try_get("max_per_order")?,
            sale_starts_at_ms: r.try_get("sale_starts_at")?,
            sale_ends_at_ms: r.try_get("sale_ends_at")?,
        };
        out.insert(t.id, t);
    }
    Ok(out)
}

/// Which quotas count each ticket type of the event: the explicit
/// `quota_ticket_types` rows plus the event's capacity quota, which covers
/// every type whether or not it is listed.
pub async fn quota_map(
    conn: &mut impl Fetch,
    event: EventId,
) -> Result<HashMap<TicketTypeId, Vec<QuotaId>>, SalesError> {
    let rows: Vec<(String, String)> = sqlx::query(
        "SELECT qtt.ticket_type_id, qtt.quota_id FROM quota_ticket_types qtt \
         JOIN quotas q ON q.id = qtt.quota_id WHERE q.event_id = $1 \
         UNION \
         SELECT t.id, q.id FROM ticket_types t JOIN quotas q ON q.event_id = t.event_id \
         WHERE t.event_id = $2 AND q.is_capacity = TRUE",
    )
    .bind(event.to_db())
    .bind(event.to_db())
    .all(conn)
    .await?;
    let mut out: HashMap<TicketTypeId, Vec<QuotaId>> = HashMap::new();
    for (t, q) in rows {
        let list = out.entry(TicketTypeId::from_db(&t)?).or_default();
        let q = QuotaId::from_db(&q)?;
        if !list.contains(&q) {
            list.push(q);
        }
    }
    Ok(out)
}

/// The quota guard. Grows every quota in `needs` (ascending id order, the
/// map's order) only where it stays within its size. On the first refusal it
/// gives back what it already took in this call and names the ticket type,
/// so a caller inside a longer transaction (the late-payment path) need not
/// roll everything back.
pub async fn acquire(
    conn: &mut Conn,
    needs: &BTreeMap<QuotaId, QuotaNeed>,
) -> Result<Result<(), TicketTypeId>, SalesError> {
    let mut taken: Vec<(QuotaId, i64)> = Vec::with_capacity(needs.len());
    for (q, need) in needs {
        let done = sqlx::query("UPDATE quotas SET used = used + $1 WHERE id = $2 AND used + $3 <= size")
            .bind(need.quantity)
            .bind(q.to_db())
            .bind(need.quantity)
            .execute(&mut *conn)
            .await?;
        if done.rows_affected() != 1 {
            for (q, n) in taken {
                give_back(conn, q, n).await?;
            }
            return Ok(Err(need.first_type));
        }
        taken.push((*q, need.quantity));
    }
    Ok(Ok(()))
}

/// Gives inventory back, in ascending quota order like [`acquire`].
pub async fn release(conn: &mut Conn, releases: &BTreeMap<QuotaId, i64>) -> Result<(), SalesError> {
    for (q, n) in releases {
        give_back(conn, *q, *n).await?;
    }
    Ok(())
}

async fn give_back(conn: &mut Conn, q: QuotaId, n: i64) -> Result<(), SalesError> {
    // `used >= n` keeps the CHECK from turning a bookkeeping slip (a quota
    // re-mapped while units were out) into a failed expiry sweep; the slip
    // is logged and `check_inventory` shows it.
    let done = sqlx::query("UPDATE quotas SET used = used - $1 WHERE id = $2 AND used >= $3")
        .bind(n)
        .bind(q.to_db())
        .bind(n)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() != 1 {
        tracing::error!(quota = %q, n, "quota release found fewer units in use than released");
    }
    Ok(())
}

/// Adds the quota guard for every need to `script`, in quota-id order.
/// Returns each guard's statement index with the first ticket type that
/// draws from it: a guard that changes no row means that type is sold out
/// (and, under `Db::write`, nothing of the script is kept).
pub fn push_acquire(script: &mut Script, needs: &BTreeMap<QuotaId, QuotaNeed>) -> Vec<(usize, TicketTypeId)> {
    needs
        .iter()
        .map(|(q, need)| {
            let at = script.push_guard(
                sqlx::query("UPDATE quotas SET used = used + $1 WHERE id = $2 AND used + $1 <= size")
                    .bind(need.quantity)
                    .bind(q.to_db()),
            );
            (at, need.first_type)
        })
        .collect()
}

/// Adds the hold and its items to `script`.
pub fn push_insert_hold(script: &mut Script, hold: &Hold) {
    script.push(
        sqlx::query(
            "INSERT INTO holds (id, event_id, user_id, status, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hold.id.to_db())
        .bind(hold.event_id.to_db())
        .bind(hold.user_id.to_db())
        .bind(hold.status.as_str())
        .bind(hold.expires_at_ms)
        .bind(hold.created_at_ms),
    );
    for item in &hold.items {
        script.push(
            sqlx::query("INSERT INTO hold_items (hold_id, ticket_type_id, quantity) VALUES ($1, $2, $3)")
                .bind(hold.id.to_db())
                .bind(item.ticket_type_id.to_db())
                .bind(item.quantity),
        );
    }
}

pub async fn load_hold(conn: &mut impl Fetch, id: HoldId) -> Result<Option<Hold>, SalesError> {
    let row: Option<(String, String, String, i64, i64)> =
        sqlx::query("SELECT event_id, user_id, status, expires_at, created_at FROM holds WHERE id = $1")
            .bind(id.to_db())
            .optional(conn)
            .await?;
    let Some((event_id, user_id, status, expires_at_ms, created_at_ms)) = row else {
        return Ok(None);
    };
    let items: Vec<(String, i64)> =
        sqlx::query("SELECT ticket_type_id, quantity FROM hold_items WHERE hold_id = $1 ORDER BY ticket_type_id")
            .bind(id.to_db())
            .all(conn)
            .await?;
    let items = items
        .into_iter()
        .map(|(t, quantity)| Ok(HoldLine { ticket_type_id: TicketTypeId::from_db(&t)?, quantity }))
        .collect::<Result<Vec<_>, SalesError>>()?;
    Ok(Some(Hold {
        id,
        event_id: EventId::from_db(&event_id)?,
        user_id: UserId::from_db(&user_id)?,
        status: HoldStatus::parse(&status)?,
        expires_at_ms,
        created_at_ms,
        items,
    }))
}

/// Active → converted, only while unexpired. True when this call did it.
/// Adds the conversion of an active, unexpired hold to `script`, as a
/// guard: it changes no row when the hold was converted, released or
/// expired first.
pub fn push_convert_hold(script: &mut Script, id: HoldId, now_ms: i64) -> usize {
    script.push_guard(
        sqlx::query("UPDATE holds SET status = 'converted' WHERE id = $1 AND status = 'active' AND expires_at > $2")
            .bind(id.to_db())
            .bind(now_ms),
    )
}

pub async fn close_hold(conn: &mut Conn, id: HoldId, to: HoldStatus, now_ms: i64) -> Result<bool, SalesError> {
    let done = if to == HoldStatus::Expired {
        sqlx::query("UPDATE holds SET status = 'expired' WHERE id = $1 AND status = 'active' AND expires_at <= $2")
            .bind(id.to_db())
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
    } else {
        sqlx::query("UPDATE holds SET status = $1 WHERE id = $2 AND status = 'active'")
            .bind(to.as_str())
            .bind(id.to_db())
            .execute(&mut *conn)
            .await?
    };
    Ok(done.rows_affected() == 1)
}

pub async fn due_holds(conn: &mut Conn, now_ms: i64, limit: i64) -> Result<Vec<HoldId>, SalesError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM holds WHERE status = 'active' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(|(id,)| Ok(HoldId::from_db(&id)?)).collect()
}

pub async fn due_orders(conn: &mut Conn, now_ms: i64, limit: i64) -> Result<Vec<OrderId>, SalesError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM orders WHERE status = 'pending' AND payment_deadline <= $1 ORDER BY payment_deadline LIMIT $2",
    )
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(|(id,)| Ok(OrderId::from_db(&id)?)).collect()
}

/// Adds the order and its positions to `script`.
pub fn push_insert_order(script: &mut Script, o: &Order) {
    script.push(
        sqlx::query(
            "INSERT INTO orders (id, event_id, organization_id, buyer_id, hold_id, status, total_minor, currency, \
             payment_deadline, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(o.id.to_db())
        .bind(o.event_id.to_db())
        .bind(o.organization_id.to_db())
        .bind(o.buyer_id.to_db())
        .bind(o.hold_id.to_db())
        .bind(o.status.as_str())
        .bind(o.total.minor)
        .bind(o.total.currency.as_str().to_owned())
        .bind(o.payment_deadline_ms)
        .bind(o.created_at_ms),
    );
    for p in &o.positions {
        script.push(
            sqlx::query(
                "INSERT INTO order_positions (id, order_id, ticket_type_id, price_minor, currency, position) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(p.id.clone())
            .bind(o.id.to_db())
            .bind(p.ticket_type_id.to_db())
            .bind(p.price.minor)
            .bind(p.price.currency.as_str().to_owned())
            .bind(p.position),
        );
    }
}

const ORDER_COLUMNS: &str = "id, event_id, organization_id, buyer_id, hold_id, status, total_minor, currency, \
     payment_id, checkout_url, payment_deadline, last_payment_error, created_at, paid_at, closed_at";

/// One order with its positions. `lock` is `Db::for_update()` when the
/// caller is about to change the order in the same transaction.
pub async fn load_order(conn: &mut impl Fetch, id: OrderId, lock: &str) -> Result<Option<Order>, SalesError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).rows(conn).await?.into_iter().next();
    match row {
        None => Ok(None),
        Some(r) => {
            let mut o = order_from_row(&r)?;
            o.positions = positions(conn, o.id).await?;
            Ok(Some(o))
        }
    }
}

/// Several orders with their positions, in two reads; `lock` as in [`load_order`].
/// Orders that do not exist are absent from the answer.
pub async fn load_orders(conn: &mut impl Fetch, ids: &[OrderId], lock: &str) -> Result<Vec<Order>, SalesError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = Params::new(conn.backend());
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id IN ({}) ORDER BY id{lock}", p.list(ids.len()));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(id.to_db());
    }
    let mut orders = q.rows(conn).await?.iter().map(order_from_row).collect::<Result<Vec<_>, _>>()?;
    if orders.is_empty() {
        return Ok(orders);
    }
    let mut p = Params::new(conn.backend());
    let sql = format!(
        "SELECT order_id, id, ticket_type_id, price_minor, currency, position FROM order_positions \
         WHERE order_id IN ({}) ORDER BY order_id, position",
        p.list(orders.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for o in &orders {
        q = q.bind(o.id.to_db());
    }
    let mut by_order: HashMap<String, Vec<Position>> = HashMap::new();
    let rows: Vec<(String, String, String, i64, String, i64)> = q.all(conn).await?;
    for (order, id, t, minor, cur, position) in rows {
        let pos = Position { id, ticket_type_id: TicketTypeId::from_db(&t)?, price: money(minor, &cur)?, position };
        by_order.entry(order).or_default().push(pos);
    }
    for o in &mut orders {
        o.positions = by_order.remove(&o.id.to_db()).unwrap_or_default();
    }
    Ok(orders)
}

/// Emails of several users and names of several events, for paid orders' mails, in one read each.
pub async fn mail_facts_of(
    conn: &mut impl Fetch,
    buyers: &[UserId],
    events: &[EventId],
) -> Result<(HashMap<UserId, String>, HashMap<EventId, String>), SalesError> {
    let mut p = Params::new(conn.backend());
    let sql = format!("SELECT id, email FROM users WHERE id IN ({})", p.list(buyers.len().max(1)));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in buyers {
        q = q.bind(b.to_db());
    }
    if buyers.is_empty() {
        q = q.bind(String::new());
    }
    let emails: Vec<(String, String)> = q.all(conn).await?;
    let emails = emails
        .into_iter()
        .map(|(id, email)| Ok((UserId::from_db(&id)?, email)))
        .collect::<Result<HashMap<_, _>, SalesError>>()?;
    let mut p = Params::new(conn.backend());
    let sql = format!("SELECT id, name FROM events WHERE id IN ({})", p.list(events.len().max(1)));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for e in events {
        q = q.bind(e.to_db());
    }
    if events.is_empty() {
        q = q.bind(String::new());
    }
    let names: Vec<(String, String)> = q.all(conn).await?;
    let names = names
        .into_iter()
        .map(|(id, name)| Ok((EventId::from_db(&id)?, name)))
        .collect::<Result<HashMap<_, _>, SalesError>>()?;
    Ok((emails, names))
}

/// Adds `from` → paid, recording the payment, to `script`. The statement
/// changes no row when the order had moved.
pub fn push_mark_paid(script: &mut Script, id: OrderId, from: OrderStatus, payment: PaymentId, now_ms: i64) -> usize {
    script.push(
        sqlx::query(
            "UPDATE orders SET status = 'paid', paid_at = $1, payment_id = $2, closed_at = NULL \
             WHERE id = $3 AND status = $4",
        )
        .bind(now_ms)
        .bind(payment.to_db())
        .bind(id.to_db())
        .bind(from.as_str()),
    )
}

fn order_from_row(r: &AnyRow) -> Result<Order, SalesError> {
    let payment_id: Option<String> = r.try_get("payment_id")?;
    Ok(Order {
        id: OrderId::from_db(&r.try_get::<String, _>("id")?)?,
        event_id: EventId::from_db(&r.try_get::<String, _>("event_id")?)?,
        organization_id: OrganizationId::from_db(&r.try_get::<String, _>("organization_id")?)?,
        buyer_id: UserId::from_db(&r.try_get::<String, _>("buyer_id")?)?,
        hold_id: HoldId::from_db(&r.try_get::<String, _>("hold_id")?)?,
        status: OrderStatus::parse(&r.try_get::<String, _>("status")?)?,
        total: money(r.try_get("total_minor")?, &r.try_get::<String, _>("currency")?)?,
        payment_id: payment_id.map(|p| PaymentId::from_db(&p)).transpose()?,
        checkout_url: r.try_get("checkout_url")?,
        payment_deadline_ms: r.try_get("payment_deadline")?,
        last_payment_error: r.try_get("last_payment_error")?,
        created_at_ms: r.try_get("created_at")?,
        paid_at_ms: r.try_get("paid_at")?,
        closed_at_ms: r.try_get("closed_at")?,
        positions: Vec::new(),
    })
}

async fn positions(conn: &mut impl Fetch, order: OrderId) -> Result<Vec<Position>, SalesError> {
    let rows: Vec<(String, String, i64, String, i64)> = sqlx::query(
        "SELECT id, ticket_type_id, price_minor, currency, position FROM order_positions \
         WHERE order_id = $1 ORDER BY position",
    )
    .bind(order.to_db())
    .all(conn)
    .await?;
    rows.into_iter()
        .map(|(id, t, minor, cur, position)| {
            Ok(Position { id, ticket_type_id: TicketTypeId::from_db(&t)?, price: money(minor, &cur)?, position })
        })
        .collect()
}

/// The buyer's orders, newest first, `limit + 1` rows for [`entrada_primitives::page::Page`].
pub async fn orders_of(conn: &mut Conn, buyer: UserId, page: &PageRequest) -> Result<Vec<Order>, SalesError> {
    let limit = i64::from(page.limit) + 1;
    let rows = match &page.after {
        None => {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE buyer_id = $1 ORDER BY id DESC LIMIT $2");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(buyer.to_db()).bind(limit).fetch_all(&mut *conn).await?
        }
        Some(after) => {
            let sql =
                format!("SELECT {ORDER_COLUMNS} FROM orders WHERE buyer_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(buyer.to_db())
                .bind(after.clone())
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut o = order_from_row(r)?;
        o.positions = positions(conn, o.id).await?;
        out.push(o);
    }
    Ok(out)
}

const TICKET_COLUMNS: &str = "id, event_id, ticket_type_id, order_id, serial, holder_id, status, generation, issued_at";

fn ticket_from_row(r: &AnyRow) -> Result<Ticket, SalesError> {
    Ok(Ticket {
        id: TicketId::from_db(&r.try_get::<String, _>("id")?)?,
        event_id: EventId::from_db(&r.try_get::<String, _>("event_id")?)?,
        ticket_type_id: TicketTypeId::from_db(&r.try_get::<String, _>("ticket_type_id")?)?,
        order_id: OrderId::from_db(&r.try_get::<String, _>("order_id")?)?,
        serial: r.try_get("serial")?,
        holder_id: UserId::from_db(&r.try_get::<String, _>("holder_id")?)?,
        status: TicketStatus::parse(&r.try_get::<String, _>("status")?)?,
        generation: r.try_get("generation")?,
        issued_at_ms: r.try_get("issued_at")?,
        token: None,
    })
}

/// Fills in the tokens of `tickets` from the chain pipeline's tables, in one query.
pub async fn attach_tokens(conn: &mut Conn, tickets: &mut [Ticket]) -> Result<(), SalesError> {
    if tickets.is_empty() {
        return Ok(());
    }
    // Only placeholders are spliced in; the values are bound.
    let sql = format!(
        "SELECT ct.ticket_id, cc.network, cc.chain_id, cc.address, ct.token_id, ct.state, ct.owner_address, ct.tx_hash \
         FROM chain_tokens ct JOIN chain_collections cc ON cc.event_id = ct.event_id WHERE ct.ticket_id IN ({})",
        entrada_storage::Params::on(conn).list(tickets.len())
    );
    let mut q = sqlx::query_as::<_, TokenRow>(sqlx::AssertSqlSafe(sql));
    for t in tickets.iter() {
        q = q.bind(t.id.to_db());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut by_ticket: HashMap<String, TicketToken> = rows
        .into_iter()
        .map(|(ticket, network, chain_id, contract, token_id, status, owner, tx_hash)| {
            (ticket, TicketToken { network, chain_id, contract, token_id, status, owner, tx_hash })
        })
        .collect();
    for t in tickets.iter_mut() {
        t.token = by_ticket.remove(&t.id.to_db());
    }
    Ok(())
}

type TokenRow = (String, String, i64, Option<String>, i64, String, Option<String>, Option<String>);

/// One ticket, if `holder` holds it.
pub async fn ticket_of_holder(conn: &mut Conn, id: TicketId, holder: UserId) -> Result<Option<Ticket>, SalesError> {
    let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1 AND holder_id = $2");
    let row =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).bind(holder.to_db()).fetch_optional(&mut *conn).await?;
    row.as_ref().map(ticket_from_row).transpose()
}

/// The holder's tickets, newest first, `limit + 1` rows.
pub async fn tickets_of(conn: &mut Conn, holder: UserId, page: &PageRequest) -> Result<Vec<Ticket>, SalesError> {
    let limit = i64::from(page.limit) + 1;
    let rows = match &page.after {
        None => {
            let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE holder_id = $1 ORDER BY id DESC LIMIT $2");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(holder.to_db()).bind(limit).fetch_all(&mut *conn).await?
        }
        Some(after) => {
            let sql = format!(
                "SELECT {TICKET_COLUMNS} FROM tickets WHERE holder_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(holder.to_db())
                .bind(after.clone())
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    rows.iter().map(ticket_from_row).collect()
}

pub async fn tickets_of_order(conn: &mut Conn, order: OrderId) -> Result<Vec<Ticket>, SalesError> {
    let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE order_id = $1 ORDER BY serial");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order.to_db()).fetch_all(&mut *conn).await?;
    rows.iter().map(ticket_from_row).collect()
}

/// Adds the order's payment and checkout link to `script`.
pub fn push_set_checkout(script: &mut Script, id: OrderId, payment: PaymentId, url: &str) {
    script.push(
        sqlx::query("UPDATE orders SET payment_id = $1, checkout_url = $2 WHERE id = $3")
            .bind(payment.to_db())
            .bind(url.to_owned())
            .bind(id.to_db()),
    );
}

/// Records which payment an order closed with, so a replay of the same
/// payment event is recognised as a duplicate.
pub async fn set_checkout_payment(conn: &mut Conn, id: OrderId, payment: PaymentId) -> Result<(), SalesError> {
    sqlx::query("UPDATE orders SET payment_id = $1 WHERE id = $2")
        .bind(payment.to_db())
        .bind(id.to_db())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn set_payment_error(conn: &mut Conn, id: OrderId, error: &str) -> Result<bool, SalesError> {
    let done = sqlx::query("UPDATE orders SET last_payment_error = $1 WHERE id = $2 AND status = 'pending'")
        .bind(error.chars().take(500).collect::<String>())
        .bind(id.to_db())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// `from` → paid, recording the payment. True when this call did it; the
/// conditional update is what makes a duplicate payment event a no-op.
pub async fn mark_paid(
    conn: &mut Conn,
    id: OrderId,
    from: OrderStatus,
    payment: PaymentId,
    now_ms: i64,
) -> Result<bool, SalesError> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'paid', paid_at = $1, payment_id = $2, closed_at = NULL \
         WHERE id = $3 AND status = $4",
    )
    .bind(now_ms)
    .bind(payment.to_db())
    .bind(id.to_db())
    .bind(from.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `from` → `to` (expired, cancelled, refunded). True when this call did it.
/// Expiry additionally requires the deadline to have passed, so a sweep that
/// read a stale list cannot expire an order whose deadline moved.
pub async fn close_order(
    conn: &mut Conn,
    id: OrderId,
    from: OrderStatus,
    to: OrderStatus,
    now_ms: i64,
) -> Result<bool, SalesError> {
    let done = if to == OrderStatus::Expired {
        sqlx::query(
            "UPDATE orders SET status = 'expired', closed_at = $1 WHERE id = $2 AND status = $3 AND payment_deadline <= $4",
        )
        .bind(now_ms)
        .bind(id.to_db())
        .bind(from.as_str())
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query("UPDATE orders SET status = $1, closed_at = $2 WHERE id = $3 AND status = $4")
            .bind(to.as_str())
            .bind(now_ms)
            .bind(id.to_db())
            .bind(from.as_str())
            .execute(&mut *conn)
            .await?
    };
    Ok(done.rows_affected() == 1)
}

/// Issues one ticket per position. Serials come from one guarded increment
/// of `events.next_serial`, so concurrent orders of the same event get
/// disjoint ranges; `tickets.position_id` is unique, so a second issue for
/// the same position fails instead of duplicating.
/// Adds the tickets of an order just marked paid to `script`, one per
/// position, and returns their ids. Serials come from the event's counter,
/// bumped first so that on PostgreSQL its row lock orders concurrent
/// issuers; each ticket takes its number from the bumped counter.
pub fn push_issue_tickets(script: &mut Script, order: &Order, now_ms: i64) -> Vec<TicketId> {
    let n = order.positions.len() as i64;
    if n == 0 {
        return Vec::new();
    }
    script.push(
        sqlx::query("UPDATE events SET next_serial = next_serial + $1 WHERE id = $2")
            .bind(n)
            .bind(order.event_id.to_db()),
    );
    let mut ids = Vec::with_capacity(order.positions.len());
    for (i, p) in order.positions.iter().enumerate() {
        let id = TicketId::new();
        script.push(
            sqlx::query(
                "INSERT INTO tickets (id, event_id, ticket_type_id, order_id, position_id, serial, holder_id, status, \
                 generation, issued_at) \
                 SELECT $1, $2, $3, $4, $5, next_serial - $6, $7, 'valid', 1, $8 FROM events WHERE id = $2",
            )
            .bind(id.to_db())
            .bind(order.event_id.to_db())
            .bind(p.ticket_type_id.to_db())
            .bind(order.id.to_db())
            .bind(p.id.clone())
            .bind(n - i as i64)
            .bind(order.buyer_id.to_db())
            .bind(now_ms),
        );
        ids.push(id);
    }
    ids
}

/// Cancels the order's valid tickets and names them.
pub async fn cancel_tickets(conn: &mut Conn, order: OrderId) -> Result<Vec<TicketId>, SalesError> {
    let rows: Vec<(String,)> =
        sqlx::query_as("UPDATE tickets SET status = 'cancelled' WHERE order_id = $1 AND status = 'valid' RETURNING id")
            .bind(order.to_db())
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(|(id,)| Ok(TicketId::from_db(id)?)).collect()
}

pub async fn count_tickets(conn: &mut Conn, order: OrderId) -> Result<i64, SalesError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tickets WHERE order_id = $1")
        .bind(order.to_db())
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

pub async fn user_email(conn: &mut Conn, user: UserId) -> Result<String, SalesError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT email FROM users WHERE id = $1").bind(user.to_db()).fetch_optional(&mut *conn).await?;
    row.map(|(e,)| e).ok_or_else(|| SalesError::Corrupt(format!("order buyer {user} has no account")))
}

/// The buyer's email and the event's name, for the paid order's mail, in one read.
pub async fn mail_facts(conn: &mut Conn, buyer: UserId, event: EventId) -> Result<(String, String), SalesError> {
    let (email, name): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT (SELECT email FROM users WHERE id = $1), (SELECT name FROM events WHERE id = $2)")
            .bind(buyer.to_db())
            .bind(event.to_db())
            .fetch_one(&mut *conn)
            .await?;
    let email = email.ok_or_else(|| SalesError::Corrupt(format!("order buyer {buyer} has no account")))?;
    Ok((email, name.unwrap_or_default()))
}

/// A quota row of the event: id, name, size, used.
pub async fn quotas_of_event(conn: &mut Conn, event: EventId) -> Result<Vec<(QuotaId, String, i64, i64)>, SalesError> {
    let rows: Vec<(String, String, i64, i64)> =
        sqlx::query_as("SELECT id, name, size, used FROM quotas WHERE event_id = $1 ORDER BY id")
            .bind(event.to_db())
            .fetch_all(&mut *conn)
            .await?;
    rows.into_iter().map(|(id, name, size, used)| Ok((QuotaId::from_db(&id)?, name, size, used))).collect()
}

/// Per ticket type of the event: units sold (paid, valid ticket), pending,
/// held and unexpired, held but overdue.
#[derive(Debug, Default, Clone, Copy)]
pub struct TypeCounts {
    pub sold: i64,
    pub pending: i64,
    pub held: i64,
    pub held_overdue: i64,
}

pub async fn type_counts(
    conn: &mut Conn,
    event: EventId,
    now_ms: i64,
) -> Result<HashMap<TicketTypeId, TypeCounts>, SalesError> {
    let mut out: HashMap<TicketTypeId, TypeCounts> = HashMap::new();
    let sold: Vec<(String, i64)> = sqlx::query_as(
        "SELECT p.ticket_type_id, COUNT(*) FROM order_positions p JOIN orders o ON o.id = p.order_id \
         JOIN tickets t ON t.position_id = p.id \
         WHERE o.event_id = $1 AND o.status = 'paid' AND t.status = 'valid' GROUP BY p.ticket_type_id",
    )
    .bind(event.to_db())
    .fetch_all(&mut *conn)
    .await?;
    for (t, n) in sold {
        out.entry(TicketTypeId::from_db(&t)?).or_default().sold += n;
    }
    let pending: Vec<(String, i64)> = sqlx::query_as(
        "SELECT p.ticket_type_id, COUNT(*) FROM order_positions p JOIN orders o ON o.id = p.order_id \
         WHERE o.event_id = $1 AND o.status = 'pending' GROUP BY p.ticket_type_id",
    )
    .bind(event.to_db())
    .fetch_all(&mut *conn)
    .await?;
    for (t, n) in pending {
        out.entry(TicketTypeId::from_db(&t)?).or_default().pending += n;
    }
    let held: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT i.ticket_type_id, i.quantity, h.expires_at FROM hold_items i JOIN holds h ON h.id = i.hold_id \
         WHERE h.event_id = $1 AND h.status = 'active'",
    )
    .bind(event.to_db())
    .fetch_all(&mut *conn)
    .await?;
    for (t, q, expires_at) in held {
        let c = out.entry(TicketTypeId::from_db(&t)?).or_default();
        if expires_at > now_ms {
            c.held += q;
        } else {
            c.held_overdue += q;
        }
    }
    Ok(out)
}

fn money(minor: i64, currency: &str) -> Result<Money, SalesError> {
    Ok(Money::new(minor, Currency::parse(currency)?))
}
