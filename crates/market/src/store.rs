//! SQL of the market: gifts, listings, purchases, payouts, transfers, and the
//! reads of other contexts' rows the rules need (the ticket, its order
//! position's price, the event's resale policy, check-in admissions).
//!
//! Those foreign rows are read here directly, not through the other
//! contexts' APIs, because the checks must run inside the transaction that
//! moves the ticket; the one write to a foreign table is the guarded
//! ownership update [`move_ticket`].

use crate::domain::{MarketError, Policy};
use entrada_primitives::ids::{EventId, OrganizationId, TicketId, UserId};
use entrada_primitives::{Currency, Money};
use entrada_storage::Backend;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

type Conn = AnyConnection;
type R<T> = Result<T, MarketError>;

fn uuid(s: &str) -> R<Uuid> {
    Uuid::parse_str(s).map_err(|e| MarketError::Corrupt(e.to_string()))
}

fn currency(s: &str) -> R<Currency> {
    Currency::parse(s).map_err(|e| MarketError::Corrupt(e.to_string()))
}

/// `FOR UPDATE OF <alias>` on PostgreSQL; nothing on SQLite (one writer).
/// Named, because PostgreSQL refuses a bare `FOR UPDATE` over an outer join.
pub fn lock_of(backend: Backend, alias: &str) -> String {
    match backend {
        Backend::Postgres => format!(" FOR UPDATE OF {alias}"),
        Backend::Sqlite => String::new(),
    }
}

/// A ticket with what the market needs to decide whether it may move.
#[derive(Debug, Clone)]
pub struct TicketRow {
    pub id: TicketId,
    pub event_id: EventId,
    pub holder_id: UserId,
    /// `valid` or `cancelled`.
    pub status: String,
    /// The order's status; only `paid` tickets move.
    pub order_status: String,
    pub generation: i64,
    pub serial: i64,
    /// The order position's price: the face value the cap is measured on.
    pub face: Money,
    pub checked_in: bool,
    pub ticket_type: String,
    pub issued_at: i64,
    /// The token was taken out to the holder's external wallet (wallet's
    /// `ticket_exports`): from then on it moves there, never in the market.
    pub exported: bool,
}

impl TicketRow {
    /// Cancelled, refunded or otherwise not admitting.
    pub fn movable(&self) -> bool {
        self.status == "valid" && self.order_status == "paid"
    }
}

pub async fn load_ticket(conn: &mut Conn, id: TicketId, lock: &str) -> R<Option<TicketRow>> {
    let sql = format!(
        "SELECT t.id, t.event_id, t.holder_id, t.status, o.status, t.generation, t.serial, p.price_minor, p.currency, \
         CASE WHEN a.ticket_id IS NULL THEN 0 ELSE 1 END, tt.name, t.issued_at, \
         CASE WHEN x.ticket_id IS NULL THEN 0 ELSE 1 END \
         FROM tickets t JOIN orders o ON o.id = t.order_id JOIN order_positions p ON p.id = t.position_id \
         JOIN ticket_types tt ON tt.id = t.ticket_type_id LEFT JOIN admissions a ON a.ticket_id = t.id \
         LEFT JOIN ticket_exports x ON x.ticket_id = t.id WHERE t.id = $1{lock}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_db()).fetch_optional(&mut *conn).await?;
    row.map(|r| ticket_row(&r)).transpose()
}

fn ticket_row(r: &AnyRow) -> R<TicketRow> {
    let cur: String = r.try_get(8)?;
    let checked: i64 = r.try_get(9)?;
    Ok(TicketRow {
        id: TicketId(uuid(&r.try_get::<String, _>(0)?)?),
        event_id: EventId(uuid(&r.try_get::<String, _>(1)?)?),
        holder_id: UserId(uuid(&r.try_get::<String, _>(2)?)?),
        status: r.try_get(3)?,
        order_status: r.try_get(4)?,
        generation: r.try_get(5)?,
        serial: r.try_get(6)?,
        face: Money::new(r.try_get(7)?, currency(&cur)?),
        checked_in: checked == 1,
        ticket_type: r.try_get(10)?,
        issued_at: r.try_get(11)?,
        exported: r.try_get::<i64, _>(12)? == 1,
    })
}

/// The event as the market sees it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: EventId,
    pub organization_id: OrganizationId,
    pub name: String,
    pub currency: Currency,
    pub policy: Policy,
}

pub async fn load_event(conn: &mut Conn, id: EventId) -> R<Option<EventRow>> {
    let row = sqlx::query(
        "SELECT id, organization_id, name, currency, \
         CASE WHEN transfers_allowed THEN 1 ELSE 0 END, CASE WHEN resale_allowed THEN 1 ELSE 0 END, \
         resale_price_cap_bps, resale_price_cap_minor, resale_royalty_bps, resale_fee_bps, resale_max_per_ticket, \
         resale_opens_at, resale_closes_at, resale_freeze_minutes, COALESCE(doors_open_at, starts_at), ends_at, status \
         FROM events WHERE id = $1",
    )
    .bind(id.to_db())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let status: String = r.try_get(16)?;
    Ok(Some(EventRow {
        id: EventId(uuid(&r.try_get::<String, _>(0)?)?),
        organization_id: OrganizationId(uuid(&r.try_get::<String, _>(1)?)?),
        name: r.try_get(2)?,
        currency: currency(&r.try_get::<String, _>(3)?)?,
        policy: Policy {
            transfers_allowed: r.try_get::<i64, _>(4)? == 1,
            resale_allowed: r.try_get::<i64, _>(5)? == 1,
            cap_bps: r.try_get(6)?,
            cap_minor: r.try_get(7)?,
            royalty_bps: r.try_get(8)?,
            fee_bps: r.try_get(9)?,
            max_resales: r.try_get(10)?,
            opens_at: r.try_get(11)?,
            closes_at: r.try_get(12)?,
            freeze_minutes: r.try_get(13)?,
            doors_at: r.try_get(14)?,
            ends_at: r.try_get(15)?,
            cancelled: status == "cancelled",
        },
    }))
}

/// How often a ticket has been resold.
pub async fn resale_count(conn: &mut Conn, ticket: TicketId) -> R<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ticket_transfers WHERE ticket_id = $1 AND kind = 'resale'")
        .bind(ticket.to_db())
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

/// (id, email, display name) of the account with this address, case-insensitively.
pub async fn user_by_email(conn: &mut Conn, email: &str) -> R<Option<(UserId, String)>> {
    let row: Option<(String, String)> = sqlx::query_as("SELECT id, email FROM users WHERE lower(email) = lower($1)")
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|(id, e)| Ok((UserId(uuid(&id)?), e))).transpose()
}

/// (email, display name) of an account.
pub async fn user(conn: &mut Conn, id: UserId) -> R<Option<(String, String)>> {
    Ok(sqlx::query_as("SELECT email, display_name FROM users WHERE id = $1")
        .bind(id.to_db())
        .fetch_optional(&mut *conn)
        .await?)
}

/// Moves a ticket to `to` and bumps its generation, only if it is still
/// held by `from` at `generation` and valid. Returns the new generation, or
/// `None` when someone else moved or cancelled it first. This one guarded
/// statement is what makes every ownership change exactly-once: the stale
/// side of any race updates nothing.
pub async fn move_ticket(conn: &mut Conn, id: TicketId, from: UserId, generation: i64, to: UserId) -> R<Option<i64>> {
    let done = sqlx::query(
        "UPDATE tickets SET holder_id = $1, generation = generation + 1 \
         WHERE id = $2 AND holder_id = $3 AND generation = $4 AND status = 'valid'",
    )
    .bind(to.to_db())
    .bind(id.to_db())
    .bind(from.to_db())
    .bind(generation)
    .execute(&mut *conn)
    .await?;
    Ok((done.rows_affected() == 1).then_some(generation + 1))
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_transfer(
    conn: &mut Conn,
    ticket: &TicketRow,
    kind: &str,
    from: UserId,
    to: UserId,
    generation: i64,
    price: Option<(i64, Option<i64>, Currency)>,
    now: i64,
) -> R<()> {
    sqlx::query(
        "INSERT INTO ticket_transfers (id, ticket_id, event_id, kind, from_id, to_id, generation, price_minor, \
         cap_minor, currency, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(ticket.id.to_db())
    .bind(ticket.event_id.to_db())
    .bind(kind)
    .bind(from.to_db())
    .bind(to.to_db())
    .bind(generation)
    .bind(price.map(|p| p.0))
    .bind(price.and_then(|p| p.1))
    .bind(price.map(|p| p.2.as_str().to_owned()))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One line of a ticket's transfer history.
#[derive(Debug, Clone)]
pub struct TransferRow {
    pub kind: String,
    pub from: UserId,
    pub to: UserId,
    pub price: Option<Money>,
    pub cap_minor: Option<i64>,
    pub at: i64,
}

pub async fn transfers(conn: &mut Conn, ticket: TicketId) -> R<Vec<TransferRow>> {
    let rows = sqlx::query(
        "SELECT kind, from_id, to_id, price_minor, cap_minor, currency, at FROM ticket_transfers \
         WHERE ticket_id = $1 ORDER BY generation",
    )
    .bind(ticket.to_db())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let price: Option<i64> = r.try_get(3)?;
            let cur: Option<String> = r.try_get(5)?;
            let price = match (price, cur) {
                (Some(p), Some(c)) => Some(Money::new(p, currency(&c)?)),
                _ => None,
            };
            Ok(TransferRow {
                kind: r.try_get(0)?,
                from: UserId(uuid(&r.try_get::<String, _>(1)?)?),
                to: UserId(uuid(&r.try_get::<String, _>(2)?)?),
                price,
                cap_minor: r.try_get(4)?,
                at: r.try_get(6)?,
            })
        })
        .collect()
}

pub async fn ticket_by_serial(conn: &mut Conn, event: EventId, serial: i64) -> R<Option<TicketId>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM tickets WHERE event_id = $1 AND serial = $2")
        .bind(event.to_db())
        .bind(serial)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| uuid(&r.0).map(TicketId)).transpose()
}

/// The first admission of a ticket, if any (unix ms).
pub async fn first_entry(conn: &mut Conn, ticket: TicketId) -> R<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT first_used_at FROM admissions WHERE ticket_id = $1")
        .bind(ticket.to_db())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.0))
}

/// The token of a ticket once its mint is confirmed on chain: (token id,
/// mint transaction hash, when the mint was confirmed, collection address).
/// Read from the chain pipeline's tables (read only).
pub async fn minted(conn: &mut Conn, ticket: TicketId) -> R<Option<(i64, String, i64, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT ct.token_id, ct.tx_hash, COALESCE(tx.updated_at, ct.updated_at), cc.address FROM chain_tokens ct \
         LEFT JOIN chain_transactions tx ON tx.id = ct.tx_id LEFT JOIN chain_collections cc ON cc.event_id = ct.event_id \
         WHERE ct.ticket_id = $1 AND ct.state IN ('confirmed', 'burned') AND ct.tx_hash IS NOT NULL",
    )
    .bind(ticket.to_db())
    .fetch_optional(&mut *conn)
    .await?)
}

// ---- gifts ----

#[derive(Debug, Clone)]
pub struct GiftRow {
    pub id: Uuid,
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub sender_id: UserId,
    pub recipient_email: String,
    pub recipient_id: Option<UserId>,
    pub claim_digest: String,
    pub generation: i64,
    pub status: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub closed_at: Option<i64>,
}

const GIFT_COLS: &str = "id, ticket_id, event_id, sender_id, recipient_email, recipient_id, claim_digest, generation, \
                         status, expires_at, created_at, closed_at";

fn gift_row(r: &AnyRow) -> R<GiftRow> {
    let rid: Option<String> = r.try_get(5)?;
    Ok(GiftRow {
        id: uuid(&r.try_get::<String, _>(0)?)?,
        ticket_id: TicketId(uuid(&r.try_get::<String, _>(1)?)?),
        event_id: EventId(uuid(&r.try_get::<String, _>(2)?)?),
        sender_id: UserId(uuid(&r.try_get::<String, _>(3)?)?),
        recipient_email: r.try_get(4)?,
        recipient_id: rid.map(|s| uuid(&s).map(UserId)).transpose()?,
        claim_digest: r.try_get(6)?,
        generation: r.try_get(7)?,
        status: r.try_get(8)?,
        expires_at: r.try_get(9)?,
        created_at: r.try_get(10)?,
        closed_at: r.try_get(11)?,
    })
}

/// Inserts a pending offer. `false` when the ticket already has one (the
/// partial unique index decides, so two concurrent offers cannot both win).
pub async fn insert_gift(conn: &mut Conn, g: &GiftRow) -> R<bool> {
    let res = sqlx::query(
        "INSERT INTO gifts (id, ticket_id, event_id, sender_id, recipient_email, recipient_id, claim_digest, \
         generation, status, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)",
    )
    .bind(g.id.to_string())
    .bind(g.ticket_id.to_db())
    .bind(g.event_id.to_db())
    .bind(g.sender_id.to_db())
    .bind(&g.recipient_email)
    .bind(g.recipient_id.map(|u| u.to_db()))
    .bind(&g.claim_digest)
    .bind(g.generation)
    .bind(g.expires_at)
    .bind(g.created_at)
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if entrada_storage::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub async fn load_gift(conn: &mut Conn, id: Uuid, lock: &str) -> R<Option<GiftRow>> {
    let sql = format!("SELECT {GIFT_COLS} FROM gifts WHERE id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&mut *conn).await?;
    row.map(|r| gift_row(&r)).transpose()
}

/// pending → `to`. True when this call did it.
pub async fn close_gift(conn: &mut Conn, id: Uuid, to: &str, by: Option<UserId>, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE gifts SET status = $1, closed_at = $2, accepted_by = $3 WHERE id = $4 AND status = 'pending'",
    )
    .bind(to)
    .bind(now)
    .bind(by.map(|u| u.to_db()))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pending offers to this account or this address, and the caller's own
/// offers, newest first (at most 200 each).
pub async fn gifts_of(conn: &mut Conn, user: UserId, email: &str) -> R<(Vec<GiftRow>, Vec<GiftRow>)> {
    let sql = format!(
        "SELECT {GIFT_COLS} FROM gifts WHERE status = 'pending' AND (recipient_id = $1 OR lower(recipient_email) = \
         lower($2)) ORDER BY created_at DESC LIMIT 200"
    );
    let incoming = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user.to_db())
        .bind(email)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(gift_row)
        .collect::<R<Vec<_>>>()?;
    let sql = format!("SELECT {GIFT_COLS} FROM gifts WHERE sender_id = $1 ORDER BY created_at DESC LIMIT 200");
    let outgoing = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user.to_db())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(gift_row)
        .collect::<R<Vec<_>>>()?;
    Ok((incoming, outgoing))
}

pub async fn pending_gift_of_ticket(conn: &mut Conn, ticket: TicketId) -> R<bool> {
    Ok(pending_gift_id(conn, ticket).await?.is_some())
}

pub async fn pending_gift_id(conn: &mut Conn, ticket: TicketId) -> R<Option<Uuid>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM gifts WHERE ticket_id = $1 AND status = 'pending'")
        .bind(ticket.to_db())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| uuid(&r.0)).transpose()
}

pub async fn due_gifts(conn: &mut Conn, now: i64, limit: i64) -> R<Vec<Uuid>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM gifts WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| uuid(&r.0)).collect()
}

// ---- listings ----

#[derive(Debug, Clone)]
pub struct ListingRow {
    pub id: Uuid,
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub seller_id: UserId,
    pub price: Money,
    pub face_minor: i64,
    pub cap_minor: Option<i64>,
    pub generation: i64,
    pub status: String,
    pub purchase_id: Option<Uuid>,
    pub held_until: Option<i64>,
    pub withdraw_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Joined for display: the ticket's serial and type name.
    pub serial: i64,
    pub ticket_type: String,
}

impl ListingRow {
    /// Can a buyer take it now: active, or held by a purchase whose hold ran out.
    pub fn available(&self, now: i64) -> bool {
        self.status == "active" || (self.status == "held" && self.held_until.is_some_and(|h| h <= now))
    }
}

const LISTING_COLS: &str = "l.id, l.ticket_id, l.event_id, l.seller_id, l.price_minor, l.currency, l.face_minor, \
                            l.cap_minor, l.generation, l.status, l.purchase_id, l.held_until, l.withdraw_reason, \
                            l.created_at, l.updated_at, t.serial, tt.name";
const LISTING_FROM: &str =
    "FROM listings l JOIN tickets t ON t.id = l.ticket_id JOIN ticket_types tt ON tt.id = t.ticket_type_id";

fn listing_row(r: &AnyRow) -> R<ListingRow> {
    let pid: Option<String> = r.try_get(10)?;
    Ok(ListingRow {
        id: uuid(&r.try_get::<String, _>(0)?)?,
        ticket_id: TicketId(uuid(&r.try_get::<String, _>(1)?)?),
        event_id: EventId(uuid(&r.try_get::<String, _>(2)?)?),
        seller_id: UserId(uuid(&r.try_get::<String, _>(3)?)?),
        price: Money::new(r.try_get(4)?, currency(&r.try_get::<String, _>(5)?)?),
        face_minor: r.try_get(6)?,
        cap_minor: r.try_get(7)?,
        generation: r.try_get(8)?,
        status: r.try_get(9)?,
        purchase_id: pid.map(|s| uuid(&s)).transpose()?,
        held_until: r.try_get(11)?,
        withdraw_reason: r.try_get(12)?,
        created_at: r.try_get(13)?,
        updated_at: r.try_get(14)?,
        serial: r.try_get(15)?,
        ticket_type: r.try_get(16)?,
    })
}

/// Inserts an active listing. `false` when the ticket already has an open
/// one (the partial unique index decides).
#[allow(clippy::too_many_arguments)]
pub async fn insert_listing(
    conn: &mut Conn,
    id: Uuid,
    ticket: &TicketRow,
    seller: UserId,
    price: Money,
    cap_minor: Option<i64>,
    now: i64,
) -> R<bool> {
    let res = sqlx::query(
        "INSERT INTO listings (id, ticket_id, event_id, seller_id, price_minor, currency, face_minor, cap_minor, \
         generation, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $10)",
    )
    .bind(id.to_string())
    .bind(ticket.id.to_db())
    .bind(ticket.event_id.to_db())
    .bind(seller.to_db())
    .bind(price.minor)
    .bind(price.currency.as_str())
    .bind(ticket.face.minor)
    .bind(cap_minor)
    .bind(ticket.generation)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if entrada_storage::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The ticket a listing is for, unlocked: the paths that lock both lock the
/// ticket first and the listing second (the order `create_listing`, gifts
/// and exports use), so they read this to know which ticket to lock.
pub async fn ticket_of_listing(conn: &mut Conn, id: Uuid) -> R<Option<TicketId>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT ticket_id FROM listings WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| uuid(&r.0).map(TicketId)).transpose()
}

pub async fn load_listing(conn: &mut Conn, backend: Backend, id: Uuid, lock: bool) -> R<Option<ListingRow>> {
    let lock = if lock { lock_of(backend, "l") } else { String::new() };
    let sql = format!("SELECT {LISTING_COLS} {LISTING_FROM} WHERE l.id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&mut *conn).await?;
    row.map(|r| listing_row(&r)).transpose()
}

pub async fn open_listing_of_ticket(conn: &mut Conn, ticket: TicketId) -> R<Option<ListingRow>> {
    let sql = format!("SELECT {LISTING_COLS} {LISTING_FROM} WHERE l.ticket_id = $1 AND l.status IN ('active', 'held')");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ticket.to_db()).fetch_optional(&mut *conn).await?;
    row.map(|r| listing_row(&r)).transpose()
}

/// Listings a buyer can take now for an event, cheapest first.
pub async fn listings_of_event(conn: &mut Conn, event: EventId, now: i64) -> R<Vec<ListingRow>> {
    let sql = format!(
        "SELECT {LISTING_COLS} {LISTING_FROM} WHERE l.event_id = $1 AND (l.status = 'active' OR \
         (l.status = 'held' AND l.held_until <= $2)) ORDER BY l.price_minor, l.created_at LIMIT 500"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(event.to_db()).bind(now).fetch_all(&mut *conn).await?;
    rows.iter().map(listing_row).collect()
}

pub async fn listings_of_seller(conn: &mut Conn, seller: UserId) -> R<Vec<ListingRow>> {
    let sql =
        format!("SELECT {LISTING_COLS} {LISTING_FROM} WHERE l.seller_id = $1 ORDER BY l.created_at DESC LIMIT 200");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(seller.to_db()).fetch_all(&mut *conn).await?;
    rows.iter().map(listing_row).collect()
}

/// Changes the price of an active listing. True when it did.
pub async fn reprice(conn: &mut Conn, id: Uuid, price_minor: i64, cap_minor: Option<i64>, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE listings SET price_minor = $1, cap_minor = $2, updated_at = $3 WHERE id = $4 AND status = 'active'",
    )
    .bind(price_minor)
    .bind(cap_minor)
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes a listing down unless a buyer's unexpired hold is on it. True
/// when it did.
pub async fn withdraw(conn: &mut Conn, id: Uuid, reason: &str, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE listings SET status = 'withdrawn', withdraw_reason = $1, updated_at = $2 \
         WHERE id = $3 AND (status = 'active' OR (status = 'held' AND held_until <= $2))",
    )
    .bind(reason)
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The buyer's guard: one conditional update, so of any number of
/// concurrent buyers exactly one sees a row changed (PostgreSQL re-checks
/// the condition after waiting on the row lock; SQLite has one writer).
pub async fn hold_listing(conn: &mut Conn, id: Uuid, purchase: Uuid, until: i64, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE listings SET status = 'held', purchase_id = $1, held_until = $2, updated_at = $3 \
         WHERE id = $4 AND (status = 'active' OR (status = 'held' AND held_until <= $3))",
    )
    .bind(purchase.to_string())
    .bind(until)
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A hold given back (payment could not start, or the hold expired).
pub async fn release_hold(conn: &mut Conn, id: Uuid, purchase: Uuid, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE listings SET status = 'active', purchase_id = NULL, held_until = NULL, updated_at = $1 \
         WHERE id = $2 AND status = 'held' AND purchase_id = $3",
    )
    .bind(now)
    .bind(id.to_string())
    .bind(purchase.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn mark_sold(conn: &mut Conn, id: Uuid, purchase: Uuid, now: i64) -> R<bool> {
    let done = sqlx::query(
        "UPDATE listings SET status = 'sold', purchase_id = $1, held_until = NULL, updated_at = $2 \
         WHERE id = $3 AND status IN ('active', 'held')",
    )
    .bind(purchase.to_string())
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Open listings a rule may have caught up with, not held by a live
/// purchase: the filter is the cheap superset (event-level rules, ticket
/// changed); the service decides per row with the same code as the API.
pub async fn sweepable_listings(conn: &mut Conn, now: i64, limit: i64) -> R<Vec<ListingRow>> {
    let sql = format!(
        "SELECT {LISTING_COLS} {LISTING_FROM} JOIN events e ON e.id = l.event_id \
         WHERE (l.status = 'active' OR (l.status = 'held' AND l.held_until <= $1)) AND ( \
         NOT e.resale_allowed OR NOT e.transfers_allowed OR e.status = 'cancelled' OR e.ends_at <= $1 \
         OR (e.resale_closes_at IS NOT NULL AND e.resale_closes_at <= $1) \
         OR COALESCE(e.doors_open_at, e.starts_at) - e.resale_freeze_minutes * 60000 <= $1 \
         OR t.holder_id <> l.seller_id OR t.generation <> l.generation OR t.status <> 'valid' \
         OR EXISTS (SELECT 1 FROM admissions a WHERE a.ticket_id = l.ticket_id)) \
         ORDER BY l.event_id LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(limit).fetch_all(&mut *conn).await?;
    rows.iter().map(listing_row).collect()
}

// ---- purchases ----

#[derive(Debug, Clone)]
pub struct PurchaseRow {
    pub id: Uuid,
    pub listing_id: Uuid,
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub organization_id: OrganizationId,
    pub buyer_id: UserId,
    pub seller_id: UserId,
    pub price_minor: i64,
    pub seller_minor: i64,
    pub royalty_minor: i64,
    pub fee_minor: i64,
    pub currency: Currency,
    pub status: String,
    pub payment_id: Option<Uuid>,
    pub checkout_url: Option<String>,
    pub last_payment_error: Option<String>,
    pub expires_at: i64,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

const PURCHASE_COLS: &str = "id, listing_id, ticket_id, event_id, organization_id, buyer_id, seller_id, price_minor, \
                             seller_minor, royalty_minor, fee_minor, currency, status, payment_id, checkout_url, \
                             last_payment_error, expires_at, created_at, completed_at";

fn purchase_row(r: &AnyRow) -> R<PurchaseRow> {
    let pay: Option<String> = r.try_get(13)?;
    Ok(PurchaseRow {
        id: uuid(&r.try_get::<String, _>(0)?)?,
        listing_id: uuid(&r.try_get::<String, _>(1)?)?,
        ticket_id: TicketId(uuid(&r.try_get::<String, _>(2)?)?),
        event_id: EventId(uuid(&r.try_get::<String, _>(3)?)?),
        organization_id: OrganizationId(uuid(&r.try_get::<String, _>(4)?)?),
        buyer_id: UserId(uuid(&r.try_get::<String, _>(5)?)?),
        seller_id: UserId(uuid(&r.try_get::<String, _>(6)?)?),
        price_minor: r.try_get(7)?,
        seller_minor: r.try_get(8)?,
        royalty_minor: r.try_get(9)?,
        fee_minor: r.try_get(10)?,
        currency: currency(&r.try_get::<String, _>(11)?)?,
        status: r.try_get(12)?,
        payment_id: pay.map(|s| uuid(&s)).transpose()?,
        checkout_url: r.try_get(14)?,
        last_payment_error: r.try_get(15)?,
        expires_at: r.try_get(16)?,
        created_at: r.try_get(17)?,
        completed_at: r.try_get(18)?,
    })
}

pub async fn insert_purchase(conn: &mut Conn, p: &PurchaseRow) -> R<()> {
    sqlx::query(
        "INSERT INTO resale_purchases (id, listing_id, ticket_id, event_id, organization_id, buyer_id, seller_id, \
         price_minor, seller_minor, royalty_minor, fee_minor, currency, status, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $14)",
    )
    .bind(p.id.to_string())
    .bind(p.listing_id.to_string())
    .bind(p.ticket_id.to_db())
    .bind(p.event_id.to_db())
    .bind(p.organization_id.to_db())
    .bind(p.buyer_id.to_db())
    .bind(p.seller_id.to_db())
    .bind(p.price_minor)
    .bind(p.seller_minor)
    .bind(p.royalty_minor)
    .bind(p.fee_minor)
    .bind(p.currency.as_str())
    .bind(p.expires_at)
    .bind(p.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn load_purchase(conn: &mut Conn, id: Uuid, lock: &str) -> R<Option<PurchaseRow>> {
    let sql = format!("SELECT {PURCHASE_COLS} FROM resale_purchases WHERE id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&mut *conn).await?;
    row.map(|r| purchase_row(&r)).transpose()
}

pub async fn purchases_of_buyer(conn: &mut Conn, buyer: UserId) -> R<Vec<PurchaseRow>> {
    let sql =
        format!("SELECT {PURCHASE_COLS} FROM resale_purchases WHERE buyer_id = $1 ORDER BY created_at DESC LIMIT 200");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(buyer.to_db()).fetch_all(&mut *conn).await?;
    rows.iter().map(purchase_row).collect()
}

pub async fn set_purchase_checkout(conn: &mut Conn, id: Uuid, payment: Uuid, url: &str) -> R<()> {
    sqlx::query("UPDATE resale_purchases SET payment_id = $1, checkout_url = $2 WHERE id = $3")
        .bind(payment.to_string())
        .bind(url)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn set_purchase_error(conn: &mut Conn, id: Uuid, reason: &str) -> R<bool> {
    let done = sqlx::query("UPDATE resale_purchases SET last_payment_error = $1 WHERE id = $2 AND status = 'pending'")
        .bind(reason)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// `from` → `to`; records the payment when given. True when this call did it.
pub async fn close_purchase(
    conn: &mut Conn,
    id: Uuid,
    from: &str,
    to: &str,
    payment: Option<Uuid>,
    now: i64,
) -> R<bool> {
    let done = sqlx::query(
        "UPDATE resale_purchases SET status = $1, completed_at = $2, payment_id = COALESCE($3, payment_id) \
         WHERE id = $4 AND status = $5",
    )
    .bind(to)
    .bind(now)
    .bind(payment.map(|p| p.to_string()))
    .bind(id.to_string())
    .bind(from)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pending purchases whose hold ran out: (purchase, listing).
pub async fn due_purchases(conn: &mut Conn, now: i64, limit: i64) -> R<Vec<(Uuid, Uuid)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, listing_id FROM resale_purchases WHERE status = 'pending' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|(p, l)| Ok((uuid(p)?, uuid(l)?))).collect()
}

pub async fn insert_payout(conn: &mut Conn, p: &PurchaseRow, now: i64) -> R<()> {
    sqlx::query(
        "INSERT INTO payouts (id, purchase_id, seller_id, amount_minor, currency, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'due', $6) ON CONFLICT (purchase_id) DO NOTHING",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(p.id.to_string())
    .bind(p.seller_id.to_db())
    .bind(p.seller_minor)
    .bind(p.currency.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The completed resale purchase through which `holder` holds the ticket
/// now: the ticket's last transfer is a resale to `holder`, and the purchase
/// is the one that sold the listing made at the generation before it (a sale
/// moves the ticket from the listing's generation to the next). `None` when
/// the holder got it any other way (first hand, or as a gift after a resale).
/// Matched by generation, not by time: one buyer may have bought the same
/// ticket twice within the same millisecond of the clock.
pub async fn purchase_of_holder(conn: &mut Conn, ticket: TicketId, holder: UserId) -> R<Option<Uuid>> {
    let last: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, to_id, generation FROM ticket_transfers WHERE ticket_id = $1 ORDER BY generation DESC LIMIT 1",
    )
    .bind(ticket.to_db())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((_, _, generation)) = last.filter(|(kind, to, _)| kind == "resale" && *to == holder.to_db()) else {
        return Ok(None);
    };
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT p.id FROM resale_purchases p JOIN listings l ON l.id = p.listing_id \
         WHERE p.ticket_id = $1 AND p.buyer_id = $2 AND p.status = 'completed' AND l.status = 'sold' \
         AND l.purchase_id = p.id AND l.generation = $3",
    )
    .bind(ticket.to_db())
    .bind(holder.to_db())
    .bind(generation - 1)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| uuid(&r.0)).transpose()
}

/// A purchase's payout: (amount, status), if one was recorded.
pub async fn payout_of(conn: &mut Conn, purchase: Uuid) -> R<Option<(i64, String)>> {
    Ok(sqlx::query_as("SELECT amount_minor, status FROM payouts WHERE purchase_id = $1")
        .bind(purchase.to_string())
        .fetch_optional(&mut *conn)
        .await?)
}

/// due → reversed. True when this call did it; a paid payout is not touched.
pub async fn reverse_payout(conn: &mut Conn, purchase: Uuid) -> R<bool> {
    let done = sqlx::query("UPDATE payouts SET status = 'reversed' WHERE purchase_id = $1 AND status = 'due'")
        .bind(purchase.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
